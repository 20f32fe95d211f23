"""Synthetic MPTCP captures written with the project's codec: for the speed benchmark and tests.

`write_synthetic_capture(path, packets=...)` writes one MPTCP v1 connection between a client
and a server: the MP_CAPABLE handshake (real keys), one MP_JOIN subflow (real tokens, nonces and
HMACs), then bulk data from the client alternating between the two subflows (DSS with a mapping
and data ACK, every segment `mss` bytes) and one ACK per two segments, then DATA_FIN and FINs.
Records hold headers only (captured length = headers, original length = the whole packet), as
`tcpdump -s 200` leaves them, in Linux cooked v1 framing like `tcpdump -i any`.
Data and ACK packets are patched into a template for speed: a header-only capture of five
million packets is written in well under a minute.
"""

from __future__ import annotations

import struct
from pathlib import Path

from testbed.wire import (
    ACK,
    FIN,
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

LINKTYPE_LINUX_SLL = 113
SLL_OUTGOING, SLL_HOST = 4, 0
CLIENT_KEY = 0x1122334455667788
SERVER_KEY = 0x99AABBCCDDEEFF00
PATHS = (("10.0.1.1", 40001), ("10.0.2.1", 40002))
SERVER = ("10.0.100.2", 5201)
_RECORD = struct.Struct("<IIII")
_NOP = NoOperation()


def _sll(outgoing: bool) -> bytes:
    return struct.pack("!HHH8sH", SLL_OUTGOING if outgoing else SLL_HOST, 1, 6, bytes(8), 0x0800)


def _packet(src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int,
            options: list, payload_len: int = 0) -> bytes:
    segment = TcpSegment(src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 5000, options)
    raw = bytearray(encode_packet(Packet(src[0], dst[0], segment)))
    struct.pack_into("!H", raw, 2, len(raw) + payload_len)  # headers only: the payload is cut
    return bytes(raw)


class _Writer:
    def __init__(self, stream, start: float) -> None:
        self.stream = stream
        self.clock = start
        self.count = 0
        stream.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 200, LINKTYPE_LINUX_SLL))

    def write(self, packet: bytes, outgoing: bool, payload_len: int = 0, step: float = 0.0) -> None:
        self.clock += step
        seconds = int(self.clock)
        frame = _sll(outgoing) + packet
        self.stream.write(_RECORD.pack(seconds, int((self.clock - seconds) * 1e6), len(frame),
                                       len(frame) + payload_len))
        self.stream.write(frame)
        self.count += 1


