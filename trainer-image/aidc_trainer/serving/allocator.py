"""Keep the forward pass's freed memory for the next one, instead of handing it back to the kernel.

glibc's malloc returns a freed block of a few MB to the kernel (``munmap``, or ``madvise`` when it
trims an arena's top). The next forward pass allocates the same activations again, and every page
of them faults and is zeroed by the kernel before torch writes it. Under load a server runs one
pass after another, so it paid that on every pass: at 64 clients, 24 page faults per request and a
third of the server's CPU more than the same pass run alone (``benchmarks/server/RESULTS.md``).
Blocks under ``MMAP_THRESHOLD`` now come from the heap, and up to ``TRIM_THRESHOLD`` of free heap
is kept; a larger tensor (a big model's weights) is still mapped and unmapped on its own.

The settings are glibc's (``mallopt``), as the ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables would set them, applied in the process so that
every way of starting the server gets them. Another C library (musl) has no ``mallopt``: nothing is
changed there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own ceiling for the threshold it adjusts by itself
TRIM_THRESHOLD = 128 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Tell malloc to reuse freed blocks up to ``MMAP_THRESHOLD``; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not kept:
        log.warning("malloc refused to keep freed memory; each forward pass will fault its pages in again")
    return kept
