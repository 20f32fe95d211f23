"""Markdown and HTML tables: the fallback matrix and the summary of one run.

The matrix table follows the fallback table of the IETF MPTCP implementation survey: one row
per middlebox, one column per endpoint pairing, each cell the outcome class and the goodput.
A cell that differs from its expectation is marked (a cross and the expected class in
Markdown, a red frame in HTML); an error cell says why the run failed. Both renderings take
only a matrix document (matrix.json, re-derivable from the cells' result files), so
`testbed report` reproduces them from files alone.
"""

from __future__ import annotations

from typing import Any

from testbed.report.html import esc, outcome_class, page
from testbed.report.summary import RunSummary, describe_middleboxes
from testbed.report.versions import has_versions, row_summary

DIFFERS_MARK = "\u2717"  # ✗
WIRE_MARK = "\u26a0 wire"  # ⚠: the capture contradicts the outcome class
ERROR_CHARS = 80
SMALLER = "(smaller transfer)"  # an outcome-only cell's goodput: not comparable


def pairing_title(pairing: str) -> str:
    """'python-kernel' -> 'python \u2192 kernel' (client to server), as column headers read."""
    client, _, server = pairing.partition("-")
    return f"{client} \u2192 {server}" if server else pairing


def cell_text(cell: dict[str, Any]) -> str:
    """Outcome and goodput of a cell in plain words (no markup)."""
    status = cell.get("status")
    if status == "not-run":
        return "not run"
    if status == "not-applicable":
        return "n/a"  # the reason is a note below the table
    if status == "error":
        message = str(cell.get("error") or "run failed")
        return "error: " + (message if len(message) <= ERROR_CHARS else message[:ERROR_CHARS - 1] + "\u2026")
    goodput = cell.get("goodput_mbps")
    text = str(cell.get("outcome", "?"))
    if cell.get("integrity") and cell.get("integrity") != "ok":
        text += f" \u00b7 {cell['integrity']}"
    if isinstance(goodput, (int, float)):
        text += f" {goodput:.1f} Mbit/s" + (f" {SMALLER}" if smaller_transfer(cell) else "")
    carrying, total = cell.get("subflows_carrying"), cell.get("subflows_total")
    if isinstance(carrying, int) and isinstance(total, int) and total > 1:
        text += f" ({carrying}/{total} subflows)"
    connections = cell.get("connections")  # a proxy or balancer cell: its class's share
    if isinstance(connections, int) and isinstance(cell.get("connections_in_class"), int):
        text += f" ({cell['connections_in_class']} of {connections} connections)"
    distribution = cell.get("distribution")
    if isinstance(distribution, dict) and cell.get("stable") is False:
        text += " [" + ", ".join(f"{n}\u00d7 {name}" for name, n in distribution.items()) + "]"
    if cell.get("cpu_bound"):  # a VM endpoint's guest limited the goodput, not the network
        text += f" \u00b7 cpu-bound guest ({', '.join(cell['cpu_bound'])})"
    if cell.get("degraded"):
        text += f" \u00b7 degraded {cell.get('goodput_fraction', 0):.0%} of reference ({cell['degraded']})"
    return text


def smaller_transfer(cell: dict[str, Any]) -> bool:
    """An outcome-only cell that ran the spec's smaller [outcome_only] transfer: its goodput
    does not compare with the cells that measure."""
    changed = cell.get("outcome_only")
    return isinstance(changed, dict) and bool({"bytes", "seconds"} & set(changed))


def cell_differs(cell: dict[str, Any]) -> bool:
    return cell.get("as_expected") is False


def _cells_by_key(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["row"], c["pairing"]): c for c in doc.get("cells", [])}


