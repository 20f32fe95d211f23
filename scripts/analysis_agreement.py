"""Does `testbed analyze` agree with the endpoints, the kernels' counters and tshark?

    .venv/bin/python scripts/analysis_agreement.py DIR... [--tshark] [--json FILE]

Each DIR is a run directory (`testbed run` with `[capture] pcap = true`) or a matrix output
directory (every cell with a capture). Per capture, testbed.analyze.agreement compares the
bytes per subflow with the sender's counters at its last sample, the total with what the
receiver read, the reinjected bytes with the MPTcpExt counters and, with --tshark, the analysis
with tshark's MPTCP analysis of the same file. One line per capture, the checks that do not
agree below it, and a summary; exit 1 if any check differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from testbed.analyze.agreement import compare_run, summarise


def run_dirs(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        if (root / "capture.pcap").exists():
            found.append(root)
        found.extend(sorted(p.parent for p in root.glob("cells/*/*/capture.pcap")
                            if (p.parent / "result.json").exists()))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="run or matrix output directories")
    parser.add_argument("--tshark", action="store_true",
                        help="also compare with tshark's MPTCP analysis (slow on big captures)")
    parser.add_argument("--json", type=Path, help="write every capture's checks here")
    args = parser.parse_args(argv)
    dirs = run_dirs(args.dirs)
    if not dirs:
        print("analysis_agreement: no capture.pcap with a result.json under "
              f"{', '.join(map(str, args.dirs))} (run with [capture] pcap = true)", file=sys.stderr)
        return 2
    rows = []
    for directory in dirs:
        row = compare_run(directory, tshark=args.tshark)
        row["dir"] = str(directory)
        rows.append(row)
        verdicts = [c["verdict"] for c in row["checks"]]
        name = f"{directory.parent.name}/{directory.name}"
        print(f"{'agree' if row['agree'] else 'DIFFER':<7} {name:<52} {row['outcome']:<22} "
              f"{verdicts.count('agree')} agree, {verdicts.count('n/a')} n/a, "
              f"{verdicts.count('differ')} differ")
        for check in row["checks"]:
            if check["verdict"] != "agree":
                print(f"        {check['verdict']:<6} {check['name']}: ours {check['ours']}, "
                      f"theirs {check['theirs']} ({check['rule']})")
    counts = summarise(rows)
    print(f"{len(rows)} captures, {sum(r['agree'] for r in rows)} agree on every check; checks: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if counts.get("differ", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
