"""Random loss without netem: an nftables `numgen random` drop rule per interface, in the node.

The rule sits in the postrouting hook of an `inet testbed_loss` table in the node's namespace,
so it drops locally sent and forwarded packets alike before they reach the interface's qdisc —
the same place netem's loss acts. The chain is rewritten whole in one atomic `nft -f`
transaction on every change, so a live change never leaves a window without the rule.
Probability resolution is 1e-6 (numgen modulus 1,000,000).
"""

from __future__ import annotations

import json
import subprocess

from testbed.errors import EnvironmentProblem

TABLE = "testbed_loss"
MODULUS = 1_000_000


def nft(netns: str, script: str, *, json_output: bool = False) -> str:
    """Run an nft script inside a namespace; a failure is an error with nft's own message."""
    command = ["ip", "netns", "exec", netns, "nft"] + (["-j"] if json_output else []) + ["-f", "-"]
    done = subprocess.run(command, input=script, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EnvironmentProblem(f"nft in {netns} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class NodeLoss:
    """The loss rules of one node: interface -> percent."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.loss_pct: dict[str, float] = {}
        self._created = False

    def set(self, ifname: str, loss_pct: float) -> None:
        self.loss_pct[ifname] = loss_pct
        lines = []
        if not self._created:
            lines.append(f"add table inet {TABLE}")
            lines.append(
                f"add chain inet {TABLE} loss {{ type filter hook postrouting priority 0; policy accept; }}"
            )
        lines.append(f"flush chain inet {TABLE} loss")
        for name, pct in sorted(self.loss_pct.items()):
            threshold = round(pct / 100 * MODULUS)
            lines.append(f'add rule inet {TABLE} loss oifname "{name}" counter')
            if threshold > 0:
                lines.append(
                    f'add rule inet {TABLE} loss oifname "{name}" '
                    f"numgen random mod {MODULUS} < {threshold} counter drop"
                )
        nft(self.netns, "\n".join(lines) + "\n")
        self._created = True

    def counters(self) -> dict[str, dict[str, int]]:
        """Per interface: packets that reached the rule, and packets it dropped."""
        if not self._created:
            return {}
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "-j", "list", "chain", "inet", TABLE, "loss"],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise EnvironmentProblem(f"nft list in {self.netns} failed: {done.stderr.strip()}")
        out: dict[str, dict[str, int]] = {}
        for item in json.loads(done.stdout)["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            ifname = None
            packets = 0
            dropped = False
            for expr in rule["expr"]:
                if "match" in expr and expr["match"]["left"].get("meta", {}).get("key") == "oifname":
                    ifname = expr["match"]["right"]
                if "counter" in expr:
                    packets = expr["counter"]["packets"]
                if "drop" in expr:
                    dropped = True
            if ifname is None:
                continue
            entry = out.setdefault(ifname, {"packets": 0, "dropped": 0})
            entry["dropped" if dropped else "packets"] = packets
        return out
