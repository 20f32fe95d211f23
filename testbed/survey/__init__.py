"""`testbed survey`: the IETF 87 implementation-survey tables, answered by measurement.

At IETF 87 the MPTCP working group compared implementations with a self-reported
questionnaire: signalling, fallback and congestion control. This package answers the same
rows for any implementation a testbed host can run (`targets`), from two sources: the
conformance prober's verdicts (DIR/<target>/probes.json, written by testbed.probe) and short
experiments run with the ordinary runner (`experiments`), read through the result files and the
client-side capture (`wire_facts`). `tables` decides each cell from that evidence and says
"not measured" with the reason where it has none; `render` writes Markdown and HTML with every
cell linked to its evidence.
"""
