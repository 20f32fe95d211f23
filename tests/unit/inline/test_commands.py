"""The control protocol: each op, and bad requests that change nothing and say why."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from middleboxes.base import Direction
from testbed.inline.commands import handle_line
from testbed.inline.delay import DelayParams


class FakeProcess:
    """Records what the protocol asks of the process."""

    def __init__(self) -> None:
        self.params = {d: DelayParams(queue_limit=77) for d in Direction}
        self.stopped = False

    def delay_params(self, direction: Direction) -> DelayParams:
        return self.params[direction]

    def set_delay(self, direction: Direction, params: DelayParams) -> None:
        self.params[direction] = params

    def stats(self) -> dict[str, Any]:
        return {"upstream": {"frames_in": 3}}

    def request_stop(self) -> None:
        self.stopped = True


def call(process: FakeProcess, request: object) -> dict[str, Any]:
    return handle_line(json.dumps(request).encode(), process)


def test_set_delay_both_keeps_queue_limit_unless_given() -> None:
    process = FakeProcess()
    reply = call(process, {"op": "set_delay", "direction": "both", "delay_ms": 10,
                           "jitter_ms": 2})
    assert reply["ok"] is True
    assert reply["delay"]["upstream"] == {"delay_ms": 10, "jitter_ms": 2, "queue_limit": 77}
    assert process.params == {d: DelayParams(10, 2, 77) for d in Direction}


def test_set_delay_one_direction() -> None:
    process = FakeProcess()
    reply = call(process, {"op": "set_delay", "direction": "downstream", "delay_ms": 30,
                           "queue_limit": 5})
    assert reply["ok"] is True
    assert process.params[Direction.DOWNSTREAM] == DelayParams(30, 0, 5)
    assert process.params[Direction.UPSTREAM] == DelayParams(queue_limit=77)


def test_stats_and_stop() -> None:
    process = FakeProcess()
    assert call(process, {"op": "stats"}) == {"ok": True, "stats": {"upstream": {"frames_in": 3}}}
    assert not process.stopped
    assert call(process, {"op": "stop"})["ok"] is True
    assert process.stopped


@pytest.mark.parametrize(("request_line", "message"), [
    (b"not json", "request is not valid JSON"),
    (b"[1]", "request must be a JSON object"),
    (b'{"op": "reboot"}', "unknown op 'reboot'"),
    (b'{"delay_ms": 1}', "unknown op None"),
    (b'{"op": "stats", "verbose": 1}', r"stats: unknown key\(s\) \['verbose'\]"),
    (b'{"op": "set_delay", "direction": "both"}', "needs 'direction' and 'delay_ms'"),
    (b'{"op": "set_delay", "direction": "sideways", "delay_ms": 1}', "direction must be one of"),
    (b'{"op": "set_delay", "direction": "both", "delay_ms": -1}', "delay_ms must be finite"),
    (b'{"op": "set_delay", "direction": "both", "delay_ms": 1, "jitter_ms": "x"}',
     "jitter_ms must be a number"),
    (b'{"op": "set_delay", "direction": "both", "delay_ms": 1, "queue_limit": 0}',
     "queue_limit must be an integer"),
])
def test_bad_requests_change_nothing(request_line: bytes, message: str) -> None:
    process = FakeProcess()
    before = dict(process.params)
    reply = handle_line(request_line, process)
    assert reply["ok"] is False
    assert re.search(message, reply["error"]), reply["error"]
    assert process.params == before
    assert not process.stopped