def _row_header_text(row: dict[str, Any]) -> str:
    label = row.get("label") or row["name"]
    boxes = row.get("middleboxes") or []
    return f"{label} ({describe_middleboxes(boxes)})" if boxes else label


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _summary_line(doc: dict[str, Any]) -> str:
    s = doc.get("summary") or {}
    line = (f"{s.get('cells', 0)} cells: {s.get('as_expected', 0)} as expected, "
            f"{s.get('differ', 0)} differ from their expectation ({s.get('errors', 0)} errors), "
            f"{s.get('no_expectation', 0)} without expectation, {s.get('not_run', 0)} not run")
    if s.get("not_applicable"):
        line += f", {s['not_applicable']} not applicable to their row's driver"
    if doc.get("partial"):
        line += " \u2014 PARTIAL: " + ("interrupted" if doc.get("interrupted") else "not every cell ran")
    return line


def matrix_markdown(doc: dict[str, Any]) -> str:
    """The fallback table as GitHub-flavoured Markdown."""
    pairings = list(doc.get("pairings", []))
    cells = _cells_by_key(doc)
    lines = [f"# Fallback matrix: {doc.get('name', '')}", ""]
    if doc.get("description"):
        lines += [str(doc["description"]).strip(), ""]
    lines += [_summary_line(doc), ""]
    versions = has_versions(doc)
    lines.append("| Middlebox | " + " | ".join(pairing_title(p) for p in pairings)
                 + (" | Across versions" if versions else "") + " |")
    lines.append("|---" * (len(pairings) + 1 + versions) + "|")
    for row in doc.get("rows", []):
        entries = []
        for pairing in pairings:
            cell = cells.get((row["name"], pairing), {"status": "not-run"})
            text = cell_text(cell)
            if cell_differs(cell):
                expected = cell.get("expected")
                text = f"**{DIFFERS_MARK} {text}** (expected {expected})"
            if cell.get("wire_disagrees"):
                text += f" {WIRE_MARK}"
            entries.append(_md_escape(text))
        if versions:
            entries.append(_md_escape(row_summary(doc, row["name"])))
        lines.append(f"| {_md_escape(_row_header_text(row))} | " + " | ".join(entries) + " |")
    lines += ["", f"Columns are client \u2192 server stacks. {DIFFERS_MARK} marks a cell whose outcome "
              "differs from the expectation declared in the matrix spec.", ""]
    if any(smaller_transfer(c) for c in doc.get("cells", [])):
        lines += [f"{SMALLER}: the cell was judged on its class alone and ran the spec's smaller "
                  "[outcome_only] transfer; its goodput does not compare with the others.", ""]
    reasons = sorted({(c["row"], str(c.get("reason"))) for c in doc.get("cells", [])
                      if c.get("status") == "not-applicable"})
    if reasons:
        lines += ["n/a: the row's driver cannot run that pairing:", "",
                  *(f"- {row}: {_md_escape(reason)}" for row, reason in reasons), ""]
    conflicts = [f"- {c['row']} \u00d7 {c['pairing']}: {_md_escape(w)}"
                 for c in doc.get("cells", []) for w in c.get("wire_disagrees") or []]
    if conflicts:
        lines += [f"{WIRE_MARK}: the cell's capture contradicts its outcome class:", "", *conflicts, ""]
    env = doc.get("environment") or {}
    if env:
        lines.append(f"Kernel {env.get('kernel', '?')}, "
                     f"link emulation {format_backends(env.get('backends'))}.")
        lines.append("")
    return "\n".join(lines)


