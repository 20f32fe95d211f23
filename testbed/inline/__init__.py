"""The inline packet process: an L2-transparent bump between two legs of a namespace.

It emulates link delay and jitter in userspace (this project's kernels may lack sch_netem) and
runs the Python middlebox pipeline on middlebox nodes. Modules, one concern each:

    legs          AF_PACKET sockets on the two legs; `prepare_leg` (offloads off)
    ring          a leg's frame I/O: PACKET_MMAP RX and TX rings, or one system call per frame
    delay         the per-direction delay/jitter line (sans-IO)
    pipeline      middleboxes on decoded packets, frames in and out (sans-IO)
    arp           answers ARP for addresses a middlebox owns (a NAT's public address)
    config        the JSON configuration, checked strictly
    commands      the JSON-lines control protocol (request -> response)
    controlserver the Unix socket serving it inside the event loop
    runtime       the event loop (select with microsecond timeouts)
    app           command line: ``python -m testbed.inline --left IF --right IF --control PATH``
    control       `InlineControl`, the client the orchestrator uses
    lab           a throwaway three-namespace line (A - bump - C) for tests and the benchmark
    fastpath      option stripping on raw frames (the strip_options box without decoding)
    nfqueue       the NFQUEUE consumer the rewrite benchmark compares against
    bench_forwarding ``python -m testbed.inline.bench_forwarding``: forwarding ceiling (no box,
                  decode, re-encode) against a kernel bridge
    bench_rewrite ``python -m testbed.inline.bench_rewrite``: a middlebox rewriting every packet
                  (strip_options), AF_PACKET bump and NFQUEUE, against kernel forwarding

See README.md beside this file for usage, the offload findings and measured figures.
"""
