"""The fictional city every department works in: districts, intersections, weather.

The reference tables are small and fixed by the seed. The latent traffic model
(:func:`conditions`) is shared, so that the traffic bureau's flows, the police's
violations and every department's road-safety rows describe the same streets.

Invariant: every value here is a pure function of ``(seed, intersection, hour)``;
weather is a pure function of ``(seed, hour)`` so all intersections see the same rain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "DISTRICTS",
    "N_INTERSECTIONS",
    "Conditions",
    "District",
    "Intersections",
    "conditions",
    "district_code",
    "hour_of_day",
    "intersections",
    "is_weekend",
    "rain_mm",
    "uniform",
]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class District:
    """One administrative district (join key ``district_code``)."""

    code: str
    name: str
    population: int
    elderly_share: float
    area_km2: float


#: Codes use the fictional prefix 99 so they can never be mistaken for real ones.
DISTRICTS: tuple[District, ...] = (
    District("990101", "Old Town", 182_000, 0.27, 9.8),
    District("990102", "Riverside", 241_000, 0.21, 21.4),
    District("990103", "Harbour", 156_000, 0.18, 17.2),
    District("990104", "University", 203_000, 0.11, 14.6),
    District("990105", "Eastgate", 268_000, 0.16, 25.1),
    District("990106", "Hillcrest", 119_000, 0.24, 32.7),
    District("990107", "Industrial Park", 97_000, 0.09, 41.3),
    District("990108", "New Development Zone", 174_000, 0.07, 38.9),
)

N_INTERSECTIONS = 48


@dataclass(frozen=True)
class Intersections:
    """Column arrays describing every signalised intersection (index = id - 1)."""

    ids: list[str]
    district: Ints
    arterial: npt.NDArray[np.bool_]
    lanes: Ints
    speed_limit: Floats
    base_flow: Floats
    base_pedestrians: Floats
    has_camera: npt.NDArray[np.bool_]
    near_care_centre: npt.NDArray[np.bool_]
    near_clinic: npt.NDArray[np.bool_]
    cycle_s: Ints
    latitude: Floats
    longitude: Floats

    def elderly_share(self, index: Ints) -> Floats:
        """Share of residents aged 65+ in each intersection's district."""
        shares = np.array([d.elderly_share for d in DISTRICTS])
        return shares[self.district[index]]


def intersections(seed: int) -> Intersections:
    """Build the fixed intersection inventory for ``seed``.

    Args:
        seed: The generator seed.

    Returns:
        The intersection columns.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x1A7E])))
    n = N_INTERSECTIONS
    district = np.arange(n, dtype=np.int64) % len(DISTRICTS)
    arterial = rng.random(n) < 0.45
    lanes = np.where(arterial, rng.integers(3, 5, n), rng.integers(1, 3, n)).astype(np.int64)
    speed_limit = np.where(arterial, 60.0, 40.0)
    base_flow = np.where(arterial, rng.uniform(900, 1700, n), rng.uniform(200, 700, n))
    old = np.isin(district, [0, 1, 5])
    base_pedestrians = np.where(old, rng.uniform(150, 420, n), rng.uniform(30, 200, n))
    has_camera = arterial | (rng.random(n) < 0.2)
    near_care_centre = old & (rng.random(n) < 0.7)
    near_clinic = rng.random(n) < 0.35
    cycle_s = np.where(arterial, rng.choice([100, 120, 140], n), rng.choice([60, 80, 90], n))
    latitude = 30.25 + 0.01 * district + rng.uniform(-0.004, 0.004, n)
    longitude = 120.15 + 0.013 * (district % 4) + rng.uniform(-0.005, 0.005, n)
    return Intersections(
        ids=[f"INT-{i + 1:04d}" for i in range(n)],
        district=district,
        arterial=arterial,
        lanes=lanes,
        speed_limit=speed_limit,
        base_flow=base_flow,
        base_pedestrians=base_pedestrians,
        has_camera=has_camera,
        near_care_centre=near_care_centre,
        near_clinic=near_clinic,
        cycle_s=cycle_s.astype(np.int64),
        latitude=np.round(latitude, 6),
        longitude=np.round(longitude, 6),
    )


def uniform(seed: int, values: Ints) -> Floats:
    """Counter-based uniform [0, 1) values (SplitMix64): a pure function of seed and counter."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def rain_mm(seed: int, hour: Ints) -> Floats:
    """City-wide rainfall in mm for each hour; rain comes in multi-hour spells."""
    spell = hour // 6
    wet = uniform(seed, spell) < 0.22
    amount = 12.0 * uniform(seed + 1, hour) ** 2
    return np.where(wet, np.round(amount, 1), 0.0)


