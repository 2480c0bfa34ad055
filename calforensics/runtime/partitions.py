"""Partitions on disk, for tables larger than memory (a Grace hash join's first step).

Rows are sent, a block at a time, to the files of the partition each belongs to; afterwards each
partition is read back whole, on its own. Work that never mixes rows of two partitions (the join
within a fingerprint range, a flow's summary within a range of flow ids) then needs memory for one
partition, not for the bundle, and reads the large table once, in order, instead of once per
partition. Files are plain arrays (``ndarray.tofile``), one per partition and column.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PartitionFiles:
    """Columns of rows, split into ``parts`` partitions kept as files under ``folder``."""

    def __init__(self, folder: Path, parts: int, dtypes: dict[str, np.dtype | type]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtypes = {name: np.dtype(dt) for name, dt in dtypes.items()}
        self.sizes = np.zeros(parts, dtype=np.int64)

    def _path(self, part: int, name: str) -> Path:
        return self.folder / f"{part}.{name}"

    def append(self, part: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Add rows: ``part[i]`` is the partition of row i; rows keep their order within a partition."""
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(len(self.sizes) + 1))
        written = np.flatnonzero(np.diff(bounds)).tolist()
        try:
            for name, dtype in self.dtypes.items():
                grouped = np.asarray(columns[name], dtype=dtype)[order]  # one gather a column, then slices
                for p in written:
                    with open(self._path(p, name), "ab") as fh:
                        grouped[bounds[p] : bounds[p + 1]].tofile(fh)
                        fh.flush()
                        # start writing these pages back and let them go: the kernel's dirty-page
                        # throttling is global, so dirty pages piling up under a memory cgroup kill it
                        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:  # a full disk, mostly: one clear line for the CLI, not a traceback
            raise RuntimeError(
                f"cannot write partition files in {self.folder.parent}: {exc.strerror or exc} "
                "(give --spill-dir a disk with room)"
            ) from exc
        self.sizes += np.diff(bounds)

    def read(self, part: int, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """One partition's columns (all, or those named, in that order), whole, in memory."""
        names = columns if columns is not None else list(self.dtypes)
        if not self.sizes[part]:
            return {name: np.zeros(0, dtype=self.dtypes[name]) for name in names}
        return {name: np.fromfile(self._path(part, name), dtype=self.dtypes[name]) for name in names}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for p in range(len(self.sizes)):
            yield self.read(p)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def parts_for(rows: int, partition_rows: int) -> int:
    """How many partitions keep each near ``partition_rows`` rows (rows spread evenly over them)."""
    return max(1, -(-rows // max(1, partition_rows)))


@dataclass
class Partitioning:
    """How a table too large for memory is worked on: in partitions of about ``rows`` rows, kept
    in files under ``folder()``, with outputs in arrays from ``allocate`` (mapped files)."""

    rows: int
    folder: Callable[[], Path]
    allocate: Callable[[int, type], np.ndarray]
    block_rows: int = 1 << 20  # rows read from the large table at a time

    def wanted(self, rows: int) -> bool:
        return rows > self.rows

    def files(self, name: str, parts: int, dtypes: dict) -> PartitionFiles:
        return PartitionFiles(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.folder())), parts, dtypes)
