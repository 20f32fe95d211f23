"""Phased demo files and the per-phase share checks, on synthetic time series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed.demo.phases import (
    Phase,
    check_phase,
    client_paths,
    format_summary,
    load_demo,
    median_total_mbps,
    parse_demo,
    path_mbps,
    summarize,
)
from testbed.errors import SpecError
from tests.unit.demo.samples import PATHS, rows_for
from topologies import build_topology

PRAGUE = Path(__file__).resolve().parents[3] / "experiments" / "prague.toml"


def base(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "topology": {"name": "two_path"},
        "endpoints": [{"role": "server", "stack": "kernel"}, {"role": "client", "stack": "kernel"}],
        "traffic": {},
        "phases": [
            {"name": "one", "seconds": 4, "settle_s": 1},
            {"name": "two", "seconds": 6, "settle_s": 2,
             "changes": [{"link": "a", "set": {"loss_pct": 1.0}}], "expect": {"share_min": {"b": 0.7}}},
        ],
    }
    raw.update(extra)
    return raw


def test_timeline_and_length_come_from_the_phases() -> None:
    demo = parse_demo(base())
    assert [p.start_s for p in demo.phases] == [0.0, 4.0]
    assert demo.seconds == 10.0 and demo.spec.traffic.seconds == 10.0
    assert [(e.at_s, e.link, e.set) for e in demo.spec.timeline] == [(4.0, "a", {"loss_pct": 1.0})]
    assert demo.phases[1].window == (6.0, 10.0)


def test_stack_and_phase_length_overrides() -> None:
    demo = parse_demo(base(), stack="python", phase_seconds=3)
    assert {e.stack for e in demo.spec.endpoints} == {"python"}
    assert [p.seconds for p in demo.phases] == [3.0, 3.0]
    assert [p.settle_s for p in demo.phases] == [1.0, 1.5]  # at most half a shortened phase
    assert demo.spec.timeline[0].at_s == 3.0


@pytest.mark.parametrize(("change", "message"), [
    ({"timeline": [{"at_s": 1, "link": "a", "set": {"loss_pct": 1}}]}, "derives its timeline"),
    ({"traffic": {"seconds": 5}}, "must not set seconds"),
    ({"phases": []}, "at least one"),
    ({"phases": [{"name": "x", "seconds": 2, "colour": 1}]}, "unknown key 'colour'"),
    ({"phases": [{"name": "x", "seconds": 2, "expect": {"share_min": {"a": 1.5}}}]}, "fractions"),
    ({"phases": [{"name": "x", "seconds": 2, "expect": {"min_goodput": 1}}]}, "unknown key 'min_goodput'"),
    ({"phases": [{"name": "x", "seconds": 2, "settle_s": 2}]}, "leaves nothing"),
    ({"phases": [{"name": "x", "seconds": 2}, {"name": "x", "seconds": 2}]}, "unique"),
    ({"phases": [{"name": "x", "seconds": 2, "changes": [{"link": "a", "set": {"los": 1}}]}]}, "los"),
    ({"demo": {"cc": "cubic"}}, "unknown key 'demo'"),
])
def test_bad_demo_files_fail_with_a_clear_message(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_demo(base(**change))


def test_shipped_prague_demo_matches_the_ietf80_story() -> None:
    demo = load_demo(PRAGUE)
    assert [p.name for p in demo.phases] == ["clean", "loss-a", "loss-ab", "rtt-a"]
    assert 40 <= demo.seconds <= 60
    assert demo.spec.topology == "two_path" and demo.spec.topology_params["rate_mbit"] == 100
    clean, loss_a, loss_ab, rtt = demo.phases
    assert clean.expect["min_median_total_mbps"] >= 160 and clean.expect["min_total_mbps"] >= 140
    assert loss_a.changes[0].link == "a" and loss_a.changes[0].set == {"loss_pct": 1.0}
    assert loss_a.expect["share_min"]["b"] >= 0.7
    assert loss_ab.expect["share_min"] == {"a": 0.3, "b": 0.3}
    assert any("delay_ms" in c.set for c in rtt.changes)
    assert demo.spec.traffic.congestion_control == "cubic"  # bbr would ignore the 1% loss


def test_path_mbps_counts_only_the_check_window() -> None:
    rows = rows_for(2, {"a": 100, "b": 100}) + rows_for(2, {"a": 10, "b": 90}, start=2.0)
    assert path_mbps(rows, PATHS, (2.0, 4.0), 0.1) == pytest.approx({"a": 10, "b": 90})
    assert path_mbps(rows, PATHS, (0.0, 4.0), 0.1) == pytest.approx({"a": 55, "b": 95})
    # a path with no rows in the window is still reported, at zero
    only_b = path_mbps(rows_for(1, {"b": 50}), PATHS, (0, 1), 0.1, ("a", "b"))
    assert only_b == pytest.approx({"a": 0, "b": 50})


def test_phase_expectations_pass_and_fail_with_the_numbers() -> None:
    phase = Phase("loss-a", "1% loss on a", 0, 10, 2, (), {"share_min": {"b": 0.7}, "min_total_mbps": 90})
    good = check_phase(phase, {"a": 10.0, "b": 90.0})
    assert good.passed and good.shares == pytest.approx({"a": 0.1, "b": 0.9})
    bad = check_phase(phase, {"a": 40.0, "b": 40.0})
    assert not bad.passed
    assert bad.failures == ("total 80.0 < 90 Mbit/s", "share b 0.50 < 0.7")
    capped = check_phase(Phase("x", "x", 0, 1, 0, (), {"share_max": {"a": 0.6}, "max_total_mbps": 100,
                                                        "min_path_mbps": {"b": 50}}), {"a": 90.0, "b": 30.0})
    assert capped.failures == ("total 120.0 > 100 Mbit/s", "share a 0.75 > 0.6", "path b 30.0 < 50 Mbit/s")
    assert check_phase(phase, {"a": 0.0, "b": 0.0}).shares == {"a": 0.0, "b": 0.0}


def test_summary_table_shows_every_phase_and_the_verdict() -> None:
    demo = parse_demo(base())
    rows = rows_for(4, {"a": 95, "b": 95}) + rows_for(6, {"a": 50, "b": 50}, start=4.0)
    summaries = summarize(demo.phases, rows, PATHS, 0.1)
    table = format_summary(summaries)
    lines = table.splitlines()
    assert lines[2].startswith("one") and lines[2].endswith("PASS")
    assert lines[3].startswith("two") and "FAIL: share b 0.50 < 0.7" in lines[3]
    assert "b>=0.7" in lines[3]
    assert lines[-1] == "1/2 phases passed: FAIL"
    assert summaries[1].as_dict()["shares"] == {"a": 0.5, "b": 0.5}


def test_client_paths_follow_the_topology() -> None:
    described = build_topology("two_path", {}).describe()
    assert client_paths(described) == {"10.0.1.1": "a", "10.0.2.1": "b"}


def test_expectations_by_stack_replace_only_their_keys_for_that_stack() -> None:
    raw = base()
    raw["phases"][1]["expect"]["min_total_mbps"] = 150
    raw["phases"][1]["expect_by_stack"] = {"python": {"min_total_mbps": 40}}
    assert parse_demo(raw).phases[1].expect == {"share_min": {"b": 0.7}, "min_total_mbps": 150}
    assert parse_demo(raw, stack="python").phases[1].expect == {"share_min": {"b": 0.7}, "min_total_mbps": 40}
    raw["phases"][1]["expect_by_stack"] = {"python": {"min_total": 40}}
    with pytest.raises(SpecError, match=r"expect_by_stack\.python: unknown key 'min_total'"):
        parse_demo(raw)  # checked even when another stack runs


def test_median_total_ignores_a_short_stall_that_the_mean_counts() -> None:
    rows = (rows_for(3, {"a": 95, "b": 95}) + rows_for(1, {"a": 10, "b": 10}, start=3.0)
            + rows_for(4, {"a": 95, "b": 95}, start=4.0))
    assert median_total_mbps(rows, (0.0, 8.0), 0.1) == pytest.approx(190)
    phase = Phase("clean", "clean", 0, 8, 0, (), {"min_median_total_mbps": 170, "min_total_mbps": 170})
    summary = summarize([phase], rows, PATHS, 0.1)[0]
    assert summary.total_mbps == pytest.approx(168.75)
    assert summary.failures == ("total 168.8 < 170 Mbit/s",)  # the mean fails, the median passes
    assert median_total_mbps(rows, (3.0, 3.5), 0.1) == pytest.approx(20)  # a window under 1 s is one slice
    assert median_total_mbps(rows, (2.0, 2.0), 0.1) == 0.0


def test_recovery_time_is_when_a_path_first_gets_back_near_its_final_rate() -> None:
    # path a ramps 10 Mbit/s per second from 0 to 90 after the change, then stays at 90
    rows = []
    for second in range(12):
        rows += rows_for(1, {"a": min(90, 10 * second), "b": 90}, start=float(second))
    phase = Phase("rtt-a", "rtt", 0, 12, 8, (), {"max_recovery_s": {"a": 9, "b": 2}})
    summary = summarize([phase], rows, PATHS, 0.1)[0]
    # the window [8, 12) averages 87.5 for a, so 70 (80%) is first reached over [7, 8)
    assert summary.recovery_s == {"a": 8.0, "b": 1.0}
    assert summary.passed
    strict = Phase("rtt-a", "rtt", 0, 12, 8, (), {"max_recovery_s": {"a": 5}})
    assert summarize([strict], rows, PATHS, 0.1)[0].failures == ("path a recovered after 8.0 s > 5 s",)
    never = check_phase(strict, {"a": 90.0}, None, {"a": None})
    assert never.failures == ("path a did not recover to 80% of its final rate",)
    assert "a back<=5s" in format_summary([never])
