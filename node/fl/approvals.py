"""The operator's list of approved Flower App Bundles.

A node runs a FAB only if its SHA-256 is on this list; this follows Flower's
trusted-entities model, with the FAB digest as the thing trusted. The list
lives in ``<home>/data/fl/approved-apps.json`` as canonical JSON::

    {"v": 1, "type": "fednode.approved-apps",
     "apps": [{"sha256": hex, "name": str, "version": str, "approved_at": int}, ...]}

Invariants: the file is replaced atomically (temp file, fsync, rename), so a
reader sees the old or the new list, never a torn one; the participant
re-reads it on every message, so a revocation stops a running job at its next
message. The CLI edits the file directly (it needs no running node, and
operators may approve an app before starting it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.canonical import dumps, loads
from ledger.errors import LedgerError
from node.errors import ConfigError
from node.fl.bundle import read_bundle
from node.identity.keys import write_private_file

__all__ = ["Approval", "ApprovalStore"]

_VERSION = 1
_TYPE = "fednode.approved-apps"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Approval:
    """One approved FAB."""

    sha256: str
    name: str
    version: str
    approved_at: int


class ApprovalStore:
    """Approved FAB digests of one node."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> ApprovalStore:
        return cls(data_dir / "fl" / "approved-apps.json")

    def approvals(self) -> list[Approval]:
        """Every approval, oldest first.

        Raises:
            ConfigError: the file exists but is not a valid approvals document.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise ConfigError(f"cannot read {self.path}: {e}") from e
        try:
            doc: Any = loads(raw)
            if doc.get("v") != _VERSION or doc.get("type") != _TYPE:
                raise ConfigError(
                    f"{self.path}: unknown approvals format (v={doc.get('v')!r})",
                    hint="this file was written by a newer fednode",
                )
            return [
                Approval(a["sha256"], a["name"], a["version"], a["approved_at"])
                for a in doc["apps"]
            ]
        except (LedgerError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(
                f"{self.path} is not a valid approvals document",
                hint="restore it from backup or remove it and approve the apps again",
            ) from e

    def is_approved(self, sha256: str) -> bool:
        """Whether a FAB digest is on the list (read fresh from disk)."""
        return any(a.sha256 == sha256 for a in self.approvals())

    def approve(self, target: str) -> Approval:
        """Approve a FAB file (its digest and metadata) or a bare 64-hex SHA-256.

        Raises:
            ConfigError: the target is neither an existing FAB file nor a SHA-256.
            AppBundleError: the file is not a valid FAB.
        """
        path = Path(target)
        if path.is_file():
            bundle = read_bundle(path.read_bytes())
            approval = Approval(bundle.sha256, bundle.fab_id, bundle.version, int(time.time()))
        elif _HEX64.match(target.lower().removeprefix("sha256:")):
            digest = target.lower().removeprefix("sha256:")
            approval = Approval(digest, "", "", int(time.time()))
        else:
            raise ConfigError(
                f"{target!r} is neither a FAB file nor a SHA-256 digest",
                hint="pass the .fab file or its 64-character hex SHA-256",
            )
        current = [a for a in self.approvals() if a.sha256 != approval.sha256]
        self._write([*current, approval])
        return approval

    def revoke(self, sha256: str) -> bool:
        """Remove a digest; returns whether it was on the list."""
        digest = sha256.lower().removeprefix("sha256:")
        current = self.approvals()
        kept = [a for a in current if a.sha256 != digest]
        if len(kept) != len(current):
            self._write(kept)
            return True
        return False

    def _write(self, approvals: list[Approval]) -> None:
        doc = {
            "v": _VERSION,
            "type": _TYPE,
            "apps": [
                {
                    "sha256": a.sha256,
                    "name": a.name,
                    "version": a.version,
                    "approved_at": a.approved_at,
                }
                for a in approvals
            ],
        }
        write_private_file(self.path, dumps(doc))
