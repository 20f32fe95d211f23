"""An in-memory link to the bundled sans-IO stack, for unit tests of the probe scripts.

The target is an `MptcpHost` running the same `EchoApp` as the python target program, on
virtual time: waiting for an answer runs the host's timers up to the deadline and no
further, so a probe that waits 1 s for a retransmission costs microseconds. Every packet
goes through `testbed.wire` both ways, as it would on the wire.
"""

from __future__ import annotations

import random
from collections import deque

from testbed.mptcp.host import MptcpHost
from testbed.probe.target import EchoApp, python_target_config
from testbed.wire import decode_packet, encode_packet
from testbed.wire.types import Packet

STEP_S = 0.0001  # virtual time a packet takes to arrive


class MemoryLink:
    """The prober's link to an in-memory python target (an echo server on `port`)."""

    def __init__(self, addresses: list[str], port: int, *, announce: str | None = None,
                 seed: int = 1) -> None:
        self.clock = 0.0
        self.host = MptcpHost(addresses=addresses, config=python_target_config(),
                              rng=random.Random(seed), now=0.0)
        self.host.listen(port)
        self.app = EchoApp(announce)
        self.queue: deque[Packet] = deque()

    def now(self) -> float:
        return self.clock

    def _pump(self) -> None:
        while (event := self.host.next_event()) is not None:
            self.app.on_event(event, self.clock)
        for packet in self.host.packets_to_send(self.clock):
            self.queue.append(decode_packet(encode_packet(packet)))
        while (event := self.host.next_event()) is not None:
            self.app.on_event(event, self.clock)

    def send(self, packet: Packet) -> None:
        self.clock += STEP_S
        self.host.receive_packet(decode_packet(encode_packet(packet)), self.clock)
        self._pump()

    def receive(self, timeout_s: float) -> Packet | None:
        deadline = self.clock + timeout_s
        while not self.queue:
            timer = self.host.get_timer()
            if timer is None or timer > deadline:
                self.clock = max(self.clock, deadline)
                return None
            self.clock = max(self.clock, timer)
            self.host.handle_timer(self.clock)
            self._pump()
        self.clock += STEP_S
        return self.queue.popleft()
