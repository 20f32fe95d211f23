"""Every probe script against the bundled sans-IO stack in memory (virtual time).

The python stack must pass every probe it implements; a probe it does not implement says
so (not-implemented), never error. These also exercise the scripts themselves: a script bug
shows up here as an error verdict with its exception.
"""

from __future__ import annotations

import random

import pytest

from testbed.probe.catalogue import ProbeContext, load
from testbed.probe.execute import run_probe
from testbed.probe.memory import MemoryLink
from testbed.probe.session import LISTEN_PORT

PROBER = ("10.0.1.1", "10.0.2.1")
TARGET, ANNOUNCED, PORT = "10.0.100.2", "10.0.100.3", 5201
PROBES = load()
NOT_IMPLEMENTED_BY_STACK: set[str] = set()


def run_in_memory(name: str, seed: int = 1) -> dict:
    probe = PROBES[name]
    announce = ANNOUNCED if probe.needs == "announce" else None
    link = MemoryLink([TARGET, ANNOUNCED], PORT, announce=announce, seed=seed + 1000)
    ctx = ProbeContext(link=link, prober=PROBER, target=TARGET, port=PORT, announced=ANNOUNCED,
                       rng=random.Random(seed),
                       start_client=lambda: link.start_client(PROBER[0], LISTEN_PORT))
    return run_probe(probe, ctx)


def test_catalogue_has_forty_probes_with_rfc_clauses():
    assert len(PROBES) >= 40
    for probe in PROBES.values():
        assert probe.rfc.startswith("RFC 8684 §"), probe.name
        assert probe.expected and probe.survey_row


@pytest.mark.parametrize("name", sorted(PROBES))
def test_python_stack_passes_in_memory(name):
    row = run_in_memory(name)
    wanted = "not-implemented" if name in NOT_IMPLEMENTED_BY_STACK else "pass"
    assert row["verdict"] == wanted, (row["observed"], "\n".join(row["trace"]))
    assert row["trace"], "a verdict without evidence"
