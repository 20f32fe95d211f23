"""StackDriver: runs a sans-IO MptcpHost on real packets and the monotonic clock.

One iteration: read every packet that is waiting (up to a batch), feed them all, run a due
timer, let the application react to the events and act (queue data, timed actions), then
encode and send everything the host wants to send — so ACKs and data of one batch leave
together. It then waits in select() until a packet arrives, the host's timer or the
application's own deadline, whichever is first. select() takes a timeval, so a timer is
late by the scheduler's wake-up latency only (tens of µs), not by poll()'s millisecond
rounding; `TimerLateness` records how late every timer actually ran.

A bad packet never ends the loop: one that does not decode, or on which the host raises,
is dropped and counted by reason (`dropped`: "undecodable:<field>", "receive:<exception>");
the totals also go into the host's counters (DriverUndecodable, DriverReceiveError), which
the endpoint reports as its stack counters in result.json.
"""

from __future__ import annotations

import re
import resource
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from testbed.mptcp.driver.ack_coalesce import coalesce_pure_acks
from testbed.mptcp.driver.memory import fix_mmap_threshold
from testbed.mptcp.driver.packet_io import PacketIO
from testbed.mptcp.driver.stack_codec import decode_stack_packet
from testbed.mptcp.events import Event
from testbed.mptcp.host import MptcpHost
from testbed.wire import decode_packet
from testbed.wire.errors import WireError

BATCH = 256
_INDEX = re.compile(r"\[\d+\]")  # tcp.option[3].length -> tcp.option.length: one reason
# Frames the stack may keep in its host's own qdiscs per local address, as Linux's TCP Small
# Queues keeps a socket to about a millisecond of its rate; more here, since the stack refills
# once per loop turn rather than on each transmit completion. 48 frames is 5.8 ms at 100 Mbit/s.
LOCAL_QUEUE_FRAMES = 48
IDLE_WAIT_S = 0.05  # longest sleep: keeps stop requests and app checks responsive


class DriverApp(Protocol):
    """The application side of a driven host (an endpoint program, a test)."""

    @property
    def finished(self) -> bool: ...

    def on_event(self, event: Event, now: float) -> None: ...

    def step(self, now: float) -> float | None:
        """Act on the host's connections; returns the app's next deadline (or None)."""
        ...

# An app may also have `readable() -> list[socket]`: its own sockets the driver waits on with
# the packet sockets (a relay's kernel TCP sockets, testbed.proxy.relay_stack), so data on them
# wakes the loop at once instead of at the app's next deadline.


@dataclass
class TimerLateness:
    """How late host timers ran, in µs after their deadline."""

    count: int = 0
    over_1ms: int = 0
    max_us: float = 0.0
    total_us: float = 0.0
    samples: list[float] = field(default_factory=list)

    def record(self, late_s: float) -> None:
        late_us = late_s * 1e6
        self.count += 1
        self.total_us += late_us
        self.max_us = max(self.max_us, late_us)
        if late_us >= 1000:
            self.over_1ms += 1
        if len(self.samples) < 100_000:
            self.samples.append(late_us)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.samples)
        pick = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)) \
            if ordered else (lambda q: 0.0)
        return {"timers": self.count, "over_1ms": self.over_1ms, "p50_us": pick(0.5),
                "p99_us": pick(0.99), "max_us": round(self.max_us, 1)}


