"""Hand-made MPTCP captures for the analysis tests, every packet encoded by the codec.

`Conversation` plays one client and one server: the MP_CAPABLE handshake, MP_JOINs, data
segments with any mapping (or none), ACKs, signals; `write(path)` stores raw IPv4 records
(LINKTYPE_IPV4) with whole payloads, or `frames()` hands them to a test that wraps them in
another link layer or file format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from testbed.wire import (
    ACK,
    FIN,
    RST,
    SYN,
    Dss,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    NoOperation,
    Packet,
    TcpSegment,
    Timestamps,
    encode_packet,
    join_ack_hmac,
    join_synack_hmac,
    key_to_idsn,
    key_to_token,
)
from testbed.wire.pcap import LINKTYPE_IPV4, write_pcap

CLIENT_KEY = 0x0102030405060708
SERVER_KEY = 0x1112131415161718
SERVER = ("10.0.100.2", 5201)
NOP = NoOperation()


@dataclass
class SubflowPath:
    client: tuple[str, int]
    isn: int
    server_isn: int
    sent: int = 0  # client payload bytes so far
    server_sent: int = 0


@dataclass
class Conversation:
    checksum: bool = False
    clock: float = 1000.0
    packets: list[tuple[float, bytes]] = field(default_factory=list)
    paths: list[SubflowPath] = field(default_factory=list)
    dsn: int = 0  # client data bytes given a DSN so far (relative, first byte 1)

    @property
    def client_idsn(self) -> int:
        return key_to_idsn(CLIENT_KEY)

    @property
    def server_idsn(self) -> int:
        return key_to_idsn(SERVER_KEY)

    def emit(self, src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int,
             options: list, payload: bytes = b"", step: float = 0.001) -> bytes:
        self.clock += step
        segment = TcpSegment(src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 1000,
                             options, payload)
        raw = encode_packet(Packet(src[0], dst[0], segment))
        self.packets.append((self.clock, raw))
        return raw

    def handshake(self, client: tuple[str, int] = ("10.0.1.1", 40001), *, version: int = 1,
                  server_mptcp: bool = True) -> SubflowPath:
        path = SubflowPath(client, 1000, 5000)
        self.paths.append(path)
        flags = 0x81 if self.checksum else 0x01
        self.emit(client, SERVER, path.isn, 0, SYN, [MpCapable(version=version, flags=flags)])
        synack = [MpCapable(version=version, flags=flags, sender_key=SERVER_KEY)] if server_mptcp else []
        self.emit(SERVER, client, path.server_isn, path.isn + 1, SYN | ACK, synack)
        third = [MpCapable(version=version, flags=flags, sender_key=CLIENT_KEY,
                           receiver_key=SERVER_KEY)] if server_mptcp else []
        self.emit(client, SERVER, path.isn + 1, path.server_isn + 1, ACK, third)
        return path

    def join(self, client: tuple[str, int], *, wrong_hmac: bool = False, backup: bool = False) -> SubflowPath:
        path = SubflowPath(client, 3000 + 1000 * len(self.paths), 9000 + 1000 * len(self.paths))
        self.paths.append(path)
        nonce_client, nonce_server = 0x11111111, 0x22222222
        self.emit(client, SERVER, path.isn, 0, SYN,
                  [MpJoinSyn(backup, 2, key_to_token(SERVER_KEY), nonce_client)])
        hmac = join_synack_hmac(SERVER_KEY, CLIENT_KEY, nonce_server, nonce_client)
        self.emit(SERVER, client, path.server_isn, path.isn + 1, SYN | ACK,
                  [MpJoinSynAck(False, 0, hmac ^ 1 if wrong_hmac else hmac, nonce_server)])
        self.emit(client, SERVER, path.isn + 1, path.server_isn + 1, ACK,
                  [MpJoinAck(join_ack_hmac(CLIENT_KEY, SERVER_KEY, nonce_client, nonce_server))])
        return path

    def data(self, path: SubflowPath, length: int, *, dsn: int | None = None, mapping: bool = True,
             data_len: int | None = None, subflow_seq: int | None = None, checksum: int | None = None,
             extra: list | None = None, step: float = 0.001) -> None:
        """Client data on `path` (new subflow bytes); DSN `dsn` (relative) or the next ones."""
        if dsn is None:
            dsn = self.dsn + 1
        payload = bytes((dsn + i) & 0xFF for i in range(length))
        options: list = [NOP, NOP, Timestamps(1, 1)]
        if mapping:
            absolute = (self.client_idsn + dsn) & ((1 << 64) - 1)
            ssn = path.sent + 1 if subflow_seq is None else subflow_seq
            size = length if data_len is None else data_len
            if self.checksum and checksum is None:
                from testbed.wire import dss_checksum
                checksum = dss_checksum(absolute, ssn, size, payload)
            options.append(Dss(data_ack=self.server_idsn + 1, dsn=absolute, subflow_seq=ssn,
                               data_len=size, checksum=checksum if self.checksum else None))
        options += extra or []
        self.emit(path.client, SERVER, path.isn + 1 + path.sent, path.server_isn + 1, ACK,
                  options, payload, step)
        path.sent += length
        self.dsn = max(self.dsn, dsn + length - 1)

    def ack(self, path: SubflowPath, *, data_ack: int | None = None, extra: list | None = None,
            flags: int = ACK) -> None:
        """The server acknowledges everything on `path` (and at the data level `data_ack`)."""
        options: list = [NOP, NOP, Timestamps(1, 1),
                         Dss(data_ack=(self.client_idsn + 1 + (self.dsn if data_ack is None
                                                               else data_ack)) & ((1 << 64) - 1))]
        options += extra or []
        self.emit(SERVER, path.client, path.server_isn + 1, path.isn + 1 + path.sent, flags, options)

    def close(self, path: SubflowPath, *, data_fin: bool = True) -> None:
        options: list = [NOP, NOP, Timestamps(1, 1)]
        if data_fin:
            options.append(Dss(data_ack=self.server_idsn + 1,
                               dsn=(self.client_idsn + self.dsn + 1) & ((1 << 64) - 1),
                               subflow_seq=0, data_len=1, data_fin=True))
        self.emit(path.client, SERVER, path.isn + 1 + path.sent, path.server_isn + 1, FIN | ACK, options)
        self.emit(SERVER, path.client, path.server_isn + 1, path.isn + 2 + path.sent, FIN | ACK,
                  [Dss(data_ack=(self.client_idsn + self.dsn + 2) & ((1 << 64) - 1))])
        self.emit(path.client, SERVER, path.isn + 2 + path.sent, path.server_isn + 2, ACK, [])

    def reset(self, path: SubflowPath, options: list) -> None:
        self.emit(SERVER, path.client, path.server_isn + 1, path.isn + 1 + path.sent, RST | ACK, options)

    def write(self, path: Path) -> Path:
        write_pcap(path, self.packets, LINKTYPE_IPV4)
        return path


def two_path_transfer(*, segments: int = 20, size: int = 1000, checksum: bool = False) -> Conversation:
    """A clean two-subflow upload: handshake, join, `segments` segments alternating, closes."""
    conversation = Conversation(checksum=checksum)
    first = conversation.handshake()
    second = conversation.join(("10.0.2.1", 40002))
    for index in range(segments):
        path = first if index % 2 == 0 else second
        conversation.data(path, size)
        conversation.ack(path)
    conversation.close(first)
    conversation.close(second, data_fin=False)
    return conversation
