"""The shared federated-learning task: will an intersection-hour see a road incident?

Every department holds a ``road_safety`` table with the same columns, built from
what that department observes:

* traffic management: arterial intersections at every hour (loop detectors);
* public security: camera intersections, mostly at night (enforcement shifts);
* civil affairs: intersections beside elderly care centres, in daytime (care staff reports);
* health: intersections near clinics, mostly in wet weather (ambulance dispatch).

So the departments see different corners of the same city (non-IID by
covariate shift): each one barely sees some risk factor vary, and a model
trained on one department alone misjudges the others' hours. A federated model
sees every corner without any row leaving its department.

The label comes from one logistic ground truth shared by all departments, so a
logistic regression is well specified and the gap between local and federated
models is caused by the data split alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from seedgen.city import (
    Intersections,
    conditions,
    district_code,
    hour_of_day,
    is_weekend,
    rain_mm,
)
from seedgen.common import Table, batch_rng, field, timestamps

__all__ = ["FEATURES", "LABEL", "SCHEMA", "FeatureSpec", "features", "logit", "road_safety_table"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FeatureSpec:
    """One model input column, derived from a raw measurement by a fixed divisor.

    Attributes:
        column: The column name in ``road_safety``; always ``float64``.
        source: The raw measurement it is computed from.
        scale: The divisor that brings the raw value to about [0, 1].
        weight: Its weight in the ground-truth log-odds.
        doc: The column description stored in the file.
    """

    column: str
    source: str
    scale: float
    weight: float
    doc: str


#: The model inputs, in order. They are stored already divided by a fixed
#: scale (not a fitted one), so no department has to reveal its statistics to
#: normalise, and any app can use every float64 column as it is.
FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("night", "night", 1.0, 4.5, "1.0 if the hour starts 22:00-04:59, else 0.0."),
    FeatureSpec("rush_hour", "rush_hour", 1.0, 1.5,
                "1.0 on weekdays 07:00-09:59 and 17:00-19:59, else 0.0."),
    FeatureSpec("weekend", "weekend", 1.0, -0.75, "1.0 on Saturday or Sunday, else 0.0."),
    FeatureSpec("flow_index", "vehicles_per_hour", 2000.0, 4.5,
                "Vehicles through the intersection in the hour / 2000."),
    FeatureSpec("heavy_vehicle_share", "heavy_vehicle_share", 1.0, 6.0,
                "Share of trucks and buses, 0-1."),
    FeatureSpec("speed_index", "mean_speed_kmh", 60.0, 9.0, "Mean approach speed in km/h / 60."),
    FeatureSpec("pedestrian_index", "pedestrians_per_hour", 500.0, 9.0,
                "Pedestrian crossings in the hour / 500."),
    FeatureSpec("rain_index", "rain_mm", 10.0, 6.0, "Rainfall in the hour in mm / 10."),
    FeatureSpec("cycle_index", "signal_cycle_s", 120.0, 3.0,
                "Signal cycle length in force in seconds / 120."),
    FeatureSpec("elderly_share", "elderly_share", 1.0, 12.0,
                "Share of district residents aged 65+, 0-1."),
    FeatureSpec("violation_index", "red_light_violations", 10.0, 6.0,
                "Red-light violations recorded in the hour / 10."),
)  # fmt: skip
INTERCEPT = -19.2
LABEL = "incident"
TEST_SHARE = 0.2
_DECIMALS = 4

_F = field
SCHEMA = pa.schema(
    [
        _F("record_id", pa.string(), "Row id, unique within the department."),
        _F("intersection_id", pa.string(), "Intersection (join key, INT-0001..)."),
        _F("district_code", pa.string(), "District of the intersection (join key)."),
        _F("hour", pa.timestamp("s"), "Start of the hour, local time UTC+8 (join key)."),
        _F("split", pa.string(), "'train' or 'test'; fixed, so every model is scored alike."),
        *[_F(spec.column, pa.float64(), spec.doc) for spec in FEATURES],
        _F(LABEL, pa.int8(), "Label: 1 if a collision or reported near-miss occurred."),
    ]
)


@dataclass(frozen=True)
class _Coverage:
    """Which intersection-hours a department observes."""

    prefix: str
    intersections: str
    first_hour: int
    hours: int
    weather: str  # "any", "dry" or "wet"


_COVERAGE: dict[str, _Coverage] = {
    # Video detectors are unreliable in rain, so the bureau drops wet hours.
    "traffic": _Coverage("TR", "arterial", 0, 24, "dry"),
    # Enforcement shifts run 21:00-05:00.
    "public-security": _Coverage("PS", "has_camera", 21, 8, "any"),
    # Care staff escort residents 08:00-18:00.
    "civil-affairs": _Coverage("CA", "near_care_centre", 8, 11, "any"),
    # Ambulance dispatch geocodes calls to intersections; the seed keeps wet-weather calls.
    "health": _Coverage("HE", "near_clinic", 6, 17, "wet"),
}


def _hours(seed: int, rng: np.random.Generator, n: int, cover: _Coverage, span: int) -> Ints:
    """Draw observed hours for ``n`` rows according to the department's coverage."""
    day = rng.integers(0, span // 24, n)
    hod = (cover.first_hour + rng.integers(0, cover.hours, n)) % 24
    hours = (day * 24 + hod).astype(np.int64)
    if cover.weather == "any":
        return hours
    # Walk forward a day at a time until the hour has the wanted weather.
    candidates = hours[:, None] + 24 * np.arange(0, 64)[None, :]
    wet = rain_mm(seed, candidates) > 0
    good = wet if cover.weather == "wet" else ~wet
    return np.asarray(candidates[np.arange(n), np.argmax(good, axis=1)], dtype=np.int64)


def features(raw: dict[str, Floats]) -> dict[str, Floats]:
    """The stored feature columns: each raw measurement divided by its scale."""
    return {s.column: np.round(raw[s.source] / s.scale, _DECIMALS) for s in FEATURES}


def logit(columns: dict[str, Floats]) -> Floats:
    """The ground-truth log-odds of an incident, from the stored feature columns."""
    z = np.full(len(columns[FEATURES[0].column]), INTERCEPT)
    for spec in FEATURES:
        z = z + spec.weight * columns[spec.column]
    return z


def road_safety_table(department: str, seed: int, city: Intersections, rows: int) -> Table:
    """Describe one department's ``road_safety`` table.

    Args:
        department: One of ``traffic``, ``public-security``, ``civil-affairs``, ``health``.
        seed: The generator seed.
        city: The intersection inventory.
        rows: How many rows to produce.

    Returns:
        The table, ready for :func:`seedgen.common.write_table`.

    Raises:
        KeyError: ``department`` has no road-safety coverage.
    """
    cover = _COVERAGE[department]
    pool = np.flatnonzero(getattr(city, cover.intersections))
    span = 24 * 7 * 8

    def batch(index: int, offset: int, n: int) -> pa.RecordBatch:
        rng = batch_rng(seed, f"road_safety/{department}", index)
        inter = pool[rng.integers(0, len(pool), n)]
        hours = _hours(seed, rng, n, cover, span)
        cond = conditions(seed, city, inter, hours, rng)
        hod = hour_of_day(hours)
        weekend = is_weekend(hours)
        raw: dict[str, Floats] = {
            "night": ((hod >= 22) | (hod < 5)).astype(np.float64),
            "rush_hour": (
                ~weekend & (((hod >= 7) & (hod < 10)) | ((hod >= 17) & (hod < 20)))
            ).astype(np.float64),
            "weekend": weekend.astype(np.float64),
            "vehicles_per_hour": cond.vehicles.astype(np.float64),
            "heavy_vehicle_share": np.round(cond.heavy_vehicles / np.maximum(cond.vehicles, 1), 3),
            "mean_speed_kmh": cond.mean_speed_kmh,
            "pedestrians_per_hour": cond.pedestrians.astype(np.float64),
            "rain_mm": cond.rain_mm,
            "signal_cycle_s": cond.cycle_s.astype(np.float64),
            "elderly_share": city.elderly_share(inter),
            "red_light_violations": cond.red_light_violations.astype(np.float64),
        }
        cols = features(raw)
        p = 1.0 / (1.0 + np.exp(-logit(cols)))
        label = (rng.random(n) < p).astype(np.int8)
        split = np.where(rng.random(n) < TEST_SHARE, "test", "train")
        row_ids = np.arange(offset, offset + n)
        arrays = [
            pa.array([f"{cover.prefix}-{i:08d}" for i in row_ids]),
            pa.array([city.ids[i] for i in inter]),
            pa.array(district_code(city, inter)),
            timestamps(hours),
            pa.array(split),
            *[pa.array(cols[s.column]) for s in FEATURES],
            pa.array(label),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)

    return Table(department, "road_safety", SCHEMA, rows, batch)
