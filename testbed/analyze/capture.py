"""Reading any capture file in one streaming pass: pcap and pcapng, several link types.

`open_capture(path)` returns a `CaptureReader`; iterating it yields, per packet,
(timestamp in seconds, captured bytes, offset of the network header, IP version). Frames that
carry no IP (ARP, other EtherTypes, unknown link types) are counted and skipped. The file is
read in chunks, never whole and never mapped, so memory does not grow with the capture.

Link types: Ethernet (with 802.1Q/802.1ad tags), Linux cooked v1 (what `tcpdump -i any` writes)
and v2 (`-y LINUX_SLL2`), raw IP (101, and the BSD values 12/14), IPv4 (228), IPv6 (229), BSD
loopback (0, 108). A truncated capture stops where the damage is; `truncated` then says where.
Problems with the file itself raise CaptureError (a SpecError: exit 2, one line).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from testbed.errors import SpecError

CHUNK = 1 << 20
PCAP_MAGICS = {0xA1B2C3D4: 1_000_000, 0xA1B23C4D: 1_000_000_000}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_IDB, PCAPNG_OPB, PCAPNG_SPB, PCAPNG_EPB = 1, 2, 3, 6
IF_TSRESOL = 9

LINKTYPE_NAMES = {
    0: "BSD loopback", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP",
    108: "OpenBSD loopback", 113: "Linux cooked v1", 228: "IPv4", 229: "IPv6",
    276: "Linux cooked v2",
}
_ETHERTYPE_VERSION = {0x0800: 4, 0x86DD: 6}
_VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
_BSD_FAMILY_VERSION = {2: 4, 10: 6, 24: 6, 28: 6, 30: 6}


class CaptureError(SpecError):
    """The file is not a capture this reader understands (exit 2, one line)."""


def network_offset(linktype: int, frame: bytes) -> tuple[int, int] | None:
    """(offset of the IP header, IP version) in a frame of `linktype`; None when the frame
    carries no IPv4/IPv6 or is too short to tell."""
    if linktype == 1:
        if len(frame) < 14:
            return None
        offset = 12
        ethertype = (frame[12] << 8) | frame[13]
        while ethertype in _VLAN_ETHERTYPES and len(frame) >= offset + 6:
            offset += 4
            ethertype = (frame[offset] << 8) | frame[offset + 1]
        version = _ETHERTYPE_VERSION.get(ethertype)
        return None if version is None else (offset + 2, version)
    if linktype == 113:
        if len(frame) < 16:
            return None
        version = _ETHERTYPE_VERSION.get((frame[14] << 8) | frame[15])
        return None if version is None else (16, version)
    if linktype == 276:
        if len(frame) < 20:
            return None
        version = _ETHERTYPE_VERSION.get((frame[0] << 8) | frame[1])
        return None if version is None else (20, version)
    if linktype in (101, 12, 14, 228, 229):
        if not frame:
            return None
        version = frame[0] >> 4
        return (0, version) if version in (4, 6) else None
    if linktype in (0, 108):
        if len(frame) < 4:
            return None
        family = struct.unpack_from(">I" if linktype == 108 else "<I", frame)[0]
        if family > 0xFFFF:  # written in the other byte order
            family = struct.unpack_from("<I" if linktype == 108 else ">I", frame)[0]
        version = _BSD_FAMILY_VERSION.get(family)
        return None if version is None else (4, version)
    return None


class CaptureReader:
    """One pass over a pcap or pcapng file. After iterating: `packets` (records read),
    `non_ip` (frames skipped), `linktypes` (names seen), `truncated` (None, or where the file
    ends early), `bytes_read` (for a progress bar against `size`)."""

    def __init__(self, path: Path, stream: BinaryIO, form: str) -> None:
        self.path = path
        self.form = form
        self.size = path.stat().st_size
        self.packets = 0
        self.non_ip = 0
        self.linktypes: set[str] = set()
        self.snaplen: int | None = None
        self.truncated: str | None = None
        self.bytes_read = 0
        self._stream = stream

    def __iter__(self) -> Iterator[tuple[float, bytes, int, int]]:
        try:
            if self.form == "pcap":
                yield from self._pcap()
            else:
                yield from self._pcapng()
        finally:
            self._stream.close()

    def _chunks(self, first: bytes) -> Iterator[bytes]:
        if first:
            yield first
        while True:
            chunk = self._stream.read(CHUNK)
            if not chunk:
                return
            yield chunk

    def _pcap(self) -> Iterator[tuple[float, bytes, int, int]]:
        header = self._stream.read(24)
        if len(header) < 24:
            raise CaptureError(f"{self.path}: pcap file shorter than its 24-byte header")
        magic = int.from_bytes(header[:4], "little")
        order = "<" if magic in PCAP_MAGICS else ">"
        divisor = PCAP_MAGICS[int.from_bytes(header[:4], "little" if order == "<" else "big")]
        snaplen, linktype = struct.unpack_from(order + "II", header, 16)
        linktype &= 0xFFFF  # the upper bits may carry FCS information
        self.snaplen = snaplen
        self.linktypes.add(LINKTYPE_NAMES.get(linktype, f"link type {linktype}"))
        record = struct.Struct(order + "IIII")
        unpack = record.unpack_from
        offset_of = network_offset
        fast_ip = linktype in (101, 12, 14, 228, 229)
        fast_sll = linktype == 113
        fast_sll2 = linktype == 276
        buffer = b""
        position = 0
        self.bytes_read = 24
        for chunk in self._chunks(b""):
            buffer = buffer[position:] + chunk if position < len(buffer) else chunk
            position = 0
            end = len(buffer)
            packets = self.packets
            while position + 16 <= end:
                seconds, fraction, captured, _original = unpack(buffer, position)
                start = position + 16
                stop = start + captured
                if stop > end:
                    if captured > 0x4000000:
                        self.packets = packets
                        self.truncated = f"record {packets} claims {captured} bytes"
                        return
                    break
                frame = buffer[start:stop]
                position = stop
                packets += 1
                if fast_sll and captured >= 16 and frame[14] == 8 and frame[15] == 0:
                    yield seconds + fraction / divisor, frame, 16, 4
                    continue
                if fast_sll2 and captured >= 20 and frame[0] == 8 and frame[1] == 0:
                    yield seconds + fraction / divisor, frame, 20, 4
                    continue
                if fast_ip and captured and frame[0] >> 4 == 4:
                    yield seconds + fraction / divisor, frame, 0, 4
                    continue
                located = offset_of(linktype, frame)
                if located is None:
                    self.non_ip += 1
                    continue
                yield seconds + fraction / divisor, frame, located[0], located[1]
            self.packets = packets  # kept per chunk: the hot loop counts in a local
            self.bytes_read += len(chunk)
        if position < len(buffer):
            self.truncated = (f"the last record (after {self.packets} packets) is cut off: "
                              f"{len(buffer) - position} bytes left")

    def _pcapng(self) -> Iterator[tuple[float, bytes, int, int]]:
        order = "<"
        interfaces: list[tuple[int, float, int]] = []  # linktype, seconds per tick, snaplen
        buffer = b""
        position = 0
        for chunk in self._chunks(b""):
            buffer = buffer[position:] + chunk if position < len(buffer) else chunk
            position = 0
            end = len(buffer)
            while position + 12 <= end:
                block_type = int.from_bytes(buffer[position:position + 4], "little")
                if block_type == PCAPNG_SHB:
                    magic = buffer[position + 8:position + 12]
                    if int.from_bytes(magic, "little") == PCAPNG_BYTE_ORDER_MAGIC:
                        order = "<"
                    elif int.from_bytes(magic, "big") == PCAPNG_BYTE_ORDER_MAGIC:
                        order = ">"
                    else:
                        raise CaptureError(f"{self.path}: pcapng section header with a bad "
                                           "byte-order magic: not a pcapng file, or damaged")
                    interfaces = []  # interface numbering restarts in each section
                else:
                    block_type = struct.unpack_from(order + "I", buffer, position)[0]
                length = struct.unpack_from(order + "I", buffer, position + 4)[0]
                if length < 12 or length % 4:
                    self.truncated = f"block of length {length} after {self.packets} packets"
                    return
                if position + length > end:
                    break
                body = position + 8
                if block_type == PCAPNG_IDB:
                    linktype, _, snaplen = struct.unpack_from(order + "HHI", buffer, body)
                    tick = _pcapng_tsresol(buffer, body + 8, position + length - 4, order)
                    interfaces.append((linktype, tick, snaplen))
                    self.snaplen = snaplen
                    self.linktypes.add(LINKTYPE_NAMES.get(linktype, f"link type {linktype}"))
                elif block_type in (PCAPNG_EPB, PCAPNG_OPB, PCAPNG_SPB):
                    if block_type == PCAPNG_SPB:
                        interface, high, low = 0, 0, 0
                        original = struct.unpack_from(order + "I", buffer, body)[0]
                        start = body + 4
                        captured = min(original, position + length - 4 - start)
                        if interfaces and interfaces[0][2]:
                            captured = min(captured, interfaces[0][2])
                    else:
                        if block_type == PCAPNG_EPB:
                            interface, high, low, captured, original = struct.unpack_from(
                                order + "IIIII", buffer, body)
                        else:
                            interface, _drops, high, low, captured, original = struct.unpack_from(
                                order + "HHIIII", buffer, body)
                        start = body + 20
                    self.packets += 1
                    if interface >= len(interfaces) or start + captured > position + length:
                        self.non_ip += 1
                    else:
                        linktype, tick, _ = interfaces[interface]
                        frame = buffer[start:start + captured]
                        located = network_offset(linktype, frame)
                        if located is None:
                            self.non_ip += 1
                        else:
                            yield ((high << 32) | low) * tick, frame, located[0], located[1]
                position += length
            self.bytes_read += len(chunk)
        if position < len(buffer):
            self.truncated = (f"the last block (after {self.packets} packets) is cut off: "
                              f"{len(buffer) - position} bytes left")


def _pcapng_tsresol(buffer: bytes, start: int, end: int, order: str) -> float:
    """Seconds per timestamp tick of an interface: if_tsresol, default microseconds."""
    position = start
    while position + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buffer, position)
        if code == 0:
            break
        if code == IF_TSRESOL and length >= 1:
            value = buffer[position + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        position += 4 + length + (-length % 4)
    return 1e-6


def open_capture(path: str | Path) -> CaptureReader:
    """A reader for a pcap or pcapng file; CaptureError (exit 2) naming what is wrong."""
    path = Path(path)
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise CaptureError(f"cannot open capture {path}: {exc.strerror or exc}") from exc
    head = stream.read(4)
    stream.seek(0)
    if len(head) < 4:
        stream.close()
        raise CaptureError(f"{path}: empty or shorter than any capture header ({len(head)} bytes)")
    little, big = int.from_bytes(head, "little"), int.from_bytes(head, "big")
    if little in PCAP_MAGICS or big in PCAP_MAGICS:
        return CaptureReader(path, stream, "pcap")
    if little == PCAPNG_SHB:
        return CaptureReader(path, stream, "pcapng")
    stream.close()
    raise CaptureError(f"{path}: not a pcap or pcapng capture (starts with 0x{big:08x}); "
                       "write one with tcpdump -w or tshark -w")
