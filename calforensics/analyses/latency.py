"""Latency: per hop pair (clock-corrected), handshake RTT, time inside each node, the NAT hop's cost.

A hop pair is two consecutive sightings of one packet instance. Ambiguous instances and repeated
copies are left out: their pairing is not known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..bundle import Bundle
from ..schema import take_rows

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


def _codes(col: pd.Series) -> np.ndarray:
    """Comparable integers for a column (categorical codes; plain values otherwise)."""
    return np.asarray(col.cat.codes) if isinstance(col.dtype, pd.CategoricalDtype) else col.to_numpy()


def _pairs(b: Bundle) -> pd.DataFrame:
    """Consecutive sightings of each unambiguous packet instance, with the delay between them.

    Computed once per bundle (cached on it): the hops table can have millions of rows, so capture
    points are compared as integer ids and only the distinct point labels become strings.
    """
    cached = getattr(b, "_latency_pairs", None)
    if cached is not None:
        return cached
    h = b.hops
    keep = ~h["ambiguous"].to_numpy() & (h["copy_no"].to_numpy() == 0) & (h["direction"] != "icmp-error").to_numpy()
    rows = np.flatnonzero(keep)
    # the rows in (instance, hop_index) order, and only the columns needed, gathered one at a time:
    # filtering and sorting the whole hops table would copy all of its ~35 columns twice
    inst_r, hop_r = h["instance"].to_numpy()[rows], h["hop_index"].to_numpy()[rows]
    in_order = (inst_r[1:] > inst_r[:-1]) | ((inst_r[1:] == inst_r[:-1]) & (hop_r[1:] > hop_r[:-1]))
    # the join gives hops in that order already: the sort is only for tables built otherwise
    order = rows if in_order.all() else rows[np.lexsort((hop_r, inst_r))]
    del inst_r, hop_r, in_order
    del rows, keep
    inst = h["instance"].to_numpy()[order]
    same = np.zeros(len(order), dtype=bool)
    same[1:] = inst[1:] == inst[:-1]
    nat = np.zeros(len(order), dtype=bool)
    for col in ("src", "dst", "sport", "dport"):
        v = _codes(h[col])[order]
        nat[1:] |= v[1:] != v[:-1]
    point = h["point"].to_numpy()[order]
    labels = h[["point", "node", "interface"]].iloc[order].drop_duplicates("point").set_index("point")
    # point labels as categoricals built from point ids: object columns of node and interface names
    # would cost 8 bytes a cell and a hash per cell wherever they are grouped
    node_names = pd.Categorical(labels["node"].astype(str).to_numpy(object))
    iface_names = pd.Categorical(labels["interface"].astype(str).to_numpy(object))
    slot = np.full(int(labels.index.max()) + 1 if len(labels) else 1, -1, dtype=np.int64)
    slot[labels.index.to_numpy()] = np.arange(len(labels))

    def label(names: pd.Categorical, points: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(names.codes[slot[points]], categories=names.categories)

    prev_point = np.roll(point, 1)
    ts = h["ts_corrected_ns"].to_numpy()[order]
    out = pd.DataFrame(
        {
            "flow_id": h["flow_id"].to_numpy()[order][same],
            "instance": inst[same],
            "from_node": label(node_names, prev_point[same]),
            "from_interface": label(iface_names, prev_point[same]),
            "to_node": label(node_names, point[same]),
            "to_interface": label(iface_names, point[same]),
            "delta_us": (ts - np.roll(ts, 1))[same] / 1e3,
            "nat": nat[same],
        }
    )
    b._latency_pairs = out  # type: ignore[attr-defined]
    return out


def per_hop_pair(b: Bundle) -> pd.DataFrame:
    p = _pairs(b)
    if p.empty:
        return pd.DataFrame(columns=HOP_COLUMNS)
    keys = ["from_node", "from_interface", "to_node", "to_interface", "nat"]
    g = p.groupby(keys, observed=True)["delta_us"]
    out = g.agg(count="size", max_us="max")
    q = g.quantile([0.5, 0.9, 0.99]).unstack()  # one vectorised pass, not a Python call per group
    out["p50_us"], out["p90_us"], out["p99_us"] = q[0.5], q[0.9], q[0.99]
    out = out.reset_index()
    for col in keys[:4]:  # one row per hop pair: plain strings again
        out[col] = out[col].astype(str).astype(object)
    for col in ("p50_us", "p90_us", "p99_us", "max_us"):
        out[col] = out[col].round(1)
    return (
        out[HOP_COLUMNS].sort_values(["from_node", "from_interface", "to_node", "to_interface"]).reset_index(drop=True)
    )


def hop_samples(b: Bundle) -> pd.DataFrame:
    """Every hop-pair delay (for CDF plots)."""
    return _pairs(b)


def per_flow(b: Bundle) -> pd.DataFrame:
    """Handshake RTT at the client's first capture point, slowest hop, time spent inside nodes."""
    h = b.hops
    flows = b.flows
    tcp = (h["proto"].to_numpy() == 6) & (h["copy_no"].to_numpy() == 0)
    flags = h["tcp_flags"].to_numpy() & 0x12
    fwd, rev = (h["direction"] == "fwd").to_numpy(), (h["direction"] == "rev").to_numpy()
    when = ["flow_id", "point", "ts_corrected_ns"]
    syn = take_rows(h, np.flatnonzero(tcp & (h["hop_index"].to_numpy() == 0) & (flags == 0x02) & fwd), when)
    syn = syn.sort_values("ts_corrected_ns").drop_duplicates("flow_id")
    synack = take_rows(h, np.flatnonzero(tcp & (flags == 0x12) & rev), when)
    m = syn.merge(synack, on=["flow_id", "point"], suffixes=("_syn", "_ack"))
    m = m[m["ts_corrected_ns_ack"] >= m["ts_corrected_ns_syn"]]
    rtt = m.groupby("flow_id")["ts_corrected_ns_ack"].min() - m.groupby("flow_id")["ts_corrected_ns_syn"].first()
    p = _pairs(b)
    max_hop = p.groupby("flow_id")["delta_us"].max() if len(p) else pd.Series(dtype=float)
    inside = p[p["from_node"] == p["to_node"]]
    transit = pd.Series(dtype=float)
    if len(inside):
        # time inside each node per packet (an instance belongs to one flow), then its median per
        # flow; grouped on one packed integer key rather than on three columns
        nodes = _codes(inside["to_node"])
        key = inside["instance"].to_numpy() * (int(nodes.max()) + 2) + (nodes + 1)
        delay, flow_ids = inside["delta_us"].to_numpy(), inside["flow_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        # each (packet, node) in one run, as the join orders hops (pd.unique: numpy 2.4's np.unique
        # without return_inverse takes seconds on millions of values)
        if len(pd.unique(key[starts])) == len(starts):
            per_packet, flow_of = np.add.reduceat(delay, starts), flow_ids[starts]
        else:
            per_packet = pd.Series(delay).groupby(key).sum().to_numpy()
            flow_of = pd.Series(flow_ids).groupby(key).first().to_numpy()
        transit = pd.Series(per_packet).groupby(flow_of).median()
    out = pd.DataFrame({"flow_id": flows["flow_id"]})
    out["handshake_rtt_us"] = (rtt / 1e3).reindex(out["flow_id"]).round(1).to_numpy()
    out["max_hop_us"] = max_hop.reindex(out["flow_id"]).round(1).to_numpy()
    out["node_transit_us"] = transit.reindex(out["flow_id"]).round(1).to_numpy()
    return out[FLOW_COLUMNS]
