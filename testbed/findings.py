"""Findings: deviations from RFC 8684 the testbed observes, one TOML file each under findings/.

A finding is hand-written data with a fixed layout (validated here; an unknown or missing key
is a one-line SpecError naming the file and the key): what deviates and which RFC 8684 rule,
the implementation, a reproducer (a catalogue spec, or one cell of a matrix spec), the evidence
measured when it was written, what Linux's own selftests cover, related public discussion, and
two predicates over a run's result.json:

- `shows_when`: the deviation is in this result (present), else it is absent;
- `triggered_when` (optional): the run provoked the situation at all (a coalescer that merged
  nothing cannot show a coalescing bug): when it does not hold the check is `not-triggered`,
  which says nothing either way.

A predicate is `all = [...]` and/or `any = [...]` of conditions `{ path, <op> = value }` with
`path` a dotted path into result.json (`connection.` is short for `connections.0.`; a number
indexes a list) and one operator: equals, in, at_least, at_most, matches (a regular
expression searched in the text). A missing path fails its condition unless the condition
gives `default` (nstat omits zero counters, so counters usually say `default = 0`).

The status of every finding per kernel release lives in findings/status.json, written by
`testbed findings check` (machine-written JSON, sorted keys, so a re-check is a small diff):
`findings` holds the checks of the reproducer as written, `versions` the checks across kernel
versions (`check --kernels`, testbed.findings_versions), which run it with the Linux endpoints on
each kernel at the rates of the finding's `[reproducer.guest]`. The finding files stay
hand-written except for the `[versions]` block at their end, which `check --kernels` rewrites.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import SpecError, TestbedError
from testbed.report.files import write_text_atomic
from testbed.spec import read_toml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FINDINGS_DIR = PROJECT_ROOT / "findings"
STATUS_FILE = "status.json"
STATUS_SCHEMA = 2  # 2 added `versions`; a schema-1 file reads as one without it
FINDING_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# a check's verdict; not-run is what a kernel without any check shows
PRESENT, ABSENT, NOT_TRIGGERED, ERROR, NOT_RUN = "present", "absent", "not-triggered", "error", "not-run"
STATUSES = (PRESENT, ABSENT, NOT_TRIGGERED, ERROR)

OPERATORS = ("equals", "in", "at_least", "at_most", "matches")


@dataclass(frozen=True)
class Condition:
    """One test of one value of result.json."""

    path: str
    operator: str
    operand: Any
    default: Any = None
    has_default: bool = False

    def holds(self, document: dict[str, Any]) -> tuple[bool, str]:
        """Whether the condition holds in a result document, and the value it saw."""
        found, value = lookup(document, self.path)
        if not found:
            if not self.has_default:
                return False, f"{self.path} missing"
            value = self.default
        return _OPERATIONS[self.operator](value, self.operand), f"{self.path} = {value!r}"

    def text(self) -> str:
        return f"{self.path} {self.operator.replace('_', ' ')} {self.operand!r}"


def _at_least(value: Any, operand: Any) -> bool:
    return _is_number(value) and value >= operand


def _at_most(value: Any, operand: Any) -> bool:
    return _is_number(value) and value <= operand


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_OPERATIONS = {
    "equals": lambda value, operand: value == operand,
    "in": lambda value, operand: value in operand,
    "at_least": _at_least,
    "at_most": _at_most,
    "matches": lambda value, operand: isinstance(value, str) and re.search(operand, value) is not None,
}


@dataclass(frozen=True)
class Predicate:
    """`all` conditions must hold and, when `any` is given, at least one of those."""

    all: tuple[Condition, ...] = ()
    any: tuple[Condition, ...] = ()

    def evaluate(self, document: dict[str, Any]) -> tuple[bool, list[str]]:
        """Whether it holds, with one line per condition saying what was seen."""
        lines = []
        ok = True
        for condition in self.all:
            holds, seen = condition.holds(document)
            ok = ok and holds
            lines.append(f"{'yes' if holds else 'no '} {condition.text()} ({seen})")
        if self.any:
            any_holds = False
            for condition in self.any:
                holds, seen = condition.holds(document)
                any_holds = any_holds or holds
                lines.append(f"{'yes' if holds else 'no '} any: {condition.text()} ({seen})")
            ok = ok and any_holds
        return ok, lines


GUEST_ROLES = ("client", "server")


@dataclass(frozen=True)
class GuestOverrides:
    """What a version check changes in the reproducer's spec so that a TCG guest keeps up (it
    carries about 2 Mbit/s per path): spec tables merged key by key, and why. `roles`: whose
    kernel endpoint runs on the kernel under test (default both; a finding about one side can
    keep the other on the host, where a guest would not produce the traffic that provokes it)."""

    why: str
    tables: dict[str, dict[str, Any]]
    roles: tuple[str, ...] = GUEST_ROLES

    def text(self) -> str:
        """'rate_mbit=2, seconds=20' for the status records and the listing."""
        settings = [f"{key}={value}" for table in self.tables.values() for key, value in table.items()]
        if self.roles != GUEST_ROLES:
            settings.append(f"on the kernel: {', '.join(self.roles)} only")
        return ", ".join(settings) or "none"


@dataclass(frozen=True)
class Reproducer:
    """A catalogue spec (`testbed run`) or one cell of a matrix spec (`testbed matrix`)."""

    spec: str | None = None
    matrix: str | None = None
    row: str | None = None
    pairing: str | None = None
    guest: GuestOverrides | None = None

    def command(self, out: str = "DIR") -> str:
        if self.spec:
            return f"testbed run {self.spec} --out {out}"
        return (f"testbed matrix {self.matrix} --rows {self.row} --pairings {self.pairing} "
                f"--out {out}")

    def result_path(self, out: Path) -> Path:
        """Where the reproducer's command leaves the run's result.json under `out`."""
        if self.spec:
            return out / "result.json"
        return out / "cells" / str(self.row) / str(self.pairing) / "result.json"


@dataclass(frozen=True)
class Discussion:
    url: str
    title: str
    relation: str


@dataclass(frozen=True)
class Finding:
    """One finding file, validated."""

    id: str
    title: str
    implementation: str
    deviating_side: str
    summary: str
    rfc_section: str
    rfc_rule: str
    reproducer: Reproducer
    shows_when: Predicate
    triggered_when: Predicate | None
    evidence: dict[str, Any]
    selftests: str
    discussion: tuple[Discussion, ...]
    source: Path
    also_shown_by: tuple[str, ...] = field(default=())
    versions: dict[str, Any] = field(default_factory=dict)  # the generated [versions] block


def lookup(document: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (`connection.` = `connections.0.`), and whether it exists."""
    parts = path.split(".")
    if parts[0] == "connection":
        parts = ["connections", "0", *parts[1:]]
    value = document
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


