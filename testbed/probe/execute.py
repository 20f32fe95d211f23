"""Running one probe script and turning what happened into a verdict with its evidence."""

from __future__ import annotations

import contextlib
from typing import Any

from testbed.probe.catalogue import Missing, Outcome, Prerequisite, Probe, ProbeContext
from testbed.probe.session import NoMptcp, ProbeTimeout, TargetSilent


def outcome_of(probe: Probe, ctx: ProbeContext) -> Outcome:
    """The script's outcome; the exceptions of the catalogue's contract become verdicts."""
    try:
        return probe.script(ctx)
    except (NoMptcp, Missing) as exc:
        return Outcome("not-implemented", str(exc))
    except Prerequisite as exc:
        return Outcome("error", f"prerequisite failed: {exc}")
    except TargetSilent as exc:
        return Outcome("error", f"the target is silent: {exc}")
    except ProbeTimeout as exc:
        return Outcome("error", str(exc))
    except Exception as exc:  # a bug in a script or a malformed answer: this probe only
        return Outcome("error", f"{type(exc).__name__}: {exc}")


def run_probe(probe: Probe, ctx: ProbeContext) -> dict[str, Any]:
    """One probe as a result row (without counters: the caller adds the target's)."""
    outcome = outcome_of(probe, ctx)
    for session in ctx.sessions:
        with contextlib.suppress(Exception):
            session.reset_all()
    trace: list[str] = []
    for index, session in enumerate(ctx.sessions):
        if len(ctx.sessions) > 1:
            trace.append(f"--- connection {index + 1}")
        trace += session.trace
        if session.trace_dropped:
            trace.append(f"... {session.trace_dropped} more lines")
    return {"name": probe.name, "group": probe.group, "survey_row": probe.survey_row,
            "rfc": probe.rfc, "packetdrill": probe.packetdrill, "verdict": outcome.verdict,
            "expected": probe.expected, "observed": outcome.observed, "trace": trace,
            "counters": {}}
