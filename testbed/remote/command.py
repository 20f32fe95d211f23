"""The only place remote command lines are built: fixed words plus shlex-quoted values.

SSH hands a command line to the remote user's login shell, so every value that came from a
user, a spec or a path (directories, row and pairing names, run ids, the spec file's name) is
quoted here, one word each, and options take their value glued on (`--rows=NAME`) so no value
can be read as an option. The remote shell must be POSIX-compatible (sh, bash, dash, zsh):
csh-family shells treat quotes differently.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

AGENT_MODULE = "testbed.remote.agent"


def shell_line(argv: Sequence[str]) -> str:
    """One remote command line whose words are exactly `argv`."""
    if not argv:
        raise ValueError("empty command")
    for word in argv:
        if not isinstance(word, str):
            raise TypeError(f"command word {word!r} is not a string")
        if "\0" in word:
            raise ValueError(f"command word {word!r} contains a NUL byte")
    return " ".join(shlex.quote(word) for word in argv)


@dataclass(frozen=True)
class RemoteLayout:
    """Where things live on a host: the shipped tree, its interpreter, and how to become root."""

    tree: str
    python: str
    sudo: bool  # the login user is not root: commands that need root run under `sudo -n`

    def _as_root(self, argv: list[str]) -> list[str]:
        return ["sudo", "-n", "--", *argv] if self.sudo else argv

    def agent(self, *args: str) -> list[str]:
        """The remote side (testbed.remote.agent), importing the shipped tree first."""
        return self._as_root(["env", f"PYTHONPATH={self.tree}", self.python, "-m", AGENT_MODULE, *args])

    def probe(self) -> list[str]:
        return self.agent("probe", f"--tree={self.tree}")

    def matrix(self, spec: str, out: str, rows: Sequence[str], pairings: Sequence[str]) -> list[str]:
        return self.agent("matrix", f"--tree={self.tree}", f"--spec={spec}", f"--out={out}",
                          f"--rows={','.join(rows)}", f"--pairings={','.join(pairings)}")

    def remove(self, path: str) -> list[str]:
        """A shard's output, written by the remote matrix as root (under sudo when not root)."""
        return self._as_root(remove_tree(path))

    def setup(self, lock: str) -> list[str]:
        """scripts/setup.sh holding `lock`: hosts that share a home (NFS) set up one at a time."""
        return self._as_root(["flock", lock, f"{self.tree}/scripts/setup.sh"])


def mkdir(*paths: str) -> list[str]:
    return ["mkdir", "-p", "--", *paths]


def remove_tree(*paths: str) -> list[str]:
    return ["rm", "-rf", "--", *paths]


def is_directory(path: str) -> list[str]:
    return ["test", "-d", path]


def make_temp_dir(parent: str) -> list[str]:
    return ["mktemp", "-d", f"{parent}/.unpack-XXXXXXXX"]


def untar(archive: str, into: str) -> list[str]:
    return ["tar", "-xzf", archive, "-C", into, "--no-same-owner"]


def rename_dir(source: str, target: str) -> list[str]:
    return ["mv", "-T", "--", source, target]


def symlink(target: str, link: str) -> list[str]:
    return ["ln", "-sfn", "--", target, link]


def user_id() -> list[str]:
    return ["id", "-u"]
