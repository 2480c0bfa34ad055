"""The join: one packet seen at several capture points, and the clocks of different nodes.

1. Packets are keyed by their NAT- and encapsulation-invariant fingerprint (packets.fingerprint).
2. Fingerprints seen at most once per capture point give unambiguous cross-node matches; from them
   each node's clock offset is estimated NTP-style from the minimum one-way delays in both
   directions, with the half-width of the feasible interval as its uncertainty.
3. With corrected times, copies of a fingerprint closer than a window form one packet *instance*;
   each copy is a *hop*. Two copies at the same capture point make the instance ambiguous. A capture
   point is an interface of a node, however many captures saw it; a packet two captures took there
   is one sighting (second_copies), so an `-i any` capture beside the interfaces' own adds nothing.
Flows are built from the hops in :mod:`calforensics.join.flows`. Everything here is sorts, group-bys and
merges over columns: whole columns in memory, or, for a spilled packets table, fingerprint ranges
kept on disk (:mod:`calforensics.runtime.partitions`), one range in memory per thread.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import numpy as np
import pandas as pd

from ..runtime.memory import WRITE_BACK_ROWS, write_back
from ..runtime.parallel import thread_map
from ..runtime.partitions import Partitioning, parts_for
from ..schema import SCHEMAS, categorical, codes_dtype, columns_frame, conform, per_category
from .fragments import Datagrams

HOP_WINDOW_NS = 1_000_000_000  # copies of one fingerprint further apart than this are different packets


@dataclass
class Joined:
    hops: pd.DataFrame
    clock_offsets: pd.DataFrame
    flows: pd.DataFrame


# ---- who owns an address ---------------------------------------------------------------------
SERVICE_DEVICES = {"kube-ipvs0"}


def address_owners(
    interfaces: pd.DataFrame,
    routes: pd.DataFrame,
    nodes: pd.DataFrame | None = None,
    pods: pd.DataFrame | None = None,
    known: list[str] | None = None,
) -> dict[str, str]:
    """IP -> node for node addresses and local pod addresses (/32 routes on cali* devices).

    Addresses claimed by several nodes (link-local gateways, loopback) are left out, and so are the
    service addresses kube-proxy's IPVS mode puts on `kube-ipvs0`. Cluster resources (``nodes``:
    their addresses; ``pods``: where each runs) fill in addresses the nodes' own state does not
    show, named as the bundle names its nodes (``known``); they never override that state.
    """
    claims: dict[str, set[str]] = {}
    for node, name, addrs in zip(
        interfaces["node"].astype(str), interfaces["name"].astype(str), interfaces["addresses"], strict=True
    ):
        if name in SERVICE_DEVICES:  # kube-proxy's IPVS dummy holds every ClusterIP, on every node
            continue
        for cidr in str(addrs).split():
            ip = cidr.split("/")[0]
            claims.setdefault(ip, set()).add(node)
    local = routes[routes["dev"].astype(str).str.startswith("cali") & (routes["type"] == "unicast")]
    for node, dst in zip(local["node"].astype(str), local["dst"], strict=True):
        ip = str(dst).split("/")[0]
        if str(dst).endswith("/32") or "/" not in str(dst):
            claims.setdefault(ip, set()).add(node)
    out = _sole_owners(claims)
    for ip, node in resource_owners(nodes, pods, known or []).items():
        if ip not in claims:
            out[ip] = node
    return out


def resource_owners(nodes: pd.DataFrame | None, pods: pd.DataFrame | None, known: list[str]) -> dict[str, str]:
    """IP -> node as cluster resources say: nodes' addresses (InternalIP, Calico's address, tunnel
    addresses) and running pods' addresses. A node the bundle names by its short host name (a
    resource says `node-a.example.internal`) gets the bundle's name."""
    short = {k.split(".")[0]: k for k in known}

    def named(node: str) -> str:
        return node if node in known or not node else short.get(node.split(".")[0], node)

    claims: dict[str, set[str]] = {}
    if nodes is not None and len(nodes):
        cols = ("internal_ip", "external_ip", "calico_ip", "tunnel_ips")
        for r in nodes.itertuples(index=False):
            for ip in " ".join(str(getattr(r, c)) for c in cols).split():
                claims.setdefault(ip.split("/")[0], set()).add(named(str(r.name)))
    if pods is not None and len(pods):
        gone = pods["status"].astype(str).isin(["Succeeded", "Failed", "Completed", "Evicted"])
        for ip, node in zip(pods.loc[~gone, "ip"].astype(str), pods.loc[~gone, "pod_node"].astype(str), strict=True):
            if ip and node:
                claims.setdefault(ip, set()).add(named(node))
    return _sole_owners(claims)


def _sole_owners(claims: dict[str, set[str]]) -> dict[str, str]:
    """The addresses one node alone claims (loopback, link-local and unspecified ones are everyone's)."""
    out = {}
    for ip, owners in claims.items():
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if len(owners) == 1 and not (addr.is_loopback or addr.is_link_local or addr.is_unspecified):
            out[ip] = next(iter(owners))
    return out


# ---- hops and clocks -------------------------------------------------------------------------
def first_seen_codes(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize for integers in [0, size) with a small size: (codes numbered in order of first
    appearance, the values in that order), from one pass of ufunc.at instead of a hash table."""
    first = np.full(size, len(values), dtype=np.int64)
    np.minimum.at(first, values, np.arange(len(values)))
    present = np.flatnonzero(first < len(values))
    uniq = present[np.argsort(first[present], kind="stable")]
    rank = np.zeros(size, dtype=np.int64)
    rank[uniq] = np.arange(len(uniq))
    return rank[values], uniq


def _points_table(pairs: np.ndarray, interfaces: pd.Index, captures: pd.DataFrame) -> pd.DataFrame:
    """The capture points, from their (capture, interface) pair values in point order."""
    width = len(interfaces) + 1
    pts = pd.DataFrame({"capture_id": pairs // width, "interface": np.asarray(interfaces, dtype=object)[pairs % width]})
    cap = captures.set_index("capture_id")
    pts["node"] = cap.loc[pts["capture_id"], "node"].astype(str).to_numpy()
    roles = cap.loc[pts["capture_id"], "role"].astype(str).to_numpy()
    # an `-i any` capture's packets sit on real interfaces: take their role from the name
    from ..ingest.layout import interface_role

    pts["role"] = [interface_role(i) if r == "any" else r for i, r in zip(pts["interface"], roles, strict=True)]
    # a capture of several interfaces (`-i any`, a pcapng of several): another capture may hold one
    per_artifact = captures.groupby("artifact", observed=True)["capture_id"].transform("size")
    several = set(captures.loc[(per_artifact > 1) | (captures["role"].astype(str) == "any"), "capture_id"])
    pts["shared"] = [int(c) in several for c in pts["capture_id"]]
    return pts


class Sightings:
    """What the join needs of each packet (its key, capture point, node, time and sender's node),
    for any block of rows. Lookups are made once per distinct value and capture points are numbered
    over the whole table first, so a block gives the same values as the whole table would."""

    def __init__(
        self,
        packets: pd.DataFrame,
        captures: pd.DataFrame,
        owners: dict[str, str],
        block_rows: int = 1 << 22,
        keep: np.ndarray | None = None,
    ) -> None:
        self.packets, self.rows, self.keep = packets, len(packets), keep  # keep: the packets in focus
        self.nodes = sorted(set(captures["node"].astype(str)))
        node_index = {name: i for i, name in enumerate(self.nodes)}
        iface = categorical(packets["interface"])
        self._iface, self._capture = iface.codes, packets["capture_id"].to_numpy()
        self._width = len(iface.categories) + 1
        # a capture point is a capture and an interface (an `-i any` capture has several), numbered
        # in order of first appearance
        size = (int(self._capture.max()) + 1) * self._width + 1 if self.rows else 0
        first = np.full(size, self.rows, dtype=np.int64)
        for lo in range(0, self.rows, block_rows):
            pair = self._pair(lo, lo + block_rows)
            np.minimum.at(first, pair, np.arange(lo, lo + len(pair)))
        present = np.flatnonzero(first < self.rows)
        uniq = present[np.argsort(first[present], kind="stable")]
        # one interface of one node is one capture point, however many captures saw it (an `-i any`
        # capture beside the interface's own): pairs are numbered by their (node, interface) label,
        # each label described by the pair of a capture of that interface alone where there is one
        pairs = _points_table(uniq - 1, iface.categories, captures)
        label, first = pd.factorize(pd.Series(list(zip(pairs["node"], pairs["interface"], strict=True))))
        self._point_of_pair = np.zeros(size, dtype=np.int64)
        self._point_of_pair[uniq] = label
        shared = pairs.assign(label=label).sort_values(["label", "shared"], kind="stable")
        self.points = shared.drop_duplicates("label").drop(columns=["label", "shared"]).reset_index(drop=True)
        self._point_node = np.asarray([node_index[x] for x in self.points["node"]], dtype=np.int64)

        def owner(address: str) -> int:
            return node_index.get(owners.get(address, ""), -1)

        self._src_owner, self._src = per_category(packets["src"], owner, -1)
        self._outer_owner, self._outer = per_category(packets["outer_src"], owner, -1)
        self._src_scoped, _ = per_category(packets["src"], is_link_scoped, False)
        self._dst_scoped, self._dst = per_category(packets["dst"], is_link_scoped, False)
        self._tunnelled, self._encap = per_category(packets["encap"], lambda e: e != "none", True)
        self._ok, self._status = per_category(packets["status"], lambda s: s == "ok", False)

    def _pair(self, lo: int, hi: int) -> np.ndarray:
        # +1: interface code -1 (no name) stays >= 0
        return self._capture[lo:hi].astype(np.int64) * self._width + self._iface[lo:hi] + 1

    def block(self, lo: int, hi: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({fp, point, node, ts, origin} of rows [lo, hi), which of them decoded to IP)."""
        p = self.packets
        point = self._point_of_pair[self._pair(lo, hi)]
        fp = p["fingerprint"].to_numpy()[lo:hi]
        # packets that cannot leave their link (link-local, multicast, broadcast) are never the same
        # packet at two capture points, however alike: keep them apart with a point-specific key
        scoped = self._src_scoped[self._src[lo:hi]] | self._dst_scoped[self._dst[lo:hi]]
        fp = np.where(scoped, fp ^ (point.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)), fp)
        decoded = (p["ip_version"].to_numpy()[lo:hi] > 0) & self._ok[self._status[lo:hi]]
        if self.keep is not None:  # packets out of focus are left out of the join
            decoded &= self.keep[lo:hi]
        # the sender's node: the owner of the outer source of tunnelled packets, else of the source
        origin = np.where(
            self._tunnelled[self._encap[lo:hi]],
            self._outer_owner[self._outer[lo:hi]],
            self._src_owner[self._src[lo:hi]],
        ).astype(np.int64)
        cols = {"fp": fp, "point": point, "node": self._point_node[point] if len(point) else point}
        return {**cols, "ts": p["ts_ns"].to_numpy()[lo:hi], "origin": origin}, decoded


SAME_OBSERVATION_NS = 1_000_000  # two captures' copies of one packet at one interface: at most this apart


def second_copies(
    packets: pd.DataFrame, captures: pd.DataFrame, parts: int = 1, block_rows: int = 1 << 22
) -> np.ndarray | None:
    """Which packets another capture also took at the same interface of the same node: an `-i any`
    capture beside the interface's own, or two pcapngs of one interface. Such a packet is one
    observation, not two hops at one point. Per interface, one capture keeps its copies (one of that
    interface alone where there is one, else the lowest capture id); another capture's copy is
    marked here, to be left out of the join, when the keeper holds a copy of the same fingerprint
    SAME_OBSERVATION_NS or less apart from it. A copy the keeper did not take (it started later,
    or dropped it) stays a hop. None when no interface was captured twice.

    The table is read a block of rows at a time, and the copies compared a fingerprint range at a
    time (``parts``; a packet's copies share its fingerprint), so memory stays that of a partition."""
    n = len(packets)
    if not n or not len(captures):
        return None
    node, iface = categorical(packets["node"]), categorical(packets["interface"])
    capture, fp, ts = (packets[c].to_numpy() for c in ("capture_id", "fingerprint", "ts_ns"))
    blocks = [slice(lo, min(n, lo + block_rows)) for lo in range(0, n, block_rows)]
    width = max(int(captures["capture_id"].max()), *(int(capture[b].max()) for b in blocks)) + 1

    def labels(rows: slice | np.ndarray) -> np.ndarray:  # (node, interface) as one integer
        return node.codes[rows].astype(np.int64) * (len(iface.categories) + 1) + iface.codes[rows] + 1

    pairs = np.unique(np.concatenate([pd.unique(labels(b) * width + capture[b]) for b in blocks]))
    pair_label, pair_capture = pairs // width, pairs % width
    twice = np.flatnonzero(np.bincount(pair_label) > 1)
    unplaced = _unplaced_copies(packets, captures, blocks, parts)
    if not len(twice):
        return unplaced
    per_artifact = captures.groupby("artifact", observed=True)["capture_id"].transform("size")
    several = (per_artifact > 1) | (captures["role"].astype(str) == "any")
    rank = np.zeros(width, dtype=np.int64)
    rank[captures.loc[several, "capture_id"].to_numpy().astype(np.int64)] = 1  # captures of one interface first
    order = np.lexsort((pair_capture, rank[pair_capture], pair_label))  # per label, the keeper first
    first = order[np.r_[True, pair_label[order][1:] != pair_label[order][:-1]]]
    keeps = np.full(int(pair_label.max()) + 1, -1, dtype=np.int64)  # each label's keeping capture
    keeps[pair_label[first]] = pair_capture[first]
    out = np.zeros(n, dtype=bool) if unplaced is None else unplaced
    for bounds in _fingerprint_ranges(max(1, parts)):
        at = np.concatenate([b.start + _rows_in(fp[b], np.isin(labels(b), twice), bounds) for b in blocks])
        lab = labels(at)
        out[at] |= _kept_elsewhere(lab, fp[at], ts[at], capture[at] == keeps[lab])
    return out


def _unplaced_copies(
    packets: pd.DataFrame, captures: pd.DataFrame, blocks: list[slice], parts: int
) -> np.ndarray | None:
    """Copies an `-i any` capture could not place on an interface (SLL v1 without a route for them:
    they sit at `node:any`) that another capture of the same node took, at one of its interfaces,
    SAME_OBSERVATION_NS or less apart: the same observation, kept in the other capture."""
    any_ids = captures.loc[captures["role"].astype(str) == "any", "capture_id"].to_numpy().astype(np.int64)
    if not len(any_ids):
        return None
    iface = categorical(packets["interface"])
    if "any" not in iface.categories:
        return None
    node = categorical(packets["node"])
    any_code = int(iface.categories.get_loc("any"))
    capture, fp, ts = (packets[c].to_numpy() for c in ("capture_id", "fingerprint", "ts_ns"))
    unplaced = [np.isin(capture[b], any_ids) & (iface.codes[b] == any_code) for b in blocks]
    nodes = np.unique(np.concatenate([node.codes[b][m] for b, m in zip(blocks, unplaced, strict=True)]))
    if not len(nodes):
        return None
    out = np.zeros(len(packets), dtype=bool)
    for bounds in _fingerprint_ranges(max(1, parts)):
        # the unplaced copies, and every copy of another capture on their nodes, compared by node
        candidates = [
            np.isin(node.codes[b], nodes) & (m | ~np.isin(capture[b], any_ids))
            for b, m in zip(blocks, unplaced, strict=True)
        ]
        at = np.concatenate([b.start + _rows_in(fp[b], c, bounds) for b, c in zip(blocks, candidates, strict=True)])
        own = ~np.isin(capture[at], any_ids)
        out[at] = _kept_elsewhere(node.codes[at].astype(np.int64), fp[at], ts[at], own)
    return out if out.any() else None


def _kept_elsewhere(label: np.ndarray, fp: np.ndarray, ts: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """True for rows not ``kept`` whose (label, fingerprint) has a kept row at most
    SAME_OBSERVATION_NS away: the nearest kept row before and after each row, in time order."""
    order = np.lexsort((~kept, ts, fp, label))  # at equal times the kept row first
    lab, f, t, k = label[order], fp[order], ts[order], kept[order]
    at = np.arange(len(order))
    before = np.maximum.accumulate(np.where(k, at, -1))
    after = np.minimum.accumulate(np.where(k, at, len(order))[::-1])[::-1]

    def near(other: np.ndarray) -> np.ndarray:
        ok = (other >= 0) & (other < len(order))
        o = np.clip(other, 0, max(0, len(order) - 1))
        return ok & (lab[o] == lab) & (f[o] == f) & (np.abs(t[o] - t) <= SAME_OBSERVATION_NS)

    out = np.zeros(len(order), dtype=bool)
    out[order] = ~k & (near(before) | near(after))
    return out


def is_link_scoped(address: str) -> bool:
    """True for addresses whose packets stay on one link: link-local, multicast, broadcast, unspecified."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_link_local or ip.is_multicast or ip.is_unspecified or address == "255.255.255.255"


def one_way_delays(
    fp: np.ndarray, point: np.ndarray, node: np.ndarray, ts: np.ndarray, origin: np.ndarray
) -> pd.DataFrame:
    """Minimum and count of sender-to-receiver delays per (sending node a, receiving node b), from
    sightings (see _sender_receiver_pairs). Partitions of the fingerprints give partial results
    that merge_one_way combines exactly (a minimum of minima, a sum of counts)."""
    pairs = _sender_receiver_pairs(fp, point, node, ts, origin)
    return pairs.groupby(["a", "b"])["delay"].agg(["min", "size"])


def merge_one_way(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if len(parts) < 2:
        return parts[0] if parts else pd.DataFrame({"min": [], "size": []})
    both = pd.concat(parts)
    return both.groupby(level=[0, 1]).agg({"min": "min", "size": "sum"})


def estimate_clock_offsets(oneway: pd.DataFrame, nodes: list[str]) -> pd.DataFrame:
    """Offsets of each node's clock against a reference node from two-way minimum delays.

    ``oneway`` is indexed by (sending node, receiving node) as indices into ``nodes``, with the
    minimum delay and the number of samples (one_way_delays).
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
    if len(nodes) < 2 or oneway.empty:
        return _offsets_frame(rows + [_unknown(n, ref) for n in nodes[1:]])
    names = np.asarray(nodes, dtype=object)
    oneway = oneway.set_axis(
        pd.MultiIndex.from_arrays(
            [names[oneway.index.get_level_values(0).to_numpy()], names[oneway.index.get_level_values(1).to_numpy()]]
        )
    )
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


def _sender_receiver_pairs(
    fp: np.ndarray, point: np.ndarray, node: np.ndarray, ts: np.ndarray, origin: np.ndarray
) -> pd.DataFrame:
    """One row per (packet, sending node, receiving node): a=sender, b=receiver and the delay from
    the sender's last sighting to the receiver's first (receiver clock minus sender clock, plus
    wire time). Only fingerprints seen at most once per capture point, with a known sender, seen on
    at least two nodes; a node is the sender where it owns the source of its first sighting there.
    Sorts and segment reductions over the sightings (pandas group-bys here were the join's peak)."""
    none = pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in ("a", "b", "delay")})
    if not len(fp):
        return none
    # fingerprints seen twice at one capture point are ambiguous: left out
    by_point = np.lexsort((point, fp))
    f, p = fp[by_point], point[by_point]
    twice = (f[1:] == f[:-1]) & (p[1:] == p[:-1])
    keep = ~np.isin(fp, pd.unique(f[1:][twice])) & (origin >= 0)
    rows = np.flatnonzero(keep)
    if not len(rows):
        return none
    # spans: one per (fingerprint, node), with first and last sighting and the origin of the first row
    rows = rows[np.lexsort((rows, node[rows], fp[rows]))]
    f, n = fp[rows], node[rows]
    starts = np.flatnonzero(np.r_[True, (f[1:] != f[:-1]) | (n[1:] != n[:-1])])
    span_fp, span_node, span_origin = f[starts], n[starts], origin[rows][starts]
    tmin = np.minimum.reduceat(ts[rows], starts)
    tmax = np.maximum.reduceat(ts[rows], starts)
    # fingerprints on at least two nodes (spans of one fingerprint are adjacent)
    fp_start = np.r_[True, span_fp[1:] != span_fp[:-1]]
    fp_id = np.cumsum(fp_start) - 1
    spans_per_fp = np.bincount(fp_id)
    multi = spans_per_fp[fp_id] >= 2
    sender = multi & (span_node == span_origin)
    receiver = multi & (span_node != span_origin)
    s_fp, s_node, s_tmax = fp_id[sender], span_node[sender], tmax[sender]
    r_fp, r_node, r_tmin = fp_id[receiver], span_node[receiver], tmin[receiver]
    # every sender span with every receiver span of its fingerprint (both are sorted by fingerprint)
    lo = np.searchsorted(r_fp, s_fp, side="left")
    count = np.searchsorted(r_fp, s_fp, side="right") - lo
    which = np.repeat(np.arange(len(s_fp)), count)
    idx = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + np.repeat(lo, count)
    return pd.DataFrame({"a": s_node[which], "b": r_node[idx], "delay": r_tmin[idx] - s_tmax[which]})


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
    return conform(pd.DataFrame(rows), "clock_offsets")


