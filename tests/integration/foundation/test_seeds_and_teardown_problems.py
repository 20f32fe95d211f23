"""Point 5 and 6 of issue 11 on a real machine: every endpoint's seed and exit code is in
result.json, and what teardown cannot undo is reported, not swallowed."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from testbed.net.build import Network
from testbed.net.state import NETNS_DIR, RunState, delete_netns, netns_inode, new_run_id
from testbed.runner import detect_backends, endpoint_seed
from tests.integration.foundation.conftest import RUN_ID, leftovers, run_cli, write_spec
from topologies import build_topology


def test_a_python_run_records_the_seed_and_exit_code_of_each_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("run", str(write_spec(tmp_path, seconds=2, client="python")), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert leftovers(RUN_ID.search(done.stdout).group(1)) == []
    result = json.loads((out / "result.json").read_text())
    assert result["schema"] == 3 and result["seed"] == 3
    client, server = result["endpoints"]["client"], result["endpoints"]["server"]
    assert client == {"stack": "python", "seed": endpoint_seed(3, "client"), "payload_seed": 3,
                      "exit_code": 0}
    assert server == {"stack": "kernel", "seed": None, "payload_seed": None, "exit_code": 0,
                      "kernel": platform.release()}  # the release a kernel endpoint ran on
    assert result["connections"][0]["integrity"] == "ok"
    assert result["teardown_problems"] == []


def _stuck_name() -> tuple[str, Path]:
    """A name under /run/netns that `ip netns delete` cannot remove: a directory, not a mount."""
    name = f"tb-{new_run_id()}-stuck"
    path = NETNS_DIR / name
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    path.mkdir()
    return name, path


def test_a_namespace_that_will_not_delete_is_reported() -> None:
    name, path = _stuck_name()
    try:
        problems = delete_netns([name])
        assert netns_inode(name) is not None
        assert len(problems) == 1 and problems[0].startswith(f"namespace {name} could not be deleted")
    finally:
        path.rmdir()


def test_network_teardown_reports_it_on_stderr_and_keeps_it(capfd: pytest.CaptureFixture[str]) -> None:
    state = RunState.create()
    name, path = _stuck_name()
    try:
        with Network(build_topology("two_path", {}), detect_backends(), state) as net:
            state.add_netns(name)  # as if this run had made it
        assert len(net.teardown_problems) == 1 and name in net.teardown_problems[0]
        assert net.teardown_problems[0] in capfd.readouterr().err
        assert [n for n in state.netns if netns_inode(n) is not None] == [name]
    finally:
        path.rmdir()
        state.remove()
