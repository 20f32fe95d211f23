"""The CPU figures: real measurements of the real code, divided by the calibration loop."""

from __future__ import annotations

from testbed.bench import calibration, cpu

TINY = cpu.CpuPlan(stack_bytes=200_000, stack_rounds=2, microbench_repeat=2,
                   microbench_packets=500)


def test_calibration_rates_are_positive_and_the_best_is_reported() -> None:
    best, rates = calibration.loops_per_second(repeat=3, number=200)
    assert len(rates) == 3 and best == max(rates) > 0


def test_stack_core_is_a_ratio_to_the_calibration_beside_every_round() -> None:
    speeds = iter([1000.0, 500.0])  # the machine at half speed during the second round
    figure = cpu.stack_core(TINY, tolerance=0.7, calibrate=lambda: next(speeds))
    assert len(figure.rounds) == 2 and figure.value == max(figure.rounds) > 0
    rates = figure.detail["segments_per_second"]
    assert [round(figure.rounds[0] * 1000.0), round(figure.rounds[1] * 500.0)] == rates
    assert figure.tolerance == 0.7 and figure.gated


def test_a_round_is_divided_by_the_calibration_timed_right_after_it() -> None:
    measured: list[str] = []
    real = cpu.calibration_now

    def calibrate() -> float:
        measured.append("calibration")
        return real()

    figures = cpu.fast_paths(TINY, {}, calibrate=calibrate)
    assert len(measured) == len(figures) * TINY.microbench_repeat  # one per round
    assert figures["fastpath.strip.data"].value > 0


def test_every_fast_path_case_is_a_figure_gated_only_when_it_has_a_tolerance() -> None:
    figures = cpu.fast_paths(TINY, {"strip.data": 0.7}, calibrate=lambda: 1.0)
    assert {"fastpath.strip.data", "fastpath.pipeline.decode", "fastpath.send_packet"} <= set(figures)
    assert figures["fastpath.strip.data"].gated and not figures["fastpath.sim.pcap"].gated
    strip = figures["fastpath.strip.data"]
    # packets per second with a calibration of 1 loop/s: 1e9 / ns per packet
    assert round(1e9 / strip.value) == strip.detail["ns_per_packet_best"]


def test_analysis_is_packets_per_cpu_second_over_the_calibration_beside_each_round() -> None:
    plan = cpu.CpuPlan(stack_bytes=200_000, stack_rounds=1, microbench_repeat=1,
                       microbench_packets=500, analysis_packets=2_000, analysis_rounds=2)
    speeds = iter([1000.0, 500.0])
    figure = cpu.analysis(plan, tolerance=0.7, calibrate=lambda: next(speeds))
    assert len(figure.rounds) == 2 and figure.value == max(figure.rounds) > 0
    rates = figure.detail["packets_per_second"]
    assert [round(figure.rounds[0] * 1000.0), round(figure.rounds[1] * 500.0)] == rates
    assert figure.detail["packets"] >= 2_000 and figure.gated
