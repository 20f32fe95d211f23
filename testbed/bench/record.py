"""The benchmark file: one versioned JSON per `testbed bench` run, and its figures.

    {"schema": "testbed-bench", "version": 1, "created": ISO time, "quick": bool,
     "machine": {cpu_model, cores, kernel, python, implementation, commit, load_average},
     "calibration": {"id", "loops_per_second", "rounds"},
     "figures": {NAME: {"value", "unit", "reference", "rounds", "better", "gated",
                        "tolerance", "limit", "detail"}}}

A figure that depends on the machine's speed is a ratio to a reference measured in the same
run (`reference` says which); `rounds` holds every round's value (`value` is their median, or
the best round where noise only slows a round down, as `detail.aggregate` says). `better` is
"higher" or "lower". A gated figure fails the comparison when the baseline-relative ratio falls
below `tolerance` (and, for a "lower" figure, it is also above `limit`, an absolute bound under
which it always passes).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.mptcp.native import STATE as STACK_CORE
from testbed.wire.checksum import CHECKSUM_IMPLEMENTATION

SCHEMA = "testbed-bench"
VERSION = 1
BETTER = ("higher", "lower")


@dataclass
class Figure:
    """One benchmark figure, with what it is a ratio to and every round behind it."""

    value: float
    unit: str
    reference: str
    rounds: list[float]
    better: str = "higher"
    gated: bool = True
    tolerance: float = 0.5
    limit: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str | None:
    """The checkout's commit (with "+dirty" when files differ), or None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=False, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """What the figures were measured on: a baseline from another machine is not comparable."""
    return {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "checksum": CHECKSUM_IMPLEMENTATION,
            "stack_core": STACK_CORE.describe(), "commit": _commit(),
            "load_average_before": round(os.getloadavg()[0], 2)}


def document(figures: dict[str, Figure], calibration: dict[str, Any], *, quick: bool,
             machine_info: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick,
            "machine": {**machine_info, "load_average_after": round(os.getloadavg()[0], 2)},
            "calibration": calibration,
            "figures": {name: figure.as_dict() for name, figure in sorted(figures.items())}}


def write(path: Path, doc: dict[str, Any]) -> None:
    """Write the file; a failed write is an error, never a lost result."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as error:
        raise TestbedError(f"cannot write the benchmark file {path}: {error.strerror}") from error


def load(path: str | Path) -> dict[str, Any]:
    """A benchmark file, checked: SpecError (one line, exit 2) names what is wrong."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as error:
        raise SpecError(f"cannot read the benchmark baseline {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise SpecError(f"{path}: not JSON ({error.msg} at line {error.lineno}); give a file "
                        f"written by `testbed bench --out`") from error
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise SpecError(f"{path}: not a benchmark file (schema is not {SCHEMA!r}); give a file "
                        f"written by `testbed bench --out`")
    if doc.get("version") != VERSION:
        raise SpecError(f"{path}: benchmark file version {doc.get('version')!r}, this testbed "
                        f"reads version {VERSION}; re-measure the baseline with `testbed bench`")
    figures = doc.get("figures")
    if not isinstance(figures, dict):
        raise SpecError(f"{path}: 'figures' must be an object of figure name -> figure")
    for name, figure in figures.items():
        _check_figure(path, name, figure)
    return doc


def _check_figure(path: Path, name: str, figure: Any) -> None:
    where = f"{path}: figure {name!r}"
    if not isinstance(figure, dict):
        raise SpecError(f"{where} must be an object")
    for key, kinds in (("value", (int, float)), ("tolerance", (int, float)), ("gated", bool),
                       ("unit", str), ("reference", str), ("rounds", list)):
        if not isinstance(figure.get(key), kinds) or (key == "value" and isinstance(
                figure.get(key), bool)):
            raise SpecError(f"{where}: '{key}' is missing or not a {kinds[0].__name__}")
    if figure.get("better") not in BETTER:
        raise SpecError(f"{where}: 'better' must be one of {', '.join(BETTER)}")
    if not 0 < figure["tolerance"] <= 1:
        raise SpecError(f"{where}: 'tolerance' must be in (0, 1], got {figure['tolerance']}")
    limit = figure.get("limit")
    if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool)):
        raise SpecError(f"{where}: 'limit' must be a number or null")
