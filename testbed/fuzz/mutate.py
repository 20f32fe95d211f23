"""Mutations of IPv4/TCP packets, TCP option areas and TOML text, driven by one random.Random.

Structure-aware: the packet mutations know where the IPv4 total length, header length, TCP data
offset, flags and checksums are, so they can make exactly one of them lie (or fix the others
after an edit) instead of hoping a random bit flip lands there. Every function is pure apart
from the generator it is given, so a seed reproduces an input exactly.
"""

from __future__ import annotations

import random
import struct

from testbed.wire.checksum import internet_checksum, ones_complement_sum

TCPOPT_MPTCP = 30
MPTCP_SUBTYPES = range(16)  # 0..8 are defined by RFC 8684, the rest must decode as unknown
MAX_OPTION_LENGTH = 40
_INTERESTING_U16 = (0, 1, 19, 20, 21, 39, 40, 59, 60, 61, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
_INTERESTING_U32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


# --- TCP options -----------------------------------------------------------------------------
def mptcp_option(rng: random.Random, subtype: int | None = None,
                 length: int | None = None) -> bytes:
    """One MPTCP option (kind 30) of `subtype` whose length byte says `length` (0..40), its
    flags and body random. Lengths 0 and 1 produce the two bytes a truncated option leaves."""
    subtype = rng.choice(MPTCP_SUBTYPES) if subtype is None else subtype
    length = rng.randrange(MAX_OPTION_LENGTH + 1) if length is None else length
    if length < 3:
        return bytes((TCPOPT_MPTCP, length))[:max(length, 2)]
    first = (subtype << 4) | rng.choice((0, 1, rng.randrange(16)))
    body = rng.randbytes(length - 3)
    if subtype == 2 and body:  # DSS: pick the flags byte so the layouts are all reached
        body = bytes((rng.randrange(32) | (rng.random() < 0.1) * rng.randrange(256),)) + body[1:]
    return bytes((TCPOPT_MPTCP, length, first)) + body


def tcp_option(rng: random.Random) -> bytes:
    """One option of any kind: mostly MPTCP, else the TCP options Linux sends, or junk."""
    roll = rng.random()
    if roll < 0.6:
        return mptcp_option(rng)
    if roll < 0.7:
        return rng.choice((b"\x01", b"\x00"))
    kind, sizes = rng.choice(((2, (4,)), (3, (3,)), (4, (2,)), (5, (10, 18, 26, 34)),
                              (8, (10,)), (rng.randrange(256), (rng.randrange(41),))))
    length = rng.choice(sizes) if rng.random() < 0.8 else rng.randrange(41)
    return (bytes((kind, length)) + rng.randbytes(max(0, length - 2)))[:max(2, length)]


def option_area(rng: random.Random, seed_areas: list[bytes] | None = None) -> bytes:
    """An option area: a list of options, sometimes Linux's NOP NOP timestamps first, sometimes
    longer than 40 bytes or cut mid-option, sometimes a valid area with one option replaced."""
    if seed_areas and rng.random() < 0.3:
        area = bytearray(rng.choice(seed_areas))
        if area:
            at = rng.randrange(len(area))
            area[at:at + rng.randrange(1, 12)] = tcp_option(rng)
        return bytes(area)
    parts = [b"\x01\x01\x08\x0a" + rng.randbytes(8)] if rng.random() < 0.3 else []
    for _ in range(rng.randrange(1, 5)):
        parts.append(tcp_option(rng))
    area = b"".join(parts)
    roll = rng.random()
    if roll < 0.15:
        area = area[:rng.randrange(len(area) + 1)]
    elif roll < 0.3:
        area += rng.randbytes(rng.randrange(1, 24))
    elif roll < 0.8:
        area = area[:MAX_OPTION_LENGTH]
    return area


def flip_bits(rng: random.Random, data: bytes, count: int | None = None) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(count or rng.randrange(1, 4)):
        at = rng.randrange(len(out))
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


# --- IPv4 + TCP packets ----------------------------------------------------------------------
def _tcp_start(packet: bytearray) -> int:
    return (packet[0] & 0x0F) * 4 if packet else 20


def fix_lengths(packet: bytearray) -> None:
    """Make the IPv4 total length say the real length."""
    if len(packet) >= 4:
        packet[2:4] = struct.pack("!H", min(len(packet), 0xFFFF))


def fix_checksums(packet: bytearray) -> None:
    """Recompute the IPv4 header and TCP checksums for what the headers now say (if the
    headers are at least long enough to hold them)."""
    ihl = _tcp_start(packet)
    if len(packet) < 20 or ihl < 20 or len(packet) < ihl + 18:
        return
    packet[10:12] = b"\0\0"
    packet[10:12] = struct.pack("!H", internet_checksum(bytes(packet[:ihl])))
    tcp = packet[ihl:]
    tcp[16:18] = b"\0\0"
    pseudo = ones_complement_sum(bytes(packet[12:20]) + struct.pack("!BBH", 0, 6, len(tcp)))
    packet[ihl + 16:ihl + 18] = struct.pack("!H", internet_checksum(bytes(tcp), pseudo))


def splice_options(packet: bytes, area: bytes, *, honest: bool = True) -> bytes:
    """`packet` with its TCP options replaced by `area` (padded to whole words); with `honest`
    the data offset and total length are made to match, else they keep their old values."""
    out = bytearray(packet)
    tcp = _tcp_start(out)
    if len(out) < tcp + 20:
        return bytes(out)
    end = tcp + (out[tcp + 12] >> 4) * 4
    padded = area + b"\0" * (-len(area) % 4)
    out[tcp + 20:max(tcp + 20, end)] = padded
    if honest:
        words = min(15, (20 + len(padded)) // 4)
        out[tcp + 12] = (words << 4) | (out[tcp + 12] & 0x0F)
        fix_lengths(out)
    return bytes(out)


def _set_u16(out: bytearray, at: int, value: int) -> None:
    if at + 2 <= len(out):
        out[at:at + 2] = struct.pack("!H", value & 0xFFFF)


def _set_u32(out: bytearray, at: int, value: int) -> None:
    if at + 4 <= len(out):
        out[at:at + 4] = struct.pack("!I", value & 0xFFFFFFFF)


def _shift(rng: random.Random, old: int, bits: int) -> int:
    roll = rng.random()
    if roll < 0.5:
        return old + rng.randrange(-3000, 3000)
    if roll < 0.7:
        return rng.choice(_INTERESTING_U32 if bits == 32 else _INTERESTING_U16)
    return rng.getrandbits(bits)


def mutate_fields(rng: random.Random, packet: bytes) -> bytes:
    """Change one or two header fields to plausible or extreme values, keeping the rest, and
    (usually) fix the checksums so the edit is what a receiver reacts to."""
    out = bytearray(packet)
    if len(out) < 40:
        return bytes(out)
    tcp = _tcp_start(out)
    for _ in range(rng.randrange(1, 3)):
        field = rng.randrange(9)
        if field == 0:  # sequence number
            _set_u32(out, tcp + 4, _shift(rng, struct.unpack_from("!I", out, tcp + 4)[0], 32))
        elif field == 1:  # acknowledgment number
            _set_u32(out, tcp + 8, _shift(rng, struct.unpack_from("!I", out, tcp + 8)[0], 32))
        elif field == 2 and tcp + 14 <= len(out):  # flags
            out[tcp + 13] = rng.choice((0x02, 0x12, 0x10, 0x11, 0x04, 0x14, 0x18, 0x19,
                                        rng.randrange(256)))
        elif field == 3:  # window
            _set_u16(out, tcp + 14, rng.choice(_INTERESTING_U16))
        elif field == 4:  # payload: cut, grown or edited
            header_end = tcp + (out[tcp + 12] >> 4) * 4 if tcp + 13 <= len(out) else len(out)
            payload = out[header_end:]
            if rng.random() < 0.5:
                payload = payload[:rng.randrange(len(payload) + 1)]
            else:
                payload += rng.randbytes(rng.randrange(1, 1500))
            out[header_end:] = payload
            fix_lengths(out)
        elif field == 5:  # urgent pointer
            _set_u16(out, tcp + 18, rng.getrandbits(16))
        elif field == 6:  # a port (the flow no longer matches)
            _set_u16(out, tcp + rng.choice((0, 2)), rng.choice((0, 1, 5201, rng.getrandbits(16))))
        elif field == 7:  # IPv4 identification / TTL / TOS / DF
            at = rng.choice((1, 4, 6, 8))
            out[at] = rng.randrange(256)
        else:  # the option area, rebuilt
            out = bytearray(splice_options(bytes(out), option_area(rng), honest=True))
    if rng.random() < 0.9:
        fix_checksums(out)
    return bytes(out)


def make_lie(rng: random.Random, packet: bytes) -> bytes:
    """Make one length or checksum lie: IPv4 version/IHL, total length, TCP data offset,
    reserved bits, fragment fields, protocol, either checksum, or the packet's own length."""
    out = bytearray(packet)
    if len(out) < 20:
        return bytes(out)
    lie = rng.randrange(10)
    if lie == 0:
        out[0] = (out[0] & 0xF0) | rng.randrange(16)  # IHL
    elif lie == 1:
        out[0] = (rng.randrange(16) << 4) | (out[0] & 0x0F)  # version
    elif lie == 2:
        _set_u16(out, 2, rng.choice((len(out) + rng.randrange(-60, 60), *_INTERESTING_U16)))
    elif lie == 3 and len(out) > 32:
        tcp = _tcp_start(out)
        if tcp + 12 < len(out):
            out[tcp + 12] = (rng.randrange(16) << 4) | (out[tcp + 12] & 0x0F)  # data offset
    elif lie == 4 and len(out) > 32:
        tcp = _tcp_start(out)
        if tcp + 12 < len(out):
            out[tcp + 12] = (out[tcp + 12] & 0xF0) | rng.randrange(16)  # reserved bits
    elif lie == 5:
        out[6], out[7] = rng.choice(((0x20, 0), (0, 1), (0x40, 0), (0x80, 0),
                                     (rng.randrange(256), rng.randrange(256))))
    elif lie == 6:
        out[9] = rng.choice((6, 17, 1, 0, 255))
    elif lie == 7:
        _set_u16(out, 10, rng.getrandbits(16))  # IP header checksum
    elif lie == 8:
        _set_u16(out, _tcp_start(out) + 16, rng.getrandbits(16))  # TCP checksum
    else:
        out = out[:rng.randrange(len(out) + 1)] if rng.random() < 0.7 else \
            out + rng.randbytes(rng.randrange(1, 40))
    return bytes(out)


def mutate_packet(rng: random.Random, seeds: list[bytes], seed_areas: list[bytes]) -> bytes:
    """One hostile IPv4/TCP packet derived from a valid seed packet."""
    packet = rng.choice(seeds)
    roll = rng.random()
    if roll < 0.35:
        packet = mutate_fields(rng, packet)
    elif roll < 0.65:
        area = option_area(rng, seed_areas)
        packet = splice_options(packet, area, honest=rng.random() < 0.7)
        if rng.random() < 0.8:
            fixed = bytearray(packet)
            fix_checksums(fixed)
            packet = bytes(fixed)
    elif roll < 0.85:
        packet = make_lie(rng, mutate_fields(rng, packet) if rng.random() < 0.3 else packet)
    elif roll < 0.97:
        packet = flip_bits(rng, packet)
    else:
        packet = rng.randbytes(rng.randrange(80))
    return packet


# --- TOML text -------------------------------------------------------------------------------
_TOML_TOKENS = ("=", "[", "]", "[[", "]]", "{", "}", ",", '"', "'", '"""', "\n", "#", ".",
                "0", "-1", "1e309", "nan", "inf", "true", "x", "\\u0000", "\\", "1979-05-27")


def mutate_text(rng: random.Random, text: str) -> str:
    """A TOML text with a few lines dropped, duplicated or swapped, or tokens inserted."""
    lines = text.splitlines()
    for _ in range(rng.randrange(1, 4)):
        if not lines:
            lines = [""]
        at = rng.randrange(len(lines))
        roll = rng.random()
        if roll < 0.25:
            del lines[at]
        elif roll < 0.45:
            lines.insert(at, lines[rng.randrange(len(lines))])
        elif roll < 0.8:
            line = lines[at]
            cut = rng.randrange(len(line) + 1)
            lines[at] = line[:cut] + rng.choice(_TOML_TOKENS) + line[cut + rng.randrange(3):]
        else:
            other = rng.randrange(len(lines))
            lines[at], lines[other] = lines[other], lines[at]
    return "\n".join(lines) + "\n"


# --- parsed TOML documents -------------------------------------------------------------------
def random_value(rng: random.Random) -> object:
    """A value of any TOML type (and a few Python ones TOML cannot express, such as None)."""
    return rng.choice((
        lambda: rng.choice((0, -1, 1, 2**63, -(2**63), 10**400, rng.randrange(-5, 100000))),
        lambda: rng.choice((0.0, -0.5, 1e308, float("inf"), float("-inf"), float("nan"))),
        lambda: rng.choice(("", "x", "two_path", "python", "kernel", "10.0.0.1", "../etc",
                            "a" * 300, "\x00", "mb_a", "upstream", "any", "1.5ms")),
        lambda: rng.choice((True, False)),
        lambda: [],
        lambda: [rng.randrange(10), "x"],
        lambda: {},
        lambda: {"x": 1},
        lambda: None,
    ))()


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*prefix, index)))
    return out


def mutate_document(rng: random.Random, document: dict) -> dict:
    """A deep copy of a parsed spec with one to three values replaced, removed or added."""
    import copy

    doc = copy.deepcopy(document)
    for _ in range(rng.randrange(1, 4)):
        path = rng.choice(_paths(doc))
        if not path:
            doc[rng.choice(("x", "name", "seed", "topology"))] = random_value(rng)
            continue
        parent: object = doc
        for step in path[:-1]:
            parent = parent[step]  # type: ignore[index]
        key = path[-1]
        roll = rng.random()
        if roll < 0.6:
            parent[key] = random_value(rng)  # type: ignore[index]
        elif roll < 0.8:
            del parent[key]  # type: ignore[attr-defined, arg-type]
        elif isinstance(parent, dict):
            parent[rng.choice(("unknown", "params", "type", "node", "rate_mbit"))] = \
                random_value(rng)
        elif isinstance(parent, list):
            parent.append(random_value(rng))
    return doc
