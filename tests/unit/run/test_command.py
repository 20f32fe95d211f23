"""run_command: exit status checked, the error names the purpose, the command and its stderr."""

from __future__ import annotations

import sys

import pytest

from testbed.command import EXIT_NOT_STARTED, CommandFailed, in_netns, run_command
from testbed.errors import EnvironmentProblem


def test_a_failing_command_raises_with_its_exit_status_and_stderr() -> None:
    with pytest.raises(CommandFailed) as caught:
        run_command([sys.executable, "-c", "import sys; sys.stderr.write('no such thing\\n'); sys.exit(3)"],
                    what="probing the thing")
    error = caught.value
    assert error.returncode == 3 and "no such thing" in error.stderr
    assert error.message.startswith("probing the thing: `")
    assert "exited 3: no such thing" in error.message
    assert isinstance(error, EnvironmentProblem) and error.exit_code == 3


def test_success_returns_stdout_and_input_reaches_the_command() -> None:
    done = run_command([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], input="abc")
    assert done.returncode == 0 and done.stdout == "ABC\n"


def test_without_check_the_caller_reads_the_status() -> None:
    assert run_command([sys.executable, "-c", "raise SystemExit(5)"], check=False).returncode == 5
    missing = run_command(["/nonexistent/tool"], check=False)
    assert missing.returncode == EXIT_NOT_STARTED and "cannot start" in missing.stderr
    with pytest.raises(CommandFailed, match="exited 127: cannot start"):
        run_command(["/nonexistent/tool"])


def test_a_timeout_is_an_error_even_without_check() -> None:
    with pytest.raises(CommandFailed, match="timed out") as caught:
        run_command([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.2, check=False)
    assert caught.value.returncode is None


def test_netns_prefixes_ip_netns_exec() -> None:
    assert in_netns("tb-1-a", ["ip", "link"]) == ["ip", "netns", "exec", "tb-1-a", "ip", "link"]
    assert in_netns(None, ["ip", "link"]) == ["ip", "link"]
