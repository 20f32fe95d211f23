"""Packet predicates for targeted impairments: which packets a `drop` or `delay` box acts on.

Fallback experiments need to hit one precise packet ("the first ADD_ADDR", "the MP_JOIN third
ACK", "every 10th data segment of the second subflow"), not a random fraction of traffic as
netem does. A spec names predicates in `match`; all of them must hold (AND). Stateless ones
look at the packet alone; two keep state: `subflow` learns flows in the order it first sees
them, and `every_nth_data` counts the data segments that passed all other predicates.
`skip`, `limit` and `probability` then choose among the matching packets.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from middleboxes.classify import PACKET_CLASSES, PacketClassifier
from middleboxes.contract import Direction
from middleboxes.flows import FlowKey, flow_key
from middleboxes.spec import CommonParams, ParamError, directions_of, param
from testbed.wire import types as wire
from testbed.wire.types import Packet

StatelessTest = Callable[[Packet, frozenset[str]], bool]


def _has(option_type: type) -> StatelessTest:
    return lambda packet, classes: packet.tcp.find(option_type) is not None


def _has_any(*option_types: type) -> StatelessTest:
    return lambda packet, classes: any(type(o) in option_types for o in packet.tcp.options)


def _class(name: str) -> StatelessTest:
    return lambda packet, classes: name in classes


def _add_addr(echo: bool) -> StatelessTest:
    return lambda packet, classes: any(
        isinstance(o, wire.AddAddr) and o.echo == echo for o in packet.tcp.options)


def _data_fin(packet: Packet, classes: frozenset[str]) -> bool:
    return any(isinstance(o, wire.Dss) and o.data_fin for o in packet.tcp.options)


STATELESS_PREDICATES: dict[str, StatelessTest] = {
    "any": lambda packet, classes: True,
    **{name: _class(name) for name in PACKET_CLASSES},
    "mp_capable": _has(wire.MpCapable),
    "mp_join": _has_any(wire.MpJoinSyn, wire.MpJoinSynAck, wire.MpJoinAck),
    "mp_join_syn": _has(wire.MpJoinSyn),
    "mp_join_synack": _has(wire.MpJoinSynAck),
    "mp_join_ack": _has(wire.MpJoinAck),
    "dss": _has(wire.Dss),
    "data_fin": _data_fin,
    "add_addr": _add_addr(echo=False),
    "add_addr_echo": _add_addr(echo=True),
    "remove_addr": _has(wire.RemoveAddr),
    "mp_prio": _has(wire.MpPrio),
    "mp_fail": _has(wire.MpFail),
    "mp_fastclose": _has(wire.MpFastclose),
    "mp_tcprst": _has(wire.MpTcpRst),
}
STATEFUL_PREDICATES: tuple[str, ...] = ("subflow", "every_nth_data")
PREDICATE_NAMES: tuple[str, ...] = (*STATELESS_PREDICATES, *STATEFUL_PREDICATES)


def _address_and_port(side: str) -> tuple[str, int]:
    """'10.0.0.1:40000' or '[fd00::1]:40000' -> (compressed address, port); ValueError else."""
    side = side.strip()
    if side.startswith("["):
        address, _, port = side[1:].partition("]:")
        return str(ipaddress.IPv6Address(address)), int(port)
    address, port = side.rsplit(":", 1)
    return str(ipaddress.IPv4Address(address)), int(port)


def parse_subflow_tuple(text: str) -> FlowKey:
    """'10.0.0.1:40000-10.0.1.1:5201' or '[fd00::1]:40000-[fd00:1::1]:5201' -> FlowKey
    (either order matches later)."""
    try:
        left, right = text.split("-")
        (addr_a, port_a), (addr_b, port_b) = _address_and_port(left), _address_and_port(right)
        if (":" in addr_a) != (":" in addr_b):
            raise ValueError("mixed families")
        key = FlowKey(addr_a, port_a, addr_b, port_b)
    except ValueError:
        hint = (" (IPv6 addresses go in brackets)" if text.count(":") > 2 and "[" not in text
                else "")
        raise ParamError("subflow_tuple", f"got {text!r}, expected "
                                          f"'ADDR:PORT-ADDR:PORT' such as "
                                          f"'10.0.0.1:40000-10.0.1.1:5201' or "
                                          f"'[fd00::1]:40000-[fd00:1::1]:5201', both ends of one "
                                          f"family{hint}") from None
    if not (0 < key.client_port < 65536 and 0 < key.server_port < 65536):
        raise ParamError("subflow_tuple", f"got {text!r}: ports must be 1..65535")
    return key


@dataclass(frozen=True, kw_only=True)
class MatchParams(CommonParams):
    """Parameters of every predicate-driven box (drop, delay)."""

    match: tuple[str, ...] = param(doc="predicates that must all hold: "
                                   + ", ".join(PREDICATE_NAMES))
    direction: Literal["upstream", "downstream", "both"] = param(
        "both", "direction of the packets to consider")
    every_nth: int = param(0, "n for every_nth_data: act on data segments n, 2n, 3n, ...",
                           minimum=0)
    subflow_index: int = param(0, "for subflow: the Nth flow this box has seen (1 = first)",
                               minimum=0)
    subflow_port: int = param(0, "for subflow: a flow with this port at either end",
                              minimum=0, maximum=65535)
    subflow_tuple: str = param("", "for subflow: 'ADDR:PORT-ADDR:PORT' (either order)")
    skip: int = param(0, "let this many matching packets through before acting", minimum=0)
    limit: int = param(0, "act on at most this many packets (0 = no limit)", minimum=0)
    probability: float = param(1.0, "act on each remaining match with this probability "
                                    "(drawn from the experiment's seeded rng)",
                               minimum=0.0, maximum=1.0)

    def check(self) -> None:
        if not self.match:
            raise ParamError("match", f"name at least one of {', '.join(PREDICATE_NAMES)}")
        for name in self.match:
            if name not in PREDICATE_NAMES:
                raise ParamError("match", f"got {name!r}, allowed: {', '.join(PREDICATE_NAMES)}")
        if "every_nth_data" in self.match and self.every_nth < 1:
            raise ParamError("every_nth", "every_nth_data needs every_nth >= 1")
        if "every_nth_data" not in self.match and self.every_nth:
            raise ParamError("every_nth", "only meaningful with match = ['every_nth_data']")
        selectors = [name for name in ("subflow_index", "subflow_port", "subflow_tuple")
                     if getattr(self, name)]
        if "subflow" in self.match and len(selectors) != 1:
            raise ParamError("subflow_index", "subflow needs exactly one of subflow_index, "
                                              f"subflow_port, subflow_tuple (got {selectors})")
        if "subflow" not in self.match and selectors:
            raise ParamError(selectors[0], "only meaningful with match = ['subflow']")
        if self.subflow_tuple:
            parse_subflow_tuple(self.subflow_tuple)


class PacketMatcher:
    """Evaluates a MatchParams selection; call `decide` for EVERY packet the box sees."""

    def __init__(self, params: MatchParams, rng: random.Random) -> None:
        self.params = params
        self._rng = rng
        self._directions = directions_of(params.direction)
        self._tests = [STATELESS_PREDICATES[n] for n in params.match if n in STATELESS_PREDICATES]
        self._subflow = "subflow" in params.match
        self._every_nth = params.every_nth if "every_nth_data" in params.match else 0
        self._tuple = parse_subflow_tuple(params.subflow_tuple) if params.subflow_tuple else None
        self._classifier = PacketClassifier()
        self._flow_order: dict[FlowKey, int] = {}
        self._data_count = 0
        self.matched = 0  # packets that satisfied every predicate
        self.acted = 0  # packets the box acted on

    def flow_index(self, key: FlowKey) -> int:
        """1-based order in which this matcher first saw the flow."""
        return self._flow_order.setdefault(key, len(self._flow_order) + 1)

    def _subflow_selected(self, key: FlowKey, index: int) -> bool:
        if self.params.subflow_index:
            return index == self.params.subflow_index
        if self.params.subflow_port:
            return key.has_port(self.params.subflow_port)
        assert self._tuple is not None
        reverse = FlowKey(key.server_addr, key.server_port, key.client_addr, key.client_port)
        return self._tuple in (key, reverse)

    def decide(self, packet: Packet, direction: Direction) -> bool:
        """Whether the box acts on this packet (updates flow order and counts)."""
        key = flow_key(packet, direction)
        index = self.flow_index(key)
        classes = self._classifier.classify(packet, direction)
        if direction not in self._directions:
            return False
        if not all(test(packet, classes) for test in self._tests):
            return False
        if self._subflow and not self._subflow_selected(key, index):
            return False
        if self._every_nth:
            if "data" not in classes:
                return False
            self._data_count += 1
            if self._data_count % self._every_nth:
                return False
        self.matched += 1
        if self.matched <= self.params.skip:
            return False
        if self.params.limit and self.acted >= self.params.limit:
            return False
        if self.params.probability < 1.0 and self._rng.random() >= self.params.probability:
            return False
        self.acted += 1
        return True
