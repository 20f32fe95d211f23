"""testbed.probe: an MPTCP conformance prober (raw packets from a testbed host) and its probes.

`run_probes(target, names, out, stacks=None)` runs the probes against "kernel",
"kernel@VERSION", "python" or "command:NAME" (its [stacks.NAME] table in `stacks`) and writes
out/probes.json (the interface `testbed survey` reads) and out/probes.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_probes(target: str, names: list[str] | None, out: Path,
               stacks: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    from testbed.probe.run import run_probes as run

    return run(target, names, out, stacks=stacks)


__all__ = ["run_probes"]
