"""Creating a node home: keys, certificate request, enrolment request and config.

``fednode init`` and the local federation builder both call
:func:`init_home`, so a demo node is made exactly the way a production one is.
"""

from __future__ import annotations

from pathlib import Path

from node.config import render_config
from node.identity import keys
from node.identity.enrolment import make_request

__all__ = ["init_home"]


def init_home(
    home: Path, *, federation: str, department: str, display_name: str, listen: str, endpoint: str
) -> bytes:
    """Create a node home exactly as ``fednode init`` does; return its enrolment request."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    tls_key = keys.generate_tls_key()
    signing_key = keys.generate_ed25519()
    hpke = keys.generate_hpke()
    keys.save_tls_key(home / "keys" / "tls.key", tls_key)
    keys.save_ed25519(home / "keys" / "signing.key", signing_key)
    keys.save_hpke(home / "keys" / "hpke.key", hpke)
    csr_pem, request = make_request(
        federation=federation,
        department=department,
        display_name=display_name,
        endpoint=endpoint,
        tls_key=tls_key,
        signing_key=signing_key,
        hpke_public=hpke.public_bytes,
    )
    keys.write_private_file(home / "tls" / "node.csr.pem", csr_pem)
    keys.write_private_file(home / "request.json", request)
    keys.write_private_file(
        home / "node.toml",
        render_config(
            federation=federation,
            department=department,
            display_name=display_name,
            listen=listen,
            endpoint=endpoint,
        ).encode(),
    )
    return request
