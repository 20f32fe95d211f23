"""SSH to one lab host through Fabric: connecting with the known_hosts policy, remote
processes that can be stopped, and file transfer.

Long remote commands run on a pseudo-terminal so that they die with the session: Ctrl-C is
sent as the terminal's interrupt character (the remote matrix tears down as after a local
Ctrl-C), and a lost connection hangs the terminal up, which the remote agent turns into the same
clean teardown. Short commands run without a terminal so stdout and stderr stay apart.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import fabric
import paramiko
from paramiko.ssh_exception import NoValidConnectionsError

from testbed.errors import SpecError, TestbedError
from testbed.remote.command import shell_line
from testbed.remote.hosts import HostSpec
from testbed.remote.keys import HostKeyRefused, KnownHostsPolicy, changed_key_message, known_hosts_name
from testbed.remote.keys import load_known_hosts as _load_known_hosts

INTERRUPT = b"\x03"  # the terminal's VINTR: SIGINT to the remote foreground process group
POLL_S = 0.05
KEEPALIVE_S = 15


class HostUnusable(TestbedError):
    """A host that cannot take part (unreachable, key refused, doctor failed); with no usable
    host at all this is the command's error, exit 2 like other bad input."""

    exit_code = 2


class HostLost(Exception):
    """The connection to a host broke while it was working."""


@dataclass(frozen=True)
class SshOptions:
    known_hosts: Path
    accept_new_host_keys: bool
    identity: Path | None
    ssh_config: Path | None
    connect_timeout_s: float

    def check(self) -> None:
        """Files named on the command line exist, before any connection is tried."""
        for option, path in (("--identity", self.identity), ("--ssh-config", self.ssh_config)):
            if path is not None and not path.is_file():
                raise SpecError(f"{option}: no such file {path}")
        if self.known_hosts.exists() and not self.known_hosts.is_file():
            raise SpecError(f"--known-hosts: {self.known_hosts} is not a file")
        if self.connect_timeout_s <= 0:
            raise SpecError("--connect-timeout must be positive")


@dataclass
class Completed:
    status: int  # -1: no exit status came back (the connection or the channel broke)
    stdout: str
    stderr: str
    stopped: bool = False  # interrupted on request or timed out

    def last_line(self) -> str:
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
            if lines:  # a host's bytes reach the user's terminal: no escape sequences
                return "".join(c if c.isprintable() else "?" for c in lines[-1][:300])
        return ""


def connect(host: HostSpec, options: SshOptions) -> fabric.Connection:
    """An open connection, or HostUnusable with one line saying what is wrong and what to do."""
    config = (fabric.Config(runtime_ssh_path=str(options.ssh_config)) if options.ssh_config
              else fabric.Config())
    connect_kwargs: dict[str, object] = {}
    if options.identity is not None:
        connect_kwargs["key_filename"] = [str(options.identity)]
    conn = fabric.Connection(host.host, user=host.user, port=host.port, config=config,
                             connect_timeout=max(1, round(options.connect_timeout_s)),
                             connect_kwargs=connect_kwargs)
    name = known_hosts_name(conn.host, int(conn.port))
    hop: object = conn
    while isinstance(hop, fabric.Connection):  # ProxyJump hosts are checked the same way
        _load_known_hosts(hop.client, options.known_hosts)
        hop.client.set_missing_host_key_policy(
            KnownHostsPolicy(options.known_hosts, accept_new=options.accept_new_host_keys))
        hop = hop.gateway
    # an alias (ssh config HostName) is shown with what it resolved to
    where = str(host) if conn.host == host.host else f"{host} ({conn.user}@{conn.host}:{conn.port})"
    try:
        conn.open()
    except HostKeyRefused as exc:
        raise HostUnusable(f"{host}: {exc}") from None
    except paramiko.BadHostKeyException as exc:
        raise HostUnusable(f"{host}: {changed_key_message(exc, name, options.known_hosts)}") from None
    except paramiko.AuthenticationException as exc:
        raise HostUnusable(f"{where}: authentication failed ({exc}); key auth only: load the key "
                           "into ssh-agent or give --identity FILE") from None
    except NoValidConnectionsError as exc:
        reasons = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()}))
        raise HostUnusable(f"{where}: unreachable ({reasons})") from None
    except TimeoutError:
        raise HostUnusable(f"{where}: unreachable (no answer within {options.connect_timeout_s:g} s)") \
            from None
    except socket.gaierror as exc:
        raise HostUnusable(f"{where}: unknown host name ({exc.strerror})") from None
    except OSError as exc:
        raise HostUnusable(f"{where}: unreachable ({exc.strerror or exc})") from None
    except paramiko.SSHException as exc:
        raise HostUnusable(f"{where}: SSH failed: {exc}") from None
    conn.transport.set_keepalive(KEEPALIVE_S)
    return conn


