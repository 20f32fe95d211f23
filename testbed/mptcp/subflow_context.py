"""The MPTCP state of one subflow, owned by its connection (Linux: mptcp_subflow_context).

The TCP subflow (`tcp`) knows nothing of MPTCP; everything MPTCP about it lives here: the
mapping receiver, the join handshake values, the backup flags, whether it may carry data, and
what was signalled on it. The connection keeps one context per subflow and hands `options`
itself to the subflow as its `OptionProvider` whenever the subflow sends: the context asks
the connection's option writer for the options of this subflow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from testbed.mptcp.mapping import MappingReceiver
from testbed.mptcp.scoreboard import SentSegment
from testbed.mptcp.subflow import Subflow
from testbed.wire.types import TcpOption


class SubflowOptionWriter(Protocol):
    """The connection's builder of outgoing MPTCP options (option_writer.OptionWriter)."""

    def handshake_options(self, context: SubflowContext) -> list[TcpOption]: ...

    def ack_options(self, context: SubflowContext, budget: int) -> list[TcpOption]: ...

    def data_options(self, context: SubflowContext, segment: SentSegment,
                     budget: int) -> list[TcpOption]: ...

    receive_window: Callable[[], int]


@dataclass(slots=True, eq=False)
class SubflowContext:
    """One subflow of an MPTCP connection: the TCP subflow and its MPTCP state."""

    tcp: Subflow
    mapping_receiver: MappingReceiver
    writer: SubflowOptionWriter
    is_join: bool = False  # opened with MP_JOIN (not the initial MP_CAPABLE subflow)
    mptcp_negotiated: bool = False  # MPTCP options were agreed on this subflow
    local_nonce: int = 0
    remote_nonce: int = 0
    local_address_id: int = 0
    remote_address_id: int = 0
    backup_local: bool = False  # we asked the peer to treat it as backup
    backup_remote: bool = False  # the peer asked us to
    fully_established: bool = False  # the peer is known to have our keys / join HMAC
    data_ready: bool = False  # the scheduler may put data on it
    # an RTO fired with no progress since: the scheduler avoids it while another subflow
    # works (Linux mptcp_subflow_context.stale)
    stale: bool = False
    pending_prio: bool | None = None  # MP_PRIO to send on this subflow
    # (dsn, length) the subflow delivered but the peer has not acknowledged at data level
    acked_unconfirmed: deque[tuple[int, int]] = field(default_factory=deque)

    @property
    def backup(self) -> bool:
        return self.backup_local or self.backup_remote

    # --- the OptionProvider the TCP subflow asks while it builds a segment: the writer's
    # methods bound to this context once (asked for every segment: no hop through here)
    ack_options: Callable[[int], list[TcpOption]] = field(init=False)
    data_options: Callable[[SentSegment, int], list[TcpOption]] = field(init=False)
    receive_window: Callable[[], int] = field(init=False)

    def __post_init__(self) -> None:
        self.ack_options = partial(self.writer.ack_options, self)
        self.data_options = partial(self.writer.data_options, self)
        self.receive_window = self.writer.receive_window

    def handshake_options(self) -> list[TcpOption]:
        return self.writer.handshake_options(self)
