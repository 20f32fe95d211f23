"""Request/response latency for real (issue 19 point 4): namespaces, kernel MPTCP and the
bundled python stack, the userspace delay stage, nft loss.

`testbed latency --short` runs the four variants (about 35 s in all); the mixed pairings run
the same traffic between a kernel and a python end each way, and through an ALG that edits one
request (a few seconds each). Assertions
are on what the runs measured: every request answered, both streams intact, the wire bytes
per payload byte, and the redundant scheduler's tail (one run of 100 requests each here, so the
table compares p90: 22-55 ms against the others' 53-158 ms in three runs while writing this).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import pytest

from testbed import latency
from testbed.endpoints.payload import PayloadSource
from testbed.latency_result import LATENCY_FILE, read_latency_csv
from testbed.runner import run_experiment
from testbed.spec import MiddleboxPlacement, load_spec

if os.geteuid() != 0:
    pytest.skip("scenario integration tests need root (namespaces, tc, nft)", allow_module_level=True)

pytestmark = [pytest.mark.root]
SCENARIOS = Path(__file__).resolve().parents[3] / "experiments" / "scenarios"


def test_the_redundant_scheduler_cuts_the_tail_at_about_twice_the_bytes(tmp_path: Path) -> None:
    args = argparse.Namespace(out=tmp_path, short=True, runs=None, variants=",".join(latency.VARIANTS),
                              replot=False)
    code = latency.run(args)
    doc = json.loads((tmp_path / latency.SUMMARY_FILE).read_text())
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert code == 0 and not failed, failed
    medians = {name: v["median"] for name, v in doc["variants"].items()}
    assert medians["python-redundant"]["wire_per_payload_byte"] >= 1.5, medians
    assert all(m["wire_per_payload_byte"] < 1.3 for name, m in medians.items()
               if name != "python-redundant"), medians
    assert (tmp_path / latency.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| python-redundant | 1 |" in (tmp_path / latency.TABLE_FILE).read_text()


@pytest.mark.parametrize(("client", "server"), [("kernel", "python"), ("python", "kernel")])
def test_mixed_stacks_answer_every_request_intact(tmp_path: Path, client: str, server: str) -> None:
    base = load_spec(SCENARIOS / "latency_short.toml")
    stacks = {"client": client, "server": server}
    spec = dataclasses.replace(
        base, timeline=(), endpoints=tuple(dataclasses.replace(e, stack=stacks[e.role])
                                           for e in base.endpoints),
        traffic=dataclasses.replace(base.traffic, requests=40, rate_per_s=None))
    result = run_experiment(spec, tmp_path, progress=lambda _m: None)
    conn = result["connections"][0]
    assert (conn["client_stack"], conn["server_stack"]) == (client, server)
    assert conn["integrity"] == "ok" and conn["mptcp"], conn["problems"]
    assert conn["latency"]["count"] == 40 and conn["bytes"] == 40 * 5000
    # at least one round trip of the 10 ms path, and every latency written down
    assert conn["latency"]["p50_ms"] >= 20, conn["latency"]
    assert len(read_latency_csv(tmp_path / LATENCY_FILE)) == 40


def test_an_edited_request_is_caught_by_the_request_stream_check(tmp_path: Path) -> None:
    """An ALG that rewrites 3 bytes of the first request (same length, upstream only): MPTCP
    without DSS checksums delivers the edit, the answers stay intact, and only the request
    stream's hashes can tell; the run must say corrupted."""
    base = load_spec(SCENARIOS / "latency_short.toml")
    # "Yqd" is at offset 100 of the request stream of seed 1 (the first request)
    assert bytes(PayloadSource(base.seed).window(0, 200))[100:103] == b"Yqd"
    alg = {"pattern": "Yqd", "replacement": "XXX", "direction": "upstream", "limit": 1}
    spec = dataclasses.replace(
        base, timeline=(), middleboxes=tuple(MiddleboxPlacement(node, "rewrite_payload", alg)
                                             for node in ("mb_a", "mb_b")),
        traffic=dataclasses.replace(base.traffic, requests=20, rate_per_s=None))
    result = run_experiment(spec, tmp_path, progress=lambda _m: None)
    conn = result["connections"][0]
    assert conn["integrity"] == "corrupted", conn["integrity_verdict"]
    assert any("request stream differs" in problem for problem in conn["problems"]), conn["problems"]
    assert conn["latency"]["count"] == 20  # the server answered every (edited) request
    assert conn["sha256"]["client"] == conn["sha256"]["server"]  # the answers arrived intact
