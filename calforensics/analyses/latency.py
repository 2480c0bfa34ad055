"""Latency: per hop pair (clock-corrected), handshake RTT, time inside each node, the NAT hop's cost.

A hop pair is two consecutive sightings of one packet instance. Ambiguous instances and repeated
copies are left out: their pairing is not known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..bundle import Bundle

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
    h = h[keep].sort_values(["instance", "hop_index"])
    inst = h["instance"].to_numpy()
    same = np.zeros(len(h), dtype=bool)
    same[1:] = inst[1:] == inst[:-1]
    nat = np.zeros(len(h), dtype=bool)
    for col in ("src", "dst", "sport", "dport"):
        v = _codes(h[col])
        nat[1:] |= v[1:] != v[:-1]
    point = h["point"].to_numpy()
    labels = h[["point", "node", "interface"]].drop_duplicates("point").set_index("point")
    node_of = labels["node"].astype(str)
    iface_of = labels["interface"].astype(str)
    prev_point = np.roll(point, 1)
    ts = h["ts_corrected_ns"].to_numpy()
    out = pd.DataFrame(
        {
            "flow_id": h["flow_id"].to_numpy()[same],
            "instance": inst[same],
            "from_node": node_of.reindex(prev_point[same]).to_numpy(object),
            "from_interface": iface_of.reindex(prev_point[same]).to_numpy(object),
            "to_node": node_of.reindex(point[same]).to_numpy(object),
            "to_interface": iface_of.reindex(point[same]).to_numpy(object),
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
    g = p.groupby(keys)["delta_us"]
    out = g.agg(count="size", max_us="max")
    q = g.quantile([0.5, 0.9, 0.99]).unstack()  # one vectorised pass, not a Python call per group
    out["p50_us"], out["p90_us"], out["p99_us"] = q[0.5], q[0.9], q[0.99]
    out = out.reset_index()
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
    tcp = h[(h["proto"] == 6) & (h["copy_no"] == 0)]
    syn = tcp[(tcp["hop_index"] == 0) & ((tcp["tcp_flags"] & 0x12) == 0x02) & (tcp["direction"] == "fwd")]
    syn = syn.sort_values("ts_corrected_ns").drop_duplicates("flow_id")[["flow_id", "point", "ts_corrected_ns"]]
    synack = tcp[((tcp["tcp_flags"] & 0x12) == 0x12) & (tcp["direction"] == "rev")][
        ["flow_id", "point", "ts_corrected_ns"]
    ]
    m = syn.merge(synack, on=["flow_id", "point"], suffixes=("_syn", "_ack"))
    m = m[m["ts_corrected_ns_ack"] >= m["ts_corrected_ns_syn"]]
    rtt = m.groupby("flow_id")["ts_corrected_ns_ack"].min() - m.groupby("flow_id")["ts_corrected_ns_syn"].first()
    p = _pairs(b)
    max_hop = p.groupby("flow_id")["delta_us"].max() if len(p) else pd.Series(dtype=float)
    inside = p[p["from_node"] == p["to_node"]]
    transit = (
        inside.groupby(["flow_id", "instance", "to_node"])["delta_us"].sum().groupby("flow_id").median()
        if len(inside)
        else pd.Series(dtype=float)
    )
    out = pd.DataFrame({"flow_id": flows["flow_id"]})
    out["handshake_rtt_us"] = (rtt / 1e3).reindex(out["flow_id"]).round(1).to_numpy()
    out["max_hop_us"] = max_hop.reindex(out["flow_id"]).round(1).to_numpy()
    out["node_transit_us"] = transit.reindex(out["flow_id"]).round(1).to_numpy()
    return out[FLOW_COLUMNS]
