"""Mutual authentication between real node processes, and every refusal case.

Each refusal is shown from both sides: the refusing node's answer (or its
log) and the caller's error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.admin.client import invoke
from node.identity.directory import parse_directory
from node.identity.home import init_home
from node.localfed import DepartmentSpec, LocalFederation, free_port
from protocols.fednode.v1 import node_pb2, node_pb2_grpc
from tests.integration.helpers import fednode, status

pytestmark = pytest.mark.integration


def _peer(result: dict[str, Any], department: str) -> dict[str, Any]:
    return next(p for p in result["peers"] if p["department"] == department)


def _raw_info(
    endpoint: str, *, ca: bytes, key: bytes, cert: bytes, target: str
) -> node_pb2.InfoResponse:
    """Call Node.Info directly with a given client identity, bypassing the node's own checks."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    with grpc.secure_channel(
        endpoint, credentials, options=[("grpc.ssl_target_name_override", target)]
    ) as channel:
        return node_pb2_grpc.NodeStub(channel).Info(node_pb2.InfoRequest(), timeout=5)


def _identity(home: Path) -> dict[str, bytes]:
    return {
        "key": (home / "keys" / "tls.key").read_bytes(),
        "cert": (home / "tls" / "node.pem").read_bytes(),
        "ca": (home / "ca.pem").read_bytes(),
    }


def _log_mentions(home: Path, *needles: str, within_s: float = 10.0) -> bool:
    """Whether the node's log mentions any needle; gRPC writes handshake errors asynchronously."""
    deadline = time.monotonic() + within_s
    while True:
        log = (home / "node.log").read_text().lower()
        if any(needle in log for needle in needles):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _endpoint(fed: LocalFederation, department: str) -> str:
    return (
        parse_directory((fed.root / "directory.json").read_bytes(), fed.authority.ca_certificate())
        .get(department)
        .endpoint
    )


def test_nodes_authenticate_each_other_by_certificate(federation: LocalFederation) -> None:
    result = status(federation.homes["traffic"])
    assert result["department"] == "traffic"
    assert result["directory_serial"] == 1
    peers = {p["department"]: p for p in result["peers"]}
    assert set(peers) == {"security", "health"}
    for name, peer in peers.items():
        assert peer["reachable"], peer
        # The peer read our identity from our client certificate, not from anything we sent.
        assert peer["detail"] == f"authenticated as {name}; it sees us as traffic"


def test_status_table_output_names_every_peer(federation: LocalFederation) -> None:
    result = fednode("status", "--home", federation.homes["security"], check=True)
    assert "traffic" in result.stdout and "health" in result.stdout
    assert "yes" in result.stdout


def test_status_exits_5_and_names_a_peer_that_is_down(federation: LocalFederation) -> None:
    federation.stop("health")
    result = fednode("status", "--home", federation.homes["security"])
    assert result.returncode == 5, result.stderr
    assert "traffic" in result.stdout and "health" in result.stdout  # the table still prints
    assert "1 of 2 peers did not answer: health" in result.stderr
    as_json = status(federation.homes["security"])  # exit 5 agrees with the JSON
    assert [p["department"] for p in as_json["peers"] if not p["reachable"]] == ["health"]


def test_admin_socket_is_private(federation: LocalFederation) -> None:
    mode = (federation.homes["traffic"] / "admin.sock").stat().st_mode & 0o777
    assert mode == 0o600


def test_certificate_from_foreign_ca_is_refused(
    federation: LocalFederation, federation_factory: Any
) -> None:
    # A second authority mints a certificate for a department with the very same name.
    impostor = federation_factory([DepartmentSpec("traffic")], start=False, name="city")
    identity = _identity(impostor.homes["traffic"])
    endpoint = _endpoint(federation, "security")
    # Caller side: the impostor trusts only its own CA, so the real server fails verification.
    with pytest.raises(grpc.RpcError) as refused:
        _raw_info(endpoint, target="security.city.fednode", **identity)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # Even trusting the real CA for the server, its foreign client certificate is rejected.
    identity["ca"] = federation.ca_pem.read_bytes()
    with pytest.raises(grpc.RpcError) as refused:
        _raw_info(endpoint, target="security.city.fednode", **identity)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # Server side: no call from the impostor was served; the ledger, which records every
    # RPC the node serves (refused ones included), holds no Node.Info call at all.
    served = invoke(federation.homes["security"], "ledger.show", {"event": "rpc", "limit": 1000})
    assert served["entries"], "the ledger should hold the admin call itself"
    assert not [e for e in served["entries"] if "Node/Info" in json.dumps(e)]