def hour_of_day(hour: Ints) -> Ints:
    """Local hour of day (0-23)."""
    return hour % 24


def is_weekend(hour: Ints) -> npt.NDArray[np.bool_]:
    """True on Saturday and Sunday (the seed period starts on a Monday)."""
    return (hour // 24) % 7 >= 5


_VEHICLE_PROFILE = np.array(
    [0.18, 0.11, 0.08, 0.07, 0.10, 0.25, 0.55, 0.95, 1.00, 0.80, 0.70, 0.72,
     0.75, 0.72, 0.70, 0.74, 0.85, 1.00, 0.95, 0.75, 0.60, 0.48, 0.36, 0.25]
)  # fmt: skip
_PEDESTRIAN_PROFILE = np.array(
    [0.05, 0.03, 0.02, 0.02, 0.03, 0.08, 0.30, 0.70, 0.85, 0.90, 0.95, 1.00,
     1.00, 0.95, 0.90, 0.90, 0.95, 1.00, 0.90, 0.70, 0.50, 0.30, 0.15, 0.08]
)  # fmt: skip


@dataclass(frozen=True)
class Conditions:
    """What an intersection looked like during one hour."""

    vehicles: Ints
    heavy_vehicles: Ints
    pedestrians: Ints
    mean_speed_kmh: Floats
    occupancy_pct: Floats
    rain_mm: Floats
    cycle_s: Ints
    red_light_violations: Ints


def conditions(
    seed: int, city: Intersections, index: Ints, hour: Ints, rng: np.random.Generator
) -> Conditions:
    """Sample the traffic conditions at intersections ``index`` during hours ``hour``.

    Args:
        seed: The generator seed (weather depends only on it and the hour).
        city: The intersection inventory.
        index: Zero-based intersection indices.
        hour: Hours since the start of the seed period.
        rng: The batch's random stream, for per-row noise.

    Returns:
        The sampled conditions, one element per row.
    """
    n = len(index)
    hod = hour_of_day(hour)
    weekend = is_weekend(hour)
    rain = rain_mm(seed, hour)
    day_factor = np.where(weekend, 0.75, 1.0)
    expected = city.base_flow[index] * _VEHICLE_PROFILE[hod] * day_factor * (1.0 - 0.01 * rain)
    vehicles = rng.poisson(np.maximum(expected, 1.0)).astype(np.int64)
    heavy_share = np.clip(rng.normal(np.where(hod < 6, 0.22, 0.08), 0.03, n), 0.0, 0.6)
    heavy = rng.binomial(vehicles, heavy_share).astype(np.int64)
    capacity = 600.0 * city.lanes[index]
    occupancy = np.clip(100.0 * vehicles / capacity + rng.normal(0, 3, n), 0.5, 98.0)
    speed = city.speed_limit[index] * (1.05 - 0.55 * occupancy / 100.0) - 0.6 * rain
    speed = np.clip(speed + rng.normal(0, 3.0, n), 5.0, 90.0)
    ped_expected = city.base_pedestrians[index] * _PEDESTRIAN_PROFILE[hod] * (1.0 - 0.04 * rain)
    pedestrians = rng.poisson(np.maximum(ped_expected, 0.5)).astype(np.int64)
    night = (hod >= 22) | (hod < 5)
    violation_rate = vehicles / 400.0 * np.where(night, 2.5, 1.0)
    red_light = rng.poisson(violation_rate).astype(np.int64)
    return Conditions(
        vehicles=vehicles,
        heavy_vehicles=heavy,
        pedestrians=pedestrians,
        mean_speed_kmh=np.round(speed, 1),
        occupancy_pct=np.round(occupancy, 1),
        rain_mm=rain,
        cycle_s=city.cycle_s[index],
        red_light_violations=red_light,
    )


def district_code(city: Intersections, index: Ints) -> list[str]:
    """District codes of intersections ``index``."""
    return [DISTRICTS[int(d)].code for d in city.district[index]]
