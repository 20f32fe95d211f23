"""`testbed findings [list]` and `testbed findings check [ID...] [--kernels K,...] [--out DIR] [--strict]`.

`list` shows every finding with its status per kernel release from findings/status.json (the
latest check). `check` re-runs each reproducer through the normal runner (real namespaces,
real kernels, exactly what the reproducer's command runs), judges the fresh result.json with
the finding's predicates (testbed.findings) and records present / absent / not-triggered /
error with the date, the kernel release and the result into findings/status.json after each
finding, so Ctrl-C keeps what was checked. `--kernels 6.1,6.12,host,newest` checks each finding
once per kernel instead (testbed.findings_versions) and records the per-version table in the
status file's `versions` and at the end of the finding's file. `--attempts N` re-runs a
reproducer whose run did not provoke the situation at all (not-triggered: e.g. a coalescer that
merged nothing), up to N runs.

Exit status: 0 when every check ran, whatever it found (a finding that no longer shows is
news, not a failure of the command); 1 when a reproducer could not run (error), and with
`--strict` also when a checked finding is not present (absent or not-triggered), for CI that
wants to hear when a deviation disappears; 2 for bad input (unknown id, malformed file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.findings import (
    ABSENT,
    ERROR,
    FINDINGS_DIR,
    NOT_TRIGGERED,
    PRESENT,
    PROJECT_ROOT,
    Finding,
    Judgement,
    judge,
    kernel_release,
    load_findings,
    lookup,
    read_status,
    read_versions,
    record_status,
    select_findings,
    status_record,
    status_summary,
    write_status,
    write_versions,
)

DEFAULT_OUT = "results/findings"

Reproduce = Callable[[Finding, Path], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--findings-dir", default=str(FINDINGS_DIR),
                        help="directory of finding files and status.json (default: the project's)")
    actions = parser.add_subparsers(dest="findings_action")
    actions.add_parser("list", help="every finding with its status per kernel (the default)")
    check = actions.add_parser("check", help="re-run reproducers and record whether each still shows")
    check.add_argument("ids", nargs="*", metavar="ID", help="findings to check (default: all)")
    check.add_argument("--out", default=DEFAULT_OUT,
                       help=f"directory for the runs, one sub-directory per finding (default {DEFAULT_OUT})")
    check.add_argument("--attempts", type=int, default=1, metavar="N",
                       help="re-run a reproducer that did not provoke the situation (not-triggered; "
                       "with --kernels also one that could not run), up to N runs in all (default 1)")
    check.add_argument("--kernels", metavar="K,...",
                       help="check on each of these kernels (fetched release prefixes, newest, host) "
                       "with the Linux endpoints on it, at the finding's guest rates")
    check.add_argument("--strict", action="store_true",
                       help="exit 1 also when a checked finding no longer shows (absent or not-triggered)")


def run(args: argparse.Namespace) -> int:
    directory = Path(args.findings_dir)
    findings = load_findings(directory)
    if getattr(args, "findings_action", None) == "check":
        if args.attempts < 1:
            raise SpecError(f"--attempts must be at least 1, got {args.attempts}")
        if args.kernels is not None:
            from testbed.findings_versions import parse_kernel_list, resolve_kernels

            selected = select_findings(findings, args.ids)
            for finding in selected:  # every problem before the first (long) run
                _needs_guest_reproducer(finding)
            kernels = resolve_kernels(parse_kernel_list(args.kernels))
            return check_versions(selected, kernels, directory, Path(args.out), strict=args.strict,
                                  attempts=args.attempts)
        return check(select_findings(findings, args.ids), directory, Path(args.out), strict=args.strict,
                     attempts=args.attempts)
    print_listing(findings, read_status(directory), known_releases(), read_versions(directory))
    return 0


def _needs_guest_reproducer(finding: Finding) -> None:
    if not finding.reproducer.spec:
        raise SpecError(f"{finding.id}: a matrix-cell reproducer cannot be checked across versions")
    if finding.reproducer.guest is None:
        raise SpecError(f"{finding.source}: no [reproducer.guest]: say at which rates a TCG guest "
                        "reproduces it (docs/findings.md, 'Across Linux versions')")


def known_releases() -> list[str]:
    """The host's kernel and every fetched one (`testbed kernels list`): where a finding has no
    check on record, the listing says not-run."""
    import platform

    from testbed.kernels import cache_dir, fetched_kernels

    return [platform.release(), *(kernel.release for kernel in fetched_kernels(cache_dir()))]


def print_listing(findings: list[Finding], status: dict[str, dict[str, dict[str, Any]]],
                  releases: list[str], versions: dict[str, dict[str, dict[str, Any]]] | None = None) -> None:
    if not findings:
        print("no findings")
        return
    for finding in findings:
        print(f"{finding.id}  [{finding.implementation}; {finding.deviating_side}]")
        print(f"  {finding.title}")
        print(f"  RFC 8684 {finding.rfc_section}")
        print(f"  status: {status_summary(status.get(finding.id, {}), releases)}")
        if (versions or {}).get(finding.id):
            from testbed.findings_versions import version_summary

            guest = finding.reproducer.guest
            print(f"  versions: {version_summary(versions[finding.id])}"
                  f"{f' (at {guest.text()})' if guest else ''}")
        print(f"  reproduce: {finding.reproducer.command()}")
    print(f"{len(findings)} findings; `testbed findings check [ID...]` re-runs them")


def check(findings: list[Finding], directory: Path, out: Path, *, strict: bool,
          runner: Reproduce | None = None, attempts: int = 1) -> int:
    """Check each finding, record its status, print what was seen; the exit status (module doc).
    `runner` stands in for run_reproducer in tests."""
    status = read_status(directory)
    errors = not_present = 0
    for finding in findings:
        print(f"[findings] {finding.id}: {finding.reproducer.command(str(out / finding.id))}",
              flush=True)
        for attempt in range(1, attempts + 1):
            release, record = check_one(finding, out / finding.id, runner or run_reproducer)
            if record["status"] != NOT_TRIGGERED:
                break
            if attempt < attempts:
                print(f"{finding.id}: not triggered (run {attempt} of up to {attempts}); again")
        record["runs"] = attempt
        record_status(status, finding.id, release, record)
        write_status(status, directory)  # after each finding: Ctrl-C keeps what was checked
        errors += record["status"] == ERROR
        not_present += record["status"] != PRESENT
        classes = f" ({record['outcome']} \u00b7 {record['integrity']})" if "outcome" in record else ""
        problem = f": {record['error']}" if "error" in record else ""
        print(f"{finding.id}: {record['status']} on {release}{classes}{problem}")
        if record.get("verdict"):
            print(f"  integrity: {record['verdict']}")
    print(f"{len(findings)} checked: {len(findings) - not_present} present, "
          f"{not_present - errors} not present, {errors} errors; statuses in "
          f"{directory / 'status.json'}")
    if errors or (strict and not_present):
        return 1
    return 0


def check_versions(findings: list[Finding], kernels: list[Any], directory: Path, out: Path, *,
                   strict: bool, attempts: int = 1, runner: Callable[..., None] | None = None) -> int:
    """Each finding on each kernel (`--kernels`): the verdicts go to the status file's `versions`
    and to the end of the finding's file after every run. `runner(finding, kernel, out)` stands
    in for run_on_kernel in tests. Exit status as for `check`."""
    from testbed.findings_versions import versions_block, write_versions_block

    versions = read_versions(directory)
    errors = not_present = checked = 0
    for finding in findings:
        for kernel in kernels:
            where = out / finding.id / kernel.release
            print(f"[findings] {finding.id} on {kernel.release} "
                  f"({'host' if kernel.host else kernel.package + ' ' + kernel.version}): "
                  f"{finding.reproducer.spec} at {finding.reproducer.guest.text()} -> {where}",
                  flush=True)
            for attempt in range(1, attempts + 1):
                record = check_on_kernel(finding, kernel, where, runner or run_on_kernel)
                # a guest that died under load is as uninformative as a run that provoked nothing
                if record["status"] not in (NOT_TRIGGERED, ERROR):
                    break
                if attempt < attempts:
                    problem = f": {record['error']}" if "error" in record else ""
                    print(f"{finding.id}: {record['status']} on {kernel.release}{problem} (run {attempt} "
                          f"of up to {attempts}); again")
            record["runs"] = attempt
            record_status(versions, finding.id, kernel.release, record)
            write_versions(versions, directory)  # after each run: Ctrl-C keeps what was checked
            write_versions_block(finding.source, versions_block(finding, versions[finding.id]))
            checked += 1
            errors += record["status"] == ERROR
            not_present += record["status"] != PRESENT
            classes = f" ({record['outcome']} \u00b7 {record['integrity']})" if "outcome" in record else ""
            problem = f": {record['error']}" if "error" in record else ""
            print(f"{finding.id}: {record['status']} on {kernel.release}{classes}{problem}", flush=True)
        from testbed.findings_versions import version_summary

        print(f"{finding.id}: {version_summary(versions[finding.id])}")
    print(f"{checked} checked: {checked - not_present} present, {not_present - errors} not present, "
          f"{errors} errors; versions in {directory / 'status.json'} and the finding files")
    if errors or (strict and not_present):
        return 1
    return 0


def check_on_kernel(finding: Finding, kernel: Any, out: Path, runner: Callable[..., None]) -> dict[str, Any]:
    """One version run's record: check_one's, plus the kernel's package facts and how the
    guests ran; a run whose endpoints were not on `kernel` is an error, not a verdict."""
    from testbed.findings_versions import guest_facts, wrong_kernel

    _, record = check_one(finding, out, lambda f, o: runner(f, kernel, o))
    record["command"] = f"testbed findings check {finding.id} --kernels {kernel.release}"
    record["guest_rates"] = finding.reproducer.guest.text()
    record.update(kernel.facts())
    record["where"] = "host" if kernel.host else "vm"
    if record["status"] != ERROR:
        from testbed.result import read_result

        document = read_result(finding.reproducer.result_path(out))
        facts = guest_facts(document)
        if facts.get("accel"):
            record["where"] = f"vm ({facts['accel']})"
        if facts.get("cpu_bound"):
            record["cpu_bound"] = True
        problem = wrong_kernel(document, kernel, finding.reproducer.guest.roles)
        if problem:
            record["status"], record["error"] = ERROR, problem
        if record["status"] not in (PRESENT, ABSENT):  # why the run says nothing either way
            found, connection = lookup(document, "connection")
            if found and connection.get("problems"):
                record["problems"] = connection["problems"]
    return record


def run_on_kernel(finding: Finding, kernel: Any, out: Path) -> None:
    """The reproducer at the guest rates with the Linux endpoints on `kernel` (a VM endpoint for
    a fetched kernel), in this process (Ctrl-C cleans up as usual)."""
    from testbed.findings_versions import version_spec
    from testbed.runner import run_experiment

    run_experiment(version_spec(finding, kernel), out,
                   progress=lambda m: print(f"[testbed] {m}", flush=True))


def check_one(finding: Finding, out: Path, runner: Reproduce) -> tuple[str, dict[str, Any]]:
    """Run one reproducer; the kernel release it ran on and its status record."""
    date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    command = finding.reproducer.command(str(out))
    result_path = finding.reproducer.result_path(out)
    result_path.unlink(missing_ok=True)  # a run that fails must not be judged by an older result
    try:
        runner(finding, out)
        from testbed.result import read_result

        document = read_result(result_path)
    except TestbedError as exc:
        import platform

        judgement = Judgement(ERROR, [])
        return platform.release(), status_record(judgement, None, date=date, command=command,
                                                 result_path=str(result_path), error=exc.message)
    judgement = judge(finding, document)
    for line in judgement.reasons:
        print(f"  {line}")
    return kernel_release(document), status_record(judgement, document, date=date, command=command,
                                                   result_path=_shown(result_path))


def run_reproducer(finding: Finding, out: Path) -> None:
    """What the reproducer's command does, in this process (Ctrl-C cleans up as usual)."""
    reproducer = finding.reproducer
    if reproducer.spec:
        from testbed.runner import run_experiment
        from testbed.spec import load_spec

        spec = load_spec(PROJECT_ROOT / reproducer.spec)
        run_experiment(spec, out, progress=lambda m: print(f"[testbed] {m}", flush=True))
        return
    from testbed.matrix import MatrixInterrupted, load_matrix_spec, run_matrix, select

    matrix = select(load_matrix_spec(PROJECT_ROOT / str(reproducer.matrix)), reproducer.row,
                    reproducer.pairing)
    try:
        run_matrix(matrix, out)
    except MatrixInterrupted:
        raise KeyboardInterrupt from None


def _shown(path: Path) -> str:
    """A result path as the status file records it: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    from testbed.cli import main as cli_main

    return cli_main(["findings", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
