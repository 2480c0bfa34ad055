"""How the analyses read the hops: a block at a time, so that a spilled bundle's analysis holds a
block, not the table. In memory, the whole table is one block."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..join.conversations import instance_blocks
from ..runtime.partitions import Partitioning
from ..schema import take_rows


def hop_blocks(b) -> tuple[list[tuple[int, int]], Callable[[int, type], np.ndarray], Partitioning | None]:
    """(blocks of hop rows that never split a packet instance, an allocator, the partitioning or
    None): for a spilled bundle, instance blocks and mapped files; else one block and memory."""
    runner = getattr(b, "runner", None)
    parts = runner.partitioning(len(b.packets)) if runner is not None else None
    n = len(b.hops)
    if parts is None or not parts.wanted(n):
        return [(0, n)], np.empty, None
    return instance_blocks(b.hops["instance"].to_numpy(), parts.block_rows), parts.allocate, parts


def select_hops(b, where: Callable[[int, int], np.ndarray], columns: list[str]) -> pd.DataFrame:
    """Some columns of the hops for which ``where(lo, hi)`` (a mask over rows [lo, hi)) holds,
    gathered block by block: no mask or gather as long as the whole table."""
    blocks, _, _ = hop_blocks(b)
    rows = [lo + np.flatnonzero(where(lo, hi)) for lo, hi in blocks]
    return take_rows(b.hops, np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64), columns)


def in_hop_order(rows: np.ndarray, instance: np.ndarray, hop_index: np.ndarray) -> np.ndarray:
    """Hop rows in (instance, hop_index) order. The join gives hops in that order already: the
    sort is only for tables built otherwise."""
    inst, hop = instance[rows], hop_index[rows]
    if ((inst[1:] > inst[:-1]) | ((inst[1:] == inst[:-1]) & (hop[1:] > hop[:-1]))).all():
        return rows
    return rows[np.lexsort((hop, inst))]
