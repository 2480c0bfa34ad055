"""The findings document (findings.json): stable keys, published schema in docs/findings.schema.json.

Plain data only (str, int, float, bool, None, lists, dicts), sorted deterministically, with no
generation time, so the same bundle always gives the same bytes.
"""

from __future__ import annotations

import math
import re
from collections import namedtuple
from collections.abc import Iterator
from itertools import starmap

import numpy as np
import pandas as pd

from ..bundle import Bundle
from ..join.keys import SHORT_SNAPLEN
from ..join.summaries import role_of
from ..meaning.platform import NEWEST, show
from . import entities, flow_logs, pools, wireguard
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
    return {"node": node, "interface": iface, "role": role_of(roles, node, iface)}


def build_findings(a: Analysis) -> dict:
    """The whole document, section by section, then the headlines drawn from it."""
    b = a.bundle
    caps = b.captures
    roles = b.point_roles
    flows = b.flows
    anomalies = b.anomalies
    by_kind = anomalies.groupby("kind", observed=True).size().sort_index()
    doc = {
        "schema_version": SCHEMA_VERSION,
        "bundle": _bundle_section(b, caps),
        "clock_offsets": [
            {
                "node": str(r.node),
                "offset_ns": int(r.offset_ns),
                "uncertainty_ns": int(r.uncertainty_ns),
                "method": str(r.method),
            }
            for r in _records(b.clock_offsets)
        ],
        "flows": _flows_section(flows, roles),
        "drops": _drops_section(a.drops, roles),
        "overhead": _overhead_section(a),
        "latency": _latency_section(a),
        "wireguard": wireguard.summary(b.wireguard, a.wireguard_sessions, len(b.wireguard_unpaired_plaintexts)),
        "anomalies": {"total": len(anomalies), "by_kind": {str(k): int(v) for k, v in by_kind.items()}},
        "link_scope_flows": int((flows["scope"] == "link").sum()),
        "rule_counters": rule_counters(b.rules),
        "services": entities.service_summaries(b),
        "pods": entities.pod_summaries(b),
        "ip_pools": pools.pool_mismatches(b, a.flow_overhead),
        "ip_pool_nat": pools.pool_nat_mismatches(b),
        "flow_logs": {
            "entries": len(b.flow_logs),
            "matched_flows": int(a.flow_log_matches["flow_id"].nunique()) if len(a.flow_log_matches) else 0,
            "disagreements": flow_logs.disagreements(a.flow_log_matches, flows),
        },
    }
    doc["findings"] = _headlines(a, doc)
    doc["verdict"] = verdict(doc)
    return doc


RULE_COUNTERS = 5000  # counted rules findings.json keeps (the most packets first); the rules table has all
RULE_KEY_COLUMNS = ["node", "family", "table", "chain"]


def rule_counters(rules: pd.DataFrame) -> list[dict]:
    """Every rule that counted a packet, by node, table, chain and what it matches (positions move
    between dumps; the rule's text does not), so two findings.json show which counters moved."""
    if rules.empty:
        return []
    counted = rules[(rules["kind"].astype(str) == "rule") & (rules["packets"] > 0) & ~rules["duplicate"].astype(bool)]
    counted = counted.sort_values(["packets", "node", "chain"], ascending=[False, True, True], kind="stable")
    return [
        {
            "node": str(r.node),
            "family": str(r.family),
            "table": str(r.table),
            "chain": str(r.chain),
            "rule": str(r.match)[:300] or f"-j {r.target}",
            "comment": str(r.comment)[:200],
            "packets": int(r.packets),
        }
        for r in _records(counted.head(RULE_COUNTERS)[[*RULE_KEY_COLUMNS, "match", "target", "comment", "packets"]])
    ]


TUNNEL_NAMES = {"vxlan.calico": "VXLAN", "vxlan-v6.calico": "VXLAN", "tunl0": "IPIP", "wireguard.cali": "WireGuard"}
VERDICT_CLAIMS = 2  # failed flows the verdict names; the rest are counted


