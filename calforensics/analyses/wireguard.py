"""WireGuard sessions and the summary of the message ↔ plaintext match (the match itself is part of
the join, calforensics/join/wireguard.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

SESSION_COLUMNS = [
    "node",
    "interface",
    "direction",
    "peer",
    "outer_src",
    "outer_dst",
    "receiver_index",
    "messages",
    "keepalives",
    "first_counter",
    "last_counter",
    "counter_gaps",
    "first_ns",
    "last_ns",
    "matched",
    "ambiguous",
    "segments",
    "unmatched",
]


def sessions(wg: pd.DataFrame) -> pd.DataFrame:
    """One row per session seen at a capture point: data messages and keepalives of one receiver
    index, its counter range and the values missing from it (lost between encryption and this tap,
    or upstream of it), and how its messages matched."""
    data = wg[wg["msg_type"].astype(str).isin(["data", "keepalive"]) & (wg["counter"] >= 0)]
    if data.empty:
        return pd.DataFrame(columns=SESSION_COLUMNS)
    match = data["match"].astype(str)
    d = data.assign(
        keepalive=(data["msg_type"].astype(str) == "keepalive"),
        matched=match.isin(["exact", "ambiguous"]),
        is_ambiguous=match == "ambiguous",
        segment=match == "segment",
        lone=match == "unmatched",
    )
    keys = ["node", "interface", "direction", "peer", "outer_src", "outer_dst", "receiver_index"]
    g = d.groupby(keys, observed=True, sort=True, dropna=False)
    out = g.agg(
        messages=("counter", "size"),
        keepalives=("keepalive", "sum"),
        first_counter=("counter", "min"),
        last_counter=("counter", "max"),
        distinct=("counter", "nunique"),
        first_ns=("ts_ns", "min"),
        last_ns=("ts_ns", "max"),
        matched=("matched", "sum"),
        ambiguous=("is_ambiguous", "sum"),
        segments=("segment", "sum"),
        unmatched=("lone", "sum"),
    ).reset_index()
    out["counter_gaps"] = out["last_counter"] - out["first_counter"] + 1 - out["distinct"]
    out = out.sort_values(["node", "direction", "peer", "first_ns"], kind="stable").reset_index(drop=True)
    for col in ("messages", "keepalives", "matched", "ambiguous", "segments", "unmatched", "counter_gaps"):
        out[col] = out[col].astype(np.int64)
    return out[SESSION_COLUMNS]


def summary(wg: pd.DataFrame, sess: pd.DataFrame, unpaired_plaintexts: int) -> dict | None:
    """The findings' `wireguard` section, or None when the bundle has no WireGuard messages."""
    if wg.empty:
        return None
    match = wg["match"].astype(str)
    kind = wg["msg_type"].astype(str)
    exact = wg[match == "exact"]
    # a session is seen at both ends: count index changes per outer address pair, not per capture
    per_path = sess.groupby(["outer_src", "outer_dst"], observed=True)["receiver_index"].nunique()
    return {
        "messages": len(wg),
        "matched": int(match.isin(["exact", "ambiguous"]).sum()),
        "ambiguous": int((match == "ambiguous").sum()),
        "segmented": int((match == "segment").sum()),
        "unmatched_outer": int((match == "unmatched").sum()),
        "unmatched_inner": unpaired_plaintexts,
        "no_plaintext_capture": int((match == "no_plaintext_capture").sum()),
        "keepalives": int((kind == "keepalive").sum()),
        "handshakes": int(kind.isin(["initiation", "response", "cookie"]).sum()),
        "rekeys": int((per_path - 1).clip(lower=0).sum()),
        "overhead_bytes": None
        if exact.empty
        else {
            "min": int(exact["overhead_bytes"].min()),
            "max": int(exact["overhead_bytes"].max()),
            "mean": round(float(exact["overhead_bytes"].mean()), 1),
        },
        "sessions": [
            {
                "node": str(r.node),
                "peer": str(r.peer),
                "direction": str(r.direction),
                "outer_src": str(r.outer_src),
                "outer_dst": str(r.outer_dst),
                "receiver_index": int(r.receiver_index),
                "messages": int(r.messages),
                "first_counter": int(r.first_counter),
                "last_counter": int(r.last_counter),
                "counter_gaps": int(r.counter_gaps),
                "matched": int(r.matched),
                "segments": int(r.segments),
                "unmatched": int(r.unmatched),
            }
            for r in sess.itertuples(index=False)
        ],
    }
