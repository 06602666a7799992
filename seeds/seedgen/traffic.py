"""Traffic management bureau: intersection inventory, hourly flows, signal timing plans.

``hourly_flows`` walks the city hour by hour, one row per intersection, so row
``r`` is intersection ``r mod 48`` during hour ``r div 48``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from seedgen.city import N_INTERSECTIONS, Intersections, conditions, district_code
from seedgen.common import Table, batch_rng, field, timestamps

__all__ = ["flows_table", "intersections_table", "signal_timing_table"]

DEPARTMENT = "traffic"

_STREETS = (
    "Zhongshan Rd", "Jiefang Rd", "Yan'an Rd", "Fengqi Rd", "Qingchun Rd", "Wulin Rd",
    "Tiyuchang Rd", "Huancheng N Rd", "Moganshan Rd", "Wensan Rd", "Xueyuan Rd", "Gudun Rd",
)  # fmt: skip

INTERSECTIONS_SCHEMA = pa.schema(
    [
        field("intersection_id", pa.string(), "Intersection id (join key)."),
        field("district_code", pa.string(), "District code (join key)."),
        field("name", pa.string(), "The two streets that cross."),
        field("latitude", pa.float64(), "WGS84 latitude."),
        field("longitude", pa.float64(), "WGS84 longitude."),
        field("lanes", pa.int8(), "Approach lanes on the main road."),
        field("arterial", pa.bool_(), "True on arterial roads."),
        field("speed_limit_kmh", pa.int16(), "Posted speed limit."),
        field("has_camera", pa.bool_(), "An enforcement camera watches the stop lines."),
        field("near_care_centre", pa.bool_(), "An elderly care centre lies within 300 m."),
        field("near_clinic", pa.bool_(), "A clinic lies within 300 m."),
    ]
)

FLOWS_SCHEMA = pa.schema(
    [
        field("intersection_id", pa.string(), "Intersection id (join key)."),
        field("district_code", pa.string(), "District code (join key)."),
        field("hour", pa.timestamp("s"), "Start of the hour, local time UTC+8 (join key)."),
        field("vehicles", pa.int32(), "Vehicles counted by the loop detectors."),
        field("heavy_vehicles", pa.int32(), "Trucks and buses among them."),
        field("pedestrians", pa.int32(), "Pedestrian crossings (video count)."),
        field("mean_speed_kmh", pa.float64(), "Mean approach speed."),
        field("occupancy_pct", pa.float64(), "Detector occupancy, percent."),
        field("rain_mm", pa.float64(), "Rainfall from the bureau's weather feed."),
        field("signal_cycle_s", pa.int16(), "Signal cycle in force, seconds."),
        field("signal_plan_id", pa.string(), "Timing plan in force (see signal_timing)."),
    ]
)

TIMING_SCHEMA = pa.schema(
    [
        field("plan_id", pa.string(), "Timing plan id."),
        field("intersection_id", pa.string(), "Intersection id (join key)."),
        field("period", pa.string(), "'am_peak', 'off_peak', 'pm_peak' or 'night'."),
        field("starts_at", pa.string(), "Local time of day the plan starts, HH:MM."),
        field("cycle_s", pa.int16(), "Cycle length, seconds."),
        field("green_main_s", pa.int16(), "Green on the main road, seconds."),
        field("green_cross_s", pa.int16(), "Green on the cross street, seconds."),
        field("pedestrian_s", pa.int16(), "Pedestrian walk phase, seconds."),
        field("offset_s", pa.int16(), "Coordination offset, seconds."),
    ]
)

_PERIODS = (("night", "00:00"), ("am_peak", "07:00"), ("off_peak", "10:00"), ("pm_peak", "17:00"))
_PERIOD_OF_HOUR = np.array([0] * 7 + [1] * 3 + [2] * 7 + [3] * 3 + [2] * 2 + [0] * 2)


def intersections_table(city: Intersections) -> Table:
    """The intersection inventory (one row per intersection, independent of ``--rows``)."""
    idx = np.arange(N_INTERSECTIONS)

    def batch(_index: int, _offset: int, _n: int) -> pa.RecordBatch:
        names = [
            f"{_STREETS[i % len(_STREETS)]} & {_STREETS[(i * 5 + 3) % len(_STREETS)]}" for i in idx
        ]
        arrays = [
            pa.array(city.ids),
            pa.array(district_code(city, idx)),
            pa.array(names),
            pa.array(city.latitude),
            pa.array(city.longitude),
            pa.array(city.lanes, pa.int8()),
            pa.array(city.arterial),
            pa.array(city.speed_limit.astype(np.int16)),
            pa.array(city.has_camera),
            pa.array(city.near_care_centre),
            pa.array(city.near_clinic),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=INTERSECTIONS_SCHEMA)

    return Table(DEPARTMENT, "intersections", INTERSECTIONS_SCHEMA, N_INTERSECTIONS, batch)


def flows_table(seed: int, city: Intersections, rows: int) -> Table:
    """Hourly detector counts: every intersection, every hour, in time order."""

    def batch(index: int, offset: int, n: int) -> pa.RecordBatch:
        rng = batch_rng(seed, "traffic/hourly_flows", index)
        row = np.arange(offset, offset + n, dtype=np.int64)
        inter = row % N_INTERSECTIONS
        hour = row // N_INTERSECTIONS
        cond = conditions(seed, city, inter, hour, rng)
        period = _PERIOD_OF_HOUR[hour % 24]
        plans = [f"SP-{i + 1:04d}-{_PERIODS[p][0]}" for i, p in zip(inter, period, strict=True)]
        arrays = [
            pa.array([city.ids[i] for i in inter]),
            pa.array(district_code(city, inter)),
            timestamps(hour),
            pa.array(cond.vehicles, pa.int32()),
            pa.array(cond.heavy_vehicles, pa.int32()),
            pa.array(cond.pedestrians, pa.int32()),
            pa.array(cond.mean_speed_kmh),
            pa.array(cond.occupancy_pct),
            pa.array(cond.rain_mm),
            pa.array(cond.cycle_s, pa.int16()),
            pa.array(plans),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=FLOWS_SCHEMA)

    return Table(DEPARTMENT, "hourly_flows", FLOWS_SCHEMA, rows, batch)


def signal_timing_table(city: Intersections) -> Table:
    """Four timing plans per intersection (independent of ``--rows``)."""
    rows = N_INTERSECTIONS * len(_PERIODS)

    def batch(_index: int, _offset: int, _n: int) -> pa.RecordBatch:
        inter = np.repeat(np.arange(N_INTERSECTIONS), len(_PERIODS))
        period = np.tile(np.arange(len(_PERIODS)), N_INTERSECTIONS)
        base = city.cycle_s[inter]
        cycle = np.where(period == 0, np.maximum(base - 40, 50), base)
        pedestrian = np.where(city.near_care_centre[inter], 24, 15)
        green_main = np.round((cycle - pedestrian - 12) * 0.62).astype(np.int64)
        green_cross = cycle - pedestrian - 12 - green_main
        arrays = [
            pa.array(
                [f"SP-{i + 1:04d}-{_PERIODS[p][0]}" for i, p in zip(inter, period, strict=True)]
            ),
            pa.array([city.ids[i] for i in inter]),
            pa.array([_PERIODS[p][0] for p in period]),
            pa.array([_PERIODS[p][1] for p in period]),
            pa.array(cycle, pa.int16()),
            pa.array(green_main, pa.int16()),
            pa.array(green_cross, pa.int16()),
            pa.array(pedestrian, pa.int16()),
            pa.array((inter * 17) % cycle, pa.int16()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=TIMING_SCHEMA)

    return Table(DEPARTMENT, "signal_timing", TIMING_SCHEMA, rows, batch)
