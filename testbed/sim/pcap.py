"""Packet capture of simulated links, as classic pcap files of raw IPv4 packets.

A capture lets tshark dissect what crossed a simulated link, independently of testbed.wire:
the same evidence the real testbed records. Timestamps are virtual time (so a capture starts
at the epoch). Packets are encoded with testbed.wire; a packet the codec refuses is skipped
(the link already counts it as malformed).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

PCAP_MAGIC_MICROSECONDS = 0xA1B2C3D4
LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link-layer header
SNAPLEN = 65535
_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")


class PcapWriter:
    """Writes pcap records to a binary stream it does not own (the caller closes it)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.packets = 0
        stream.write(_GLOBAL_HEADER.pack(PCAP_MAGIC_MICROSECONDS, 2, 4, 0, 0, SNAPLEN,
                                         LINKTYPE_RAW))

    def write(self, timestamp: float, data: bytes) -> None:
        """One packet seen at virtual time `timestamp` (seconds)."""
        if timestamp < 0:
            raise ValueError(f"pcap: negative timestamp {timestamp}")
        microseconds = round(timestamp * 1_000_000)
        seconds, micros = divmod(microseconds, 1_000_000)
        captured = data[:SNAPLEN]
        self._stream.write(_RECORD_HEADER.pack(seconds, micros, len(captured), len(data)))
        self._stream.write(captured)
        self.packets += 1
