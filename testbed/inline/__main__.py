"""`python -m testbed.inline`: see testbed.inline.app for the command line."""

import sys

from testbed.inline.app import main

if __name__ == "__main__":
    sys.exit(main())
