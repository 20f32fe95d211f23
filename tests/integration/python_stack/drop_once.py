"""A router-side box for the ADD_ADDR retransmission tests: NFQUEUE consumer that drops the
first packet carrying an ADD_ADDR (or its echo) and accepts everything else.

    python -m tests.integration.python_stack.drop_once --queue N --what add_addr|add_addr_echo
        --ready FILE --log FILE

The packets are decoded with testbed.wire and matched with the catalogue's own predicates
(middleboxes.predicates), so the MPTCP option is found wherever it sits among the options
(nft's `tcp option mptcp` only reads the first MPTCP option, usually the DSS). Each drop is
appended to --log at once, so the process can simply be killed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from middleboxes.predicates import STATELESS_PREDICATES
from testbed.inline.nfqueue import open_queue, serve
from testbed.wire.ipv4 import decode_packet

WHAT = ("add_addr", "add_addr_echo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.python_stack.drop_once")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--what", choices=WHAT, required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    matches = STATELESS_PREDICATES[args.what]
    dropped = [0]

    def keep(payload: bytes) -> bool:
        if dropped[0]:
            return True
        try:
            packet = decode_packet(payload)
        except Exception:  # a bad packet never kills the box: it passes
            return True
        if not matches(packet, frozenset()):
            return True
        dropped[0] += 1
        with open(args.log, "a") as log:
            log.write(f"{time.time():.6f} {packet.src} {packet.dst}\n")
        return False

    sock = open_queue(args.queue)
    with open(args.ready, "w"):
        pass
    serve(sock, args.queue, None, keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
