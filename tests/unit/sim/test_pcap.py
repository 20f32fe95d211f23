"""Captures of simulated links, dissected by tshark: an independent check of what the stack
and testbed.wire put on the wire (skipped where tshark is not installed)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from testbed.mptcp.config import StackConfig
from testbed.net.params import LinkParams
from testbed.sim.pcap import LINKTYPE_RAW, link_capture_writer
from testbed.sim.transfer import PathSpec, TransferSpec, build_transfer, finish_transfer

TSHARK = shutil.which("tshark")


def test_pcap_records_carry_virtual_time_and_lengths(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    with path.open("wb") as stream:
        writer = link_capture_writer(stream)
        writer.write(b"\x45" + bytes(39), 1.5)
        writer.write(b"\x45" + bytes(19), 2.0000015)
    data = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, LINKTYPE_RAW)
    assert struct.unpack_from("<IIII", data, 24) == (1, 500000, 40, 40)
    assert struct.unpack_from("<IIII", data, 24 + 16 + 40) == (2, 2, 20, 20)
    assert writer.packets == 2 and snaplen == 65535


def tshark_fields(pcap: Path, *fields: str) -> list[list[str]]:
    assert TSHARK is not None
    command = [TSHARK, "-r", str(pcap), "-o", "tcp.check_checksum:TRUE", "-T", "fields",
               "-E", "separator=|"]
    for name in fields:
        command += ["-e", name]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("|") for line in completed.stdout.splitlines()]


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_dissects_a_simulated_mptcp_transfer_cleanly(tmp_path: Path) -> None:
    config = StackConfig(checksum=True)
    link = LinkParams(rate_mbit=10, delay_ms=5)
    setup = build_transfer(TransferSpec(paths=[PathSpec(link), PathSpec(link)], size=300_000,
                                        client_config=config, server_config=config))
    writers = {}
    with (tmp_path / "path1.pcap").open("wb") as one, (tmp_path / "path2.pcap").open("wb") as two:
        for name, stream in (("path1", one), ("path2", two)):
            writers[name] = link_capture_writer(stream)
            setup.network.capture(name, writers[name])
        result = finish_transfer(setup)
    assert result.hash_ok
    for name in ("path1", "path2"):
        rows = tshark_fields(tmp_path / f"{name}.pcap", "frame.number", "tcp.checksum.status",
                             "tcp.options.mptcp.subtype", "mptcp.dss.dsn", "_ws.malformed")
        assert len(rows) == writers[name].packets > 0
        assert all(row[1] == "1" for row in rows), "tshark found a bad TCP checksum"
        assert all(row[4] == "" for row in rows), "tshark found a malformed packet"
        first_subtypes = rows[0][2].split(",")
        assert first_subtypes == (["0"] if name == "path1" else ["1"])  # MP_CAPABLE / MP_JOIN
    data_rows = tshark_fields(tmp_path / "path1.pcap", "tcp.len", "mptcp.dss.dsn")
    assert sum(1 for length, dsn in data_rows if length not in ("", "0") and dsn) > 100
