"""`testbed survey --targets kernel,python --out DIR`: probe and measure each target, then write
DIR/survey.json, DIR/survey.md and DIR/survey.html (docs/survey.md).

Per target, DIR/<target>/ holds the evidence: probes.json (the prober's output; one already
there is used as it is, which is also how a survey is re-rendered or fed a probe run made
elsewhere) and one directory per experiment with its result.json and capture.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.survey.experiments import (
    EXPERIMENT_NAMES,
    INTERRUPTED,
    ExperimentRecord,
    Runner,
    SurveyInterrupted,
    run_experiments,
)
from testbed.survey.tables import TABLES, Cell, Evidence, decide, unmatched_probes
from testbed.survey.targets import TARGET_FORMS, Target, parse_targets
from testbed.survey.wire_facts import WireFacts, read_wire_facts

SURVEY_FORMAT = "mptcp-testbed-survey"
SURVEY_VERSION = 1
PROBES_FORMAT = "mptcp-testbed-probes"
PROBES_FILE = "probes.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--targets", required=True, help=f"comma-separated: {TARGET_FORMS}")
    parser.add_argument("--out", required=True, help="directory for survey.md/.html/.json and evidence")
    parser.add_argument("--experiments", help="comma-separated experiments to run (default all: "
                        + ", ".join(EXPERIMENT_NAMES) + ")")
    parser.add_argument("--stacks", type=Path, help="TOML file with [stacks.NAME] tables for "
                        "command:NAME targets (docs/command-endpoints.md)")
    parser.add_argument("--no-probes", action="store_true",
                        help="do not run the prober (an existing DIR/<target>/probes.json is still read)")


def _experiment_names(text: str | None) -> tuple[str, ...]:
    if not text:
        return EXPERIMENT_NAMES
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in EXPERIMENT_NAMES:
            raise SpecError(f"--experiments: unknown experiment {name!r} "
                            f"(known: {', '.join(EXPERIMENT_NAMES)})")
    return names


def load_probes(path: Path) -> list[dict[str, Any]]:
    """The probes of a probes.json; a wrong format is a TestbedError naming the file."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TestbedError(f"{path}: unreadable probes file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != PROBES_FORMAT or doc.get("version") != 1:
        raise TestbedError(f"{path}: not a {PROBES_FORMAT} version 1 document")
    probes = doc.get("probes")
    if not isinstance(probes, list) or not all(isinstance(p, dict) for p in probes):
        raise TestbedError(f"{path}: 'probes' must be a list of objects")
    return probes


def gather_probes(target: Target, directory: Path,
                  run_prober: bool) -> tuple[list[dict[str, Any]] | None, str]:
    """The target's probe verdicts and where they come from (or why there are none)."""
    path = directory / PROBES_FILE
    if not path.exists() and run_prober and target.unavailable() is None:
        try:
            from testbed.probe import run_probes  # the prober (another package); optional here
        except ImportError:
            return None, "prober not available"
        try:
            run_probes(target.name, None, directory, stacks=target.command_stacks or None)
        except TestbedError as exc:
            return None, f"prober failed: {exc.message}"
    if not path.exists():
        if target.unavailable() is not None:
            return None, f"not run: {target.unavailable()}"
        return None, "prober not available" if run_prober else "not run (--no-probes)"
    try:
        probes = load_probes(path)
    except TestbedError as exc:
        return None, exc.message
    return probes, f"{len(probes)} probes ({PROBES_FILE})"


def _wire_facts(out: Path, records: dict[str, ExperimentRecord]) -> dict[str, WireFacts]:
    facts = {}
    for name, record in records.items():
        if record.status != "ran" or record.directory is None:
            continue
        capture = out / record.directory / "capture.pcap"
        if capture.exists():
            try:
                facts[name] = read_wire_facts(capture, server_port=5201)
            except TestbedError:
                continue
    return facts


def _detail(target: Target) -> str:
    if target.stack == "python":
        return "the bundled Python stack at both ends"
    if target.stack == "command":
        (name, table), = target.command_stacks.items()
        return f"command stack {name}: {table.get('description') or table['client']}"
    if target.kernel is None:
        return f"the host's kernel {platform.release()} at both ends"
    reason = target.unavailable()
    return f"kernel {target.kernel} in a VM at each end" + (f" ({reason})" if reason else "")


def survey_document(targets: list[Target], evidence: dict[str, Evidence],
                    records: dict[str, dict[str, ExperimentRecord]]) -> dict[str, Any]:
    """The survey as data: targets, what ran, and every cell with its links."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for group, rows in TABLES.items():
        table = []
        for row in rows:
            cells = {t.name: decide(evidence[t.name], group, row) for t in targets}
            table.append({"key": row.key, "label": row.label,
                          "cells": {name: {"text": c.text, "links": c.links} for name, c in cells.items()}})
        others = {t.name: unmatched_probes(evidence[t.name], group) for t in targets}
        if any(others.values()):
            table.append({"key": "OTHER", "label": "Other probes of this group",
                          "cells": {name: {"text": (c or Cell("none")).text, "links": (c or Cell("")).links}
                                    for name, c in others.items()}})
        tables[group] = table
    return {
        "format": SURVEY_FORMAT, "version": SURVEY_VERSION,
        "targets": [{"name": t.name, "dir": t.directory, "detail": _detail(t),
                     "probes": evidence[t.name].probes_note,
                     "experiments": [r.as_json() for r in records[t.name].values()]} for t in targets],
        "tables": tables,
    }


def run_survey(targets: list[Target], out: Path, names: tuple[str, ...], *, run_prober: bool = True,
               runner: Runner | None = None) -> dict[str, Any]:
    from testbed.report.files import write_text_atomic
    from testbed.survey.render import survey_html, survey_markdown

    out.mkdir(parents=True, exist_ok=True)
    evidence: dict[str, Evidence] = {}
    records: dict[str, dict[str, ExperimentRecord]] = {}
    interrupted: SurveyInterrupted | None = None
    for target in targets:
        directory = out / target.directory
        directory.mkdir(parents=True, exist_ok=True)
        if interrupted is None:
            probes, note = gather_probes(target, directory, run_prober)
            try:
                records[target.name] = run_experiments(target, out, names, runner=runner)
            except SurveyInterrupted as stop:
                interrupted, records[target.name] = stop, stop.records
        else:  # the tables still get a column that says why it is empty
            probes, note = None, INTERRUPTED
            records[target.name] = {n: ExperimentRecord(n, "not-run", reason=INTERRUPTED) for n in names}
        evidence[target.name] = Evidence(
            target=target.name, records=records[target.name],
            wire=_wire_facts(out, records[target.name]), probes=probes, probes_note=note,
            probes_link=f"{target.directory}/{PROBES_FILE}" if probes is not None else None)
    doc = survey_document(targets, evidence, records)
    write_text_atomic(out / "survey.json", json.dumps(doc, indent=1) + "\n")
    write_text_atomic(out / "survey.md", survey_markdown(doc))
    write_text_atomic(out / "survey.html", survey_html(doc))
    if interrupted is not None:  # the partial tables are written; the CLI reports the interruption
        raise interrupted
    return doc


def run(args: argparse.Namespace, *, runner: Runner | None = None) -> int:
    targets = parse_targets(args.targets, args.stacks)
    names = _experiment_names(args.experiments)
    out = Path(args.out)
    run_survey(targets, out, names, run_prober=not args.no_probes, runner=runner)
    print(f"survey of {', '.join(t.name for t in targets)}: {out / 'survey.md'} and {out / 'survey.html'}")
    return 0
