"""A matrix document as JUnit XML, for CI: one test case per cell, judged against the matrix's
own expectations (`testbed matrix --junit`, `testbed remote run --junit`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from testbed.report.tables import cell_text


def matrix_junit(doc: dict[str, Any]) -> bytes:
    """JUnit XML of a matrix against its own expectations: a failure per differing or failed
    cell, a skipped case per cell not run (after Ctrl-C)."""
    cells = {(c["row"], c["pairing"]): c for c in doc["cells"]}
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", name=f"matrix {doc['name']}")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for row in doc["rows"]:
        for pairing in doc["pairings"]:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"matrix.{doc['name']}",
                                 name=f"{row['name']} \u00d7 {pairing}")
            cell = cells.get((row["name"], pairing))
            if cell is None:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message="not run")
            elif cell.get("status") == "error" or cell.get("as_expected") is False:
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", type="differs",
                                        message=f"{cell_text(cell)} (expected {cell.get('expected')})")
                failure.text = "\n".join(str(e) for e in [*(cell.get("evidence") or []),
                                                           *(cell.get("wire") or [])])
    for key, value in counts.items():
        suite.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