def verdict(doc: dict) -> dict:
    """The answer first: at most three sentences drawn from the findings, each claim with the flow
    it is about (the reports link it to that flow's drop)."""
    flows = doc["flows"]
    failed = [f for f in flows if f["verdict"] in ("dropped", "partial")]
    claims: list[dict] = []
    if not failed:
        lead = f"All {len(flows)} flows were delivered." if flows else "No flow was captured."
        serious = [h for h in doc["findings"] if h["severity"] in ("critical", "high")]
        if serious:
            claims.append({"text": serious[0]["title"], "flow_id": serious[0]["flow_id"]})
            lead += " But: "
        return _verdict_text(lead, claims, "")
    drops = {d["flow_id"]: d for d in doc["drops"]}
    mtus = {m["flow_id"]: m for m in doc["overhead"]["mtu_issues"] if m["flow_id"] is not None and (m["mtu"] or 0) > 0}
    weight = {"high": 0, "medium": 1, "low": 2}
    named = sorted(doc["drops"], key=lambda d: (weight.get(d["confidence"], 3), -d["packets"], d["flow_id"]))
    named = named[:VERDICT_CLAIMS]
    for d in named:
        claims.append({"text": _drop_claim(d, mtus.get(d["flow_id"])), "flow_id": d["flow_id"]})
    partial = [f for f in failed if f["id"] not in drops]
    for f in partial[: max(0, VERDICT_CLAIMS - len(claims))]:
        said = f"{str(f['proto']).upper()} {_dialled(f)} reached its server only in part"
        claims.append({"text": said, "flow_id": f["id"]})
    more = len(failed) - len(claims)
    tail = f" {more} more failed flow(s) are listed under Drops." if more > 0 else ""
    return _verdict_text(f"{len(failed)} of {len(flows)} flows failed: ", claims, tail)


def _verdict_text(lead: str, claims: list[dict], tail: str) -> dict:
    """The verdict whole (``text``) and in parts, so a report can link each claim to its flow."""
    text = lead + "; ".join(c["text"] for c in claims) + ("." if claims else "") + tail
    return {"text": text, "lead": lead, "claims": claims, "tail": tail}


def _dialled(f: dict) -> str:
    server = f"[{f['server_ip']}]" if ":" in str(f["server_ip"]) else f["server_ip"]
    where = f"{server}:{f['server_port']}" if f["server_port"] is not None and f["server_port"] >= 0 else str(server)
    return f"to {f['service']} ({where})" if f["service"] else f"from {f['client_ip']} to {where}"


def _drop_claim(d: dict, mtu: dict | None) -> str:
    """One dropped flow in a clause: what it was, where it was lost and why."""
    c, missing = d["cause"] or {}, d["missing_at"] or {}
    dst = f"[{d['dst_ip']}]" if ":" in str(d["dst_ip"]) else str(d["dst_ip"])
    port = f":{d['dst_port']}" if d["dst_port"] is not None and d["dst_port"] >= 0 else ""
    whom = f"to {d['service']}" if d["service"] else f"from {d['src_ip']} to {dst}{port}"
    what = f"{str(d['proto']).upper()} {whom}"
    kind, node, n = c.get("kind"), c.get("node") or missing.get("node") or "?", f"{d['packets']} packet(s)"
    if kind == "mtu_exceeded":
        tunnel = TUNNEL_NAMES.get(missing.get("interface", ""), "path")
        size = f" MTU {mtu['mtu']}" if mtu else " MTU"
        return f"{what} exceeds the {tunnel}{size} on {node}"
    if kind == "end_of_tier":
        tier = re.search(r"End of tier (\S+?)\.", c.get("rule_comment") or "")
        why = f"at the end of tier {tier.group(1)}" if tier else "at the end of its policy tier"
    elif kind in ("no_endpoints", "no_local_endpoints", "lb_source_range"):
        why = {
            "no_endpoints": "by kube-proxy: the service has no endpoints",
            "no_local_endpoints": "by kube-proxy: the service has no local endpoints",
            "lb_source_range": "by kube-proxy: the source is outside the LoadBalancer's ranges",
        }[kind]
    elif kind == "conntrack_invalid":
        why = "as INVALID by conntrack"
    elif kind and c.get("table") == "bpf":
        why = f"by the eBPF program at {c['chain']}" if c.get("chain") else "by an eBPF program"
    elif kind:
        why = f"by {kind.replace('_', ' ')}" + (f" in {c['table']}/{c['chain']}" if c.get("chain") else "")
    else:
        return f"{what} is lost between {_where(d['last_seen'])} and {_where(d['missing_at'])} ({n}, cause unknown)"
    detail = ", ".join(x for x in (f"policy {c['policy']}" if c.get("policy") else "", n) if x)
    return f"{what} is dropped {why} on {node} ({detail})"


