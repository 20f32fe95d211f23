"""NewReno window arithmetic (RFC 5681): the base class already is Reno."""

from __future__ import annotations

from testbed.mptcp.cc.base import CongestionControl


class RenoCongestionControl(CongestionControl):
    name = "reno"