def matrix_html(doc: dict[str, Any], cell_links: dict[tuple[str, str], str] | None = None) -> str:
    """The fallback table as a self-contained HTML page; cell_links: (row, pairing) -> href."""
    pairings = list(doc.get("pairings", []))
    cells = _cells_by_key(doc)
    links = cell_links or {}
    out = []
    if doc.get("description"):
        out.append(f"<p>{esc(str(doc['description']).strip())}</p>")
    out.append(f"<p class=\"note\">{esc(_summary_line(doc))}</p>")
    versions = has_versions(doc)
    out.append("<table>\n<tr><th>Middlebox</th>"
               + "".join(f"<th>{esc(pairing_title(p))}</th>" for p in pairings)
               + ("<th>Across versions</th>" if versions else "") + "</tr>")
    for row in doc.get("rows", []):
        label = row.get("label") or row["name"]
        out.append(f"<tr><th>{esc(label)}<br><span class=\"note\">"
                   f"{esc(describe_middleboxes(row.get('middleboxes') or []))}</span></th>")
        for pairing in pairings:
            cell = cells.get((row["name"], pairing), {"status": "not-run"})
            out.append(_html_cell(cell, links.get((row["name"], pairing))))
        if versions:
            out.append(f"<td>{esc(row_summary(doc, row['name']))}</td>")
        out.append("</tr>")
    out.append("</table>")
    out.append("<p class=\"note\">Columns are client \u2192 server stacks. A red frame marks a cell whose "
               "outcome differs from the expectation in the matrix spec.</p>")
    out.append(_evidence_section(doc))
    return page(f"Fallback matrix: {doc.get('name', '')}", "\n".join(out))


def _evidence_section(doc: dict[str, Any]) -> str:
    """Each cell's evidence (classifier, then wire), folded, in table order."""
    parts = ["<h2>Evidence per cell</h2>"]
    for cell in doc.get("cells", []):
        lines = [str(e) for e in [*(cell.get("evidence") or []), *(cell.get("wire") or [])]]
        if cell.get("status") == "error":
            lines.insert(0, f"error: {cell.get('error', '')}")
        lines.extend(f"WIRE DISAGREES: {w}" for w in cell.get("wire_disagrees") or [])
        if cell.get("wire_error"):
            lines.append(f"no wire evidence: {cell['wire_error']}")
        mark = f" \u2014 {DIFFERS_MARK} expected {cell.get('expected')}" if cell_differs(cell) else ""
        items = "".join(f"<li>{esc(line)}</li>" for line in lines)
        where = f"{cell.get('row')} \u00d7 {pairing_title(str(cell.get('pairing')))}"
        parts.append(f"<details><summary>{esc(where)}: {esc(cell_text(cell))}{esc(mark)}</summary>"
                     f"<ul>{items}</ul></details>")
    return "\n".join(parts)


def _html_cell(cell: dict[str, Any], link: str | None) -> str:
    status = cell.get("status")
    outcome = (str(status) if status in ("not-run", "not-applicable", "error")
               else str(cell.get("outcome")))
    integrity = str(cell.get("integrity") or "ok")
    # corrupted bytes colour the cell whatever the protocol did; an unstable cell is grey
    classes = ["cell", outcome_class("corrupted" if integrity == "corrupted" else
                                     "stalled" if outcome == "unstable" else outcome)]
    if cell_differs(cell):
        classes.append("differs")
    evidence = "\n".join(str(e) for e in [*(cell.get("evidence") or []), *(cell.get("wire") or [])])
    title = f" title=\"{esc(evidence)}\"" if evidence else ""
    if status in ("error", "not-run", "not-applicable"):
        body = esc(cell_text(cell))
    else:
        goodput = cell.get("goodput_mbps")
        body = f"<strong>{esc(outcome)}</strong>"
        if integrity != "ok":
            body += f" \u00b7 <strong>{esc(integrity)}</strong>"
        if isinstance(goodput, (int, float)):
            body += f"<br><span class=\"goodput\">{goodput:.1f} Mbit/s"
            if smaller_transfer(cell):
                body += f" {SMALLER}"
            carrying, total = cell.get("subflows_carrying"), cell.get("subflows_total")
            if isinstance(carrying, int) and isinstance(total, int) and total > 1:
                body += f", {carrying}/{total} subflows"
            body += "</span>"
        distribution = cell.get("distribution")
        if cell.get("stable") is False and isinstance(distribution, dict):
            body += "<br><span class=\"goodput\">" + esc(", ".join(
                f"{n}\u00d7 {name}" for name, n in distribution.items())) + "</span>"
        if cell.get("cpu_bound"):
            body += (f"<br><span class=\"goodput\">cpu-bound guest "
                     f"({esc(', '.join(cell['cpu_bound']))})</span>")
        if cell.get("degraded"):
            body += (f"<br><span class=\"goodput\">degraded: {cell.get('goodput_fraction', 0):.0%} of "
                     f"reference ({esc(cell['degraded'])})</span>")
    if link:
        body = f"<a href=\"{esc(link)}\">{body}</a>"
    if cell_differs(cell):
        body += f"<span class=\"expected\">{DIFFERS_MARK} expected {esc(cell.get('expected'))}</span>"
    if cell.get("wire_disagrees"):
        body += f"<span class=\"expected\">{esc(WIRE_MARK)}</span>"
    return f"<td class=\"{' '.join(classes)}\"{title}>{body}</td>"


