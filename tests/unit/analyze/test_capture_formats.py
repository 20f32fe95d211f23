"""The same packets in every file format and link type give the same analysis; bad files give
one line and exit 2 (through the CLI), never a traceback."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from testbed.analyze.capture import CaptureError, open_capture
from testbed.analyze.command import analyse_capture
from testbed.cli import main
from tests.unit.analyze.builder import two_path_transfer

ETHERNET_IPV4 = bytes(6) + bytes.fromhex("020000000001") + b"\x08\x00"
ETHERNET_VLAN = bytes(6) + bytes.fromhex("020000000001") + b"\x81\x00\x00\x05\x08\x00"
SLL = struct.pack("!HHH8sH", 0, 1, 6, bytes(8), 0x0800)
SLL2 = struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes(8))


def pcap(records: list[tuple[float, bytes]], linktype: int, *, order: str = "<",
         nanoseconds: bool = False) -> bytes:
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ts, frame in records:
        seconds = int(ts)
        fraction = round((ts - seconds) * (1e9 if nanoseconds else 1e6))
        out.append(struct.pack(order + "IIII", seconds, fraction, len(frame), len(frame)) + frame)
    return b"".join(out)


def pcapng(records: list[tuple[float, bytes]], linktype: int, *, order: str = "<") -> bytes:
    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        length = len(body) + 12
        return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)

    out = [block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    tsresol = struct.pack(order + "HH", 9, 1) + b"\x09" + bytes(3) + struct.pack(order + "HH", 0, 0)
    out.append(block(1, struct.pack(order + "HHI", linktype, 0, 0) + tsresol))  # nanoseconds
    out.append(block(5, b"statistics block, skipped"))
    for ts, frame in records:
        ticks = round(ts * 1e9)
        out.append(block(6, struct.pack(order + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                        len(frame), len(frame)) + frame))
    return b"".join(out)


def totals(path: Path) -> tuple:
    analysis, _reader, _notes = analyse_capture(path, progress=False)
    connection = analysis.connections[0]
    return (round(analysis.last_ts - analysis.first_ts, 6), connection.data[0].summary()["data_acked"],
            [s.dirs[0].bytes_acked for s in connection.subflows], connection.keys)


@pytest.mark.parametrize("form, linktype, prefix, options", [
    ("pcap", 228, b"", {}),
    ("pcap", 101, b"", {"order": ">"}),
    ("pcap", 1, ETHERNET_IPV4, {"nanoseconds": True}),
    ("pcap", 1, ETHERNET_VLAN, {}),
    ("pcap", 113, SLL, {}),
    ("pcap", 276, SLL2, {}),
    ("pcapng", 113, SLL, {}),
    ("pcapng", 1, ETHERNET_IPV4, {"order": ">"}),
    ("pcapng", 276, SLL2, {}),
])
def test_every_format_and_link_type_gives_the_same_analysis(tmp_path: Path, form, linktype, prefix,
                                                             options) -> None:
    records = two_path_transfer(segments=6, size=700).packets
    reference = tmp_path / "reference.pcap"
    reference.write_bytes(pcap(records, 228))
    framed = [(ts, prefix + raw) for ts, raw in records]
    target = tmp_path / f"capture.{form}"
    target.write_bytes((pcap if form == "pcap" else pcapng)(framed, linktype, **options))
    assert totals(target) == totals(reference)
    assert totals(reference)[1:3] == (4200, [2100, 2100])


def test_truncated_capture_is_analysed_up_to_the_damage(tmp_path: Path) -> None:
    data = pcap(two_path_transfer(segments=6, size=700).packets, 228)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-30])
    analysis, reader, notes = analyse_capture(path, progress=False)
    assert reader.truncated and "truncated" in notes[0]
    assert analysis.connections[0].subflows[0].dirs[0].bytes_acked == 2100


def test_non_ip_frames_are_skipped(tmp_path: Path) -> None:
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    records = [(1.0, arp)] + [(ts, ETHERNET_IPV4 + raw) for ts, raw in
                               two_path_transfer(segments=2).packets]
    path = tmp_path / "arp.pcap"
    path.write_bytes(pcap(records, 1))
    analysis, reader, _ = analyse_capture(path, progress=False)
    assert reader.non_ip == 1 and analysis.connections


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a capture\n")
    with pytest.raises(CaptureError, match="not a pcap or pcapng capture"):
        open_capture(path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"hello world, not a capture", "not a pcap or pcapng"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), "without any packet"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
     + struct.pack("<IIII", 1, 0, 42, 42) + bytes(42), "no TCP packet"),
    (b"\x0a\x0d\x0d\x0a" + bytes(8), "byte-order magic"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_file_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "nowhere.pcap")]) == 2
    assert "cannot open capture" in capsys.readouterr().err


def test_cli_writes_everything(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap(two_path_transfer(segments=6, size=700).packets, 228))
    assert main(["analyze", str(path)]) == 0
    out_dir = tmp_path / "c.pcap.analysis"
    names = {p.name for p in out_dir.iterdir()}
    assert {"analysis.json", "analysis.html", "data_sequence.png", "ofo_delay_cdf.png",
            "subflow_throughput.png", "subflow_rtt.png", "subflow_series.csv", "dsn_series.csv"} <= names
    assert "connection 0 (MPTCP v1)" in capsys.readouterr().out


def test_output_directory_that_is_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap(two_path_transfer(segments=2).packets, 228))
    (tmp_path / "taken").write_text("a file, not a directory")
    assert main(["analyze", str(path), "--out", str(tmp_path / "taken"), "--quiet"]) == 4
    err = capsys.readouterr().err
    assert "cannot create the output directory" in err and "Traceback" not in err
