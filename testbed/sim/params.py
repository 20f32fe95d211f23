"""Typed link parameters, with units in their names, and their `key=value,...` text form.

An unknown key or an out-of-range value is an error that names it: a misspelt `dealy=10` must
never silently give a link without delay (the Mininet TCLink trap described in DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace


class LinkParamsError(ValueError):
    """A link parameter is unknown, malformed or out of range."""


@dataclass(frozen=True, slots=True)
class LinkParams:
    """How one direction of a link shapes traffic.

    rate_mbit: serialization rate in Mbit/s (None = unlimited, no queueing).
    delay_ms: one-way propagation delay. jitter_ms: each packet's delay is drawn uniformly
    from delay +/- jitter (never below zero); packets keep their order unless `reorder`.
    loss: probability in [0, 1) that a packet is dropped on entry.
    queue_packets / queue_bytes: drop-tail limit on packets waiting behind the one being
    serialized (None = no limit of that kind).
    """

    rate_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    queue_packets: int | None = 1000
    queue_bytes: int | None = None
    reorder: bool = False

    def __post_init__(self) -> None:
        if self.rate_mbit is not None and not (self.rate_mbit > 0 and math.isfinite(self.rate_mbit)):
            raise LinkParamsError(f"rate_mbit must be > 0 (or None for unlimited), got {self.rate_mbit}")
        if not (self.delay_ms >= 0 and math.isfinite(self.delay_ms)):
            raise LinkParamsError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if not (self.jitter_ms >= 0 and math.isfinite(self.jitter_ms)):
            raise LinkParamsError(f"jitter_ms must be >= 0, got {self.jitter_ms}")
        if not (0.0 <= self.loss < 1.0):
            raise LinkParamsError(f"loss must be a fraction in [0, 1), got {self.loss}")
        if self.queue_packets is not None and self.queue_packets < 1:
            raise LinkParamsError(f"queue_packets must be >= 1, got {self.queue_packets}")
        if self.queue_bytes is not None and self.queue_bytes < 1:
            raise LinkParamsError(f"queue_bytes must be >= 1, got {self.queue_bytes}")

    def with_changes(self, **changes: object) -> LinkParams:
        """A copy with some fields changed (validated again); unknown names are errors."""
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                raise LinkParamsError(f"unknown link parameter {name!r}; known: {sorted(known)}")
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str, base: LinkParams | None = None) -> LinkParams:
        """Parse `rate=100,delay=10,jitter=1,loss=0.01,queue=100,queue_bytes=150000,reorder=1`.

        rate is Mbit/s unless suffixed kbit/mbit/gbit ("none" or "inf" = unlimited), delay
        and jitter are ms unless suffixed us/ms/s, loss is a fraction or a percentage ("1%"),
        queue counts packets ("none" = unlimited).
        Keys not given keep their value from `base` (defaults when None).
        """
        return (base or cls()).with_changes(**parse_changes(text))


def parse_changes(text: str) -> dict[str, object]:
    """The `key=value,...` form as {field name: value}, for changing only those fields of a
    link's current parameters (see LinkParams.parse for the keys and units)."""
    changes: dict[str, object] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise LinkParamsError(f"link parameter {item!r} is not key=value")
        parser = _PARSERS.get(key)
        if parser is None:
            raise LinkParamsError(
                f"unknown link parameter {key!r}; known: {', '.join(sorted(_PARSERS))}")
        field_name, convert = parser
        try:
            changes[field_name] = convert(value)
        except ValueError as error:
            raise LinkParamsError(f"link parameter {key}={value!r}: {error}") from None
    LinkParams().with_changes(**changes)  # validates ranges now, not at the change's time
    return changes

def _number(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _with_unit(value: str, units: dict[str, float], default_unit: str) -> float:
    """A number with an optional unit suffix, in the default unit ("10ms", "0.5s", "10")."""
    lowered = value.lower()
    for unit in sorted(units, key=len, reverse=True):
        if lowered.endswith(unit):
            return _number(lowered[: -len(unit)]) * units[unit]
    if lowered[-1:].isalpha():
        raise ValueError(f"unknown unit; use {default_unit} or one of {', '.join(units)}")
    return _number(lowered)


_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_RATE_UNITS = {"kbit": 0.001, "mbit": 1.0, "gbit": 1000.0}


def _milliseconds(value: str) -> float:
    return _with_unit(value, _TIME_UNITS, "ms")


def _optional_rate(value: str) -> float | None:
    if value.lower() in ("none", "inf", "unlimited"):
        return None
    return _with_unit(value, _RATE_UNITS, "mbit")


def _fraction(value: str) -> float:
    if value.endswith("%"):
        return _number(value[:-1]) / 100.0
    return _number(value)


def _optional_count(value: str) -> int | None:
    if value.lower() in ("none", "inf", "unlimited"):
        return None
    return int(value)


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be one of 1/0/true/false/yes/no/on/off")


_PARSERS: dict[str, tuple[str, Callable[[str], object]]] = {
    "rate": ("rate_mbit", _optional_rate),
    "delay": ("delay_ms", _milliseconds),
    "jitter": ("jitter_ms", _milliseconds),
    "loss": ("loss", _fraction),
    "queue": ("queue_packets", _optional_count),
    "queue_bytes": ("queue_bytes", _optional_count),
    "reorder": ("reorder", _flag),
}
