"""`testbed remote run SPEC --hosts user@h1,user@h2[:port] --out DIR`: a matrix over a lab.

Order of events, each step refusing early what cannot work:
1. local: the --hosts grammar, the matrix spec (every cell, as `testbed matrix` validates it)
   and the named files; any problem is one line, exit 2, before a connection is made;
2. per host, in parallel: SSH with the known_hosts policy, the project shipped (content-
   addressed), made runnable (the project's own scripts/setup.sh, or --remote-python), then
   `testbed doctor` there; a host that fails any of it is refused with one line naming it
   and the missing piece (no usable host at all: exit 2);
3. one worker thread per healthy host takes shards (one cell each) from a shared queue, runs
   `testbed matrix --rows --pairings` remotely on a pseudo-terminal, downloads the shard's files
   into DIR/<host>/ and merges; a host that fails is reported and its shard requeued;
4. DIR/matrix.json, matrix.md, matrix.html as a local `testbed matrix` writes them, rewritten
   after every shard so an interrupted run keeps what finished. Exit codes as `testbed matrix`
   (0, 1 when a cell differs or failed, 130 interrupted), 2 for bad input or no usable host,
   4 when every host failed before the matrix was complete.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import secrets
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import fabric
import paramiko

from testbed.errors import RunFailed, SpecError, TestbedError
from testbed.matrix import (
    EXIT_INTERRUPTED,
    MATRIX_FILE,
    MatrixSpec,
    load_matrix_spec,
    report_outcome,
    select,
    write_matrix_outputs,
)
from testbed.matrix_junit import matrix_junit
from testbed.progress import ProgressBar
from testbed.remote import command, session
from testbed.remote.hosts import HostSpec, parse_hosts
from testbed.remote.merge import ShardUnusable, adopt_shard, merged_document, read_shard
from testbed.remote.session import HostLost, HostUnusable, SshOptions
from testbed.remote.shard import Shard, ShardQueue, plan_shards
from testbed.remote.ship import ProjectArchive, build_archive, project_files, project_root, ship
from testbed.report.files import write_bytes_atomic
from testbed.report.tables import cell_text

DEFAULT_REMOTE_DIR = "~/.cache/mptcp-testbed"
PROBE_TIMEOUT_S = 180.0
SETUP_TIMEOUT_S = 3600.0
STOP_GRACE_S = 30.0  # a remote matrix's teardown after Ctrl-C; then its terminal is hung up
HOST_LOG = "remote.log"
# a shard that ends in one of these finished (1: some cell differs or failed, as in `testbed matrix`)
SHARD_DONE = (0, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="matrix spec (TOML), e.g. experiments/fallback_matrix_ci.toml")
    parser.add_argument("--hosts", required=True,
                        help="comma-separated [user@]host[:port] (hosts may be ~/.ssh/config aliases)")
    parser.add_argument("--out", required=True,
                        help="directory for matrix.json/md/html and each host's files in DIR/<host>/")
    parser.add_argument("--rows", help="comma-separated row names to run (default: all)")
    parser.add_argument("--pairings", help="comma-separated pairings to run (default: the spec's)")
    parser.add_argument("--identity", metavar="FILE", help="private key (default: ssh-agent and ~/.ssh/id_*)")
    parser.add_argument("--known-hosts", metavar="FILE", default="~/.ssh/known_hosts",
                        help="host keys to check against (default: ~/.ssh/known_hosts)")
    parser.add_argument("--accept-new-host-keys", action="store_true",
                        help="add UNKNOWN host keys to the known_hosts file (a CHANGED key is still refused)")
    parser.add_argument("--ssh-config", metavar="FILE",
                        help="OpenSSH client config to use instead of ~/.ssh/config and /etc/ssh/ssh_config")
    parser.add_argument("--remote-dir", default=DEFAULT_REMOTE_DIR,
                        help=f"where the project goes on each host (default: {DEFAULT_REMOTE_DIR}; "
                             "relative paths are under the remote home)")
    parser.add_argument("--remote-python", metavar="PATH",
                        help="an interpreter on the hosts with the dependencies installed: skips running "
                             "scripts/setup.sh there")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for a host to answer (default 10)")
    parser.add_argument("--shard-timeout", type=float, default=1800.0, metavar="S",
                        help="seconds one shard may run before its host counts as failed (default 1800)")
    parser.add_argument("--junit", metavar="FILE", help="also write JUnit XML, as `testbed matrix --junit`")
    parser.add_argument("--check", action="store_true",
                        help="check the hosts (keys, ship, doctor) and show the plan; run nothing")


def remote_path(value: str, home: str, option: str) -> str:
    """An absolute path on the host: `~`, `~/x` and relative paths are under its home."""
    if "\0" in value or not value.strip():
        raise SpecError(f"{option}: {value!r} is not a usable path")
    if value == "~":
        return home
    if value.startswith("~/"):
        value = value[2:]
    elif value.startswith("~"):
        raise SpecError(f"{option}: {value!r}: only ~ and ~/... are understood (not ~user)")
    if ".." in value.split("/"):
        raise SpecError(f"{option}: {value!r}: '..' is not allowed (the project and its runs would "
                        "land outside the directory named; give the directory itself)")
    path = value if value.startswith("/") else f"{home.rstrip('/')}/{value}"
    return path.rstrip("/") or "/"


@dataclass
class Host:
    """One lab machine during the run: its connection, remote paths, log and state."""

    spec: HostSpec
    directory: Path
    log: TextIO
    conn: fabric.Connection | None = None
    layout: command.RemoteLayout | None = None
    run_dir: str = ""
    spec_path: str = ""
    probe: dict[str, Any] = field(default_factory=dict)
    status: str = "not checked"
    cells: int = 0
    attempts: int = 0

    @property
    def label(self) -> str:
        return self.spec.label

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()


class Events:
    """Progress on stderr from several threads: one line per event, the bar per finished cell."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.lock = threading.Lock()
        self.bar: ProgressBar | None = None

    def line(self, text: str) -> None:
        with self.lock:
            prefix = "\r\x1b[2K" if self.bar is not None and self.bar.tty else ""
            with contextlib.suppress(OSError, ValueError):
                self.stream.write(f"{prefix}[remote] {text}\n")
                self.stream.flush()
            if self.bar is not None and self.bar.tty:
                self.bar.status(self.bar.current)

    def start(self, total: int) -> None:
        with self.lock:
            self.bar = ProgressBar(total, label="remote", stream=self.stream)

    def advance(self, note: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.advance(note=note)

    def finish(self, text: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.finish(text)


class RemoteRun:
    """The whole command once its input is valid."""

    def __init__(self, args: argparse.Namespace, matrix: MatrixSpec, hosts: list[HostSpec],
                 options: SshOptions, archive: ProjectArchive, spec_bytes: bytes) -> None:
        self.args = args
        self.matrix = matrix
        self.options = options
        self.archive = archive
        self.spec_bytes = spec_bytes
        self.spec_name = Path(args.spec).name
        self.out = Path(args.out)
        self.run_id = secrets.token_hex(4)
        self.stop = threading.Event()
        self.events = Events()
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.environment: dict[str, Any] | None = None
        self.retries: list[dict[str, Any]] = []
        self.fatal: tuple[str, Exception] | None = None  # what stopped the run from a worker
        self.started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        self.hosts = []
        for spec in hosts:
            directory = self.out / spec.label
            directory.mkdir(parents=True, exist_ok=True)
            self.hosts.append(Host(spec, directory, (directory / HOST_LOG).open("a", encoding="utf-8")))
        self.queue = ShardQueue(plan_shards(matrix))

    # --- step 2: make each host ready ------------------------------------------------------

    def prepare(self, host: Host) -> None:
        log = host.log
        log.write(f"=== {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} run {self.run_id}: "
                  f"connecting to {host.spec}\n")
        try:
            host.conn = session.connect(host.spec, self.options)
            home = session.home_directory(host.conn)
            base = remote_path(self.args.remote_dir, home, "--remote-dir")
            tree, uploaded = ship(host.conn, self.archive, base, log=log, stop=self.stop)
            log.write(f"project {self.archive.digest} {'uploaded to' if uploaded else 'already at'} {tree}\n")
            uid = session.run(host.conn, command.user_id(), log=log, stop=self.stop)
            sudo = uid.stdout.strip() != "0"
            if self.args.remote_python:
                python = remote_path(self.args.remote_python, home, "--remote-python")
            else:
                python = f"{tree}/.venv/bin/python"
                self._setup(host, base, tree, sudo)
            host.layout = command.RemoteLayout(tree=tree, python=python, sudo=sudo)
            host.probe = self._probe(host)
            host.run_dir = f"{base}/runs/{self.run_id}/{host.label}"
            self._must(host, command.mkdir(host.run_dir), "create the run directory")
            host.spec_path = f"{host.run_dir}/{self.spec_name}"
            session.upload(host.conn, io.BytesIO(self.spec_bytes), host.spec_path)
        except (HostLost, paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnusable(f"{host.spec}: {exc}") from None
        finally:
            log.flush()
        host.status = "ready"

    def _must(self, host: Host, argv: list[str], action: str, timeout_s: float = 60.0) -> session.Completed:
        assert host.conn is not None
        done = session.run(host.conn, argv, timeout_s=timeout_s, log=host.log, stop=self.stop)
        if done.status != 0:
            raise HostLost(f"could not {action} (exit {done.status}: {done.last_line()})")
        return done

    def _setup(self, host: Host, base: str, tree: str, sudo: bool) -> None:
        """The project's own idempotent set-up, in the shipped tree.

        Every edit ships a new tree, and a new venv for each would cost minutes of pip. So
        `base/venv` links to the newest tree's real .venv, and a new tree links its .venv there
        when that venv was installed from the same pyproject.toml (setup.sh's own stamp), so
        setup.sh finds it current and only checks the apt packages. When the dependencies
        changed, setup.sh builds a real .venv in the new tree, which becomes `base/venv`.
        """
        assert host.conn is not None
        shared, venv = f"{base}/venv", f"{tree}/.venv"
        stamp = session.read_text(host.conn, f"{shared}/.installed-from")
        if stamp is not None and stamp.strip() == self.archive.pyproject_sha256 \
                and not session.exists(host.conn, venv):
            self._must(host, command.symlink(shared, venv), "link the current venv into the tree")
        layout = command.RemoteLayout(tree=tree, python="", sudo=sudo)
        argv = layout.setup(lock=f"{base}/.setup.lock")
        self.events.line(f"{host.label}: running scripts/setup.sh"
                         f"{'' if session.exists(host.conn, venv) else ' (a new venv: minutes)'}")
        host.log.write(f"$ {command.shell_line(argv)}\n")
        done = session.RemoteProcess(host.conn, argv, pty=True, log=host.log).wait(
            timeout_s=SETUP_TIMEOUT_S, stop=self.stop, grace_s=5)
        if done.status != 0:
            raise HostLost(f"scripts/setup.sh failed (exit {done.status}: {done.last_line()}; "
                           f"see {host.directory / HOST_LOG})")
        if session.is_real_directory(host.conn, venv):
            self._must(host, command.symlink(venv, shared), "record the new venv as the current one")

    def _probe(self, host: Host) -> dict[str, Any]:
        assert host.conn is not None and host.layout is not None
        done = session.run(host.conn, host.layout.probe(), timeout_s=PROBE_TIMEOUT_S, log=host.log,
                           stop=self.stop)
        if done.status == 127:
            raise HostLost(f"remote python {host.layout.python} not found ({done.last_line()})")
        try:
            probe = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
        except ValueError:
            probe = None
        if done.status != 0 or not isinstance(probe, dict):
            raise HostLost(f"the remote testbed does not start with {host.layout.python} "
                           f"(exit {done.status}: {done.last_line()})")
        if not probe["testbed_file"].startswith(probe["tree"].rstrip("/") + "/"):
            raise HostLost(f"{host.layout.python} imports testbed from {probe['testbed_file']}, "
                           f"not from the shipped {host.layout.tree}")
        doctor = probe["doctor"]
        if not doctor.get("ok"):
            missing = [f"{c['name']}: {c['detail']}" for c in doctor.get("checks", [])
                       if c.get("essential") and not c.get("ok")]
            raise HostLost("cannot run experiments: doctor: " + "; ".join(missing or ["not ok"]))
        return probe

    def prepare_all(self) -> list[Host]:
        """Every host checked in parallel; the usable ones, or HostUnusable naming each problem."""
        problems: dict[str, str] = {}

        def attempt(host: Host) -> None:
            try:
                self.prepare(host)
            except HostUnusable as exc:
                problems[host.label] = exc.message
            except Exception as exc:  # a bug must still end as a refusal naming the host
                host.log.write(traceback.format_exc())
                problems[host.label] = (f"{host.spec}: unexpected {type(exc).__name__}: {exc} "
                                        f"(traceback in {host.directory / HOST_LOG})")
            if host.label in problems:
                host.status = f"refused: {problems[host.label]}"
                host.log.write(f"{host.status}\n")
                host.close()

        threads = [threading.Thread(target=attempt, args=(h,), daemon=True, name=f"prepare-{h.label}")
                   for h in self.hosts]
        for thread in threads:
            thread.start()
        _join(threads)
        ready = [h for h in self.hosts if h.status == "ready"]
        if not ready:
            raise HostUnusable("no usable host: " + "; ".join(problems[h.label] for h in self.hosts))
        for host in self.hosts:
            if host.label in problems:
                self.events.line(f"{host.label}: refused: {problems[host.label]}")
        for host in ready:
            doctor = host.probe["doctor"]
            backends = " ".join(f"{k}={v}" for k, v in (doctor.get("backends") or {}).items())
            self.events.line(f"{host.label}: ready (Python {host.probe['python']}, "
                             f"kernel {doctor.get('kernel')}, backends {backends})")
        return ready

    # --- step 3: run the shards -----------------------------------------------------------

    def work(self, host: Host) -> None:
        """One host's loop: take a shard, run it, collect it; on failure requeue and stop."""
        while True:
            shard = self.queue.take(host.label, self.stop)
            if shard is None:
                return
            host.attempts += 1
            self.events.line(f"{host.label}: runs {shard.describe()} ({shard.name})")
            try:
                records, environment = self.run_shard(host, shard)
                with self.lock:
                    for record in records:
                        self.records[(record["row"], record["pairing"])] = record
                    if self.environment is None:
                        self.environment = environment
                    host.cells += len(records)
                    self.write(partial=True, interrupted=False)
            except Interrupted:
                self.queue.give_back(shard, failed_host=None)
                return
            except (HostLost, ShardUnusable, paramiko.SSHException, OSError, EOFError) as exc:
                if self.stop.is_set():
                    self.queue.give_back(shard, failed_host=None)
                    return
                host.status = f"failed: {exc}"
                host.log.write(f"FAILED during {shard.name}: {exc}\n")
                self.events.line(f"{host.label}: FAILED during {shard.describe()}: {exc}; "
                                 "its shard goes back to the queue")
                with self.lock:
                    self.retries.append({"shard": shard.name, "failed_on": host.label, "reason": str(exc)})
                self.queue.give_back(shard, failed_host=host.label)
                host.close()
                return
            except Exception as exc:  # a local write failure or a bug: stop everything, keep results
                host.log.write(traceback.format_exc())
                with self.lock:
                    self.fatal = self.fatal or (host.label, exc)
                self.queue.give_back(shard, failed_host=None)
                self.stop.set()
                return
            self.queue.finish(shard)
            for record in records:
                self.events.advance(f"{host.label}: {record['row']} \u00d7 {record['pairing']}: "
                                    f"{cell_text(record)}")

    def run_shard(self, host: Host, shard: Shard) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        assert host.conn is not None and host.layout is not None
        remote_out = f"{host.run_dir}/{shard.name}-a{host.attempts}"
        argv = host.layout.matrix(host.spec_path, remote_out, [shard.row], shard.pairings)
        host.log.write(f"$ {command.shell_line(argv)}\n")
        done = session.RemoteProcess(host.conn, argv, pty=True, log=host.log).wait(
            timeout_s=self.args.shard_timeout, stop=self.stop, grace_s=STOP_GRACE_S)
        if self.stop.is_set():
            raise Interrupted
        if done.stopped:
            raise HostLost(f"the shard ran longer than --shard-timeout {self.args.shard_timeout:g} s")
        if done.status == -1:
            raise HostLost("connection lost while the shard ran")
        if done.status not in SHARD_DONE:
            raise HostLost(f"remote testbed matrix exited {done.status}: {done.last_line()}")
        staging = host.directory / ".staging" / f"{shard.name}-a{host.attempts}"
        try:
            session.download_tree(host.conn, remote_out, staging)
            doc = read_shard(staging, shard)
            records = adopt_shard(staging, host.directory, shard, doc, host.label)
        finally:
            shutil.rmtree(host.directory / ".staging", ignore_errors=True)
        session.run(host.conn, host.layout.remove(remote_out), log=host.log)
        return records, doc.get("environment")

    # --- step 4: one matrix ---------------------------------------------------------------

    def remote_summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "project": self.archive.digest,
            "hosts": {h.label: {"target": h.spec.text, "status": h.status, "cells": h.cells,
                                "kernel": h.probe.get("doctor", {}).get("kernel"),
                                "python": h.probe.get("python"),
                                "backends": h.probe.get("doctor", {}).get("backends")}
                      for h in self.hosts},
            "retries": list(self.retries),
        }

    def write(self, *, partial: bool, interrupted: bool) -> dict[str, Any]:
        doc = merged_document(self.matrix, self.records, partial=partial, interrupted=interrupted,
                              started_at=self.started_at, elapsed_s=time.monotonic() - self.started,
                              environment=self.environment, remote=self.remote_summary())
        write_matrix_outputs(self.out, doc)
        return doc

    def execute(self) -> int:
        workers: list[threading.Thread] = []
        try:
            ready = self.prepare_all()
            if self.args.check:
                return self.print_plan(ready)
            self.events.start(len(self.matrix.cells))
            self.events.line(f"{len(self.queue.shards)} shards over {len(ready)} hosts "
                             f"({', '.join(h.label for h in ready)}); run {self.run_id}")
            workers = [threading.Thread(target=self.work, args=(h,), daemon=True, name=f"work-{h.label}")
                       for h in ready]
            for worker in workers:
                worker.start()
            _join(workers)
        except KeyboardInterrupt:
            return self.interrupted(workers)
        finally:
            for host in self.hosts:
                host.close()
                host.log.close()
        if self.fatal is not None:
            label, exc = self.fatal
            with contextlib.suppress(TestbedError), self.lock:
                self.write(partial=True, interrupted=False)
            if isinstance(exc, TestbedError):
                raise exc
            raise RunFailed(f"stopped by an internal error while collecting from {label}: "
                            f"{type(exc).__name__}: {exc} (traceback in {self.out / label / HOST_LOG})")
        unfinished = self.queue.unfinished()
        if unfinished:
            with self.lock:
                self.write(partial=True, interrupted=False)
            failed = "; ".join(f"{h.label} {h.status}" for h in self.hosts)
            raise RunFailed(f"no healthy host left for {len(unfinished)} of {len(self.queue.shards)} shards "
                            f"({failed}); partial results in {self.out / MATRIX_FILE}")
        with self.lock:
            doc = self.write(partial=False, interrupted=False)
        summary = doc["summary"]
        self.events.finish(f"remote: {summary['as_expected']} of {summary['cells']} cells as expected, "
                           f"{summary['differ']} differ ({summary['errors']} errors); "
                           + ", ".join(f"{h.label} ran {h.cells}" for h in self.hosts if h.cells))
        if self.args.junit:
            write_bytes_atomic(Path(self.args.junit), matrix_junit(doc))
        return report_outcome(doc, self.out)

    def interrupted(self, workers: list[threading.Thread]) -> int:
        """Ctrl-C: remote matrices get their own Ctrl-C and time to tear down; what finished stays."""
        self.stop.set()
        self.events.line("interrupted: stopping the remote runs (their namespaces are removed there)")
        with contextlib.suppress(KeyboardInterrupt):
            _join(workers, limit_s=STOP_GRACE_S + 10)
            # a worker still fetching a shard: its connection goes, and the half-fetched copy with
            # it (a staging copy is never results; the worker's own cleanup may not run before exit)
            for host in self.hosts:
                host.close()
            _join(workers, limit_s=5)
            for host in self.hosts:
                shutil.rmtree(host.directory / ".staging", ignore_errors=True)
        with self.lock:
            doc = self.write(partial=True, interrupted=True)
        self.events.finish(f"remote: interrupted after {len(doc['cells'])} of {len(self.matrix.cells)} "
                           f"cells; partial results in {self.out / MATRIX_FILE}")
        if self.args.junit:
            write_bytes_atomic(Path(self.args.junit), matrix_junit(doc))
        return EXIT_INTERRUPTED

    def print_plan(self, ready: list[Host]) -> int:
        for host in ready:
            assert host.layout is not None
            print(f"{host.label:<20} ready  {host.spec.text}  tree {host.layout.tree}  "
                  f"python {host.layout.python}")
        for host in self.hosts:
            if host not in ready:
                print(f"{host.label:<20} {host.status}")
        print(f"{len(self.queue.shards)} shards ({len(self.matrix.cells)} cells) would run over {len(ready)} "
              "hosts; nothing run (--check)")
        return 0


class Interrupted(Exception):
    """The run is stopping (Ctrl-C): a shard ended because it was told to."""


def _join(threads: list[threading.Thread], limit_s: float | None = None) -> None:
    """Join with short waits, so Ctrl-C reaches the main thread while workers run."""
    deadline = None if limit_s is None else time.monotonic() + limit_s
    for thread in threads:
        while thread.is_alive():
            if deadline is not None and time.monotonic() > deadline:
                return
            thread.join(timeout=0.2)


def run(args: argparse.Namespace) -> int:
    hosts = parse_hosts(args.hosts)
    spec_path = Path(args.spec)
    matrix = select(load_matrix_spec(spec_path), args.rows, args.pairings)
    if matrix.routed:  # a shard is a list of experiment cells; a routed row runs a driver
        raise SpecError(f"{spec_path}: the routed rows {', '.join(r.name for r in matrix.routed)} "
                        "(proxy, balancer) run only in a local `testbed matrix`: leave them out with "
                        "--rows")
    try:
        spec_bytes = spec_path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read {spec_path}: {exc.strerror}") from None
    options = SshOptions(
        known_hosts=Path(args.known_hosts).expanduser(), accept_new_host_keys=args.accept_new_host_keys,
        identity=Path(args.identity).expanduser() if args.identity else None,
        ssh_config=Path(args.ssh_config).expanduser() if args.ssh_config else None,
        connect_timeout_s=args.connect_timeout)
    options.check()
    if args.shard_timeout <= 0:
        raise SpecError("--shard-timeout must be positive")
    remote_path(args.remote_dir, "/home", "--remote-dir")  # the form is checked before connecting
    if args.remote_python:
        remote_path(args.remote_python, "/home", "--remote-python")
    root = project_root()
    archive = build_archive(root, project_files(root))
    from testbed.runner import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM stops the lab like Ctrl-C: remote teardown, partial kept
        return RemoteRun(args, matrix, hosts, options, archive, spec_bytes).execute()
