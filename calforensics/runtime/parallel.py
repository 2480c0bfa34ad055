"""Where packet decoding runs: in this process, in a local process pool, or on a Dask cluster.

Decoding a frame depends on no other frame, so a chunk of a capture's frames (``CHUNK_PACKETS``
rows) is the unit of work: one large capture keeps every core busy, and the decoder's transient
memory is bounded by the chunk, not the capture. Every chunk's rows have a known place in the final
packets table (frame counts come from the index, before decoding), so each chunk is written straight
into that place: by forked local workers into shared memory the parent mapped before forking (no
copy through a pipe, no concatenation), inline into preallocated arrays, or, for a spilled table,
into memory-mapped column files. Categoricals
are written as codes and re-based onto the union of categories afterwards. Results never depend on
where, in which order or in how many chunks the work ran. A Dask cluster gets whole captures (their
bytes are sent once).
"""

from __future__ import annotations

import errno
import ipaddress
import mmap
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from ..schema import codes_dtype
from .memory import WRITE_BACK_ROWS, release_freed_memory, write_back
from .partitions import Partitioning

PARALLEL_MIN_BYTES = 32 * 1024 * 1024  # below this, starting workers costs more than it saves
CHUNK_PACKETS = 1 << 17  # rows decoded at a time: bounds the decoder's transient memory (~40 MB)
PARTITION_ROWS = 1 << 20  # packets per partition when a spilled table is joined (docs/performance.md)
SPILL_FRACTION = 0.25  # a packets table estimated past this share of RAM goes to mapped files on disk
TABLE_BYTES_PER_PACKET = 180  # the packets table's size a row (docs/performance.md)
CODES = np.int32  # categorical codes as stored while decoding
# packets-table columns that are frame-index fields: taken from the index, not copied per chunk
INDEX_COLUMNS = {"ts_ns": "ts_ns", "caplen": "caplens", "wirelen": "wirelens", "iface_index": "iface"}
ADDRESS_COLUMNS = frozenset({"outer_src", "outer_dst", "src", "dst", "q_src", "q_dst"})


class Frames(Protocol):
    """What the runner needs of a capture's frame index (ingest's FrameIndex): its length, slices of it
    to decode, and the per-frame fields named in INDEX_COLUMNS."""

    def __len__(self) -> int: ...

    def slice(self, lo: int, hi: int) -> Frames: ...


# decodes frames into packet columns; module-level (picklable) when it is to run in workers
DecodeFrames = Callable[[Frames], dict[str, object]]
DecodeFile = Callable[[bytes], dict[str, object]]  # a whole capture's bytes, on a Dask worker

_INDEXES: list[Frames] = []  # the parent's frame indexes, inherited by forked pool workers


@dataclass(frozen=True)
class Chunk:
    """Rows [lo, hi) of one capture, landing at row ``row`` of the packets table."""

    capture: int
    lo: int
    hi: int
    row: int


def plan_chunks(counts: list[int], chunk_packets: int) -> list[Chunk]:
    """Cut every capture into runs of at most ``chunk_packets`` rows, in table order."""
    chunks, row = [], 0
    step = max(1, chunk_packets)
    for k, n in enumerate(counts):
        chunks.extend(Chunk(k, lo, min(n, lo + step), row + lo) for lo in range(0, n, step))
        row += n
    return chunks


def _write(cols: dict[str, object], out: dict[str, np.ndarray], start: int) -> dict[str, list]:
    """Copy one task's columns into rows [start, start+n) of ``out``; return its categories.

    Category codes are written as the task's own; an in-memory code column too narrow for them is
    widened first (mapped column files are created wide enough)."""
    categories = {}
    for name, values in cols.items():
        if name not in out:  # a frame-index column the caller takes from the index
            continue
        n = len(values)
        if isinstance(values, pd.Categorical):
            if len(values.categories) > np.iinfo(out[name].dtype).max:
                out[name] = _widened(out[name])
            out[name][start : start + n] = values.codes
            categories[name] = list(values.categories)
        else:
            out[name][start : start + n] = values
        write_back(out[name][start : start + n])  # mapped column files only
    return categories


