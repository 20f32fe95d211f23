"""rewrite_seq: shifts a side's TCP sequence numbers by a random per-flow offset.

Imitates ISN-randomizing firewalls (Cisco PIX/ASA "TCP sequence number randomization", some
Linux-based CPE), which Honda et al. (IMC 2011) found on about 10% of paths: the sender's
sequence numbers are shifted by a random offset chosen when the flow is first seen, and the
acknowledgements travelling the other way are shifted back. Some such boxes forget the SACK
blocks (`fix_sack = false`), which then acknowledge sequence numbers the sender never sent;
RFC 8684 §3.3 relies on relative subflow sequence numbers in DSS mappings so that MPTCP is not
affected by the offset itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.contract import Direction
from middleboxes.flows import SEQ_MASK, FlowKey, flow_key, seq_add
from middleboxes.spec import CommonParams, directions_of, param
from testbed.wire.types import ACK, Packet, Sack


@dataclass(frozen=True, kw_only=True)
class RewriteSeqParams(CommonParams):
    direction: Literal["upstream", "downstream", "both"] = param(
        "upstream", "whose sequence numbers are shifted: the senders of packets in this "
        "direction")
    fix_sack: bool = param(True, "also shift SACK blocks travelling the other way back; false "
                           "imitates firewalls that leave them wrong")
    offset: int | None = param(None, "fixed offset instead of a random one per flow (for "
                               "wrap-around experiments)", minimum=0, maximum=SEQ_MASK)


class RewriteSeq(MiddleboxBase):
    name = "rewrite_seq"
    imitates = "ISN-randomizing firewall (Cisco ASA sequence randomization; Honda et al. 2011)"
    params_type = RewriteSeqParams

    def __init__(self, params: RewriteSeqParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: RewriteSeqParams = params
        self._shifted = directions_of(params.direction)
        self._offsets: dict[tuple[FlowKey, Direction], int] = {}

    def offset_for(self, key: FlowKey, direction: Direction) -> int:
        """The offset added to sequence numbers of `key` travelling in `direction`."""
        slot = (key, direction)
        offset = self._offsets.get(slot)
        if offset is None:
            offset = self.params.offset if self.params.offset is not None \
                else self.rng.getrandbits(32)
            self._offsets[slot] = offset
        return offset

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        key = flow_key(packet, direction)
        tcp = packet.tcp
        before = (tcp.seq, tcp.ack)
        sack_changes: list[str] = []
        if direction in self._shifted:
            tcp.seq = seq_add(tcp.seq, self.offset_for(key, direction))
        reverse = direction.reverse()
        if reverse in self._shifted:
            offset = self.offset_for(key, reverse)
            if tcp.flags & ACK:
                tcp.ack = seq_add(tcp.ack, -offset)
            if self.params.fix_sack and tcp.options:
                sack_changes = self._unshift_sack(packet, offset)
        if (tcp.seq, tcp.ack) != before or sack_changes:
            self.counters.changed += 1
            if self.change_log.enabled:
                changes = [f"{name} {old}->{new}" for name, old, new in
                           (("seq", before[0], tcp.seq), ("ack", before[1], tcp.ack))
                           if old != new]
                self.change_log.record(now, direction, packet, ", ".join(changes + sack_changes))
        return [packet]

    @staticmethod
    def _unshift_sack(packet: Packet, offset: int) -> list[str]:
        options = packet.tcp.options
        changes = []
        for index, option in enumerate(options):
            if isinstance(option, Sack):
                blocks = tuple((seq_add(left, -offset), seq_add(right, -offset))
                               for left, right in option.blocks)
                options[index] = Sack(blocks)
                changes.append(f"sack {list(option.blocks)}->{list(blocks)}")
        return changes
