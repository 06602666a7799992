"""The node's audit recorder: ``runtime.audit`` over the ledger store, plus this node's witness.

One :class:`AuditRecorder` exists per node process. It owns

* the ledger store (``<home>/ledger/ledger.sqlite``), written by one thread
  with group commit, so :meth:`AuditRecorder.record` returns only once the
  entry is durable;
* the witness state (``<home>/ledger/witness.sqlite``) and the
  :class:`~ledger.witness.Witness` that cosigns peer checkpoints. Log keys
  come only from the current federation directory.

Fields named in ``sensitive`` (for example a citizen identifier in
``detail``) are recorded as salted commitments; see ``ledger/FORMAT.md``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.checkpoint import log_name
from ledger.store import Erasure, LedgerStore, durable_directory
from ledger.witness import Witness, WitnessState
from node.audit.actor import current_actor
from node.config import NodeConfig
from node.errors import UnknownPeerError
from node.identity.directory import Directory
from node.identity.keys import ed25519_public_from_bytes

__all__ = ["LEDGER_FILE", "WITNESS_FILE", "AuditRecorder", "ledger_path", "open_audit"]

log = logging.getLogger("fednode.audit")

LEDGER_FILE = "ledger.sqlite"
WITNESS_FILE = "witness.sqlite"


def ledger_path(config: NodeConfig) -> Path:
    """Return the ledger store file of the node configured by ``config``."""
    return config.ledger_dir / LEDGER_FILE


class AuditRecorder:
    """Implements ``runtime.audit``: durable, hash-chained records of every access and decision."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        federation: str,
        department: str,
        signing_key: ed25519.Ed25519PrivateKey,
        directory: Callable[[], Directory],
        witness_state: WitnessState,
    ) -> None:
        self.store = store
        self.federation = federation
        self.department = department
        self.origin = log_name(federation, department)
        self.signing_key = signing_key
        self.directory = directory
        self.witness = Witness(witness_state, self.origin, signing_key, self._log_key)
        # Publications run one at a time: two overlapping rounds could reach a
        # witness out of order, and a smaller size after a larger one is,
        # to the witness, a rollback.
        self.publish_lock = threading.Lock()

    def _log_key(self, origin: str) -> ed25519.Ed25519PublicKey | None:
        prefix = f"fednode/{self.federation}/"
        if not origin.startswith(prefix):
            return None
        try:
            entry = self.directory().get(origin[len(prefix) :])
        except UnknownPeerError:
            return None
        return ed25519_public_from_bytes(entry.ed25519_public)

    def record(
        self,
        event: str,
        *,
        actor: str | None = None,
        peer: str | None = None,
        agreement: str | None = None,
        dataset: str | None = None,
        columns: list[str] | None = None,
        purpose: str | None = None,
        digest: str | None = None,
        outcome: str = "ok",
        detail: dict[str, object] | None = None,
        sensitive: Iterable[str] = (),
    ) -> int:
        """Append one entry and return its seq once it is durable.

        Raises:
            EntryError: the fields do not make a valid entry.
            StorageError: the store is closed or the commit failed.
        """
        fields: dict[str, Any] = {
            "event": event,
            "actor": actor if actor is not None else current_actor(),
            "peer": peer,
            "agreement": agreement,
            "dataset": dataset,
            "columns": list(columns) if columns is not None else None,
            "purpose": purpose,
            "digest": digest,
            "outcome": outcome,
            "detail": detail or {},
        }
        seq, _ = self.store.append(fields, sensitive)
        return seq

    def erase(
        self,
        seq: int,
        path: str,
        *,
        missing_ok: bool = False,
        agreement: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> Erasure:
        """Crypto-shred the value of ``path`` in entry ``seq``, recorded in the same commit.

        The ``ledger.erased`` entry (``detail`` holds ``seq`` and ``field``, plus
        ``detail``) is committed together with the deletion, so an erasure is
        never done without its record, whatever stops the node; its seq is
        ``Erasure.recorded``.

        Raises:
            StorageError: no value is stored at ``path`` (unless ``missing_ok``),
                or the erasure and its record could not be committed.
            EntryError: ``agreement`` or ``detail`` do not make a valid entry.
        """
        fields: dict[str, Any] = {
            "event": "ledger.erased",
            "actor": current_actor(),
            "agreement": agreement,
            "detail": {**(detail or {}), "seq": seq, "field": path},
        }
        return self.store.erase(seq, path, missing_ok=missing_ok, record=fields)

    def close(self) -> None:
        """Commit what is queued and close the ledger and witness files."""
        try:
            self.store.close()
        finally:
            self.witness.state.close()


def open_audit(
    config: NodeConfig,
    signing_key: ed25519.Ed25519PrivateKey,
    directory: Callable[[], Directory],
) -> AuditRecorder:
    """Open the ledger and witness state in ``config.ledger_dir``.

    Raises:
        StorageError: a file is unreadable, of an unknown schema version, or
            belongs to another department.
    """
    # Not a plain mkdir: the store syncs only the directories it creates, and a
    # power loss must not take a new ledger directory with the files in it.
    durable_directory(config.ledger_dir)
    store = LedgerStore(ledger_path(config), config.department)
    try:
        state = WitnessState(config.ledger_dir / WITNESS_FILE)
    except BaseException:
        store.close()
        raise
    return AuditRecorder(
        store,
        federation=config.federation,
        department=config.department,
        signing_key=signing_key,
        directory=directory,
        witness_state=state,
    )
