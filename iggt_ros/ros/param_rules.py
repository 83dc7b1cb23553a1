"""Which parameters may change while the node runs, and how a change is applied.

Thresholds and publish flags are read by the pipeline at each window, so changing them in place is
safe. Everything that shapes subscriptions, buffers, the engine or the map's geometry is fixed for
the life of a configuration: changing it at run time would leave half-built state behind, so such
changes are refused with the reason and the way to apply them: deactivate and clean up (the parameters
stay declared), set them, configure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iggt_ros.config import ConfigError, IggtConfig

RUNTIME_SECTIONS = ("clustering", "tracking", "publish")
"""Sections whose every key is read afresh for each window."""
RUNTIME_KEYS = frozenset({"query.max_results", "query.min_score", "query.max_text_length", "query.lmm_timeout_s"})
"""Further keys that are read at use time."""
FIXED_KEYS = frozenset({"publish.diagnostics_period_s"})
"""Keys of runtime sections that still need a new configuration (the diagnostics timer's period)."""

_WHY_FIXED = {
    "input": "it changes subscriptions, frames or synchronisation",
    "window": "it changes the window buffer and the queue",
    "engine": "the engine is loaded at configure time",
    "mapping": "the object map's voxels and frame are built with it",
    "query": "the text and region encoders are loaded at configure time",
    "publish": "the diagnostics timer is created at configure time",
    "threads": "thread pools are sized when the libraries load, at process start and configure time",
}


@dataclass
class ParameterUpdate:
    """The outcome of a set of parameter changes: accepted (with the new values) or refused (why)."""

    successful: bool
    reason: str = ""
    applied: dict[str, Any] = dataclasses.field(default_factory=dict)


def is_runtime_key(key: str) -> bool:
    section = key.split(".", 1)[0]
    return key not in FIXED_KEYS and (section in RUNTIME_SECTIONS or key in RUNTIME_KEYS)


def check_update(config: IggtConfig, changes: Mapping[str, Any]) -> ParameterUpdate:
    """Validate `changes` (dotted key -> value) against `config` without modifying it.

    Refuses the whole set when one key is not changeable at run time or when the values do not
    validate; the reason names the key.
    """
    current = config.to_flat()
    effective: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in current:
            return ParameterUpdate(False, f"unknown parameter '{key}'")
        if _same(current[key], value):
            continue
        if not is_runtime_key(key):
            why = _WHY_FIXED.get(key.split(".", 1)[0], "it is fixed for a configuration")
            return ParameterUpdate(False, f"'{key}' cannot change while the node is configured ({why}); "
                                          "deactivate and clean up the node, set it, then configure (and "
                                          "activate) again")
        effective[key] = value
    try:
        new = config.replace(**effective)
    except ConfigError as exc:
        return ParameterUpdate(False, str(exc))
    flat = new.to_flat()
    return ParameterUpdate(True, "", {key: flat[key] for key in effective})


def apply_update(config: IggtConfig, update: ParameterUpdate) -> None:
    """Write accepted values into the live section objects, which the pipeline's components share."""
    if not update.successful:
        raise ValueError(f"cannot apply a refused update: {update.reason}")
    for key, value in update.applied.items():
        section, name = key.split(".", 1)
        setattr(getattr(config, section), name, value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) or isinstance(b, (list, tuple)):
        norm = [] if b in (None, [""], ("",)) else list(b)
        return list(a) == norm
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return float(a) == float(b)
    return type(a) is type(b) and a == b
