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

Works on raw IPv4 bytes (the PacketIO filter already guarantees IPv4 without options, TCP),
without decoding them.
"""

from __future__ import annotations

_ACK_ONLY = 0x10
_NOP, _END, _TIMESTAMPS, _MPTCP = 1, 0, 8, 30
_DSS_SUBTYPE = 2
_DSS_MAPPING = 0x04
_DSS_DATA_FIN = 0x10
_HALF_SEQUENCE_SPACE = 1 << 31


def _only_cumulative_options(data: bytes, start: int, end: int) -> bool:
    """Whether the options in data[start:end] are NOPs, timestamps and a DSS that carries a
    data ACK at most (no mapping, no DATA_FIN)."""
    index = start
    while index < end:
        kind = data[index]
        if kind == _NOP:
            index += 1
            continue
        if kind == _END:
            return True
        if index + 1 >= end:
            return False
        length = data[index + 1]
        if length < 2 or index + length > end:
            return False
        if kind == _MPTCP:
            if length < 4 or data[index + 2] >> 4 != _DSS_SUBTYPE:
                return False
            if data[index + 3] & (_DSS_MAPPING | _DSS_DATA_FIN):
                return False
        elif kind != _TIMESTAMPS:
            return False
        index += length
    return True


def _pure_ack_number(data: bytes) -> int | None:
    """The acknowledgment number of a coalescable pure ACK, or None for any other packet."""
    if data[33] != _ACK_ONLY:
        return None
    header_end = 20 + (data[32] >> 4) * 4
    if int.from_bytes(data[2:4], "big") != header_end:  # carries data (or is malformed)
        return None
    if header_end > 40 and not _only_cumulative_options(data, 40, header_end):
        return None
    return int.from_bytes(data[28:32], "big")


def coalesce_pure_acks(packets: list[bytes]) -> tuple[list[bytes], int]:
    """The batch without the ACKs that a newer pure ACK of the same flow supersedes, and how
    many were skipped. Order is preserved."""
    if len(packets) < 2:
        return packets, 0
    # four-tuple -> (index in packets, ack number) of its latest packet when that is a pure ACK
    pending: dict[bytes, tuple[int, int]] = {}
    skipped: set[int] = set()
    for index, data in enumerate(packets):
        flow = data[12:24]  # addresses and ports
        ack = _pure_ack_number(data)
        previous = pending.pop(flow, None)
        if ack is None:
            continue
        if previous is not None and 0 < (ack - previous[1]) % (1 << 32) < _HALF_SEQUENCE_SPACE:
            skipped.add(previous[0])
        pending[flow] = (index, ack)
    if not skipped:
        return packets, 0
    return [data for index, data in enumerate(packets) if index not in skipped], len(skipped)
