"""syn_firewall: drops (or resets) SYNs that carry TCP options it does not know.

Imitates the hostile firewalls of RFC 8041 §3 and Honda et al. (IMC 2011): stateful firewalls
and IDS that accept only the options of classic TCP on connection attempts and silently drop
anything else, which is why a Linux MPTCP client retries its SYN without MP_CAPABLE after
`syn_retrans_before_tcp_fallback` timeouts (RFC 8684 §3.7). `action = "reset"` imitates the
variant that answers with a RST instead of dropping. The known set is configurable, so the
same box can accept MP_CAPABLE but refuse MP_JOIN (subflow-rejected outcomes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.classify import (
    MPTCP_SUBTYPE_NAMES,
    TCP_OPTION_NAMES,
    option_name,
    option_types_named,
)
from middleboxes.contract import Direction
from middleboxes.flows import seq_add
from middleboxes.spec import CommonParams, ParamError, directions_of, param
from testbed.wire.ipv6 import Ipv6Packet
from testbed.wire.types import ACK, FIN, RST, SYN, Packet, TcpSegment

KNOWABLE_NAMES: tuple[str, ...] = ("mptcp", *MPTCP_SUBTYPE_NAMES,
                                   *(n for n in TCP_OPTION_NAMES if n != "unknown_tcp"))
CLASSIC_KNOWN: tuple[str, ...] = ("eol", "nop", "mss", "window_scale", "sack_permitted",
                                  "timestamps")


@dataclass(frozen=True, kw_only=True)
class SynFirewallParams(CommonParams):
    known_options: tuple[str, ...] = param(CLASSIC_KNOWN, "options the firewall accepts on SYNs: "
                                           + ", ".join(KNOWABLE_NAMES))
    packets: tuple[Literal["syn", "synack"], ...] = param(("syn",), "which handshake packets "
                                                          "are checked")
    action: Literal["drop", "reset"] = param("drop", "drop silently, or drop and answer the "
                                             "sender with a RST")
    direction: Literal["upstream", "downstream", "both"] = param(
        "both", "direction of the SYNs to check")

    def check(self) -> None:
        for name in self.known_options:
            if name not in KNOWABLE_NAMES:
                raise ParamError("known_options",
                                 f"got {name!r}, allowed: {', '.join(KNOWABLE_NAMES)}")
        if not self.packets:
            raise ParamError("packets", "must name syn, synack or both")


def reset_for(packet: Packet) -> Packet:
    """The RST a TCP stack would answer this segment with (RFC 9293 §3.10.7.1)."""
    tcp = packet.tcp
    length = len(tcp.payload) + (1 if tcp.flags & SYN else 0) + (1 if tcp.flags & FIN else 0)
    if tcp.flags & ACK:
        segment = TcpSegment(src_port=tcp.dst_port, dst_port=tcp.src_port, seq=tcp.ack, ack=0,
                             flags=RST, window=0)
    else:
        segment = TcpSegment(src_port=tcp.dst_port, dst_port=tcp.src_port, seq=0,
                             ack=seq_add(tcp.seq, length), flags=RST | ACK, window=0)
    if type(packet) is Ipv6Packet:
        return Ipv6Packet(src=packet.dst, dst=packet.src, tcp=segment, hop_limit=64,
                          traffic_class=packet.traffic_class)
    return Packet(src=packet.dst, dst=packet.src, tcp=segment, ttl=64, tos=packet.tos)


class SynFirewall(MiddleboxBase):
    name = "syn_firewall"
    imitates = "stateful firewall refusing unknown TCP options on SYNs (RFC 8041; Honda 2011)"
    params_type = SynFirewallParams

    def __init__(self, params: SynFirewallParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: SynFirewallParams = params
        self._known = option_types_named(params.known_options)
        self._check_syn = "syn" in params.packets
        self._check_synack = "synack" in params.packets
        self._directions = directions_of(params.direction)
        self._resets: list[tuple[Packet, Direction]] = []
        self._reset_deadline: float | None = None

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        flags = packet.tcp.flags
        if direction not in self._directions or not flags & SYN:
            return [packet]
        if not (self._check_synack if flags & ACK else self._check_syn):
            return [packet]
        unknown = [option_name(o) for o in packet.tcp.options if type(o) not in self._known]
        if not unknown:
            return [packet]
        self.counters.dropped += 1
        self.change_log.record(now, direction, packet,
                               f"dropped SYN with unknown options {', '.join(unknown)}",
                               action=self.params.action)
        if self.params.action == "reset":
            self._resets.append((reset_for(packet), direction.reverse()))
            self._reset_deadline = now
            self.counters.injected += 1
        return []

    def next_deadline(self) -> float | None:
        return self._reset_deadline if self._resets else None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        """RSTs go back towards the sender, so they leave through release, not process."""
        if not self._resets:
            return []
        resets, self._resets = self._resets, []
        self._reset_deadline = None
        return resets
