"""`testbed stack bench`: the benchmark's command-line entry under the uniform add_arguments/run names."""

from testbed.sim.bench import add_bench_arguments as add_arguments
from testbed.sim.bench import run_bench as run

__all__ = ["add_arguments", "run"]
