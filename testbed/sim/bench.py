"""`testbed stack bench`: how many data segments per second the bundled stack processes.

A sender and a receiver `MptcpHost` exchange a bulk transfer in the simulator with the codec
off, so the only per-packet work outside the stack is the simulator's own bookkeeping. Each
host is wrapped in a timer that adds up the CPU time spent inside that host's calls
(receive_packet, packets_to_send, get_timer, handle_timer, and its application's reaction
to events); a side's figure is the data segments it handled (sent for the sender, received
for the receiver) divided by that time. `--profile` adds a cProfile summary of the whole run.

    python -m testbed.sim.bench --size 20M
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from testbed.mptcp.config import CONGESTION_CONTROLS, StackConfig
from testbed.mptcp.native import STATE as STACK_CORE
from testbed.net.params import LinkParams
from testbed.sim.cli import OneLineErrorParser, UsageError, parse_number, parse_size
from testbed.sim.transfer import PathSpec, TransferSpec, build_transfer, finish_transfer
from testbed.wire.types import Packet

TARGET_SEGMENTS_PER_SECOND = 80_000  # issue 21's goal for the stack alone
EXIT_USAGE = 2


class TimedEndpoint:
    """Wraps a PacketEndpoint, summing the time spent inside it and counting data segments."""

    def __init__(self, inner: Any, clock: Callable[[], float] = time.perf_counter) -> None:
        self.inner = inner
        self.clock = clock
        self.seconds = 0.0
        self.data_sent = 0
        self.data_received = 0

    def receive_packet(self, packet: Packet, now: float) -> None:
        if packet.tcp.payload:
            self.data_received += 1
        start = self.clock()
        self.inner.receive_packet(packet, now)
        self.seconds += self.clock() - start

    def packets_to_send(self, now: float) -> Iterable[Packet]:
        start = self.clock()
        packets = list(self.inner.packets_to_send(now))
        self.seconds += self.clock() - start
        self.data_sent += sum(1 for packet in packets if packet.tcp.payload)
        return packets

    def get_timer(self) -> float | None:
        start = self.clock()
        deadline = self.inner.get_timer()
        self.seconds += self.clock() - start
        return deadline

    def handle_timer(self, now: float) -> None:
        start = self.clock()
        self.inner.handle_timer(now)
        self.seconds += self.clock() - start


class TimedApplication:
    """Wraps an application, summing the time it spends reacting to events (reading,
    hashing, writing), so the stack's own share can be told apart."""

    def __init__(self, inner: Any, clock: Callable[[], float] = time.perf_counter) -> None:
        self.inner = inner
        self.clock = clock
        self.seconds = 0.0

    def on_event(self, event: Any, now: float) -> None:
        start = self.clock()
        self.inner.on_event(event, now)
        self.seconds += self.clock() - start


@dataclass
class BenchResult:
    size: int
    paths: int
    outcome: str
    hash_ok: bool
    wall_seconds: float
    virtual_seconds: float
    sender_seconds: float
    receiver_seconds: float
    sender_data_segments: int
    receiver_data_segments: int
    events: int
    sender_app_seconds: float = 0.0
    receiver_app_seconds: float = 0.0

    @property
    def sender_rate(self) -> float:
        return self.sender_data_segments / self.sender_seconds if self.sender_seconds else 0.0

    @property
    def receiver_rate(self) -> float:
        return (self.receiver_data_segments / self.receiver_seconds
                if self.receiver_seconds else 0.0)

    @staticmethod
    def _rate(segments: int, seconds: float) -> float:
        return segments / seconds if seconds > 0 else 0.0

    @property
    def sender_stack_rate(self) -> float:
        """Without the application's share (writing into the connection)."""
        return self._rate(self.sender_data_segments, self.sender_seconds - self.sender_app_seconds)

    @property
    def receiver_stack_rate(self) -> float:
        """Without the application's share (reading, byte check, SHA-256)."""
        return self._rate(self.receiver_data_segments,
                          self.receiver_seconds - self.receiver_app_seconds)

    def as_dict(self) -> dict[str, object]:
        return {
            "size": self.size, "paths": self.paths, "outcome": self.outcome,
            "hash_ok": self.hash_ok, "wall_seconds": round(self.wall_seconds, 3),
            "virtual_seconds": round(self.virtual_seconds, 3), "events": self.events,
            "sender": {"data_segments": self.sender_data_segments,
                       "cpu_seconds": round(self.sender_seconds, 3),
                       "application_seconds": round(self.sender_app_seconds, 3),
                       "segments_per_second": round(self.sender_rate),
                       "stack_segments_per_second": round(self.sender_stack_rate)},
            "receiver": {"data_segments": self.receiver_data_segments,
                         "cpu_seconds": round(self.receiver_seconds, 3),
                         "application_seconds": round(self.receiver_app_seconds, 3),
                         "segments_per_second": round(self.receiver_rate),
                         "stack_segments_per_second": round(self.receiver_stack_rate)},
            "simulator_seconds": round(
                self.wall_seconds - self.sender_seconds - self.receiver_seconds, 3),
            "target_segments_per_second": TARGET_SEGMENTS_PER_SECOND,
            "stack_core": STACK_CORE.describe(),
        }


