"""A running two_path experiment keeps going when malformed segments arrive (issue 13, point 2).

Python client and python server, rewrite_seq on both bumps (so the inline processes decode
every frame). Once both endpoint processes run, a raw socket in each end's namespace sends
malformed segments (inject.py) to the other end's stack, through the bumps: each bump passes
them on unexamined and counts them by reason, each python endpoint drops them and counts
them; the transfer completes with the original stream.

The injected segments share the shaped paths' queues with the transfer, which can tail-drop
a few of them, before or after a bump (in one suite run the server counted 37 of 40; the
injection starts during slow start). So an nft counter in each end's namespace counts those
that arrived, and the endpoint must have counted exactly those.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.command import run_command
from testbed.net.loss import nft
from testbed.runner import run_experiment
from testbed.spec import parse_spec

pytestmark = pytest.mark.root

INJECT = Path(__file__).with_name("inject.py")
COUNT = 40  # per direction
INJECTED_PORT = 40000  # inject.py's source port
ARRIVED_TABLE = "malformed_arrived"
SPEC = {
    "name": "malformed_live",
    "seed": 3,
    "topology": {"name": "two_path", "params": {"rate_mbit": 50, "delay_ms": 0}},
    "middleboxes": [{"node": node, "type": "rewrite_seq", "params": {}}
                    for node in ("mb_a", "mb_b")],
    "endpoints": [{"role": "server", "host": "server", "stack": "python"},
                  {"role": "client", "host": "client", "stack": "python"}],
    "traffic": {"seconds": 8, "direction": "upload", "timeout_s": 30},
    "mptcp": {"subflows": 2, "client_subflow_endpoints": True},
}


def _stack_endpoints() -> dict[str, int]:
    """pid of each running python stack endpoint, by role (from /proc, no subprocess)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"testbed.endpoints.stack_endpoint" in argv:
            role = next((a.decode() for a in argv if a in (b"client", b"server")), None)
            if role is not None:
                found[role] = int(entry.name)
    return found


def _netns_of(pid: int) -> str:
    return subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True,
                          check=True).stdout.strip()


def _address(netns: str, prefix: str) -> str:
    out = subprocess.run(["ip", "-n", netns, "-4", "-o", "addr"], capture_output=True, text=True,
                         check=True).stdout
    return next(word.split("/")[0] for word in out.split() if word.startswith(prefix))


def _inject(before: dict[str, int], sent: dict[str, Any], arrived: dict[str, int],
            deadline: float) -> None:
    """Wait for both stack endpoints to run, then send COUNT malformed segments each way and
    count, in each end's namespace, how many arrived."""
    while time.monotonic() < deadline:
        pids = {role: pid for role, pid in _stack_endpoints().items()
                if before.get(role) != pid}
        if len(pids) == 2:
            break
        time.sleep(0.02)
    else:
        sent["endpoints seen"] = _stack_endpoints()
        return
    client, server = _netns_of(pids["client"]), _netns_of(pids["server"])
    time.sleep(0.5)  # the handshake is done and data flows
    client_address = _address(client, "10.0.1.")
    server_address = _address(server, "10.0.100.")
    for netns, source in ((server, client_address), (client, server_address)):
        _count_arrivals(netns, source)
    runs = {key: subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, str(INJECT),
                                   src, dst, str(port), str(COUNT)], stdout=subprocess.PIPE,
                                  text=True)
            for netns, src, dst, port, key in (
                (client, client_address, server_address, 5201, "server"),
                (server, server_address, client_address, 61000, "client"))}
    for key, run in runs.items():
        out, _ = run.communicate(timeout=20)
        sent[key] = int(out.strip() or 0)
    time.sleep(1.0)  # the queues drain long before the 8 s transfer ends
    for netns, key in ((server, "server"), (client, "client")):
        arrived[key] = _arrivals(netns)


def _count_arrivals(netns: str, source: str) -> None:
    """An nft counter of the injected segments reaching this namespace's IP layer, which sees
    what the endpoint's packet socket sees (its own netns; gone with it)."""
    rules = (f"table ip {ARRIVED_TABLE} {{\n  chain pre {{\n"
             f"    type filter hook prerouting priority -400\n"
             f"    ip saddr {source} tcp sport {INJECTED_PORT} counter\n  }}\n}}\n")
    nft(netns, rules)


def _arrivals(netns: str) -> int:
    listed = run_command(["nft", "-j", "list", "table", "ip", ARRIVED_TABLE], netns=netns).stdout
    return next(item["rule"]["expr"][-1]["counter"]["packets"]
                for item in json.loads(listed)["nftables"] if "rule" in item)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("mnexec") is None:
        pytest.skip("needs root and mnexec")
    sent: dict[str, int] = {}
    arrived: dict[str, int] = {}
    injector = threading.Thread(target=_inject, args=(_stack_endpoints(), sent, arrived,
                                                      time.monotonic() + 60), daemon=True)
    injector.start()
    document = run_experiment(parse_spec(SPEC, source="malformed_live"),
                              tmp_path_factory.mktemp("malformed"), progress=lambda line: None)
    injector.join(timeout=30)
    document["_sent"], document["_arrived"] = sent, arrived
    return document


def test_the_transfer_completes_with_the_original_stream(result: dict[str, Any]) -> None:
    assert result["_sent"] == {"server": COUNT, "client": COUNT}
    connection = result["connections"][0]
    assert connection["outcome"] == "mptcp", connection.get("evidence")
    assert connection["integrity"] == "ok"


def test_the_bumps_pass_and_count_them_by_reason(result: dict[str, Any]) -> None:
    reasons: dict[str, int] = {}
    for node in ("mb_a", "mb_b"):
        for reason, count in result["middlebox_stats"][node]["pipeline"]["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    # every segment that reached an end went through a bump; none is counted twice
    counted = sum(reasons.values())
    assert sum(result["_arrived"].values()) <= counted <= 2 * COUNT, (
        reasons, result["_arrived"], result["middlebox_stats"])
    assert {"undecodable:tcp.data_offset", "undecodable:tcp.option.mptcp.dss.length",
            "undecodable:tcp.option.length"} <= set(reasons), reasons


def test_each_python_endpoint_drops_and_counts_them(result: dict[str, Any]) -> None:
    counters = result["connections"][0]["stack_counters"]
    arrived = result["_arrived"]
    for role in ("server", "client"):
        assert arrived[role] >= COUNT // 2, arrived  # a queue took a few, not most
        assert counters[role]["DriverUndecodable"] == arrived[role], (arrived, counters[role])
