"""The bundled stack's connection seen through the kernel endpoint's eyes.

`observe(connection)` builds the same `Observation` (MPTCP_INFO-like connection counters,
per-subflow tcp_info-like counters) that `sampler.take_observation` reads from a kernel
socket, so the python endpoint reuses `SubflowTracker` and `TimeseriesWriter` unchanged and
its reports and CSV files have exactly the kernel endpoint's fields and columns.
"""

from __future__ import annotations

from testbed.endpoints.kernel_info import (
    MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED,
    TCP_CLOSE,
    MptcpInfo,
    SubflowSnapshot,
    TcpCounters,
)
from testbed.endpoints.sampler import Observation
from testbed.mptcp.connection import Connection
from testbed.mptcp.subflow import Subflow
from testbed.mptcp.tcp_state import TcpState
from testbed.net.topo import host_port
from testbed.wire.crypto import key_to_idsn

TCP_STATE_NUMBERS = {  # include/net/tcp_states.h
    TcpState.ESTABLISHED: 1, TcpState.SYN_SENT: 2, TcpState.SYN_RECEIVED: 3,
    TcpState.FIN_WAIT_1: 4, TcpState.FIN_WAIT_2: 5, TcpState.TIME_WAIT: 6,
    TcpState.CLOSED: TCP_CLOSE, TcpState.CLOSE_WAIT: 8, TcpState.LAST_ACK: 9,
    TcpState.CLOSING: 11,
}


def subflow_counters(subflow: Subflow, delivery_rate_bps: int | None = None) -> TcpCounters:
    """tcp_info's byte counters: sent includes retransmissions; acked excludes SYN and FIN.

    Telemetry comes from the subflow's own state: cwnd is the congestion controller's
    window in bytes (segments = bytes // MSS, as tcpi_snd_cwnd), in flight is snd_nxt -
    snd_una (the stack keeps no SACK/lost marks to subtract, unlike tcp_packets_in_flight),
    and the delivery rate is the caller's estimate (the kernel's tcpi_delivery_rate is
    per-ACK; the stack has no such sampler)."""
    acked = max(subflow.snd_una - 1, 0)
    first_time = subflow.bytes_sent - subflow.bytes_retrans
    srtt = subflow.rtt.srtt
    mss = max(subflow.mss, 1)
    return TcpCounters(
        state=TCP_STATE_NUMBERS.get(subflow.state, TCP_CLOSE),
        bytes_sent=subflow.bytes_sent,
        bytes_acked=min(acked, first_time),
        bytes_received=subflow.bytes_received,
        bytes_retrans=subflow.bytes_retrans,
        total_retrans=subflow.total_retrans,
        rtt_us=0 if srtt is None else round(srtt * 1e6),
        snd_cwnd=int(subflow.cc.cwnd // mss),
        cwnd_bytes=int(subflow.cc.cwnd),
        in_flight_bytes=max(subflow.in_flight(), 0),
        delivery_rate_bps=delivery_rate_bps,
    )


def mptcp_info(connection: Connection) -> MptcpInfo | None:
    """MPTCP_INFO's fields, or None once the connection is not MPTCP (as the kernel's
    EOPNOTSUPP after a fallback)."""
    if connection.mode != "mptcp":
        return None
    open_subflows = [c.tcp for c in connection.live_subflows if not c.tcp.is_closed]
    created = [c.tcp for c in connection.created_subflows]
    sent = sum(s.bytes_sent for s in created)
    retrans = sum(s.bytes_retrans for s in created)
    return MptcpInfo(
        subflows=max(len(open_subflows) - 1, 0),
        add_addr_signal=len(connection.signalling.announced),
        add_addr_accepted=len(connection.remote_addresses),
        subflows_max=connection.config.max_subflows,
        flags=MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED if connection.remote_key is not None else 0,
        token=connection.local_token,
        write_seq=connection.data.snd_data_nxt & 0xFFFFFFFFFFFFFFFF,
        snd_una=connection.data.snd_data_una & 0xFFFFFFFFFFFFFFFF,
        rcv_nxt=connection.data.data_reassembly.next & 0xFFFFFFFFFFFFFFFF,
        local_addr_used=len({s.local_address for s in open_subflows}),
        local_addr_max=len(connection.local_addresses),
        csum_enabled=bool(connection.checksum),
        retransmits=sum(s.total_retrans for s in created),
        bytes_retrans=retrans,
        bytes_sent=sent,
        bytes_received=sum(s.bytes_received for s in created),
        bytes_acked=(connection.data.snd_data_una - key_to_idsn(connection.local_key) - 1)
        & 0xFFFFFFFFFFFFFFFF,
        subflows_total=len(open_subflows),
    )


class StackObserver:
    """Observations of one connection; a closed subflow appears in one more sample only,
    so its final totals are recorded and it is then reported as not open at the end.

    The delivery rate of a subflow is estimated here, at the sampling interval: bytes newly
    acked since the previous observation divided by the time between them (none on the
    first observation of a subflow). Nothing is added to the stack's per-packet path."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._closed_reported: set[int] = set()
        self._last_acked: dict[int, tuple[float, int]] = {}  # id(subflow) -> (time, snd_una)

    def _delivery_rate(self, subflow: Subflow, now: float | None) -> int | None:
        if now is None:
            return None
        previous = self._last_acked.get(id(subflow))
        self._last_acked[id(subflow)] = (now, subflow.snd_una)
        if previous is None or now <= previous[0]:
            return None
        return round(max(subflow.snd_una - previous[1], 0) / (now - previous[0]))

    def observe(self, now: float | None = None) -> Observation:
        """One observation; ``now`` (seconds, any origin) enables the delivery-rate estimate."""
        snapshots = []
        for subflow in (c.tcp for c in self.connection.created_subflows):
            if subflow.is_closed:
                if id(subflow) in self._closed_reported:
                    continue
                self._closed_reported.add(id(subflow))
            snapshots.append(SubflowSnapshot(
                local=host_port(subflow.local_address, subflow.local_port),
                remote=host_port(subflow.remote_address, subflow.remote_port),
                counters=subflow_counters(subflow, self._delivery_rate(subflow, now))))
        return Observation(mptcp_info=mptcp_info(self.connection), subflows=snapshots)
