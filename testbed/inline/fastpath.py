"""Raw-bytes fast path for a chain that is one option-stripping box (`strip_options`).

Why: at MTU 1500 a box that rewrites every packet must handle ~80k frames/s for 800 Mbit/s;
decoding a Packet, running the box and encoding it back costs ~10 us per frame in CPython,
several times the budget. Stripping needs none of that: the options are told apart by the codec
(`decode_options_at` for their classes, `option_spans` for where they are), the chosen ones are
overwritten or cut out of the raw bytes, and the checksums are updated incrementally
(testbed.wire.edit). The payload is never copied into objects nor re-summed.

The fast path must be invisible: it applies the box's own parameters (`what`, `packets`, `how`,
`direction`) with the box's own option and packet-class vocabulary (middleboxes.classify), keeps
the box's counters (`seen`, `changed`) as the box would, and its output is byte-identical to the
general path's (tests/integration/middleboxes/test_fast_paths.py checks both on many packets).
It declines -- and the general path runs -- whenever that could differ: change logging on,
`first_data` selected without `data` (that class needs the box's per-flow memory), an odd header
(IPv4 options or flags, TCP reserved bits, an EOL in the options, anything malformed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from middleboxes.classify import option_types_named, packet_classes
from middleboxes.contract import Direction, Middlebox
from middleboxes.spec import directions_of
from middleboxes.strip_options import StripOptions
from testbed.wire.edit import (
    LINUX_TIMESTAMPS_LAYOUT,
    option_spans,
    replace_option_area,
    strip_option_spans,
)
from testbed.wire.errors import WireError
from testbed.wire.ethernet import ETHERNET_HEADER_LENGTH
from testbed.wire.peek import PLAIN_TCP_FRAME_OPTIONS_START, plain_tcp_frame
from testbed.wire.tcp_options import decode_options_at
from testbed.wire.types import EndOfOptions

ETH = ETHERNET_HEADER_LENGTH
OPTIONS_START = PLAIN_TCP_FRAME_OPTIONS_START


@dataclass
class RawOptionStrip:
    """The fast path for one StripOptions box; build it with `for_chain`."""

    box: StripOptions
    types: frozenset[type]
    packets: frozenset[str]
    directions: frozenset[Direction]
    nop: bool

    def __post_init__(self) -> None:
        # Whether the box acts on a packet, by (direction, TCP flags byte, has payload): the
        # per-frame decision becomes one list index (enum hashing and set algebra cost ~1 us).
        self._acts: list[bool | None] = [None] * 1024
        # Linux's NOP, NOP, timestamps area (the codec's known layout): spans and the options
        # to drop are the same for every such segment.
        self._ts_spans = [(OPTIONS_START + offset, length) for _cls, offset, length in
                          LINUX_TIMESTAMPS_LAYOUT]
        self._ts_drop = [index for index, (cls, _o, _l) in enumerate(LINUX_TIMESTAMPS_LAYOUT)
                         if cls in self.types]
        # Overwriting with NOPs leaves an area that is all NOPs (NOPs are never stripped), the
        # same bytes every time.
        self._ts_nops = b"\x01" * 12 if self.nop and self._ts_drop else None
        self._ts_nops_value = int.from_bytes(self._ts_nops or b"", "big")

    @classmethod
    def for_chain(cls, chain: Sequence[Middlebox]) -> RawOptionStrip | None:
        """The fast path if `chain` is exactly one StripOptions box it can stand in for."""
        if len(chain) != 1 or type(chain[0]) is not StripOptions:
            return None
        box = chain[0]
        params = box.params
        if params.log_changes:
            return None
        packets = frozenset(params.packets)
        if "first_data" in packets and "data" not in packets:
            return None
        return cls(box, option_types_named(params.what), packets - {"first_data"},
                   frozenset(directions_of(params.direction)), params.how == "nop")

    def _decide(self, key: int) -> bool:
        direction = Direction.DOWNSTREAM if key & 512 else Direction.UPSTREAM
        classes = packet_classes((key >> 1) & 0xFF, bool(key & 1))
        return direction in self.directions and bool(classes & self.packets)

    def process(self, frame: bytes, direction: Direction) -> bytes | None:
        """The frame to send (the same object when nothing is stripped), or None when the
        general path must handle this frame (the box's counters are then left untouched)."""
        shape = plain_tcp_frame(frame)  # testbed.wire.peek: the header checks, inlined there
        if shape is None:
            return None  # not IPv4/TCP, IPv4 options, a fragment, or re-encoding would differ
        end, flags, has_payload, linux_timestamps = shape
        key = (flags << 1) | has_payload | (512 if direction is Direction.DOWNSTREAM else 0)
        acts = self._acts[key]
        if acts is None:
            acts = self._acts[key] = self._decide(key)
        counters = self.box.counters
        if not acts or end == OPTIONS_START:
            counters.seen += 1
            return frame
        if linux_timestamps:
            counters.seen += 1  # the codec's known NOP, NOP, timestamps layout
            if not self._ts_drop:
                return frame
            counters.changed += 1
            if self._ts_nops is not None:
                return replace_option_area(frame, ETH, self._ts_nops, self._ts_nops_value)
            return strip_option_spans(frame, ETH, self._ts_spans, self._ts_drop, nop=self.nop)
        try:
            options = decode_options_at(frame, OPTIONS_START, end)
            spans = option_spans(frame, OPTIONS_START, end)
        except WireError:
            return None
        if type(options[-1]) is EndOfOptions or len(spans) != len(options):
            return None
        types = self.types
        drop = [index for index, option in enumerate(options) if type(option) in types]
        counters.seen += 1
        if not drop:
            return frame
        counters.changed += 1
        return strip_option_spans(frame, ETH, spans, drop, nop=self.nop)
