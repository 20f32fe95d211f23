"""What an experiment's capture shows about the DSS and the signalling, per direction.

The survey's signalling rows ask what an implementation puts on the wire: 4- or 8-byte data
ACKs and DSNs, DATA_FIN, DSS checksums, who sends MP_JOIN SYNs, MP_PRIO, ADD_ADDR. The
capture of the client host (tcpdump -i any, headers and options) holds every segment of both
ends; this pass decodes their options with the project's codec and counts, per sender side
(client or server, told by the server's port), each form seen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from testbed.analyze.capture import open_capture
from testbed.wire import AddAddr, Dss, MpCapable, MpJoinSyn, MpPrio, RemoveAddr, WireError
from testbed.wire.dss_peek import timestamps_then_dss
from testbed.wire.tcp_options import decode_options_at

_SYN = 0x02
_ACK = 0x10


@dataclass
class WireFacts:
    """Counts per side ("client" / "server") of what its segments carried."""

    segments: Counter[str] = field(default_factory=Counter)
    data_ack: Counter[tuple[str, int]] = field(default_factory=Counter)  # (side, 4 or 8)
    dsn: Counter[tuple[str, int]] = field(default_factory=Counter)  # (side, 4 or 8)
    data_fin: Counter[str] = field(default_factory=Counter)
    checksum: Counter[str] = field(default_factory=Counter)  # mappings carrying a checksum
    mp_capable_syn: Counter[str] = field(default_factory=Counter)
    join_syn: Counter[str] = field(default_factory=Counter)
    mp_prio: Counter[str] = field(default_factory=Counter)
    add_addr: Counter[str] = field(default_factory=Counter)
    remove_addr: Counter[str] = field(default_factory=Counter)
    undecodable: int = 0

    def sizes(self, counter: Counter[tuple[str, int]], side: str) -> list[int]:
        return sorted(size for (who, size), count in counter.items() if who == side and count)


def _dss_tuple(option: Dss) -> tuple:
    return (option.data_ack, option.data_ack_64, option.dsn, option.dsn_64, option.subflow_seq,
            option.data_len, option.checksum, option.data_fin)


def read_wire_facts(capture: Path, server_port: int) -> WireFacts:
    """One pass over `capture` (IPv4 TCP segments; anything else is skipped)."""
    facts = WireFacts()
    for _ts, frame, offset, version in open_capture(capture):
        try:
            _count(facts, frame, offset, version, server_port)
        except (WireError, ValueError, IndexError):  # a bad packet is counted, never fatal
            facts.undecodable += 1
    return facts


def _count(facts: WireFacts, frame: bytes, offset: int, version: int, server_port: int) -> None:
    """Count one captured frame's options into `facts`."""
    if version != 4 or len(frame) < offset + 20 or frame[offset + 9] != 6:
        return
    ihl = (frame[offset] & 0x0F) * 4
    tcp = offset + ihl
    if len(frame) < tcp + 20:
        return
    sport = int.from_bytes(frame[tcp:tcp + 2], "big")
    side = "server" if sport == server_port else "client"
    header = (frame[tcp + 12] >> 4) * 4
    flags = frame[tcp + 13]
    facts.segments[side] += 1
    if header <= 20 or tcp + header > len(frame):
        return
    dss = timestamps_then_dss(frame, tcp + 20, tcp + header)
    options: list = []
    if dss is None:
        options = decode_options_at(frame, tcp + 20, tcp + header)
    else:
        options = [dss] if len(dss) == 8 else []  # NO_DSS: timestamps only
    for option in options:
        if isinstance(option, Dss):
            option = _dss_tuple(option)
        if isinstance(option, tuple):
            data_ack, ack64, dsn, dsn64, _ssn, _length, checksum, data_fin = option
            if data_ack is not None:
                facts.data_ack[(side, 8 if ack64 else 4)] += 1
            if dsn is not None:
                facts.dsn[(side, 8 if dsn64 else 4)] += 1
                if checksum is not None:
                    facts.checksum[side] += 1
            if data_fin:
                facts.data_fin[side] += 1
        elif isinstance(option, MpCapable) and flags & _SYN and not flags & _ACK:
            facts.mp_capable_syn[side] += 1
        elif isinstance(option, MpJoinSyn) and flags & _SYN and not flags & _ACK:
            facts.join_syn[side] += 1
        elif isinstance(option, MpPrio):
            facts.mp_prio[side] += 1
        elif isinstance(option, AddAddr):
            facts.add_addr[side] += 1
        elif isinstance(option, RemoveAddr):
            facts.remove_addr[side] += 1
