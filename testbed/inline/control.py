"""Client of the inline process's control socket, for the orchestrator and the tests.

Each call opens a fresh connection: the process may have been restarted, and a stale
connection must never hide that. When the process is gone the call raises InlineGoneError
naming the socket path; a request the process refuses raises InlineControlError with its reason.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

DEFAULT_TIMEOUT_S = 5.0


class InlineControlError(RuntimeError):
    """The inline process answered with an error, or the answer was not understood."""


class InlineGoneError(InlineControlError):
    """No inline process is listening on the control socket."""


class InlineControl:
    def __init__(self, path: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the successful response object."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.timeout_s)
            try:
                conn.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError) as error:
                raise InlineGoneError(f"no inline process at control socket {self.path}: "
                                      f"{error.strerror}") from error
            try:
                conn.sendall(json.dumps(request).encode() + b"\n")
                reply = self._read_line(conn)
            except TimeoutError as error:
                raise InlineControlError(f"inline process at {self.path} did not answer "
                                         f"{request.get('op')!r} within {self.timeout_s} s"
                                         ) from error
            except (ConnectionResetError, BrokenPipeError) as error:
                raise InlineGoneError(f"inline process at {self.path} closed the connection: "
                                      f"{error}") from error
        try:
            response = json.loads(reply)
        except json.JSONDecodeError as error:
            raise InlineControlError(f"unreadable reply from {self.path}: {reply!r}") from error
        if not isinstance(response, dict) or not response.get("ok"):
            reason = response.get("error") if isinstance(response, dict) else response
            raise InlineControlError(f"inline process at {self.path} refused "
                                     f"{request.get('op')!r}: {reason}")
        return response

    def _read_line(self, conn: socket.socket) -> bytes:
        buffer = b""
        while b"\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                raise InlineGoneError(f"inline process at {self.path} closed the connection "
                                      f"without answering")
            buffer += chunk
        return buffer.partition(b"\n")[0]

    def set_delay(self, delay_ms: float, jitter_ms: float = 0.0, direction: str = "both",
                  **link: Any) -> dict[str, Any]:
        """Change delay/jitter for frames arriving from now on; queued frames are kept.
        `link` may give the link's rate_mbit and queue_pkts, from which the stage takes its
        frame limit (testbed.net.params.held_packets_limit); the stage refuses other keys."""
        request: dict[str, Any] = {"op": "set_delay", "direction": direction,
                                   "delay_ms": delay_ms, "jitter_ms": jitter_ms, **link}
        return self.request(request)["delay"]

    def set_middlebox_active(self, index: int, active: bool) -> dict[str, int]:
        """Switch the index-th middlebox (configured switchable) on or off; its counters then."""
        return self.request({"op": "set_middlebox", "index": index, "active": active})["counters"]

    def stats(self) -> dict[str, Any]:
        return self.request({"op": "stats"})["stats"]

    def stop(self) -> None:
        self.request({"op": "stop"})

    def wait_ready(self, timeout_s: float = 10.0, poll_s: float = 0.02) -> None:
        """Block until the process answers `stats` (it opens the socket only once forwarding)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.stats()
                return
            except InlineGoneError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(poll_s)
