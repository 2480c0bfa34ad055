"""Where packet decoding runs: in this process, in a local process pool, or on a Dask cluster.

Decoding a frame depends on no other frame, so a chunk of a capture's frames (``CHUNK_PACKETS``
rows) is the unit of work: one large capture keeps every core busy, and the decoder's transient
memory is bounded by the chunk, not the capture. Every chunk's rows have a known place in the final
packets table (frame counts come from the index, before decoding), so each chunk is written straight
into that place: by local workers into memory-mapped column files the parent then maps (no copy
through a pipe, no concatenation), inline into preallocated arrays or the same files. Categoricals
are written as codes and re-based onto the union of categories afterwards. Results never depend on
where, in which order or in how many chunks the work ran. A Dask cluster gets whole captures (their
bytes are sent once).
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .anomalies import AnomalyLog
from .memory import release_freed_memory
from .parsers.packets import VXLAN_PORTS, decode_columns
from .parsers.pcap import FrameIndex, read_frames

PARALLEL_MIN_BYTES = 32 * 1024 * 1024  # below this, starting workers costs more than it saves
CHUNK_PACKETS = 1 << 20  # rows decoded at a time; bounds the decoder's transient memory (~250 B a row)
SPILL_FRACTION = 0.25  # a packets table estimated past this share of RAM goes to mapped files on disk
TABLE_BYTES_PER_PACKET = 180  # the packets table's size a row (docs/performance.md)
CODES = np.int32  # categorical codes as stored while decoding
ADDRESS_COLUMNS = frozenset({"outer_src", "outer_dst", "src", "dst", "q_src", "q_dst"})

_INDEXES: list[FrameIndex] = []  # the parent's frame indexes, inherited by forked pool workers


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


def decode_capture(source: str | bytes, vxlan_ports: tuple[int, ...] = VXLAN_PORTS) -> dict[str, object]:
    """One whole capture's packet columns (the Dask task; importable by workers, so module-level)."""
    return decode_columns(read_frames(source, AnomalyLog("pcap")), vxlan_ports)


def _write(cols: dict[str, object], out: dict[str, np.ndarray], start: int) -> dict[str, list]:
    """Copy one task's columns into rows [start, start+n) of ``out``; return its categories."""
    categories = {}
    for name, values in cols.items():
        n = len(values)
        if isinstance(values, pd.Categorical):
            out[name][start : start + n] = values.codes
            categories[name] = list(values.categories)
        else:
            out[name][start : start + n] = values
    return categories


def decode_chunk_into_files(chunk: Chunk, vxlan_ports: tuple[int, ...], spill: str) -> dict[str, list]:
    """Worker side: decode one chunk of an inherited frame index into the shared column files."""
    cols = decode_columns(_INDEXES[chunk.capture].slice(chunk.lo, chunk.hi), vxlan_ports)
    out = {name: np.load(Path(spill) / f"{name}.npy", mmap_mode="r+") for name in cols}
    categories = _write(cols, out, chunk.row)
    for arr in out.values():
        arr.flush()
    return categories


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


