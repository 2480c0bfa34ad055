"""Latency: per hop pair (clock-corrected), handshake RTT, time inside each node, the NAT hop's cost.

A hop pair is two consecutive sightings of one packet instance. Ambiguous instances and repeated
copies are left out: their pairing is not known.

Everything is computed a block of hops at a time (a block never splits a packet instance) into
arrays from the bundle's allocator: for a spilled bundle those are mapped files, so memory holds a
block, the per-flow results, and one hop pair's delays at a time (sorted, for exact quantiles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..bundle import Bundle
from ..join.conversations import instance_blocks
from ..join.summaries import point_names
from ..runtime.memory import write_back
from ..runtime.partitions import parts_for
from ..schema import category_code, codes_dtype
from .blocks import hop_blocks, in_hop_order, select_hops

HOP_COLUMNS = [
    "from_node",
    "from_interface",
    "to_node",
    "to_interface",
    "nat",
    "count",
    "p50_us",
    "p90_us",
    "p99_us",
    "max_us",
]
FLOW_COLUMNS = ["flow_id", "handshake_rtt_us", "max_hop_us", "node_transit_us"]
PAIR_LABELS = ["from_node", "from_interface", "to_node", "to_interface", "nat"]
BLOCK_ROWS = 1 << 20  # hop pairs read at a time


def _plain(col: pd.Series) -> np.ndarray:
    """Comparable integers for a column (categorical codes; plain values otherwise)."""
    return col.array.codes if isinstance(col.dtype, pd.CategoricalDtype) else col.to_numpy()


def _pairs(b: Bundle) -> pd.DataFrame:
    """Consecutive sightings of each unambiguous packet instance, with the delay between them.

    Computed once per bundle (cached on it): capture points are compared as integer ids and only
    the distinct point names become strings (categoricals named from the points' ids).
    """
    cached = getattr(b, "_latency_pairs", None)
    if cached is not None:
        return cached
    h = b.hops
    blocks, allocate, _ = hop_blocks(b)
    nodes, interfaces = point_names(h)
    node_names, iface_names = pd.Categorical(nodes), pd.Categorical(interfaces)
    direction = h["direction"].array
    icmp_error = category_code(direction, "icmp-error")
    col = {name: h[name].to_numpy() for name in ("instance", "hop_index", "copy_no", "point", "flow_id")}
    col.update(ambiguous=h["ambiguous"].to_numpy(), ts=h["ts_corrected_ns"].to_numpy(), direction=direction.codes)
    tuples = [_plain(h[c]) for c in ("src", "dst", "sport", "dport")]
    n = len(h)
    out = {
        "flow_id": allocate(n, np.int64),
        "instance": allocate(n, np.int64),
        "from_node": allocate(n, codes_dtype(len(node_names.categories))),
        "from_interface": allocate(n, codes_dtype(len(iface_names.categories))),
        "to_node": allocate(n, codes_dtype(len(node_names.categories))),
        "to_interface": allocate(n, codes_dtype(len(iface_names.categories))),
        "delta_us": allocate(n, np.float64),
        "nat": allocate(n, np.bool_),
    }
    count = 0
    for lo, hi in blocks:
        keep = ~col["ambiguous"][lo:hi] & (col["copy_no"][lo:hi] == 0) & (col["direction"][lo:hi] != icmp_error)
        order = in_hop_order(lo + np.flatnonzero(keep), col["instance"], col["hop_index"])
        inst = col["instance"][order]
        same = np.zeros(len(order), dtype=bool)
        same[1:] = inst[1:] == inst[:-1]
        nat = np.zeros(len(order), dtype=bool)
        for values in tuples:
            v = values[order]
            nat[1:] |= v[1:] != v[:-1]
        point = col["point"][order]
        prev_point = np.roll(point, 1)
        ts = col["ts"][order]
        at = slice(count, count + int(same.sum()))
        out["flow_id"][at] = col["flow_id"][order][same]
        out["instance"][at] = inst[same]
        out["from_node"][at] = node_names.codes[prev_point[same]]
        out["from_interface"][at] = iface_names.codes[prev_point[same]]
        out["to_node"][at] = node_names.codes[point[same]]
        out["to_interface"][at] = iface_names.codes[point[same]]
        # integer difference first: float64 at epoch-nanosecond scale would lose ~256 ns
        out["delta_us"][at] = (ts - np.roll(ts, 1))[same] / 1e3
        out["nat"][at] = nat[same]
        for values in out.values():
            write_back(values[at])  # a spilled bundle's dirty pages written as they are made
        count = at.stop
    cols: dict[str, object] = {name: values[:count] for name, values in out.items()}
    for name, names in (("node", node_names), ("interface", iface_names)):
        for end in ("from", "to"):
            cols[f"{end}_{name}"] = pd.Categorical.from_codes(cols[f"{end}_{name}"], categories=names.categories)
    from ..schema import columns_frame

    pairs = columns_frame(cols)
    b._latency_pairs = pairs  # type: ignore[attr-defined]
    return pairs


@dataclass
class HopPairDelays:
    """The distinct hop pairs of a samples table (in the order of their label codes) and, one pair
    at a time, its delays sorted: exact quantiles and CDFs without sorting every sample at once."""

    pairs: pd.DataFrame  # PAIR_LABELS and count, one row per pair
    _key: np.ndarray
    _delays: np.ndarray

    def sorted_delays(self, i: int) -> np.ndarray:
        key = int(self.pairs["key"].iat[i])
        parts = [
            self._delays[lo : lo + BLOCK_ROWS][self._key[lo : lo + BLOCK_ROWS] == key]
            for lo in range(0, len(self._key), BLOCK_ROWS)
        ]
        return np.sort(np.concatenate(parts) if parts else np.zeros(0))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self.pairs)):
            yield self.sorted_delays(i)


def hop_pair_delays(samples: pd.DataFrame, allocate: Callable[[int, type], np.ndarray] = np.empty) -> HopPairDelays:
    """Group a samples table (hop_samples) by hop pair, a block of rows at a time."""
    labels = []
    for c in PAIR_LABELS:
        values = samples[c]
        if isinstance(values.dtype, pd.CategoricalDtype):
            labels.append((values.array.codes, np.asarray(values.array.categories, dtype=object)))
        else:
            codes, names = pd.factorize(values, use_na_sentinel=False)
            labels.append((codes, np.asarray(names, dtype=object)))
    n = len(samples)
    key = allocate(n, np.int64)
    counts: dict[int, int] = {}
    for lo in range(0, n, BLOCK_ROWS):
        k = np.zeros(min(n, lo + BLOCK_ROWS) - lo, dtype=np.int64)
        for codes, names in labels:
            k = k * (len(names) + 1) + codes[lo : lo + BLOCK_ROWS] + 1
        key[lo : lo + BLOCK_ROWS] = k
        write_back(key[lo : lo + BLOCK_ROWS])
        uniq, c = np.unique(k, return_counts=True)
        for u, m in zip(uniq.tolist(), c.tolist(), strict=True):
            counts[u] = counts.get(u, 0) + m
    keys = np.asarray(sorted(counts), dtype=np.int64)
    pairs = {"key": keys, "count": np.asarray([counts[k] for k in keys.tolist()], dtype=np.int64)}
    rest = keys.copy()
    for name, (_, names) in reversed(list(zip(PAIR_LABELS, labels, strict=True))):
        pairs[name] = np.append(names, None)[rest % (len(names) + 1) - 1]
        rest //= len(names) + 1
    frame = pd.DataFrame(pairs)[[*PAIR_LABELS, "count", "key"]]
    return HopPairDelays(frame, key, samples["delta_us"].to_numpy())


def _quantile(d: np.ndarray, q: float) -> float:
    """Linear interpolation between the closest ranks of sorted ``d``, as pandas' group-by quantile."""
    pos = q * (len(d) - 1)
    lo = int(np.floor(pos))
    return float(d[lo] + (d[min(lo + 1, len(d) - 1)] - d[lo]) * (pos - lo))


def per_hop_pair(b: Bundle) -> pd.DataFrame:
    p = _pairs(b)
    if p.empty:
        return pd.DataFrame(columns=HOP_COLUMNS)
    _, allocate, _ = hop_blocks(b)
    grouped = hop_pair_delays(p, allocate)
    out = grouped.pairs.drop(columns="key")
    stats = np.asarray(
        [(_quantile(d, 0.5), _quantile(d, 0.9), _quantile(d, 0.99), d[-1]) for d in grouped], dtype=np.float64
    ).reshape(-1, 4)
    out["p50_us"], out["p90_us"], out["p99_us"], out["max_us"] = stats.T
    for col in PAIR_LABELS[:4]:  # one row per hop pair: plain strings
        out[col] = out[col].astype(str).astype(object)
    out["nat"] = out["nat"].astype(bool)
    for col in ("p50_us", "p90_us", "p99_us", "max_us"):
        out[col] = out[col].round(1)
    # nat last: equal pairs keep False before True, as a group-by on them orders them
    return out[HOP_COLUMNS].sort_values([*PAIR_LABELS]).reset_index(drop=True)


def hop_samples(b: Bundle) -> pd.DataFrame:
    """Every hop-pair delay (for CDF plots)."""
    return _pairs(b)


def per_flow(b: Bundle) -> pd.DataFrame:
    """Handshake RTT at the client's first capture point, slowest hop, time spent inside nodes."""
    h = b.hops
    flows = b.flows
    proto, copy_no, flags, hop_index = (h[c].to_numpy() for c in ("proto", "copy_no", "tcp_flags", "hop_index"))
    direction = h["direction"].array
    fwd, rev = category_code(direction, "fwd"), category_code(direction, "rev")

    def handshake(lo: int, hi: int, first: bool) -> np.ndarray:
        tcp = (proto[lo:hi] == 6) & (copy_no[lo:hi] == 0)
        if first:  # the client's SYN at its first sighting
            return tcp & (hop_index[lo:hi] == 0) & (flags[lo:hi] & 0x12 == 0x02) & (direction.codes[lo:hi] == fwd)
        return tcp & (flags[lo:hi] & 0x12 == 0x12) & (direction.codes[lo:hi] == rev)  # SYN-ACKs

    when = ["flow_id", "point", "ts_corrected_ns"]
    syn = select_hops(b, lambda lo, hi: handshake(lo, hi, True), when)
    syn = syn.sort_values("ts_corrected_ns").drop_duplicates("flow_id")
    synack = select_hops(b, lambda lo, hi: handshake(lo, hi, False), when)
    m = syn.merge(synack, on=["flow_id", "point"], suffixes=("_syn", "_ack"))
    m = m[m["ts_corrected_ns_ack"] >= m["ts_corrected_ns_syn"]]
    rtt = m.groupby("flow_id")["ts_corrected_ns_ack"].min() - m.groupby("flow_id")["ts_corrected_ns_syn"].first()
    p = _pairs(b)
    n_flows = int(flows["flow_id"].max()) + 1 if len(flows) else 0
    max_hop = np.full(n_flows, -np.inf)
    has_pair = np.zeros(n_flows, dtype=bool)
    _, allocate, parts = hop_blocks(b)
    per_packet_all, flow_of_all = allocate(len(p), np.float64), allocate(len(p), np.int64)
    count = 0
    flow_id, delay = p["flow_id"].to_numpy(), p["delta_us"].to_numpy()
    instance = p["instance"].to_numpy()
    from_node, to_node = p["from_node"].array.codes, p["to_node"].array.codes
    for lo, hi in _pair_blocks(instance, BLOCK_ROWS):
        np.maximum.at(max_hop, flow_id[lo:hi], delay[lo:hi])
        has_pair[flow_id[lo:hi]] = True
        # time inside each node per packet (an instance belongs to one flow), then its median per
        # flow; grouped on one packed integer key rather than on three columns
        inside = lo + np.flatnonzero(from_node[lo:hi] == to_node[lo:hi])
        if not len(inside):
            continue
        nodes = to_node[inside].astype(np.int64)
        key = instance[inside] * (int(nodes.max()) + 2) + (nodes + 1)
        d, f = delay[inside], flow_id[inside]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        # each (packet, node) in one run, as the join orders hops (pd.unique: numpy 2.4's np.unique
        # without return_inverse takes seconds on millions of values)
        if len(pd.unique(key[starts])) == len(starts):
            per_packet, flow_of = np.add.reduceat(d, starts), f[starts]
        else:
            per_packet = pd.Series(d).groupby(key).sum().to_numpy()
            flow_of = pd.Series(f).groupby(key).first().to_numpy()
        at = slice(count, count + len(per_packet))
        per_packet_all[at], flow_of_all[at] = per_packet, flow_of
        write_back(per_packet_all[at])
        write_back(flow_of_all[at])
        count = at.stop
    transit = _medians_by_flow(per_packet_all[:count], flow_of_all[:count], parts)
    out = pd.DataFrame({"flow_id": flows["flow_id"]})
    ids = out["flow_id"].to_numpy()
    out["handshake_rtt_us"] = (rtt / 1e3).reindex(ids).round(1).to_numpy()
    out["max_hop_us"] = np.round(np.where(has_pair[ids], max_hop[ids], np.nan), 1) if n_flows else np.zeros(0)
    out["node_transit_us"] = transit.reindex(ids).round(1).to_numpy()
    return out[FLOW_COLUMNS]


def _pair_blocks(instance: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Blocks of hop pairs that never split a packet instance (pairs are in instance order)."""
    if len(instance) and (instance[1:] < instance[:-1]).any():
        return [(0, len(instance))]  # a table built otherwise: one block
    return instance_blocks(instance, rows)


def _medians_by_flow(values: np.ndarray, flow: np.ndarray, parts) -> pd.Series:
    """The median of ``values`` per flow id, as a group-by median gives it. For a spilled bundle, in
    ranges of flows kept on disk (a flow's values in one range), one range in memory at a time."""
    if parts is None or not parts.wanted(len(values)):
        return pd.Series(np.asarray(values)).groupby(np.asarray(flow)).median()
    n_flows = int(flow.max()) + 1
    counts = np.zeros(n_flows, dtype=np.int64)
    for lo in range(0, len(flow), BLOCK_ROWS):
        counts += np.bincount(flow[lo : lo + BLOCK_ROWS], minlength=n_flows)
    cuts = np.searchsorted(np.cumsum(counts), np.linspace(0, len(flow), parts_for(len(flow), parts.rows) + 1)[1:-1])
    lows = np.r_[0, cuts]
    store = parts.files("medians", len(lows), {"value": np.float64, "flow": np.int64})
    try:
        for lo in range(0, len(flow), BLOCK_ROWS):
            f = flow[lo : lo + BLOCK_ROWS]
            store.append(np.searchsorted(lows, f, side="right") - 1, {"value": values[lo : lo + BLOCK_ROWS], "flow": f})
        medians = [pd.Series(part["value"]).groupby(part["flow"]).median() for part in store]
    finally:
        store.remove()
    medians = [m for m in medians if len(m)]
    return pd.concat(medians).sort_index() if medians else pd.Series(dtype=float)
