"""The auditor bundle: everything needed to check one department's ledger offline.

Layout (a directory, or the same names inside a ``.zip``)::

    manifest.json           canonical JSON: format version, origin, node, size, checkpoint sizes
    entries.jsonl           every entry's canonical bytes, one per line, seq order
    checkpoints/<size>.note each published checkpoint as a signed note with its cosignatures
    proofs.json             consistency proofs between successive checkpoints
    directory.json          the federation directory the signatures are checked with
    ca.pem                  the federation CA certificate (optional)

A bundle is written to a temporary name, fsynced and renamed into place, so a
reader never sees half a bundle.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from ledger.bundle_format import BUNDLE_TYPE, BUNDLE_VERSION, checkpoint_name
from ledger.canonical import dumps
from ledger.checkpoint import cosignatures, parse_note
from ledger.directory import parse_directory
from ledger.errors import CheckpointError, LedgerError, NotPublishedError, StorageError
from ledger.store import LedgerStore, sync_directory

__all__ = ["ExportSummary", "export_bundle"]


@dataclass(frozen=True)
class ExportSummary:
    """What a bundle holds."""

    path: Path
    entries: int
    checkpoints: list[int]
    skipped_checkpoints: list[int]


def _is_zip(path: Path) -> bool:
    """Whether a bundle written to ``path`` is a zip: its name ends in ``.zip``, in any case."""
    return path.suffix.lower() == ".zip"


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_bundle(
    store: LedgerStore,
    directory_json: bytes,
    out: Path,
    *,
    origin: str,
    ca_pem: bytes | None = None,
    published_only: bool = False,
) -> ExportSummary:
    """Write an auditor bundle of ``store`` to ``out`` (a zip if the name ends in ``.zip``,
    in any case; otherwise a directory).

    Only checkpoints with at least ``witness_threshold`` valid cosignatures
    from the directory's witnesses are included: an unpublished checkpoint
    proves nothing to an auditor. Entries after the last one are included
    as an uncheckpointed tail, unless ``published_only``: the bundle then
    ends at the last published checkpoint, so every entry in it is covered
    (the export's own audit entries always come after it), as an audit under
    ``verify --require-published`` needs.

    Raises:
        StorageError: ``out`` exists, its parent is not a directory that can
            be created, the store cannot be read or written out, or
            ``published_only`` and no checkpoint is published yet.
        LedgerError: the directory is malformed.
    """
    out = Path(out)
    if out.exists():
        raise StorageError(f"{out} already exists; choose a new bundle path")
    if out.parent.exists() and not out.parent.is_dir():
        raise StorageError(f"cannot write bundle {out}: {out.parent} is not a directory")
    directory = parse_directory(directory_json, ca_pem)
    witnesses = directory.witness_keys(exclude=store.node)
    size = store.size
    published: list[int] = []
    skipped: list[int] = []
    notes: dict[int, bytes] = {}
    for cp in store.checkpoints():
        if cp.size > size:
            continue
        try:
            valid = cosignatures(parse_note(cp.note), witnesses)
        except CheckpointError as e:
            raise StorageError(f"stored checkpoint size {cp.size} is corrupt: {e}") from e
        if len(valid) >= directory.witness_threshold:
            published.append(cp.size)
            notes[cp.size] = cp.note
        else:
            skipped.append(cp.size)
    if published_only:
        if not published:
            raise NotPublishedError(
                "no checkpoint of this ledger is published yet (cosigned by the witness "
                "threshold), so a bundle of published entries would be empty; run "
                "'fednode ledger checkpoint' first"
            )
        size = published[-1]
        skipped = [s for s in skipped if s <= size]
    proofs = []
    for old, new in pairwise(published):
        if old == 0:
            continue
        proof = store.consistency_proof(old, new)
        proofs.append(
            {"from": old, "to": new, "proof": [base64.b64encode(h).decode() for h in proof]}
        )
    manifest = {
        "v": BUNDLE_VERSION,
        "type": BUNDLE_TYPE,
        "origin": origin,
        "node": store.node,
        "federation": directory.federation,
        "size": size,
        "checkpoints": published,
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise StorageError(f"cannot write bundle {out}: {e.strerror or e}") from e
    try:
        work = tmp / "bundle"
        (work / "checkpoints").mkdir(parents=True)
        with (work / "entries.jsonl").open("wb") as f:
            for _, body, _ in store.iter_entries(0, size):
                f.write(body)
                f.write(b"\n")
        for cp_size, note in notes.items():
            (work / checkpoint_name(cp_size)).write_bytes(note)
        (work / "proofs.json").write_bytes(dumps({"v": 1, "consistency": proofs}) + b"\n")
        (work / "directory.json").write_bytes(directory_json)
        if ca_pem is not None:
            (work / "ca.pem").write_bytes(ca_pem)
        (work / "manifest.json").write_bytes(dumps(manifest) + b"\n")
        if _is_zip(out):
            archive = tmp / "bundle.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(work.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(work).as_posix())
            with archive.open("rb") as f:
                os.fsync(f.fileno())
            archive.rename(out)
        else:
            _fsync_tree(work)
            work.rename(out)
        sync_directory(out.parent)
    except OSError as e:
        raise StorageError(f"cannot write bundle {out}: {e}") from e
    except LedgerError:
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportSummary(path=out, entries=size, checkpoints=published, skipped_checkpoints=skipped)
