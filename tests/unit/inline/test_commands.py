"""The control protocol: each op, and bad requests that change nothing and say why."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from middleboxes.contract import Direction
from testbed.inline.commands import handle_line
from testbed.net.params import LinkParams


class FakeProcess:
    """Records what the protocol asks of the process."""

    def __init__(self) -> None:
        self.params = {d: LinkParams(queue_pkts=77) for d in Direction}
        self.stopped = False

    def delay_params(self, direction: Direction) -> LinkParams:
        return self.params[direction]

    def set_delay(self, direction: Direction, params: LinkParams) -> None:
        self.params[direction] = params

    def stats(self) -> dict[str, Any]:
        return {"upstream": {"frames_in": 3}}

    def request_stop(self) -> None:
        self.stopped = True


def call(process: FakeProcess, request: object) -> dict[str, Any]:
    return handle_line(json.dumps(request).encode(), process)


def test_set_delay_both_keeps_the_queue_unless_given() -> None:
    process = FakeProcess()
    reply = call(process, {"op": "set_delay", "direction": "both", "delay_ms": 10,
                           "jitter_ms": 2})
    assert reply["ok"] is True
    # unshaped (rate None): the in-flight part counts at UNSHAPED_RATE_MBIT for 12 ms
    assert reply["delay"]["upstream"] == {"delay_ms": 10, "jitter_ms": 2, "rate_mbit": None,
                                          "queue_pkts": 77, "queue_limit": 77 + 9908}
    assert process.params == {d: LinkParams(delay_ms=10, jitter_ms=2, queue_pkts=77)
                              for d in Direction}


def test_set_delay_one_direction_takes_its_limit_from_the_link() -> None:
    process = FakeProcess()
    reply = call(process, {"op": "set_delay", "direction": "downstream", "delay_ms": 30,
                           "rate_mbit": 10, "queue_pkts": 5})
    assert reply["ok"] is True
    assert reply["delay"]["downstream"]["queue_limit"] == 5 + 25  # 24.8 frames in 30 ms
    assert process.params[Direction.DOWNSTREAM] == LinkParams(rate_mbit=10, delay_ms=30,
                                                              queue_pkts=5)
    assert process.params[Direction.UPSTREAM] == LinkParams(queue_pkts=77)


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
    (b'{"op": "set_delay", "direction": "both", "delay_ms": -1}',
     "delay_ms=-1: must be between 0 and 10000"),
    (b'{"op": "set_delay", "direction": "both", "delay_ms": 1, "jitter_ms": "x"}',
     "jitter_ms='x': must be a number"),
    (b'{"op": "set_delay", "direction": "both", "delay_ms": 1, "queue_pkts": 0}',
     "queue_pkts=0: must be an integer"),
    (b'{"op": "set_delay", "direction": "both", "delay_ms": 1, "queue_limit": 10}',
     r"unknown key\(s\) \['queue_limit'\]"),
    (b'{"op": "set_delay", "direction": "both", "delay_ms": 1, "loss_pct": 1}',
     r"unknown key\(s\) \['loss_pct'\]"),
])
def test_bad_requests_change_nothing(request_line: bytes, message: str) -> None:
    process = FakeProcess()
    before = dict(process.params)
    reply = handle_line(request_line, process)
    assert reply["ok"] is False
    assert re.search(message, reply["error"]), reply["error"]
    assert process.params == before
    assert not process.stopped
