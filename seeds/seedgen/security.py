"""Public security bureau: traffic violations and accidents.

Plates are pseudonymous at the source: the camera system replaces each plate
with ``pt_`` + HMAC-SHA256 under a key that never leaves the bureau, so the
clear plate never enters these tables. Tokens are stable within the bureau,
which lets it count repeat offenders, and meaningless to anyone else.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from seedgen.city import N_INTERSECTIONS, Intersections, conditions, district_code
from seedgen.common import Table, batch_rng, field, pseudonym, source_key, timestamps

__all__ = ["accidents_table", "violations_table"]

DEPARTMENT = "public-security"
_FLEET = 25_000
_SPAN_HOURS = 24 * 7 * 8

_VIOLATIONS = ("RED_LIGHT", "SPEEDING", "FAIL_TO_YIELD_PEDESTRIAN", "ILLEGAL_TURN", "LANE_MISUSE")
_VIOLATION_P = (0.34, 0.28, 0.14, 0.14, 0.10)
_FINE = {"RED_LIGHT": 200, "SPEEDING": 150, "FAIL_TO_YIELD_PEDESTRIAN": 200,
         "ILLEGAL_TURN": 100, "LANE_MISUSE": 100}  # fmt: skip
_POINTS = {"RED_LIGHT": 6, "SPEEDING": 3, "FAIL_TO_YIELD_PEDESTRIAN": 3,
           "ILLEGAL_TURN": 2, "LANE_MISUSE": 2}  # fmt: skip
_CLASSES = ("car", "taxi", "truck", "bus", "motorcycle", "e_bike")
_CLASS_P = (0.62, 0.12, 0.09, 0.03, 0.05, 0.09)
_SEVERITY = ("property_only", "minor_injury", "serious_injury", "fatal")
_SEVERITY_P = (0.62, 0.29, 0.08, 0.01)

VIOLATIONS_SCHEMA = pa.schema(
    [
        field("violation_id", pa.string(), "Violation record id."),
        field("occurred_at", pa.timestamp("s"), "When the camera fired, local time UTC+8."),
        field("hour", pa.timestamp("s"), "occurred_at truncated to the hour (join key)."),
        field("intersection_id", pa.string(), "Intersection id (join key)."),
        field("district_code", pa.string(), "District code (join key)."),
        field("plate_token", pa.string(), "Pseudonymous plate (HMAC at the camera system)."),
        field("vehicle_class", pa.string(), "car, taxi, truck, bus, motorcycle or e_bike."),
        field("violation_code", pa.string(), "What was violated."),
        field("recorded_speed_kmh", pa.int16(), "Radar speed, only for SPEEDING.", nullable=True),
        field("fine_cny", pa.int32(), "Fine in yuan."),
        field("penalty_points", pa.int8(), "Licence penalty points."),
    ]
)

ACCIDENTS_SCHEMA = pa.schema(
    [
        field("accident_id", pa.string(), "Accident report id."),
        field("occurred_at", pa.timestamp("s"), "Reported time, local time UTC+8."),
        field("hour", pa.timestamp("s"), "occurred_at truncated to the hour (join key)."),
        field("intersection_id", pa.string(), "Intersection id (join key)."),
        field("district_code", pa.string(), "District code (join key)."),
        field("severity", pa.string(), "property_only, minor_injury, serious_injury or fatal."),
        field("vehicles_involved", pa.int8(), "Vehicles involved."),
        field("pedestrians_involved", pa.int8(), "Pedestrians involved."),
        field("persons_injured", pa.int8(), "Persons injured."),
        field("persons_killed", pa.int8(), "Persons killed."),
        field("elderly_involved", pa.bool_(), "A person aged 65+ was involved."),
        field("weather", pa.string(), "dry or rain."),
        field("plate_tokens", pa.list_(pa.string()), "Pseudonymous plates of the vehicles."),
    ]
)


def _plate_tokens(seed: int, vehicles: np.ndarray) -> list[str]:
    # The clear plate exists only inside this function, as the camera system would see it.
    key = source_key(seed, "public_security/plates")
    plates = [f"RV-{v:05d}" for v in vehicles]
    return pseudonym(key, "pt_", plates)


def violations_table(seed: int, city: Intersections, rows: int) -> Table:
    """Camera-recorded violations at camera intersections, busiest at night."""
    cams = np.flatnonzero(city.has_camera)

    def batch(index: int, offset: int, n: int) -> pa.RecordBatch:
        rng = batch_rng(seed, "public_security/violations", index)
        inter = cams[rng.integers(0, len(cams), n)]
        hour = np.sort(rng.integers(0, _SPAN_HOURS, n))
        second = rng.integers(0, 3600, n)
        # A few vehicles offend repeatedly: draw the fleet index from a Zipf law.
        vehicle = (rng.zipf(1.3, n) - 1) % _FLEET
        code = rng.choice(len(_VIOLATIONS), n, p=_VIOLATION_P)
        codes = [_VIOLATIONS[c] for c in code]
        limit = city.speed_limit[inter]
        speed = np.where(code == 1, limit * rng.uniform(1.1, 1.6, n), np.nan)
        arrays = [
            pa.array([f"V{offset + i:09d}" for i in range(n)]),
            timestamps(hour, second),
            timestamps(hour),
            pa.array([city.ids[i] for i in inter]),
            pa.array(district_code(city, inter)),
            pa.array(_plate_tokens(seed, vehicle)),
            pa.array([_CLASSES[c] for c in rng.choice(len(_CLASSES), n, p=_CLASS_P)]),
            pa.array(codes),
            pa.array(np.round(speed), pa.int16(), from_pandas=True),
            pa.array([_FINE[c] for c in codes], pa.int32()),
            pa.array([_POINTS[c] for c in codes], pa.int8()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=VIOLATIONS_SCHEMA)

    return Table(DEPARTMENT, "violations", VIOLATIONS_SCHEMA, rows, batch)


def accidents_table(seed: int, city: Intersections, rows: int) -> Table:
    """Police accident reports at every intersection, in time order."""

    def batch(index: int, offset: int, n: int) -> pa.RecordBatch:
        rng = batch_rng(seed, "public_security/accidents", index)
        inter = rng.integers(0, N_INTERSECTIONS, n)
        hour = np.sort(rng.integers(0, _SPAN_HOURS, n))
        cond = conditions(seed, city, inter, hour, rng)
        severity = rng.choice(len(_SEVERITY), n, p=_SEVERITY_P)
        vehicles = np.clip(rng.poisson(1.2, n) + 1, 1, 6)
        pedestrians = rng.binomial(1, np.clip(cond.pedestrians / 400.0, 0.02, 0.6))
        injured = np.where(severity == 0, 0, rng.integers(1, 4, n))
        killed = (severity == 3).astype(np.int64)
        elderly = rng.random(n) < city.elderly_share(inter) * (1 + pedestrians)
        fleet = rng.integers(0, _FLEET, (n, 6))
        tokens = [_plate_tokens(seed, fleet[i, : vehicles[i]]) for i in range(n)]
        arrays = [
            pa.array([f"A{offset + i:08d}" for i in range(n)]),
            timestamps(hour, rng.integers(0, 3600, n)),
            timestamps(hour),
            pa.array([city.ids[i] for i in inter]),
            pa.array(district_code(city, inter)),
            pa.array([_SEVERITY[s] for s in severity]),
            pa.array(vehicles, pa.int8()),
            pa.array(pedestrians, pa.int8()),
            pa.array(injured, pa.int8()),
            pa.array(killed, pa.int8()),
            pa.array(elderly),
            pa.array(np.where(cond.rain_mm > 0, "rain", "dry")),
            pa.array(tokens, pa.list_(pa.string())),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=ACCIDENTS_SCHEMA)

    return Table(DEPARTMENT, "accidents", ACCIDENTS_SCHEMA, rows, batch)
