"""A soak's pass/fail criteria, soak.json (versioned, self-describing) and the stdout summary.

Criteria, each named in the output when it fails:
* transfers: at least one transfer ran;
* verdicts: every transfer's printed integrity verdict equals what the hashes of the received
  bytes say (testbed.soak.truth), and every sender reported;
* processes: no endpoint died (signal, killed, traceback), every bump is alive at the end;
* rss: for every python process that lived past 60 s, every sample after its 60th second, up
  to the end of the data phase of the last transfer it lived through, is within 10 % of its
  RSS at 60 s (what a process frees while it winds down after its transfer is not growth);
* fds: those processes hold no more descriptors at the end (least of the last 10 samples) than
  at 60 s; the soak process (whose count follows the endpoints it runs) no more after
  teardown than before the build;
* leaks: after teardown no namespace of the run, no root interface named like its veths, no
  new root nft table, no process carrying the run's marker, no teardown problem;
* abuse: link flaps, loss/delay changes, the stripper switched on and off, and a NAT mapping
  expired during a path-A outage, each while a transfer ran.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

from testbed.soak.monitor import SOAK_LABEL, ProcessSeries
from testbed.soak.session import SoakRecord

SOAK_FILE = "soak.json"
FORMAT = "testbed-soak"
VERSION = 1
REFERENCE_AGE_S = 60.0
RSS_TOLERANCE = 0.10
FD_TAIL = 10
UNITS = {"t_s": "seconds since the soak's network was up", "age_s": "seconds since the process "
         "started", "rss_kib": "resident set size, KiB", "fds": "open file descriptors",
         "started_s": "seconds since the soak's network was up", "at_s": "seconds since the "
         "soak's network was up", "goodput_mbps": "Mbit/s",
         "data_ended_s": "seconds since the soak's network was up: the client's start plus the "
         "sender's duration (the end of the transfer's data phase)",
         "judged_until_s": "seconds since the soak's network was up: the last RSS and fds sample "
         "judged, the data_ended_s of the last transfer the process lived through"}


def judged_until_s(series: ProcessSeries, transfers: list[dict[str, Any]]) -> float | None:
    """The end of the data phase of the last transfer the process lived through (soak time),
    None when it lived through none (then all its samples are judged)."""
    if not series.samples:
        return None
    first, last = series.samples[0][0], series.samples[-1][0]
    ends = [t.get("data_ended_s", t["ended_s"]) for t in transfers if "ended_s" in t
            and t["started_s"] <= last and t.get("data_ended_s", t["ended_s"]) >= first]
    return max(ends) if ends else None


def judge_process(series: ProcessSeries, until_s: float | None = None) -> dict[str, Any]:
    """RSS summary, the level at 60 s and the samples after it (up to `until_s`, soak time)
    outside 10 %, fds before/after."""
    rss = [s[2] for s in series.samples]
    fds = [s[3] for s in series.samples]
    summary: dict[str, Any] = {
        "pid": series.pid, "label": series.label, "node": series.node,
        "samples": len(rss), "first_age_s": series.samples[0][1], "last_age_s": series.samples[-1][1],
        "exited_at_s": series.exited_at_s,
        "rss_kib": {"min": min(rss), "median": int(statistics.median(rss)), "max": max(rss)},
        "fds": {"before": fds[0], "after": min(fds[-FD_TAIL:])},
    }
    reference = next((s for s in series.samples if s[1] >= REFERENCE_AGE_S), None)
    later = [s for s in series.samples if reference is not None and s[1] > reference[1]
             and (until_s is None or s[0] <= until_s)]
    if reference is None or not later:
        summary["judged"] = False
        return summary
    level = reference[2]
    outside = [s for s in later if abs(s[2] - level) > RSS_TOLERANCE * level]
    worst = max(later, key=lambda s: abs(s[2] - level))
    summary.update(judged=True, judged_until_s=until_s, rss_at_60s_kib=level,
                   samples_after_60s=len(later),
                   outside_10pct=len(outside),
                   worst_deviation_pct=round(100 * (worst[2] - level) / level, 2),
                   worst_at_age_s=worst[1])
    summary["fds"] = {"before": reference[3], "after": min(s[3] for s in later[-FD_TAIL:])}
    return summary


def _series_columns(series: ProcessSeries) -> dict[str, list[float | int]]:
    return {name: [s[i] for s in series.samples]
            for i, name in enumerate(("t_s", "age_s", "rss_kib", "fds"))}


def _during_transfer(at_s: float, transfers: list[dict[str, Any]]) -> bool:
    return any(t["started_s"] <= at_s <= t.get("ended_s", t["started_s"]) for t in transfers)


def _criterion(name: str, problems: list[str], detail: str) -> dict[str, Any]:
    return {"name": name, "passed": not problems, "detail": detail, "problems": problems}


def evaluate(record: SoakRecord, processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    transfers = record.transfers
    criteria = [_criterion("transfers", [] if transfers else ["no transfer ran"],
                           f"{len(transfers)} transfers")]

    wrong = [f"#{t['index']} ({t['pairing']}): printed {t.get('verdict')}, hashes say "
             f"{t['truth']['integrity']}" + (f" ({t['error']})" if t.get("error") else "")
             for t in transfers if t.get("verdict") != t["truth"]["integrity"]]
    wrong += [f"#{t['index']}: the sender printed no report" for t in transfers
              if t["truth"].get("sender_report") is False]
    criteria.append(_criterion("verdicts", wrong, f"{len(transfers) - len(wrong)} of "
                               f"{len(transfers)} verdicts match the received bytes' hashes"))

    died = [f"#{t['index']} {role}: {why}" for t in transfers for role, why in t["died"].items()]
    died += [f"inline process on {node} not running at the end"
             for node, alive in record.bumps_alive_at_end.items() if not alive]
    criteria.append(_criterion("processes", died, f"{len(record.bumps_alive_at_end)} bumps, "
                               f"{2 * len(transfers)} endpoint processes"))

    judged = [p for p in processes if p["judged"]]
    rss = [f"{p['label']} on {p['node']} (pid {p['pid']}): {p['outside_10pct']} samples outside "
           f"10 % of {p['rss_at_60s_kib']} KiB, worst {p['worst_deviation_pct']:+} % at "
           f"{p['worst_at_age_s']} s" for p in judged if p["outside_10pct"]]
    if not judged:
        rss.append("no python process lived past 60 s")
    criteria.append(_criterion("rss", rss, f"{len(judged)} processes judged from their 60th "
                               "second to the end of the data phase of the last transfer each "
                               "lived through (judged_until_s; a fall while a process winds down "
                               f"is not growth): {', '.join(p['label'] for p in judged)}"))

    # the soak's own count moves with the endpoints it is running (their pipes): it is
    # judged by the census instead, before the build against after teardown
    fds = [f"{p['label']} on {p['node']}: {p['fds']['before']} fds at 60 s, {p['fds']['after']} "
           f"at the end" for p in judged
           if p["fds"]["after"] > p["fds"]["before"] and p["label"] != SOAK_LABEL]
    before, after = record.census_before.get("soak_fds"), record.census_after.get("soak_fds")
    if before is not None and after is not None and after > before:
        fds.append(f"the soak process: {before} fds before the build, {after} after teardown")
    criteria.append(_criterion("fds", fds, f"soak process {before} -> {after} fds"))

    left = [f"namespace {n}" for n in record.census_after.get("namespaces", [])]
    left += [f"interface {i}" for i in record.census_after.get("interfaces", [])
             if i not in record.census_before.get("interfaces", [])]
    left += [f"nft table {t}" for t in record.census_after.get("nft_tables", [])
             if t not in record.census_before.get("nft_tables", [])]
    left += [f"process {p}" for p in record.census_after.get("processes", [])]
    left += [f"teardown: {p}" for p in record.teardown_problems]
    criteria.append(_criterion("leaks", left, "namespaces, veths, nft tables, processes after "
                               "teardown against before the build"))
    criteria.append(_criterion("abuse", _abuse_missing(record), "link flaps, loss/delay "
                               "changes, stripper on/off, NAT expiry, each during a transfer"))
    return criteria


def _abuse_missing(record: SoakRecord) -> list[str]:
    transfers, timeline = record.transfers, record.timeline
    during = [e for e in timeline if _during_transfer(e["at_s"], transfers)]
    missing = []
    if not any(e.get("up") is False for e in during):
        missing.append("no link went down during a transfer")
    if not any("params" in e for e in during):
        missing.append("no loss/delay change during a transfer")
    for active in (True, False):
        if not any(e.get("active") is active for e in during):
            missing.append(f"the stripper was never switched {'on' if active else 'off'} "
                           "during a transfer")
    if not any(t["nat"]["after"].get("expired", 0) > t["nat"]["before"].get("expired", 0)
               and any(t["started_s"] <= down <= t["ended_s"] for down, _up in record.nat_outages)
               for t in transfers if "ended_s" in t):
        missing.append("no NAT mapping expired during a transfer that had a path-A outage")
    return missing


def soak_document(record: SoakRecord) -> dict[str, Any]:
    processes = [judge_process(s, judged_until_s(s, record.transfers))
                 for s in record.processes if s.samples]
    criteria = evaluate(record, processes)
    for summary, series in zip(processes, [s for s in record.processes if s.samples], strict=True):
        summary["series"] = _series_columns(series)
    return {
        "format": FORMAT, "version": VERSION,
        "description": "testbed soak: consecutive transfers over two_path under link flaps, "
                       "loss/delay changes, a NAT timeout and a switched option stripper; see "
                       "docs/hardening.md",
        "units": UNITS,
        "run_id": record.run_id, "settings": asdict(record.settings),
        "environment": record.environment, "elapsed_s": record.elapsed_s,
        "interrupted": record.interrupted, "passed": all(c["passed"] for c in criteria)
        and not record.interrupted,
        "criteria": criteria, "transfers": record.transfers, "timeline": record.timeline,
        "nat_outages": [{"down_s": round(a, 2), "up_s": round(b, 2)} for a, b in record.nat_outages],
        "processes": processes,
        "census": {"before": record.census_before, "after": record.census_after},
        "teardown_problems": record.teardown_problems,
    }


def summary_lines(document: dict[str, Any]) -> list[str]:
    transfers = document["transfers"]
    verdicts: dict[str, int] = {}
    for t in transfers:
        verdicts[str(t.get("verdict"))] = verdicts.get(str(t.get("verdict")), 0) + 1
    lines = [f"soak {document['run_id']}: {document['elapsed_s']:.0f} s, {len(transfers)} transfers, "
             f"verdicts {', '.join(f'{k} {v}' for k, v in sorted(verdicts.items())) or 'none'}"]
    lines.append("process                                   node     RSS MiB min/median/max  "
                 "fds before->after  judged")
    for p in document["processes"]:
        if not p["judged"] and p["label"].startswith("testbed.endpoints"):
            continue  # short-lived endpoints: summarised below
        rss = p["rss_kib"]
        lines.append(f"  {p['label']:<40}{p['node']:<9}{rss['min'] / 1024:6.1f} "
                     f"{rss['median'] / 1024:6.1f} {rss['max'] / 1024:6.1f}   "
                     f"{p['fds']['before']:>5} -> {p['fds']['after']:<5}     "
                     + (f"{p['worst_deviation_pct']:+.1f} % worst" if p["judged"] else "no"))
    short = [p for p in document["processes"] if not p["judged"]
             and p["label"].startswith("testbed.endpoints")]
    if short:
        peaks = sorted(p["rss_kib"]["max"] for p in short)
        lines.append(f"  {len(short)} endpoint processes younger than 60 s: peak RSS "
                     f"{peaks[0] / 1024:.1f}..{peaks[-1] / 1024:.1f} MiB")
    before, after = document["census"]["before"], document["census"]["after"]
    lines.append(f"census before -> after: namespaces {len(before['namespaces'])} -> "
                 f"{len(after['namespaces'])}, veths {len(before['interfaces'])} -> "
                 f"{len(after['interfaces'])}, nft tables {len(before['nft_tables'])} -> "
                 f"{len(after['nft_tables'])}, processes {len(before['processes'])} -> "
                 f"{len(after['processes'])}, soak fds {before['soak_fds']} -> {after['soak_fds']}")
    for criterion in document["criteria"]:
        mark = "ok  " if criterion["passed"] else "FAIL"
        lines.append(f"{mark} {criterion['name']}: {criterion['detail']}")
        lines += [f"       {problem}" for problem in criterion["problems"][:10]]
    if document["interrupted"]:
        lines.append("FAIL interrupted before the time was up")
    return lines
