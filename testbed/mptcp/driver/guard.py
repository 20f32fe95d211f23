"""Keep the host kernel from answering the stack's segments.

The stack shares its addresses with the host kernel (the testbed host's interfaces), so a
segment for the stack would also reach the kernel's TCP, which knows no such connection
and answers with a RST (or, for a SYN to the stack's listening port, a RST|ACK). Dropping
the kernel's RSTs on the way out would still leave the kernel's TCP looking at every
segment; dropping the stack's segments at *prerouting* is cleaner: AF_PACKET taps run
before the IP layer, so the stack still receives them, and the kernel never sees them.

The table is named after the process (`tb_pystack_<pid>`), so two stacks in one namespace
do not collide and `nft list tables` shows who owns what. `KernelGuard` is a context
manager; the endpoint program turns SIGTERM/SIGINT into a normal exit, so the `finally`
removes the table in every way the program ends short of SIGKILL.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable


class GuardError(RuntimeError):
    """nft refused the table (the message carries nft's own error)."""


def _nft(script: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise GuardError(f"nft failed ({done.returncode}): {done.stderr.strip()}\n{script}")


def _port_set(ports: Iterable[tuple[int, int]]) -> str:
    items = [str(low) if low == high else f"{low}-{high}" for low, high in sorted(ports)]
    return "{ " + ", ".join(items) + " }"


class KernelGuard:
    """An nft table dropping, before the kernel's IP input, TCP to the stack's ports (IPv4
    and IPv6 addresses alike)."""

    def __init__(self, addresses: list[str], ports: Iterable[tuple[int, int]],
                 table: str | None = None) -> None:
        if not addresses:
            raise ValueError("KernelGuard: no local address to protect")
        self.addresses = list(addresses)
        self.ports = sorted(set(ports))
        if not self.ports:
            raise ValueError("KernelGuard: no port range to protect")
        self.table = table or f"tb_pystack_{os.getpid()}"
        self.installed = False

    @property
    def family(self) -> str:
        """nft's table family: `ip` for IPv4 addresses only, `inet` (both) once IPv6 is there."""
        return "inet" if any(":" in address for address in self.addresses) else "ip"

    def script(self) -> str:
        family, table = self.family, self.table
        lines = [f"add table {family} {table}\n",
                 f"add chain {family} {table} pre {{ type filter hook prerouting priority -400; }}\n"]
        for match in ("ip", "ip6"):
            chosen = [a for a in self.addresses if (":" in a) == (match == "ip6")]
            if chosen:
                lines.append(f"add rule {family} {table} pre {match} daddr {{ {', '.join(chosen)} }} "
                             f"tcp dport {_port_set(self.ports)} counter drop\n")
        return "".join(lines)

    def install(self) -> None:
        _nft(self.script())
        self.installed = True

    def remove(self) -> None:
        if self.installed:
            self.installed = False
            _nft(f"delete table {self.family} {self.table}\n")

    def __enter__(self) -> KernelGuard:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
