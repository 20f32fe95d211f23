"""The checks every driver's own spec file needs (`testbed proxy`, `testbed lb`): tables with
known keys only, so a typo is one line naming the key and the keys there are, and spec names
that do not collide (each names its result directory)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from testbed.errors import SpecError


def reject_unknown(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    """A SpecError "<prefix> unknown key 'k' (known: ...)" when the table has a key not allowed."""
    unknown = set(table) - allowed
    if unknown:
        raise SpecError(f"{prefix} unknown key {sorted(unknown)[0]!r} "
                        f"(known: {', '.join(sorted(allowed))})")


def section(data: dict[str, Any], key: str, allowed: set[str], where: str) -> dict[str, Any]:
    """`data[key]` (an empty table when absent); a non-table or an unknown key is a SpecError."""
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [{key}] must be a table")
    reject_unknown(table, allowed, f"{where}: [{key}]")
    return table


def distinct_names(names: Iterable[str]) -> None:
    """Specs run in one command must have different names: each names its result directory."""
    names = list(names)
    repeated = sorted(n for n in set(names) if names.count(n) > 1)
    if repeated:
        raise SpecError(f"two specs share the name {repeated[0]!r}: their results would overwrite each other")
