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


def _pairs(b: Bundle) -> pd.DataFrame:
    h = b.hops
    h = h[~h["ambiguous"] & (h["copy_no"] == 0) & (h["direction"] != "icmp-error")].sort_values(
        ["instance", "hop_index"]
    )
    inst = h["instance"].to_numpy()
    same = np.zeros(len(h), dtype=bool)
    same[1:] = inst[1:] == inst[:-1]
    prev = h.shift(1)
    tuple_now = [h[c].astype(str).to_numpy() for c in ("src", "dst")] + [h[c].to_numpy() for c in ("sport", "dport")]
    tuple_prev = [prev[c].astype(str).to_numpy() for c in ("src", "dst")] + [
        prev[c].to_numpy() for c in ("sport", "dport")
    ]
    nat = np.zeros(len(h), dtype=bool)
    for a, c in zip(tuple_now, tuple_prev, strict=True):
        nat |= a != c
    return pd.DataFrame(
        {
            "flow_id": h["flow_id"].to_numpy()[same],
            "instance": inst[same],
            "from_node": prev["node"].astype(str).to_numpy()[same],
            "from_interface": prev["interface"].astype(str).to_numpy()[same],
            "to_node": h["node"].astype(str).to_numpy()[same],
            "to_interface": h["interface"].astype(str).to_numpy()[same],
            "delta_us": (h["ts_corrected_ns"].to_numpy() - prev["ts_corrected_ns"].to_numpy())[same] / 1e3,
            "nat": nat[same],
        }
    )


def per_hop_pair(b: Bundle) -> pd.DataFrame:
    p = _pairs(b)
    if p.empty:
        return pd.DataFrame(columns=HOP_COLUMNS)
    g = p.groupby(["from_node", "from_interface", "to_node", "to_interface", "nat"])["delta_us"]
    out = g.agg(
        count="size",
        p50_us=lambda x: x.quantile(0.5),
        p90_us=lambda x: x.quantile(0.9),
        p99_us=lambda x: x.quantile(0.99),
        max_us="max",
    ).reset_index()
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
