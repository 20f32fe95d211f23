"""The python server's accept timeout counts from its last connection, as the kernel endpoint's
does: a backend of a balancer run that served its first connection for 25 s still takes the
next one 5 s later (it gave up at 20 s from its start before, and the lb test failed on it)."""

from __future__ import annotations

from testbed.endpoints.kernel import StopRequest
from testbed.endpoints.stack_endpoint import EndpointApp, build_parser


class Job:
    """What EndpointApp.step asks of a transfer job: whether it is done, and its next deadline."""

    def __init__(self) -> None:
        self.finished = False

    def step(self, now: float, stop: str | None) -> float | None:
        return None


def _server(timeout_s: float) -> EndpointApp:
    args = build_parser().parse_args(["server", "--listen", "0.0.0.0:5201", "--connections", "3",
                                      "--timeout", f"{timeout_s:g}"])
    app = EndpointApp(args, host=None, stop=StopRequest(), connections=3)  # type: ignore[arg-type]
    app.waiting_since = 0.0
    return app


def test_the_wait_for_the_next_connection_starts_when_the_last_one_ends() -> None:
    app = _server(20.0)
    app.accepted, app.waiting_since = 1, 1.0
    job = Job()
    app.jobs[1] = job  # type: ignore[assignment]
    for now in (1.0, 10.0, 24.0):  # the first connection runs on past the timeout
        app.step(now)
    job.finished = True
    app.step(30.0)
    assert app.failed_to_accept is None and not app.finished
    app.step(43.9)
    assert app.failed_to_accept is None
    app.step(44.1)  # 20 s after the step that last saw the connection running
    assert app.failed_to_accept == "no connection within 20 s" and app.finished


def test_a_server_that_never_gets_a_connection_gives_up_after_its_timeout() -> None:
    app = _server(5.0)
    app.step(4.9)
    assert app.failed_to_accept is None
    app.step(5.0)
    assert app.failed_to_accept == "no connection within 5 s"
