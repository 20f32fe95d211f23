"""MPTCP middlebox testbed: emulated networks, inline Python middleboxes, MPTCP endpoints."""

# first, before any compiled module (testbed/mptcp/native.py): decides whether they load
# compiled or from source
from testbed.mptcp import native as _native  # noqa: F401

__version__ = "0.1.0"
