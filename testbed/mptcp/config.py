"""StackConfig: every tunable of the bundled stack, with Linux-like defaults where it matters.

Unknown keys are an error (no silently swallowed misspellings); values are validated when the
object is built so a bad experiment file fails before any packet is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

CONGESTION_CONTROLS = ("reno", "lia", "olia", "balia")
SCHEDULERS = ("lowest_rtt", "round_robin", "redundant")
PATH_MANAGERS = ("fullmesh", "ndiffports", "announce", "none")


@dataclass(slots=True)
class StackConfig:
    mptcp_enabled: bool = True
    checksum: bool = False  # net.mptcp.checksum_enabled defaults to 0
    congestion_control: str = "reno"
    # HyStart++ (RFC 9406) in the initial slow start of every controller: leave it when the
    # round trip grows instead of at the first burst of losses (testbed/mptcp/cc/hystart.py)
    hystart: bool = True
    scheduler: str = "lowest_rtt"
    path_manager: str = "fullmesh"
    ndiffports: int = 2
    mss: int = 1460
    send_buffer: int = 4 * 1024 * 1024
    recv_buffer: int = 4 * 1024 * 1024
    delayed_ack_ms: float = 40.0  # Linux TCP_DELACK_MIN
    max_subflows: int = 8
    add_addr_timeout_s: float = 120.0  # net.mptcp.add_addr_timeout
    add_addr_max_retransmits: int = 1  # Linux resends an unechoed ADD_ADDR once
    syn_retries_before_fallback: int = 2  # net.mptcp.syn_retrans_before_tcp_fallback
    syn_retries: int = 6  # net.ipv4.tcp_syn_retries
    max_retransmits: int = 15  # net.ipv4.tcp_retries2
    initial_rto: float = 1.0  # RFC 6298
    min_rto: float = 0.2  # Linux TCP_RTO_MIN
    max_rto: float = 120.0  # Linux TCP_RTO_MAX
    initial_cwnd_segments: int = 10  # RFC 6928
    time_wait_s: float = 60.0  # Linux TCP_TIMEWAIT_LEN
    sack: bool = True
    timestamps: bool = True
    window_scaling: bool = True
    dupack_threshold: int = 3
    # local addresses whose subflows the path manager opens as backup (MP_JOIN B bit), like
    # a Linux `ip mptcp endpoint ... subflow backup`
    backup_addresses: tuple[str, ...] = ()
    # consecutive RTOs without progress before a subflow is stale and its data goes on the
    # others (Linux net.mptcp.stale_loss_cnt, default 4 there; 1 keeps the stack's original rule)
    stale_loss_count: int = 1
    # False: set the MP_CAPABLE C flag (RFC 8684 3.1) on our MP_CAPABLE options, asking the
    # peer not to join our initial address/port (Linux net.mptcp.allow_join_initial_addr_port)
    allow_join_initial_addr_port: bool = True

    def __post_init__(self) -> None:
        choices = {"congestion_control": CONGESTION_CONTROLS, "scheduler": SCHEDULERS,
                   "path_manager": PATH_MANAGERS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"StackConfig.{name}: {value!r} is not one of {allowed}")
        positive = ("mss", "send_buffer", "recv_buffer", "max_subflows", "initial_rto",
                    "min_rto", "max_rto", "initial_cwnd_segments", "dupack_threshold",
                    "ndiffports", "stale_loss_count")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"StackConfig.{name}: must be > 0, got {getattr(self, name)!r}")
        non_negative = ("delayed_ack_ms", "add_addr_timeout_s", "syn_retries_before_fallback",
                        "syn_retries", "max_retransmits", "time_wait_s",
                        "add_addr_max_retransmits")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"StackConfig.{name}: must be >= 0, got {getattr(self, name)!r}")
        if not 88 <= self.mss <= 65495:
            raise ValueError(f"StackConfig.mss: {self.mss} outside 88..65495")
        if self.min_rto > self.max_rto:
            raise ValueError("StackConfig.min_rto: larger than max_rto")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StackConfig:
        """Build from a parsed experiment file; an unknown key names itself in the error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"StackConfig: unknown key(s) {unknown}; known: {sorted(known)}")
        if "backup_addresses" in values:
            values = {**values, "backup_addresses": tuple(values["backup_addresses"])}
        return cls(**values)

    @property
    def window_shift(self) -> int:
        """Our window scale shift: the smallest that lets recv_buffer fit 16 bits."""
        if not self.window_scaling:
            return 0
        shift = 0
        while (self.recv_buffer >> shift) > 0xFFFF and shift < 14:
            shift += 1
        return shift
