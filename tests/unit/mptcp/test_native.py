"""The compiled stack core (testbed/mptcp/native.py): used only when built from the tree's
sources, never stale, never half; and the build itself, in a copy of the tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.mptcp import native

REPO = Path(__file__).resolve().parents[3]


def _manifest(tmp_path: Path, modules: dict[str, str]) -> Path:
    path = tmp_path / "_native.json"
    path.write_text(json.dumps({"ext_suffix": native.EXT_SUFFIX, "mypy": "2.4.1",
                                "modules": modules}))
    return path


def test_every_listed_module_has_its_source_and_none_is_a_package() -> None:
    for module in native.NATIVE_MODULES:
        assert native.source_path(module).is_file(), module
        assert not module.endswith("__init__")


def test_the_environment_asks_for_the_source() -> None:
    state = native.read_state(environ={native.PURE_PYTHON_ENV: "1"})
    assert not state.compiled and native.PURE_PYTHON_ENV in state.describe()


def test_no_manifest_means_not_compiled_and_says_how(tmp_path: Path) -> None:
    state = native.read_state(environ={}, manifest_path=tmp_path / "absent.json")
    assert not state.compiled
    assert "`make setup` compiles it" in state.detail


def test_a_source_edited_since_the_build_makes_the_whole_core_run_from_source(
        tmp_path: Path) -> None:
    digests = {module: native.source_digest(module) for module in native.NATIVE_MODULES}
    digests["testbed.mptcp.subflow"] = "0" * 64
    state = native.read_state(environ={}, manifest_path=_manifest(tmp_path, digests))
    assert not state.compiled
    assert "testbed/mptcp/subflow.py changed since it was compiled" in state.detail


def test_a_manifest_for_another_python_or_unreadable_is_not_used(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"ext_suffix": ".cpython-39-x86_64-linux-gnu.so", "mypy": "1",
                                 "modules": {}}))
    assert "another Python" in native.read_state(environ={}, manifest_path=other).detail
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    state = native.read_state(environ={}, manifest_path=broken)
    assert not state.compiled and "unreadable" in state.detail


def test_the_source_finder_serves_the_core_and_nothing_else() -> None:
    finder = native.SourceOnlyFinder()
    spec = finder.find_spec("testbed.mptcp.subflow", None)
    assert spec is not None and spec.origin == str(native.source_path("testbed.mptcp.subflow"))
    assert finder.find_spec("testbed.mptcp.handshake", None) is None
    assert finder.find_spec("json", None) is None


def _python(tree: Path, code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != native.PURE_PYTHON_ENV}
    environment.update(env, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    completed = subprocess.run([sys.executable, "-c", code], cwd=tree, env=environment,
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


WHICH = ("import testbed.mptcp.subflow as s, testbed.mptcp.native as n; "
         "print(s.__file__); print(n.STATE.describe())")
BENCH = "from testbed.sim.bench import main; main(['--size', '2M'])"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_build_runs_compiled_then_from_source_once_a_module_changes(
        tmp_path: Path) -> None:
    pytest.importorskip("mypyc", reason="needs the native extra (make setup installs it)")
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "testbed", tree / "testbed", ignore=shutil.ignore_patterns(
        "__pycache__", "_native*"))
    # the inline fast path imports the catalogue's strip box
    shutil.copytree(REPO / "middleboxes", tree / "middleboxes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for module in native.NATIVE_MODULES:  # a copy of the main tree's build would hide a failure
        (tree / (module.replace(".", "/") + native.EXT_SUFFIX)).unlink(missing_ok=True)
    build = subprocess.run([sys.executable, "-m", "testbed.mptcp.native_build"], cwd=tree,
                           env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                           text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stderr
    assert f"compiled {len(native.NATIVE_MODULES)} modules" in build.stdout
    assert not (tree / "build").exists() and not (tree / ".mypy_cache").exists()

    module_file, state = _python(tree, WHICH).splitlines()
    assert module_file.endswith(native.EXT_SUFFIX) and state.startswith("compiled (mypyc")
    compiled = _python(tree, BENCH)
    assert "stack core: compiled" in compiled and "payload intact" in compiled

    module_file, state = _python(tree, WHICH, **{native.PURE_PYTHON_ENV: "1"}).splitlines()
    assert module_file.endswith("subflow.py") and state.startswith("python (")

    with (tree / "testbed/mptcp/subflow.py").open("a") as source:
        source.write("\n# an edit after the build\n")
    module_file, state = _python(tree, WHICH).splitlines()
    assert module_file.endswith("subflow.py")
    assert "testbed/mptcp/subflow.py changed since it was compiled" in state
    stale = _python(tree, BENCH)
    assert "stack core: python" in stale and "payload intact" in stale


@pytest.mark.skipif(not native.STATE.compiled, reason="the Python core runs them in this process")
def test_the_python_core_tests_pass_on_the_source() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "python_core",
         str(REPO / "tests/unit/mptcp")],
        # the child inherits this session's marker: its leak check would count what this
        # session has running at the time; this session's own check covers the child
        cwd=REPO, env={**os.environ, native.PURE_PYTHON_ENV: "1", "TESTBED_LEAK_CHECK": "0"},
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:]
    summary = completed.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary
