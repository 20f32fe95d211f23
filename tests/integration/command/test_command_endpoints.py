"""Command endpoints for real (docs/command-endpoints.md): stock Debian tools made MPTCP with
mptcpize and the bundled stack as a stdin/stdout program, run by `testbed run` and `testbed
matrix` in real namespaces on the host kernel; and the contract's bad input (an unknown
placeholder, a program that does not exist, one that never becomes ready or never exits):
one line, exit 2, nothing left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import RUN_ID, leftovers, run_cli

EXAMPLES = Path(__file__).resolve().parents[3] / "experiments" / "command"
pytestmark = pytest.mark.root


def _need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")


def _no_process(pattern: str) -> list[str]:
    """Processes whose command line contains `pattern` (none may outlive a run)."""
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if pattern in line and "ps -eo" not in line]


def _run(spec: Path, out: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    done = run_cli("run", str(spec), "--out", str(out), timeout=timeout)
    match = RUN_ID.search(done.stdout)
    assert match, done.stdout + done.stderr
    assert leftovers(match.group(1)) == []
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    return done, result


def test_mptcpized_ncat_uses_both_paths_with_intact_data(tmp_path: Path) -> None:
    _need("ncat", "mptcpize")
    done, result = _run(EXAMPLES / "ncat_kernel.toml", tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    (conn,) = result["connections"]
    assert conn["client_stack"] == conn["server_stack"] == "command:ncat"
    assert conn["outcome"] == "mptcp" and conn["integrity"] == "ok" and conn["bytes"] == 20_000_000
    # per-subflow figures from ss: both client addresses carried a real share
    sources = sorted(s["local"].split(":")[0].split("%")[0] for s in conn["subflows"])
    assert sources == ["10.0.1.1", "10.0.2.1"]
    assert all(s["bytes"] > 2_000_000 for s in conn["subflows"])
    assert conn["counters"]["server"]["MPTcpExtMPJoinAckRx"] == 1
    client, server = result["endpoints"]["client"], result["endpoints"]["server"]
    assert client["command"]["line"] == "mptcpize run ncat --send-only 10.0.100.2 5201"
    assert client["command"]["exit_status"] == 0 and client["command"]["kernel_view"] == "ss"
    # the -k server never exits by itself: stopped by the testbed once the peer closed
    assert server["command"]["exit_status"] is None and server["exit_code"] == 0
    assert _no_process("ncat -k -l 10.0.100.2") == []


def test_the_python_stack_runs_through_the_contract(tmp_path: Path) -> None:
    done, result = _run(EXAMPLES / "python_stack.toml", tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    (conn,) = result["connections"]
    assert conn["outcome"] == "mptcp" and conn["integrity"] == "ok" and conn["bytes"] == 4_000_000
    assert len([s for s in conn["subflows"] if s["bytes"] > 0]) == 2
    for role in ("client", "server"):
        command = result["endpoints"][role]["command"]
        assert command["exit_status"] == 0
        # no kernel socket for ss: the figures are the program's own report, and it says so
        assert command["kernel_view"].startswith("unavailable: no kernel socket")
        assert command["kernel_view"].endswith("program's own stack report")


def test_a_command_stack_pairs_with_the_kernel_endpoint_in_a_matrix(tmp_path: Path) -> None:
    _need("ncat", "mptcpize")
    out = tmp_path / "matrix"
    done = run_cli("matrix", str(EXAMPLES / "ncat_matrix.toml"), "--out", str(out), "--rows", "none",
                   "--pairings", "command:ncat-kernel,kernel-command:ncat", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "matrix.json").read_text())
    cells = {cell["pairing"]: cell for cell in doc["cells"]}
    assert set(cells) == {"command:ncat-kernel", "kernel-command:ncat"}
    assert all(cell["as_expected"] for cell in cells.values())
    assert "command:ncat → kernel" in (out / "matrix.md").read_text()


SPEC = """
name = "bad_command"
[topology]
name = "two_path"
[[endpoints]]
role = "server"
stack = "command"
command = {server!r}
{ready}
[[endpoints]]
role = "client"
stack = "command"
command = {client!r}
[traffic]
bytes = 100000
timeout_s = 3
"""
GOOD_SERVER = "mptcpize run ncat -k -l {listen_addr} {port}"
GOOD_CLIENT = "mptcpize run ncat --send-only {server_addr} {port}"


@pytest.mark.parametrize("server, client, ready, wanted", [
    (GOOD_SERVER, "ncat {server_adr} {port}", "", "unknown placeholder {server_adr}"),
    (GOOD_SERVER, "mptcpize run no-such-tool-xyz {server_addr}", "", "'no-such-tool-xyz' not found"),
    ("sleep 600", GOOD_CLIENT, "", "was not ready within 3 s"),
    ("sh -c 'exit 5'", GOOD_CLIENT, "", "exited with status 5 before it was ready"),
    (GOOD_SERVER, "sh -c 'cat >/dev/null; exec sleep 600'", 'done = "peer-close"',
     "did not exit within 3 s"),
])
def test_bad_commands_are_one_line_and_leave_nothing(tmp_path: Path, server: str, client: str, ready: str,
                                                     wanted: str) -> None:
    _need("ncat", "mptcpize")
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(server=server, client=client, ready=ready))
    out = tmp_path / "out"
    done = run_cli("run", str(spec), "--out", str(out), timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and wanted in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not (out / "result.json").exists()
    match = RUN_ID.search(done.stdout)
    if match:
        assert leftovers(match.group(1)) == []
    assert _no_process("sleep 600") == [] and _no_process("ncat -k -l") == []
