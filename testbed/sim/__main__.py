"""`python -m testbed.sim`: the `testbed stack sim` command before it is wired into the CLI."""

import sys

from testbed.sim.cli import main

sys.exit(main())
