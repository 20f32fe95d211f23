"""Valid inputs the mutators start from: real packets of a stack conversation, the option areas
they carry, and the project's own spec files.

The packets come from two bundled-stack hosts talking directly (no links, virtual time), once
without and once with DSS checksums, so the corpus holds every segment an MPTCP connection
normally sends: SYN/SYN-ACK/ACK with MP_CAPABLE, MP_JOIN in all three forms, ADD_ADDR, DSS
with and without mappings and checksums, DATA_FIN, FIN.
"""

from __future__ import annotations

import contextlib
import functools
import random
from dataclasses import dataclass, replace
from pathlib import Path

import tomllib

from testbed.mptcp import events
from testbed.mptcp.config import StackConfig
from testbed.mptcp.errors import LocalProtocolError
from testbed.mptcp.host import MptcpHost
from testbed.wire import decode_packet, encode_packet
from testbed.wire.types import (
    MPTCPRST_MIDDLEBOX_INTERFERENCE,
    AddAddr,
    MpFail,
    MpFastclose,
    MpPrio,
    MpTcpRst,
    Packet,
    RemoveAddr,
)

CLIENT_ADDRESSES = ("10.0.1.1", "10.0.2.1")
SERVER_ADDRESS = "10.0.100.2"
SERVER_PORT = 5201
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@dataclass
class Conversation:
    """Two hosts after a conversation, and every packet that crossed, in order."""

    client: MptcpHost
    server: MptcpHost
    packets: list[Packet]
    now: float


def converse(*, checksum: bool = False, payload_bytes: int = 30_000, seed: int = 1,
             close: bool = True) -> Conversation:
    """Run one transfer client -> server until both sides are done (or 20 virtual seconds)."""
    config = replace(StackConfig(), checksum=checksum)
    client = MptcpHost(addresses=list(CLIENT_ADDRESSES), config=config,
                       rng=random.Random(seed), now=0.0)
    server = MptcpHost(addresses=[SERVER_ADDRESS], config=config,
                       rng=random.Random(seed + 1), now=0.0)
    server.listen(SERVER_PORT)
    connection = client.connect(SERVER_ADDRESS, SERVER_PORT, now=0.0)
    payload = random.Random(seed).randbytes(payload_bytes)
    sent = connection.send(payload)
    packets: list[Packet] = []
    now = 0.0
    closing = False
    while now < 20.0:
        moved = False
        for source, sink in ((client, server), (server, client)):
            for packet in source.packets_to_send(now):
                packets.append(packet)
                sink.receive_packet(packet, now)
                moved = True
        for host in (client, server):
            while (event := host.next_event()) is not None:
                if isinstance(event, events.DataReceived):
                    event.connection.receive()
                elif isinstance(event, events.DataEndReceived) and close:
                    with contextlib.suppress(LocalProtocolError):  # closed already
                        event.connection.close()
                elif isinstance(event, events.SendBufferAvailable) and sent < len(payload):
                    sent += connection.send(payload[sent:])
        if sent >= len(payload) and close and not closing:
            closing = True
            connection.close()
        if not moved:
            timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
            if not timers:
                break
            now = max(now + 0.001, min(timers))
            for host in (client, server):
                timer = host.get_timer()
                if timer is not None and timer <= now:
                    host.handle_timer(now)
    return Conversation(client, server, packets, now)


@functools.cache
def seed_packets() -> tuple[bytes, ...]:
    """The encoded packets of two conversations (without and with DSS checksums)."""
    out: list[bytes] = []
    for checksum in (False, True):
        out.extend(encode_packet(p) for p in converse(checksum=checksum).packets)
    out.extend(_signalling_packets(decode_packet(out[-1])))
    return tuple(dict.fromkeys(out))  # in order, each once


def _signalling_packets(template: Packet) -> list[bytes]:
    """The options a two-host conversation does not send, each on a copy of `template`."""
    options = [
        [AddAddr(3, "10.0.3.1", hmac=0x0102030405060708)],
        [AddAddr(4, "10.0.4.1", port=5202, hmac=0x1112131415161718)],
        [AddAddr(3, "10.0.3.1", echo=True)],
        [RemoveAddr((3, 4, 5))],
        [MpPrio(True), MpPrio(False, 2)],
        [MpFail(0x0102030405060708)],
        [MpFastclose(0x2122232425262728)],
        [MpTcpRst(MPTCPRST_MIDDLEBOX_INTERFERENCE, transient=True)],
    ]
    segment = template.tcp
    return [encode_packet(replace(template, tcp=replace(segment, options=extra, payload=b"")))
            for extra in options]


@functools.cache
def seed_option_areas() -> tuple[bytes, ...]:
    """The distinct TCP option areas of the seed packets."""
    areas = []
    for packet in seed_packets():
        tcp = (packet[0] & 0x0F) * 4
        areas.append(packet[tcp + 20:tcp + (packet[tcp + 12] >> 4) * 4])
    return tuple(dict.fromkeys(areas))


def spec_files() -> list[Path]:
    """Experiment specs (matrix specs are the files holding a [base] table)."""
    return [p for p in sorted(EXPERIMENTS.rglob("*.toml")) if not _is_matrix(p)]


def matrix_files() -> list[Path]:
    return [p for p in sorted(EXPERIMENTS.rglob("*.toml")) if _is_matrix(p)]


def _is_matrix(path: Path) -> bool:
    return "base" in tomllib.loads(path.read_text())
