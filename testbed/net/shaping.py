"""Link shaping through pyroute2 (netlink), never the `tc` command.

One `InterfaceShaper` owns the egress qdisc tree of one interface and the full parameter set
that tree implements; every live change sends all parameters again to the SAME qdiscs and
classes (`change`, never delete-and-add), so traffic keeps flowing and queues are kept.

Trees, by backend:
- rate=htb:  root htb 1: -> class 1:1 (rate, ceil) -> leaf  pfifo 10: (queue)   [no netem]
                                                      -> leaf  netem 10: (delay, jitter, loss, limit)
- rate=tbf:  root tbf 1: (rate, burst, limit)  [no netem]
             root netem 1: (delay, jitter, loss, limit, rate)  [with netem]

Loss without netem is an nftables rule (testbed.net.loss); delay without netem is the
userspace delay stage in a bump (testbed.inline), which holds as many frames as netem's limit
(`held_packets_limit`, one function for both). Unshaped (rate None) links that still need a
tree get UNSHAPED_RATE_MBIT, far above what veths carry here. The simulator-only parameters
(queue_bytes, reorder) are refused rather than ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.errors import EnvironmentProblem, SpecError
from testbed.net.params import MTU_BYTES, UNSHAPED_RATE_MBIT, LinkParams, held_packets_limit

ROOT = 0x10000  # 1:
CLASS = 0x10001  # 1:1
LEAF = 0x100000  # 10:


@dataclass(frozen=True, slots=True)
class Backends:
    """Which mechanism implements each link parameter (chosen by `testbed doctor` probes)."""

    rate: str  # "htb" | "tbf"
    loss: str  # "netem" | "nft"
    delay: str  # "netem" | "userspace"

    def as_dict(self) -> dict[str, str]:
        return {"rate": self.rate, "loss": self.loss, "delay": self.delay}

    @property
    def netem(self) -> bool:
        return self.delay == "netem"


def _burst_bytes(rate_mbit: float) -> int:
    """One millisecond at line rate, at least two full frames: keeps HTB accurate at 100 Mbit/s
    without letting bursts defeat the queue."""
    return max(2 * MTU_BYTES, int(rate_mbit * 1e6 / 8 / 1000))


def _rate_bps(rate_mbit: float) -> int:
    return int(rate_mbit * 1_000_000 / 8)  # pyroute2 takes bytes per second for int rates


class InterfaceShaper:
    """The egress tree of one interface in one network namespace."""

    def __init__(self, netns: str, ifname: str, backends: Backends) -> None:
        self.netns = netns
        self.ifname = ifname
        self.backends = backends
        self.params: LinkParams | None = None

    def _index(self, ipr: IPRoute) -> int:
        found = ipr.link_lookup(ifname=self.ifname)
        if not found:
            raise EnvironmentProblem(f"shaping: no interface {self.ifname} in namespace {self.netns}")
        return found[0]

    def _netem_args(self, params: LinkParams) -> dict[str, Any]:
        return {
            "delay": int(params.delay_ms * 1000),  # microseconds, as an integer
            "jitter": int(params.jitter_ms * 1000),
            "loss": params.loss_pct,
            "limit": held_packets_limit(params),  # queue + in flight, as the delay stage
        }

    def _send(self, command: str, params: LinkParams) -> None:
        if params.queue_bytes is not None or params.reorder:
            raise SpecError(f"shaping {self.netns}/{self.ifname}: queue_bytes and reorder are "
                            "simulator-only link parameters; tc shaping does not implement them")
        rate = params.rate_mbit if params.rate_mbit is not None else UNSHAPED_RATE_MBIT
        queue = params.effective_queue_pkts()
        verb_qdisc = "add" if command == "add" else "change"
        with IPRoute(netns=self.netns) as ipr:
            index = self._index(ipr)
            try:
                if self.backends.rate == "htb":
                    if command == "add":
                        ipr.tc("add", "htb", index, ROOT, default=0x1)
                    burst = _burst_bytes(rate)
                    ipr.tc(f"{command}-class", "htb", index, CLASS, parent=ROOT,
                           rate=_rate_bps(rate), ceil=_rate_bps(rate), burst=burst,
                           cburst=burst, quantum=60000)
                    if self.backends.netem:
                        ipr.tc(verb_qdisc, "netem", index, LEAF, parent=CLASS,
                               **self._netem_args(params))
                    else:
                        ipr.tc(verb_qdisc, "pfifo", index, LEAF, parent=CLASS, limit=queue)
                elif self.backends.netem:
                    ipr.tc(verb_qdisc, "netem", index, ROOT, rate=_rate_bps(rate),
                           **self._netem_args(params))
                else:
                    ipr.tc(verb_qdisc, "tbf", index, ROOT, rate=_rate_bps(rate),
                           burst=_burst_bytes(rate), limit=queue * MTU_BYTES)
            except NetlinkError as exc:
                raise EnvironmentProblem(
                    f"shaping {self.netns}/{self.ifname}: kernel refused {command} "
                    f"({self.backends.rate}{'+netem' if self.backends.netem else ''}): {exc}"
                ) from exc

    def apply(self, params: LinkParams) -> None:
        """Build the tree once."""
        self._send("add", params)
        self.params = params

    def change(self, params: LinkParams) -> None:
        """Change the live tree in place with the full new parameter set."""
        if self.params is None:
            raise RuntimeError("change() before apply()")
        self._send("change", params)
        self.params = params

    def read_back(self) -> dict[str, Any]:
        """What the kernel reports for this interface's tree (kinds, rates, drops)."""
        out: dict[str, Any] = {"interface": self.ifname, "qdiscs": [], "classes": []}
        with IPRoute(netns=self.netns) as ipr:
            index = self._index(ipr)
            for qdisc in ipr.get_qdiscs(index):
                stats = qdisc.get_attr("TCA_STATS2")
                basic = stats.get_attr("TCA_STATS_BASIC") if stats else None
                queue = stats.get_attr("TCA_STATS_QUEUE") if stats else None
                out["qdiscs"].append({
                    "kind": qdisc.get_attr("TCA_KIND"),
                    "handle": f"{qdisc['handle'] >> 16:x}:",
                    "sent_packets": basic["packets"] if basic else None,
                    "dropped": queue["drops"] if queue else None,
                })
            for tclass in ipr.get_classes(index):
                options = tclass.get_attr("TCA_OPTIONS")
                parms = options.get_attr("TCA_HTB_PARMS") if options else None
                out["classes"].append({
                    "kind": tclass.get_attr("TCA_KIND"),
                    "rate_mbit": round(parms["rate"] * 8 / 1e6, 3) if parms else None,
                })
        return out
