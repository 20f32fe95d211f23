"""Matrix expectations: "OUTCOME" or "OUTCOME · INTEGRITY", several joined by "|" for a cell
measured to vary, and whether a cell's class meets one (every row kind's cells use these)."""

from __future__ import annotations

from testbed.errors import SpecError
from testbed.spec import INTEGRITY_CLASSES, OUTCOMES


def parse_expectation(text: str, where: str) -> list[tuple[str, str | None]]:
    """The accepted classes of an expectation "OUTCOME" or "OUTCOME · INTEGRITY", several
    separated by "|" for a cell measured to vary (each is (outcome, integrity or None))."""
    accepted = []
    for alternative in text.split("|"):
        outcome, sep, integrity = (part.strip() for part in alternative.partition("\u00b7"))
        if outcome not in OUTCOMES:
            hint = (" (corrupted is an integrity class: write e.g. 'reset \u00b7 corrupted')"
                    if outcome == "corrupted" else "")
            raise SpecError(f"{where}: {outcome!r} is not an outcome class "
                            f"(one of {', '.join(OUTCOMES)}){hint}")
        if sep and integrity not in INTEGRITY_CLASSES:
            raise SpecError(f"{where}: integrity {integrity!r} is not one of "
                            f"{', '.join(INTEGRITY_CLASSES)}")
        accepted.append((outcome, integrity or None))
    return accepted


def expectation_met(expected: str, outcome: str, integrity: str) -> bool:
    """An expected outcome matches exactly; an expected integrity too. Without one, any
    integrity but corrupted or unknown is fine (truncated only with an incomplete outcome)."""
    return any(_meets(want_outcome, want_integrity, outcome, integrity)
               for want_outcome, want_integrity in parse_expectation(expected, "expectation"))


def _meets(want_outcome: str, want_integrity: str | None, outcome: str, integrity: str) -> bool:
    if outcome != want_outcome:
        return False
    if want_integrity is not None:
        return integrity == want_integrity
    if integrity == "truncated":
        return outcome in ("mp-fail", "reset", "stalled")
    return integrity in ("ok", "alg-edited")
