"""nptv6: stateless, checksum-neutral IPv6 network prefix translation (RFC 6296).

Imitates an NPTv6 border router (Linux's ip6tables SNPT/DNPT targets, many enterprise and home
gateways that renumber a ULA site to a provider prefix): packets arriving UPSTREAM whose source
lies in `inside_prefix` leave with that prefix replaced by `outside_prefix`; DOWNSTREAM packets
to an address in `outside_prefix` get the inside prefix back. Nothing else changes: no ports,
no state, no TCP option, and no checksum, because one 16-bit word of the address is adjusted
so the one's-complement sum of the address stays the same (RFC 6296 §3.2): for a /48 the
subnet word (bits 48..63), for a longer prefix the first interface-identifier word that is not
0xFFFF (§3.5, §3.7). A packet whose identifier words are all 0xFFFF cannot be mapped and is
dropped (RFC 6296 §3.5; the kernel also sends an ICMPv6 parameter problem, not modelled here).
Other packets pass unchanged, as they pass a router.

MPTCP: MP_CAPABLE and MP_JOIN carry no addresses, so both survive. An ADD_ADDR carrying the
client's inside address is forwarded as it is (its HMAC covers the address, RFC 8684 §3.4.1,
so a box could not rewrite it anyway): the peer learns an address it has no route to, and its
join towards it fails where an inside-prefix route does not exist (docs/ipv6-middleboxes.md).
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from middleboxes.catalogue_base import MiddleboxBase
from middleboxes.contract import Direction
from middleboxes.spec import CommonParams, ParamError, param
from testbed.wire.types import Packet

NPT_MIN_PREFIX = 48
NPT_MAX_PREFIX = 64
_WORD = 0xFFFF
_SUBNET_WORD = 3  # bits 48..63, the word a /48 translation adjusts
_IID_WORDS = range(4, 8)  # the interface identifier's words, tried in order for longer prefixes


def _words(value: int) -> list[int]:
    return [(value >> (112 - 16 * index)) & _WORD for index in range(8)]


def _from_words(words: list[int]) -> int:
    value = 0
    for word in words:
        value = (value << 16) | word
    return value


def ones_complement_add(a: int, b: int) -> int:
    """16-bit one's-complement addition (end-around carry)."""
    total = a + b
    return (total & _WORD) + (total >> 16)


def ones_complement_sum(words: list[int]) -> int:
    total = 0
    for word in words:
        total = ones_complement_add(total, word)
    return total


def prefix_adjustment(from_prefix: ipaddress.IPv6Network, to_prefix: ipaddress.IPv6Network) -> int:
    """What to add (one's complement) to the adjusted word so that the address's sum, and so
    every checksum over it, stays the same: sum(from) - sum(to) (RFC 6296 §3.3)."""
    from_sum = ones_complement_sum(_words(int(from_prefix.network_address)))
    to_sum = ones_complement_sum(_words(int(to_prefix.network_address)))
    return ones_complement_add(from_sum, to_sum ^ _WORD)


def translate_address(address: str, from_prefix: ipaddress.IPv6Network,
                      to_prefix: ipaddress.IPv6Network, adjustment: int) -> str | None:
    """`address` (in `from_prefix`) with `to_prefix` in its place and one word adjusted; None
    when no word can carry the adjustment (every identifier word 0xFFFF)."""
    length = from_prefix.prefixlen
    host_mask = (1 << (128 - length)) - 1
    value = (int(ipaddress.IPv6Address(address)) & host_mask) | int(to_prefix.network_address)
    words = _words(value)
    if length <= NPT_MIN_PREFIX:
        index = _SUBNET_WORD
    else:
        candidates = [i for i in _IID_WORDS if words[i] != _WORD]
        if not candidates:
            return None
        index = candidates[0]
    adjusted = ones_complement_add(words[index], adjustment)
    words[index] = 0 if adjusted == _WORD else adjusted
    return str(ipaddress.IPv6Address(_from_words(words)))


