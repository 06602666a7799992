"""The demo federation plan, read from ``seeds/federation.toml``.

Invariant: every key in the file is one the demo uses. A key it does not
know (a typo, or a setting the demo has no use for) is refused by name, so
editing the file never silently changes nothing. ``[job]`` is the exception:
it is the job file of ``fednode fl launch``, which checks it itself.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError

__all__ = [
    "AgreementPlan",
    "DatasetPlan",
    "DemoPlan",
    "DepartmentPlan",
    "default_seeds",
    "load_plan",
]


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    path: Path
    description: str
    personal: tuple[str, ...]


@dataclass(frozen=True)
class DepartmentPlan:
    id: str
    display_name: str
    witness: bool
    datasets: tuple[DatasetPlan, ...]


@dataclass(frozen=True)
class AgreementPlan:
    name: str
    provider: str
    consumer: str
    dataset: str
    purpose_code: str
    purpose_text: str
    modes: tuple[str, ...]
    valid_days: int
    columns: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class DemoPlan:
    federation: str
    display_name: str
    coordinator: str
    witness_threshold: int
    departments: tuple[DepartmentPlan, ...]
    agreements: tuple[AgreementPlan, ...]
    job: dict[str, Any]
    seeds: Path
    raw: dict[str, Any] = field(repr=False)


_FEDERATION_KEYS = frozenset({"id", "display_name", "coordinator", "witness_threshold"})
_DEPARTMENT_KEYS = frozenset({"id", "display_name", "witness", "datasets"})
_DATASET_KEYS = frozenset({"name", "path", "description", "personal"})
_AGREEMENT_KEYS = frozenset(
    {
        "name",
        "provider",
        "consumer",
        "dataset",
        "purpose_code",
        "purpose_text",
        "modes",
        "valid_days",
        "columns",
    }
)
_TOP_KEYS = frozenset({"federation", "departments", "agreements", "job"})


def _known_keys(table: dict[str, Any], known: frozenset[str], where: str) -> None:
    """Refuse a key the demo would ignore.

    Raises:
        ConfigError: ``table`` holds a key outside ``known``.
    """
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key {unknown[0]!r}",
            hint=f"{where} knows: {', '.join(sorted(known))}",
        )


def _check_plan_keys(doc: dict[str, Any], path: Path) -> None:
    """Refuse unknown keys anywhere in ``federation.toml`` except ``[job]``.

    Raises:
        ConfigError: an unknown key, named with the table it is in.
    """
    _known_keys(doc, _TOP_KEYS, str(path))
    _known_keys(doc.get("federation", {}), _FEDERATION_KEYS, f"{path} [federation]")
    for department in doc.get("departments", ()):
        where = f"{path} department {department.get('id', '?')!r}"
        _known_keys(department, _DEPARTMENT_KEYS, where)
        for dataset in department.get("datasets", ()):
            _known_keys(dataset, _DATASET_KEYS, f"{where} dataset {dataset.get('name', '?')!r}")
    for agreement in doc.get("agreements", ()):
        where = f"{path} agreement {agreement.get('name', '?')!r}"
        _known_keys(agreement, _AGREEMENT_KEYS, where)


#: ``seeds/`` beside the package, when fednode runs from a checkout (editable install).
_CHECKOUT_SEEDS = Path(__file__).resolve().parents[2] / "seeds"


def default_seeds() -> Path:
    """The checkout's ``seeds/`` folder, or ``./seeds`` when fednode is installed from a wheel.

    An installed package has no ``seeds/`` beside it, so the demo then looks in
    the current folder, which is where "run it from a checkout" points.
    """
    if (_CHECKOUT_SEEDS / "federation.toml").is_file():
        return _CHECKOUT_SEEDS
    return Path.cwd() / "seeds"


def load_plan(seeds: Path) -> DemoPlan:
    """Read ``seeds/federation.toml``.

    Raises:
        ConfigError: the file is missing or malformed, or holds a key the demo
            does not use.
    """
    path = seeds / "federation.toml"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(
            f"no demo federation at {path}",
            hint="run it from the top folder of a fednode checkout, or pass --seeds FOLDER",
        ) from e
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    try:
        _check_plan_keys(doc, path)
        fed = doc["federation"]
        departments = tuple(
            DepartmentPlan(
                id=d["id"],
                display_name=d.get("display_name", d["id"]),
                witness=bool(d.get("witness", True)),
                datasets=tuple(
                    DatasetPlan(
                        name=s["name"],
                        path=(seeds / s["path"]).resolve(),
                        description=s.get("description", ""),
                        personal=tuple(s.get("personal", ())),
                    )
                    for s in d.get("datasets", ())
                ),
            )
            for d in doc["departments"]
        )
        agreements = tuple(
            AgreementPlan(
                name=a["name"],
                provider=a["provider"],
                consumer=a["consumer"],
                dataset=a["dataset"],
                purpose_code=a["purpose_code"],
                purpose_text=a.get("purpose_text", ""),
                modes=tuple(a["modes"]),
                valid_days=int(a.get("valid_days", 30)),
                columns=dict(a["columns"]),
            )
            for a in doc.get("agreements", ())
        )
        return DemoPlan(
            federation=fed["id"],
            display_name=fed.get("display_name", fed["id"]),
            coordinator=fed["coordinator"],
            witness_threshold=int(fed.get("witness_threshold", 1)),
            departments=departments,
            agreements=agreements,
            job=dict(doc.get("job", {})),
            seeds=seeds,
            raw=doc,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: malformed demo federation ({e!r})") from e
