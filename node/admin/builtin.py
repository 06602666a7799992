"""Admin commands every node has: status and directory installation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from node.admin.args import b64_arg
from node.admin.registry import Emit, admin_command
from node.errors import NodeError
from node.runtime import NodeRuntime
from protocols.fednode.v1 import node_pb2, node_pb2_grpc

_STATUS_DEADLINE_S = 3.0


def _probe(runtime: NodeRuntime, department: str) -> dict[str, Any]:
    entry = runtime.directory.get(department)
    result: dict[str, Any] = {
        "department": department,
        "display_name": entry.display_name,
        "endpoint": entry.endpoint,
        "witness": entry.witness,
    }
    try:
        stub = node_pb2_grpc.NodeStub(runtime.peer_channel(department))
        info = stub.Info(node_pb2.InfoRequest(), timeout=_STATUS_DEADLINE_S)
    except NodeError as e:
        runtime.peers.forget(department)
        return {**result, "reachable": False, "detail": str(e)}
    except grpc.RpcError as e:
        runtime.peers.forget(department)
        return {**result, "reachable": False, "detail": f"{e.code().name}: {e.details()}"}
    return {
        **result,
        "reachable": True,
        "detail": f"authenticated as {info.department}; it sees us as {info.caller_department}",
        "directory_serial": info.directory_serial,
        "version": info.version,
    }


@admin_command("node.status")
def node_status(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    directory = runtime.directory
    peers = sorted(d for d in directory.entries if d != runtime.department)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(peers)))) as pool:
        probes = list(pool.map(lambda d: _probe(runtime, d), peers))
    return {
        "federation": runtime.config.federation,
        "department": runtime.department,
        "display_name": runtime.config.display_name,
        "endpoint": runtime.config.endpoint,
        "directory_serial": directory.serial,
        "directory_expires_at": directory.expires_at,
        "witness_threshold": directory.witness_threshold,
        "peers": probes,
    }


@admin_command("directory.install")
def directory_install(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    data = b64_arg(args, "directory_b64")
    before = runtime.directory.serial
    directory = runtime.directories.install(data)
    runtime.audit.record(
        "directory.installed",
        detail={"serial": directory.serial, "previous_serial": before},
    )
    return {"serial": directory.serial, "previous_serial": before}
