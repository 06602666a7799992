"""Ledger commands against real nodes: exit codes an operator's scripts can rely on.

* ``prove`` of an entry that does not exist is a usage error naming the size;
* ``export`` refuses unusable ``--out`` paths with exit 2 and writes ``.ZIP`` as a zip;
* ``checkpoint`` reports a witness holding a different history (its witness
  database altered, as a fork would leave it) as an incident, exit 7, even
  though the other witness meets the threshold;
* ``fsck`` on a damaged ledger file exits 7 with a restore hint.
"""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from node.audit.recorder import LEDGER_FILE, WITNESS_FILE
from node.config import load_config
from node.localfed import LocalFederation
from tests.integration.helpers import fednode

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(federation_factory: Any) -> LocalFederation:
    federation: LocalFederation = federation_factory(witness_threshold=1)
    return federation


def _checkpoint(home: Path) -> Any:
    result = fednode("ledger", "checkpoint", "--json", "--home", home)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_ledger_commands_on_real_nodes(fed: LocalFederation, tmp_path: Path) -> None:
    traffic = fed.homes["traffic"]
    rc, first, _ = _checkpoint(traffic)
    assert rc == 0 and first["published"] and first["incidents"] == {}

    missing = fednode("ledger", "prove", "99999", "--home", traffic)
    assert missing.returncode == 2, missing.stderr
    assert "entry 99999 does not exist: the ledger holds" in missing.stderr

    (tmp_path / "file").write_text("x")
    for out, message in [
        (tmp_path / "file" / "audit.zip", "is a file, not a directory"),
        (tmp_path / "file", "already exists"),
    ]:
        refused = fednode("ledger", "export", "--out", out, "--home", traffic)
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr and "Errno" not in refused.stderr
    upper = tmp_path / "audit.ZIP"
    fednode("ledger", "export", "--out", upper, "--home", traffic, check=True)
    assert upper.is_file() and "manifest.json" in zipfile.ZipFile(upper).namelist()

    # security's witness database now holds another root for the size it
    # cosigned: to security, traffic's next checkpoint is a fork.
    witness_db = load_config(fed.homes["security"]).ledger_dir / WITNESS_FILE
    conn = sqlite3.connect(witness_db, isolation_level=None, timeout=30)
    try:
        conn.execute("UPDATE views SET root=? WHERE origin='fednode/city/traffic'", (b"\1" * 32,))
    finally:
        conn.close()
    rc, second, stderr = _checkpoint(traffic)
    assert second["published"] and second["cosigners"] == ["health"]
    assert rc == 7, stderr
    assert "witness incident: security refused size" in stderr
    assert "hint: treat it as an incident" in stderr
    assert set(second["incidents"]) == {"security"}

    # fsck with the node stopped, on a ledger file overwritten with garbage.
    fed.stop("health")
    ledger_file = load_config(fed.homes["health"]).ledger_dir / LEDGER_FILE
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger_file}{suffix}").unlink(missing_ok=True)
    ledger_file.write_bytes(b"garbage " * 1000)
    damaged = fednode("ledger", "fsck", "--home", fed.homes["health"])
    assert damaged.returncode == 7, damaged.stderr
    assert "not a database" in damaged.stderr
    assert "hint: stop the node, keep the damaged ledger/ as evidence, restore" in damaged.stderr
