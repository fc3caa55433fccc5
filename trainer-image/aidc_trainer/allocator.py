"""Keep freed memory for the next step or forward pass, instead of handing it back to the kernel.

glibc's malloc returns a freed block of a few MB to the kernel (``munmap``, or ``madvise`` when it
trims an arena's top). The next forward pass, or the next training step, allocates the same
activations again, and every page of them faults and is zeroed by the kernel before torch writes
it. Whether glibc's own adjustment stops this depends on how the heap happens to be laid out, so
one process paid it on every pass and the next did not:
- the model server under load, at 64 clients: 24 page faults per request, and the JSON path ran
  1,650-1,820 req/s against 2,500-2,730 with this (``benchmarks/server/RESULTS.md``);
- the bare forward pass at batch 32: 3,000-3,500 images/s against 4,400-4,500;
- the CPU trainer: about 350 page faults per step and rank on the digits classifier, 6-9 % of
  its samples/s, and the spread between runs (``benchmarks/trainer/RESULTS.md``).
Blocks under ``MMAP_THRESHOLD`` now come from the heap, and up to ``TRIM_THRESHOLD`` of free heap
is kept; a larger tensor (a big model's weights) is still mapped and unmapped on its own. CUDA
memory has torch's own caching allocator and is not concerned.

The settings are glibc's (``mallopt``), as the ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables would set them, applied in the process so that
every way of starting the trainer or the server gets them. Another C library (musl) has no
``mallopt``: nothing is changed there.
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
