"""The Vagrant lab: `vagrant validate` accepts the Vagrantfile (and rejects a broken one, so the
check bites), and provisioning runs the very set-up `make` uses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]
VAGRANTFILE = PROJECT / "Vagrantfile"


def _code_lines(text: str) -> str:
    """The Vagrantfile without Ruby comments, so documentation cannot satisfy a check."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _validate(directory: Path) -> subprocess.CompletedProcess:
    """`vagrant validate` on a copy: no .vagrant/ state in the work tree, no user's ~/.vagrant.d.
    --ignore-provider: the machines running this have no VirtualBox or libvirt provider."""
    env = dict(os.environ, VAGRANT_HOME=str(directory / "home"),
               VAGRANT_DOTFILE_PATH=str(directory / "dot"), VAGRANT_CHECKPOINT_DISABLE="1")
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def vagrant() -> str:
    found = shutil.which("vagrant")
    if found is None:
        pytest.skip("vagrant not installed (scripts/setup.sh installs Debian's `vagrant`)")
    return found


def test_vagrant_validate_accepts_the_vagrantfile(vagrant: str, tmp_path: Path) -> None:
    shutil.copy(VAGRANTFILE, tmp_path / "Vagrantfile")
    done = _validate(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


def test_vagrant_validate_rejects_a_broken_vagrantfile(vagrant: str, tmp_path: Path) -> None:
    # (a missing box is not an error once vagrant-libvirt is installed: it can boot box-less VMs)
    broken = VAGRANTFILE.read_text().replace('config.vm.hostname = "mptcp-testbed"',
                                             'config.vm.hostname = "not a host name!"')
    assert broken != VAGRANTFILE.read_text()
    (tmp_path / "Vagrantfile").write_text(broken)
    done = _validate(tmp_path)
    assert done.returncode != 0
    assert "hostname" in (done.stdout + done.stderr).lower()


def test_provisioning_runs_the_same_setup_as_make() -> None:
    code = _code_lines(VAGRANTFILE.read_text())
    provisions = re.findall(r'config\.vm\.provision\s+"[^"]+",\s*type:\s*"shell"(.*?)(?:\n\s*end|\Z)', code,
                            re.DOTALL)
    assert len(provisions) == 1, "exactly one shell provisioner"
    inline = re.search(r'inline:\s*"([^"]*)"', provisions[0])
    assert inline is not None
    assert inline.group(1) == "cd /vagrant && make setup"
    assert re.search(r"privileged:\s*true", provisions[0]), "setup must run as root"
    makefile = (PROJECT / "Makefile").read_text()
    setup_recipe = re.search(r"^setup:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert setup_recipe is not None and "scripts/setup.sh" in setup_recipe.group(1)
    demo = re.search(r"^demo:\s*(.*)$", makefile, re.MULTILINE)
    assert demo is not None and "setup" in demo.group(1).split()  # `make demo` in the VM sets up too


def test_box_is_debian_12_with_the_repo_at_vagrant_on_both_providers() -> None:
    code = _code_lines(VAGRANTFILE.read_text())
    # the locally built box when it was added (make lab-box), $TESTBED_BOX, else the catalogue's
    assert re.search(r'config\.vm\.box\s*=\s*ENV\["TESTBED_BOX"\]\s*\|\|\s*'
                     r'\(local_box_added\? \? LOCAL_BOX : "debian/bookworm64"\)', code)
    assert re.search(r'LOCAL_BOX\s*=\s*"mptcp-testbed/bookworm64"', code)
    assert re.search(r'config\.vm\.synced_folder\s+"\.",\s*"/vagrant"', code)
    providers = set(re.findall(r'config\.vm\.provider\s+"(\w+)"', code))
    assert providers == {"libvirt", "virtualbox"}
    assert not re.search(r"forwarded_port|public_network", code), "the lab exposes nothing"
