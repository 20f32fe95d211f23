"""`run_probes`: the probes against one target, written as DIR/probes.json and DIR/probes.md.

probes.json (format "mptcp-testbed-probes", version 1) is the interface `testbed survey`
reads: one row per probe with its group, survey row, RFC clause, verdict, expectation,
observation, packet trace and (kernel target) the MPTcpExt counters that moved.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

from testbed.kernel_mptcp import counter_deltas
from testbed.probe import kernel_counters
from testbed.probe.bed import ANNOUNCED, PORT, PROBER, TARGET, ProbeBed, ProbeError, settle_time
from testbed.probe.catalogue import VERDICTS, Probe, ProbeContext, load
from testbed.probe.command_target import COUNTERS_NOTE, REPLY_PROBES, check_stack, not_run_row, stack_name
from testbed.probe.execute import run_probe
from testbed.probe.session import Session
from testbed.probe.vm_target import check_fetched, vm_selector

FORMAT, VERSION = "mptcp-testbed-probes", 1
TARGETS = ("kernel", "python")
LIVENESS_TIMEOUT_S = 3.0
LATE_ANSWER_S = 0.25  # a guest answering slower than this cannot hold the probes' waits
SETTING_ORDER = ("client", "", "announce")


def check_target(target: str) -> None:
    """One line naming what is wrong with a --target value (before anything is built)."""
    if target in TARGETS:
        return
    if (selector := vm_selector(target)) is not None:
        check_fetched(target, selector)
        return
    if stack_name(target) is not None:
        return
    raise ProbeError(f"unknown target {target!r}; use kernel, python, kernel@VERSION or command:NAME")


def select_probes(names: list[str] | None) -> list[Probe]:
    catalogue = load()
    if not names:
        return list(catalogue.values())
    unknown = [name for name in names if name not in catalogue]
    if unknown:
        raise ProbeError(f"unknown probe {unknown[0]!r}; `testbed probe --list` lists the "
                         f"{len(catalogue)} probes")
    return [catalogue[name] for name in dict.fromkeys(names)]


def answer_time(bed: ProbeBed, rng: random.Random) -> float | None:
    """Seconds from a SYN to the target's answer (None: none within LIVENESS_TIMEOUT_S)."""
    assert bed.link is not None
    session = Session(bed.link, PROBER[0], TARGET, PORT, rng=rng, budget_s=LIVENESS_TIMEOUT_S + 2)
    sent = time.monotonic()
    session.segment(session.initial, 0x02, [])
    answer = session.expect(session.initial, None, LIVENESS_TIMEOUT_S)
    elapsed = time.monotonic() - sent
    session.reset_all()
    return None if answer is None else elapsed


def _check_alive(bed: ProbeBed, rng: random.Random) -> None:
    """A target that never answers fails the whole run, in one line, before any probe."""
    if answer_time(bed, rng) is None:
        raise ProbeError(f"the {bed.target} target did not answer a SYN to {TARGET}:{PORT} within "
                         f"{LIVENESS_TIMEOUT_S:.0f} s; nothing was probed")


def slow_guest_verdict(row: dict[str, Any], answered_after: float | None) -> None:
    """A VM target's fail stands only if the guest kept time: were a SYN right after the probe
    answered later than LATE_ANSWER_S (a starved TCG guest), the probe's own 1-3 s windows may
    have closed before the guest's answers came, so the row says it was not measurable."""
    if row["verdict"] != "fail" or (answered_after is not None and answered_after <= LATE_ANSWER_S):
        return
    late = "not at all" if answered_after is None else f"after {answered_after:.2f} s"
    row["verdict"] = "not-measurable"
    row["observed"] += (f" [not measurable in this VM guest: a SYN sent right after the probe was "
                        f"answered {late} (more than {LATE_ANSWER_S} s), so the probe's 1-3 s waits "
                        f"do not hold]")


