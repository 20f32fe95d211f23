"""`testbed matrix SPEC --out DIR`: every middlebox x every endpoint pairing, as one table.

A matrix spec (TOML, see experiments/fallback_matrix.toml) holds a base experiment (topology,
traffic, mptcp, optional timeline and capture), the pairings (client-server stacks, default the
four of kernel and python) and the middleboxes, one row each: a name, the box or chain of boxes
(node, type, params), optional traffic/mptcp overrides, an optional timeline (added to the
base's: e.g. a middlebox switched on mid-transfer), and the expected outcome per pairing.

Every cell becomes an ordinary experiment spec, validated up front (a bad cell is a one-line
SpecError, exit 2, before anything runs), and runs through testbed.runner into
DIR/cells/<row>/<pairing>/. A failing cell is recorded as an error and the matrix goes on.
matrix.json is rewritten atomically after every cell, so Ctrl-C (or kill -9) keeps what ran;
after Ctrl-C it is marked partial and the command exits 130. Exit 1 when any cell differs from
its expectation or could not run (an error differs from every expectation), 0 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from testbed import vm_pool
from testbed.errors import SpecError, TestbedError
from testbed.interrupts import latched_interrupts
from testbed.matrix_expect import expectation_met, parse_expectation
from testbed.matrix_family import (
    FAMILIES,
    with_family,
    without_ipv4_only_rows,
    without_needless_announcement,
    without_routed_rows,
)
from testbed.matrix_junit import matrix_junit
from testbed.matrix_outcome_only import (
    OutcomeOnly,
    apply_traffic,
    parse_outcome_only,
    traffic_overrides,
)
from testbed.matrix_pairing import Side, check_fetched, host_pairing, parse_sides
from testbed.matrix_routed import RoutedCell, RoutedRow, parse_routed_rows, routed_cells, run_routed_cell
from testbed.matrix_wire import WireReading, WireReadings
from testbed.net.capture import CAPTURE_LOG
from testbed.net.families import check_vm_endpoints
from testbed.performance import DEFAULT_DEGRADED_BELOW, mark_degraded, performance_facts
from testbed.progress import ProgressBar
from testbed.repeats import UNSTABLE, repeat_seed, summarize_repeats
from testbed.report.evidence import CAPTURE_FILE, WIRE_FILE, disagreements, load_wire, write_wire
from testbed.report.files import write_bytes_atomic, write_text_atomic
from testbed.report.summary import summarize_result
from testbed.report.tables import cell_text, matrix_html, matrix_markdown
from testbed.result import MATRIX_SCHEMA, RESULT_FILE, read_result
from testbed.results import TIMESERIES_FILE
from testbed.spec import (
    ExperimentSpec,
    check_against_topology,
    finite_number,
    parse_spec,
    read_toml,
)
from testbed.spec_compare import same_spec

MATRIX_FILE = "matrix.json"
MATRIX_BEFORE_RESUME = "matrix.before-resume.json"
MATRIX_MD = "matrix.md"
MATRIX_HTML = "matrix.html"
CELLS_DIR = "cells"
REPEAT_DIR = "repeat-"
RUN_LOG = "run.log"
DEFAULT_PAIRINGS = ("kernel-kernel", "python-kernel", "kernel-python", "python-python")
ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EXIT_DIFFERS = 1
EXIT_INTERRUPTED = 130

Runner = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class MatrixRow:
    name: str
    label: str
    middleboxes: tuple[dict[str, Any], ...]
    traffic: dict[str, Any]
    mptcp: dict[str, Any]
    expect: dict[str, str]  # pairing -> outcome
    timeline: tuple[dict[str, Any], ...] = ()  # after the base's (e.g. a middlebox switched on)
    outcome_only: bool = False  # judged on its class alone: runs [outcome_only].traffic


@dataclass(frozen=True)
class Cell:
    row: MatrixRow
    pairing: str
    spec: ExperimentSpec
    # what [outcome_only] changed in this cell's traffic (empty: the cell measures)
    outcome_only: dict[str, Any] = field(default_factory=dict)

    @property
    def expected(self) -> str | None:
        return self.row.expect.get(self.pairing)

    @property
    def key(self) -> str:
        return f"{self.row.name} \u00d7 {self.pairing}"

    def directory(self, out: Path) -> Path:
        return out / CELLS_DIR / self.row.name / self.pairing


@dataclass(frozen=True)
class MatrixSpec:
    name: str
    description: str
    seed: int
    pairings: tuple[str, ...]
    base: dict[str, Any]
    rows: tuple[MatrixRow, ...]
    raw: dict[str, Any]
    source: str
    cells: tuple[Cell, ...] = field(default=())
    repeat: int = 1  # runs per cell (--repeat), each with its own derived seed
    reference: str | None = None  # the row every cell's goodput is a fraction of (no middlebox)
    degraded_below: float = DEFAULT_DEGRADED_BELOW
    outcome_only: OutcomeOnly = field(default_factory=OutcomeOnly)
    routed: tuple[RoutedRow, ...] = ()  # proxy and balancer rows (testbed.matrix_routed)

    @property
    def routed_cells(self) -> tuple[RoutedCell, ...]:
        return routed_cells(self.routed, self.pairings)

    @property
    def total(self) -> int:
        return len(self.cells) + len(self.routed) * len(self.pairings)


def _check_table(data: Any, where: str, allowed: dict[str, type | tuple[type, ...]],
                 required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: must be a table")
    for key, value in data.items():
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
        types = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise SpecError(f"{where}.{key}: wrong type {type(value).__name__} ({value!r})")
    for key in required:
        if key not in data:
            raise SpecError(f"{where}: missing required key {key!r}")
    return data


def parse_pairing(pairing: Any, where: str) -> tuple[str, str]:
    """(client stack, server stack) of a pairing (testbed.matrix_pairing has the grammar)."""
    client, server = parse_sides(pairing, where)
    return client.stack, server.stack


def load_matrix_spec(path: str | Path, family: str | None = None) -> MatrixSpec:
    """A matrix spec from TOML; `family` runs its IPv4, IPv6 or dual variant (matrix_family)."""
    raw = read_toml(path, "matrix spec")
    if family is None:
        return parse_matrix_spec(raw, source=str(path))
    matrix = parse_matrix_spec(with_family(raw, family, str(path)), source=str(path))
    if family == "dual":
        matrix = dataclasses.replace(matrix, cells=tuple(
            without_needless_announcement(cell) for cell in matrix.cells))
    if family == "ipv6":
        matrix = without_ipv4_only_rows(matrix)
    return without_routed_rows(matrix, family) if family != "ipv4" else matrix


def parse_matrix_spec(raw: dict[str, Any], *, source: str = "<matrix>") -> MatrixSpec:
    """Validate a matrix spec and every cell it implies; any problem is one SpecError line."""
    top = _check_table(raw, source, {
        "name": str, "description": str, "seed": int, "pairings": list, "base": dict, "middleboxes": list,
        "reference": str, "degraded_below": (float, int), "stacks": dict, "rows_from": str,
        "row_overrides": dict, "outcome_only": dict, "routed": list,
    }, required=("base",))
    pairings = tuple(top.get("pairings", DEFAULT_PAIRINGS))
    if not pairings:
        raise SpecError(f"{source}: pairings is empty")
    for pairing in pairings:
        parse_pairing(pairing, f"{source}: pairings")
    if len(set(pairings)) != len(pairings):
        raise SpecError(f"{source}: pairings lists a pairing twice")
    base = _check_table(top["base"], f"{source}: [base]", {
        "topology": dict, "traffic": dict, "mptcp": dict, "timeline": list, "capture": dict,
    }, required=("topology", "traffic"))
    items = [*_included_rows(top, source), *((item, False) for item in top.get("middleboxes", []))]
    routed = parse_routed_rows(top.get("routed", []), source, pairings)
    if not items and not routed:
        raise SpecError(f"{source}: middleboxes is empty (one [[middleboxes]] table per row)")
    rows = []
    seen: set[str] = set()
    for index, (item, included) in enumerate(items):
        row = _parse_row(item, f"{source}: middleboxes[{index}]", pairings, included)
        if row.name in seen:
            raise SpecError(f"{source}: middleboxes[{index}]: row name {row.name!r} used twice")
        seen.add(row.name)
        rows.append(row)
    reference = top.get("reference", next((r.name for r in rows if not r.middleboxes), None))
    if reference is not None and reference not in seen:
        raise SpecError(f"{source}: reference {reference!r} is not a row name")
    for row in routed:
        if row.name in seen:
            raise SpecError(f"{source}: routed row name {row.name!r} used twice")
        seen.add(row.name)
    degraded_below = finite_number(top.get("degraded_below", DEFAULT_DEGRADED_BELOW),
                                   f"{source}: degraded_below")
    if not 0 <= degraded_below <= 1:
        raise SpecError(f"{source}: degraded_below must be a fraction in 0..1, got {degraded_below}")
    spec = MatrixSpec(name=top.get("name", Path(source).stem), description=top.get("description", ""),
                      seed=top.get("seed", 1), pairings=pairings, base=base, rows=tuple(rows),
                      raw=copy.deepcopy(raw), source=source, reference=reference,
                      degraded_below=degraded_below,
                      outcome_only=parse_outcome_only(top.get("outcome_only"), source), routed=routed)
    cells = tuple(_build_cell(spec, row, pairing) for row in spec.rows for pairing in pairings)
    _check_cells_against_topologies(cells)
    return dataclasses.replace(spec, cells=cells)


def _included_rows(top: dict[str, Any], source: str) -> list[tuple[Any, bool]]:
    """The rows of `rows_from` (a matrix spec, relative to this one), each with its
    `row_overrides.<name>` (traffic, mptcp) merged in: (row table, True) each."""
    overrides = _check_table(top.get("row_overrides", {}), f"{source}: row_overrides", {
        name: dict for name in top.get("row_overrides", {})})
    if "rows_from" not in top:
        if overrides:
            raise SpecError(f"{source}: row_overrides needs rows_from")
        return []
    included = read_toml(Path(source).parent / top["rows_from"], "matrix spec")
    items = included.get("middleboxes")
    if not isinstance(items, list) or not items:
        raise SpecError(f"{source}: rows_from {top['rows_from']!r} has no [[middleboxes]] rows")
    names = {item.get("name") for item in items if isinstance(item, dict)}
    rows = []
    for name, override in overrides.items():
        if name not in names:
            raise SpecError(f"{source}: row_overrides.{name}: no such row in {top['rows_from']}")
        _check_table(override, f"{source}: row_overrides.{name}", {"traffic": dict, "mptcp": dict})
    for item in items:
        item = copy.deepcopy(item)
        for key, value in overrides.get(item.get("name"), {}).items():
            item[key] = {**item.get(key, {}), **value}
        rows.append((item, True))
    return rows


def _parse_row(item: Any, where: str, pairings: tuple[str, ...], included: bool = False) -> MatrixRow:
    row = _check_table(item, where, {
        "name": str, "label": str, "node": str, "type": str, "params": dict, "chain": list,
        "traffic": dict, "mptcp": dict, "expect": dict, "timeline": list, "outcome_only": bool,
    }, required=("name",))
    name = row["name"]
    if not ROW_NAME.match(name):
        raise SpecError(f"{where}.name: {name!r} must be letters, digits, '_', '.', '-' "
                        "(it names a directory)")
    single = [k for k in ("node", "type", "params") if k in row]
    if "chain" in row and single:
        raise SpecError(f"{where}: give either node/type/params or chain = [...], not both")
    if "chain" in row:
        boxes = []
        for i, box in enumerate(row["chain"]):
            box = _check_table(box, f"{where}.chain[{i}]", {"node": str, "type": str, "params": dict},
                               required=("node", "type"))
            boxes.append({"node": box["node"], "type": box["type"], "params": dict(box.get("params", {}))})
    elif single:
        if "node" not in row or "type" not in row:
            raise SpecError(f"{where}: a middlebox needs both node and type (or chain = [] for no box)")
        boxes = [{"node": row["node"], "type": row["type"], "params": dict(row.get("params", {}))}]
    else:
        raise SpecError(f"{where}: no middlebox: give node and type, or chain = [...] (chain = [] for none)")
    # an included row may expect pairings this matrix does not run (they are left unused)
    named = {key: str for key in row.get("expect", {})} if included else {}
    expect = _check_table(row.get("expect", {}), f"{where}.expect",
                          {**named, **{p: str for p in (*pairings, "default")}})
    for pairing, expected in expect.items():
        if pairing != "default":
            parse_sides(pairing, f"{where}.expect")
        parse_expectation(expected, f"{where}.expect.{pairing}")
    # a pairing on fetched kernels expects what the same pairing on the host's kernel does,
    # unless the row names it: a version that behaves differently shows as a difference
    per_pairing = {p: e for p in pairings
                   if (e := expect.get(p, expect.get(host_pairing(p), expect.get("default")))) is not None}
    return MatrixRow(name=name, label=row.get("label", name), middleboxes=tuple(boxes),
                     traffic=dict(row.get("traffic", {})), mptcp=dict(row.get("mptcp", {})),
                     expect=per_pairing, timeline=tuple(copy.deepcopy(row.get("timeline", []))),
                     outcome_only=row.get("outcome_only", False))


def cell_raw_spec(matrix: MatrixSpec, row: MatrixRow, pairing: str) -> dict[str, Any]:
    """The experiment spec (as TOML would give it) of one cell: the base plus the row."""
    client, server = parse_sides(pairing, matrix.source)
    base = copy.deepcopy(matrix.base)
    raw: dict[str, Any] = {
        "name": f"{matrix.name}/{row.name}/{pairing}",
        "description": row.label,
        "seed": matrix.seed,
        "topology": base["topology"],
        "middleboxes": copy.deepcopy(list(row.middleboxes)),
        "endpoints": [endpoint_entry("server", server), endpoint_entry("client", client)],
        "traffic": {**base["traffic"], **row.traffic},
        "mptcp": {**base.get("mptcp", {}), **row.mptcp},
    }
    if "timeline" in base or row.timeline:
        raw["timeline"] = [*base.get("timeline", []), *copy.deepcopy(list(row.timeline))]
    if "capture" in base:
        raw["capture"] = base["capture"]
    if "stacks" in matrix.raw:  # the command stacks a pairing may name (command:NAME)
        raw["stacks"] = copy.deepcopy(matrix.raw["stacks"])
    expected = row.expect.get(pairing)
    accepted = parse_expectation(expected, f"{matrix.source}: row {row.name}") if expected else []
    if len(accepted) == 1:  # a cell that varies keeps its alternatives in the matrix only
        outcome, integrity = accepted[0]
        raw["expect"] = {"outcome": outcome, **({"integrity": integrity} if integrity else {})}
    # bytes and seconds exclude each other: a row giving one replaces the base's other
    if "bytes" in row.traffic:
        raw["traffic"].pop("seconds", None)
    if "seconds" in row.traffic:
        raw["traffic"].pop("bytes", None)
    raw["traffic"] = apply_traffic(raw["traffic"], outcome_only_changes(matrix, row, pairing))
    return raw


def outcome_only_changes(matrix: MatrixSpec, row: MatrixRow, pairing: str) -> dict[str, Any]:
    """What the spec's [outcome_only] table changes in one cell's traffic (testbed.matrix_outcome_only)."""
    expected = row.expect.get(pairing)
    accepted = parse_expectation(expected, f"{matrix.source}: row {row.name}") if expected else []
    client, _server = parse_sides(pairing, matrix.source)
    return traffic_overrides(matrix.outcome_only, row.outcome_only, accepted,
                             client_in_vm=client.kernel is not None)


def endpoint_entry(role: str, side: Side) -> dict[str, Any]:
    """A cell's [[endpoints]] table: `kernel = VERSION` for a kernel side on a fetched kernel."""
    return {"role": role, "stack": side.stack, **({"kernel": side.kernel} if side.kernel else {})}


