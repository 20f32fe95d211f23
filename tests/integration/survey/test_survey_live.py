"""`testbed survey` for real on the host kernel: one captured experiment in real namespaces, the
tables written with cells answered from its result and capture, the rest said not measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import run_cli

pytestmark = pytest.mark.root


def test_kernel_survey_from_a_real_baseline(tmp_path: Path) -> None:
    out = tmp_path / "survey"
    done = run_cli("survey", "--targets", "kernel", "--out", str(out), "--experiments", "baseline",
                   "--no-probes", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "survey.json").read_text())
    rows = {row["key"]: row["cells"]["kernel"] for row in doc["tables"]["signalling"]}
    assert rows["MP_CAPABLE"]["text"].startswith("yes: MPTCP v1 end to end (mptcp, 2 subflows")
    # the host kernel's client opens the join (its second address is a subflow endpoint)
    assert rows["JOIN_INITIATOR"]["text"].startswith("client (MP_JOIN SYNs: client 1")
    assert "client: 8 B" in rows["DSN"]["text"] and "DSS with DATA_FIN: client" in rows["DATA_FIN"]["text"]
    for _label, path in rows["DSN"]["links"]:
        assert (out / path).exists(), path
    assert rows["SUBFLOWS"]["text"].startswith("not measured: experiment subflow_limit not run")
    assert rows["FAST_CLOSE"]["text"] == "probes: not run (--no-probes)"
    assert "| Question | kernel |" in (out / "survey.md").read_text()


def test_unknown_target_is_one_line() -> None:
    done = run_cli("survey", "--targets", "kernel,freebsd", "--out", "/tmp/never-written")
    assert done.returncode == 2 and "unknown target 'freebsd'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not Path("/tmp/never-written").exists()
