"""split: cuts data segments into smaller ones, as TSO/GSO and some proxies do.

Imitates TCP segmentation offload: the NIC (or the kernel's GSO) receives one large segment
and emits MSS-sized pieces with consecutive sequence numbers, copying the TCP options onto
every piece, so a DSS mapping appears several times (RFC 8684 §3.3 makes mappings relative
to the subflow sequence space precisely so that they survive this). Honda et al. (IMC 2011)
tested NICs that do this. `options_on_pieces = "first"` imitates a splitting proxy that keeps
options only on the first piece, and `"first_mptcp"` one that copies the TCP options it knows
but leaves MPTCP options on the first piece only.
FIN and PSH stay on the last piece; the IP identification increments per piece, as TSO does.
SYN, RST and URG segments are never split.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.classify import MPTCP_OPTION_TYPES
from middleboxes.contract import Direction
from middleboxes.spec import CommonParams, directions_of, param
from testbed.wire.types import FIN, PSH, RST, SYN, URG, Packet, TcpOption

MAX_TCP_PAYLOAD = 65535 - 20 - 20


@dataclass(frozen=True, kw_only=True)
class SplitParams(CommonParams):
    mss_bytes: int = param(536, "largest payload of a piece, bytes", minimum=1,
                           maximum=MAX_TCP_PAYLOAD)
    options_on_pieces: Literal["all", "first", "first_mptcp"] = param(
        "all", "all: copy every option to every piece (TSO); first: options only on the first "
        "piece; first_mptcp: TCP options on all pieces, MPTCP options only on the first")
    direction: Literal["upstream", "downstream", "both"] = param(
        "both", "direction of the segments to split")


def cut_segment(packet: Packet, piece_bytes: int,
                options_for_piece: Callable[[list[TcpOption], int], list[TcpOption]]
                ) -> list[Packet]:
    """Cut a segment's payload into pieces of at most `piece_bytes`, as TSO does.

    Sequence numbers are consecutive, FIN and PSH stay on the last piece, the IP
    identification increments per piece (IPv4; an IPv6 piece copies the header);
    `options_for_piece(options, index)` gives each piece's option list.
    """
    tcp = packet.tcp
    offsets = range(0, len(tcp.payload), piece_bytes)
    last = len(offsets) - 1
    pieces = []
    for index, offset in enumerate(offsets):
        flags = tcp.flags if index == last else tcp.flags & ~(FIN | PSH)
        piece_tcp = dataclasses.replace(
            tcp,
            seq=(tcp.seq + offset) & 0xFFFFFFFF,
            flags=flags,
            options=options_for_piece(tcp.options, index),
            payload=tcp.payload[offset:offset + piece_bytes],
            checksum=None,
        )
        if type(packet) is Packet:
            pieces.append(dataclasses.replace(packet, tcp=piece_tcp,
                                              ident=(packet.ident + index) & 0xFFFF))
        else:  # IPv6 has no identification outside a fragment header
            pieces.append(dataclasses.replace(packet, tcp=piece_tcp))
    return pieces


class Split(MiddleboxBase):
    name = "split"
    imitates = "TCP segmentation offload (TSO/GSO) or a re-segmenting proxy"
    params_type = SplitParams

    def __init__(self, params: SplitParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: SplitParams = params
        self._directions = directions_of(params.direction)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        tcp = packet.tcp
        mss = self.params.mss_bytes
        if (direction not in self._directions or len(tcp.payload) <= mss
                or tcp.flags & (SYN | RST | URG)):
            return [packet]
        pieces = cut_segment(packet, mss, self._options_for_piece)
        self.counters.changed += 1
        self.counters.injected += len(pieces) - 1
        self.change_log.record(now, direction, packet,
                               f"split {len(tcp.payload)} bytes into {len(pieces)} pieces",
                               options_on_pieces=self.params.options_on_pieces)
        return pieces

    def _options_for_piece(self, options: list[TcpOption], index: int) -> list[TcpOption]:
        policy = self.params.options_on_pieces
        if index == 0 or policy == "all":
            return list(options)
        if policy == "first":
            return []
        return [option for option in options if type(option) not in MPTCP_OPTION_TYPES]
