"""Bad balancer input: one line, exit 2, and nothing built (no run state, no namespace)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.balancer import command
from testbed.errors import SpecError

SPEC = """name = "bad"
[topology]
name = "lb"
[topology.params]
backends = {backends}
[balancer]
node = "{node}"
variant = "{variant}"
"""
CASES = {
    "no backends": ({"backends": 0, "node": "lb", "variant": "hash"}, "backends=0"),
    "unknown variant": ({"backends": 3, "node": "lb", "variant": "maglev"}, "unknown balancer variant"),
    "node off the path": ({"backends": 3, "node": "ra", "variant": "hash"}, "not on the path"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_balancer_input_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    values, message = CASES[case]
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(**values))
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "lb", str(spec)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("testbed: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_balancer_input_builds_nothing(case: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.net import state

    def no_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a run was started for a bad spec")

    monkeypatch.setattr(state.RunState, "create", classmethod(no_run))
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(**CASES[case][0]))
    args = argparse.Namespace(specs=[str(spec)], out=str(tmp_path / "out"), connections=None,
                              capture=False)
    with pytest.raises(SpecError):
        command.run(args)
    assert not (tmp_path / "out").exists()
