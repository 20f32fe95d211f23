"""MP_CAPABLE and MP_JOIN of a connection (both roles): keys, tokens, nonces and HMACs
(RFC 8684 3.1, 3.2), the MP_CAPABLE SYN retry-without-MPTCP rule and the handshake
fallbacks (SYN/ACK or third ACK without MP_CAPABLE).

`Handshake` owns the connection's keys and the checksum choice; it checks what arrives on
opening segments (raising RemoteProtocolError for the connection's one catch site) and builds
the options of opening segments. Creating subflows is the connection's.
"""

from __future__ import annotations

from testbed.mptcp.config import StackConfig
from testbed.mptcp.errors import RemoteProtocolError
from testbed.mptcp.subflow_context import SubflowContext
from testbed.wire.crypto import join_ack_hmac, join_synack_hmac, key_to_token
from testbed.wire.types import (
    MPCAPABLE_FLAG_CHECKSUM,
    MPCAPABLE_FLAG_HMAC_SHA256,
    MPCAPABLE_FLAG_NO_MORE_SUBFLOWS,
    MPTCPRST_MPTCP_ERROR,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    TcpOption,
    TcpSegment,
)


class Handshake:
    """Keys, tokens and the checks and options of MP_CAPABLE / MP_JOIN."""

    def __init__(self, *, config: StackConfig, counters: dict[str, int], local_key: int,
                 is_client: bool) -> None:
        self.config = config
        self.counters = counters
        self.is_client = is_client
        self.local_key = local_key
        self.local_token = key_to_token(local_key)
        self.remote_key: int | None = None
        self.remote_token: int | None = None
        self.checksum = config.checksum  # DSS checksums: either side may ask (flag A)
        self.mptcp_requested = config.mptcp_enabled  # still asking for MPTCP
        # the peer's MP_CAPABLE carried C: no join to its initial address/port (RFC 8684 3.1)
        self.remote_denies_initial_join = False

    @property
    def capable_flags(self) -> int:
        # C on every MP_CAPABLE we send, as Linux does with allow_join_initial_addr_port=0
        deny = 0 if self.config.allow_join_initial_addr_port else MPCAPABLE_FLAG_NO_MORE_SUBFLOWS
        return (MPCAPABLE_FLAG_HMAC_SHA256 | deny
                | (MPCAPABLE_FLAG_CHECKSUM if self.checksum else 0))

    def keys_known(self) -> None:
        assert self.remote_key is not None
        self.remote_token = key_to_token(self.remote_key)

    # ------------------------------------------------------------------ passive side
    def accept_capable_syn(self, syn: TcpSegment) -> bool:
        """A SYN on a listening port: True when it asks for MPTCP v1 as we support it."""
        capable = syn.find(MpCapable)
        if (self.config.mptcp_enabled and type(capable) is MpCapable
                and capable.version == 1
                # B set (extensibility) and not understood: ignore the option (RFC 8684 3.1)
                and capable.flags & 0x5F == MPCAPABLE_FLAG_HMAC_SHA256
                and capable.sender_key is None):
            self.counters["MPCapableSYNRX"] += 1
            self.checksum = self.checksum or bool(capable.flags & MPCAPABLE_FLAG_CHECKSUM)
            self.remote_denies_initial_join = bool(capable.flags & MPCAPABLE_FLAG_NO_MORE_SUBFLOWS)
            return True
        self.mptcp_requested = False
        return False

    def accept_join_syn(self, context: SubflowContext, join: MpJoinSyn, nonce: int) -> None:
        context.is_join = context.mptcp_negotiated = True
        context.backup_remote = join.backup
        context.remote_address_id = join.address_id
        context.remote_nonce = join.sender_nonce
        context.local_nonce = nonce

    # ------------------------------------------------------------------ options we send
    def syn_options(self, context: SubflowContext) -> list[TcpOption]:
        """The MPTCP option of our SYN or SYN/ACK on this subflow."""
        subflow = context.tcp
        if context.is_join:
            if subflow.is_passive:
                assert self.remote_key is not None
                truncated = join_synack_hmac(self.local_key, self.remote_key,
                                             context.local_nonce, context.remote_nonce)
                return [MpJoinSynAck(backup=context.backup_local,
                                     address_id=context.local_address_id,
                                     sender_truncated_hmac=truncated,
                                     sender_nonce=context.local_nonce)]
            assert self.remote_token is not None
            return [MpJoinSyn(backup=context.backup_local, address_id=context.local_address_id,
                              receiver_token=self.remote_token,
                              sender_nonce=context.local_nonce)]
        if subflow.is_passive:
            if not context.mptcp_negotiated:
                return []
            return [MpCapable(version=1, flags=self.capable_flags, sender_key=self.local_key)]
        if not self.config.mptcp_enabled:
            return []
        if subflow.syn_transmissions > 1 + self.config.syn_retries_before_fallback:
            if self.mptcp_requested:
                self.mptcp_requested = False
                self.counters["MPCapableSYNTXDrop"] += 1
            return []
        self.counters["MPCapableSYNTX"] += 1
        return [MpCapable(version=1, flags=self.capable_flags)]

    def join_third_ack(self, context: SubflowContext) -> MpJoinAck:
        assert self.remote_key is not None
        return MpJoinAck(join_ack_hmac(self.local_key, self.remote_key, context.local_nonce,
                                       context.remote_nonce))

    def capable_third_ack(self) -> MpCapable:
        return MpCapable(version=1, flags=self.capable_flags, sender_key=self.local_key,
                         receiver_key=self.remote_key)

    def capable_first_data(self, length: int, checksum: int | None) -> MpCapable:
        """MP_CAPABLE on the client's first data segment (reliable key delivery)."""
        return MpCapable(version=1, flags=self.capable_flags, sender_key=self.local_key,
                         receiver_key=self.remote_key, data_len=length, checksum=checksum)

    # ------------------------------------------------------------------ what arrives
    def check_synack(self, context: SubflowContext, segment: TcpSegment) -> None:
        """Our SYN was answered; raises RemoteProtocolError when a join must be reset."""
        if context.is_join:
            join = segment.find(MpJoinSynAck)
            if join is None:
                raise RemoteProtocolError("SYN/ACK of an MP_JOIN subflow without MP_JOIN",
                                          reason=MPTCPRST_MPTCP_ERROR, subflow_rejected=True)
            assert self.remote_key is not None
            expected = join_synack_hmac(self.remote_key, self.local_key, join.sender_nonce,
                                        context.local_nonce)
            if expected != join.sender_truncated_hmac:
                self.counters["MPJoinSynAckHMacFailure"] += 1
                raise RemoteProtocolError("MP_JOIN SYN/ACK HMAC mismatch",
                                          reason=MPTCPRST_MPTCP_ERROR, subflow_rejected=True)
            self.counters["MPJoinSynAckRx"] += 1
            context.remote_nonce = join.sender_nonce
            context.remote_address_id = join.address_id
            context.backup_remote = join.backup
            return
        capable = segment.find(MpCapable)
        if (self.mptcp_requested and type(capable) is MpCapable and capable.version == 1
                and capable.sender_key is not None):
            self.counters["MPCapableSYNACKRX"] += 1
            self.checksum = self.checksum or bool(capable.flags & MPCAPABLE_FLAG_CHECKSUM)
            self.remote_key = capable.sender_key
            self.remote_denies_initial_join = bool(capable.flags & MPCAPABLE_FLAG_NO_MORE_SUBFLOWS)
            context.mptcp_negotiated = True
            return
        if self.mptcp_requested:
            self.counters["MPCapableFallbackSYNACK"] += 1

    def check_third_ack(self, context: SubflowContext, segment: TcpSegment) -> None:
        """Our SYN/ACK was acknowledged; raises RemoteProtocolError on a bad join HMAC or a
        key that is not ours."""
        if context.is_join:
            join = segment.find(MpJoinAck)
            assert self.remote_key is not None
            expected = join_ack_hmac(self.remote_key, self.local_key, context.remote_nonce,
                                     context.local_nonce)
            if join is None or join.sender_hmac != expected:
                self.counters["MPJoinAckHMacFailure"] += 1
                raise RemoteProtocolError("MP_JOIN third ACK missing or HMAC mismatch",
                                          reason=MPTCPRST_MPTCP_ERROR, subflow_rejected=True)
            self.counters["MPJoinAckRx"] += 1
            return
        if not context.mptcp_negotiated:
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
        context.mptcp_negotiated = False
