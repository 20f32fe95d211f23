"""Matrix rows whose box is an MPTCP-aware routed node: the converter proxy (testbed.proxy) and
the layer-4 load balancer (testbed.balancer).

A catalogue row is a chain of inline boxes on the base topology. These two are nodes of their
own topologies with their own drivers, so their rows name a driver spec instead of a chain:

    [[routed]]
    name = "proxy"
    label = "converter proxy: MPTCP to the proxy, plain TCP on to a legacy server"
    spec = "proxy/goodput_kernel.toml"        # relative to the matrix spec
    traffic = { repeats = 1 }                 # proxy: repeats, bytes; balancer: connections, bytes
    expect = { default = "mptcp" }

A pairing keeps its meaning, client stack -> server stack, where the server is the stack that
terminates the client's MPTCP connection: the proxy for a proxy row (the kernel relay or the
python-stack relay; the legacy server behind it speaks plain TCP either way), the backends for a
balancer row. Both drivers run the host kernel's MPTCP or the python stack at either end; a
pairing with another side (a fetched kernel, tcp, a command stack) is shown as not applicable,
with the reason.

A cell runs the driver's connections; its class is the one furthest from MPTCP that any of them
had (the counts of every class are kept with the cell), and its integrity the worst any had:
each connection's stream is the seeded payload, so a short one is `truncated` when it is a
correct prefix and `corrupted` otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.endpoints.payload import expected_digest
from testbed.errors import SpecError, TestbedError
from testbed.matrix_expect import expectation_met, parse_expectation
from testbed.matrix_pairing import parse_sides
from testbed.net.topo import Topology
from testbed.result import RESULT_FILE
from testbed.spec import read_toml
from testbed.spec_compare import same_spec

KINDS = {"proxy": "proxy", "balancer": "lb"}  # the spec's table -> the row's kind
ROW_KEYS = {"name", "label", "spec", "traffic", "expect"}
TRAFFIC_KEYS = {"proxy": {"repeats": "repeats", "bytes": "byte_count"},
                "lb": {"connections": "connections", "bytes": "byte_count"}}
STACKS = ("kernel", "python")
# the worst integrity a connection had is the cell's: most severe first
SEVERITY = ("corrupted", "unknown", "truncated", "ok")
# the drivers' connection classes (run_class, connection_class), furthest from MPTCP first
WORST_FIRST = ("reset", "fallback-syn", "subflow-rejected", "mptcp")


@dataclass(frozen=True)
class RoutedRow:
    name: str
    label: str
    kind: str  # "proxy" | "lb"
    spec_path: str
    driver_spec: Any  # ProxySpec | LbSpec, with the row's traffic
    topology: Topology
    expect: dict[str, str]  # pairing -> class

    def describe(self) -> dict[str, Any]:
        """The row as matrix.json's rows list it (its box named like a middlebox)."""
        spec = self.driver_spec
        if self.kind == "proxy":
            box = {"node": spec.node, "type": "converter_proxy", "params": {}}
        else:
            box = {"node": spec.node, "type": "l4_lb", "params": {"variant": spec.variant,
                                                                    "remedy": spec.remedy}}
        return {"name": self.name, "label": self.label, "middleboxes": [box], "expect": self.expect,
                "routed": {"kind": self.kind, "spec": self.spec_path}}


@dataclass(frozen=True)
class RoutedCell:
    row: RoutedRow
    pairing: str
    spec: Any  # the driver spec this pairing runs; None: not applicable
    reason: str = ""  # why the pairing does not apply
    outcome_only: dict[str, Any] = field(default_factory=dict)  # never shortened

    @property
    def expected(self) -> str | None:
        return self.row.expect.get(self.pairing) if self.spec is not None else None

    @property
    def key(self) -> str:
        return f"{self.row.name} \u00d7 {self.pairing}"

    def directory(self, out: Path) -> Path:
        return out / "cells" / self.row.name / self.pairing


