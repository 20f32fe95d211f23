"""The inline process's event loop: two legs, a middlebox pipeline, a delay line per direction.

One thread, one `select`. `select` is used rather than poll/epoll because its timeout has
microsecond resolution (poll and epoll round up to whole milliseconds), and the process asks
the kernel for 1 us timer slack, so a frame leaves within a few tens of microseconds of its due
time when the process is not overloaded.

Each wake-up serves the control socket, then drains the legs in batches of at most MAX_BATCH
frames, each batch through the pipeline into its direction's delay line, then everything due
(middlebox-held packets first, as they still have to go through the delay line, then the delay
lines, whose frames go out of the opposite leg), then a flush of both legs; this goes on while
frames keep arriving, up to BUSY_SLICE_S, before the loop selects again. Without delay or
jitter, one leg is drained until it is empty, then the other (`_leg_by_leg`): measured with the
rings on the 2-core development machine, plain forwarding carried 3.9-4.2 Gbit/s so, 2.8 Gbit/s
alternating the legs batch by batch and 2.8 selecting again after every batch. With a delay or
jitter the legs alternate batch by batch (`_alternate`), so no frame waits out the other leg's
slice: under UDP at 2.4 Gbit/s through 5 ms each way, pings took 0.7 ms more than 10 ms so and
0.9 ms with leg-by-leg slices (0.4-0.6 ms before the rings; at 3 Gbit/s 1.3 ms, and 23 ms
before the rings, which could not carry it).
A frame for a line with no delay, no jitter and nothing queued leaves at once instead
(`DelayLine.bypass`): the same order and timing, without the queue round trip per frame.
"Leaves" means queued in the out leg (testbed.inline.ring: with PACKET_MMAP rings, a slot of
its TX ring); the flush hands a round's frames to the kernel, one system call per leg.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from middleboxes.contract import Direction
from testbed.inline.commands import delay_summary
from testbed.inline.controlserver import ControlServer
from testbed.inline.pipeline import MiddleboxPipeline
from testbed.inline.ring import Leg, SocketLeg
from testbed.net.delayline import DelayLine
from testbed.net.params import LinkParams

MAX_BATCH = 256
BUSY_SLICE_S = 0.002  # the longest the loop keeps draining the legs before it selects again
_PR_SET_TIMERSLACK = 29


@dataclass(slots=True)
class DirectionCounters:
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    send_errors: int = 0
    last_send_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"frames_in": self.frames_in, "bytes_in": self.bytes_in,
                "frames_out": self.frames_out, "bytes_out": self.bytes_out,
                "send_errors": self.send_errors, "last_send_error": self.last_send_error}

    def count_error(self, error: OSError) -> None:
        self.send_errors += 1
        self.last_send_error = errno.errorcode.get(error.errno or 0, str(error))


def request_fine_timer_slack() -> bool:
    """Ask for 1 us timer slack (default 50 us) so select wake-ups land close to deadlines."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class InlineProcess:
    """Forwards frames between `left` (client side) and `right` (server side) legs.

    Frames arriving on `left` travel UPSTREAM and leave on `right`; the reverse for DOWNSTREAM.
    `pipeline` is None when no middlebox is configured (frames are then never decoded).
    `links` are the link parameters each direction's delay line follows (DelayLine.for_link).
    A leg given as a plain socket (the unit tests' socketpairs) is read and written one frame
    per system call (SocketLeg).
    """

    def __init__(self, left: Leg | socket.socket, right: Leg | socket.socket,
                 links: dict[Direction, LinkParams],
                 delay_lines: dict[Direction, DelayLine[bytes]],
                 pipeline: MiddleboxPipeline | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        left_leg, right_leg = (SocketLeg(leg) if isinstance(leg, socket.socket) else leg
                               for leg in (left, right))
        self._legs: dict[Direction, Leg] = {Direction.UPSTREAM: left_leg,
                                            Direction.DOWNSTREAM: right_leg}
        self._out_leg: dict[Direction, Leg] = {Direction.UPSTREAM: right_leg,
                                               Direction.DOWNSTREAM: left_leg}
        self._links = dict(links)
        self._delay = delay_lines
        self._pipeline = pipeline
        self._clock = clock
        self._counters = {d: DirectionCounters() for d in Direction}
        self._control: ControlServer | None = None
        self._stop_reason: str | None = None
        self._started = clock()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._owns_wakeup_fd = False

    # --- Controllable ------------------------------------------------------------------
    def delay_params(self, direction: Direction) -> LinkParams:
        return self._links[direction]

    def set_delay(self, direction: Direction, params: LinkParams) -> None:
        self._delay[direction].follow_link(params)
        self._links[direction] = params

    def set_middlebox_active(self, index: int, active: bool) -> dict[str, int]:
        if self._pipeline is None:
            raise ValueError("no middlebox is configured in this process")
        return self._pipeline.set_middlebox_active(index, active)

    def request_stop(self, reason: str = "stop request") -> None:
        """End the loop after the current wake-up; safe from signal handlers and other threads."""
        if self._stop_reason is None:
            self._stop_reason = reason
        with contextlib.suppress(OSError):  # full or closed: the loop is awake or gone anyway
            self._wakeup_w.send(b"\0")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "uptime_s": self._clock() - self._started,
            "stop_reason": self._stop_reason,
        }
        for direction in Direction:
            line = self._delay[direction]
            leg = self._legs[direction]
            result[direction.value] = {
                **self._counters[direction].as_dict(),
                "io": leg.io, "receive_drops": leg.receive_drops(),
                "truncated": leg.truncated,
                "queue_depth": len(line),
                "delay": {**delay_summary(self._links[direction]), **line.stats.as_dict()},
            }
        pipeline = self._pipeline
        result["pipeline"] = pipeline.stats.as_dict() if pipeline else None
        result["middleboxes"] = pipeline.counters() if pipeline else []
        return result

    # --- lifecycle ---------------------------------------------------------------------
    def serve_control(self, path: str) -> None:
        """Open the control socket; call after the legs are open (its file means 'ready')."""
        self._control = ControlServer(path, self)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT end the loop cleanly; the wake-up fd interrupts a pending select."""
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        self._owns_wakeup_fd = True
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.request_stop(signal.Signals(signum).name)

    def close(self) -> None:
        """Release sockets and remove the control socket file. Safe to call twice."""
        if self._control is not None:
            self._control.close()
            self._control = None
        for leg in self._legs.values():
            leg.close()
        if self._owns_wakeup_fd:
            signal.set_wakeup_fd(-1)
            self._owns_wakeup_fd = False
        self._wakeup_r.close()
        self._wakeup_w.close()

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> str:
        """Forward until stopped; returns why it stopped."""
        legs = self._legs
        left, right = legs[Direction.UPSTREAM], legs[Direction.DOWNSTREAM]
        clock = self._clock
        wakeup = self._wakeup_r
        while self._stop_reason is None:
            deadline = self._next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - clock())
            watched: list[Any] = [left, right, wakeup]
            if self._control is not None:
                watched += self._control.sockets()
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            for ready_one in ready:
                if ready_one is wakeup:
                    with contextlib.suppress(BlockingIOError):
                        wakeup.recv(64)
                elif ready_one is not left and ready_one is not right and \
                        self._control is not None:
                    self._control.on_readable(ready_one)
            if self._timed():
                self._alternate(left, right)
            else:
                self._leg_by_leg(left, right)
        return self._stop_reason

    def _timed(self) -> bool:
        """Whether a delay line delays or jitters (its frames' timing is then what matters)."""
        return any(line.delay_ms or line.jitter_ms for line in self._delay.values())

    def _leg_by_leg(self, left: Leg, right: Leg) -> None:
        """Each leg in turn until it is empty (or for BUSY_SLICE_S), the timers and a flush
        after every batch: the fastest order for frames that leave at once (the module
        docstring has the figures)."""
        clock = self._clock
        for leg, direction in ((left, Direction.UPSTREAM), (right, Direction.DOWNSTREAM)):
            busy_since = clock()
            while True:
                moved = self._drain(leg, direction)
                now = clock()
                self._run_timers(now)
                self._flush()
                if not moved or now - busy_since > BUSY_SLICE_S or self._stop_reason:
                    break

    def _alternate(self, left: Leg, right: Leg) -> None:
        """A batch from each leg, the timers and a flush, in rounds while frames keep coming
        (at most BUSY_SLICE_S): no frame waits for the other leg's slice, so a delay line's
        frames keep their timing under load."""
        clock = self._clock
        busy_since = clock()
        while True:
            moved = self._drain(left, Direction.UPSTREAM) + \
                self._drain(right, Direction.DOWNSTREAM)
            now = clock()
            self._run_timers(now)
            self._flush()
            if not moved or now - busy_since > BUSY_SLICE_S or self._stop_reason:
                break

    def _next_deadline(self) -> float | None:
        deadlines = [d for line in self._delay.values() if (d := line.next_deadline()) is not None]
        if self._pipeline is not None and (held := self._pipeline.next_deadline()) is not None:
            deadlines.append(held)
        return min(deadlines) if deadlines else None

    def _drain(self, leg: Leg, direction: Direction) -> int:
        """Up to MAX_BATCH frames from `leg` through the pipeline; the frames that continue in
        their own direction leave together (or queue in the delay line, in order)."""
        frames = leg.receive(MAX_BATCH)
        if not frames:
            return 0
        counters = self._counters[direction]
        counters.frames_in += len(frames)
        counters.bytes_in += sum(map(len, frames))
        pipeline = self._pipeline
        now = self._clock()
        if pipeline is None:
            onward = frames
        else:
            onward, back = pipeline.process_batch(frames, direction, now)
            for out_frame, out_direction in back:  # a box answering back
                out_line = self._delay[out_direction]
                if out_line.bypass():
                    self._send(out_direction, [out_frame])
                else:
                    out_line.push(out_frame, now)
        line = self._delay[direction]
        if line.bypass(len(onward)):
            self._send(direction, onward)
        else:
            for frame in onward:
                line.push(frame, now)
        return len(frames)

    def _run_timers(self, now: float) -> None:
        pipeline = self._pipeline
        if pipeline is not None:
            held = pipeline.next_deadline()
            if held is not None and held <= now:
                for frame, direction in pipeline.release(now):
                    self._delay[direction].push(frame, now)
        for direction, line in self._delay.items():
            head = line.next_deadline()
            if head is not None and head <= now:
                self._send(direction, line.pop_due(now))

    def _send(self, direction: Direction, frames: list[bytes]) -> None:
        counters = self._counters[direction]
        sent, sent_bytes, errors = self._out_leg[direction].send_batch(frames)
        counters.frames_out += sent
        counters.bytes_out += sent_bytes
        for error in errors:
            counters.count_error(error)

    def _flush(self) -> None:
        """Hand the frames this wake-up queued to the kernel, one system call per leg."""
        for direction, leg in self._out_leg.items():
            try:
                leg.flush()
            except OSError as error:
                self._counters[direction].count_error(error)
