"""Inside backends_detected_once (a matrix), the doctor probes the backends for the first run
only; outside it, every run probes; a failed probe is never remembered."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from testbed import runner
from testbed.errors import EnvironmentProblem
from testbed.net.shaping import Backends

GOOD = SimpleNamespace(problems=[], backends=Backends(rate="htb", loss="nft", delay="userspace"))
BAD = SimpleNamespace(problems=[SimpleNamespace(name="netns", detail="cannot create")], backends=None)


def counting(monkeypatch: pytest.MonkeyPatch, reports: list[SimpleNamespace]) -> list[int]:
    calls: list[int] = []

    def doctor() -> SimpleNamespace:
        calls.append(1)
        return reports[min(len(calls), len(reports)) - 1]

    monkeypatch.setattr(runner, "run_doctor", doctor)
    return calls


def test_the_doctor_runs_once_inside_and_every_time_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch, [GOOD])
    with runner.backends_detected_once():
        assert [runner.detect_backends() for _ in range(3)] == [GOOD.backends] * 3
    assert len(calls) == 1
    runner.detect_backends()
    runner.detect_backends()
    assert len(calls) == 3


def test_a_failed_probe_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch, [BAD, GOOD])
    with runner.backends_detected_once():
        with pytest.raises(EnvironmentProblem, match="netns: cannot create"):
            runner.detect_backends()
        assert runner.detect_backends() == GOOD.backends
        assert runner.detect_backends() == GOOD.backends
    assert len(calls) == 2
