"""testbed lab check's reading of what the guest reports: every line that can be wrong is named."""

from __future__ import annotations

import pytest

from testbed.lab_check import guest_report, problems

SOUND = """==> default: Running 'ssh'
kernel=6.1.0-50-amd64
system=running
synced=yes
sudo=yes
insecure_key=0
netem=yes
rtt_min_ms=10.754
"""


def test_a_sound_guest_has_no_problem() -> None:
    report = guest_report(SOUND)
    assert report["rtt_min_ms"] == "10.754" and report["kernel"] == "6.1.0-50-amd64"
    assert problems(report) == []


@pytest.mark.parametrize(("line", "named"), [
    ("kernel=6.18.0-1-cloud", "not Debian's kernel"),
    ("system=degraded", "a unit failed"),
    ("synced=no", "rsync"),
    ("sudo=no", "sudo"),
    ("insecure_key=1", "insecure key"),
    ("netem=no", "sch_netem"),
    ("rtt_min_ms=0.05", "gave a 0.05 ms RTT"),
    ("rtt_min_ms=", "no RTT measured"),
])
def test_each_wrong_line_is_one_named_problem(line: str, named: str) -> None:
    key = line.split("=", 1)[0]
    text = "\n".join(row if not row.startswith(f"{key}=") else line for row in SOUND.splitlines())
    found = problems(guest_report(text))
    assert len(found) == 1 and named in found[0], found


def test_a_guest_that_said_nothing_is_not_sound() -> None:
    assert len(problems(guest_report("==> default: Connection refused"))) == 6
