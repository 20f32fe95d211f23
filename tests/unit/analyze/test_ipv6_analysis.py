"""IPv6 captures: the hand-made two-path conversation re-encoded as IPv6 (some packets behind
hop-by-hop, destination-options and routing headers) must analyse exactly as the IPv4 original,
addresses aside; fragments and non-TCP payloads are counted, never analysed or fatal."""

from __future__ import annotations

from pathlib import Path

from testbed.analyze.command import analyse_capture
from testbed.analyze.output import write_outputs
from testbed.wire import decode_packet
from testbed.wire.ipv6 import (
    NEXT_HEADER_DESTINATION_OPTIONS,
    NEXT_HEADER_FRAGMENT,
    NEXT_HEADER_HOP_BY_HOP,
    NEXT_HEADER_ROUTING,
    Ipv6Extension,
    Ipv6Packet,
    encode_packet_v6,
)
from testbed.wire.pcap import write_pcap
from tests.unit.analyze.builder import two_path_transfer

LINKTYPE_IPV6 = 229
PADDING = bytes([0, 0, 1, 4, 0, 0, 0, 0])  # next header (rewritten), length 0, PadN of 4
ROUTING = bytes([0, 0, 0, 0, 0, 0, 0, 0])  # type 0, segments left 0: nothing to reroute


def v6_address(v4: str) -> str:
    return "fd00:" + ":".join(v4.split(".")) + "::1"


def as_ipv6(raw: bytes, index: int) -> bytes:
    packet = decode_packet(raw)
    extensions: tuple[Ipv6Extension, ...] = ()
    if index % 3 == 1:
        extensions = (Ipv6Extension(NEXT_HEADER_HOP_BY_HOP, PADDING),
                      Ipv6Extension(NEXT_HEADER_DESTINATION_OPTIONS, PADDING))
    elif index % 3 == 2:
        extensions = (Ipv6Extension(NEXT_HEADER_ROUTING, ROUTING),)
    return encode_packet_v6(Ipv6Packet(v6_address(packet.src), v6_address(packet.dst), packet.tcp,
                                       extensions=extensions))


def summaries(path: Path, out: Path) -> dict:
    analysis, reader, notes = analyse_capture(path, progress=False)
    return {"notes": notes, "doc": write_outputs(analysis, reader, out, notes)}


def test_an_ipv6_capture_analyses_as_its_ipv4_original(tmp_path: Path) -> None:
    conversation = two_path_transfer(segments=30, size=1200)
    v4 = conversation.write(tmp_path / "v4.pcap")
    v6 = tmp_path / "v6.pcap"
    write_pcap(v6, [(ts, as_ipv6(raw, i)) for i, (ts, raw) in enumerate(conversation.packets)],
               LINKTYPE_IPV6)
    four, six = summaries(v4, tmp_path / "out4"), summaries(v6, tmp_path / "out6")
    assert four["notes"] == six["notes"] == []
    for doc in (four["doc"], six["doc"]):
        doc.pop("capture", None)
    assert six["doc"] == bracketed(four["doc"])
    connection = six["doc"]["connections"][0]
    assert connection["client"].startswith("[fd00:10:0:1:1::1]:")
    assert connection["server"] == "[fd00:10:0:100:2::1]:5201"


def bracketed(value: object) -> object:
    """`value` with every "a.b.c.d:port" of the IPv4 capture as the IPv6 one writes it."""
    if isinstance(value, dict):
        return {k: bracketed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [bracketed(v) for v in value]
    if isinstance(value, str) and value.count(".") == 3 and ":" in value:
        address, port = value.rsplit(":", 1)
        return f"[{v6_address(address)}]:{port}"
    return value


def test_ipv6_fragments_and_other_payloads_are_counted(tmp_path: Path) -> None:
    conversation = two_path_transfer(segments=4, size=500)
    frames = [as_ipv6(raw, 0) for _, raw in conversation.packets]
    fragment = bytearray(frames[5])
    fragment[6] = NEXT_HEADER_FRAGMENT  # the TCP header now follows a fragment header's place
    udp = bytearray(frames[6])
    udp[6] = 17
    cut = frames[7][:50]
    lying = bytearray(frames[8])
    lying[4:6] = (8).to_bytes(2, "big")  # payload length shorter than the TCP header
    frames[5:9] = [bytes(fragment), bytes(udp), cut, bytes(lying)]
    path = tmp_path / "odd.pcap"
    write_pcap(path, [(1000.0 + i * 0.001, f) for i, f in enumerate(frames)], LINKTYPE_IPV6)
    analysis, _reader, notes = analyse_capture(path, progress=False)
    counts = analysis.counts
    assert (counts["fragments"], counts["not_tcp"], counts["headers_cut"]) == (1, 1, 1)
    assert counts["malformed"] == 1 and any("malformed" in note for note in notes)
    assert len(analysis.connections) == 1
