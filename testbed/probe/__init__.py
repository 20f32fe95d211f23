"""testbed.probe: an MPTCP conformance prober (raw packets from a testbed host) and its probes.

`run_probes(target, names, out)` runs the probes against "kernel" or "python" and writes
out/probes.json (the interface `testbed survey` reads) and out/probes.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_probes(target: str, names: list[str] | None, out: Path) -> list[dict[str, Any]]:
    from testbed.probe.run import run_probes as run

    return run(target, names, out)


__all__ = ["run_probes"]
