"""Admission on the network port, over real mTLS: who gets in, what a refused peer learns,
and what the ledger keeps of every call, refused ones and unknown methods included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ledger.canonical import loads
from ledger.errors import StorageError
from ledger.store import LedgerStore
from node.audit.interceptor import AuditInterceptor
from node.identity import certs
from node.identity.authority import Authority, IssuedCertificate
from node.identity.directory import DepartmentEntry, Directory, Revocation
from node.identity.home import init_home
from node.server.authz import INTERNAL_MESSAGE, AdmissionInterceptor, Refusal, check_admission

_SECRET = "/var/lib/fednode/secret-table.sqlite"


@dataclass
class Pki:
    ca_pem: bytes
    keys: dict[str, bytes]
    certs: dict[str, IssuedCertificate]
    foreign: IssuedCertificate

    def cert(self, name: str) -> x509.Certificate:
        return certs.load_cert_pem(self.certs[name].pem, what="test certificate")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("admission")
    ca = Authority.create(root / "ca", "city")
    requests = {
        name: init_home(
            root / name,
            federation="city",
            department=name,
            display_name=name,
            listen="127.0.0.1:0",
            endpoint="127.0.0.1:1",
        )
        for name in ("traffic", "health", "tax", "water")
    }
    issued = {name: ca.issue(request) for name, request in requests.items()}
    # health's first certificate was revoked; water's was replaced (not revoked).
    issued["health-old"] = issued["health"]
    issued["health"] = ca.issue(requests["health"], replace=True)
    issued["water-old"] = issued["water"]
    issued["water"] = ca.issue(requests["water"], replace=True)
    other = Authority.create(root / "other-ca", "county")
    other_request = init_home(
        root / "county-traffic",
        federation="county",
        department="traffic",
        display_name="traffic",
        listen="127.0.0.1:0",
        endpoint="127.0.0.1:1",
    )
    keys = {name: (root / name / "keys" / "tls.key").read_bytes() for name in requests}
    keys["health-old"], keys["water-old"] = keys["health"], keys["water"]
    return Pki(ca.cert_path.read_bytes(), keys, issued, other.issue(other_request))


def _directory(pki: Pki) -> Directory:
    def entry(name: str) -> DepartmentEntry:
        return DepartmentEntry(
            department=name,
            display_name=name,
            endpoint="127.0.0.1:1",
            tls_fingerprint=pki.certs[name].fingerprint,
            ed25519_public=b"\0" * 32,
            hpke_public=b"",
            witness=True,
        )

    now = int(time.time())
    old = pki.certs["health-old"]
    revoked = (Revocation(old.serial, old.fingerprint, "health", now, "key lost"),)
    # tax holds a certificate from the CA but is not in the directory.
    entries = {name: entry(name) for name in ("traffic", "health", "water")}
    return Directory("city", 7, now, now + 3600, 1, entries, revoked, b"")


@pytest.mark.parametrize(
    ("who", "code", "message", "reason", "department"),
    [
        (None, "UNAUTHENTICATED", "a client certificate is required", "no verified", None),
        ("foreign", "PERMISSION_DENIED", "not a member of federation city", "'county'", None),
        ("health-old", "UNAUTHENTICATED", "health was revoked", "was revoked", "health"),
        ("tax", "PERMISSION_DENIED", "tax is not in federation directory", "not in dir", "tax"),
        ("water-old", "UNAUTHENTICATED", "water is not the one in", "is not the pinned", "water"),
    ],
)
def test_refusals_name_the_reason_locally_and_little_publicly(
    pki: Pki, who: str | None, code: str, message: str, reason: str, department: str | None
) -> None:
    if who is None:
        cert = None
    elif who == "foreign":
        cert = certs.load_cert_pem(pki.foreign.pem, what="test certificate")
    else:
        cert = pki.cert(who)
    verdict = check_admission(cert, _directory(pki), "city")
    assert isinstance(verdict, Refusal)
    assert verdict.code.name == code
    assert message in verdict.message
    assert reason in verdict.reason
    # A certificate of another federation is never taken for our department of that name.
    assert verdict.department == department


@pytest.mark.parametrize("who", ["traffic", "health", "water"])
def test_current_members_are_admitted(pki: Pki, who: str) -> None:
    assert check_admission(pki.cert(who), _directory(pki), "city") == who


class StoreSink:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> int:
        seq, _ = self.store.append({"event": event, **fields})
        return seq


def _ok(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"ok"


def _broken(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError(f"cannot open {_SECRET}")


def _broken_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise RuntimeError(f"cannot open {_SECRET}")


def _typed(request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> bytes:
    return str(request.service).encode()


def _typed_stream(
    requests: Iterator[health_pb2.HealthCheckRequest], context: grpc.ServicerContext
) -> bytes:
    return b",".join(r.service.encode() for r in requests)


def _refusing(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no agreement")
    return b""


@dataclass
class Node:
    port: int
    store: LedgerStore
    pki: Pki

    def channel(self, who: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.ca_pem,
            private_key=self.pki.keys[who],
            certificate_chain=self.pki.certs[who].pem,
        )
        return grpc.secure_channel(
            f"127.0.0.1:{self.port}",
            credentials,
            options=[("grpc.ssl_target_name_override", "traffic.city.fednode")],
        )

    def entries(self) -> list[dict[str, Any]]:
        return [loads(body) for _, body, _ in self.store.iter_entries()]


@pytest.fixture
def node(pki: Pki, tmp_path: Path) -> Iterator[Node]:
    store = LedgerStore(tmp_path / "ledger.sqlite", "traffic")
    sink = StoreSink(store)
    directory = _directory(pki)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[
            AuditInterceptor(sink, surface="network", federation="city"),
            AdmissionInterceptor(lambda: directory, "city", audit=sink),
        ],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok),
        "Broken": grpc.unary_unary_rpc_method_handler(_broken),
        "BrokenStream": grpc.unary_stream_rpc_method_handler(_broken_stream),
        "Refusing": grpc.unary_unary_rpc_method_handler(_refusing),
        "Typed": grpc.unary_unary_rpc_method_handler(
            _typed, request_deserializer=health_pb2.HealthCheckRequest.FromString
        ),
        "TypedStream": grpc.stream_unary_rpc_method_handler(
            _typed_stream, request_deserializer=health_pb2.HealthCheckRequest.FromString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    credentials = grpc.ssl_server_credentials(
        [(pki.keys["traffic"], pki.certs["traffic"].pem)],
        root_certificates=pki.ca_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield Node(port, store, pki)
    health_servicer.enter_graceful_shutdown()
    server.stop(None).wait()
    store.close()


def _call(channel: grpc.Channel, method: str) -> tuple[str, str]:
    """Call ``method`` and return (status name, details); streams are read to the end."""
    try:
        if method == "/grpc.health.v1.Health/Check":
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        elif method == "/grpc.health.v1.Health/Watch":
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            next(watch)  # admitted: the first status arrives; then leave the stream
            watch.cancel()
        elif method.endswith("Stream"):
            list(channel.unary_stream(method)(b"", timeout=5))
        else:
            channel.unary_unary(method)(b"", timeout=5)
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""
    return "OK", ""


@pytest.mark.parametrize(
    ("who", "method", "code"),
    [
        # A peer outside the directory may only ask whether the node is up.
        ("tax", "/grpc.health.v1.Health/Check", "OK"),
        ("tax", "/grpc.health.v1.Health/Watch", "PERMISSION_DENIED"),
        ("tax", "/t.T/Ok", "PERMISSION_DENIED"),
        # It does not learn which methods exist.
        ("tax", "/fednode.v1.Hidden/Probe", "PERMISSION_DENIED"),
        ("health-old", "/fednode.v1.Hidden/Probe", "UNAUTHENTICATED"),
        ("water-old", "/grpc.health.v1.Health/Watch", "UNAUTHENTICATED"),
        ("health", "/fednode.v1.Hidden/Probe", "UNIMPLEMENTED"),
        ("health", "/grpc.health.v1.Health/Watch", "OK"),
        ("health", "/t.T/Ok", "OK"),
    ],
)
def test_every_method_is_admitted_except_the_health_check(
    node: Node, who: str, method: str, code: str
) -> None:
    with node.channel(who) as channel:
        assert _call(channel, method)[0] == code


@pytest.mark.parametrize(
    ("who", "method", "code", "outcome", "peer"),
    [
        ("tax", "/t.T/Ok", "PERMISSION_DENIED", "denied", "tax"),
        ("tax", "/fednode.v1.Hidden/Probe", "PERMISSION_DENIED", "denied", "tax"),
        ("health-old", "/grpc.health.v1.Health/Watch", "UNAUTHENTICATED", "denied", "health"),
        ("health", "/fednode.v1.Hidden/Probe", "UNIMPLEMENTED", "error", "health"),
        ("health", "/t.T/Broken", "INTERNAL", "error", "health"),
        ("health", "/t.T/Refusing", "FAILED_PRECONDITION", "error", "health"),
    ],
)
def test_every_call_is_recorded_before_and_after_with_the_peer(
    node: Node, who: str, method: str, code: str, outcome: str, peer: str
) -> None:
    with node.channel(who) as channel:
        assert _call(channel, method)[0] == code
    calls = [e for e in node.entries() if e["event"].startswith("rpc.")]
    assert [(e["event"], e["peer"], e["detail"]["method"]) for e in calls] == [
        ("rpc.started", peer, method),
        ("rpc.finished", peer, method),
    ]
    assert (calls[1]["outcome"], calls[1]["detail"]["code"]) == (outcome, code)


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("tax", "not in directory serial 7"),
        ("health-old", "was revoked (directory serial 7)"),
        ("water-old", "is not the pinned"),
    ],
)
def test_a_refused_call_is_recorded_as_access_denied_with_its_reason(
    node: Node, who: str, reason: str
) -> None:
    with node.channel(who) as channel:
        _call(channel, "/t.T/Ok")
    denied = [e for e in node.entries() if e["event"] == "access.denied"]
    assert len(denied) == 1
    assert denied[0]["peer"] == who.removesuffix("-old")
    assert denied[0]["outcome"] == "denied"
    assert denied[0]["detail"]["method"] == "/t.T/Ok"
    assert reason in denied[0]["detail"]["reason"]


@pytest.mark.parametrize("method", ["/t.T/Broken", "/t.T/BrokenStream"])
def test_a_failing_handler_tells_the_peer_nothing_of_its_internals(node: Node, method: str) -> None:
    with node.channel("health") as channel:
        code, details = _call(channel, method)
    assert (code, details) == ("INTERNAL", INTERNAL_MESSAGE)
    assert _SECRET not in details


def test_a_handler_refusal_keeps_its_own_status_and_message(node: Node) -> None:
    with node.channel("health") as channel:
        assert _call(channel, "/t.T/Refusing") == ("FAILED_PRECONDITION", "no agreement")


_GOOD = health_pb2.HealthCheckRequest(service="x").SerializeToString()
#: Field 1 declared as a 10-byte string with 1 byte present: not a message.
_BAD = b"\x0a\x0ax"


@pytest.mark.parametrize(
    ("who", "method", "requests", "code", "details"),
    [
        ("health", "/t.T/Typed", [_GOOD], "OK", ""),
        ("health", "/t.T/Typed", [_BAD], "INVALID_ARGUMENT", "malformed request message"),
        ("health", "/t.T/TypedStream", [_GOOD, _GOOD], "OK", ""),
        ("health", "/t.T/TypedStream", [_GOOD, _BAD], "INVALID_ARGUMENT", "malformed request"),
        # Admission comes first: a refused peer is told only that.
        ("tax", "/t.T/Typed", [_BAD], "PERMISSION_DENIED", "not in federation directory"),
    ],
)
def test_a_request_that_does_not_parse_is_refused_after_admission_and_recorded(
    node: Node, who: str, method: str, requests: list[bytes], code: str, details: str
) -> None:
    with node.channel(who) as channel:
        try:
            if method.endswith("Stream"):
                channel.stream_unary(method)(iter(requests), timeout=5)
            else:
                channel.unary_unary(method)(requests[0], timeout=5)
            got = ("OK", "")
        except grpc.RpcError as e:
            got = (e.code().name, e.details() or "")
    assert got[0] == code
    assert details in got[1]
    finished = [e for e in node.entries() if e["event"] == "rpc.finished"]
    assert [(e["peer"], e["detail"]["code"]) for e in finished] == [(who, code)]


class _BrokenLedger:
    def record(self, event: str, **fields: Any) -> int:
        raise StorageError(f"disk full writing {_SECRET}")


def test_a_refusal_that_cannot_be_recorded_is_still_only_a_refusal(pki: Pki) -> None:
    directory = _directory(pki)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[AdmissionInterceptor(lambda: directory, "city", audit=_BrokenLedger())],
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "t.T", {"Ok": grpc.unary_unary_rpc_method_handler(_ok)}
            ),
        )
    )
    credentials = grpc.ssl_server_credentials(
        [(pki.keys["traffic"], pki.certs["traffic"].pem)],
        root_certificates=pki.ca_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        with Node(port, None, pki).channel("tax") as channel:  # type: ignore[arg-type]
            code, details = _call(channel, "/t.T/Ok")
    finally:
        server.stop(None).wait()
    assert code == "PERMISSION_DENIED"
    assert _SECRET not in details
