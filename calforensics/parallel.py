"""Where per-capture work runs: in this process, in a local process pool, or on a Dask cluster.

Decoding a capture is independent of every other capture, so it is the unit of parallel work.
Every capture's rows have a known place in the final packets table (frame counts come from the
index, before decoding), so workers write their columns straight into that place: local workers
into memory-mapped column files the parent then maps (no copy through a pipe, no concatenation),
inline decoding into preallocated arrays. Categoricals are written as codes and re-based onto the
union of categories afterwards. Results never depend on where or in which order tasks ran.
"""

from __future__ import annotations

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
from .parsers.packets import VXLAN_PORTS, decode_columns
from .parsers.pcap import read_frames

PARALLEL_MIN_BYTES = 32 * 1024 * 1024  # below this, starting workers costs more than it saves
CODES = np.int32  # categorical codes as stored while decoding


def decode_capture(source: str | bytes, vxlan_ports: tuple[int, ...] = VXLAN_PORTS) -> dict[str, object]:
    """One capture's packet columns (the unit of work; importable by workers, so module-level)."""
    return decode_columns(read_frames(source, AnomalyLog("pcap")), vxlan_ports)


def _write(cols: dict[str, object], out: dict[str, np.ndarray], start: int) -> dict[str, list]:
    """Copy one capture's columns into rows [start, start+n) of ``out``; return its categories."""
    categories = {}
    for name, values in cols.items():
        n = len(values)
        if isinstance(values, pd.Categorical):
            out[name][start : start + n] = values.codes
            categories[name] = list(values.categories)
        else:
            out[name][start : start + n] = values
    return categories


def decode_into_files(source: str, vxlan_ports: tuple[int, ...], spill: str, start: int) -> dict[str, list]:
    """Worker side: decode a capture and write it into the shared column files at its rows."""
    cols = decode_capture(source, vxlan_ports)
    out = {name: np.load(Path(spill) / f"{name}.npy", mmap_mode="r+") for name in cols}
    categories = _write(cols, out, start)
    for arr in out.values():
        arr.flush()
    return categories


@dataclass
class Runner:
    """How to run per-capture tasks: inline (the default), in ``workers`` local processes, or on the Dask
    cluster named by ``scheduler``.

    Inline is the default because on the 2-vCPU machines we measure on, two decoding processes share
    memory bandwidth and scale only ~1.5x for the decode itself and less end to end (docs/performance.md).
    """

    workers: int | None = 1
    scheduler: str | None = None
    min_bytes: int = PARALLEL_MIN_BYTES
    spill_dir: str | None = None

    def effective_workers(self, tasks: int) -> int:
        return max(1, min(tasks, self.workers or os.cpu_count() or 1))

    def decode(
        self,
        paths: list[Path],
        counts: list[int],
        vxlan_ports: tuple[int, ...],
        layout: dict[str, np.dtype | str],
        progress: Callable[[int], None] | None = None,
        indexes: list | None = None,
    ) -> dict[str, object]:
        """All captures' packet columns, concatenated in the order given.

        ``layout`` maps each decoded column to its dtype, or "category" for categoricals; ``indexes``
        are the captures' frame indexes when the caller has them (inline decoding reuses them).
        """
        tick = progress or (lambda done: None)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(starts[-1])
        dtypes = {name: (CODES if kind == "category" else np.dtype(kind)) for name, kind in layout.items()}
        n = self.effective_workers(len(paths))
        local_pool = not self.scheduler and n > 1 and sum(p.stat().st_size for p in paths) >= self.min_bytes
        if local_pool:
            spill = Path(tempfile.mkdtemp(prefix="calforensics-cols-", dir=self.spill_dir))
            self._spilled = spill
            out = {
                name: np.lib.format.open_memmap(spill / f"{name}.npy", mode="w+", dtype=dt, shape=(total,))
                for name, dt in dtypes.items()
            }
            for arr in out.values():
                arr.flush()
            with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork")) as pool:
                futures = [
                    pool.submit(decode_into_files, str(p), vxlan_ports, str(spill), int(s))
                    for p, s in zip(paths, starts, strict=False)
                ]
                cats = []
                for i, fut in enumerate(futures):
                    tick(i)
                    cats.append(fut.result())
            # plain ndarray views over the mapped files: the table pages them in from the page cache
            out = {name: np.asarray(np.load(spill / f"{name}.npy", mmap_mode="r+")) for name in dtypes}
        elif len(paths) == 1 and not self.scheduler:
            # one capture: its decoded columns are the table already; copying them would double the peak
            tick(0)
            cols = decode_columns(indexes[0], vxlan_ports) if indexes else decode_capture(str(paths[0]), vxlan_ports)
            return {
                name: (categorical_of(cols[name]) if kind == "category" else np.asarray(cols[name], dtype=dtypes[name]))
                for name, kind in layout.items()
            }
        else:
            out = {name: np.empty(total, dtype=dt) for name, dt in dtypes.items()}
            results = (
                self._dask(paths, vxlan_ports)
                if self.scheduler
                else (decode_capture(str(p), vxlan_ports) for p in paths)
            )
            cats = []
            for i, (cols, s) in enumerate(zip(results, starts, strict=False)):
                tick(i)
                cats.append(_write(cols, out, int(s)))
        return _rebase_categoricals(out, layout, cats, starts)

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
        """Remove column files spilled by workers (the packets table maps them until then)."""
        spilled = getattr(self, "_spilled", None)
        if spilled is not None:
            shutil.rmtree(spilled, ignore_errors=True)
            self._spilled = None


def categorical_of(values) -> pd.Categorical:
    """A decoded categorical with plain-string categories (see schema.categorical)."""
    from .schema import categorical

    return categorical(values)


def _rebase_categoricals(
    out: dict[str, np.ndarray], layout: dict, cats: list[dict[str, list]], starts: np.ndarray
) -> dict[str, object]:
    """Per-capture category codes onto one set of categories per column."""
    cols: dict[str, object] = {}
    for name, kind in layout.items():
        if kind != "category":
            cols[name] = out[name]
            continue
        union: dict[str, int] = {}
        for c in cats:
            for v in c.get(name, []):
                union.setdefault(v, len(union))
        codes = out[name]
        for i, c in enumerate(cats):
            own = c.get(name, [])
            mapping = np.asarray([union[v] for v in own] + [-1], dtype=CODES)  # code -1 stays -1
            sl = slice(int(starts[i]), int(starts[i + 1]))
            if own and not np.array_equal(mapping[:-1], np.arange(len(own))):
                codes[sl] = mapping[codes[sl]]
        cols[name] = pd.Categorical.from_codes(np.asarray(codes), categories=pd.Index(list(union), dtype=object))
    return cols