def parse_routed_rows(items: Any, source: str, pairings: tuple[str, ...]) -> tuple[RoutedRow, ...]:
    """The `[[routed]]` rows, each driver spec loaded and checked (relative to the matrix spec)."""
    from testbed.matrix import ROW_NAME

    if not isinstance(items, list):
        raise SpecError(f"{source}: routed must be a list of [[routed]] tables")
    rows = []
    for index, item in enumerate(items):
        where = f"{source}: routed[{index}]"
        if not isinstance(item, dict):
            raise SpecError(f"{where} must be a table")
        unknown = sorted(set(item) - ROW_KEYS)
        if unknown:
            raise SpecError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(ROW_KEYS))})")
        for key in ("name", "spec"):
            if not isinstance(item.get(key), str):
                raise SpecError(f"{where}: {key} = \"...\" is required")
        if not ROW_NAME.match(item["name"]):
            raise SpecError(f"{where}.name: {item['name']!r} must be letters, digits, '_', '.', '-' "
                            "(it names a directory)")
        path = Path(source).parent / item["spec"]
        raw = read_toml(path, "proxy or balancer spec")
        kinds = [KINDS[table] for table in KINDS if table in raw]
        if len(kinds) != 1:
            raise SpecError(f"{where}: spec {item['spec']!r} is neither a proxy spec ([proxy]) nor a "
                            "balancer spec ([balancer]) (see experiments/proxy and experiments/lb)")
        kind = kinds[0]
        driver_spec, topology = _load(kind, raw, str(path))
        if kind == "proxy" and driver_spec.variant == "none":
            raise SpecError(f"{where}: spec {item['spec']!r} has variant = \"none\" (no proxy): a row "
                            "needs a proxy, and the pairing's server side chooses which")
        driver_spec = _with_traffic(driver_spec, kind, item.get("traffic", {}), where)
        expect = item.get("expect", {})
        if not isinstance(expect, dict) or not all(isinstance(v, str) for v in expect.values()):
            raise SpecError(f"{where}: expect must be a table of pairing = \"class\"")
        for pairing, expected in expect.items():
            if pairing != "default" and pairing not in pairings:
                raise SpecError(f"{where}.expect: {pairing!r} is not a pairing of this matrix")
            parse_expectation(expected, f"{where}.expect.{pairing}")
        per_pairing = {p: e for p in pairings if (e := expect.get(p, expect.get("default"))) is not None}
        rows.append(RoutedRow(name=item["name"], label=str(item.get("label", item["name"])), kind=kind,
                              spec_path=item["spec"], driver_spec=driver_spec, topology=topology,
                              expect=per_pairing))
    return tuple(rows)


def _load(kind: str, raw: dict[str, Any], where: str) -> tuple[Any, Topology]:
    if kind == "proxy":
        from testbed.proxy.spec import parse_spec as parse_proxy

        return parse_proxy(raw, where)
    from testbed.balancer.experiment import parse_spec as parse_lb

    return parse_lb(raw, where)


def _with_traffic(spec: Any, kind: str, traffic: Any, where: str) -> Any:
    if not isinstance(traffic, dict):
        raise SpecError(f"{where}: traffic must be a table")
    known = TRAFFIC_KEYS[kind]
    changes = {}
    for key, value in traffic.items():
        if key not in known:
            raise SpecError(f"{where}: traffic.{key}: a {kind} row takes {', '.join(sorted(known))}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{where}: traffic.{key} = {value!r} must be an integer >= 1")
        changes[known[key]] = value
    return dataclasses.replace(spec, **changes)


def routed_cells(rows: Iterable[RoutedRow], pairings: Iterable[str]) -> tuple[RoutedCell, ...]:
    """One cell per row and pairing; a pairing the row's driver cannot run has no spec."""
    cells = []
    for row in rows:
        for pairing in pairings:
            client, server = parse_sides(pairing, "pairing")
            sides = (client, server)
            spec, reason = None, ""
            if not all(s.stack in STACKS and s.kernel is None for s in sides):
                reason = (f"the {'balancer' if row.kind == 'lb' else 'proxy'}'s ends are the host "
                          "kernel's MPTCP or the python stack")
            elif row.kind == "lb":
                spec = dataclasses.replace(row.driver_spec, client_stack=client.stack,
                                           backend_stack=server.stack)
            else:
                spec = dataclasses.replace(row.driver_spec, client_stack=client.stack,
                                           variant=server.stack)
            cells.append(RoutedCell(row=row, pairing=pairing, spec=spec, reason=reason))
    return tuple(cells)


# --- one cell ----------------------------------------------------------------------------------

def connection_integrity(record: dict[str, Any], seed: int, byte_count: int) -> str:
    """What one connection delivered: the seeded payload, a correct prefix of it, or other bytes."""
    if record.get("intact"):
        return "ok"
    got, digest = record.get("bytes"), record.get("sha256")
    if not isinstance(got, int) or not isinstance(digest, str):
        return "unknown"  # the receiver never said what it got
    if got < byte_count and digest == expected_digest(seed, got):
        return "truncated"
    return "corrupted"


