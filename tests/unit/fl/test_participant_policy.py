"""The participant's own requirements of a job: node.toml [fl], dataset, run config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.config import FlSettings, load_config, render_config
from node.errors import AccessDenied, ConfigError
from node.fl import wire
from node.fl.participant import Participant
from node.fl.policy import DEFAULT_RUN_CONFIG_FACTOR, run_config_factor
from tests.unit.fl.fl_fakes import COORDINATOR, FakeRuntime, LocalNode, job_spec


def _dp(sensitivity: float, epsilon: float = 1.0) -> wire.DpConfig:
    return wire.DpConfig(clipping_norm=1.0, sensitivity=sensitivity, epsilon=epsilon, delta=1e-5)


def _refused(runtime: FakeRuntime, tmp: Path, match: str) -> None:
    (denied,) = runtime.audit.events("access.denied")
    assert denied["outcome"] == "denied" and denied["peer"] == COORDINATOR
    assert match in str(denied["detail"]["reason"])
    assert not runtime.audit.events("fl.admitted")
    assert not (tmp / "traffic" / "data" / "fl" / "jobs" / "job-1").exists()


# -- node.toml [fl] ----------------------------------------------------------------


def _home(tmp: Path, fl: str | None) -> Path:
    text = render_config(
        federation="fed",
        department="traffic",
        display_name="Traffic",
        listen="127.0.0.1:7443",
        endpoint="127.0.0.1:7443",
    )
    if fl is not None:
        text = text.split("[fl]")[0] + "[fl]\n" + fl
    (tmp / "node.toml").write_text(text, encoding="utf-8")
    return tmp


def test_fl_settings_default_to_requiring_nothing(tmp_path: Path) -> None:
    assert load_config(_home(tmp_path, None)).fl == FlSettings()
    assert load_config(_home(tmp_path, "")).fl == FlSettings(False, False, None)


def test_fl_settings_are_read(tmp_path: Path) -> None:
    home = _home(tmp_path, "require_secagg = true\nrequire_dp = true\nmax_epsilon = 4\n")
    assert load_config(home).fl == FlSettings(True, True, 4.0)
    home = _home(tmp_path, "max_run_config_factor = 25\n")
    assert load_config(home).fl.max_run_config_factor == 25.0


def test_a_new_nodes_config_states_the_run_config_bound(tmp_path: Path) -> None:
    assert load_config(_home(tmp_path, None)).fl.max_run_config_factor == 10.0


@pytest.mark.parametrize(
    ("fl", "match"),
    [
        ("require_dpp = true\n", r"\[fl\] has no key 'require_dpp'"),
        ('require_secagg = "yes"\n', "'require_secagg' must be a bool"),
        ("require_dp = 1\n", "'require_dp' must be a bool"),
        ('max_epsilon = "8"\n', "'max_epsilon' must be a float"),
        ("max_epsilon = true\n", "'max_epsilon' must be a float"),
        ("max_epsilon = 0\n", "'max_epsilon' must be a finite number above 0"),
        ("max_epsilon = -1.5\n", "'max_epsilon' must be a finite number above 0"),
        ("max_epsilon = inf\n", "'max_epsilon' must be a finite number above 0"),
        ("max_epsilon = nan\n", "'max_epsilon' must be a finite number above 0"),
        ("max_run_config_factor = 0.5\n", "'max_run_config_factor' must be a finite number of"),
        ("max_run_config_factor = inf\n", "'max_run_config_factor' must be a finite number of"),
        ('max_run_config_factor = "10"\n', "'max_run_config_factor' must be a float"),
    ],
)
def test_bad_fl_settings_are_refused(tmp_path: Path, fl: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_home(tmp_path, fl))


def test_fl_must_be_a_table(tmp_path: Path) -> None:
    text = render_config(
        federation="f", department="d", display_name="D", listen="a:1", endpoint="a:1"
    ).split("[fl]")[0]
    (tmp_path / "node.toml").write_text('fl = "strict"\n' + text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[fl\] must be a table"):
        load_config(tmp_path)


# -- privacy requirements ------------------------------------------------------------


def test_defaults_take_a_job_without_secagg_or_dp(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab)
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    assert node.participant.job_ids == ["job-1"]
    assert not node.runtime.audit.events("access.denied")


def test_required_secagg_refuses_a_job_without_it(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab, settings=FlSettings(require_secagg=True))
    with pytest.raises(AccessDenied, match=r"\[fl\] require_secagg"):
        node.participant.start_job(COORDINATOR, job_spec(fab, dp=_dp(1.0)), fab)
    _refused(node.runtime, tmp_path, "require_secagg")


def test_required_secagg_takes_a_job_with_it(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab, settings=FlSettings(require_secagg=True))
    node.participant.start_job(COORDINATOR, job_spec(fab, secagg=True), fab)
    assert node.participant.job_ids == ["job-1"]


def test_required_dp_refuses_a_job_without_it(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab, settings=FlSettings(require_dp=True))
    with pytest.raises(AccessDenied, match=r"\[fl\] require_dp"):
        node.participant.start_job(COORDINATOR, job_spec(fab, secagg=True), fab)
    _refused(node.runtime, tmp_path, "require_dp")


def test_explicit_settings_override_the_node_config(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab)
    participant = Participant(
        node.runtime,
        policy=node.policy,
        approvals=node.approvals,
        settings=FlSettings(require_secagg=True),
    )
    with pytest.raises(AccessDenied, match=r"\[fl\] require_secagg"):
        participant.start_job(COORDINATOR, job_spec(fab), fab)


@pytest.mark.parametrize(
    ("dp", "admitted"),
    [
        (_dp(sensitivity=1.0, epsilon=2.0), True),  # effective 2
        (_dp(sensitivity=2.0, epsilon=2.0), True),  # noise above the clip: stated epsilon
        (_dp(sensitivity=1.0, epsilon=2.5), False),  # stated epsilon too large
        (_dp(sensitivity=0.5, epsilon=2.0), False),  # stated 2 but effective 4
        (_dp(sensitivity=1e-6, epsilon=1.0), False),  # near-zero noise
    ],
)
def test_max_epsilon_judges_the_effective_epsilon(
    tmp_path: Path, fab: bytes, dp: wire.DpConfig, admitted: bool
) -> None:
    node = LocalNode(tmp_path, fab, settings=FlSettings(max_epsilon=2.0))
    if admitted:
        node.participant.start_job(COORDINATOR, job_spec(fab, dp=dp), fab)
        assert node.participant.job_ids == ["job-1"]
        return
    with pytest.raises(
        AccessDenied, match=r"effective epsilon .* above this node's \[fl\] max_epsilon 2"
    ):
        node.participant.start_job(COORDINATOR, job_spec(fab, dp=dp), fab)
    _refused(node.runtime, tmp_path, "max_epsilon")


def test_max_epsilon_alone_does_not_require_dp(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab, settings=FlSettings(max_epsilon=1.0))
    node.participant.start_job(COORDINATOR, job_spec(fab), fab)
    assert node.participant.job_ids == ["job-1"]
    assert math.isfinite(_dp(1.0).effective_epsilon)


# -- dataset -------------------------------------------------------------------------


def test_a_dataset_other_than_the_agreements_is_refused(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab, dataset="road_safety")
    with pytest.raises(
        AccessDenied, match=r"names dataset 'incidents' but agreement .* covers 'road_safety'"
    ):
        node.participant.start_job(COORDINATOR, job_spec(fab, dataset="incidents"), fab)
    _refused(node.runtime, tmp_path, "covers 'road_safety'")


def test_the_agreements_dataset_is_taken(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab, dataset="road_safety")
    node.participant.start_job(COORDINATOR, job_spec(fab, dataset="road_safety"), fab)
    assert node.runtime.audit.events("fl.admitted")[0]["dataset"] == "road_safety"


# -- run config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"undeclared-key": "x"}, "'undeclared-key' is not present"),
        ({"local-epochs": "5"}, "'local-epochs' is '5' \\(str\\); .* declares a int"),
        ({"local-epochs": 5.0}, "'local-epochs' is 5.0 \\(float\\)"),
        ({"local-epochs": True}, "'local-epochs' is True \\(bool\\)"),
        ({"learning-rate": "fast"}, "'learning-rate' is 'fast'"),
        ({"secure-aggregation": 0}, "'secure-aggregation' is 0 \\(int\\); .* declares a bool"),
        ({"label-column": 3}, "'label-column' is 3"),
    ],
)
def test_a_run_config_the_fab_does_not_declare_is_refused(
    tmp_path: Path, fab: bytes, change: dict[str, Any], match: str
) -> None:
    node = LocalNode(tmp_path, fab)
    spec = job_spec(fab)
    with pytest.raises(AccessDenied, match=match):
        node.participant.start_job(
            COORDINATOR, job_spec(fab, run_config={**spec.run_config, **change}), fab
        )
    _refused(node.runtime, tmp_path, "run")


def test_a_declared_run_config_is_taken(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab)
    config = {**job_spec(fab).run_config, "learning-rate": 1}  # an int for a float key
    node.participant.start_job(COORDINATOR, job_spec(fab, run_config=config), fab)
    assert node.participant.job_ids == ["job-1"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        # The app declares local-epochs = 50 and learning-rate = 1.0; the bound is 10 times that.
        ({"local-epochs": 3000}, r"'local-epochs' is 3000, beyond this node's bound of 500 "),
        ({"local-epochs": 501}, r"'local-epochs' is 501, beyond .* default 50\)"),
        ({"local-epochs": -3000}, r"'local-epochs' is -3000, beyond"),
        ({"learning-rate": 10.5}, r"'learning-rate' is 10.5, beyond .* bound of 10 "),
        ({"learning-rate": float("inf")}, r"'learning-rate' is inf, not a finite number"),
        ({"learning-rate": float("nan")}, r"'learning-rate' is nan, not a finite number"),
    ],
)
def test_a_run_config_number_beyond_the_nodes_bound_is_refused(
    tmp_path: Path, fab: bytes, change: dict[str, Any], match: str
) -> None:
    node = LocalNode(tmp_path, fab)
    spec = job_spec(fab)
    with pytest.raises(AccessDenied, match=match) as refused:
        node.participant.start_job(
            COORDINATOR, job_spec(fab, run_config={**spec.run_config, **change}), fab
        )
    assert "max_run_config_factor" in (refused.value.hint or "") or "finite" in str(refused.value)
    _refused(node.runtime, tmp_path, repr(next(iter(change.values()))))


def test_a_run_config_number_within_the_bound_is_taken(tmp_path: Path, fab: bytes) -> None:
    node = LocalNode(tmp_path, fab)
    # The bound itself, and values far below it (only the size is bounded).
    config = {**job_spec(fab).run_config, "local-epochs": 500, "learning-rate": 0.001}
    node.participant.start_job(COORDINATOR, job_spec(fab, run_config=config), fab)
    assert node.participant.job_ids == ["job-1"]


@dataclass(frozen=True)
class _LargerBound(FlSettings):
    """A node.toml whose [fl] sets max_run_config_factor = 100."""

    max_run_config_factor: float = 100.0


def test_the_bound_follows_the_nodes_max_run_config_factor(tmp_path: Path, fab: bytes) -> None:
    assert run_config_factor(FlSettings()) == DEFAULT_RUN_CONFIG_FACTOR == 10.0
    assert run_config_factor(_LargerBound()) == 100.0
    node = LocalNode(tmp_path, fab, settings=_LargerBound())
    config = {**job_spec(fab).run_config, "local-epochs": 3000}
    node.participant.start_job(COORDINATOR, job_spec(fab, run_config=config), fab)
    assert node.participant.job_ids == ["job-1"]
