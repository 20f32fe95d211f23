"""`python -m testbed.report DIR` until `testbed report` is wired into the CLI."""

import sys

from testbed.report.command import main

sys.exit(main())
