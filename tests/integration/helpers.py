"""Helpers for integration tests: run the real ``fednode`` CLI, call a node as a peer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

from node.config import load_config
from node.identity import certs
from node.localfed import LocalFederation
from protocols.fednode.v1 import exchange_pb2_grpc


def fednode(
    *args: str | Path, check: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real ``fednode`` CLI and capture its output."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"fednode {' '.join(map(str, args))} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def status(home: Path) -> dict[str, Any]:
    """``fednode status --json``; exit 5 (a peer did not answer) must agree with the JSON."""
    result = fednode("status", "--json", "--home", home)
    assert result.returncode in (0, 5), result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    silent = [p["department"] for p in parsed["peers"] if not p["reachable"]]
    assert (result.returncode == 5) == bool(silent), (result.returncode, silent)
    return parsed


def exchange_stub(fed: LocalFederation, sender: str, target: str) -> Any:
    """An Exchange stub on a real mTLS channel holding ``sender``'s certificate."""
    own = load_config(fed.homes[sender])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=own.ca_cert_path.read_bytes(),
        private_key=own.tls_key_path.read_bytes(),
        certificate_chain=own.cert_path.read_bytes(),
    )
    name = certs.dns_name(fed.federation, target)
    channel = grpc.secure_channel(
        load_config(fed.homes[target]).endpoint,
        credentials,
        options=[("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)],
    )
    return exchange_pb2_grpc.ExchangeStub(channel)
