"""The [traffic] grammar of request/response traffic, its endpoint commands, the report's
request-stream check, latency.csv, and `testbed latency`'s table and checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from testbed import latency
from testbed.endpoints.report import EndpointReport, merge_reports
from testbed.errors import SpecError
from testbed.integrity import Verdict
from testbed.latency_result import (
    latency_fields,
    read_latency_csv,
    with_request_stream,
    write_latency_csv,
)
from testbed.net.shaping import Backends
from testbed.runner import plan_run
from testbed.spec import load_spec, parse_spec

SCENARIOS = Path(__file__).parents[3] / "experiments" / "scenarios"


def _spec(traffic: dict, client: str = "kernel") -> dict:
    return {"topology": {"name": "two_path"},
            "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": client}],
            "traffic": traffic}


def test_request_response_traffic_parses_and_downloads_the_responses() -> None:
    spec = parse_spec(_spec({"type": "request_response", "requests": 10, "request_bytes": 100,
                             "response_bytes": 2000, "rate_per_s": 5}))
    traffic = spec.traffic
    assert (traffic.type, traffic.requests, traffic.request_bytes, traffic.response_bytes,
            traffic.rate_per_s, traffic.direction) == ("request_response", 10, 100, 2000, 5.0, "download")
    assert traffic.bytes is None and traffic.seconds is None
    back_to_back = parse_spec(_spec({"type": "request_response", "requests": 1, "request_bytes": 1,
                                     "response_bytes": 1}))
    assert back_to_back.traffic.rate_per_s is None
    # paced: planned for requests / rate, and the idle timeout covers three times that
    assert (traffic.planned_s, traffic.timeout_s) == (2.0, 60.0) and back_to_back.traffic.planned_s == 0
    long = parse_spec(_spec({"type": "request_response", "requests": 600, "request_bytes": 1,
                             "response_bytes": 1, "rate_per_s": 20}))
    assert (long.traffic.planned_s, long.traffic.timeout_s) == (30.0, 90.0)


@pytest.mark.parametrize(("traffic", "message"), [
    ({"type": "rpc", "bytes": 1}, "[traffic].type 'rpc' is not one of bulk, request_response"),
    ({"type": "request_response", "request_bytes": 1, "response_bytes": 1}, "needs requests"),
    ({"type": "request_response", "requests": 0, "request_bytes": 1, "response_bytes": 1},
     "requests must be 1..1000000"),
    ({"type": "request_response", "requests": 1, "request_bytes": 0, "response_bytes": 1},
     "request_bytes must be 1..1073741824"),
    ({"type": "request_response", "requests": 1, "request_bytes": 1, "response_bytes": 1,
      "rate_per_s": 0}, "rate_per_s must be 0.01..100000"),
    ({"type": "request_response", "requests": 1, "request_bytes": 1, "response_bytes": 1,
      "bytes": 5}, "[traffic].bytes: request_response traffic is sized by requests"),
    ({"type": "request_response", "requests": 1, "request_bytes": 1, "response_bytes": 1,
      "direction": "upload"}, "remove direction"),
    ({"bytes": 5, "requests": 3}, "[traffic].requests belongs to type = \"request_response\""),
    ({"type": "request_response", "requests": 1, "request_bytes": 1, "response_bytes": 1,
      "rate_per_s": 0.02, "timeout_s": 30}, "leaves 50 s between requests, longer than"),
    ({"type": "request_response", "requests": 1, "request_bytes": 1, "response_bytes": "big"},
     "response_bytes: expected an integer"),
])
def test_bad_request_response_values_are_one_line_errors(traffic: dict, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(_spec(traffic))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_command_endpoint_cannot_carry_request_response_traffic() -> None:
    raw = _spec({"type": "request_response", "requests": 1, "request_bytes": 1, "response_bytes": 1})
    raw["endpoints"][1] = {"role": "client", "stack": "command", "command": "cat"}
    with pytest.raises(SpecError, match="request_response needs kernel, tcp or python endpoints"):
        parse_spec(raw)


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_the_client_is_started_with_the_requests_and_the_server_sends_the_responses(tmp_path: Path) -> None:
    spec = load_spec(SCENARIOS / "latency_short.toml")
    plan = plan_run(spec, tmp_path, Backends(rate="htb", loss="nft", delay="userspace"))
    client = plan.client.command
    assert (_option(client, "--requests"), _option(client, "--request-bytes"),
            _option(client, "--response-bytes"), _option(client, "--rate-per-s")) == \
        ("100", "200", "5000", "25.0")
    assert "--bytes" not in client and "--seconds" not in client
    assert "--received-file" in client and "--received-file" not in plan.server.command


def _report(role: str, **changes: object) -> EndpointReport:
    base = EndpointReport(role=role, connection=0, transport="mptcp", mptcp_requested=True,  # type: ignore[arg-type]
                          mptcp_used=True, direction="download", sending=role == "server",
                          mode="requests", requested_bytes=None, requested_seconds=None, seed=None,
                          bytes=5000, sha256="r" * 64, duration_s=1.0, goodput_mbps=0.1, local=None,
                          remote=None, started_at_unix=None, requests_bytes=200,
                          requests_sha256="q" * 64)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_request_stream_that_differs_breaks_integrity() -> None:
    client = _report("client", latencies_ms=(20.0, 30.0), request_sent_s=(0.0, 0.04))
    intact = merge_reports(client, _report("server"))
    assert intact.integrity == "ok" and not intact.problems
    broken = merge_reports(client, _report("server", requests_bytes=150, requests_sha256="z" * 64))
    assert broken.integrity == "mismatch" and "request stream differs" in broken.problems[0]
    ok = Verdict("ok", description="same")
    assert with_request_stream(intact, ok) is ok
    assert with_request_stream(broken, ok).integrity == "truncated"
    assert with_request_stream(broken, Verdict("corrupted")).integrity == "corrupted"


def test_latency_fields_and_the_csv_come_from_the_client_report(tmp_path: Path) -> None:
    record = merge_reports(_report("client", latencies_ms=(20.0, 30.0, 400.0),
                                   request_sent_s=(0.0, 0.05, 0.1)), _report("server"))
    fields = latency_fields(record, requests=3)
    assert (fields["count"], fields["p50_ms"], fields["max_ms"]) == (3, 30.0, 400.0)
    assert fields["payload_bytes"] == 5200 and fields["wire_bytes_sent"] == 0  # no subflow reports
    write_latency_csv(tmp_path / "latency.csv", record)
    assert read_latency_csv(tmp_path / "latency.csv") == [(0.0, 20.0), (0.05, 30.0), (0.1, 400.0)]


def _summary(p99: float, cost: float, count: int = 600, p90: float = 20.0, requests: int = 600) -> dict:
    run = {"p50_ms": 10.0, "p90_ms": p90, "p99_ms": p99, "max_ms": p99, "wire_per_payload_byte": cost,
           "count": count, "requests": requests, "integrity": "ok", "outcome": "mptcp", "dir": "x"}
    return latency.summarise_rows([run])


def test_the_checks_compare_the_redundant_tail_and_cost_with_the_others() -> None:
    summary = {"kernel": _summary(300.0, 1.02), "python-lowest_rtt": _summary(250.0, 1.01),
               "python-redundant": _summary(50.0, 1.9)}
    checks = {what: ok for what, _measured, ok in latency.checks_of(summary)}
    assert all(checks.values()), checks
    assert "python-redundant p99 below kernel's" in checks
    worse = {**summary, "python-redundant": _summary(260.0, 1.1, count=599)}
    failed = [what for what, _m, ok in latency.checks_of(worse) if not ok]
    assert failed == ["python-redundant: every request answered",
                      "python-redundant: wire bytes per payload byte >= 1.5",
                      "python-redundant p99 below python-lowest_rtt's"]
    table = latency.format_table(summary, latency.checks_of(summary), "0.5/0.5/0.5")
    assert "| python-redundant | 1 | 10 | 20 | 50 | 50 | 1.9 |" in table


def test_with_few_requests_per_run_the_tail_check_compares_p90() -> None:
    summary = {"kernel": _summary(300.0, 1.02, p90=150.0, requests=100, count=100),
               "python-redundant": _summary(400.0, 1.9, p90=50.0, requests=100, count=100)}
    checks = {what: ok for what, _measured, ok in latency.checks_of(summary)}
    assert checks["python-redundant p90 below kernel's"]
    assert "python-redundant p99 below kernel's" not in checks


def test_variants_replace_the_endpoints_by_the_python_stack_with_each_scheduler() -> None:
    base = load_spec(SCENARIOS / "latency.toml")
    assert [e.stack for e in latency.variant_spec(base, "kernel", 0).endpoints] == ["kernel", "kernel"]
    redundant = latency.variant_spec(base, "python-redundant", 2)
    assert {(e.stack, e.stack_config["scheduler"]) for e in redundant.endpoints} == {("python", "redundant")}
    assert redundant.seed == base.seed + 2 and redundant.traffic == base.traffic
    with pytest.raises(SpecError, match="--variants: fastest not among kernel"):
        latency.variants_of("kernel,fastest")
