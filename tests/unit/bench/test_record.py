"""The benchmark file: written whole, read back checked, bad files refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import errors
from testbed.bench import record
from testbed.bench.record import Figure
from testbed.errors import SpecError


def _doc() -> dict:
    figures = {"stack.core": Figure(value=0.25, unit="segments per loop", reference="loop",
                                    rounds=[0.2, 0.25], tolerance=0.7)}
    return record.document(figures, {"id": "x", "loops_per_second": 1, "rounds": [1]},
                           quick=True, machine_info=record.machine())


def test_a_written_file_loads_back_with_schema_version_and_machine(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "bench.json"
    record.write(path, _doc())
    doc = record.load(path)
    assert (doc["schema"], doc["version"], doc["quick"]) == ("testbed-bench", 1, True)
    assert {"cpu_model", "cores", "kernel", "python", "commit"} <= set(doc["machine"])
    figure = doc["figures"]["stack.core"]
    assert (figure["value"], figure["rounds"], figure["better"]) == (0.25, [0.2, 0.25], "higher")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(schema="other"), "not a benchmark file"),
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(figures=[]), "'figures' must be an object"),
    (lambda d: d["figures"]["stack.core"].pop("value"), "'value' is missing"),
    (lambda d: d["figures"]["stack.core"].update(better="up"), "'better' must be one of"),
    (lambda d: d["figures"]["stack.core"].update(tolerance=1.5), "'tolerance' must be in"),
])
def test_a_bad_baseline_is_refused_naming_what_is_wrong(tmp_path: Path, edit, message: str) -> None:
    doc = json.loads(json.dumps(_doc()))
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SpecError, match=message) as caught:
        record.load(path)
    assert caught.value.exit_code == 2 and "\n" not in caught.value.message


def test_unreadable_and_non_json_baselines_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        record.load(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(SpecError, match="not JSON"):
        record.load(tmp_path / "text.json")


def test_a_failed_write_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(errors.TestbedError, match="cannot write the benchmark file"):
        record.write(blocker / "bench.json", _doc())
