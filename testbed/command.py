"""The one way the orchestrator runs a short command: exit status checked, stderr kept.

Mininet types commands into an interactive shell and loses their exit codes; earlier versions
of this project had five private copies of `subprocess.run(..., check=False)` that each
formatted their own error. Here every short command (ip, sysctl, ethtool, nft, tshark, git)
goes through `run_command`, and a failure is a `CommandFailed` that names what was being done,
the command, its exit status and the tail of its stderr. Long-running programs (endpoints,
inline processes, capture) are started with Popen by their owners; those owners read the exit
codes too.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from testbed.errors import EnvironmentProblem

DEFAULT_TIMEOUT_S = 60.0
STDERR_TAIL_CHARS = 500
# what a command that could not be started at all reports as its exit status (as a shell does)
EXIT_NOT_STARTED = 127


class CommandFailed(EnvironmentProblem):
    """A command exited non-zero, timed out or could not be started.

    An EnvironmentProblem because these commands set up the machine (namespaces, sysctls,
    offloads, nft): when one fails, the machine cannot do what the run needs.
    """

    def __init__(self, what: str, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.what = what
        self.argv = list(argv)
        self.returncode = returncode  # None: timed out
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = stderr.strip()[-STDERR_TAIL_CHARS:]
        super().__init__(f"{what}: `{shlex.join(self.argv)}` {status}" + (f": {tail}" if tail else ""))


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` as run inside the named network namespace (unchanged for None)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run_command(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    what: str | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (inside `netns` if given) to completion and return it, text mode.

    With `check` (the default) a non-zero exit, a timeout or a missing program raises
    CommandFailed; `what` says what the command was for in that message (default: the program
    name). Without `check` the caller reads `returncode` itself (a program that could not be
    started reports EXIT_NOT_STARTED and the reason as stderr); a timeout still raises.
    """
    full = in_netns(netns, argv)
    label = what or (f"{argv[0]} in {netns}" if netns else str(argv[0]))
    try:
        done = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise CommandFailed(label, full, None, stderr) from exc
    except OSError as exc:
        done = subprocess.CompletedProcess(full, EXIT_NOT_STARTED, "", f"cannot start: {exc}")
    if check and done.returncode != 0:
        raise CommandFailed(label, full, done.returncode, done.stderr or done.stdout)
    return done


def stop_process(process: subprocess.Popen, timeout_s: float = 5.0) -> str:
    """Terminate a process started with stdout=PIPE (kill it after `timeout_s`) and return
    what it printed, decoded."""
    if process.poll() is None:
        process.terminate()
    try:
        out, _err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _err = process.communicate()
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")
