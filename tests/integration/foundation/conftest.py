"""Shared helpers for the foundation's real-namespace tests: specs in tmp dirs, the CLI as a user
runs it, and checks that a run left nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTBED = [sys.executable, "-m", "testbed.cli"]
RUN_ID = re.compile(r"\(run ([0-9a-f]{6})")

if os.geteuid() != 0:
    pytest.skip("foundation integration tests need root (namespaces, tc, nft)", allow_module_level=True)

SPEC_TEMPLATE = """
name = "{name}"
seed = 3
[topology]
name = "two_path"
[topology.params]
rate_mbit = {rate}
delay_ms = {delay}
[[endpoints]]
role = "server"
stack = "{server}"
[[endpoints]]
role = "client"
stack = "{client}"
[traffic]
seconds = {seconds}
{extra}
"""


def write_spec(tmp_path: Path, *, name: str = "t", seconds: float = 3, rate: float = 100, delay: float = 0,
               client: str = "kernel", server: str = "kernel", extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC_TEMPLATE.format(name=name, seconds=seconds, rate=rate, delay=delay, client=client,
                                         server=server, extra=extra))
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[3])


def leftovers(run_id: str) -> list[str]:
    """Namespaces, state files and processes of a run that still exist."""
    found = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
             if n.startswith(f"tb-{run_id}-")]
    if Path(f"/run/testbed/runs/{run_id}.json").exists():
        found.append(f"state file {run_id}")
    if Path(f"/run/testbed/{run_id}").exists():
        found.append(f"work dir {run_id}")
    return found
