"""Shards of a matrix and the queue the hosts take them from.

A shard is one cell (one row x one pairing): the smallest unit `testbed matrix --rows
--pairings` can run, so hosts of different speeds stay busy to the end and a host that fails
costs at most the cell it was running. Hosts pull shards when free; a shard whose host failed
goes back to the FRONT of the queue for the next free host. The queue only ends a host's loop
when nothing is waiting and nothing is running elsewhere (a running shard may still come back).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from testbed.matrix import MatrixSpec


@dataclass(frozen=True)
class Shard:
    index: int
    row: str
    pairings: tuple[str, ...]

    @property
    def name(self) -> str:
        """Directory-safe: row names and pairings are letters, digits, '_', '.', '-'."""
        return f"s{self.index:03d}-{self.row}-{'+'.join(self.pairings)}"

    @property
    def cells(self) -> list[tuple[str, str]]:
        return [(self.row, pairing) for pairing in self.pairings]

    def describe(self) -> str:
        return f"{self.row} \u00d7 {','.join(self.pairings)}"


def plan_shards(matrix: MatrixSpec) -> list[Shard]:
    return [Shard(index, cell.row.name, (cell.pairing,)) for index, cell in enumerate(matrix.cells, 1)]


@dataclass
class ShardQueue:
    """Thread-safe: one worker thread per host calls take/finish/give_back."""

    shards: list[Shard]
    waiting: deque[Shard] = field(init=False)
    running: dict[int, str] = field(default_factory=dict)  # shard index -> host label
    finished: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, list[str]] = field(default_factory=dict)  # shard index -> hosts that failed it

    def __post_init__(self) -> None:
        self.waiting = deque(self.shards)
        self._changed = threading.Condition()

    def take(self, host: str, stop: threading.Event) -> Shard | None:
        """The next shard for `host`; None when there is nothing left to do (or on stop)."""
        with self._changed:
            while not stop.is_set():
                if self.waiting:
                    shard = self.waiting.popleft()
                    self.running[shard.index] = host
                    return shard
                if not self.running:
                    return None
                self._changed.wait(timeout=0.2)
            return None

    def finish(self, shard: Shard) -> None:
        with self._changed:
            host = self.running.pop(shard.index)
            self.finished[shard.index] = host
            self._changed.notify_all()

    def give_back(self, shard: Shard, *, failed_host: str | None) -> None:
        """The shard did not complete: first in line for the next free host."""
        with self._changed:
            self.running.pop(shard.index, None)
            if failed_host is not None:
                self.attempts.setdefault(shard.index, []).append(failed_host)
            self.waiting.appendleft(shard)
            self._changed.notify_all()

    def unfinished(self) -> list[Shard]:
        with self._changed:
            return [s for s in self.shards if s.index not in self.finished]
