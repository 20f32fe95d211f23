"""The classic pcap file format (libpcap 2.4), written and read without any dependency.

Used for captures of what crossed a link and for feeding tshark, the independent dissector.
Packets are stored as raw IPv4 (LINKTYPE_IPV4, 228) by default, which is what the codec
produces; Ethernet (1) and LINKTYPE_RAW (101) are accepted for frames from AF_PACKET.
Timestamps are passed in by the caller (seconds, float): nothing here reads a clock.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from testbed.wire.errors import WireError

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228

PCAP_MAGIC_MICROSECONDS = 0xA1B2C3D4
PCAP_MAGIC_NANOSECONDS = 0xA1B23C4D
PCAP_VERSION = (2, 4)
DEFAULT_SNAPLEN = 262144

_GLOBAL_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, link
_RECORD_HEADER = struct.Struct("<IIII")  # seconds, micro/nanoseconds, captured length, original


class PcapRecord(NamedTuple):
    timestamp: float
    data: bytes
    original_length: int


class PcapWriter:
    """Appends packets to a pcap stream; one global header, then one record per packet."""

    def __init__(
        self, stream: BinaryIO, linktype: int = LINKTYPE_IPV4, snaplen: int = DEFAULT_SNAPLEN
    ) -> None:
        self._stream = stream
        self._snaplen = snaplen
        self.packets = 0
        stream.write(
            _GLOBAL_HEADER.pack(PCAP_MAGIC_MICROSECONDS, *PCAP_VERSION, 0, 0, snaplen, linktype)
        )

    def write(self, data: bytes, timestamp: float) -> None:
        """One packet seen at `timestamp` (seconds since the epoch, or since the run began)."""
        if timestamp < 0:
            raise WireError("pcap.timestamp", f"must not be negative, got {timestamp}")
        seconds, microseconds = divmod(round(timestamp * 1_000_000), 1_000_000)
        captured = data[: self._snaplen]
        self._stream.write(_RECORD_HEADER.pack(seconds, microseconds, len(captured), len(data)))
        self._stream.write(captured)
        self.packets += 1


def write_pcap(
    path: str | Path, packets: Iterable[tuple[float, bytes]], linktype: int = LINKTYPE_IPV4
) -> int:
    """Write (timestamp, bytes) pairs to a new pcap file; returns the number of packets."""
    count = 0
    with open(path, "wb") as stream:
        writer = PcapWriter(stream, linktype)
        for timestamp, data in packets:
            writer.write(data, timestamp)
            count += 1
    return count


def iter_pcap(stream: BinaryIO) -> Iterator[PcapRecord]:
    """Records of a pcap stream in either byte order, micro- or nanosecond resolution."""
    header = stream.read(_GLOBAL_HEADER.size)
    if len(header) < _GLOBAL_HEADER.size:
        raise WireError("pcap.header", "shorter than the 24-byte global header")
    magic_le = int.from_bytes(header[:4], "little")
    magic_be = int.from_bytes(header[:4], "big")
    if magic_le in (PCAP_MAGIC_MICROSECONDS, PCAP_MAGIC_NANOSECONDS):
        order, magic = "<", magic_le
    elif magic_be in (PCAP_MAGIC_MICROSECONDS, PCAP_MAGIC_NANOSECONDS):
        order, magic = ">", magic_be
    else:
        raise WireError("pcap.magic", f"not a pcap file (magic 0x{magic_le:08x}); pcapng is not read")
    divisor = 1_000_000_000 if magic == PCAP_MAGIC_NANOSECONDS else 1_000_000
    record_header = struct.Struct(order + "IIII")
    index = 0
    while True:
        raw = stream.read(record_header.size)
        if not raw:
            return
        if len(raw) < record_header.size:
            raise WireError(f"pcap.record[{index}]", "truncated record header")
        seconds, fraction, captured, original = record_header.unpack(raw)
        data = stream.read(captured)
        if len(data) < captured:
            raise WireError(f"pcap.record[{index}]", f"truncated: {len(data)} of {captured} bytes")
        yield PcapRecord(seconds + fraction / divisor, data, original)
        index += 1


def pcap_linktype(path: str | Path) -> int:
    """The link type of a pcap file (to know whether records start with Ethernet or IPv4)."""
    with open(path, "rb") as stream:
        header = stream.read(_GLOBAL_HEADER.size)
    if len(header) < _GLOBAL_HEADER.size:
        raise WireError("pcap.header", "shorter than the 24-byte global header")
    order = "<" if int.from_bytes(header[:4], "little") in (
        PCAP_MAGIC_MICROSECONDS, PCAP_MAGIC_NANOSECONDS
    ) else ">"
    return struct.unpack(order + "I", header[20:24])[0]


def read_pcap(path: str | Path) -> list[PcapRecord]:
    """Every record of a pcap file."""
    with open(path, "rb") as stream:
        return list(iter_pcap(stream))
