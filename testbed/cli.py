"""Command-line entry point (placeholder until the orchestrator lands)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("testbed: not yet implemented", file=sys.stderr)
    return 2
