"""The --hosts grammar: `[user@]host[:port]`, comma-separated, validated strictly.

A host string ends up in an SSH connection (never in a shell), but a strict grammar still
catches what would be surprising there: an option-looking `-oProxyCommand=...`, spaces,
quotes, a port out of range. The host part doubles as the name of DIR/<host>/, so it must also
be a safe directory name.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from testbed.errors import SpecError

USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^{LABEL}(?:\.{LABEL})*$")
PORT = re.compile(r"^[0-9]{1,5}$")


@dataclass(frozen=True)
class HostSpec:
    """One lab machine as given on the command line."""

    text: str
    user: str | None
    host: str
    port: int | None

    @property
    def label(self) -> str:
        """The directory name of this host's results: the host, with the port when given."""
        base = self.host.replace(":", "_")
        return f"{base}_{self.port}" if self.port is not None else base

    def __str__(self) -> str:
        return self.text


def _bad(entry: str, why: str) -> SpecError:
    return SpecError(f"--hosts: {entry!r}: {why} (expected [user@]host[:port], e.g. root@lab1:2222)")


def parse_host(entry: str) -> HostSpec:
    if not entry:
        raise _bad(entry, "empty entry")
    user: str | None = None
    rest = entry
    if "@" in entry:
        user, rest = entry.split("@", 1)
        if not USER.match(user):
            raise _bad(entry, f"user {user!r} must be letters, digits, '_', '.', '-' (not starting "
                              "with a digit, '-' or '.')")
    port_text: str | None = None
    if rest.startswith("["):  # [IPv6] or [IPv6]:port
        close = rest.find("]")
        if close < 0:
            raise _bad(entry, "unclosed '[' around an IPv6 address")
        host, after = rest[1:close], rest[close + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(entry, f"{host!r} is not an IPv6 address") from None
        if after:
            if not after.startswith(":"):
                raise _bad(entry, f"unexpected {after!r} after ']'")
            port_text = after[1:]
    else:
        host, sep, port_part = rest.partition(":")
        if sep:
            port_text = port_part
        if not HOSTNAME.match(host) or len(host) > 253:
            raise _bad(entry, f"host {host!r} must be a DNS name or IPv4 address "
                              "(letters, digits, '-', '.'; [IPv6] in brackets)")
    port: int | None = None
    if port_text is not None:
        if not PORT.match(port_text) or not 1 <= int(port_text) <= 65535:
            raise _bad(entry, f"port {port_text!r} must be a number from 1 to 65535")
        port = int(port_text)
    return HostSpec(text=entry, user=user, host=host, port=port)


def parse_hosts(text: str) -> list[HostSpec]:
    """Every entry of a comma-separated --hosts value; duplicates are an error (they would
    share a result directory and run the same machine twice)."""
    if not text or not text.strip():
        raise SpecError("--hosts: no hosts given (expected [user@]host[:port],...)")
    hosts = [parse_host(entry.strip()) for entry in text.split(",")]
    seen: dict[str, str] = {}
    for spec in hosts:
        if spec.label in seen:
            raise SpecError(f"--hosts: {spec.text!r} and {seen[spec.label]!r} are the same host "
                            f"(both would write to {spec.label}/)")
        seen[spec.label] = spec.text
    return hosts
