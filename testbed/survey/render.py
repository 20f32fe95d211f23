"""survey.json into survey.md and survey.html: one table per IETF 87 group, one column per
target, every cell's links relative to the survey directory (they open the evidence)."""

from __future__ import annotations

import html
from typing import Any

from testbed.survey.tables import TABLE_TITLES


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def survey_markdown(doc: dict[str, Any]) -> str:
    targets = [t["name"] for t in doc["targets"]]
    lines = [f"# MPTCP implementation survey ({', '.join(targets)})", "",
             "The IETF 87 questionnaire (signalling, fallback, congestion control), answered by "
             "measurement with `testbed survey`. Each cell links to its evidence: an experiment's "
             "result.json or capture, or the prober's probes.json.", ""]
    for group, rows in doc["tables"].items():
        lines += [f"## {TABLE_TITLES.get(group, group)}", "",
                  "| Question | " + " | ".join(targets) + " |",
                  "|---|" + "---|" * len(targets)]
        for row in rows:
            cells = []
            for target in targets:
                cell = row["cells"][target]
                links = " ".join(f"[{label}]({path})" for label, path in cell["links"])
                cells.append(_md_escape(cell["text"]) + (f" {links}" if links else ""))
            lines.append(f"| {_md_escape(row['label'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Targets", ""]
    for target in doc["targets"]:
        lines.append(f"- **{target['name']}**: {target['detail']}; probes: {target['probes']}")
    lines.append("")
    return "\n".join(lines)


def survey_html(doc: dict[str, Any]) -> str:
    targets = [t["name"] for t in doc["targets"]]
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
             "<title>MPTCP implementation survey</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "margin-bottom:2em}td,th{border:1px solid #aaa;padding:4px 8px;vertical-align:top;"
             "max-width:28em}th{background:#eee}.nm{color:#888}</style></head><body>",
             f"<h1>MPTCP implementation survey ({html.escape(', '.join(targets))})</h1>",
             "<p>The IETF 87 questionnaire answered by measurement with <code>testbed survey</code>; "
             "every cell links to its evidence.</p>"]
    for group, rows in doc["tables"].items():
        parts.append(f"<h2>{html.escape(TABLE_TITLES.get(group, group))}</h2><table><tr><th>Question</th>"
                     + "".join(f"<th>{html.escape(t)}</th>" for t in targets) + "</tr>")
        for row in rows:
            parts.append(f"<tr><th>{html.escape(row['label'])}</th>")
            for target in targets:
                cell = row["cells"][target]
                css = ' class="nm"' if cell["text"].startswith(("not measured", "probes: prober")) else ""
                links = " ".join(f'<a href="{html.escape(path)}">{html.escape(label)}</a>'
                                 for label, path in cell["links"])
                parts.append(f"<td{css}>{html.escape(cell['text'])} {links}</td>")
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("<h2>Targets</h2><ul>")
    for target in doc["targets"]:
        parts.append(f"<li><b>{html.escape(target['name'])}</b>: {html.escape(target['detail'])}; "
                     f"probes: {html.escape(target['probes'])}</li>")
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"
