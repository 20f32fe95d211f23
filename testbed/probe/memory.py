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
from testbed.probe.target import (
    STACK_EPHEMERAL,
    ClientApp,
    EchoApp,
    python_client_config,
    python_target_config,
)
from testbed.wire import decode_packet, encode_packet
from testbed.wire.types import Packet

STEP_S = 0.0001  # virtual time a packet takes to arrive


class MemoryLink:
    """The prober's link to an in-memory python target (an echo server on `port`)."""

    def __init__(self, addresses: list[str], port: int, *, announce: str | None = None,
                 seed: int = 1) -> None:
        self.clock = 0.0
        self.addresses = addresses
        self.port = port
        self.seed = seed
        self.host = MptcpHost(addresses=addresses, config=python_target_config(),
                              rng=random.Random(seed), now=0.0)
        self.host.listen(port)
        self.app = EchoApp(announce)
        self.client: MptcpHost | None = None  # the target as a client, once started
        self.client_app: ClientApp | None = None
        self.queue: deque[Packet] = deque()

    def start_client(self, prober: str, prober_port: int) -> None:
        """The python stack connects to the prober (joins from its other addresses)."""
        self.client = MptcpHost(addresses=self.addresses, config=python_client_config(),
                                rng=random.Random(self.seed + 1), now=self.clock,
                                ephemeral_ports=STACK_EPHEMERAL)
        self.client_app = ClientApp(self.clock + 30.0)
        self.client.connect(prober, prober_port, now=self.clock, local_address=self.addresses[0])
        self._pump()

    def _hosts(self) -> list[tuple[MptcpHost, object]]:
        pairs: list[tuple[MptcpHost, object]] = [(self.host, self.app)]
        if self.client is not None:
            pairs.append((self.client, self.client_app))
        return pairs

    def now(self) -> float:
        return self.clock

    def _pump(self) -> None:
        for host, app in self._hosts():
            while (event := host.next_event()) is not None:
                app.on_event(event, self.clock)  # type: ignore[attr-defined]
            for packet in host.packets_to_send(self.clock):
                self.queue.append(decode_packet(encode_packet(packet)))
            while (event := host.next_event()) is not None:
                app.on_event(event, self.clock)  # type: ignore[attr-defined]

    def send(self, packet: Packet) -> None:
        self.clock += STEP_S
        host = self.host
        if self.client is not None and packet.tcp.dst_port != self.port:
            host = self.client
        host.receive_packet(decode_packet(encode_packet(packet)), self.clock)
        self._pump()

    def receive(self, timeout_s: float) -> Packet | None:
        deadline = self.clock + timeout_s
        while not self.queue:
            timers = [(t, h) for h, _ in self._hosts() if (t := h.get_timer()) is not None]
            if not timers or min(t for t, _ in timers) > deadline:
                self.clock = max(self.clock, deadline)
                return None
            timer, host = min(timers, key=lambda item: item[0])
            self.clock = max(self.clock, timer)
            host.handle_timer(self.clock)
            self._pump()
        self.clock += STEP_S
        return self.queue.popleft()
