"""The findings document (findings.json): stable keys, published schema in docs/findings.schema.json.

Plain data only (str, int, float, bool, None, lists, dicts), sorted deterministically, with no
generation time, so the same bundle always gives the same bytes.
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Iterator
from itertools import starmap

import numpy as np
import pandas as pd

from . import wireguard
from .result import SCHEMA_VERSION, SEVERITY_ORDER, Analysis


def _py(v):
    """numpy scalars to Python; NaN to None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _records(df: pd.DataFrame) -> Iterator:
    """Rows as named tuples built from whole-column lists: itertuples walks arrow-backed string
    columns one element at a time, which was a fifth of the findings' time on 20,000 flows."""
    row = namedtuple("row", list(df.columns))  # type: ignore[misc]
    return starmap(row, zip(*(df[c].tolist() for c in df.columns), strict=True))


def _point(text: str, roles: dict) -> dict | None:
    if not text:
        return None
    node, _, iface = text.partition(":")
    return {"node": node, "interface": iface, "role": roles.get((node, iface), "")}


def build_findings(a: Analysis) -> dict:
    b = a.bundle
    caps = b.captures
    roles = {(str(r.node), str(r.interface)): str(r.role) for r in _records(caps)}
    flows = b.flows
    anomalies = b.anomalies
    # a path's list of points is made once per distinct path and shared by the flows that took it
    # (a dict per point per flow was half the findings' time): the document is for reading
    paths = {path: [_point(p, roles) for p in path.split(" > ") if p] for path in set(flows["path_fwd"].tolist())}
    by_kind = anomalies.groupby("kind", observed=True).size().sort_index()
    doc = {
        "schema_version": SCHEMA_VERSION,
        "bundle": {
            "name": b.name,
            "nodes": b.nodes,
            "focus": b.focus.describe() if b.focus else None,
            "dataplane": [
                {
                    "node": str(r.node),
                    "mode": str(r.mode),
                    "encryption": str(r.encryption) or None,
                    "evidence": r.evidence,
                }
                for r in _records(b.dataplane)
            ],
            "captures": [
                {
                    "node": str(r.node),
                    "interface": str(r.interface),
                    "role": str(r.role),
                    "packets": int(r.packets),
                    "start_ns": int(r.first_ns),
                    "end_ns": int(r.last_ns),
                }
                for r in _records(caps.sort_values(["node", "interface"]))
            ],
        },
        "clock_offsets": [
            {
                "node": str(r.node),
                "offset_ns": int(r.offset_ns),
                "uncertainty_ns": int(r.uncertainty_ns),
                "method": str(r.method),
            }
            for r in _records(b.clock_offsets)
        ],
        "flows": [
            {
                "id": int(f.flow_id),
                "proto": str(f.proto),
                "client_ip": f.client_ip,
                "client_port": _port(f.client_port),
                "server_ip": f.server_ip,
                "server_port": _port(f.server_port),
                "service": f.service or None,
                "service_via": str(f.service_via) or None,
                "backend_ip": f.backend_ip or None,
                "backend_port": _port(f.backend_port) if f.backend_ip else None,
                "snat_ip": f.snat_ip or None,
                "snat_port": _port(f.snat_port) if f.snat_ip else None,
                "packets": int(f.packets_fwd + f.packets_rev),
                "bytes": int(f.bytes_fwd + f.bytes_rev),
                "verdict": str(f.verdict),
                "peer_redirected": int(f.peer_redirected),
                "conn_state": f.conn_state,
                "history": f.history,
                "path": paths[f.path_fwd],
            }
            for f in _records(flows[flows["scope"] == "routed"])
        ],
        "drops": [
            {
                "flow_id": int(d.flow_id),
                "proto": d.proto,
                "src_ip": d.src_ip,
                "src_port": _port(d.src_port),
                "dst_ip": d.dst_ip,
                "dst_port": _port(d.dst_port),
                "service": d.service or None,
                "packets": int(d.packets),
                "last_seen": _strip_role(_point(d.last_seen, roles)),
                "missing_at": _strip_role(_point(d.missing_at, roles)),
                "cause": None
                if not d.cause_kind
                else {
                    "kind": d.cause_kind,
                    "node": d.cause_node,
                    "table": d.cause_table or None,
                    "chain": d.cause_chain or None,
                    "rule_comment": d.cause_rule_comment or None,
                    "policy": d.cause_policy or None,
                    "counter_packets": int(d.cause_counter_packets) if d.cause_counter_packets >= 0 else None,
                },
                "evidence": list(d.evidence),
                "confidence": d.confidence,
            }
            for d in _records(a.drops)
        ],
        "overhead": {
            "tunnels": [
                {
                    "type": t.type,
                    "vni": int(t.vni),
                    "src_node": t.src_node,
                    "dst_node": t.dst_node,
                    "packets": int(t.packets),
                    "overhead_bytes_per_packet": int(t.overhead_bytes_per_packet),
                    "overhead_bytes": int(t.overhead_bytes),
                    "share_of_wire_bytes": float(t.share_of_wire_bytes),
                }
                for t in _records(a.tunnels)
            ],
            "mtu_issues": [
                {
                    "kind": m.kind,
                    "flow_id": int(m.flow_id) if m.flow_id >= 0 else None,
                    "node": m.node,
                    "interface": m.interface or None,
                    "mtu": int(m.mtu) if m.mtu >= 0 else None,
                    "detail": m.detail,
                }
                for m in _records(a.mtu_issues)
            ],
        },
        "latency": {
            "hops": [
                {
                    "from": {"node": h.from_node, "interface": h.from_interface},
                    "to": {"node": h.to_node, "interface": h.to_interface},
                    "nat": bool(h.nat),
                    "count": int(h.count),
                    "p50_us": _py(h.p50_us),
                    "p90_us": _py(h.p90_us),
                    "p99_us": _py(h.p99_us),
                    "max_us": _py(h.max_us),
                }
                for h in _records(a.latency_hops)
            ],
            "flows": [
                {"flow_id": int(r.flow_id), "handshake_rtt_us": _py(r.handshake_rtt_us)}
                for r in _records(a.latency_flows)
                if not math.isnan(r.handshake_rtt_us)
            ],
        },
        "wireguard": wireguard.summary(b.wireguard, a.wireguard_sessions, len(b.wireguard_unpaired_plaintexts)),
        "anomalies": {"total": len(anomalies), "by_kind": {str(k): int(v) for k, v in by_kind.items()}},
        "link_scope_flows": int((flows["scope"] == "link").sum()),
    }
    doc["findings"] = _headlines(a, doc)
    return doc


