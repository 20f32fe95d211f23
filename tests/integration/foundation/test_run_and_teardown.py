"""A user's view of the foundation: doctor, a real run over two_path with the kernel MPTCP, bad
input, and teardown after a normal end, Ctrl-C and kill -9 + `testbed clean`."""

from __future__ import annotations

import csv
import itertools
import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.foundation.conftest import RUN_ID, TESTBED, leftovers, run_cli, write_spec


def test_doctor_json_reports_backends_for_this_kernel() -> None:
    done = run_cli("doctor", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    for key in ("root", "mnexec", "mptcp", "netem", "backends"):
        assert key in report
    assert report["root"] and report["mnexec"] and report["mptcp"]
    assert report["backends"]["rate"] in ("htb", "tbf")
    # the backend must follow the probe: netem where the kernel has it, fallbacks where not
    if report["netem"]:
        assert report["backends"] == {"rate": report["backends"]["rate"], "loss": "netem", "delay": "netem"}
    else:
        assert report["backends"]["loss"] == "nft" and report["backends"]["delay"] == "userspace"


def test_a_clean_during_doctor_leaves_its_namespace_alone(monkeypatch) -> None:
    """Another job's `testbed clean` in the middle of the probes: the doctor's namespace is a
    recorded run with a live runner, so clean keeps it and every later probe still works."""
    from testbed import doctor
    from testbed.net import state

    probe_qdisc = doctor._probe_qdisc
    cleaned: list[str] = []

    def probe_then_clean(netns: str, kind: str, **params):
        if not cleaned:
            cleaned.append(run_cli("clean").stdout)
        return probe_qdisc(netns, kind, **params)

    monkeypatch.setattr(doctor, "_probe_qdisc", probe_then_clean)
    report = doctor.run_doctor()
    assert cleaned and "doctor" not in cleaned[0], cleaned
    checks = {check.name: check.ok for check in report.checks}
    assert checks["htb"] and checks["nftables"] and checks["af_packet"], report.checks
    assert not [p for p in state.RUNS_DIR.glob("*.json") if "doctor" in p.read_text()]


def test_kernel_mptcp_run_uses_both_paths_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("run", str(write_spec(tmp_path, seconds=3, extra="[expect]\noutcome = \"mptcp\"")),
                   "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = RUN_ID.search(done.stdout).group(1)
    assert leftovers(run_id) == []
    result = json.loads((out / "result.json").read_text())
    assert result["schema"] == 3
    # kernel endpoints: no stack RNG; the client sent (upload) with the spec's seed; both exited 0
    assert result["endpoints"] == {
        "client": {"stack": "kernel", "seed": None, "payload_seed": 3, "exit_code": 0,
                   "kernel": platform.release()},
        "server": {"stack": "kernel", "seed": None, "payload_seed": None, "exit_code": 0,
                   "kernel": platform.release()}}
    assert result["teardown_problems"] == []
    assert result["environment"]["backends"]["rate"] in ("htb", "tbf")
    assert {link["name"] for link in result["topology"]["links"]} >= {"a", "b"}
    (conn,) = result["connections"]
    assert conn["client_stack"] == conn["server_stack"] == "kernel"
    assert conn["mptcp"] is True and conn["integrity"] == "ok" and conn["outcome"] == "mptcp"
    assert conn["integrity_verdict"]["reference"] == "original" and conn["expected_subflows"] == 2
    assert len(conn["subflows"]) == 2
    locals_ = sorted(s["local"].split(":")[0] for s in conn["subflows"])
    assert locals_ == ["10.0.1.1", "10.0.2.1"]
    # each shaped 100 Mbit/s path carries a fair share; together they beat one path
    assert all(s["bytes"] * 8 / conn["duration_s"] / 1e6 > 50 for s in conn["subflows"])
    assert conn["goodput_mbps"] > 120
    assert conn["counters"]["server"]["MPTcpExtMPJoinAckRx"] == 1
    assert sum(s["bytes"] for s in conn["subflows"]) >= conn["bytes"] * 0.99
    with (out / "timeseries.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    times = sorted({float(r["t_s"]) for r in rows})
    assert len({r["subflow"] for r in rows}) == 2
    assert max(b - a for a, b in itertools.pairwise(times)) <= 0.1 + 1e-9


def test_bad_input_is_one_line_exit_2_and_builds_nothing(tmp_path: Path) -> None:
    cases = {
        "unknown topology": (None, "unknown topology 'three_path'"),
        "malformed": ("[topology\nname=", "malformed TOML"),
        "unknown key": ('colour = "red"\n', "unknown key 'colour'"),
        "negative delay": (None, "delay_ms"),
        "loss over 100": (None, "loss_pct"),
        "rate 0": (None, "rate_mbit"),
    }
    # a private state directory: anything a run creates is recorded there before it exists
    state_dir = tmp_path / "state"
    env = {**os.environ, "TESTBED_STATE_DIR": str(state_dir)}
    for name, (text, message) in cases.items():
        if text is None:
            good = write_spec(tmp_path, name="bad").read_text()
            spec = {"unknown topology": good.replace('"two_path"', '"three_path"'),
                    "negative delay": good.replace("delay_ms = 0", "delay_ms = -5"),
                    "loss over 100": good.replace("delay_ms = 0", "loss_pct = 150"),
                    "rate 0": good.replace("rate_mbit = 100", "rate_mbit = 0")}[name]
        elif name == "unknown key":
            spec = text + write_spec(tmp_path, name="bad").read_text()
        else:
            spec = text
        path = tmp_path / "bad.toml"
        path.write_text(spec)
        done = subprocess.run([*TESTBED, "run", str(path), "--out", str(tmp_path / "never")],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 2, (name, done.stderr)
        assert message in done.stderr, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
        assert "Traceback" not in done.stderr
    assert not state_dir.exists() or not any(state_dir.rglob("*")), "a bad spec started building"
    assert not (tmp_path / "never" / "result.json").exists()


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    spec = write_spec(tmp_path, name="long", seconds=30, delay=5)  # delay: inline processes too
    proc = subprocess.Popen([*TESTBED, "run", str(spec), "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[3])
    run_id = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        found = RUN_ID.search(line)
        run_id = found.group(1) if found else run_id
        if "server listening" in line or time.monotonic() > deadline:
            break
    assert run_id and leftovers(run_id), "the run should have created namespaces"
    time.sleep(1.0)  # traffic flowing
    return proc, run_id


def test_ctrl_c_tears_everything_down(tmp_path: Path) -> None:
    proc, run_id = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert leftovers(run_id) == []


def test_kill_9_then_clean_removes_everything(tmp_path: Path) -> None:
    proc, run_id = _start_long_run(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    assert leftovers(run_id), "kill -9 leaves the run's namespaces behind"
    done = run_cli("clean")
    assert done.returncode == 0, done.stderr
    assert f"tb-{run_id}-client" in done.stdout
    assert leftovers(run_id) == []
    # nothing of the run is still executing (endpoints, inline processes, node shells)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"/run/testbed/{run_id}/" not in ps
