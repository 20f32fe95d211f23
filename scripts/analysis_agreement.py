"""Does `testbed analyze` agree with the endpoints on every cell of a matrix run?

    .venv/bin/python scripts/analysis_agreement.py MATRIX_OUT_DIR [--json FILE]

For each cell with a capture (`[base.capture] pcap = true`, the client host, headers only),
analyse the capture and compare, per subflow, the bytes the capture shows acknowledged from the
client with the bytes the client endpoint reported in result.json (within 0.1 %, the kernel's
counter also counts SYN and FIN), and print one line per cell and a summary. A cell whose
capture holds no MPTCP connection (a fallback at the SYN) is listed as such, not as a failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TESTBED = [sys.executable, "-m", "testbed.cli"]


def within(ours: int, theirs: int) -> bool:
    return abs(ours - theirs) <= max(2, theirs * 0.001)


def compare_cell(cell: Path, scratch: Path) -> dict[str, Any]:
    """One cell: what the analysis and the endpoints say, and whether they agree."""
    result = json.loads((cell / "result.json").read_text())
    (conn,) = result["connections"]
    row = {"cell": f"{cell.parent.name} x {cell.name}", "outcome": conn["outcome"], "subflows": []}
    out = scratch / f"{cell.parent.name}-{cell.name}"
    done = subprocess.run([*TESTBED, "analyze", str(cell / "capture.pcap"), "--out", str(out),
                           "--quiet", "--no-plots"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        row["status"] = "no-mptcp" if "no MPTCP" in done.stderr else "error"
        row["detail"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        return row
    doc = json.loads((out / "analysis.json").read_text())
    by_client = {s["client"]: s for s in doc["subflows"]}
    agree = True
    for endpoint in conn["subflows"]:
        seen = by_client.get(endpoint["local"])
        ours = seen["directions"][0]["bytes_acked"] if seen else None
        ok = ours is not None and within(ours, endpoint["bytes"])
        agree &= ok
        row["subflows"].append({"local": endpoint["local"], "endpoint": endpoint["bytes"],
                                "analysis": ours, "agree": ok})
    row["status"] = "agree" if agree else "differ"
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("matrix_dir", type=Path)
    parser.add_argument("--json", type=Path, help="write every cell's comparison here")
    args = parser.parse_args(argv)
    cells = sorted(p.parent for p in args.matrix_dir.glob("cells/*/*/capture.pcap")
                   if (p.parent / "result.json").exists())
    if not cells:
        print(f"analysis_agreement: no cell with capture.pcap and result.json under "
              f"{args.matrix_dir}/cells (run the matrix with [base.capture] pcap = true)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="agreement-") as scratch:
        for cell in cells:
            row = compare_cell(cell, Path(scratch))
            rows.append(row)
            figures = ", ".join(f"{s['endpoint']}/{s['analysis']}" for s in row["subflows"])
            print(f"{row['status']:<8} {row['cell']:<55} {row['outcome']:<22} "
                  f"{figures or row.get('detail', '')}")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    subflows = [s for row in rows for s in row["subflows"]]
    print(f"{len(rows)} cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; {sum(s['agree'] for s in subflows)} of {len(subflows)} subflows within 0.1 %")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if counts.get("differ", 0) == 0 and counts.get("error", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
