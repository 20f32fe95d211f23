"""The CPU figures: real measurements of the real code, divided by the calibration loop."""

from __future__ import annotations

from testbed.bench import calibration, cpu

TINY = cpu.CpuPlan(stack_bytes=200_000, stack_rounds=2, microbench_repeat=2,
                   microbench_packets=500)


def test_calibration_rates_are_positive_and_the_best_is_reported() -> None:
    best, rates = calibration.loops_per_second(repeat=3, number=200)
    assert len(rates) == 3 and best == max(rates) > 0


def test_stack_core_is_a_ratio_to_the_calibration_with_every_round() -> None:
    figure = cpu.stack_core(TINY, 1000.0, tolerance=0.7)
    assert len(figure.rounds) == 2 and figure.value == max(figure.rounds) > 0
    rates = figure.detail["segments_per_second"]
    assert [round(ratio * 1000.0) for ratio in figure.rounds] == rates
    assert figure.tolerance == 0.7 and figure.gated


def test_every_fast_path_case_is_a_figure_gated_only_when_it_has_a_tolerance() -> None:
    figures = cpu.fast_paths(TINY, 1.0, {"strip.data": 0.7})
    assert {"fastpath.strip.data", "fastpath.pipeline.decode", "fastpath.send_packet"} <= set(figures)
    assert figures["fastpath.strip.data"].gated and not figures["fastpath.sim.pcap"].gated
    strip = figures["fastpath.strip.data"]
    # packets per second with a calibration of 1 loop/s: 1e9 / ns per packet
    assert round(1e9 / strip.value) == strip.detail["ns_per_packet_best"]