def test_refused_handshakes_are_json_log_events(federation: LocalFederation) -> None:
    """A connection refused before any RPC (no client certificate, or not TLS at all) leaves
    a structured warning in the node's log, and the log stays one JSON object per line."""
    host, port = _endpoint(federation, "security").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.recv(1024)
    anonymous = ssl.create_default_context()
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    with (
        contextlib.suppress(ssl.SSLError, OSError),
        anonymous.wrap_socket(socket.create_connection((host, int(port)), timeout=5)) as tls,
    ):
        tls.sendall(b"x")
        tls.recv(1024)
    home = federation.homes["security"]
    deadline = time.monotonic() + 15  # the drain process writes them asynchronously
    while True:
        # Every line must parse: the log stays one JSON object per line.
        records = [json.loads(line) for line in (home / "node.log").read_text().splitlines()]
        refused = [r for r in records if r.get("event") == "tls.handshake_failed"]
        if len(refused) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(refused) >= 2, refused
    assert any("HTTP_REQUEST" in r["msg"] for r in refused), refused
    assert {r["level"] for r in refused} == {"WARNING"}
    assert all(r["department"] == "security" and r["logger"] == "grpc" for r in refused)


def test_revoked_certificate_is_refused_on_both_sides(federation: LocalFederation) -> None:
    federation.authority.revoke("health", reason="key-compromise")
    data = federation.authority.publish_directory()
    # traffic and security learn of the revocation; health still holds the old directory.
    federation.install_directory("traffic", data)
    federation.install_directory("security", data)
    # The revoked node calls a peer: the peer refuses it by certificate.
    health_view = status(federation.homes["health"])
    refused = _peer(health_view, "traffic")
    assert not refused["reachable"]
    assert "UNAUTHENTICATED" in refused["detail"]
    assert "revoked" in refused["detail"]
    # The peers no longer dial the revoked node at all.
    traffic_view = status(federation.homes["traffic"])
    assert {p["department"] for p in traffic_view["peers"]} == {"security"}
    # A direct call with the revoked certificate is refused, even bypassing the CLI.
    with pytest.raises(grpc.RpcError) as direct:
        _raw_info(
            _endpoint(federation, "traffic"),
            target="traffic.city.fednode",
            **_identity(federation.homes["health"]),
        )
    assert direct.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (direct.value.details() or "")


def test_server_with_revoked_certificate_is_refused_by_callers(
    federation: LocalFederation,
) -> None:
    # The authority revokes health's certificate and immediately re-enrols health with a new one,
    # but the running health node still presents the old (now revoked) certificate.
    federation.authority.revoke("health", reason="superseded")
    federation.authority.issue((federation.homes["health"] / "request.json").read_bytes())
    data = federation.authority.publish_directory()
    federation.install_directory("traffic", data)
    view = status(federation.homes["traffic"])
    health = _peer(view, "health")
    assert not health["reachable"]
    assert "revoked" in health["detail"]