def _build_cell(matrix: MatrixSpec, row: MatrixRow, pairing: str) -> Cell:
    where = f"{matrix.source}: row {row.name} \u00d7 {pairing}"
    return Cell(row=row, pairing=pairing, spec=parse_spec(cell_raw_spec(matrix, row, pairing), source=where),
                outcome_only=outcome_only_changes(matrix, row, pairing))


def _check_cells_against_topologies(cells: tuple[Cell, ...]) -> None:
    """Node names and middlebox parameters, checked for every cell before the first run."""
    from topologies import build_topology

    built: dict[str, Any] = {}
    for cell in cells:
        key = repr((cell.spec.topology, sorted(cell.spec.topology_params.items())))
        if key not in built:
            built[key] = build_topology(cell.spec.topology, cell.spec.topology_params)
        check_against_topology(cell.spec, built[key])
        check_vm_endpoints(cell.spec, built[key])  # before the first cell, not at its turn


# --- running ---------------------------------------------------------------------------------

def cell_record_from_result(cell_key: dict[str, Any], result: dict[str, Any], expected: str | None,
                            directory: str, wire: dict[str, Any] | None = None) -> dict[str, Any]:
    """A matrix cell from its result file (and wire.json when the run had a capture): the same
    numbers `testbed report` re-derives."""
    conn = summarize_result(result, where=directory).connections[0]
    record = {
        **cell_key,
        "status": "ok",
        "outcome": conn.outcome,
        "goodput_mbps": conn.goodput_mbps,
        "integrity": conn.integrity,
        "bytes": conn.bytes,
        "duration_s": conn.duration_s,
        "subflows_carrying": conn.carrying,
        "subflows_total": len(conn.subflows),
        "integrity_verdict": conn.integrity_verdict,
        "performance": performance_facts(result),
        **vm_facts(result),
        "expected": expected,
        "as_expected": None if expected is None else expectation_met(expected, conn.outcome,
                                                                      conn.integrity),
        "evidence": list(conn.evidence),
        "dir": directory,
    }
    if wire is not None:
        record["wire"] = list(wire.get("statements", []))
        conflicts = disagreements(conn.outcome, wire.get("counts") or {})
        if conflicts:
            record["wire_disagrees"] = conflicts
    return record


