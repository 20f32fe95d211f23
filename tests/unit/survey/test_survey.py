"""`testbed survey` without a network: targets, the experiments' specs, capture facts from a
synthetic capture, and the tables decided from hand-made results and a probes.json fixture."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed.analyze.synthetic import SERVER, write_synthetic_capture
from testbed.errors import SpecError
from testbed.spec import ExperimentSpec, parse_spec
from testbed.survey import command as survey_command
from testbed.survey.experiments import EXPERIMENT_NAMES, EXPERIMENTS
from testbed.survey.targets import parse_targets
from testbed.survey.wire_facts import read_wire_facts


def test_targets_parse_and_bad_ones_are_one_line(tmp_path: Path) -> None:
    targets = parse_targets("kernel, kernel@6.12,python")
    assert [(t.name, t.stack, t.kernel, t.directory) for t in targets] == [
        ("kernel", "kernel", None, "kernel"), ("kernel@6.12", "kernel", "6.12", "kernel-6.12"),
        ("python", "python", None, "python")]
    assert targets[1].endpoints()[0] == {"role": "server", "stack": "kernel", "kernel": "6.12"}
    for bad, wanted in (("bsd", "unknown target"), ("kernel,kernel", "twice"), ("", "empty"),
                        ("command:ncat", r"no \[stacks.ncat\]")):
        with pytest.raises(SpecError, match=wanted):
            parse_targets(bad)
    stacks = tmp_path / "stacks.toml"
    stacks.write_text('[stacks.ncat]\nclient = "ncat {server_addr} {port}"\nserver = "ncat -l {port}"\n')
    (target,) = parse_targets("command:ncat", stacks)
    assert target.endpoints()[1] == {"role": "client", "stack": "command:ncat"}


@pytest.mark.parametrize("target", ["kernel", "python", "kernel@6.1"])
def test_every_experiment_is_a_valid_spec_or_says_why_not(target: str) -> None:
    (parsed,) = parse_targets(target)
    for experiment in EXPERIMENTS:
        built = experiment.build(parsed)
        if isinstance(built, str):
            assert experiment.name == "backup" and target != "python" and "backup" in built
            continue
        spec = parse_spec(built, source=experiment.name)
        assert {e.stack for e in spec.endpoints} == {parsed.stack}
        assert {e.kernel for e in spec.endpoints} == {parsed.kernel}
        if experiment.name == "baseline":  # TCG guests: a rate they sustain, time to start
            vm = parsed.kernel is not None
            assert built["topology"]["params"]["rate_mbit"] == (2 if vm else 20)
            assert built["traffic"]["timeout_s"] == (180 if vm else 10)


def test_capture_facts_from_a_synthetic_connection(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    write_synthetic_capture(capture, packets=60)  # 8 rounds of 2 x (2 data + 1 ACK) segments
    facts = read_wire_facts(capture, server_port=SERVER[1])
    assert facts.mp_capable_syn == {"client": 1} and facts.join_syn == {"client": 1}
    # 32 data segments and the DATA_FIN carry a mapping, all with 8-byte DSNs
    assert dict(facts.dsn) == {("client", 8): 33} and facts.data_fin == {"client": 1}
    # data ACKs: on every data segment, the DATA_FIN and 2 FINs; 16 ACKs and 2 FINs back
    assert dict(facts.data_ack) == {("client", 8): 35, ("server", 8): 18}
    assert not facts.checksum and facts.undecodable == 0


def _connection(outcome: str, subflows: list[tuple[str, int]], **extra: Any) -> dict[str, Any]:
    return {"client_stack": "kernel", "server_stack": "kernel", "mptcp": outcome != "fallback-syn",
            "outcome": outcome, "integrity": "ok", "goodput_mbps": 30.0,
            "bytes": sum(b for _a, b in subflows),
            "subflows": [{"local": f"{a}:1", "bytes": b} for a, b in subflows],
            "counters": {"client": {"MPTcpExtMPJoinSynTx": 1}, "server": {"MPTcpExtMPJoinAckRx": 1}},
            "stack_counters": {"client": None, "server": None},
            "mptcp_info": {"client": {"csum_enabled": True}, "server": None}, **extra}


def fake_runner(spec: ExperimentSpec, out: Path, progress: Any = None) -> dict[str, Any]:
    """Stands in for testbed.runner.run_experiment: a plausible result per experiment (the
    survey's job here is to read it, not to measure)."""
    name = spec.name.rsplit("/", 1)[-1]
    out.mkdir(parents=True, exist_ok=True)
    if name == "handover":
        raise SpecError("handover: simulated failure")
    two = [("10.0.1.1", 600), ("10.0.2.1", 400)]
    connection = {
        "fallback_mp_capable": _connection("fallback-syn", [("10.0.1.1", 1000)]),
        "subflow_limit": _connection("mptcp", [(f"10.0.{i}.1", 100) for i in range(1, 5)]),
    }.get(name, _connection("mptcp", two))
    if spec.capture:
        write_synthetic_capture(out / "capture.pcap", packets=60)
    doc = {"connections": [connection], "environment": {"tcp_congestion_control": {"client": "cubic"}}}
    (out / "result.json").write_text(json.dumps(doc))
    return doc


PROBES = {"format": "mptcp-testbed-probes", "version": 1, "target": "kernel", "target_detail": {},
          "probes": [
              {"name": "mpc_version0", "group": "signalling", "survey_row": "MP_CAPABLE",
               "rfc": "RFC 8684 §3.1", "verdict": "pass", "expected": "", "observed": "", "trace": [],
               "counters": {}},
              {"name": "fastclose_wrong_key", "group": "signalling", "survey_row": "FAST_CLOSE",
               "rfc": "RFC 8684 §3.5", "verdict": "fail", "expected": "", "observed": "", "trace": [],
               "counters": {}},
              {"name": "odd_one", "group": "fallback", "survey_row": "SOMETHING_ELSE",
               "rfc": "RFC 8684", "verdict": "not-implemented", "expected": "", "observed": "",
               "trace": [], "counters": {}}]}


def _rows(doc: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    return {row["key"]: row["cells"] for row in doc["tables"][group]}


def test_survey_tables_from_results_and_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "testbed.probe", None)  # the prober package is absent
    out = tmp_path / "survey"
    (out / "kernel").mkdir(parents=True)
    (out / "kernel" / "probes.json").write_text(json.dumps(PROBES))
    args = argparse.Namespace(targets="kernel,python", out=str(out), experiments=None, stacks=None,
                              no_probes=False)
    assert survey_command.run(args, runner=fake_runner) == 0
    doc = json.loads((out / "survey.json").read_text())
    assert [t["name"] for t in doc["targets"]] == ["kernel", "python"]
    signalling, fallback, congestion = (_rows(doc, g) for g in ("signalling", "fallback", "congestion"))
    # experiment answer + the probe verdicts of the row, each linked
    cell = signalling["MP_CAPABLE"]["kernel"]
    assert cell["text"].startswith("yes: MPTCP v1 end to end") and "probes: 1 pass" in cell["text"]
    assert ["baseline", "kernel/baseline/result.json"] in cell["links"]
    assert ["probes", "kernel/probes.json"] in cell["links"]
    assert signalling["FAST_CLOSE"]["kernel"]["text"] == "probes: 1 fail (fastclose_wrong_key)"
    # the python target has no probes.json and no prober: said in its cells, never guessed
    assert signalling["FAST_CLOSE"]["python"]["text"] == "probes: prober not available"
    assert "client (MP_JOIN SYNs: client 1" in signalling["JOIN_INITIATOR"]["kernel"]["text"]
    assert signalling["DSN"]["kernel"]["text"].startswith("client: 8 B (33); server: no mapping")
    assert signalling["SUBFLOWS"]["kernel"]["text"].startswith("4 subflows seen, 4 carried data")
    assert fallback["MP_CAPABLE"]["kernel"]["text"].startswith("fallback-syn, 1 subflow carried data")
    assert fallback["OTHER"]["kernel"]["text"] == "probes: 1 not-implemented"
    assert "10.0.1.1 60 %, 10.0.2.1 40 %" in congestion["SHARING"]["kernel"]["text"]
    assert congestion["HANDOVER"]["kernel"]["text"].startswith("not measured: handover failed")
    assert congestion["BACKUP"]["kernel"]["text"].startswith("not measured: no spec setting")
    assert congestion["BACKUP"]["python"]["text"].startswith("10.0.2.1 marked backup")
    assert "cubic" in congestion["OTHER_CC"]["kernel"]["text"]
    markdown = (out / "survey.md").read_text()
    assert "| Question | kernel | python |" in markdown and "## Congestion control" in markdown
    assert "[baseline](kernel/baseline/result.json)" in markdown
    assert '<a href="kernel/probes.json">probes</a>' in (out / "survey.html").read_text()


def test_an_unfetched_kernel_is_said_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_KERNEL_CACHE", str(tmp_path / "empty-cache"))
    from testbed import kernels

    monkeypatch.setattr(kernels, "cache_dir", lambda: tmp_path / "empty-cache")
    out = tmp_path / "survey"
    args = argparse.Namespace(targets="kernel@6.1", out=str(out), experiments="baseline", stacks=None,
                              no_probes=True)
    assert survey_command.run(args, runner=fake_runner) == 0
    doc = json.loads((out / "survey.json").read_text())
    cell = _rows(doc, "signalling")["MP_CAPABLE"]["kernel@6.1"]
    assert cell["text"].startswith("not measured: kernel 6.1 not available")
    assert not (out / "kernel-6.1" / "baseline").exists()


def test_bad_survey_arguments() -> None:
    args = argparse.Namespace(targets="kernel", out="/nonexistent", experiments="baseline,nope",
                              stacks=None, no_probes=True)
    with pytest.raises(SpecError, match="unknown experiment 'nope'"):
        survey_command.run(args, runner=fake_runner)
    assert "fallback_checksum" in EXPERIMENT_NAMES


def test_an_interrupted_survey_still_writes_its_tables(tmp_path: Path) -> None:
    def interrupting_runner(spec: ExperimentSpec, out: Path, progress: Any = None) -> dict[str, Any]:
        if spec.name.endswith("/checksum"):
            raise KeyboardInterrupt("signal 15")
        return fake_runner(spec, out, progress)

    out = tmp_path / "survey"
    args = argparse.Namespace(targets="kernel,python", out=str(out), experiments="baseline,checksum",
                              stacks=None, no_probes=True)
    with pytest.raises(KeyboardInterrupt):
        survey_command.run(args, runner=interrupting_runner)
    doc = json.loads((out / "survey.json").read_text())
    rows = _rows(doc, "signalling")
    assert rows["MP_CAPABLE"]["kernel"]["text"].startswith("yes: MPTCP v1 end to end")
    assert rows["CHECKSUM"]["kernel"]["text"].startswith("not measured: survey interrupted")
    assert rows["MP_CAPABLE"]["python"]["text"].startswith("not measured: survey interrupted")
