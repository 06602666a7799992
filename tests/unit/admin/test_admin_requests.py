"""The admin socket over a real Unix socket: every request the service cannot use ends with a
one-line usage error, never with the text of an exception from inside a command, and the
ledger records each call, the refused ones too."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from ledger.canonical import loads
from ledger.store import LedgerStore
from node.admin.args import Args, ArgumentError, b64_arg, parse_args
from node.admin.builtin import directory_install
from node.admin.client import SOCKET_NAME, invoke
from node.admin.registry import AdminHandler, Emit
from node.admin.service import AdminService
from node.audit.interceptor import AuditInterceptor
from node.errors import AdminError, AgreementError, NodeError
from protocols.fednode.v1 import admin_pb2, admin_pb2_grpc

_SECRET = "/var/lib/fednode/ledger/ledger.sqlite"


class StoreSink:
    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def record(self, event: str, **fields: Any) -> int:
        seq, _ = self.store.append({"event": event, **fields})
        return seq


def _needs_name(runtime: Any, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return {"hello": str(args["name"])}


def _keeps_its_message(runtime: Any, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    # A command that turns a missing argument into its own message still may.
    try:
        return {"value": args["agreement_b64"]}
    except KeyError as e:
        raise AgreementError("the agreement file content is missing") from e


def _buggy(runtime: Any, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    raise ValueError(f"database is locked: {_SECRET}")


def _exits(runtime: Any, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    sys.exit(3)


HANDLERS: dict[str, AdminHandler] = {
    "t.needs_name": _needs_name,
    "t.keeps_its_message": _keeps_its_message,
    "t.buggy": _buggy,
    "t.exits": _exits,
}


@dataclass
class Admin:
    home: Path
    store: LedgerStore

    def raw(self, command: str, args_json: bytes) -> tuple[list[admin_pb2.AdminEvent], str]:
        with grpc.insecure_channel(f"unix:{self.home / SOCKET_NAME}") as channel:
            call = admin_pb2_grpc.AdminStub(channel).Invoke(
                admin_pb2.AdminCall(command=command, args_json=args_json), timeout=10
            )
            events: list[admin_pb2.AdminEvent] = []
            try:
                events.extend(call)
            except grpc.RpcError as e:
                return events, e.code().name
            return events, "OK"

    def finished(self) -> dict[str, Any]:
        entries: list[dict[str, Any]] = [loads(body) for _, body, _ in self.store.iter_entries()]
        assert [e["event"] for e in entries] == ["rpc.started", "rpc.finished"]
        return entries[1]


@pytest.fixture
def admin() -> Iterator[Admin]:
    # A short folder: a Unix socket path may have at most 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="fna-"))
    store = LedgerStore(home / "ledger.sqlite", "alpha")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[AuditInterceptor(StoreSink(store), surface="admin")],
    )
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(object(), HANDLERS), server)  # type: ignore[arg-type]
    server.add_insecure_port(f"unix:{home / SOCKET_NAME}")
    server.start()
    yield Admin(home, store)
    server.stop(None).wait()
    store.close()
    shutil.rmtree(home)


@pytest.mark.parametrize(
    ("command", "args_json", "message"),
    [
        ("t.nothing", b"{}", "unknown admin command 't.nothing'"),
        ("x" * 10_000, b"{}", r"unknown admin command 'xxx.*\(10002 characters\)"),
        ("t.needs_name", b"{not json", "arguments are not valid JSON: JSONDecodeError"),
        ("t.needs_name", b"\xff\xfe\x00", "arguments are not valid JSON"),
        ("t.needs_name", b"[" * 100_000 + b"]" * 100_000, "not valid JSON: RecursionError"),
        ("t.needs_name", b'["name"]', "arguments must be a JSON object, got list"),
        ("t.needs_name", b"null", "arguments must be a JSON object, got NoneType"),
        ("t.needs_name", b'{"nom": "x"}', "missing argument 'name'"),
    ],
)
def test_a_request_the_service_cannot_use_ends_with_a_usage_error(
    admin: Admin, command: str, args_json: bytes, message: str
) -> None:
    events, code = admin.raw(command, args_json)
    assert code == "INVALID_ARGUMENT"
    assert [e.WhichOneof("event") for e in events] == ["failure"]
    failure = events[0].failure
    assert failure.kind == "AdminError"
    assert len(failure.message) < 200
    assert re.search(message, failure.message), failure.message
    finished = admin.finished()
    assert (finished["outcome"], finished["detail"]["code"]) == ("error", "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("command", "args", "error", "message", "code"),
    [
        ("t.needs_name", {}, AdminError, "^missing argument 'name'$", "INVALID_ARGUMENT"),
        (
            "t.keeps_its_message",
            {},
            AgreementError,
            "file content is missing",
            "FAILED_PRECONDITION",
        ),
        (
            "t.buggy",
            {},
            AdminError,
            r"^t\.buggy failed with an internal error \(ValueError\)$",
            "INTERNAL",
        ),
        ("t.exits", {}, AdminError, r"internal error \(SystemExit\)", "INTERNAL"),
    ],
)
def test_a_failing_command_reaches_the_cli_as_one_line_and_is_recorded(
    admin: Admin,
    command: str,
    args: dict[str, Any],
    error: type[NodeError],
    message: str,
    code: str,
) -> None:
    with pytest.raises(error, match=message) as raised:
        invoke(admin.home, command, args, timeout=10)
    assert _SECRET not in str(raised.value)
    finished = admin.finished()
    assert (finished["outcome"], finished["detail"]["code"]) == ("error", code)
    assert finished["actor"] == "operator"
    assert finished["detail"]["command"] == command


def test_a_command_with_its_arguments_succeeds(admin: Admin) -> None:
    assert invoke(admin.home, "t.needs_name", {"name": "ops"}, timeout=10) == {"hello": "ops"}
    assert admin.finished()["outcome"] == "ok"


def test_many_concurrent_calls_each_get_their_own_answer(admin: Admin) -> None:
    results: dict[int, Any] = {}

    def one(i: int) -> None:
        results[i] = invoke(admin.home, "t.needs_name", {"name": str(i)}, timeout=20)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {i: {"hello": str(i)} for i in range(16)}
    entries = [loads(body) for _, body, _ in admin.store.iter_entries()]
    assert sorted(e["outcome"] for e in entries if e["event"] == "rpc.finished") == ["ok"] * 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "argument 'directory_b64' must be a base64 string, got None"),
        ({"directory_b64": 12}, "must be a base64 string, got 12"),
        ({"directory_b64": "not base64!"}, "argument 'directory_b64' is not valid base64"),
        ({"directory_b64": "QQ"}, "is not valid base64"),
    ],
)
def test_directory_install_refuses_bad_bytes_before_reading_them(
    args: dict[str, Any], message: str
) -> None:
    # The runtime is never reached: the arguments are checked first.
    with pytest.raises(ArgumentError, match=message):
        directory_install(object(), Args(args), lambda _e: None)  # type: ignore[arg-type]


def test_b64_arg_returns_the_bytes() -> None:
    assert b64_arg({"x": "QUJD"}, "x") == b"ABC"


def test_parse_args_reads_an_empty_request_as_no_arguments() -> None:
    assert parse_args(b"") == {}
    assert parse_args(json.dumps({"a": 1}).encode()) == {"a": 1}


def test_a_request_over_the_size_limit_is_one_line_naming_the_limit(admin: Admin) -> None:
    with pytest.raises(AdminError, match=r"larger than the admin socket's 4 MiB limit") as raised:
        invoke(admin.home, "t.needs_name", {"name": "x" * (5 << 20)}, timeout=10)
    assert "\n" not in str(raised.value)
    assert "debug_error_string" not in str(raised.value)
