"""An MPTCP converter proxy in front of a legacy TCP server (issue 16 point 1).

spec.py reads and checks a proxy spec (experiments/proxy/*.toml); intercept.py installs the
transparent interception on the proxy node (nftables TPROXY) and checks the node is on the
path; relay_kernel.py is the relay with the kernel's MPTCP, relay_stack.py the one with the
bundled python stack; endpoints.py holds the kernel client and the legacy server, stack_client.py
the runs with the python stack as the client; experiment.py runs a spec; command.py is
`testbed proxy`. docs/proxy.md says what each experiment shows.
"""
