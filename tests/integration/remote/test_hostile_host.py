"""A lab host that turns hostile (issue 13 point 6): it sends back a tampered shard (a symbolic
link out of the output directory, a hard link, a device file, a huge file), changes its host key
in the middle of a run, or is given a remote directory with '..'. Each is refused with one line
naming what is wrong, and nothing is written outside the output directory.

The symbolic link goes the whole way: the lab's real sshd runs the real remote matrix, and its
--remote-python is a wrapper that, after the shard's `testbed matrix` finished, plants the link
in the shard's output before the controller downloads it. The other tampered files are planted
in a shard-like directory and fetched by the controller's own download (`download_tree`, over
the lab's sshd and sftp), which is where every kind is refused; a whole matrix run for each
would only repeat the first test's path around it.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.remote.lab import PROJECT, Lab
from tests.integration.remote.test_remote_run import CI_SPEC, Controller, kill_host, wait_for_remote_cell

pytestmark = [pytest.mark.root, pytest.mark.slow]

WRAPPER = """#!/bin/sh
{python} "$@"
status=$?
out=""
for word in "$@"; do
    case "$word" in --out=*) out="${{word#--out=}}" ;; esac
done
if [ "$2" = "testbed.remote.agent" ] && [ "$3" = "matrix" ] && [ -n "$out" ]; then
    cell="$out/cells/none/kernel-kernel"
    {tamper}
fi
exit $status
"""

TAMPERING = {
    # what the host plants (shell, $cell is the directory the controller downloads), and what
    # the controller must say about it
    "symlink": ('ln -s {outside} "$cell/evil"', r"refusing '.*/evil': a symbolic link"),
    "hardlink": ('ln "$cell/result.json" "$cell/matrix-again.json"', r"a hard link \(2 names\)"),
    "device": ('mknod "$cell/null" c 1 3', r"refusing '.*/null': a character device"),
    "huge": ('truncate -s 3G "$cell/huge.bin"', r"refusing '.*/huge.bin': 3221225472 bytes, over the limit"),
}
HOSTILE_NAMES = ("evil", "null", "huge.bin", "matrix-again.json")


def _hostile_python(tmp_path: Path, tamper: str) -> Path:
    wrapper = tmp_path / "hostile-python"
    wrapper.write_text(WRAPPER.format(python=sys.executable, tamper=tamper))
    wrapper.chmod(0o755)
    return wrapper


def _outside_listing(outside: Path) -> list[str]:
    return sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))


def _assert_nothing_hostile_landed(outside: Path, out: Path) -> None:
    assert _outside_listing(outside) == ["precious"]
    assert (outside / "precious").read_text() == "keep me\n"
    for path in out.rglob("*"):
        mode = path.lstat().st_mode
        assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), path
        assert path.name not in HOSTILE_NAMES, path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where a link would lead: it must keep exactly its one file."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "precious").write_text("keep me\n")
    return path


def test_a_tampered_shard_is_refused_and_nothing_lands_outside_the_output(lab: Lab, tmp_path: Path,
                                                                          outside: Path) -> None:
    tamper, complaint = TAMPERING["symlink"]
    python = _hostile_python(tmp_path, tamper.format(outside=outside))
    out = tmp_path / "out"
    done = lab.controller(str(CI_SPEC), "--hosts", "h1", "--out", str(out), "--rows", "none",
                          "--remote-python", str(python))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    failed = [line for line in done.stderr.splitlines() if "h1: FAILED during" in line]
    assert len(failed) == 1 and re.search(complaint, failed[0]), done.stderr
    # nothing of the hostile file reached this machine, inside the output or out of it
    _assert_nothing_hostile_landed(outside, out)
    assert not (out / "h1" / ".staging").exists()
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["partial"] is True and doc["summary"]["not_run"] == 1


@pytest.mark.parametrize("kind", ["hardlink", "device", "huge"])
def test_every_other_tampered_file_is_refused_by_the_shard_download(lab: Lab, tmp_path: Path,
                                                                    outside: Path, kind: str) -> None:
    shard = tmp_path / "shard"
    cell = shard / "cells" / "none" / "kernel-kernel"
    cell.mkdir(parents=True)
    (shard / "matrix.json").write_text("{}\n")
    (cell / "result.json").write_text("{}\n")
    tamper, complaint = TAMPERING[kind]
    subprocess.run(["sh", "-c", f'cell="{cell}"; ' + tamper.format(outside=outside)], check=True)
    local = tmp_path / "out" / "h1"
    done = subprocess.run(
        ["ip", "netns", "exec", lab.ctl, "env", f"HOME={lab.home}", sys.executable, "-m",
         "tests.integration.remote.download_probe", "--ssh-config", str(lab.ssh_config),
         "--known-hosts", str(lab.known_hosts), "--identity", str(lab.client_key), "h1", str(shard),
         str(local)], capture_output=True, text=True, timeout=60, cwd=PROJECT)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    verdict = json.loads(done.stdout.strip().splitlines()[-1])
    assert "refused" in verdict and re.search(complaint, verdict["refused"]), verdict
    assert "\n" not in verdict["refused"]
    _assert_nothing_hostile_landed(outside, tmp_path / "out")


def test_a_host_key_changed_mid_run_is_never_trusted(lab: Lab, tmp_path: Path) -> None:
    """h1 is "reinstalled" (new key, connections dropped) while its shard runs: its shard is
    rerun on h2, and neither the run nor --accept-new-host-keys trusts or records the new key."""
    known_before = lab.known_hosts.read_text()
    out = tmp_path / "out"
    controller = Controller(lab, str(CI_SPEC), "--hosts", "h1,h2", "--out", str(out),
                            "--rows", "none,strip_mp_join", "--accept-new-host-keys")
    wait_for_remote_cell(lab, "h1")
    kill_host(lab, "h1")
    lab.new_host_key(lab.servers["h1"])
    status, stdout, stderr = controller.finish()
    assert status == 0, stdout + stderr
    assert re.search(r"h1: FAILED during .*: connection lost", stderr), stderr
    doc = json.loads((out / "matrix.json").read_text())
    assert {c["host"] for c in doc["cells"]} == {"h2"} and doc["partial"] is False
    assert lab.known_hosts.read_text() == known_before
    # a new run meets the changed key and refuses the host, by name, in one line
    again = lab.controller(str(CI_SPEC), "--hosts", "h1", "--out", str(tmp_path / "again"),
                           "--rows", "none", "--accept-new-host-keys")
    assert again.returncode == 2, again.stdout + again.stderr
    assert "host key CHANGED" in again.stderr and "Traceback" not in again.stderr
    assert again.stderr.strip().count("\n") == 0, again.stderr
    assert lab.known_hosts.read_text() == known_before


@pytest.mark.parametrize("remote_dir", ["{tmp}/rd/../escape", "{tmp}/rd/.."])
def test_a_remote_directory_with_dot_dot_is_refused_before_connecting(lab: Lab, tmp_path: Path,
                                                                      remote_dir: str) -> None:
    """(Paths under tmp_path: were the check gone, the project would land in tmp_path/escape
    or tmp_path itself, not somewhere on this machine.)"""
    done = lab.controller(str(CI_SPEC), "--hosts", "h1", "--out", str(tmp_path / "out"), "--rows", "none",
                          "--remote-dir", remote_dir.format(tmp=tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("testbed: --remote-dir") and "'..' is not allowed" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs").exists()
