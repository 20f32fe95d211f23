"""The connection's mode (MPTCP, or plain TCP after fallback) and the facts of failure.

Modes as a table (h11 style): "pending" (handshake), "mptcp", "fallback" (plain TCP on one
subflow; never left). A missing entry is an error naming mode and event. `FallbackState`
also records how the connection fell back or failed (the outcome a report shows) and the
failure signals still to send (MP_FAIL, the infinite mapping), so the option writer and the
connection read one object for all of it. The decisions that need the data level (rewinding
after MP_FAIL, resetting a subflow) are the connection's.
"""

from __future__ import annotations

from testbed.mptcp.errors import LocalProtocolError

PENDING, MPTCP, FALLBACK = "pending", "mptcp", "fallback"

# There is no way out of FALLBACK: once fallen back a connection never returns to MPTCP.
MODE_TRANSITIONS: dict[str, dict[str, str]] = {
    PENDING: {"keys_exchanged": MPTCP, "fallback": FALLBACK},
    MPTCP: {"fallback": FALLBACK},
    FALLBACK: {},
}


def next_mode(mode: str, event: str) -> str:
    try:
        return MODE_TRANSITIONS[mode][event]
    except KeyError:
        raise LocalProtocolError(f"connection mode machine: event {event} is not allowed in "
                                 f"mode {mode}") from None


class FallbackState:
    """Mode, how it fell back, and failure signals pending (RFC 8684 3.7)."""

    def __init__(self) -> None:
        self.mode = PENDING
        self.fallback_kind: str | None = None  # fallback-syn, fallback-infinite-map, mp-fail
        self.mp_fail_seen = False
        self.subflow_rejected = False  # a join was refused, stripped or reset
        # infinite-mapping fallback is allowed only until a join subflow exists
        self.allow_infinite_fallback = True
        self.infinite_map_pending = False  # send the infinite mapping on the next segment
        self.pending_mp_fail: int | None = None  # DSN to report in an MP_FAIL

    def keys_exchanged(self) -> None:
        self.mode = next_mode(self.mode, "keys_exchanged")

    def fall_back(self, kind: str | None) -> bool:
        """Switch to plain TCP for good; False when already there. kind None: plain TCP by
        configuration (no fallback to report)."""
        if self.mode == FALLBACK:
            return False
        self.mode = next_mode(self.mode, "fallback")
        if self.fallback_kind is None and kind is not None:
            self.fallback_kind = kind
        return True

    def outcome(self, closed_reason: str | None) -> str:
        if closed_reason in ("reset", "fastclose"):
            return "reset"
        if closed_reason == "timeout":
            return "stalled"
        if self.mp_fail_seen:
            return "mp-fail"
        if self.fallback_kind is not None:
            return self.fallback_kind
        if self.mode == FALLBACK:
            return "fallback-syn"
        if self.subflow_rejected:
            return "subflow-rejected"
        if self.mode == PENDING:
            return "stalled"
        return "mptcp"