# ---- loading and validation ------------------------------------------------------------------

TOP_KEYS = {
    "id": str, "title": str, "implementation": str, "deviating_side": str, "summary": str,
    "rfc": dict, "reproducer": dict, "shows_when": dict, "triggered_when": dict, "evidence": dict,
    "selftests": str, "discussion": list, "also_shown_by": list, "versions": dict,
}
REQUIRED_TOP = ("id", "title", "implementation", "deviating_side", "summary", "rfc", "reproducer",
                "shows_when", "evidence", "selftests")
RFC_KEYS = {"section": str, "rule": str}
REPRODUCER_KEYS = {"spec": str, "matrix": str, "row": str, "pairing": str, "guest": dict}
# the spec tables a version check may change (merged key by key; the spec parser checks values)
GUEST_KEYS = {"why": str, "topology_params": dict, "traffic": dict, "mptcp": dict, "roles": list}
PREDICATE_KEYS = {"all": list, "any": list}
EVIDENCE_KEYS = {"date": str, "kernel": str, "command": str, "outcome": str, "integrity": str,
                 "verdict": str, "counters": dict, "packets": str, "notes": str}
REQUIRED_EVIDENCE = ("date", "kernel", "command", "outcome", "integrity", "verdict")
DISCUSSION_KEYS = {"url": str, "title": str, "relation": str}


