"""Drops: where a flow's packets stopped, and what on that path explains it, with typed evidence.

Evidence kinds: `observed` (seen at one capture point, absent at the next while it was capturing),
`counter` (a DROP/REJECT rule or Calico default drop on that path whose counter moved), `conntrack`
(UNREPLIED/INVALID entries), `syn_retries`, `icmp` (errors sent back, e.g. fragmentation needed),
`bpf_counter` (calico-bpf drop counters, cumulative), `bpf_conntrack` (legs not approved).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..bundle import Bundle
from ..flows import point_labels
from .blocks import select_hops

DROP_COLUMNS = [
    "flow_id",
    "proto",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "service",
    "direction",
    "packets",
    "first_ns",
    "last_ns",
    "last_seen",
    "missing_at",
    "cause_kind",
    "cause_node",
    "cause_table",
    "cause_chain",
    "cause_rule_comment",
    "cause_policy",
    "cause_counter_packets",
    "evidence",
    "confidence",
]
POLICY_KINDS = ("policy_deny", "end_of_tier", "no_profile")


def _split(point: str) -> tuple[str, str]:
    node, _, iface = point.partition(":")
    return node, iface


def _candidate_chains(last_seen: str, missing_at: str, roles: dict) -> list[tuple[str, str]]:
    """(node, chain) pairs whose drop rules could explain a loss between two capture points."""
    out = []
    m_node, m_iface = _split(missing_at)
    l_node, l_iface = _split(last_seen)
    if roles.get((m_node, m_iface)) == "workload":
        out.append((m_node, f"cali-tw-{m_iface}"))  # into the pod: its ingress policy
    if roles.get((l_node, l_iface)) == "workload" and missing_at != last_seen:
        out.append((l_node, f"cali-fw-{l_iface}"))  # out of the pod: its egress policy
    return out


def _lost_flow_hops(b: Bundle, lost_ids: np.ndarray) -> tuple[dict, dict]:
    """For the lost flows only, read once: distinct forward packets per (flow, capture point), and
    each flow's ICMP-error hops. (Filtering the whole hops table once per lost flow made an
    incident with 20,000 dropped flows take tens of minutes.)"""
    flow = b.hops["flow_id"].to_numpy()
    columns = ["flow_id", "instance", "direction", "point", "node", "interface", "ts_corrected_ns", "packet"]
    sub = select_hops(
        b, lambda lo, hi: np.isin(flow[lo:hi], lost_ids), [*columns, "icmp_type", "icmp_code", "src", "origin"]
    )
    direction = sub["direction"].astype(str).to_numpy()
    labels = point_labels(sub)[sub["point"].to_numpy()]  # a label string per capture point, not per hop
    fwd = direction == "fwd"
    seen = (
        pd.DataFrame(
            {
                "flow_id": sub["flow_id"].to_numpy()[fwd],
                "label": labels[fwd],
                "instance": sub["instance"].to_numpy()[fwd],
            }
        )
        .groupby(["flow_id", "label"])["instance"]
        .nunique()
    )
    errors = {int(fid): rows for fid, rows in sub[direction == "icmp-error"].groupby("flow_id", sort=False)}
    return {(int(k[0]), str(k[1])): int(v) for k, v in seen.items()}, errors


def _rule_cause(rules: pd.DataFrame, last_seen: str, missing_at: str, roles: dict) -> tuple[dict | None, dict | None]:
    """The drop rule on the path between two capture points whose counter moved, and its evidence."""
    for node, chain in _candidate_chains(last_seen, missing_at, roles):
        in_chain = rules[(rules["node"] == node) & (rules["chain"] == chain)]
        targets = set(in_chain["target"].astype(str))
        related = rules[(rules["node"] == node) & ((rules["chain"] == chain) | rules["chain"].isin(targets))]
        drops = related[related["action"].isin(["drop", "reject"]) & (related["packets"] > 0)]
        if drops.empty:
            continue
        drops = drops.assign(pref=drops["drop_kind"].isin(POLICY_KINDS)).sort_values(
            ["pref", "packets"], ascending=False
        )
        r = drops.iloc[0]
        cause = {
            "kind": str(r.drop_kind) or "rule",
            "node": node,
            "table": str(r.table),
            "chain": str(r.chain),
            "rule_comment": str(r.comment),
            "policy": str(r.policy),
            "counter_packets": int(r.packets),
        }
        evidence = {
            "kind": "counter",
            "detail": f"{r.action.upper()} rule in {r.table}/{r.chain} on {node} "
            f"({r.comment or r.match}) counted {int(r.packets)} packets"
            + (f"; policy {r.policy}" if str(r.policy) else ""),
        }
        return cause, evidence
    return None, None


def find_drops(b: Bundle) -> pd.DataFrame:
    flows = b.flows
    lost = flows[flows["verdict"].isin(["dropped", "partial"])]
    rules = b.rules
    rules = rules[(~rules["duplicate"]) & (rules["kind"] == "rule")]
    roles = {(str(r.node), str(r.interface)): str(r.role) for r in b.captures.itertuples(index=False)}
    windows = {
        f"{r.node}:{r.interface}": (int(r.window_start_ns), int(r.window_end_ns))
        for r in b.captures.itertuples(index=False)
    }
    ct = b.conntrack
    packets = b.packets
    seen_at, icmp_errors = _lost_flow_hops(b, lost["flow_id"].to_numpy())
    # conntrack entries by original tuple, and the causes and BPF counters of each stretch of path:
    # each looked up once, not once per lost flow
    ct_of: dict[tuple, list] = {}
    for e in ct.itertuples(index=False):
        ct_of.setdefault((str(e.orig_src), int(e.orig_sport), str(e.orig_dst), int(e.orig_dport)), []).append(e)
    causes: dict[tuple[str, str], tuple] = {}
    bpf: dict[str, list[dict]] = {}
    rows = []
    for f in lost.itertuples(index=False):
        evidence = []
        lost_packets = int(f.packets_fwd)
        if f.last_seen:
            lost_packets = seen_at.get((int(f.flow_id), str(f.last_seen)), 0) or lost_packets
            start, end = windows.get(f.missing_at, (-1, -1))
            capturing = f" (capturing from {_iso(start)} to {_iso(end)})" if start >= 0 else ""
            evidence.append(
                {
                    "kind": "observed",
                    "detail": f"{lost_packets} packet(s) seen at {f.last_seen}, none at "
                    f"{f.missing_at or 'the next capture point'}{capturing}",
                }
            )
        stretch = (str(f.last_seen), str(f.missing_at))
        if stretch not in causes:
            causes[stretch] = _rule_cause(rules, *stretch, roles)
        cause, counter = causes[stretch]
        cause = dict(cause) if cause is not None else None
        if counter is not None:
            evidence.append(dict(counter))
        if f.proto == "tcp" and f.conn_state in ("S0", "REJ", "RSTOS0"):
            syns = int(f.packets_fwd)
            evidence.append(
                {"kind": "syn_retries", "detail": f"{syns} SYN(s) ({max(0, syns - 1)} retransmissions), no SYN-ACK"}
            )
        for e in ct_of.get((str(f.client_ip), int(f.client_port), str(f.server_ip), int(f.server_port)), []):
            if e.unreplied or str(e.state) == "INVALID":
                evidence.append(
                    {
                        "kind": "conntrack",
                        "detail": f"{e.node}: {e.proto} {e.state} "
                        f"{'[UNREPLIED] ' if e.unreplied else ''}"
                        f"{e.orig_src}:{e.orig_sport} -> {e.orig_dst}:{e.orig_dport}",
                    }
                )
        if f.icmp_errors and int(f.flow_id) in icmp_errors:
            err = icmp_errors[int(f.flow_id)]
            first = err.sort_values("ts_corrected_ns").drop_duplicates("instance")
            for e in first.itertuples(index=False):
                mtu = int(packets.at[e.packet, "icmp_mtu"])
                what = f"ICMP {e.icmp_type}/{e.icmp_code}" + (
                    f" fragmentation needed, next-hop MTU {mtu}" if mtu >= 0 else ""
                )
                evidence.append(
                    {
                        "kind": "icmp",
                        "detail": f"{what} from {e.src} ({e.origin or 'unknown node'}), seen at {e.node}:{e.interface}",
                    }
                )
                if cause is None and mtu >= 0:
                    cause = {
                        "kind": "mtu_exceeded",
                        "node": str(e.origin),
                        "table": "",
                        "chain": "",
                        "rule_comment": "",
                        "policy": "",
                        "counter_packets": -1,
                    }
        if f.missing_at not in bpf:
            bpf[f.missing_at] = _bpf_evidence(b, f.missing_at)
        evidence += [dict(e) for e in bpf[f.missing_at]]
        if cause is not None and cause["counter_packets"] >= lost_packets:
            confidence = "high"
        elif cause is not None or any(e["kind"] in ("conntrack", "icmp", "syn_retries") for e in evidence):
            confidence = "medium"
        else:
            confidence = "low"
        cause = cause or {}
        rows.append(
            {
                "flow_id": int(f.flow_id),
                "proto": f.proto,
                "src_ip": f.client_ip,
                "src_port": int(f.client_port),
                "dst_ip": f.server_ip,
                "dst_port": int(f.server_port),
                "service": f.service,
                "direction": "fwd",
                "packets": lost_packets,
                "first_ns": int(f.first_ns),
                "last_ns": int(f.last_ns),
                "last_seen": f.last_seen,
                "missing_at": f.missing_at,
                "cause_kind": cause.get("kind", ""),
                "cause_node": cause.get("node", ""),
                "cause_table": cause.get("table", ""),
                "cause_chain": cause.get("chain", ""),
                "cause_rule_comment": cause.get("rule_comment", ""),
                "cause_policy": cause.get("policy", ""),
                "cause_counter_packets": cause.get("counter_packets", -1),
                "evidence": evidence,
                "confidence": confidence,
            }
        )
    return pd.DataFrame(rows, columns=DROP_COLUMNS)


def _bpf_evidence(b: Bundle, missing_at: str) -> list[dict]:
    """calico-bpf drop counters on the interface where packets went missing (cumulative since attach)."""
    node, iface = _split(missing_at)
    c = b.bpf_counters
    hits = c[
        (c["node"] == node)
        & (c["interface"] == iface)
        & (c["category"].str.contains("Dropped"))
        & ((c["ingress"] > 0) | (c["egress"] > 0) | (c["xdp"] > 0))
    ]
    return [
        {
            "kind": "bpf_counter",
            "detail": f"{node}:{iface} {r.category} {r.type}: ingress {r.ingress}, "
            f"egress {r.egress} (cumulative since the program was attached)",
        }
        for r in hits.itertuples(index=False)
    ]


def _iso(ns: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3] if ns >= 0 else "?"
