"""The frame of every HTML file the testbed writes: one self-contained page, no scripts, no
external assets, so a report can be attached to a CI run or mailed and still open anywhere."""

from __future__ import annotations

from html import escape

# One colour per outcome class (DESIGN.md), so the matrix reads at a glance the way the IETF
# survey's fallback table does; anything unexpected gets a red frame on top of its colour.
OUTCOME_COLOURS: dict[str, str] = {
    "mptcp": "#c8e6c9",
    "subflow-rejected": "#fff9c4",
    "fallback-syn": "#ffe0b2",
    "fallback-infinite-map": "#ffcc80",
    "mp-fail": "#f8bbd0",
    "reset": "#ef9a9a",
    "stalled": "#e0e0e0",
    "corrupted": "#d32f2f",
    "error": "#b0bec5",
    "not-run": "#ffffff",
    "not-applicable": "#fafafa",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #999; padding: 0.35em 0.6em; vertical-align: top; }
th { background: #eceff1; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.cell { min-width: 9em; }
td.differs { outline: 3px solid #c62828; outline-offset: -3px; }
td.outcome-corrupted { color: #fff; }
td.outcome-corrupted a { color: #fff; }
.goodput { font-size: 0.9em; color: #444; }
td.outcome-corrupted .goodput { color: #eee; }
.expected { font-size: 0.8em; display: block; }
.pass { color: #2e7d32; font-weight: bold; }
.fail { color: #c62828; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
code { font-size: 0.9em; }
"""


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A complete HTML document around body."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n<style>{STYLE}{outcome_styles()}\n</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def outcome_class(outcome: str) -> str:
    """CSS class for an outcome: only known names, so a strange value cannot inject markup."""
    return f"outcome-{outcome}" if outcome in OUTCOME_COLOURS else "outcome-unknown"


def outcome_styles() -> str:
    return "\n".join(f"td.outcome-{name} {{ background: {colour}; }}"
                     for name, colour in OUTCOME_COLOURS.items())
