"""An MPTCP converter proxy in front of a legacy TCP server (issue 16 point 1).

spec.py reads and checks a proxy spec (experiments/proxy/*.toml); intercept.py installs the
transparent interception on the proxy node (nftables TPROXY); relay_kernel.py is the relay
with the kernel's MPTCP; endpoints.py holds the client and the legacy server; experiment.py
runs a spec; command.py is `testbed proxy`. docs/proxy.md says what each experiment shows.
"""