def _port(p) -> int | None:
    p = int(p)
    return p if p >= 0 else None


def _strip_role(p: dict | None) -> dict | None:
    return None if p is None else {"node": p["node"], "interface": p["interface"]}


def _headlines(a: Analysis, doc: dict) -> list[dict]:
    """What the report leads with, most severe first."""
    out = []
    # drops alike (same service, same stretch of path, same cause) make one headline: an incident
    # can drop thousands of flows the same way, and the report should lead with that, once
    alike: dict[tuple, list[dict]] = {}
    for d in doc["drops"]:
        c = d["cause"] or {}
        key = (
            d["proto"],
            d["dst_ip"],
            d["dst_port"],
            repr(d["last_seen"]),
            repr(d["missing_at"]),
            repr(sorted(c.items())),
            d["confidence"],
        )
        alike.setdefault(key, []).append(d)
    for group in alike.values():
        d = group[0]
        c = d["cause"] or {}
        where = f"{d['last_seen']['node']}:{d['last_seen']['interface']}" if d["last_seen"] else "?"
        missing = f" before {d['missing_at']['node']}:{d['missing_at']['interface']}" if d["missing_at"] else ""
        why = ""
        if c.get("chain"):
            why = f"; {c['kind'].replace('_', ' ')} in {c['chain']} on {c['node']}" + (
                f" (policy {c['policy']})" if c.get("policy") else ""
            )
        elif c.get("kind") == "mtu_exceeded":
            why = f"; too big for the path (ICMP fragmentation needed from {c['node'] or 'a router'})"
        what = f"{d['proto'].upper()} {d['src_ip']}:{d['src_port']} → {d['dst_ip']}:{d['dst_port']}"
        if len(group) > 1:
            what = (
                f"{len(group)} {d['proto'].upper()} flows to {d['dst_ip']}:{d['dst_port']} (the first from "
                f"{d['src_ip']}:{d['src_port']})"
            )
        out.append(
            {
                "severity": "critical" if d["confidence"] == "high" else "high",
                "kind": "drop",
                "flow_id": d["flow_id"],
                "title": f"{what} dropped after {where}{missing}{why}",
                "confidence": d["confidence"],
            }
        )
    for m in doc["overhead"]["mtu_issues"]:
        out.append(
            {
                "severity": "high"
                if m["kind"] in ("icmp_frag_needed", "exceeds_tunnel_mtu", "tunnel_mtu_too_large")
                else "medium",
                "kind": f"mtu:{m['kind']}",
                "flow_id": m["flow_id"],
                "title": m["detail"],
                "confidence": "high",
            }
        )
    for off in doc["clock_offsets"]:
        if off["uncertainty_ns"] < 0:
            out.append(
                {
                    "severity": "medium",
                    "kind": "clock",
                    "flow_id": None,
                    "confidence": "high",
                    "title": f"clock of {off['node']} could not be aligned: {off['method']}",
                }
            )
    ebpf = [d["node"] for d in doc["bundle"]["dataplane"] if d["mode"] == "ebpf"]
    if ebpf:
        out.append(
            {
                "severity": "info",
                "kind": "dataplane",
                "flow_id": None,
                "confidence": "high",
                "title": f"Calico eBPF dataplane on {', '.join(ebpf)}: services from BPF NAT, NAT legs from BPF "
                "conntrack, drops placed on BPF hooks (their counters are cumulative, not per flow)",
            }
        )
    redirected = [f for f in doc["flows"] if f["peer_redirected"]]
    if redirected:
        out.append(
            {
                "severity": "info",
                "kind": "peer_redirect",
                "flow_id": None,
                "confidence": "high",
                "title": f"{len(redirected)} answered flow(s) with {sum(f['peer_redirected'] for f in redirected)} "
                "packet(s) to the pod not shown on its host-side veth: eBPF peer redirect skips that tap, so "
                "they count as delivered, not dropped",
            }
        )
    ctlb = [f for f in doc["flows"] if f["service_via"] == "backend"]
    for service in sorted({f["service"] for f in ctlb}):
        mine = [f for f in ctlb if f["service"] == service]
        out.append(
            {
                "severity": "info",
                "kind": "connect_time_lb",
                "flow_id": mine[0]["id"],
                "confidence": "medium",
                "title": f"{len(mine)} TCP flow(s) went straight to a backend of {service}: dialled through the "
                "service with connect-time load balancing (the ClusterIP never shows on the wire), or directly",
            }
        )
    wg = doc["wireguard"]
    if wg:
        data = wg["matched"] + wg["segmented"] + wg["unmatched_outer"]
        overhead = wg["overhead_bytes"]
        per_packet = f"; {overhead['min']}-{overhead['max']} bytes of overhead per packet" if overhead else ""
        lost = wg["unmatched_outer"] + wg["unmatched_inner"] + wg["ambiguous"]
        out.append(
            {
                "severity": "medium" if lost else "info",
                "kind": "wireguard",
                "flow_id": None,
                "confidence": "high" if not wg["ambiguous"] else "medium",
                "title": f"WireGuard: {wg['matched'] + wg['segmented']} of {data} data messages tied to their "
                f"plaintext ({wg['ambiguous']} ambiguous, {wg['segmented']} GSO/GRO segments), "
                f"{wg['unmatched_outer']} message(s) and {wg['unmatched_inner']} plaintext(s) without a partner; "
                f"{wg['handshakes']} handshake message(s), {wg['rekeys']} rekey(s), {wg['keepalives']} keepalive(s)"
                f"{per_packet}",
            }
        )
        gaps = sum(s["counter_gaps"] for s in wg["sessions"])
        if gaps:
            out.append(
                {
                    "severity": "medium",
                    "kind": "wireguard_loss",
                    "flow_id": None,
                    "confidence": "high",
                    "title": f"{gaps} WireGuard counter value(s) missing from captured sessions: messages lost "
                    "between encryption and the capture point (sender side) or in the network (receiver side only)",
                }
            )
    unobserved = sum(1 for f in doc["flows"] if f["verdict"] == "unobserved")
    if unobserved:
        out.append(
            {
                "severity": "info",
                "kind": "unobserved",
                "flow_id": None,
                "confidence": "high",
                "title": f"{unobserved} flow(s) not observed where delivery would show (no capture there, "
                "no reply): not counted as drops",
            }
        )
    if doc["link_scope_flows"]:
        out.append(
            {
                "severity": "info",
                "kind": "link_scope",
                "flow_id": None,
                "confidence": "high",
                "title": f"{doc['link_scope_flows']} link-local or multicast flow(s) (e.g. IPv6 neighbour "
                "discovery) left out of the flow counts",
            }
        )
    for t in doc["overhead"]["tunnels"]:
        out.append(
            {
                "severity": "info",
                "kind": "overhead",
                "flow_id": None,
                "confidence": "high",
                "title": f"{t['type'].upper()} {t['src_node']} → {t['dst_node']}: {t['overhead_bytes_per_packet']} "
                f"bytes per packet, {t['share_of_wire_bytes']:.1%} of wire bytes ({t['packets']} packets)",
            }
        )
    if doc["anomalies"]["total"]:
        out.append(
            {
                "severity": "low",
                "kind": "anomalies",
                "flow_id": None,
                "confidence": "high",
                "title": f"{doc['anomalies']['total']} anomalies while reading the bundle (see the anomalies table)",
            }
        )
    return sorted(out, key=lambda x: (SEVERITY_ORDER[x["severity"]], x["kind"], x["flow_id"] or -1, x["title"]))
