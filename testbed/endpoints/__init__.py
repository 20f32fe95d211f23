"""Traffic endpoints run inside testbed hosts.

``kernel``: the endpoint program on the Linux kernel's MPTCP (IPPROTO_MPTCP) or plain TCP;
``stack_endpoint``: the same program on the bundled Python stack, whose per-connection
transfer protocol is ``stack_transfer``; ``command_endpoint``: a user's program run under
the command contract; ``report``: the JSON report format those programs print and the
runner reads.
"""

# the endpoint program of each stack: every one takes the same command line and prints the
# same JSON-lines reports
ENDPOINT_MODULES = {
    "kernel": "testbed.endpoints.kernel",
    "tcp": "testbed.endpoints.kernel",
    "python": "testbed.endpoints.stack_endpoint",
    # a user's program under the command contract (docs/command-endpoints.md)
    "command": "testbed.endpoints.command_endpoint",
}
