"""Findings across kernel versions: the kernel list, the spec a version run uses, the per-kernel
verdict (including a run on the wrong kernel), the summary wording and the generated block at
the end of a finding's file (it must load again), and the check loop's bookkeeping with the
runs stood in for (the real runs are tests/integration/findings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomllib

from testbed.cli import main as cli_main
from testbed.errors import SpecError
from testbed.findings import ABSENT, ERROR, NOT_TRIGGERED, PRESENT, load_finding, read_status, read_versions
from testbed.findings_versions import (
    BLOCK_MARKER,
    KernelChoice,
    parse_kernel_list,
    version_spec,
    version_summary,
    versions_block,
    write_versions_block,
    wrong_kernel,
)

from .test_findings import FINDING, result, write_finding

GUEST = """[reproducer.guest]
why = "a TCG guest carries about 2 Mbit/s per path"
topology_params = { rate_mbit = 2 }
traffic = { bytes = 2000000, timeout_s = 15 }
"""

OLD = KernelChoice("6.1.0-50-amd64", "linux-image-6.1.0-50-amd64-unsigned", "6.1.176-1", "bookworm",
                   host=False)
MID = KernelChoice("6.12.117+deb13-amd64", "linux-image-6.12.117+deb13-amd64-unsigned", "6.12.117-1",
                   "trixie", host=False)
HOST = KernelChoice("6.18.44-fc-v1252", "", "", "", host=True)
NEW = KernelChoice("7.2.13+deb14-amd64", "linux-image-7.2.13+deb14-amd64-unsigned", "7.2.13-1", "sid",
                   host=False)


def guest_finding(directory: Path, guest: str = GUEST) -> Path:
    text = FINDING.format(id="example-stall").replace("[shows_when]", guest + "[shows_when]", 1)
    return write_finding(directory, text=text)


def test_kernel_choice_labels_and_exact_versions() -> None:
    assert (OLD.label, OLD.upstream, OLD.exact()) == ("6.1", "6.1.176", "6.1.176-1")
    assert (MID.label, NEW.label) == ("6.12", "7.2")
    assert (HOST.label, HOST.upstream, HOST.exact()) == ("6.18", "6.18.44", "host 6.18.44-fc-v1252")


def test_kernel_list_parsing() -> None:
    assert parse_kernel_list("6.1, 6.12,host,newest,6.1") == ["6.1", "6.12", "host", "newest"]
    with pytest.raises(SpecError, match="'6 1' is not a kernel release prefix"):
        parse_kernel_list("6.1,6 1")
    with pytest.raises(SpecError, match="'' is not"):
        parse_kernel_list("6.1,")


def test_an_unfetched_kernel_is_the_fetch_hint(tmp_path: Path) -> None:
    from testbed.findings_versions import resolve_kernels

    with pytest.raises(SpecError, match=r"testbed kernels fetch 6\.1"):
        resolve_kernels(["6.1"], cache=tmp_path)
    host = resolve_kernels(["host", "host"], cache=tmp_path)
    assert len(host) == 1 and host[0].host


def test_version_spec_applies_guest_rates_and_puts_kernel_endpoints_on_the_kernel(tmp_path: Path) -> None:
    finding = load_finding(guest_finding(tmp_path))
    assert finding.reproducer.guest is not None
    assert finding.reproducer.guest.text() == "rate_mbit=2, bytes=2000000, timeout_s=15"
    spec = version_spec(finding, MID)
    assert spec.topology_params["rate_mbit"] == 2
    assert (spec.traffic.bytes, spec.traffic.seconds, spec.traffic.timeout_s) == (2000000, None, 15)
    assert spec.mptcp.checksum  # what the guest table does not name stays as the spec has it
    assert {e.role: e.kernel for e in spec.endpoints} == {"client": MID.release, "server": MID.release}
    on_host = version_spec(finding, HOST)
    assert {e.kernel for e in on_host.endpoints} == {None}
    assert on_host.topology_params["rate_mbit"] == 2 and on_host.traffic.bytes == 2000000
    # the guest's longer timeout (for a VM to start its endpoint) stays off the host's run
    assert on_host.traffic.timeout_s != 15


def test_guest_table_validation_is_one_line(tmp_path: Path) -> None:
    bad = GUEST.replace("traffic =", "middleboxes =")
    with pytest.raises(SpecError, match=r"reproducer\.guest: unknown key 'middleboxes'"):
        load_finding(guest_finding(tmp_path, bad))
    with pytest.raises(SpecError, match="missing required key 'why'"):
        load_finding(guest_finding(tmp_path, GUEST.split("\n", 1)[0] + "\n" + GUEST.split("\n", 2)[2]))
    # a value the spec parser refuses is a one-line error when the version spec is built
    finding = load_finding(guest_finding(tmp_path, GUEST.replace("timeout_s = 15", "seconds = 3")))
    with pytest.raises(SpecError, match="exactly one of bytes or seconds"):
        version_spec(finding, OLD)
    no_guest = load_finding(write_finding(tmp_path))
    with pytest.raises(SpecError, match=r"no \[reproducer\.guest\]"):
        version_spec(no_guest, OLD)


def _run(release: str, *, kernel_stack: bool = True) -> dict[str, Any]:
    stack = "kernel" if kernel_stack else "python"
    return {"endpoints": {"client": {"stack": stack, "kernel": release},
                          "server": {"stack": "kernel", "kernel": release}}}


def test_a_run_on_another_kernel_does_not_count() -> None:
    assert wrong_kernel(_run(MID.release), MID) is None
    doc = _run(MID.release)
    doc["endpoints"]["server"]["kernel"] = HOST.release
    assert wrong_kernel(doc, MID) == f"asked for {MID.release}, but the server on {HOST.release}"
    assert wrong_kernel({"endpoints": {}}, MID) == "the run has no Linux endpoint as client or server"
    # with the guest's roles = ["server"], the host's client does not make the run wrong
    assert wrong_kernel(doc, MID, ("client",)) is None
    assert wrong_kernel(doc, MID, ("server",)) == f"asked for {MID.release}, but the server on {HOST.release}"


def test_guest_roles_put_only_that_side_on_the_kernel(tmp_path: Path) -> None:
    """A finding about the receiver keeps the sender on the host, where it produces the
    traffic that provokes the deviation (a sender in a slow guest may not)."""
    finding = load_finding(guest_finding(tmp_path, GUEST + 'roles = ["server"]\n'))
    assert finding.reproducer.guest.roles == ("server",)
    assert finding.reproducer.guest.text().endswith("on the kernel: server only")
    spec = version_spec(finding, MID)
    assert {e.role: e.kernel for e in spec.endpoints} == {"client": None, "server": MID.release}
    assert load_finding(guest_finding(tmp_path)).reproducer.guest.roles == ("client", "server")
    for bad in ('roles = []', 'roles = ["sender"]', 'roles = ["server", "server"]'):
        with pytest.raises(SpecError, match=r"reproducer\.guest\.roles: .* must name client, server or both"):
            load_finding(guest_finding(tmp_path, GUEST + bad + "\n"))


def _record(kernel: KernelChoice, status: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "date": "2026-12-06", "command": "c", **kernel.facts(), **extra}


def test_summary_groups_by_verdict_oldest_first_with_exact_versions() -> None:
    per_kernel = {NEW.release: _record(NEW, ABSENT), HOST.release: _record(HOST, PRESENT),
                  OLD.release: _record(OLD, PRESENT), MID.release: _record(MID, NOT_TRIGGERED)}
    assert version_summary(per_kernel) == (
        "present in 6.1 (6.1.176-1), 6.18 (host 6.18.44-fc-v1252); absent in 7.2 (7.2.13-1); "
        "inconclusive on 6.12 (6.12.117-1, not-triggered)")
    per_kernel[MID.release] = _record(MID, ERROR)
    per_kernel[NEW.release] = _record(NEW, ABSENT, cpu_bound=True)
    assert version_summary(per_kernel).endswith(
        "absent in 7.2 (7.2.13-1, guest CPU-bound); inconclusive on 6.12 (6.12.117-1, error)")
    assert version_summary({}) == "no version checked"


def test_the_generated_block_loads_and_is_replaced_not_appended(tmp_path: Path) -> None:
    path = guest_finding(tmp_path)
    finding = load_finding(path)
    per_kernel = {OLD.release: _record(OLD, PRESENT, outcome="mp-fail", integrity="truncated",
                                       where="vm (tcg)", runs=1),
                  NEW.release: _record(NEW, ABSENT, outcome="mp-fail", integrity="alg-edited")}
    write_versions_block(path, versions_block(finding, per_kernel))
    write_versions_block(path, versions_block(finding, per_kernel))
    text = path.read_text()
    assert text.count(BLOCK_MARKER) == 1
    loaded = load_finding(path)
    assert loaded.versions["summary"] == "present in 6.1 (6.1.176-1); absent in 7.2 (7.2.13-1)"
    assert loaded.versions["kernels"][OLD.release]["where"] == "vm (tcg)"
    assert tomllib.loads(text)["versions"]["run_at"] == "rate_mbit=2, bytes=2000000, timeout_s=15"
    assert text.split(BLOCK_MARKER)[0] == FINDING.format(id="example-stall").replace(
        "[shows_when]", GUEST + "[shows_when]", 1).rstrip("\n") + "\n\n"


def test_check_versions_records_each_kernel_and_keeps_the_plain_status(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.findings_check import check, check_versions

    path = guest_finding(tmp_path)
    findings = [load_finding(path)]
    plain = result()

    def plain_run(finding: Any, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"schema": 3, "kind": "experiment", **plain}))

    assert check(findings, tmp_path, tmp_path / "runs", strict=False, runner=plain_run) == 0

    def on_kernel(finding: Any, kernel: KernelChoice, out: Path) -> None:
        doc = result(integrity="ok" if kernel is NEW else "truncated", release=HOST.release)
        doc.update(_run(kernel.release))
        if kernel is OLD:
            doc["endpoints"]["client"]["vm"] = {"accel": "tcg", "cpu_bound": True, "boot_s": 40.0}
        if kernel is MID:  # the VM came up on the wrong kernel: no verdict
            doc["endpoints"]["server"]["kernel"] = HOST.release
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"schema": 3, "kind": "experiment", **doc}))

    code = check_versions(findings, [OLD, MID, HOST, NEW], tmp_path, tmp_path / "runs", strict=False,
                          runner=on_kernel)
    assert code == 1  # the wrong-kernel run is an error
    versions = read_versions(tmp_path)["example-stall"]
    assert versions[OLD.release]["status"] == PRESENT and versions[OLD.release]["where"] == "vm (tcg)"
    assert versions[OLD.release]["cpu_bound"] is True and versions[OLD.release]["version"] == "6.1.176-1"
    assert versions[MID.release]["status"] == ERROR and "server on" in versions[MID.release]["error"]
    assert versions[HOST.release]["status"] == PRESENT and versions[HOST.release]["where"] == "host"
    assert versions[NEW.release]["status"] == ABSENT
    assert versions[NEW.release]["command"] == f"testbed findings check example-stall --kernels {NEW.release}"
    assert read_status(tmp_path)["example-stall"]["6.18.1"]["status"] == PRESENT  # the plain check stays
    summary = load_finding(path).versions["summary"]
    assert summary.startswith("present in 6.1 (6.1.176-1, guest CPU-bound), 6.18 (host ")
    assert "absent in 7.2 (7.2.13-1)" in summary and "inconclusive on 6.12 (6.12.117-1, error)" in summary
    out = capsys.readouterr().out
    assert "example-stall: absent on 7.2.13+deb14-amd64" in out
    assert cli_main(["findings", "--findings-dir", str(tmp_path)]) == 0
    assert "versions: present in 6.1" in capsys.readouterr().out


def test_cli_kernels_errors_are_one_line_before_any_run(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    write_finding(tmp_path)  # no [reproducer.guest]
    assert cli_main(["findings", "--findings-dir", str(tmp_path), "check", "--kernels", "host"]) == 2
    assert "no [reproducer.guest]" in capsys.readouterr().err
    guest_finding(tmp_path)
    assert cli_main(["findings", "--findings-dir", str(tmp_path), "check", "--kernels", "6 1"]) == 2
    assert "is not a kernel release prefix" in capsys.readouterr().err


def test_a_schema_1_status_file_reads_and_gains_versions(tmp_path: Path) -> None:
    from testbed.findings import write_versions

    old = {"schema": 1, "findings": {"a": {"6.18": {"status": "present"}}}}
    (tmp_path / "status.json").write_text(json.dumps(old))
    assert read_versions(tmp_path) == {}
    write_versions({"a": {"6.1": {"status": "absent"}}}, tmp_path)
    doc = json.loads((tmp_path / "status.json").read_text())
    assert doc["schema"] == 2 and doc["findings"]["a"]["6.18"]["status"] == "present"
    assert doc["versions"]["a"]["6.1"]["status"] == "absent"


def test_attempts_rerun_a_version_run_that_could_not_run(tmp_path: Path) -> None:
    from testbed import errors
    from testbed.findings_check import check_versions

    findings = [load_finding(guest_finding(tmp_path))]
    runs: list[int] = []

    def guest_dies_once(finding: Any, kernel: KernelChoice, out: Path) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise errors.TestbedError("vm endpoint: the guest stopped before the endpoint finished")
        doc = result(release=HOST.release)
        doc.update(_run(kernel.release))
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"schema": 3, "kind": "experiment", **doc}))

    assert check_versions(findings, [MID], tmp_path, tmp_path / "runs", strict=True, attempts=2,
                          runner=guest_dies_once) == 0
    record = read_versions(tmp_path)["example-stall"][MID.release]
    assert len(runs) == 2 and record["status"] == PRESENT and record["runs"] == 2
