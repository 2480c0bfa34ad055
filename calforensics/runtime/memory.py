"""Keeping a large decode's memory down: freed heap pages returned, mapped pages written back.

glibc raises its mmap threshold after the first large free, so the decoder's transient arrays of a
few MB come from the heap and stay resident after they are freed (~65 MB per million packets).
`malloc_trim(0)` hands those pages back; elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from functools import cache

import numpy as np


@cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the heap's free pages back to the OS (cheap: one call per decode stage, not per packet)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


WRITE_BACK_ROWS = 1 << 20  # rows of a mapped array written between write-backs


def write_back(arr: np.ndarray) -> None:
    """Write a memory-mapped array's dirty pages to its file now (a no-op for other arrays).

    The kernel reclaims clean file pages under memory pressure but must write dirty ones first, and
    its dirty-page throttling is global (a share of all RAM), not per memory cgroup: a process
    that dirties mapped pages faster than they are written back can be killed under a cgroup limit
    while most of its memory is file pages. Writing back each run as it is finished keeps the dirty
    share to one run; only the run's pages are synced (msync over that range)."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or arr.nbytes == 0:
        return
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    start = arr.ctypes.data - base
    lo = start - start % mmap.ALLOCATIONGRANULARITY
    mm.flush(lo, start + arr.nbytes - lo)
