"""Live middlebox runs: the spec files of experiments/middleboxes through testbed.runner, on real
namespaces with the Linux kernel's MPTCP at both ends.

Each spec runs at most once per session (several tests read the same result). A spec's I/O
timeout can be shortened for the runs that stall by design, so the directory stays fast; the
rest of the spec is used exactly as `testbed run` would use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.runner import run_experiment
from testbed.spec import load_spec
from tests.integration.live_checks import live_problem

SPEC_DIR = Path(__file__).resolve().parents[3] / "experiments" / "middleboxes"

RunSpec = Callable[..., dict[str, Any]]


def _live_problem() -> str | None:
    return live_problem()


@pytest.fixture(scope="session")
def run_spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunSpec]:
    """run_spec(stem, timeout_s=None, attempt=0) -> result.json of
    experiments/middleboxes/<stem>.toml; another `attempt` runs the same spec again."""
    problem = _live_problem()
    if problem is not None:
        pytest.skip(problem)
    cache: dict[tuple[str, float | None, int], dict[str, Any]] = {}

    def run(stem: str, timeout_s: float | None = None, attempt: int = 0) -> dict[str, Any]:
        key = (stem, timeout_s, attempt)
        if key not in cache:
            spec = load_spec(SPEC_DIR / f"{stem}.toml")
            if timeout_s is not None:
                spec = dataclasses.replace(
                    spec, traffic=dataclasses.replace(spec.traffic, timeout_s=timeout_s))
            out = tmp_path_factory.mktemp(f"{stem}-{attempt}")
            cache[key] = run_experiment(spec, out, progress=lambda line: None)
        return cache[key]

    yield run
