"""``share.fetch`` refuses an argument of the wrong type with a one-line message
naming it, before anything is fetched."""

from __future__ import annotations

from typing import Any

import pytest

from node.admin.args import Args, ArgumentError
from node.exchange import admin as exchange_admin
from node.exchange.admin import share_fetch
from node.exchange.consumer import DEFAULT_DEADLINE_S

GOOD: dict[str, Any] = {
    "from": "health",
    "agreement": "agr-1",
    "out": "/tmp/visits.parquet",
    "format": None,
    "columns": ["district"],
    "compression": "zstd",
    "overwrite": False,
    "validate": True,
    "limit_rate": 1_000_000,
}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"limit_rate": "10M"}, r"'limit_rate' must be a positive integer \(bytes per second\)"),
        ({"limit_rate": 2.5}, r"'limit_rate' must be a positive integer"),
        (
            {"limit_rate": -1},
            r"'limit_rate' must be a positive integer \(bytes per second\), got -1",
        ),
        ({"limit_rate": True}, r"'limit_rate' must be a positive integer"),
        ({"deadline_s": "soon"}, r"'deadline_s' must be a positive number of seconds"),
        ({"deadline_s": float("nan")}, r"'deadline_s' must be a positive number"),
        ({"deadline_s": -3.0}, r"'deadline_s' must be a positive number"),
        ({"from": 5}, r"'from' must be a string, got 5"),
        ({"from": None}, r"'from' must be a string, got None"),
        ({"agreement": ["agr-1"]}, r"'agreement' must be a string"),
        ({"out": 1}, r"'out' must be a string"),
        ({"format": 3}, r"'format' must be a string"),
        ({"compression": 1}, r"'compression' must be a string"),
        ({"columns": "district"}, r"'columns' must be a list of column names"),
        ({"columns": [1, 2]}, r"'columns' must be a list of column names"),
        ({"overwrite": "yes"}, r"'overwrite' must be true or false"),
        ({"validate": 1}, r"'validate' must be true or false"),
    ],
)
def test_a_wrong_argument_type_is_a_one_line_argument_error(
    args: dict[str, Any], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exchange_admin, "fetch_share", _no_fetch)
    with pytest.raises(ArgumentError, match=match) as raised:
        share_fetch(object(), Args({**GOOD, **args}), lambda _: None)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value) and "ValueError" not in str(raised.value)


def _no_fetch(*_: Any, **__: Any) -> Any:
    raise AssertionError("fetched before the arguments were checked")


@pytest.mark.parametrize(
    ("args", "limit_rate", "deadline_s"),
    [
        ({}, 1_000_000, DEFAULT_DEADLINE_S),
        ({"limit_rate": None, "deadline_s": 5}, None, 5.0),
        ({"limit_rate": 0, "deadline_s": 0}, None, DEFAULT_DEADLINE_S),
    ],
)
def test_well_typed_arguments_reach_the_fetch(
    args: dict[str, Any], limit_rate: int | None, deadline_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fetch(runtime: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise AssertionError("reached")

    monkeypatch.setattr(exchange_admin, "fetch_share", fetch)
    with pytest.raises(AssertionError, match="reached"):
        share_fetch(object(), Args({**GOOD, **args}), lambda _: None)  # type: ignore[arg-type]
    assert seen["limit_rate"] == limit_rate and seen["deadline_s"] == deadline_s
    assert seen["provider"] == "health" and seen["columns"] == ["district"]
