"""Outgoing mTLS channels: every connection, reconnects included, accepts only the pin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.errors import CertificateError
from node.identity.authority import Authority, IssuedCertificate
from node.identity.directory import DepartmentEntry, Directory
from node.identity.home import init_home
from node.peers import PeerConnector

_DNS_TRAFFIC = "traffic.city.fednode"


@dataclass
class Federation:
    ca_pem: bytes
    traffic_key: bytes
    traffic_old: IssuedCertificate
    traffic_new: IssuedCertificate
    health_key: bytes
    health_cert: IssuedCertificate


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("peers")
    ca = Authority.create(root / "ca", "city")
    homes = {}
    for department in ("traffic", "health"):
        homes[department] = init_home(
            root / department,
            federation="city",
            department=department,
            display_name=department,
            listen="127.0.0.1:0",
            endpoint="127.0.0.1:1",
        )
    old = ca.issue(homes["traffic"])
    # A rotation: same department, same DNS name, same CA, both still valid.
    new = ca.issue(homes["traffic"], replace=True)
    return Federation(
        ca_pem=ca.cert_path.read_bytes(),
        traffic_key=(root / "traffic" / "keys" / "tls.key").read_bytes(),
        traffic_old=old,
        traffic_new=new,
        health_key=(root / "health" / "keys" / "tls.key").read_bytes(),
        health_cert=ca.issue(homes["health"]),
    )


def _serve(fed: Federation, cert_pem: bytes, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials(
        [(fed.traffic_key, cert_pem)], root_certificates=fed.ca_pem, require_client_auth=True
    )
    bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    return server, bound


def _directory(fed: Federation, port: int, fingerprint: str, serial: int = 1) -> Directory:
    entry = DepartmentEntry(
        department="traffic",
        display_name="traffic",
        endpoint=f"127.0.0.1:{port}",
        tls_fingerprint=fingerprint,
        ed25519_public=b"\0" * 32,
        hpke_public=b"",
        witness=True,
    )
    now = int(time.time())
    return Directory("city", serial, now, now + 3600, 0, {"traffic": entry}, (), b"")


def _connector(fed: Federation, directory: list[Directory]) -> PeerConnector:
    return PeerConnector(
        federation="city",
        ca_pem=fed.ca_pem,
        cert_pem=fed.health_cert.pem,
        key_pem=fed.health_key,
        directory=lambda: directory[0],
    )


def _check(channel: grpc.Channel) -> None:
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


@pytest.fixture
def servers() -> Iterator[list[grpc.Server]]:
    started: list[grpc.Server] = []
    yield started
    for server in started:
        server.stop(None)


def _restarted(
    federation: Federation, servers: list[grpc.Server], restart_pem: bytes
) -> tuple[PeerConnector, grpc.Channel]:
    """A channel to traffic (pinned to its new certificate), used once, after which
    traffic restarts on the same address with ``restart_pem``."""
    server, port = _serve(federation, federation.traffic_new.pem)
    servers.append(server)
    connector = _connector(
        federation, [_directory(federation, port, federation.traffic_new.fingerprint)]
    )
    channel = connector.channel("traffic")
    _check(channel)
    server.stop(None).wait()
    server, _ = _serve(federation, restart_pem, port)
    servers.append(server)
    return connector, channel


def test_reconnect_to_a_replaced_certificate_of_the_same_department_is_refused(
    federation: Federation, servers: list[grpc.Server]
) -> None:
    # The peer restarts on the same address with its old certificate: valid,
    # from the federation CA, with the department's DNS name, but not the pin.
    connector, channel = _restarted(federation, servers, federation.traffic_old.pem)
    assert connector.channel("traffic") is channel
    with pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=1.5)
    with pytest.raises(grpc.RpcError) as failure:
        _check(channel)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    connector.close()


def test_reconnect_to_the_pinned_certificate_is_accepted(
    federation: Federation, servers: list[grpc.Server]
) -> None:
    connector, channel = _restarted(federation, servers, federation.traffic_new.pem)
    grpc.channel_ready_future(channel).result(timeout=5)
    _check(channel)
    connector.close()


def test_first_connection_to_a_certificate_that_is_not_pinned_is_refused(
    federation: Federation, servers: list[grpc.Server]
) -> None:
    server, port = _serve(federation, federation.traffic_old.pem)
    servers.append(server)
    connector = _connector(
        federation, [_directory(federation, port, federation.traffic_new.fingerprint)]
    )
    with pytest.raises(CertificateError, match="is not the one pinned in directory serial 1"):
        connector.channel("traffic")


def test_a_new_pin_closes_the_channel_for_the_old_one(
    federation: Federation, servers: list[grpc.Server]
) -> None:
    server, port = _serve(federation, federation.traffic_old.pem)
    servers.append(server)
    current = [_directory(federation, port, federation.traffic_old.fingerprint)]
    connector = _connector(federation, current)
    old_channel = connector.channel("traffic")
    _check(old_channel)
    server.stop(None).wait()
    server, _ = _serve(federation, federation.traffic_new.pem, port)
    servers.append(server)
    current[0] = _directory(federation, port, federation.traffic_new.fingerprint, serial=2)
    new_channel = connector.channel("traffic")
    assert new_channel is not old_channel
    _check(new_channel)
    with pytest.raises(ValueError, match="closed channel"):
        _check(old_channel)
    connector.close()
