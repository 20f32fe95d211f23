"""`testbed analyze CAPTURE [--out DIR]`: everything a capture says about its MPTCP connections.

Reads the capture once (testbed.analyze.capture), reconstructs connections and subflows
(testbed.analyze.analyzer), writes analysis.json, CSV series, PNG plots and an HTML page
(testbed.analyze.output, .plots) and prints a short summary. Exit 2 with one line when nothing
could be analysed: not a capture, no packet, no TCP, no MPTCP option at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testbed.analyze.analyzer import Analysis
from testbed.analyze.capture import CaptureError, CaptureReader, open_capture
from testbed.analyze.output import text_summary, write_outputs
from testbed.errors import SpecError
from testbed.progress import ProgressBar, format_bytes

PROGRESS_MIN_BYTES = 64 << 20  # captures smaller than this are read without a progress bar
PROGRESS_EVERY_PACKETS = 65536


def _until(packets: Iterator[tuple[float, bytes, int, int]], until_s: float,
           kept: list[int]) -> Iterator[tuple[float, bytes, int, int]]:
    """The packets up to `until_s` seconds after the first one (the capture's own order),
    counted in kept[0]."""
    stop: float | None = None
    for item in packets:
        if stop is None:
            stop = item[0] + until_s
        elif item[0] > stop:
            return
        kept[0] += 1
        yield item


def analyse_capture(path: Path, *, bin_s: float = 0.1, timeout_s: float = 60.0,
                    progress: bool = True, until_s: float | None = None,
                    ) -> tuple[Analysis, CaptureReader, list[str]]:
    """One pass over the capture (or its first `until_s` seconds); returns the analysis, the
    reader (for its counts) and notes for the user. CaptureError when nothing could be
    analysed."""
    reader = open_capture(path)
    analysis = Analysis(bin_s=bin_s, timeout_s=timeout_s)
    bar = None
    if progress and reader.size >= PROGRESS_MIN_BYTES:
        bar = ProgressBar(reader.size, label="analyze",
                          count_format=lambda done, total: f"{format_bytes(done)}/{format_bytes(total)}")
    packet = analysis.packet
    packets: Iterator[tuple[float, bytes, int, int]] = iter(reader)
    kept = [0]
    if until_s is not None:
        packets = _until(packets, until_s, kept)
    try:
        if bar is None:
            for ts, frame, offset, version in packets:
                packet(ts, frame, offset, version)
        else:
            for count, (ts, frame, offset, version) in enumerate(packets, start=1):
                packet(ts, frame, offset, version)
                if count % PROGRESS_EVERY_PACKETS == 0:
                    bar.update(reader.bytes_read, note=f"{count} packets")
    finally:
        if bar is not None:
            bar.finish()
    analysis.finish()
    notes = []
    if until_s is not None:
        reader.packets = kept[0]  # the packets analysed, not the ones read past the end
        notes.append(f"analysed the first {until_s:g} s of the capture only (--until-s)")
    return analysis, reader, notes + _notes(analysis, reader, path)


def _notes(analysis: Analysis, reader: CaptureReader, path: Path) -> list[str]:
    counts = analysis.counts
    notes = []
    if reader.truncated:
        notes.append(f"the capture is truncated ({reader.truncated}): analysed what came before")
    if reader.packets == 0:
        where = f" ({reader.truncated})" if reader.truncated else ""
        raise CaptureError(f"{path}: a capture without any packet{where}")
    if analysis.tcp_packets == 0:
        raise CaptureError(f"{path}: no TCP packet among {reader.packets} packets "
                           f"({reader.non_ip} not IP, {counts['not_tcp']} IP but not TCP, "
                           f"{counts['fragments']} fragments): nothing to analyse")
    if not analysis.connections:
        raise CaptureError(f"{path}: no MPTCP option in {analysis.tcp_packets} TCP packets of "
                           f"{len(analysis.subflows)} TCP connection(s): plain TCP, nothing for an "
                           "MPTCP analysis (tshark -z conv,tcp summarises TCP)")
    if any(c.version == 0 for c in analysis.connections):
        count = sum(1 for c in analysis.connections if c.version == 0)
        notes.append(f"{count} connection(s) use MPTCP v0 (RFC 6824), which this tool does not "
                     "decode: analysed at the TCP level only")
    if counts["payload_cut"]:
        notes.append(f"the snap length ({reader.snaplen}) cut the payload of {counts['payload_cut']} "
                     "segments: their DSS checksums are not verifiable")
    if counts["headers_cut"]:
        notes.append(f"{counts['headers_cut']} packets had their TCP header or options cut by the "
                     "snap length: counted, options not read")
    if counts["malformed"]:
        notes.append(f"{counts['malformed']} packets had malformed headers or options, e.g. "
                     f"{analysis.malformed_examples[0]}")
    missing = [(s.index, d.bytes_not_captured) for s in analysis.subflows for d in s.dirs
               if d.bytes_not_captured]
    if missing:
        notes.append(f"the capture misses {sum(m for _, m in missing)} bytes of sequence space on "
                     f"subflow(s) {sorted({i for i, _ in missing})} (dropped by the capture, or "
                     "sent before it started): byte counts come from the ACKs, data-level "
                     "figures cover what was captured")
    no_handshake = [c.index for c in analysis.connections if c.version == 1 and None in c.keys
                    and c.fallback is None]
    if no_handshake:
        notes.append(f"connection(s) {no_handshake}: keys not in the capture (handshake missed): "
                     "DSNs are relative to the first one seen, join HMACs not checked")
    return notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", type=Path, help="a pcap or pcapng file (tcpdump, tshark, the testbed)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: CAPTURE's name + .analysis, beside it)")
    parser.add_argument("--bin-s", type=float, default=0.1,
                        help="width of the time bins of every series, seconds (default 0.1)")
    parser.add_argument("--timeout-s", type=float, default=60.0,
                        help="a subflow silent this long before the capture ends ended by timeout")
    parser.add_argument("--until-s", type=float, default=None,
                        help="analyse only the packets of the first UNTIL_S seconds of the capture")
    parser.add_argument("--no-plots", action="store_true", help="write analysis.json and CSVs only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")


def run(args: argparse.Namespace) -> int:
    if not args.bin_s > 0:
        raise SpecError(f"--bin-s must be positive, got {args.bin_s}")
    if not args.timeout_s > 0:
        raise SpecError(f"--timeout-s must be positive, got {args.timeout_s}")
    if args.until_s is not None and not args.until_s >= 0:
        raise SpecError(f"--until-s must be 0 or more seconds, got {args.until_s}")
    out = args.out or args.capture.with_name(args.capture.name + ".analysis")
    started = time.monotonic()
    analysis, reader, notes = analyse_capture(args.capture, bin_s=args.bin_s,
                                              timeout_s=args.timeout_s, progress=not args.quiet,
                                              until_s=args.until_s)
    elapsed = time.monotonic() - started
    doc: dict[str, Any] = write_outputs(analysis, reader, out, notes)
    if not args.no_plots:
        from testbed.analyze.plots import render_all

        render_all(out)
    if not args.quiet:
        print(text_summary(doc))
        rate = reader.packets / elapsed if elapsed > 0 else 0.0
        print(f"analysed {reader.packets} packets in {elapsed:.2f} s ({rate:,.0f} packets/s); "
              f"wrote {out}/analysis.json" + ("" if args.no_plots else " and analysis.html"),
              file=sys.stderr)
    return 0
