"""A built and torn-down network leaves no descriptor open in the process that built it: the
soak found Mininet's shell pseudo-terminals (two per node) left open by every run, which a
process running many experiments (a matrix, a soak) piles up."""

from __future__ import annotations

import os

import pytest

from testbed.net.build import Network
from testbed.net.state import RunState, new_run_id, work_dir_of
from testbed.runner import detect_backends, plan_run
from testbed.soak.schedule import SoakSettings, chaos_timeline, soak_spec

pytestmark = pytest.mark.root


def _descriptors() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return found


def test_build_and_teardown_close_every_descriptor_they_opened() -> None:
    settings = SoakSettings(minutes=2)
    spec = soak_spec(settings, chaos_timeline(settings)[0])
    run_id = new_run_id()
    plan = plan_run(spec, work_dir_of(run_id), detect_backends())
    before = _descriptors()
    state = RunState.create(run_id)
    try:
        for _ in range(2):
            with Network(plan.topo, plan.backends, state, bumps=plan.bumps,
                         shaped_links=plan.shaped_links) as net:
                net.set_link_up("a", False)
                net.set_link_up("a", True)
                net.set_middlebox_active("mb_b", 0, True)
                assert net.inline_stats()["mb_a"]["middleboxes"][0]["state"]["expired"] == 0
            state.netns.clear()
    finally:
        state.remove()
    left = {fd: target for fd, target in _descriptors().items() if fd not in before}
    assert left == {}
