"""Finding files: the loader's validation (one line per problem), the predicates over result
documents, the status file, and the committed findings themselves (they load, their
reproducers resolve to runnable specs, and each predicate agrees with the evidence it cites)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testbed import errors
from testbed.cli import main as cli_main
from testbed.errors import SpecError
from testbed.findings import (
    ABSENT,
    NOT_TRIGGERED,
    PRESENT,
    PROJECT_ROOT,
    judge,
    kernel_release,
    load_finding,
    load_findings,
    lookup,
    parse_predicate,
    read_status,
    record_status,
    select_findings,
    status_record,
    status_summary,
    write_status,
)

FINDING = """
id = "{id}"
title = "Example stalls after the thing"
implementation = "Linux kernel MPTCP"
deviating_side = "sender (client)"
summary = "What happens."
selftests = "None cover it."
[rfc]
section = "3.7"
rule = "After the fallback the connection is plain TCP."
[reproducer]
spec = "experiments/middleboxes/rewrite_payload_dss_checksum_late.toml"
[shows_when]
all = [
    {{ path = "connection.integrity", equals = "truncated" }},
    {{ path = "connection.counters.server.MPTcpExtDataCsumErr", at_least = 1, default = 0 }},
]
[triggered_when]
any = [{{ path = "middlebox_stats.mb_a.middleboxes.0.counters.changed", at_least = 1, default = 0 }}]
[evidence]
date = "2026-12-05"
kernel = "6.18"
command = "testbed run x --out y"
outcome = "mp-fail"
integrity = "truncated"
verdict = "the receiver got the first 10 bytes"
[[discussion]]
url = "https://example.org/1"
title = "t"
relation = "r"
"""


def write_finding(directory: Path, finding_id: str = "example-stall", text: str | None = None) -> Path:
    path = directory / f"{finding_id}.toml"
    path.write_text(text if text is not None else FINDING.format(id=finding_id))
    return path


def result(integrity: str = "truncated", csum_err: int | None = 1, changed: int = 1,
           release: str = "6.18.1") -> dict[str, Any]:
    server = {"MPTcpExtDataCsumErr": csum_err} if csum_err is not None else {}
    return {
        "environment": {"kernel": release},
        "connections": [{"outcome": "mp-fail", "integrity": integrity,
                         "counters": {"client": {}, "server": server},
                         "integrity_verdict": {"description": "a verdict"}}],
        "middlebox_stats": {"mb_a": {"middleboxes": [{"name": "rewrite_payload",
                                                      "counters": {"changed": changed}}]}},
    }


def test_a_valid_file_loads_with_its_reproducer_command(tmp_path: Path) -> None:
    finding = load_finding(write_finding(tmp_path))
    assert finding.id == "example-stall"
    assert finding.reproducer.command("D") == (
        "testbed run experiments/middleboxes/rewrite_payload_dss_checksum_late.toml --out D")
    assert finding.discussion[0].url == "https://example.org/1"


@pytest.mark.parametrize(("old", "new", "message"), [
    ('section = "3.7"\n', "", "missing required key 'section'"),
    ('selftests = "None cover it."\n', 'selftests = "x"\nseverity = 3\n', "unknown key 'severity'"),
    ('id = "example-stall"', 'id = "other"', "must equal the file name"),
    ('spec = "experiments/middleboxes/rewrite_payload_dss_checksum_late.toml"', 'spec = "nope.toml"',
     "nope.toml does not exist"),
    ('equals = "truncated"', 'equals = "truncated", in = ["x"]', "exactly one operator"),
    ('at_least = 1, default = 0 },\n]', 'at_least = "1" },\n]', "expected a number"),
    ('equals = "truncated"', 'matches = "("', "not a regular expression"),
    ('date = "2026-12-05"', 'date = "yesterday"', "not YYYY-MM-DD"),
    ('relation = "r"', 'relation = 3', "expected str"),
    ('[reproducer]\nspec', '[reproducer]\nrow = "a"\nspec', "either spec, or matrix"),
])
def test_a_malformed_file_is_one_line_naming_file_and_key(tmp_path: Path, old: str, new: str,
                                                          message: str) -> None:
    template = FINDING.format(id="example-stall")
    assert old in template, old
    path = write_finding(tmp_path, text=template.replace(old, new, 1))
    with pytest.raises(SpecError) as caught:
        load_finding(path)
    assert message in caught.value.message and str(path) in caught.value.message
    assert "\n" not in caught.value.message


def test_malformed_toml_is_one_line(tmp_path: Path) -> None:
    path = write_finding(tmp_path, text="id = [")
    with pytest.raises(SpecError, match="malformed TOML"):
        load_finding(path)


def test_a_matrix_cell_reproducer_needs_row_and_pairing(tmp_path: Path) -> None:
    text = FINDING.format(id="example-stall").replace(
        'spec = "experiments/middleboxes/rewrite_payload_dss_checksum_late.toml"',
        'matrix = "experiments/fallback_matrix.toml"\nrow = "strip_dss_data"')
    with pytest.raises(SpecError, match="missing 'pairing'"):
        load_finding(write_finding(tmp_path, text=text))
    finding = load_finding(write_finding(tmp_path, text=text.replace(
        'row = "strip_dss_data"', 'row = "strip_dss_data"\npairing = "kernel-kernel"')))
    assert finding.reproducer.command("D") == ("testbed matrix experiments/fallback_matrix.toml "
                                               "--rows strip_dss_data --pairings kernel-kernel --out D")
    assert finding.reproducer.result_path(Path("D")) == Path(
        "D/cells/strip_dss_data/kernel-kernel/result.json")


def test_lookup_follows_dicts_lists_and_the_connection_alias() -> None:
    doc = result()
    assert lookup(doc, "connection.integrity") == (True, "truncated")
    assert lookup(doc, "connections.0.integrity") == (True, "truncated")
    assert lookup(doc, "middlebox_stats.mb_a.middleboxes.0.name") == (True, "rewrite_payload")
    assert lookup(doc, "connections.1.integrity") == (False, None)
    assert lookup(doc, "connection.counters.server.Nope") == (False, None)


def test_judge_present_absent_and_not_triggered(tmp_path: Path) -> None:
    finding = load_finding(write_finding(tmp_path))
    assert judge(finding, result()).status == PRESENT
    assert judge(finding, result(integrity="alg-edited")).status == ABSENT
    # a missing counter takes the condition's default (0), so it is not at least 1
    assert judge(finding, result(csum_err=None)).status == ABSENT
    assert judge(finding, result(changed=0)).status == NOT_TRIGGERED
    reasons = judge(finding, result(integrity="ok")).reasons
    assert any(line.startswith("shows: no  connection.integrity equals 'truncated'") for line in reasons)


def test_predicate_operators() -> None:
    doc = {"a": 3, "b": "from byte 9 the receiver has bytes 0.. again", "c": None}
    cases = [
        ({"path": "a", "in": [1, 3]}, True), ({"path": "a", "at_most": 2}, False),
        ({"path": "b", "matches": r"\bagain\b"}, True), ({"path": "c", "at_least": 0}, False),
        ({"path": "b", "at_least": 0}, False), ({"path": "missing", "equals": None}, False),
        ({"path": "missing", "equals": None, "default": None}, True),
    ]
    for condition, expected in cases:
        assert parse_predicate({"all": [condition]}, "p").evaluate(doc)[0] is expected, condition
    either = parse_predicate({"any": [{"path": "a", "equals": 1}, {"path": "a", "equals": 3}]}, "p")
    assert either.evaluate(doc)[0]
    with pytest.raises(SpecError, match="at least one condition"):
        parse_predicate({}, "p")


def test_status_file_round_trip_keeps_every_kernel(tmp_path: Path) -> None:
    finding = load_finding(write_finding(tmp_path))
    assert read_status(tmp_path) == {}
    status: dict[str, Any] = {}
    doc = result()
    record = status_record(judge(finding, doc), doc, date="2026-12-05", command="c", result_path="r")
    record_status(status, finding.id, kernel_release(doc), record)
    record_status(status, finding.id, "6.1.0", {"status": ABSENT, "date": "2026-12-06", "command": "c"})
    write_status(status, tmp_path)
    again = read_status(tmp_path)
    assert again[finding.id]["6.18.1"] == {
        "status": PRESENT, "date": "2026-12-05", "command": "c", "outcome": "mp-fail",
        "integrity": "truncated", "verdict": "a verdict", "result": "r"}
    assert set(again[finding.id]) == {"6.18.1", "6.1.0"}
    assert status_summary(again[finding.id], ["6.18.1", "6.12.9"]) == (
        "absent on 6.1.0 (2026-12-06); present on 6.18.1 (2026-12-05); not-run on 6.12.9")
    assert status_summary({}, []) == "not-run"
    (tmp_path / "status.json").write_text("{")
    with pytest.raises(errors.TestbedError, match="unreadable status file"):
        read_status(tmp_path)


def test_select_by_id_and_unknown_id(tmp_path: Path) -> None:
    findings = [load_finding(write_finding(tmp_path))]
    assert select_findings(findings, []) == findings
    with pytest.raises(SpecError, match="no finding 'nope'"):
        select_findings(findings, ["nope"])


def test_cli_lists_and_rejects_bad_input_with_exit_2(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    write_finding(tmp_path)
    assert cli_main(["findings", "--findings-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "example-stall" in out and "status: not-run on " in out
    assert cli_main(["findings", "--findings-dir", str(tmp_path), "check", "nope"]) == 2
    assert "no finding 'nope'" in capsys.readouterr().err
    write_finding(tmp_path, "broken", text="id = 1")
    assert cli_main(["findings", "--findings-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "broken.toml" in err and len(err.strip().splitlines()) == 1


# ---- the committed findings ------------------------------------------------------------------

COMMITTED = load_findings()


def test_there_are_committed_findings_and_a_status_for_each() -> None:
    assert len(COMMITTED) >= 3
    status = read_status()
    for finding in COMMITTED:
        assert finding.id in status, f"{finding.id}: run `testbed findings check {finding.id}`"


@pytest.mark.parametrize("finding", COMMITTED, ids=lambda f: f.id)
def test_each_reproducer_resolves_to_a_runnable_spec(finding: Any) -> None:
    from testbed.matrix import load_matrix_spec, select
    from testbed.spec import load_spec

    reproducer = finding.reproducer
    if reproducer.spec:
        load_spec(PROJECT_ROOT / reproducer.spec)
        assert reproducer.guest is not None, f"{finding.id}: say at which rates a guest reproduces it"
        from testbed.findings_versions import KernelChoice, version_spec

        on_guest = version_spec(finding, KernelChoice("6.1.0-50-amd64", "p", "6.1.176-1", "s", host=False))
        # the guest's roles on the kernel checked, any other Linux endpoint on the host's
        roles = reproducer.guest.roles
        assert {e.kernel for e in on_guest.endpoints if e.stack == "kernel" and e.role in roles} \
            == {"6.1.0-50-amd64"}
        assert {e.kernel for e in on_guest.endpoints if e.role not in roles} <= {None}
    else:
        matrix = select(load_matrix_spec(PROJECT_ROOT / reproducer.matrix), reproducer.row,
                        reproducer.pairing)
        assert len(matrix.cells) == 1


@pytest.mark.parametrize("finding", COMMITTED, ids=lambda f: f.id)
def test_each_predicate_agrees_with_the_status_it_recorded(finding: Any) -> None:
    """The recorded outcome and integrity (from a real run) fed back through the predicate's
    class conditions give the recorded status (the counters are not in the status file)."""
    for release, record in read_status().get(finding.id, {}).items():
        if record["status"] not in (PRESENT, ABSENT) or "outcome" not in record:
            continue
        doc = {"connections": [{"outcome": record["outcome"], "integrity": record["integrity"],
                                "integrity_verdict": {"description": record.get("verdict")}}]}
        class_conditions = [c for c in finding.shows_when.all
                            if c.path in ("connection.outcome", "connection.integrity")]
        holds = all(c.holds(doc)[0] for c in class_conditions)
        if record["status"] == PRESENT:
            assert holds, (release, record)


def test_status_file_is_sorted_json() -> None:
    path = PROJECT_ROOT / "findings" / "status.json"
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


# ---- the check command's bookkeeping and exit status (the runs are stood in for) -------------

def _writer(doc: dict[str, Any]) -> Any:
    def run(finding: Any, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"schema": 3, "kind": "experiment", **doc}))
    return run


def test_check_records_status_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.findings_check import check

    findings = [load_finding(write_finding(tmp_path))]
    assert check(findings, tmp_path, tmp_path / "runs", strict=True, runner=_writer(result())) == 0
    assert read_status(tmp_path)["example-stall"]["6.18.1"]["status"] == PRESENT
    absent = _writer(result(integrity="ok", release="6.1.0"))
    assert check(findings, tmp_path, tmp_path / "runs", strict=False, runner=absent) == 0
    assert check(findings, tmp_path, tmp_path / "runs", strict=True, runner=absent) == 1
    status = read_status(tmp_path)["example-stall"]
    assert status["6.1.0"]["status"] == ABSENT and status["6.18.1"]["status"] == PRESENT

    def broken(finding: Any, out: Path) -> None:
        raise errors.TestbedError("namespace set-up failed")

    assert check(findings, tmp_path, tmp_path / "runs", strict=False, runner=broken) == 1
    assert "error" in capsys.readouterr().out


def test_a_run_that_leaves_no_result_is_an_error_not_an_older_result(tmp_path: Path) -> None:
    from testbed.findings_check import check

    findings = [load_finding(write_finding(tmp_path))]
    assert check(findings, tmp_path, tmp_path / "runs", strict=False, runner=_writer(result())) == 0
    assert check(findings, tmp_path, tmp_path / "runs", strict=False,
                 runner=lambda finding, out: None) == 1
    assert read_status(tmp_path)["example-stall"]["6.18.1"]["status"] == PRESENT  # other release
    assert any(r["status"] == "error" for r in read_status(tmp_path)["example-stall"].values())


def test_attempts_rerun_only_while_not_triggered(tmp_path: Path) -> None:
    from testbed.findings_check import check

    findings = [load_finding(write_finding(tmp_path))]
    runs: list[int] = []

    def merges_on_the_third_run(finding: Any, out: Path) -> None:
        runs.append(1)
        _writer(result(changed=1 if len(runs) == 3 else 0))(finding, out)

    assert check(findings, tmp_path, tmp_path / "runs", strict=True, attempts=5,
                 runner=merges_on_the_third_run) == 0
    record = read_status(tmp_path)["example-stall"]["6.18.1"]
    assert len(runs) == 3 and record["status"] == PRESENT and record["runs"] == 3
    runs.clear()
    assert check(findings, tmp_path, tmp_path / "runs", strict=False, attempts=2,
                 runner=_writer(result(changed=0))) == 0
    assert read_status(tmp_path)["example-stall"]["6.18.1"]["status"] == NOT_TRIGGERED
    assert cli_main(["findings", "--findings-dir", str(tmp_path), "check", "--attempts", "0"]) == 2
