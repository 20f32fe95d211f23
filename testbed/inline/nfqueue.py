"""A minimal NFQUEUE consumer (raw nfnetlink, no dependency), for measuring the alternative to
AF_PACKET legs: packets queued by `iptables -j NFQUEUE` on a routed node, a verdict per packet.

    python -m testbed.inline.nfqueue --queue N [--strip]

Accepts every packet; with --strip, runs the same raw option-strip fast path as the inline
process (strip_options overwriting TCP timestamps with NOPs) and hands the edited packet back
with its verdict. Used by testbed.inline.bench_rewrite (modes nfqueue, nfqueue-strip); it is not a
runtime of the testbed: an L2 bump cannot queue without br_netfilter, and a queue cannot emit
packets that did not arrive (split, inject) nor hold packets without holding kernel verdicts.

Protocol (linux/netfilter/nfnetlink_queue.h): nlmsghdr + nfgenmsg + attributes; subsystem
NFNL_SUBSYS_QUEUE (3); CONFIG (2) binds the queue and asks for whole packets; PACKET (0)
carries NFQA_PACKET_HDR (id, hw protocol, hook) and NFQA_PAYLOAD (the IP packet); VERDICT (1)
returns NFQA_VERDICT_HDR (verdict, id) and optionally a replacement NFQA_PAYLOAD.
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_PAYLOAD = 10
NF_DROP = 0
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big endian, packed by hand)
_NLA = struct.Struct("=HH")


def _attr(kind: int, data: bytes) -> bytes:
    return _NLA.pack(4 + len(data), kind) + data + bytes(-len(data) % 4)


def _message(msg_type: int, queue: int, attrs: bytes, seq: int = 0) -> bytes:
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return _NLMSG.pack(_NLMSG.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type,
                       NLM_F_REQUEST, seq, 0) + body


def open_queue(queue: int, max_len: int = 4096) -> socket.socket:
    """A netlink socket bound to NFQUEUE `queue`, copying whole packets."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)  # SO_RCVBUFFORCE
    sock.bind((0, 0))
    sock.send(_message(NFQNL_MSG_CONFIG, queue,
                       _attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)), 1))
    sock.send(_message(NFQNL_MSG_CONFIG, queue,
                       _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET)), 2))
    sock.send(_message(NFQNL_MSG_CONFIG, queue,
                       _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", max_len)), 3))
    return sock


def serve(sock: socket.socket, queue: int, edit: Callable[[bytes], bytes | None] | None,
          keep: Callable[[bytes], bool] | None = None,
          mark: Callable[[bytes, int], int | None] | None = None) -> int:
    """Give a verdict for every queued packet until SIGTERM (drop when `keep` says False; with
    `mark`, given the payload and the packet's mark, set the mark it returns unless None);
    returns the packet count."""
    running = [True]
    signal.signal(signal.SIGTERM, lambda signum, frame: running.__setitem__(0, False))
    handled = 0
    buffer = bytearray(256 * 1024)
    view = memoryview(buffer)
    verdict_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
    nfgen = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(queue))
    sock.settimeout(0.2)  # a retried recv would see SIGTERM only with the next packet
    while running[0]:
        try:
            size = sock.recv_into(buffer)
        except (TimeoutError, InterruptedError):
            continue
        offset = 0
        while offset + 16 <= size:
            length, msg_type, _flags, _seq, _pid = _NLMSG.unpack_from(buffer, offset)
            if length < 16:
                break
            if msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                packet_id, packet_mark, payload = 0, 0, b""
                position = offset + 20
                end = offset + length
                while position + 4 <= end:
                    attr_len, attr_type = _NLA.unpack_from(buffer, position)
                    if attr_len < 4:
                        break
                    kind = attr_type & 0x7FFF
                    if kind == NFQA_PACKET_HDR:
                        packet_id = int.from_bytes(view[position + 4:position + 8], "big")
                    elif kind == NFQA_MARK:
                        packet_mark = int.from_bytes(view[position + 4:position + 8], "big")
                    elif kind == NFQA_PAYLOAD:
                        payload = bytes(view[position + 4:position + attr_len])
                    position += (attr_len + 3) & ~3
                verdict = NF_ACCEPT if keep is None or keep(payload) else NF_DROP
                attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
                if edit is not None and (edited := edit(payload)) is not None:
                    attrs += _attr(NFQA_PAYLOAD, edited)
                if mark is not None and (chosen := mark(payload, packet_mark)) is not None:
                    attrs += _attr(NFQA_MARK, struct.pack("!I", chosen))
                body = nfgen + attrs
                sock.send(_NLMSG.pack(16 + len(body), verdict_type, NLM_F_REQUEST, 0, 0) + body)
                handled += 1
            elif msg_type == NLMSG_ERROR and struct.unpack_from("=i", buffer, offset + 16)[0]:
                raise OSError(-struct.unpack_from("=i", buffer, offset + 16)[0],
                              "nfnetlink_queue refused a request")
            offset += (length + 3) & ~3
    return handled


def strip_timestamps_editor() -> Callable[[bytes], bytes | None]:
    """The inline process's strip fast path on bare IP packets (a dummy Ethernet header)."""
    from middleboxes.contract import Direction
    from middleboxes.registry import build_middlebox
    from testbed.inline.fastpath import RawOptionStrip
    from testbed.wire.ethernet import ETHERNET_HEADER_LENGTH, PLACEHOLDER_IPV4_HEADER

    box = build_middlebox("strip_options", {"what": ["timestamps"], "how": "nop",
                                            "packets": ["data", "pure_ack", "fin"]},
                          random.Random(1))
    raw = RawOptionStrip.for_chain([box])
    assert raw is not None
    pad = PLACEHOLDER_IPV4_HEADER

    def edit(packet: bytes) -> bytes | None:
        frame = pad + packet
        out = raw.process(frame, Direction.UPSTREAM)
        return None if out is None or out is frame else out[ETHERNET_HEADER_LENGTH:]

    return edit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.inline.nfqueue")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--strip", action="store_true")
    parser.add_argument("--ready", help="create this file once the queue is bound")
    args = parser.parse_args(argv)
    sock = open_queue(args.queue)
    if args.ready:
        with open(args.ready, "w"):
            pass
    handled = serve(sock, args.queue, strip_timestamps_editor() if args.strip else None)
    print(f"handled {handled} packets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