class StackDriver:
    """Moves packets between a PacketIO and a host until the app is finished or stopped."""

    def __init__(self, host: MptcpHost, io: PacketIO,
                 clock: Callable[[], float] = time.monotonic, batch: int = BATCH,
                 coalesce_acks: bool = True,
                 local_queue_frames: int | None = LOCAL_QUEUE_FRAMES) -> None:
        self.host = host
        self.io = io
        self.clock = clock
        self.batch = batch
        self.lateness = TimerLateness()
        self.malformed = 0
        self.receive_errors = 0
        self.dropped: dict[str, int] = {}
        self.last_receive_error: str | None = None
        self.iterations = 0
        self.coalesce_acks = coalesce_acks
        self.acks_coalesced = 0
        self._cpu_start: tuple[float, float, float] | None = None
        self._cpu_end: tuple[float, float, float] | None = None
        self.local_queue_frames = local_queue_frames
        # local addresses whose queued frames the kernel reports (SIOCOUTQ), until it does not
        self._queue_addresses = list(io.tx) if local_queue_frames is not None else []
        self.local_queue_unavailable: str | None = None
        # Process-wide: large freed buffers go back to the system (see driver.memory).
        self.mmap_threshold = fix_mmap_threshold()

    @staticmethod
    def _cpu_sample(clock: Callable[[], float]) -> tuple[float, float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return clock(), usage.ru_utime, usage.ru_stime

    def _events(self, app: DriverApp, now: float) -> None:
        host = self.host
        while (event := host.next_event()) is not None:
            app.on_event(event, now)

    def _refresh_local_queue_room(self) -> None:
        """Tell the host how many more frames each local address may queue on its interface."""
        room = self.host.local_queue_room
        limit = self.local_queue_frames
        queued_frames = self.io.queued_frames
        for address in self._queue_addresses:
            try:
                room[address] = limit - queued_frames(address)  # type: ignore[operator]
            except OSError as error:  # no SIOCOUTQ: send as before, without the limit
                self.local_queue_unavailable = f"{address}: {error}"
                self._queue_addresses = []
                self.host.stop_local_queue_limit()
                return

    def _send_all(self, now: float) -> None:
        if self._queue_addresses:
            self._refresh_local_queue_room()
        send_packet = self.io.send_packet
        for packet in self.host.packets_to_send(now):
            send_packet(packet)

    def run(self, app: DriverApp, stop: Callable[[], bool], linger_s: float = 0.2) -> None:
        """Drive until `app.finished` (plus `linger_s` to answer the peer's last segments)
        or until `stop()` says so."""
        self._cpu_start = self._cpu_sample(self.clock)
        try:
            self._drive(app, stop, linger_s)
        finally:
            self._cpu_end = self._cpu_sample(self.clock)

    def _drive(self, app: DriverApp, stop: Callable[[], bool], linger_s: float) -> None:
        host, io, clock = self.host, self.io, self.clock
        receive_packet = host.receive_packet
        wait_on = list(io.readable)
        app_readable = getattr(app, "readable", None)
        linger_until: float | None = None
        while not stop():
            self.iterations += 1
            now = clock()
            raw_packets = io.receive(self.batch)
            batch_full = len(raw_packets) >= self.batch  # (up to a batch per family)
            if self.coalesce_acks:
                raw_packets, skipped = coalesce_pure_acks(raw_packets)
                self.acks_coalesced += skipped
            for raw in raw_packets:
                try:
                    packet = decode_packet(raw) if raw and raw[0] >> 4 == 4 else decode_stack_packet(raw)
                except WireError as error:
                    self._drop(f"undecodable:{_INDEX.sub('', error.field)}")
                    self.malformed += 1
                    host.counters["DriverUndecodable"] = self.malformed
                    continue
                try:
                    receive_packet(packet, now)
                except Exception as error:  # a stack bug on one packet must not end the run
                    self._drop(f"receive:{type(error).__name__}")
                    self.receive_errors += 1
                    self.last_receive_error = f"{type(error).__name__}: {error}"[:200]
                    host.counters["DriverReceiveError"] = self.receive_errors
            timer = host.get_timer()
            if timer is not None and timer <= now:
                self.lateness.record(now - timer)
                host.handle_timer(now)
            self._events(app, now)
            app_deadline = app.step(now)
            self._send_all(now)
            self._events(app, now)
            if app.finished:
                if linger_until is None:
                    linger_until = now + linger_s
                elif now >= linger_until and not host.resets_pending():
                    return  # (MP_FASTCLOSE RSTs are repeated a bounded number of times)
            if batch_full:
                continue
            deadline = now + IDLE_WAIT_S
            timer = host.get_timer()
            if timer is not None and timer < deadline:
                deadline = timer
            if app_deadline is not None and app_deadline < deadline:
                deadline = app_deadline
            if linger_until is not None and linger_until < deadline:
                deadline = linger_until
            wait = deadline - clock()
            if wait > 0:
                select.select([*wait_on, *app_readable()] if app_readable else wait_on, [], [], wait)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user, system) the process used while driving, and their share of the
        wall time: a stack at ~100% is CPU-bound, whatever the link could carry."""
        if self._cpu_start is None or self._cpu_end is None:
            return {}
        (t0, user0, sys0), (t1, user1, sys1) = self._cpu_start, self._cpu_end
        wall = max(t1 - t0, 1e-9)
        return {"wall_s": round(wall, 3), "user_s": round(user1 - user0, 3),
                "system_s": round(sys1 - sys0, 3),
                "busy_pct": round(100 * ((user1 - user0) + (sys1 - sys0)) / wall, 1)}

    def stats(self) -> dict[str, object]:
        return {"io": self.io.stats(), "malformed": self.malformed,
                "receive_errors": self.receive_errors, "dropped": dict(self.dropped),
                "last_receive_error": self.last_receive_error,
                "acks_coalesced": self.acks_coalesced,
                "iterations": self.iterations, "timer_lateness": self.lateness.summary(),
                "cpu": self.cpu(), "malloc_mmap_threshold": self.mmap_threshold,
                "local_queue_frames": None if self.local_queue_unavailable else self.local_queue_frames,
                "local_queue_unavailable": self.local_queue_unavailable}
