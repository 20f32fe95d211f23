"""MP_CAPABLE and MP_JOIN handshakes of a connection (both roles), as a mixin of Connection.

Kept apart from the data path so each reads on its own: here are the keys, tokens, nonces and
HMACs (RFC 8684 3.1, 3.2), the MP_CAPABLE SYN retry-without-MPTCP rule and the handshake
fallbacks (SYN/ACK or third ACK without MP_CAPABLE). Everything else is in connection.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from testbed.mptcp.errors import LocalProtocolError, RemoteProtocolError
from testbed.mptcp.mapping import MappingReceiver
from testbed.wire.crypto import join_ack_hmac, join_synack_hmac
from testbed.wire.types import (
    MPCAPABLE_FLAG_CHECKSUM,
    MPCAPABLE_FLAG_HMAC_SHA256,
    MPTCPRST_MPTCP_ERROR,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    Packet,
    TcpOption,
    TcpSegment,
)

if TYPE_CHECKING:
    from testbed.mptcp.subflow import Subflow

MPTCP = "mptcp"


class HandshakeMixin:
    """Opening subflows and the MP_CAPABLE / MP_JOIN option exchange."""

    def start_active(self, now: float) -> Subflow:
        subflow = self._new_subflow(self.local_address, self.local_port, self.remote_address,
                                    self.remote_port, now)
        subflow.open_active(now)
        return subflow

    def start_passive(self, subflow_syn: Packet, now: float) -> Subflow:
        syn = subflow_syn.tcp
        subflow = self._new_subflow(self.local_address, self.local_port, self.remote_address,
                                    self.remote_port, now)
        subflow.is_passive = True
        capable = syn.find(MpCapable)
        if (self.config.mptcp_enabled and type(capable) is MpCapable
                and capable.version == 1 and capable.flags & 0x1F == MPCAPABLE_FLAG_HMAC_SHA256
                and capable.sender_key is None):
            self.counters["MPCapableSYNRX"] += 1
            self.checksum = self.checksum or bool(capable.flags & MPCAPABLE_FLAG_CHECKSUM)
            subflow.rx = MappingReceiver(checksum=self.checksum)
            subflow.mptcp = True
        else:
            self.mptcp_requested = False
        subflow.open_passive(syn, now)
        return subflow

    def can_open_subflow(self) -> bool:
        alive = [s for s in self.subflows if not s.is_closed]
        data_fin_acked = self.data_fin_dsn is not None and self.snd_data_una > self.data_fin_dsn
        return (self.mode == MPTCP and self.closed_reason is None and not data_fin_acked
                and len(alive) < self.config.max_subflows and self.remote_token is not None)

    def open_subflow(self, local_address: str, remote_address: str, remote_port: int, *,
                     now: float, backup: bool = False) -> Subflow:
        """Start an MP_JOIN subflow (used by path managers, or directly by a test)."""
        if self.mode != MPTCP:
            raise LocalProtocolError(f"open_subflow: connection is {self.mode}, not mptcp")
        if local_address not in self.host.addresses:
            raise LocalProtocolError(f"open_subflow: {local_address} is not an address of "
                                     f"this host {self.host.addresses}")
        port = self.host.allocate_port(local_address, remote_address, remote_port)
        subflow = self._new_subflow(local_address, port, remote_address, remote_port, now)
        subflow.is_join = True
        subflow.mptcp = True
        subflow.backup_local = backup
        subflow.local_nonce = self.rng.getrandbits(32)
        subflow.local_address_id = self._local_address_id(local_address)
        self.counters["MPJoinSynTx"] += 1
        subflow.open_active(now)
        return subflow

    def accept_join(self, packet: Packet, join: MpJoinSyn, now: float) -> Subflow | None:
        """A SYN with MP_JOIN carrying our token arrived; None when refused."""
        self.counters["MPJoinSynRx"] += 1
        alive = [s for s in self.subflows if not s.is_closed]
        if (self.mode != MPTCP or self.closed_reason is not None or self.remote_key is None
                or len(alive) >= self.config.max_subflows):
            return None
        syn = packet.tcp
        subflow = self._new_subflow(packet.dst, syn.dst_port, packet.src, syn.src_port, now)
        subflow.is_join = True
        subflow.is_passive = True
        subflow.mptcp = True
        subflow.backup_remote = join.backup
        subflow.remote_address_id = join.address_id
        subflow.remote_nonce = join.sender_nonce
        subflow.local_nonce = self.rng.getrandbits(32)
        subflow.local_address_id = self._local_address_id(packet.dst)
        subflow.open_passive(syn, now)
        return subflow

    def handshake_options(self, subflow: Subflow) -> list[TcpOption]:
        flags = MPCAPABLE_FLAG_HMAC_SHA256 | (MPCAPABLE_FLAG_CHECKSUM if self.checksum else 0)
        if subflow.is_join:
            if subflow.is_passive:
                assert self.remote_key is not None
                truncated = join_synack_hmac(self.local_key, self.remote_key,
                                             subflow.local_nonce, subflow.remote_nonce)
                return [MpJoinSynAck(backup=subflow.backup_local,
                                     address_id=subflow.local_address_id,
                                     sender_truncated_hmac=truncated,
                                     sender_nonce=subflow.local_nonce)]
            assert self.remote_token is not None
            return [MpJoinSyn(backup=subflow.backup_local, address_id=subflow.local_address_id,
                              receiver_token=self.remote_token,
                              sender_nonce=subflow.local_nonce)]
        if subflow.is_passive:
            if not subflow.mptcp:
                return []
            return [MpCapable(version=1, flags=flags, sender_key=self.local_key)]
        if not self.config.mptcp_enabled:
            return []
        if subflow.syn_transmissions > 1 + self.config.syn_retries_before_fallback:
            if self.mptcp_requested:
                self.mptcp_requested = False
                self.counters["MPCapableSYNTXDrop"] += 1
            return []
        self.counters["MPCapableSYNTX"] += 1
        return [MpCapable(version=1, flags=flags)]

    def on_synack(self, subflow: Subflow, segment: TcpSegment) -> None:
        if subflow.is_join:
            join = segment.find(MpJoinSynAck)
            if join is None:
                self.subflow_rejected = True
                raise RemoteProtocolError("SYN/ACK of an MP_JOIN subflow without MP_JOIN",
                                          reason=MPTCPRST_MPTCP_ERROR)
            assert self.remote_key is not None
            expected = join_synack_hmac(self.remote_key, self.local_key, join.sender_nonce,
                                        subflow.local_nonce)
            if expected != join.sender_truncated_hmac:
                self.counters["MPJoinSynAckHMacFailure"] += 1
                self.subflow_rejected = True
                raise RemoteProtocolError("MP_JOIN SYN/ACK HMAC mismatch",
                                          reason=MPTCPRST_MPTCP_ERROR)
            self.counters["MPJoinSynAckRx"] += 1
            subflow.remote_nonce = join.sender_nonce
            subflow.remote_address_id = join.address_id
            subflow.backup_remote = join.backup
            return
        capable = segment.find(MpCapable)
        if (self.mptcp_requested and type(capable) is MpCapable and capable.version == 1
                and capable.sender_key is not None):
            self.counters["MPCapableSYNACKRX"] += 1
            self.checksum = self.checksum or bool(capable.flags & MPCAPABLE_FLAG_CHECKSUM)
            subflow.rx = MappingReceiver(checksum=self.checksum)
            self.remote_key = capable.sender_key
            subflow.mptcp = True
            return
        if self.mptcp_requested:
            self.counters["MPCapableFallbackSYNACK"] += 1

    def on_third_ack(self, subflow: Subflow, segment: TcpSegment) -> None:
        if subflow.is_join:
            join = segment.find(MpJoinAck)
            assert self.remote_key is not None
            expected = join_ack_hmac(self.remote_key, self.local_key, subflow.remote_nonce,
                                     subflow.local_nonce)
            if join is None or join.sender_hmac != expected:
                self.counters["MPJoinAckHMacFailure"] += 1
                self.subflow_rejected = True
                raise RemoteProtocolError("MP_JOIN third ACK missing or HMAC mismatch",
                                          reason=MPTCPRST_MPTCP_ERROR)
            self.counters["MPJoinAckRx"] += 1
            return
        if not subflow.mptcp:
            return
        capable = segment.find(MpCapable)
        if type(capable) is MpCapable and capable.sender_key is not None:
            if capable.receiver_key != self.local_key:
                raise RemoteProtocolError("MP_CAPABLE third ACK echoes a key that is not ours",
                                          whole_connection=True)
            self.counters["MPCapableACKRX"] += 1
            self.remote_key = capable.sender_key
            return
        self.counters["MPCapableFallbackACK"] += 1
        subflow.mptcp = False