def test_expired_certificate_is_refused(federation: LocalFederation, tmp_path: Path) -> None:
    home = tmp_path / "tax"
    request = init_home(
        home,
        federation="city",
        department="tax",
        display_name="Tax Bureau",
        listen=f"127.0.0.1:{free_port()}",
        endpoint="127.0.0.1:1",
    )
    expired = federation.authority.issue(
        request,
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
        not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
    )
    (home / "tls").mkdir(exist_ok=True)
    (home / "tls" / "node.pem").write_bytes(expired.pem)
    (home / "ca.pem").write_bytes(federation.ca_pem.read_bytes())
    data = federation.authority.publish_directory()
    federation.install_directory("traffic", data)
    fednode("directory", "install", federation.root / "directory.json", "--home", home)
    (home / "directory.json").write_bytes(data)
    (home / "directory.serial").write_text("2\n")
    # Caller side: the node refuses to start with an expired certificate, naming the cause.
    refused = fednode("serve", "--home", home)
    assert refused.returncode == 4
    assert "expired" in refused.stderr and "hint:" in refused.stderr
    # Server side: a direct TLS call with the expired certificate fails the handshake.
    with pytest.raises(grpc.RpcError) as handshake:
        _raw_info(
            _endpoint(federation, "traffic"),
            target="traffic.city.fednode",
            **_identity(home),
        )
    assert handshake.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _log_mentions(federation.homes["traffic"], "expired", "handshake")


def test_department_not_in_directory_is_refused(
    federation: LocalFederation, tmp_path: Path
) -> None:
    # tax holds a valid certificate from the federation CA, but no directory lists it yet.
    home = tmp_path / "tax"
    port = free_port()
    request = init_home(
        home,
        federation="city",
        department="tax",
        display_name="Tax Bureau",
        listen=f"127.0.0.1:{port}",
        endpoint=f"127.0.0.1:{port}",
    )
    issued = federation.authority.issue(request)
    (home / "tls").mkdir(exist_ok=True)
    (home / "tls" / "node.pem").write_bytes(issued.pem)
    (home / "ca.pem").write_bytes(federation.ca_pem.read_bytes())
    fednode("directory", "install", federation.root / "directory.json", "--home", home, check=True)
    federation.homes["tax"] = home
    federation.start("tax")
    federation.wait_ready(["tax"])
    view = status(home)
    traffic = _peer(view, "traffic")
    assert not traffic["reachable"]
    assert "PERMISSION_DENIED" in traffic["detail"]
    assert "not in federation directory" in traffic["detail"]


@pytest.mark.parametrize("running", [False, True], ids=["offline", "running"])
def test_directory_with_older_serial_or_bad_signature_is_refused(
    federation_factory: Any, running: bool
) -> None:
    fed: LocalFederation = federation_factory(start=running)
    home = fed.homes["traffic"]
    old = (fed.root / "directory.json").read_bytes()
    fed.publish()
    new = (fed.root / "directory.json").read_bytes()
    old_file = fed.root / "old.json"
    old_file.write_bytes(old)
    refused = fednode("directory", "install", old_file, "--home", home)
    assert refused.returncode == 4, refused.stderr
    assert "not newer" in refused.stderr
    tampered = bytearray(new)
    sig_at = new.index(b'"signature":"') + len(b'"signature":"') + 10
    tampered[sig_at] = ord("A") if tampered[sig_at] != ord("A") else ord("B")
    bad_file = fed.root / "bad.json"
    bad_file.write_bytes(bytes(tampered))
    refused = fednode("directory", "install", bad_file, "--home", home)
    assert refused.returncode == 4, refused.stderr
    assert "signature does not verify" in refused.stderr
    assert (home / "directory.json").read_bytes() == new
    # --if-newer, for start-up scripts: an older valid directory is skipped with 0,
    # a forged one still fails.
    skipped = fednode("directory", "install", old_file, "--home", home, "--if-newer")
    assert skipped.returncode == 0, skipped.stderr
    assert "nothing installed: directory serial 1 is not newer" in skipped.stdout
    refused = fednode("directory", "install", bad_file, "--home", home, "--if-newer")
    assert refused.returncode == 4, refused.stderr
    assert "signature does not verify" in refused.stderr
    assert (home / "directory.json").read_bytes() == new


def test_sigterm_shuts_down_cleanly(federation: LocalFederation) -> None:
    home = federation.homes["health"]
    process = federation.processes["health"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    federation.processes.pop("health")
    assert not (home / "admin.sock").exists()
    assert "node stopped" in (home / "node.log").read_text()
