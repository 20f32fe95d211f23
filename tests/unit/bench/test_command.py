"""`testbed bench` refuses bad baselines in one line before measuring anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.bench import record
from testbed.bench.command import better_of
from testbed.cli import main


def test_a_missing_baseline_is_exit_2_in_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--compare", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("testbed: cannot read the benchmark baseline") and err.count("\n") == 1


def test_a_full_baseline_with_quick_is_refused(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "full.json"
    path.write_text(json.dumps({"schema": record.SCHEMA, "version": record.VERSION,
                                "quick": False, "machine": {}, "figures": {}}))
    assert main(["bench", "--quick", "--compare", str(path)]) == 2
    assert "is a full baseline; run `testbed bench` to compare" in capsys.readouterr().err


def test_the_committed_baselines_load() -> None:
    root = Path(__file__).resolve().parents[3] / "experiments" / "baselines"
    for name, quick in (("bench_quick.json", True), ("bench_full.json", False)):
        doc = record.load(root / name)
        assert doc["quick"] is quick
        assert any(figure["gated"] for figure in doc["figures"].values())


def test_a_figure_below_tolerance_counts_with_the_better_of_two_measurements() -> None:
    def doc(strip: float, delay: float, core: float) -> dict:
        return {"figures": {
            "fastpath.strip.data": {"value": strip, "better": "higher", "detail": {}},
            "delay_stage.added_ms.idle": {"value": delay, "better": "lower", "detail": {}},
            "stack.core": {"value": core, "better": "higher", "detail": {}}}}

    first, second = doc(2.4, 9.0, 0.35), doc(3.9, 4.0, 0.20)
    merged = better_of(first, second, ["fastpath.strip.data", "delay_stage.added_ms.idle"])
    figures = merged["figures"]
    assert figures["fastpath.strip.data"]["value"] == 3.9
    assert figures["delay_stage.added_ms.idle"]["value"] == 4.0  # lower is better
    assert figures["stack.core"]["value"] == 0.35  # not below tolerance: the first run's
    assert figures["fastpath.strip.data"]["detail"]["confirmation"]["values"] == [2.4, 3.9]
    assert first["figures"]["fastpath.strip.data"]["value"] == 2.4  # the first run untouched
