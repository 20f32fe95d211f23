"""Whether this process runs the stack core (and the inline strip fast path) compiled by mypyc
or as their Python source.

`make setup` compiles the modules in `NATIVE_MODULES` with mypyc (native_build.py;
`TESTBED_NATIVE=0` leaves them out) into extension modules beside their sources, and records
each source's digest in `_native.json`. Python imports an extension before a source of the same
name, so a module edited since the build would silently run its old compiled self. This module,
imported by the `testbed` package before any of them, compares the digests once per process: the compiled
core is used only when every module is built from the sources in the tree; otherwise every one
of them is imported from source (they call each other natively, so they cannot be mixed).
`testbed doctor` and `testbed stack bench` say which core ran and why. `TESTBED_PURE_PYTHON=1`
asks for the source in any case.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent.parent
MANIFEST = PACKAGE_DIR / "_native.json"
GROUP = "testbed.mptcp._native"  # the shared library every compiled module calls into
PURE_PYTHON_ENV = "TESTBED_PURE_PYTHON"
EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))

# The per-segment path of the sans-IO core. handshake.py stays Python: it is per connection, and
# its option handling leans on unions mypy cannot narrow; the codec (testbed.wire) is shared with
# the middleboxes and the analysers, and runs as Python everywhere except the three modules of
# the inline process's raw-bytes strip (INLINE_FAST_PATH): compiled, the strip_options box
# rewriting every packet went from 1.99-2.01 to 2.17-2.25 Gbit/s (bench_rewrite, two runs each).
STACK_CORE_MODULES: tuple[str, ...] = tuple(f"testbed.mptcp.{name}" for name in (
    "addresses", "config", "connection", "counters", "data_transfer", "errors", "events",
    "fallback", "host", "mapping", "option_writer", "path_manager", "reassembly", "rtt",
    "scheduler", "scoreboard", "send_buffer", "signalling", "subflow", "subflow_context",
    "tcp_state", "cc.base", "cc.coupled", "cc.hystart", "cc.reno",
))
INLINE_FAST_PATH: tuple[str, ...] = ("testbed.inline.fastpath", "testbed.wire.edit",
                                     "testbed.wire.peek")
NATIVE_MODULES: tuple[str, ...] = STACK_CORE_MODULES + INLINE_FAST_PATH


@dataclass(frozen=True)
class NativeState:
    compiled: bool
    detail: str  # what runs ("mypyc 1.2, 25 modules") or why the source runs instead

    def describe(self) -> str:
        return f"compiled ({self.detail})" if self.compiled else f"python ({self.detail})"


def source_path(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def extension_path(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + EXT_SUFFIX)


def source_digest(module: str) -> str:
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def manifest_for(modules: Sequence[str], mypy_version: str) -> dict[str, object]:
    return {"ext_suffix": EXT_SUFFIX, "mypy": mypy_version,
            "modules": {module: source_digest(module) for module in modules}}


def read_state(environ: dict[str, str] | os._Environ[str] = os.environ,
               manifest_path: Path = MANIFEST) -> NativeState:
    """Which core this process can use, from the environment, the manifest and the tree."""
    if environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return NativeState(False, f"{PURE_PYTHON_ENV} is set")
    try:
        manifest = json.loads(manifest_path.read_text())
        built: dict[str, str] = dict(manifest["modules"])
        suffix, mypy_version = str(manifest["ext_suffix"]), str(manifest["mypy"])
    except FileNotFoundError:
        return NativeState(False, "not compiled: `make setup` compiles it")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return NativeState(False, f"unreadable {manifest_path.name} ({error}): run `make setup`")
    if suffix != EXT_SUFFIX:
        return NativeState(False, f"compiled for another Python ({suffix}): run `make setup`")
    for module in NATIVE_MODULES:  # an edited source first: the likelier cause, and the clearer
        if module in built and built[module] != source_digest(module):
            relative = source_path(module).relative_to(ROOT)
            return NativeState(False, f"{relative} changed since it was compiled: "
                                      "`make setup` compiles it again")
    for module in NATIVE_MODULES:
        if module not in built or not extension_path(module).exists():
            return NativeState(False, f"{module} is not compiled: run `make setup`")
    return NativeState(True, f"mypyc {mypy_version}, {len(NATIVE_MODULES)} modules")


class SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Imports the core's modules from their .py files even where an extension sits beside them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in NATIVE_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


STATE = read_state()
if not STATE.compiled and not any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, SourceOnlyFinder())
