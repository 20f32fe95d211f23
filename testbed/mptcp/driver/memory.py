"""A fixed mmap threshold for glibc's malloc in a process that drives the python stack.

Why: glibc serves blocks of 128 KiB and more with their own mmap, returned to the system when
freed, but every time such a block is freed it raises that threshold to the block's size (up to
32 MiB) and its heap-trimming threshold to twice that. The stack's large buffers (the send
buffer's 128 KiB blocks, send_buffer.py; the receive buffer; the data a receiving application
reads) are such blocks, so after the first one is freed they come from the heap instead, and a
heap gives memory back only from its top. With the threshold fixed, large blocks always come
from mmap and leave when freed (docs/benchmarks.md, "The python stack's memory", has the
figures before and after).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def fix_mmap_threshold(size: int = MMAP_THRESHOLD_BYTES) -> int | None:
    """Pin glibc's mmap threshold at `size` for this process (which also stops the automatic
    raising of both thresholds). Returns the threshold set, or None where the C library has no
    mallopt (not glibc): the process then runs with its library's own policy."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return size if mallopt(M_MMAP_THRESHOLD, size) == 1 else None