def _widened(codes: np.ndarray) -> np.ndarray:
    if isinstance(codes, np.memmap) or codes.dtype == np.int32:
        raise ValueError(f"{len(codes)} rows: category codes past {codes.dtype}")
    return codes.astype(np.int32)


_OPEN_FILES: dict[str, dict[str, np.ndarray]] = {}  # a worker's mappings of the column files, by folder
_SHARED_OUT: dict[str, np.ndarray] = {}  # the parent's shared anonymous columns, inherited by forked workers


def decode_chunk_into(chunk: Chunk, decode: DecodeFrames, spill: str | None) -> dict[str, list]:
    """Worker side: decode one chunk of an inherited frame index into the shared columns: the
    column files in ``spill``, or else the shared memory the parent mapped before forking.

    Both are shared mappings, so the parent sees the writes without a copy or a flush (an msync a
    chunk would write every page to disk while decoding)."""
    cols = decode(_INDEXES[chunk.capture].slice(chunk.lo, chunk.hi))
    if spill is None:
        return _write(cols, _SHARED_OUT, chunk.row)
    if spill not in _OPEN_FILES:
        _OPEN_FILES.clear()
        _OPEN_FILES[spill] = {name: np.load(Path(spill) / f"{name}.npy", mmap_mode="r+") for name in cols}
    return _write(cols, _OPEN_FILES[spill], chunk.row)


def _shared_empty(n: int, dtype: np.dtype) -> np.ndarray:
    """An array in anonymous shared memory: forked workers write it, the parent reads it in place."""
    buf = mmap.mmap(-1, max(1, n * dtype.itemsize), flags=mmap.MAP_SHARED)
    return np.frombuffer(buf, dtype=dtype, count=n)


