"""Link traces: a link's rate (and delay, loss) over time, read from a file and played live.

Two formats:

- **Mahimahi** (cellular-network research's format): one line per delivery opportunity, an
  integer millisecond timestamp; each line lets one MTU-sized (1500-byte) packet through at
  that millisecond, and the file repeats when it ends (its period is the last timestamp).
  Opportunities are counted in bins of `bin_ms` (100 ms by default) and each bin becomes a
  rate: count x 1500 x 8 / bin. 100 ms because it is the testbed's coarsest sample bin (so
  the measured goodput can be compared bin by bin), it keeps the quantisation error at 2
  Mbit/s near 6 % (16 packets a bin) and it is at most ten live changes a second per link
  (a few netlink calls each); finer bins would follow noise, not the channel.
- **CSV**: `time_s,rate_mbit,delay_ms,loss_pct`, one row per change (a header row with those
  names and `#` comments are allowed); an empty field leaves that parameter unchanged. A row
  holds until the next one; the last holds to the end (no repetition).

A rate of 0 is an outage, played one of two ways (`outage`): "down" takes the link down at
both ends (the path is absent, as a wifi network out of range: packets are lost, routes
go, subflows time out) and brings it back up with the next non-zero rate; "hold" sets a
tiny rate (HOLD_RATE_MBIT) and a queue of HOLD_QUEUE_PKTS so packets wait, as they do at a
base station with no delivery opportunity, and leave in a burst when the rate returns (the
queue then goes back to its default, one bandwidth-delay product: a link's own queue_pkts is
not restored). A queue sized for the tiny rate would drop them, and the sender's
retransmission timeout would back off for seconds after the gap. Not lower than 0.1 Mbit/s:
HTB carries a class's token debt across a rate change, and one packet sent at 0.01 Mbit/s is
1.2 s of debt (measured: a TCP transfer resumed 3.7 s after a 1 s hold ended, against at
once at 0.1 Mbit/s). Mahimahi traces default to "hold" (a bin without opportunities is a
wait, not a loss), CSV traces to "down".

The played trace is a list of ordinary timeline events (`play`, expanded by
testbed.spec.trace_timeline): the runner applies them through the same live-change path as a
spec's `[[timeline]]` entries (Network.change_link / set_link_up), so the HTB/TBF rate, the
userspace delay stage, the nft loss rule and netem (where the kernel has it) all follow it.
A trace shapes both directions of its link alike (Mahimahi keeps an uplink and a downlink
trace; here a link follows one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import SpecError

MTU_BYTES = 1500
DEFAULT_BIN_MS = 100
HOLD_RATE_MBIT = 0.1  # "hold" outage: about eight 1500-byte packets a second
HOLD_QUEUE_PKTS = 1000  # packets a "hold" keeps waiting (a BDP queue at HOLD_RATE_MBIT is ~1)
FORMATS = ("mahimahi", "csv")
OUTAGES = ("down", "hold")
CSV_COLUMNS = ("time_s", "rate_mbit", "delay_ms", "loss_pct")
MAX_TRACE_BYTES = 64 << 20  # about 20 min of a 100 Mbit/s Mahimahi trace (3 MB a minute)
MAX_EVENTS = 100_000  # a trace played longer than this many changes is a mistake
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TracePoint:
    """From `at_s` on (seconds into one pass), the link's parameters; None = unchanged."""

    at_s: float
    rate_mbit: float | None = None
    delay_ms: float | None = None
    loss_pct: float | None = None


@dataclass(frozen=True)
class LinkTrace:
    """A parsed trace: its points in time order and, for a repeating trace, its period."""

    source: str
    format: str
    points: tuple[TracePoint, ...]
    period_s: float | None  # None: played once, the last point holds

    def rate_at(self, t_s: float) -> float | None:
        """The trace's rate at `t_s` seconds of play (repetition included): what a measured
        goodput is compared with."""
        if self.period_s is not None:
            t_s = t_s % self.period_s
        rate = None
        for point in self.points:
            if point.at_s > t_s:
                break
            if point.rate_mbit is not None:
                rate = point.rate_mbit
        return rate