def _where(point: dict | None) -> str:
    return f"{point['node']}:{point['interface']}" if point else "?"


def _bundle_section(b: Bundle, caps: pd.DataFrame) -> dict:
    filters = b.capture_filters
    return {
        "name": b.name,
        "nodes": b.nodes,
        "focus": b.focus.describe() if b.focus else None,
        "dataplane": [
            {
                "node": str(r.node),
                "mode": str(r.mode),
                "encryption": str(r.encryption) or None,
                "evidence": r.evidence,
                "calico_version": str(r.calico_version) or None,
                "calico_version_from": str(r.calico_version_from) or None,
                "kube_proxy": str(r.kube_proxy),
                "kube_proxy_from": str(r.kube_proxy_from) or None,
                "peer_redirect": str(r.peer_redirect) or None,
                "peer_redirect_from": str(r.peer_redirect_from) or None,
                "mtu_configured": str(r.mtu_configured) or None,
                "chain_insert_mode": str(r.chain_insert_mode) or None,
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
                "linktype": str(r.linktype_name),
                "assumed_filter": "" if r.capture_filter else filters.get(int(r.capture_id), ""),
                "recorded_filter": str(r.capture_filter),
                "snaplen": int(r.snaplen),
            }
            for r in _records(caps.sort_values(["node", "interface"]))
        ],
    }


def _flows_section(flows: pd.DataFrame, roles: dict) -> list[dict]:
    """Routed flows; link-local ones are only counted (link_scope_flows)."""
    # a path's list of points is made once per distinct path and shared by the flows that took it
    # (a dict per point per flow was half the findings' time): the document is for reading
    paths = {path: [_point(p, roles) for p in path.split(" > ") if p] for path in set(flows["path_fwd"].tolist())}
    return [
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
    ]


def _drops_section(drops: pd.DataFrame, roles: dict) -> list[dict]:
    return [
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
        for d in _records(drops)
    ]


def _overhead_section(a: Analysis) -> dict:
    return {
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
    }


def _latency_section(a: Analysis) -> dict:
    return {
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
    }


def _port(p) -> int | None:
    p = int(p)
    return p if p >= 0 else None


def _strip_role(p: dict | None) -> dict | None:
    return None if p is None else {"node": p["node"], "interface": p["interface"]}


def _headlines(a: Analysis, doc: dict) -> list[dict]:
    """What the report leads with, most severe first."""
    out = [
        *_drop_headlines(doc["drops"]),
        *_mtu_headlines(doc["overhead"]["mtu_issues"]),
        *_clock_headlines(doc["clock_offsets"]),
        *_ebpf_headlines(doc),
        *_wireguard_headlines(doc["wireguard"]),
        *_flow_log_headlines(doc.get("flow_logs", {}).get("disagreements", [])),
        *_pool_headlines(doc.get("ip_pools", [])),
        *_pool_nat_headlines(doc.get("ip_pool_nat", [])),
        *_context_headlines(doc),
        *_capture_shape_headlines(doc["bundle"]["captures"]),
    ]
    return sorted(out, key=lambda x: (SEVERITY_ORDER[x["severity"]], x["kind"], x["flow_id"] or -1, x["title"]))


