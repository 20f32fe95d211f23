"""A middlebox switched on mid-transfer by the timeline, live: Linux kernel MPTCP at both ends on
two_path, the catalogue spec experiments/middleboxes/strip_mptcp_switched_on.toml through the
runner. The box's counters at the switch (recorded in the applied timeline) show it passed
everything untouched until then; its counters at the end show it stripped after."""

from __future__ import annotations

import pytest

from .conftest import RunSpec
from .test_live_middleboxes import assert_clean_checksums, box, connection

pytestmark = pytest.mark.root


def test_a_box_switched_on_at_2s_passes_everything_before_and_strips_after(
        run_spec: RunSpec) -> None:
    result = run_spec("strip_mptcp_switched_on")
    [switch] = [entry for entry in result["timeline"] if "middlebox" in entry]
    assert switch["middlebox"] == "mb_a.0" and switch["active"] is True
    assert 2.0 <= switch["at_s"] < 2.5, switch
    before = switch["counters"]
    # until 2 s: thousands of packets, every one passed untouched and counted inactive
    assert before["seen"] > 1000 and before["inactive"] == before["seen"], before
    assert before["changed"] == 0
    after = box(result, "mb_a", "strip_options")
    assert after["inactive"] == before["inactive"], after  # nothing is inactive once on
    assert after["seen"] > before["seen"] and after["changed"] > 0, after
    assert_clean_checksums(result)
    conn = connection(result)
    # Linux 6.18: the server resets the subflow that lost its options (MP_TCPRST) and the
    # transfer completes on path B, stream intact
    assert conn["integrity"] == "ok", conn["evidence"]
    assert conn["outcome"] in ("mptcp", "subflow-rejected"), conn["evidence"]
