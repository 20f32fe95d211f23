"""Host keys: checked against a known_hosts file, like ssh with StrictHostKeyChecking.

Fabric's default is paramiko's AutoAddPolicy (trust any key on first use, silently). Here a
host whose key is unknown is refused with the command that accepts it; `accept_new` adds
UNKNOWN keys to the file (ssh's StrictHostKeyChecking=accept-new) and never a CHANGED one:
paramiko itself raises BadHostKeyException for a key that differs from the file's, before any
policy is asked, and that is turned into a refusal here too.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import paramiko

from testbed.errors import SpecError


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256:... as `ssh-keygen -l` prints it, so users can compare with what they know."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(hostname: str, port: int) -> str:
    """The name OpenSSH (and paramiko) look a host up by: `host`, or `[host]:port` off port 22."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


class HostKeyRefused(paramiko.SSHException):
    """A host key that must not be trusted; the message says why and what to do."""


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for a host with no key of the offered type in the file."""

    _file_lock = threading.Lock()  # hosts connect in parallel threads and may share one file

    def __init__(self, path: Path, *, accept_new: bool) -> None:
        self.path = path
        self.accept_new = accept_new
        self.accepted: list[str] = []

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        described = f"{key.get_name()} {fingerprint(key)}"
        if not self.accept_new:
            raise HostKeyRefused(
                f"unknown host key {described} for {hostname} (not in {self.path}); check the "
                f"fingerprint out of band, then add it with `ssh-keyscan {_keyscan_args(hostname)} "
                f">> {self.path}` or rerun with --accept-new-host-keys")
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with self._file_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.accepted.append(f"{hostname} {described}")


def _keyscan_args(name: str) -> str:
    if name.startswith("[") and "]:" in name:
        host, port = name[1:].split("]:", 1)
        return f"-p {port} {host}"
    return name


def changed_key_message(exc: paramiko.BadHostKeyException, name: str, path: Path) -> str:
    """`name` as known_hosts spells it (`[host]:port` off port 22), for the ssh-keygen -R hint."""
    return (f"host key CHANGED for {name}: {path} has {exc.expected_key.get_name()} "
            f"{fingerprint(exc.expected_key)}, the host offered {exc.key.get_name()} {fingerprint(exc.key)} "
            "(a reinstalled host, or someone in the middle); refused even with --accept-new-host-keys. "
            f"If the change is expected: ssh-keygen -R '{name}' -f {path}")


def load_known_hosts(client: paramiko.SSHClient, path: Path) -> None:
    """The file's keys become the client's only known keys (a missing file knows none)."""
    if not path.exists():
        return
    try:
        client.load_host_keys(str(path))
    except (OSError, paramiko.SSHException) as exc:
        raise SpecError(f"--known-hosts: cannot read {path}: {exc}") from exc