class RemoteProcess:
    """One remote command; its output goes to `log` (and is kept when `capture`)."""

    def __init__(self, conn: fabric.Connection, argv: list[str], *, pty: bool, log: TextIO | None = None,
                 capture: bool = True) -> None:
        self.conn = conn
        self.pty = pty
        self.log = log
        self.capture = capture
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        try:
            self.channel = conn.create_session()
            if pty:
                self.channel.get_pty(term="dumb", width=200, height=50)
            self.channel.exec_command(shell_line(argv))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostLost(f"could not start a remote command: {exc}") from exc

    def _drain(self) -> None:
        while self.channel.recv_ready():
            self._keep(self.channel.recv(65536), self._stdout)
        while self.channel.recv_stderr_ready():
            self._keep(self.channel.recv_stderr(65536), self._stderr)

    def _keep(self, data: bytes, into: list[str]) -> None:
        text = data.decode("utf-8", "replace")
        if self.capture:
            into.append(text)
        if self.log is not None:
            self.log.write(text)
            self.log.flush()

    def wait(self, *, timeout_s: float | None = None, stop: threading.Event | None = None,
             grace_s: float = 30.0) -> Completed:
        """Until the command exits. On `stop` or after `timeout_s`: interrupt it (Ctrl-C on its
        terminal, or closing the channel without one), then hang up after `grace_s`."""
        started = time.monotonic()
        interrupted_at: float | None = None
        while not (self.channel.exit_status_ready() and not self.channel.recv_ready()
                   and not self.channel.recv_stderr_ready()):
            self._drain()
            now = time.monotonic()
            wants_stop = (stop is not None and stop.is_set()) or (
                timeout_s is not None and now - started > timeout_s)
            if wants_stop and interrupted_at is None:
                interrupted_at = now
                if self.pty:
                    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                        self.channel.send(INTERRUPT)
                else:
                    self.channel.close()
            elif interrupted_at is not None and now - interrupted_at > grace_s:
                self.channel.close()  # a hang-up: the remote agent's SIGHUP teardown
            time.sleep(POLL_S)
        self._drain_tail()
        status = self.channel.recv_exit_status()
        self.channel.close()
        return Completed(status, "".join(self._stdout), "".join(self._stderr),
                         stopped=interrupted_at is not None)

    def _drain_tail(self) -> None:
        """Output that arrives after the exit status, until the channel's end of file."""
        deadline = time.monotonic() + 1.0
        while not (self.channel.eof_received or self.channel.closed) and time.monotonic() < deadline:
            self._drain()
            time.sleep(POLL_S / 5)
        self._drain()


def run(conn: fabric.Connection, argv: list[str], *, timeout_s: float = 60.0, log: TextIO | None = None,
        stop: threading.Event | None = None) -> Completed:
    """A short remote command without a terminal."""
    if log is not None:
        log.write(f"$ {shell_line(argv)}\n")
    return RemoteProcess(conn, argv, pty=False, log=log).wait(timeout_s=timeout_s, stop=stop, grace_s=0)


def home_directory(conn: fabric.Connection) -> str:
    """The login directory, as SFTP's starting point: `~` without asking a shell."""
    return conn.sftp().normalize(".")


