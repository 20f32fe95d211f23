"""A matrix row across Linux versions: does every version behave the same (issue 14 point 3)?

Pairings that differ only in kernel versions (kernel-kernel, kernel@6.1-kernel,
kernel-kernel@6.12, ...) form a family, named by the pairing on the host's kernel. Within each
family the cells' classes (outcome and integrity) are compared: "same on all versions", or the
classes with the pairings showing each. Families are not compared with each other (python ->
kernel may rightly differ from kernel -> kernel on one version). Cells not run or failed are
left out and said so.
"""

from __future__ import annotations

from typing import Any

from testbed.matrix_pairing import host_pairing

SAME = "same on all versions"
ARROW = " \u2192 "


def has_versions(doc: dict[str, Any]) -> bool:
    """Whether the matrix names any kernel version (then its tables get a summary column)."""
    return any("@" in str(p) for p in doc.get("pairings", []))


def cell_class(cell: dict[str, Any]) -> str | None:
    """'outcome' or 'outcome · integrity' of a cell that ran, else None."""
    if cell.get("status") != "ok":
        return None
    integrity = cell.get("integrity")
    outcome = str(cell.get("outcome", "?"))
    return f"{outcome} \u00b7 {integrity}" if integrity and integrity != "ok" else outcome


def families(pairings: list[str]) -> dict[str, list[str]]:
    """host pairing -> its pairings (in matrix order), only those with more than one."""
    grouped: dict[str, list[str]] = {}
    for pairing in pairings:
        grouped.setdefault(host_pairing(pairing), []).append(pairing)
    return {family: members for family, members in grouped.items() if len(members) > 1}


def row_summary(doc: dict[str, Any], row: str) -> str:
    """One line for a row: SAME, or per family where the versions differ."""
    cells = {(c["row"], c["pairing"]): c for c in doc.get("cells", [])}
    parts = []
    missing = 0
    for family, members in families(list(doc.get("pairings", []))).items():
        classes: dict[str, list[str]] = {}
        for pairing in members:
            found = cell_class(cells.get((row, pairing), {}))
            if found is None:
                missing += 1
            else:
                classes.setdefault(found, []).append(pairing)
        if len(classes) > 1:
            shown = "; ".join(f"{name}: {', '.join(ps)}" for name, ps in classes.items())
            parts.append(f"{family.replace('-', ARROW)} differs ({shown})")
    ran = sum(len(m) for m in families(list(doc.get("pairings", []))).values()) - missing
    if ran == 0:
        return "not run"
    text = "; ".join(parts) if parts else SAME
    return text + (f" ({missing} cells not run or failed)" if missing else "")
