"""A Debian kernel fetched from the archive (idempotently) and booted with `testbed vm run --kernel`.

Real apt, real dpkg-deb, real qemu: the guest must report the fetched release as `uname -r` and
load sch_netem from the fetched module tree (not the host's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import kernels

PROJECT = Path(__file__).resolve().parents[3]
SELECTOR = "6.12"  # Debian 13's kernel: neither the host's nor the one in /boot

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _testbed(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True, text=True,
                          cwd=PROJECT, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def fetched() -> kernels.CachedKernel:
    if os.geteuid() != 0:
        pytest.skip("needs root (the kernel cache and the VM)")
    for tool in ("apt-get", "dpkg-deb", "depmod", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (`make setup`)")
    first = _testbed("kernels", "fetch", SELECTOR, timeout=900)
    assert first.returncode == 0, first.stderr
    kernel = kernels.find_fetched(SELECTOR, kernels.cache_dir())
    assert kernel.root is not None
    return kernel


def test_second_fetch_downloads_nothing_and_list_shows_the_kernel(fetched: kernels.CachedKernel) -> None:
    stamp = (fetched.root / kernels.METADATA).stat().st_mtime_ns
    again = _testbed("kernels", "fetch", SELECTOR, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already fetched" in again.stderr and "downloading" not in again.stderr
    assert (fetched.root / kernels.METADATA).stat().st_mtime_ns == stamp
    listed = _testbed("kernels", "list", "--json", timeout=60)
    entries = {entry["release"]: entry for entry in json.loads(listed.stdout)}
    assert entries[os.uname().release]["suite"] == "(running)"
    entry = entries[fetched.release]
    assert entry["version"] == fetched.version and entry["config"]["CONFIG_MPTCP"] == "y"
    assert "checksum_enabled" in entry["sysctls"]


@pytest.mark.skipif(os.environ.get("TESTBED_LONG") != "1",
                    reason="fetched kernels boot in the VM endpoint and pool tests; this module check "
                           "runs with TESTBED_LONG=1")
def test_boot_the_fetched_kernel_with_its_own_modules(fetched: kernels.CachedKernel) -> None:
    probe = "uname -r; modprobe sch_netem && grep -c '^sch_netem ' /proc/modules; ls /proc/sys/net/mptcp"
    done = _testbed("vm", "run", "--accel", os.environ.get("TESTBED_VM_ACCEL", "tcg"), "--kernel", SELECTOR,
                    "--timeout", "240", "--", "sh", "-c", probe, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split()
    assert lines[0] == fetched.release
    assert lines[1] == "1"  # sch_netem loaded from the fetched tree: the host's has no such release
    assert set(fetched.sysctls or []) <= set(lines[2:])  # the static reading matches the live one
