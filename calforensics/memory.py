"""Returning freed memory to the operating system between the stages of a large decode.

glibc raises its mmap threshold after the first large free, so the decoder's transient arrays of a
few MB come from the heap and stay resident after they are freed (~65 MB per million packets).
`malloc_trim(0)` hands those pages back; elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


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
