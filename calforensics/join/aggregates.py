"""Per-flow aggregates over dense integer ids, without pandas group-bys: counts, sums, extremes and
distinct counts by bincount and ufunc.at, medians by one packed sort, strings joined per group by one
reduceat. The flow summaries and verdicts are built from these."""

from __future__ import annotations

import numpy as np
import pandas as pd


def per_flow(values: np.ndarray, groups: np.ndarray, index: pd.Index, how: str, fill) -> np.ndarray:
    """An aggregate of ``values`` per flow id in ``groups``, for every flow of ``index`` (``fill`` where
    a flow has none): size, sum, min, max or nunique. Flow ids are small dense integers, so this is
    bincount and ufunc.at into arrays, several times faster than a pandas group-by."""
    ids = index.to_numpy()
    lut = np.full(max(int(ids.max()) if len(ids) else -1, int(groups.max()) if len(groups) else -1) + 1, -1, np.int64)
    lut[ids] = np.arange(len(ids))
    pos = lut[groups]
    if (pos < 0).any():  # flows outside the index are left out, as a reindex would
        keep = pos >= 0
        pos, values = pos[keep], np.asarray(values)[keep]
    if how == "nunique":  # distinct (flow, value) pairs, packed into one integer, then their count per flow
        values = np.asarray(values, dtype=np.int64)
        low = int(values.min()) if len(values) else 0
        span = int(values.max()) - low + 1 if len(values) else 1
        if (len(ids) + 1) * span < 1 << 62:
            pos = pd.unique(pos * span + (values - low)) // span
        else:
            pos = np.unique(np.stack([pos, values]), axis=1)[0]
        how = "size"
    count = np.bincount(pos, minlength=len(ids))
    if how == "size":
        return count
    values = np.asarray(values, dtype=np.int64)
    if how == "sum":
        out = np.zeros(len(ids), dtype=np.int64)
        np.add.at(out, pos, values)
        return out
    ufunc, start = {"min": (np.minimum, np.iinfo(np.int64).max), "max": (np.maximum, np.iinfo(np.int64).min)}[how]
    out = np.full(len(ids), start, dtype=np.int64)
    ufunc.at(out, pos, values)
    out[count == 0] = fill
    return out


def group_medians(group: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct groups, median of ``values`` in each) as a pandas group-by median gives
    them: float64, the mean of the two middle values for an even count. Groups and values are
    packed into one integer and sorted once where they fit (a group-by median took a fifth of the
    flow summaries)."""
    group, values = np.asarray(group, dtype=np.int64), np.asarray(values, dtype=np.int64)
    if not len(group):
        return group, np.zeros(0, dtype=np.float64)
    low = int(values.min())
    span = int(values.max()) - low + 1
    if (int(group.max()) + 1) * span < 1 << 62:
        packed = np.sort(group * span + (values - low))
        g, v = packed // span, packed % span + low
    else:
        order = np.lexsort((values, group))
        g, v = group[order], values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, len(g)])
    lower, upper = starts + (counts - 1) // 2, starts + counts // 2
    return g[starts], (v[lower].astype(np.float64) + v[upper].astype(np.float64)) / 2


def spread(keys: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The value of each element of ``at``, where ``values[i]`` belongs to ``keys[i]`` (unique
    non-negative ints, every element of ``at`` among them): a lookup table, not a reindex."""
    lut = np.zeros(int(keys.max()) + 1 if len(keys) else 0, dtype=np.asarray(values).dtype)
    lut[keys] = values
    return lut[at]


def join_groups(df: pd.DataFrame, by: list[str], col: str, sep: str) -> pd.Series:
    """Concatenate a string column per group (rows already in order) without a Python call per group."""
    if df.empty:
        return pd.Series(dtype=object)
    keys = df[by].to_numpy()
    change = np.ones(len(df), dtype=bool)
    change[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    starts = np.flatnonzero(change)
    # one string per distinct value, not per row
    codes, uniques = pd.factorize(df[col].to_numpy(), use_na_sentinel=False)
    values = np.asarray([sep + str(v) for v in uniques], dtype=object)[codes]
    joined = np.add.reduceat(values, starts)
    index = (
        pd.MultiIndex.from_arrays([keys[starts, i] for i in range(len(by))], names=by)
        if len(by) > 1
        else pd.Index(keys[starts, 0], name=by[0])
    )
    return pd.Series([j[len(sep) :] for j in joined], index=index, dtype=object)
