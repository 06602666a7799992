"""seeds/federation.toml: every name it uses exists, and every agreement fits its dataset."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from node.catalog.treatments import validate_spec
from node.errors import AgreementError
from node.identity.certs import IDENTIFIER

SEEDS = Path(__file__).resolve().parents[3] / "seeds"
CONFIG = tomllib.loads((SEEDS / "federation.toml").read_text())
DEPARTMENTS = {d["id"]: d for d in CONFIG["departments"]}
AGREEMENTS = {a["name"]: a for a in CONFIG["agreements"]}


def _dataset(department: str, name: str) -> dict[str, Any]:
    matches = [d for d in DEPARTMENTS[department].get("datasets", []) if d["name"] == name]
    assert len(matches) == 1, f"{department} has no single dataset {name!r}"
    found: dict[str, Any] = matches[0]
    return found


def test_ids_are_valid_certificate_identifiers() -> None:
    assert IDENTIFIER.match(CONFIG["federation"]["id"])
    for dept in DEPARTMENTS:
        assert IDENTIFIER.match(dept), dept


def test_coordinator_is_a_department_and_enough_witnesses_exist() -> None:
    federation = CONFIG["federation"]
    assert federation["coordinator"] in DEPARTMENTS
    witnesses = [d for d in DEPARTMENTS.values() if d["witness"]]
    assert 1 <= federation["witness_threshold"] <= len(witnesses)
    assert len(DEPARTMENTS) - 1 >= 3, "the demo needs at least three data departments"


def test_every_dataset_path_exists_and_personal_columns_are_real() -> None:
    for dept in DEPARTMENTS.values():
        for dataset in dept.get("datasets", []):
            path = SEEDS / dataset["path"]
            assert path.is_file(), path
            assert path.parent.name == dept["id"], f"{path} is not under data/{dept['id']}"
            columns = set(pq.read_schema(path).names)
            assert set(dataset.get("personal", [])) <= columns, dataset["name"]


@pytest.mark.parametrize("name", sorted(AGREEMENTS))
def test_agreement_columns_exist_and_treatments_validate(name: str) -> None:
    agreement = AGREEMENTS[name]
    assert agreement["provider"] in DEPARTMENTS
    assert agreement["consumer"] in DEPARTMENTS
    assert agreement["provider"] != agreement["consumer"]
    dataset = _dataset(agreement["provider"], agreement["dataset"])
    schema = pq.read_schema(SEEDS / dataset["path"])
    for column, spec in agreement["columns"].items():
        assert column in schema.names, f"{name}: no column {column!r}"
        validate_spec(column, spec, schema.field(column))


def test_a_treatment_that_does_not_fit_the_column_is_refused() -> None:
    # The check above is only meaningful if validate_spec can say no.
    schema = pq.read_schema(SEEDS / "data/public-security/accidents.parquet")
    with pytest.raises(AgreementError):
        validate_spec("severity", {"treatment": "generalize", "params": {"to": "hour"}},
                      schema.field("severity"))  # fmt: skip


def test_personal_columns_never_travel_in_the_clear() -> None:
    for name, agreement in AGREEMENTS.items():
        dataset = _dataset(agreement["provider"], agreement["dataset"])
        for column in dataset.get("personal", []):
            treatment = agreement["columns"].get(column, {"treatment": "drop"})["treatment"]
            if column.endswith(("_token", "_tokens")):
                assert treatment in ("pseudonymize", "drop"), f"{name}: {column} is {treatment}"


def test_job_participants_hold_federated_agreements_with_the_coordinator() -> None:
    job = CONFIG["job"]
    assert (SEEDS / job["app"] / "pyproject.toml").is_file()
    assert len(job["participants"]) >= 3
    for participant in job["participants"]:
        agreement = AGREEMENTS[participant["agreement"]]
        assert agreement["provider"] == participant["department"]
        assert agreement["consumer"] == CONFIG["federation"]["coordinator"]
        assert agreement["dataset"] == participant["dataset"]
        assert agreement["modes"] == ["federated"]
        assert {"incident", "split"} <= set(agreement["columns"])


def _as_job_file(job: dict[str, Any]) -> dict[str, Any]:
    """The job file `fednode fl launch` reads, made from the [job] section.

    The section names agreements by their plan names; the demo puts in the ids
    the nodes gave them, as this does with stand-in ids.
    """
    head = {
        k: v for k, v in job.items() if k not in ("strategy", "run-config", "dp", "participants")
    }
    return {
        "job": head,
        "strategy": job.get("strategy", {}),
        "run-config": job.get("run-config", {}),
        "dp": job["dp"],
        "participants": [
            {**p, "agreement": "agr-" + hashlib.sha256(p["agreement"].encode()).hexdigest()[:32]}
            for p in job["participants"]
        ],
    }


def test_the_job_section_is_a_valid_job_file_for_the_sample_app() -> None:
    from node.fl.jobfile import parse_job

    parsed = parse_job(_as_job_file(CONFIG["job"]), SEEDS)
    assert parsed.secagg
    assert parsed.dp is not None and parsed.dp.epsilon > 0
    assert [p.department for p in parsed.participants] == [
        p["department"] for p in CONFIG["job"]["participants"]
    ]
    app_config = tomllib.loads((parsed.app / "pyproject.toml").read_text())
    declared = app_config["tool"]["flwr"]["app"]["config"]
    # A run-config key the app does not declare is refused at launch.
    assert set(parsed.overrides) - {"num-server-rounds"} <= set(declared)
