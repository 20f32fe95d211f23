"""`testbed bench`: every benchmark in one run, one versioned JSON, and a gate against a baseline.

Modules: `calibration` (the pure-Python reference loop CPU figures are divided by), `record`
(the figure and file format), `cpu` (stack core and fast paths, in this process), `wire`
(inline middleboxes, wirebench, delay stage, matrix wall time: namespaces, root), `gate`
(comparison with a baseline), `command` (the CLI).
"""
