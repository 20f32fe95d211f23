"""Configuration parsing: defaults, both/per-direction delay, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from middleboxes.contract import Direction
from testbed.inline.config import (
    ConfigError,
    MiddleboxSpec,
    delay_entry,
    load_config,
    parse_config,
)
from testbed.net.params import LinkParams


def test_empty_config_means_no_delay_and_no_middleboxes() -> None:
    config = parse_config({})
    assert config.seed == 0
    assert config.delay == {d: LinkParams() for d in Direction}
    assert config.middleboxes == ()


def test_both_and_per_direction_delay() -> None:
    both = parse_config({"delay": {"both": {"delay_ms": 10, "jitter_ms": 1}}})
    assert both.delay[Direction.UPSTREAM] == both.delay[Direction.DOWNSTREAM] == LinkParams(
        delay_ms=10, jitter_ms=1)
    split = parse_config({"seed": 3, "delay": {"upstream": {"delay_ms": 5, "queue_pkts": 50,
                                                            "rate_mbit": 20}}})
    assert split.seed == 3
    assert split.delay[Direction.UPSTREAM] == LinkParams(rate_mbit=20, delay_ms=5, queue_pkts=50)
    assert split.delay[Direction.DOWNSTREAM] == LinkParams()


def test_delay_entry_is_the_link_parameters_the_stage_uses() -> None:
    link = LinkParams(rate_mbit=50, delay_ms=600, jitter_ms=1, loss_pct=2, queue_pkts=100)
    entry = delay_entry(link)
    assert entry == {"rate_mbit": 50, "delay_ms": 600, "jitter_ms": 1, "queue_pkts": 100}
    assert parse_config({"delay": {"both": entry}}).delay[Direction.UPSTREAM] == link.updated(
        {"loss_pct": 0.0})


def test_middlebox_specs_keep_order_and_params() -> None:
    config = parse_config({"middleboxes": [{"name": "a", "params": {"x": 1}}, {"name": "b"}]})
    assert config.middleboxes == (MiddleboxSpec("a", {"x": 1}), MiddleboxSpec("b", {}))


@pytest.mark.parametrize(("raw", "message"), [
    ({"sede": 1}, r"config: unknown key\(s\) \['sede'\]"),
    ({"seed": "1"}, "config.seed must be an integer"),
    ({"delay": {"up": {}}}, r"config.delay: unknown key\(s\) \['up'\]"),
    ({"delay": {"both": {}, "upstream": {}}}, "either 'both' or per-direction"),
    ({"delay": {"upstream": {"delay": 10}}}, r"config.delay.upstream: unknown key\(s\) \['delay'\]"),
    ({"delay": {"downstream": {"delay_ms": -5}}},
     "config.delay.downstream: link parameter delay_ms=-5: must be"),
    ({"delay": {"both": {"delay_ms": 5, "loss_pct": 1}}},
     r"config.delay.both: unknown key\(s\) \['loss_pct'\]"),
    ({"middleboxes": {}}, "config.middleboxes must be a JSON list"),
    ({"middleboxes": [{"params": {}}]}, r"config.middleboxes\[0\].name must be"),
    ({"middleboxes": [{"name": "a", "parms": {}}]}, r"middleboxes\[0\]: unknown key"),
    ([], "config must be a JSON object"),
])
def test_errors_name_the_offending_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_load_config_reports_file_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"delay": {"both": {"delay_ms": 2}}}))
    assert load_config(good).delay[Direction.UPSTREAM].delay_ms == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.json")
