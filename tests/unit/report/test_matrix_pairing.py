"""Matrix pairings naming kernel versions (issue 14 point 3): the grammar, the `kernel = ...`
each cell's endpoints get, and the check that every named version is fetched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import kernels
from testbed.errors import SpecError
from testbed.matrix import parse_matrix_spec, run, select
from testbed.matrix_pairing import Side, check_fetched, parse_sides, versions

RELEASES = {"6.1": "6.1.0-50-amd64", "6.12": "6.12.117+deb13-amd64"}


def _matrix(pairings: list[str]) -> dict:
    return {"name": "versions", "pairings": pairings,
            "base": {"topology": {"name": "two_path"}, "traffic": {"seconds": 1}},
            "middleboxes": [{"name": "none", "chain": [], "expect": {"default": "mptcp"}}]}


@pytest.mark.parametrize("pairing, client, server", [
    ("kernel-kernel", Side("kernel"), Side("kernel")),
    ("kernel@6.1-kernel", Side("kernel", "6.1"), Side("kernel")),
    ("kernel-kernel@6.12", Side("kernel"), Side("kernel", "6.12")),
    ("python-kernel@newest", Side("python"), Side("kernel", "newest")),
    ("kernel@6.1-kernel@newest", Side("kernel", "6.1"), Side("kernel", "newest")),
    ("kernel@6.12.117+deb13-python", Side("kernel", "6.12.117+deb13"), Side("python")),
])
def test_pairings_name_a_version_per_kernel_side(pairing: str, client: Side, server: Side) -> None:
    assert parse_sides(pairing, "here") == (client, server)
    assert f"{client.text}-{server.text}" == pairing


@pytest.mark.parametrize("pairing, message", [
    ("kernel@6.1", "must be CLIENT-SERVER"),
    ("kernel@6.12.117+deb13-amd64-kernel", "must be CLIENT-SERVER"),  # a release's '-' is ambiguous
    ("python@6.1-kernel", "only kernel runs on another version"),
    ("kernel-tcp@6.1", "only kernel runs on another version"),
    ("kernel@-kernel", "'' is not a kernel version"),
    ("kernel@latest-kernel", "'latest' is not a kernel version"),
    ("kernel@6.1@6.12-kernel", "'6.1@6.12' is not a kernel version"),
    ("quic@6.1-kernel", "unknown stack 'quic'"),
])
def test_a_malformed_pairing_is_one_spec_error(pairing: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_matrix_spec(_matrix([pairing]), source="m.toml")


def test_each_cell_runs_its_kernel_sides_on_their_versions_and_the_bare_kernel_on_the_host() -> None:
    matrix = parse_matrix_spec(_matrix(["kernel@6.1-kernel", "kernel-kernel@6.12", "python-kernel@newest",
                                        "kernel@6.1-kernel@newest", "kernel-kernel"]))
    kernels_of = {cell.pairing: (cell.spec.client.kernel, cell.spec.server.kernel) for cell in matrix.cells}
    assert kernels_of == {"kernel@6.1-kernel": ("6.1", None), "kernel-kernel@6.12": (None, "6.12"),
                          "python-kernel@newest": (None, "newest"),
                          "kernel@6.1-kernel@newest": ("6.1", "newest"), "kernel-kernel": (None, None)}
    stacks = {cell.pairing: (cell.spec.client.stack, cell.spec.server.stack) for cell in matrix.cells}
    assert stacks["python-kernel@newest"] == ("python", "kernel")
    assert versions(matrix.pairings) == ["6.1", "6.12", "newest"]
    # expectations are keyed by the full pairing; --pairings selects by it
    assert select(matrix, None, "kernel-kernel@6.12").pairings == ("kernel-kernel@6.12",)


def _fake_cache(cache: Path) -> None:
    for upstream, release in RELEASES.items():
        root = cache / release
        root.mkdir(parents=True)
        (root / kernels.METADATA).write_text(json.dumps({
            "release": release, "package": f"linux-image-{release}", "version": f"{upstream}.1-1",
            "suite": "bookworm"}))


def test_every_named_version_must_be_fetched_before_anything_runs(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    _fake_cache(tmp_path / "cache")
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    assert check_fetched(["kernel@6.1-kernel", "python-kernel@6.12"]) == RELEASES
    assert check_fetched(["kernel-kernel", "python-python"]) == {}
    with pytest.raises(SpecError, match=r"^pairing kernel-kernel@7\.2: kernels: no fetched kernel matches "
                                        r"'7\.2'.*`testbed kernels fetch 7\.2`"):
        check_fetched(["kernel@6.1-kernel", "kernel-kernel@7.2"])

    spec = tmp_path / "m.toml"
    spec.write_text('pairings = ["kernel-kernel", "kernel@5.10-kernel"]\n[base.topology]\nname = "two_path"\n'
                    '[base.traffic]\nseconds = 1\n[[middleboxes]]\nname = "none"\nchain = []\n')

    def never(*args: object, **kwargs: object) -> dict:
        raise AssertionError("a cell ran although a version is not fetched")

    args = type("Args", (), {"spec": str(spec), "rows": None, "pairings": None, "repeat": 1, "jobs": 1,
                             "check": False, "out": str(tmp_path / "out"), "resume": False, "junit": None})
    with pytest.raises(SpecError, match=r"5\.10"):
        run(args, runner=never)
    assert not (tmp_path / "out").exists()
    args.pairings = "kernel-kernel"  # only the selected pairings' versions must be fetched
    args.check = True
    assert run(args, runner=never) == 0


def test_a_versioned_pairing_expects_its_host_pairing_unless_the_row_names_it() -> None:
    raw = _matrix(["kernel-kernel", "kernel@6.1-kernel", "kernel-kernel@6.12", "python-kernel@6.1"])
    raw["middleboxes"][0]["expect"] = {"kernel-kernel": "reset \u00b7 corrupted",
                                       "default": "fallback-infinite-map",
                                       "kernel-kernel@6.12": "fallback-infinite-map"}
    matrix = parse_matrix_spec(raw)
    assert {c.pairing: c.expected for c in matrix.cells} == {
        "kernel-kernel": "reset \u00b7 corrupted", "kernel@6.1-kernel": "reset \u00b7 corrupted",
        "kernel-kernel@6.12": "fallback-infinite-map", "python-kernel@6.1": "fallback-infinite-map"}
    raw["middleboxes"][0]["expect"] = {"kernel-python": "mptcp"}  # not a pairing of this matrix
    with pytest.raises(SpecError, match="unknown key 'kernel-python'"):
        parse_matrix_spec(raw)


EXPERIMENTS = Path(__file__).parents[3] / "experiments"


def test_the_kernels_matrix_runs_every_fallback_row_on_every_version() -> None:
    from testbed.matrix import load_matrix_spec

    kernels_matrix = load_matrix_spec(EXPERIMENTS / "fallback_matrix_kernels.toml")
    fallback = load_matrix_spec(EXPERIMENTS / "fallback_matrix.toml")
    assert [r.name for r in kernels_matrix.rows] == [r.name for r in fallback.rows]
    for mine, theirs in zip(kernels_matrix.rows, fallback.rows, strict=True):
        assert (mine.middleboxes, mine.mptcp, mine.timeline) == (theirs.middleboxes, theirs.mptcp,
                                                                 theirs.timeline)
        if mine.name == "strip_mptcp_switched_on":  # the one row_overrides entry
            assert mine.traffic == {**theirs.traffic, "bytes": 8000000}
        else:
            assert mine.traffic == theirs.traffic
        for pairing in kernels_matrix.pairings:
            host = pairing.replace("@6.12", "").replace("@6.1", "").replace("@newest", "")
            assert mine.expect.get(pairing) == theirs.expect.get(host), (mine.name, pairing)
    assert set(versions(kernels_matrix.pairings)) == {"6.1", "6.12", "newest"}
    # each fetched version as client and as server against the host's kernel, python -> each
    for version in ("6.1", "6.12", "newest"):
        for pairing in (f"kernel@{version}-kernel", f"kernel-kernel@{version}", f"python-kernel@{version}"):
            assert pairing in kernels_matrix.pairings
    cell = next(c for c in kernels_matrix.cells if c.pairing == "kernel@6.1-kernel")
    assert cell.spec.topology_params["rate_mbit"] == 2 and cell.spec.client.kernel == "6.1"


def test_rows_from_and_overrides_are_checked(tmp_path: Path) -> None:
    raw = _matrix(["kernel-kernel"])
    del raw["middleboxes"]
    raw["rows_from"] = str(EXPERIMENTS / "fallback_matrix.toml")
    raw["row_overrides"] = {"no_such_row": {"traffic": {"bytes": 1}}}
    with pytest.raises(SpecError, match=r"row_overrides\.no_such_row: no such row"):
        parse_matrix_spec(raw, source=str(tmp_path / "m.toml"))
    raw["row_overrides"] = {"none": {"expect": {"default": "mptcp"}}}
    with pytest.raises(SpecError, match="unknown key 'expect'"):
        parse_matrix_spec(raw, source=str(tmp_path / "m.toml"))
    raw["rows_from"] = "missing.toml"
    with pytest.raises(SpecError, match="no such matrix spec file"):
        parse_matrix_spec(raw, source=str(tmp_path / "m.toml"))


def _doc(classes: dict[tuple[str, str], tuple[str, str] | None], pairings: list[str]) -> dict:
    cells = [{"row": row, "pairing": pairing, "status": "ok", "outcome": c[0], "integrity": c[1]}
             if c else {"row": row, "pairing": pairing, "status": "error", "error": "boom"}
             for (row, pairing), c in classes.items()]
    rows = sorted({row for row, _ in classes})
    return {"name": "v", "pairings": pairings, "rows": [{"name": r, "label": r} for r in rows],
            "cells": cells, "summary": {}}


def test_each_row_says_whether_every_version_behaves_the_same() -> None:
    from testbed.report.tables import matrix_html, matrix_markdown
    from testbed.report.versions import row_summary

    pairings = ["kernel-kernel", "kernel@6.1-kernel", "kernel-kernel@6.1", "python-kernel",
                "python-kernel@6.1"]
    doc = _doc({("a", "kernel-kernel"): ("mptcp", "ok"), ("a", "kernel@6.1-kernel"): ("mptcp", "ok"),
                ("a", "kernel-kernel@6.1"): ("mptcp", "ok"), ("a", "python-kernel"): ("fallback-syn", "ok"),
                ("a", "python-kernel@6.1"): ("fallback-syn", "ok"),
                ("b", "kernel-kernel"): ("reset", "corrupted"), ("b", "kernel@6.1-kernel"): ("mptcp", "ok"),
                ("b", "kernel-kernel@6.1"): ("reset", "corrupted"), ("b", "python-kernel"): None},
               pairings)
    # python -> kernel may differ from kernel -> kernel: only versions of one pairing are compared
    assert row_summary(doc, "a") == "same on all versions"
    assert row_summary(doc, "b") == ("kernel \u2192 kernel differs (reset \u00b7 corrupted: kernel-kernel, "
                                     "kernel-kernel@6.1; mptcp: kernel@6.1-kernel) "
                                     "(2 cells not run or failed)")
    assert row_summary(doc, "c") == "not run"
    markdown = matrix_markdown(doc)
    assert "| Middlebox | kernel \u2192 kernel | kernel@6.1 \u2192 kernel |" in markdown
    assert any(line.startswith("| Middlebox |") and line.endswith("| Across versions |")
               for line in markdown.splitlines())
    assert "| same on all versions |" in markdown
    assert "<th>Across versions</th>" in matrix_html(doc)
    plain = _doc({("a", "kernel-kernel"): ("mptcp", "ok")}, ["kernel-kernel"])
    assert "Across versions" not in matrix_markdown(plain)
