"""`testbed proxy SPEC [SPEC ...]`: run converter-proxy experiments and print their medians;
with several specs, one table at the end."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.errors import SpecError
from testbed.spec_sections import distinct_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC",
                        help="proxy specs, e.g. experiments/proxy/goodput_kernel.toml")
    parser.add_argument("--out", default=None,
                        help="results directory (default results/proxy): <out>/<spec name>/result.json")
    parser.add_argument("--repeats", type=int, help="override [traffic] repeats")
    parser.add_argument("--bytes", type=int, help="override [traffic] bytes")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from testbed.proxy.experiment import format_result, format_table, run_proxy
    from testbed.proxy.spec import load_spec

    for option in ("repeats", "bytes"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise SpecError(f"--{option} must be at least 1, got {value}")
    loaded = [load_spec(Path(path)) for path in args.specs]  # every spec checked before any run
    distinct_names(spec.name for spec, _topo in loaded)
    base = Path(args.out) if args.out else Path("results") / "proxy"
    results = []
    for spec, topo in loaded:
        if args.repeats is not None:
            spec = replace(spec, repeats=args.repeats)
        if args.bytes is not None:
            spec = replace(spec, byte_count=args.bytes)
        result = run_proxy(spec, topo, base / spec.name)
        results.append(result)
        print(format_result(result))
        print(f"results in {base / spec.name}/result.json", flush=True)
    if len(results) > 1:
        print()
        print(format_table(results))
    return 0
