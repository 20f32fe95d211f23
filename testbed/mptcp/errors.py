"""The stack's two error families (h11 style).

LocalProtocolError: the application misused the API (send after close, unknown subflow, ...).
RemoteProtocolError: the peer (or a middlebox) broke the protocol. It carries the MP_TCPRST
reason so that the one catch site in the connection can turn it into the right RST.
"""

from __future__ import annotations

from testbed.wire.types import MPTCPRST_MPTCP_ERROR


class LocalProtocolError(Exception):
    """The API was used in a way the protocol state does not allow."""


class RemoteProtocolError(Exception):
    """The peer misbehaved; `reason` is the MP_TCPRST reason code to reset with.

    `whole_connection` says whether the error poisons the whole MPTCP connection (for
    example a bad key on the initial subflow) rather than just the subflow it arrived on.
    `subflow_rejected` says the error refuses a subflow (a join, or the initial subflow once
    joins exist): the connection's outcome then reports subflow-rejected.
    """

    def __init__(self, message: str, *, reason: int = MPTCPRST_MPTCP_ERROR,
                 whole_connection: bool = False, subflow_rejected: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.whole_connection = whole_connection
        self.subflow_rejected = subflow_rejected
