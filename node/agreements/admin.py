"""Admin commands of agreements: create, countersign, import, list, show, revoke.

Each argument is checked for its JSON type before use: a value of the wrong
type ends with a one-line :class:`ArgumentError` naming the argument, never
with the text of a ``ValueError`` from a conversion inside the command.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import grpc

from node.admin.args import ArgumentError
from node.admin.registry import Emit, admin_command
from node.agreements import workflow
from node.agreements.document import SignedAgreement
from node.agreements.policy import agreements_of
from node.agreements.revocation import send_notice
from node.errors import AgreementError, NodeError, brief
from node.exchange import convert
from protocols.fednode.v1 import exchange_pb2_grpc

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

_PUSH_DEADLINE_S = 20.0


def _str_arg(args: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    """String argument ``name``; ``None`` when optional and absent or null.

    Raises:
        ArgumentError: it is not a string (or is missing, unless ``optional``).
    """
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ArgumentError(f"argument {name!r} must be a string, got {brief(value, 40)}")
    return value


def _required_str(args: dict[str, Any], name: str) -> str:
    value = _str_arg(args, name)
    assert value is not None  # _str_arg refuses a missing required argument
    return value


def _time_arg(args: dict[str, Any], name: str, *, optional: bool = False) -> int | None:
    """Time argument ``name`` in whole seconds since the epoch.

    Raises:
        ArgumentError: it is not an integer (or is missing, unless ``optional``).
    """
    value = args.get(name)
    if value is None and optional:
        return None
    # bool is an int in Python, but true is no time.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArgumentError(
            f"argument {name!r} must be an integer (seconds since 1970 UTC), got {brief(value, 40)}"
        )
    return value


def _modes_arg(args: dict[str, Any]) -> list[str]:
    value = args.get("modes") or []
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ArgumentError(f"argument 'modes' must be a list of strings, got {brief(value, 40)}")
    return value


def _signed_from(args: dict[str, Any]) -> SignedAgreement:
    try:
        data = base64.b64decode(str(args["agreement_b64"]), validate=True)
    except (KeyError, ValueError) as e:
        raise AgreementError("the agreement file content is missing or not base64") from e
    return SignedAgreement.from_bytes(data)


@admin_command("agreement.create")
def agreement_create(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    columns = args.get("columns")
    if not isinstance(columns, dict):
        raise AgreementError("columns must map column names to treatments")
    valid_until = _time_arg(args, "valid_until")
    assert valid_until is not None  # _time_arg refuses a missing required argument
    record = workflow.create(
        runtime,
        consumer=_required_str(args, "consumer"),
        dataset=_required_str(args, "dataset"),
        purpose_code=_required_str(args, "purpose_code"),
        purpose_text=_str_arg(args, "purpose_text", optional=True) or "",
        valid_from=_time_arg(args, "valid_from", optional=True),
        valid_until=valid_until,
        modes=_modes_arg(args),
        columns=columns,
    )
    result = record.to_json()
    result["personal_plain"] = workflow.personal_in_plain(runtime, record.signed)
    return result


@admin_command("agreement.countersign")
def agreement_countersign(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    record = workflow.countersign(runtime, _signed_from(args))
    result = record.to_json()
    result["pushed"] = False
    if args.get("push"):
        signed = record.signed
        # The agreement is active here now: a failed push is reported in the
        # result, never raised, so the operator still gets the file to send.
        try:
            stub = exchange_pb2_grpc.ExchangeStub(runtime.peer_channel(signed.provider))
            ack = stub.SubmitAgreement(convert.agreement_to_proto(signed), timeout=_PUSH_DEADLINE_S)
        except grpc.RpcError as e:
            result["push_error"] = f"{e.code().name}: {e.details()}"
        except NodeError as e:
            result["push_error"] = str(e)
        else:
            result["pushed"] = True
            result["provider_state"] = ack.state
            if ack.state == "revoked":
                # The provider revoked it before this countersignature: this copy
                # must not stay active, or this node would fetch and answer under it.
                record = workflow.revoke(
                    runtime,
                    signed.id,
                    f"{signed.provider} revoked it before it was countersigned",
                )
                result.update(record.to_json())
    return result


@admin_command("agreement.import")
def agreement_import(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return workflow.accept_countersigned(runtime, _signed_from(args)).to_json()


@admin_command("agreement.list")
def agreement_list(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return {"agreements": [r.to_json() for r in agreements_of(runtime).list()]}


@admin_command("agreement.show")
def agreement_show(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    agreement_id = _required_str(args, "id")
    return agreements_of(runtime).get(agreement_id).to_json()


@admin_command("agreement.revoke")
def agreement_revoke(runtime: NodeRuntime, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Revoke here at once, then notify the other party unless ``notify`` is false.

    On an agreement already revoked here, only the notice is sent again.
    """
    agreement_id = _required_str(args, "id")
    notify = args.get("notify", True)
    if not isinstance(notify, bool):
        raise ArgumentError(f"argument 'notify' must be true or false, got {brief(notify, 40)}")
    reason = _str_arg(args, "reason", optional=True) or "revoked by operator"
    record = agreements_of(runtime).get(agreement_id)
    if record.state == "proposed":
        # Never countersigned: the consumer holds no copy to revoke. Should it
        # countersign later, its push is answered "revoked" and it revokes its own.
        record = workflow.revoke(runtime, agreement_id, reason)
        return {**record.to_json(), "peer_holds_no_copy": True}
    if record.state != "revoked" or not notify:
        record = workflow.revoke(runtime, agreement_id, reason)
    result = record.to_json()
    if notify:
        failure = send_notice(runtime, record, record.reason or "revoked")
        result["peer_notified"] = failure is None
        result["notice_error"] = failure
    return result
