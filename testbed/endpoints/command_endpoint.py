"""Endpoint program that runs a user's command (`stack = "command"`) under the endpoint contract.

    python -m testbed.endpoints.command_endpoint server --listen ADDR:PORT --command LINE
        [--ready listen|stderr:TEXT|delay:S] [the kernel endpoint's options]
    python -m testbed.endpoints.command_endpoint client --connect ADDR:PORT --command LINE
        (--bytes N | --seconds T) [--seed S] [the kernel endpoint's options]

The runner starts this program exactly as it starts the kernel endpoint, with the command line
already filled in (testbed.endpoints.command_template). The contract with the user's program
(docs/command-endpoints.md):

- client: the program connects to the server and sends everything it reads on stdin, then
  exits when stdin ends and the data is sent. Its stdin is the testbed's 24-byte request
  (testbed.endpoints.transfer) followed by the seeded payload, so a command client also talks
  to a kernel or python server.
- server: the program accepts one connection and writes everything it receives to stdout,
  then exits when the peer closes. The first 24 bytes are the request; the rest is hashed.
- readiness: by default the server is ready once a kernel socket listens on the port (`ss`);
  a program on its own stack says so on stderr (`stderr:TEXT`), or is given a delay.
- optionally, a stderr line `testbed-stack-report {json}` tells what the kernel cannot see
  (a program on its own stack): `mptcp_used`, `subflows` (SubflowReport fields),
  `stack_counters`.

This program prints the same JSON-lines reports as the other endpoints: byte count and SHA-256
of exactly the payload bytes, goodput, per-subflow totals from `ss` (testbed.endpoints.
command_ss) where the kernel has them, the program's exit status and the tail of its stderr.
A program that cannot start, never becomes ready or never exits is reported with error kind
"command" and exit status 2 (the runner turns that into a one-line error); its whole process
group is killed whatever happens, and it dies with this program (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from testbed.endpoints.command_ss import KernelViewSampler, listening_on, read_view
from testbed.endpoints.command_template import DONE_MODES, TemplateError, check_ready
from testbed.endpoints.kernel import (
    EXIT_OK,
    EXIT_TRANSFER_FAILED,
    EXIT_USAGE,
    EndpointSettings,
    StopRequest,
    _counters,
    _ReportPrinter,
    build_endpoint_parser,
    failed_report,
)
from testbed.endpoints.payload import PayloadSource
from testbed.endpoints.report import EndpointReport, ErrorKind, ListeningEvent, SubflowReport
from testbed.endpoints.sampler import TimeseriesWriter
from testbed.endpoints.transfer import (
    REQUEST,
    SEND_WINDOW,
    IdleTimeout,
    Interrupted,
    ProtocolError,
    StreamProgress,
    TransferRequest,
)

STDERR_TAIL_CHARS = 2000
STACK_REPORT_PREFIX = "testbed-stack-report "
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 1.0
MIN_SAMPLE_S = 0.1  # `ss` is a process per sample: no faster than this


class CommandProblem(Exception):
    """The user's program did not start, become ready or exit (error kind "command")."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class StderrTail:
    """Reads the program's stderr in a thread: keeps its tail, notices a readiness text and
    the optional stack report line."""

    def __init__(self, stream: IO[bytes], ready_text: str | None) -> None:
        self._stream = stream
        self._ready_text = ready_text
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self.ready = threading.Event()
        self.stack_report: dict[str, Any] | None = None
        self.stack_report_error: str | None = None
        self._thread = threading.Thread(target=self._read, name="command-stderr", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in iter(self._stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(STACK_REPORT_PREFIX):
                self._stack_report(line[len(STACK_REPORT_PREFIX):])
                continue
            self._lines.append(line)
            if self._ready_text is not None and self._ready_text in line:
                self.ready.set()

    def _stack_report(self, text: str) -> None:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            self.stack_report_error = f"stack report line is not JSON: {exc}"
            return
        if isinstance(value, dict):
            self.stack_report = value
        else:
            self.stack_report_error = "stack report line is not a JSON object"

    def text(self) -> str:
        self._thread.join(timeout=2)
        return "\n".join(self._lines)[-STDERR_TAIL_CHARS:]


@dataclass
class ProgramRun:
    """One start of the user's program: the process, its stderr and how it ended."""

    argv: list[str]
    process: subprocess.Popen[bytes]
    stderr: StderrTail
    exit_status: int | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    def wait(self, timeout_s: float, policy_stop: Any) -> int | None:
        """The exit status, or None (a CommandProblem recorded) when it did not exit in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status is not None:
                self.exit_status = status
                return status
            if policy_stop() is not None:
                return None
            time.sleep(0.02)
        self.problem = (f"`{shlex.join(self.argv)}` did not exit within {timeout_s:g} s after "
                        f"its input ended; it was killed")
        return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the program's whole process group."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever it left running in its group
        if self.exit_status is None and self.process.returncode is not None \
                and self.process.returncode >= 0:
            self.exit_status = self.process.returncode


def start_program(argv: list[str], *, stdin: int | None, stdout: int | None,
                  ready_text: str | None = None) -> ProgramRun:
    """Start the program in its own process group; CommandProblem if it cannot start."""
    try:
        process = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise CommandProblem(f"cannot start `{shlex.join(argv)}`: {exc.strerror or exc}") from None
    assert process.stderr is not None
    return ProgramRun(argv, process, StderrTail(process.stderr, ready_text))


def wait_ready(run: ProgramRun, ready: str, port: int, timeout_s: float, stop: Any) -> None:
    """Until the server program is ready (see the module docstring); CommandProblem if it exits
    first or is not ready within `timeout_s`."""
    kind, _, arg = ready.partition(":")
    deadline = time.monotonic() + (float(arg) if kind == "delay" else timeout_s)
    while True:
        if run.process.poll() is not None:
            run.exit_status = run.process.returncode
            raise CommandProblem(f"`{shlex.join(run.argv)}` exited with status "
                                 f"{run.process.returncode} before it was ready: "
                                 f"{run.stderr.text()[-300:].strip() or 'no stderr'}")
        if kind == "listen" and listening_on(port):
            return
        if kind == "stderr" and run.stderr.ready.is_set():
            return
        if time.monotonic() >= deadline:
            if kind == "delay":
                return
            what = f"a socket listening on port {port}" if kind == "listen" else f"{arg!r} on stderr"
            raise CommandProblem(f"`{shlex.join(run.argv)}` was not ready within {timeout_s:g} s "
                                 f"(waited for {what}); it was killed")
        if stop() is not None:
            raise Interrupted(stop())
        time.sleep(0.05)


def _wait_fd(fd: int, writable: bool, slice_s: float) -> bool:
    ready = select.select([], [fd], [], slice_s)[1] if writable else select.select([fd], [], [], slice_s)[0]
    return bool(ready)


def write_stdin(fd: int, request: TransferRequest, progress: StreamProgress,
                settings: EndpointSettings) -> None:
    """The request then the payload into the program's stdin; only payload bytes the pipe took
    are counted and hashed. BrokenPipeError: the program stopped reading."""
    policy = settings.io_policy
    os.set_blocking(fd, False)
    header = memoryview(request.encode())
    source = PayloadSource(request.seed)
    limit = request.byte_limit
    deadline = None if request.seconds is None else settings.clock() + request.seconds
    sent = 0
    idle_since = settings.clock()
    while True:
        policy.check_stop()
        if not header and ((limit is not None and sent >= limit)
                           or (deadline is not None and settings.clock() >= deadline)):
            break
        if not _wait_fd(fd, True, policy.poll_slice):
            if policy.idle_expired(idle_since):
                raise IdleTimeout(f"the program read nothing of its stdin for {settings.io_timeout:g} s")
            continue
        if header:
            try:
                count = os.write(fd, header)
            except BlockingIOError:
                continue
            header = header[count:]
        else:
            window = source.window(sent, SEND_WINDOW if limit is None else min(SEND_WINDOW, limit - sent))
            try:
                count = os.write(fd, window)
            except BlockingIOError:
                continue
            if progress.first_byte_at is None:
                progress.first_byte_at = settings.clock()
            progress.digest.update(window[:count])
            sent += count
        idle_since = settings.clock()
    progress.finished_at = settings.clock()


def read_stdout(fd: int, progress: StreamProgress, settings: EndpointSettings,
                finished: Callable[[], bool] | None = None) -> TransferRequest:
    """The request, then every byte until EOF into `progress` (or, with `finished`, until it
    says the transfer is over while stdout is quiet); ProtocolError for a bad request."""
    policy = settings.io_policy
    header = bytearray()
    request: TransferRequest | None = None
    idle_since = settings.clock()
    while True:
        policy.check_stop()
        if not _wait_fd(fd, False, policy.poll_slice):
            if request is not None and finished is not None and finished():
                progress.finished_at = idle_since
                return request
            if policy.idle_expired(idle_since):
                raise IdleTimeout(f"no data on the program's stdout for {settings.io_timeout:g} s "
                                  f"after {progress.byte_count} payload bytes")
            continue
        data = os.read(fd, 1 << 20)
        now = settings.clock()
        idle_since = now
        if not data:
            progress.finished_at = now
            if request is None:
                raise ProtocolError(f"stdout ended after {len(header)} of {REQUEST.size} request bytes")
            return request
        if request is None:
            header += data
            if len(header) < REQUEST.size:
                continue
            request = TransferRequest.decode(bytes(header[:REQUEST.size]))
            data = bytes(header[REQUEST.size:])
            if not data:
                continue
        if progress.first_byte_at is None:
            progress.first_byte_at = now
        progress.received(data)


def _drain(fd: int, progress: StreamProgress) -> None:
    """What a stopped program had written and not yet been read."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            return
        progress.received(data)


def _error_kind(exc: BaseException) -> tuple[ErrorKind, str]:
    if isinstance(exc, CommandProblem):
        return "command", str(exc)
    if isinstance(exc, IdleTimeout):
        return "timeout", str(exc)
    if isinstance(exc, ProtocolError):
        return "protocol", str(exc)
    if isinstance(exc, Interrupted):
        return "interrupted", str(exc)
    if isinstance(exc, BrokenPipeError):
        return "reset", "the program closed its stdin before reading all of the payload"
    return "os", f"{type(exc).__name__}: {exc}"


def _exit_error(run: ProgramRun) -> tuple[ErrorKind, str] | None:
    """A non-zero exit status as an error kind, from what the program said on stderr."""
    status = run.exit_status
    if status in (0, None):
        return None
    tail = run.stderr.text()
    lowered = tail.lower()
    kind: ErrorKind = "refused" if "refused" in lowered else (
        "reset" if "reset" in lowered or "broken pipe" in lowered else "os")
    last = tail.strip().splitlines()[-1] if tail.strip() else "no stderr"
    return kind, f"the program exited with status {status}: {last[-200:]}"


def build_report(settings: EndpointSettings, run: ProgramRun | None, sampler: KernelViewSampler | None,
                 progress: StreamProgress, request: TransferRequest | None, end_at: float | None,
                 error: tuple[ErrorKind, str] | None, started_at_unix: float) -> EndpointReport:
    """The endpoint report of one command run (the kernel endpoint's fields, plus the program's
    exit status, stderr tail and where the kernel figures came from)."""
    sending = settings.role == "client"
    start_at = progress.first_byte_at
    end = end_at if end_at is not None else (progress.finished_at or start_at)
    duration = max(end - start_at, 0.0) if start_at is not None and end is not None else 0.0
    goodput = progress.byte_count * 8 / duration / 1e6 if duration > 0 else 0.0
    stack = run.stderr.stack_report if run is not None else None
    subflows: tuple[SubflowReport, ...] = ()
    info = None
    mptcp_used = mptcp_seen = False
    local = remote = None
    if sampler is not None and sampler.sockets_seen:
        tracker = sampler.tracker
        subflows = tuple(tracker.subflow_reports())
        info = tracker.last_mptcp_info
        mptcp_seen = sampler.mptcp_subflows_seen > 0
        mptcp_used = mptcp_seen and not (info is not None and info.fallback)
        local, remote = sampler.local, sampler.remote
        view = "ss"
    else:
        port = sampler.port if sampler is not None else "?"
        view = (f"unavailable: no kernel socket on port {port} (the program runs its own stack, "
                f"or never connected)")
    stack_counters = None
    if stack is not None:
        mptcp_used = bool(stack.get("mptcp_used", mptcp_used))
        mptcp_seen = mptcp_seen or mptcp_used
        if isinstance(stack.get("stack_counters"), dict):
            stack_counters = {str(k): int(v) for k, v in stack["stack_counters"].items()}
        if not subflows and isinstance(stack.get("subflows"), list):
            with contextlib.suppress(TypeError):
                subflows = tuple(SubflowReport(**s) for s in stack["subflows"])
        view += "; program's own stack report"
    kind, message = error if error is not None else (None, None)
    return EndpointReport(
        role=settings.role, connection=0, transport=settings.transport,
        mptcp_requested=settings.transport == "mptcp", mptcp_used=mptcp_used,
        direction=request.direction if request else None, sending=sending,
        mode=request.mode if request else None,
        requested_bytes=request.byte_limit if request else None,
        requested_seconds=request.seconds if request else None,
        seed=request.seed if request and sending else None,
        bytes=progress.byte_count, sha256=progress.digest.hexdigest(),
        duration_s=round(duration, 6), goodput_mbps=round(goodput, 3),
        local=local, remote=remote, started_at_unix=round(started_at_unix, 6),
        subflows=subflows, mptcp_info=_counters(info),
        samples=sampler.tracker.samples if sampler is not None else 0,
        mptcp_seen=mptcp_seen, error=message, error_kind=kind,
        exit_code=EXIT_OK if error is None else (EXIT_USAGE if kind == "command" else EXIT_TRANSFER_FAILED),
        stack_counters=stack_counters,
        command_exit_status=run.exit_status if run is not None else None,
        command_stderr=run.stderr.text() if run is not None else None,
        kernel_view=view,
    )


def _sampler(args: argparse.Namespace, port: int, settings: EndpointSettings) -> KernelViewSampler:
    writer = TimeseriesWriter(args.timeseries.open("w", encoding="ascii")) if args.timeseries else None
    return KernelViewSampler(port, max(settings.sample_interval_s, MIN_SAMPLE_S), writer)


def run_server(args: argparse.Namespace, settings: EndpointSettings, out: _ReportPrinter) -> int:
    host, port = args.listen
    ready_text = args.ready.partition(":")[2] if args.ready.startswith("stderr:") else None
    started_at_unix = settings.wall_clock()
    # stdin stays open and empty: a program that half-closes on stdin EOF (ncat, socat) would
    # send a DATA_FIN at once, and Linux refuses joins to a connection that is closing
    run = start_program(shlex.split(args.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        ready_text=ready_text)
    sampler: KernelViewSampler | None = None
    progress = StreamProgress()
    request: TransferRequest | None = None
    error: tuple[ErrorKind, str] | None = None
    try:
        wait_ready(run, args.ready, port, settings.io_timeout, settings.stop_reason)
        out.emit(ListeningEvent(address=f"{host}:{port}", transport=settings.transport,
                                connections=1, pid=os.getpid()).to_json())
        sampler = _sampler(args, port, settings)
        sampler.start()
        progress.keep_received(args.received_file)
        assert run.process.stdout is not None
        fd = run.process.stdout.fileno()
        if args.done == "peer-close":
            # the program keeps listening (joins need its listener): over once the kernel has
            # no connection on the port any more; then stopped, and what it still wrote is read
            request = read_stdout(fd, progress, settings, lambda: not read_view(port).tcp_sockets)
            run.stop()
            _drain(fd, progress)
        else:
            request = read_stdout(fd, progress, settings)
        if args.done == "exit" and run.wait(settings.io_timeout, settings.stop_reason) is None \
                and run.problem:
            raise CommandProblem(run.problem)
        error = _exit_error(run)
    except (CommandProblem, IdleTimeout, ProtocolError, Interrupted, OSError) as exc:
        error = _error_kind(exc)
    finally:
        run.stop()
        progress.close()
        if sampler is not None:
            sampler.finish()
            if sampler.writer is not None:
                sampler.writer.close()
    report = build_report(settings, run, sampler, progress, request, progress.finished_at, error,
                          started_at_unix)
    out.emit(report.to_json())
    return report.exit_code


def run_client(args: argparse.Namespace, settings: EndpointSettings, out: _ReportPrinter) -> int:
    if args.direction != "upload":
        raise CommandProblem("a command endpoint sends client -> server only (direction upload)")
    if args.requests is not None:
        raise CommandProblem("a command endpoint carries bulk traffic only (--bytes or --seconds)")
    if args.seconds is not None:
        request = TransferRequest("upload", "seconds", round(args.seconds * 1e6), args.seed)
    else:
        request = TransferRequest("upload", "bytes", args.bytes, args.seed)
    started_at_unix = settings.wall_clock()
    run = start_program(shlex.split(args.command), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    sampler = _sampler(args, args.connect[1], settings)
    sampler.start()
    progress = StreamProgress()
    error: tuple[ErrorKind, str] | None = None
    end_at: float | None = None
    try:
        assert run.process.stdin is not None
        try:
            write_stdin(run.process.stdin.fileno(), request, progress, settings)
        finally:
            with contextlib.suppress(BrokenPipeError):
                run.process.stdin.close()
        if run.wait(settings.io_timeout, settings.stop_reason) is None and run.problem:
            raise CommandProblem(run.problem)
        end_at = settings.clock()
        error = _exit_error(run)
    except BrokenPipeError as exc:
        run.wait(1.0, settings.stop_reason)
        error = _exit_error(run) or _error_kind(exc)
    except (CommandProblem, IdleTimeout, Interrupted, OSError) as exc:
        error = _error_kind(exc)
    finally:
        run.stop()
        sampler.finish()
        if sampler.writer is not None:
            sampler.writer.close()
    report = build_report(settings, run, sampler, progress, request, end_at, error, started_at_unix)
    out.emit(report.to_json())
    return report.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser, server, client = build_endpoint_parser(
        "python -m testbed.endpoints.command_endpoint",
        "Runs a user's command under the testbed's endpoint contract (JSON lines on stdout).")
    for sub in (server, client):
        sub.add_argument("--command", required=True, help="the program's command line (filled in)")
    server.add_argument("--ready", default="listen", help="listen | stderr:TEXT | delay:SECONDS")
    server.add_argument("--done", default="exit", choices=DONE_MODES,
                        help="the transfer is over when the program exits (stdout ends), or when "
                             "the kernel shows the connection closed (the program is then stopped)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.role == "server":
        try:
            check_ready(args.ready)
        except TemplateError as exc:
            print(f"server: {exc}", file=sys.stderr)
            return EXIT_USAGE
    stop = StopRequest()
    stop.install()
    settings = EndpointSettings(
        role=args.role, transport=args.transport, io_timeout=args.timeout,
        sample_interval_s=args.sample_ms / 1000.0, timeseries=args.timeseries,
        received_file=args.received_file, clock=time.monotonic, wall_clock=time.time,
        sleep=time.sleep, stop_reason=stop)
    out = _ReportPrinter()
    try:
        if args.role == "server":
            return run_server(args, settings, out)
        return run_client(args, settings, out)
    except CommandProblem as exc:
        print(f"{args.role}: {exc}", file=sys.stderr)
        report = failed_report(settings, 0, exc, None, EXIT_USAGE)
        out.emit(EndpointReport(**{**report.__dict__, "error_kind": "command",
                                   "error": str(exc)}).to_json())
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
