"""Capture indexing loops, compiled with numba when it is installed: the classic-pcap record walk
and header pass, and the pcapng Enhanced Packet Block run.

Walking records is inherently sequential (each length says where the next record starts), so numpy
cannot vectorise it; in Python it costs ~0.4 µs a record, compiled ~5 ns. Without numba the same
function runs as plain Python, so results never depend on whether it is installed.
"""

from __future__ import annotations

import numpy as np

from ...runtime.memory import write_back

try:  # pragma: no cover - exercised by whichever environment runs the tests
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f

        return wrap(args[0]) if args and callable(args[0]) else wrap


STOP_END, STOP_TRAILING, STOP_TOO_LONG, STOP_TRUNCATED = 0, 1, 2, 3
WALK_RUN = 1 << 22  # records filled between write-backs


def in_memory(n: int, dtype: type) -> np.ndarray:
    """The default allocator for index arrays: plain memory."""
    return np.empty(n, dtype=dtype)


@njit(cache=True, nogil=True, inline="always")
def _u32(data, at, little):
    b0, b1, b2, b3 = np.int64(data[at]), np.int64(data[at + 1]), np.int64(data[at + 2]), np.int64(data[at + 3])
    if little:
        return b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
    return (b0 << 24) | (b1 << 16) | (b2 << 8) | b3


@njit(cache=True, nogil=True)
def _walk(data, start, little, max_record):
    """Count the whole records from ``start``; return (count, stop reason, offset where it stopped).

    Only lengths are read, so the arrays for the second pass can be sized exactly."""
    size = data.shape[0]
    off = start
    n = 0
    while off + 16 <= size:
        incl = _u32(data, off + 8, little)
        if incl > max_record:
            return n, STOP_TOO_LONG, off
        if off + 16 + incl > size:
            return n, STOP_TRUNCATED, off
        n += 1
        off += 16 + incl
    if off != size:
        return n, STOP_TRAILING, off
    return n, STOP_END, off


@njit(cache=True, nogil=True)
def _fill(data, at, little, ts_mult, frac_limit, row0, offsets, caplens, wirelens, ts_ns, bad_ts, n_bad):
    """Read ``len(offsets)`` records from ``at`` (a run the counting walk found whole): each frame's
    offset, captured and original length (int32, a bogus length past 2**31 clipped, not negative)
    and time in ns; rows whose sub-second field is out of range go to ``bad_ts`` (first ones only).
    Returns the offset after the run and the number of bad-time rows now in ``bad_ts``."""
    clip = np.int64(2**31 - 1)
    for i in range(offsets.shape[0]):
        sec = _u32(data, at, little)
        frac = _u32(data, at + 4, little)
        incl = _u32(data, at + 8, little)
        orig = _u32(data, at + 12, little)
        offsets[i] = at + 16
        caplens[i] = min(incl, clip)
        wirelens[i] = min(orig, clip)
        ts_ns[i] = sec * 1_000_000_000 + frac * ts_mult
        if frac >= frac_limit and n_bad < bad_ts.shape[0]:
            bad_ts[n_bad] = row0 + i
            n_bad += 1
        at += 16 + incl
    return at, n_bad


def index_pcap(
    data: np.ndarray, little: bool, ts_mult: int, max_record: int, alloc=in_memory, start: int = 24
) -> tuple[tuple[np.ndarray, ...], np.ndarray, int, int]:
    """A classic pcap's frame index in two compiled passes: one counts the whole records (so the
    arrays, from ``alloc(n, dtype)``, are sized exactly), one fills offsets, lengths and times,
    in runs written back as they are finished (when the arrays are mapped files).

    Returns ((offsets, caplens, wirelens, ts_ns), rows with a bad sub-second field (first 100),
    the stop reason, and where the walk stopped)."""
    count, reason, stop = _walk(data, start, little, max_record)
    cols = (alloc(count, np.int64), alloc(count, np.int32), alloc(count, np.int32), alloc(count, np.int64))
    bad_ts = np.full(100, -1, dtype=np.int64)
    frac_limit = 1_000_000 if ts_mult == 1000 else 1_000_000_000
    at, n_bad = start, 0
    for lo in range(0, count, WALK_RUN):
        run = tuple(col[lo : lo + WALK_RUN] for col in cols)
        at, n_bad = _fill(data, at, little, ts_mult, frac_limit, lo, *run, bad_ts, n_bad)
        for col in run:
            write_back(col)
    return cols, bad_ts[:n_bad], int(reason), int(stop)


EPB = 6
INT64_MAX = np.iinfo(np.int64).max
INT32_MAX = np.iinfo(np.int32).max


@njit(cache=True, nogil=True)
def _epb_run(
    data, off, little, section_map, conv, n_out, stop, count_only, out_off, out_cap, out_wire, out_ts, out_ifc
):
    """Index consecutive clean pcapng Enhanced Packet Blocks from ``off``; return (rows filled, offset).

    ``conv`` has a row per interface: mul, div, shift, offset in ns, usable (0/1). Rows are written
    until ``stop`` (only counted with ``count_only``). The run also stops,
    leaving the block to the Python reader, at anything else: another block type, any length or
    interface the reader would report as damaged, a timestamp whose conversion needs more than 64
    bits, or full output arrays. So every row written here is the row the reader would have
    written, and every anomaly is still logged by the reader, in file order.
    """
    size = data.shape[0]
    while off + 12 <= size and n_out < stop:
        btype = _u32(data, off, little)
        blen = _u32(data, off + 4, little)
        if btype != EPB or blen < 32 or blen % 4 != 0 or off + blen > size:
            break
        local_if = _u32(data, off + 8, little)
        cap = _u32(data, off + 20, little)
        data_off = off + 28
        if _u32(data, off + blen - 4, little) != blen or local_if >= section_map.shape[0]:
            break
        if data_off + cap > off + blen - 4:
            break
        gi = section_map[local_if]
        hi = _u32(data, off + 12, little)
        if conv[gi, 4] == 0 or hi >= (1 << 31):  # the reader does these with Python integers
            break
        raw = (hi << 32) | _u32(data, off + 16, little)
        if raw > INT64_MAX // conv[gi, 0]:
            break
        t = ((raw * conv[gi, 0]) // conv[gi, 1]) >> conv[gi, 2]
        o = conv[gi, 3]
        if (o > 0 and t > INT64_MAX - o) or t + o < 0:
            break
        if not count_only:
            out_off[n_out] = data_off
            out_cap[n_out] = min(cap, INT32_MAX)
            out_wire[n_out] = min(_u32(data, off + 24, little), INT32_MAX)
            out_ts[n_out] = t + o
            out_ifc[n_out] = gi
        n_out += 1
        off += blen
    return n_out, off
