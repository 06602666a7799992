"""Civil affairs bureau: district population, elderly residents, care subsidies.

Residents are pseudonymous at the source (``rt_`` + HMAC of the resident
number under the bureau's key). Subsidies refer to residents by that token, so
the two tables join inside the bureau; the token means nothing elsewhere, and
the health commission's patient tokens use a different key, so the two cannot
be linked without an agreement and a private set intersection.

Invariant: a resident's attributes are a pure function of ``(seed, resident
index)``, so a subsidy row can name any resident and agree with its district.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from seedgen.city import DISTRICTS, uniform
from seedgen.common import START, Table, batch_rng, field, pseudonym, source_key

__all__ = ["districts_table", "residents_table", "subsidies_table"]

DEPARTMENT = "civil-affairs"
Ints = npt.NDArray[np.int64]

DISTRICTS_SCHEMA = pa.schema(
    [
        field("district_code", pa.string(), "District code (join key)."),
        field("district_name", pa.string(), "District name."),
        field("population", pa.int32(), "Registered residents."),
        field("residents_65_plus", pa.int32(), "Registered residents aged 65+."),
        field("elderly_share", pa.float64(), "residents_65_plus / population."),
        field("area_km2", pa.float64(), "Land area."),
        field("care_centres", pa.int16(), "Day-care centres for the elderly."),
    ]
)

RESIDENTS_SCHEMA = pa.schema(
    [
        field("resident_token", pa.string(), "Pseudonymous resident id (HMAC at the source)."),
        field("district_code", pa.string(), "District of residence (join key)."),
        field("birth_year", pa.int16(), "Year of birth."),
        field("age_band", pa.string(), "Five-year age band on 2026-03-01."),
        field("sex", pa.string(), "F or M."),
        field("lives_alone", pa.bool_(), "Lives alone."),
        field("mobility_level", pa.int8(), "1 independent .. 4 bedridden."),
        field("chronic_conditions", pa.int8(), "Number of registered chronic conditions."),
        field("care_level", pa.int8(), "Assessed long-term-care level, 0 none .. 3 full."),
        field("income_band", pa.string(), "low, lower_middle, middle or high."),
        field("registered_since", pa.date32(), "Date the bureau registered the resident."),
    ]
)

SUBSIDIES_SCHEMA = pa.schema(
    [
        field("subsidy_id", pa.string(), "Payment id."),
        field("resident_token", pa.string(), "Pseudonymous resident id (join key within bureau)."),
        field("district_code", pa.string(), "District of residence (join key)."),
        field("month", pa.date32(), "First day of the month paid for."),
        field("subsidy_type", pa.string(), "home_care, meal, nursing_home or disability."),
        field("amount_cny", pa.int32(), "Amount in yuan."),
        field("status", pa.string(), "paid, pending or suspended."),
    ]
)

_SUBSIDY_TYPES = ("home_care", "meal", "nursing_home", "disability")
_SUBSIDY_BASE = (800, 300, 2400, 600)
_INCOME = ("low", "lower_middle", "middle", "high")


def districts_table() -> Table:
    """One row per district (independent of ``--rows``)."""

    def batch(_index: int, _offset: int, _n: int) -> pa.RecordBatch:
        pop = np.array([d.population for d in DISTRICTS])
        share = np.array([d.elderly_share for d in DISTRICTS])
        arrays = [
            pa.array([d.code for d in DISTRICTS]),
            pa.array([d.name for d in DISTRICTS]),
            pa.array(pop, pa.int32()),
            pa.array(np.round(pop * share), pa.int32()),
            pa.array(share),
            pa.array([d.area_km2 for d in DISTRICTS]),
            pa.array(np.round(pop * share / 6000), pa.int16()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=DISTRICTS_SCHEMA)

    return Table(DEPARTMENT, "districts", DISTRICTS_SCHEMA, len(DISTRICTS), batch)


def _resident_district(seed: int, resident: Ints) -> Ints:
    weights = np.array([d.population * d.elderly_share for d in DISTRICTS])
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, uniform(seed + 7, resident)), len(DISTRICTS) - 1)


def _resident_tokens(seed: int, resident: Ints) -> list[str]:
    key = source_key(seed, "civil_affairs/residents")
    return pseudonym(key, "rt_", [f"R{int(r):09d}" for r in resident])


def residents_table(seed: int, rows: int) -> Table:
    """Registered residents aged 65 and over."""

    def batch(index: int, offset: int, n: int) -> pa.RecordBatch:
        rng = batch_rng(seed, "civil_affairs/elderly_residents", index)
        resident = np.arange(offset, offset + n, dtype=np.int64)
        district = _resident_district(seed, resident)
        age = np.minimum(65 + rng.exponential(9.0, n).astype(np.int64), 104)
        band_low = np.minimum((age // 5) * 5, 95)
        bands = [f"{b}-{b + 4}" if b < 95 else "95+" for b in band_low]
        mobility = np.clip(1 + rng.poisson((age - 60) / 14.0), 1, 4)
        chronic = np.clip(rng.poisson((age - 55) / 12.0), 0, 8)
        care = np.clip(mobility - 1 - (rng.random(n) < 0.3), 0, 3)
        income = rng.choice(4, n, p=(0.31, 0.34, 0.27, 0.08))
        registered = rng.integers(0, 365 * 20, n)
        arrays = [
            pa.array(_resident_tokens(seed, resident)),
            pa.array([DISTRICTS[d].code for d in district]),
            pa.array(START.year - age, pa.int16()),
            pa.array(bands),
            pa.array(np.where(rng.random(n) < 0.55, "F", "M")),
            pa.array(rng.random(n) < 0.18 + 0.004 * (age - 65)),
            pa.array(mobility, pa.int8()),
            pa.array(chronic, pa.int8()),
            pa.array(care, pa.int8()),
            pa.array([_INCOME[i] for i in income]),
            pa.array((20513 - registered).astype(np.int32), pa.date32()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=RESIDENTS_SCHEMA)

    return Table(DEPARTMENT, "elderly_residents", RESIDENTS_SCHEMA, rows, batch)


def subsidies_table(seed: int, residents: int, rows: int) -> Table:
    """Monthly care subsidy payments to residents in ``elderly_residents``."""
    # The first days of October 2025 to March 2026, as days since 1970-01-01.
    months = np.array([20362, 20393, 20423, 20454, 20485, 20513], dtype=np.int32)

    def batch(index: int, offset: int, n: int) -> pa.RecordBatch:
        rng = batch_rng(seed, "civil_affairs/care_subsidies", index)
        resident = rng.integers(0, max(residents, 1), n)
        district = _resident_district(seed, resident)
        kind = rng.choice(4, n, p=(0.45, 0.3, 0.1, 0.15))
        base = np.array(_SUBSIDY_BASE)[kind]
        amount = np.round(base * rng.uniform(0.8, 1.25, n) / 10) * 10
        status = rng.choice(["paid", "pending", "suspended"], n, p=(0.9, 0.08, 0.02))
        arrays = [
            pa.array([f"S{offset + i:09d}" for i in range(n)]),
            pa.array(_resident_tokens(seed, resident)),
            pa.array([DISTRICTS[d].code for d in district]),
            pa.array(np.sort(rng.choice(months, n)), pa.date32()),
            pa.array([_SUBSIDY_TYPES[k] for k in kind]),
            pa.array(amount, pa.int32()),
            pa.array(status),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=SUBSIDIES_SCHEMA)

    return Table(DEPARTMENT, "care_subsidies", SUBSIDIES_SCHEMA, rows, batch)
