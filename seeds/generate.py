"""Generate the fednode seed datasets: four departments of one fictional city.

Usage::

    python seeds/generate.py                      # the committed sizes, into seeds/data
    python seeds/generate.py --rows 5000000 --out /srv/big-seeds

Output is a pure function of ``--seed`` and ``--rows``; memory stays bounded by
one batch of rows however large ``--rows`` is, because every table is written
batch by batch with ``pyarrow.parquet.ParquetWriter``. See ``seeds/README.md``
for the schemas, the join keys and the federated-learning task.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Running as ``python seeds/generate.py`` puts this directory on sys.path, so
# the ``seedgen`` package beside this file imports without installation.
from seedgen import civil, health, security, traffic
from seedgen.city import intersections
from seedgen.common import Table, write_table
from seedgen.road_safety import road_safety_table

__all__ = ["DEFAULT_ROWS", "DEFAULT_SEED", "DEPARTMENTS", "main", "tables"]

DEFAULT_ROWS = 4000
DEFAULT_SEED = 20260302
DEPARTMENTS = ("traffic", "public-security", "civil-affairs", "health")


def tables(seed: int, rows: int) -> list[Table]:
    """Every table of every department, sized from ``rows``.

    Args:
        seed: The generator seed.
        rows: Rows in each event table; accidents get a quarter of it, and the
            reference tables (intersections, districts, clinics, signal plans)
            keep their fixed size.

    Returns:
        The tables in a fixed order.
    """
    city = intersections(seed)
    return [
        traffic.intersections_table(city),
        traffic.signal_timing_table(city),
        traffic.flows_table(seed, city, rows),
        security.violations_table(seed, city, rows),
        security.accidents_table(seed, city, max(rows // 4, 1)),
        civil.districts_table(),
        civil.residents_table(seed, rows),
        civil.subsidies_table(seed, rows, rows),
        health.clinics_table(),
        health.visits_table(seed, city, rows),
        *[road_safety_table(d, seed, city, rows) for d in DEPARTMENTS],
    ]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Write every table under ``--out`` and print one line per file.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 if a file could not be written.
    """
    parser = argparse.ArgumentParser(
        prog="seeds/generate.py",
        description="Generate deterministic seed datasets for the fednode demo federation.",
        epilog="example: python seeds/generate.py --rows 1000000 --out /tmp/seeds",
    )
    parser.add_argument("--rows", type=_positive, default=DEFAULT_ROWS,
                        help=f"rows per event table (default {DEFAULT_ROWS})")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data",
                        help="output directory (default seeds/data)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"generator seed (default {DEFAULT_SEED})")  # fmt: skip
    parser.add_argument("--department", action="append", choices=DEPARTMENTS,
                        help="only this department (repeatable; default all)")  # fmt: skip
    args = parser.parse_args(argv)
    wanted = set(args.department or DEPARTMENTS)
    for table in tables(args.seed, args.rows):
        if table.department not in wanted:
            continue
        started = time.perf_counter()
        try:
            path = write_table(table, args.out)
        except OSError as e:
            print(f"error: cannot write {table.department}/{table.name}: {e}", file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - started
        size_kib = path.stat().st_size / 1024
        print(f"{path}  {table.rows:>10} rows  {size_kib:>9.1f} KiB  {elapsed:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