def run_markdown(summary: RunSummary, plot_file: str | None = None, wire: tuple[str, ...] = ()) -> str:
    """One run: connections, subflow shares, expectations, timeline, as Markdown."""
    lines = [f"# {summary.name}", ""]
    if summary.description:
        lines += [summary.description.strip(), ""]
    lines += [f"Middleboxes: {describe_middleboxes(summary.middleboxes)}. "
              f"Kernel {summary.kernel or '?'}, link emulation {format_backends(summary.backends)}.", ""]
    lines += ["| client \u2192 server | outcome | goodput (Mbit/s) | bytes | duration (s) | integrity "
              "| subflows |",
              "|---|---|---|---|---|---|---|"]
    for conn in summary.connections:
        lines.append(f"| {conn.client_stack} \u2192 {conn.server_stack} | {conn.outcome} | "
                     f"{conn.goodput_mbps:.2f} | {conn.bytes} | {conn.duration_s:.2f} | {conn.integrity} | "
                     f"{conn.carrying}/{len(conn.subflows)} |")
    for index, conn in enumerate(summary.connections):
        lines += ["", f"## Subflows of connection {index}", "",
                  "| subflow | bytes | share | Mbit/s | retransmitted | RTT (ms) | open at end |",
                  "|---|---|---|---|---|---|---|"]
        for sub in conn.subflows:
            lines.append(f"| {sub.pair} | {sub.bytes} | {sub.share * 100:.1f}% | "
                         f"{sub.mbps:.2f} | {sub.bytes_retrans} | {_maybe(sub.rtt_ms)} | "
                         f"{_maybe(sub.open_at_end)} |")
        if conn.evidence:
            lines += ["", "Evidence:", ""] + [f"- {_md_escape(e)}" for e in conn.evidence]
    if wire:
        lines += ["", "Options seen on the wire (client capture, tshark):", ""]
        lines += [f"- {_md_escape(w)}" for w in wire]
    lines += ["", _expectation_line(summary)]
    if summary.timeline:
        lines += ["", "Timeline as applied:", ""]
        lines += [f"- t={ev.get('at_s')} s {_timeline_what(ev)}" for ev in summary.timeline]
    if plot_file:
        lines += ["", f"![per-subflow throughput]({plot_file})"]
    return "\n".join(lines) + "\n"


