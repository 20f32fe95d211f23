"""Random loss without netem: an nftables `numgen random` drop rule, in the node that RECEIVES
from the link.

Why ingress: a drop in the sender's own output path (postrouting, or the netdev egress hook) is
reported back to a local socket (EPERM / NET_XMIT_DROP), so a local TCP sender learns that the
segment never left and simply sends it again later — no loss signal, no congestion response,
nothing like a lossy link (netem avoids this by lying about its drops). A drop at the ingress of
the node at the far end of the link happens after the segment crossed the sender's qdisc and the
link, exactly where a corrupted frame would be discarded, so the sender sees a real loss.

Each interface of a lossy link gets a netdev-family chain on its ingress hook, dropping that
fraction of what arrives from the other end; the link's loss_pct therefore applies to each
direction. A chain is rewritten whole in one atomic `nft -f` transaction on every change, so a
live change never leaves a window without the rule. Probability resolution is 1e-6 (numgen
modulus 1,000,000).
"""

from __future__ import annotations

import json

from testbed.command import run_command

TABLE = "testbed_loss"
MODULUS = 1_000_000


def nft(netns: str, script: str) -> str:
    """Run an nft script inside a namespace; a failure is an error with nft's own message."""
    return run_command(["nft", "-f", "-"], netns=netns, input=script, what=f"nft in {netns}").stdout


def _chain(ifname: str) -> str:
    return "in_" + ifname.replace("-", "_")


class NodeLoss:
    """The ingress loss rules of one node: interface -> percent of arriving packets dropped."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.loss_pct: dict[str, float] = {}

    def set(self, ifname: str, loss_pct: float) -> None:
        chain = _chain(ifname)
        lines = []
        if not self.loss_pct:
            lines.append(f"add table netdev {TABLE}")
        if ifname not in self.loss_pct:
            lines.append(f'add chain netdev {TABLE} {chain} {{ type filter hook ingress device "{ifname}" '
                         "priority 0; policy accept; }")
        lines.append(f"flush chain netdev {TABLE} {chain}")
        lines.append(f"add rule netdev {TABLE} {chain} counter")
        threshold = round(loss_pct / 100 * MODULUS)
        if threshold > 0:
            lines.append(f"add rule netdev {TABLE} {chain} numgen random mod {MODULUS} < {threshold} "
                         "counter drop")
        nft(self.netns, "\n".join(lines) + "\n")
        self.loss_pct[ifname] = loss_pct

    def counters(self) -> dict[str, dict[str, int]]:
        """Per interface: packets that arrived at the rule, and packets it dropped (since the
        last change of that interface's loss)."""
        if not self.loss_pct:
            return {}
        done = run_command(["nft", "-j", "list", "table", "netdev", TABLE], netns=self.netns,
                           what=f"nft list in {self.netns}")
        by_chain = {_chain(name): name for name in self.loss_pct}
        out = {name: {"packets": 0, "dropped": 0} for name in self.loss_pct}
        for item in json.loads(done.stdout)["nftables"]:
            rule = item.get("rule")
            if not rule or rule.get("chain") not in by_chain:
                continue
            packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
            dropped = any("drop" in e for e in rule["expr"])
            out[by_chain[rule["chain"]]]["dropped" if dropped else "packets"] = packets
        return out
