"""The integrity oracle applied to one run: edit logs of the boxes + reports + kept bytes -> Verdict.

The boxes log edits per flow and direction, offsets counted from the flow's first payload
byte. The connection's initial subflow is the flow whose 4-tuple is the client's (a plain TCP
connection would use only that one); in the upload direction its first 24 bytes are the
endpoint request (testbed.endpoints.transfer), not payload, so offsets are shifted by that.
Edits on other flows (MP_JOIN subflows) cannot be placed in the data stream; the verdict
says how many there were.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.endpoints.report import ConnectionRecord
from testbed.endpoints.transfer import REQUEST
from testbed.integrity import Edit, FileStream, OriginalStream, Verdict, judge, judge_by_hash


def logged_edits(middlebox_stats: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Every edit-log entry of every box of every bump, and how many edits overflowed."""
    entries: list[dict[str, Any]] = []
    overflow = 0
    for stats in middlebox_stats.values():
        boxes = stats.get("middleboxes") if isinstance(stats, dict) else None
        for box in boxes or []:
            log = box.get("edit_log") if isinstance(box, dict) else None
            if log:
                entries.extend(log.get("entries", []))
                overflow += int(log.get("overflow", 0))
    return entries, overflow


def _flow_label(src: str, dst: str) -> str:
    return f"{src}>{dst}"


def payload_edits(entries: list[dict[str, Any]],
                  record: ConnectionRecord) -> tuple[list[Edit] | None, list[str]]:
    """The edits of the connection's initial flow in the payload's direction, as payload
    offsets (None when they cannot be placed: the box joined the flow after its SYN); plus
    notes on the edits that could not be placed."""
    upload = record.direction != "download"
    direction = "upstream" if upload else "downstream"
    client = record.client
    wanted = (_flow_label(client.local or "", client.remote or "") if upload
              else _flow_label(client.remote or "", client.local or ""))
    ours = [e for e in entries if e.get("direction") == direction]
    flows = {e["flow"] for e in ours}
    if wanted not in flows and len(flows) == 1:
        wanted = next(iter(flows))  # a NAT before the box changed the client's address
    notes: list[str] = []
    others = [e for e in ours if e["flow"] != wanted]
    if others:
        flows_named = ", ".join(sorted({e["flow"] for e in others}))
        notes.append(f"{len(others)} edit(s) on other flows ({flows_named}): not part of what "
                     "plain TCP would carry, not applied")
    skip = REQUEST.size if upload else 0
    edits = []
    for entry in ours:
        if entry["flow"] != wanted:
            continue
        if not entry.get("from_syn", True):
            notes.append(f"the box joined flow {wanted} after its SYN: offsets unknown")
            return None, notes
        offset = int(entry["offset"]) - skip
        if offset < 0:
            notes.append(f"an edit at flow byte {entry['offset']} changed the endpoint request, "
                         "not the payload")
            continue
        edits.append(Edit(offset, bytes.fromhex(entry["old"]), bytes.fromhex(entry["new"])))
    return edits, notes


def run_verdict(record: ConnectionRecord, middlebox_stats: Mapping[str, Any], payload_seed: int | None,
                received_file: Path | None) -> Verdict:
    """The oracle's verdict on one connection of a run."""
    sender, receiver = ((record.client, record.server) if record.direction != "download"
                        else (record.server, record.client))
    entries, overflow = logged_edits(middlebox_stats)
    placed, notes = payload_edits(entries, record)
    edits = placed or []
    if receiver.bytes == sender.bytes and receiver.sha256 == sender.sha256:
        verdict = Verdict("ok", "original", receiver.bytes, sender.bytes, None, len(edits),
                          description=f"the receiver got exactly the original stream "
                                      f"({receiver.bytes:,} bytes, SHA-256 equal)")
        verdict.evidence.extend(notes)
        return verdict
    seed = sender.seed if sender.seed is not None else payload_seed
    if seed is None:
        return Verdict("unknown", description="payload seed unknown: the sent stream cannot be rebuilt",
                       evidence=notes)
    if placed is None:
        return Verdict("unknown", received_bytes=receiver.bytes, original_bytes=sender.bytes,
                       description="a box edited this flow but joined it after its SYN: the "
                       "box-edited stream cannot be rebuilt", evidence=notes)
    if overflow:
        return Verdict("unknown", received_bytes=receiver.bytes, original_bytes=sender.bytes,
                       edits=len(edits), description=f"the boxes made {overflow} edit(s) beyond their "
                       "edit_log_limit: the box-edited stream cannot be rebuilt", evidence=notes)
    original = OriginalStream(seed, sender.bytes)
    for edit in edits:
        if original.read(edit.offset, len(edit.old)) != edit.old:
            return Verdict("unknown", received_bytes=receiver.bytes, original_bytes=sender.bytes,
                           edits=len(edits), description=f"the edit log does not match the sent stream "
                           f"at byte {edit.offset:,}: the box-edited stream cannot be rebuilt",
                           evidence=notes)
    if received_file is not None and received_file.exists():
        stream = FileStream(received_file)
        try:
            if stream.length != receiver.bytes:
                notes.append(f"the kept file holds {stream.length:,} bytes, the report says "
                             f"{receiver.bytes:,}")
            verdict = judge(stream, original, edits)
        finally:
            stream.close()
    else:
        verdict = judge_by_hash(receiver.bytes, receiver.sha256, original, edits)
    verdict.evidence.extend(notes)
    return verdict
