"""Errors the orchestrator reports to users as one line, with an exit code, never a traceback."""


class TestbedError(Exception):
    """A problem the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecError(TestbedError):
    """Bad input: malformed TOML, an unknown key or name, an impossible parameter."""

    exit_code = 2


class EnvironmentProblem(TestbedError):
    """The machine lacks something essential (root, mnexec, kernel MPTCP, ...)."""

    exit_code = 3


class RunFailed(TestbedError):
    """An experiment started but could not complete (a process failed, a timeout)."""

    exit_code = 4
