"""Scripted demos and fidelity runs built on testbed.runner: the IETF 80 (Prague) demo with a
live per-subflow graph, and the simult_flows transfer-time checks."""
