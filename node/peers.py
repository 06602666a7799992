"""Outgoing connections to other departments over mutual TLS.

Before a channel to a department is used, the node checks three things:

1. the department is in the current directory (else :class:`UnknownPeerError`);
2. a TLS handshake to its endpoint, verified against the federation CA and
   the department's DNS name, presents exactly the certificate the directory
   pins for it, which also rules out revoked certificates, since a revoked
   certificate is never pinned;
3. the gRPC channel then trusts that one certificate and nothing else: its
   only root is the pinned certificate itself (gRPC's TLS stack accepts a
   trusted leaf as the end of a partial chain), and it checks the DNS name.

Invariant: every TLS connection a channel makes, including each reconnect
after the peer restarts or the network changes, accepts only the pinned
certificate. gRPC re-handshakes on reconnect without calling back into
Python, so a check made once before the channel opened would not cover
later connections; binding the channel's trust to the pinned certificate
does. A replaced or revoked certificate of the same department (same CA,
same DNS name, still within its validity) therefore fails the handshake.

Channels are cached per (department, pinned fingerprint, endpoint), so a new
directory that rotates a certificate or moves an endpoint opens a new channel,
and the department's channels for the old pin are closed then.

Residual risk: a channel follows the directory only when
:meth:`PeerConnector.channel` is next called. After a directory that revokes
or replaces the pinned certificate is installed, a caller still holding the
old channel object can use it (and its open HTTP/2 connection) until that
call closes it. The peer's server checks every call against its own
directory, which covers the other direction. The binding relies on gRPC
accepting a trusted leaf as a partial chain; were a gRPC release to stop,
channels would fail closed (no connection at all), and
``test_reconnect_to_the_pinned_certificate_is_accepted`` would say so.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from node.errors import CertificateError, PeerError
from node.identity import certs
from node.identity.directory import DepartmentEntry, Directory

__all__ = ["PeerConnector", "split_endpoint"]

_HANDSHAKE_TIMEOUT_S = 5.0


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise PeerError(f"endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


class PeerConnector:
    """Opens and caches mTLS channels to the departments in the current directory."""

    def __init__(
        self,
        *,
        federation: str,
        ca_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        directory: Callable[[], Directory],
    ) -> None:
        self._federation = federation
        self._ca_pem = ca_pem
        self._cert_pem = cert_pem
        self._key_pem = key_pem
        self._directory = directory
        self._channels: dict[tuple[str, str, str], grpc.Channel] = {}
        self._lock = threading.Lock()
        self._ssl_context = self._make_ssl_context()

    def _make_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self._ca_pem.decode())
        context.set_alpn_protocols(["h2"])
        # ssl can only load a client key from files; they live in a private temp dir briefly.
        with tempfile.TemporaryDirectory() as tmp:
            cert_file = Path(tmp) / "cert.pem"
            key_file = Path(tmp) / "key.pem"
            cert_file.write_bytes(self._cert_pem)
            key_file.touch(mode=0o600)
            key_file.write_bytes(self._key_pem)
            context.load_cert_chain(cert_file, key_file)
        return context

    def check_pinned_certificate(self, department: str) -> bytes:
        """Handshake with ``department`` and compare its certificate with the directory's pin.

        Returns:
            The DER bytes of the certificate, which is the pinned one.

        Raises:
            UnknownPeerError: the department is not in the directory.
            PeerError: the endpoint cannot be reached.
            CertificateError: the server's certificate is not the pinned one (revoked,
                rotated without a new directory, or an impostor).
        """
        directory = self._directory()
        return self._pinned_certificate(directory, directory.get(department))

    def _pinned_certificate(self, directory: Directory, entry: DepartmentEntry) -> bytes:
        department = entry.department
        host, port = split_endpoint(entry.endpoint)
        try:
            with (
                socket.create_connection((host, port), timeout=_HANDSHAKE_TIMEOUT_S) as raw,
                self._ssl_context.wrap_socket(
                    raw, server_hostname=certs.dns_name(self._federation, department)
                ) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as e:
            raise CertificateError(
                f"{department} at {entry.endpoint} presented a certificate that does not "
                f"verify: {e.verify_message}",
                hint="the peer's certificate may be expired or from another CA",
            ) from e
        except ssl.SSLError as e:
            raise PeerError(
                f"TLS handshake with {department} at {entry.endpoint} failed: {e.reason}",
                hint="the peer may have refused this node's certificate (revoked or expired?)",
            ) from e
        except OSError as e:
            raise PeerError(
                f"cannot reach {department} at {entry.endpoint}: {e.strerror or e}",
                hint="check that the peer node is running and the endpoint in the directory",
            ) from e
        if der is None:
            raise CertificateError(f"{department} presented no certificate")
        found = "sha256:" + hashlib.sha256(der).hexdigest()
        if found != entry.tls_fingerprint:
            revoked = directory.revocation_for(found)
            why = "is revoked" if revoked else "is not the one pinned"
            raise CertificateError(
                f"{department} presented certificate {found[:19]}… which {why} in "
                f"directory serial {directory.serial}",
                hint="install the latest directory with 'fednode directory install'",
            )
        return der

    def channel(self, department: str) -> grpc.Channel:
        """An mTLS channel to ``department``, checked against the directory's pin.

        Raises:
            UnknownPeerError, PeerError, CertificateError: see :meth:`check_pinned_certificate`.
        """
        directory = self._directory()
        entry = directory.get(department)
        key = (department, entry.tls_fingerprint, entry.endpoint)
        with self._lock:
            cached = self._channels.get(key)
        if cached is not None:
            return cached
        pinned = self._pinned_certificate(directory, entry)
        credentials = grpc.ssl_channel_credentials(
            # The pinned certificate is the channel's only trust anchor, so a
            # reconnect accepts it and nothing else (see the module docstring).
            root_certificates=ssl.DER_cert_to_PEM_cert(pinned).encode(),
            private_key=self._key_pem,
            certificate_chain=self._cert_pem,
        )
        channel = grpc.secure_channel(
            entry.endpoint,
            credentials,
            options=[
                ("grpc.ssl_target_name_override", certs.dns_name(self._federation, department)),
                ("grpc.default_authority", certs.dns_name(self._federation, department)),
                # Detect a dead link within ~30 s even while a stream waits for data.
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                # A fixed 16 MiB stream window (four envelope chunks) instead of gRPC's
                # adaptive one, which keeps widening while a receiver writes to disk and
                # so grows the receiver's memory with the share, not with the chunk size.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", 16 * 1024 * 1024),
            ],
        )
        stale: list[grpc.Channel] = []
        with self._lock:
            existing = self._channels.get(key)
            if existing is not None:
                # Another thread opened the same channel meanwhile: keep one.
                stale.append(channel)
                channel = existing
            else:
                # A channel for the department's previous pin or endpoint must
                # not stay usable after the directory moved on.
                for old in [k for k in self._channels if k[0] == department]:
                    stale.append(self._channels.pop(old))
                self._channels[key] = channel
        for old_channel in stale:
            old_channel.close()
        return channel

    def forget(self, department: str) -> None:
        """Drop cached channels to ``department`` (after a failure or a directory change)."""
        with self._lock:
            for key in [k for k in self._channels if k[0] == department]:
                self._channels.pop(key).close()

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
