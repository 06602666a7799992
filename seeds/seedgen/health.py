"""Health commission: clinics and clinic visits.

Patients are pseudonymous at the source (``pt_`` prefix is taken by plates, so
patients get ``hp_`` + HMAC under the commission's own key). Traffic injuries
carry the intersection where they happened, which joins to the police accident
reports and the traffic bureau's flows by ``intersection_id`` and ``hour``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from seedgen.city import DISTRICTS, N_INTERSECTIONS, Intersections
from seedgen.common import Table, batch_rng, field, pseudonym, source_key, timestamps

__all__ = ["clinics_table", "visits_table"]

DEPARTMENT = "health"
_N_CLINICS = 16
_PATIENTS = 60_000
_SPAN_HOURS = 24 * 7 * 8

_REASONS = (
    ("I00-I99", "circulatory", 0.17),
    ("J00-J99", "respiratory", 0.22),
    ("E00-E89", "endocrine", 0.09),
    ("M00-M99", "musculoskeletal", 0.13),
    ("S00-T88", "injury", 0.14),
    ("Z00-Z99", "check_up", 0.25),
)
_AGE_BANDS = ("0-14", "15-24", "25-44", "45-64", "65-79", "80+")
_AGE_P = (0.12, 0.09, 0.24, 0.27, 0.19, 0.09)

CLINICS_SCHEMA = pa.schema(
    [
        field("clinic_id", pa.string(), "Clinic id (join key within the commission)."),
        field("district_code", pa.string(), "District code (join key)."),
        field("kind", pa.string(), "community_health_centre or hospital_emergency."),
        field("beds", pa.int16(), "Observation beds."),
    ]
)

VISITS_SCHEMA = pa.schema(
    [
        field("visit_id", pa.string(), "Visit id."),
        field("patient_token", pa.string(), "Pseudonymous patient id (HMAC at the source)."),
        field("clinic_id", pa.string(), "Clinic visited."),
        field("district_code", pa.string(), "District of the clinic (join key)."),
        field("visit_hour", pa.timestamp("s"), "Hour of arrival, local time UTC+8 (join key)."),
        field("age_band", pa.string(), "Patient age band."),
        field("sex", pa.string(), "F or M."),
        field("icd10_chapter", pa.string(), "ICD-10 block range of the main diagnosis."),
        field("reason", pa.string(), "Plain-language reason group."),
        field("traffic_injury", pa.bool_(), "The injury came from a road collision."),
        field(
            "injury_intersection_id",
            pa.string(),
            "Where a traffic injury happened (join key), else null.",
            nullable=True,
        ),
        field("triage_level", pa.int8(), "1 immediate .. 5 non-urgent."),
        field("cost_cny", pa.int32(), "Billed cost in yuan."),
    ]
)


def _clinic_district(clinic: np.ndarray) -> list[str]:
    return [DISTRICTS[int(c) % len(DISTRICTS)].code for c in clinic]


def clinics_table() -> Table:
    """The clinic register (independent of ``--rows``)."""

    def batch(_index: int, _offset: int, _n: int) -> pa.RecordBatch:
        clinic = np.arange(_N_CLINICS)
        kind = np.where(clinic % 4 == 3, "hospital_emergency", "community_health_centre")
        arrays = [
            pa.array([f"CL-{c + 1:03d}" for c in clinic]),
            pa.array(_clinic_district(clinic)),
            pa.array(kind),
            pa.array(np.where(clinic % 4 == 3, 40, 8), pa.int16()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=CLINICS_SCHEMA)

    return Table(DEPARTMENT, "clinics", CLINICS_SCHEMA, _N_CLINICS, batch)


def visits_table(seed: int, city: Intersections, rows: int) -> Table:
    """Clinic visits in time order; about a fifth of injuries are traffic injuries."""
    key = source_key(seed, "health/patients")
    p = np.array([r[2] for r in _REASONS])

    def batch(index: int, offset: int, n: int) -> pa.RecordBatch:
        rng = batch_rng(seed, "health/clinic_visits", index)
        clinic = rng.integers(0, _N_CLINICS, n)
        hour = np.sort(rng.integers(0, _SPAN_HOURS, n))
        # Clinics open 07:00-21:00; emergency departments run all night.
        emergency = clinic % 4 == 3
        hod = hour % 24
        hour = np.where(~emergency & ((hod < 7) | (hod > 20)), hour - hod + 7 + hod % 14, hour)
        reason = rng.choice(len(_REASONS), n, p=p / p.sum())
        traffic = (reason == 4) & (rng.random(n) < 0.22)
        where = rng.integers(0, N_INTERSECTIONS, n)
        patient = rng.integers(0, _PATIENTS, n)
        triage = np.clip(rng.integers(2, 6, n) - traffic.astype(np.int64) * 2, 1, 5)
        cost = np.round(rng.lognormal(5.3, 0.7, n) * np.where(emergency, 3.0, 1.0))
        injury_place = pa.array(
            [city.ids[w] if t else None for w, t in zip(where, traffic, strict=True)], pa.string()
        )
        arrays = [
            pa.array([f"HV{offset + i:09d}" for i in range(n)]),
            pa.array(pseudonym(key, "hp_", [f"P{int(x):08d}" for x in patient])),
            pa.array([f"CL-{c + 1:03d}" for c in clinic]),
            pa.array(_clinic_district(clinic)),
            timestamps(hour),
            pa.array([_AGE_BANDS[a] for a in rng.choice(len(_AGE_BANDS), n, p=_AGE_P)]),
            pa.array(np.where(rng.random(n) < 0.52, "F", "M")),
            pa.array([_REASONS[r][0] for r in reason]),
            pa.array([_REASONS[r][1] for r in reason]),
            pa.array(traffic),
            injury_place,
            pa.array(triage, pa.int8()),
            pa.array(cost, pa.int32()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=VISITS_SCHEMA)

    return Table(DEPARTMENT, "clinic_visits", VISITS_SCHEMA, rows, batch)
