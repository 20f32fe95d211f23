"""Traffic endpoints run inside testbed hosts.

``kernel``: the Linux kernel's MPTCP (IPPROTO_MPTCP) or plain TCP, driven from Python;
``report``: the JSON report format those programs print and the runner reads.
"""