def read_text(conn: fabric.Connection, path: str) -> str | None:
    """A small remote file's text, or None when it does not exist (or cannot be read)."""
    try:
        with conn.sftp().open(path) as handle:
            return handle.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return None


def is_real_directory(conn: fabric.Connection, path: str) -> bool:
    """A directory and not a symbolic link to one."""
    try:
        return stat.S_ISDIR(conn.sftp().lstat(path).st_mode or 0)
    except OSError:
        return False


def exists(conn: fabric.Connection, path: str) -> bool:
    try:
        conn.sftp().lstat(path)
    except OSError:
        return False
    return True


def upload(conn: fabric.Connection, data: BinaryIO, remote_path: str) -> None:
    conn.sftp().putfo(data, remote_path)


# what one shard may bring back: its captures and results are megabytes; a host that sends more
# (or a file that keeps growing while it is read) is refused rather than allowed to fill the disk
MAX_FILE_BYTES = 2 << 30
MAX_SHARD_BYTES = 8 << 30
MAX_SHARD_FILES = 20_000
MAX_DEPTH = 12
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), f"a special file (mode {mode:o})")


def _links(entry: paramiko.SFTPAttributes) -> int:
    """The link count from the listing's `ls -l` line (OpenSSH sends one; 1 when absent)."""
    fields = str(getattr(entry, "longname", "") or "").split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 1


def download_tree(conn: fabric.Connection, remote_dir: str, local_dir: Path, *,
                  max_file_bytes: int = MAX_FILE_BYTES, max_total_bytes: int = MAX_SHARD_BYTES,
                  max_files: int = MAX_SHARD_FILES) -> int:
    """Every regular file under `remote_dir` into `local_dir`, same layout; returns the count.

    What the host lists is not trusted: a name that is not a plain file or directory name, a
    symbolic link, a hard link (a link count above 1), a device, pipe or socket, a file over
    `max_file_bytes`, more than `max_total_bytes` or `max_files` in all, or a tree deeper than
    MAX_DEPTH raises HostLost naming it. Local files are created new (never through an
    existing name or link), so nothing is written outside `local_dir`."""
    sftp = conn.sftp()
    count = total = 0
    pending = [(remote_dir, local_dir, 0)]
    while pending:
        remote, local, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise HostLost(f"refusing the shard's files: deeper than {MAX_DEPTH} directories at {remote}")
        local.mkdir(parents=depth == 0, exist_ok=depth == 0)
        for entry in sftp.listdir_attr(remote):
            name = entry.filename
            where = repr(f"{remote}/{name}")  # one line, whatever the name holds
            if name in (".", "..") or "/" in name or "\0" in name or not name:
                raise HostLost(f"refusing a remote file name {name!r} under {remote}")
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                pending.append((f"{remote}/{name}", local / name, depth + 1))
                continue
            if not stat.S_ISREG(mode):
                raise HostLost(f"refusing {where}: {_kind(mode)}, not a regular file")
            if _links(entry) > 1:
                raise HostLost(f"refusing {where}: a hard link ({_links(entry)} names), "
                               "not a file of its own")
            size = entry.st_size or 0
            if size > max_file_bytes:
                raise HostLost(f"refusing {where}: {size} bytes, over the limit of "
                               f"{max_file_bytes} per file")
            count += 1
            if count > max_files:
                raise HostLost(f"refusing the shard's files: more than {max_files} of them")
            left = min(max_file_bytes, max_total_bytes - total)
            total += _fetch(sftp, f"{remote}/{name}", local / name, left)
    return count


def _fetch(sftp: paramiko.SFTPClient, remote: str, local: Path, limit: int) -> int:
    """Copy one remote file into a new local file, at most `limit` bytes; returns its size."""
    copied = 0
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as sink, sftp.open(remote, "rb") as source:
        source.prefetch()
        while chunk := source.read(1 << 20):
            copied += len(chunk)
            if copied > limit:
                raise HostLost(f"refusing {remote!r}: more bytes than the shard may bring back "
                               f"(limit {limit} left for it)")
            sink.write(chunk)
    return copied
