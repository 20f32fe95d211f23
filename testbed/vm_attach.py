"""Patch panels: an endpoint namespace's interface bridged to a tap a VM's NIC sits on.

The endpoint's namespace keeps its veth (shaping, captures and middleboxes are unchanged) but
gives its address up to the guest, and becomes plain L2 between the veth and the VM: a tap of
a VM booted for this run (`attach`), or a veth pair into the namespace of a VM that serves a
whole matrix (`attach_to_pool`, testbed.vm_pool), whose tap sits on a bridge there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass

from testbed.command import CommandFailed, run_command
from testbed.vm import GuestNic


@dataclass(frozen=True)
class PatchPanel:
    """What `attach` built in one namespace, for `detach` and for the VM's NIC."""

    netns: str | None  # None: this process's namespace
    interface: str
    bridge: str
    tap: str
    addresses: tuple[str, ...]


def guest_mac(run_id: str, index: int) -> str:
    """A locally administered MAC fixed by the run and the NIC's index."""
    digest = hashlib.sha256(f"{run_id}/{index}".encode()).digest()
    return "52:54:" + ":".join(f"{b:02x}" for b in digest[:4])


def _addresses(netns: str | None, interface: str) -> tuple[str, ...]:
    done = run_command(["ip", "-o", "-4", "addr", "show", "dev", interface], netns=netns,
                       what=f"reading the addresses of {interface} in {netns}")
    return tuple(line.split()[3] for line in done.stdout.splitlines())


def attach(netns: str, interface: str, index: int) -> PatchPanel:
    """Move `interface`'s IPv4 addresses off it and bridge it to a new tap tbtap<index>."""
    bridge, tap = f"tbbr{index}", f"tbtap{index}"
    addresses = _addresses(netns, interface)
    panel = PatchPanel(netns, interface, bridge, tap, addresses)
    try:
        for argv in (["ip", "tuntap", "add", "dev", tap, "mode", "tap"],
                     ["ip", "link", "add", bridge, "type", "bridge", "forward_delay", "0"],
                     ["ip", "link", "set", tap, "master", bridge],
                     ["ip", "link", "set", interface, "master", bridge],
                     *(["ip", "addr", "del", address, "dev", interface] for address in addresses),
                     ["ethtool", "-K", tap, "tso", "off", "gso", "off", "gro", "off"],
                     ["ip", "link", "set", tap, "up"], ["ip", "link", "set", bridge, "up"]):
            run_command(argv, netns=netns, what=f"patch panel {interface}<->{tap} in {netns}")
    except CommandFailed:
        detach(panel)
        raise
    return panel


def attach_to_pool(netns: str | None, interface: str, index: int, pool_netns: str,
                   pool_bridge: str) -> PatchPanel:
    """Like `attach`, with a veth pair in place of the tap: tbv<index> here, its peer on the
    pool VM's bridge `pool_bridge` in `pool_netns` (it vanishes with its peer)."""
    # the peer's name is unique in the pool's namespace: a dying cell's peer may linger there
    here = netns or str(os.stat("/proc/self/ns/net").st_ino)
    tag = hashlib.sha256(here.encode()).hexdigest()[:6]
    bridge, link, peer = f"tbbr{index}", f"tbv{index}", f"tbp{index}-{tag}"
    addresses = _addresses(netns, interface)
    panel = PatchPanel(netns, interface, bridge, link, addresses)
    no_offloads = ["tso", "off", "gso", "off", "gro", "off"]
    try:
        for argv in (["ip", "link", "add", link, "type", "veth", "peer", "name", peer],
                     ["ip", "link", "set", peer, "netns", pool_netns],
                     ["ip", "link", "add", bridge, "type", "bridge", "forward_delay", "0"],
                     ["ip", "link", "set", link, "master", bridge],
                     ["ip", "link", "set", interface, "master", bridge],
                     *(["ip", "addr", "del", address, "dev", interface] for address in addresses),
                     ["ethtool", "-K", link, *no_offloads],
                     ["ip", "link", "set", link, "up"], ["ip", "link", "set", bridge, "up"]):
            run_command(argv, netns=netns, what=f"patch panel {interface}<->{pool_netns} in {netns}")
        for argv in (["ethtool", "-K", peer, *no_offloads],
                     ["ip", "link", "set", peer, "master", pool_bridge], ["ip", "link", "set", peer, "up"]):
            run_command(argv, netns=pool_netns, what=f"patch panel {peer} on {pool_bridge} in {pool_netns}")
    except CommandFailed:
        detach(panel)
        raise
    return panel


def detach(panel: PatchPanel) -> None:
    """Undo `attach`: bridge and tap removed, the addresses back on the interface."""
    for argv in (["ip", "link", "del", panel.bridge], ["ip", "link", "del", panel.tap]):
        with contextlib.suppress(CommandFailed):
            run_command(argv, netns=panel.netns)
    for address in panel.addresses:
        with contextlib.suppress(CommandFailed):
            run_command(["ip", "addr", "add", address, "dev", panel.interface], netns=panel.netns)


def nic_for(panel: PatchPanel, run_id: str, index: int, name: str) -> GuestNic:
    """The guest side of a panel: same addresses, on a NIC named like the host's interface."""
    return GuestNic(tap=panel.tap, mac=guest_mac(run_id, index), name=name, addresses=panel.addresses)
