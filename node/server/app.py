"""``fednode serve``: assemble the runtime, bind both ports, and run until SIGTERM.

Two gRPC servers run in one process:

* the network server on ``[network] listen``, mTLS only, with the audit and
  admission interceptors in that order, so even refused calls are recorded;
* the admin server on ``<home>/admin.sock``, created under umask 077 so the
  socket is never connectable by anyone but the node's user, then set to mode
  0600, with the audit interceptor.

A path at ``admin.sock`` that is not a socket (a file, a directory, a
symlink, planted or left by mistake) is refused, not removed or followed; a
socket is removed only once no node answers on it.

On the network port, a peer that pings more often than the server allows is
disconnected after a few strikes (GOAWAY "too_many_pings").

On SIGTERM or SIGINT the node stops accepting calls, lets running calls
finish for a grace period, closes the ledger and removes the socket.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import signal
import stat
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc

from node.admin.client import is_running
from node.admin.registry import load_handlers
from node.admin.service import AdminService
from node.audit import AuditInterceptor, open_audit
from node.config import NodeConfig, load_config
from node.errors import CertificateError, ConfigError
from node.identity import certs, keys
from node.identity.directory import DirectoryHolder
from node.logs import configure_logging
from node.native_log import capture_native_stderr, restore_native_stderr
from node.peers import PeerConnector
from node.runtime import NodeRuntime
from node.server.authz import AdmissionInterceptor
from protocols.fednode.v1 import admin_pb2_grpc

__all__ = ["NETWORK_SERVER_OPTIONS", "SERVICE_MODULES", "NodeProcess", "serve"]

log = logging.getLogger("fednode.server")

#: Modules with ``add_services(server, runtime)``, mounted on the network port.
SERVICE_MODULES: tuple[str, ...] = (
    "node.server.node_service",
    "node.exchange.service",
    "node.fl.service",
    "node.audit.service",
)

_GRACE_S = 5.0

#: A peer whose link dies mid-stream is detected within about 30 s (ping every 20 s,
#: 10 s to answer), so a cut share or federated call is cancelled on this side too
#: instead of holding its stream open until its deadline. Nodes ping every 20 s
#: (node.peers); a ping sooner than 10 s after the last one is a strike, and the
#: third strike closes the connection. Zero strikes would mean "unlimited": any
#: certificate holder could then flood the node with pings for free.
KEEPALIVE_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
)
#: Every option the network server runs with. There is no per-connection stream
#: limit ("grpc.max_concurrent_streams"): gRPC's Python client does not wait for
#: one, and fails the calls over it with UNAVAILABLE (RST_STREAM REFUSED_STREAM).
NETWORK_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),
    *KEEPALIVE_SERVER_OPTIONS,
)
_WORKERS = 32
#: The longest Unix socket path the kernel accepts (sun_path is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107


def _check_certificate(config: NodeConfig) -> bytes:
    cert = certs.load_cert(config.cert_path)
    federation, department = certs.identity_of(cert)
    if (federation, department) != (config.federation, config.department):
        raise CertificateError(
            f"certificate {config.cert_path} is for {federation}/{department}, "
            f"this node is {config.federation}/{config.department}",
            hint="install the certificate the authority issued for this department",
        )
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise CertificateError(
            f"this node's certificate expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            hint="ask the federation authority for a new one ('fednode ca issue --replace')",
        )
    if cert.not_valid_before_utc > now:
        raise CertificateError(
            f"this node's certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d} UTC",
            hint="check the system clock",
        )
    return config.cert_path.read_bytes()


class NodeProcess:
    """A configured node: build it, :meth:`start` it, then :meth:`stop` it."""

    def __init__(self, home: Path) -> None:
        self.config = load_config(home)
        config = self.config
        _check_socket_path(config.admin_socket)
        # Before anything opens the ledger or binds the port: a second process on
        # one home would otherwise fail on the port, with advice to change it.
        _refuse_if_running(config.home)
        cert_pem = _check_certificate(config)
        key_pem = config.tls_key_path.read_bytes()
        keys.load_tls_key(config.tls_key_path)
        ca_cert = certs.load_ca_cert(config.ca_cert_path)  # names 'ca init' if it is missing
        ca_pem = config.ca_cert_path.read_bytes()
        directories = DirectoryHolder(config.directory_path, config.directory_state_path, ca_cert)
        signing_key = keys.load_ed25519(config.signing_key_path)
        self._audit = open_audit(config, signing_key, lambda: directories.current)
        self.runtime = NodeRuntime(
            config=config,
            signing_key=signing_key,
            hpke=keys.load_hpke(config.hpke_key_path),
            directories=directories,
            audit=self._audit,
            peers=PeerConnector(
                federation=config.federation,
                ca_pem=ca_pem,
                cert_pem=cert_pem,
                key_pem=key_pem,
                directory=lambda: directories.current,
            ),
        )
        self._network = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="rpc"),
            interceptors=[
                AuditInterceptor(self._audit, surface="network", federation=config.federation),
                AdmissionInterceptor(
                    lambda: directories.current, config.federation, audit=self._audit
                ),
            ],
            options=list(NETWORK_SERVER_OPTIONS),
        )
        for name in SERVICE_MODULES:
            importlib.import_module(name).add_services(self._network, self.runtime)
        credentials = grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
        )
        try:
            self.port = self._network.add_secure_port(config.listen, credentials)
        except RuntimeError as e:
            raise ConfigError(
                f"cannot listen on {config.listen}: {e}",
                hint="another process may hold the port; change [network] listen",
            ) from e
        self._admin = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="admin"),
            interceptors=[AuditInterceptor(self._audit, surface="admin")],
        )
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminService(self.runtime, load_handlers()), self._admin
        )

    def start(self) -> None:
        socket_path = self.config.admin_socket
        _clear_stale_socket(self.config.home, socket_path)
        old_umask = os.umask(0o077)
        try:
            self._admin.add_insecure_port(f"unix:{socket_path}")
        except RuntimeError as e:
            raise ConfigError(
                f"cannot create the admin socket {socket_path}",
                hint="check that the node's user may write to its home folder",
            ) from e
        finally:
            os.umask(old_umask)
        socket_path.chmod(0o600)
        self._admin.start()
        self._network.start()
        self.config.pid_path.write_text(f"{os.getpid()}\n")
        self._audit.record(
            "node.started",
            detail={
                "listen": self.config.listen,
                "directory_serial": self.runtime.directory.serial,
            },
        )
        log.info(
            "node ready",
            extra={
                "event": "node.ready",
                "listen": self.config.listen,
                "port": self.port,
                "admin_socket": str(socket_path),
                "directory_serial": self.runtime.directory.serial,
            },
        )

    def stop(self) -> None:
        log.info("node stopping", extra={"event": "node.stopping"})
        admin_done = self._admin.stop(_GRACE_S)
        network_done = self._network.stop(_GRACE_S)
        admin_done.wait()
        network_done.wait()
        self.runtime.peers.close()
        try:
            self._audit.record("node.stopped")
        finally:
            self._audit.close()
        self.config.admin_socket.unlink(missing_ok=True)
        self.config.pid_path.unlink(missing_ok=True)
        log.info("node stopped", extra={"event": "node.stopped"})


def _check_socket_path(path: Path) -> None:
    """Refuse a home whose admin socket path the kernel cannot bind.

    Raises:
        ConfigError: the path is longer than a Unix socket path may be.
    """
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"the admin socket path {path} is {len(os.fsencode(path))} bytes long; "
            f"a Unix socket path may have at most {_MAX_SOCKET_PATH}",
            hint="move the node's home to a shorter path (or link it from one) and use that --home",
        )


def _clear_stale_socket(home: Path, path: Path) -> None:
    """Remove a socket a crashed node left at ``path``; refuse anything else there.

    Raises:
        ConfigError: a node answers on it, or the path is not a socket.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        # A symlink or file here is not ours: following or deleting it could
        # touch a file elsewhere, or hide a planted socket.
        kind = "a symlink" if stat.S_ISLNK(mode) else "not a socket"
        raise ConfigError(
            f"{path} is {kind}",
            hint="a node creates this path itself; inspect it, remove it, then start again",
        )
    # A socket left by a crashed node; a live node would still be answering on it.
    _refuse_if_running(home)
    path.unlink(missing_ok=True)


def _refuse_if_running(home: Path) -> None:
    if is_running(home):
        raise ConfigError(
            f"a node is already running in {home}",
            hint="stop it first ('fednode status' shows it), or use another --home",
        )


def serve(home: Path) -> int:
    """Run the node in ``home`` until SIGTERM or SIGINT; return the exit code."""
    config = load_config(home)
    # Before the log handler exists, so the handler writes to the real stderr.
    capture_native_stderr(config.department)
    try:
        return _serve(home, config)
    finally:
        restore_native_stderr()


def _serve(home: Path, config: NodeConfig) -> int:
    configure_logging(config.log_level, department=config.department)
    process = NodeProcess(home)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    process.start()
    stop.wait()
    process.stop()
    return 0
