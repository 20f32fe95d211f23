"""Checksums against RFC 1071's worked example and a word-by-word reference implementation."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.wire import (
    WireError,
    checksum_adjust,
    checksum_adjust_u16,
    checksum_adjust_u32,
    dss_checksum,
    internet_checksum,
    ipv4_header_checksum,
    ones_complement_sum,
    tcp_checksum,
)
from testbed.wire import checksum as checksum_module
from testbed.wire.checksum import pseudo_header_sum, python_ones_complement_sum
from testbed.wire.tcp import encode_tcp_header, tcp_header_and_checksum, verify_tcp_checksum
from testbed.wire.types import Dss, TcpSegment, Timestamps
from tests.unit.wire.strategies import dsses


def reference_sum(data: bytes) -> int:
    """RFC 1071 section 4.1, transcribed: add 16-bit words, fold carries as they come."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for index in range(0, len(data), 2):
        total += (data[index] << 8) | data[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def reference_checksum(data: bytes) -> int:
    return ~reference_sum(data) & 0xFFFF


def test_rfc1071_numerical_example() -> None:
    # RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (checksum 220d).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_complement_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_zero_and_negative_zero() -> None:
    assert ones_complement_sum(b"") == 0
    assert ones_complement_sum(bytes(100)) == 0
    assert ones_complement_sum(b"\xff\xff" * 700) == 0xFFFF  # never folds to +0
    assert ones_complement_sum(b"\x80\x00\x80\x00") == 0x0001  # end-around carry


@given(st.binary(max_size=3000))
def test_sum_matches_reference(data: bytes) -> None:
    assert ones_complement_sum(data) == reference_sum(data)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1023, 1024, 1025, 1479, 1480, 1481, 9000, 65515])
def test_sum_matches_reference_around_fold_threshold(size: int) -> None:
    data = bytes((index * 151 + 7) & 0xFF for index in range(size))
    assert ones_complement_sum(data) == reference_sum(data)


@given(st.binary(max_size=600).filter(lambda b: len(b) % 2 == 0), st.binary(max_size=600))
def test_sums_chain(head: bytes, tail: bytes) -> None:
    assert ones_complement_sum(tail, ones_complement_sum(head)) == reference_sum(head + tail)


# The C sum (testbed/wire/_checksum.c) and the Python one it replaces, side by side: both must
# keep the contract every caller relies on, whichever one a process ends up with.
try:
    from testbed.wire._checksum import ones_complement_sum as c_ones_complement_sum
except ImportError:  # the suite is run after `make setup`, which builds it: see the test below
    c_ones_complement_sum = None
IMPLEMENTATIONS = [pytest.param(python_ones_complement_sum, id="python"),
                   pytest.param(c_ones_complement_sum, id="c")]


def test_setup_built_the_c_sum_and_the_module_uses_it() -> None:
    assert c_ones_complement_sum is not None, "testbed/wire/_checksum.c not built: run make setup"
    assert checksum_module.CHECKSUM_IMPLEMENTATION == "c"
    assert ones_complement_sum is c_ones_complement_sum


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 1023, 1024, 1025, 1480, 1481, 65515])
@pytest.mark.parametrize("fill", [0x00, 0xFF, None])
def test_each_implementation_matches_the_reference(implementation, size: int, fill: int | None) -> None:
    data = bytes(size) if fill == 0 else (
        b"\xff" * size if fill == 0xFF else bytes((index * 151 + 7) & 0xFF for index in range(size)))
    for initial in (0, 1, 0xFFFE, 0xFFFF, 0x1FFFE, 0x10006, 2**40 + 5):
        assert implementation(data, initial) == reference_sum(data + b"\x00" * (len(data) & 1)
                                                              + initial.to_bytes(8, "big")), initial
    assert implementation(data) == reference_sum(data)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_each_implementation_reads_any_buffer(implementation) -> None:
    data = bytes(range(256)) * 6 + b"\x01"
    expected = reference_sum(data)
    assert implementation(bytearray(data)) == expected
    assert implementation(memoryview(data)) == expected
    assert implementation(memoryview(b"xx" + data)[2:]) == expected  # a view at an offset
    assert implementation(memoryview(b"x" + data)[1:]) == expected  # and at an odd address


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=2**47))
def test_c_and_python_agree(data: bytes, initial: int) -> None:
    if c_ones_complement_sum is None:
        pytest.skip("the C sum is not built")
    assert c_ones_complement_sum(data, initial) == python_ones_complement_sum(data, initial)


def test_c_sum_refuses_what_it_cannot_sum() -> None:
    if c_ones_complement_sum is None:
        pytest.skip("the C sum is not built")
    with pytest.raises(TypeError):
        c_ones_complement_sum("text")
    with pytest.raises(OverflowError):
        c_ones_complement_sum(b"ab", -1)
    with pytest.raises(OverflowError):
        c_ones_complement_sum(b"ab", 2**48)
    with pytest.raises(TypeError):
        c_ones_complement_sum()


def test_ipv4_header_checksum_known_header() -> None:
    # A classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert ipv4_header_checksum(header) == 0xB861


def _reference_tcp_checksum(src: str, dst: str, segment: bytes) -> int:
    if ":" in src:
        pseudo = (
            socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!I", len(segment)) + b"\x00\x00\x00\x06"
        )
    else:
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(segment))
    return reference_checksum(pseudo + segment)


