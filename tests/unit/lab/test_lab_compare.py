"""testbed lab compare's report: the matrix through `testbed compare`, the Prague demo per phase."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from testbed.lab_compare import _extract_plain, experiment_commands, write_report

FIXTURE = Path(__file__).resolve().parents[1] / "report" / "fixtures" / "matrix"


def _phase(name: str, a: float, b: float, passed: bool) -> dict:
    return {"phase": name, "mbps": {"a": a, "b": b}, "shares": {"a": round(a / (a + b), 3)},
            "passed": passed}


def _side(root: Path, *, none_goodput: float, phases: list[dict]) -> None:
    shutil.copytree(FIXTURE, root / "matrix")
    doc = json.loads((root / "matrix" / "matrix.json").read_text())
    for cell in doc["cells"]:
        if (cell["row"], cell["pairing"]) == ("none", "kernel-kernel"):
            cell["goodput_mbps"] = none_goodput
    (root / "matrix" / "matrix.json").write_text(json.dumps(doc))
    (root / "prague").mkdir()
    (root / "prague" / "prague.json").write_text(json.dumps({"summary": phases}))


def test_report_puts_both_sides_next_to_each_other(tmp_path: Path) -> None:
    _side(tmp_path / "host", none_goodput=187.2, phases=[_phase("clean", 93.3, 93.3, True),
                                                        _phase("loss-a", 9.7, 91.5, True)])
    _side(tmp_path / "lab", none_goodput=40.0, phases=[_phase("clean", 70.0, 81.9, False)])
    text = write_report(tmp_path, {"host": {"matrix": 0}, "lab": {"matrix": 0}}, {"host matrix": 38.0})
    # the CPU-bound guest's goodput shows as a regression of the reference cell, the classes match
    assert "none \u00d7 kernel-kernel" in text and "REGRESSION  goodput -78.6%" in text
    assert "| clean | 93.3 + 93.3 Mbit/s, a 0.50, PASS | 70.0 + 81.9 Mbit/s, a 0.46, FAIL |" in text
    assert "| loss-a | 9.7 + 91.5 Mbit/s, a 0.10, PASS | not run |" in text
    record = json.loads((tmp_path / "compare.json").read_text())
    assert {c["verdict"] for c in record["matrix"]} >= {"regression", "same"}
    assert (tmp_path / "compare.md").read_text() == text


def test_both_sides_run_the_same_experiments() -> None:
    assert experiment_commands("X", None) == [
        ("matrix", ["matrix", "experiments/fallback_matrix_ci.toml", "--out", "X/matrix"]),
        ("prague", ["demo", "prague", "--out", "X/prague"])]
    assert experiment_commands("X", 4.0)[1][1][-2:] == ["--phase-seconds", "4"]


def _archive(add) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        add(archive)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r:gz")


def _file(archive: tarfile.TarFile, name: str, data: bytes = b"{}") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_the_vms_archive_unpacks_only_plain_files_below_the_output(tmp_path: Path) -> None:
    _extract_plain(_archive(lambda a: _file(a, "./matrix/matrix.json")), tmp_path / "ok")
    assert (tmp_path / "ok" / "matrix" / "matrix.json").read_bytes() == b"{}"

    def link(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("./evil")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)

    for add in (link, lambda a: _file(a, "../escape.json"), lambda a: _file(a, "/abs.json")):
        with pytest.raises(ValueError, match="refusing"):
            _extract_plain(_archive(add), tmp_path / "bad")
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "bad").exists()