def _headline(severity: str, kind: str, title: str, flow_id: int | None = None, confidence: str = "high") -> dict:
    return {"severity": severity, "kind": kind, "flow_id": flow_id, "title": title, "confidence": confidence}


def _drop_headlines(drops: list[dict]) -> list[dict]:
    """Drops alike (same service, same stretch of path, same cause) make one headline: an incident
    can drop thousands of flows the same way, and the report should lead with that, once."""
    alike: dict[tuple, list[dict]] = {}
    for d in drops:
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
    out = []
    for group in alike.values():
        d = group[0]
        c = d["cause"] or {}
        where = f"{d['last_seen']['node']}:{d['last_seen']['interface']}" if d["last_seen"] else "?"
        missing = f" before {d['missing_at']['node']}:{d['missing_at']['interface']}" if d["missing_at"] else ""
        why = ""
        if c.get("kind") in ("no_endpoints", "no_local_endpoints", "lb_source_range"):
            said = c["rule_comment"] or c["kind"].replace("_", " ")
            why = f"; kube-proxy: {said} ({c['table']}/{c['chain']} on {c['node']})"
        elif c.get("chain"):
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
        severity = "critical" if d["confidence"] == "high" else "high"
        title = f"{what} dropped after {where}{missing}{why}"
        out.append(_headline(severity, "drop", title, d["flow_id"], d["confidence"]))
    return out


def _mtu_headlines(issues: list[dict]) -> list[dict]:
    serious = ("icmp_frag_needed", "exceeds_tunnel_mtu", "tunnel_mtu_too_large", "configured_mtu_too_large")
    return [
        _headline("high" if m["kind"] in serious else "medium", f"mtu:{m['kind']}", m["detail"], m["flow_id"])
        for m in issues
    ]


def _clock_headlines(offsets: list[dict]) -> list[dict]:
    return [
        _headline("medium", "clock", f"clock of {off['node']} could not be aligned: {off['method']}")
        for off in offsets
        if off["uncertainty_ns"] < 0
    ]


def _ebpf_headlines(doc: dict) -> list[dict]:
    """How an eBPF dataplane was read: the mode, peer-redirected packets, connect-time LB candidates."""
    out = []
    ebpf = [d["node"] for d in doc["bundle"]["dataplane"] if d["mode"] == "ebpf"]
    if ebpf:
        out.append(
            _headline(
                "info",
                "dataplane",
                f"Calico eBPF dataplane on {', '.join(ebpf)}: services from BPF NAT, NAT legs from BPF "
                "conntrack, drops placed on BPF hooks (their counters are cumulative, not per flow)",
            )
        )
    assumed = [d for d in doc["bundle"]["dataplane"] if (d["peer_redirect_from"] or "").startswith("assumed")]
    if assumed:
        out.append(
            _headline(
                "low",
                "platform_assumed",
                f"no Calico release stated for {', '.join(d['node'] for d in assumed)}: eBPF peer redirect read "
                f"as {show(NEWEST)} defaults ({assumed[0]['peer_redirect']}); v3.28 has none and v3.29-v3.31 less, "
                "so a bundle with ClusterInformation or calico-node's image tag reads surely",
                confidence="medium",
            )
        )
    redirected = [f for f in doc["flows"] if f["peer_redirected"]]
    if redirected:
        out.append(
            _headline(
                "info",
                "peer_redirect",
                f"{len(redirected)} answered flow(s) with {sum(f['peer_redirected'] for f in redirected)} "
                "packet(s) to the pod not shown on its host-side veth: eBPF peer redirect skips that tap, so "
                "they count as delivered, not dropped",
            )
        )
    ctlb = [f for f in doc["flows"] if f["service_via"] == "backend"]
    for service in sorted({f["service"] for f in ctlb}):
        mine = [f for f in ctlb if f["service"] == service]
        out.append(
            _headline(
                "info",
                "connect_time_lb",
                f"{len(mine)} TCP flow(s) went straight to a backend of {service}: dialled through the "
                "service with connect-time load balancing (the ClusterIP never shows on the wire), or directly",
                mine[0]["id"],
                "medium",
            )
        )
    return out


