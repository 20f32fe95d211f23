"""--resume's question "is the stored spec this spec?" (testbed.spec_compare): a field added
since the cell ran matches only at its default; every other difference is a different spec."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

from testbed.matrix import parse_matrix_spec, run_matrix
from testbed.proxy.spec import load_spec as load_proxy_spec
from testbed.spec_compare import same_spec
from tests.unit.report.test_matrix import SPEC, FakeRunner

ROOT = Path(__file__).resolve().parents[3]


def stored(spec: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec), default=str))


def cell_spec():
    return parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml").cells[2].spec  # strip_syn, kernel-kernel


def test_the_same_spec_through_json_matches_and_any_change_does_not() -> None:
    spec = cell_spec()
    assert same_spec(stored(spec), spec)
    changed = stored(spec)
    changed["traffic"]["bytes"] = 1001
    assert not same_spec(changed, spec)
    extra = stored(spec)
    extra["mptcp"]["removed_since"] = 1  # a field the spec no longer has
    assert not same_spec(extra, spec)
    box = stored(spec)
    box["middleboxes"][0]["params"]["what"] = ["mp_join"]
    assert not same_spec(box, spec)
    assert not same_spec(None, spec) and not same_spec([], spec)


def test_a_field_added_since_the_run_matches_only_at_its_default() -> None:
    spec = cell_spec()
    older = stored(spec)
    del older["mptcp"]["server_c_flag"]  # a result written before the field existed
    assert same_spec(older, spec)
    flagged = dataclasses.replace(spec, mptcp=dataclasses.replace(spec.mptcp, server_c_flag=True))
    assert not same_spec(older, flagged)


def test_driver_specs_compare_the_same_way() -> None:
    proxy, _topology = load_proxy_spec(ROOT / "experiments" / "proxy" / "goodput_kernel.toml")
    assert same_spec(stored(proxy), proxy)
    assert not same_spec(stored(dataclasses.replace(proxy, variant="python")), proxy)


def test_resume_reuses_a_cell_stored_before_a_field_was_added(tmp_path: Path) -> None:
    matrix = parse_matrix_spec(copy.deepcopy(SPEC), source="m.toml")
    run_matrix(matrix, tmp_path, runner=FakeRunner({"none": "mptcp", "strip_syn": "fallback-syn"}),
               stream=io.StringIO(), tty=False)
    for path in tmp_path.glob("cells/*/*/result.json"):
        result = json.loads(path.read_text())
        del result["spec"]["mptcp"]["server_c_flag"]
        path.write_text(json.dumps(result))
    again = FakeRunner({"none": "mptcp", "strip_syn": "fallback-syn"})
    doc = run_matrix(matrix, tmp_path, runner=again, resume=True, stream=io.StringIO(), tty=False)
    assert again.calls == [] and all(c.get("reused") for c in doc["cells"])
