"""The survey's short experiments: ordinary runs (testbed.runner) whose result files answer rows
the prober cannot (how many subflows, who opens them, what the DSS carries on the wire, how
traffic is shared, what happens on a handover or behind a middlebox).

Each experiment is a spec built here for one target; the fallback rows reuse the middleboxes of
experiments/fallback_matrix.toml by row name, so the survey and the matrix test the same thing.
An experiment a target cannot run (no spec setting for it) says why instead of running.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.survey.targets import Target

FALLBACK_MATRIX = Path(__file__).resolve().parents[2] / "experiments" / "fallback_matrix.toml"
BYTES = 2_000_000
TIMEOUT_S = 10.0
RATE_MBIT = 20
# kernel@VERSION: both endpoints are TCG guests, which sustain about 2 Mbit/s per path on the
# 2-core machine (docs/kernel-endpoints.md) and start their endpoint program 5-20 s late
VM_RATE_MBIT, VM_BYTES, VM_TIMEOUT_S = 2, 1_000_000, 180.0
HANDOVER_AT_S = 2.5


@dataclass(frozen=True)
class Experiment:
    name: str
    what: str  # one line: what it shows
    build: Callable[[Target], dict[str, Any] | str]  # a raw spec, or why it cannot run


def _rate(target: Target) -> int:
    return VM_RATE_MBIT if target.kernel is not None else RATE_MBIT


def _base(target: Target, name: str, **traffic: Any) -> dict[str, Any]:
    vm = target.kernel is not None
    return {
        "name": f"survey/{target.name}/{name}", "seed": 1,
        "topology": {"name": "two_path", "params": {"rate_mbit": _rate(target)}},
        "endpoints": target.endpoints(),
        "traffic": {"bytes": VM_BYTES if vm else BYTES, "timeout_s": VM_TIMEOUT_S if vm else TIMEOUT_S,
                    **traffic},
        "mptcp": {"subflows": 2},
        **({"stacks": copy.deepcopy(target.command_stacks)} if target.command_stacks else {}),
    }


def _baseline(target: Target) -> dict[str, Any]:
    spec = _base(target, "baseline")
    spec["capture"] = {"pcap": True}
    return spec


def _checksum(target: Target) -> dict[str, Any]:
    spec = _base(target, "checksum")
    spec["mptcp"]["checksum"] = True
    spec["capture"] = {"pcap": True}
    return spec


def _subflow_limit(target: Target) -> dict[str, Any]:
    spec = _base(target, "subflow_limit")
    spec["topology"] = {"name": "n_path", "params": {"n": 4, "rate_mbit": _rate(target)}}
    spec["mptcp"] = {"subflows": 8, "add_addr_accepted": 8}
    spec["traffic"]["bytes"] *= 2
    return spec


def _handover(target: Target) -> dict[str, Any]:
    spec = _base(target, "handover")
    del spec["traffic"]["bytes"]
    # the timeline counts from the client's start: a python endpoint needs a second or more to
    # install its guard and open its raw sockets on a loaded machine before its first SYN
    spec["traffic"]["seconds"] = 5.0
    spec["timeline"] = [{"at_s": HANDOVER_AT_S, "link": "a", "up": False}]
    return spec


def _loss_sharing(target: Target) -> dict[str, Any]:
    spec = _base(target, "loss_sharing")
    del spec["traffic"]["bytes"]
    spec["traffic"]["seconds"] = 3.0
    spec["timeline"] = [{"at_s": 0.0, "link": "a", "set": {"loss_pct": 3.0}}]
    return spec


def _backup(target: Target) -> dict[str, Any] | str:
    if target.stack != "python":
        return ("no spec setting marks a kernel or command endpoint's path as backup "
                "(ip mptcp endpoint ... backup); see the prober's MP_PRIO probes")
    spec = _base(target, "backup")
    del spec["traffic"]["bytes"]
    spec["traffic"]["seconds"] = 2.0
    for table in spec["endpoints"]:
        if table["role"] == "client":
            table["stack_config"] = {"backup_addresses": ["10.0.2.1"]}
    return spec


def _fallback_row(row_name: str) -> Callable[[Target], dict[str, Any] | str]:
    def build(target: Target) -> dict[str, Any] | str:
        from testbed.spec import read_toml

        rows = {row["name"]: row for row in read_toml(FALLBACK_MATRIX, "matrix spec")["middleboxes"]}
        row = rows[row_name]
        spec = _base(target, f"fallback_{row_name}")
        if "chain" in row:
            spec["middleboxes"] = copy.deepcopy(row["chain"])
        else:
            spec["middleboxes"] = [{"node": row["node"], "type": row["type"],
                                    "params": copy.deepcopy(row.get("params", {}))}]
        spec["mptcp"].update(row.get("mptcp", {}))
        spec["traffic"].update({k: v for k, v in row.get("traffic", {}).items() if k != "seconds"})
        if "timeline" in row:
            spec["timeline"] = copy.deepcopy(row["timeline"])
        spec["capture"] = {"pcap": True}
        return spec
    return build


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("baseline", "two 20 Mbit/s paths, 2 MB upload (kernel@VERSION: 2 Mbit/s, 1 MB), "
               "captured", _baseline),
    Experiment("checksum", "the same with DSS checksums asked for", _checksum),
    Experiment("subflow_limit", "four client paths, limits of 8: how many subflows open", _subflow_limit),
    Experiment("handover", "5 s upload, path a down at 2.5 s", _handover),
    Experiment("loss_sharing", "3 s upload, 3 % loss on path a", _loss_sharing),
    Experiment("backup", "2 s upload, the second path marked backup", _backup),
    Experiment("fallback_mp_capable", "MP_CAPABLE stripped from the SYN",
               _fallback_row("strip_mp_capable_syn")),
    Experiment("fallback_mp_join", "MP_JOIN stripped on path b", _fallback_row("strip_mp_join")),
    Experiment("fallback_dss", "DSS stripped from every packet", _fallback_row("strip_dss_all")),
    Experiment("fallback_dss_data", "DSS stripped from data segments only",
               _fallback_row("strip_dss_data")),
    Experiment("fallback_checksum", "an ALG rewrites one byte, DSS checksum on",
               _fallback_row("rewrite_payload_dss_checksum")),
    Experiment("fallback_after_data", "all MPTCP options stripped once data flowed",
               _fallback_row("strip_mptcp_after_data")),
)
EXPERIMENT_NAMES = tuple(e.name for e in EXPERIMENTS)


@dataclass
class ExperimentRecord:
    """How one experiment went for one target: its result document, or why there is none."""

    name: str
    status: str  # "ran" | "not-run" | "error"
    directory: str | None = None  # relative to the survey's DIR
    reason: str | None = None
    result: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "dir": self.directory, "reason": self.reason}


Runner = Callable[..., dict[str, Any]]
INTERRUPTED = "survey interrupted (Ctrl-C or SIGTERM) before this experiment finished"


class SurveyInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during an experiment; carries the target's records so far."""

    def __init__(self, records: dict[str, ExperimentRecord]) -> None:
        super().__init__(INTERRUPTED)
        self.records = records


