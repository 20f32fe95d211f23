"""A middlebox's optional change log reaches the inline process's stats (and so result.json)."""

from __future__ import annotations

import random

from middleboxes.contract import Direction
from middleboxes.registry import build_middlebox
from testbed.inline.pipeline import FunctionCodec, MiddleboxPipeline
from testbed.wire import decode_packet, encode_packet
from testbed.wire.types import Dss

from .frames import tcp_frame, tcp_packet


def make_pipeline(log_changes: bool) -> MiddleboxPipeline:
    box = build_middlebox("strip_options", {"what": ["mptcp"], "packets": ["data"],
                                            "log_changes": log_changes}, random.Random(1))
    return MiddleboxPipeline([box], FunctionCodec(decode_packet, encode_packet))


def data_frame_with_dss() -> bytes:
    packet = tcp_packet()
    packet.tcp.options.append(Dss(data_ack=7, dsn=100, subflow_seq=1, data_len=5))
    return tcp_frame(packet)


def test_change_log_is_exported_only_when_enabled() -> None:
    quiet = make_pipeline(False)
    quiet.process(data_frame_with_dss(), Direction.UPSTREAM, 1.5)
    assert "change_log" not in quiet.counters()[0]

    logging = make_pipeline(True)
    logging.process(data_frame_with_dss(), Direction.UPSTREAM, 1.5)
    (entry,) = logging.counters()
    assert entry["counters"]["changed"] == 1
    (change,) = entry["change_log"]["entries"]
    assert change["time"] == 1.5 and change["direction"] == "upstream"
    assert "dss" in change["change"]
    assert entry["change_log"]["overflow"] == 0
