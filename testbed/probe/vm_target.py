"""`--target kernel@VERSION`: the kernel target in a VM booted with a fetched kernel.

The target host's namespace hands its place to a VM (testbed.endpoints.vm_kernel, the same
launcher a `kernel = "6.12"` endpoint uses): its addresses, routes, MPTCP limits and sysctls move
into the guest, which runs testbed.probe.guest_target, the kernel echo server plus a file-based
control channel (`GuestControl`) for what the host does between probes in a host namespace:
MPTCP endpoints per setting, the target as client, the MPTcpExt counters. One boot per run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.probe.guest_target import REPLY_PREFIX, REQUEST_PREFIX, write_atomic

KERNEL_AT = "kernel@"
REQUEST_TIMEOUT_S = 30.0  # a TCG guest on a loaded 2-core host answers in 0.1-2 s; `ip` in seconds
STOP_TIMEOUT_S = 45.0  # SIGTERM to the guest's program, its status back, qemu killed


def vm_selector(target: str) -> str | None:
    """The fetched kernel's selector of a kernel@VERSION target, else None."""
    return target[len(KERNEL_AT):] if target.startswith(KERNEL_AT) else None


def check_fetched(target: str, selector: str) -> str:
    """The release a kernel@VERSION target boots; one line (ProbeError) when it is not fetched."""
    from testbed import kernels
    from testbed.probe.bed import ProbeError

    if not selector:
        raise ProbeError(f"target {target}: give a version after '@' (6.1, 6.12, newest; "
                         "`testbed kernels list` shows the fetched ones)")
    try:
        return kernels.find_fetched(selector, kernels.cache_dir()).release
    except TestbedError as exc:
        raise ProbeError(f"target {target}: {exc.message}") from None


def launch_argv(selector: str, state: Path, announced: str, listen: str, port: int,
                client_to: str) -> list[str]:
    """The target process in the target host's namespace: the VM launcher running the guest
    target (its stdout is the guest's, so `listening` arrives as from a local target)."""
    return [sys.executable, "-m", "testbed.endpoints.vm_kernel", "--kernel", selector,
            "--state", str(state), "--",
            sys.executable, "-m", "testbed.probe.guest_target", str(state / "control"),
            "--listen", listen, "--port", str(port), "--announced", announced,
            "--client-to", client_to]


def launch_env() -> dict[str, str]:
    """No matrix pool: the probe run boots its own VM (one for all its probes)."""
    env = dict(os.environ)
    env.pop("TESTBED_VM_POOL", None)
    return env


class GuestControl:
    """Requests to the guest target over files in its control directory (9p-shared)."""

    def __init__(self, directory: Path, alive: Any = None) -> None:
        self.directory = directory
        self.alive = alive or (lambda: True)
        self.number = 0

    def ask(self, op: str, timeout_s: float = REQUEST_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        from testbed.probe.bed import ProbeError

        self.number += 1
        self.directory.mkdir(parents=True, exist_ok=True)
        reply_path = self.directory / f"{REPLY_PREFIX}{self.number:06d}.json"
        write_atomic(self.directory / f"{REQUEST_PREFIX}{self.number:06d}.json",
                     json.dumps({"op": op, **fields}))
        deadline = time.monotonic() + timeout_s
        while not reply_path.exists():
            if time.monotonic() > deadline or not self.alive():
                raise ProbeError(f"the VM target did not answer its control request {op!r} within "
                                 f"{timeout_s:.0f} s" + ("" if self.alive() else " (its VM stopped)"))
            time.sleep(0.02)
        reply = json.loads(reply_path.read_text())
        reply_path.unlink(missing_ok=True)
        if not reply.get("ok"):
            raise ProbeError(f"the VM target refused its control request {op!r}: {reply.get('error')}")
        return reply

