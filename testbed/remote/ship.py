"""The project as one deterministic tarball, unpacked once per content on each host.

The tarball holds the files git knows (tracked, and new files not ignored) as they are in the
working tree, so a lab runs exactly the code in front of the user, uncommitted edits included.
Names are sorted and times, owners and modes normalised, so equal content gives equal bytes and
the same hash: the remote directory is named by that hash, unpacked into a temporary sibling and
renamed into place, so hosts that share a home directory (NFS) or a rerun never unpack twice
and never see half a tree.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import fabric

from testbed.errors import EnvironmentProblem
from testbed.remote import command, session

FIXED_MTIME = 1_000_000_000  # any constant: the tree is content-addressed, never compared by time
SKIP_DIRS = {".git", ".venv", "__pycache__", "results", "build", ".pytest_cache", ".ruff_cache",
             ".hypothesis", ".mypy_cache"}


@dataclass(frozen=True)
class ProjectArchive:
    data: bytes
    digest: str  # first 16 hex digits of the archive's SHA-256: the remote directory name
    files: int
    pyproject_sha256: str  # what scripts/setup.sh stamps a venv with (sha256sum pyproject.toml)


def project_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "testbed" / "cli.py").is_file():
        raise EnvironmentProblem(f"cannot find the project to ship: {root} has no pyproject.toml "
                                 "(run from a checkout of the testbed)")
    return root


def project_files(root: Path) -> list[str]:
    """Relative paths of the regular files to ship, sorted."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True, timeout=60)
        names = {name for name in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if name}
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        names = set(_walk(root))
    return sorted(name for name in names
                  if (root / name).is_file() and not (root / name).is_symlink()
                  and not SKIP_DIRS.intersection(Path(name).parts))


def _walk(root: Path) -> list[str]:
    """Without git (an unpacked release): every file outside caches, venvs and results."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found.extend(os.path.relpath(os.path.join(directory, f), root) for f in files)
    return found


def build_archive(root: Path, files: list[str]) -> ProjectArchive:
    if not files:
        raise EnvironmentProblem(f"nothing to ship: no project files found under {root}")
    if "pyproject.toml" not in files:
        raise EnvironmentProblem(f"nothing to ship: {root} has no pyproject.toml among its files")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in files:
            path = root / name
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return ProjectArchive(data=data, digest=hashlib.sha256(data).hexdigest()[:16], files=len(files),
                          pyproject_sha256=hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest())


def ship(conn: fabric.Connection, archive: ProjectArchive, base: str, *, log: TextIO,
         stop: threading.Event | None = None) -> tuple[str, bool]:
    """The project at `base/<digest>` on the host; returns (that path, whether it was uploaded
    now). A failed step raises HostLost naming it."""
    tree = f"{base}/{archive.digest}"
    if session.run(conn, command.is_directory(tree), log=log, stop=stop).status == 0:
        return tree, False
    _check(session.run(conn, command.mkdir(base), log=log, stop=stop), "create", base)
    made = session.run(conn, command.make_temp_dir(base), log=log, stop=stop)
    _check(made, "create a temporary directory in", base)
    staging = made.stdout.strip()
    incoming = f"{staging}.tar.gz"
    try:
        session.upload(conn, io.BytesIO(archive.data), incoming)
        _check(session.run(conn, command.untar(incoming, staging), timeout_s=300, log=log, stop=stop),
               "unpack the project in", staging)
        moved = session.run(conn, command.rename_dir(staging, tree), log=log, stop=stop)
        if moved.status != 0 and session.run(conn, command.is_directory(tree), log=log).status != 0:
            _check(moved, "move the project to", tree)  # not merely a sibling that was faster
    except OSError as exc:
        raise session.HostLost(f"uploading the project to {incoming} failed: {exc}") from exc
    finally:
        session.run(conn, command.remove_tree(staging, incoming), log=log)
    return tree, True


def _check(done: session.Completed, action: str, path: str) -> None:
    if done.status != 0:
        raise session.HostLost(f"could not {action} {path} (exit {done.status}: {done.last_line()})")