def _rank_within(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows share its (group, key): groupby(...).cumcount()."""
    order = np.lexsort((np.arange(len(group)), key, group))
    g, k = group[order], key[order]
    start = np.r_[True, (g[1:] != g[:-1]) | (k[1:] != k[:-1])] if len(order) else np.zeros(0, dtype=bool)
    idx = np.arange(len(order))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = idx - np.maximum.accumulate(np.where(start, idx, 0))
    return ranks


def _min_within(group: np.ndarray, key: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each row, the minimum of ``values`` over rows sharing its (group, key): transform("min")."""
    if not len(group):
        return values.copy()
    order = np.lexsort((key, group))
    g, k = group[order], key[order]
    starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (k[1:] != k[:-1])])
    mins = np.minimum.reduceat(values[order], starts)
    out = np.empty(len(order), dtype=values.dtype)
    out[order] = np.repeat(mins, np.diff(np.r_[starts, len(order)]))
    return out


HOP_PACKET_COLUMNS = [
    *("capture_id", "encap", "vni", "outer_src", "outer_dst", "src", "dst", "proto", "sport", "dport", "ip_id"),
    *("tcp_flags", "ip_len", "payload_len", "fingerprint", "icmp_type", "icmp_code"),
    *("q_src", "q_dst", "q_proto", "q_sport", "q_dport"),
]  # what a hop carries of its packet
JOIN_MIN_ROWS = 200_000  # below this many sightings, threads cost more than they save


