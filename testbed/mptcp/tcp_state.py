"""The TCP subflow state machine as a transition table (h11/_state.py style).

Rules:
- State changes happen ONLY through `transition(state, event)`; the subflow code decides
  which segments to send, the table decides where that leaves the state.
- A (state, event) pair missing from the table is a bug in the caller or an impossible
  sequence; `transition` raises LocalProtocolError naming the state and the event.
- LISTEN is not a subflow state here: a host's listening port creates a subflow directly in
  SYN_RECEIVED when a SYN arrives (there is no half-open subflow object before that).
- Events that do not change state (data, pure ACKs) are not in the table.

`render_diagram()` prints the table as Graphviz dot; the README's diagram comes from it.
"""

from __future__ import annotations

import enum

from testbed.mptcp.errors import LocalProtocolError


class TcpState(enum.Enum):
    CLOSED = "CLOSED"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME_WAIT"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"


class TcpEvent(enum.Enum):
    ACTIVE_OPEN = "active_open"  # we send a SYN
    PASSIVE_OPEN = "passive_open"  # a SYN arrived on a listening port; we answer SYN/ACK
    RECV_SYNACK = "recv_synack"  # SYN/ACK acknowledging our SYN (we send the third ACK)
    RECV_ACK_OF_SYN = "recv_ack_of_syn"  # third ACK arrived
    CLOSE = "close"  # we send FIN
    RECV_FIN = "recv_fin"  # the peer's FIN, in order
    RECV_ACK_OF_FIN = "recv_ack_of_fin"  # our FIN is acknowledged
    TIMEOUT_2MSL = "timeout_2msl"
    RECV_RST = "recv_rst"
    ABORT = "abort"  # we reset, or gave up after retransmissions


S = TcpState
E = TcpEvent

TRANSITIONS: dict[TcpState, dict[TcpEvent, TcpState]] = {
    S.CLOSED: {E.ACTIVE_OPEN: S.SYN_SENT, E.PASSIVE_OPEN: S.SYN_RECEIVED},
    S.SYN_SENT: {E.RECV_SYNACK: S.ESTABLISHED, E.CLOSE: S.CLOSED, E.RECV_RST: S.CLOSED,
                 E.ABORT: S.CLOSED},
    S.SYN_RECEIVED: {E.RECV_ACK_OF_SYN: S.ESTABLISHED, E.CLOSE: S.FIN_WAIT_1,
                     E.RECV_RST: S.CLOSED, E.ABORT: S.CLOSED},
    S.ESTABLISHED: {E.CLOSE: S.FIN_WAIT_1, E.RECV_FIN: S.CLOSE_WAIT, E.RECV_RST: S.CLOSED,
                    E.ABORT: S.CLOSED},
    S.FIN_WAIT_1: {E.RECV_ACK_OF_FIN: S.FIN_WAIT_2, E.RECV_FIN: S.CLOSING,
                   E.RECV_RST: S.CLOSED, E.ABORT: S.CLOSED},
    S.FIN_WAIT_2: {E.RECV_FIN: S.TIME_WAIT, E.RECV_RST: S.CLOSED, E.ABORT: S.CLOSED},
    S.CLOSING: {E.RECV_ACK_OF_FIN: S.TIME_WAIT, E.RECV_RST: S.CLOSED, E.ABORT: S.CLOSED},
    S.TIME_WAIT: {E.TIMEOUT_2MSL: S.CLOSED, E.RECV_RST: S.CLOSED, E.ABORT: S.CLOSED},
    S.CLOSE_WAIT: {E.CLOSE: S.LAST_ACK, E.RECV_RST: S.CLOSED, E.ABORT: S.CLOSED},
    S.LAST_ACK: {E.RECV_ACK_OF_FIN: S.CLOSED, E.RECV_RST: S.CLOSED, E.ABORT: S.CLOSED},
}

# States in which the subflow may still send new data / must still receive data.
SEND_OPEN = frozenset({S.ESTABLISHED, S.CLOSE_WAIT})
RECEIVE_OPEN = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})
SYNCHRONIZED = frozenset(set(TcpState) - {S.CLOSED, S.SYN_SENT, S.SYN_RECEIVED})


def transition(state: TcpState, event: TcpEvent) -> TcpState:
    """The state after `event` in `state`; an event the table does not allow raises."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise LocalProtocolError(
            f"TCP state machine: event {event.value} is not allowed in state {state.value}"
        ) from None


def render_diagram() -> str:
    """Graphviz dot source of the transition table."""
    lines = ["digraph tcp_subflow {", "  rankdir=LR;"]
    for state, edges in TRANSITIONS.items():
        for event, target in edges.items():
            lines.append(f'  "{state.value}" -> "{target.value}" [label="{event.value}"];')
    lines.append("}")
    return "\n".join(lines)


def render_text_table() -> str:
    """The table as aligned text rows (state, event, next state) for the README."""
    rows = [f"{s.value:<13} {e.value:<16} -> {t.value}"
            for s, edges in TRANSITIONS.items() for e, t in edges.items()]
    return "\n".join(rows)
