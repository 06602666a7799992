"""The seed generator: deterministic, bounded in memory, consistent, free of clear identifiers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import generate
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from seedgen.common import BATCH_ROWS
from seedgen.road_safety import FEATURES, LABEL

SEEDS = Path(__file__).resolve().parents[3] / "seeds"
DATA = SEEDS / "data"
PYTHON = sys.executable


def _read(root: Path, department: str, name: str) -> pa.Table:
    return pq.read_table(root / department / f"{name}.parquet")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seeds")
    assert generate.main(["--out", str(out)]) == 0
    return out


def test_committed_files_equal_a_fresh_run(fresh: Path) -> None:
    committed = sorted(p.relative_to(DATA) for p in DATA.rglob("*.parquet"))
    generated = sorted(p.relative_to(fresh) for p in fresh.rglob("*.parquet"))
    assert committed == generated
    for rel in committed:
        a, b = pq.read_table(DATA / rel), pq.read_table(fresh / rel)
        assert a.schema.equals(b.schema, check_metadata=True), rel
        assert a.equals(b), f"{rel} differs from a fresh run; rerun seeds/generate.py"


def test_committed_files_stay_small() -> None:
    total = sum(p.stat().st_size for p in DATA.rglob("*.parquet"))
    assert total < 2 * 1024 * 1024


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    def flows(seed: int) -> pa.Table:
        table = next(t for t in generate.tables(seed, 500) if t.name == "hourly_flows")
        return pa.Table.from_batches(list(table.batches()))

    assert flows(7).equals(flows(7))
    assert not flows(7).equals(flows(8))


def test_tables_cross_batch_boundaries_without_gaps() -> None:
    rows = BATCH_ROWS + 123
    table = next(t for t in generate.tables(1, rows) if t.name == "violations")
    batches = list(table.batches())
    assert [b.num_rows for b in batches] == [BATCH_ROWS, 123]
    ids = pa.concat_arrays([b.column("violation_id") for b in batches]).to_pylist()
    assert ids == [f"V{i:09d}" for i in range(rows)]


def test_memory_stays_bounded_as_rows_grow(tmp_path: Path) -> None:
    # Arrow's peak allocation for twelve batches must stay a small multiple of
    # one batch's: only one batch is ever held. A generator that built the whole
    # table first would need twelve times as much, and fails this.
    def peak_bytes(rows: int) -> int:
        probe = (
            f"import sys; sys.path.insert(0, {str(SEEDS)!r});"
            "from pathlib import Path; import pyarrow as pa, generate;"
            "from seedgen.common import write_table;"
            "t = next(t for t in generate.tables(1, int(sys.argv[1])) if t.name == 'hourly_flows');"
            "write_table(t, Path(sys.argv[2]));"
            "print(pa.default_memory_pool().max_memory())"
        )
        out = subprocess.run(
            [PYTHON, "-c", probe, str(rows), str(tmp_path / str(rows))],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return int(out.stdout.strip().splitlines()[-1])

    one, twelve = peak_bytes(BATCH_ROWS), peak_bytes(12 * BATCH_ROWS)
    assert twelve < 4 * one, f"Arrow peak grew from {one} bytes (1 batch) to {twelve} (12)"


@pytest.mark.parametrize(
    ("department", "table", "column"),
    [
        ("traffic", "hourly_flows", "intersection_id"),
        ("traffic", "signal_timing", "intersection_id"),
        ("public-security", "violations", "intersection_id"),
        ("public-security", "accidents", "intersection_id"),
        ("health", "clinic_visits", "injury_intersection_id"),
        ("traffic", "road_safety", "intersection_id"),
        ("health", "road_safety", "intersection_id"),
    ],
)
def test_intersection_keys_join_the_inventory(department: str, table: str, column: str) -> None:
    known = set(_read(DATA, "traffic", "intersections")["intersection_id"].to_pylist())
    values = {v for v in _read(DATA, department, table)[column].to_pylist() if v is not None}
    assert values, f"{table}.{column} is empty"
    assert values <= known


def test_district_codes_join_the_district_table() -> None:
    known = set(_read(DATA, "civil-affairs", "districts")["district_code"].to_pylist())
    for path in DATA.rglob("*.parquet"):
        table = pq.read_table(path)
        if "district_code" in table.column_names:
            assert set(table["district_code"].to_pylist()) <= known, path


def test_subsidies_name_registered_residents_in_their_district() -> None:
    residents = _read(DATA, "civil-affairs", "elderly_residents")
    home = dict(zip(residents["resident_token"].to_pylist(),
                    residents["district_code"].to_pylist(), strict=True))  # fmt: skip
    subsidies = _read(DATA, "civil-affairs", "care_subsidies")
    for token, district in zip(subsidies["resident_token"].to_pylist(),
                               subsidies["district_code"].to_pylist(), strict=True):  # fmt: skip
        assert home[token] == district


_CLEAR_IDENTIFIERS = re.compile(r"\b(RV-\d{5}|R\d{9}|P\d{8})\b")


def test_no_clear_identifier_reaches_any_file() -> None:
    for path in DATA.rglob("*.parquet"):
        table = pq.read_table(path)
        for name in table.column_names:
            column = table[name]
            if pa.types.is_list(column.type):
                column = column.combine_chunks().flatten()
            if pa.types.is_string(column.type):
                for value in column.to_pylist():
                    assert value is None or not _CLEAR_IDENTIFIERS.search(value), (path, name)


def test_pseudonyms_are_stable_within_a_department_and_unlinkable_across() -> None:
    from seedgen.common import pseudonym, source_key

    plates = source_key(1, "public_security/plates")
    residents = source_key(1, "civil_affairs/residents")
    assert pseudonym(plates, "x_", ["A"]) == pseudonym(plates, "x_", ["A"])
    assert pseudonym(plates, "x_", ["A"]) != pseudonym(residents, "x_", ["A"])


def test_road_safety_has_one_schema_no_nulls_and_both_labels() -> None:
    schemas = []
    for department in generate.DEPARTMENTS:
        table = _read(DATA, department, "road_safety")
        schemas.append(table.schema)
        for spec in FEATURES:
            assert table[spec.column].null_count == 0
        assert set(table[LABEL].to_pylist()) == {0, 1}
        assert set(table["split"].to_pylist()) == {"train", "test"}
    assert all(s.equals(schemas[0]) for s in schemas)
    # Apps may take "every float64 column" as the features: that must be exactly them.
    floats = [f.name for f in schemas[0] if pa.types.is_floating(f.type)]
    assert floats == [spec.column for spec in FEATURES]
    for department in generate.DEPARTMENTS:
        table = _read(DATA, department, "road_safety")
        for spec in FEATURES:
            values = table[spec.column].to_numpy()
            assert values.min() >= 0.0 and values.max() <= 2.5, (department, spec.column)


def _xy(department: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = _read(DATA, department, "road_safety")
    x = np.column_stack([table[s.column].to_numpy() for s in FEATURES])
    return x, table[LABEL].to_numpy().astype(float), table["split"].to_numpy() == "train"


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xb = np.column_stack([np.ones(len(x)), x])
    w = np.zeros(xb.shape[1])
    for _ in range(1500):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        w -= 0.5 * (xb.T @ (p - y) / len(y) + 1e-3 * w)
    return w


def _accuracy(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(((np.column_stack([np.ones(len(x)), x]) @ w > 0) == (y > 0.5)).mean())


def test_pooled_model_beats_every_local_model_on_the_held_out_set() -> None:
    # This is the property the federated demo relies on: the data is non-IID
    # enough that no department's own model matches one trained on everyone's.
    parts = {d: _xy(d) for d in generate.DEPARTMENTS}
    x_test = np.vstack([x[~tr] for x, _, tr in parts.values()])
    y_test = np.concatenate([y[~tr] for _, y, tr in parts.values()])
    local = {d: _accuracy(_fit(x[tr], y[tr]), x_test, y_test) for d, (x, y, tr) in parts.items()}
    pooled_w = _fit(np.vstack([x[tr] for x, _, tr in parts.values()]),
                    np.concatenate([y[tr] for _, y, tr in parts.values()]))  # fmt: skip
    pooled = _accuracy(pooled_w, x_test, y_test)
    assert pooled > max(local.values()) + 0.03, (pooled, local)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "0"], "must be at least 1"),
        (["--rows", "many"], "invalid _positive value"),
        (["--department", "police"], "invalid choice"),
    ],
)
def test_cli_refuses_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        generate.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_reports_an_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert generate.main(["--rows", "10", "--out", str(blocker)]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_interrupted_write_leaves_no_final_file(tmp_path: Path) -> None:
    from seedgen.common import Table, write_table

    schema = pa.schema([pa.field("x", pa.int64())])

    def failing(index: int, offset: int, n: int) -> pa.RecordBatch:
        if index == 1:
            raise RuntimeError("disk vanished")
        return pa.RecordBatch.from_arrays([pa.array(np.arange(offset, offset + n))], schema=schema)

    with pytest.raises(RuntimeError, match="disk vanished"):
        write_table(Table("d", "t", schema, BATCH_ROWS + 1, failing), tmp_path)
    assert not (tmp_path / "d" / "t.parquet").exists()
