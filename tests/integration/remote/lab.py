"""A lab of two real OpenSSH servers on this machine, each in its own network namespace, and a
controller namespace wired to both: `testbed remote run` is tested against real SSH without
touching the root namespace's interfaces.

    tbr-<pid>-<n>-ctl  h1c 10.231.1.1/24 <-veth-> eth0 10.231.1.2/24  tbr-<pid>-<n>-h1  sshd :22
                       h2c 10.231.2.1/24 <-veth-> eth0 10.231.2.2/24  tbr-<pid>-<n>-h2  sshd :2222

The sshd processes are this test's own children (`-D -e`), entered into their namespace with
nsenter (network only, so the remote runs' `ip netns add` behaves as on a real host). Both
"hosts" share this machine's file system, /run/netns and /run/testbed, like any two runs here.
Everything (processes, namespaces, files) is removed by `close()`, also after a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.net.state import pids_in_netns

PROJECT = Path(__file__).resolve().parents[3]
SSHD = "/usr/sbin/sshd"
_labs = itertools.count(1)


@dataclass
class SshServer:
    name: str
    netns: str
    address: str
    port: int
    host_key: Path
    config: Path
    process: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)

    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def known_hosts_line(self) -> str:
        key_type, key_data = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"{self.known_hosts_name()} {key_type} {key_data}\n"

    def sshd_pids(self) -> list[int]:
        """Every sshd process in this host's namespace: the listener and each session's."""
        pids = []
        for pid in pids_in_netns(self.netns):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/exe") == SSHD:
                    pids.append(pid)
        return pids


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tag = f"tbr-{os.getpid()}-{next(_labs)}"
        self.tmp = tmp
        self.ctl = f"{self.tag}-ctl"
        self.namespaces: list[str] = []
        self.servers: dict[str, SshServer] = {}
        self.home = tmp / "home"  # the controller's HOME: no ~/.ssh of the machine is read
        self.home.mkdir()
        self.remote_dir = tmp / "remote"
        self.client_key = tmp / "client_key"
        self.known_hosts = tmp / "known_hosts"
        self.ssh_config = tmp / "ssh_config"
        self._made_privsep_dir = False

    # --- building ------------------------------------------------------------------------

    def start(self) -> Lab:
        if not Path(SSHD).exists():
            raise RuntimeError("sshd missing: scripts/setup.sh installs openssh-server")
        if not Path("/run/sshd").exists():
            Path("/run/sshd").mkdir(mode=0o755)
            self._made_privsep_dir = True
        self._netns(self.ctl)
        _keygen(self.client_key)
        (self.tmp / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        for index, (name, port) in enumerate((("h1", 22), ("h2", 2222)), 1):
            netns = self._netns(f"{self.tag}-{name}")
            _ip("-n", self.ctl, "link", "add", f"{name}c", "type", "veth", "peer", "name", "eth0",
                "netns", netns)
            _ip("-n", self.ctl, "addr", "add", f"10.231.{index}.1/24", "dev", f"{name}c")
            _ip("-n", self.ctl, "link", "set", f"{name}c", "up")
            _ip("-n", netns, "addr", "add", f"10.231.{index}.2/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            server = SshServer(name, netns, f"10.231.{index}.2", port, self.tmp / f"{name}_host_key",
                               self.tmp / f"{name}_sshd_config")
            _keygen(server.host_key)
            self.servers[name] = server
            self.start_sshd(server)
        self.ssh_config.write_text("".join(
            f"Host {s.name}\n  HostName {s.address}\n  Port {s.port}\n  User root\n"
            f"  IdentityFile {self.client_key}\n" for s in self.servers.values()))
        self.trust_all()
        return self

    def _netns(self, name: str) -> str:
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def start_sshd(self, server: SshServer) -> None:
        server.config.write_text(
            f"Port {server.port}\nListenAddress {server.address}\nHostKey {server.host_key}\n"
            f"AuthorizedKeysFile {self.tmp / 'authorized_keys'}\nPidFile {self.tmp / server.name}.pid\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\nLogLevel INFO\n")
        server.log = []
        server.process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{server.netns}", SSHD, "-D", "-e", "-f", str(server.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        listening = threading.Event()

        def pump(process: subprocess.Popen, log: list[str]) -> None:
            for line in process.stderr:
                log.append(line)
                if "Server listening on" in line:
                    listening.set()

        threading.Thread(target=pump, args=(server.process, server.log), daemon=True).start()
        if not listening.wait(timeout=10):
            raise RuntimeError(f"sshd of {server.name} did not start: {''.join(server.log)}")

    def stop_sshd(self, server: SshServer) -> None:
        if server.process is not None:
            server.process.kill()
            server.process.wait(timeout=10)
            server.process = None

    def new_host_key(self, server: SshServer) -> None:
        """The host is "reinstalled": same address, a different key."""
        self.stop_sshd(server)
        for path in (server.host_key, server.host_key.with_suffix(".pub")):
            path.unlink()
        _keygen(server.host_key)
        self.start_sshd(server)

    def trust_all(self) -> None:
        self.known_hosts.write_text("".join(s.known_hosts_line() for s in self.servers.values()))

    # --- running the controller ----------------------------------------------------------

    def controller_argv(self, *args: str, ssh_defaults: bool = True) -> list[str]:
        # defaults first: argparse keeps an option's last value, so a test's own wins
        defaults = ["--ssh-config", str(self.ssh_config), "--known-hosts", str(self.known_hosts),
                    "--identity", str(self.client_key), "--remote-python", sys.executable,
                    "--remote-dir", str(self.remote_dir)] if ssh_defaults else []
        return ["ip", "netns", "exec", self.ctl, "env", "-u", "SSH_AUTH_SOCK", f"HOME={self.home}",
                sys.executable, "-m", "testbed.cli", "remote", "run", *defaults, *args]

    def controller(self, *args: str, timeout: float = 180, ssh_defaults: bool = True
                   ) -> subprocess.CompletedProcess:
        return subprocess.run(self.controller_argv(*args, ssh_defaults=ssh_defaults), capture_output=True,
                              text=True, timeout=timeout, cwd=PROJECT)

    # --- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                self.stop_sshd(server)
        for netns in self.namespaces:
            for pid in pids_in_netns(netns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for netns in self.namespaces:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        if self._made_privsep_dir:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def wait_until_gone(netns: str, timeout_s: float) -> list[int]:
    """Processes still in `netns` after waiting up to `timeout_s` (an empty list: all exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = pids_in_netns(netns)
        if not left:
            return []
        time.sleep(0.2)
    return pids_in_netns(netns)


def _keygen(path: Path) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)])


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