def vm_facts(result: dict[str, Any]) -> dict[str, Any]:
    """The kernel each kernel endpoint ran on and the roles whose VM guest was CPU-bound."""
    endpoints = result.get("endpoints") or {}
    kernels = {role: e["kernel"] for role, e in endpoints.items() if isinstance(e, dict) and e.get("kernel")}
    bound = [role for role, e in endpoints.items()
             if isinstance(e, dict) and (e.get("vm") or {}).get("cpu_bound")]
    return {**({"kernels": kernels} if kernels else {}), **({"cpu_bound": bound} if bound else {})}


def repeated_record(cell_key: dict[str, Any], records: list[dict[str, Any]], expected: str | None,
                    directory: str) -> dict[str, Any]:
    """The record of a repeated cell: its class if every repeat agrees, else `unstable` with the
    distribution; goodput is the median of the repeats with its interval."""
    ran = [r for r in records if r.get("status") == "ok"]
    compact = [{k: r.get(k) for k in ("seed", "status", "outcome", "integrity", "goodput_mbps",
                                       "as_expected", "error", "dir") if k in r} for r in records]
    if not ran:
        return {**error_record(cell_key, records[0].get("error", "run failed"), expected, directory),
                "repeats": compact}
    summary = summarize_repeats(ran)
    outcomes = {r["outcome"] for r in ran}
    integrities = {r["integrity"] for r in ran}
    stable = summary["stable"] and len(ran) == len(records)
    first = ran[0]
    return {
        **cell_key,
        "status": "ok",
        "outcome": first["outcome"] if len(outcomes) == 1 else UNSTABLE,
        "integrity": first["integrity"] if len(integrities) == 1 else UNSTABLE,
        "goodput_mbps": summary["goodput"]["median"],
        "goodput_interval": summary["goodput"],
        "distribution": summary["distribution"] | (
            {"error": len(records) - len(ran)} if len(ran) < len(records) else {}),
        "stable": stable,
        "bytes": first["bytes"],
        "duration_s": first["duration_s"],
        "subflows_carrying": first["subflows_carrying"],
        "subflows_total": first["subflows_total"],
        "expected": expected,
        "as_expected": None if expected is None else all(r.get("as_expected") for r in records),
        "evidence": list(first.get("evidence") or []),
        "integrity_verdict": first.get("integrity_verdict"),
        "performance": first.get("performance"),
        "repeats": compact,
        "dir": directory,
    }


