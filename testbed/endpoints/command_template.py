"""The command contract's templates: which placeholders a user's command may use, and filling
them in.

A `stack = "command"` endpoint is a command line with `{name}` placeholders (Python format
syntax without conversions or format specs). The spec parser checks the names with
`check_template` before anything runs; the runner fills them in with `fill_template` once the
topology gives the addresses. `{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import re
import shlex
import shutil
import string
import sys
from dataclasses import dataclass

# placeholder -> what it stands for (docs/command-endpoints.md lists the same)
PLACEHOLDERS: dict[str, str] = {
    "server_addr": "the server host's first address (where the client connects)",
    "listen_addr": "the address the server listens on (= server_addr)",
    "client_addr": "the client host's first address (the initial subflow's source)",
    "port": "the server's TCP port ([traffic].port)",
    "bytes": "the payload size in bytes ([traffic].bytes; empty in a seconds run)",
    "stdin_bytes": "what the client reads on stdin: the 24-byte request plus the payload "
                   "(empty in a seconds run)",
    "seconds": "the sending time ([traffic].seconds; empty in a bytes run)",
    "timeout": "[traffic].timeout_s, seconds without progress before the testbed gives up",
    "seed": "the payload seed (the spec's seed)",
    "python": "the Python interpreter the testbed runs on (for a program using its packages)",
}
# {client_addrN} / {server_addrN}: the N-th address (from 0) of that host, in interface order
INDEXED = re.compile(r"(client|server)_addr(\d)")
READY_MODES = ("listen", "stderr:TEXT", "delay:SECONDS")
# when a server's transfer is over: its program exits (stdout ends), or the kernel shows the
# connection closed (for a program that keeps listening, e.g. `ncat -k`, and never exits)
DONE_MODES = ("exit", "peer-close")
# a named stack: `command:NAME` (NAME cannot hold '-', which separates a matrix pairing)
STACK_NAME = re.compile(r"[A-Za-z0-9_.]{1,40}")
# wrappers whose own argv[0] exists anyway: check the program they start instead
_WRAPPERS = {("mptcpize", "run"): 2, ("env",): 1}


class TemplateError(ValueError):
    """A template names an unknown placeholder or cannot be split into words."""


def placeholders_of(template: str) -> list[str]:
    """The placeholder names a template uses, in order; TemplateError for malformed braces."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"malformed braces in {template!r} ({exc}); write {{{{ for a "
                            f"literal brace") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise TemplateError(f"placeholder {{{name}}} takes no format spec or conversion")
        names.append(name)
    return names


def check_template(template: str) -> None:
    """Every placeholder known and the line splittable into words; else one TemplateError."""
    if not template.strip():
        raise TemplateError("the command is empty")
    for name in placeholders_of(template):
        if name not in PLACEHOLDERS and not INDEXED.fullmatch(name):
            known = ", ".join(f"{{{n}}}" for n in PLACEHOLDERS)
            raise TemplateError(f"unknown placeholder {{{name}}} (known: {known}, "
                                f"{{client_addrN}}, {{server_addrN}})")
    try:
        shlex.split(template)
    except ValueError as exc:
        raise TemplateError(f"cannot split {template!r} into words: {exc}") from None


def check_ready(ready: str) -> None:
    """`listen`, `stderr:TEXT` or `delay:SECONDS`; else a TemplateError naming the forms."""
    if ready == "listen":
        return
    kind, _, arg = ready.partition(":")
    if kind == "stderr" and arg:
        return
    if kind == "delay":
        try:
            if 0 <= float(arg) <= 60:
                return
        except ValueError:
            pass
    raise TemplateError(f"ready = {ready!r}: expected one of {', '.join(READY_MODES)} "
                        f"(delay 0..60)")


def check_done(done: str) -> None:
    if done not in DONE_MODES:
        raise TemplateError(f"done = {done!r}: expected one of {', '.join(DONE_MODES)}")


@dataclass(frozen=True)
class TemplateValues:
    """What the placeholders stand for in one run."""

    client_addresses: tuple[str, ...]
    server_addresses: tuple[str, ...]
    port: int
    bytes: int | None
    seconds: float | None
    timeout_s: float
    seed: int
    request_size: int = 24

    def mapping(self) -> dict[str, str]:
        values = {
            "server_addr": self.server_addresses[0],
            "listen_addr": self.server_addresses[0],
            "client_addr": self.client_addresses[0],
            "port": str(self.port),
            "bytes": "" if self.bytes is None else str(self.bytes),
            "stdin_bytes": "" if self.bytes is None else str(self.bytes + self.request_size),
            "seconds": "" if self.seconds is None else f"{self.seconds:g}",
            "timeout": f"{self.timeout_s:g}",
            "seed": str(self.seed),
            "python": sys.executable,
        }
        for role, addresses in (("client", self.client_addresses), ("server", self.server_addresses)):
            for index, address in enumerate(addresses):
                values[f"{role}_addr{index}"] = address
        return values


def fill_template(template: str, values: TemplateValues) -> str:
    """The command line with every placeholder replaced; TemplateError names a host address
    the topology does not have ({server_addr3} on a two-path host)."""
    mapping = values.mapping()
    for name in placeholders_of(template):
        if name not in mapping:
            host = values.client_addresses if name.startswith("client") else values.server_addresses
            raise TemplateError(f"placeholder {{{name}}}: that host has only {len(host)} address(es)")
    return template.format_map(mapping)


def program_of(argv: list[str]) -> str | None:
    """The program a command line really starts (past `mptcpize run`, `env VAR=...`)."""
    index = 0
    for prefix, skip in _WRAPPERS.items():
        if tuple(argv[:len(prefix)]) == prefix:
            index = skip
            while prefix == ("env",) and index < len(argv) and "=" in argv[index]:
                index += 1
            break
    return argv[index] if index < len(argv) else None


def missing_program(command: str) -> str | None:
    """The program of `command` (and its wrapper) that is not on PATH, or None."""
    argv = shlex.split(command)
    for program in (argv[0], program_of(argv)):
        if program is not None and shutil.which(program) is None:
            return program
    return None

