"""The command line refuses bad input with exit status 2 and a message naming the problem."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from testbed.inline.app import build_registered_middleboxes, main
from testbed.inline.config import ConfigError, MiddleboxSpec


def run(tmp_path: Path, config: object | None, *extra: str) -> int:
    argv = ["--left", "tbtest-none-l", "--right", "tbtest-none-r",
            "--control", str(tmp_path / "c.sock"), *extra]
    if config is not None:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        argv += ["--config", str(path)]
    return main(argv)


def test_unknown_config_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, {"delay": {"both": {"delay_msec": 1}}}) == 2
    assert "config.delay.both: unknown key(s) ['delay_msec']" in capsys.readouterr().err
    assert not (tmp_path / "c.sock").exists()


def test_unknown_middlebox_exits_2_before_touching_interfaces(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, {"middleboxes": [{"name": "rewrite_sq"}]}) == 2
    err = capsys.readouterr().err
    assert "config.middleboxes[0] (rewrite_sq)" in err and "unknown middlebox" in err


def test_missing_interface_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, None) == 2
    assert "tbtest-none-l" in capsys.readouterr().err


def test_same_leg_twice_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--left", "x", "--right", "x", "--control", str(tmp_path / "c.sock")]
    assert main(argv) == 2
    assert "--left and --right must differ" in capsys.readouterr().err


def test_registry_builds_boxes_with_their_own_seeded_rngs() -> None:
    specs = [MiddleboxSpec("rewrite_seq", {"direction": "both"}),
             MiddleboxSpec("nat", {"public_address": "10.99.0.9"})]
    first = build_registered_middleboxes(specs, random.Random(5))
    again = build_registered_middleboxes(specs, random.Random(5))
    assert [box.name for box in first] == ["rewrite_seq", "nat"]
    assert first[0].rng.getrandbits(64) == again[0].rng.getrandbits(64)
    assert build_registered_middleboxes([], random.Random(5)) == []
    with pytest.raises(ConfigError, match=r"config.middleboxes\[0\] \(nat\)"):
        build_registered_middleboxes([MiddleboxSpec("nat", {"bogus": 1})], random.Random(5))
