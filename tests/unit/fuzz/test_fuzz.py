"""The fuzz targets on a short run, and every input that ever failed replayed.

`testbed fuzz` runs the long campaigns (a million inputs per target); this keeps each target's
generator and driver working and each past finding fixed. A vector file is one episode: the
inputs a fresh driver is fed in order, one hex line each (testbed.fuzz.engine).
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from testbed.fuzz import mutate
from testbed.fuzz.engine import read_vector, replay_vector, run_campaign
from testbed.fuzz.seeds import seed_packets
from testbed.fuzz.targets import TARGETS
from testbed.wire import WireError, decode_options, decode_packet
from testbed.wire.mptcp_options import _DSS_BY_WIRE
from testbed.wire.peek import DSS_ACK_ONLY_LAYOUTS

VECTORS = Path(__file__).parent / "vectors"
SHORT_RUN = {"matrix": 150, "spec": 600}  # the loaders are slow per input; the rest get 1500


def _vectors() -> list[Path]:
    return sorted(VECTORS.rglob("*.hex"))


def _target_of(path: Path) -> str:
    return path.parent.name.replace("middlebox_", "middlebox:")


@pytest.mark.parametrize("name", list(TARGETS))
def test_short_campaign_finds_nothing(name: str, tmp_path: Path) -> None:
    result = run_campaign(TARGETS[name], SHORT_RUN.get(name, 1500), seed=20261205,
                          vectors=tmp_path)
    assert not result.findings, [f.message for f in result.findings.values()]
    assert result.inputs == SHORT_RUN.get(name, 1500)


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_regression_vector(path: Path) -> None:
    replay_vector(TARGETS[_target_of(path)], read_vector(path))


def test_there_are_vectors_for_the_bugs_found() -> None:
    assert {_target_of(p) for p in _vectors()} >= {"options", "peek"}


def test_the_fuzzer_finds_a_planted_bug(tmp_path: Path) -> None:
    """A driver that lets an IndexError escape is a finding, saved as a vector that replays."""
    from dataclasses import replace as dc_replace

    class Fragile:
        def feed(self, data: bytes) -> None:
            if len(data) > 3 and data[2] >> 4 == 2:
                data[60]
            decode_options(data)

    target = dc_replace(TARGETS["options"], driver=lambda rng: Fragile())
    result = run_campaign(target, 2000, seed=3, vectors=tmp_path)
    (finding,) = result.findings.values()
    assert finding.signature.startswith("IndexError@")
    with pytest.raises(IndexError):
        replay_vector(target, read_vector(finding.vector))


def test_every_subtype_at_every_length_decodes_or_raises_wire_error() -> None:
    rng = random.Random(5)
    for subtype in mutate.MPTCP_SUBTYPES:
        for length in range(mutate.MAX_OPTION_LENGTH + 1):
            for _ in range(20):
                option = mutate.mptcp_option(rng, subtype, length)
                for area in (option, b"\x01" + option, option + b"\x01\x01"):
                    with contextlib.suppress(WireError):
                        decode_options(area[:40])


def test_peek_layouts_match_the_decoder() -> None:
    assert {key for key, layout in _DSS_BY_WIRE.items()
                                    if not layout.has_map} == DSS_ACK_ONLY_LAYOUTS


def test_seed_packets_are_valid_and_cover_mptcp() -> None:
    kinds = set()
    for data in seed_packets():
        kinds.update(type(o).__name__ for o in decode_packet(data).tcp.options)
    assert {"MpCapable", "MpJoinSyn", "MpJoinSynAck", "MpJoinAck", "Dss", "AddAddr",
            "RemoveAddr", "MpPrio", "MpFail", "MpFastclose", "MpTcpRst"} <= kinds


def test_lies_change_what_they_say() -> None:
    """The mutators do make headers lie: a large share of mutated packets no longer decode,
    and the reasons span the IPv4 and TCP length fields and the options."""
    rng = random.Random(9)
    seeds = list(seed_packets())
    fields = set()
    for _ in range(3000):
        try:
            decode_packet(mutate.make_lie(rng, rng.choice(seeds)))
        except WireError as error:
            fields.add(error.field.split("[")[0].split(".")[0] + "." +
                       error.field.split(".")[1].split("[")[0])
    assert {"ip.total_length", "ip.ihl", "ip.version", "tcp.data_offset"} <= fields, fields


@pytest.mark.parametrize("where", ["traffic.seconds", "traffic.timeout_s", "degraded_below",
                                   "params.delay_ms"])
def test_a_toml_integer_beyond_a_float_is_a_spec_error(where: str) -> None:
    """Python's TOML parser returns integers of any size; the matrix fuzzer found three places
    where one became an OverflowError traceback (the vectors in vectors/matrix)."""
    import tomllib

    from testbed.errors import TestbedError
    from testbed.fuzz.seeds import EXPERIMENTS
    from testbed.matrix import parse_matrix_spec

    raw = tomllib.loads((EXPERIMENTS / "fallback_matrix_ci.toml").read_text())
    huge = 10 ** 400
    section, key = where.split(".") if "." in where else ("", where)
    if section == "traffic":
        raw["base"]["traffic"] = {k: v for k, v in raw["base"]["traffic"].items()
                                  if k != "bytes"} | {"seconds": 5, key: huge}
    elif section == "params":
        raw["middleboxes"] = [{"name": "huge", "node": "mb_a", "type": "delay",
                               "params": {"match": ["any"], "delay_ms": huge}}]
    else:
        raw[key] = huge
    with pytest.raises(TestbedError, match="too large"):
        parse_matrix_spec(raw, source="huge")