def run_benchmark(size: int, paths: int = 1, congestion_control: str = "reno",
                  rate_mbit: float = 1000.0, seed: int = 1,
                  clock: Callable[[], float] = time.perf_counter) -> BenchResult:
    """One transfer of `size` bytes over `paths` fast paths, timed per side with `clock` (the
    benchmark gate passes time.process_time: CPU time, which other processes do not inflate)."""
    config = StackConfig(congestion_control=congestion_control)
    link = LinkParams(rate_mbit=rate_mbit, delay_ms=1.0, queue_pkts=1000)
    spec = TransferSpec(paths=[PathSpec(link) for _ in range(paths)], size=size, seed=seed,
                        client_config=config, server_config=config, codec=False,
                        time_limit=3600.0)
    setup = build_transfer(spec)
    client_node, server_node = setup.network.nodes["client"], setup.network.nodes["server"]
    sender = TimedEndpoint(client_node.endpoint, clock)  # type: ignore[attr-defined]
    receiver = TimedEndpoint(server_node.endpoint, clock)  # type: ignore[attr-defined]
    client_node.endpoint = sender  # type: ignore[attr-defined]
    server_node.endpoint = receiver  # type: ignore[attr-defined]
    sender_app = TimedApplication(setup.client.application, clock)
    receiver_app = TimedApplication(setup.server.application, clock)
    setup.client.application = sender_app
    setup.server.application = receiver_app
    start = time.perf_counter()
    result = finish_transfer(setup)
    wall = time.perf_counter() - start
    return BenchResult(
        size=size, paths=paths, outcome=result.outcome, hash_ok=result.hash_ok,
        wall_seconds=wall, virtual_seconds=result.duration,
        sender_seconds=sender.seconds, receiver_seconds=receiver.seconds,
        sender_data_segments=sender.data_sent, receiver_data_segments=receiver.data_received,
        events=setup.network.scheduler.events_run,
        sender_app_seconds=sender_app.seconds, receiver_app_seconds=receiver_app.seconds,
    )


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="20M", help="bytes to transfer (default 20M)")
    parser.add_argument("--paths", default="1", help="number of paths/subflows (default 1)")
    parser.add_argument("--cc", default="reno",
                        help=f"congestion control: {', '.join(CONGESTION_CONTROLS)}")
    parser.add_argument("--seed", default="1", help="seed (default 1)")
    parser.add_argument("--repeat", default="1",
                        help="run N times and report the fastest run (the machine's noise "
                             "only ever slows a run down); default 1")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile summary (top functions by own time)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark; exit 0 when the transfer was intact, 1 if not, 2 on bad args."""
    try:
        size = parse_size(args.size)
        paths = parse_number("--paths", args.paths, int)
        seed = parse_number("--seed", args.seed, int)
        repeat = parse_number("--repeat", args.repeat, int)
        if paths < 1:
            raise UsageError(f"--paths: must be >= 1, got {paths}")
        if repeat < 1:
            raise UsageError(f"--repeat: must be >= 1, got {repeat}")
        if args.cc not in CONGESTION_CONTROLS:
            raise UsageError(f"--cc: {args.cc!r} is not one of {', '.join(CONGESTION_CONTROLS)}")
    except UsageError as error:
        print(f"testbed stack bench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    runs = [run_benchmark(size, paths, args.cc, seed=seed) for _ in range(repeat)]
    result = min(runs, key=lambda run: run.sender_seconds + run.receiver_seconds)
    if profiler is not None:
        profiler.disable()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"transfer: {result.size} bytes over {result.paths} path(s), outcome "
              f"{result.outcome}, payload {'intact' if result.hash_ok else 'NOT intact'}")
        print(f"stack core: {STACK_CORE.describe()}")
        print(f"wall {result.wall_seconds:.2f} s for {result.virtual_seconds:.3f} s of virtual "
              f"time, {result.events} events")
        for side, segments, seconds, rate, app, stack_rate in (
                ("sender", result.sender_data_segments, result.sender_seconds,
                 result.sender_rate, result.sender_app_seconds, result.sender_stack_rate),
                ("receiver", result.receiver_data_segments, result.receiver_seconds,
                 result.receiver_rate, result.receiver_app_seconds,
                 result.receiver_stack_rate)):
            print(f"{side:8}: {segments} data segments in {seconds:.2f} s of CPU = "
                  f"{rate:,.0f} segments/s; stack alone {stack_rate:,.0f}/s (target "
                  f"{TARGET_SEGMENTS_PER_SECOND:,}; application {app:.2f} s)")
    if profiler is not None:
        print("(the figures above include cProfile's own overhead; run without --profile for "
              "the real rate)", file=sys.stderr if args.json else sys.stdout)
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.sort_stats("tottime").print_stats(25)
        print(buffer.getvalue(), file=sys.stderr if args.json else sys.stdout)
    return 0 if result.hash_ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="python -m testbed.sim.bench",
                                description=(__doc__ or "").split("\n\n")[0])
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
