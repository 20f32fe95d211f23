"""strip_options: removes chosen TCP options, as option-stripping middleboxes do.

Imitates the boxes measured by Honda et al. ("Is it still possible to extend TCP?", IMC 2011):
about 14% of paths removed unknown options from SYNs, some also from data segments, and some
replaced them with NOPs instead of shrinking the header (firewalls and normalizers that
overwrite in place so that they never have to move the payload). RFC 8684 §3.7/§6 and RFC 8041
describe what MPTCP does about each case: stripped MP_CAPABLE on SYN or SYN/ACK -> plain TCP,
stripped DSS on data -> infinite mapping fallback, stripped MP_JOIN -> the subflow is refused.

What is stripped is named by option (`mp_join`, `dss`, ...) or group (`mptcp`, `unknown` =
everything a classic RFC 793/2018/7323 box does not know), on which packets by class (`syn`,
`synack`, `first_data`, `data`, `pure_ack`, `fin`, `rst`), how (`remove`: the runtime
re-encodes a shorter header; `nop`: same header length, option bytes become NOPs), and in
which direction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.classify import (
    MPTCP_SUBTYPE_NAMES,
    OPTION_GROUPS,
    PACKET_CLASSES,
    TCP_OPTION_NAMES,
    PacketClassifier,
    option_name,
    option_types_named,
)
from middleboxes.contract import Direction
from middleboxes.spec import CommonParams, ParamError, directions_of, param
from testbed.wire.tcp_options import encoded_length
from testbed.wire.types import NoOperation, Packet, TcpOption

STRIPPABLE_NAMES: tuple[str, ...] = (
    *OPTION_GROUPS, *MPTCP_SUBTYPE_NAMES,
    *(name for name in TCP_OPTION_NAMES if name not in ("eol", "nop")),
)


@dataclass(frozen=True, kw_only=True)
class StripOptionsParams(CommonParams):
    what: tuple[str, ...] = param(("mptcp",), "options to strip, by group or name: "
                                  + ", ".join(STRIPPABLE_NAMES))
    packets: tuple[str, ...] = param(PACKET_CLASSES, "on which packets: "
                                     + ", ".join(PACKET_CLASSES) + " (combinable)")
    how: Literal["remove", "nop"] = param("remove", "remove the option and shrink the header, or "
                                          "overwrite its bytes with NOPs")
    direction: Literal["upstream", "downstream", "both"] = param(
        "both", "direction of the packets to strip from")

    def check(self) -> None:
        if not self.what:
            raise ParamError("what", "must name at least one option or group")
        for name in self.what:
            if name not in STRIPPABLE_NAMES:
                raise ParamError("what", f"got {name!r}, allowed: {', '.join(STRIPPABLE_NAMES)}")
        if not self.packets:
            raise ParamError("packets", "must name at least one packet class")
        for name in self.packets:
            if name not in PACKET_CLASSES:
                raise ParamError("packets",
                                 f"got {name!r}, allowed: {', '.join(PACKET_CLASSES)}")


def nop_padding_for(option: TcpOption) -> list[TcpOption]:
    """NOPs occupying exactly the bytes the option took on the wire."""
    return [NoOperation()] * encoded_length(option)


class StripOptions(MiddleboxBase):
    name = "strip_options"
    imitates = ("option-stripping firewalls/normalizers (Honda et al. IMC 2011; RFC 8041; "
                "RFC 8684 §3.7, §6)")
    params_type = StripOptionsParams

    def __init__(self, params: StripOptionsParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: StripOptionsParams = params
        self._types = option_types_named(params.what)
        self._packets = frozenset(params.packets)
        self._directions = directions_of(params.direction)
        self._classifier = PacketClassifier()

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        classes = self._classifier.classify(packet, direction)
        if direction not in self._directions or not classes & self._packets:
            return [packet]
        kept: list[TcpOption] = []
        stripped: list[str] = []
        for option in packet.tcp.options:
            if type(option) not in self._types:
                kept.append(option)
                continue
            stripped.append(option_name(option))
            if self.params.how == "nop":
                kept.extend(nop_padding_for(option))
        if stripped:
            packet.tcp.options = kept
            self.counters.changed += 1
            self.change_log.record(now, direction, packet,
                                   f"stripped {', '.join(stripped)} ({self.params.how})")
        return [packet]
