"""Tests marked `python_core` hand the stack core fakes or wrap its methods, which the compiled
core (testbed/mptcp/native.py) refuses. When this process runs the compiled core they are
skipped here and run in a child process on the Python core instead
(test_native.py::test_the_python_core_tests_pass_on_the_source), so CI runs them either way."""

from __future__ import annotations

import pytest

from testbed.mptcp.native import STATE as STACK_CORE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not STACK_CORE.compiled:
        return
    skip = pytest.mark.skip(reason="needs the Python core: test_native.py runs it in a child "
                                   "process with TESTBED_PURE_PYTHON=1")
    for item in items:
        if item.get_closest_marker("python_core"):
            item.add_marker(skip)
