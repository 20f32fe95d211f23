"""The inline process's event loop: two legs, a middlebox pipeline, a delay line per direction.

One thread, one `select`. `select` is used rather than poll/epoll because its timeout has
microsecond resolution (poll and epoll round up to whole milliseconds), and the process asks
the kernel for 1 us timer slack, so a frame leaves within a few tens of microseconds of its due
time when the process is not overloaded.

Each wake-up: drain every ready frame from both legs (bounded by MAX_BATCH per leg so timers
still run under overload), run each through the pipeline into its direction's delay line, serve
control requests, then release everything due: middlebox-held packets first (they still have
to go through the delay line), then the delay lines, whose frames go out of the opposite leg.
A frame for a line with no delay, no jitter and nothing queued leaves at once instead
(`DelayLine.bypass`): the same order and timing, without the queue round trip per frame.
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
from testbed.net.delayline import DelayLine
from testbed.net.params import LinkParams

MAX_BATCH = 256
MAX_FRAME = 65536
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
    """

    def __init__(self, left: socket.socket, right: socket.socket,
                 links: dict[Direction, LinkParams],
                 delay_lines: dict[Direction, DelayLine[bytes]],
                 pipeline: MiddleboxPipeline | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._legs = {Direction.UPSTREAM: left, Direction.DOWNSTREAM: right}
        self._out_leg = {Direction.UPSTREAM: right, Direction.DOWNSTREAM: left}
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
            result[direction.value] = {
                **self._counters[direction].as_dict(),
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
            watched = [left, right, wakeup]
            if self._control is not None:
                watched += self._control.sockets()
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            for sock in ready:
                if sock is left:
                    self._drain(left, Direction.UPSTREAM)
                elif sock is right:
                    self._drain(right, Direction.DOWNSTREAM)
                elif sock is wakeup:
                    with contextlib.suppress(BlockingIOError):
                        wakeup.recv(64)
                elif self._control is not None:
                    self._control.on_readable(sock)
            self._run_timers(clock())
        return self._stop_reason

    def _next_deadline(self) -> float | None:
        deadlines = [d for line in self._delay.values() if (d := line.next_deadline()) is not None]
        if self._pipeline is not None and (held := self._pipeline.next_deadline()) is not None:
            deadlines.append(held)
        return min(deadlines) if deadlines else None

    def _drain(self, leg: socket.socket, direction: Direction) -> None:
        counters = self._counters[direction]
        pipeline = self._pipeline
        delay = self._delay
        line = delay[direction]
        now = self._clock()
        recv = leg.recv
        # Frames usually leave in their own direction: resolve that path once per wake-up.
        out_send = self._out_leg[direction].send
        sent = self._counters[direction]
        for _ in range(MAX_BATCH):
            try:
                frame = recv(MAX_FRAME, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            counters.frames_in += 1
            counters.bytes_in += len(frame)
            outputs = ((frame, direction),) if pipeline is None else \
                pipeline.process(frame, direction, now)
            for out_frame, out_direction in outputs:
                if out_direction is direction:
                    if line.bypass():
                        try:
                            out_send(out_frame)
                        except OSError as error:
                            sent.send_errors += 1
                            sent.last_send_error = errno.errorcode.get(error.errno or 0,
                                                                       str(error))
                            continue
                        sent.frames_out += 1
                        sent.bytes_out += len(out_frame)
                    else:
                        line.push(out_frame, now)
                    continue
                out_line = delay[out_direction]
                if out_line.bypass():
                    self._send_one(out_direction, out_frame)
                else:
                    out_line.push(out_frame, now)

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

    def _send_one(self, direction: Direction, frame: bytes) -> None:
        """Send one frame that needs no queueing (DelayLine.bypass said so)."""
        try:
            self._out_leg[direction].send(frame)
        except OSError as error:
            counters = self._counters[direction]
            counters.send_errors += 1
            counters.last_send_error = errno.errorcode.get(error.errno or 0, str(error))
            return
        counters = self._counters[direction]
        counters.frames_out += 1
        counters.bytes_out += len(frame)

    def _send(self, direction: Direction, frames: list[bytes]) -> None:
        counters = self._counters[direction]
        send = self._out_leg[direction].send
        for frame in frames:
            try:
                send(frame)
            except OSError as error:
                counters.send_errors += 1
                counters.last_send_error = errno.errorcode.get(error.errno or 0, str(error))
                continue
            counters.frames_out += 1
            counters.bytes_out += len(frame)

