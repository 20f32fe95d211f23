"""Packet capture of simulated links, as classic pcap files of raw IPv4 packets.

A capture lets tshark dissect what crossed a simulated link, independently of testbed.wire:
the same evidence the real testbed records. Timestamps are virtual time (so a capture starts
at the epoch). Packets are encoded with testbed.wire; a packet the codec refuses is skipped
(the link already counts it as malformed). The file format is testbed.wire.pcap's.
"""

from __future__ import annotations

from typing import BinaryIO

from testbed.wire.pcap import LINKTYPE_RAW, PcapWriter

__all__ = ["LINKTYPE_RAW", "SNAPLEN", "PcapWriter", "link_capture_writer"]

SNAPLEN = 65535


def link_capture_writer(stream: BinaryIO) -> PcapWriter:
    """A writer of raw IPv4 records (LINKTYPE_RAW) to `stream`, which the caller closes."""
    return PcapWriter(stream, LINKTYPE_RAW, SNAPLEN)
