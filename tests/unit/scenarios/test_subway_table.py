"""`testbed subway`'s table and plot from result files alone (a synthetic ride)."""

from __future__ import annotations

from pathlib import Path

from testbed.subway import checks_of, format_table, link_back_after, per_path_series, trace_steps, write_plot


def ride(share_up: float) -> tuple[dict, list[dict]]:
    timeline = [{"at_s": 0.0, "link": "wifi", "set": {"rate_mbit": 30.0}, "up": None},
                {"at_s": 0.0, "link": "cellular", "set": {"rate_mbit": 10.0}, "up": None},
                {"at_s": 2.0, "link": "wifi", "set": {}, "up": False},
                {"at_s": 4.0, "link": "wifi", "set": {}, "up": True}]
    rows = []
    for i in range(60):
        t = round(i * 0.1, 1)
        wifi_on = t < 2 or t >= 4.5
        rows.append({"t_s": t, "local": "10.0.100.2:5201", "remote": "10.0.1.1:1",
                     "bytes": int(1000 * share_up) if wifi_on else 0})
        rows.append({"t_s": t, "local": "10.0.100.2:5201", "remote": "10.0.2.1:2",
                     "bytes": int(1000 * (1 - share_up)) if wifi_on else 500})
    windows = [{"start_s": 0.0, "end_s": 2.0, "up": True, "link_bytes": 1, "total_bytes": 2,
                "share": share_up},
               {"start_s": 2.0, "end_s": 4.0, "up": False, "link_bytes": 0, "total_bytes": 2, "share": 0.0},
               {"start_s": 4.0, "end_s": 6.0, "up": True, "link_bytes": 1, "total_bytes": 2,
                "share": share_up}]
    result = {
        "spec": {"timeline": timeline, "traffic": {"seconds": 6},
                 "traces": [{"link": "wifi"}, {"link": "cellular"}],
                 "expect": {"trace_share": {"link": "wifi", "inside_min": 0.5, "outside_max": 0.05}}},
        "topology": {"links": [{"name": "wifi", "a_address": "10.0.1.1/24"},
                               {"name": "cellular", "a_address": "10.0.2.1/24"},
                               {"name": "server", "a_address": "10.0.100.1/24"}]},
        "connections": [{"outcome": "mptcp", "integrity": "ok", "duration_s": 6}],
        "expectations": {"passed": share_up >= 0.5, "failures": [] if share_up >= 0.5 else ["low"],
                         "trace_share": windows},
    }
    return result, rows


def test_table_passes_a_good_ride_and_fails_a_bad_one(tmp_path: Path) -> None:
    good, rows = ride(0.8)
    table = checks_of("kernel", good, rows)
    assert all(ok for _what, _measured, ok in table)
    assert ("wifi up (station) 4-6 s, share >= 50%", "80% of 0.0 MB, first wifi bytes after 0.5 s", True) \
        in table
    bad, bad_rows = ride(0.3)
    failed = [what for what, _m, ok in checks_of("python", bad, bad_rows) if not ok]
    assert failed == ["wifi up (station) 0-2 s, share >= 50%", "wifi up (station) 4-6 s, share >= 50%",
                      "spec expectations"]
    text = format_table({"kernel": table})
    assert text.startswith("| stack | check | measured | verdict |") and "| FAIL |" not in text
    write_plot(tmp_path / "subway.png", {"kernel": (good, rows), "python": (bad, bad_rows)},
               {"kernel": table, "python": checks_of("python", bad, bad_rows)})
    assert (tmp_path / "subway.png").stat().st_size > 10_000


def test_series_and_steps() -> None:
    result, rows = ride(0.8)
    series = per_path_series(rows, {"10.0.1.1": "wifi", "10.0.2.1": "cellular"}, smooth_s=1.0)
    assert [round(v, 3) for v in series["wifi"][1]] == [0.064, 0.064, 0.0, 0.0, 0.032, 0.064]
    times, rates = trace_steps(result["spec"]["timeline"], "wifi", 6.0)
    assert list(zip(times, rates, strict=True)) == [(0.0, 0.0), (0.0, 30.0), (2.0, 0.0), (4.0, 30.0),
                                                    (6.0, 30.0)]
    assert link_back_after(rows, "10.0.1.1", 4.0, 6.0) == 0.5
