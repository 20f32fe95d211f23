"""The middlebox stage of the inline process: Ethernet frames in, Ethernet frames out, sans-IO.

Middleboxes work on decoded `testbed.wire` packets of either family: `Packet` (IPv4 + TCP) and
`Ipv6Packet` (IPv6 + TCP, extension headers kept). This module is the adapter:

* Only IPv4/TCP and IPv6/TCP frames are decoded (IPv6 through its extension headers, as the
  codec walks them), and only when at least one middlebox is configured; ARP, ICMPv6 and
  everything else passes untouched.
* A packet is re-encoded in its own family and its frame gets the EtherType of that family, so
  a box may turn an IPv6 packet into an IPv4 one and back (NAT64).
* Bytes are re-encoded only for packets a middlebox changed or created. A packet that comes out
  of the chain as the very object that went in, with every value as it was before the chain
  ran (`fingerprint`), leaves as the original frame bytes (byte-exact, original checksums and all).
* A frame the codec cannot decode (WireError) is forwarded unchanged and counted: a middlebox
  testbed must not turn odd-but-legal traffic into loss. A changed packet that cannot be encoded
  is dropped and counted (it is a middlebox bug, and sending something else would hide it).
  A box that raises anything else on a packet has that packet dropped and counted (forwarding
  it unchanged could leak what the box exists to hide, a NAT's private side): the process
  keeps running. `PipelineStats.reasons` counts every frame passed unexamined or dropped so,
  by reason ("undecodable:<field>", "unencodable:<field>", "handler:<exception type>").
* The boxes run as a middleboxes.chain.MiddleboxChain, the class the simulator runs too. Chain
  order is spatial: the configured list runs from the client-side leg to the server-side leg,
  so upstream packets meet the boxes in list order and downstream packets in reverse. A packet
  a box releases later (next_deadline/release) continues with the boxes after it in the
  direction it was released for.
* ARP requests and IPv6 neighbour solicitations for an address a box owns (a NAT's public
  address) are answered by the bump (see testbed.inline.arp); all other ARP and ICMPv6 passes
  through.
* A created packet gets the Ethernet header of the frame that triggered it; a released one the
  last header seen in its direction (or, before any, the reverse direction's with the MAC
  addresses swapped).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from middleboxes.chain import MiddleboxChain
from middleboxes.contract import Direction, Middlebox
from testbed.inline.arp import ArpResponder, owned_addresses
from testbed.wire.errors import WireError
from testbed.wire.ethernet import (
    BROADCAST_MAC,
    ETHERNET_HEADER_LENGTH,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ethernet_header,
    is_arp_frame,
    is_ipv4_tcp_frame,
    is_ipv6_frame,
    swap_mac_addresses,
)
from testbed.wire.ipv6 import (
    EXTENSION_KINDS,
    Ipv6Packet,
    decode_ipv6,
    decode_packet_v6,
    encode_packet_v6,
)
from testbed.wire.types import IPPROTO_TCP, Packet, TcpSegment

AnyPacket = Packet | Ipv6Packet


class Codec(Protocol):
    """The two testbed.wire functions the pipeline needs (injected so tests can count calls).

    `decode` gets IPv4 packets; IPv6 ones go to the codec's optional `decode_v6` /
    `encode_v6` (FunctionCodec), else to testbed.wire's."""

    def decode(self, data: bytes) -> Packet: ...

    def encode(self, packet: Packet) -> bytes: ...


@dataclass(frozen=True, slots=True)
class FunctionCodec:
    """A Codec made of two plain functions, e.g. testbed.wire.decode_packet/encode_packet.

    `encode_reusing_payload(packet, original, offset)`, when given, encodes a packet whose
    payload is still the one decoded from `original[offset:]` without re-summing it (the
    header-edit fast path, testbed.wire.encode_packet_reusing_payload)."""

    decode: Callable[[bytes], Packet]
    encode: Callable[[Packet], bytes]
    encode_reusing_payload: Callable[..., bytes] | None = None
    decode_v6: Callable[[bytes], Ipv6Packet] = decode_packet_v6
    encode_v6: Callable[[Ipv6Packet], bytes] = encode_packet_v6
    encode_v6_reusing_payload: Callable[..., bytes] | None = None


