"""Forwarding ceiling of the inline process, against the kernel, on a throwaway namespace line.

    python -m testbed.inline.bench_forwarding [--seconds 5] [--modes bridge,plain,decode,reencode]
                                              [--json FILE]

One iperf3 TCP bulk flow from ns A to ns C through the bump ns B, per mode:

    bridge    a Linux bridge joins B's legs (kernel forwarding, the reference)
    plain     the inline process, no stages (AF_PACKET in, delay line of 0 ms, AF_PACKET out)
    decode    plus a pass-through middlebox: every TCP frame decoded, compared, original bytes sent
    reencode  plus a middlebox that returns a copy: every TCP frame decoded AND re-encoded

Frames per second are counted on B's legs (kernel interface counters, both directions), so all
modes are measured the same way. The figures depend on the machine: the bump, iperf3's client
and its server share the same cores. Offloads are off on every interface (see legs.py), also for
the bridge, so the kernel handles the same frame sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from middleboxes.contract import Direction, Middlebox, MiddleboxCounters
from testbed.inline.config import MiddleboxSpec
from testbed.inline.control import InlineControl
from testbed.inline.lab import C_ADDR, LineLab
from testbed.wire.types import Packet

MODES = ("bridge", "plain", "decode", "reencode")
_BUMP_FLAG = "--run-bump"


@dataclasses.dataclass
class PassThroughBox:
    """Forwards every packet. With `rebuild`, forwards a copy so the pipeline must re-encode."""

    rebuild: bool = False
    name: str = "bench_passthrough"
    counters: MiddleboxCounters = dataclasses.field(default_factory=MiddleboxCounters)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        if self.rebuild:
            self.counters.changed += 1
            return [dataclasses.replace(packet, tcp=dataclasses.replace(packet.tcp))]
        return [packet]

    def next_deadline(self) -> float | None:
        return None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        return []


def _bump_main(mode: str, argv: Sequence[str]) -> int:
    """The inline process with a bench middlebox (run inside ns B by `measure`)."""
    from testbed.inline.app import main

    def factory(specs: Sequence[MiddleboxSpec], rng: object) -> list[Middlebox]:
        if mode == "plain":
            return []
        return [PassThroughBox(rebuild=(mode == "reencode"))]

    return main(list(argv), middlebox_factory=factory)


def bump_command(mode: str, lab: LineLab, control: str, stats_out: str | None = None) -> list[str]:
    """Command line starting the inline process in `mode` (plain/decode/reencode) on lab's legs."""
    command = [sys.executable, "-m", "testbed.inline.bench_forwarding", _BUMP_FLAG, mode,
               "--left", lab.left, "--right", lab.right, "--control", control]
    if stats_out:
        command += ["--stats-out", stats_out]
    return command


def _leg_packets(lab: LineLab) -> int:
    total = 0
    for entry in json.loads(lab.sh(lab.b, "ip", "-j", "-s", "link", "show")):
        if entry["ifname"] in (lab.left, lab.right):
            total += entry["stats64"]["rx"]["packets"]
    return total


def measure(mode: str, seconds: float) -> dict[str, Any]:
    """One mode on a fresh lab: iperf3 A -> C for `seconds`; returns Mbit/s and frames/s."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {MODES}")
    with LineLab() as lab, tempfile.TemporaryDirectory(prefix="tb-inline-bench-") as scratch:
        control = os.path.join(scratch, "control.sock")
        if mode == "bridge":
            lab.bridge_bump()
        else:
            lab.spawn(lab.b, bump_command(mode, lab, control), stderr=subprocess.DEVNULL)
            InlineControl(control).wait_ready()
        server = lab.spawn(lab.c, ["iperf3", "-s", "-1", "-B", C_ADDR],
                           stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        packets_before = _leg_packets(lab)
        started = time.monotonic()
        report = json.loads(lab.sh(lab.a, "iperf3", "-J", "-c", C_ADDR, "-t", str(seconds),
                                   timeout_s=seconds + 30))
        elapsed = time.monotonic() - started
        packets = _leg_packets(lab) - packets_before
        server.wait(timeout=10)
        result: dict[str, Any] = {
            "mode": mode,
            "mbit_s": report["end"]["sum_received"]["bits_per_second"] / 1e6,
            "frames_per_s": packets / elapsed,
            "retransmits": report["end"]["sum_sent"].get("retransmits"),
        }
        if mode != "bridge":
            stats = InlineControl(control).stats()
            result["send_errors"] = sum(stats[d.value]["send_errors"] for d in Direction)
            result["queue_drops"] = sum(stats[d.value]["delay"]["dropped_queue_full"]
                                        for d in Direction)
        return result


def run_bench(modes: Sequence[str], seconds: float) -> list[dict[str, Any]]:
    results = [measure(mode, seconds) for mode in modes]
    reference = next((r for r in results if r["mode"] == "bridge"), None)
    for result in results:
        if reference is not None and reference["mbit_s"] > 0:
            result["ratio_to_bridge"] = result["mbit_s"] / reference["mbit_s"]
    return results


def format_results(results: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'mode':<10} {'Mbit/s':>9} {'frames/s':>10} {'x bridge':>9} {'retrans':>8}"]
    for r in results:
        ratio = r.get("ratio_to_bridge")
        lines.append(f"{r['mode']:<10} {r['mbit_s']:>9.1f} {r['frames_per_s']:>10.0f} "
                     f"{'' if ratio is None else f'{ratio:.3f}':>9} "
                     f"{r.get('retransmits') or 0:>8}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_BUMP_FLAG]:
        if len(argv) < 2 or argv[1] not in MODES[1:]:
            print(f"{_BUMP_FLAG} needs one of {MODES[1:]}", file=sys.stderr)
            return 2
        return _bump_main(argv[1], argv[2:])
    parser = argparse.ArgumentParser(prog="python -m testbed.inline.bench_forwarding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; known: {list(MODES)}")
    results = run_bench(modes, args.seconds)
    print(format_results(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
