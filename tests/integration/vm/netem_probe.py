"""Runs INSIDE the VM (`testbed vm run -- python -m tests.integration.vm.netem_probe OUT.json`).

One interpreter does everything, because each Python start costs seconds under TCG:
`testbed doctor`'s probes, then two_path built with netem delay and loss on path a, measured
two independent ways: ping RTTs over path a, and a paced UDP flow whose losses are counted by
the netem qdisc itself (a fresh tree, so no other traffic's drops are mixed in) and by iperf3
end to end; then a whole experiment (`testbed run` of a small spec with delay and loss) whose
result file lands beside OUT. The host-side test asserts on the JSON written to OUT.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DELAY_MS = 10.0
LOSS_PCT = 2.0
RATE_MBIT = 100.0
UDP_PACKETS = 20_000
UDP_MBIT = 20
PINGS = 200
CHANGED_DELAY_MS = 5.0
CHANGED_PINGS = 100
QUEUE_PKTS = 10_000  # far above any burst: netem's drop counter then counts only random loss
RTT = re.compile(r"time=([0-9.]+) ms")


def _netem_counts(read_back: dict[str, Any]) -> dict[str, int]:
    leaf = [q for q in read_back["qdiscs"] if q["kind"] == "netem"]
    if not leaf:
        return {"sent": 0, "dropped": 0, "netem_leaves": 0}
    return {"sent": leaf[0]["sent_packets"], "dropped": leaf[0]["dropped"], "netem_leaves": len(leaf)}


def _udp_loss(net: Any) -> dict[str, Any]:
    """One paced UDP flow over path a: netem's own counters and iperf3's report of it."""
    out: dict[str, Any] = {}
    server = net.popen("server", ["iperf3", "-s", "-1", "-B", "10.0.100.2"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out["iperf_server_listening"] = _wait_listening(net.netns("server"), 5201, 60.0)
    before = _netem_counts(net.shapers["a"][0].read_back())
    udp = net.popen("client", ["iperf3", "-c", "10.0.100.2", "-B", "10.0.1.1", "-u", "-J",
                               "-b", f"{UDP_MBIT}M", "-l", "1000", "-k", str(UDP_PACKETS)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report_text, _ = udp.communicate(timeout=120)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:  # its client gave up: this server waits for no one
        server.kill()
        server.wait(timeout=5)
    after = _netem_counts(net.shapers["a"][0].read_back())
    out["netem_client_side"] = {"sent": after["sent"] - before["sent"],
                                "dropped": after["dropped"] - before["dropped"],
                                "netem_leaves": after["netem_leaves"]}
    try:
        summary = json.loads(report_text)["end"]["sum"]
        out["iperf_udp"] = {k: summary.get(k) for k in ("packets", "lost_packets", "lost_percent")}
    except (ValueError, KeyError) as exc:
        out["iperf_udp"] = {"error": f"{type(exc).__name__}: {exc}", "raw": report_text[-500:]}
    return out


def _ping(netns: str, count: int) -> list[float]:
    """RTTs over path a (the client's first address routes through link a)."""
    pinged = subprocess.run(["ip", "netns", "exec", netns, "ping", "-n", "-c", str(count), "-i", "0.01",
                             "-I", "10.0.1.1", "10.0.100.2"], capture_output=True, text=True, check=False)
    return [float(m) for m in RTT.findall(pinged.stdout)]


def _wait_listening(netns: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP listener on PORT appeared in time: a guest under TCG, on a loaded host,
    can take seconds to start iperf3, and a client started earlier finds no server."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
                                capture_output=True, text=True, check=False)
        if listed.stdout.strip():
            return True
        time.sleep(0.2)
    return False


def measure(out_dir: Path) -> dict[str, Any]:
    from testbed.doctor import run_doctor
    from testbed.net.build import Network
    from testbed.net.state import RunState
    from topologies import build_topology

    started = time.monotonic()
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    root_interfaces = sorted(link["ifname"] for link in json.loads(links.stdout))
    report = run_doctor()
    out: dict[str, Any] = {"root_interfaces": root_interfaces, "doctor": report.as_dict(), "configured": {
        "delay_ms_one_way": DELAY_MS, "loss_pct": LOSS_PCT, "rate_mbit": RATE_MBIT,
        "queue_pkts": QUEUE_PKTS, "udp_packets": UDP_PACKETS, "pings": PINGS}}
    out["seconds"] = {"doctor": round(time.monotonic() - started, 1)}
    if report.backends is None or not report.backends.netem:
        return out
    topo = build_topology("two_path", {"rate_mbit": RATE_MBIT,
                                       "path_a": {"delay_ms": DELAY_MS, "loss_pct": LOSS_PCT,
                                                  "queue_pkts": QUEUE_PKTS}})
    state = RunState.create()
    try:
        built = time.monotonic()
        with Network(topo, report.backends, state) as net:
            out["seconds"]["setup"] = round(time.monotonic() - built, 1)
            out["trees"] = [s.read_back() for s in net.shapers["a"]]
            out["rtts_ms"] = _ping(net.netns("client"), PINGS)
            out["pings_sent"] = PINGS
            # iperf3 3.12 in a slow TCG guest sometimes loses its own control connection ("unable
            # to read from stream socket: Resource temporarily unavailable") after a dozen
            # packets: that attempt measures nothing about netem, so it is recorded and run again
            out["iperf_attempts"] = []
            for _attempt in range(3):
                out.update(_udp_loss(net))
                out["iperf_attempts"].append(out["iperf_udp"])
                if "error" not in out["iperf_udp"]:
                    break
            # a live `tc change` of the netem leaf (pyroute2 sends the full parameter set again)
            net.change_link("a", {"delay_ms": CHANGED_DELAY_MS, "loss_pct": 0.0})
            out["changed"] = {"delay_ms_one_way": CHANGED_DELAY_MS, "trees": [
                s.read_back() for s in net.shapers["a"]]}
            out["changed"]["rtts_ms"] = _ping(net.netns("client"), CHANGED_PINGS)
        out["timings"] = net.timings
    finally:
        state.remove()
    experiment = time.monotonic()
    out["experiment"] = run_spec(out_dir)
    out["seconds"]["experiment"] = round(time.monotonic() - experiment, 1)
    out["seconds"]["total"] = round(time.monotonic() - started, 1)
    return out


SPEC = """
name = "vm_netem_smoke"
seed = 1
[topology]
name = "two_path"
[topology.params]
rate_mbit = 20
delay_ms = 10
loss_pct = 0.5
[[endpoints]]
role = "server"
stack = "kernel"
[[endpoints]]
role = "client"
stack = "kernel"
[traffic]
seconds = 4
[mptcp]
subflows = 2
client_subflow_endpoints = true
"""


def run_spec(out_dir: Path) -> dict[str, Any]:
    """A whole `testbed run` (orchestrator, kernel MPTCP endpoints, result file) over netem links."""
    from testbed.runner import run_experiment
    from testbed.spec import load_spec

    spec_path = out_dir / "vm_netem_smoke.toml"
    spec_path.write_text(SPEC)
    run_experiment(load_spec(spec_path), out_dir / "vm_netem_smoke", progress=lambda message: None)
    return json.loads((out_dir / "vm_netem_smoke" / "result.json").read_text())


if __name__ == "__main__":
    target = Path(sys.argv[1])
    result = measure(target.parent)
    target.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result.get(k) for k in ("seconds", "netem_client_side", "iperf_udp")}))
