"""What every catalogue middlebox shares: its params, counters, change log and idle timers.

The counters follow one convention across the catalogue so result.json is comparable:
seen = packets that arrived; changed = arrived packets that left modified (including those
merged into another segment by `coalesce`); dropped = packets discarded by policy (firewall,
NAT filtering, impairment); injected = packets sent that never arrived (split pieces after
the first, RSTs a firewall answers with).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from middleboxes.contract import Direction, MiddleboxCounters
from middleboxes.flows import packet_flow_label
from middleboxes.spec import CommonParams
from testbed.wire.types import Packet


class ChangeLog:
    """A bounded record of what a middlebox did to which packet.

    It keeps the FIRST `limit` entries, because the handshake is what usually decides an
    experiment's outcome, and counts the entries that did not fit in `overflow`.
    """

    def __init__(self, enabled: bool, limit: int) -> None:
        self.enabled = enabled
        self.limit = limit
        self.entries: list[dict[str, Any]] = []
        self.overflow = 0

    def record(self, now: float, direction: Direction, packet: Packet, change: str,
               **details: Any) -> None:
        if not self.enabled:
            return
        if len(self.entries) >= self.limit:
            self.overflow += 1
            return
        entry: dict[str, Any] = {
            "time": now,
            "direction": direction.value,
            "flow": packet_flow_label(packet),
            "change": change,
        }
        entry.update(details)
        self.entries.append(entry)


class MiddleboxBase:
    """Base of the catalogue: holds params, rng, counters and the change log.

    Subclasses set `name`, `imitates` (the real device, for docs) and `params_type`, and
    implement `process`. Boxes that never hold packets keep the default timer methods.
    """

    name: ClassVar[str] = ""
    imitates: ClassVar[str] = ""
    params_type: ClassVar[type[CommonParams]] = CommonParams

    def __init__(self, params: CommonParams, rng: random.Random) -> None:
        if not isinstance(params, self.params_type):
            raise TypeError(f"{type(self).__name__} needs {self.params_type.__name__}, "
                            f"got {type(params).__name__}")
        self.params = params
        self.rng = rng
        self.counters = MiddleboxCounters()
        self.change_log = ChangeLog(params.log_changes, params.log_limit)

    def process(self, packet: Packet, direction: Direction, now: float) -> list[Packet]:
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        return None

    def release(self, now: float) -> list[tuple[Packet, Direction]]:
        return []

    def owned_addresses(self) -> list[str]:
        """Addresses this box answers ARP for on a bump-in-the-wire node (NAT public side)."""
        return []