def _pool_headlines(mismatches: list[dict]) -> list[dict]:
    """IP pools whose pods' traffic between nodes was not encapsulated as the pool says."""
    out = []
    for m in mismatches:
        seen = ", ".join(f"{n} flow(s) {'bare' if t == 'none' else 'in ' + t}" for t, n in sorted(m["seen"].items()))
        out.append(
            _headline(
                "medium",
                "ip_pool_encapsulation",
                f"IP pool {m['pool']} ({m['cidr']}, {m['modes']}): its pods' traffic between nodes went {seen}",
                confidence="medium",
            )
        )
    return out


def _pool_nat_headlines(mismatches: list[dict]) -> list[dict]:
    """IP pools whose pods' flows out of the pools were not masqueraded as natOutgoing says."""
    return [
        _headline(
            "medium",
            "ip_pool_nat_outgoing",
            f"IP pool {m['pool']} ({m['cidr']}, natOutgoing {str(m['nat_outgoing']).lower()}): {m['flows']} flow(s) of "
            f"its pods to addresses outside the pools {m['said']}",
            m["flow_ids"][0],
            "medium",
        )
        for m in mismatches
    ]


def _flow_log_headlines(disagreements: list[dict]) -> list[dict]:
    """Where Calico's flow logs and the captures disagree about a flow."""
    out = []
    for d in disagreements:
        if d["said"] == "allowed":
            title = (
                f"flow {d['flow_id']}: the captures show it {d['verdict']}, but Calico's flow logs "
                f"({d['reporters']} reporter) say allowed: lost after policy, or the logs speak of other packets"
            )
        else:
            title = (
                f"flow {d['flow_id']}: Calico's flow logs ({d['reporters']} reporter) say {d['said']}, but the "
                "captures show it delivered: a policy changed in between, or the logs speak of other connections"
            )
        out.append(_headline("medium", "flow_log_disagrees", title, d["flow_id"], "medium"))
    return out


def _wireguard_headlines(wg: dict) -> list[dict]:
    if not wg:
        return []
    data = wg["matched"] + wg["segmented"] + wg["unmatched_outer"]
    overhead = wg["overhead_bytes"]
    per_packet = f"; {overhead['min']}-{overhead['max']} bytes of overhead per packet" if overhead else ""
    lost = wg["unmatched_outer"] + wg["unmatched_inner"] + wg["ambiguous"]
    out = [
        _headline(
            "medium" if lost else "info",
            "wireguard",
            f"WireGuard: {wg['matched'] + wg['segmented']} of {data} data messages tied to their "
            f"plaintext ({wg['ambiguous']} ambiguous, {wg['segmented']} GSO/GRO segments), "
            f"{wg['unmatched_outer']} message(s) and {wg['unmatched_inner']} plaintext(s) without a partner; "
            f"{wg['handshakes']} handshake message(s), {wg['rekeys']} rekey(s), {wg['keepalives']} keepalive(s)"
            f"{per_packet}",
            confidence="high" if not wg["ambiguous"] else "medium",
        )
    ]
    gaps = sum(s["counter_gaps"] for s in wg["sessions"])
    if gaps:
        out.append(
            _headline(
                "medium",
                "wireguard_loss",
                f"{gaps} WireGuard counter value(s) missing from captured sessions: messages lost "
                "between encryption and the capture point (sender side) or in the network (receiver side only)",
            )
        )
    return out


