"""Pure-ACK coalescing over one receive batch, as a NIC's receive offload would do.

A bulk sender gets one ACK per one or two segments it sent, and in Python decoding and
processing each costs far more than its information is worth: of several *pure* cumulative
ACKs of one subflow read in the same batch, only the newest matters. So, within a batch, an
ACK is skipped when the next packet of the same four-tuple is also a pure ACK whose
acknowledgment number is strictly higher. Everything else is kept, in order:

* segments with data, SYN, FIN, RST, URG, ECE/CWR or PSH;
* ACKs with any option but NOP, timestamps, and a DSS carrying only a data ACK (no
  mapping, no DATA_FIN) — so SACK blocks, ADD_ADDR, MP_PRIO, MP_FAIL, FASTCLOSE... all arrive;
* duplicate ACKs (same acknowledgment number: loss detection counts them) and window updates;
* the newest ACK of a run, and any ACK followed by another kind of packet of its flow.

The stack then sees the same cumulative acknowledgments, data ACKs, windows and timestamps
it would have seen after the last ACK of the run; what it loses is the intermediate RTT
samples and per-ACK counts. Its congestion control counts acknowledged *bytes* (no per-ACK
cap), so a run of ACKs folded into one grows the window by the same amount.

Works on raw IPv4 bytes without decoding them: `testbed.wire.peek.pure_ack_number` says
which packets are such pure ACKs, `IPV4_TCP_FLOW_KEY` of which flow (the PacketIO filter
guarantees IPv4 without options).
"""

from __future__ import annotations

from testbed.wire.peek import IPV4_TCP_FLOW_KEY, pure_ack_number

_HALF_SEQUENCE_SPACE = 1 << 31


def coalesce_pure_acks(packets: list[bytes]) -> tuple[list[bytes], int]:
    """The batch without the ACKs that a newer pure ACK of the same flow supersedes, and how
    many were skipped. Order is preserved."""
    if len(packets) < 2:
        return packets, 0
    # four-tuple -> (index in packets, ack number) of its latest packet when that is a pure ACK
    pending: dict[bytes, tuple[int, int]] = {}
    skipped: set[int] = set()
    peek, flow_key = pure_ack_number, IPV4_TCP_FLOW_KEY
    for index, data in enumerate(packets):
        flow = data[flow_key]
        ack = peek(data)
        previous = pending.pop(flow, None)
        if ack is None:
            continue
        if previous is not None and 0 < (ack - previous[1]) % (1 << 32) < _HALF_SEQUENCE_SPACE:
            skipped.add(previous[0])
        pending[flow] = (index, ack)
    if not skipped:
        return packets, 0
    return [data for index, data in enumerate(packets) if index not in skipped], len(skipped)
