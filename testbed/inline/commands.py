"""The control protocol: one JSON object per line in, one JSON object per line out.

Requests, dispatched through the table `OPERATIONS` (op -> handler, allowed keys):

    {"op": "set_delay", "direction": "both|upstream|downstream", "delay_ms": 10,
     "jitter_ms": 0, "rate_mbit": 100, "queue_pkts": 100}
                          jitter_ms, rate_mbit, queue_pkts optional: those not given are kept
                          (like `tc change`); rate_mbit and queue_pkts set the frame limit
    {"op": "set_middlebox", "index": 0, "active": true}
                          switch the index-th configured middlebox (built "switchable") on or
                          off; answers with its counters at the switch
    {"op": "stats"}
    {"op": "stop"}

Responses are ``{"ok": true, ...}`` or ``{"ok": false, "error": "<what was wrong>"}``. A bad
request never changes anything and never stops the process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from middleboxes.contract import Direction
from testbed.errors import SpecError
from testbed.inline.config import DELAY_STAGE_KEYS
from testbed.net.params import LinkParams, held_packets_limit


class Controllable(Protocol):
    """What the control protocol drives (the inline process implements it)."""

    def delay_params(self, direction: Direction) -> LinkParams: ...

    def set_delay(self, direction: Direction, params: LinkParams) -> None: ...

    def set_middlebox_active(self, index: int, active: bool) -> dict[str, int]: ...

    def stats(self) -> dict[str, Any]: ...

    def request_stop(self) -> None: ...


class RequestError(ValueError):
    """A request that cannot be carried out; the message goes back to the client."""


_DIRECTIONS: dict[str, tuple[Direction, ...]] = {
    "both": (Direction.UPSTREAM, Direction.DOWNSTREAM),
    "upstream": (Direction.UPSTREAM,),
    "downstream": (Direction.DOWNSTREAM,),
}


def _set_delay(target: Controllable, request: dict[str, Any]) -> dict[str, Any]:
    if "direction" not in request or "delay_ms" not in request:
        raise RequestError("set_delay needs 'direction' and 'delay_ms'")
    directions = _DIRECTIONS.get(request["direction"])
    if directions is None:
        raise RequestError(f"direction must be one of {sorted(_DIRECTIONS)}, "
                           f"got {request['direction']!r}")
    changes = {key: request[key] for key in DELAY_STAGE_KEYS if key in request}
    new_params = {}
    for direction in directions:
        try:
            new_params[direction] = target.delay_params(direction).updated(changes)
        except SpecError as error:
            raise RequestError(str(error)) from error
    # Validate everything before applying anything, so a bad request changes nothing.
    for direction, params in new_params.items():
        target.set_delay(direction, params)
    return {"delay": {d.value: delay_summary(p) for d, p in new_params.items()}}


def delay_summary(params: LinkParams) -> dict[str, Any]:
    """A delay stage's settings as the control protocol and the stats report them."""
    return {"delay_ms": params.delay_ms, "jitter_ms": params.jitter_ms,
            "rate_mbit": params.rate_mbit, "queue_pkts": params.queue_pkts,
            "queue_limit": held_packets_limit(params)}


def _set_middlebox(target: Controllable, request: dict[str, Any]) -> dict[str, Any]:
    index, active = request.get("index"), request.get("active")
    if isinstance(index, bool) or not isinstance(index, int):
        raise RequestError(f"'index' must be an integer, got {index!r}")
    if not isinstance(active, bool):
        raise RequestError(f"'active' must be true or false, got {active!r}")
    try:
        counters = target.set_middlebox_active(index, active)
    except ValueError as error:
        raise RequestError(str(error)) from error
    return {"index": index, "active": active, "counters": counters}


def _stats(target: Controllable, request: dict[str, Any]) -> dict[str, Any]:
    return {"stats": target.stats()}


def _stop(target: Controllable, request: dict[str, Any]) -> dict[str, Any]:
    target.request_stop()
    return {"stopping": True}


Handler = Callable[[Controllable, dict[str, Any]], dict[str, Any]]
OPERATIONS: dict[str, tuple[Handler, frozenset[str]]] = {
    "set_delay": (_set_delay, frozenset({"op", "direction"} | DELAY_STAGE_KEYS)),
    "set_middlebox": (_set_middlebox, frozenset({"op", "index", "active"})),
    "stats": (_stats, frozenset({"op"})),
    "stop": (_stop, frozenset({"op"})),
}


def handle_line(line: bytes, target: Controllable) -> dict[str, Any]:
    """Parse one request line, run it, and return the response object."""
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return {"ok": False, "error": f"request is not valid JSON: {error}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    op = request.get("op")
    entry = OPERATIONS.get(op) if isinstance(op, str) else None
    if entry is None:
        return {"ok": False, "error": f"unknown op {op!r}; known: {sorted(OPERATIONS)}"}
    handler, allowed = entry
    unknown = sorted(set(request) - allowed)
    if unknown:
        return {"ok": False, "error": f"{op}: unknown key(s) {unknown}; allowed: {sorted(allowed)}"}
    try:
        result = handler(target, request)
    except RequestError as error:
        return {"ok": False, "error": f"{op}: {error}"}
    return {"ok": True, **result}