def cell_class(classes: Counter[str]) -> str:
    """The class furthest from MPTCP that any connection had, without the subflow count
    ("mptcp/2" -> "mptcp"): a row says what can go wrong, and the counts say how often."""
    seen = {name.split("/")[0] for name, count in classes.items() if count}
    return next((name for name in WORST_FIRST if name in seen), "reset")


def routed_record(cell: RoutedCell, result: dict[str, Any], directory: str) -> dict[str, Any]:
    """A matrix cell from the driver's result.json."""
    spec = cell.spec
    if cell.row.kind == "proxy":
        summary, records = result["summary"], result["runs"]
        seeds = [spec.seed + int(r.get("index", i)) for i, r in enumerate(records)]
        goodput = summary.get("median_goodput_mbit")
        duration = summary.get("median_duration_s")
    else:
        summary, records = result["counts"], result["connections"]
        seeds = [int(r.get("seed", spec.seed + i)) for i, r in enumerate(records)]
        goodput, duration = None, summary.get("median_duration_s")
    classes = Counter(summary["outcome_classes"])
    integrities = Counter(connection_integrity(r, seed, spec.byte_count)
                          for r, seed in zip(records, seeds, strict=True))
    outcome = cell_class(classes)
    integrity = next(name for name in SEVERITY if integrities.get(name) or name == "ok")
    evidence = [f"{len(records)} connections: " + " · ".join(f"{k} {n}" for k, n in sorted(classes.items())),
                "integrity: " + " · ".join(f"{k} {n}" for k, n in sorted(integrities.items()))]
    if cell.row.kind == "lb" and summary.get("joins_refused") is None:
        evidence.append("joins refused at the backends: not counted (a python backend's refusal "
                        "belongs to no connection)")
    elif cell.row.kind == "lb":
        evidence.append(f"joins refused at the backends (MPJoinNoTokenFound): {summary['joins_refused']}; "
                        f"established: {summary['joins_established']}")
    elif summary.get("median_stall_after_cut_s") is not None:
        evidence.append(f"median stall after the path cut: {summary['median_stall_after_cut_s']} s")
    errors = summary.get("errors")  # the proxy lists them; the balancer counts them
    if isinstance(errors, list):
        evidence += [f"error: {e}" for e in errors[:3]]
    expected = cell.expected
    in_class = sum(n for name, n in classes.items() if name.split("/")[0] == outcome)
    return {**cell_key(cell), "status": "ok", "outcome": outcome, "integrity": integrity,
            "goodput_mbps": goodput, "duration_s": duration,
            "connections": len(records), "connections_in_class": in_class,
            "bytes": sum(int(r.get("bytes") or 0) for r in records),
            "expected": expected,
            "as_expected": None if expected is None else expectation_met(expected, outcome, integrity),
            "evidence": evidence, "dir": directory,
            "routed": {"kind": cell.row.kind, "spec": cell.row.spec_path,
                       "outcome_classes": dict(sorted(classes.items())),
                       "integrity_counts": dict(sorted(integrities.items()))}}


def cell_key(cell: RoutedCell) -> dict[str, Any]:
    client, server = parse_sides(cell.pairing, "pairing")
    return {"row": cell.row.name, "pairing": cell.pairing, "client_stack": client.stack,
            "server_stack": server.stack}


def run_routed_cell(cell: RoutedCell, out: Path,
                    resume: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run one cell's driver in its directory (or reuse its result with resume); a failure is an
    error cell, never the end of the matrix."""
    directory = cell.directory(out)
    rel = directory.relative_to(out).as_posix()
    if cell.spec is None:
        return {**cell_key(cell), "status": "not-applicable", "reason": cell.reason, "expected": None,
                "as_expected": None, "evidence": [cell.reason], "dir": rel}, None
    if resume and (directory / RESULT_FILE).is_file():
        try:
            previous = json.loads((directory / RESULT_FILE).read_text())
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict) and same_spec(previous.get("spec"), cell.spec):
            return routed_record(cell, previous, rel) | {"reused": True}, None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULT_FILE).unlink(missing_ok=True)
    try:
        if cell.row.kind == "proxy":
            from testbed.proxy.experiment import run_proxy

            result = run_proxy(cell.spec, cell.row.topology, directory)
        else:
            from testbed.balancer.experiment import run_lb

            result = run_lb(cell.spec, cell.row.topology, directory)
    except TestbedError as exc:
        message = exc.message
    except Exception as exc:  # a bug in a driver must not end the matrix
        (directory / "run.log").write_text(traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}"
    else:
        return routed_record(cell, result, rel), None
    expected = cell.expected
    return {**cell_key(cell), "status": "error", "error": message, "expected": expected,
            "as_expected": None if expected is None else False, "dir": rel}, None
