"""The ledger's public names are pinned, and the package stands alone (no node imports)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC = {
    "ledger.merkle": {
        "EMPTY_ROOT",
        "HASH_SIZE",
        "CompactRange",
        "consistency_proof",
        "hash_children",
        "hash_leaf",
        "inclusion_proof",
        "list_node_hash",
        "root_from_leaves",
        "verify_consistency",
        "verify_inclusion",
    },
    "ledger.verify": {
        "BundleReport",
        "DirectoryFileError",
        "DirectoryReport",
        "Report",
        "verify_bundle",
    },
    "ledger.bundle": {"ExportSummary", "export_bundle"},
    "ledger.witness": {
        "ForkError",
        "RollbackError",
        "UnknownLogError",
        "Witness",
        "WitnessConflictError",
        "WitnessState",
    },
    "ledger.store": {"SCHEMA_VERSION", "Erasure", "FsckReport", "LedgerStore", "StoredCheckpoint"},
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exported_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert hasattr(mod, name)


def test_verifier_needs_neither_node_nor_grpc() -> None:
    code = (
        "import sys, ledger.verify, ledger.bundle, ledger.witness, ledger.store\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('node', 'grpc', 'protocols')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