def error_record(cell_key: dict[str, Any], message: str, expected: str | None,
                 directory: str) -> dict[str, Any]:
    return {**cell_key, "status": "error", "error": message, "expected": expected,
            "as_expected": None if expected is None else False, "dir": directory}


def _cell_key(cell: Cell) -> dict[str, Any]:
    client, server = parse_sides(cell.pairing, "pairing")
    kernels = {f"{role}_kernel": side.kernel for role, side in (("client", client), ("server", server))
               if side.kernel}
    return {"row": cell.row.name, "pairing": cell.pairing, "client_stack": client.stack,
            "server_stack": server.stack, **kernels}


def summarize_cells(cells: list[dict[str, Any]], total: int) -> dict[str, int]:
    return {
        "cells": total,
        "run": len(cells),
        "as_expected": sum(1 for c in cells if c.get("as_expected") is True),
        "differ": sum(1 for c in cells if c.get("as_expected") is False),
        "errors": sum(1 for c in cells if c.get("status") == "error"),
        "no_expectation": sum(1 for c in cells if c.get("as_expected") is None
                              and c.get("status") != "not-applicable"),
        "not_applicable": sum(1 for c in cells if c.get("status") == "not-applicable"),
        "not_run": total - len(cells),
    }


def matrix_document(matrix: MatrixSpec, cells: list[dict[str, Any]], *, partial: bool, interrupted: bool,
                    started_at: str, elapsed_s: float, environment: dict[str, Any] | None) -> dict[str, Any]:
    mark_degraded(cells, matrix.reference, matrix.degraded_below)
    summary = summarize_cells(cells, matrix.total)
    summary["degraded"] = sum(1 for c in cells if c.get("degraded"))
    summary["unstable"] = sum(1 for c in cells if c.get("stable") is False)
    return {
        "schema": MATRIX_SCHEMA,
        "kind": "matrix",
        "name": matrix.name,
        "description": matrix.description,
        "source": matrix.source,
        "spec": matrix.raw,
        "pairings": list(matrix.pairings),
        "rows": [*({"name": r.name, "label": r.label, "middleboxes": list(r.middleboxes), "expect": r.expect}
                   for r in matrix.rows), *(r.describe() for r in matrix.routed)],
        "cells": cells,
        "summary": summary,
        "reference": matrix.reference,
        "degraded_below": matrix.degraded_below,
        "partial": partial,
        "interrupted": interrupted,
        "repeat": matrix.repeat,
        "started_at": started_at,
        "elapsed_s": round(elapsed_s, 3),
        "environment": environment or {},
    }


