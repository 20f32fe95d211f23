"""The Vagrant lab booted in the suite: `testbed lab check`, for real, under TCG here.

The full cycle (the full box, provisioning, `make demo` inside: `make lab-cycle`) takes half an
hour under TCG, more than the suite's budget. This boots a box built by the same script without
the project's packages (about 1.5 min to build on a clean machine, then cached) with the
project's Vagrantfile on libvirt, checks ssh, the key swap, /vagrant, sudo and netem in the
guest (ping over lo through a 5 ms netem delay), and that `vagrant destroy -f` leaves nothing.
`make test` sets libvirt up first (`testbed lab setup`), so that what it starts (libvirtd, its
default network and firewall tables) is there before the suite and is not counted as a leak.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.lab_check import CHECK_PREFIX
from testbed.lab_vagrant import leftovers, libvirt_reachable

PROJECT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _lab_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("vagrant") is None or shutil.which("virsh") is None:
        return "vagrant or libvirt is not installed"
    ok, detail = libvirt_reachable()
    return None if ok else f"libvirt is not running ({detail})"


def test_the_lab_box_boots_with_the_vagrantfile_and_leaves_nothing(tmp_path: Path) -> None:
    reason = _lab_ready()
    if reason:
        pytest.skip(f"the lab is not set up ({reason}); run: make lab-setup (make test runs it)")
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "lab", "check", "--out", str(tmp_path)],
                          cwd=PROJECT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=1800)
    assert done.returncode == 0, f"lab check: {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr}"
    record = json.loads((tmp_path / "lab-check.json").read_text())
    assert record["problems"] == [] and record["left_after_destroy"] == []
    guest = record["guest"]
    assert guest["kernel"].endswith("-amd64") and guest["netem"] == "yes", guest
    assert 10.0 <= float(guest["rtt_min_ms"]) <= 15.0, guest  # netem's 5 ms each way
    assert {"vagrant up", "ssh checks", "vagrant destroy"} <= set(record["steps"])
    assert leftovers(CHECK_PREFIX) == []