def trace_format(path: Path, declared: str = "auto") -> str:
    """The format of a trace file: as declared, else by suffix (.csv is CSV, anything else
    Mahimahi, whose files are conventionally named *.up, *.down or *.trace)."""
    if declared != "auto":
        if declared not in FORMATS:
            raise SpecError(f"{path}: unknown trace format {declared!r} (known: auto, "
                            f"{', '.join(FORMATS)})")
        return declared
    return "csv" if path.suffix.lower() == ".csv" else "mahimahi"


def read_trace(path: str | Path, *, format: str = "auto", bin_ms: int = DEFAULT_BIN_MS) -> LinkTrace:
    """Read and check a trace file; a bad one is a one-line SpecError naming file and line."""
    path = Path(path)
    kind = trace_format(path, format)
    if path.exists() and not path.is_file():
        raise SpecError(f"{path}: not a regular file (a trace is a text file: Mahimahi or CSV)")
    if path.is_file() and path.stat().st_size > MAX_TRACE_BYTES:
        raise SpecError(f"{path}: {path.stat().st_size} bytes, more than a trace's {MAX_TRACE_BYTES}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such trace file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read trace: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (a trace is text: Mahimahi or CSV)") from None
    if kind == "csv":
        return parse_csv(text, str(path))
    return parse_mahimahi(text, str(path), bin_ms=bin_ms)


