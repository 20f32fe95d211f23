"""`testbed soak`: one two_path network kept up for many minutes while endpoint pairs transfer
one after another through a NAT and a switchable option stripper, links flap and loss and delay
change; every transfer's verdict is checked against the bytes that really arrived, and the RSS
and descriptors of every python process are sampled each second (issue 13, point 3).

schedule: the seeded spec (network, boxes, timeline) and the transfer plan; monitor: process
samples and the before/after census; truth: what arrived, judged by hashes; session: the loop;
criteria: soak.json and the pass/fail verdicts; command: the CLI.
"""