def run_html(summary: RunSummary, plot_file: str | None = None, wire: tuple[str, ...] = ()) -> str:
    out = []
    if summary.description:
        out.append(f"<p>{esc(summary.description.strip())}</p>")
    out.append(f"<p class=\"note\">Middleboxes: {esc(describe_middleboxes(summary.middleboxes))}. "
               f"Kernel {esc(summary.kernel or '?')}, "
               f"link emulation {esc(format_backends(summary.backends))}.</p>")
    out.append("<table><tr><th>client \u2192 server</th><th>outcome</th><th>goodput (Mbit/s)</th>"
               "<th>bytes</th><th>duration (s)</th><th>integrity</th><th>subflows</th></tr>")
    for conn in summary.connections:
        out.append(f"<tr><td>{esc(conn.client_stack)} \u2192 {esc(conn.server_stack)}</td>"
                   f"<td class=\"{outcome_class(conn.outcome)}\">{esc(conn.outcome)}</td>"
                   f"<td class=\"num\">{conn.goodput_mbps:.2f}</td><td class=\"num\">{conn.bytes}</td>"
                   f"<td class=\"num\">{conn.duration_s:.2f}</td><td>{esc(conn.integrity)}</td>"
                   f"<td class=\"num\">{conn.carrying}/{len(conn.subflows)}</td></tr>")
    out.append("</table>")
    for index, conn in enumerate(summary.connections):
        out.append(f"<h2>Subflows of connection {index}</h2><table><tr><th>subflow</th><th>bytes</th>"
                   "<th>share</th><th>Mbit/s</th><th>retransmitted</th><th>RTT (ms)</th>"
                   "<th>open at end</th></tr>")
        for sub in conn.subflows:
            out.append(f"<tr><td>{esc(sub.pair)}</td>"
                       f"<td class=\"num\">{sub.bytes}</td>"
                       f"<td class=\"num\">{sub.share * 100:.1f}%</td><td class=\"num\">{sub.mbps:.2f}</td>"
                       f"<td class=\"num\">{sub.bytes_retrans}</td>"
                       f"<td class=\"num\">{esc(_maybe(sub.rtt_ms))}</td>"
                       f"<td>{esc(_maybe(sub.open_at_end))}</td></tr>")
        out.append("</table>")
        if conn.evidence:
            items = "".join(f"<li>{esc(e)}</li>" for e in conn.evidence)
            out.append(f"<p>Evidence:</p><ul>{items}</ul>")
    if wire:
        items = "".join(f"<li>{esc(w)}</li>" for w in wire)
        out.append(f"<p>Options seen on the wire (client capture, tshark):</p><ul>{items}</ul>")
    verdict = _expectation_line(summary)
    passed = summary.expectations_passed
    css = "pass" if passed else "fail" if passed is False else "note"
    out.append(f"<p class=\"{css}\">{esc(verdict)}</p>")
    if summary.timeline:
        out.append("<p>Timeline as applied:</p><ul>" + "".join(
            f"<li>t={esc(ev.get('at_s'))} s {esc(_timeline_what(ev))}</li>" for ev in summary.timeline)
            + "</ul>")
    if plot_file:
        out.append(f"<p><img src=\"{esc(plot_file)}\" alt=\"per-subflow throughput\"></p>")
    return page(summary.name or "testbed run", "\n".join(out))


def _timeline_what(ev: dict[str, Any]) -> str:
    """One timeline entry: a link change or a middlebox switched on/off (or why it was not)."""
    if ev.get("applied") is False:
        what = f"middlebox {ev['middlebox']}" if "middlebox" in ev else f"link {ev.get('link')}"
        return f"{what} planned at {ev.get('planned_at_s')} s, not applied: {ev.get('why')}"
    if "middlebox" in ev:
        return (f"middlebox {ev['middlebox']} {'on' if ev.get('active') else 'off'} "
                f"(counters then: {ev.get('counters', {})})")
    return (f"link {ev.get('link')}: {ev.get('params', '')}"
            f"{'' if 'up' not in ev else (' up' if ev['up'] else ' down')}")


def _expectation_line(summary: RunSummary) -> str:
    if summary.expectations_passed is None:
        return "Expectations: none recorded."
    if summary.expectations_passed:
        return f"Expectations {summary.expect or '{}'}: PASS"
    return f"Expectations {summary.expect}: FAIL ({'; '.join(summary.expectation_failures)})"


def format_backends(backends: object) -> str:
    """'rate=htb loss=nft delay=userspace' (what `testbed doctor` chose for the run)."""
    if not isinstance(backends, dict) or not backends:
        return "unknown"
    return " ".join(f"{k}={v}" for k, v in backends.items())


def _maybe(value: object) -> str:
    return "-" if value is None else str(value)
