"""The one C extension (testbed/wire/_checksum.c); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("testbed.wire._checksum", ["testbed/wire/_checksum.c"],
                             extra_compile_args=["-O2"])])
