"""The fuzz targets: for each decoder, how to make an input and how to feed one to it.

A target is a generator (random.Random -> bytes) and a driver factory. A driver may keep state
between inputs (a middlebox's flow table, a stack's connections): the engine feeds it an
*episode* of inputs and, on a finding, saves the whole episode so a replay rebuilds the same
state. `allowed` are the project's error types a driver may let escape; anything else (and any
failed agreement check, raised as FuzzFinding) is a finding.
"""

from __future__ import annotations

import copy
import functools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import tomllib

from middleboxes.contract import Direction
from middleboxes.registry import MIDDLEBOXES, build_middlebox
from testbed.errors import TestbedError
from testbed.fuzz import mutate
from testbed.fuzz.seeds import converse, matrix_files, seed_option_areas, seed_packets, spec_files
from testbed.mptcp import events
from testbed.mptcp.native import STATE as STACK_CORE
from testbed.wire import WireError, decode_options, decode_packet, encode_packet
from testbed.wire.ethernet import ETHERNET_HEADER_LENGTH, ethernet_header
from testbed.wire.peek import keep_ipv4_tcp_to, plain_tcp_frame, pure_ack_number
from testbed.wire.types import ACK

_FRAME_HEADER = ethernet_header(b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x01", b"\x08\x00")


class FuzzFinding(Exception):
    """A driver's own check failed (two decoders disagree, an output does not re-decode)."""


class Driver(Protocol):
    def feed(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    generate: Callable[[random.Random], bytes]
    driver: Callable[[], Driver]
    allowed: tuple[type[BaseException], ...]
    episode: int = 1  # inputs fed to one driver before a fresh one is made


# --- inputs ----------------------------------------------------------------------------------
def _packets() -> tuple[list[bytes], list[bytes]]:
    return list(seed_packets()), list(seed_option_areas())


def generate_packet(rng: random.Random) -> bytes:
    seeds, areas = _packets()
    return mutate.mutate_packet(rng, seeds, areas)


_SUBTYPE_LENGTHS = [(subtype, length) for subtype in mutate.MPTCP_SUBTYPES
                    for length in range(mutate.MAX_OPTION_LENGTH + 1)]


def generate_options(rng: random.Random) -> bytes:
    """Half the time one MPTCP subtype at one length (0..40, every pair equally likely), the
    other half a whole option area built or mutated from the seeds."""
    if rng.random() < 0.5:
        subtype, length = rng.choice(_SUBTYPE_LENGTHS)
        option = mutate.mptcp_option(rng, subtype, length)
        prefix = rng.choice((b"", b"\x01", b"\x01\x01\x08\x0a" + rng.randbytes(8)))
        return (prefix + option)[:rng.choice((40, 40, 40, 60))]
    return mutate.option_area(rng, list(seed_option_areas()))


def generate_frame(rng: random.Random) -> bytes:
    return _FRAME_HEADER + generate_packet(rng)


@functools.cache
def _toml_seeds(kind: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    files = spec_files() if kind == "spec" else matrix_files()
    texts = [p.read_text() for p in files]
    if kind == "matrix":  # each file's head with two of its rows: the same validator, faster
        for text in list(texts):
            head, *rows = text.split("\n[[middleboxes]]")
            texts += [head + "".join("\n[[middleboxes]]" + r for r in rows[i:i + 2])
                      for i in range(0, len(rows), 2)]
    return tuple((text, tomllib.loads(text)) for text in texts)


def _generate_toml(kind: str, rng: random.Random) -> bytes:
    """Mutated TOML text (the parser's errors) or a mutated parsed document, as JSON (the
    validator's errors: it sees values TOML can write but the specs never use)."""
    text, document = rng.choice(_toml_seeds(kind))
    roll = rng.random()
    if roll < 0.4:
        return b"T" + mutate.mutate_text(rng, text).encode()
    if roll < 0.45:
        return b"T" + rng.randbytes(rng.randrange(200))
    rows = document.get("middleboxes")
    if kind == "matrix" and isinstance(rows, list) and len(rows) > 3:
        # a matrix validates every cell (~0.15 ms each): a few rows keep the rate up, and
        # every row goes through the same validator
        document = dict(document, middleboxes=rng.sample(rows, rng.randrange(1, 4)))
    mutated = mutate.mutate_document(rng, document)
    return b"J" + json.dumps(mutated, default=str).encode()


def _parse_toml_input(data: bytes) -> dict[str, Any]:
    if data[:1] == b"J":
        return json.loads(data[1:])
    try:
        return tomllib.loads(data[1:].decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise TestbedError(f"malformed TOML: {error}") from error  # what read_toml does


# --- drivers ---------------------------------------------------------------------------------
class OptionsDriver:
    def feed(self, data: bytes) -> None:
        decode_options(data)


class PacketDriver:
    """decode_packet, and a decoded packet must encode and decode back to itself."""

    def feed(self, data: bytes) -> None:
        packet = decode_packet(data)
        try:
            again = decode_packet(encode_packet(packet))
        except WireError as error:
            raise FuzzFinding(f"a decoded packet does not re-encode: {error}") from error
        if replace(again, tcp=replace(again.tcp, checksum=packet.tcp.checksum)) != packet:
            raise FuzzFinding("decode(encode(decode(x))) differs from decode(x)")


class PeekDriver:
    """The fast peeks never raise, and when they answer, the full decoder agrees."""

    def feed(self, data: bytes) -> None:
        options_only = False  # the headers decode, the options do not
        try:
            packet = decode_packet(data)
        except WireError as error:
            packet = None
            options_only = error.field.startswith("tcp.option")
        ack = pure_ack_number(data)
        if ack is not None:
            if packet is None:
                raise FuzzFinding("pure_ack_number answered for a packet that does not decode")
            segment = packet.tcp
            if ack != segment.ack or segment.flags != ACK or segment.payload:
                raise FuzzFinding(f"pure_ack_number {ack} for flags {segment.flags:#x}, "
                                  f"ack {segment.ack}, {len(segment.payload)} payload bytes")
        kept = keep_ipv4_tcp_to([data], {data[16:20]}, range(65536))
        if kept and len(data) >= 40 and data[0] == 0x45 and data[9] != 6:
            raise FuzzFinding("keep_ipv4_tcp_to kept a packet that is not TCP")
        shape = plain_tcp_frame(_FRAME_HEADER + data)
        if shape is not None:
            if packet is None and not options_only:  # it promises headers, not options
                raise FuzzFinding("plain_tcp_frame accepted a packet whose headers do not decode")
            if packet is None:
                return
            options_end, flags, has_payload, _linux = shape
            segment = packet.tcp
            if flags != segment.flags or has_payload != bool(segment.payload):
                raise FuzzFinding("plain_tcp_frame disagrees with decode_packet on flags/payload")
            if options_end - ETHERNET_HEADER_LENGTH - 40 < 0:
                raise FuzzFinding("plain_tcp_frame: options end before the TCP header")


@functools.cache
def middlebox_params() -> dict[str, tuple[dict[str, Any], ...]]:
    """Each catalogue box's params as the project's specs and matrices use them."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in MIDDLEBOXES}
    for _text, doc in _toml_seeds("spec") + _toml_seeds("matrix"):
        boxes = list(doc.get("middleboxes", []))
        for row in list(boxes):
            boxes.extend(row.get("chain", []) if isinstance(row, dict) else [])
        for box in boxes:
            if isinstance(box, dict) and box.get("type") in found:
                params = box.get("params", {})
                if params not in found[box["type"]]:
                    found[box["type"]].append(params)
    defaults = {"nat": {"public_address": "10.0.9.1"}, "nat64": {"pool_address": "10.0.9.2"},
                "nptv6": {"inside_prefix": "fd00:10::/48", "outside_prefix": "fd00:99::/48"},
                "rewrite_payload": {"pattern": "A", "replacement": "BB"},
                "drop": {"match": ["data"]}, "delay": {"match": ["any"], "delay_ms": 5.0}}
    for name, params in defaults.items():
        found[name].append(params)
    return {name: tuple(items or [{}]) for name, items in found.items()}


class MiddleboxDriver:
    """What the inline pipeline does with a frame, on one catalogue box: decode, process in a
    direction at a rising time, encode what comes out, release what it held; for strip_options
    also the raw-bytes fast path. Each episode starts with the box having seen a real
    handshake, so the flow-tracking branches are reached."""

    def __init__(self, name: str, rng: random.Random) -> None:
        params = rng.choice(middlebox_params()[name])
        self.box = build_middlebox(name, params, random.Random(rng.getrandbits(32)))
        self.rng = rng
        self.now = 0.0
        self.raw = None
        if name == "strip_options":
            from testbed.inline.fastpath import RawOptionStrip

            self.raw = RawOptionStrip.for_chain([self.box])
        for data in seed_packets()[:6]:
            self.feed(data)

    def _direction(self, data: bytes) -> Direction:
        return Direction.UPSTREAM if data[12:14] == b"\x0a\x00" and data[14:15] != b"\x64" \
            else Direction.DOWNSTREAM

    def feed(self, data: bytes) -> None:
        self.now += self.rng.choice((0.0, 0.001, 0.05, 1.0, 400.0))
        direction = self._direction(data)
        if self.raw is not None:
            self.raw.process(_FRAME_HEADER + data, direction)
        packet = decode_packet(data)
        outputs = self.box.process(packet, direction, self.now)
        deadline = self.box.next_deadline()
        if deadline is not None and deadline <= self.now + 1.0:
            outputs = outputs + [p for p, _d in self.box.release(max(deadline, self.now))]
        for out in outputs:
            encode_packet(out)


SNAPSHOT_BYTES = 200_000  # the conversation a stack driver starts from (seeds.converse)


class StackDriver:
    """The stack's segment receive path: a client and server that have exchanged some data
    (their state copied from one conversation per process) are fed hostile segments, and run
    their timers, output and events after each, as the I/O driver does."""

    def __init__(self, rng: random.Random) -> None:
        checksum = rng.random() < 0.5
        if STACK_CORE.compiled:  # mypyc's classes cannot be deep-copied: the same conversation
            base = converse(checksum=checksum, payload_bytes=SNAPSHOT_BYTES, close=False)
            self.client, self.server = base.client, base.server
        else:
            base = _stack_snapshot(checksum)
            self.client, self.server = copy.deepcopy((base.client, base.server))
        self.now = base.now
        self.rng = rng

    def feed(self, data: bytes) -> None:
        packet = decode_packet(data)
        self.now += self.rng.choice((0.0, 0.0001, 0.01, 0.3, 5.0))
        host = self.client if packet.dst.startswith("10.0.1.") or \
            packet.dst.startswith("10.0.2.") else self.server
        host.receive_packet(packet, self.now)
        for each in (self.client, self.server):
            timer = each.get_timer()
            if timer is not None and timer <= self.now:
                each.handle_timer(self.now)
            for out in each.packets_to_send(self.now):
                encode_packet(out)
            while (event := each.next_event()) is not None:
                if isinstance(event, events.DataReceived):
                    event.connection.receive()


@functools.cache
def _stack_snapshot(checksum: bool) -> Any:
    return converse(checksum=checksum, payload_bytes=SNAPSHOT_BYTES, close=False)


class SpecDriver:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def feed(self, data: bytes) -> None:
        raw = _parse_toml_input(data)
        if self.kind == "spec":
            from testbed.spec import parse_spec

            parse_spec(raw, source="<fuzz>")
        else:
            from testbed.matrix import parse_matrix_spec

            parse_matrix_spec(raw, source="<fuzz>")


def _middlebox_target(name: str) -> Target:
    return Target(f"middlebox:{name}", f"the {name} box's packet handler", generate_packet,
                  lambda rng: MiddleboxDriver(name, rng), (WireError,), episode=64)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("options", "testbed.wire decode_options", generate_options,
           lambda rng: OptionsDriver(), (WireError,)),
    Target("packet", "testbed.wire decode_packet (and re-encode)", generate_packet,
           lambda rng: PacketDriver(), (WireError,)),
    Target("peek", "testbed.wire.peek against decode_packet", generate_packet,
           lambda rng: PeekDriver(), ()),
    *(_middlebox_target(name) for name in MIDDLEBOXES),
    Target("stack", "the stack's segment receive path (MptcpHost.receive_packet)",
           generate_packet, StackDriver, (WireError,), episode=256),
    Target("spec", "experiment-spec loader (parse_spec)", functools.partial(_generate_toml, "spec"),
           lambda rng: SpecDriver("spec"), (TestbedError,)),
    Target("matrix", "matrix-spec loader (parse_matrix_spec)",
           functools.partial(_generate_toml, "matrix"), lambda rng: SpecDriver("matrix"),
           (TestbedError,)),
)}
