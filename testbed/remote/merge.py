"""One matrix from the shards' own matrix.json files, written by matrix.py's writers.

Each shard's cells arrive with `dir` relative to that shard's output; here they are re-rooted
under the host's directory (DIR/<host>/cells/<row>/<pairing>) and tagged with the host, and
the merged document is built by `matrix_document` in the spec's cell order, so matrix.json,
matrix.md and matrix.html read exactly as after a local `testbed matrix`, plus a `remote` key
saying which host ran what.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from testbed.matrix import CELLS_DIR, MATRIX_FILE, MatrixSpec, matrix_document
from testbed.remote.shard import Shard


class ShardUnusable(Exception):
    """A shard's files do not hold the cells it was asked for."""


def read_shard(staging: Path, shard: Shard) -> dict[str, Any]:
    """The shard's matrix document, checked: complete, and exactly the shard's cells."""
    path = staging / MATRIX_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ShardUnusable(f"no readable {MATRIX_FILE} in the shard's files: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "matrix" or not isinstance(doc.get("cells"), list):
        raise ShardUnusable(f"{MATRIX_FILE} of the shard is not a matrix document")
    if doc.get("partial"):
        raise ShardUnusable("the shard's matrix is partial (the remote run was interrupted)")
    got = sorted((c.get("row"), c.get("pairing")) for c in doc["cells"])
    if got != sorted(shard.cells):
        raise ShardUnusable(f"the shard holds cells {got}, not {sorted(shard.cells)}")
    return doc


def adopt_shard(staging: Path, host_dir: Path, shard: Shard, doc: dict[str, Any],
                label: str) -> list[dict[str, Any]]:
    """Move the shard's cell directories under DIR/<host>/ and return its records re-rooted
    there; the shard's own matrix.json is kept as DIR/<host>/shards/<shard>.json."""
    records = []
    for cell in doc["cells"]:
        source = staging / CELLS_DIR / cell["row"] / cell["pairing"]
        target = host_dir / CELLS_DIR / cell["row"] / cell["pairing"]
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.move(str(source), str(target))
        else:
            target.mkdir()
        rel = (Path(label) / CELLS_DIR / cell["row"] / cell["pairing"]).as_posix()
        records.append({**cell, "dir": rel, "host": label})
    shards = host_dir / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    (shards / f"{shard.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return records


def merged_document(matrix: MatrixSpec, records: dict[tuple[str, str], dict[str, Any]], *,
                    partial: bool, interrupted: bool, started_at: str, elapsed_s: float,
                    environment: dict[str, Any] | None, remote: dict[str, Any]) -> dict[str, Any]:
    ordered = [records[(c.row.name, c.pairing)] for c in matrix.cells if (c.row.name, c.pairing) in records]
    doc = matrix_document(matrix, ordered, partial=partial, interrupted=interrupted, started_at=started_at,
                          elapsed_s=elapsed_s, environment=environment)
    doc["remote"] = remote
    return doc
