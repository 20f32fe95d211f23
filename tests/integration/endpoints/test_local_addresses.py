"""The python endpoint's own address list (an rtnetlink dump) against what `ip` reports, in a
real namespace with addresses of both families, secondary and link-local ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from .netns import run_checked

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2 (a network namespace)")

_PROBE = ("import json, sys; from testbed.endpoints.stack_endpoint import host_addresses; "
          "print(json.dumps({'addresses': host_addresses(), "
          "'pyroute2': any(m.startswith('pyroute2') for m in sys.modules)}))")


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"tb-addr-{uuid.uuid4().hex[:8]}"
    run_checked("ip", "netns", "add", name)
    try:
        for command in (
            ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0-peer"],
            ["ip", "link", "add", "d1", "type", "veth", "peer", "name", "d1-peer"],
            *(["ip", "link", "set", name, "up"] for name in ("d0", "d0-peer", "d1", "d1-peer")),
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", "10.77.1.1/24", "dev", "d0"],
            ["ip", "addr", "add", "10.77.9.1/24", "dev", "d0"],  # a second address, same link
            ["ip", "addr", "add", "fd00:77:1::1/64", "dev", "d0", "nodad"],
            ["ip", "addr", "add", "10.77.2.1/24", "dev", "d1"],
            ["ip", "addr", "add", "fd00:77:2::1/64", "dev", "d1", "nodad"],
        ):
            run_checked("ip", "netns", "exec", name, *command)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _ip_addresses(namespace: str) -> list[tuple[int, bool, str]]:
    links = json.loads(run_checked("ip", "netns", "exec", namespace, "ip", "-j", "addr", "show"))
    return [(link["ifindex"], info["family"] == "inet6", info["local"])
            for link in links for info in link.get("addr_info", [])]


def test_the_endpoint_lists_what_ip_lists_without_pyroute2(namespace: str) -> None:
    out = run_checked("ip", "netns", "exec", namespace, sys.executable, "-c", _PROBE)
    found = json.loads(out)
    expected = [address for _index, _v6, address in sorted(
        (index, v6, address) for index, v6, address in _ip_addresses(namespace)
        if not address.startswith(("127.", "fe80:")) and address != "::1")]
    assert found["addresses"] == expected
    assert set(expected) == {"10.77.1.1", "10.77.9.1", "fd00:77:1::1", "10.77.2.1",
                             "fd00:77:2::1"}
    # Importing pyroute2 costs the stack's process ~14 MB of RSS for its whole life.
    assert found["pyroute2"] is False, "the python endpoint imported pyroute2"
