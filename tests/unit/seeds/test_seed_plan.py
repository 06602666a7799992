"""seeds/federation.toml as the demo reads it: every key is one the demo uses."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import node.demo.plan as plan_module
from node.demo.plan import default_seeds, load_plan
from node.errors import ConfigError

SEEDS = Path(__file__).resolve().parents[3] / "seeds"
TEXT = (SEEDS / "federation.toml").read_text()


def _seeds_with(tmp_path: Path, text: str) -> Path:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "federation.toml").write_text(text)
    return seeds


def test_the_shipped_plan_loads() -> None:
    plan = load_plan(SEEDS)
    assert plan.coordinator in {d.id for d in plan.departments}
    assert all(d.path.is_file() for dep in plan.departments for d in dep.datasets)


def _after(anchor: str, line: str) -> Callable[[str], str]:
    def mutate(text: str) -> str:
        assert anchor in text
        return text.replace(anchor, f"{anchor}\n{line}", 1)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # A setting the demo has no use for would change nothing when edited.
        (
            _after("witness_threshold = 2", "directory_days = 30"),
            r"\[federation\] has unknown key 'directory_days'",
        ),
        (
            _after('id = "traffic"', "witnes = false"),
            r"department 'traffic' has unknown key 'witnes'",
        ),
        (
            _after('name = "violations"', 'personal_columns = ["plate_token"]'),
            r"dataset 'violations' has unknown key 'personal_columns'",
        ),
        (
            _after('name = "accidents-to-traffic"', "valid_for = 90"),
            r"agreement 'accidents-to-traffic' has unknown key 'valid_for'",
        ),
        (lambda t: "[extra]\nx = 1\n" + t, r"federation.toml has unknown key 'extra'"),
        (lambda t: t.replace("[federation]\n", "[federation]\nid = 3\n", 1), r"federation.toml"),
    ],
)
def test_keys_the_demo_would_ignore_are_refused(
    tmp_path: Path, mutate: Callable[[str], str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_plan(_seeds_with(tmp_path, mutate(TEXT)))


def test_job_keys_are_left_to_the_job_file_checks(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds, ignore=shutil.ignore_patterns("data", "*.parquet"))
    text = _after("secagg = true", 'new-job-key = "x"')(TEXT)
    (seeds / "federation.toml").write_text(text)
    assert load_plan(seeds).job["new-job-key"] == "x"


def test_a_missing_plan_names_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no demo federation") as caught:
        load_plan(tmp_path)
    assert "--seeds" in (caught.value.hint or "")


def test_an_installed_package_looks_for_seeds_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wheel install has no seeds/ beside the package; a checkout's top folder has one.
    monkeypatch.setattr(plan_module, "_CHECKOUT_SEEDS", tmp_path / "site-packages" / "seeds")
    monkeypatch.chdir(tmp_path)
    assert default_seeds() == tmp_path / "seeds"
    with pytest.raises(ConfigError, match="no demo federation") as caught:
        load_plan(default_seeds())
    assert "top folder of a fednode checkout" in (caught.value.hint or "")
    shutil.copytree(SEEDS, tmp_path / "seeds", ignore=shutil.ignore_patterns("data"))
    assert load_plan(default_seeds()).federation == "riverside"


def test_a_checkout_uses_its_own_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_seeds() == SEEDS