def _fingerprint_ranges(parts: int) -> list[tuple[int, int]]:
    """Equal ranges of the 64-bit fingerprint space (fingerprints are hashes, so rows spread evenly)."""
    return list(pairwise((1 << 64) * i // parts for i in range(parts + 1)))


def _rows_in(fp: np.ndarray, decoded: np.ndarray, bounds: tuple[int, int]) -> np.ndarray:
    lo, hi = bounds
    keep = decoded & (fp >= np.uint64(lo))
    if hi < 1 << 64:
        keep &= fp < np.uint64(hi)
    return np.flatnonzero(keep)


def _one_way_in(cols: dict[str, np.ndarray], rows: np.ndarray) -> pd.DataFrame:
    return one_way_delays(*(cols[c][rows] for c in ("fp", "point", "node", "ts", "origin")))


HOP_JOIN_COLUMNS = {
    **{name: np.int64 for name in ("instance", "packet", "point", "ts_ns", "ts_corrected_ns", "node", "origin")},
    **{"copy_no": np.int64, "ambiguous": np.bool_, "hop_index": np.int64, "delta_ns": np.int64},
}  # what the join computes for each hop (the rest is gathered from its packet)


def _instances(
    cols: dict[str, np.ndarray], corrected: np.ndarray, window_ns: int, out: dict, job: tuple[np.ndarray, int]
) -> int:
    """The hops of one fingerprint range, in global hop order, written into ``out`` from row
    ``start`` on, with instances numbered from 0; returns how many instances it holds.

    An instance never spans two fingerprints, so ranges are independent: laid end to end in range
    order, with instance numbers offset, they are exactly the whole-table result."""
    rows, start = job
    at = slice(start, start + len(rows))
    fp = cols["fp"]
    order = rows[np.lexsort((corrected[rows], fp[rows]))]
    fps, tss = fp[order], corrected[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (fps[1:] != fps[:-1]) | (tss[1:] - tss[:-1] > window_ns)
    instance = np.cumsum(new) - 1
    del new, fps
    point, node, origin = cols["point"][order], cols["node"][order], cols["origin"][order]
    # rows are in instance order, so the per-instance group-bys are segment operations on sorted runs
    seg = np.flatnonzero(np.r_[True, instance[1:] != instance[:-1]]) if len(order) else np.zeros(0, np.int64)
    # copy_no: earlier sightings of the instance at the same point (a cumcount over (instance, point))
    copy_no = _rank_within(instance, point)
    out["ambiguous"][at] = (np.maximum.reduceat(copy_no, seg) > 0)[instance] if len(order) else False
    # hop order: the sending node first, then nodes by first sighting, then time within a node
    first = _min_within(instance, node, tss)
    first[node == origin] = np.iinfo(np.int64).min
    by = np.lexsort((tss, first, instance))
    del first
    out["instance"][at] = instance  # still sorted: `by` reorders within instances only
    out["packet"][at] = order[by]
    out["point"][at] = point[by]
    out["ts_ns"][at] = cols["ts"][order][by]
    out["ts_corrected_ns"][at] = tsc = tss[by]
    out["node"][at] = node[by]
    out["origin"][at] = origin[by]
    out["copy_no"][at] = copy_no[by]
    out["hop_index"][at] = hop_index = np.arange(len(order)) - np.repeat(seg, np.diff(np.r_[seg, len(order)]))
    # integer arithmetic on purpose: a shift() through float64 would lose ~256 ns at epoch-nanosecond scale
    out["delta_ns"][at] = np.where(hop_index == 0, -1, tsc - np.roll(tsc, 1))
    return int(instance[-1]) + 1 if len(order) else 0


def _node_offsets(offsets: pd.DataFrame, nodes: list[str]) -> np.ndarray:
    """Each node's clock offset by node index, with a trailing 0 for node -1 (none)."""
    off = dict(zip(offsets["node"], offsets["offset_ns"], strict=True))
    return np.asarray([*(off.get(name, 0) for name in nodes), 0], dtype=np.int64)


def build_hops(
    packets: pd.DataFrame,
    captures: pd.DataFrame,
    owners: dict[str, str],
    window_ns: int = HOP_WINDOW_NS,
    threads: int = 1,
    partitions: Partitioning | None = None,
    keep: np.ndarray | None = None,
    datagrams: Datagrams | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hops, clock_offsets) for a bundle's packets (those ``keep`` marks, if given), split by
    fingerprint range over ``threads``; a reassembled datagram's hop (its first fragment's) carries
    the whole datagram's length (``datagrams``)
    (the result does not depend on the split). With ``partitions``, the ranges are partitions on
    disk, ``threads`` of them joined at a time, and the hops go to mapped files: memory is bounded
    by the partitions, not by the bundle (same tables)."""
    bounded = partitions is not None and partitions.wanted(len(packets))
    sightings = Sightings(packets, captures, owners, partitions.block_rows if bounded else 1 << 22, keep)
    if bounded:
        return _build_hops_partitioned(sightings, window_ns, partitions, threads, datagrams)
    cols, decoded = sightings.block(0, len(packets))
    nodes = sightings.nodes
    threads = threads if decoded.sum() >= JOIN_MIN_ROWS else 1
    ranges = _fingerprint_ranges(max(1, threads))
    part_rows = thread_map(threads, partial(_rows_in, cols["fp"], decoded), ranges)
    del decoded
    oneway = merge_one_way(thread_map(threads, partial(_one_way_in, cols), part_rows))
    offsets = estimate_clock_offsets(oneway, nodes)
    corrected = cols["ts"] - _node_offsets(offsets, nodes)[cols["node"]]
    sizes = [len(rows) for rows in part_rows]
    starts = np.cumsum([0, *sizes])
    out = {name: np.empty(int(starts[-1]), dtype=dtype) for name, dtype in HOP_JOIN_COLUMNS.items()}
    # each range writes its own rows of the output: nothing is concatenated after
    counts = thread_map(
        threads, partial(_instances, cols, corrected, window_ns, out), list(zip(part_rows, starts[:-1], strict=True))
    )
    del part_rows, corrected, cols
    for start, size, base in zip(starts[:-1], sizes, np.cumsum([0, *counts])[:-1], strict=True):
        out["instance"][start : start + size] += base
    take = out["packet"]

    def gather(col: str) -> tuple[str, object]:
        # one column at a time: packets.iloc[...] would copy all ~50 columns (~170 B a packet) for 22
        values = packets[col].array  # categoricals stay categoricals (a take on their codes)
        return col, values.take(take) if isinstance(values, pd.Categorical) else packets[col].to_numpy()[take]

    h = dict(thread_map(threads, gather, HOP_PACKET_COLUMNS))
    return _hops_frame(out, h, sightings, np.empty, datagrams), offsets


def _whole_datagrams(packet: np.ndarray, h: dict, datagrams: Datagrams | None) -> None:
    """A reassembled datagram's hops carry its whole IP and payload length, in place, a run at a time."""
    if datagrams is None or not len(datagrams):
        return
    for lo in range(0, len(packet), WRITE_BACK_ROWS):
        at = datagrams.at(packet[lo : lo + WRITE_BACK_ROWS])
        hit = np.flatnonzero(at >= 0)
        if len(hit):
            h["ip_len"][lo + hit] = datagrams.length[at[hit]]
            h["payload_len"][lo + hit] = datagrams.payload_len[at[hit]]


def _hops_frame(out: dict, h: dict, sightings: Sightings, allocate, datagrams: Datagrams | None) -> pd.DataFrame:
    """The hops table from the join's columns ``out`` and the packet columns ``h`` gathered for them."""
    _whole_datagrams(out["packet"], h, datagrams)
    n = len(out["packet"])
    nodes = sightings.nodes
    names = nodes if "" in nodes else [*nodes, ""]
    node_names = pd.Index(names, dtype=object)
    by_node = np.asarray([*range(len(nodes)), names.index("")])  # node -1 (no owner) is ""
    iface_codes, iface_names = _point_codes(sightings.points["interface"])
    role_codes, role_names = _point_codes(sightings.points["role"])
    for col, lookup, keys, categories in (
        ("node", by_node, out.pop("node"), node_names),
        ("origin", by_node, out.pop("origin"), node_names),
        ("interface", iface_codes, out["point"], iface_names),
        ("role", role_codes, out["point"], role_names),
    ):
        h[col] = pd.Categorical.from_codes(_codes_of(lookup, keys, len(categories), allocate), categories=categories)
    h["flow_id"] = allocate(n, np.int64)
    h["flow_id"][:] = -1
    direction = allocate(n, np.int8)
    direction[:] = 0
    h["direction"] = pd.Categorical.from_codes(direction, categories=pd.Index([""], dtype=object))
    # one frame over the arrays as they are, in the documented order: nothing left for conform to copy
    cols = {**out, **h}
    return conform(columns_frame({name: cols[name] for name, _, _ in SCHEMAS["hops"][1]}), "hops")


def _point_codes(per_point: pd.Series) -> tuple[np.ndarray, pd.Index]:
    cat = categorical(per_point)
    return cat.codes.astype(np.int64), cat.categories


def _codes_of(lookup: np.ndarray, keys: np.ndarray, categories: int, allocate) -> np.ndarray:
    """Categorical codes ``lookup[keys]`` in the narrowest dtype pandas keeps (so from_codes does not
    copy them), written in runs into an array from ``allocate`` (no temporary as long as the table)."""
    codes = allocate(len(keys), codes_dtype(categories))
    for lo in range(0, len(keys), WRITE_BACK_ROWS):
        codes[lo : lo + WRITE_BACK_ROWS] = lookup[keys[lo : lo + WRITE_BACK_ROWS]]
        write_back(codes[lo : lo + WRITE_BACK_ROWS])
    return codes


SIGHTING_DTYPES = {"row": np.int64, "fp": np.uint64, "point": np.int32, "node": np.int32, "ts": np.int64}
SIGHTING_DTYPES["origin"] = np.int32
ONE_WAY_COLUMNS = ["fp", "point", "node", "ts", "origin"]


def _packet_values(packets: pd.DataFrame, col: str) -> tuple[np.ndarray, pd.CategoricalDtype | None]:
    """A packets column as plain values: a categorical's codes, with its dtype to rebuild it."""
    values = packets[col].array
    if isinstance(values, pd.Categorical):
        return values.codes, values.dtype
    return packets[col].to_numpy(), None


def _build_hops_partitioned(
    sightings: Sightings, window_ns: int, partitions: Partitioning, threads: int, datagrams: Datagrams | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """build_hops over fingerprint ranges kept on disk. The packets are read once, in order, and
    each decoded packet's join keys and the columns its hops carry are sent to its range's files;
    each range is then joined on its own (clock offsets first, from every range's one-way delays;
    then instances), and its hops' columns are taken from its own files, so the packets table is
    never read out of order. Ranges laid end to end give the same hops as the in-memory join, which
    uses the same ranges. Ranges are joined side by side in ``threads`` threads, each holding one.
    """
    packets, n = sightings.packets, sightings.rows
    parts = parts_for(n, partitions.rows)
    lows = np.asarray([lo for lo, _ in _fingerprint_ranges(parts)], dtype=np.uint64)
    carried = {col: _packet_values(packets, col) for col in HOP_PACKET_COLUMNS}
    dtypes = {**SIGHTING_DTYPES, **{col: values.dtype for col, (values, _) in carried.items()}}
    store = partitions.files("join", parts, dtypes)
    try:
        for lo in range(0, n, partitions.block_rows):
            hi = min(n, lo + partitions.block_rows)
            cols, decoded = sightings.block(lo, hi)
            rows = np.flatnonzero(decoded)
            cols = {name: values[rows] for name, values in cols.items()}
            cols.update({col: values[lo:hi][rows] for col, (values, _) in carried.items()})
            store.append(np.searchsorted(lows, cols["fp"], side="right") - 1, {"row": rows + lo, **cols})
        nodes = sightings.nodes
        ranges = list(range(parts))
        one_way = thread_map(threads, lambda p: one_way_delays(*store.read(p, ONE_WAY_COLUMNS).values()), ranges)
        offsets = estimate_clock_offsets(merge_one_way(one_way), nodes)
        by_node = _node_offsets(offsets, nodes)
        starts = np.cumsum([0, *store.sizes.tolist()])
        total = int(starts[-1])
        out = {name: partitions.allocate(total, dtype) for name, dtype in HOP_JOIN_COLUMNS.items()}
        h = {col: partitions.allocate(total, values.dtype) for col, (values, _) in carried.items()}

        def join_range(p: int) -> int:
            """Range p's hops into its rows of the output, instances numbered from 0; how many."""
            part = store.read(p)
            keys = {name: part[name].astype(np.int64) if name != "fp" else part[name] for name in ONE_WAY_COLUMNS}
            at = slice(int(starts[p]), int(starts[p + 1]))
            local = np.arange(len(part["row"]))
            count = _instances(keys, keys["ts"] - by_node[keys["node"]], window_ns, out, (local, at.start))
            take = out["packet"][at]  # the range's own rows, in hop order
            for col, values in h.items():
                values[at] = part[col][take]
            out["packet"][at] = part["row"][take]  # -> the packets table's rows
            for values in (*out.values(), *h.values()):
                write_back(values[at])
            return count

        # ranges side by side in ``threads`` threads (each holds one range), numbered after
        bases = np.cumsum([0, *thread_map(threads, join_range, ranges)])
        for p in ranges:
            for lo in range(int(starts[p]), int(starts[p + 1]), WRITE_BACK_ROWS):
                run = out["instance"][lo : min(int(starts[p + 1]), lo + WRITE_BACK_ROWS)]
                run += bases[p]
                write_back(run)
    finally:
        store.remove()
    for col, (_, dtype) in carried.items():
        if dtype is not None:
            h[col] = pd.Categorical.from_codes(h[col], dtype=dtype)
    return _hops_frame(out, h, sightings, partitions.allocate, datagrams), offsets
