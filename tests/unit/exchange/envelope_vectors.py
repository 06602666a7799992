"""Build the envelope v1 test vectors in protocols/vectors/envelope/ from fixed keys.

Run ``python tests/unit/exchange/envelope_vectors.py`` to rewrite them. HPKE
encapsulation is randomised, so the wrapped content key is taken from the
committed file when it exists; every other byte is deterministic (Ed25519
signatures and AES-GCM with fixed keys and nonces), so rewriting reproduces
the committed frames exactly.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.exchange.envelope import MAX_CHUNK_PLAINTEXT, EnvelopeSealer, hpke_info
from node.identity.keys import HPKE_SUITE, ed25519_public_raw, hpke_from_seed

VECTOR_DIR = Path(__file__).resolve().parents[3] / "protocols" / "vectors" / "envelope"

# Fixed key material: SHA-256 of a label, stretched where more bytes are needed.
SENDER_SEED = hashlib.sha256(b"fednode envelope vector sender ed25519").digest()
RECIPIENT_HPKE_SEED = b"".join(
    hashlib.sha256(b"fednode envelope vector recipient hpke %d" % i).digest() for i in range(3)
)
OTHER_HPKE_SEED = b"".join(
    hashlib.sha256(b"fednode envelope vector other hpke %d" % i).digest() for i in range(3)
)
CONTENT_KEY = hashlib.sha256(b"fednode envelope vector content key").digest()
SHARE_ID = hashlib.sha256(b"fednode envelope vector share id").digest()[:16]

# zstd output is deterministic for one encoder version; the compressed cases are
# reproduced byte for byte with the libzstd that pyarrow bundles.
CASES: dict[str, dict[str, Any]] = {
    "small": {"rows": 5, "chunk_limit": MAX_CHUNK_PLAINTEXT, "compression": "none"},
    "multi-chunk": {"rows": 200, "chunk_limit": 2048, "compression": "none"},
    "empty": {"rows": 0, "chunk_limit": MAX_CHUNK_PLAINTEXT, "compression": "none"},
    "zstd": {"rows": 400, "chunk_limit": MAX_CHUNK_PLAINTEXT, "compression": "zstd"},
    "zstd-multi-chunk": {"rows": 1200, "chunk_limit": 1024, "compression": "zstd"},
}


def table(rows: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "district": pa.array([f"district-{i % 7}" for i in range(rows)], pa.string()),
            "visits": pa.array([None if i % 5 == 0 else i * 3 for i in range(rows)], pa.int32()),
        }
    )


def sender_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(SENDER_SEED)


def build(name: str, wrapped_key: bytes) -> dict[str, Any]:
    case = CASES[name]
    data = table(case["rows"])
    recipient = hpke_from_seed(RECIPIENT_HPKE_SEED)
    sealer = EnvelopeSealer(
        signing_key=sender_key(),
        sender="health",
        recipient="statistics",
        recipient_hpke_public=recipient.public_bytes,
        agreement="agr-" + "00" * 16,
        dataset="visits",
        schema=data.schema,
        ttl_seconds=2**40,
        now=1_700_000_000,
        share_id=SHARE_ID,
        content_key=CONTENT_KEY,
        wrapped_key=wrapped_key,
        chunk_limit=case["chunk_limit"],
        compression=case["compression"],
        rows_hint=case["rows"],
    )
    chunks = [frame for batch in data.to_batches() for frame in sealer.add(batch)]
    final, trailer = sealer.finish()
    chunks.append(final)
    return {
        "description": f"envelope v1, case {name!r}: {case['rows']} rows, "
        f"chunk limit {case['chunk_limit']} bytes, compression {case['compression']}",
        "sender": "health",
        "recipient": "statistics",
        "sender_ed25519_seed": SENDER_SEED.hex(),
        "sender_ed25519_public": ed25519_public_raw(sender_key()).hex(),
        "recipient_hpke_seed": RECIPIENT_HPKE_SEED.hex(),
        "recipient_hpke_public_sha256": hashlib.sha256(recipient.public_bytes).hexdigest(),
        "other_hpke_seed": OTHER_HPKE_SEED.hex(),
        "share_id": SHARE_ID.hex(),
        "content_key": CONTENT_KEY.hex(),
        "created": 1_700_000_000,
        "expires": 1_700_000_000 + 2**40,
        "chunk_limit": case["chunk_limit"],
        "compression": case["compression"],
        "rows": case["rows"],
        "table_json": data.to_pylist(),
        "header": sealer.header.hex(),
        "header_sha256": hashlib.sha256(sealer.header).hexdigest(),
        "chunks": [c.hex() for c in chunks],
        "trailer": trailer.hex(),
        "digest": sealer.digest_text,
    }


def wrapped_key_for(name: str) -> bytes:
    path = VECTOR_DIR / f"{name}.json"
    if path.exists():
        header = bytes.fromhex(json.loads(path.read_text())["header"])
        from node.exchange.envelope import parse_header

        return parse_header(header).wrapped_key
    recipient = hpke_from_seed(RECIPIENT_HPKE_SEED)
    return HPKE_SUITE.encrypt(
        CONTENT_KEY, recipient.public, info=hpke_info(SHARE_ID, "health", "statistics")
    )


def main() -> int:
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        vector = build(name, wrapped_key_for(name))
        (VECTOR_DIR / f"{name}.json").write_text(json.dumps(vector, indent=1) + "\n")
        print(f"wrote {name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
