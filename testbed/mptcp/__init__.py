"""The bundled MPTCP v1 stack (RFC 8684): a sans-IO core and the drivers that put it on a wire."""

# first, before any module of the core: decides whether they load compiled or from source
from testbed.mptcp import native as _native  # noqa: F401
