"""`testbed lab compare`: the same experiments inside the lab VM (real netem) and on this host.

The lab is useful once up when it answers what the emulation changes: this host has no
sch_netem, so its links use the nft loss rule and the userspace delay stage, while the Debian
guest uses netem. The Prague demo and the CI fallback matrix run on both sides, one after the
other (never at once: they would share the CPU); the guest's files come back over `vagrant ssh`
(captures left behind), and `testbed compare` and a per-phase table show the differences side by
side in DIR/compare.md. The guest runs under TCG here, so its goodput is bounded by its emulated
CPU: compare outcome classes and shares, and read goodput next to that.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from testbed import compare as compare_files
from testbed.errors import RunFailed
from testbed.lab_vagrant import PROJECT, Lab

MATRIX_SPEC = "experiments/fallback_matrix_ci.toml"
GUEST_DIR = "results/lab-compare"  # under /vagrant in the guest
TOLERANCE_PCT = 10.0


def experiment_commands(out: str, phase_seconds: float | None) -> list[tuple[str, list[str]]]:
    """(name, testbed arguments) of what runs on each side, writing under OUT."""
    prague = ["demo", "prague", "--out", f"{out}/prague"]
    if phase_seconds:
        prague += ["--phase-seconds", f"{phase_seconds:g}"]
    return [("matrix", ["matrix", MATRIX_SPEC, "--out", f"{out}/matrix"]), ("prague", prague)]


def run_on_host(out: Path, phase_seconds: float | None, steps: dict[str, float]) -> dict[str, int]:
    """Each experiment on this host; a failed expectation is a result, not an error."""
    statuses = {}
    for name, args in experiment_commands(str(out), phase_seconds):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=PROJECT, check=False)
        steps[f"host {name}"] = round(time.monotonic() - started, 1)
        statuses[name] = done.returncode
    return statuses


def run_in_lab(lab: Lab, out: Path, phase_seconds: float | None) -> dict[str, int]:
    """Each experiment in the VM, then its files (no captures) unpacked under OUT."""
    statuses = {}
    lab.vagrant("ssh", "-c", f"sudo rm -rf /vagrant/{GUEST_DIR}", what="lab clear", echo=False)
    for name, args in experiment_commands(GUEST_DIR, phase_seconds):
        line = lab.vagrant("ssh", "-c", f"cd /vagrant && sudo .venv/bin/testbed {' '.join(args)}; "
                           "echo lab-status=$?", what=f"lab {name}")
        statuses[name] = int(line.rsplit("lab-status=", 1)[1].split()[0]) if "lab-status=" in line else -1
    packed = lab.vagrant("ssh", "-c", f"sudo tar -C /vagrant/{GUEST_DIR} --exclude='*.pcap*' -cz . "
                         "| base64 -w0; echo", what="lab fetch", echo=False)
    try:
        data = base64.b64decode(packed.strip().splitlines()[-1], validate=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            _extract_plain(archive, out)
    except (ValueError, IndexError, tarfile.TarError) as exc:
        raise RunFailed(f"lab compare: the VM's results did not come back as an archive ({exc})") from None
    return statuses


def _extract_plain(archive: tarfile.TarFile, out: Path) -> None:
    """Only regular files and directories, only below OUT (tarfile's "data" filter is not in
    every Python 3.11 that Debian ships)."""
    members = archive.getmembers()
    for member in members:
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() or ".." in parts:
            raise ValueError(f"refusing {member.name!r} in the archive")
    out.mkdir(parents=True, exist_ok=True)
    archive.extractall(out, members=members)


def prague_rows(host: dict[str, Any], lab: dict[str, Any]) -> list[str]:
    """Markdown rows: per phase, each side's per-path goodput, share of a, and verdict."""
    lab_phases = {p["phase"]: p for p in lab.get("summary", [])}
    rows = []
    for phase in host.get("summary", []):
        other = lab_phases.get(phase["phase"], {})

        def cell(p: dict[str, Any]) -> str:
            if not p:
                return "not run"
            mbps = p.get("mbps", {})
            verdict = "PASS" if p.get("passed") else "FAIL"
            return (f"{mbps.get('a', 0):.1f} + {mbps.get('b', 0):.1f} Mbit/s, "
                    f"a {p.get('shares', {}).get('a', 0):.2f}, {verdict}")

        rows.append(f"| {phase['phase']} | {cell(phase)} | {cell(other)} |")
    return rows


def write_report(out: Path, statuses: dict[str, dict[str, int]], steps: dict[str, float]) -> str:
    """DIR/compare.md (and compare.json): the matrix through `testbed compare`, Prague per phase."""
    _, host_cells = compare_files.load_entries(out / "host" / "matrix")
    _, lab_cells = compare_files.load_entries(out / "lab" / "matrix")
    differences = compare_files.compare(host_cells, lab_cells, tolerance_pct=TOLERANCE_PCT,
                                        floor_mbps=compare_files.DEFAULT_FLOOR_MBPS)
    host_prague = json.loads((out / "host" / "prague" / "prague.json").read_text())
    lab_prague = json.loads((out / "lab" / "prague" / "prague.json").read_text())
    text = "\n".join([
        "# The lab VM (netem) against this host (nft loss, userspace delay)", "",
        f"Exit status host / lab: {json.dumps(statuses)}. Step times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()) + ".", "",
        f"## {MATRIX_SPEC}: `testbed compare host lab` (tolerance {TOLERANCE_PCT:g} %)", "",
        "```", compare_files.format_table(differences, show_all=True).rstrip(), "```", "",
        "## Prague demo, per phase (goodput of path a + path b, share of path a)", "",
        "| phase | host | lab VM |", "|---|---|---|", *prague_rows(host_prague, lab_prague), ""])
    (out / "compare.md").write_text(text)
    (out / "compare.json").write_text(json.dumps({
        "format": "mptcp-testbed-lab-compare", "version": 1, "statuses": statuses, "steps": steps,
        "matrix": [{"cell": d.key, "verdict": d.verdict, "what": d.what} for d in differences],
        "prague": {"host": host_prague.get("summary"), "lab": lab_prague.get("summary")}}, indent=1) + "\n")
    return text


def lab_compare(lab: Lab, out: Path, phase_seconds: float | None) -> int:
    """Host first, then the lab, then the report; 0 when both sides produced their files."""
    steps: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    statuses = {"host": run_on_host(out / "host", phase_seconds, steps),
                "lab": run_in_lab(lab, out / "lab", phase_seconds)}
    steps.update({k: v for k, v in lab.steps.items() if k.startswith("lab ")})
    missing = [str(p) for side in ("host", "lab") for p in (out / side / "matrix" / "matrix.json",
                                                            out / side / "prague" / "prague.json")
               if not p.is_file()]
    if missing:
        raise RunFailed(f"lab compare: no {', '.join(missing)} (exit statuses {statuses})")
    print(write_report(out, statuses, steps))
    print(f"lab compare: {out / 'compare.md'}")
    return 0
