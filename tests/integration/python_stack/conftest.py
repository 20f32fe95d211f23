"""One two_path network for the whole directory (building it is the slow part)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.python_stack.harness import Bed, Endpoint, WireVerdict, available


@pytest.fixture(scope="session")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    if not available():
        pytest.skip("needs root, tshark, tcpdump, nft and mnexec")
    with Bed(Path(tmp_path_factory.mktemp("python_stack"))) as built:
        yield built


@pytest.fixture()
def fresh(bed: Bed) -> Bed:
    bed.reset()
    return bed


@pytest.fixture(scope="session")
def kernel_baseline(bed: Bed) -> dict[str, WireVerdict]:
    """tshark's verdict on kernel <-> kernel traffic of the two-subflow transfer, each way.

    The direction matters: tshark warns "No mapping available" on every zero-length ACK
    whose sequence number lies past the sender's last mapping, which is every ACK of a
    client that sent the 24-byte request and then only receives.
    """
    verdicts = {}
    for direction in ("upload", "download"):
        bed.reset()
        bed.kernel_mptcp("client", subflow=(("10.0.2.1", "client-eth1"),))
        run = bed.run(Endpoint("kernel"), Endpoint("kernel"),
                      transfer=("--bytes", "4000000", "--direction", direction))
        assert run.wire is not None and run.client.error is None
        verdicts[direction] = run.wire
    return verdicts
