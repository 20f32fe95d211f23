"""simult_flows cases: the time limit, the shipped cases, specs per case, and the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed.demo.simult import (
    SimultCase,
    case_spec,
    failed_row,
    format_table,
    judge,
    load_plan,
    parse_plan,
    time_limit_s,
)
from testbed.errors import SpecError

SHIPPED = Path(__file__).resolve().parents[3] / "experiments" / "simult_flows.toml"
MIB16 = 16 * 1024 * 1024


def test_time_limit_is_the_selftest_bound_plus_slack() -> None:
    # 16 MiB at 20 Mbit/s less 10% header overhead: 134217728 * 10 / (9 * 20e6) s
    assert time_limit_s(MIB16, (10, 10), 0) == pytest.approx(7.4565, abs=1e-4)
    assert time_limit_s(MIB16, (15, 5), 1.5) == pytest.approx(8.9565, abs=1e-4)
    assert time_limit_s(MIB16, (30, 10), 0) == pytest.approx(time_limit_s(MIB16, (10, 10), 0) / 2)


def test_shipped_cases_cover_the_selftest_matrix() -> None:
    plan = load_plan(SHIPPED)
    assert plan.bytes == MIB16
    assert case_spec(plan, plan.cases[0], "kernel").traffic.congestion_control == "cubic"
    combos = {(c.rates_mbit, c.delays_ms) for c in plan.cases}
    for rates in ((10.0, 10.0), (15.0, 5.0)):
        for delays in ((0.0, 0.0), (1.0, 25.0), (25.0, 1.0)):
            assert (rates, delays) in combos


def test_case_spec_shapes_each_path_and_sets_the_size() -> None:
    plan = load_plan(SHIPPED)
    case = SimultCase("x", (15.0, 5.0), (1.0, 25.0))
    spec = case_spec(plan, case, "python")
    assert spec.topology_params["path_a"] == {"rate_mbit": 15.0, "delay_ms": 1.0}
    assert spec.topology_params["path_b"] == {"rate_mbit": 5.0, "delay_ms": 25.0}
    assert spec.traffic.bytes == MIB16 and spec.traffic.seconds is None
    assert {e.stack for e in spec.endpoints} == {"python"}
    assert spec.name.endswith("-python-x") and spec.traffic.direction == "upload"
    download = case_spec(plan, case, "kernel", "download")
    assert download.traffic.direction == "download" and download.name.endswith("-kernel-x-download")


def result(duration: float, outcome: str = "mptcp", integrity: str = "ok",
           size: int = MIB16) -> dict[str, Any]:
    return {"connections": [{"duration_s": duration, "outcome": outcome, "integrity": integrity,
                             "bytes": size, "goodput_mbps": size * 8 / duration / 1e6,
                             "subflows": [{"bytes": size // 2}, {"bytes": size - size // 2}]}]}


def test_judge_compares_time_with_the_limit_and_names_every_problem() -> None:
    plan = load_plan(SHIPPED)
    case = plan.cases[0]
    limit = time_limit_s(MIB16, case.rates_mbit, plan.slack_s)
    ok = judge(case, "kernel", plan, result(limit - 0.01))
    assert ok["passed"] and ok["limit_s"] == pytest.approx(limit, abs=1e-3)
    slow = judge(case, "kernel", plan, result(limit + 0.5))
    assert not slow["passed"] and slow["problems"] == [f"{limit + 0.5:.2f} s > limit {limit:.2f} s"]
    broken = judge(case, "kernel", plan, result(5.0, outcome="fallback-syn", integrity="mismatch", size=10))
    assert broken["problems"] == ["outcome fallback-syn", "integrity mismatch", f"only 10 of {MIB16} bytes"]
    table = format_table([ok, slow, failed_row(case, "python", plan, "no route")])
    assert "PASS" in table.splitlines()[2] and "FAIL" in table.splitlines()[3]
    assert "did not run: no route" in table and table.splitlines()[-1] == "1/3 cases within their limit"


@pytest.mark.parametrize(("change", "message"), [
    ({"simult": None}, r"\[simult\] table"),
    ({"simult": {"bytes": 0}}, "positive integer"),
    ({"simult": {"bytes": 10, "sizes": 1}}, "unknown key 'sizes'"),
    ({"cases": []}, "at least one"),
    ({"cases": [{"name": "x", "rates_mbit": [10], "delays_ms": [0, 0]}]}, "two numbers"),
    ({"cases": [{"name": "x", "rates_mbit": [0, 10], "delays_ms": [0, 0]}]}, "rates must be > 0"),
    ({"traffic": {"bytes": 5}}, "must not set bytes"),
])
def test_bad_plans_fail_with_a_clear_message(change: dict[str, Any], message: str) -> None:
    raw: dict[str, Any] = {
        "simult": {"bytes": 1000},
        "topology": {"name": "two_path"},
        "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}],
        "cases": [{"name": "x", "rates_mbit": [10, 10], "delays_ms": [0, 0]}],
    }
    for key, value in change.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    with pytest.raises(SpecError, match=message):
        parse_plan(raw)
