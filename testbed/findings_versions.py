"""Findings across Linux versions (`testbed findings check --kernels 6.1,6.12,host,newest`).

A finding recorded on the host's kernel says nothing about the kernels users run. A version
check runs the finding's reproducer once per kernel with every Linux (stack = "kernel")
endpoint on that kernel: a fetched one as a VM endpoint (testbed.endpoints.vm_kernel, TCG
where KVM does not work), `host` in the host's namespaces as usual. A TCG guest keeps up with
only about 2 Mbit/s per path, so each run, the host's included, uses the rates of the finding's
`[reproducer.guest]`: every column of the version table then comes from the same experiment.

The verdict per kernel is the finding's own predicates on that run's result.json (present /
absent / not-triggered / error, as for `check` without --kernels); the summary groups them into
"present in 6.1 (6.1.176-1), 6.12 (6.12.117-1); absent in 7.2 (7.2.13-1)" with the exact
package versions, and ends the finding's file as a generated `[versions]` block.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import SpecError
from testbed.findings import ABSENT, GUEST_ROLES, PRESENT, PROJECT_ROOT, Finding, lookup
from testbed.spec import ExperimentSpec, parse_spec, read_toml

HOST = "host"
INCONCLUSIVE = "inconclusive"  # the summary's word for not-triggered and error
BLOCK_MARKER = "# ---- versions: written by `testbed findings check --kernels`; edits below are lost ----"
_MAJOR_MINOR = re.compile(r"^(\d+\.\d+)")


@dataclass(frozen=True)
class KernelChoice:
    """One kernel of a version check: the host's or a fetched Debian one."""

    release: str
    package: str
    version: str  # the Debian package version; "" for the host's kernel
    suite: str
    host: bool

    @property
    def upstream(self) -> str:
        """6.1.176 for a fetched kernel (from its package version), 6.18.44 for the host."""
        if self.version:
            from testbed.kernels import upstream_version

            return upstream_version(self.version)
        return self.release.split("-")[0]

    @property
    def label(self) -> str:
        """What the summary calls it: major.minor ("6.12")."""
        match = _MAJOR_MINOR.match(self.upstream)
        return match.group(1) if match else self.release

    def exact(self) -> str:
        """The exact version for the summary: the Debian package version, or the host release."""
        return f"host {self.release}" if self.host else self.version

    def facts(self) -> dict[str, Any]:
        """The fields a status record keeps about the kernel."""
        return {"label": self.label, "upstream": self.upstream, "package": self.package,
                "version": self.version, "suite": self.suite, "host": self.host}


def parse_kernel_list(text: str) -> list[str]:
    """'6.1,6.12,host,newest' as selectors; a malformed list is a one-line SpecError."""
    from testbed.kernels import SELECTOR

    selectors = [part.strip() for part in text.split(",")]
    for selector in selectors:
        if selector != HOST and not re.fullmatch(SELECTOR, selector):
            raise SpecError(f"--kernels: {selector!r} is not a kernel release prefix, 'newest' or "
                            "'host' (a comma-separated list, e.g. 6.1,6.12,host,newest)")
    return list(dict.fromkeys(selectors))


def resolve_kernels(selectors: list[str], cache: Path | None = None) -> list[KernelChoice]:
    """The kernels the selectors name, each once; a kernel that is not fetched is the one-line
    error of `testbed kernels` (which fetch to run)."""
    from testbed.kernels import cache_dir, find_fetched, host_kernel

    chosen: dict[str, KernelChoice] = {}
    for selector in selectors:
        if selector == HOST:
            kernel = host_kernel()
            choice = KernelChoice(kernel.release, "", "", "", host=True)
        else:
            kernel = find_fetched(selector, cache or cache_dir())
            choice = KernelChoice(kernel.release, kernel.package, kernel.version, kernel.suite, host=False)
        chosen.setdefault(choice.release, choice)
    return list(chosen.values())


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    merged.update(changes)
    return merged


def version_spec(finding: Finding, kernel: KernelChoice, root: Path = PROJECT_ROOT) -> ExperimentSpec:
    """The reproducer's spec at the guest rates, with the kernel endpoints of the guest's roles
    on `kernel` (the others on the host's)."""
    reproducer = finding.reproducer
    if not reproducer.spec:
        raise SpecError(f"{finding.id}: a matrix-cell reproducer cannot be checked across versions "
                        "(give the finding a spec reproducer)")
    if reproducer.guest is None:
        raise SpecError(f"{finding.source}: no [reproducer.guest]: say at which rates a TCG guest "
                        "reproduces it (docs/findings.md, 'Across Linux versions')")
    raw = read_toml(root / reproducer.spec)
    tables = reproducer.guest.tables
    topology = raw.setdefault("topology", {})
    if "topology_params" in tables:
        topology["params"] = _merge(topology.get("params", {}), tables["topology_params"])
    if "traffic" in tables:
        traffic = raw.setdefault("traffic", {})
        override = dict(tables["traffic"])
        if kernel.host:
            # a guest's longer timeout waits for a booted VM to start its endpoint; on the host
            # it would only stretch a stall (the finding's own timeout judges it the same way)
            override.pop("timeout_s", None)
        # bytes and seconds exclude each other: the override's choice replaces the spec's
        for amount in ("bytes", "seconds"):
            if amount in override:
                traffic.pop("bytes", None)
                traffic.pop("seconds", None)
        raw["traffic"] = _merge(traffic, override)
    if "mptcp" in tables:
        raw["mptcp"] = _merge(raw.get("mptcp", {}), tables["mptcp"])
    for endpoint in raw.get("endpoints", []):
        if isinstance(endpoint, dict) and endpoint.get("stack") == "kernel":
            endpoint.pop("kernel", None)
            if not kernel.host and endpoint.get("role") in reproducer.guest.roles:
                endpoint["kernel"] = kernel.release
    return parse_spec(raw, source=f"{reproducer.spec} (guest rates, Linux {kernel.label})")


