"""The typed result: exact round trip to result.json, upgrade of schema-1 files, one schema check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import errors
from testbed.result import (
    MATRIX_SCHEMA,
    SCHEMA,
    Result,
    check_document,
    load_result,
    read_matrix_document,
    read_result,
    upgrade,
)

FIXTURES = Path(__file__).parent / "fixtures"
# made by `testbed run experiments/two_path_kernel.toml` with the code before schema 2
SCHEMA1_RUN = FIXTURES / "schema1_two_path_kernel.json"
REPORT_FIXTURES = Path(__file__).parents[1] / "report" / "fixtures"


def test_a_schema1_file_upgrades_and_loads_with_every_old_key_unchanged() -> None:
    old = json.loads(SCHEMA1_RUN.read_text())
    assert old["schema"] == 1
    result = load_result(SCHEMA1_RUN)
    doc = result.to_json()
    assert doc["schema"] == SCHEMA == 3
    assert {k: v for k, v in doc.items() if k not in ("schema", "endpoints", "teardown_problems",
                                                      "connections")} == \
        {k: v for k, v in old.items() if k not in ("schema", "connections")}
    # schema 3: every old key of a connection unchanged (it was intact: integrity ok), plus the
    # oracle's verdict, which an old file can only say it did not have
    [connection] = doc["connections"]
    [old_connection] = old["connections"]
    assert old_connection["integrity"] == "ok"
    assert {k: v for k, v in connection.items()
            if k not in ("integrity_verdict", "expected_subflows")} == old_connection
    assert connection["expected_subflows"] is None  # not recorded before schema 3
    assert connection["integrity_verdict"]["integrity"] == "ok"
    assert "upgraded from a schema 2 result" in connection["integrity_verdict"]["description"]
    # what schema 1 knew: the stacks and the client's payload seed (an upload); not the rest
    assert doc["endpoints"]["client"] == {"stack": "kernel", "seed": None, "payload_seed": 1,
                                          "exit_code": None}
    assert doc["endpoints"]["server"]["payload_seed"] is None
    assert doc["teardown_problems"] == []


def test_round_trip_is_exact() -> None:
    result = load_result(SCHEMA1_RUN)
    again = Result.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    assert again.to_json() == result.to_json()
    assert result.connection.subflows[0].bytes == result.to_json()["connections"][0]["subflows"][0]["bytes"]


def test_interrupted_appears_only_when_set() -> None:
    result = load_result(SCHEMA1_RUN)
    assert "interrupted" not in result.to_json()
    result.interrupted = True
    assert Result.from_json(result.to_json()).interrupted is True


def test_every_stored_report_fixture_reads_through_the_one_check() -> None:
    files = sorted(REPORT_FIXTURES.rglob("result.json"))
    assert len(files) >= 4
    for path in files:  # trimmed by hand (no topology, shaping, ...): read as documents
        doc = read_result(path)
        assert doc["schema"] == SCHEMA
        assert doc["connections"][0]["mptcp_info"] == {"client": None, "server": None}
    matrix = read_matrix_document(REPORT_FIXTURES / "matrix" / "matrix.json")
    assert matrix["schema"] == MATRIX_SCHEMA


def test_unknown_schemas_and_kinds_are_errors_that_say_so(tmp_path: Path) -> None:
    with pytest.raises(errors.TestbedError, match="schema 99"):
        upgrade({"schema": 99}, "x")
    with pytest.raises(errors.TestbedError, match="matrix schema 7"):
        check_document({"kind": "matrix", "schema": 7}, "m")
    matrix = tmp_path / "result.json"
    matrix.write_text(json.dumps({"kind": "matrix", "schema": MATRIX_SCHEMA}))
    with pytest.raises(errors.TestbedError, match="a matrix file"):
        read_result(matrix)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(errors.TestbedError, match="not JSON"):
        load_result(broken)
    with pytest.raises(errors.TestbedError, match="shape"):
        Result.from_json({"schema": SCHEMA, "name": "x"})
