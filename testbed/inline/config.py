"""The inline process configuration: a JSON document, checked strictly.

Example (every key optional)::

    {
      "seed": 7,
      "delay": {
        "upstream":   {"delay_ms": 10, "jitter_ms": 1, "rate_mbit": 100, "queue_pkts": 100},
        "downstream": {"delay_ms": 10}
      },
      "middleboxes": [{"name": "strip_mp_capable", "params": {"direction": "upstream"}}]
    }

A middlebox entry may say ``"switchable": true``: the box is then built behind its trigger gate
(middleboxes.triggers) so the control request `set_middlebox` can switch it on and off.

Each delay entry is the link's parameters (testbed.net.params.LinkParams names): the stage
applies delay_ms and jitter_ms, and holds at most `held_packets_limit` frames, derived from
rate_mbit and queue_pkts exactly as netem's limit is (queue + in flight during the delay); the
rate itself is HTB's job and loss nftables', so loss_pct (like any other key) is refused here
rather than ignored. ``"delay": {"both": {...}}`` sets both directions at once. An unknown key
anywhere is an error that names it: a misspelt parameter must never be silently ignored.

Middleboxes are listed in path order from the client side (left leg) to the server side (right
leg): upstream packets meet them in list order, downstream packets in reverse order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middleboxes.contract import Direction
from testbed.errors import SpecError
from testbed.net.params import LinkParams


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class MiddleboxSpec:
    """One middlebox of the pipeline, built later by middleboxes.registry.build_middlebox."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    switchable: bool = False  # behind a trigger gate even without triggers (timeline on/off)


@dataclass(frozen=True, slots=True)
class InlineConfig:
    seed: int = 0
    delay: dict[Direction, LinkParams] = field(
        default_factory=lambda: {d: LinkParams() for d in Direction}
    )
    middleboxes: tuple[MiddleboxSpec, ...] = ()


def _check_keys(where: str, mapping: object, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return mapping


DELAY_STAGE_KEYS = frozenset({"delay_ms", "jitter_ms", "rate_mbit", "queue_pkts"})


def parse_delay_params(where: str, raw: object) -> LinkParams:
    """A delay entry: the link parameters the delay stage uses (DELAY_STAGE_KEYS)."""
    values = _check_keys(where, raw, set(DELAY_STAGE_KEYS))
    try:
        return LinkParams.from_dict(values, where=where)
    except SpecError as error:
        raise ConfigError(f"{where}: {error}") from error


def delay_entry(link: LinkParams) -> dict[str, Any]:
    """The delay entry (JSON) for a link's delay stage: the parameters it uses."""
    return {key: value for key, value in link.as_dict().items() if key in DELAY_STAGE_KEYS}


def parse_config(raw: object) -> InlineConfig:
    """Build an InlineConfig from decoded JSON, raising ConfigError naming what is wrong."""
    top = _check_keys("config", raw, {"seed", "delay", "middleboxes"})
    seed = top.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"config.seed must be an integer, got {seed!r}")

    delay = {d: LinkParams() for d in Direction}
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
        box = _check_keys(where, raw_box, {"name", "params", "switchable"})
        name = box.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
        params = box.get("params", {})
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.params must be a JSON object")
        switchable = box.get("switchable", False)
        if not isinstance(switchable, bool):
            raise ConfigError(f"{where}.switchable must be true or false, got {switchable!r}")
        specs.append(MiddleboxSpec(name=name, params=params, switchable=switchable))
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
