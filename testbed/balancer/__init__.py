"""A layer-4 load balancer in front of N kernel-MPTCP backends (issue 16 point 2).

variants.py installs one of three balancers on the `lb` topology's balancer node;
token_lb.py is the token-aware one's packet program (NFQUEUE); endpoints.py holds the
client and the backend servers; experiment.py runs a spec and counts what happened to the
joins; command.py is `testbed lb`. docs/load-balancer.md says what each variant shows.
"""