def write_synthetic_capture(path: Path, *, packets: int = 100_000, mss: int = 1400,
                            interval_s: float = 20e-6) -> int:
    """Write the capture; returns the number of packets written (about `packets`)."""
    client_idsn, server_idsn = key_to_idsn(CLIENT_KEY), key_to_idsn(SERVER_KEY)
    isn = [1000, 2000]
    server_isn = [7000, 9000]
    ts = Timestamps(1, 1)
    with open(path, "wb") as stream:
        out = _Writer(stream, 1_700_000_000.0)
        client, join = PATHS
        out.write(_packet(client, SERVER, isn[0], 0, SYN, [MpCapable()]), True)
        out.write(_packet(SERVER, client, server_isn[0], isn[0] + 1, SYN | ACK,
                          [MpCapable(sender_key=SERVER_KEY)]), False, step=1e-4)
        out.write(_packet(client, SERVER, isn[0] + 1, server_isn[0] + 1, ACK,
                          [MpCapable(sender_key=CLIENT_KEY, receiver_key=SERVER_KEY)]), True, step=1e-5)
        nonce_client, nonce_server = 0x01020304, 0x0A0B0C0D
        out.write(_packet(join, SERVER, isn[1], 0, SYN,
                          [MpJoinSyn(False, 1, key_to_token(SERVER_KEY), nonce_client)]), True, step=1e-3)
        out.write(_packet(SERVER, join, server_isn[1], isn[1] + 1, SYN | ACK, [MpJoinSynAck(
            False, 0, join_synack_hmac(SERVER_KEY, CLIENT_KEY, nonce_server, nonce_client),
            nonce_server)]), False, step=1e-4)
        out.write(_packet(join, SERVER, isn[1] + 1, server_isn[1] + 1, ACK, [MpJoinAck(
            join_ack_hmac(CLIENT_KEY, SERVER_KEY, nonce_client, nonce_server))]), True, step=1e-5)
        # templates: data (DSS with data ACK and mapping) and ACK (DSS with a data ACK only)
        data_templates = [bytearray(_packet(path_, SERVER, 0, 0, ACK, [_NOP, _NOP, ts, Dss(
            data_ack=server_idsn + 1, dsn=client_idsn + 1, subflow_seq=1, data_len=mss)], mss))
            for path_ in PATHS]
        ack_templates = [bytearray(_packet(SERVER, path_, 0, 0, ACK, [_NOP, _NOP, ts, Dss(
            data_ack=client_idsn + 1)])) for path_ in PATHS]
        data_field = struct.Struct("!II")  # TCP seq, ack at 24
        dss_field = struct.Struct("!QQI")  # data ACK, DSN, subflow seq at 56
        ack_field = struct.Struct("!II")
        data_ack_field = struct.Struct("!Q")
        sent = [0, 0]  # payload bytes per subflow
        dsn = 0
        acked_dsn = 0
        remaining = max(0, packets - 12)
        while remaining > 0:
            for sub in (0, 1):
                for _ in range(2):
                    template = data_templates[sub]
                    data_field.pack_into(template, 24, (isn[sub] + 1 + sent[sub]) & 0xFFFFFFFF,
                                         server_isn[sub] + 1)
                    dss_field.pack_into(template, 56, server_idsn + 1,
                                        (client_idsn + 1 + dsn) & ((1 << 64) - 1),
                                        (1 + sent[sub]) & 0xFFFFFFFF)
                    out.write(bytes(template), True, mss, step=interval_s)
                    sent[sub] += mss
                    dsn += mss
                template = ack_templates[sub]
                acked_dsn = dsn
                ack_field.pack_into(template, 24, server_isn[sub] + 1,
                                    (isn[sub] + 1 + sent[sub]) & 0xFFFFFFFF)
                data_ack_field.pack_into(template, 56, (client_idsn + 1 + acked_dsn) & ((1 << 64) - 1))
                out.write(bytes(template), False, step=interval_s)
                remaining -= 3
        # DATA_FIN on subflow 0, then FIN/ACK exchanges on both subflows
        out.write(_packet(client, SERVER, isn[0] + 1 + sent[0], server_isn[0] + 1, ACK, [_NOP, _NOP, ts, Dss(
            data_ack=server_idsn + 1, dsn=client_idsn + 1 + dsn, subflow_seq=0, data_len=1,
            data_fin=True)]), True, step=interval_s)
        for sub, path_ in enumerate(PATHS):
            out.write(_packet(path_, SERVER, isn[sub] + 1 + sent[sub], server_isn[sub] + 1, FIN | ACK,
                              [_NOP, _NOP, ts, Dss(data_ack=server_idsn + 1)]), True, step=interval_s)
            out.write(_packet(SERVER, path_, server_isn[sub] + 1, isn[sub] + 2 + sent[sub], FIN | ACK,
                              [_NOP, _NOP, ts, Dss(data_ack=client_idsn + 2 + dsn)]), False,
                      step=interval_s)
            out.write(_packet(path_, SERVER, isn[sub] + 2 + sent[sub], server_isn[sub] + 2, ACK,
                              [_NOP, _NOP, ts]), True, step=interval_s)
        return out.count


def expected_totals(packets: int, mss: int = 1400) -> dict[str, int]:
    """What write_synthetic_capture sends, for tests: payload bytes per subflow and in all."""
    rounds = -(-max(0, packets - 12) // 6)
    per_subflow = rounds * 2 * mss
    return {"subflow_bytes": per_subflow, "total_bytes": 2 * per_subflow}
