"""What a participant requires of a job before it trains on its data.

The coordinator chooses a job's privacy settings and run config; these checks
let the participant refuse them. Invariants:

* Every refusal is an :class:`~node.errors.AccessDenied` whose message names
  what to change: the ``node.toml`` ``[fl]`` setting, the dataset, or the
  run-config key.
* DP strength is judged by :attr:`node.fl.wire.DpConfig.effective_epsilon`,
  the epsilon a clipped update actually gets, never by the stated epsilon.
* A run config may only carry keys the approved FAB declares, each with the
  type of the FAB's default (an integer is accepted for a float key), and no
  float value that is not finite.
* A FAB's ``[tool.flwr.app.config]`` declares only defaults, no ranges, so the
  app's reviewed default is the yardstick: where it is a positive number, the
  job's value may be at most ``max_run_config_factor`` times it in size
  (``node.toml`` ``[fl]``, :data:`DEFAULT_RUN_CONFIG_FACTOR` when not set). It
  bounds what a coordinator can make this node compute (``local-epochs =
  3000`` against a default of 50) or how far it can push a step size. Keys
  whose default is zero, negative, text or a bool are not bounded.
"""

from __future__ import annotations

import math
from typing import Any

from node.config import FlSettings
from node.errors import AccessDenied
from node.fl import wire
from node.fl.bundle import AppBundle, fused_run_config
from node.fl.errors import JobFileError

__all__ = [
    "DEFAULT_RUN_CONFIG_FACTOR",
    "check_dataset",
    "check_privacy",
    "check_run_config",
    "run_config_factor",
]

#: How many times an app's positive numeric default a run-config value may be,
#: unless ``node.toml`` ``[fl] max_run_config_factor`` says otherwise.
DEFAULT_RUN_CONFIG_FACTOR = FlSettings.max_run_config_factor

_SETTINGS_HINT = (
    "the coordinator changes the job, or this node's operator changes [fl] in node.toml"
)


def check_privacy(settings: FlSettings, spec: wire.JobSpec) -> None:
    """Refuse a job weaker than the node's ``[fl]`` settings require.

    Raises:
        AccessDenied: secure aggregation or DP is required but off, or the
            job's effective epsilon is above ``max_epsilon``.
    """
    if settings.require_secagg and not spec.secagg:
        raise AccessDenied(
            "this node requires secure aggregation ([fl] require_secagg) "
            "and the job does not use it",
            hint=_SETTINGS_HINT,
        )
    if settings.require_dp and spec.dp is None:
        raise AccessDenied(
            "this node requires differential privacy ([fl] require_dp) "
            "and the job does not apply it",
            hint=_SETTINGS_HINT,
        )
    if settings.max_epsilon is not None and spec.dp is not None:
        effective = spec.dp.effective_epsilon
        if effective > settings.max_epsilon:
            raise AccessDenied(
                f"the job's DP gives an effective epsilon of {effective:.4g} "
                f"(epsilon {spec.dp.epsilon:g}, clipping norm {spec.dp.clipping_norm:g}, "
                f"sensitivity {spec.dp.sensitivity:g}), above this node's "
                f"[fl] max_epsilon {settings.max_epsilon:g}",
                hint="a sensitivity equal to the clipping norm and a smaller epsilon "
                "lower it; " + _SETTINGS_HINT,
            )


def check_dataset(spec: wire.JobSpec, agreement_dataset: str) -> None:
    """Refuse a job that names another dataset than its agreement covers.

    Raises:
        AccessDenied: ``spec.dataset`` is not the agreement's dataset.
    """
    if spec.dataset != agreement_dataset:
        raise AccessDenied(
            f"the job names dataset {spec.dataset!r} but agreement {spec.agreement} "
            f"covers {agreement_dataset!r}",
            hint=f"the coordinator names dataset {agreement_dataset!r} for this agreement",
        )


def run_config_factor(settings: FlSettings) -> float:
    """The node's ``[fl] max_run_config_factor`` (:data:`DEFAULT_RUN_CONFIG_FACTOR` unless set)."""
    return settings.max_run_config_factor


def check_run_config(
    bundle: AppBundle,
    run_config: dict[str, Any],
    max_factor: float = DEFAULT_RUN_CONFIG_FACTOR,
) -> None:
    """Refuse a run config with a key the FAB does not declare, a value of
    another type, or a number out of bounds.

    Raises:
        AccessDenied: an undeclared key; a value whose type differs from the
            FAB's default for that key; a float that is not finite; or a
            number larger in size than ``max_factor`` times the FAB's positive
            default.
    """
    try:
        # The same check the coordinator's launch makes: keys outside the FAB's config.
        fused_run_config(bundle, run_config)
    except JobFileError as e:
        raise AccessDenied(
            f"the job's run config does not fit app {bundle.fab_id}: {e}", hint=e.hint
        ) from e
    for key, value in run_config.items():
        default = bundle.default_config[key]
        if not _same_kind(default, value):
            raise AccessDenied(
                f"the job's run-config key {key!r} is {value!r} ({type(value).__name__}); "
                f"app {bundle.fab_id} declares a {type(default).__name__} "
                f"(default {default!r})",
                hint="the coordinator sends a value of the declared type",
            )
        _check_bound(bundle, key, value, default, max_factor)


def _check_bound(bundle: AppBundle, key: str, value: Any, default: Any, max_factor: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise AccessDenied(
            f"the job's run-config key {key!r} is {value!r}, not a finite number",
            hint="the coordinator sends a finite value",
        )
    if isinstance(default, bool) or not isinstance(default, (int, float)) or default <= 0:
        return
    bound = max_factor * default
    if abs(value) > bound:
        raise AccessDenied(
            f"the job's run-config key {key!r} is {value!r}, beyond this node's bound of "
            f"{bound:g} ([fl] max_run_config_factor {max_factor:g} x app {bundle.fab_id}'s "
            f"default {default!r})",
            hint="the coordinator sends a value within the bound, or this node's operator "
            "raises [fl] max_run_config_factor in node.toml",
        )


def _same_kind(default: Any, value: Any) -> bool:
    # bool is a subclass of int: it must match exactly, and never stand for a number.
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(value) is type(default)
