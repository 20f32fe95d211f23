"""`testbed fidelity`: how faithfully this machine emulates links, measured, not assumed.

Builds two_path with a configured one-way delay and loss on path a and reports:
- RTT over path a idle, under a paced UDP flow near the link rate, and under a saturating TCP
  flow (which adds the bottleneck queue's own delay, as a real link would);
- the loss measured by the nft (or netem) drop over many packets;
- set-up and teardown time of the topology.
Figures are printed and returned; nothing is asserted here (tests assert loose bounds).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from typing import Any

from testbed.errors import RunFailed
from testbed.net.build import BumpRuntime, Network
from testbed.net.state import RunState
from testbed.runner import detect_backends
from topologies import build_topology

RTT_LINE = re.compile(r"time=([0-9.]+) ms")


def _ping(net: Network, count: int, interval_s: float) -> list[float]:
    done = subprocess.run(
        ["ip", "netns", "exec", net.netns("client"), "ping", "-n", "-c", str(count), "-i", str(interval_s),
         "-I", "10.0.1.1", "10.0.100.2"], capture_output=True, text=True, check=False)
    return [float(m) for m in RTT_LINE.findall(done.stdout)]


def _summary(rtts: list[float]) -> dict[str, float]:
    if not rtts:
        return {"samples": 0}
    ordered = sorted(rtts)
    return {"samples": len(rtts), "median_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "min_ms": round(ordered[0], 3), "max_ms": round(ordered[-1], 3)}


def _iperf(net: Network, args: list[str]) -> subprocess.Popen:
    """An iperf3 client over path a; `args` must hold the end condition (-t or -k)."""
    return net.popen("client", ["iperf3", "-c", "10.0.100.2", "-B", "10.0.1.1", "-J", *args],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _netem_counts(net: Network) -> dict[str, int]:
    """Packets the netem leaf on the client end of path a sent and dropped, so far."""
    tree = net.shapers["a"][0].read_back()
    netem = [q for q in tree["qdiscs"] if q["kind"] == "netem"]
    if not netem:
        raise RunFailed("no netem qdisc on path a although the loss backend is netem")
    return {"sent": netem[0]["sent_packets"] or 0, "dropped": netem[0]["dropped"] or 0}


def measure(delay_ms: float = 10.0, loss_pct: float = 1.0, rate_mbit: float = 100.0,
            loss_packets: int = 100_000, pings: int = 200) -> dict[str, Any]:
    backends = detect_backends()
    out: dict[str, Any] = {"backends": backends.as_dict(), "configured": {
        "delay_ms_one_way": delay_ms, "loss_pct": loss_pct, "rate_mbit": rate_mbit,
        "target_rtt_ms": 2 * delay_ms}}
    topo = build_topology("two_path", {"rate_mbit": rate_mbit, "path_a": {"delay_ms": delay_ms}})
    bumps = {} if backends.netem else {"mb_a": BumpRuntime(delay_ms=delay_ms)}
    state = RunState.create()
    try:
        net = Network(topo, backends, state, bumps=bumps)
        with net:
            server = net.popen("server", ["iperf3", "-s", "-B", "10.0.100.2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            _ping(net, 3, 0.2)  # ARP and route caches warm
            out["rtt_idle"] = _summary(_ping(net, pings, 0.01))
            seconds = pings * 0.01 + 2
            udp = _iperf(net, ["-u", "-b", f"{int(rate_mbit * 0.9)}M", "-l", "1400", "-t", str(seconds)])
            time.sleep(0.5)
            out["rtt_udp_90pct_load"] = _summary(_ping(net, pings, 0.01))
            udp.communicate(timeout=seconds + 10)
            tcp = _iperf(net, ["-t", str(seconds)])
            time.sleep(1.0)
            out["rtt_tcp_saturated"] = _summary(_ping(net, pings, 0.01))
            out["rtt_tcp_saturated"]["note"] = "includes the bottleneck queue's delay"
            tcp.communicate(timeout=seconds + 10)

            net.change_link("a", {"loss_pct": loss_pct})
            before_loss = _netem_counts(net) if not net.losses else {}
            # a paced UDP flow of loss_packets datagrams; the drop rule's own counters are the judge
            pps = rate_mbit * 0.8e6 / 8 / 1000
            udp = _iperf(net, ["-u", "-b", f"{int(rate_mbit * 0.8)}M", "-l", "1000",
                               "-k", str(loss_packets)])
            output, errors = udp.communicate(timeout=loss_packets / pps * 2 + 30)
            if udp.returncode != 0:
                raise RunFailed(f"iperf3 UDP flow for the loss figure failed: {(errors or output)[-300:]}")
            server.terminate()
            if net.losses:
                counters = net.losses["ra"].counters()["ra-eth0"]  # ingress of the far end
                out["loss"] = {"packets": counters["packets"], "dropped": counters["dropped"],
                               "measured_pct": round(100 * counters["dropped"] / counters["packets"], 4),
                               "mechanism": "nft numgen drop rule counters"}
            else:
                after = _netem_counts(net)
                sent = after["sent"] - before_loss["sent"]
                dropped = after["dropped"] - before_loss["dropped"]
                out["loss"] = {"packets": sent + dropped, "dropped": dropped,
                               "measured_pct": round(100 * dropped / (sent + dropped), 4)
                               if sent + dropped else None,
                               "mechanism": "netem qdisc statistics (this phase only)"}
        out["timings"] = {k: round(v, 3) for k, v in net.timings.items()}
    finally:
        state.remove()
    return out


def format_fidelity(result: dict[str, Any]) -> str:
    lines = [f"backends: {result['backends']}", f"configured: {result['configured']}"]
    for key in ("rtt_idle", "rtt_udp_90pct_load", "rtt_tcp_saturated"):
        lines.append(f"{key}: {result[key]}")
    lines.append(f"loss: {result.get('loss')}")
    lines.append(f"two_path set-up {result['timings'].get('setup_s')} s, "
                 f"teardown {result['timings'].get('teardown_s')} s")
    return "\n".join(lines)


def delay_stage_accuracy(delay_ms: float = 5.0, load_mbit: float = 0.0, pings: int = 100,
                         interval_s: float = 0.01) -> dict[str, Any]:
    """The userspace delay stage alone (the inline process on a three-namespace line, no netem,
    whatever the kernel offers): ping RTT over it idle and, with `load_mbit` > 0, under a paced
    UDP flow of that rate. `added_ms` is the median RTT minus the configured 2 x delay_ms: what
    the stage adds on top of the delay it was asked for (the veths' own ~0.05 ms included)."""
    import json
    import os
    import sys
    import tempfile

    from testbed.inline.control import InlineControl
    from testbed.inline.lab import C_ADDR, LineLab

    out: dict[str, Any] = {"delay_ms_one_way": delay_ms, "target_rtt_ms": 2 * delay_ms,
                           "load_mbit": load_mbit}
    with LineLab() as lab, tempfile.TemporaryDirectory(prefix="tb-delay-stage-") as scratch:
        control, config = os.path.join(scratch, "control.sock"), os.path.join(scratch, "config.json")
        with open(config, "w") as handle:
            json.dump({"seed": 1, "delay": {"both": {"delay_ms": delay_ms}}}, handle)
        lab.spawn(lab.b, [sys.executable, "-m", "testbed.inline", "--left", lab.left, "--right",
                          lab.right, "--control", control, "--config", config],
                  stderr=subprocess.DEVNULL)
        InlineControl(control).wait_ready()

        def ping(count: int) -> list[float]:
            done = subprocess.run([*lab.exec_prefix(lab.a), "ping", "-n", "-c", str(count), "-i",
                                   str(interval_s), C_ADDR], capture_output=True, text=True,
                                  check=False, timeout=count * interval_s + 30)
            return [float(m) for m in RTT_LINE.findall(done.stdout)]

        ping(3)  # ARP warm
        phases = [("idle", 0.0)] + ([("loaded", load_mbit)] if load_mbit > 0 else [])
        for phase, rate in phases:
            flow = None
            if rate > 0:
                lab.spawn(lab.c, ["iperf3", "-s", "-1", "-B", C_ADDR], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
                time.sleep(0.3)
                seconds = pings * interval_s + 3
                flow = lab.spawn(lab.a, ["iperf3", "-c", C_ADDR, "-u", "-b", f"{int(rate)}M",
                                         "-l", "1400", "-t", str(int(seconds) + 1)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            summary = _summary(ping(pings))
            if summary["samples"]:
                summary["added_ms"] = round(summary["median_ms"] - 2 * delay_ms, 3)
            out[phase] = summary
            if flow is not None:
                flow.wait(timeout=pings * interval_s + 30)
        stats = InlineControl(control).stats()
        out["queue_drops"] = sum(stats[d]["delay"]["dropped_queue_full"]
                                 for d in ("upstream", "downstream"))
    return out
