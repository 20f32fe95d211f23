"""Every middlebox of the catalogue on two_path, Linux kernel MPTCP at both ends, through the
same runner `testbed run` uses; each test checks the outcome class and the evidence behind it.

What is verified, for every run:
* the receiving kernel's TcpInCsumErrors delta is 0 (and the sender's): the boxes keep IPv4 and
  TCP checksums valid, whatever they change;
* the outcome class of testbed.outcome, and the counters that justify it.

Payload integrity is judged by the oracle (testbed.integrity) from the receiver's kept bytes,
the payload seed and the boxes' edit logs: ok, alg-edited (exactly what plain TCP through the
same boxes delivers), truncated (a correct prefix) or corrupted (with where). For the payload
rewriting boxes the tests also check, independently of the oracle, that the receiver's hash is
that of the stream with the ALG's edit applied.

Where Linux 6.18 does not do what RFC 8684 predicts, a test pins down what it does instead
(named after the behaviour) and a strict xfail states the RFC's expectation, so a kernel fix
shows up as an unexpected pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.endpoints.payload import CHUNK_SIZE, PayloadSource

from .conftest import RunSpec

pytestmark = pytest.mark.root


def connection(result: dict[str, Any]) -> dict[str, Any]:
    return result["connections"][0]


def counter(result: dict[str, Any], host: str, name: str) -> int:
    """A counter delta of one namespace; MPTcpExt names may be given without the prefix."""
    key = name if name.startswith("Tcp") else f"MPTcpExt{name}"
    return connection(result)["counters"].get(host, {}).get(key, 0)


def box(result: dict[str, Any], node: str, name: str) -> dict[str, int]:
    """Counters of middlebox `name` in bump `node` (the first one of that name)."""
    boxes = result["middlebox_stats"][node]["middleboxes"]
    return next(entry["counters"] for entry in boxes if entry["name"] == name)


def assert_clean_checksums(result: dict[str, Any]) -> None:
    for host in ("client", "server"):
        assert counter(result, host, "TcpInCsumErrors") == 0, (host, connection(result)["counters"])


def carrying(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in connection(result)["subflows"] if s["bytes"] > 0]


def stream_prefix(seed: int, length: int) -> bytes:
    source = PayloadSource(seed)
    pieces = [bytes(source.chunk(index)) for index in range(length // CHUNK_SIZE + 1)]
    return b"".join(pieces)[:length]


def delivered_is_edited_stream(result: dict[str, Any], pattern: bytes, replacement: bytes) -> bool:
    """The receiver's hash equals that of the stream's prefix with the first `pattern` edited."""
    conn = connection(result)
    data = stream_prefix(result["seed"], conn["bytes"])
    index = data.find(pattern)
    assert index >= 0, "the pattern is not in the delivered prefix"
    edited = data[:index] + replacement + data[index + len(pattern):]
    return hashlib.sha256(edited).hexdigest() == conn["sha256"]["server"]


def assert_mptcp_on_both_paths(result: dict[str, Any]) -> None:
    conn = connection(result)
    assert conn["outcome"] == "mptcp", conn["evidence"]
    assert conn["integrity"] == "ok"
    paths = {s["local"].rsplit(".", 2)[1] for s in carrying(result)}  # 10.0.<1|2>.1:port
    assert paths == {"1", "2"}, conn["subflows"]
    assert counter(result, "server", "MPJoinAckRx") >= 1
    assert result["expectations"]["passed"], result["expectations"]


# --- harmless boxes -------------------------------------------------------------------------

def test_nat_is_harmless_two_subflows_carry_data(run_spec: RunSpec) -> None:
    result = run_spec("nat")
    assert box(result, "mb_a", "nat")["changed"] > 1000
    assert_mptcp_on_both_paths(result)
    assert_clean_checksums(result)


def test_rewrite_seq_is_harmless_two_subflows_carry_data(run_spec: RunSpec) -> None:
    result = run_spec("rewrite_seq")
    for node in ("mb_a", "mb_b"):
        assert box(result, node, "rewrite_seq")["changed"] > 1000
    assert_mptcp_on_both_paths(result)
    assert_clean_checksums(result)


def test_split_tso_keeps_data_intact(run_spec: RunSpec) -> None:
    result = run_spec("split_tso")
    assert box(result, "mb_a", "split")["injected"] > 1000
    assert_mptcp_on_both_paths(result)
    assert_clean_checksums(result)


def test_delayed_join_ack_still_gives_two_subflows(run_spec: RunSpec) -> None:
    result = run_spec("delay_mp_join_ack")
    assert box(result, "mb_b", "delay")["changed"] >= 1
    assert_mptcp_on_both_paths(result)
    assert_clean_checksums(result)


def test_lost_join_ack_is_retransmitted(run_spec: RunSpec) -> None:
    result = run_spec("drop_mp_join_ack")
    assert box(result, "mb_b", "drop")["dropped"] == 1
    assert_mptcp_on_both_paths(result)
    assert_clean_checksums(result)


# --- fallbacks and refused subflows ---------------------------------------------------------

def test_mp_capable_stripped_from_syn_gives_plain_tcp(run_spec: RunSpec) -> None:
    result = run_spec("strip_mp_capable_syn")
    conn = connection(result)
    assert conn["outcome"] == "fallback-syn", conn["evidence"]
    assert counter(result, "client", "MPCapableFallbackSYNACK") == 1
    assert counter(result, "server", "MPCapableSYNRX") == 0  # the server saw a plain SYN
    assert any("MPCapableFallbackSYNACK" in line for line in conn["evidence"])
    assert not conn["mptcp"] and conn["integrity"] == "ok"
    assert result["expectations"]["passed"], result["expectations"]
    assert_clean_checksums(result)


def test_syn_firewall_drops_mptcp_syns_then_plain_tcp(run_spec: RunSpec) -> None:
    result = run_spec("syn_firewall")
    conn = connection(result)
    assert conn["outcome"] == "fallback-syn", conn["evidence"]
    assert box(result, "mb_a", "syn_firewall")["dropped"] >= 2
    assert counter(result, "client", "MPCapableSYNTXDrop") == 1
    assert any("MPCapableSYNTXDrop" in line for line in conn["evidence"])
    assert conn["integrity"] == "ok"
    assert result["expectations"]["passed"], result["expectations"]
    assert_clean_checksums(result)


def test_mp_join_stripped_refuses_that_subflow(run_spec: RunSpec) -> None:
    result = run_spec("strip_mp_join")
    conn = connection(result)
    assert conn["outcome"] == "subflow-rejected", conn["evidence"]
    assert counter(result, "client", "MPJoinSynTx") >= 1
    assert counter(result, "server", "MPJoinSynRx") == 0  # the join arrived as a plain SYN
    assert counter(result, "client", "MPRstTx") >= 1  # the client reset the odd subflow
    assert [s["local"].startswith("10.0.1.") for s in carrying(result)] == [True]
    assert conn["mptcp"] and conn["integrity"] == "ok"
    assert result["expectations"]["passed"], result["expectations"]
    assert_clean_checksums(result)


def test_dss_stripped_falls_back_after_the_handshake(run_spec: RunSpec) -> None:
    """RFC 8684 §3.7: MP_CAPABLE handshake done, DSS lost -> fall back (an implicit infinite
    mapping). Linux has no infinite-mapping counter for this case; it counts the fallbacks:
    the server gets data without a mapping (DssFallback), the client a first reply without a
    DSS (MPCapableDataFallback)."""
    result = run_spec("strip_dss_all")
    conn = connection(result)
    assert conn["outcome"] == "fallback-infinite-map", conn["evidence"]
    assert counter(result, "server", "MPCapableACKRX") == 1  # MPTCP was negotiated
    assert counter(result, "server", "DssFallback") + counter(result, "client",
                                                               "MPCapableDataFallback") >= 1
    assert not conn["mptcp"] and conn["integrity"] == "ok"
    assert result["expectations"]["passed"], result["expectations"]
    assert_clean_checksums(result)


# --- payload edits --------------------------------------------------------------------------

def verdict(result: dict[str, Any]) -> dict[str, Any]:
    return connection(result)["integrity_verdict"]


def test_payload_rewrite_without_checksum_is_delivered_as_tcp_would(run_spec: RunSpec) -> None:
    """No DSS checksum, one subflow: MPTCP cannot notice the ALG's edit, and the application
    gets exactly what plain TCP through the box delivers -- the oracle's alg-edited, not
    corruption."""
    result = run_spec("rewrite_payload")
    conn = connection(result)
    assert (conn["outcome"], conn["integrity"]) == ("mptcp", "alg-edited"), conn["evidence"]
    assert conn["mptcp"]  # nothing at the MPTCP level noticed
    for name in ("DataCsumErr", "MPFailTx", "MPFailRx"):
        assert counter(result, "server", name) == counter(result, "client", name) == 0
    assert conn["sha256"]["client"] != conn["sha256"]["server"]
    assert delivered_is_edited_stream(result, b"A", b"B")  # checked independently of the oracle
    [edit] = result["middlebox_stats"]["mb_a"]["middleboxes"][0]["edit_log"]["entries"]
    assert (edit["old"], edit["new"], edit["direction"]) == (b"A".hex(), b"B".hex(), "upstream")
    assert verdict(result)["reference"] == "box-edited" and verdict(result)["edits"] == 1
    assert result["expectations"]["passed"], result["expectations"]
    assert_clean_checksums(result)


def test_checksum_failure_in_first_mapping_linux_falls_back_and_delivers_it(
        run_spec: RunSpec) -> None:
    """The edit is at stream offset 74, inside the first mapping: Linux counts the checksum
    error and falls back to TCP (its deliberate 'early failure' fallback), delivering the
    edited bytes as TCP would (RFC 8684 §3.7); the transfer then stalls, so the application
    has a correct prefix of the box-edited stream. I/O timeout shortened to 4 s."""
    result = run_spec("rewrite_payload_dss_checksum", timeout_s=4.0)
    conn = connection(result)
    assert counter(result, "server", "DataCsumErr") >= 1
    assert (conn["outcome"], conn["integrity"]) == ("mp-fail", "truncated"), conn["evidence"]
    assert verdict(result)["reference"] == "box-edited"
    assert any("DataCsumErr" in line for line in conn["evidence"])
    assert delivered_is_edited_stream(result, b"A", b"B")
    assert_clean_checksums(result)


def test_checksum_failure_later_mp_fail_then_linux_delivers_it(run_spec: RunSpec) -> None:
    """The edit is half a megabyte in: MP_FAIL is exchanged both ways and the client sends an
    infinite mapping, as RFC 8684 §3.7 says, and the server application receives the edited
    bytes as plain TCP would (its hash equals the edited stream's) -- then nothing more."""
    result = run_spec("rewrite_payload_dss_checksum_late")
    conn = connection(result)
    assert counter(result, "server", "DataCsumErr") >= 1
    assert counter(result, "server", "MPFailTx") >= 1
    assert counter(result, "client", "MPFailRx") >= 1
    assert counter(result, "client", "InfiniteMapTx") >= 1
    assert (conn["outcome"], conn["integrity"]) == ("mp-fail", "truncated"), conn["evidence"]
    assert verdict(result)["reference"] == "box-edited"
    assert any("MPFailTx" in line for line in conn["evidence"])
    assert conn["bytes"] < 2_000_000  # stalled after the failed mapping
    assert delivered_is_edited_stream(result, b"GNb", b"GNc")
    assert result["expectations"]["passed"], result["expectations"]
    assert_clean_checksums(result)


@pytest.mark.xfail(strict=True, reason="Linux 6.18 stalls after the checksum failure and the "
                   "infinite mapping (see the two tests above); RFC 8684 §3.7 has the connection "
                   "go on as plain TCP, delivering the whole stream as the ALG left it")
@pytest.mark.parametrize("stem", ["rewrite_payload_dss_checksum",
                                  "rewrite_payload_dss_checksum_late"])
def test_rfc_checksum_failure_then_plain_tcp_to_the_end(run_spec: RunSpec, stem: str) -> None:
    timeout = 4.0 if stem == "rewrite_payload_dss_checksum" else None
    conn = connection(run_spec(stem, timeout_s=timeout))
    assert conn["integrity"] == "alg-edited"


# --- coalescing ---------------------------------------------------------------------------

COALESCE_ATTEMPTS = 6


def coalesced_runs(run_spec: RunSpec) -> Iterator[dict[str, Any]]:
    """coalesce_boundary runs in which the box merged segments: that needs two short segments
    in a row on a subflow (the end of one mapping, the start of the next), which happens in
    most runs but not all. Runs are cached, so both tests below read the same ones."""
    for attempt in range(COALESCE_ATTEMPTS):
        result = run_spec("coalesce_boundary", attempt=attempt)
        merged = sum(box(result, node, "coalesce")["changed"] for node in ("mb_a", "mb_b"))
        if merged >= 2:
            yield result


def first_corrupted_run(run_spec: RunSpec) -> dict[str, Any] | None:
    """The first merged run whose stream arrived corrupted. Linux 6.18 resets the subflow in
    every merged run but corrupts the stream in most, not all (6 of 7 in docs/findings.md; CI
    saw a reset with intact data), so the finding is "some run of six", never "this run"."""
    triggered = 0
    for result in coalesced_runs(run_spec):
        triggered += 1
        conn = connection(result)
        assert counter(result, "server", "DSSCorruptionReset") >= 1, conn["counters"]
        assert counter(result, "client", "MPRstRx") >= 1
        if conn["integrity"] == "corrupted":
            return result
    if triggered == 0:
        pytest.skip(f"no two short segments met the coalescer in {COALESCE_ATTEMPTS} runs "
                    "(scenario not exercised)")
    return None


def test_coalescing_across_mapping_boundaries_linux_resets_and_corrupts(run_spec: RunSpec) -> None:
    """A merge of a mapping's short last segment with the next mapping's first one, under the
    first DSS only: Linux resets that subflow (DSSCorruptionReset, MP_TCPRST) and re-sends its
    data on the other, yet the application gets bytes skipped or out of place: corrupted (no box
    edits payload here, so there is no ALG edit to confuse it with), with where it starts. The
    connection then goes on (mptcp, or subflow-rejected when the reset came early) or stalls."""
    result = first_corrupted_run(run_spec)
    assert result is not None, f"every merged run of {COALESCE_ATTEMPTS} kept the data intact"
    conn = connection(result)
    assert conn["outcome"] in ("mptcp", "subflow-rejected", "stalled"), conn["evidence"]
    assert verdict(result)["first_difference"] is not None and verdict(result)["edits"] == 0
    assert result["expectations"]["passed"], result["expectations"]
    assert_clean_checksums(result)


@pytest.mark.xfail(strict=True, reason="Linux 6.18 delivers corrupted data after resetting a "
                   "subflow whose merged segment outran its DSS mapping (in most such runs)")
def test_rfc_coalescing_keeps_data_intact(run_spec: RunSpec) -> None:
    assert first_corrupted_run(run_spec) is None
