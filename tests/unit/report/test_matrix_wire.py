"""The matrix's background reading of a cell's capture: records arrive whole, in order, from
the main thread, and a failed reading never fails the cell that waits for it."""

from __future__ import annotations

import threading
from typing import Any

from testbed.matrix_wire import WireReadings


def _collector() -> tuple[list[tuple[Any, dict[str, Any], Any]], WireReadings]:
    added: list[tuple[Any, dict[str, Any], Any]] = []

    def add(cell: Any, record: dict[str, Any], result: Any) -> None:
        assert threading.current_thread() is threading.main_thread()
        added.append((cell, record, result))

    return added, WireReadings(add)


def test_finish_waits_for_the_reading_and_adds_the_whole_record_once() -> None:
    added, readings = _collector()
    release = threading.Event()

    def reading() -> dict[str, Any]:
        release.wait(5)
        return {"row": "none", "wire": ["wire: MP_CAPABLE in the SYN and in the SYN/ACK"]}

    readings.start("none", {"row": "none"}, {"result": 1}, reading)
    assert added == []  # still reading
    release.set()
    readings.finish()
    readings.finish()
    assert added == [("none", {"row": "none", "wire": ["wire: MP_CAPABLE in the SYN and in the SYN/ACK"]},
                      {"result": 1})]
    readings.close()


def test_a_new_cell_first_finishes_the_one_before() -> None:
    added, readings = _collector()
    readings.start("a", {"row": "a"}, None, lambda: {"row": "a", "wire": []})
    readings.start("b", {"row": "b"}, None, lambda: {"row": "b", "wire": []})
    assert [cell for cell, _r, _res in added] == ["a"]
    readings.close()
    assert [cell for cell, _r, _res in added] == ["a", "b"]


def test_a_failed_reading_leaves_the_record_without_evidence_and_says_why() -> None:
    added, readings = _collector()

    def broken() -> dict[str, Any]:
        raise ValueError("tshark printed nonsense")

    readings.start("none", {"row": "none", "outcome": "mptcp"}, None, broken)
    readings.finish()  # must not raise: the next cell's run is waiting here
    assert added == [("none", {"row": "none", "outcome": "mptcp",
                               "wire_error": "ValueError: tshark printed nonsense"}, None)]
    readings.close()


def test_abandon_keeps_a_reading_that_still_ends() -> None:
    added, readings = _collector()
    readings.start("none", {"row": "none"}, None, lambda: {"row": "none", "wire": []})
    readings.abandon()
    assert added == [("none", {"row": "none", "wire": []}, None)]
