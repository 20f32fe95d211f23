"""`TESTBED_EMULATION` picks netem where it works (auto) or the no-netem emulation on purpose;
a value it does not know stops `testbed doctor` (and every run) in one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testbed.doctor import EMULATION_ENV, emulation_choice
from testbed.errors import SpecError


@pytest.mark.parametrize(("value", "expected"), [(None, "auto"), ("", "auto"), ("auto", "auto"),
                                                 ("no-netem", "no-netem"), (" no-netem ", "no-netem")])
def test_known_values(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str) -> None:
    if value is None:
        monkeypatch.delenv(EMULATION_ENV, raising=False)
    else:
        monkeypatch.setenv(EMULATION_ENV, value)
    assert emulation_choice() == expected


def test_an_unknown_value_is_a_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATION_ENV, "netem-only")
    with pytest.raises(SpecError, match="TESTBED_EMULATION='netem-only': expected one of auto, no-netem"):
        emulation_choice()


def test_the_cli_says_it_in_one_line_and_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor"], capture_output=True,
                          text=True, env={**os.environ, EMULATION_ENV: "bogus"}, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0 and "TESTBED_EMULATION='bogus'" in done.stderr
    assert "Traceback" not in done.stderr