def _prefix(name: str, text: str) -> ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        raise ParamError(name, f"got {text!r}, expected an IPv6 prefix such as fd00:10::/48") from None
    if network.version != 6:
        raise ParamError(name, f"got {text!r}, an IPv4 prefix: NPTv6 translates IPv6 prefixes "
                         "(the nat box translates IPv4)")
    if not NPT_MIN_PREFIX <= network.prefixlen <= NPT_MAX_PREFIX:
        raise ParamError(name, f"got /{network.prefixlen}: NPTv6 takes a /{NPT_MIN_PREFIX} to "
                         f"/{NPT_MAX_PREFIX} prefix (RFC 6296 §3.7)")
    if int(network.network_address) != int(ipaddress.IPv6Interface(text).ip):
        raise ParamError(name, f"got {text!r}: bits set after the prefix length; "
                         f"write {network}")
    return network


@dataclass(frozen=True, kw_only=True)
class Nptv6Params(CommonParams):
    inside_prefix: str = param(doc="the client side's IPv6 prefix, /48 to /64, e.g. fd00:10:0:1::/64")
    outside_prefix: str = param(doc="the prefix the other side sees, same length as inside_prefix")

    def check(self) -> None:
        inside = _prefix("inside_prefix", self.inside_prefix)
        outside = _prefix("outside_prefix", self.outside_prefix)
        if inside.prefixlen != outside.prefixlen:
            raise ParamError("outside_prefix", f"/{outside.prefixlen} against inside /"
                             f"{inside.prefixlen}: give both prefixes the same length")
        if inside.overlaps(outside):
            raise ParamError("outside_prefix", f"{outside} overlaps inside_prefix {inside}")


class Nptv6(MiddleboxBase):
    name = "nptv6"
    imitates = "NPTv6 border router (RFC 6296; Linux ip6tables SNPT/DNPT)"
    params_type = Nptv6Params

    def __init__(self, params: Nptv6Params, rng: random.Random) -> None:
        super().__init__(params, rng)
        self.params: Nptv6Params = params
        self.inside = ipaddress.IPv6Network(params.inside_prefix)
        self.outside = ipaddress.IPv6Network(params.outside_prefix)
        self._outbound_adjustment = prefix_adjustment(self.inside, self.outside)
        self._inbound_adjustment = prefix_adjustment(self.outside, self.inside)
        self.unmappable = 0

    def state_counters(self) -> dict[str, int]:
        """Packets dropped because no identifier word could carry the adjustment."""
        return {"unmappable": self.unmappable}

    def outside_address(self, inside_address: str) -> str | None:
        """Where an inside address appears outside (None if it cannot be mapped)."""
        return translate_address(inside_address, self.inside, self.outside,
                                 self._outbound_adjustment)

    def inside_address(self, outside_address: str) -> str | None:
        return translate_address(outside_address, self.outside, self.inside,
                                 self._inbound_adjustment)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        self.counters.seen += 1
        upstream = direction is Direction.UPSTREAM
        address = packet.src if upstream else packet.dst
        if ":" not in address:
            return [packet]  # IPv4 passes a dual-stack NPTv6 router untouched
        parsed = ipaddress.IPv6Address(address)
        if parsed not in (self.inside if upstream else self.outside):
            return [packet]
        mapped = self.outside_address(address) if upstream else self.inside_address(address)
        if mapped is None:
            self.unmappable += 1
            self.counters.dropped += 1
            self.change_log.record(now, direction, packet,
                                   "dropped: every interface identifier word is 0xFFFF")
            return []
        if upstream:
            packet.src = mapped
        else:
            packet.dst = mapped
        self.counters.changed += 1
        self.change_log.record(now, direction, packet,
                               f"{'src' if upstream else 'dst'} {address}->{mapped}")
        return [packet]
