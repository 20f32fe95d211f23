"""The inline process configuration: a JSON document, checked strictly.

Example (every key optional)::

    {
      "seed": 7,
      "delay": {
        "upstream":   {"delay_ms": 10, "jitter_ms": 1, "queue_limit": 1000},
        "downstream": {"delay_ms": 10}
      },
      "middleboxes": [{"name": "strip_mp_capable", "params": {"direction": "upstream"}}]
    }

``"delay": {"both": {...}}`` sets both directions at once. An unknown key anywhere is an error
that names it: a misspelt parameter must never be silently ignored.

Middleboxes are listed in path order from the client side (left leg) to the server side (right
leg): upstream packets meet them in list order, downstream packets in reverse order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middleboxes.base import Direction
from testbed.inline.delay import DelayParams


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class MiddleboxSpec:
    """One middlebox of the pipeline, built later by middleboxes.registry.build_middlebox."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InlineConfig:
    seed: int = 0
    delay: dict[Direction, DelayParams] = field(
        default_factory=lambda: {d: DelayParams() for d in Direction}
    )
    middleboxes: tuple[MiddleboxSpec, ...] = ()


def _check_keys(where: str, mapping: object, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return mapping


def parse_delay_params(where: str, raw: object) -> DelayParams:
    values = _check_keys(where, raw, {"delay_ms", "jitter_ms", "queue_limit"})
    try:
        return DelayParams(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def parse_config(raw: object) -> InlineConfig:
    """Build an InlineConfig from decoded JSON, raising ConfigError naming what is wrong."""
    top = _check_keys("config", raw, {"seed", "delay", "middleboxes"})
    seed = top.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"config.seed must be an integer, got {seed!r}")

    delay = {d: DelayParams() for d in Direction}
    raw_delay = _check_keys("config.delay", top.get("delay", {}),
                            {"both", "upstream", "downstream"})
    if "both" in raw_delay and len(raw_delay) > 1:
        raise ConfigError("config.delay: give either 'both' or per-direction keys, not both")
    for key, value in raw_delay.items():
        params = parse_delay_params(f"config.delay.{key}", value)
        targets = list(Direction) if key == "both" else [Direction(key)]
        for direction in targets:
            delay[direction] = params

    raw_boxes = top.get("middleboxes", [])
    if not isinstance(raw_boxes, list):
        raise ConfigError("config.middleboxes must be a JSON list")
    specs = []
    for index, raw_box in enumerate(raw_boxes):
        where = f"config.middleboxes[{index}]"
        box = _check_keys(where, raw_box, {"name", "params"})
        name = box.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
        params = box.get("params", {})
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.params must be a JSON object")
        specs.append(MiddleboxSpec(name=name, params=params))
    return InlineConfig(seed=seed, delay=delay, middleboxes=tuple(specs))


def load_config(path: str | Path) -> InlineConfig:
    """Read and parse a JSON configuration file."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path} is not valid JSON: {error}") from error
    return parse_config(raw)
