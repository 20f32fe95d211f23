"""`--target command:NAME`: a user's MPTCP implementation, under the command contract of
docs/command-endpoints.md, as the probe target.

The `[stacks.NAME]` table of `--stacks FILE` names a server and a client command. The server
command runs in the target host ({listen_addr} 10.0.100.2, {server_addr1} the second address,
{port} the probe port) with stdin open and stdout discarded; it is (re)started before a probe
whenever it is not ready: it exited (the contract's server accepts one connection), or with
`ready = "listen"` no socket listens on the port any more; with another `ready` it is started
afresh for every probe. The client command (the `client` probes) connects to the prober
({server_addr} 10.0.1.1, {port} the prober's listening port) with a short text on stdin, stdin
held open for the length of the probe.

A command server only receives: probes that judge data or a DATA_FIN the target sends back
(REPLY_PROBES) are not run and say so, and counters are not read (a program with its own stack
has none the testbed can see).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from testbed.endpoints.command_ss import listening_on
from testbed.endpoints.command_template import TemplateError, TemplateValues, fill_template, missing_program

COMMAND_PREFIX = "command:"
READY_TIMEOUT_S = 15.0
STOP_GRACE_S = 2.0
COUNTERS_NOTE = "not measurable for a command target"
# probes whose verdict rests on data the target sends back (the echo, data on a chosen subflow,
# a DATA_FIN after it): a command server writes what it receives to stdout and sends nothing.
# Checked by running all of them against mptcpize ncat (which does not echo): exactly these 12
# failed for want of the echo, every other probe gave the host kernel's verdict.
REPLY_PROBES = frozenset({
    "mpc_version0", "mpc_flag_b", "mpc_no_flag_h", "mpc_plain_syn", "mpc_idsn", "mpc_flag_a",
    "join_backup", "dss_duplicate", "data_fin_reply", "dss_infinite_mapping",
    "dss_stripped_first_data", "mp_prio_backup",
})
REPLY_NOTE = (f"{COUNTERS_NOTE}: the probe judges data or a DATA_FIN the target sends back, and a "
              "command server only receives (docs/command-endpoints.md)")


def stack_name(target: str) -> str | None:
    return target[len(COMMAND_PREFIX):] if target.startswith(COMMAND_PREFIX) else None


def load_stacks(path: Path) -> dict[str, dict[str, str]]:
    """The [stacks.NAME] tables of a --stacks file (the survey's and the matrix's format)."""
    from testbed.spec import parse_command_stacks, read_toml

    return parse_command_stacks(read_toml(path, "stacks").get("stacks", {}), f"{path}: [stacks]")


def check_stack(target: str, stacks: dict[str, dict[str, str]] | None) -> dict[str, str]:
    """The stack table of a command:NAME target; one line (ProbeError) when it cannot run."""
    from testbed.probe.bed import ProbeError

    name = stack_name(target) or ""
    if not stacks or name not in stacks:
        raise ProbeError(f"target {target}: no [stacks.{name}] table (give --stacks FILE with one; "
                         "docs/command-endpoints.md)")
    stack = stacks[name]
    for role in ("server", "client"):
        missing = missing_program(stack[role])
        if missing is not None:
            raise ProbeError(f"target {target}: the {role} command's program {missing!r} is not on PATH")
        try:
            fill_template(stack[role], template_values(5201))
        except TemplateError as exc:
            raise ProbeError(f"target {target}: {role} command: {exc}") from None
    return stack


def template_values(port: int) -> TemplateValues:
    from testbed.probe.bed import ANNOUNCED, PROBER, TARGET

    return TemplateValues(client_addresses=PROBER, server_addresses=(TARGET, ANNOUNCED), port=port,
                          bytes=None, seconds=6.0, timeout_s=READY_TIMEOUT_S, seed=0)


def client_values(port: int) -> TemplateValues:
    """The target as client: the prober is its server."""
    from testbed.probe.bed import ANNOUNCED, PROBER, TARGET

    return TemplateValues(client_addresses=(TARGET, ANNOUNCED), server_addresses=PROBER, port=port,
                          bytes=None, seconds=6.0, timeout_s=READY_TIMEOUT_S, seed=0)


def _start(netns: str, line: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", netns, *shlex.split(line)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, to the program's whole process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdin, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class CommandTarget:
    """The user's server program in the target host, kept ready between probes."""

    def __init__(self, target: str, stack: dict[str, str], netns: str, port: int) -> None:
        self.target = target
        self.stack = stack
        self.netns = netns
        self.port = port
        self.ready = stack.get("ready", "listen")
        self.server: subprocess.Popen[bytes] | None = None
        self.clients: list[subprocess.Popen[bytes]] = []

    def _listening(self) -> bool:
        def in_target(argv: list[str]) -> str:
            return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                                  text=True, timeout=5, check=False).stdout
        return listening_on(self.port, run=in_target)

    def ensure_server(self, fresh: bool = False) -> None:
        """A server program ready for the next connection (restarted if it is not)."""
        running = self.server is not None and self.server.poll() is None
        if running and not fresh and (self.ready != "listen" or self._listening()):
            return
        if self.server is not None:
            _stop(self.server)
        line = fill_template(self.stack["server"], template_values(self.port))
        self.server = _start(self.netns, line)
        self._wait_ready(line)

    def _wait_ready(self, line: str) -> None:
        from testbed.probe.bed import ProbeError

        assert self.server is not None and self.server.stderr is not None
        kind, _, arg = self.ready.partition(":")
        deadline = time.monotonic() + (float(arg) if kind == "delay" else READY_TIMEOUT_S)
        seen = b""
        if kind == "stderr":
            os.set_blocking(self.server.stderr.fileno(), False)
        while True:
            if self.server.poll() is not None:
                tail = (self.server.stderr.read() or b"").decode(errors="replace").strip()[-200:]
                raise ProbeError(f"target {self.target}: `{line}` exited with status "
                                 f"{self.server.returncode} before it was ready: {tail or 'no stderr'}")
            if kind == "listen" and self._listening():
                return
            if kind == "stderr":
                with contextlib.suppress(BlockingIOError, TypeError):
                    seen += self.server.stderr.read() or b""
                if arg.encode() in seen:
                    return
            if time.monotonic() >= deadline:
                if kind == "delay":
                    return
                raise ProbeError(f"target {self.target}: `{line}` was not ready within "
                                 f"{READY_TIMEOUT_S:.0f} s ({self.ready})")
            time.sleep(0.05)

    def before_probe(self) -> None:
        """A server for the next probe: one that still listens is kept; a program whose
        readiness the testbed cannot see again is started afresh."""
        self.ensure_server(fresh=self.ready != "listen")

    def start_client(self, port: int, data: bytes) -> None:
        line = fill_template(self.stack["client"], client_values(port))
        process = _start(self.netns, line)
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.write(data)
            process.stdin.flush()
        self.clients.append(process)  # stdin stays open until the probe ends

    def stop_clients(self) -> None:
        for process in self.clients:
            _stop(process)
        self.clients.clear()

    def close(self) -> None:
        self.stop_clients()
        if self.server is not None:
            _stop(self.server)
            self.server = None

    def detail(self) -> dict[str, Any]:
        return {"stack": "command", "name": stack_name(self.target),
                "description": self.stack.get("description", ""),
                "server": self.stack["server"], "client": self.stack["client"], "ready": self.ready,
                "endpoint": f"{self.stack['server']} (restarted whenever it is not ready)",
                "counters": COUNTERS_NOTE}


def not_run_row(probe: Any) -> dict[str, Any]:
    """The row of a probe a command target cannot answer."""
    return {"name": probe.name, "group": probe.group, "survey_row": probe.survey_row, "rfc": probe.rfc,
            "packetdrill": probe.packetdrill, "verdict": "not-measurable", "expected": probe.expected,
            "observed": REPLY_NOTE, "trace": [], "counters": {}}

