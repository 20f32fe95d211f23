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
