"""Survey targets: which implementation a column is, and how an experiment's endpoints run it.

`kernel` (the host's kernel), `kernel@VERSION` (a fetched Debian kernel, both endpoints in VMs,
testbed.endpoints.vm_kernel), `python` (the bundled stack) and `command:NAME` (a command stack
of the `--stacks` file, docs/command-endpoints.md). Both ends of an experiment run the target,
so every behaviour seen (who joins, what the DSS carries) is the target's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import SpecError

TARGET_FORMS = "kernel, kernel@VERSION (6.1, 6.12, newest), python, command:NAME"
_KERNEL_AT = re.compile(r"kernel@([0-9][0-9.]*|newest)")


@dataclass(frozen=True)
class Target:
    """One column of the survey."""

    name: str
    stack: str  # the endpoints' stack: kernel | python | command
    kernel: str | None = None  # kernel@VERSION: the release prefix both VMs boot
    command_stacks: dict[str, Any] = field(default_factory=dict)  # [stacks] for command:NAME

    @property
    def directory(self) -> str:
        """Its evidence directory under the survey's DIR (no '@' or ':' in file names)."""
        return self.name.replace("@", "-").replace(":", "-")

    def endpoints(self) -> list[dict[str, Any]]:
        """The [[endpoints]] tables of an experiment run on this target."""
        stack = self.name if self.stack == "command" else self.stack
        tables = [{"role": role, "stack": stack} for role in ("server", "client")]
        if self.kernel is not None:
            for table in tables:
                table["kernel"] = self.kernel
        return tables

    def unavailable(self) -> str | None:
        """Why this target cannot run here (a kernel not fetched), else None."""
        if self.kernel is None:
            return None
        from testbed import kernels
        from testbed.errors import TestbedError

        try:
            kernels.find_fetched(self.kernel, kernels.cache_dir())
        except TestbedError as exc:
            return f"kernel {self.kernel} not available: {exc}"
        return None


def parse_targets(text: str, stacks_file: Path | None = None) -> list[Target]:
    """`--targets` as Targets; an unknown form or a command stack without its table is a SpecError."""
    stacks: dict[str, Any] = {}
    if stacks_file is not None:
        from testbed.spec import parse_command_stacks, read_toml

        stacks = parse_command_stacks(read_toml(stacks_file, "stacks").get("stacks", {}),
                                      f"{stacks_file}: [stacks]")
    targets: list[Target] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        if name in ("kernel", "python"):
            targets.append(Target(name, name))
        elif match := _KERNEL_AT.fullmatch(name):
            targets.append(Target(name, "kernel", kernel=match.group(1)))
        elif name.startswith("command:"):
            stack_name = name.partition(":")[2]
            if stack_name not in stacks:
                raise SpecError(f"--targets: {name}: no [stacks.{stack_name}] table "
                                f"(give --stacks FILE with one; docs/command-endpoints.md)")
            targets.append(Target(name, "command", command_stacks={stack_name: stacks[stack_name]}))
        else:
            raise SpecError(f"--targets: unknown target {name!r} (known forms: {TARGET_FORMS})")
    if not targets:
        raise SpecError(f"--targets is empty (known forms: {TARGET_FORMS})")
    if len({t.name for t in targets}) != len(targets):
        raise SpecError("--targets names a target twice")
    return targets
