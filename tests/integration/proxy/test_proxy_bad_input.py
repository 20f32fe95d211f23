"""Bad proxy input: one line, exit 2, and nothing built (no run state, no namespace)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.proxy import command

SPEC = """name = "bad"
[topology]
name = "proxy"
[proxy]
node = "{node}"
variant = "{variant}"
{server}
"""
CASES = {
    "node off the path": ({"node": "ra", "variant": "kernel", "server": 'server = "server"'},
                          "node 'ra' is not on every path from client to server"),
    "unknown variant": ({"node": "proxy", "variant": "haproxy", "server": 'server = "server"'},
                        "[proxy] variant = 'haproxy' is unknown"),
    "no server": ({"node": "proxy", "variant": "kernel", "server": ""}, 'no server: give server = "server"'),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_proxy_input_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    values, message = CASES[case]
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(**values))
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "proxy", str(spec)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("testbed: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_proxy_input_builds_nothing(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.net import state

    def no_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a run was started for a bad spec")

    monkeypatch.setattr(state.RunState, "create", classmethod(no_run))
    good = tmp_path / "good.toml"
    good.write_text(SPEC.format(node="proxy", variant="kernel", server='server = "server"'))
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(**CASES[case][0]))
    args = argparse.Namespace(specs=[str(good), str(spec)], out=str(tmp_path / "out"), repeats=None,
                              bytes=None)
    with pytest.raises(SpecError):  # the good spec before it is not run either
        command.run(args)
    assert not (tmp_path / "out").exists()
