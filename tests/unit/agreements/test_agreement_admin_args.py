"""Agreement admin commands refuse an argument of the wrong type with a one-line
message naming it, before anything is read or signed."""

from __future__ import annotations

from typing import Any

import pytest

from node.admin.args import Args, ArgumentError
from node.agreements.admin import agreement_create, agreement_revoke, agreement_show

GOOD_CREATE: dict[str, Any] = {
    "consumer": "statistics",
    "dataset": "visits",
    "purpose_code": "STAT-7",
    "purpose_text": "monthly statistics",
    "valid_from": 1_700_000_000,
    "valid_until": 1_800_000_000,
    "modes": ["transfer"],
    "columns": {"district": {"treatment": "plain"}},
}


class _NoRuntime:
    """Any use of the runtime means the arguments were not checked first."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"runtime.{name} read before the arguments were checked")


@pytest.mark.parametrize(
    ("handler", "args", "match"),
    [
        (agreement_create, {"valid_until": "next year"}, r"'valid_until' must be an integer"),
        (agreement_create, {"valid_until": 1.5e9}, r"'valid_until' must be an integer"),
        (agreement_create, {"valid_until": True}, r"'valid_until' must be an integer"),
        (agreement_create, {"valid_until": None}, r"'valid_until' must be an integer"),
        (agreement_create, {"valid_from": "now"}, r"'valid_from' must be an integer"),
        (agreement_create, {"consumer": 7}, r"'consumer' must be a string, got 7"),
        (agreement_create, {"dataset": ["visits"]}, r"'dataset' must be a string"),
        (agreement_create, {"purpose_code": None}, r"'purpose_code' must be a string"),
        (agreement_create, {"purpose_text": {"a": 1}}, r"'purpose_text' must be a string"),
        (agreement_create, {"modes": "transfer"}, r"'modes' must be a list of strings"),
        (agreement_create, {"modes": [1]}, r"'modes' must be a list of strings"),
        (agreement_show, {"id": 12}, r"'id' must be a string, got 12"),
        (agreement_revoke, {"id": None}, r"'id' must be a string, got None"),
        (agreement_revoke, {"id": "agr-1", "notify": "no"}, r"'notify' must be true or false"),
        (agreement_revoke, {"id": "agr-1", "reason": 3}, r"'reason' must be a string"),
    ],
)
def test_a_wrong_argument_type_is_a_one_line_argument_error(
    handler: Any, args: dict[str, Any], match: str
) -> None:
    full = {**GOOD_CREATE, **args} if handler is agreement_create else args
    with pytest.raises(ArgumentError, match=match) as raised:
        handler(_NoRuntime(), Args(full), lambda _: None)
    assert "\n" not in str(raised.value) and "ValueError" not in str(raised.value)


def test_well_typed_arguments_get_past_the_checks() -> None:
    with pytest.raises(AssertionError, match="read before"):
        agreement_create(_NoRuntime(), Args(GOOD_CREATE), lambda _: None)  # type: ignore[arg-type]
    without_start = {k: v for k, v in GOOD_CREATE.items() if k not in ("valid_from", "modes")}
    with pytest.raises(AssertionError, match="read before"):
        agreement_create(_NoRuntime(), Args(without_start), lambda _: None)  # type: ignore[arg-type]
