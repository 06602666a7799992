"""An audit across a department's key compromise, on real nodes.

traffic runs and its checkpoints are cosigned by security and health. Its
bundle is exported (directory serial 1). The authority revokes traffic
(serial 2), traffic enrols again with new keys in a fresh home (serial 3
names its new key) and starts a new ledger at seq 0, which the witnesses
cosign in a new view. The auditor verifies the old bundle, the new one and
the witnesses' bundles together and in subsets: the old log under the key
its own directory names, the new log under the new key.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from node.identity.home import init_home
from node.localfed import LocalFederation, free_port
from tests.integration.helpers import fednode

pytestmark = pytest.mark.integration


@pytest.fixture
def fed(federation_factory: Any) -> LocalFederation:
    federation: LocalFederation = federation_factory(witness_threshold=1)
    return federation


def _checkpoint(home: Path) -> int:
    done = fednode("ledger", "checkpoint", "--json", "--home", home, check=True)
    result = json.loads(done.stdout)
    assert result["published"], result
    return int(result["size"])


def _reenrol(fed: LocalFederation, department: str) -> Path:
    """Revoke ``department`` for key compromise and enrol it again in a fresh home,
    as the operations guide says; return the new home (the old one is left alone)."""
    fed.stop(department)
    fed.homes.pop(department)
    fed.authority.revoke(department, reason="key-compromise")
    fed.publish(witness_threshold=1)  # serial 2: without the department
    home = fed.root / f"{department}-again"
    port = free_port()
    request = init_home(
        home,
        federation=fed.federation,
        department=department,
        display_name=department,
        listen=f"127.0.0.1:{port}",
        endpoint=f"127.0.0.1:{port}",
    )
    issued = fed.authority.issue(request)
    (home / "tls").mkdir(parents=True, exist_ok=True)
    (home / "tls" / "node.pem").write_bytes(issued.pem)
    (home / "ca.pem").write_bytes(fed.ca_pem.read_bytes())
    fed.homes[department] = home
    fed.publish(witness_threshold=1)  # serial 3: the new key
    fed.start(department)
    fed.wait_ready([department])
    return home


def test_an_audit_across_a_reenrolment_verifies_both_logs(
    fed: LocalFederation, tmp_path: Path
) -> None:
    old_size = _checkpoint(fed.homes["traffic"])
    old = tmp_path / "old-traffic.zip"
    fednode("ledger", "export", "--out", old, "--home", fed.homes["traffic"], check=True)

    _reenrol(fed, "traffic")
    new_size = _checkpoint(fed.homes["traffic"])
    _checkpoint(fed.homes["traffic"])  # grows in the witnesses' new view
    bundles = {"old": old}
    for department in ("traffic", "security", "health"):
        _checkpoint(fed.homes[department])
        out = tmp_path / f"{department}.zip"
        fednode("ledger", "export", "--out", out, "--home", fed.homes[department], check=True)
        bundles[department] = out

    audit: list[str | Path] = ["ledger", "verify", "--ca", fed.ca_pem, "--json"]
    for names in (
        ("old", "traffic", "security", "health"),
        ("old", "security"),
        ("traffic", "security"),
    ):
        result = fednode(*audit, *(bundles[n] for n in names))
        assert result.returncode == 0, (names, result.stderr)
        report = json.loads(result.stdout)
        assert report["witness_policy"]["directory_serial"] == 3
        by_path = {b["path"]: b for b in report["bundles"]}
        previous = [n for n in report["notes"] if "under its previous key" in n]
        if "old" in names:
            entry = by_path[str(bundles["old"])]
            assert entry["directory_serial"] == 1
            assert entry["published_size"] >= old_size
            assert entry["witnessed_size"] >= old_size  # security's claims, old key
            assert previous == [
                f"{bundles['old']}: log of traffic under its previous key, from directory "
                "serial 1 (directory serial 3 names another key: the department enrolled "
                "again and its new log starts at seq 0)"
            ]
        else:
            assert previous == []
        if "traffic" in names:
            entry = by_path[str(bundles["traffic"])]
            assert entry["directory_serial"] == 3 and entry["published_size"] > new_size
            assert entry["witnessed_size"] > new_size

    # The text report carries the note too.
    text = fednode("ledger", "verify", "--ca", fed.ca_pem, bundles["old"], bundles["security"])
    assert text.returncode == 0, text.stderr
    assert "note: " in text.stdout and "log of traffic under its previous key" in text.stdout

    # Without the old bundle, security's claims about the old log are set aside; the
    # directory file of serial 1 (as the auditor keeps it) lets them be checked.
    old_directory = tmp_path / "directory-serial-1.json"
    with zipfile.ZipFile(old) as bundle:
        old_directory.write_bytes(bundle.read("directory.json"))
    current = (*audit, bundles["traffic"], bundles["security"])
    without = json.loads(fednode(*current, check=True).stdout)
    assert any("keys the directory no longer names" in n for n in without["notes"])
    assert without["directories"] == []
    with_file = json.loads(fednode(*current, "--directory", old_directory, check=True).stdout)
    assert not any("no longer names" in n for n in with_file["notes"])
    assert with_file["directories"] == [
        {
            "path": str(old_directory),
            "federation": fed.federation,
            "serial": 1,
            "witness_threshold": 1,
        }
    ]
    assert with_file["witness_policy"]["directory_serial"] == 3