def parse_mahimahi(text: str, source: str, *, bin_ms: int = DEFAULT_BIN_MS) -> LinkTrace:
    """Delivery opportunities (ms timestamps, non-decreasing) as a rate per `bin_ms` bin."""
    if not 1 <= bin_ms <= 10_000:
        raise SpecError(f"{source}: bin_ms must be 1..10000, got {bin_ms}")
    stamps: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        field = line.strip()
        if not field:
            continue
        try:
            stamp = int(field)
        except ValueError:
            raise SpecError(f"{source}:{number}: {field[:40]!r} is not an integer millisecond "
                            f"timestamp (Mahimahi: one per line)") from None
        if stamp < 0:
            raise SpecError(f"{source}:{number}: timestamp {stamp} is negative")
        if stamps and stamp < stamps[-1]:
            raise SpecError(f"{source}:{number}: timestamp {stamp} goes back in time "
                            f"(previous line: {stamps[-1]}); timestamps must not decrease")
        stamps.append(stamp)
    if not stamps:
        raise SpecError(f"{source}: empty trace (Mahimahi: one millisecond timestamp per line)")
    period_ms = stamps[-1]
    if period_ms <= 0:
        raise SpecError(f"{source}:{len(text.splitlines())}: the last timestamp is the trace's "
                        f"period and must be > 0, got {period_ms}")
    bins = math.ceil(period_ms / bin_ms)
    counts = [0] * bins
    for stamp in stamps:
        counts[min(stamp // bin_ms, bins - 1)] += 1
    points = []
    for index, count in enumerate(counts):
        width_ms = min(bin_ms, period_ms - index * bin_ms)
        rate = count * MTU_BYTES * 8 / (width_ms / 1000) / 1e6
        points.append(TracePoint(index * bin_ms / 1000, rate_mbit=round(rate, 3)))
    return LinkTrace(source, "mahimahi", tuple(points), period_ms / 1000)


def parse_csv(text: str, source: str) -> LinkTrace:
    """Rows of time_s,rate_mbit,delay_ms,loss_pct; empty fields leave a parameter unchanged."""
    points: list[TracePoint] = []
    for number, line in enumerate(text.splitlines(), start=1):
        row = line.split("#", 1)[0].strip()
        if not row:
            continue
        fields = [f.strip() for f in row.split(",")]
        if tuple(fields) == CSV_COLUMNS[:len(fields)] and not points:
            continue  # the header row
        if len(fields) > len(CSV_COLUMNS) or not fields[0]:
            raise SpecError(f"{source}:{number}: expected time_s,rate_mbit,delay_ms,loss_pct "
                            f"(time required, others may be empty), got {row[:60]!r}")
        values: list[float | None] = []
        for name, field in zip(CSV_COLUMNS, fields + [""] * (len(CSV_COLUMNS) - len(fields)), strict=True):
            values.append(_csv_number(field, name, source, number))
        at_s, rate, delay, loss = values
        assert at_s is not None
        if points and at_s <= points[-1].at_s:
            raise SpecError(f"{source}:{number}: time_s {at_s:g} is not after the previous "
                            f"row's {points[-1].at_s:g}; rows must be in increasing time")
        if rate is not None and rate > 100_000:
            raise SpecError(f"{source}:{number}: rate_mbit {rate:g} is above 100000")
        if loss is not None and loss > 100:
            raise SpecError(f"{source}:{number}: loss_pct {loss:g} is above 100")
        points.append(TracePoint(at_s, rate, delay, loss))
    if not points:
        raise SpecError(f"{source}: no rows (CSV trace: time_s,rate_mbit,delay_ms,loss_pct)")
    return LinkTrace(source, "csv", tuple(points), None)


def _csv_number(field: str, name: str, source: str, number: int) -> float | None:
    if not field:
        return None
    try:
        value = float(field)
    except ValueError:
        raise SpecError(f"{source}:{number}: {name} {field[:30]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SpecError(f"{source}:{number}: {name} must be a finite number >= 0, got {field!r}")
    return value


@dataclass(frozen=True)
class TraceChange:
    """One live change a played trace makes: parameters to set and/or the link up or down."""

    at_s: float
    set: dict[str, Any]
    up: bool | None = None


def play(trace: LinkTrace, *, until_s: float, start_s: float = 0.0, time_scale: float = 1.0,
         outage: str | None = None) -> list[TraceChange]:
    """The changes that play `trace` from `start_s` (spec time) until `until_s`, time
    stretched by `time_scale` (0.1 plays ten times faster), repeating a periodic trace; only
    real changes are kept (a bin with the previous bin's rate sets nothing)."""
    outage = outage or ("hold" if trace.format == "mahimahi" else "down")
    if outage not in OUTAGES:
        raise SpecError(f"{trace.source}: outage {outage!r} is not one of {', '.join(OUTAGES)}")
    changes: list[TraceChange] = []
    state: dict[str, float | None] = {}
    up = True
    holding = False
    offset = 0.0
    while True:
        for point in trace.points:
            at = start_s + (offset + point.at_s) * time_scale
            if at >= until_s:
                return changes
            wanted = {k: v for k, v in (("rate_mbit", point.rate_mbit),
                                        ("delay_ms", point.delay_ms),
                                        ("loss_pct", point.loss_pct)) if v is not None}
            going_down = wanted.get("rate_mbit") == 0 and outage == "down"
            if wanted.get("rate_mbit") == 0 and outage == "hold":
                wanted["rate_mbit"] = HOLD_RATE_MBIT
                wanted["queue_pkts"] = HOLD_QUEUE_PKTS
                holding = True
            elif holding and wanted.get("rate_mbit"):
                wanted["queue_pkts"] = None
                holding = False
            if going_down:
                del wanted["rate_mbit"]
            new = {k: v for k, v in wanted.items() if state.get(k) != v}
            state.update(new)
            next_up = False if going_down else (True if "rate_mbit" in wanted else up)
            if not new and next_up == up:
                continue
            changes.append(TraceChange(round(at, 4), new, None if next_up == up else next_up))
            up = next_up
            if len(changes) > MAX_EVENTS:
                raise SpecError(f"{trace.source}: playing it until {until_s:g} s makes more than "
                                f"{MAX_EVENTS} changes; use a larger bin_ms or a shorter run")
        if trace.period_s is None:
            return changes
        offset += trace.period_s


def resolve_trace_path(name: str, spec_source: str) -> Path:
    """A spec's trace file: absolute, or relative to the spec's directory, the current
    directory or the project (so `traces/subway_wifi.csv` works from anywhere)."""
    path = Path(name)
    if path.is_absolute():
        return path
    candidates = [Path(spec_source).parent / path, Path.cwd() / path, PROJECT_ROOT / path]
    return next((c for c in candidates if c.exists()), candidates[-1])
