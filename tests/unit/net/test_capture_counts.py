"""tcpdump's counter statements, as the capture's stop reads them."""

from __future__ import annotations

from pathlib import Path

from testbed.net.capture import CAPTURE_LOG, last_counts


def test_counts_are_read_from_both_of_tcpdumps_statements(tmp_path: Path) -> None:
    log = tmp_path / CAPTURE_LOG
    log.write_text("tcpdump: listening on any\n")
    assert last_counts(log) is None
    log.write_text("tcpdump: 6 packets captured, 12 packets received by filter, 0 packets dropped by "
                   "kernel\n7 packets captured\n14 packets received by filter\n1 packet dropped by kernel\n")
    counts = last_counts(log)
    assert (counts.captured, counts.received, counts.dropped_by_kernel) == (7, 14, 1)
    assert last_counts(tmp_path / "missing.log") is None