def write_matrix_outputs(out: Path, doc: dict[str, Any]) -> None:
    """matrix.json, matrix.md and matrix.html; a failed write raises (results are never lost silently)."""
    write_text_atomic(out / MATRIX_FILE, json.dumps(doc, indent=2, default=str) + "\n")
    write_text_atomic(out / MATRIX_MD, matrix_markdown(doc))
    links = {(c["row"], c["pairing"]): f"{c['dir']}/{RESULT_FILE}" for c in doc["cells"] if c.get("dir")}
    write_text_atomic(out / MATRIX_HTML, matrix_html(doc, links))


def _reusable(cell: Cell, directory: Path) -> dict[str, Any] | None:
    """A finished result of exactly this cell's spec (for --resume), else None."""
    if not (directory / RESULT_FILE).exists():
        return None
    try:
        result = read_result(directory)
    except TestbedError:
        return None
    if result.get("interrupted"):
        return None  # a run stopped by Ctrl-C keeps its partial result, but it is not finished
    return result if same_spec(result.get("spec"), cell.spec) else None


def run_matrix(matrix: MatrixSpec, out: Path, *, runner: Runner | None = None, resume: bool = False,
               stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
               tty: bool | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run every cell (or reuse finished ones with resume), writing outputs after each; returns
    the matrix document. KeyboardInterrupt propagates after the partial document is written.
    With `jobs` > 1, the cells expected to end in a reset or stall first run up to `jobs` at a
    time in child processes (testbed.matrix_jobs), then the others one at a time, alone;
    `runner` must then be picklable."""
    from testbed.matrix_jobs import WaitingCells, waits

    background = None
    if jobs > 1:
        background = WaitingCells([cell for cell in matrix.cells if waits(cell)], out,
                                  slots=jobs, resume=resume, repeat=matrix.repeat,
                                  runner=runner)
    read_while_next_builds = runner is None and matrix.repeat == 1  # the runner takes before_traffic
    if runner is None:
        from testbed.runner import run_experiment as runner
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / MATRIX_FILE).exists():  # the document lists only the cells it has seen
        shutil.copyfile(out / MATRIX_FILE, out / MATRIX_BEFORE_RESUME)  # until it ends: keep it
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    started = clock()
    bar = ProgressBar(matrix.total, label="matrix", stream=stream, clock=clock, tty=tty)
    order = {cell.key: index for index, cell in enumerate([*matrix.cells, *matrix.routed_cells])}
    finished: list[tuple[int, dict[str, Any]]] = []
    records: list[dict[str, Any]] = []
    environment: dict[str, Any] | None = None

    def write(partial: bool, interrupted: bool) -> dict[str, Any]:
        doc = matrix_document(matrix, records, partial=partial, interrupted=interrupted,
                              started_at=started_at, elapsed_s=clock() - started, environment=environment)
        write_matrix_outputs(out, doc)
        return doc

    def add(cell: Cell | RoutedCell, record: dict[str, Any], result: dict[str, Any] | None) -> None:
        nonlocal environment
        if result is not None and environment is None:
            environment = result.get("environment")
        if cell.outcome_only:  # its goodput is not comparable with a cell that measures
            record = {**record, "outcome_only": cell.outcome_only}
        finished.append((order[cell.key], record))
        records[:] = [entry for _, entry in sorted(finished, key=lambda pair: pair[0])]
        differs = record.get("as_expected") is False
        mark = f"  \u2717 expected {record.get('expected')}" if differs else ""
        bar.advance(note=f"{cell.key}: {cell_text(record)}{mark}", free=bool(record.get("reused")))
        write(partial=len(records) < matrix.total, interrupted=False)

    readings = WireReadings(add) if read_while_next_builds else None
    try:
        with latched_interrupts() as caught, vm_pool.for_cells(c.spec for c in matrix.cells) as pool:
            if background is not None:  # the waiting cells together, before any cell that measures
                bar.status(f"{len(background.pending)} cells expected to reset or stall, "
                           f"{jobs} at a time")
                vm_pool.prepare(pool, background.pending, matrix.cells, bar.status, at_once=jobs)
                for done in background.drain():
                    add(*done)
            measuring = [c for c in matrix.cells if background is None or not waits(c)]
            for index, cell in enumerate(measuring):
                vm_pool.prepare(pool, [cell], measuring[index:], bar.status)
                if readings is None:
                    add(cell, *_run_cell(cell, out, runner, bar, resume, matrix.repeat))
                    continue
                record, result, finish = _run_only(cell, cell.directory(out), out, runner, bar, resume,
                                                   before_traffic=readings.finish)
                if finish is None:  # reused or failed: after the cell before, which may still be read
                    readings.finish()
                    add(cell, record, result)
                else:
                    readings.start(cell, record, result, finish)
            if readings is not None:
                readings.close()
            for routed_cell in matrix.routed_cells:  # the proxy and balancer drivers, one at a time
                bar.status(f"{routed_cell.key}: running testbed {routed_cell.row.kind}")
                add(routed_cell, *run_routed_cell(routed_cell, out, resume))
            if caught:  # raised where Python swallowed it: the interrupt still counts
                raise KeyboardInterrupt(f"signal {caught[0]}")
    except KeyboardInterrupt:
        if background is not None:
            background.stop()
        if readings is not None:
            readings.abandon()
        doc = write(partial=True, interrupted=True)
        bar.finish(f"matrix: interrupted after {len(records)} of {matrix.total} cells; partial results "
                   f"in {out / MATRIX_FILE}")
        raise MatrixInterrupted(doc) from None
    doc = write(partial=False, interrupted=False)
    summary = doc["summary"]
    bar.finish(f"matrix: {summary['as_expected']} of {summary['cells']} cells as expected, "
               f"{summary['differ']} differ ({summary['errors']} errors)")
    return doc


class MatrixInterrupted(Exception):
    """Ctrl-C during a matrix, after the partial document was written."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__("matrix interrupted")
        self.doc = doc


def _run_cell(cell: Cell, out: Path, runner: Runner, bar: ProgressBar, resume: bool,
              repeat: int = 1) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One cell: a single run in its directory, or `repeat` runs in repeat-<i>/ below it with
    derived seeds, summarised into one record (unstable when their classes differ)."""
    if repeat == 1:
        return _run_once(cell, cell.directory(out), out, runner, bar, resume)
    records: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    for index in range(repeat):
        seeded = dataclasses.replace(cell, spec=dataclasses.replace(
            cell.spec, seed=repeat_seed(cell.spec.seed, index)))
        bar.status(f"{cell.key}: repeat {index + 1}/{repeat}")
        record, result = _run_once(seeded, cell.directory(out) / f"{REPEAT_DIR}{index}", out, runner,
                                   bar, resume)
        records.append(record | {"seed": seeded.spec.seed})
        first = first or result
    return repeated_record(_cell_key(cell), records, cell.expected,
                           cell.directory(out).relative_to(out).as_posix()), first


def _run_once(cell: Cell, directory: Path, out: Path, runner: Runner, bar: ProgressBar,
              resume: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    record, result, finish = _run_only(cell, directory, out, runner, bar, resume)
    if finish is None:
        return record, result
    bar.status(f"{cell.key}: reading the capture")
    return finish(), result


def _run_only(cell: Cell, directory: Path, out: Path, runner: Runner, bar: ProgressBar, resume: bool,
              **run_options: Any) -> tuple[dict[str, Any], dict[str, Any] | None, WireReading | None]:
    """Run (or reuse) one cell: its record without the capture's evidence, its result, and what
    reads the capture and returns the whole record (None when there is nothing to read)."""
    rel = directory.relative_to(out).as_posix()
    key = _cell_key(cell)
    if resume:
        previous = _reusable(cell, directory)
        if previous is not None:
            record = cell_record_from_result(key, previous, cell.expected, rel, load_wire(directory))
            return record | {"reused": True}, previous, None
    directory.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, TIMESERIES_FILE, RUN_LOG, CAPTURE_FILE, CAPTURE_LOG, WIRE_FILE):
        (directory / stale).unlink(missing_ok=True)
    bar.status(f"{cell.key}: starting")
    with (directory / RUN_LOG).open("w") as log:
        def progress(message: str) -> None:
            log.write(message + "\n")
            log.flush()
            bar.status(f"{cell.key}: {message[:60]}")

        try:
            result = runner(cell.spec, directory, progress=progress, **run_options)
        except KeyboardInterrupt:
            log.write("interrupted\n")
            raise
        except TestbedError as exc:
            log.write(f"error: {exc.message}\n")
            return error_record(key, exc.message, cell.expected, rel), None, None
        except Exception as exc:  # a bug in a stack or endpoint must not end the matrix
            log.write(traceback.format_exc())
            return error_record(key, f"{type(exc).__name__}: {exc}", cell.expected, rel), None, None
    try:
        record = cell_record_from_result(key, result, cell.expected, rel)
    except TestbedError as exc:
        return error_record(key, f"unusable result: {exc.message}", cell.expected, rel), result, None

    def with_wire() -> dict[str, Any]:
        try:
            wire = write_wire(directory, result)
        except TestbedError as exc:  # the outcome stands; only this piece of evidence is missing
            return record | {"wire_error": exc.message}
        return cell_record_from_result(key, result, cell.expected, rel, wire)

    return record, result, with_wire


# --- command ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="matrix spec (TOML), e.g. experiments/fallback_matrix.toml")
    parser.add_argument("--out", required=True,
                        help="directory for matrix.json, matrix.md, matrix.html, cells/")
    parser.add_argument("--rows", help="comma-separated row names to run (default: all)")
    parser.add_argument("--pairings",
                        help="comma-separated pairings to run, e.g. kernel-kernel (default: the spec's)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse cells of DIR whose result.json comes from the same cell spec (a field "
                             "added since, at its default, counts as the same); DIR's matrix.json is kept "
                             "as matrix.before-resume.json")
    parser.add_argument("--junit", metavar="FILE",
                        help="also write JUnit XML: one test case per cell, failed where it differs")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run every cell N times with derived seeds; a cell whose classes "
                        "differ is shown unstable with the distribution (default 1)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="first run the cells expected to end in a reset or stall (they "
                             "mostly wait) N at a time in child processes, then the others one "
                             "at a time, alone (default 1: every cell in turn)")
    parser.add_argument("--family", choices=FAMILIES,
                        help="run the spec's IPv4, IPv6 or dual-stack variant (two_path becomes "
                             "dual_path: mb_a IPv4, mb_b IPv6); default: as the spec says")
    parser.add_argument("--check", action="store_true",
                        help="validate the spec and list the cells; run nothing")


def select(matrix: MatrixSpec, rows: str | None, pairings: str | None) -> MatrixSpec:
    """The matrix restricted to some rows and pairings; unknown names are a SpecError."""
    wanted_rows = ([r.strip() for r in rows.split(",")] if rows
                   else [r.name for r in (*matrix.rows, *matrix.routed)])
    wanted_pairings = [p.strip() for p in pairings.split(",")] if pairings else list(matrix.pairings)
    known_rows = {r.name for r in (*matrix.rows, *matrix.routed)}
    for name in wanted_rows:
        if name not in known_rows:
            raise SpecError(f"--rows: no row {name!r} in {matrix.source} "
                            f"(rows: {', '.join(sorted(known_rows))})")
    for pairing in wanted_pairings:
        if pairing not in matrix.pairings:
            raise SpecError(f"--pairings: {pairing!r} is not a pairing of {matrix.source} "
                            f"({', '.join(matrix.pairings)})")
    kept_rows = tuple(r for r in matrix.rows if r.name in wanted_rows)
    kept_pairings = tuple(p for p in matrix.pairings if p in wanted_pairings)
    cells = tuple(c for c in matrix.cells if c.row.name in wanted_rows and c.pairing in wanted_pairings)
    return dataclasses.replace(matrix, rows=kept_rows, pairings=kept_pairings, cells=cells,
                               routed=tuple(r for r in matrix.routed if r.name in wanted_rows))


def run(args: argparse.Namespace, *, runner: Runner | None = None) -> int:
    """The command; `runner` stands in for testbed.runner.run_experiment in tests."""
    matrix = select(load_matrix_spec(args.spec, getattr(args, "family", None)), args.rows,
                    args.pairings)
    if args.repeat < 1:
        raise SpecError(f"--repeat must be at least 1, got {args.repeat}")
    jobs = getattr(args, "jobs", 1)
    if jobs < 1:
        raise SpecError(f"--jobs must be at least 1, got {jobs}")
    matrix = dataclasses.replace(matrix, repeat=args.repeat)
    check_fetched(matrix.pairings)  # a version not fetched stops here, before any cell runs
    if args.check:
        for cell in (*matrix.cells, *matrix.routed_cells):
            said = f"expect {cell.expected or '-'}" if cell.spec is not None else "n/a (no such side)"
            print(f"{cell.row.name:<28} {cell.pairing:<26} {said}")
        print(f"{matrix.total} cells ({len(matrix.rows) + len(matrix.routed)} rows x {len(matrix.pairings)} "
              "pairings): spec ok")
        return 0
    out = Path(args.out)
    from testbed.runner import backends_detected_once, sigterm_as_interrupt

    try:
        # SIGTERM between two cells also keeps the partial matrix
        with sigterm_as_interrupt(), backends_detected_once():
            doc = run_matrix(matrix, out, runner=runner, resume=args.resume, jobs=jobs)
    except MatrixInterrupted as interrupted:
        if args.junit:
            write_bytes_atomic(Path(args.junit), matrix_junit(interrupted.doc))
        return EXIT_INTERRUPTED
    if args.junit:
        write_bytes_atomic(Path(args.junit), matrix_junit(doc))
    return report_outcome(doc, out)


def report_outcome(doc: dict[str, Any], out: Path) -> int:
    """The summary on stdout and the exit status of a finished matrix (also `testbed remote run`'s)."""
    print(f"{doc['summary']['as_expected']}/{doc['summary']['cells']} cells as expected; "
          f"tables in {out / MATRIX_MD} and {out / MATRIX_HTML}")
    for cell in doc["cells"]:
        if cell.get("as_expected") is False:
            print(f"  differs: {cell['row']} \u00d7 {cell['pairing']}: {cell_text(cell)} "
                  f"(expected {cell['expected']})")
    for cell in doc["cells"]:
        if cell.get("status") == "error" and cell.get("as_expected") is None:
            print(f"  error: {cell['row']} \u00d7 {cell['pairing']}: {cell.get('error')}")
    # a cell that could not run is never a pass, with or without an expectation
    return EXIT_DIFFERS if doc["summary"]["differ"] or doc["summary"]["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m` entry: the `testbed matrix` command, through the one CLI error handler."""
    from testbed.cli import main as cli_main

    return cli_main(["matrix", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
