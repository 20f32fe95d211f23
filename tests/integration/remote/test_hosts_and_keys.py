"""Host keys against known_hosts and unusable hosts, with real sshd servers (`--check`: the
hosts are connected, the project shipped and doctor run, but no cell is run)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.remote.lab import PROJECT, Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

CI_SPEC = str(PROJECT / "experiments" / "fallback_matrix_ci.toml")


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("testbed: ")
    return lines[0]


def test_unknown_keys_refused_then_accepted_and_a_changed_key_refused(lab: Lab, tmp_path: Path) -> None:
    lab.known_hosts.write_text("")
    h1, h2 = lab.servers["h1"], lab.servers["h2"]
    out = str(tmp_path / "out")

    refused = lab.controller(CI_SPEC, "--hosts", "h1,h2", "--out", out, "--check")
    assert refused.returncode == 2
    line = one_line_error(refused.stderr)
    for server in (h1, h2):
        assert "unknown host key ssh-ed25519 SHA256:" in line and server.address in line
    assert "--accept-new-host-keys" in line and f"ssh-keyscan -p 2222 {h2.address}" in line
    assert lab.known_hosts.read_text() == ""  # nothing written without the flag

    accepted = lab.controller(CI_SPEC, "--hosts", "h1,h2", "--out", out, "--check", "--accept-new-host-keys")
    assert accepted.returncode == 0, accepted.stderr
    assert "h1 " in accepted.stdout and "h2 " in accepted.stdout
    assert "nothing run (--check)" in accepted.stdout
    # exactly the servers' keys, under the names OpenSSH itself uses ([host]:port off port 22)
    assert sorted(lab.known_hosts.read_text().splitlines()) == sorted(
        [h1.known_hosts_line().strip(), h2.known_hosts_line().strip()])

    known_now = lab.controller(CI_SPEC, "--hosts", "h1,h2", "--out", out, "--check")
    assert known_now.returncode == 0, known_now.stderr
    # Debian's ssh hashes known_hosts names (HashKnownHosts yes): such a file works the same
    subprocess.run(["ssh-keygen", "-H", "-f", str(lab.known_hosts)], check=True, capture_output=True)
    assert "10.231." not in lab.known_hosts.read_text()
    hashed = lab.controller(CI_SPEC, "--hosts", "h1,h2", "--out", out, "--check")
    assert hashed.returncode == 0, hashed.stderr

    before = lab.known_hosts.read_text()
    lab.new_host_key(h2)
    changed = lab.controller(CI_SPEC, "--hosts", "h2", "--out", out, "--check", "--accept-new-host-keys")
    assert changed.returncode == 2
    line = one_line_error(changed.stderr)
    assert f"host key CHANGED for [{h2.address}]:2222" in line
    assert "refused even with --accept-new-host-keys" in line
    assert f"ssh-keygen -R '[{h2.address}]:2222'" in line
    assert lab.known_hosts.read_text() == before  # the changed key was not written

    # with a usable host beside it, the changed one is refused by name and the run goes on
    mixed = lab.controller(CI_SPEC, "--hosts", "h1,h2", "--out", out, "--check", "--accept-new-host-keys")
    assert mixed.returncode == 0, mixed.stderr
    assert "[remote] h2: refused: h2: host key CHANGED" in mixed.stderr
    assert "[remote] h1: ready" in mixed.stderr


def test_unreachable_hosts_are_one_line_exit_2(lab: Lab, tmp_path: Path) -> None:
    # a closed port on a live host, and an address with no route from the controller
    done = lab.controller(CI_SPEC, "--hosts", "root@10.231.1.2:2,root@10.231.99.9", "--out",
                          str(tmp_path / "out"), "--connect-timeout", "3")
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert line.startswith("testbed: no usable host: root@10.231.1.2:2: unreachable (Connection refused); ")
    assert line.endswith("root@10.231.99.9: unreachable (Network is unreachable)")


def test_a_host_that_cannot_run_experiments_is_refused_by_name(lab: Lab, tmp_path: Path) -> None:
    """The remote interpreter is checked, and so is the code it imports."""
    missing = lab.controller(CI_SPEC, "--hosts", "h1", "--out", str(tmp_path / "out"), "--check",
                             "--remote-python", "/nonexistent/python3")
    assert missing.returncode == 2
    line = one_line_error(missing.stderr)
    assert line.startswith("testbed: no usable host: h1: remote python /nonexistent/python3 not found")


def test_default_setup_runs_setup_sh_and_reuses_the_current_venv(lab: Lab, tmp_path: Path) -> None:
    """Without --remote-python the host runs the project's own scripts/setup.sh in the shipped
    tree. The lab has no route to PyPI, so the shared venv (`remote-dir/venv`) is seeded with a
    view of this machine's .venv stamped with the current pyproject.toml, as a previous setup
    would have left it: the new tree must link it, setup.sh must find it current (apt packages
    checked, no pip), and the probe must run the tree's .venv/bin/python."""
    seed = lab.remote_dir / "seed-venv"
    (seed / "bin").mkdir(parents=True)
    (seed / "bin" / "python").symlink_to(Path(sys.executable).resolve())
    shutil.copy(PROJECT / ".venv" / "pyvenv.cfg", seed / "pyvenv.cfg")
    (seed / "lib").symlink_to(PROJECT / ".venv" / "lib")
    stamp = hashlib.sha256((PROJECT / "pyproject.toml").read_bytes()).hexdigest()
    (seed / ".installed-from").write_text(stamp)
    (lab.remote_dir / "venv").symlink_to(seed)
    out = tmp_path / "out"
    done = subprocess.run(
        lab.controller_argv(CI_SPEC, "--hosts", "h1", "--out", str(out), "--check",
                            "--ssh-config", str(lab.ssh_config), "--known-hosts", str(lab.known_hosts),
                            "--identity", str(lab.client_key), "--remote-dir", str(lab.remote_dir),
                            ssh_defaults=False),
        capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert done.returncode == 0, done.stdout + done.stderr
    trees = [p for p in lab.remote_dir.iterdir() if re.fullmatch(r"[0-9a-f]{16}", p.name)]
    assert len(trees) == 1
    assert os.readlink(trees[0] / ".venv") == str(lab.remote_dir / "venv")
    assert f"python {trees[0]}/.venv/bin/python" in done.stdout
    log = (out / "h1" / "remote.log").read_text()
    assert f"flock {lab.remote_dir}/.setup.lock {trees[0]}/scripts/setup.sh" in log
    assert "setup: ready" in log and "creating .venv" not in log