def probe_target(target: str, probes: list[Probe], *, seed: int | None = None, before: Any = None,
                 command_stack: dict[str, str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `probes` against a fresh bed; returns (target detail, rows)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    # the target as client first, before server-side connections exist that a `subflow`
    # endpoint would make the kernel join from; then plain; then announcing
    ordered = sorted(probes, key=lambda p: SETTING_ORDER.index(p.needs))
    with ProbeBed(target, command_stack) as bed:
        assert bed.link is not None
        if before is not None:
            before(bed)
        _check_alive(bed, rng)
        detail = bed.target_detail()
        for probe in ordered:
            if bed.command is not None and probe.name in REPLY_PROBES:
                rows.append(not_run_row(probe))
                continue
            bed.use_setting(probe.needs)
            bed.before_probe()
            bed.link.drain()
            counters_before = bed.counters()
            ctx = ProbeContext(link=bed.link, prober=PROBER, target=TARGET, port=PORT,
                               announced=ANNOUNCED, rng=rng, start_client=bed.start_client)
            try:
                row = run_probe(probe, ctx)
            finally:
                bed.stop_clients()
            settle_time()
            bed.check_target()
            if bed.command is not None:
                row["counters_note"] = COUNTERS_NOTE
            if bed.kernel_target:
                row["counters"] = counter_deltas(counters_before, bed.counters())
                verdict = kernel_counters.check(probe.name, row["counters"],
                                                set(counters_before) or None)
                if verdict is not None:
                    row["counters_check"] = verdict
            if bed.vm_kernel is not None and row["verdict"] == "fail":
                bed.link.drain()
                row["guest_answer_s"] = answer_time(bed, rng)
                slow_guest_verdict(row, row["guest_answer_s"])
            rows.append(row)
    order = {probe.name: index for index, probe in enumerate(probes)}
    rows.sort(key=lambda row: order[row["name"]])
    return detail, rows


def run_probes(target: str, names: list[str] | None, out: Path, *, seed: int | None = None,
               before: Any = None, stacks: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """The survey's entry point: probe `target`, write out/probes.json and out/probes.md
    (`stacks`: the [stacks.NAME] tables a command:NAME target is found in)."""
    check_target(target)
    command_stack = check_stack(target, stacks) if stack_name(target) is not None else None
    probes = select_probes(names)
    created = not out.exists()
    try:
        started = time.time()
        detail, rows = probe_target(target, probes, seed=seed, before=before, command_stack=command_stack)
        document = {"format": FORMAT, "version": VERSION, "target": target,
                    "target_detail": detail, "started_unix": round(started, 3),
                    "seconds": round(time.time() - started, 2), "probes": rows}
        out.mkdir(parents=True, exist_ok=True)
        (out / "probes.json").write_text(json.dumps(document, indent=1) + "\n")
        (out / "probes.md").write_text(markdown(document))
    except BaseException:
        if created and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(document: dict[str, Any]) -> str:
    """probes.md: one table row per probe, then each probe's trace."""
    rows = document["probes"]
    counts = {v: sum(1 for r in rows if r["verdict"] == v)
              for v in VERDICTS}
    lines = [f"# MPTCP probes: target {document['target']}", "",
             ", ".join(f"{n} {v}" for v, n in counts.items() if n or v in VERDICTS[:4]), "",
             "| probe | group | survey row | RFC | verdict | observed |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['group']} | {_cell(row['survey_row'])} | "
                     f"{row['rfc']} | **{row['verdict']}** | {_cell(row['observed'])} |")
    lines.append("")
    for row in rows:
        lines += [f"## {row['name']}", "", f"Expected: {row['expected']}", "",
                  f"Observed: {row['observed']}", ""]
        if row.get("counters_note"):
            lines += [f"Counters: {row['counters_note']}", ""]
        if row["counters"]:
            lines += ["Counters: " + ", ".join(f"{k} {v:+d}" for k, v in row["counters"].items()), ""]
        if "counters_check" in row:
            check = row["counters_check"]
            absent = (f"; this kernel has no {', '.join(check['absent'])} counter"
                      if check.get("absent") else "")
            lines += [f"Counters {'agree' if check['agree'] else 'DISAGREE'} with the scenario's "
                      f"expectation {check['expected']} (observed {check['observed']}{absent})", ""]
        lines += ["```", *row["trace"], "```", ""]
    return "\n".join(lines)
