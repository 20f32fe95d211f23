"""The balancer's runs with the python stack at either end (testbed.balancer.stack_runs), without
a network: the endpoint programs' command lines, and the records built from both ends' reports
(a connection's backend is the one whose report has its SHA-256). tests/integration/lb runs them."""

from __future__ import annotations

import dataclasses

from testbed.balancer.experiment import parse_spec, summarize
from testbed.balancer.stack_runs import (
    client_command,
    connection_records,
    python_client_counters,
    server_command,
)
from testbed.endpoints.report import EndpointReport, SubflowReport

VIP, UNICAST = "10.0.200.1", "10.0.101.2"


def spec(client: str = "kernel", backends: str = "kernel", remedy: str = "none"):
    parsed, _topo = parse_spec({"topology": {"name": "lb"},
                                "balancer": {"node": "lb", "remedy": remedy, "backend_stack": backends},
                                "client": {"stack": client}, "traffic": {"connections": 3, "bytes": 1000}},
                               "t.toml")
    return parsed


def test_a_python_backend_owns_the_vip_and_its_address_and_announces_only_with_the_c_flag() -> None:
    plain = server_command(spec(backends="python"), VIP, UNICAST)
    assert plain[2] == "testbed.endpoints.stack_endpoint" and "--announce" not in plain
    assert plain[plain.index("--path-manager") + 1] == "none"  # no announcement of its own
    assert [plain[i + 1] for i, arg in enumerate(plain) if arg == "--local"] == [VIP, UNICAST]
    flagged = server_command(spec(backends="python", remedy="cflag"), VIP, UNICAST)
    assert flagged[flagged.index("--announce") + 1] == UNICAST
    assert '"allow_join_initial_addr_port": false' in flagged[flagged.index("--stack-config") + 1]
    kernel = server_command(spec(client="python"), VIP, UNICAST)
    assert kernel[2] == "testbed.endpoints.kernel" and "--local" not in kernel  # the sysctl does it


def test_a_python_client_opens_joins_from_its_second_address() -> None:
    command = client_command(spec(client="python"), VIP, ["10.0.1.1", "10.0.2.1", "10.0.3.1"], 7)
    assert [command[i + 1] for i, arg in enumerate(command) if arg == "--local"] == ["10.0.1.1", "10.0.2.1"]
    assert command[command.index("--seed") + 1] == "7"
    assert "--local" not in client_command(spec(backends="python"), VIP, ["10.0.1.1"], 7)


def report(role: str, sha: str, byte_count: int, subflows: tuple[tuple[str, int], ...] = (),
           counters: dict[str, int] | None = None, error: str | None = None) -> EndpointReport:
    flows = tuple(SubflowReport(index=i, local=f"{address}:40000", remote=f"{VIP}:5201", bytes_sent=acked,
                                bytes_acked=acked, bytes_received=0, bytes_retrans=0, total_retrans=0,
                                rtt_us=100, first_seen_s=0.0, last_seen_s=1.0, open_at_end=True)
                  for i, (address, acked) in enumerate(subflows))
    return EndpointReport(role=role, connection=0, transport="mptcp", mptcp_requested=True,  # type: ignore[arg-type]
                          mptcp_used=True, direction="upload", sending=role == "client", mode="bytes",
                          requested_bytes=byte_count, requested_seconds=None, seed=1, bytes=byte_count,
                          sha256=sha, duration_s=0.1, goodput_mbps=80.0, local=None, remote=None,
                          started_at_unix=None, subflows=flows, stack_counters=counters, error=error)


def test_records_pair_each_client_with_the_backend_that_received_its_stream() -> None:
    run = dataclasses.replace(spec(client="python"), byte_count=1000)
    joined = report("client", "aa", 1000, (("10.0.1.1", 600), ("10.0.2.1", 400)), {"MPJoinSynTx": 1})
    refused = report("client", "bb", 1000, (("10.0.1.1", 1000), ("10.0.2.1", 0)), {"MPJoinSynTx": 1})
    served = {"be1": [report("server", "aa", 1000)], "be2": [report("server", "bb", 1000)], "be3": []}
    records = connection_records(run, [joined, refused, "the client did not finish in 60 s"], served)
    assert [(r.get("backend"), r.get("subflows"), r["intact"]) for r in records] == [
        ("be1", 2, True), ("be2", 1, True), (None, None, False)]
    assert records[0]["subflow_sources"] == ["10.0.1.1", "10.0.2.1"]
    assert records[1]["subflow_sources"] == ["10.0.1.1"]  # a join that carried nothing is not counted
    assert records[2]["error"].startswith("the client did not finish")
    counters = python_client_counters(records)
    assert counters == {"MPTcpExtMPJoinSynTx": 2}
    classes = summarize(records, {}, counters)["outcome_classes"]
    assert classes == {"mptcp/2": 1, "reset": 1, "subflow-rejected": 1}


def test_a_stream_no_backend_received_whole_is_not_intact() -> None:
    run = dataclasses.replace(spec(client="python"), byte_count=1000)
    short = {"be1": [report("server", "cc", 600)]}
    records = connection_records(run, [report("client", "cc", 1000, (("10.0.1.1", 1000),))], short)
    assert records[0]["intact"] is False and records[0]["bytes"] == 600