def mapped_array(path: Path, n: int, dtype: np.dtype | type) -> np.memmap:
    """A new .npy file of ``n`` values, mapped, with its disk blocks reserved now.

    A sparse file would take its blocks only as pages are written back, and a full disk then kills
    the process with SIGBUS on some later page write; reserved up front, a disk without room fails
    here, with a message that says what to do."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n,))
    try:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot reserve: go on
            return arr
        del arr
        raise RuntimeError(
            f"cannot keep the packets table in {path.parent}: {exc.strerror or exc} "
            f"(it needs about {TABLE_BYTES_PER_PACKET} bytes a packet; give --spill-dir a disk with room)"
        ) from exc
    return arr


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


@dataclass
class Runner:
    """How packet decoding runs: in chunks of ``chunk_packets`` rows, inline or in ``workers`` local
    processes (``None``: one per core; bundles under ``min_bytes`` of captures stay inline, where
    starting processes costs more than it saves), or per capture on the Dask cluster ``scheduler``.
    ``effective_workers`` also sizes what comes after the decode: the join's and the analyses'
    threads and the processes that write CSV tables.

    Memory: the decoder's transients are bounded by the chunk (about 300 bytes a row); the table is
    held in memory (shared memory when workers write it), or in memory-mapped column files under
    ``spill_dir`` when ``spill`` is set or (``spill=None``) when its estimate passes SPILL_FRACTION
    of RAM. Mapped columns are file pages the kernel can write back and drop, so a capture larger
    than memory can still be read (docs/performance.md has the figures). A spilled table is also
    joined, its flows built and its analyses run in partitions on disk, ``partition_rows`` packets in
    memory at a time (``partitioning``), with the hops in mapped files.
    """

    workers: int | None = 1
    scheduler: str | None = None
    min_bytes: int = PARALLEL_MIN_BYTES
    spill_dir: str | None = None
    chunk_packets: int = CHUNK_PACKETS
    spill: bool | None = None
    partition_rows: int = PARTITION_ROWS
    processes_used: int = 0  # by the last decode (1: inline)
    _spilled: Path | None = field(default=None, init=False, repr=False)  # the folder of mapped files
    _files: int = field(default=0, init=False, repr=False)  # mapped arrays made in it so far

    @property
    def cores(self) -> int:
        """How many processes or threads to use at most: as asked, else one per core."""
        return max(1, self.workers or os.cpu_count() or 1)

    def effective_workers(self, tasks: int) -> int:
        return max(1, min(tasks, self.cores))

    def _spill_wanted(self, total: int) -> bool:
        if self.spill is not None:
            return self.spill
        return total * TABLE_BYTES_PER_PACKET > SPILL_FRACTION * physical_memory()

    def decode(
        self,
        indexes: list[Frames],
        paths: list[Path],
        decode: DecodeFrames,
        decode_file: DecodeFile,
        layout: dict[str, np.dtype | str],
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, object]:
        """All captures' packet columns, concatenated in the order given.

        ``decode`` turns frames (a capture's index, or a chunk of it) into columns; ``decode_file``
        does the same from a whole capture's bytes on a Dask worker (both module-level callables or
        partials of them, so they pickle): ingest says how to decode, the runner only where.
        ``layout`` maps each decoded column to its dtype, or "category" for categoricals; ``paths``
        are the captures' files (sent to a Dask cluster as bytes); ``progress(done, total)``.
        """
        tick = progress or (lambda done, total: None)
        counts = [len(ix) for ix in indexes]
        total = sum(counts)
        dtypes = {name: np.dtype(CODES) if kind == "category" else np.dtype(kind) for name, kind in layout.items()}
        if self.scheduler:
            return self._decode_on_cluster(paths, decode_file, counts, dtypes, layout, tick)
        chunks = plan_chunks(counts, self.chunk_packets)
        n = self.effective_workers(len(chunks))
        pool = n > 1 and sum(p.stat().st_size for p in paths) >= self.min_bytes
        spill = self._spill_wanted(total)
        self.processes_used = n if pool else 1
        if len(chunks) == 1 and not spill:
            # one chunk: its decoded columns are the table already; copying them would double the peak
            tick(0, 1)
            cols = decode(indexes[0])
            return {
                name: (categorical_of(cols[name]) if kind == "category" else np.asarray(cols[name], dtype=dtypes[name]))
                for name, kind in layout.items()
            }
        out = self._output_columns(total, dtypes, layout, spill, pool)
        if pool:
            cats = self._decode_in_pool(indexes, chunks, decode, out, spill, n, tick)
        else:
            cats = []
            for i, c in enumerate(chunks):
                tick(i, len(chunks))
                cols = decode(indexes[c.capture].slice(c.lo, c.hi))
                cats.append(_write(cols, out, c.row))
                del cols
                release_freed_memory()
        if not spill:
            for name, field in INDEX_COLUMNS.items():
                if name in dtypes:
                    parts = [np.asarray(getattr(ix, field), dtype=dtypes[name]) for ix in indexes]
                    out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        allocate = self.allocate if spill else np.empty
        return _rebase_categoricals(out, layout, cats, [c.row for c in chunks] + [total], allocate)

    def _decode_on_cluster(
        self,
        paths: list[Path],
        decode_file: DecodeFile,
        counts: list[int],
        dtypes: dict[str, np.dtype],
        layout: dict,
        tick: Callable[[int, int], None],
    ) -> dict[str, object]:
        """Whole captures decoded on the Dask cluster, each written into its place as it comes back."""
        total = sum(counts)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        out = {name: np.empty(total, dtype=dt) for name, dt in dtypes.items()}
        cats = []
        for i, (cols, s) in enumerate(zip(self._dask(paths, decode_file), starts, strict=False)):
            tick(i, len(paths))
            cats.append(_write(cols, out, int(s)))
        return _rebase_categoricals(out, layout, cats, [int(s) for s in starts])

    def _output_columns(
        self, total: int, dtypes: dict[str, np.dtype], layout: dict, spill: bool, pool: bool
    ) -> dict[str, np.ndarray]:
        """Where the chunks are written: mapped column files (spilled; shared file mappings, so workers'
        writes and each chunk's write-back land in the same pages), anonymous shared memory (forked
        workers; int32 codes, since a worker cannot widen a shared column), or plain arrays (inline).
        Frame-index columns are taken from the indexes afterwards, except in mapped files."""
        if spill:
            folder = self._spill_folder()
            return {name: mapped_array(folder / f"{name}.npy", total, dt) for name, dt in dtypes.items()}
        if pool:
            return {name: _shared_empty(total, dt) for name, dt in dtypes.items() if name not in INDEX_COLUMNS}
        return {
            name: np.empty(total, dtype=_codes_dtype(name) if layout[name] == "category" else dt)
            for name, dt in dtypes.items()
            if name not in INDEX_COLUMNS
        }

    def _decode_in_pool(
        self,
        indexes: list[Frames],
        chunks: list[Chunk],
        decode: DecodeFrames,
        out: dict[str, np.ndarray],
        spill: bool,
        n: int,
        tick: Callable[[int, int], None],
    ) -> list[dict[str, list]]:
        """Chunks decoded by ``n`` forked workers, each writing straight into ``out``; returns each
        chunk's categories. Workers inherit the indexes and the shared columns: only chunk bounds
        cross the pipe."""
        _INDEXES[:] = indexes
        _SHARED_OUT.update({} if spill else out)
        target = str(self._spill_folder()) if spill else None
        cats = []
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=n, mp_context=context) as workers:
                futures = [workers.submit(decode_chunk_into, c, decode, target) for c in chunks]
                for i, fut in enumerate(futures):
                    tick(i, len(chunks))
                    cats.append(fut.result())
        finally:
            _INDEXES.clear()
            _SHARED_OUT.clear()
        return cats

    def _dask(self, paths: list[Path], decode_file: DecodeFile):
        try:
            from distributed import Client
        except ImportError as exc:
            raise RuntimeError("--scheduler needs dask.distributed: pip install 'calforensics[dask]'") from exc
        try:
            client = Client(self.scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from exc
        with client:
            # workers may be on other machines: send the capture bytes, not paths
            futures = [client.submit(decode_file, p.read_bytes(), pure=False) for p in paths]
            for fut in futures:
                yield fut.result()

    def _spill_folder(self) -> Path:
        """The folder of this bundle's mapped files (made on first use, removed by cleanup)."""
        if self._spilled is None:
            try:
                if self.spill_dir:
                    Path(self.spill_dir).mkdir(parents=True, exist_ok=True)
                self._spilled = Path(tempfile.mkdtemp(prefix="calforensics-cols-", dir=self.spill_dir))
            except OSError as exc:
                where = self.spill_dir or tempfile.gettempdir()
                raise RuntimeError(f"cannot keep the packets table in {where}: {exc.strerror or exc}") from exc
        return self._spilled

    def maps(self, n: int) -> bool:
        """Whether ``allocate`` would put ``n`` rows in a mapped file."""
        return n > 0 and self._spill_wanted(n)

    def allocate(self, n: int, dtype: type) -> np.ndarray:
        """An array of ``n`` per-frame values: a mapped file when a table of ``n`` rows would be spilled."""
        if not self.maps(n):
            return np.empty(n, dtype=dtype)
        folder = self._spill_folder()
        self._files += 1
        return mapped_array(folder / f"array-{self._files}.npy", n, dtype)

    def partitioning(self, n: int) -> Partitioning | None:
        """How to join and summarise a table of ``n`` packets in bounded memory: in partitions on
        disk, when the table itself is spilled (None: in memory). ``partition_rows`` packets are in
        memory at a time, shared by the threads that work on partitions side by side (one a core),
        so the bound does not grow with the cores."""
        if not self.maps(n):
            return None
        rows = max(1, self.partition_rows // self.cores)
        return Partitioning(rows, self._spill_folder, self.allocate, max(1, min(rows, 2 * self.chunk_packets)))

    def cleanup(self) -> None:
        """Remove spilled column files (the packets table maps them until then)."""
        spilled = self._spilled
        if spilled is not None:
            shutil.rmtree(spilled, ignore_errors=True)
            self._spilled = None


def categorical_of(values) -> pd.Categorical:
    """A decoded categorical with plain-string categories (see schema.categorical)."""
    from ..schema import categorical

    return categorical(values)


def _rebase_categoricals(
    out: dict[str, np.ndarray],
    layout: dict,
    cats: list[dict[str, list]],
    bounds: list[int],
    allocate: Callable[[int, type], np.ndarray] = np.empty,
) -> dict[str, object]:
    """Per-task category codes onto one set of categories per column (task i owns rows
    bounds[i]:bounds[i+1]). Address categories are put in the order one whole decode gives them
    (IPv4 then IPv6, each ascending), so results do not depend on how the work was cut."""
    cols: dict[str, object] = {}
    for name, kind in layout.items():
        if kind != "category":
            cols[name] = np.asarray(out.pop(name))  # a plain view: pandas keeps it, mapped or not
            continue
        union: dict[str, int] = {}
        for c in cats:
            for v in c.get(name, []):
                union.setdefault(v, len(union))
        if name in ADDRESS_COLUMNS:
            union = {v: i for i, v in enumerate(sorted(union, key=_address_key))}
        codes = out.pop(name)  # its cells are re-coded in place, then narrowed; the wide array goes
        if len(union) > np.iinfo(codes.dtype).max:
            codes = _widened(codes)
        for i, c in enumerate(cats):
            own = c.get(name, [])
            mapping = np.asarray([union[v] for v in own] + [-1], dtype=CODES)  # code -1 stays -1
            sl = slice(bounds[i], bounds[i + 1])
            if own and not np.array_equal(mapping[:-1], np.arange(len(own))):
                codes[sl] = mapping[codes[sl]]
                write_back(codes[sl])
        codes = np.asarray(narrow_codes(codes, len(union), allocate))
        cols[name] = pd.Categorical.from_codes(codes, categories=pd.Index(list(union), dtype=object))
        del codes
    return cols


def narrow_codes(codes: np.ndarray, categories: int, allocate: Callable[[int, type], np.ndarray]) -> np.ndarray:
    """Codes in the narrowest dtype pandas would pick, copied in runs into an array from ``allocate``
    (a mapped file for a spilled table), so that pandas keeps them rather than making its own copy."""
    want = codes_dtype(categories)
    if codes.dtype == want:
        return codes
    narrow = allocate(len(codes), want)
    for lo in range(0, len(codes), WRITE_BACK_ROWS):
        narrow[lo : lo + WRITE_BACK_ROWS] = codes[lo : lo + WRITE_BACK_ROWS]
        write_back(narrow[lo : lo + WRITE_BACK_ROWS])
    return narrow


def _codes_dtype(name: str) -> np.dtype:
    """Codes as held in memory while decoding: int16 for addresses (widened to int32 in the rare
    capture with more than 32,767 of them), int8 for the decoder's short fixed lists (encap kinds,
    statuses). 18 bytes a packet less than int32 codes at the decoder's peak."""
    return np.dtype(np.int16) if name in ADDRESS_COLUMNS else np.dtype(np.int8)


def _address_key(text: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(text)
    return addr.version, int(addr)


def thread_map(threads: int, fn: Callable, items: Iterable) -> list:
    """[fn(x) for x in items], in ``threads`` threads when more than one. For the analysis after the
    decode: its work is numpy and pandas sorts, scans, gathers and group-bys, which release the GIL,
    and threads share the tables without copying or pickling them."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, items))
