"""Command line of the inline process: build everything from arguments and config, run, clean up.

    python -m testbed.inline --left IF --right IF --control PATH [--config FILE]
                             [--stats-out FILE] [--no-prepare]

Run it inside the bump namespace. `--left` is the leg toward the client (frames arriving there
travel upstream). The control socket appears once both legs are open: wait for it before
sending traffic. Exit status: 0 after a stop request, SIGTERM or SIGINT; 2 for a bad
configuration or unusable legs; 1 when forwarding failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from middleboxes.contract import Direction, Middlebox
from testbed.inline.config import ConfigError, InlineConfig, MiddleboxSpec, load_config
from testbed.inline.legs import LegError, open_leg, prepare_leg
from testbed.inline.pipeline import Codec, MiddleboxPipeline, wire_codec
from testbed.inline.ring import ring_leg
from testbed.inline.runtime import InlineProcess, request_fine_timer_slack
from testbed.net.delayline import DelayLine

MiddleboxFactory = Callable[[Sequence[MiddleboxSpec], random.Random], list[Middlebox]]


def build_registered_middleboxes(specs: Sequence[MiddleboxSpec],
                                 rng: random.Random) -> list[Middlebox]:
    """Build the configured middleboxes through middleboxes.registry, each with its own RNG.

    Each box's RNG is seeded from the process RNG in list order, so adding a box at the end
    does not change the random choices of those before it.
    """
    if not specs:
        return []
    try:
        from middleboxes.registry import build_middlebox  # type: ignore[import-not-found]
    except ImportError as error:
        raise ConfigError(f"middleboxes are configured but middleboxes.registry cannot be "
                          f"imported: {error}") from error
    boxes = []
    for index, spec in enumerate(specs):
        box_rng = random.Random(rng.getrandbits(64))
        try:
            boxes.append(build_middlebox(spec.name, dict(spec.params), box_rng,
                                         switchable=spec.switchable))
        except (KeyError, ValueError, TypeError) as error:
            raise ConfigError(f"config.middleboxes[{index}] ({spec.name}): {error}") from error
    return boxes


def build_process(config: InlineConfig, left: str, right: str,
                  middlebox_factory: MiddleboxFactory = build_registered_middleboxes,
                  codec: Codec | None = None, prepare_legs: bool = True) -> InlineProcess:
    """Assemble the stages, then prepare and open both legs (so a bad config touches nothing).

    RNG streams are drawn from the seed in a fixed order: delay lines first, then the boxes.
    """
    rng = random.Random(config.seed)
    delay_lines: dict[Direction, DelayLine[bytes]] = {
        d: DelayLine.for_link(config.delay[d], random.Random(rng.getrandbits(64)))
        for d in Direction}
    boxes = middlebox_factory(config.middleboxes, rng)
    pipeline = MiddleboxPipeline(boxes, codec or wire_codec()) if boxes else None
    if prepare_legs:
        for leg in (left, right):
            prepare_leg(leg, disable_ipv6=True)
    left_leg = ring_leg(lambda: open_leg(left), left)
    try:
        right_leg = ring_leg(lambda: open_leg(right), right)
    except LegError:
        left_leg.close()
        raise
    for ifname, opened in ((left, left_leg), (right, right_leg)):
        if opened.io != "ring":
            print(f"testbed.inline: {ifname}: frames go through {opened.io}, one system call each "
                  f"(slower, same behaviour)", file=sys.stderr)
    return InlineProcess(left_leg, right_leg, config.delay, delay_lines, pipeline)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m testbed.inline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--left", required=True, help="leg toward the client (upstream input)")
    parser.add_argument("--right", required=True, help="leg toward the server")
    parser.add_argument("--control", required=True, help="Unix socket path for control")
    parser.add_argument("--config", help="JSON configuration file (see testbed.inline.config)")
    parser.add_argument("--stats-out", help="write final stats as JSON here on exit")
    parser.add_argument("--no-prepare", action="store_true",
                        help="do not turn off offloads on the legs (the caller did it)")
    return parser.parse_args(argv)


def write_stats(path: str, stats: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file; a failure is an error."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, target)


def main(argv: Sequence[str] | None = None,
         middlebox_factory: MiddleboxFactory = build_registered_middleboxes) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config) if args.config else InlineConfig()
        if args.left == args.right:
            raise ConfigError(f"--left and --right must differ, both are {args.left!r}")
        process = build_process(config, args.left, args.right, middlebox_factory,
                                prepare_legs=not args.no_prepare)
    except (ConfigError, LegError) as error:
        print(f"testbed.inline: {error}", file=sys.stderr)
        return 2
    status = 0
    try:
        request_fine_timer_slack()
        process.install_signal_handlers()
        process.serve_control(args.control)
        reason = process.run()
        print(f"testbed.inline: stopped ({reason})", file=sys.stderr)
    except Exception:
        traceback.print_exc()
        process.request_stop("error")
        status = 1
    finally:
        final_stats = process.stats()
        process.close()
        if args.stats_out:
            write_stats(args.stats_out, final_stats)
    return status