def _capture_shape_headlines(captures: list[dict]) -> list[dict]:
    """What a node's captures cannot tell: with only an `-i any` capture, which interface each copy
    crossed is what its cooked header says (SLL2 names it, SLL v1 does not); and what a capture
    filter (assumed from the packets) kept out."""
    out = []
    short = sorted({c["snaplen"] for c in captures if 0 < c.get("snaplen", 0) < SHORT_SNAPLEN})
    if short:
        cut = [f"{c['node']}:{c['interface']}" for c in captures if c.get("snaplen", 0) in short]
        out.append(
            _headline(
                "info",
                "capture_shape",
                f"{len(cut)} capture(s) cut frames at {' or '.join(map(str, short))} bytes ({', '.join(cut[:4])}"
                f"{', ...' if len(cut) > 4 else ''}): packets are matched across capture points by their header "
                "fields alone, without their first payload bytes; packets those cannot tell apart are ambiguous",
            )
        )
    for c in captures:
        where = "`-i any` capture" if c["role"] == "any" else f"capture of {c['interface']}"
        if c.get("recorded_filter"):
            out.append(
                _headline(
                    "info",
                    "capture_filter",
                    f"{c['node']}'s {where} ran with the filter `{c['recorded_filter']}` (its pcapng if_filter): "
                    "what it would not take is not expected there, and its absence is not read as a drop",
                )
            )
        elif c.get("assumed_filter"):
            out.append(
                _headline(
                    "info",
                    "capture_filter",
                    f"{c['node']}'s {where} holds only packets with {c['assumed_filter'].replace('host ', '')}: taken "
                    f"as its filter ({c['assumed_filter']}); what it would not take (VXLAN or IPIP on the uplink, "
                    "SNATed packets, other flows) is not expected there, and its absence is not read as a drop",
                    confidence="medium",
                )
            )
    for node in sorted({c["node"] for c in captures}):
        mine = [c for c in captures if c["node"] == node]
        if {c["role"] for c in mine} != {"any"}:
            continue
        if any(c["linktype"] == "LINUX_SLL" for c in mine):
            out.append(
                _headline(
                    "low",
                    "capture_shape",
                    f"{node} had only an `-i any` capture in Linux cooked v1, which does not say which interface "
                    "each packet crossed: each is placed by its direction and the node's routes (sent: the route "
                    "to its destination; received: the route back to its source), and one no route places stays "
                    f"at {node}:any (capture per interface, or with SLL2: tcpdump -y LINUX_SLL2)",
                    confidence="medium",
                )
            )
        else:
            out.append(
                _headline(
                    "info",
                    "capture_shape",
                    f"{node} had only an `-i any` capture: each packet is placed on the interface its SLL2 header "
                    "names, and the capture's window is every interface's",
                )
            )
    return out


def _context_headlines(doc: dict) -> list[dict]:
    """What the reader should know around the findings: flows not judged, flows left out, what the
    tunnels cost, what could not be read."""
    out = []
    unobserved = sum(1 for f in doc["flows"] if f["verdict"] == "unobserved")
    if unobserved:
        out.append(
            _headline(
                "info",
                "unobserved",
                f"{unobserved} flow(s) not observed where delivery would show (no capture there, "
                "no reply): not counted as drops",
            )
        )
    if doc["link_scope_flows"]:
        out.append(
            _headline(
                "info",
                "link_scope",
                f"{doc['link_scope_flows']} link-local or multicast flow(s) (e.g. IPv6 neighbour "
                "discovery) left out of the flow counts",
            )
        )
    for t in doc["overhead"]["tunnels"]:
        out.append(
            _headline(
                "info",
                "overhead",
                f"{t['type'].upper()} {t['src_node']} → {t['dst_node']}: {t['overhead_bytes_per_packet']} "
                f"bytes per packet, {t['share_of_wire_bytes']:.1%} of wire bytes ({t['packets']} packets)",
            )
        )
    if doc["anomalies"]["total"]:
        out.append(
            _headline(
                "low",
                "anomalies",
                f"{doc['anomalies']['total']} anomalies while reading the bundle (see the anomalies table)",
            )
        )
    return out
