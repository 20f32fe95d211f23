"""Bad input to `testbed probe` is one line and exit 2, before anything is built; the
report files follow the format the survey reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testbed.probe.bed import ProbeError
from testbed.probe.catalogue import GROUPS, VERDICTS, load
from testbed.probe.run import check_target, markdown, select_probes


def _testbed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True,
                          text=True, check=False)


@pytest.mark.parametrize(("args", "words"), [
    (["--target", "vax", "--out", "X"], "unknown target 'vax'"),
    (["--target", "kernel@4.9", "--out", "X"], "no fetched kernel matches '4.9'"),
    (["--target", "kernel@", "--out", "X"], "give a version after '@'"),
    (["--target", "command:mystack", "--out", "X"], "no [stacks.mystack] table"),
    (["--target", "python", "--out", "X", "--probes", "mpc_handshake,nope"], "unknown probe 'nope'"),
    (["--target", "python"], "needs --target"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, words):
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "probe", *args], capture_output=True,
                          text=True, check=False, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "X").exists()


def test_list_names_every_probe():
    done = _testbed("probe", "--list")
    assert done.returncode == 0
    assert len(done.stdout.strip().splitlines()) == len(load()) >= 40


def test_selection_keeps_order_and_drops_repeats():
    assert [p.name for p in select_probes(["join_data", "mpc_idsn", "join_data"])] == \
        ["join_data", "mpc_idsn"]
    with pytest.raises(ProbeError):
        select_probes(["mpc_idsn", "x"])
    check_target("kernel")
    check_target("python")


def test_catalogue_fields_fit_the_survey_interface():
    for probe in load().values():
        assert probe.group in GROUPS
        assert probe.name.replace("_", "").isalnum()
    assert {p.group for p in load().values()} == set(GROUPS)
    assert VERDICTS == ("pass", "fail", "not-implemented", "error", "not-measurable")


def test_markdown_table_and_traces():
    row = {"name": "mpc_idsn", "group": "signalling", "survey_row": "DSS", "rfc": "RFC 8684 §3.1",
           "verdict": "fail", "expected": "e", "observed": "a | b", "trace": ["  0.000 > sf0 S"],
           "counters": {"MPTcpExtX": 1},
           "counters_check": {"expected": {"X": ">=1"}, "observed": {"X": 1}, "agree": True}}
    text = markdown({"target": "kernel", "probes": [row]})
    assert "| mpc_idsn | signalling | DSS | RFC 8684 §3.1 | **fail** | a \\| b |" in text
    assert "0 pass, 1 fail" in text and "  0.000 > sf0 S" in text and "MPTcpExtX +1" in text
    json.dumps(row)
