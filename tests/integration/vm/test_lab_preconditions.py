"""`testbed lab`: what Vagrant needs is checked first, each missing piece one line naming what to
run (never Vagrant's backtrace). Real commands on this machine: with no lab packages they name
`make lab-setup`, with the provider but no box `make lab-box`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testbed.lab_vagrant import _last_error

PROJECT = Path(__file__).resolve().parents[3]


def _lab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "lab", *args], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_up_without_the_box_or_the_provider_is_one_line_naming_the_make_target(tmp_path: Path) -> None:
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant-home"))
    env.pop("TESTBED_BOX", None)
    done = _lab("up", env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "run: make lab-box" in lines[0] or "run: make lab-setup" in lines[0], lines[0]
    boxes = tmp_path / "vagrant-home" / "boxes"
    assert not boxes.exists() or not any(boxes.iterdir())  # nothing fetched or added


def test_too_little_memory_is_refused_before_vagrant_starts(tmp_path: Path) -> None:
    env = dict(os.environ, TESTBED_LAB_MEMORY_MB=str(10**8), TESTBED_BOX="mptcp-testbed/bookworm64")
    done = _lab("up", env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    # on a machine with the provider set up the memory check is reached; elsewhere setup is named
    assert "not enough memory" in line or "run: make lab-setup" in line or "libvirt" in line, line


def test_vagrants_failure_is_reduced_to_its_error_line() -> None:
    output = """Bringing machine 'default' up with 'libvirt' provider...
==> default: Box 'no/such-box' could not be found. Attempting to find and install...
    default: Box Provider: libvirt
The box 'no/such-box' could not be found or
could not be accessed in the remote catalog. If this is a private
box on HashiCorp's Vagrant Cloud, please verify you're logged in via
`vagrant login`. Also, please double-check the name. The expanded
URL and error message are shown below:

URL: ["https://vagrantcloud.com/no/such-box"]
Error: Could not resolve host: vagrantcloud.com
/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/lib/vagrant/action/builtin/box_add.rb:10:in `call'
	from /usr/share/rubygems-integration/all/gems/vagrant-2.3.4/lib/vagrant/action/warden.rb:48:in `call'"""
    assert _last_error(output.splitlines()) == "Error: Could not resolve host: vagrantcloud.com"