@given(st.binary(min_size=20, max_size=200), st.sampled_from([
    ("10.0.0.1", "10.0.0.2"), ("192.168.200.255", "1.2.3.4"), ("2001:db8::1", "fe80::2"),
    ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
]))
def test_tcp_checksum_matches_reference(segment: bytes, addresses: tuple[str, str]) -> None:
    src, dst = addresses
    segment = segment[:16] + b"\x00\x00" + segment[18:]
    expected = _reference_tcp_checksum(src, dst, segment)
    assert tcp_checksum(src, dst, segment) == expected
    filled = segment[:16] + expected.to_bytes(2, "big") + segment[18:]
    assert tcp_checksum(src, dst, filled) == 0


def test_tcp_checksum_rejects_bad_or_mixed_addresses() -> None:
    with pytest.raises(WireError) as error:
        tcp_checksum("10.0.0.300", "10.0.0.1", bytes(20))
    assert error.value.field == "ip.src"
    with pytest.raises(WireError) as error:
        tcp_checksum("10.0.0.1", "::1", bytes(20))
    assert error.value.field == "ip.dst"


@given(
    st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
    st.binary(max_size=300),
)
def test_dss_checksum_matches_rfc8684_pseudo_header(
    dsn: int, subflow_seq: int, data_len: int, payload: bytes
) -> None:
    pseudo = dsn.to_bytes(8, "big") + subflow_seq.to_bytes(4, "big") + data_len.to_bytes(2, "big")
    expected = reference_checksum(pseudo + b"\x00\x00" + payload)
    assert dss_checksum(dsn, subflow_seq, data_len, payload) == expected
    # The receiver's check: the same sum with the received checksum in place gives 0.
    assert reference_sum(pseudo + expected.to_bytes(2, "big") + payload) == 0xFFFF


def test_dss_checksum_rejects_out_of_range() -> None:
    with pytest.raises(WireError) as error:
        dss_checksum(2**64, 0, 0, b"")
    assert error.value.field == "mptcp.dss.checksum"


@given(
    st.binary(min_size=8, max_size=200).filter(lambda b: len(b) % 2 == 0),
    st.integers(0, 100), st.binary(min_size=4, max_size=4),
)
def test_checksum_adjust_equals_recomputation(data: bytes, where: int, new: bytes) -> None:
    offset = (where * 2) % (len(data) - 3) & ~1
    old = data[offset : offset + 4]
    changed = data[:offset] + new + data[offset + 4 :]
    adjusted = checksum_adjust(internet_checksum(data), old, new)
    # Equal as one's-complement values (0x0000 and 0xFFFF both mean zero); a receiver's
    # verification succeeds either way.
    recomputed = internet_checksum(changed)
    assert adjusted == recomputed or {adjusted, recomputed} == {0, 0xFFFF}
    assert reference_sum(changed + adjusted.to_bytes(2, "big")) in (0xFFFF, 0)


def test_checksum_adjust_helpers_for_fields() -> None:
    segment = bytearray(bytes.fromhex("c35000500000000100000000501000ff00000000") + b"payload!")
    before = internet_checksum(segment)
    segment[4:8] = (0x12345678).to_bytes(4, "big")
    assert checksum_adjust_u32(before, 1, 0x12345678) == internet_checksum(segment)
    middle = internet_checksum(segment)
    segment[0:2] = (40000).to_bytes(2, "big")
    assert checksum_adjust_u16(middle, 50000, 40000) == internet_checksum(segment)
    with pytest.raises(WireError):
        checksum_adjust(0, b"\x00", b"\x01")


@given(src_port=st.integers(0, 0xFFFF), seq=st.integers(0, 2**32 - 1), flags=st.integers(0, 0xFF),
       tsval=st.integers(0, 2**32 - 1), dss=dsses(), payload=st.binary(min_size=1, max_size=1500))
def test_timestamped_dss_fast_path_is_byte_exact(src_port: int, seq: int, flags: int, tsval: int,
                                                 dss: Dss, payload: bytes) -> None:
    """Data segments with [Timestamps, Dss] are packed by one struct: the same bytes and checksum
    as encoding the options one by one, for every DSS shape (ack 32/64, mapping, checksum, F)."""
    segment = TcpSegment(src_port, 5201, seq, 77, flags, 512, [Timestamps(tsval, 9), dss], payload)
    header, checksum = tcp_header_and_checksum(segment, "10.0.1.1", "10.0.100.2")
    general = encode_tcp_header(segment)
    expected = internet_checksum(payload, ones_complement_sum(
        general, pseudo_header_sum("10.0.1.1", "10.0.100.2", len(general) + len(payload))))
    assert checksum == expected
    assert header == general[:16] + struct.pack("!H", expected) + general[18:]
    assert verify_tcp_checksum("10.0.1.1", "10.0.100.2", header + payload)


def test_without_the_c_sum_the_module_falls_back_and_says_so() -> None:
    script = ("import sys; sys.modules['testbed.wire._checksum'] = None\n"
              "from testbed.wire import checksum\n"
              "print(checksum.CHECKSUM_IMPLEMENTATION,\n"
              "      checksum.ones_complement_sum(b'\\x00\\x01\\xf2\\x03'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["python", str(0xF204)]
