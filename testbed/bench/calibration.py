"""A fixed pure-Python workload measured in the same run as the CPU benchmarks.

A CPU figure (segments/s, packets/s) depends on the machine's speed; divided by this loop's
rate, measured in the same process minutes apart, the machine's speed cancels out and what is
left moves only when the code under test gets faster or slower. The loop does the kinds of
work a packet path does (struct unpacking, slicing, dict lookups, small objects, integer
arithmetic) and never changes: changing it invalidates every baseline (bump CALIBRATION_ID).
"""

from __future__ import annotations

import struct
import time
import timeit

CALIBRATION_ID = "packet-like-loop-v1"
_HEADER = struct.Struct("!HHIIBBHHH")
_FRAMES = [bytes(range(i, i + 20)) + bytes(40) for i in range(16)]


def _one_loop() -> int:
    """One calibration iteration: parse 16 header-like byte strings and tally them."""
    table: dict[int, int] = {}
    total = 0
    for frame in _FRAMES:
        src, dst, seq, ack, offset, flags, window, checksum, urgent = _HEADER.unpack_from(frame)
        key = (src << 16) | dst
        table[key] = table.get(key, 0) + (seq ^ ack) % 65521
        options = frame[20:(offset >> 4) * 4 or 24]
        total += len(options) + flags + window + (checksum ^ urgent)
        pair = (seq + len(frame)) & 0xFFFFFFFF, ack
        total += pair[0] % 7
    return total + len(table)


def loops_per_second(repeat: int = 5, number: int = 10000) -> tuple[float, list[float]]:
    """The best rate over `repeat` timings of `number` loops, and every timing's rate. Timed in
    the process's CPU time, as the CPU benchmarks are, so other processes' load does not count;
    what load still does (cache and frequency) only slows a timing, so the best is the speed."""
    timings = timeit.Timer(_one_loop, timer=time.process_time).repeat(number=number,
                                                                      repeat=repeat)
    rates = [number / seconds for seconds in timings]
    return max(rates), rates
