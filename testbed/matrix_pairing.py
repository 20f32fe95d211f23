"""Matrix pairings: `CLIENT-SERVER`, each side a stack, a kernel side optionally on a version.

`kernel-python`, `kernel@6.1-kernel`, `kernel-kernel@6.12`, `python-kernel@newest`,
`kernel@6.1-kernel@newest`. A version is a fetched kernel's release prefix (6.1, 6.12,
6.12.117+deb13) or `newest`; a bare `kernel` is the host's kernel. Versions hold no '-' (it
separates client from server), so a full Debian release (6.12.117+deb13-amd64) is named by its
prefix. A side with a version becomes `kernel = VERSION` on that cell's endpoint (a VM endpoint,
testbed.endpoints.vm_kernel). Whether the version is fetched is checked by `check_fetched`
before a matrix runs, not when the spec is parsed (a spec stays valid on a machine without the
kernels, e.g. for --check on CI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from testbed.endpoints.command_template import STACK_NAME
from testbed.errors import SpecError
from testbed.spec import STACKS

NEWEST = "newest"
VERSION = re.compile(r"[0-9][0-9A-Za-z.+~_]*|" + NEWEST)


@dataclass(frozen=True)
class Side:
    """One end of a pairing: a stack and, for a kernel on a fetched kernel, its version."""

    stack: str
    kernel: str | None = None  # None: the host's kernel (or not a kernel stack)

    @property
    def text(self) -> str:
        return f"{self.stack}@{self.kernel}" if self.kernel else self.stack


def parse_side(text: str, pairing: str, where: str) -> Side:
    if text.startswith("command:"):  # a command stack of the spec's [stacks.NAME]
        if not STACK_NAME.fullmatch(text.partition(":")[2]):
            raise SpecError(f"{where}: pairing {pairing!r}: unknown stack {text!r} (command:NAME "
                            "takes a NAME of letters, digits, '_' and '.')")
        return Side(text)
    stack, at, version = text.partition("@")
    if stack not in STACKS or stack == "command":
        raise SpecError(f"{where}: pairing {pairing!r}: unknown stack {stack!r} "
                        f"(known: {', '.join(s for s in STACKS if s != 'command')}, "
                        "command:NAME with a [stacks.NAME] table)")
    if not at:
        return Side(stack)
    if stack != "kernel":
        raise SpecError(f"{where}: pairing {pairing!r}: only kernel runs on another version "
                        f"({text!r}; write kernel@6.12)")
    if not VERSION.fullmatch(version):
        raise SpecError(f"{where}: pairing {pairing!r}: {version!r} is not a kernel version "
                        f"(a fetched release prefix such as 6.1 or 6.12, or {NEWEST})")
    return Side(stack, version)


def parse_sides(pairing: object, where: str) -> tuple[Side, Side]:
    """(client, server) of a pairing; a malformed one is a SpecError naming it."""
    if not isinstance(pairing, str) or pairing.count("-") != 1:
        raise SpecError(f"{where}: pairing {pairing!r} must be CLIENT-SERVER, e.g. kernel-python "
                        f"or kernel@6.1-kernel")
    client, server = pairing.split("-")
    return parse_side(client, pairing, where), parse_side(server, pairing, where)


def host_pairing(pairing: str) -> str:
    """The pairing with every kernel on the host's: kernel@6.1-kernel@newest -> kernel-kernel."""
    client, server = parse_sides(pairing, "pairing")
    return f"{client.stack}-{server.stack}"


def versions(pairings: tuple[str, ...] | list[str]) -> list[str]:
    """Every kernel version the pairings name, in first-use order."""
    found: list[str] = []
    for pairing in pairings:
        for side in parse_sides(pairing, "pairings"):
            if side.kernel and side.kernel not in found:
                found.append(side.kernel)
    return found


def check_fetched(pairings: tuple[str, ...] | list[str]) -> dict[str, str]:
    """version -> fetched release for every version the pairings name; the first one not
    fetched is a SpecError (exit 2) saying what is fetched and how to fetch it."""
    from testbed import kernels

    cache = kernels.cache_dir()
    releases = {}
    for version in versions(pairings):
        try:
            releases[version] = kernels.find_fetched(version, cache).release
        except SpecError as exc:
            user = next(p for p in pairings
                        if any(side.kernel == version for side in parse_sides(p, "pairings")))
            raise SpecError(f"pairing {user}: {exc.message}") from None
    return releases
