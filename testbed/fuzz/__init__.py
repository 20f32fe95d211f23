"""testbed.fuzz: seeded, structure-aware fuzzing of every decoder the testbed feeds hostile input.

A target (targets.py) is a generator of inputs (mutations of valid packets, option areas and
spec files, seeds.py and mutate.py) and a driver that feeds one input to the code under test.
Only the project's own error types may escape a driver; anything else is a finding, saved as a
regression vector that tests/unit/fuzz replays. `testbed fuzz` (command.py) runs the long
campaigns; the suite runs a few thousand inputs per target.
"""
