"""Per-side processing rate of the core (brief item 8: >= 35k data segments/s per side).

Each host is wrapped by a small timing proxy (an injected object, no patching) that sums the
CPU time spent inside that host's calls. The harness runs with the codec off, as the sim
benchmark does, so only the core's own work is timed. The lossless harness gives the core
its best case, so the floor asserted here is the target itself.
"""

from __future__ import annotations

import random
import time

from testbed.mptcp.host import MptcpHost

from .harness import Pair

TARGET_SEGMENTS_PER_SECOND = 35_000


class TimedHost:
    def __init__(self, inner: MptcpHost) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str):
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def test_core_processes_35k_data_segments_per_second_per_side() -> None:
    pair = Pair(through_codec=False)
    pair.client = TimedHost(pair.client)  # type: ignore[assignment]
    pair.server = TimedHost(pair.server)  # type: ignore[assignment]
    client = pair.connect()
    pair.run_until(lambda: any(type(e).__name__ == "ConnectionAccepted"
                               for e in pair.events["server"]), 1.0)
    server = pair.events["server"][0].connection
    data = random.Random(1).randbytes(8_000_000)
    pending = [data]
    received = [0]

    def done() -> bool:
        if pending[0]:
            taken = client.send(pending[0])
            pending[0] = pending[0][taken:]
        received[0] += len(server.receive())
        return received[0] == len(data)

    pair.run_until(done, 60.0)
    segments = sum(1 for _, d, p in pair.sent if d == "c2s" and p.tcp.payload)
    sender_rate = segments / pair.client.seconds
    receiver_rate = segments / pair.server.seconds
    assert sender_rate >= TARGET_SEGMENTS_PER_SECOND, f"sender {sender_rate:.0f} seg/s"
    assert receiver_rate >= TARGET_SEGMENTS_PER_SECOND, f"receiver {receiver_rate:.0f} seg/s"