def _table(data: Any, where: str, allowed: dict[str, type], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: must be a table")
    for key in data:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in data:
            raise SpecError(f"{where}: missing required key {key!r}")
    for key, value in data.items():
        if not isinstance(value, allowed[key]):
            raise SpecError(f"{where}.{key}: expected {allowed[key].__name__}, got {value!r}")
    return data


def parse_condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a condition must be a table {{ path = ..., <operator> = ... }}")
    unknown = [k for k in raw if k not in ("path", "default", *OPERATORS)]
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (a condition has path, one of "
                        f"{', '.join(OPERATORS)}, and optionally default)")
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise SpecError(f"{where}: missing path (a dotted path into result.json)")
    operators = [k for k in raw if k in OPERATORS]
    if len(operators) != 1:
        raise SpecError(f"{where}: give exactly one operator of {', '.join(OPERATORS)}")
    operator = operators[0]
    operand = raw[operator]
    if operator in ("at_least", "at_most") and not _is_number(operand):
        raise SpecError(f"{where}.{operator}: expected a number, got {operand!r}")
    if operator == "in" and not isinstance(operand, list):
        raise SpecError(f"{where}.in: expected a list, got {operand!r}")
    if operator == "matches":
        if not isinstance(operand, str):
            raise SpecError(f"{where}.matches: expected a regular expression string")
        try:
            re.compile(operand)
        except re.error as exc:
            raise SpecError(f"{where}.matches: not a regular expression ({exc})") from exc
    return Condition(path, operator, operand, raw.get("default"), "default" in raw)


def parse_predicate(raw: Any, where: str) -> Predicate:
    _table(raw, where, PREDICATE_KEYS)
    if not raw.get("all") and not raw.get("any"):
        raise SpecError(f"{where}: give at least one condition in `all` or `any`")
    return Predicate(
        all=tuple(parse_condition(c, f"{where}.all[{i}]") for i, c in enumerate(raw.get("all", []))),
        any=tuple(parse_condition(c, f"{where}.any[{i}]") for i, c in enumerate(raw.get("any", []))),
    )


def parse_reproducer(raw: Any, where: str, root: Path) -> Reproducer:
    _table(raw, where, REPRODUCER_KEYS)
    if "spec" in raw:
        if len(raw) != 1 + ("guest" in raw):
            raise SpecError(f"{where}: give either spec, or matrix with row and pairing")
        reproducer = Reproducer(spec=raw["spec"], guest=parse_guest(raw.get("guest"), f"{where}.guest"))
    elif "guest" in raw:
        raise SpecError(f"{where}.guest: only a spec reproducer can be checked across kernel versions")
    else:
        missing = [k for k in ("matrix", "row", "pairing") if k not in raw]
        if missing:
            raise SpecError(f"{where}: missing {missing[0]!r} (give spec = PATH, or matrix, row "
                            "and pairing)")
        reproducer = Reproducer(matrix=raw["matrix"], row=raw["row"], pairing=raw["pairing"])
    path = reproducer.spec or reproducer.matrix
    if not (root / str(path)).is_file():
        raise SpecError(f"{where}: {path} does not exist (a path under experiments/)")
    return reproducer


def parse_guest(raw: dict[str, Any] | None, where: str) -> GuestOverrides | None:
    if raw is None:
        return None
    _table(raw, where, GUEST_KEYS, ("why",))
    roles = raw.get("roles", list(GUEST_ROLES))
    if not roles or any(role not in GUEST_ROLES for role in roles) or len(set(roles)) != len(roles):
        raise SpecError(f"{where}.roles: {roles!r} must name client, server or both, each once")
    tables = {key: value for key, value in raw.items() if key not in ("why", "roles")}
    return GuestOverrides(raw["why"].strip(), tables, tuple(role for role in GUEST_ROLES if role in roles))


def parse_finding(raw: dict[str, Any], source: Path, root: Path = PROJECT_ROOT) -> Finding:
    """A Finding from a finding file's TOML; every problem is a one-line SpecError."""
    where = str(source)
    _table(raw, where, TOP_KEYS, REQUIRED_TOP)
    if not FINDING_ID.match(raw["id"]):
        raise SpecError(f"{where}.id: {raw['id']!r} must be lowercase letters, digits and dashes")
    if raw["id"] != source.stem:
        raise SpecError(f"{where}.id: {raw['id']!r} must equal the file name ({source.stem!r})")
    rfc = _table(raw["rfc"], f"{where}.rfc", RFC_KEYS, ("section", "rule"))
    evidence = _table(raw["evidence"], f"{where}.evidence", EVIDENCE_KEYS, REQUIRED_EVIDENCE)
    try:
        dt.date.fromisoformat(evidence["date"])
    except ValueError as exc:
        raise SpecError(f"{where}.evidence.date: {evidence['date']!r} is not YYYY-MM-DD") from exc
    discussion = []
    for index, item in enumerate(raw.get("discussion", [])):
        entry = _table(item, f"{where}.discussion[{index}]", DISCUSSION_KEYS, ("url", "title", "relation"))
        discussion.append(Discussion(entry["url"], entry["title"], entry["relation"]))
    also = raw.get("also_shown_by", [])
    for index, path in enumerate(also):
        if not isinstance(path, str) or not (root / path).is_file():
            raise SpecError(f"{where}.also_shown_by[{index}]: {path!r} is not a file of the project")
    triggered = raw.get("triggered_when")
    return Finding(
        id=raw["id"], title=raw["title"], implementation=raw["implementation"],
        deviating_side=raw["deviating_side"], summary=raw["summary"].strip(),
        rfc_section=rfc["section"], rfc_rule=rfc["rule"].strip(),
        reproducer=parse_reproducer(raw["reproducer"], f"{where}.reproducer", root),
        shows_when=parse_predicate(raw["shows_when"], f"{where}.shows_when"),
        triggered_when=parse_predicate(triggered, f"{where}.triggered_when") if triggered else None,
        evidence=evidence, selftests=raw["selftests"].strip(), discussion=tuple(discussion),
        source=source, also_shown_by=tuple(also), versions=raw.get("versions", {}),
    )


def load_finding(path: Path, root: Path = PROJECT_ROOT) -> Finding:
    return parse_finding(read_toml(path, "finding"), path, root)


def load_findings(directory: Path = FINDINGS_DIR, root: Path = PROJECT_ROOT) -> list[Finding]:
    """Every findings/*.toml, sorted by id; a malformed one stops everything (one line)."""
    if not directory.is_dir():
        raise TestbedError(f"{directory}: no findings directory")
    return [load_finding(path, root) for path in sorted(directory.glob("*.toml"))]


def select_findings(findings: list[Finding], ids: list[str]) -> list[Finding]:
    """The findings named by id (all when none is named); an unknown id is a SpecError."""
    if not ids:
        return findings
    known = {f.id: f for f in findings}
    for wanted in ids:
        if wanted not in known:
            raise SpecError(f"no finding {wanted!r} (known: {', '.join(sorted(known)) or 'none'}); "
                            "see `testbed findings`")
    return [known[i] for i in dict.fromkeys(ids)]


# ---- judging a result and recording the status -----------------------------------------------

@dataclass(frozen=True)
class Judgement:
    """What one result says about one finding."""

    status: str
    reasons: list[str]


def judge(finding: Finding, document: dict[str, Any]) -> Judgement:
    """present / absent / not-triggered for one result.json document."""
    reasons: list[str] = []
    if finding.triggered_when is not None:
        triggered, lines = finding.triggered_when.evaluate(document)
        reasons += [f"triggered: {line}" for line in lines]
        if not triggered:
            return Judgement(NOT_TRIGGERED, reasons)
    shows, lines = finding.shows_when.evaluate(document)
    reasons += [f"shows: {line}" for line in lines]
    return Judgement(PRESENT if shows else ABSENT, reasons)


def status_record(judgement: Judgement, document: dict[str, Any] | None, *, date: str,
                  command: str, result_path: str, error: str | None = None) -> dict[str, Any]:
    """One status entry: the verdict, when, and the result it came from."""
    record: dict[str, Any] = {"status": judgement.status, "date": date, "command": command}
    if document is not None:
        found, conn = lookup(document, "connection")
        if found:
            record["outcome"] = conn.get("outcome")
            record["integrity"] = conn.get("integrity")
            record["verdict"] = (conn.get("integrity_verdict") or {}).get("description")
        record["result"] = result_path
    if error:
        record["error"] = error
    return record


def kernel_release(document: dict[str, Any]) -> str:
    """The kernel release a result was measured on (its environment). Inside `testbed vm run
    --kernel K` that is the guest's. When one endpoint runs on a VM kernel inside a host
    topology (issue 14), this is the one place to name that endpoint's kernel instead."""
    found, release = lookup(document, "environment.kernel")
    return str(release) if found and release else "unknown"


Status = dict[str, dict[str, dict[str, Any]]]  # finding id -> kernel release -> record


def _read_status_file(directory: Path) -> dict[str, Any]:
    path = directory / STATUS_FILE
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TestbedError(f"{path}: unreadable status file ({exc}); delete it and re-run "
                           "`testbed findings check`") from exc
    if not isinstance(doc, dict) or doc.get("schema") not in (1, STATUS_SCHEMA):
        raise TestbedError(f"{path}: not a findings status file of schema {STATUS_SCHEMA}")
    return doc


def _write_status_file(directory: Path, table: str, status: Status) -> None:
    """Replace one table of the status file, keeping the other."""
    doc = {"findings": {}, "versions": {}, **_read_status_file(directory)}
    doc["schema"] = STATUS_SCHEMA
    doc[table] = status
    write_text_atomic(directory / STATUS_FILE, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def read_status(directory: Path = FINDINGS_DIR) -> Status:
    """finding id -> kernel release -> latest status record ({} when nothing was checked)."""
    return _read_status_file(directory).get("findings", {})


def write_status(status: Status, directory: Path = FINDINGS_DIR) -> None:
    _write_status_file(directory, "findings", status)


def read_versions(directory: Path = FINDINGS_DIR) -> Status:
    """The version checks: finding id -> kernel release -> latest record (`check --kernels`)."""
    return _read_status_file(directory).get("versions", {})


def write_versions(versions: Status, directory: Path = FINDINGS_DIR) -> None:
    _write_status_file(directory, "versions", versions)


def record_status(status: dict[str, dict[str, dict[str, Any]]], finding_id: str, release: str,
                  record: dict[str, Any]) -> None:
    status.setdefault(finding_id, {})[release] = record


def status_summary(per_kernel: dict[str, dict[str, Any]], releases: list[str] | tuple[str, ...] = ()) -> str:
    """'present on 6.18.44 (2026-12-05); not-run on 6.1.0-50-amd64' for the listing: every
    recorded kernel, then the known `releases` (host, fetched) with no check on record."""
    parts = [f"{record['status']} on {release} ({record['date']})"
             for release, record in sorted(per_kernel.items())]
    missing = [release for release in dict.fromkeys(releases) if release not in per_kernel]
    if missing:
        parts.append(f"{NOT_RUN} on {', '.join(missing)}")
    return "; ".join(parts) or NOT_RUN
