"""The facts every table shows, read out of one result.json, in one place.

Tables, the matrix and `compare` all take their numbers from here, so a cell of the fallback
matrix, a line of a run summary and a row of a regression report can never disagree about what
a result file says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.net.topo import family_label


@dataclass(frozen=True)
class SubflowSummary:
    local: str
    remote: str
    bytes: int
    share: float  # of all bytes acknowledged on the connection's subflows, 0..1
    mbps: float  # this subflow's bytes over the connection's duration
    bytes_retrans: int
    rtt_ms: float | None
    open_at_end: bool | None

    @property
    def family(self) -> str:
        """"IPv4" or "IPv6", from the address (so results written before the field have it too)."""
        return family_label(self.local)

    @property
    def pair(self) -> str:
        """How tables name the subflow: its addresses and its family."""
        return f"{self.local} \u2192 {self.remote} ({self.family})"


@dataclass(frozen=True)
class ConnectionSummary:
    """One connection of a run: what the matrix calls a cell's content."""

    client_stack: str
    server_stack: str
    outcome: str
    goodput_mbps: float
    integrity: str
    bytes: int
    duration_s: float
    subflows: tuple[SubflowSummary, ...]
    evidence: tuple[str, ...]
    problems: tuple[str, ...] = ()
    integrity_verdict: dict[str, Any] = field(default_factory=dict)

    @property
    def carrying(self) -> int:
        """Subflows that carried data: the number the fallback table's readers care about."""
        return sum(1 for s in self.subflows if s.bytes > 0)


@dataclass(frozen=True)
class RunSummary:
    name: str
    description: str
    connections: tuple[ConnectionSummary, ...]
    expectations_passed: bool | None
    expectation_failures: tuple[str, ...]
    expect: dict[str, Any] = field(default_factory=dict)
    timeline: tuple[dict[str, Any], ...] = ()
    middleboxes: tuple[dict[str, Any], ...] = ()
    backends: dict[str, Any] = field(default_factory=dict)
    kernel: str = ""


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise TestbedError(f"{where}: result has no {key!r} (not a testbed result file?)")
    return data[key]


def summarize_connection(conn: dict[str, Any], where: str = "result") -> ConnectionSummary:
    subflows_raw = conn.get("subflows") or []
    total = sum(int(s.get("bytes", 0)) for s in subflows_raw)
    duration = float(conn.get("duration_s") or 0.0)
    subflows = tuple(
        SubflowSummary(
            local=str(s.get("local", "?")), remote=str(s.get("remote", "?")),
            bytes=int(s.get("bytes", 0)),
            share=(int(s.get("bytes", 0)) / total) if total else 0.0,
            mbps=(int(s.get("bytes", 0)) * 8 / duration / 1e6) if duration > 0 else 0.0,
            bytes_retrans=int(s.get("bytes_retrans", 0)),
            rtt_ms=s.get("rtt_ms"), open_at_end=s.get("open_at_end"),
        )
        for s in subflows_raw
    )
    return ConnectionSummary(
        client_stack=str(conn.get("client_stack", "?")), server_stack=str(conn.get("server_stack", "?")),
        outcome=str(_require(conn, "outcome", where)),
        goodput_mbps=float(_require(conn, "goodput_mbps", where)),
        integrity=str(conn.get("integrity", "?")), bytes=int(conn.get("bytes", 0)),
        duration_s=duration, subflows=subflows, evidence=tuple(conn.get("evidence") or ()),
        problems=tuple(conn.get("problems") or ()),
        integrity_verdict=dict(conn.get("integrity_verdict") or {}),
    )


def summarize_result(result: dict[str, Any], where: str = "result") -> RunSummary:
    connections = _require(result, "connections", where)
    if not isinstance(connections, list) or not connections:
        raise TestbedError(f"{where}: result has no connection")
    expectations = result.get("expectations") or {}
    return RunSummary(
        name=str(result.get("name", "")), description=str(result.get("description", "")),
        connections=tuple(summarize_connection(c, where) for c in connections),
        expectations_passed=expectations.get("passed"),
        expectation_failures=tuple(expectations.get("failures") or ()),
        expect=dict(result.get("expect") or {}),
        timeline=tuple(result.get("timeline") or ()),
        middleboxes=tuple(result.get("middleboxes") or ()),
        backends=dict((result.get("environment") or {}).get("backends") or {}),
        kernel=str((result.get("environment") or {}).get("kernel", "")),
    )


def describe_middleboxes(boxes: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> str:
    """'strip_options(what=mp_capable) on mb_a' for a row header or a summary line."""
    if not boxes:
        return "no middlebox"
    parts = []
    for box in boxes:
        params = box.get("params") or {}
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        parts.append(f"{box.get('type', '?')}({shown}) on {box.get('node', '?')}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    return str(value)


def relative(path: Path, base: Path) -> str:
    """A path as written into JSON and links: relative to the directory that holds it."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
