"""The one link vocabulary: typed link parameters with units in their names, their text form,
and the packet limits both link backends derive from them.

The topology data, the tc/nft shaping (testbed.net.shaping), the userspace delay stage
(testbed.inline) and the simulator (testbed.sim) all take this `LinkParams`. Mininet's TCLink
swallows misspelt keyword arguments and ignores out-of-range values; here every parameter is
validated where it enters, so a spec typo fails before anything is built, and an unknown key is
a SpecError naming it and listing the known ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from testbed.errors import SpecError

UNSHAPED_RATE_MBIT = 10_000.0  # what an unshaped link is taken to carry (far above a veth here)
MTU_BYTES = 1514  # a full Ethernet frame: the packet size the packet limits are counted in
MAX_QUEUE_PKTS = 1_000_000


@dataclass(frozen=True, slots=True)
class LinkParams:
    """What one link (direction) does to traffic.

    rate_mbit None means unshaped (veth speed). delay_ms is one way; each packet's delay is
    drawn uniformly from delay +/- jitter_ms, and packets keep their order unless `reorder`.
    loss_pct is the percentage dropped on entry. queue_pkts is the bottleneck queue length;
    None picks a BDP-sized queue (see `effective_queue_pkts`). queue_bytes additionally limits
    the queue in bytes (None: no byte limit; the simulator only, tc refuses it).
    """

    rate_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_pkts: int | None = None
    queue_bytes: int | None = None
    reorder: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> SpecError:
            return SpecError(f"link parameter {name}={getattr(self, name)!r}: {why}")

        for name in ("rate_mbit", "delay_ms", "jitter_ms", "loss_pct"):
            value = getattr(self, name)
            if value is None and name == "rate_mbit":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, "must be a number")
            if math.isnan(value) or math.isinf(value):
                raise bad(name, "must be finite")
        if self.rate_mbit is not None and not 0 < self.rate_mbit <= 100_000:
            raise bad("rate_mbit", "must be > 0 and <= 100000 (omit it for an unshaped link)")
        if self.delay_ms < 0 or self.delay_ms > 10_000:
            raise bad("delay_ms", "must be between 0 and 10000")
        if self.jitter_ms < 0 or self.jitter_ms > 10_000:
            raise bad("jitter_ms", "must be between 0 and 10000")
        if self.jitter_ms > 0 and self.jitter_ms > self.delay_ms:
            raise bad("jitter_ms", "must not exceed delay_ms (delay cannot go negative)")
        if not 0 <= self.loss_pct <= 100:
            raise bad("loss_pct", "must be between 0 and 100 (percent)")
        for name in ("queue_pkts", "queue_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= 1_000_000_000):
                raise bad(name, "must be an integer >= 1")
        if self.queue_pkts is not None and self.queue_pkts > MAX_QUEUE_PKTS:
            raise bad("queue_pkts", f"must be an integer between 1 and {MAX_QUEUE_PKTS}")
        if not isinstance(self.reorder, bool):
            raise bad("reorder", "must be true or false")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "link") -> LinkParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"{where}: unknown link parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    @classmethod
    def parse(cls, text: str, base: LinkParams | None = None) -> LinkParams:
        """The `key=value,...` text form (see `parse_changes`); keys not given keep their
        value from `base` (defaults when None)."""
        return (base or cls()).updated(parse_changes(text))

    def updated(self, changes: dict[str, Any], *, where: str = "link") -> LinkParams:
        """A copy with `changes` applied, validated like a new spec (the full state that a
        `tc change` sends again)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SpecError(
                f"{where}: unknown link parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def shaped(self) -> bool:
        return self.rate_mbit is not None

    def effective_queue_pkts(self, mtu: int = 1500) -> int:
        """The queue length used: explicit, or one bandwidth-delay product (RTT = 2 x delay,
        at least 20 ms) and never below 100 packets, a common router default."""
        if self.queue_pkts is not None:
            return self.queue_pkts
        if self.rate_mbit is None:
            return 1000
        rtt_s = max(2 * self.delay_ms, 20.0) / 1000
        bdp_pkts = self.rate_mbit * 1e6 / 8 * rtt_s / mtu
        return max(100, math.ceil(bdp_pkts))


def held_packets_limit(params: LinkParams) -> int:
    """How many packets a link's delay stage may hold: its queue plus what is in flight during
    the longest delay, limit = queue + ceil(rate x (delay + jitter) / MTU_BYTES).

    This is netem's `limit`, which counts the packets serving their delay as well as the queued
    ones (testbed.net.shaping sends it as the netem leaf's limit), and the userspace delay stage
    (testbed.inline) refuses frames beyond the same number, so the two backends drop alike. A
    fixed limit (the stage used to keep 1000 frames) drops a long fat link's in-flight data:
    600 ms at 50 Mbit/s is about 2500 frames in flight. An unshaped link counts at
    UNSHAPED_RATE_MBIT; the in-flight part is capped at MAX_QUEUE_PKTS.
    """
    rate = params.rate_mbit if params.rate_mbit is not None else UNSHAPED_RATE_MBIT
    in_flight = rate * 1e6 / 8 * (params.delay_ms + params.jitter_ms) / 1000 / MTU_BYTES
    return params.effective_queue_pkts() + min(MAX_QUEUE_PKTS, math.ceil(in_flight))


# --- the `key=value,...` text form (testbed stack sim --path, --at ...:set:...) ----------------

def parse_changes(text: str) -> dict[str, Any]:
    """`rate=100,delay=10,jitter=1,loss=1%,queue=100,queue_bytes=150000,reorder=1` as
    {LinkParams field: value}, for changing only those fields of a link's current parameters.

    The field names themselves (rate_mbit=100, delay_ms=10, loss_pct=1, queue_pkts=100) work
    too. The short keys take units: rate is Mbit/s unless suffixed kbit/mbit/gbit ("none" or
    "inf" = unshaped), delay and jitter are ms unless suffixed us/ms/s, loss is a fraction or a
    percentage ("0.01" or "1%"), queue counts packets ("none" = the BDP-sized default).
    """
    changes: dict[str, Any] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise SpecError(f"link parameter {item!r} is not key=value")
        parser = _PARSERS.get(key)
        if parser is None:
            raise SpecError(
                f"unknown link parameter {key!r} (known: {', '.join(sorted(_PARSERS))})")
        field_name, convert = parser
        try:
            changes[field_name] = convert(value)
        except ValueError as error:
            raise SpecError(f"link parameter {key}={value!r}: {error}") from None
    LinkParams().updated(changes)  # validates ranges now, not at the change's time
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


def _loss_as_percent(value: str) -> float:
    """A fraction ("0.01") or a percentage ("1%"), as a percentage."""
    if value.endswith("%"):
        return _number(value[:-1])
    fraction = _number(value)
    if not 0.0 <= fraction < 1.0:
        raise ValueError("loss must be a fraction in [0, 1) or a percentage such as 1%")
    return fraction * 100.0


def _optional_count(value: str) -> int | None:
    if value.lower() in ("none", "default"):
        return None
    return int(value)


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be one of 1/0/true/false/yes/no/on/off")


_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "rate": ("rate_mbit", _optional_rate),
    "rate_mbit": ("rate_mbit", _optional_rate),
    "delay": ("delay_ms", _milliseconds),
    "delay_ms": ("delay_ms", _milliseconds),
    "jitter": ("jitter_ms", _milliseconds),
    "jitter_ms": ("jitter_ms", _milliseconds),
    "loss": ("loss_pct", _loss_as_percent),
    "loss_pct": ("loss_pct", _number),
    "queue": ("queue_pkts", _optional_count),
    "queue_pkts": ("queue_pkts", _optional_count),
    "queue_bytes": ("queue_bytes", _optional_count),
    "reorder": ("reorder", _flag),
}
