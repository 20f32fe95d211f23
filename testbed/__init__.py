"""MPTCP middlebox testbed: emulated networks, inline Python middleboxes, MPTCP endpoints."""

__version__ = "0.1.0"
