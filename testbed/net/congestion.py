"""TCP congestion control of kernel endpoints, set per route (spec `[traffic] congestion_control`).

Why this exists: the IETF 80 demo shows traffic moving away from a lossy path, which only
happens with a loss-based congestion controller (the 2011 demo used MPTCP's coupled LIA;
upstream Linux MPTCP runs an uncoupled controller per subflow). A machine whose default is
bbr (as this project's development machine is) ignores 1% random loss, and a new network
namespace inherits that default. A non-init namespace may only switch its default to an
algorithm listed in the host's tcp_allowed_congestion_control, so the demo does not touch
sysctls: it sets the per-route `congctl` metric (RTAX_CC_ALGO) on every unicast route of the
endpoint namespaces. The kernel applies that metric when a socket connects (tcp_connect_init)
and when a listener creates a child, which covers the initial subflow and every MP_JOIN.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.errors import EnvironmentProblem

RT_TABLE_LOCAL = 255
RTN_UNICAST = 1
# attributes of a dumped route that `replace` must send again to describe the same route
_KEEP_ATTRS = ("RTA_DST", "RTA_GATEWAY", "RTA_OIF", "RTA_PREFSRC", "RTA_PRIORITY", "RTA_TABLE")


def available_algorithms() -> tuple[str, ...]:
    """Congestion controllers this kernel offers (loaded modules)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as handle:
            return tuple(handle.read().split())
    except OSError:
        return ()


def _route_kwargs(route: Any) -> dict[str, Any]:
    """The `replace` arguments that name this dumped route exactly."""
    kwargs: dict[str, Any] = {
        "family": route["family"], "dst_len": route["dst_len"], "tos": route["tos"],
        "proto": route["proto"], "scope": route["scope"], "type": route["type"],
    }
    names = {"RTA_DST": "dst", "RTA_GATEWAY": "gateway", "RTA_OIF": "oif", "RTA_PREFSRC": "prefsrc",
             "RTA_PRIORITY": "priority", "RTA_TABLE": "table"}
    for attr in _KEEP_ATTRS:
        value = route.get_attr(attr)
        if value is not None:
            kwargs[names[attr]] = value
    if "dst" not in kwargs:
        kwargs["dst"] = "0.0.0.0" if route["family"] == socket.AF_INET else "::"
    return kwargs


def _unicast_routes(ipr: IPRoute) -> list[Any]:
    """The unicast routes of both families outside the local table (the routes sockets use),
    without IPv6 link-local ones: no subflow uses them, and every interface has the same
    fe80::/64, which an IPv6 route replace (matched without the device) would merge."""
    return [r for family in (socket.AF_INET, socket.AF_INET6) for r in ipr.route("dump", family=family)
            if r["type"] == RTN_UNICAST and r.get_attr("RTA_TABLE") != RT_TABLE_LOCAL
            and not str(r.get_attr("RTA_DST") or "").lower().startswith("fe80:")]


def set_route_congestion_control(netns: str, algorithm: str) -> int:
    """Set `congctl ALGORITHM` on every unicast route (IPv4 and IPv6) of netns; returns how many.

    Reads the routes back and raises EnvironmentProblem naming the namespace if any route
    does not carry the algorithm afterwards.
    """
    if algorithm not in available_algorithms():
        raise EnvironmentProblem(f"congestion control {algorithm!r} is not available in this kernel "
                                 f"(available: {', '.join(available_algorithms()) or 'unknown'})")
    changed = 0
    try:
        with IPRoute(netns=netns) as ipr:
            for route in _unicast_routes(ipr):
                ipr.route("replace", **_route_kwargs(route),
                          metrics={"RTAX_CC_ALGO": algorithm})
                changed += 1
            missing = [r.get_attr("RTA_DST") or "default" for r in _unicast_routes(ipr)
                       if route_algorithm(r) != algorithm]
    except NetlinkError as exc:
        raise EnvironmentProblem(f"setting congctl {algorithm} on the routes of {netns}: {exc}") from exc
    if missing:
        raise EnvironmentProblem(f"routes in {netns} without congctl {algorithm} after setting it: "
                                 f"{', '.join(missing)}")
    return changed


def route_algorithm(route: Any) -> str | None:
    """The congctl metric of a dumped route, or None."""
    metrics = route.get_attr("RTA_METRICS")
    if metrics is None:
        return None
    return metrics.get_attr("RTAX_CC_ALGO")

