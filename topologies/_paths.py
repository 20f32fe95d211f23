"""Helpers shared by the topology builders: per-path overrides of common link parameters."""

from __future__ import annotations

from typing import Any

from testbed.errors import SpecError
from testbed.net.params import LinkParams


def path_params(base: dict[str, Any], override: dict[str, Any] | None, where: str) -> LinkParams:
    """Common parameters with a path's own overrides on top."""
    if override is not None and not isinstance(override, dict):
        raise SpecError(f"{where}: must be a table of link parameters")
    return LinkParams.from_dict({**base, **(override or {})}, where=where)
