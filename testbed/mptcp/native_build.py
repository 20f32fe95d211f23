"""Compiles the stack core and the inline strip fast path with mypyc (`make setup` runs it;
native.py says why).

    python -m testbed.mptcp.native_build [--force]

Nothing to do when the manifest matches the tree. The build runs in a temporary directory and
the extensions are copied into the tree only once all of them built, then the manifest is
written last: an interrupted or failed build leaves the core running from source, never half
compiled. mypyc comes from the `native` extra of pyproject.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.mptcp import native

SETUP_SCRIPT = f"""
import sys
from setuptools import setup
from mypyc.build import mypycify
setup(name="testbed-native", script_args=["build_ext", "--build-lib", sys.argv[1],
      "--build-temp", sys.argv[2]],
      ext_modules=mypycify(["--follow-imports=silent", *sys.argv[3:]], opt_level="3",
                           group_name={native.GROUP!r}, target_dir=sys.argv[2] + "/c"))
"""
# --follow-imports=silent: the modules the core imports but that stay Python (the codec,
# handshake.py) are type-checked for the core's sake but their own errors are not the build's.
# Without it, in a venv installed by setuptools 84 (not 66), mypy reported testbed/wire's own
# typing errors and the build failed.


def build(python: str = sys.executable) -> int:
    try:
        import mypy.version
    except ImportError:
        print("native_build: mypyc is not installed (pip install -e '.[native]'): "
              "the stack core runs as Python", file=sys.stderr)
        return 1
    sources = [str(native.source_path(module).relative_to(native.ROOT))
               for module in native.NATIVE_MODULES]
    # the digests of what is compiled: a source edited during the build is then seen as stale
    manifest = native.manifest_for(native.NATIVE_MODULES, mypy.version.__version__)
    with tempfile.TemporaryDirectory(prefix="testbed-native-") as work:
        build_lib, build_temp = Path(work) / "lib", Path(work) / "temp"
        # mypy's cache and mypyc's generated C go to the work directory, never into the tree
        environment = dict(os.environ, MYPY_CACHE_DIR=str(Path(work) / "mypy-cache"))
        completed = subprocess.run(
            [python, "-c", SETUP_SCRIPT, str(build_lib), str(build_temp), *sources],
            cwd=native.ROOT, env=environment, capture_output=True, text=True)
        if completed.returncode != 0:
            errors = [line for line in completed.stdout.splitlines() + completed.stderr.splitlines()
                      if "error" in line.lower()][:10]
            print("native_build: mypyc failed; the stack core runs as Python:\n  "
                  + "\n  ".join(errors or completed.stderr.splitlines()[-10:]), file=sys.stderr)
            return 1
        # each module's extension and the group's shared library, where native.py looks for them
        built = [build_lib / native.extension_path(module).relative_to(native.ROOT)
                 for module in (*native.NATIVE_MODULES, native.GROUP + "__mypyc")]
        absent = [path.name for path in built if not path.exists()]
        if absent:
            print(f"native_build: mypyc did not produce {', '.join(absent)}", file=sys.stderr)
            return 1
        native.MANIFEST.unlink(missing_ok=True)
        for path in built:
            target = native.ROOT / path.relative_to(build_lib)
            staged = target.with_name(target.name + ".tmp")
            shutil.copyfile(path, staged)
            os.replace(staged, target)
    staged_manifest = native.MANIFEST.with_name(native.MANIFEST.name + ".tmp")
    staged_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(staged_manifest, native.MANIFEST)
    print(f"native_build: compiled {len(native.NATIVE_MODULES)} modules ("
          f"{len(native.STACK_CORE_MODULES)} of the stack core, "
          f"{len(native.INLINE_FAST_PATH)} of the inline fast path; mypyc "
          f"{mypy.version.__version__})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.mptcp.native_build",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="compile even when up to date")
    args = parser.parse_args(argv)
    if not args.force and native.read_state(environ={}).compiled:
        return 0
    return build()


if __name__ == "__main__":
    sys.exit(main())