def wire_codec() -> FunctionCodec:
    """The project codec; imported lazily so a process without middleboxes never needs it."""
    from testbed.wire import (  # type: ignore[attr-defined]
        decode_packet,
        encode_packet,
        encode_packet_reusing_payload,
    )
    from testbed.wire.ipv6 import encode_packet_v6_reusing_payload

    return FunctionCodec(decode=decode_packet, encode=encode_packet,
                         encode_reusing_payload=encode_packet_reusing_payload,
                         encode_v6_reusing_payload=encode_packet_v6_reusing_payload)


_INDEX = re.compile(r"\[\d+\]")  # tcp.option[3].length -> tcp.option.length: one reason
_PACKET_FIELDS = tuple(f.name for f in dataclasses.fields(Packet) if f.name != "tcp")
_SEGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(TcpSegment) if f.name != "options")
_IPV6_FIELDS = tuple(f.name for f in dataclasses.fields(Ipv6Packet) if f.name != "tcp")
_packet_values = operator.attrgetter(*_PACKET_FIELDS)
_ipv6_values = operator.attrgetter(*_IPV6_FIELDS)
_segment_values = operator.attrgetter(*_SEGMENT_FIELDS)


def fingerprint(packet: AnyPacket) -> tuple[Any, ...]:
    """Every value of a packet, to detect in-place edits (options are frozen, payload immutable).

    Cheaper than a copy plus dataclass equality (about 1 us against 4 us per packet), and
    fields added to the types later are covered because the names come from the dataclasses.
    """
    ip_values = _ipv6_values(packet) if type(packet) is Ipv6Packet else _packet_values(packet)
    return (ip_values, _segment_values(packet.tcp), tuple(packet.tcp.options))


def ipv6_frame_carries_tcp(frame: bytes) -> bool:
    """Whether an IPv6 frame is TCP, or claims to be through extension headers the codec must
    judge (then a malformed chain counts as undecodable); ICMPv6, UDP and the rest pass."""
    next_header = frame[ETHERNET_HEADER_LENGTH + 6]
    if next_header == IPPROTO_TCP:
        return True
    if next_header not in EXTENSION_KINDS:
        return False
    try:
        header, _ = decode_ipv6(memoryview(frame)[ETHERNET_HEADER_LENGTH:])
    except WireError:
        return True
    return header.upper_protocol == IPPROTO_TCP


@dataclass(slots=True)
class PipelineStats:
    decoded: int = 0
    kept_original: int = 0
    reencoded: int = 0
    headers_only: int = 0  # of reencoded: payload untouched, checksum updated incrementally
    raw_fast_path: int = 0  # frames a RawOptionStrip handled without decoding a Packet
    undecodable: int = 0
    unencodable: int = 0
    released: int = 0
    arp_answered: int = 0
    handler_errors: int = 0  # packets dropped because a box raised on them
    last_wire_error: str | None = None
    last_handler_error: str | None = None
    reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def wire_error(self, kind: str, error: WireError) -> None:
        """Count a frame passed or dropped because the codec refused it."""
        self.last_wire_error = str(error)
        key = f"{kind}:{_INDEX.sub('', error.field)}"
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def handler_error(self, error: Exception) -> None:
        """Count a packet dropped because a middlebox raised on it."""
        self.handler_errors += 1
        self.last_handler_error = f"{type(error).__name__}: {error}"[:200]
        key = f"handler:{type(error).__name__}"
        self.reasons[key] = self.reasons.get(key, 0) + 1


class MiddleboxPipeline:
    """Runs a chain of Middlebox objects on frames of both directions."""

    def __init__(self, middleboxes: Sequence[Middlebox], codec: Codec) -> None:
        self._chain = MiddleboxChain(middleboxes)
        self._boxes = self._chain.boxes
        self._codec = codec
        self._last_header: dict[Direction, bytes] = {}
        self._encode_reusing = getattr(codec, "encode_reusing_payload", None)
        self._decode_v6 = getattr(codec, "decode_v6", decode_packet_v6)
        self._encode_v6 = getattr(codec, "encode_v6", encode_packet_v6)
        self._encode_reusing_v6 = getattr(codec, "encode_v6_reusing_payload", None)
        self._arp = ArpResponder(owned_addresses(self._boxes))
        self._answers_arp = bool(self._arp)
        # Option stripping on raw bytes (testbed.inline.fastpath), only with the project codec:
        # an injected codec is there to be observed.
        self._raw_strip = None
        if self._boxes and getattr(codec, "encode_reusing_payload", None):
            from testbed.inline.fastpath import RawOptionStrip  # imports the codec

            self._raw_strip = RawOptionStrip.for_chain(self._boxes)
        self.stats = PipelineStats()

    @property
    def middleboxes(self) -> list[Middlebox]:
        return list(self._boxes)

    @property
    def chain(self) -> MiddleboxChain:
        """The chain the boxes run in (the same class as the simulator's)."""
        return self._chain

    def process(self, frame: bytes, direction: Direction,
                now: float) -> list[tuple[bytes, Direction]]:
        """Frames to forward now for one arriving frame (empty when dropped or held)."""
        if self._raw_strip is not None:
            onward, back = self.process_batch([frame], direction, now)
            return [(out_frame, direction) for out_frame in onward] + back
        return self._process_decoded(frame, direction, now)

    def process_batch(self, frames: list[bytes], direction: Direction,
                      now: float) -> tuple[list[bytes], list[tuple[bytes, Direction]]]:
        """`process` for the frames of one leg's batch: those that go on in `direction`, in
        order, and any for the other direction (a box answering back). One call per batch
        keeps the per-frame work of the raw-bytes fast path to the strip itself."""
        onward: list[bytes] = []
        back: list[tuple[bytes, Direction]] = []
        raw_strip = self._raw_strip
        strip = raw_strip.process if raw_strip is not None else None
        stats = self.stats
        for frame in frames:
            if strip is not None:
                try:
                    out_frame = strip(frame, direction)
                except Exception as error:  # a box's bug must not end the process
                    stats.handler_error(error)
                    continue
                if out_frame:
                    # A strip_options chain on raw bytes; it never holds packets, so the
                    # Ethernet header need not be remembered for later releases.
                    stats.raw_fast_path += 1
                    if out_frame is frame:
                        stats.kept_original += 1
                    else:
                        stats.reencoded += 1
                        stats.headers_only += 1
                    onward.append(out_frame)
                    continue
            for out_frame, out_direction in self._process_decoded(frame, direction, now):
                if out_direction is direction:
                    onward.append(out_frame)
                else:
                    back.append((out_frame, out_direction))
        return onward, back

    def _process_decoded(self, frame: bytes, direction: Direction,
                         now: float) -> list[tuple[bytes, Direction]]:
        """`process` on the general path: the frame decoded, through the boxes, re-encoded."""
        if not self._boxes:
            return [(frame, direction)]
        arp = self._arp
        if self._answers_arp:
            arp.learn(frame, direction)
            if ((is_arp_frame(frame) or is_ipv6_frame(frame))
                    and (reply := arp.answer(frame, direction))):
                self.stats.arp_answered += 1
                return [(reply, direction.reverse())]
        if is_ipv4_tcp_frame(frame):
            decode: Callable[[bytes], AnyPacket] = self._codec.decode
        elif is_ipv6_frame(frame) and ipv6_frame_carries_tcp(frame):
            decode = self._decode_v6
        else:
            return [(frame, direction)]
        header = frame[:ETHERNET_HEADER_LENGTH]
        self._last_header[direction] = header
        try:
            packet = decode(frame[ETHERNET_HEADER_LENGTH:])
        except WireError as error:
            self.stats.undecodable += 1
            self.stats.wire_error("undecodable", error)
            return [(frame, direction)]
        stats = self.stats
        stats.decoded += 1
        original = fingerprint(packet)
        payload = packet.tcp.payload
        try:
            boxes = self._boxes
            if len(boxes) == 1:  # the common case: no intermediate lists
                outputs = boxes[0].process(packet, direction, now)
            else:
                outputs = self._chain.run([packet], direction, now)
        except WireError as error:
            stats.undecodable += 1
            stats.wire_error("undecodable", error)
            return [(frame, direction)]
        except Exception as error:  # a box's bug must not end the process
            stats.handler_error(error)
            return []
        frames: list[tuple[bytes, Direction]] = []
        for out in outputs:
            if out is packet and fingerprint(out) == original:
                stats.kept_original += 1
                frames.append((frame, direction))
                continue
            encoded = None
            if out is packet and out.tcp.payload is payload:
                if type(out) is Packet and self._encode_reusing is not None:
                    encoded = self._encode_headers(self._encode_reusing, out, frame, header,
                                                   _packet_values(out) == original[0])
                elif type(out) is Ipv6Packet and self._encode_reusing_v6 is not None:
                    encoded = self._encode_headers(self._encode_reusing_v6, out, frame, header,
                                                   _ipv6_values(out) == original[0])
            if encoded is None:
                encoded = self._encode(out, header)
            if encoded is not None:
                frames.append((encoded, direction))
        return frames

    def _encode_headers(self, encode_reusing: Callable[..., bytes], packet: AnyPacket,
                        frame: bytes, header: bytes, ip_unchanged: bool) -> bytes | None:
        """Header-edit fast path: the payload keeps its bytes and its share of the checksum."""
        try:
            data = encode_reusing(packet, frame, ETHERNET_HEADER_LENGTH, ip_unchanged=ip_unchanged)
        except WireError:
            return None  # the full encoder reports it
        self.stats.reencoded += 1
        self.stats.headers_only += 1
        return header + data

    def next_deadline(self) -> float | None:
        """The earliest time any middlebox wants `release` called, or None."""
        return self._chain.next_deadline()

    def release(self, now: float) -> list[tuple[bytes, Direction]]:
        """Frames released by boxes whose deadline has come, run through the rest of the chain."""
        frames: list[tuple[bytes, Direction]] = []
        try:
            for index, packet, direction in self._chain.release_due(now):
                self.stats.released += 1
                try:
                    outputs = self._chain.run([packet], direction, now, after=index)
                except WireError as error:
                    self.stats.unencodable += 1
                    self.stats.wire_error("unencodable", error)
                    continue
                except Exception as error:  # a box's bug must not end the process
                    self.stats.handler_error(error)
                    continue
                for out in outputs:
                    encoded = self._encode(out, self._header_for(direction))
                    if encoded is not None:
                        frames.append((encoded, direction))
        except Exception as error:  # a box's release raised: the rest next time
            self.stats.handler_error(error)
        return frames

    def set_middlebox_active(self, index: int, active: bool) -> dict[str, int]:
        """Switch box `index` (config order) on or off; its counters. ValueError if that box
        was not built switchable (middleboxes.triggers)."""
        if not 0 <= index < len(self._boxes):
            raise ValueError(f"no middlebox {index}: this process has {len(self._boxes)}")
        box = self._boxes[index]
        switch = getattr(box, "set_active", None)
        if switch is None:
            raise ValueError(f"middlebox {index} ({box.name}) was not configured switchable")
        switch(active)
        return box.counters.as_dict()

    def counters(self) -> list[dict[str, Any]]:
        """Per middlebox: its counters and, when it keeps one (log_changes), its change log."""
        out = []
        for box in self._boxes:
            entry: dict[str, Any] = {"name": box.name, "counters": box.counters.as_dict()}
            state = getattr(box, "state_counters", None)  # a stateful box's table sizes (nat)
            if state is not None:
                entry["state"] = state()
            log = getattr(box, "change_log", None)
            if log is not None and log.enabled:
                entry["change_log"] = {"entries": log.entries, "overflow": log.overflow}
            edits = getattr(box, "edit_log", None)  # payload-editing boxes: for the integrity oracle
            if edits is not None:
                entry["edit_log"] = edits.export()
            out.append(entry)
        return out

    def _header_for(self, direction: Direction) -> bytes:
        header = self._last_header.get(direction)
        if header is not None:
            return header
        reverse = self._last_header.get(direction.reverse())
        if reverse is not None:
            return swap_mac_addresses(reverse)
        # No frame seen yet in either direction: broadcast keeps the packet deliverable on a link.
        return ethernet_header(BROADCAST_MAC, bytes(6), ETHERTYPE_IPV4)

    def _encode(self, packet: AnyPacket, header: bytes) -> bytes | None:
        """The frame of `packet` in its own family: `header`'s MACs, the family's EtherType."""
        try:
            if type(packet) is Ipv6Packet:
                data = self._encode_v6(packet)
                ethertype = ETHERTYPE_IPV6
            else:
                data = self._codec.encode(packet)  # type: ignore[arg-type]
                ethertype = ETHERTYPE_IPV4
        except WireError as error:
            self.stats.unencodable += 1
            self.stats.wire_error("unencodable", error)
            return None
        self.stats.reencoded += 1
        if header[12:14] != ethertype:
            header = header[:12] + ethertype
        return header + data
