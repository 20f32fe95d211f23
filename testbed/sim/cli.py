"""`testbed stack sim`: one bulk transfer of the bundled stack over simulated paths, as JSON.

    python -m testbed.sim --path rate=20,delay=10 --path rate=20,delay=10,loss=1% \
        --size 2M --cc olia --strip dss:data

Prints one JSON object: outcome class, bytes per subflow, virtual duration, goodput, payload
hash check, counters (per link, per node, per flow, per middlebox) and optionally the
per-subflow byte series. Needs no root: nothing leaves the process. Bad arguments give one line
naming the problem and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from middleboxes.contract import Middlebox
from testbed.errors import SpecError
from testbed.mptcp.config import CONGESTION_CONTROLS, PATH_MANAGERS, SCHEDULERS, StackConfig
from testbed.net.params import LinkParams, parse_changes
from testbed.sim.pcap import link_capture_writer
from testbed.sim.rng import derive_rng
from testbed.sim.topology import TopologyError, check_simulable
from testbed.sim.transfer import (
    CORE_LINK,
    PathSpec,
    TimelineStep,
    TransferSpec,
    build_transfer,
    finish_transfer,
    path_name,
    series_for,
)

if TYPE_CHECKING:
    from testbed.net.topo import Topology

DEFAULT_PATH = "rate=20,delay=10,queue=100"
EXIT_USAGE = 2
_SIZE = re.compile(r"^(\d+)\s*(k|ki|m|mi|g|gi)?b?$", re.IGNORECASE)
_SIZE_FACTORS = {None: 1, "k": 10**3, "ki": 2**10, "m": 10**6, "mi": 2**20, "g": 10**9,
                 "gi": 2**30}


class UsageError(ValueError):
    """A bad command-line value; the message names it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `testbed stack sim` (the lead wires this parser into the main CLI)."""
    parser.add_argument(
        "--path", action="append", default=[], metavar="SPEC",
        help="one path per use: rate=Mbit/s,delay=ms,jitter=ms,loss=fraction|N%%,queue=packets,"
             "queue_bytes=N,reorder=0|1 (or the LinkParams names: rate_mbit, delay_ms, "
             "jitter_ms, loss_pct, queue_pkts); UP/DOWN (two specs split by '/') shapes the return "
             f"direction differently (default: two paths {DEFAULT_PATH})")
    parser.add_argument(
        "--topology", metavar="NAME[:JSON]",
        help="run over a named testbed topology instead of --path, e.g. two_path or "
             "'n_path:{\"n\": 3, \"rate_mbit\": 20}'; paths are then the client's links")
    parser.add_argument("--size", default="200k",
                        help="bytes to transfer, e.g. 200000, 200k, 2M, 1Mi (default 200k)")
    parser.add_argument("--cc", default="lia",
                        help=f"congestion control: {', '.join(CONGESTION_CONTROLS)}")
    parser.add_argument("--scheduler", default="lowest_rtt",
                        help=f"packet scheduler: {', '.join(SCHEDULERS)}")
    parser.add_argument("--path-manager", default="fullmesh",
                        help=f"path manager: {', '.join(PATH_MANAGERS)}")
    checksum = parser.add_mutually_exclusive_group()
    checksum.add_argument("--checksum", dest="checksum", action="store_true", default=False,
                          help="negotiate DSS checksums")
    checksum.add_argument("--no-checksum", dest="checksum", action="store_false",
                          help="no DSS checksums (default, as Linux)")
    parser.add_argument("--server-no-mptcp", action="store_true",
                        help="the server ignores MPTCP (plain TCP peer)")
    parser.add_argument(
        "--strip", action="append", default=[], metavar="OPTIONS[:PACKETS[:DIRECTION[:PATHS]]]",
        help="strip options on the paths (strip_options middlebox). OPTIONS and PACKETS are "
             "'+'-separated names, e.g. mp_capable:syn, dss:data, mp_join:syn+synack; "
             "DIRECTION upstream|downstream|both; PATHS e.g. path2 (default all)")
    parser.add_argument(
        "--middlebox", action="append", default=[], metavar="PATH:NAME[:JSON]",
        help="any catalogue middlebox on a path (or any link of a --topology), e.g. "
             "'path1:rewrite_payload:{\"pattern\": \"ab\", \"replacement\": \"cd\"}'")
    parser.add_argument(
        "--at", action="append", default=[], metavar="TIME:LINK:ACTION",
        help="timeline step: 1.5:path1:cut, 3:path1:restore, 2:path2:set:rate=5,delay=40 "
             "(set changes only the keys given, both directions)")
    parser.add_argument("--seed", default="1", help="experiment seed (integer, default 1)")
    parser.add_argument("--time-limit", default="60",
                        help="stop after this many seconds of virtual time (default 60)")
    parser.add_argument("--no-codec", action="store_true",
                        help="skip the encode/decode of every packet at every hop (faster)")
    parser.add_argument("--series", action="store_true",
                        help="include each subflow's payload bytes per 100 ms bin")
    parser.add_argument("--pcap", metavar="DIR",
                        help="write DIR/<link>.pcap for every link (raw IPv4, virtual time), "
                             "for tshark")
    parser.add_argument("--indent", default="2", help="JSON indentation (0 = one line)")


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if match is None:
        raise UsageError(f"--size: {text!r} is not a byte count such as 200000, 200k or 2M")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower() if match.group(2) else None]


def parse_number(option: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{option}: {text!r} is not {what}") from None
    return value


def parse_path(text: str) -> PathSpec:
    """`SPEC` or `SPEC/SPEC` (upstream/downstream)."""
    upstream_text, _, downstream_text = text.partition("/")
    try:
        upstream = LinkParams.parse(upstream_text)
        downstream = LinkParams.parse(downstream_text, base=upstream) if downstream_text else None
    except SpecError as error:
        raise UsageError(f"--path {text!r}: {error}") from None
    return PathSpec(upstream=upstream, downstream=downstream)


def parse_topology(text: str) -> Topology:
    """A named topology from topologies/, with optional JSON parameters."""
    from topologies import build_topology

    name, _, raw = text.partition(":")
    try:
        params = json.loads(raw) if raw else {}
    except json.JSONDecodeError as error:
        raise UsageError(f"--topology {text!r}: parameters are not JSON ({error})") from None
    if not isinstance(params, dict):
        raise UsageError(f"--topology {text!r}: parameters must be a JSON object")
    try:
        topology = build_topology(name, params).finalize()
        check_simulable(topology)
    except (SpecError, TopologyError) as error:
        raise UsageError(f"--topology {text!r}: {error}") from None
    return topology


def parse_timeline(text: str, path_names: list[str]) -> TimelineStep:
    parts = text.split(":", 3)
    if len(parts) < 3:
        raise UsageError(f"--at {text!r}: expected TIME:PATH:ACTION (cut, restore, set:PARAMS)")
    time = parse_number("--at", parts[0], float)
    if parts[1] not in path_names:
        raise UsageError(f"--at {text!r}: no link {parts[1]!r}; links: {', '.join(path_names)}")
    action = parts[2]
    if action in ("cut", "restore") and len(parts) == 3:
        return TimelineStep(time, parts[1], action)
    if action == "set" and len(parts) == 4:
        try:
            changes = parse_changes(parts[3])
        except SpecError as error:
            raise UsageError(f"--at {text!r}: {error}") from None
        if not changes:
            raise UsageError(f"--at {text!r}: set needs at least one key=value")
        return TimelineStep(time, parts[1], "set", changes)
    raise UsageError(f"--at {text!r}: action must be cut, restore or set:PARAMS")


def parse_strip(text: str, path_names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """strip_options parameters for one --strip value, and the paths it goes on."""
    parts = text.split(":")
    if len(parts) > 4 or not parts[0]:
        raise UsageError(f"--strip {text!r}: expected OPTIONS[:PACKETS[:DIRECTION[:PATHS]]]")
    params: dict[str, Any] = {"what": parts[0].split("+")}
    if len(parts) > 1 and parts[1]:
        params["packets"] = parts[1].split("+")
    if len(parts) > 2 and parts[2]:
        params["direction"] = parts[2]
    paths = parts[3].split("+") if len(parts) > 3 and parts[3] else path_names
    for name in paths:
        if name not in path_names:
            raise UsageError(f"--strip {text!r}: no path {name!r}; paths: {', '.join(path_names)}")
    return params, paths


def build_box(option: str, text: str, name: str, params: dict[str, Any], seed: int,
              component: str) -> Middlebox:
    """A catalogue middlebox with its own random stream; spec errors become usage errors."""
    from middleboxes.registry import build_middlebox
    from middleboxes.spec import MiddleboxSpecError

    try:
        return build_middlebox(name, params, derive_rng(seed, component))
    except MiddleboxSpecError as error:
        raise UsageError(f"{option} {text!r}: {error}") from None


def build_catalogue_box(text: str, seed: int, index: int,
                        path_names: list[str]) -> tuple[str, Middlebox]:
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise UsageError(f"--middlebox {text!r}: expected PATH:NAME[:JSON]")
    if parts[0] not in path_names:
        raise UsageError(f"--middlebox {text!r}: no path {parts[0]!r}; paths: {', '.join(path_names)}")
    try:
        params = json.loads(parts[2]) if len(parts) > 2 else {}
    except json.JSONDecodeError as error:
        raise UsageError(f"--middlebox {text!r}: parameters are not JSON ({error})") from None
    if not isinstance(params, dict):
        raise UsageError(f"--middlebox {text!r}: parameters must be a JSON object")
    return parts[0], build_box("--middlebox", text, parts[1], params, seed,
                               f"middlebox/{index}/{parts[0]}")


def spec_from_args(args: argparse.Namespace) -> TransferSpec:
    """Everything the command line asks for, validated, as a TransferSpec."""
    seed = parse_number("--seed", args.seed, int)
    time_limit = parse_number("--time-limit", args.time_limit, float)
    if not time_limit > 0:
        raise UsageError(f"--time-limit: must be > 0, got {args.time_limit}")
    topology = parse_topology(args.topology) if args.topology else None
    if topology is not None and args.path:
        raise UsageError("--path and --topology exclude each other (a topology has its links)")
    paths = [] if topology is not None else [
        parse_path(text) for text in (args.path or [DEFAULT_PATH, DEFAULT_PATH])]
    if topology is None:
        names = [path_name(i) for i in range(len(paths))]
        link_names = [*names, CORE_LINK]
    else:
        names = [link.name for link, _iface, _peer in topology.l3_interfaces(topology.client)]
        link_names = list(topology.links)
    boxes: dict[str, list[Middlebox]] = {name: [] for name in link_names}
    for index, text in enumerate(args.strip):
        params, on_paths = parse_strip(text, names)
        for name in on_paths:  # one box per path: each keeps its own per-flow state
            boxes[name].append(build_box("--strip", text, "strip_options", params, seed,
                                         f"strip/{index}/{name}"))
    for index, text in enumerate(args.middlebox):
        name, box = build_catalogue_box(text, seed, index,
                                        names if topology is None else link_names)
        boxes[name].append(box)
    if topology is None:
        for name, path in zip(names, paths, strict=True):
            path.middleboxes = boxes[name]
    try:
        client = StackConfig(checksum=args.checksum, congestion_control=args.cc,
                             scheduler=args.scheduler, path_manager=args.path_manager)
        server = StackConfig(checksum=args.checksum, congestion_control=args.cc,
                             scheduler=args.scheduler, path_manager=args.path_manager,
                             mptcp_enabled=not args.server_no_mptcp)
    except ValueError as error:
        raise UsageError(str(error)) from None
    timeline = [parse_timeline(text, link_names) for text in args.at]
    try:
        return TransferSpec(paths=paths, size=parse_size(args.size), seed=seed,
                            client_config=client, server_config=server,
                            codec=not args.no_codec, time_limit=time_limit, timeline=timeline,
                            topology=topology,
                            topology_middleboxes={name: chain for name, chain in boxes.items()
                                                  if chain} if topology is not None else {})
    except ValueError as error:
        raise UsageError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    """Run the transfer and print its JSON summary. Exit status: 0 when the payload arrived
    intact, 1 when it did not (stalled, reset, corrupted), 2 for bad arguments."""
    try:
        spec = spec_from_args(args)
        indent = parse_number("--indent", args.indent, int)
    except UsageError as error:
        print(f"testbed stack sim: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    setup = build_transfer(spec)
    pcap_dir = Path(args.pcap) if args.pcap else None
    with contextlib.ExitStack() as files:
        pcaps: dict[str, str] = {}
        if pcap_dir is not None:
            try:
                pcap_dir.mkdir(parents=True, exist_ok=True)
                for name in setup.network.links:
                    path = pcap_dir / f"{name}.pcap"
                    setup.network.capture(name, link_capture_writer(files.enter_context(path.open("wb"))))
                    pcaps[name] = str(path)
            except OSError as error:
                print(f"testbed stack sim: error: --pcap {args.pcap}: {error}", file=sys.stderr)
                return EXIT_USAGE
        result = finish_transfer(setup)
    summary = result.summary()
    if pcaps:
        summary["pcaps"] = pcaps
    if args.series:
        summary["series"] = {label: [[start, size] for start, size in series]
                             for label, series in series_for(result).items()}
    print(json.dumps(summary, indent=indent or None, sort_keys=False))
    return 0 if result.hash_ok else 1


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; keep it to the one line that names
    the problem (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="python -m testbed.sim",
                                description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
