"""Every key a node holds, and the one place that reads and writes them.

A node holds three private keys:

* an ECDSA P-256 key for its mTLS certificate;
* an Ed25519 key that signs ledger checkpoints, envelopes, receipts and agreements;
* an HPKE key pair, the post-quantum hybrid ML-KEM-768 + X25519, for receiving
  encrypted batches. ``cryptography`` exposes the hybrid key only as a pair of
  component keys, so fednode stores it as the concatenation of the ML-KEM seed
  (64 bytes) and the X25519 private key (32 bytes), and its public half as the
  ML-KEM encapsulation key (1184 bytes) followed by the X25519 public key (32).

Private key files are written with mode 0600 through a temporary file and an
atomic rename, so a crash never leaves a half-written key behind. The
temporary file is always created afresh (never a leftover of another mode, nor
through a symbolic link), and folders made on the way are mode 0700, so no
byte of a key is ever readable by another user.

A private key file that other users can read or any group member can change is
refused at load, as ssh refuses one, with the ``chmod`` that fixes it. Group
read is allowed: container platforms mount secrets that way (mode 0440 for
the node's group), and the group is the host's decision.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from node.durable import fsync_directory
from node.errors import IdentityError

__all__ = [
    "HPKE_PRIVATE_LEN",
    "HPKE_PUBLIC_LEN",
    "HPKE_SUITE",
    "HpkeKeyPair",
    "ed25519_public_from_bytes",
    "ed25519_public_raw",
    "generate_ed25519",
    "generate_hpke",
    "generate_tls_key",
    "hpke_public_from_bytes",
    "load_ed25519",
    "load_hpke",
    "load_tls_key",
    "save_ed25519",
    "save_hpke",
    "save_tls_key",
    "verify_ed25519",
    "write_private_file",
]

#: The envelope v1 HPKE suite (RFC 9180 with the ML-KEM-768 + X25519 hybrid KEM).
HPKE_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

_MLKEM_SEED_LEN = 64
_MLKEM_PUBLIC_LEN = 1184
_X25519_LEN = 32
HPKE_PRIVATE_LEN = _MLKEM_SEED_LEN + _X25519_LEN
HPKE_PUBLIC_LEN = _MLKEM_PUBLIC_LEN + _X25519_LEN
_HPKE_FILE_MAGIC = b"fednode-hpke-v1\n"


@dataclass(frozen=True)
class HpkeKeyPair:
    """A node's HPKE receiving key: the hybrid private key and its public bytes."""

    private: hpke.MLKEM768X25519PrivateKey
    private_bytes: bytes
    public_bytes: bytes

    @property
    def public(self) -> hpke.MLKEM768X25519PublicKey:
        return hpke_public_from_bytes(self.public_bytes)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, durably and atomically.

    Folders that do not exist yet are created with mode 0700. A symbolic link
    at ``path`` is replaced, never written through.

    Raises:
        OSError: the file or its folder cannot be written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # A leftover temporary file (a crash, another tool) may have any mode or be
    # a link; O_CREAT would keep its mode and follow the link. Start afresh.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(path)
    fsync_directory(path.parent)


#: Mode bits a private key file must not have: any access by others, group write.
_UNSAFE_MODE = stat.S_IRWXO | stat.S_IWGRP


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except OSError as e:
        raise IdentityError(
            f"cannot read {what} at {path}: {e.strerror}",
            hint="check --home; if it is right, restore keys/ from the node's backup (new "
            "keys mean enrolling the department again with the authority)",
        ) from e
    if mode & _UNSAFE_MODE:
        raise IdentityError(
            f"{what} at {path} is open to other users (mode {stat.S_IMODE(mode):04o})",
            hint=f"run 'chmod 600 {path}'; if others could read it, treat the key as "
            "compromised and enrol new keys with the federation authority",
        )
    return data


