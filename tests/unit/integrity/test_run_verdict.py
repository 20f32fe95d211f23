"""The oracle applied to a run: which logged edits belong to the connection's stream, where
its payload starts, and the verdict from the kept bytes (or from the hash alone)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from testbed.endpoints.transfer import REQUEST
from testbed.integrity import OriginalStream
from testbed.integrity_run import payload_edits, run_verdict

SEED = 3
SENT = 400_000
CLIENT, SERVER = "10.0.1.1:40000", "10.0.100.2:5201"


def end(role: str, data: bytes, sha: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(role=role, bytes=len(data), sha256=sha or hashlib.sha256(data).hexdigest(),
                           seed=SEED if role == "client" else None,
                           local=CLIENT if role == "client" else SERVER,
                           remote=SERVER if role == "client" else CLIENT)


def record(received: bytes, sent: bytes) -> Any:
    return SimpleNamespace(direction="upload", client=end("client", sent), server=end("server", received))


def stats(*entries: dict[str, Any], overflow: int = 0) -> dict[str, Any]:
    return {"mb_a": {"middleboxes": [{"name": "rewrite_payload",
                                      "edit_log": {"entries": list(entries), "overflow": overflow}}]}}


def entry(flow_offset: int, old: bytes, new: bytes, flow: str = f"{CLIENT}>{SERVER}",
          direction: str = "upstream", from_syn: bool = True) -> dict[str, Any]:
    return {"flow": flow, "direction": direction, "offset": flow_offset, "old": old.hex(),
            "new": new.hex(), "shift": len(new) - len(old), "from_syn": from_syn}


def sent_stream() -> bytes:
    return OriginalStream(SEED, SENT).read(0, SENT)


def test_upload_edits_skip_the_endpoint_request_and_other_flows() -> None:
    sent = sent_stream()
    entries = [entry(REQUEST.size + 100, sent[100:101], b"Z"),
               entry(5, b"x", b"y"),  # inside the 24-byte request
               entry(REQUEST.size + 7, sent[7:8], b"Q", flow=f"10.0.2.1:40001>{SERVER}"),
               entry(3, b"a", b"b", direction="downstream")]
    edits, notes = payload_edits(entries, record(sent, sent))
    assert [(e.offset, e.new) for e in edits] == [(100, b"Z")]
    assert any("changed the endpoint request" in n for n in notes)
    assert any("1 edit(s) on other flows (10.0.2.1:40001>10.0.100.2:5201)" in n for n in notes)


def test_a_nat_before_the_box_still_finds_the_only_flow() -> None:
    sent = sent_stream()
    edits, _ = payload_edits([entry(REQUEST.size + 9, sent[9:10], b"!", flow="192.0.2.7:1>x:2")],
                             record(sent, sent))
    assert [e.offset for e in edits] == [9]


def test_verdict_from_the_kept_file_and_from_the_hash(tmp_path: Path) -> None:
    sent = sent_stream()
    edited = sent[:100] + b"Z" + sent[101:]
    log = stats(entry(REQUEST.size + 100, sent[100:101], b"Z"))
    kept = tmp_path / "server.received.bin"
    kept.write_bytes(edited)
    assert run_verdict(record(edited, sent), log, SEED, kept).integrity == "alg-edited"
    assert run_verdict(record(edited, sent), log, SEED, None).integrity == "alg-edited"  # by hash
    repeated = edited[:300_000] + edited[200_000:]
    kept.write_bytes(repeated)
    verdict = run_verdict(record(repeated, sent), log, SEED, kept)
    assert (verdict.integrity, verdict.first_difference) == ("corrupted", 300_000)
    assert "a repeat of 100,000 bytes" in verdict.description


def test_what_the_oracle_cannot_know_is_unknown(tmp_path: Path) -> None:
    sent = sent_stream()
    edited = sent[:100] + b"Z" + sent[101:]
    overflowed = stats(entry(REQUEST.size + 100, sent[100:101], b"Z"), overflow=4)
    assert run_verdict(record(edited, sent), overflowed, SEED, None).integrity == "unknown"
    wrong_old = stats(entry(REQUEST.size + 100, b"not there", b"Z"))
    verdict = run_verdict(record(edited, sent), wrong_old, SEED, None)
    assert verdict.integrity == "unknown" and "does not match the sent stream" in verdict.description
    joined_late = stats(entry(100, sent[100:101], b"Z", from_syn=False))
    verdict = run_verdict(record(edited, sent), joined_late, SEED, None)
    assert verdict.integrity == "unknown" and "after its SYN" in verdict.description
    assert run_verdict(record(sent, sent), joined_late, SEED, None).integrity == "ok"
