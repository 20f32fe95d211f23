"""Congestion controllers, chosen by name from ONE explicit registry."""

from __future__ import annotations

from testbed.mptcp.cc.base import CongestionControl, CouplingGroup
from testbed.mptcp.cc.coupled import (
    BaliaCongestionControl,
    LiaCongestionControl,
    OliaCongestionControl,
)
from testbed.mptcp.cc.reno import RenoCongestionControl

CONGESTION_CONTROLLERS: dict[str, type[CongestionControl]] = {
    "reno": RenoCongestionControl,
    "lia": LiaCongestionControl,
    "olia": OliaCongestionControl,
    "balia": BaliaCongestionControl,
}


def create_congestion_control(name: str, *, mss: int, initial_window_segments: int,
                              group: CouplingGroup, hystart: bool = False) -> CongestionControl:
    try:
        cls = CONGESTION_CONTROLLERS[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; "
                         f"known: {sorted(CONGESTION_CONTROLLERS)}") from None
    return cls(mss=mss, initial_window_segments=initial_window_segments, group=group,
               hystart=hystart)


__all__ = ["CONGESTION_CONTROLLERS", "CongestionControl", "CouplingGroup",
           "create_congestion_control"]
