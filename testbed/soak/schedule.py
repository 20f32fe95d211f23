"""What a soak does and when, drawn from one seed before anything is built.

The abuse is an ordinary experiment timeline (testbed.spec.TimelineEvent), applied by the
runner's own `apply_timeline_event` on the soak's clock: link flaps every 20-40 s (alternating
paths), loss and delay changes, the option stripper on path B switched on and off, and, every
third flap of path A, an outage longer than the NAT's idle timeout, so the mapping of a running
connection's subflow expires while it is down. The transfers cycle through the endpoint
pairings; some are long enough for their python processes to be judged after their first minute.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from testbed.errors import SpecError
from testbed.spec import ExperimentSpec, parse_spec

NAT_PUBLIC_ADDRESS = "10.0.1.100"  # answered by the nat box on mb_a (path A's subnet)
LINKS = ("a", "b")
LOSS_CHOICES_PCT = (0.0, 0.0, 0.5, 1.0, 2.0)
DELAY_CHOICES_MS = (0.0, 2.0, 5.0, 10.0, 20.0)
# (client stack, server stack, direction): python<->kernel both ways, kernel<->kernel
PAIRINGS = (
    ("python", "kernel", "upload"),
    ("kernel", "python", "upload"),
    ("kernel", "kernel", "upload"),
    ("python", "kernel", "download"),
    ("kernel", "kernel", "download"),
    ("kernel", "python", "download"),
)
LONG_EVERY = 6  # every 6th transfer (a python one) outlives the first minute


@dataclass(frozen=True)
class SoakSettings:
    minutes: float = 30.0
    seed: int = 1
    rate_mbit: float = 20.0  # per path: keeps the kept received files and hashing cheap
    nat_idle_timeout_s: float = 4.0
    transfer_s: tuple[float, float] = (10.0, 20.0)  # a transfer's length, drawn per transfer
    long_transfer_s: float = 70.0
    port: int = 5301

    def check(self) -> None:
        if not 2.0 <= self.minutes <= 24 * 60:
            raise SpecError(f"--minutes {self.minutes:g}: must be 2..1440 (RSS is judged against "
                            "the level at 60 s, so a soak needs more than its first minute)")
        if not 0 <= self.seed < 2 ** 63:
            raise SpecError(f"--seed {self.seed}: must be 0..2**63-1")

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0


@dataclass(frozen=True)
class TransferSlot:
    index: int
    client_stack: str
    server_stack: str
    direction: str
    seconds: float

    @property
    def pairing(self) -> str:
        arrow = "->" if self.direction == "upload" else "<-"
        return f"{self.client_stack}{arrow}{self.server_stack}"


def chaos_timeline(settings: SoakSettings) -> tuple[list[dict[str, Any]], list[tuple[float, float]]]:
    """The timeline entries (spec TOML form) for the whole soak, and the (down, up) times of
    the outages of path A meant to outlast the NAT's idle timeout."""
    rng = random.Random(settings.seed)
    end = settings.duration_s
    events: list[dict[str, Any]] = []
    nat_outages: list[tuple[float, float]] = []
    t, flap = rng.uniform(20, 40), 0
    a_flaps = 0
    while t < end - 5:
        link = LINKS[flap % 2]
        down_s = rng.uniform(1.0, 3.0)
        if link == "a":
            if a_flaps % 3 == 0:
                down_s = settings.nat_idle_timeout_s + 2.0
                nat_outages.append((t, t + down_s))
            a_flaps += 1
        events.append({"at_s": round(t, 3), "link": link, "up": False})
        events.append({"at_s": round(t + down_s, 3), "link": link, "up": True})
        t += rng.uniform(20, 40)
        flap += 1
    t = rng.uniform(10, 25)
    while t < end - 5:
        changes = {"loss_pct": rng.choice(LOSS_CHOICES_PCT), "delay_ms": rng.choice(DELAY_CHOICES_MS)}
        events.append({"at_s": round(t, 3), "link": rng.choice(LINKS), "set": changes})
        t += rng.uniform(10, 25)
    t = rng.uniform(8, 20)
    while t < end - 5:
        held = rng.uniform(5, 15)
        events.append({"at_s": round(t, 3), "middlebox": "mb_b.0", "active": True})
        events.append({"at_s": round(min(t + held, end - 1), 3), "middlebox": "mb_b.0",
                       "active": False})
        t += held + rng.uniform(10, 25)
    events.sort(key=lambda e: e["at_s"])
    return events, nat_outages


def soak_spec(settings: SoakSettings, timeline: list[dict[str, Any]], *,
              client: str = "kernel", server: str = "kernel", direction: str = "upload",
              seconds: float = 10.0, seed: int | None = None, port: int | None = None) -> ExperimentSpec:
    """The soak's experiment: two_path, a NAT on path A, an MPTCP-option stripper on path B
    (off until the timeline switches it), and one transfer; validated like any spec file."""
    seconds = round(seconds, 3)
    raw: dict[str, Any] = {
        "name": "soak",
        "description": "testbed soak: consecutive transfers under link flaps, loss and delay "
                       "changes, a NAT timeout and a switched option stripper",
        "seed": settings.seed if seed is None else seed,
        "topology": {"name": "two_path", "params": {"rate_mbit": settings.rate_mbit}},
        "middleboxes": [
            {"node": "mb_a", "type": "nat", "params": {
                "public_address": NAT_PUBLIC_ADDRESS, "mapping": "endpoint_independent",
                "idle_timeout_s": settings.nat_idle_timeout_s}},
            {"node": "mb_b", "type": "strip_options", "params": {"what": ["mptcp"], "active": False}},
        ],
        "endpoints": [{"role": "server", "host": "server", "stack": server},
                      {"role": "client", "host": "client", "stack": client}],
        "traffic": {"seconds": seconds, "direction": direction, "port": port or settings.port,
                    "sample_ms": 100.0, "timeout_s": seconds + 20.0},
        "mptcp": {"subflows": 2, "client_subflow_endpoints": True},
        "timeline": timeline,
    }
    return parse_spec(raw, source="soak")


def transfer_slots(settings: SoakSettings) -> Iterator[TransferSlot]:
    """The transfers in order (endless: the session stops when the time is up)."""
    rng = random.Random(settings.seed ^ 0x50A4)
    index = 0
    while True:
        client, server, direction = PAIRINGS[index % len(PAIRINGS)]
        cycle = index // len(PAIRINGS)
        # the long one alternates between a python client and a python server
        long_slot = (index % LONG_EVERY) == (0 if cycle % 2 == 0 else 1)
        seconds = settings.long_transfer_s if long_slot else rng.uniform(*settings.transfer_s)
        yield TransferSlot(index, client, server, direction, round(seconds, 3))
        index += 1
