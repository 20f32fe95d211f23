"""`testbed probe --target command:NAME` on real namespaces: mptcpize ncat (a stock tool on the
host kernel, under the command contract) answers a few probes as server and as client, a probe
that needs the target's echo says it is not measurable, and nothing is left running."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from testbed.net.state import netns_inode
from testbed.probe.bed import ProbeBed
from testbed.probe.run import run_probes

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("nft", "mnexec", "ip", "ncat", "mptcpize")),
    reason="needs root, nft, ip, mnexec, ncat and mptcpize")

STACKS = {"ncat": {"client": "mptcpize run ncat --send-only {server_addr} {port}",
                   "server": "mptcpize run ncat -k -l {listen_addr} {port}", "done": "peer-close"}}
RUN = ["mpc_handshake", "join_bad_ack_hmac", "fastclose_wrong_key", "client_mpc_keys"]


def test_ncat_as_a_command_target(tmp_path: Path) -> None:
    created: list[str] = []
    servers: list[int] = []

    def remember(bed: ProbeBed) -> None:
        assert bed.state is not None and bed.command is not None and bed.command.server is not None
        created.extend(bed.state.netns)
        servers.append(bed.command.server.pid)

    rows = run_probes("command:ncat", [*RUN, "mpc_idsn"], tmp_path / "out", seed=3,
                      before=remember, stacks=STACKS)
    verdicts = {row["name"]: row["verdict"] for row in rows}
    assert verdicts == {**dict.fromkeys(RUN, "pass"), "mpc_idsn": "not-measurable"}, [
        (r["name"], r["observed"], r["trace"]) for r in rows if r["verdict"] != "pass"]
    document = json.loads((tmp_path / "out" / "probes.json").read_text())
    assert document["target_detail"]["stack"] == "command"
    by_name = {row["name"]: row for row in document["probes"]}
    assert by_name["client_mpc_keys"]["trace"]  # ncat's own SYN reached the prober
    assert by_name["join_bad_ack_hmac"]["counters_note"] == "not measurable for a command target"
    assert created and all(netns_inode(name) is None for name in created)
    assert servers and not Path(f"/proc/{servers[0]}").exists()  # the first ncat (its group) is gone