@dataclass
class Runner:
    """How packet decoding runs: in chunks of ``chunk_packets`` rows, inline (the default), in
    ``workers`` local processes, or per capture on the Dask cluster named by ``scheduler``.

    Memory: the decoder's transients are bounded by the chunk (about 250 bytes a row); the table
    itself is held in memory, or in memory-mapped column files under ``spill_dir`` when ``spill`` is
    set, when workers write it, or (``spill=None``) when its estimate passes SPILL_FRACTION of RAM.
    Mapped columns are file pages the kernel can write back and drop, so a capture larger than
    memory can still be read (docs/performance.md has the figures).
    """

    workers: int | None = 1
    scheduler: str | None = None
    min_bytes: int = PARALLEL_MIN_BYTES
    spill_dir: str | None = None
    chunk_packets: int = CHUNK_PACKETS
    spill: bool | None = None

    def effective_workers(self, tasks: int) -> int:
        return max(1, min(tasks, self.workers or os.cpu_count() or 1))

    def _spill_wanted(self, total: int) -> bool:
        if self.spill is not None:
            return self.spill
        return total * TABLE_BYTES_PER_PACKET > SPILL_FRACTION * physical_memory()

    def decode(
        self,
        indexes: list[FrameIndex],
        paths: list[Path],
        vxlan_ports: tuple[int, ...],
        layout: dict[str, np.dtype | str],
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, object]:
        """All captures' packet columns, concatenated in the order given.

        ``layout`` maps each decoded column to its dtype, or "category" for categoricals; ``paths``
        are the captures' files (sent to a Dask cluster as bytes); ``progress(done, total)``.
        """
        tick = progress or (lambda done, total: None)
        counts = [len(ix) for ix in indexes]
        total = sum(counts)
        dtypes = {name: (CODES if kind == "category" else np.dtype(kind)) for name, kind in layout.items()}
        if self.scheduler:
            starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            out = {name: np.empty(total, dtype=dt) for name, dt in dtypes.items()}
            cats = []
            for i, (cols, s) in enumerate(zip(self._dask(paths, vxlan_ports), starts, strict=False)):
                tick(i, len(paths))
                cats.append(_write(cols, out, int(s)))
            return _rebase_categoricals(out, layout, cats, [int(s) for s in starts])
        chunks = plan_chunks(counts, self.chunk_packets)
        n = self.effective_workers(len(chunks))
        pool = n > 1 and sum(p.stat().st_size for p in paths) >= self.min_bytes
        spill = pool or self._spill_wanted(total)
        if len(chunks) == 1 and not spill:
            # one chunk: its decoded columns are the table already; copying them would double the peak
            tick(0, 1)
            cols = decode_columns(indexes[0], vxlan_ports)
            return {
                name: (categorical_of(cols[name]) if kind == "category" else np.asarray(cols[name], dtype=dtypes[name]))
                for name, kind in layout.items()
            }
        if spill:
            if self.spill_dir:
                Path(self.spill_dir).mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="calforensics-cols-", dir=self.spill_dir))
            self._spilled = folder
            out = {
                name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dt, shape=(total,))
                for name, dt in dtypes.items()
            }
            for arr in out.values():
                arr.flush()
        else:
            out = {name: np.empty(total, dtype=dt) for name, dt in dtypes.items()}
        cats: list[dict[str, list]] = []
        if pool:
            global _INDEXES
            _INDEXES = indexes  # forked workers inherit the indexes: only chunk bounds cross the pipe
            try:
                context = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(max_workers=n, mp_context=context) as workers:
                    futures = [workers.submit(decode_chunk_into_files, c, vxlan_ports, str(folder)) for c in chunks]
                    for i, fut in enumerate(futures):
                        tick(i, len(chunks))
                        cats.append(fut.result())
            finally:
                _INDEXES = []
        else:
            for i, c in enumerate(chunks):
                tick(i, len(chunks))
                cols = decode_columns(indexes[c.capture].slice(c.lo, c.hi), vxlan_ports)
                cats.append(_write(cols, out, c.row))
                del cols
                release_freed_memory()
        if spill:
            for arr in out.values():
                arr.flush()
            # plain ndarray views over the mapped files: the table pages them in from the page cache
            out = {name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r+")) for name in dtypes}
        return _rebase_categoricals(out, layout, cats, [c.row for c in chunks] + [total])

    def _dask(self, paths: list[Path], vxlan_ports: tuple[int, ...]):
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
            futures = [client.submit(decode_capture, p.read_bytes(), vxlan_ports, pure=False) for p in paths]
            for fut in futures:
                yield fut.result()

    def cleanup(self) -> None:
        """Remove spilled column files (the packets table maps them until then)."""
        spilled = getattr(self, "_spilled", None)
        if spilled is not None:
            shutil.rmtree(spilled, ignore_errors=True)
            self._spilled = None


def categorical_of(values) -> pd.Categorical:
    """A decoded categorical with plain-string categories (see schema.categorical)."""
    from .schema import categorical

    return categorical(values)


def _rebase_categoricals(
    out: dict[str, np.ndarray], layout: dict, cats: list[dict[str, list]], bounds: list[int]
) -> dict[str, object]:
    """Per-task category codes onto one set of categories per column (task i owns rows
    bounds[i]:bounds[i+1]). Address categories are put in the order one whole decode gives them
    (IPv4 then IPv6, each ascending), so results do not depend on how the work was cut."""
    cols: dict[str, object] = {}
    for name, kind in layout.items():
        if kind != "category":
            cols[name] = out[name]
            continue
        union: dict[str, int] = {}
        for c in cats:
            for v in c.get(name, []):
                union.setdefault(v, len(union))
        if name in ADDRESS_COLUMNS:
            union = {v: i for i, v in enumerate(sorted(union, key=_address_key))}
        codes = out[name]
        for i, c in enumerate(cats):
            own = c.get(name, [])
            mapping = np.asarray([union[v] for v in own] + [-1], dtype=CODES)  # code -1 stays -1
            sl = slice(bounds[i], bounds[i + 1])
            if own and not np.array_equal(mapping[:-1], np.arange(len(own))):
                codes[sl] = mapping[codes[sl]]
        cols[name] = pd.Categorical.from_codes(np.asarray(codes), categories=pd.Index(list(union), dtype=object))
    return cols


def _address_key(text: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(text)
    return addr.version, int(addr)
