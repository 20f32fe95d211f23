"""Per-component random streams derived from one experiment seed.

Each component (a link direction, a host, a middlebox) gets its own `random.Random` seeded from
a hash of (seed, component name). Adding a component therefore never shifts the stream another
component sees, so a seed keeps reproducing the same losses on path 1 even after a path 3 is
added to the topology.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, component: str) -> int:
    """A 64-bit seed for `component`, stable across Python versions and processes."""
    digest = hashlib.sha256(f"{seed}/{component}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def derive_rng(seed: int, component: str) -> random.Random:
    """The component's own random stream (see the module docstring for why it is per name)."""
    return random.Random(derive_seed(seed, component))