def endpoint_kernels(document: dict[str, Any]) -> dict[str, str]:
    """role -> the release each kernel endpoint of a run ran on (from result.json)."""
    endpoints = document.get("endpoints") or {}
    return {role: str(record.get("kernel")) for role, record in endpoints.items()
            if isinstance(record, dict) and record.get("stack") == "kernel"}


def wrong_kernel(document: dict[str, Any], kernel: KernelChoice,
                 roles: tuple[str, ...] = GUEST_ROLES) -> str | None:
    """Why the run does not speak for `kernel` (an endpoint of `roles` on another release), or
    None."""
    ran = {role: release for role, release in endpoint_kernels(document).items() if role in roles}
    if not ran:
        return f"the run has no Linux endpoint as {' or '.join(roles)}"
    others = {role: release for role, release in ran.items() if release != kernel.release}
    if others:
        text = ", ".join(f"{role} on {release}" for role, release in sorted(others.items()))
        return f"asked for {kernel.release}, but the {text}"
    return None


def guest_facts(document: dict[str, Any]) -> dict[str, Any]:
    """How the VM endpoints ran: accel, and whether any was CPU-bound (its figures then say
    more about the guest than about the network)."""
    facts: dict[str, Any] = {}
    for role, record in sorted((document.get("endpoints") or {}).items()):
        vm = record.get("vm") if isinstance(record, dict) else None
        if not vm:
            continue
        facts["accel"] = vm.get("accel")
        facts["cpu_bound"] = bool(facts.get("cpu_bound")) or bool(vm.get("cpu_bound"))
        facts.setdefault("boot_s", {})[role] = vm.get("boot_s")
    return facts


def _sort_key(record: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(record.get("upstream", "")))[:3])


def _group(status: str) -> str:
    return status if status in (PRESENT, ABSENT) else INCONCLUSIVE


def version_summary(per_kernel: dict[str, dict[str, Any]]) -> str:
    """'present in 6.1 (6.1.176-1), 6.18 (host 6.18.44-x); absent in 7.2 (7.2.13-1)': every
    kernel checked, oldest first, grouped by verdict (not-triggered and error are inconclusive)."""
    groups: dict[str, list[str]] = {PRESENT: [], ABSENT: [], INCONCLUSIVE: []}
    for release, record in sorted(per_kernel.items(), key=lambda item: _sort_key(item[1])):
        exact = f"host {release}" if record.get("host") else record.get("version") or release
        notes = [exact]
        if _group(record["status"]) == INCONCLUSIVE:
            notes.append(record["status"])
        if record.get("cpu_bound"):
            notes.append("guest CPU-bound")
        groups[_group(record["status"])].append(f"{record.get('label', release)} ({', '.join(notes)})")
    words = {PRESENT: "present in", ABSENT: "absent in", INCONCLUSIVE: "inconclusive on"}
    return "; ".join(f"{words[g]} {', '.join(items)}" for g, items in groups.items() if items) \
        or "no version checked"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


BLOCK_FIELDS = ("status", "label", "version", "package", "suite", "host", "where", "outcome",
                "integrity", "cpu_bound", "date", "runs")


def versions_block(finding: Finding, per_kernel: dict[str, dict[str, Any]]) -> str:
    """The generated end of a finding's file: the summary and one line per kernel."""
    guest = finding.reproducer.guest
    lines = [BLOCK_MARKER, "[versions]",
             f"summary = {_toml_value(version_summary(per_kernel))}",
             f"run_at = {_toml_value(guest.text() if guest else 'none')}",
             f"command = {_toml_value(f'testbed findings check {finding.id} --kernels KERNELS')}",
             "[versions.kernels]"]
    for release, record in sorted(per_kernel.items(), key=lambda item: _sort_key(item[1])):
        fields = ", ".join(f"{key} = {_toml_value(record[key])}" for key in BLOCK_FIELDS
                           if record.get(key) not in (None, ""))
        lines.append(f"{_toml_value(release)} = {{ {fields} }}")
    return "\n".join(lines) + "\n"


def write_versions_block(path: Path, block: str) -> None:
    """Replace the generated block at the end of a finding file (or append it)."""
    from testbed.report.files import write_text_atomic

    text = path.read_text()
    head = text.split(BLOCK_MARKER, 1)[0].rstrip("\n")
    write_text_atomic(path, f"{head}\n\n{block}")


def document_facts(document: dict[str, Any]) -> dict[str, Any]:
    """outcome/integrity of a run, for records of runs the predicates did not judge."""
    found, connection = lookup(document, "connection")
    return {"outcome": connection.get("outcome"), "integrity": connection.get("integrity")} if found else {}