def _save_pkcs8(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
    """Unencrypted PKCS#8 PEM: the file's 0600 mode and the host protect it."""
    write_private_file(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _load_pem_private(path: Path, what: str) -> PrivateKeyTypes:
    data = _read(path, what)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except ValueError as e:
        raise IdentityError(f"{what} at {path} is not a PEM private key") from e


# --- TLS (ECDSA P-256) -----------------------------------------------------


def generate_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def save_tls_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _save_pkcs8(path, key)


def load_tls_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = _load_pem_private(path, "TLS key")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise IdentityError(f"TLS key at {path} is not an ECDSA P-256 key")
    return key


# --- Ed25519 signing key -----------------------------------------------------


def generate_ed25519() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def save_ed25519(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    _save_pkcs8(path, key)


def load_ed25519(path: Path) -> ed25519.Ed25519PrivateKey:
    key = _load_pem_private(path, "signing key")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise IdentityError(f"signing key at {path} is not an Ed25519 key")
    return key


def ed25519_public_raw(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_public_from_bytes(raw: bytes) -> ed25519.Ed25519PublicKey:
    if len(raw) != 32:
        raise IdentityError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def verify_ed25519(public_raw: bytes, signature: bytes, message: bytes, *, what: str) -> None:
    """Verify an Ed25519 signature; raise :class:`IdentityError` naming ``what`` on failure."""
    try:
        ed25519_public_from_bytes(public_raw).verify(signature, message)
    except InvalidSignature as e:
        raise IdentityError(f"bad Ed25519 signature on {what}") from e


# --- HPKE (ML-KEM-768 + X25519) ----------------------------------------------


def _hpke_from_private_bytes(raw: bytes) -> HpkeKeyPair:
    if len(raw) != HPKE_PRIVATE_LEN:
        raise IdentityError(f"HPKE private key must be {HPKE_PRIVATE_LEN} bytes, got {len(raw)}")
    ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED_LEN])
    xk = x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED_LEN:])
    public = ml.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    return HpkeKeyPair(hpke.MLKEM768X25519PrivateKey(ml, xk), raw, public)


def generate_hpke() -> HpkeKeyPair:
    ml = mlkem.MLKEM768PrivateKey.generate()
    xk = x25519.X25519PrivateKey.generate()
    return _hpke_from_private_bytes(ml.private_bytes_raw() + xk.private_bytes_raw())


def hpke_from_seed(seed: bytes) -> HpkeKeyPair:
    """Derive a key pair from 96 fixed bytes; used for the envelope test vectors."""
    return _hpke_from_private_bytes(seed)


def save_hpke(path: Path, pair: HpkeKeyPair) -> None:
    write_private_file(path, _HPKE_FILE_MAGIC + pair.private_bytes.hex().encode() + b"\n")


def load_hpke(path: Path) -> HpkeKeyPair:
    data = _read(path, "HPKE key")
    if not data.startswith(_HPKE_FILE_MAGIC):
        raise IdentityError(f"HPKE key at {path} does not start with {_HPKE_FILE_MAGIC!r}")
    try:
        raw = bytes.fromhex(data[len(_HPKE_FILE_MAGIC) :].decode().strip())
    except (UnicodeDecodeError, ValueError) as e:
        raise IdentityError(f"HPKE key at {path} is not hex") from e
    return _hpke_from_private_bytes(raw)


def hpke_public_from_bytes(raw: bytes) -> hpke.MLKEM768X25519PublicKey:
    if len(raw) != HPKE_PUBLIC_LEN:
        raise IdentityError(f"HPKE public key must be {HPKE_PUBLIC_LEN} bytes, got {len(raw)}")
    try:
        ml = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUBLIC_LEN])
        xk = x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUBLIC_LEN:])
    except ValueError as e:
        raise IdentityError("HPKE public key bytes are not a valid ML-KEM-768 + X25519 key") from e
    return hpke.MLKEM768X25519PublicKey(ml, xk)
