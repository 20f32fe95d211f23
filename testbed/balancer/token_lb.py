"""The token-aware balancer's packet program: an NFQUEUE consumer on the balancer node.

    python -m testbed.balancer.token_lb --queue 0 --backends 3 --stats FILE [--ready FILE]

nftables (testbed.balancer.variants) queues two kinds of packets here and nothing else:
- every SYN to the virtual address. An MP_CAPABLE (or plain) SYN goes to a backend chosen by a
  hash of its 5-tuple; an MP_JOIN SYN goes to the backend that issued its token, when the
  token was learnt, else by hash (that backend then refuses it, as without this balancer). The
  choice is the packet mark in the verdict (1..N); nftables copies it into the conntrack entry
  and policy routing (fwmark N -> backend N) does the rest, so later packets never come here.
- every SYN/ACK from the virtual address, already carrying its flow's mark. Its MP_CAPABLE
  holds the backend's key; token = the top 32 bits of SHA-256(key) (RFC 8684 section 3.2), and
  the table remembers token -> mark.
A packet the codec cannot read is accepted as it is (unmarked: the kernel's ECMP route takes
it) and counted; nothing a packet holds can end this process.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.inline.nfqueue import open_queue, serve
from testbed.wire.crypto import key_to_token
from testbed.wire.ipv4 import decode_packet
from testbed.wire.types import ACK, SYN, MpCapable, MpJoinSyn

MAX_TOKENS = 65536  # a bounded table: the oldest learnt token goes first


@dataclass
class TokenStats:
    syns: int = 0
    joins_by_token: int = 0
    joins_unknown_token: int = 0
    tokens_learnt: int = 0
    synacks_without_key: int = 0
    bad_packets: int = 0


def hash_choice(src: str, sport: int, dst: str, dport: int, backends: int) -> int:
    """The backend (1..N) of a 5-tuple: the same tuple always gives the same backend."""
    key = f"{src}|{sport}|{dst}|{dport}|6".encode()
    return zlib.crc32(key) % backends + 1


class TokenTable:
    """Which backend issued which token, learnt from SYN/ACKs; decides each SYN's backend."""

    def __init__(self, backends: int) -> None:
        self.backends = backends
        self.tokens: dict[int, int] = {}
        self.stats = TokenStats()

    def decide(self, packet: bytes, mark: int) -> int | None:
        """The mark to give this packet (None: leave it as it is)."""
        parsed = decode_packet(packet)
        segment = parsed.tcp
        if segment.flags & (SYN | ACK) == SYN:
            self.stats.syns += 1
            join = segment.find(MpJoinSyn)
            if isinstance(join, MpJoinSyn):
                backend = self.tokens.get(join.receiver_token)
                if backend is not None:
                    self.stats.joins_by_token += 1
                    return backend
                self.stats.joins_unknown_token += 1
            return hash_choice(parsed.src, segment.src_port, parsed.dst, segment.dst_port, self.backends)
        if segment.flags & (SYN | ACK) == SYN | ACK:
            capable = segment.find(MpCapable)
            has_key = isinstance(capable, MpCapable) and capable.sender_key is not None
            if has_key and 1 <= mark <= self.backends:
                if len(self.tokens) >= MAX_TOKENS:
                    self.tokens.pop(next(iter(self.tokens)))
                self.tokens[key_to_token(capable.sender_key)] = mark  # type: ignore[union-attr]
                self.stats.tokens_learnt += 1
            else:
                self.stats.synacks_without_key += 1
        return None

    def decide_safely(self, packet: bytes, mark: int) -> int | None:
        try:
            return self.decide(packet, mark)
        except Exception:  # any malformed packet: counted, passed on unmarked, never fatal
            self.stats.bad_packets += 1
            return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.balancer.token_lb")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--backends", type=int, required=True)
    parser.add_argument("--stats", required=True, help="write the counters here (JSON) on exit")
    parser.add_argument("--ready", help="create this file once the queue is bound")
    args = parser.parse_args(argv)
    table = TokenTable(args.backends)
    sock = open_queue(args.queue)
    if args.ready:
        Path(args.ready).write_text("ready\n")
    try:
        serve(sock, args.queue, None, mark=table.decide_safely)
    finally:
        Path(args.stats).write_text(json.dumps({**asdict(table.stats), "tokens_known": len(table.tokens)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
