"""An active agreement between health (provider) and statistics (consumer), for catalog tests."""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from node.agreements.document import SignedAgreement, new_agreement
from node.agreements.policy import agreements_of

PROVIDER = ed25519.Ed25519PrivateKey.generate()
CONSUMER = ed25519.Ed25519PrivateKey.generate()


def active_agreement(runtime: Any, columns: dict[str, Any], **over: Any) -> str:
    """Sign, countersign and activate an agreement on ``visits`` in ``runtime``; its id.

    ``over`` replaces any field of the agreement (modes default to ``federated``).
    """
    now = int(time.time())
    fields: dict[str, Any] = {
        "federation": "gov",
        "provider": "health",
        "consumer": "statistics",
        "dataset": "visits",
        "purpose_code": "STAT",
        "purpose_text": "",
        "valid_from": now - 5,
        "valid_until": now + 600,
        "modes": ["federated"],
        "columns": columns,
        "created": now,
    }
    fields.update(over)
    signed = SignedAgreement.sign(new_agreement(**fields), PROVIDER)
    store = agreements_of(runtime)
    store.add_proposed(signed)
    store.activate(signed.countersign(CONSUMER))
    return signed.id