def run_experiments(target: Target, out: Path, names: tuple[str, ...], *, runner: Runner | None = None,
                    progress: Callable[[str], None] = print) -> dict[str, ExperimentRecord]:
    """Run the named experiments for `target` into out/<target>/<experiment>/; a failure is
    recorded and the survey goes on. A kernel@VERSION target's VMs are booted once for all
    its experiments (testbed.vm_pool), not twice per experiment."""
    from testbed import vm_pool

    if runner is None:
        from testbed.runner import run_experiment

        runner = run_experiment
    records: dict[str, ExperimentRecord] = {}
    planned = _planned_specs(target, names, records)
    try:
        with vm_pool.for_cells(spec for _e, spec in planned) as pool:
            for index, (experiment, spec) in enumerate(planned):
                vm_pool.prepare_specs(pool, [spec], [s for _e, s in planned[index:]], progress)
                _run_one(target, out, experiment, spec, runner, records, progress)
    except KeyboardInterrupt:
        for name in names:  # the one running and those not reached: said so in the tables
            records.setdefault(name, ExperimentRecord(name, "not-run", reason=INTERRUPTED))
        raise SurveyInterrupted(records) from None
    return {name: records[name] for name in [e.name for e in EXPERIMENTS] if name in records}


def _planned_specs(target: Target, names: tuple[str, ...],
                   records: dict[str, ExperimentRecord]) -> list[tuple[Experiment, Any]]:
    """Every named experiment's spec for `target`; those that cannot run get their record."""
    from testbed.spec import parse_spec

    planned = []
    unavailable = target.unavailable()
    for experiment in EXPERIMENTS:
        if experiment.name not in names:
            continue
        if unavailable is not None:
            records[experiment.name] = ExperimentRecord(experiment.name, "not-run", reason=unavailable)
            continue
        built = experiment.build(target)
        if isinstance(built, str):
            records[experiment.name] = ExperimentRecord(experiment.name, "not-run", reason=built)
            continue
        built["name"] = f"survey/{target.name}/{experiment.name}"
        try:
            planned.append((experiment, parse_spec(built, source=f"survey {target.name} {experiment.name}")))
        except (TestbedError, SpecError) as exc:
            relative = f"{target.directory}/{experiment.name}"
            records[experiment.name] = ExperimentRecord(experiment.name, "error", relative, exc.message)
    return planned


def _run_one(target: Target, out: Path, experiment: Experiment, spec: Any, runner: Runner,
             records: dict[str, ExperimentRecord], progress: Callable[[str], None]) -> None:
    relative = f"{target.directory}/{experiment.name}"
    progress(f"survey: {target.name}: {experiment.name} ({experiment.what})")
    try:
        doc = runner(spec, out / relative, progress=lambda _line: None)
    except (TestbedError, SpecError) as exc:
        records[experiment.name] = ExperimentRecord(experiment.name, "error", relative, exc.message)
        return
    except Exception as exc:  # a bug in one experiment must not end the survey
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        records[experiment.name] = ExperimentRecord(experiment.name, "error", relative, detail)
        return
    records[experiment.name] = ExperimentRecord(experiment.name, "ran", relative, result=doc)
