"""testbed.wire.dss_peek agrees with the full option decoder, and declines every other layout."""

from __future__ import annotations

import itertools

import pytest

from testbed.wire import (
    Dss,
    MaximumSegmentSize,
    NoOperation,
    Sack,
    Timestamps,
    decode_options,
    encode_options,
)
from testbed.wire.dss_peek import NO_DSS, timestamps_then_dss

NOP = NoOperation()


def dss_variants():
    for ack, ack64, mapping, dsn64, checksum, fin in itertools.product(
            (None, 0x1234), (True, False), (False, True), (True, False), (None, 0xBEEF), (False, True)):
        if mapping:
            yield Dss(ack if ack is not None else None, ack64 if ack is not None else True,
                      0x0102030405060708 if dsn64 else 0x05060708, dsn64, 77, 1400, checksum, fin)
        elif ack is not None or checksum is not None or fin:
            yield Dss(ack, ack64 if ack is not None else True, checksum=checksum, data_fin=fin)


@pytest.mark.parametrize("dss", list(dss_variants()))
def test_agrees_with_the_decoder(dss: Dss) -> None:
    raw = encode_options([NOP, NOP, Timestamps(5, 6), dss])
    [decoded] = [o for o in decode_options(raw) if type(o) is Dss]
    assert timestamps_then_dss(raw, 0, len(raw)) == (
        decoded.data_ack, decoded.data_ack_64, decoded.dsn, decoded.dsn_64, decoded.subflow_seq,
        decoded.data_len, decoded.checksum, decoded.data_fin)


def test_timestamps_alone() -> None:
    raw = encode_options([NOP, NOP, Timestamps(5, 6)])
    assert timestamps_then_dss(raw, 0, len(raw)) == NO_DSS


@pytest.mark.parametrize("options", [
    [MaximumSegmentSize(1460)],
    [NOP, NOP, Timestamps(1, 2), NOP, NOP, Sack(((1, 2),))],
    [NOP, NOP, Timestamps(1, 2), Dss(data_ack=5), NOP, NOP, Sack(((1, 2),))],
    [Dss(data_ack=5), NOP, NOP, Timestamps(1, 2)],
])
def test_other_layouts_are_declined(options) -> None:
    raw = encode_options(options)
    assert timestamps_then_dss(raw, 0, len(raw)) is None


def test_truncated_or_bad_lengths_are_declined() -> None:
    raw = encode_options([NOP, NOP, Timestamps(5, 6), Dss(data_ack=1, dsn=2, subflow_seq=3, data_len=4)])
    assert timestamps_then_dss(raw, 0, len(raw) - 8) is None
    broken = bytearray(raw)
    broken[13] = 7  # DSS length that fits no shape
    assert timestamps_then_dss(bytes(broken), 0, len(broken)) is None
    assert timestamps_then_dss(raw, 0, len(raw) + 4) is None  # end past the buffer
