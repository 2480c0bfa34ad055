"""The join: one packet seen at several capture points, clocks of different nodes, flows through NAT.

1. Packets are keyed by their NAT- and encapsulation-invariant fingerprint (packets.fingerprint).
2. Fingerprints seen at most once per capture point give unambiguous cross-node matches; from them
   each node's clock offset is estimated NTP-style from the minimum one-way delays in both
   directions, with the half-width of the feasible interval as its uncertainty.
3. With corrected times, copies of a fingerprint closer than a window form one packet *instance*;
   each copy is a *hop*. Two copies at the same capture point make the instance ambiguous.
4. Conversations seen with different tuples in one instance (NAT rewrites), and conntrack's
   original/reply tuples, are unioned into flows; each flow is summarised as the client dialled it.

Everything up to the flow summaries is sorts, group-bys and merges over whole columns.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np
import pandas as pd

HOP_WINDOW_NS = 1_000_000_000  # copies of one fingerprint further apart than this are different packets
ROLE_ORDER = {"workload": 0, "tunnel": 1, "uplink": 2, "any": 3, "other": 4}
ICMP4_ERRORS, ICMP6_ERRORS = (3, 4, 5, 11, 12), (1, 2, 3, 4)
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre", 4: "ipip"}


@dataclass
class Joined:
    hops: pd.DataFrame
    clock_offsets: pd.DataFrame
    flows: pd.DataFrame


# ---- who owns an address ---------------------------------------------------------------------
def address_owners(interfaces: pd.DataFrame, routes: pd.DataFrame) -> dict[str, str]:
    """IP -> node for node addresses and local pod addresses (/32 routes on cali* devices).

    Addresses claimed by several nodes (link-local gateways, loopback) are left out.
    """
    claims: dict[str, set[str]] = {}
    for node, addrs in zip(interfaces["node"].astype(str), interfaces["addresses"], strict=True):
        for cidr in str(addrs).split():
            ip = cidr.split("/")[0]
            claims.setdefault(ip, set()).add(node)
    pods = routes[routes["dev"].astype(str).str.startswith("cali") & (routes["type"] == "unicast")]
    for node, dst in zip(pods["node"].astype(str), pods["dst"], strict=True):
        ip = str(dst).split("/")[0]
        if str(dst).endswith("/32") or "/" not in str(dst):
            claims.setdefault(ip, set()).add(node)
    out = {}
    for ip, nodes in claims.items():
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if len(nodes) == 1 and not (addr.is_loopback or addr.is_link_local):
            out[ip] = next(iter(nodes))
    return out


# ---- hops and clocks -------------------------------------------------------------------------
def _points(packets: pd.DataFrame, captures: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """A capture point is a capture and an interface (an `-i any` capture has several)."""
    keys = pd.MultiIndex.from_arrays([packets["capture_id"].to_numpy(), packets["interface"].astype(str).to_numpy()])
    codes, uniq = keys.factorize()
    pts = pd.DataFrame({"capture_id": uniq.get_level_values(0), "interface": uniq.get_level_values(1)})
    cap = captures.set_index("capture_id")
    pts["node"] = cap.loc[pts["capture_id"], "node"].astype(str).to_numpy()
    roles = cap.loc[pts["capture_id"], "role"].astype(str).to_numpy()
    # an `-i any` capture's packets sit on real interfaces: take their role from the name
    from .layout import interface_role

    pts["role"] = [interface_role(i) if r == "any" else r for i, r in zip(pts["interface"], roles, strict=True)]
    return codes.astype(np.int64), pts


def estimate_clock_offsets(frame: pd.DataFrame, nodes: list[str], owners: dict[str, str]) -> pd.DataFrame:
    """Offsets of each node's clock against a reference node from two-way minimum delays.

    ``frame`` has one row per sighting: fp, point, node, ts, origin (node owning the sender).
    """
    ref = nodes[0] if nodes else ""
    rows = (
        [
            {
                "node": ref,
                "reference": ref,
                "offset_ns": 0,
                "uncertainty_ns": 0,
                "method": "reference",
                "via": "",
                "samples_out": 0,
                "samples_back": 0,
            }
        ]
        if ref
        else []
    )
    if len(nodes) < 2 or frame.empty:
        return _offsets_frame(rows + [_unknown(n, ref) for n in nodes[1:]])
    per_point = frame.groupby(["fp", "point"]).size()
    repeated = per_point[per_point > 1].index.get_level_values(0).unique()
    sub = frame[~frame["fp"].isin(repeated) & (frame["origin"] != "")]
    span = (
        sub.groupby(["fp", "node"], sort=False)
        .agg(tmin=("ts", "min"), tmax=("ts", "max"), origin=("origin", "first"))
        .reset_index()
    )
    span = span[span.groupby("fp")["node"].transform("nunique") >= 2]
    sender = span[span["node"] == span["origin"]][["fp", "node", "tmax"]].rename(columns={"node": "a"})
    receiver = span[span["node"] != span["origin"]][["fp", "node", "tmin"]].rename(columns={"node": "b"})
    pairs = sender.merge(receiver, on="fp")
    pairs["delay"] = pairs["tmin"] - pairs["tmax"]  # receiver clock minus sender clock, plus wire time
    oneway = pairs.groupby(["a", "b"])["delay"].agg(["min", "size"])
    est: dict[tuple[str, str], tuple[float, float, int, int]] = {}
    for (a, b), row in oneway.iterrows():
        if (b, a) in oneway.index and (a, b) not in est:
            back = oneway.loc[(b, a)]
            theta = (row["min"] - back["min"]) / 2  # clock_b - clock_a
            unc = (row["min"] + back["min"]) / 2
            est[(a, b)] = (theta, unc, int(row["size"]), int(back["size"]))
            est[(b, a)] = (-theta, unc, int(back["size"]), int(row["size"]))
    # best (least uncertain) chains from the reference, Dijkstra on the summed uncertainty
    known = {ref: (0.0, 0.0, "", 0, 0)}
    frontier = [ref]
    while frontier:
        candidates = [
            (known[a][1] + abs(u), a, b, t, u, n1, n2)
            for (a, b), (t, u, n1, n2) in est.items()
            if a in known and b not in known
        ]
        if not candidates:
            break
        total, a, b, theta, _unc, n1, n2 = min(candidates)
        via = f"{known[a][2]} {a}".strip() if a != ref else ref
        known[b] = (known[a][0] + theta, total, via, n1, n2)
        frontier.append(b)
    for node in nodes[1:]:
        if node in known:
            off, unc, via, n1, n2 = known[node]
            rows.append(
                {
                    "node": node,
                    "reference": ref,
                    "offset_ns": round(off),
                    "uncertainty_ns": round(unc),
                    "method": "two-way min delay",
                    "via": via,
                    "samples_out": n2,
                    "samples_back": n1,
                }
            )
        else:
            rows.append(_unknown(node, ref))
    return _offsets_frame(rows)


def _unknown(node: str, ref: str) -> dict:
    return {
        "node": node,
        "reference": ref,
        "offset_ns": 0,
        "uncertainty_ns": -1,
        "method": "unknown: no packets matched both ways",
        "via": "",
        "samples_out": 0,
        "samples_back": 0,
    }


def _offsets_frame(rows: list[dict]) -> pd.DataFrame:
    from .schema import conform

    return conform(pd.DataFrame(rows), "clock_offsets")


def build_hops(
    packets: pd.DataFrame, captures: pd.DataFrame, owners: dict[str, str], window_ns: int = HOP_WINDOW_NS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hops, clock_offsets) for a bundle's packets."""
    from .schema import conform

    point, pts = _points(packets, captures)
    node = pts["node"].to_numpy()[point] if len(point) else np.zeros(0, dtype=object)
    ts = packets["ts_ns"].to_numpy()
    fp = packets["fingerprint"].to_numpy()
    decoded = (packets["ip_version"].to_numpy() > 0) & (packets["status"].astype(str).to_numpy() == "ok")
    sender = np.where(
        packets["encap"].astype(str).to_numpy() != "none",
        packets["outer_src"].astype(object).to_numpy(),
        packets["src"].astype(object).to_numpy(),
    )
    mapped = pd.Series(sender, dtype=object).map(owners).astype(object)
    origin = mapped.where(mapped.notna(), "").to_numpy(dtype=object)
    nodes = sorted(set(captures["node"].astype(str)))
    frame = pd.DataFrame({"fp": fp, "point": point, "node": node, "ts": ts, "origin": origin})[decoded]
    offsets = estimate_clock_offsets(frame, nodes, owners)
    off = dict(zip(offsets["node"], offsets["offset_ns"], strict=True))
    corrected = ts - pd.Series(node).map(off).fillna(0).to_numpy(np.int64)

    rows = np.flatnonzero(decoded)
    order = rows[np.lexsort((corrected[rows], fp[rows]))]
    fps, tss = fp[order], corrected[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (fps[1:] != fps[:-1]) | (tss[1:] - tss[:-1] > window_ns)
    instance = np.cumsum(new) - 1
    h = pd.DataFrame(
        {
            "instance": instance,
            "packet": order,
            "point": point[order],
            "ts_ns": ts[order],
            "ts_corrected_ns": tss,
            "node": node[order],
            "origin": origin[order],
        }
    )
    h["copy_no"] = h.groupby(["instance", "point"]).cumcount()
    h["ambiguous"] = h.groupby("instance")["copy_no"].transform("max") > 0
    # hop order: the sending node first, then nodes by first sighting, then time within a node
    first = h.groupby(["instance", "node"])["ts_corrected_ns"].transform("min")
    first = first.where(h["node"] != h["origin"], np.iinfo(np.int64).min)
    h["_node_first"] = first
    h = h.sort_values(["instance", "_node_first", "ts_corrected_ns"], kind="stable").reset_index(drop=True)
    h["hop_index"] = h.groupby("instance").cumcount()
    prev = h.groupby("instance")["ts_corrected_ns"].shift(1)
    h["delta_ns"] = (h["ts_corrected_ns"] - prev).fillna(-1).astype(np.int64)
    pk = packets.iloc[h["packet"].to_numpy()]
    for col in (
        "capture_id",
        "encap",
        "vni",
        "outer_src",
        "outer_dst",
        "src",
        "dst",
        "proto",
        "sport",
        "dport",
        "ip_id",
        "tcp_flags",
        "ip_len",
        "payload_len",
        "fingerprint",
        "icmp_type",
        "icmp_code",
        "q_src",
        "q_dst",
        "q_proto",
        "q_sport",
        "q_dport",
    ):
        h[col] = pk[col].to_numpy()
    h["interface"] = pts["interface"].to_numpy()[h["point"].to_numpy()]
    h["role"] = pts["role"].to_numpy()[h["point"].to_numpy()]
    h["flow_id"] = -1
    h["direction"] = ""
    return conform(h, "hops"), offsets


# ---- flows -----------------------------------------------------------------------------------
class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _conversation_keys(proto, src, sport, dst, dport) -> tuple[np.ndarray, pd.DataFrame]:
    """Direction-free conversation ids (codes) and their tuples."""
    src, dst = np.asarray(src, dtype=object), np.asarray(dst, dtype=object)
    swap = (src > dst) | ((src == dst) & (np.asarray(sport) > np.asarray(dport)))
    a_ip, b_ip = np.where(swap, dst, src), np.where(swap, src, dst)
    a_port, b_port = np.where(swap, dport, sport), np.where(swap, sport, dport)
    idx = pd.MultiIndex.from_arrays([np.asarray(proto), a_ip, a_port, b_ip, b_port])
    codes, uniq = idx.factorize()
    return codes, uniq.to_frame(index=False, name=["proto", "a_ip", "a_port", "b_ip", "b_port"])


def build_flows(
    hops: pd.DataFrame, conntrack: pd.DataFrame, rules: pd.DataFrame, captures: pd.DataFrame, routes: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(flows, hops with flow_id and direction filled in)."""
    from .schema import conform

    hops = hops.copy()
    icmp_err = (
        ((hops["proto"] == 1) & hops["icmp_type"].isin(ICMP4_ERRORS))
        | ((hops["proto"] == 58) & hops["icmp_type"].isin(ICMP6_ERRORS))
    ) & (hops["q_proto"] >= 0)
    q = icmp_err.to_numpy()
    proto = np.where(q, hops["q_proto"], hops["proto"])
    src = np.where(q, hops["q_src"].astype(object), hops["src"].astype(object))
    dst = np.where(q, hops["q_dst"].astype(object), hops["dst"].astype(object))
    sport = np.where(q, hops["q_sport"], hops["sport"])
    dport = np.where(q, hops["q_dport"], hops["dport"])
    hop_keys, key_table = _conversation_keys(proto, src, sport, dst, dport)

    # conntrack tuples join the same key space; a NATed entry links its original and reply legs
    ct = conntrack[conntrack["orig_src"] != ""]
    ct_orig = pd.MultiIndex.from_frame(key_table).get_indexer(
        pd.MultiIndex.from_arrays(
            _canon(ct["proto_num"], ct["orig_src"], ct["orig_sport"], ct["orig_dst"], ct["orig_dport"])
        )
    )
    ct_reply = pd.MultiIndex.from_frame(key_table).get_indexer(
        pd.MultiIndex.from_arrays(
            _canon(ct["proto_num"], ct["reply_src"], ct["reply_sport"], ct["reply_dst"], ct["reply_dport"])
        )
    )
    n_keys = len(key_table)
    uf = _UnionFind(n_keys)
    inst_first = pd.Series(hop_keys).groupby(hops["instance"].to_numpy()).transform("first").to_numpy()
    nat = inst_first != hop_keys  # one packet seen with two tuples: a NAT rewrite between hops
    for a, b in set(zip(inst_first[nat].tolist(), hop_keys[nat].tolist(), strict=True)):
        uf.union(a, b)
    for a, b in zip(ct_orig, ct_reply, strict=True):
        if a >= 0 and b >= 0:
            uf.union(int(a), int(b))
    comp = np.asarray([uf.find(k) for k in range(n_keys)], dtype=np.int64)
    flow_of_hop = comp[hop_keys] if len(hop_keys) else np.zeros(0, dtype=np.int64)
    roots, flow_ids = np.unique(flow_of_hop, return_inverse=True)
    hops["flow_id"] = flow_ids.astype(np.int64)
    hops["_icmp_err"] = q

    ctx = _Context(
        _service_map(rules),
        _destination_points(captures, routes),
        {
            (int(r.proto_num), r.orig_src, int(r.orig_sport), r.orig_dst, int(r.orig_dport)): r
            for r in ct.itertuples(index=False)
        },
        captures,
        routes,
    )
    flows, direction = [], np.full(len(hops), "", dtype=object)
    if len(hops):
        order = np.argsort(hops["flow_id"].to_numpy(), kind="stable")
        bounds = np.flatnonzero(np.diff(hops["flow_id"].to_numpy()[order])) + 1
        cols = {
            c: hops[c].to_numpy()
            for c in (
                "instance",
                "hop_index",
                "ts_corrected_ns",
                "src",
                "dst",
                "sport",
                "dport",
                "proto",
                "tcp_flags",
                "ip_len",
                "payload_len",
                "node",
                "interface",
                "capture_id",
                "icmp_type",
                "icmp_code",
                "_icmp_err",
                "ambiguous",
            )
        }
        for fid, idx in enumerate(np.split(order, bounds)):
            summary, dirs = _summarise(fid, idx, cols, ctx)
            flows.append(summary)
            direction[idx] = dirs
    hops["direction"] = direction
    # conntrack-only conversations: known to the kernel, never captured (one flow per conversation, even
    # when several nodes track it). Tunnel underlay entries are left out: their packets are the
    # encapsulated hops of the flows above.
    captured = set(roots.tolist())
    seen: set[tuple] = set()
    fid = len(flows)
    for r, a in zip(ct.itertuples(index=False), ct_orig, strict=True):
        key = tuple(v[0] for v in _canon([r.proto_num], [r.orig_src], [r.orig_sport], [r.orig_dst], [r.orig_dport]))
        if (a >= 0 and uf.find(int(a)) in captured) or _is_underlay(int(r.proto_num), int(r.orig_dport)) or key in seen:
            continue
        seen.add(key)
        flows.append(_unobserved(fid, r, ctx.services))
        fid += 1
    hops = hops.drop(columns=["_icmp_err"])
    # number flows in the order they were first seen (conntrack-only ones last)
    table = conform(pd.DataFrame(flows), "flows")
    if len(table):
        first = table["first_ns"].where(table["first_ns"] >= 0, np.iinfo(np.int64).max)
        order = np.lexsort((table["flow_id"].to_numpy(), first.to_numpy()))
        renumber = np.empty(len(table), dtype=np.int64)
        renumber[table["flow_id"].to_numpy()[order]] = np.arange(len(table))
        table = table.iloc[order].reset_index(drop=True)
        table["flow_id"] = np.arange(len(table))
        hops["flow_id"] = renumber[hops["flow_id"].to_numpy()]
    return table, conform(hops, "hops")


def _is_underlay(proto: int, dport: int) -> bool:
    """Tunnel transport: VXLAN/Geneve/WireGuard UDP, IPIP and IPv6-in-IPv4."""
    return proto in (4, 41) or (proto == 17 and dport in (4789, 8472, 6081, 51820, 51821))


def _canon(proto, src, sport, dst, dport) -> list[np.ndarray]:
    src, dst = np.asarray(src, dtype=object), np.asarray(dst, dtype=object)
    sport, dport = np.asarray(sport), np.asarray(dport)
    swap = (src > dst) | ((src == dst) & (sport > dport))
    return [
        np.asarray(proto),
        np.where(swap, dst, src),
        np.where(swap, dport, sport),
        np.where(swap, src, dst),
        np.where(swap, sport, dport),
    ]


def _service_map(rules: pd.DataFrame) -> dict[tuple[str, int, str], str]:
    svc = rules[(rules["service_ip"].astype(str) != "") & (rules["service_port"] >= 0)]
    out = {}
    for r in svc.itertuples(index=False):
        proto = str(r.protocol).lstrip("!") or "tcp"
        out[(str(r.service_ip), int(r.service_port), proto)] = str(r.service)
    return out


def _destination_points(captures: pd.DataFrame, routes: pd.DataFrame) -> dict[str, tuple[str, str, int]]:
    """Pod IP -> (node, interface, capture_id) of the capture on its workload interface."""
    out = {}
    for r in captures.itertuples(index=False):
        if r.role == "workload" and r.pod_ip:
            out[str(r.pod_ip)] = (str(r.node), str(r.interface), int(r.capture_id))
    return out


def _tcp_history(events: list[tuple[bool, int, int]]) -> tuple[str, str]:
    """Zeek-style (conn_state, history) from (is_originator, flags, payload_len) in time order."""
    hist = []
    seen = set()
    orig_syn = resp_synack = orig_fin = resp_fin = orig_rst = resp_rst = False
    for is_orig, flags, plen in events:
        letters = []
        if flags & TCP_SYN and not flags & TCP_ACK:
            letters.append("S")
            orig_syn |= is_orig
        elif flags & TCP_SYN and flags & TCP_ACK:
            letters.append("H")
            resp_synack |= not is_orig
        if flags & TCP_RST:
            letters.append("R")
            orig_rst |= is_orig
            resp_rst |= not is_orig
        if flags & TCP_FIN:
            letters.append("F")
            orig_fin |= is_orig
            resp_fin |= not is_orig
        if plen > 0:
            letters.append("D")
        elif flags & TCP_ACK and not flags & (TCP_SYN | TCP_FIN | TCP_RST):
            letters.append("A")
        for letter in letters:
            shown = letter if is_orig else letter.lower()
            if shown not in seen:
                seen.add(shown)
                hist.append(shown)
    history = "".join(hist)
    if not orig_syn and not resp_synack:
        state = "OTH"
    elif orig_syn and not resp_synack:
        state = "REJ" if resp_rst else "RSTOS0" if orig_rst else "SH" if orig_fin else "S0"
    elif resp_synack and not orig_syn:
        state = "RSTRH" if resp_rst else "SHR" if resp_fin else "OTH"
    elif orig_rst:
        state = "RSTO"
    elif resp_rst:
        state = "RSTR"
    elif orig_fin and resp_fin:
        state = "SF"
    elif orig_fin:
        state = "S2"
    elif resp_fin:
        state = "S3"
    else:
        state = "S1"
    return state, history


@dataclass
class _Context:
    """What flow summaries look things up in."""

    services: dict
    dest_points: dict
    ct_by_orig: dict
    captures: pd.DataFrame
    routes: pd.DataFrame


def _directions(idx: np.ndarray, start: np.ndarray, c: dict, client: tuple, err: np.ndarray) -> np.ndarray:
    """fwd for packets from the client side, rev for packets sent by a forward destination."""
    inst = c["instance"][idx]
    senders = [(c["src"][i], int(c["sport"][i])) for i in start]
    fwd = {c["instance"][i] for i, s in zip(start, senders, strict=True) if s == client}
    fwd_dsts = {(c["dst"][i], int(c["dport"][i])) for i in idx[np.isin(inst, list(fwd))]}
    rev = {
        c["instance"][i] for i, s in zip(start, senders, strict=True) if c["instance"][i] not in fwd and s in fwd_dsts
    }
    return np.where(err, "icmp-error", np.where(np.isin(inst, list(rev)), "rev", "fwd"))


def _summarise(fid: int, idx: np.ndarray, c: dict, ctx: _Context) -> tuple[dict, np.ndarray]:
    inst = c["instance"][idx]
    ts = c["ts_corrected_ns"][idx]
    err = c["_icmp_err"][idx]
    # each instance's first sighting is on its sender's side; the flow's opener is the first SYN, else packet
    firsts = idx[(c["hop_index"][idx] == 0) & ~err]
    if not len(firsts):
        firsts = idx[c["hop_index"][idx] == 0]
    start = firsts[np.argsort(c["ts_corrected_ns"][firsts], kind="stable")]
    syn = start[(c["proto"][start] == 6) & ((c["tcp_flags"][start] & (TCP_SYN | TCP_ACK)) == TCP_SYN)]
    opener = syn[0] if len(syn) else start[0]
    client = (c["src"][opener], int(c["sport"][opener]))
    dialled = (c["dst"][opener], int(c["dport"][opener]))
    proto = int(c["proto"][opener])
    dirs = _directions(idx, start, c, client, err)
    fwd_idx, rev_idx, err_idx = idx[dirs == "fwd"], idx[dirs == "rev"], idx[err]
    fwd_instances = set(c["instance"][fwd_idx].tolist())
    rev_instances = set(c["instance"][rev_idx].tolist())

    # NAT legs: what the last sighting of forward packets shows, else conntrack's reply tuple
    ct = ctx.ct_by_orig.get((proto, client[0], client[1], dialled[0], dialled[1]))
    backend, snat = ("", -1), ("", -1)
    last = fwd_idx[c["hop_index"][fwd_idx] == _max_by_instance(c["instance"][fwd_idx], c["hop_index"][fwd_idx])]
    for i in last:
        if (c["dst"][i], int(c["dport"][i])) != dialled:
            backend = (c["dst"][i], int(c["dport"][i]))
        if (c["src"][i], int(c["sport"][i])) != client:
            snat = (c["src"][i], int(c["sport"][i]))
    if ct is not None:
        if not backend[0] and (ct.reply_src, ct.reply_sport) != (ct.orig_dst, ct.orig_dport):
            backend = (ct.reply_src, int(ct.reply_sport))
        if not snat[0] and (ct.reply_dst, ct.reply_dport) != (ct.orig_src, ct.orig_sport):
            snat = (ct.reply_dst, int(ct.reply_dport))

    path_fwd, path_rev = _path(fwd_idx, c), _path(rev_idx, c)
    if proto == 6:
        events = [
            (c["instance"][i] in fwd_instances, int(c["tcp_flags"][i]), int(c["payload_len"][i]))
            for i in start
            if c["proto"][i] == 6
        ]
        conn_state, history = _tcp_history(events)
    else:
        conn_state, history = ("SF", "Dd") if rev_instances else ("S0", "D")
    verdict, last_seen, missing_at = _verdict(
        fwd_idx, rev_instances, backend[0] or dialled[0], path_fwd, ts, c, ctx, proto, conn_state, bool(err.any())
    )
    summary = {
        "flow_id": fid,
        "proto": PROTO_NAMES.get(proto, str(proto)),
        "proto_num": proto,
        "client_ip": client[0],
        "client_port": client[1],
        "server_ip": dialled[0],
        "server_port": dialled[1],
        "service": ctx.services.get((str(dialled[0]), dialled[1], PROTO_NAMES.get(proto, "")), ""),
        "backend_ip": backend[0],
        "backend_port": backend[1],
        "snat_ip": snat[0],
        "snat_port": snat[1],
        "packets_fwd": len(fwd_instances),
        "packets_rev": len(rev_instances),
        "bytes_fwd": _bytes_per_instance(fwd_idx, c),
        "bytes_rev": _bytes_per_instance(rev_idx, c),
        "conn_state": conn_state,
        "history": history,
        "first_ns": int(ts.min()),
        "last_ns": int(ts.max()),
        "path_fwd": path_fwd,
        "path_rev": path_rev,
        "verdict": verdict,
        "last_seen": last_seen,
        "missing_at": missing_at,
        "icmp_errors": len(set(c["instance"][err_idx].tolist())),
        "icmp_error_types": " ".join(
            sorted(
                {f"{int(t)}/{int(k)}" for t, k in zip(c["icmp_type"][err_idx], c["icmp_code"][err_idx], strict=True)}
            )
        ),
        "ambiguous": len(set(inst[c["ambiguous"][idx]].tolist())),
        "ct_state": str(ct.state) if ct is not None else "",
        "ct_nat": str(ct.nat) if ct is not None else "",
        "hops": len(idx),
    }
    return summary, dirs


def _verdict(
    fwd_idx: np.ndarray,
    rev_instances: set,
    server_ip: str,
    path_fwd: str,
    ts: np.ndarray,
    c: dict,
    ctx: _Context,
    proto: int,
    conn_state: str,
    icmp_error: bool,
) -> tuple[str, str, str]:
    """delivered / dropped / partial / unobserved, with the last point seen and the first one missing.

    "dropped" needs evidence: a capture on the destination's interface that was running and did not
    see the packets, or a connection attempt that was never answered (or answered by an ICMP error).
    Without a capture there and without a reply, delivery is unknown: "unobserved".
    """
    fwd_instances = set(c["instance"][fwd_idx].tolist())
    if not fwd_instances:
        return ("delivered" if rev_instances else "unobserved"), "", ""
    dest = ctx.dest_points.get(str(server_ip))
    reached: set = set()
    running = False
    if dest is not None:
        at = fwd_idx[(c["node"][fwd_idx] == dest[0]) & (c["interface"][fwd_idx] == dest[1])]
        reached = set(c["instance"][at].tolist())
        cap = ctx.captures[ctx.captures["capture_id"] == dest[2]].iloc[0]
        running = cap.window_start_ns <= ts.min() and ts.max() <= max(cap.window_end_ns, cap.last_ns)
    if dest is not None and reached == fwd_instances:
        return "delivered", "", ""
    if dest is not None and (reached or (rev_instances and running)):
        verdict = "partial"
    elif rev_instances:
        return "delivered", "", ""
    elif (dest is not None and running) or (proto == 6 and conn_state in ("S0", "RSTOS0", "SH")) or icmp_error:
        verdict = "dropped"
    else:
        return "unobserved", "", ""
    unreached = fwd_idx[~np.isin(c["instance"][fwd_idx], list(reached))]
    points = path_fwd.split(" > ")
    ranks = [points.index(f"{n}:{i}") for n, i in zip(c["node"][unreached], c["interface"][unreached], strict=True)]
    deepest = unreached[int(np.argmax(ranks))]
    last_seen = f"{c['node'][deepest]}:{c['interface'][deepest]}"
    missing = _next_point(str(c["node"][deepest]), str(c["interface"][deepest]), str(c["dst"][deepest]), dest, ctx)
    return verdict, last_seen, missing


def _next_point(node: str, iface: str, dst_ip: str, dest: tuple | None, ctx: _Context) -> str:
    """The capture point a packet last seen at node:iface should have crossed next."""
    caps = ctx.captures
    here = caps[caps["node"] == node]
    role = here.loc[here["interface"] == iface, "role"]
    role = str(role.iloc[0]) if len(role) else ""
    dest_node = dest[0] if dest is not None else ""

    def point(n: str, want_role: str) -> str:
        found = caps[(caps["node"] == n) & (caps["role"] == want_role)]
        return f"{n}:{found['interface'].iloc[0]}" if len(found) else ""

    if dest is not None and node == dest_node:
        if role == "uplink":
            tunnel = point(node, "tunnel")
            return tunnel or f"{dest[0]}:{dest[1]}"
        return f"{dest[0]}:{dest[1]}"
    if role == "workload":
        dev = _route_dev(ctx.routes, node, dst_ip)
        if dev and ((caps["node"] == node) & (caps["interface"] == dev)).any():
            return f"{node}:{dev}"
        return point(node, "tunnel") or point(node, "uplink")
    if role == "tunnel":
        return point(node, "uplink")
    if role == "uplink" and dest_node:
        return point(dest_node, "uplink")
    return f"{dest[0]}:{dest[1]}" if dest is not None else ""


def _route_dev(routes: pd.DataFrame, node: str, ip: str) -> str:
    """Longest-prefix match in the node's main table."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    best, dev = -1, ""
    for r in routes[(routes["node"] == node) & (routes["table"] == "main")].itertuples(index=False):
        dst = "0.0.0.0/0" if r.dst == "default" else r.dst
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if addr.version == net.version and addr in net and net.prefixlen > best and r.dev:
            best, dev = net.prefixlen, str(r.dev)
    return dev


def _max_by_instance(inst: np.ndarray, hop: np.ndarray) -> np.ndarray:
    if not len(inst):
        return hop
    return pd.Series(hop).groupby(inst).transform("max").to_numpy()


def _bytes_per_instance(rows: np.ndarray, c: dict) -> int:
    if not len(rows):
        return 0
    first = rows[
        c["hop_index"][rows] == pd.Series(c["hop_index"][rows]).groupby(c["instance"][rows]).transform("min").to_numpy()
    ]
    return int(pd.Series(c["ip_len"][first]).groupby(c["instance"][first]).first().clip(lower=0).sum())


def _path(rows: np.ndarray, c: dict) -> str:
    """Capture points in the order packets cross them (median time after each packet's first sighting)."""
    if not len(rows):
        return ""
    t0 = pd.Series(c["ts_corrected_ns"][rows]).groupby(c["instance"][rows]).transform("min").to_numpy()
    rank = pd.Series(c["hop_index"][rows]).groupby(c["instance"][rows]).transform("min").to_numpy()
    df = pd.DataFrame(
        {
            "point": [f"{n}:{i}" for n, i in zip(c["node"][rows], c["interface"][rows], strict=True)],
            "rel": c["ts_corrected_ns"][rows] - t0,
            "hop": c["hop_index"][rows] - rank,
        }
    )
    order = df.groupby("point").agg(hop=("hop", "median"), rel=("rel", "median")).sort_values(["hop", "rel"])
    return " > ".join(order.index)


def _unobserved(fid: int, r, services: dict) -> dict:
    backend = (
        (r.reply_src, int(r.reply_sport)) if (r.reply_src, r.reply_sport) != (r.orig_dst, r.orig_dport) else ("", -1)
    )
    snat = (r.reply_dst, int(r.reply_dport)) if (r.reply_dst, r.reply_dport) != (r.orig_src, r.orig_sport) else ("", -1)
    return {
        "flow_id": fid,
        "proto": str(r.proto),
        "proto_num": int(r.proto_num),
        "client_ip": r.orig_src,
        "client_port": int(r.orig_sport),
        "server_ip": r.orig_dst,
        "server_port": int(r.orig_dport),
        "service": services.get((str(r.orig_dst), int(r.orig_dport), str(r.proto)), ""),
        "backend_ip": backend[0],
        "backend_port": backend[1],
        "snat_ip": snat[0],
        "snat_port": snat[1],
        "packets_fwd": 0,
        "packets_rev": 0,
        "bytes_fwd": 0,
        "bytes_rev": 0,
        "conn_state": "",
        "history": "",
        "first_ns": -1,
        "last_ns": -1,
        "path_fwd": "",
        "path_rev": "",
        "verdict": "unobserved",
        "last_seen": "",
        "missing_at": "",
        "icmp_errors": 0,
        "icmp_error_types": "",
        "ambiguous": 0,
        "ct_state": str(r.state),
        "ct_nat": str(r.nat),
        "hops": 0,
    }
