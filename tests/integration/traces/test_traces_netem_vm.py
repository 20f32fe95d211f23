"""A trace played on the netem backend: `testbed vm run` boots the stock Debian kernel (with
sch_netem) and runs a traced spec inside; the rate follows the trace and the trace's delay
change is applied with it (that netem takes a live change is test_netem_in_vm's). One boot,
about two minutes under TCG.

The time series counts from the sender's connection, the timeline from the client's start:
under TCG the two are about 1.2 s apart (on the host, well under 0.1 s), so the steps are 3 s
long and each is judged in a window that lies inside it on either clock."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import errors, vm
from tests.integration.traces.test_traces_live import SPEC, check_follows

PROJECT = Path(__file__).resolve().parents[3]
BUDGET_S = 200

pytestmark = [pytest.mark.slow, pytest.mark.root]
# two minutes of TCG for one run: past the suite's budget, so it runs on request (docs/traces.md);
# that netem takes live changes at all is test_netem_in_vm's, in the suite
LONG = os.environ.get("TESTBED_LONG") == "1"


def _vm_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        vm.choose_kernel(None)
        vm.find_tools()
    except errors.TestbedError as exc:
        return exc.message
    return None


@pytest.mark.skipif(not LONG, reason="two minutes under TCG; TESTBED_LONG=1 runs it (docs/traces.md)")
def test_a_csv_trace_on_netem_follows_rate_and_delay(tmp_path: Path) -> None:
    reason = _vm_ready()
    if reason:
        pytest.skip(f"VM prerequisites missing ({reason}); `make setup` installs them")
    trace = tmp_path / "steps.csv"
    # rates a TCG guest can carry; the delay change goes to netem, not a userspace stage
    trace.write_text("time_s,rate_mbit,delay_ms,loss_pct\n0,8,5\n3,2\n6,5,20\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(trace=trace, seconds=9))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "testbed.vm", "run", "--rwdir", str(tmp_path), "--timeout", str(BUDGET_S),
         "--", sys.executable, "-m", "testbed.cli", "run", str(spec), "--out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=BUDGET_S + vm.KVM_PROBE_TIMEOUT_S + 30)
    assert done.returncode == 0, f"vm run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    result = json.loads((out / "result.json").read_text())
    assert result["environment"]["backends"] == {"rate": "htb", "loss": "netem", "delay": "netem"}
    applied = [(e["planned_at_s"], e["params"]["rate_mbit"], e["params"]["delay_ms"])
               for e in result["timeline"]]
    assert applied == [(0.0, 8.0, 5.0), (3.0, 2.0, 5.0), (6.0, 5.0, 20.0)]
    assert [q["kind"] for q in result["shaping"]["a"][0]["qdiscs"]] == ["htb", "netem"]
    with (out / "timeseries.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert check_follows(rows, [(0.4, 1.7, 8), (3.3, 4.7, 2), (6.3, 7.7, 5)]) == []
