"""One `[section]` of a driver's own spec file (`testbed proxy`, `testbed lb`): a table with
known keys only, so a typo is one line naming the key and the keys there are."""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError


def section(data: dict[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    """`data[key]` (an empty table when absent); a non-table or an unknown key is a SpecError."""
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [{key}] must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise SpecError(f"{where}: [{key}] unknown key {sorted(unknown)[0]!r} "
                        f"(known: {', '.join(sorted(allowed))})")
    return table
