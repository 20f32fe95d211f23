"""One streaming pass over a capture's packets: headers decoded with the project's codec,
packets routed to their subflow, MPTCP options to their handlers, mapped payload to the data
level of its connection.

`Analysis.packet(ts, frame, offset, version)` takes what testbed.analyze.capture yields; after
the last packet, `finish()` matches what could only be matched once every key was known (join
HMACs, joins whose token came late). A packet the codec cannot decode is counted, never fatal.
IPv4 and IPv6: an IPv6 packet's extension headers (hop-by-hop, routing, destination options,
AH) are walked to the TCP header; fragments are counted, not reassembled, as for IPv4.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from testbed.analyze.connection import Connection
from testbed.analyze.subflow import Subflow
from testbed.wire import (
    AddAddr,
    Dss,
    MpCapable,
    MpFail,
    MpFastclose,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MpTcpRst,
    RemoveAddr,
    UnknownMptcp,
    WireError,
    dss_checksum,
)
from testbed.wire.dss_peek import timestamps_then_dss
from testbed.wire.tcp_options import decode_options_at
from testbed.wire.types import MPCAPABLE_FLAG_CHECKSUM

TCP_FIXED = struct.Struct("!HHIIBBH")
TIMELINE_LIMIT = 20_000
MPTCPRST_REASONS = {0: "unspecified", 1: "MPTCP error", 2: "lack of resources",
                    3: "administratively prohibited", 4: "too much outstanding data",
                    5: "unacceptable performance", 6: "middlebox interference"}
_SYN, _ACK, _FIN, _RST = 0x02, 0x10, 0x01, 0x04
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options: (length + 1) * 8 bytes
_IPV6_FRAGMENT, _IPV6_AH, _TCP = 44, 51, 6


def ipv6_tcp_offset(frame: bytes, offset: int) -> tuple[int, int] | str:
    """(offset of the TCP header, end of the IPv6 payload) in `frame`, or why there is none:
    "not_tcp", "fragments", "headers_cut" or "malformed" (the `counts` key)."""
    size = len(frame)
    if size < offset + 40:
        return "headers_cut"
    payload_length = (frame[offset + 4] << 8) | frame[offset + 5]
    if payload_length == 0:
        return "malformed"  # a jumbogram (hop-by-hop option) or a lie; no TCP segment is 0 bytes
    end = offset + 40 + payload_length
    next_header, position = frame[offset + 6], offset + 40
    while next_header != _TCP:
        if position + 8 > min(size, end):
            return "headers_cut" if position + 8 > size else "malformed"
        if next_header in _IPV6_EXTENSIONS:
            length = (frame[position + 1] + 1) * 8
        elif next_header == _IPV6_FRAGMENT:
            return "fragments"
        elif next_header == _IPV6_AH:
            length = (frame[position + 1] + 2) * 4
        else:
            return "not_tcp"
        next_header, position = frame[position], position + length
    return (position, end) if position <= end else "malformed"


class Analysis:
    """State of one pass: subflows by flow key, MPTCP connections, tokens, the timeline."""

    def __init__(self, *, bin_s: float = 0.1, timeout_s: float = 60.0) -> None:
        self.bin_s = bin_s
        self.timeout_s = timeout_s
        self.flows: dict[bytes, Subflow] = {}
        self.subflows: list[Subflow] = []
        self.connections: list[Connection] = []
        self.tokens: dict[int, tuple[Connection, int]] = {}
        self.pending_joins: dict[int, list[Subflow]] = {}
        self.timeline: list[dict[str, Any]] = []
        self.timeline_dropped = 0
        self.tcp_packets = 0
        self.counts = {"not_tcp": 0, "ipv6": 0, "fragments": 0,
                       "headers_cut": 0, "malformed": 0, "payload_cut": 0}
        self.malformed_examples: list[str] = []
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self._handlers: dict[type, Callable[..., None]] = {
            MpCapable: self._mp_capable,
            MpJoinSyn: self._join_syn,
            MpJoinSynAck: self._join_synack,
            MpJoinAck: self._join_ack,
            AddAddr: self._add_addr,
            RemoveAddr: self._remove_addr,
            MpPrio: self._mp_prio,
            MpFail: self._mp_fail,
            MpFastclose: self._fastclose,
            MpTcpRst: self._tcprst,
            UnknownMptcp: self._unknown_mptcp,
        }

    # --- per packet ----------------------------------------------------------------------
    def packet(self, ts: float, frame: bytes, offset: int, version: int) -> None:
        first = self.first_ts
        if first is None:
            first = self.first_ts = ts
        if ts > self.last_ts:
            self.last_ts = ts
        size = len(frame)
        if version == 4:
            if size < offset + 20:
                self.counts["headers_cut"] += 1
                return
            ihl = (frame[offset] & 0x0F) * 4
            if frame[offset + 9] != 6:
                self.counts["not_tcp"] += 1
                return
            if frame[offset + 6] & 0x3F or frame[offset + 7]:
                self.counts["fragments"] += 1
                return
            tcp = offset + ihl
            end = offset + ((frame[offset + 2] << 8) | frame[offset + 3])
        else:
            located = ipv6_tcp_offset(frame, offset)
            if type(located) is str:
                if located == "malformed":
                    self._malformed("IPv6 extension headers beyond the payload length")
                else:
                    self.counts[located] += 1
                return
            tcp, end = located  # type: ignore[misc]
            self.counts["ipv6"] += 1
        if size < tcp + 20:
            self.counts["headers_cut"] += 1
            return
        self.tcp_packets += 1
        sport, dport, seq, ack, offset_byte, flags, window = TCP_FIXED.unpack_from(frame, tcp)
        header = (offset_byte >> 4) * 4
        length = end - tcp - header
        if length < 0 or header < 20:
            limit = "IPv4 total length" if version == 4 else "IPv6 payload length"
            self._malformed(f"TCP header length beyond the {limit}")
            return
        dss = None
        options: list = []
        if header > 20:
            if tcp + header > size:
                self.counts["headers_cut"] += 1
            else:
                dss = timestamps_then_dss(frame, tcp + 20, tcp + header)
                if dss is None:
                    try:
                        options = decode_options_at(frame, tcp + 20, tcp + header)
                    except WireError as error:
                        self._malformed(str(error))
        # addresses and ports: contiguous when the IP header has no options or extensions
        if version == 4:
            key = (frame[offset + 12:offset + 24] if ihl == 20
                   else frame[offset + 12:offset + 20] + frame[tcp:tcp + 4])
        else:
            key = frame[offset + 8:offset + 40] + frame[tcp:tcp + 4]
        subflow = self.flows.get(key)
        if subflow is None or (flags & _SYN and not flags & _ACK and subflow.dirs[
                subflow.side_of(key)].base != seq):
            subflow = self._new_subflow(ts, key, sport, dport, flags)
        side = 0 if key == subflow.keys[0] else 1
        index = int((ts - first) / self.bin_s) if ts > first else 0
        rel, retransmitted = subflow.segment(side, ts, seq, ack, flags, window, length, index)
        if options:
            handlers = self._handlers
            for option in options:
                cls = type(option)
                if cls is Dss:
                    dss = (option.data_ack, option.data_ack_64, option.dsn, option.dsn_64,
                           option.subflow_seq, option.data_len, option.checksum, option.data_fin)
                    continue
                handler = handlers.get(cls)
                if handler is not None:
                    handler(subflow, side, option, ts, flags, rel, length, index)
        connection = subflow.connection
        if (flags & _SYN and flags & _ACK and connection is not None and subflow.role == "initial"
                and not subflow.syn_ack_seen and connection.fallback is None):
            connection.fallback, connection.fallback_ts = "no MP_CAPABLE on the SYN/ACK", ts
            self._event(ts, subflow, side, "fallback", "SYN/ACK without MP_CAPABLE: plain TCP")
        if connection is None and dss and subflow.role == "tcp":
            # a DSS on a subflow whose handshake the capture missed: its own connection (no
            # token to match it to others), role unknown
            connection = self._new_connection(subflow, 1)
            subflow.role = "unknown (handshake not captured)"
        if connection is not None and connection.version == 1:
            if dss:
                subflow.dss_seen = True
                self._dss(connection, subflow, side, dss, ts, rel, length, index, frame,
                          tcp + header, size)
            if length:
                self._map_payload(connection, subflow, side, ts, rel, length, index, retransmitted)

    def _malformed(self, message: str) -> None:
        self.counts["malformed"] += 1
        if len(self.malformed_examples) < 5:
            self.malformed_examples.append(message)

    def _new_subflow(self, ts: float, key: bytes, sport: int, dport: int, flags: int) -> Subflow:
        """`key` is source address, destination address, source port, destination port."""
        width = (len(key) - 4) // 2  # 4 or 16 bytes per address
        family = socket.AF_INET if width == 4 else socket.AF_INET6
        src, dst, ports = key[:width], key[width:2 * width], key[2 * width:]
        reverse = dst + src + ports[2:4] + ports[0:2]
        addresses = (socket.inet_ntop(family, src), socket.inet_ntop(family, dst))
        syn_ack = flags & _SYN and flags & _ACK
        if syn_ack:  # the SYN is not in the capture: side 0 is still the end that sent it
            subflow = Subflow(len(self.subflows), ts, (addresses[1], addresses[0]), (dport, sport),
                              (reverse, key), handshake=False)
        else:
            subflow = Subflow(len(self.subflows), ts, addresses, (sport, dport), (key, reverse),
                              handshake=bool(flags & _SYN))
        self.subflows.append(subflow)
        self.flows[key] = subflow
        self.flows[reverse] = subflow
        return subflow

    def _event(self, ts: float, subflow: Subflow, side: int, signal: str, detail: str = "") -> None:
        if len(self.timeline) >= TIMELINE_LIMIT:
            self.timeline_dropped += 1
            return
        connection = subflow.connection
        self.timeline.append({
            "t": round(ts - (self.first_ts or ts), 6),
            "connection": connection.index if connection is not None else None,
            "subflow": subflow.index,
            "from": subflow.endpoint(side),
            "signal": signal,
            "detail": detail,
        })

    def _violation(self, connection: Connection, subflow: Subflow, side: int, ts: float,
                   name: str, detail: str) -> None:
        if connection.violation(name):
            self._event(ts, subflow, side, "violation", f"{name}: {detail} (first of its kind)")

    # --- connection-level signals ----------------------------------------------------------
    def _new_connection(self, subflow: Subflow, version: int) -> Connection:
        connection = Connection(len(self.connections), version)
        self.connections.append(connection)
        connection.subflows.append(subflow)
        subflow.connection = connection
        subflow.role = "initial"
        subflow.mptcp_version = version
        return connection

    def _learn_key(self, connection: Connection, side: int, key: int) -> None:
        if not connection.learn_key(side, key):
            return
        token = connection.tokens[side]
        self.tokens[token] = (connection, side)  # type: ignore[index]
        for subflow in self.pending_joins.pop(token, []):  # type: ignore[arg-type]
            self._attach_join(subflow, connection, side)

    def _attach_join(self, subflow: Subflow, connection: Connection, receiver_side: int) -> None:
        """The join's SYN receiver (subflow side 1) is connection side `receiver_side`."""
        subflow.connection = connection
        subflow.conn_side = (1 - receiver_side, receiver_side)
        subflow.mptcp_version = connection.version
        connection.subflows.append(subflow)

    def _mp_capable(self, subflow: Subflow, side: int, option: MpCapable, ts: float, flags: int,
                    rel: int, length: int, index: int) -> None:
        connection = subflow.connection
        if connection is None:
            if subflow.role == "join":
                return
            connection = self._new_connection(subflow, option.version)
        if option.flags & MPCAPABLE_FLAG_CHECKSUM:
            connection.checksums = True
        conn_side = subflow.conn_side[side]
        if flags & _SYN and not flags & _ACK:
            self._event(ts, subflow, side, "MP_CAPABLE", "SYN")
            return
        if flags & _SYN:
            subflow.syn_ack_seen = True
            if option.sender_key is not None:
                self._learn_key(connection, conn_side, option.sender_key)
            self._event(ts, subflow, side, "MP_CAPABLE", "SYN/ACK")
            return
        if option.sender_key is not None:
            self._learn_key(connection, conn_side, option.sender_key)
        if option.receiver_key is not None:
            known = connection.keys[1 - conn_side]
            if known is not None and known != option.receiver_key:
                self._violation(connection, subflow, side, ts, "MP_CAPABLE key mismatch",
                                "the third ACK echoes a key the SYN/ACK did not carry")
            self._learn_key(connection, 1 - conn_side, option.receiver_key)
        if option.data_len is not None:
            # the first data carries its mapping implicitly: DSN IDSN+1, subflow sequence 1
            subflow.mappings[side].append((1, option.data_len, 1, False))
        if rel <= 1 and not length:
            self._event(ts, subflow, side, "MP_CAPABLE", "third ACK")
        elif option.data_len is not None and rel <= 1:
            self._event(ts, subflow, side, "MP_CAPABLE", f"first data ({option.data_len} bytes)")

    def _unknown_mptcp(self, subflow: Subflow, side: int, option: UnknownMptcp, ts: float,
                       flags: int, rel: int, length: int, index: int) -> None:
        if option.subtype == 0 and subflow.connection is None and flags & _SYN:
            self._new_connection(subflow, 0)
            self._event(ts, subflow, side, "MP_CAPABLE",
                        "version 0 (RFC 6824): analysed at the TCP level only")

    def _join_syn(self, subflow: Subflow, side: int, option: MpJoinSyn, ts: float, flags: int,
                  rel: int, length: int, index: int) -> None:
        if subflow.connection is not None or subflow.role == "join":
            return
        subflow.role = "join"
        subflow.backup[side] = option.backup
        subflow.address_ids[side] = option.address_id
        subflow.join.update(token=option.receiver_token, nonce_initiator=option.sender_nonce)
        found = self.tokens.get(option.receiver_token)
        if found is not None:
            self._attach_join(subflow, found[0], found[1])
        else:
            self.pending_joins.setdefault(option.receiver_token, []).append(subflow)
        self._event(ts, subflow, side, "MP_JOIN",
                    f"SYN token 0x{option.receiver_token:08x} address id {option.address_id}"
                    + (" backup" if option.backup else ""))

    def _join_synack(self, subflow: Subflow, side: int, option: MpJoinSynAck, ts: float,
                     flags: int, rel: int, length: int, index: int) -> None:
        subflow.backup[side] = option.backup
        subflow.address_ids[side] = option.address_id
        subflow.join.update(synack_hmac=option.sender_truncated_hmac,
                            nonce_responder=option.sender_nonce)
        self._event(ts, subflow, side, "MP_JOIN", f"SYN/ACK address id {option.address_id}"
                    + (" backup" if option.backup else ""))

    def _join_ack(self, subflow: Subflow, side: int, option: MpJoinAck, ts: float, flags: int,
                  rel: int, length: int, index: int) -> None:
        if "ack_hmac" not in subflow.join:
            subflow.join["ack_hmac"] = option.sender_hmac
            self._event(ts, subflow, side, "MP_JOIN", "third ACK")

    def _add_addr(self, subflow: Subflow, side: int, option: AddAddr, ts: float, flags: int,
                  rel: int, length: int, index: int) -> None:
        where = option.address + (f" port {option.port}" if option.port else "")
        self._event(ts, subflow, side, "ADD_ADDR",
                    f"{'echo ' if option.echo else ''}id {option.address_id} {where}")

    def _remove_addr(self, subflow: Subflow, side: int, option: RemoveAddr, ts: float, flags: int,
                     rel: int, length: int, index: int) -> None:
        self._event(ts, subflow, side, "REMOVE_ADDR",
                    "ids " + ", ".join(str(i) for i in option.address_ids))

    def _mp_prio(self, subflow: Subflow, side: int, option: MpPrio, ts: float, flags: int,
                 rel: int, length: int, index: int) -> None:
        subflow.backup[side] = option.backup
        self._event(ts, subflow, side, "MP_PRIO", "backup" if option.backup else "regular")

    def _mp_fail(self, subflow: Subflow, side: int, option: MpFail, ts: float, flags: int,
                 rel: int, length: int, index: int) -> None:
        connection = subflow.connection
        detail = f"DSN 0x{option.dsn:016x}"
        if connection is not None and connection.version == 1:
            # the DSN is of the data this end received: the other side's
            peer = connection.data[1 - subflow.conn_side[side]]
            relative = (option.dsn - peer.idsn) & ((1 << 64) - 1) if peer.idsn is not None else None
            connection.mp_fail.append({"t": round(ts - self.first_ts, 6), "subflow": subflow.index,
                                       "dsn": option.dsn, "relative_dsn": relative})
            if connection.fallback is None:
                connection.fallback, connection.fallback_ts = "MP_FAIL", ts
            if relative is not None:
                detail += f" (relative {relative})"
        self._event(ts, subflow, side, "MP_FAIL", detail)

    def _fastclose(self, subflow: Subflow, side: int, option: MpFastclose, ts: float, flags: int,
                   rel: int, length: int, index: int) -> None:
        subflow.fastclose = True
        if subflow.connection is not None:
            subflow.connection.fastclose = True
        self._event(ts, subflow, side, "MP_FASTCLOSE", "RST" if flags & _RST else "ACK")

    def _tcprst(self, subflow: Subflow, side: int, option: MpTcpRst, ts: float, flags: int,
                rel: int, length: int, index: int) -> None:
        reason = MPTCPRST_REASONS.get(option.reason, f"reason {option.reason}")
        subflow.reset_reason = reason + (", transient" if option.transient else "")
        self._event(ts, subflow, side, "MP_TCPRST", subflow.reset_reason)

    # --- data level ---------------------------------------------------------------------------
    def _dss(self, connection: Connection, subflow: Subflow, side: int, dss: tuple, ts: float,
             rel: int, length: int, index: int, frame: bytes, payload_start: int,
             size: int) -> None:
        """A DSS, as the tuple testbed.wire.dss_peek gives: data ACK, then the mapping."""
        data_ack, ack64, dsn_wire, dsn64, subflow_seq, data_len, checksum, data_fin = dss
        conn_side = subflow.conn_side[side]
        if data_ack is not None:
            connection.data[1 - conn_side].acknowledge(data_ack, ack64, index)
        if dsn_wire is None:
            return
        data = connection.data[conn_side]
        dsn = data.relative(dsn_wire, dsn64)
        # the mapping's subflow sequence number, relative to the ISN like `rel`
        ssn = rel + (((subflow_seq - rel) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        if data_fin:
            fin_dsn = dsn + data_len - 1 if data_len else dsn
            if data.data_fin_dsn is None:
                data.data_fin_dsn, data.data_fin_ts = fin_dsn, ts
                self._event(ts, subflow, side, "DATA_FIN", f"DSN {fin_dsn}")
        if data_len == 0 and not data_fin:
            if connection.fallback is None:
                connection.fallback, connection.fallback_ts = "infinite mapping", ts
                self._event(ts, subflow, side, "fallback", f"infinite mapping at DSN {dsn}")
            subflow.mappings[side].append((ssn, 1 << 62, dsn, False))
            return
        payload_len = data_len - (1 if data_fin else 0)
        if subflow_seq == 0 and payload_len <= 0:
            return  # a bare DATA_FIN: no payload mapped
        subflow.mappings[side].append((ssn, payload_len, dsn, data_fin))
        if length:
            if rel < ssn or rel + length > ssn + payload_len:
                self._violation(connection, subflow, side, ts, "mapping does not cover its segment",
                                f"segment {rel}..{rel + length}, mapping {ssn}..{ssn + payload_len}")
            if connection.checksums and checksum is not None:
                if ssn == rel and payload_len == length and payload_start + length <= size:
                    connection.checksum_checked += 1
                    payload = frame[payload_start:payload_start + length]
                    if dss_checksum(data.last_dsn, subflow_seq, data_len, payload) != checksum:
                        self._violation(connection, subflow, side, ts, "DSS checksum wrong",
                                        f"mapping at DSN {dsn}")
                else:
                    connection.checksum_not_verifiable += 1
                    if payload_start + length > size:
                        self.counts["payload_cut"] += 1

    def _map_payload(self, connection: Connection, subflow: Subflow, side: int, ts: float,
                     rel: int, length: int, index: int, retransmitted: bool) -> None:
        """Give the segment's payload its DSNs through the mapping that covers it."""
        end = rel + length
        mappings = subflow.mappings[side]
        if mappings:
            ssn, map_len, dsn, _fin = mappings[-1]  # the usual case: the newest mapping
            if not ssn <= rel < ssn + map_len:
                for ssn, map_len, dsn, _fin in reversed(mappings):  # noqa: B007
                    if ssn <= rel < ssn + map_len:
                        break
                else:
                    map_len = 0
            if map_len:
                stop = end if end < ssn + map_len else ssn + map_len
                connection.data[subflow.conn_side[side]].sent_range(
                    dsn + rel - ssn, dsn + stop - ssn, subflow.index, ts, index, retransmitted)
                if stop < end:  # the tail past the mapping (a violation flagged in _dss)
                    subflow.unmapped_bytes += end - stop
                return
        fallen_back = connection.fallback is not None
        if ((fallen_back or (len(connection.subflows) == 1 and subflow.role == "initial"))
                and not any(m[1] == 1 << 62 for m in mappings)):
            # the sender stopped mapping: a fallback without an infinite mapping (RFC 8684 3.7
            # allows it before any data ACK, or after MP_FAIL); the payload follows the last
            # mapping's DSNs
            if mappings:
                ssn, map_len, dsn, _fin = mappings[-1]
                next_dsn = dsn + rel - ssn
            else:
                next_dsn = rel
            if not fallen_back:
                connection.fallback, connection.fallback_ts = "data without a mapping", ts
            self._event(ts, subflow, side, "fallback",
                        f"data without a DSS mapping from subflow sequence {rel} (DSN {next_dsn})")
            mappings.append((rel, 1 << 62, next_dsn, False))
            self._map_payload(connection, subflow, side, ts, rel, length, index, retransmitted)
            return
        subflow.unmapped_bytes += length
        if connection.fallback is None and (subflow.dss_seen or subflow.role == "join"):
            self._violation(connection, subflow, side, ts, "payload without a mapping",
                            f"{length} bytes at subflow sequence {rel}")

    # --- after the last packet ----------------------------------------------------------------
    def finish(self) -> None:
        for token, subflows in self.pending_joins.items():
            for subflow in subflows:
                subflow.join["unmatched_token"] = f"0x{token:08x}"
        for connection in self.connections:
            for subflow, which in connection.check_joins():
                self._violation(connection, subflow, 0, subflow.start_ts, "join HMAC wrong",
                                f"{which} HMAC of subflow {subflow.index}")
            if connection.fallback is not None and connection.version == 1:
                self._data_acked_after_fallback(connection)
        self.timeline.sort(key=lambda event: event["t"])

    @staticmethod
    def _data_acked_after_fallback(connection: Connection) -> None:
        """After a fallback the data level is the subflow's byte stream: extend each data
        direction's data ACK through the infinite mapping by the subflow's own ACKs."""
        for subflow in connection.subflows:
            for side in (0, 1):
                infinite = [m for m in subflow.mappings[side] if m[1] == 1 << 62]
                if not infinite:
                    continue
                ssn, _length, dsn, _fin = infinite[-1]
                direction = subflow.dirs[side]
                acked_payload_end = direction.bytes_acked + 1  # relative, FIN excluded
                if acked_payload_end > ssn:
                    data = connection.data[subflow.conn_side[side]]
                    data.data_ack = max(data.data_ack, dsn + acked_payload_end - ssn)
