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
guarantees IPv4 without options). IPv6 the same way (`pure_ack_number_v6`; the filter
guarantees TCP right after the fixed header), the flow being addresses and ports.
"""

from __future__ import annotations

from testbed.wire.peek import IPV4_TCP_FLOW_KEY, _only_cumulative_options, pure_ack_number

_HALF_SEQUENCE_SPACE = 1 << 31
_ACK_ONLY = 0x10
_IPPROTO_TCP = 6
# `packet[IPV6_TCP_FLOW_KEY]`: source and destination addresses and the two ports of an IPv6
# packet whose fixed header TCP follows
IPV6_TCP_FLOW_KEY = slice(8, 44)


def pure_ack_number_v6(packet: bytes) -> int | None:
    """`pure_ack_number` for an IPv6 packet with TCP right after the fixed header (no
    extension headers): the acknowledgment number of a pure cumulative ACK, else None."""
    if len(packet) < 60 or packet[0] >> 4 != 6 or packet[6] != _IPPROTO_TCP or packet[53] != _ACK_ONLY:
        return None
    header_end = 40 + (packet[52] >> 4) * 4
    if (((packet[4] << 8) | packet[5]) + 40 != header_end  # carries data, or is malformed
            or header_end > len(packet) or header_end < 60 or packet[52] & 0x0F):
        return None
    if header_end > 60 and not _only_cumulative_options(packet, 60, header_end):
        return None
    return int.from_bytes(packet[48:52], "big")


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
        if data[0] >> 4 == 6:
            flow, ack = data[IPV6_TCP_FLOW_KEY], pure_ack_number_v6(data)
        else:
            flow, ack = data[flow_key], peek(data)
        previous = pending.pop(flow, None)
        if ack is None:
            continue
        if previous is not None and 0 < (ack - previous[1]) % (1 << 32) < _HALF_SEQUENCE_SPACE:
            skipped.add(previous[0])
        pending[flow] = (index, ack)
    if not skipped:
        return packets, 0
    return [data for index, data in enumerate(packets) if index not in skipped], len(skipped)
