"""Drops: where a flow's packets stopped, and what on that path explains it, with typed evidence.

Evidence kinds: `observed` (seen at one capture point, absent at the next while it was capturing),
`counter` (a DROP/REJECT rule or Calico default drop on that path whose counter moved), `rule` (a
kube-proxy rule or map element that turns the dialled frontend away but keeps no counter), `conntrack`
(UNREPLIED/INVALID entries), `syn_retries`, `icmp` (errors sent back, e.g. fragmentation needed),
`bpf_counter` (calico-bpf drop counters of the BPF hooks between the two capture points),
`bpf_conntrack` (the flow's BPF conntrack entry with the destination's leg not approved),
`flow_log` (Calico's flow log entries of the flow: their verdict and the policies that denied),
`policy` (the saved policy objects behind a drop's policy: what each selects, its rules),
`bpf_trace` (BPF debug log verdicts: `DENY due to policy`), `bpf_policy` (what `calico-node -bpf policy
dump` says the hook's program holds: its deny rules' hit counts, the tiers that end in deny). Each
evidence says its `scope`:
`per_flow` (about this flow's packets), `cumulative` (a counter since it was attached or zeroed,
which cannot say which packets or when), `per_hook` (log lines on the hook without a tuple), or
`configured` (what a rule matching the flow's frontend says, with no counter to show it acted).

In eBPF mode the hooks come from where tcpdump taps sit (shared eBPF reference A.2, A.4): the tap
runs before a device's tc ingress program and after its tc egress program, and XDP runs before
any tap. So a packet seen on the source pod's veth and nowhere after was dropped by that veth's
ingress hook (the pod's egress policy); one never seen on the destination pod's veth by its egress
hook (the pod's ingress policy); one missing from a node's uplink altogether, possibly by XDP.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..bundle import Bundle
from ..join.summaries import point_labels, role_of
from ..meaning.rules import calico_chain_kind
from . import flow_logs
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
HOOK_TAG = {"ingress": "E", "egress": "I", "xdp": "X"}  # workload trace tags name the policy direction


def _split(point: str) -> tuple[str, str]:
    node, _, iface = point.partition(":")
    return node, iface


def _candidate_chains(last_seen: str, missing_at: str, roles: dict) -> list[tuple[str, str]]:
    """(node, chain) pairs whose drop rules could explain a loss between two capture points."""
    out = []
    m_node, m_iface = _split(missing_at)
    l_node, l_iface = _split(last_seen)
    if role_of(roles, m_node, m_iface) == "workload":
        out.append((m_node, f"cali-tw-{m_iface}"))  # into the pod: its ingress policy
    if role_of(roles, l_node, l_iface) == "workload" and missing_at != last_seen:
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
        # by what the chain is, not how it is spelt: Calico's nftables mode prefixes its layer
        # (`filter-cali-tw-<iface>`); the chains it jumps to are named as the dump names them
        kind, iface = calico_chain_kind(chain)
        mine = rules[rules["node"] == node]
        in_chain = mine[(mine["calico_chain"] == kind) & (mine["endpoint_iface"] == iface)]
        targets = set(in_chain["target"].astype(str))
        related = pd.concat([in_chain, mine[mine["chain"].isin(targets)]])
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
            "scope": "cumulative",
            "detail": f"{r.action.upper()} rule in {r.table}/{r.chain} on {node} "
            f"({r.comment or r.match}) counted {int(r.packets)} packets"
            + (f"; policy {r.policy}" if str(r.policy) else ""),
        }
        return cause, evidence
    return None, None


KUBE_DROP_KINDS = ("no_endpoints", "no_local_endpoints", "lb_source_range")


def _service_cause(rules: pd.DataFrame, f) -> tuple[dict | None, dict | None]:
    """kube-proxy turning the dialled frontend away, on a node the flow crossed: REJECT for a service
    without endpoints, DROP for one without local endpoints or for a source outside a LoadBalancer's
    ranges (KUBE-PROXY-FIREWALL; older releases mark the packet in KUBE-FW-… for KUBE-FIREWALL to drop)."""
    if f.backend_ip:  # DNAT happened: the service had an endpoint for this flow
        return None, None
    nodes = {p.partition(":")[0] for p in str(f.path_fwd).split(" > ") if p}
    kube = rules[
        rules["node"].astype(str).isin(nodes)
        & (rules["drop_kind"].isin(KUBE_DROP_KINDS) | (rules["target"].astype(str) == "KUBE-MARK-DROP"))
    ]
    if kube.empty:
        return None, None
    dport = kube["dport"].astype(str).str.extract(r"^(\d+)", expand=False).fillna("-1").astype(int)
    dport = dport.where(kube["service_port"] < 0, kube["service_port"])  # an nft map element's key port
    to_frontend = (kube["service_ip"].astype(str) == str(f.server_ip)) | (
        (kube["dst"].astype(str) == "") & (dport == int(f.server_port))
    )
    by_name = (kube["service"].astype(str) == str(f.service)) & (str(f.service) != "")
    hit = kube[(to_frontend & ((dport == int(f.server_port)) | (dport < 0))) | by_name]
    if hit.empty:
        return None, None
    r = hit.sort_values("packets", ascending=False).iloc[0]
    said = str(r.comment).lower()
    kind = (
        str(r.drop_kind)
        if str(r.drop_kind) in KUBE_DROP_KINDS
        else (
            "no_local_endpoints"
            if "has no local endpoints" in said
            else "no_endpoints"
            if "has no endpoints" in said
            else "lb_source_range"  # KUBE-FW-… marking a source outside the LoadBalancer's ranges
        )
    )
    cause = {
        "kind": kind,
        "node": str(r.node),
        "table": str(r.table),
        "chain": str(r.chain),
        "rule_comment": str(r.comment),
        "policy": "",
        "counter_packets": int(r.packets),
    }
    verb = "marked for drop" if str(r.target) == "KUBE-MARK-DROP" else str(r.action).upper()
    what = "element" if str(r.kind) == "element" else "rule"
    where = f"kube-proxy {verb} {what} in {r.table}/{r.chain} on {r.node} ({r.comment or r.match})"
    if int(r.packets) < 0:  # kube-proxy's nftables mode counts nothing: the rule says so, no number does
        evidence = {"kind": "rule", "scope": "configured", "detail": f"{where}; it keeps no counter"}
    else:
        evidence = {"kind": "counter", "scope": "cumulative", "detail": f"{where} counted {int(r.packets)} packets"}
    return cause, evidence


@dataclass
class _Lookups:
    """What the drops of a bundle are explained from, each indexed once (not once per lost flow);
    causes and BPF counters are cached per stretch of path (last capture point seen, first missing)."""

    b: Bundle
    rules: pd.DataFrame
    roles: dict
    windows: dict
    conntrack_of: dict
    seen_at: dict
    icmp_errors: dict
    bpf_conntrack_of: dict
    denies_of: dict
    anonymous_denies: dict
    flow_logs: pd.DataFrame = field(default_factory=pd.DataFrame)  # flow_logs.match_flow_logs
    causes: dict = field(default_factory=dict)
    bpf: dict = field(default_factory=dict)

    def rule_cause(self, stretch: tuple[str, str]) -> tuple:
        if stretch not in self.causes:
            self.causes[stretch] = _rule_cause(self.rules, *stretch, self.roles)
        return self.causes[stretch]

    def bpf_cause(self, stretch: tuple[str, str]) -> tuple:
        if stretch not in self.bpf:
            cause, evidence = _bpf_counter_cause(self.b.bpf_counters, _bpf_hooks(*stretch, self.roles))
            if cause is not None:
                named, said = _bpf_policy_names(self.b.bpf_policy, cause["node"], *cause["chain"].split(" ", 1))
                cause = {**cause, "policy": named} if named else cause
                evidence = [*evidence, *said]
            self.bpf[stretch] = (cause, evidence)
        return self.bpf[stretch]


def find_drops(b: Bundle, flow_log_matches: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per dropped or partly lost flow: where, by which rule or hook, the evidence, and how sure.
    ``flow_log_matches``: the flow log entries of each flow (flow_logs.match_flow_logs; found here if
    not given)."""
    flows = b.flows
    lost = flows[flows["verdict"].isin(["dropped", "partial"])]
    rules = b.rules
    caps = b.captures
    seen_at, icmp_errors = _lost_flow_hops(b, lost["flow_id"].to_numpy())
    conntrack_of: dict[tuple, list] = {}
    for e in b.conntrack.itertuples(index=False):
        conntrack_of.setdefault((str(e.orig_src), int(e.orig_sport), str(e.orig_dst), int(e.orig_dport)), []).append(e)
    windows = {
        f"{r.node}:{r.interface}": (int(r.window_start_ns), int(r.window_end_ns)) for r in caps.itertuples(index=False)
    }
    look = _Lookups(
        b,
        rules[(~rules["duplicate"]) & rules["kind"].isin(["rule", "element"])],
        b.point_roles,
        windows,
        conntrack_of,
        seen_at,
        icmp_errors,
        *_bpf_per_flow_state(b.bpf_conntrack, b.traces),
        flow_logs=flow_log_matches if flow_log_matches is not None else flow_logs.match_flow_logs(b),
    )
    return pd.DataFrame([_drop(f, look) for f in lost.itertuples(index=False)], columns=DROP_COLUMNS)


