"""In-memory client/server pairs for the stack's tests (aioquic tests/test_connection.py style).

Two MptcpHost objects exchange packets through testbed.wire encode/decode (so the codec is
exercised on every packet), over per-path links with a fixed one-way delay. Virtual time is
stepped by hand. A test can drop or alter packets with `tamper`, a function
(packet, direction) -> list of packets ([] drops; direction is "c2s" or "s2c").
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from testbed.mptcp.config import StackConfig
from testbed.mptcp.driver.stack_codec import decode_stack_packet, encode_stack_packet
from testbed.mptcp.events import Event
from testbed.mptcp.host import MptcpHost
from testbed.wire.types import Packet

Tamper = Callable[[Packet, str], list[Packet]]


@dataclass
class Pair:
    client_addresses: list[str] = field(default_factory=lambda: ["10.0.0.1"])
    server_addresses: list[str] = field(default_factory=lambda: ["10.0.1.1"])
    client_config: StackConfig = field(default_factory=StackConfig)
    server_config: StackConfig = field(default_factory=StackConfig)
    delay: float = 0.010  # one-way, seconds
    seed: int = 1
    tamper: Tamper | None = None
    through_codec: bool = True

    def __post_init__(self) -> None:
        self.now = 0.0
        self.client = MptcpHost(addresses=self.client_addresses, config=self.client_config,
                                rng=random.Random(self.seed), now=0.0)
        self.server = MptcpHost(addresses=self.server_addresses, config=self.server_config,
                                rng=random.Random(self.seed + 1000), now=0.0)
        self.queue: list[tuple[float, int, str, Packet]] = []
        self.counter = 0
        self.sent: list[tuple[float, str, Packet]] = []  # every packet that left a host
        self.events: dict[str, list[Event]] = {"client": [], "server": []}
        self.path_delay: dict[str, float] = {}  # by the client-side address

    # ------------------------------------------------------------------ plumbing
    def _delay_for(self, packet: Packet, direction: str) -> float:
        client_side = packet.src if direction == "c2s" else packet.dst
        return self.path_delay.get(client_side, self.delay)

    def collect(self) -> None:
        for name, host, direction in (("client", self.client, "c2s"),
                                      ("server", self.server, "s2c")):
            for packet in host.packets_to_send(self.now):
                self.sent.append((self.now, direction, packet))
                if self.through_codec:
                    packet = decode_stack_packet(encode_stack_packet(packet))
                out = self.tamper(packet, direction) if self.tamper else [packet]
                for item in out:
                    self.counter += 1
                    heapq.heappush(self.queue, (self.now + self._delay_for(item, direction),
                                                self.counter, direction, item))
            while (event := host.next_event()) is not None:
                self.events[name].append(event)

    def next_time(self) -> float | None:
        times = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
        if self.queue:
            times.append(self.queue[0][0])
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next packet arrival or timer and process it. False when idle."""
        self.collect()
        when = self.next_time()
        if when is None:
            return False
        self.now = max(self.now, when)
        while self.queue and self.queue[0][0] <= self.now:
            _, _, direction, packet = heapq.heappop(self.queue)
            host = self.server if direction == "c2s" else self.client
            host.receive_packet(packet, self.now)
        for host in (self.client, self.server):
            timer = host.get_timer()
            if timer is not None and timer <= self.now:
                host.handle_timer(self.now)
        self.collect()
        return True

    def run(self, duration: float, *, until: Callable[[], bool] | None = None) -> None:
        end = self.now + duration
        while True:
            if until is not None and until():
                return
            self.collect()
            when = self.next_time()
            if when is None or when > end:
                self.now = end
                return
            self.step()

    def run_until(self, condition: Callable[[], bool], limit: float = 60.0) -> None:
        self.run(limit, until=condition)
        assert condition(), f"condition not reached by t={self.now:.3f}"

    # ------------------------------------------------------------------ helpers
    def event_types(self, name: str) -> list[str]:
        return [type(e).__name__ for e in self.events[name]]

    def connect(self, port: int = 5201, local_address: str | None = None):
        self.server.listen(port)
        conn = self.client.connect(self.server_addresses[0], port, now=self.now,
                                   local_address=local_address)
        return conn

    def server_connection(self):
        for event in self.events["server"]:
            if type(event).__name__ == "ConnectionAccepted":
                return event.connection
        raise AssertionError("no accepted connection on the server")

    def sent_options(self, direction: str, option_type: type) -> list:
        return [o for _, d, p in self.sent if d == direction for o in p.tcp.options
                if type(o) is option_type]
