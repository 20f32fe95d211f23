"""Live telemetry end to end: a real two_path run (40 ms path RTT, 20 Mbit/s per path) with the
kernel client, then with the python stack client; timeseries.csv must carry a positive cwnd and
a smoothed RTT near the configured path RTT per subflow, and the run draws cwnd.png and rtt.png."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import run_cli, write_spec

if os.geteuid() != 0 or not Path("/proc/sys/net/mptcp/enabled").exists():
    pytest.skip("needs root and a kernel with MPTCP", allow_module_level=True)

ONE_WAY_DELAY_MS = 20
PATH_RTT_MS = 2 * ONE_WAY_DELAY_MS


def _run(tmp_path: Path, client: str) -> Path:
    extra = "[mptcp]\nsubflows = 2\n" + ("client_subflow_endpoints = true\n" if client == "kernel" else "")
    spec = write_spec(tmp_path, name=f"telemetry_{client}", seconds=3, rate=20, delay=ONE_WAY_DELAY_MS,
                      client=client, extra=extra)
    out = tmp_path / "out"
    done = run_cli("run", str(spec), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _check_telemetry(out: Path) -> None:
    result = json.loads((out / "result.json").read_text())
    assert {"cwnd_segments", "srtt_ms", "delivery_rate_mbps"} <= set(result["timeseries"]["columns"])
    rows = list(csv.DictReader((out / "timeseries.csv").open()))
    per_subflow: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        per_subflow.setdefault(row["local"], []).append(row)
    assert len(per_subflow) == 2, per_subflow.keys()
    for local, series in per_subflow.items():
        cwnd = [float(r["cwnd_segments"]) for r in series if r["cwnd_segments"]]
        rtt = [float(r["srtt_ms"]) for r in series if r["srtt_ms"]]
        rate = [float(r["delivery_rate_mbps"]) for r in series if r["delivery_rate_mbps"]]
        assert len(cwnd) >= 10 and min(cwnd) > 0, (local, cwnd)
        # the shaper's queue adds delay above the path RTT (the python stack's slow start can
        # fill it for a while), never takes any away: the floor is the path RTT
        assert PATH_RTT_MS * 0.9 <= min(rtt) <= PATH_RTT_MS * 1.5, (local, rtt)
        assert statistics.median(rtt) >= PATH_RTT_MS * 0.9, (local, rtt)
        assert 0 < statistics.median(rate) <= 25, (local, rate)  # a 20 Mbit/s path
    assert (out / "cwnd.png").exists() and (out / "rtt.png").exists()


def test_kernel_client_telemetry(tmp_path: Path) -> None:
    _check_telemetry(_run(tmp_path, "kernel"))


def test_python_client_telemetry(tmp_path: Path) -> None:
    _check_telemetry(_run(tmp_path, "python"))