def _drop(f, look: _Lookups) -> dict:
    """A lost flow's drop row: the evidence in order of where it comes from, the cause (a rule on the
    stretch, else an MTU the ICMP errors name, else a BPF drop counter), and the confidence."""
    lost_packets, evidence = _observed(f, look)
    stretch = (str(f.last_seen), str(f.missing_at))
    cause, counter = look.rule_cause(stretch)
    if cause is None:
        cause, counter = _service_cause(look.rules, f)
    cause = dict(cause) if cause is not None else None
    if counter is not None:
        evidence.append(dict(counter))
    evidence += _syn_retries(f) + _conntrack_evidence(f, look.conntrack_of)
    icmp, mtu_cause = _icmp_evidence(f, look.icmp_errors, look.b.packets)
    evidence += icmp
    cause = cause or mtu_cause
    bpf_cause, bpf_counters = look.bpf_cause(stretch)
    evidence += [dict(e) for e in bpf_counters]
    per_flow = _bpf_conntrack_evidence(look.bpf_conntrack_of, f, stretch) + _bpf_trace_evidence(
        look.denies_of, look.anonymous_denies, f, stretch, look.roles
    )
    evidence += per_flow
    if cause is None and bpf_cause is not None:
        cause = dict(bpf_cause)
    logged, denied_by = flow_logs.evidence(look.flow_logs, int(f.flow_id)) if len(look.flow_logs) else ([], "")
    evidence += logged
    if denied_by and cause is not None and not cause.get("policy"):
        cause["policy"] = denied_by  # Calico's flow log names the policy the dataplane state does not
    elif denied_by and cause is None:
        cause = {
            "kind": "flow_log_deny",
            "node": "",
            "table": "",
            "chain": "",
            "rule_comment": "",
            "policy": denied_by,
            "counter_packets": -1,
        }
    if cause is not None and cause.get("policy"):
        evidence += _policy_quotes(look.b.network_policies, cause["policy"], cause.get("kind", ""))
    if f.service and not f.backend_ip:  # the frontend was never translated: what backends were saved
        evidence += _endpoint_quotes(look.b.endpoints, str(f.service))
    evidence = weighed(evidence)
    corroborated = any(e["scope"] == "per_flow" and e["kind"].startswith("bpf_") for e in per_flow)
    if cause is not None and cause["counter_packets"] >= lost_packets and (cause["table"] != "bpf" or corroborated):
        confidence = "high"
    elif cause is not None or any(e["kind"] in ("conntrack", "icmp", "syn_retries") for e in evidence):
        confidence = "medium"
    else:
        confidence = "low"
    cause = cause or {}
    return {
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


def _observed(f, look: _Lookups) -> tuple[int, list[dict]]:
    """(packets lost: those seen at the last point and not at the next one, else all sent; the
    sighting as evidence). A partly lost flow's packets that went on past the point are not lost."""
    lost_packets = int(f.packets_fwd)
    if not f.last_seen:
        return lost_packets, []
    seen = look.seen_at.get((int(f.flow_id), str(f.last_seen)), 0)
    passed = look.seen_at.get((int(f.flow_id), str(f.missing_at)), 0) if f.missing_at else 0
    lost_packets = seen - passed if seen > passed else seen or lost_packets
    start, end = look.windows.get(f.missing_at, (-1, -1))
    capturing = f" (capturing from {_iso(start)} to {_iso(end)})" if start >= 0 else ""
    where = f.missing_at or "the next capture point"
    if not passed:
        detail = f"{lost_packets} packet(s) seen at {f.last_seen}, none at {where}{capturing}"
    elif seen > passed:
        detail = f"{lost_packets} of {seen} packet(s) seen at {f.last_seen} never reached {where}{capturing}"
    else:  # as many went on as were seen: which ones were lost cannot be told from these two points
        detail = f"{seen} packet(s) seen at {f.last_seen} and {passed} at {where}{capturing}"
    return lost_packets, [{"kind": "observed", "scope": "per_flow", "detail": detail}]


def _syn_retries(f) -> list[dict]:
    if not (f.proto == "tcp" and f.conn_state in ("S0", "REJ", "RSTOS0")):
        return []
    syns = int(f.packets_fwd)
    return [
        {
            "kind": "syn_retries",
            "scope": "per_flow",
            "detail": f"{syns} SYN(s) ({max(0, syns - 1)} retransmissions), no SYN-ACK",
        }
    ]


def _conntrack_evidence(f, conntrack_of: dict) -> list[dict]:
    """The flow's conntrack entries that were never answered or that conntrack called INVALID."""
    return [
        {
            "kind": "conntrack",
            "scope": "per_flow",
            "detail": f"{e.node}: {e.proto} {e.state} "
            f"{'[UNREPLIED] ' if e.unreplied else ''}"
            f"{e.orig_src}:{e.orig_sport} -> {e.orig_dst}:{e.orig_dport}",
        }
        for e in conntrack_of.get((str(f.client_ip), int(f.client_port), str(f.server_ip), int(f.server_port)), [])
        if e.unreplied or str(e.state) == "INVALID"
    ]


def _icmp_evidence(f, icmp_errors: dict, packets: pd.DataFrame) -> tuple[list[dict], dict | None]:
    """The ICMP errors about the flow (first sighting of each), and an MTU cause when one says
    fragmentation needed (the router that sent it is the cause's node)."""
    if not (f.icmp_errors and int(f.flow_id) in icmp_errors):
        return [], None
    evidence, cause = [], None
    err = icmp_errors[int(f.flow_id)]
    first = err.sort_values("ts_corrected_ns").drop_duplicates("instance")
    for e in first.itertuples(index=False):
        mtu = int(packets.at[e.packet, "icmp_mtu"])
        what = f"ICMP {e.icmp_type}/{e.icmp_code}" + (f" fragmentation needed, next-hop MTU {mtu}" if mtu >= 0 else "")
        evidence.append(
            {
                "kind": "icmp",
                "scope": "per_flow",
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
    return evidence, cause


def _bpf_hooks(last_seen: str, missing_at: str, roles: dict) -> list[tuple[str, str, str]]:
    """(node, interface, hook) of the BPF programs that run between the last capture point that saw
    a packet and the first one that should have and did not (shared eBPF reference A.4)."""
    l_node, l_iface = _split(last_seen)
    m_node, m_iface = _split(missing_at)
    l_role, m_role = role_of(roles, l_node, l_iface), role_of(roles, m_node, m_iface)
    same_node = bool(last_seen) and bool(missing_at) and l_node == m_node
    # where the packet was going: into the node (uplink, then tunnel, then pod) or out of it
    depth = {"uplink": 0, "tunnel": 1, "workload": 2}
    inward = same_node and depth.get(l_role, -1) < depth.get(m_role, -1) and l_role != "workload"
    outward = same_node and not inward
    hooks = []
    if last_seen and (l_role == "workload" or inward):
        hooks.append((l_node, l_iface, "ingress"))  # runs after this device's tap: pod egress policy, HEP
    if missing_at and m_role == "workload":
        hooks.append((m_node, m_iface, "egress"))  # runs before the tap: the destination pod's ingress policy
    elif outward and m_role in ("tunnel", "uplink"):
        hooks.append((m_node, m_iface, "egress"))  # the device the packet should have left through
    elif missing_at and m_role == "uplink" and not same_node:
        hooks.append((m_node, m_iface, "xdp"))  # arriving at another node: XDP runs before any tap
    return hooks


def _bpf_counter_cause(counters: pd.DataFrame, hooks: list[tuple[str, str, str]]) -> tuple[dict | None, list[dict]]:
    """Drop counters that moved on those hooks (cumulative: they cannot say which packets), and the
    policy drop among them as the cause."""
    cause, evidence = None, []
    counted, moved = [], False  # hooks whose counters the bundle has; whether a drop counter moved
    for node, iface, hook in hooks:
        rows = counters[(counters["node"].astype(str) == node) & (counters["interface"].astype(str) == iface)]
        if rows.empty:
            continue
        col = hook  # the counters' columns are named by hook
        counted.append(f"{node}:{iface} {hook}")
        dropped = rows[rows["category"].astype(str).str.startswith("Dropped") & (rows[col] > 0)]
        moved = moved or not dropped.empty
        for r in dropped.itertuples(index=False):
            value = int(getattr(r, col))
            evidence.append(
                {
                    "kind": "bpf_counter",
                    "scope": "cumulative",
                    "detail": f"{node}:{iface} {hook} hook: {r.category} {r.type} = {value} "
                    "(cumulative since the program was attached; not per flow)",
                }
            )
            if cause is None and str(r.type) == "by policy":
                cause = {
                    "kind": "bpf_policy_drop",
                    "node": node,
                    "table": "bpf",
                    "chain": f"{iface} {'XDP' if hook == 'xdp' else 'tc ' + hook}",
                    "rule_comment": f"Dropped by policy: {_policy_direction(iface, hook)}",
                    "policy": "",  # BPF counters do not say which policy; trace Log lines or rule counters might
                    "counter_packets": value,
                }
        if dropped.empty and (rows[col] < 0).all():
            evidence.append(
                {
                    "kind": "bpf_counter",
                    "scope": "cumulative",
                    "detail": f"{node}:{iface} {hook} hook: no Calico program attached (N/A)",
                }
            )
    if counted and not moved:
        evidence.append(
            {
                "kind": "bpf_counter",
                "scope": "cumulative",
                "detail": f"no drop counter moved on {', '.join(counted)}: an uncounted BPF drop (RPF, endpoint "
                "not ready, parse error), a qdisc, the NIC, or capture loss",
            }
        )
    return cause, evidence


def _bpf_policy_names(policy: pd.DataFrame, node: str, iface: str, where: str) -> tuple[str, list[dict]]:
    """The policies behind a BPF policy drop, from `calico-node -bpf policy dump` of that hook: deny
    rules that counted hits, else the policies of the tiers that end in deny (none of their rules
    allowed the packet); and what the dump says, as evidence."""
    hook = "xdp" if where == "XDP" else where.removeprefix("tc ")
    mine = policy[
        (policy["node"].astype(str) == node)
        & (policy["interface"].astype(str) == iface)
        & (policy["hook"].astype(str) == hook)
    ]
    if mine.empty:
        return "", []
    rules = mine[mine["kind"].astype(str) == "rule"]
    denied = rules[(rules["action"].astype(str) == "deny") & (rules["hit_count"] > 0)]
    if len(denied):
        names = list(dict.fromkeys(denied["policy"].astype(str)))
        hits = ", ".join(f"{r.policy} rule {r.rule} ({int(r.hit_count)} hits)" for r in denied.itertuples())
        return ", ".join(names), [{"kind": "bpf_policy", "scope": "cumulative", "detail": f"deny {hits}"}]
    ends = mine[(mine["kind"].astype(str) == "end-of-tier") & (mine["action"].astype(str) == "deny")]
    tiers = list(dict.fromkeys(ends["tier"].astype(str)))
    names = list(dict.fromkeys(rules.loc[rules["tier"].astype(str).isin(tiers), "policy"].astype(str)))
    if not names:
        return "", []
    detail = f"{node}:{iface} {where} program: tier {', '.join(tiers)} ends in deny; its policies {', '.join(names)}"
    allowed = rules[rules["tier"].astype(str).isin(tiers) & (rules["hit_count"] >= 0)]
    if len(allowed):
        counted = (f"{int(r.hit_count)} hit(s) on {r.rule} ({r.action})" for r in allowed.itertuples())
        detail += " counted " + ", ".join(counted)
    return ", ".join(names), [{"kind": "bpf_policy", "scope": "cumulative", "detail": detail}]


def _policy_names(name: str) -> set[tuple[str, str]]:
    """(namespace, name) pairs a dataplane's name for a policy may stand for: `<ns>/<tier>.<name>` and
    `<ns>/knp.default.<name>` (felix up to v3.31), `[<kind>/]<ns>/<name>` (v3.32), `<tier>.<name>` global."""
    parts = name.strip().split("/")
    if parts and parts[0] in ("np", "gnp", "snp", "sgnp", "sknp", "knp", "kcnp") and len(parts) > 1:
        parts = parts[1:]
    ns, bare = (parts[0], "/".join(parts[1:])) if len(parts) > 1 else ("", parts[0])
    out = {(ns, bare)}
    for prefix in ("knp.default.", "staged:"):
        if bare.startswith(prefix):
            out.add((ns, bare[len(prefix) :]))
    if "." in bare:
        out.add((ns, bare.split(".", 1)[1]))  # without its tier
    return out


def _policy_quotes(policies: pd.DataFrame, named: str, kind: str) -> list[dict]:
    """The saved policy objects behind a drop's policies, quoted: what each selects and the rules of
    the direction that dropped (for an end-of-tier drop: none of them allowed the packet)."""
    if policies.empty:
        return []
    out = []
    for name in (n.strip() for n in named.split(",") if n.strip()):
        keys = _policy_names(name)
        pairs = zip(policies["namespace"].astype(str), policies["name"].astype(str), strict=True)
        hit = policies[[pair in keys for pair in pairs]]
        for p in hit.drop_duplicates(["kind", "namespace", "name"]).itertuples(index=False):
            rules = f"ingress: {p.ingress or 'no ingress rules'}; egress: {p.egress or 'no egress rules'}"
            what = f"{p.kind} {p.namespace + '/' if p.namespace else ''}{p.name} (tier {p.tier}) selects {p.selector}"
            why = " none of its rules allowed the packet;" if kind in ("end_of_tier", "bpf_policy_drop") else ""
            out.append({"kind": "policy", "scope": "configured", "detail": f"{what}:{why} {rules}"})
    return out


def _endpoint_quotes(endpoints: pd.DataFrame, service: str) -> list[dict]:
    """The saved Endpoints / EndpointSlices of a service whose frontend was never translated: how
    many backends each listed and how many of them were ready (none ready: nothing to DNAT to)."""
    if endpoints.empty:
        return []
    namespace, _, name = service.partition(":")[0].rpartition("/")
    namespace = namespace or "default"
    # an EndpointSlice listing does not name its service; its slices are named <service>-<suffix>
    unnamed = (endpoints["service"].astype(str) == "") & endpoints["slice"].astype(str).str.startswith(name + "-")
    mine = endpoints[(endpoints["namespace"].astype(str) == namespace) & ((endpoints["service"] == name) | unnamed)]
    out = []
    for (artifact, slice_name), rows in mine.groupby(["artifact", "slice"], sort=False):
        backends = rows.drop_duplicates("address")
        ready = backends["ready"].astype(str).value_counts().to_dict()
        states = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in sorted(ready.items()))
        what = f"EndpointSlice {namespace}/{slice_name}" if slice_name else f"Endpoints {namespace}/{name}"
        listed = " ".join(sorted(backends["address"].astype(str)))[:300]
        out.append(
            {"kind": "endpoints", "scope": "configured", "detail": f"{what} ({artifact}) lists {states}: {listed}"}
        )
    if mine.empty and len(endpoints):
        out.append(
            {
                "kind": "endpoints",
                "scope": "configured",
                "detail": f"the saved Endpoints and EndpointSlices list no backend for {namespace}/{name}",
            }
        )
    return out


# evidence in order of weight: what counted the drop, then the configuration behind it, then
# connection state, then what the packets themselves show
EVIDENCE_WEIGHT = {
    "counter": 0,
    "bpf_counter": 0,
    "rule": 1,
    "bpf_policy": 1,
    "policy": 2,
    "endpoints": 2,
    "flow_log": 3,
    "conntrack": 4,
    "bpf_conntrack": 4,
    "bpf_trace": 5,
    "icmp": 6,
    "syn_retries": 7,
    "observed": 8,
}


def weighed(evidence: list[dict]) -> list[dict]:
    """Each piece of evidence once, in order of weight (sorted stably: within a kind, as found). The
    same line in several dumps (a conntrack entry in a listing and in an event log) is listed once,
    saying how many times the bundle holds it."""
    seen: dict[tuple[str, str, str], dict] = {}
    counts: dict[tuple[str, str, str], int] = {}
    for e in evidence:
        key = (e["kind"], e["scope"], e["detail"])
        seen.setdefault(key, dict(e))
        counts[key] = counts.get(key, 0) + 1
    for key, e in seen.items():
        if counts[key] > 1:
            e["detail"] += f" (in {counts[key]} dumps)"
    return sorted(seen.values(), key=lambda e: EVIDENCE_WEIGHT.get(e["kind"], 9))


def _policy_direction(iface: str, hook: str) -> str:
    if iface.startswith("cali"):
        side = "ingress" if hook == "egress" else "egress"  # a workload's hooks are mirrored
        return f"the {side} policy of the pod behind {iface}"
    return f"the host endpoint's {hook} policy on {iface}"


def _flow_ends(f) -> tuple[str, int, set[tuple[str, int]]]:
    servers = {(str(f.server_ip), int(f.server_port))}
    if f.backend_ip:
        servers.add((str(f.backend_ip), int(f.backend_port)))
    return str(f.client_ip), int(f.client_port), servers


def _bpf_per_flow_state(ct: pd.DataFrame, traces: pd.DataFrame) -> tuple[dict, dict, dict]:
    """What the per-flow BPF evidence looks in, indexed once (not filtered once per lost flow): BPF
    conntrack entries with leg approvals by opener (address, port); BPF debug-log DENY verdicts by
    source (address, port), and the number of those logged without a tuple by (node, tag)."""
    ct_of: dict[tuple[str, int], list] = {}
    legs = ct[(ct["entry_type"].astype(str) != "nat-forward") & (ct["a2b_approved"] >= 0)]
    for e in legs.itertuples(index=False):
        ct_of.setdefault((str(e.src), int(e.sport)), []).append(e)
    denies = traces[(traces["source"].astype(str) == "calico-bpf") & (traces["type"].astype(str) == "deny")]
    src = denies["src"].astype(str)
    denies_of = {(str(a), int(p)): rows for (a, p), rows in denies[src != ""].groupby(["src", "sport"], sort=False)}
    anonymous = denies[src == ""].groupby(["node", "chain"], observed=True).size()
    return ct_of, denies_of, {(str(n), str(c)): int(k) for (n, c), k in anonymous.items()}


def _bpf_conntrack_evidence(ct_of: dict, f, stretch: tuple[str, str]) -> list[dict]:
    """The flow's BPF conntrack entries on the nodes of the stretch: an entry whose opener's leg is
    approved and the other not means the destination's policy has not allowed the flow."""
    client, port, servers = _flow_ends(f)
    nodes = {_split(p)[0] for p in stretch if p}
    out = []
    for e in ct_of.get((client, port), []):
        if str(e.node) not in nodes or (str(e.dst), int(e.dport)) not in servers:
            continue
        src_is_a = (_ip_int(str(e.src)), int(e.sport)) <= (_ip_int(str(e.dst)), int(e.dport))
        opener, other = (e.a2b_approved, e.b2a_approved) if src_is_a else (e.b2a_approved, e.a2b_approved)
        if opener == 1 and other == 0:
            what = "the opener's leg is approved, the destination's is not: its ingress policy has not allowed the flow"
        elif opener == 0:
            what = "the opener's leg is not approved: the source's egress policy has not allowed the flow"
        else:
            continue
        out.append(
            {
                "kind": "bpf_conntrack",
                "scope": "per_flow",
                "detail": f"{e.node} BPF conntrack {e.src}:{e.sport} -> {e.dst}:{e.dport} ({e.artifact}): {what}",
            }
        )
    return out


def _bpf_trace_evidence(denies_of: dict, anonymous: dict, f, stretch: tuple[str, str], roles: dict) -> list[dict]:
    """BPF debug-log DENY verdicts for this flow's tuple (per flow), or on the hooks without a tuple."""
    client, port, servers = _flow_ends(f)
    out = []
    own = denies_of.get((client, port))
    if own is not None:
        own = own.loc[
            np.asarray([(str(d), int(p)) in servers for d, p in zip(own["dst"], own["dport"], strict=True)], bool)
        ]
        for (node, tag, verdict), rows in own.groupby(["node", "chain", "verdict"], observed=True, sort=True):
            out.append(
                {
                    "kind": "bpf_trace",
                    "scope": "per_flow",
                    "detail": f"{node} BPF log {tag}: '{verdict}' {len(rows)} time(s) for {client}:{port} "
                    f"({rows['artifact'].iloc[0]}, lines {', '.join(str(x) for x in rows['line'].head(5))})",
                }
            )
    if out:
        return out
    tags = {(n, f"{i}-{HOOK_TAG[h]}") for n, i, h in _bpf_hooks(*stretch, roles)}
    for node, tag in sorted(tags & anonymous.keys()):
        out.append(
            {
                "kind": "bpf_trace",
                "scope": "per_hook",
                "detail": f"{node} BPF log {tag}: {anonymous[(node, tag)]} DENY verdict(s) with no tuple logged",
            }
        )
    return out


def _ip_int(text: str) -> int:
    try:
        return int(ipaddress.ip_address(text))
    except ValueError:
        return -1


def _iso(ns: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3] if ns >= 0 else "?"
