"""send_buffer.SendBuffer against a plain bytearray model: the same bytes for every range after
any mix of appends and drops, views that never change once handed out, blocks released."""

from __future__ import annotations

import random

import pytest

from testbed.mptcp.send_buffer import BLOCK_SIZE, SendBuffer


def test_random_appends_drops_and_views_match_a_bytearray() -> None:
    rng = random.Random(7)
    buffer, model = SendBuffer(), bytearray()
    handed_out: list[tuple[bytes | memoryview, bytes]] = []
    for _ in range(3000):
        action = rng.random()
        if action < 0.45:
            data = rng.randbytes(rng.choice((1, 100, 1424, 5000, BLOCK_SIZE, 3 * BLOCK_SIZE + 7)))
            buffer.append(memoryview(data) if rng.random() < 0.5 else data)
            model += data
        elif action < 0.7 and model:
            count = rng.randrange(len(model) + 1)
            buffer.drop(count)
            del model[:count]
        elif model:
            start = rng.randrange(len(model))
            size = rng.randrange(min(1500, len(model) - start) + 1)
            piece = buffer.view(start, size)
            assert bytes(piece) == bytes(model[start:start + size])
            handed_out.append((piece, bytes(piece)))
        assert len(buffer) == len(model)
    # What a segment holds never changed, whatever the buffer did afterwards.
    assert all(bytes(piece) == copy for piece, copy in handed_out)


def test_a_view_within_one_block_is_not_a_copy_and_a_straddling_one_is() -> None:
    buffer = SendBuffer()
    buffer.append(bytes(range(256)) * (2 * BLOCK_SIZE // 256))
    assert isinstance(buffer.view(100, 1424), memoryview)
    straddling = buffer.view(BLOCK_SIZE - 10, 20)
    assert isinstance(straddling, bytes) and len(straddling) == 20


def test_blocks_are_released_once_dropped() -> None:
    buffer = SendBuffer()
    for _ in range(10):
        buffer.append(b"x" * BLOCK_SIZE)
        buffer.drop(BLOCK_SIZE)
    assert len(buffer) == 0
    assert len(buffer._blocks) <= 1


@pytest.mark.parametrize(("start", "size"), [(-1, 1), (0, 11), (5, 6)])
def test_ranges_outside_the_buffer_are_refused(start: int, size: int) -> None:
    buffer = SendBuffer()
    buffer.append(b"0123456789")
    with pytest.raises(ValueError, match="not in a buffer"):
        buffer.view(start, size)


def test_dropping_more_than_is_held_is_refused() -> None:
    buffer = SendBuffer()
    buffer.append(b"abc")
    with pytest.raises(ValueError, match="cannot drop 4"):
        buffer.drop(4)


def test_a_deep_copy_is_independent_and_holds_the_same_bytes() -> None:
    import copy

    from testbed.mptcp.scoreboard import SentSegment

    buffer = SendBuffer()
    buffer.append(b"abcdef" * 1000)
    segment = SentSegment(start=1, end=101, payload=buffer.view(0, 100), dsn=1)
    copied_buffer, copied_segment = copy.deepcopy((buffer, segment))
    copied_buffer.drop(6)
    copied_buffer.append(b"zz")
    assert bytes(buffer.view(0, 6)) == b"abcdef" and len(buffer) == 6000
    assert bytes(copied_buffer.view(len(copied_buffer) - 2, 2)) == b"zz"
    assert copied_segment.payload == segment.payload and isinstance(copied_segment.payload, bytes)
