"""The classic-pcap record walk, compiled with numba when it is installed.

Walking records is inherently sequential (each length says where the next record starts), so numpy
cannot vectorise it; in Python it costs ~0.4 µs a record, compiled ~5 ns. Without numba the same
function runs as plain Python, so results never depend on whether it is installed.
"""

from __future__ import annotations

import numpy as np

from ..memory import write_back

try:  # pragma: no cover - exercised by whichever environment runs the tests
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f

        return wrap(args[0]) if args and callable(args[0]) else wrap


STOP_END, STOP_TRAILING, STOP_TOO_LONG, STOP_TRUNCATED, STOP_FULL = 0, 1, 2, 3, 4
WALK_RUN = 1 << 22  # record offsets filled between write-backs (32 MB)


@njit(cache=True, nogil=True)
def _walk(data, start, little, max_record, out):
    """Fill ``out`` with record-header offsets; return (count, stop reason, offset where it stopped).

    With ``out`` of length 0 it only counts, so callers can size the array exactly (two passes);
    otherwise it stops (STOP_FULL) once ``out`` is full, so a caller can fill it in runs.
    """
    size = data.shape[0]
    off = start
    n = 0
    while off + 16 <= size:
        if out.shape[0] and n == out.shape[0]:
            return n, STOP_FULL, off
        if little:
            incl = (
                np.int64(data[off + 8])
                | (np.int64(data[off + 9]) << 8)
                | (np.int64(data[off + 10]) << 16)
                | (np.int64(data[off + 11]) << 24)
            )
        else:
            incl = (
                (np.int64(data[off + 8]) << 24)
                | (np.int64(data[off + 9]) << 16)
                | (np.int64(data[off + 10]) << 8)
                | np.int64(data[off + 11])
            )
        if incl > max_record:
            return n, STOP_TOO_LONG, off
        if off + 16 + incl > size:
            return n, STOP_TRUNCATED, off
        if out.shape[0]:
            out[n] = off
        n += 1
        off += 16 + incl
    if off != size:
        return n, STOP_TRAILING, off
    return n, STOP_END, off


def walk_pcap(
    data: np.ndarray, little: bool, max_record: int, start: int = 24, alloc=None
) -> tuple[np.ndarray, int, int]:
    """Offsets of every record header (in an array from ``alloc(n, dtype)``: the count is known
    before it is asked for), the stop reason and where the walk stopped."""
    empty = np.zeros(0, dtype=np.int64)
    count, reason, stop = _walk(data, start, little, max_record, empty)
    offsets = alloc(count, np.int64) if alloc else np.zeros(count, dtype=np.int64)
    at = start
    for lo in range(0, count, WALK_RUN):  # in runs, each written back if ``offsets`` is a mapped file
        run = offsets[lo : lo + WALK_RUN]
        _, _, at = _walk(data, at, little, max_record, run)
        write_back(run)
    return offsets, int(reason), int(stop)


EPB = 6
INT64_MAX = np.iinfo(np.int64).max


@njit(cache=True, nogil=True, inline="always")
def _u32(data, at, little):
    b0, b1, b2, b3 = np.int64(data[at]), np.int64(data[at + 1]), np.int64(data[at + 2]), np.int64(data[at + 3])
    if little:
        return b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
    return (b0 << 24) | (b1 << 16) | (b2 << 8) | b3


@njit(cache=True, nogil=True)
def _epb_run(data, off, little, section_map, conv, n_out, out_off, out_cap, out_wire, out_ts, out_ifc):
    """Index consecutive clean pcapng Enhanced Packet Blocks from ``off``; return (rows filled, offset).

    ``conv`` has a row per interface: mul, div, shift, offset in ns, usable (0/1). The run stops,
    leaving the block to the Python reader, at anything else: another block type, any length or
    interface the reader would report as damaged, a timestamp whose conversion needs more than 64
    bits, or full output arrays. So every row written here is the row the reader would have
    written, and every anomaly is still logged by the reader, in file order.
    """
    size = data.shape[0]
    while off + 12 <= size and n_out < out_off.shape[0]:
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
        out_off[n_out] = data_off
        out_cap[n_out] = cap
        out_wire[n_out] = _u32(data, off + 24, little)
        out_ts[n_out] = t + o
        out_ifc[n_out] = gi
        n_out += 1
        off += blen
    return n_out, off
