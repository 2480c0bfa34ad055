"""Flows: connections as their clients dialled them, tied to their NAT legs, with path and verdict.

Conversations (direction-free 5-tuples) seen with different tuples in one packet instance (a NAT
rewrite between hops) or linked by a conntrack entry's original and reply tuples are unioned; each
union is a flow. Summaries are computed for all flows at once on integer columns: addresses are
mapped to ids of one vocabulary first, so no per-packet strings are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import numpy as np
import pandas as pd

from ..meaning.routing import route_dev
from ..meaning.services import Services, build_services
from ..runtime.memory import write_back
from ..runtime.parallel import thread_map
from ..runtime.partitions import Partitioning, parts_for
from ..schema import categorical, columns_frame, conform
from .hops import is_link_scoped

ICMP4_ERRORS, ICMP6_ERRORS = (3, 4, 5, 11, 12), (1, 2, 3, 4)
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre", 4: "ipip"}
UNDERLAY_UDP_PORTS = (4789, 8472, 6081, 51820, 51821)


@dataclass
class _Context:
    """What flow summaries look things up in."""

    services: Services
    dest_points: dict[str, tuple[str, str, int]]
    captures: pd.DataFrame
    routes: pd.DataFrame
    peer_redirect_nodes: frozenset[str] = frozenset()  # eBPF nodes: the destination veth may not show delivery


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of nodes 0..n-1 joined by edges a-b: each node's label is the smallest
    node of its component. Min-label propagation with pointer jumping, whole arrays at a time (a
    Python union-find over every NAT link was a tenth of the flow build)."""
    labels = np.arange(n, dtype=np.int64)
    if not len(a):
        return labels
    while True:
        low = np.minimum(labels[a], labels[b])
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # labels point at smaller nodes of the same component: jump until they are roots
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels[a], labels[b]):
            return labels


class _Vocabulary:
    """One integer id per address string across all address columns; -1 for none."""

    def __init__(self, *columns: pd.Series) -> None:
        cats = [categorical(c) for c in columns]
        words = list(dict.fromkeys(w for c in cats for w in c.categories if w != ""))
        self.words = np.asarray(words, dtype=object)
        self.ids = {w: i for i, w in enumerate(words)}
        self._cats = cats
        self._lookups: dict[int, np.ndarray] = {}

    def column(self, k: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Ids of column k's rows [lo, hi)."""
        if k not in self._lookups:
            self._lookups[k] = np.asarray(
                [self.ids.get(w, -1) for w in self._cats[k].categories] + [-1], dtype=np.int32
            )
        return self._lookups[k][self._cats[k].codes[lo:hi]]

    def id(self, word: str) -> int:
        return self.ids.get(word, -1)

    def word(self, ids: np.ndarray) -> np.ndarray:
        padded = np.append(self.words, "")
        return padded[np.where(ids >= 0, ids, len(self.words))]


def _pack(*cols: np.ndarray) -> np.ndarray:
    """Dense ids for rows of integer columns, numbered in order of first appearance. Columns are
    packed side by side into one int64 by their value ranges, as many as fit in 62 bits, and each
    packed group is factorised once (one factorisation per column took a tenth of the flow build)."""
    key: np.ndarray | None = None
    packed, bits = None, 0
    for col in cols:
        col = np.asarray(col, dtype=np.int64)
        low = int(col.min()) if len(col) else 0
        width = (int(col.max()) - low).bit_length() if len(col) else 0
        if packed is not None and bits + width > 62:  # this group is full: number it, start the next
            key, packed, bits = _merge_key(key, packed), None, 0
        shifted = col - low
        packed = shifted if packed is None else (packed << width) | shifted
        bits += width
    return _merge_key(key, packed) if packed is not None else np.zeros(0, dtype=np.int64)


def _merge_key(key: np.ndarray | None, packed: np.ndarray) -> np.ndarray:
    codes = pd.factorize(packed)[0].astype(np.int64)
    if key is None:
        return codes
    return pd.factorize(key * (int(codes.max()) + 1) + codes)[0].astype(np.int64)


def _canonical(proto, a, ap, b, bp) -> tuple[np.ndarray, ...]:
    """Order the two endpoints so both directions of a conversation give the same tuple."""
    swap = (a > b) | ((a == b) & (ap > bp))
    return proto, np.where(swap, b, a), np.where(swap, bp, ap), np.where(swap, a, b), np.where(swap, ap, bp)


def _is_underlay(proto: int, dport: int) -> bool:
    """Tunnel transport: VXLAN/Geneve/WireGuard UDP, IPIP and IPv6-in-IPv4."""
    return proto in (4, 41) or (proto == 17 and dport in UNDERLAY_UDP_PORTS)


def _hop_tuples(hops: pd.DataFrame, vocab: _Vocabulary, lo: int, hi: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({proto, src, sport, dst, dport} as the flow sees them, ICMP-error mask) for hops [lo, hi):
    an ICMP error belongs to the flow of the packet it quotes. Addresses are vocabulary ids."""

    def col(name: str) -> np.ndarray:
        return hops[name].to_numpy()[lo:hi]

    proto_h = col("proto").astype(np.int64)
    icmp_type = col("icmp_type")
    err = (
        ((proto_h == 1) & np.isin(icmp_type, ICMP4_ERRORS)) | ((proto_h == 58) & np.isin(icmp_type, ICMP6_ERRORS))
    ) & (col("q_proto") >= 0)
    # int32 throughout: five columns of a hop each, so the width is the flow build's peak memory
    t = {
        "proto": np.where(err, col("q_proto"), proto_h).astype(np.int32),
        "src": np.where(err, vocab.column(2, lo, hi), vocab.column(0, lo, hi)),
        "sport": np.where(err, col("q_sport"), col("sport")).astype(np.int32),
        "dst": np.where(err, vocab.column(3, lo, hi), vocab.column(1, lo, hi)),
        "dport": np.where(err, col("q_dport"), col("dport")).astype(np.int32),
    }
    return t, err


@dataclass
class _Conversations:
    """Each hop's conversation (a direction-free 5-tuple, numbered in order of first appearance),
    the NAT rewrites seen between hops of one packet (pairs of conversations), and each
    conversation's tuple."""

    key: np.ndarray
    count: int
    rewrites: np.ndarray  # 2 x m: (conversation of the packet's first hop, conversation of a later hop)
    tuples: list[np.ndarray]  # proto, address id, port, address id, port of each conversation


def _rewrites(key: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Distinct (first hop's conversation, this hop's conversation) of hops whose conversation is
    not their packet's first hop's (hops in instance order), packed as a << 32 | b."""
    run_start = np.maximum.accumulate(np.where(np.r_[True, instance[1:] != instance[:-1]], np.arange(len(key)), 0))
    inst_key = key[run_start]  # the key of each hop's instance's first hop
    nat = inst_key != key  # one packet seen with two tuples: a NAT rewrite between hops
    return pd.unique((inst_key[nat] << 32) | key[nat])


def _as_links(packed: np.ndarray) -> np.ndarray:
    pairs = np.sort(packed)  # each rewrite once, in a fixed order
    return np.stack([pairs >> 32, pairs & 0xFFFFFFFF])


def _conversations(hops: pd.DataFrame, t: dict[str, np.ndarray]) -> _Conversations:
    n = len(hops)
    canon = _canonical(t["proto"], t["src"], t["sport"], t["dst"], t["dport"])
    key = _pack(*canon)
    n_keys = int(key.max()) + 1 if n else 0
    instance = hops["instance"].to_numpy()
    if n and not (instance[1:] >= instance[:-1]).all():  # hops not in instance order (as the join gives them)
        order = np.argsort(instance, kind="stable")
        packed = _rewrites(key[order], instance[order])
    else:
        packed = _rewrites(key, instance) if n else np.zeros(0, dtype=np.int64)
    first_row = np.full(n_keys, n, dtype=np.int64)
    np.minimum.at(first_row, key, np.arange(n))  # each key's first hop
    return _Conversations(key, n_keys, _as_links(packed), [np.asarray(c)[first_row] for c in canon])


class _FirstSeen:
    """Ids of int64 values numbered in order of first appearance over successive blocks."""

    def __init__(self) -> None:
        self.known = pd.Index(np.zeros(0, dtype=np.int64))

    def ids(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the id of each value, the positions of the values first seen in this block)."""
        ids = self.known.get_indexer(values)
        new = np.flatnonzero(ids < 0)
        if not len(new):
            return ids, new
        codes, fresh = pd.factorize(values[new])
        first = np.full(len(fresh), len(new), dtype=np.int64)
        np.minimum.at(first, codes, np.arange(len(new)))
        ids[new] = codes + len(self.known)
        self.known = self.known.append(pd.Index(fresh))
        return ids, new[first]


def _conversations_partitioned(hops: pd.DataFrame, vocab: _Vocabulary, partitions: Partitioning) -> _Conversations:
    """_conversations a block of hops at a time, into a mapped key column (same numbering: the
    tuple's parts are numbered by first appearance, then the pairs of part ids, which orders them as
    the tuples themselves)."""
    n = len(hops)
    key = partitions.allocate(n, np.int64)
    ports, addresses, tuples = _FirstSeen(), _FirstSeen(), _FirstSeen()
    rewrites, firsts = [], []
    instance = hops["instance"].to_numpy()
    for lo, hi in instance_blocks(instance, partitions.block_rows):
        t, _ = _hop_tuples(hops, vocab, lo, hi)
        proto, src, sport, dst, dport = canon = _canonical(t["proto"], t["src"], t["sport"], t["dst"], t["dport"])
        a, _ = ports.ids(((proto.astype(np.int64) + 1) << 34) | ((sport.astype(np.int64) + 1) << 17) | (dport + 1))
        b, _ = addresses.ids(((src.astype(np.int64) + 1) << 32) | (dst.astype(np.int64) + 1))
        if max(len(ports.known), len(addresses.known)) >= 1 << 31:
            raise RuntimeError("more than 2^31 distinct port or address pairs: too many conversations")
        ids, new = tuples.ids((a.astype(np.int64) << 31) | b)
        key[lo:hi] = ids
        write_back(key[lo:hi])
        firsts.append([np.asarray(c)[new] for c in canon])
        rewrites.append(_rewrites(ids.astype(np.int64), instance[lo:hi]))
    packed = pd.unique(np.concatenate(rewrites)) if rewrites else np.zeros(0, dtype=np.int64)
    per_key = [np.concatenate([f[i] for f in firsts]) if firsts else np.zeros(0, np.int64) for i in range(5)]
    return _Conversations(key, len(tuples.known), _as_links(packed), per_key)


def instance_blocks(instance: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Blocks of about ``rows`` hops that never split a packet instance (hops in instance order,
    as the join gives them: checked block by block)."""
    cuts, n = [0], len(instance)
    while cuts[-1] < n:
        end = cuts[-1] + rows
        if end >= n:
            end = n
        else:  # back to the first hop of the instance the cut fell in (forward, for a giant instance)
            end = int(np.searchsorted(instance, instance[end], side="left"))
            if end <= cuts[-1]:
                end = int(np.searchsorted(instance, instance[cuts[-1]], side="right"))
        block = instance[cuts[-1] : end]
        if (block[1:] < block[:-1]).any():
            raise ValueError("hops must be in instance order to be read a block at a time")
        cuts.append(end)
    return list(pairwise(cuts))


def build_flows(
    hops: pd.DataFrame,
    conntrack: pd.DataFrame,
    rules: pd.DataFrame,
    captures: pd.DataFrame,
    routes: pd.DataFrame,
    threads: int = 1,
    partitions: Partitioning | None = None,
    services: Services | None = None,
    ebpf_nodes: set[str] | frozenset[str] = frozenset(),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(flows, hops with flow_id and direction filled in). Flow summaries are computed per range of
    flows in ``threads`` (a flow's summary depends on its own hops only, so the split changes nothing).
    With ``partitions``, the ranges are partitions on disk, ``threads`` of them summarised at a time,
    and hops are read a block at a time: memory is bounded by the partitions (same tables).
    ``services`` names dialled addresses (default: kube-proxy's rules only); on ``ebpf_nodes`` a
    destination veth that missed forward packets of an answered flow is peer redirect, not loss."""
    hops = hops.copy(deep=False)  # copy-on-write: new columns land in this frame only, nothing is copied
    n = len(hops)
    bounded = partitions is not None and partitions.wanted(n)
    vocab = _Vocabulary(hops["src"], hops["dst"], hops["q_src"], hops["q_dst"])
    if bounded:
        conv = _conversations_partitioned(hops, vocab, partitions)
    else:
        t, err = _hop_tuples(hops, vocab, 0, n)
        conv = _conversations(hops, t)
    links = conv.rewrites

    # conntrack: a NATed entry links its original and reply conversations
    ct = conntrack[conntrack["orig_src"] != ""].reset_index(drop=True)
    key_of = dict(zip(zip(*(c.tolist() for c in conv.tuples), strict=True), range(conv.count), strict=True))

    def ct_key(proto, src, sport, dst, dport) -> int:
        tup = _canonical(np.int64(proto), vocab.id(str(src)), np.int64(sport), vocab.id(str(dst)), np.int64(dport))
        return key_of.get(tuple(int(x) for x in tup), -1)

    ct_orig = [ct_key(r.proto_num, r.orig_src, r.orig_sport, r.orig_dst, r.orig_dport) for r in ct.itertuples()]
    ct_reply = [ct_key(r.proto_num, r.reply_src, r.reply_sport, r.reply_dst, r.reply_dport) for r in ct.itertuples()]
    both = [(a, b) for a, b in zip(ct_orig, ct_reply, strict=True) if a >= 0 and b >= 0]
    if both:
        links = np.concatenate([links, np.asarray(both, dtype=np.int64).T], axis=1)
    comp = _components(conv.count, links[0], links[1])
    # every key occurs among the hops, so numbering the keys' components numbers the hops' flows
    roots, flow_of_key = np.unique(comp, return_inverse=True)
    flow_of_key = flow_of_key.astype(np.int64)
    if bounded:
        flow = conv.key  # each hop's conversation becomes its flow, in place, a block at a time
        for lo in range(0, n, partitions.block_rows):
            flow[lo : lo + partitions.block_rows] = flow_of_key[flow[lo : lo + partitions.block_rows]]
            write_back(flow[lo : lo + partitions.block_rows])
    else:
        flow = flow_of_key[conv.key] if n else np.zeros(0, np.int64)
    del conv
    if not bounded:
        hops["flow_id"] = flow

    services = services if services is not None else build_services(rules)
    ctx = _Context(services, destination_points(captures), captures, routes, frozenset(ebpf_nodes))
    flows = pd.DataFrame()
    if n:
        labels = point_labels(hops)
        if bounded:
            flows, direction = _summaries_partitioned(hops, flow, vocab, ct, ctx, labels, partitions, threads)
        else:
            h = {name: hops[name].to_numpy() for name in SUMMARY_HOP_COLUMNS}
            h["dst_address"] = hops["dst"].array  # as captured ("dst" among the tuples is the flow's, an id)
            h["err"] = err
            h.update(t)
            threads = threads if n >= SUMMARY_MIN_HOPS else 1
            done = thread_map(threads, partial(_summaries_of, h, vocab, ct, ctx, labels), _flow_ranges(flow, threads))
            flows = pd.concat([f for f, _, _ in done], ignore_index=True) if len(done) > 1 else done[0][0]
            direction = np.empty(n, dtype=np.int8)
            for _, rows, hop_dir in done:
                direction[rows] = hop_dir
        names = pd.Index(["fwd", "rev", "icmp-error"], dtype=object)
        directions = pd.Categorical.from_codes(direction, categories=names)
        if not bounded:
            hops["direction"] = directions

    # conntrack-only conversations: known to the kernel, never captured (one flow per conversation, even
    # when several nodes track it). Tunnel underlay entries are left out: their packets are the
    # encapsulated hops of the flows above.
    captured = set(roots.tolist())
    seen: set[tuple] = set()
    extra = []
    for r, a, b in zip(ct.itertuples(index=False), ct_orig, ct_reply, strict=True):
        ends = sorted([(str(r.orig_src), int(r.orig_sport)), (str(r.orig_dst), int(r.orig_dport))])
        conversation = (int(r.proto_num), *ends)
        known = (a >= 0 and int(comp[a]) in captured) or (b >= 0 and int(comp[b]) in captured)
        if known or _is_underlay(int(r.proto_num), int(r.orig_dport)):
            continue
        if conversation in seen:
            continue
        seen.add(conversation)
        extra.append(_unobserved(len(flows) + len(extra), r, ctx.services))
    table = conform(pd.concat([flows, pd.DataFrame(extra)], ignore_index=True) if extra else flows, "flows")
    # number flows in the order they were first seen (conntrack-only ones last)
    if len(table):
        first = table["first_ns"].where(table["first_ns"] >= 0, np.iinfo(np.int64).max)
        order = np.lexsort((table["flow_id"].to_numpy(), first.to_numpy()))
        renumber = np.empty(len(table), dtype=np.int64)
        renumber[table["flow_id"].to_numpy()[order]] = np.arange(len(table))
        table = table.iloc[order].reset_index(drop=True)
        table["flow_id"] = np.arange(len(table))
        if bounded:  # in place, a block at a time
            for lo in range(0, n, partitions.block_rows):
                flow[lo : lo + partitions.block_rows] = renumber[flow[lo : lo + partitions.block_rows]]
                write_back(flow[lo : lo + partitions.block_rows])
        else:
            hops["flow_id"] = renumber[hops["flow_id"].to_numpy()]
    if bounded:  # a frame over the mapped columns as they are (setting a column would copy it into memory)
        hops = columns_frame({**{c: hops[c] for c in hops.columns}, "flow_id": flow, "direction": directions})
    return table, conform(hops, "hops")


def destination_points(captures: pd.DataFrame) -> dict[str, tuple[str, str, int]]:
    """Pod IP -> (node, interface, capture_id) of the capture on its workload interface."""
    return {
        str(r.pod_ip): (str(r.node), str(r.interface), int(r.capture_id))
        for r in captures.itertuples(index=False)
        if r.role == "workload" and r.pod_ip
    }


def _per_flow(values: np.ndarray, groups: np.ndarray, index: pd.Index, how: str, fill) -> np.ndarray:
    """An aggregate of ``values`` per flow id in ``groups``, for every flow of ``index`` (``fill`` where
    a flow has none): size, sum, min, max or nunique. Flow ids are small dense integers, so this is
    bincount and ufunc.at into arrays, several times faster than a pandas group-by."""
    ids = index.to_numpy()
    lut = np.full(max(int(ids.max()) if len(ids) else -1, int(groups.max()) if len(groups) else -1) + 1, -1, np.int64)
    lut[ids] = np.arange(len(ids))
    pos = lut[groups]
    if (pos < 0).any():  # flows outside the index are left out, as a reindex would
        keep = pos >= 0
        pos, values = pos[keep], np.asarray(values)[keep]
    if how == "nunique":  # distinct (flow, value) pairs, packed into one integer, then their count per flow
        values = np.asarray(values, dtype=np.int64)
        low = int(values.min()) if len(values) else 0
        span = int(values.max()) - low + 1 if len(values) else 1
        if (len(ids) + 1) * span < 1 << 62:
            pos = pd.unique(pos * span + (values - low)) // span
        else:
            pos = np.unique(np.stack([pos, values]), axis=1)[0]
        how = "size"
    count = np.bincount(pos, minlength=len(ids))
    if how == "size":
        return count
    values = np.asarray(values, dtype=np.int64)
    if how == "sum":
        out = np.zeros(len(ids), dtype=np.int64)
        np.add.at(out, pos, values)
        return out
    ufunc, start = {"min": (np.minimum, np.iinfo(np.int64).max), "max": (np.maximum, np.iinfo(np.int64).min)}[how]
    out = np.full(len(ids), start, dtype=np.int64)
    ufunc.at(out, pos, values)
    out[count == 0] = fill
    return out


def _group_medians(group: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct groups, median of ``values`` in each) as a pandas group-by median gives
    them: float64, the mean of the two middle values for an even count. Groups and values are
    packed into one integer and sorted once where they fit (a group-by median took a fifth of the
    flow summaries)."""
    group, values = np.asarray(group, dtype=np.int64), np.asarray(values, dtype=np.int64)
    if not len(group):
        return group, np.zeros(0, dtype=np.float64)
    low = int(values.min())
    span = int(values.max()) - low + 1
    if (int(group.max()) + 1) * span < 1 << 62:
        packed = np.sort(group * span + (values - low))
        g, v = packed // span, packed % span + low
    else:
        order = np.lexsort((values, group))
        g, v = group[order], values[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, len(g)])
    lower, upper = starts + (counts - 1) // 2, starts + counts // 2
    return g[starts], (v[lower].astype(np.float64) + v[upper].astype(np.float64)) / 2


def _spread(keys: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The value of each element of ``at``, where ``values[i]`` belongs to ``keys[i]`` (unique
    non-negative ints, every element of ``at`` among them): a lookup table, not a reindex."""
    lut = np.zeros(int(keys.max()) + 1 if len(keys) else 0, dtype=np.asarray(values).dtype)
    lut[keys] = values
    return lut[at]


SUMMARY_HOP_COLUMNS = (
    *("flow_id", "instance", "hop_index", "ts_corrected_ns", "tcp_flags", "payload_len", "ip_len"),
    *("ambiguous", "icmp_type", "icmp_code", "point"),
)  # what a flow summary reads of its hops (with dst, the ICMP-error mask and the flow tuples)
SUMMARY_MIN_HOPS = 200_000  # below this many hops, threads cost more than they save


def _flow_ranges(flow: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Ranges of flow ids holding about equal numbers of hops (empty ranges left out)."""
    n_flows = int(flow.max()) + 1 if len(flow) else 0
    if parts <= 1 or n_flows <= 1:
        return [(0, n_flows)]
    return _ranges_of(np.bincount(flow, minlength=n_flows), parts)


def _ranges_of(hops_per_flow: np.ndarray, parts: int) -> list[tuple[int, int]]:
    cum = np.cumsum(hops_per_flow)
    total, n_flows = int(cum[-1]) if len(cum) else 0, len(hops_per_flow)
    cuts = [0, *np.searchsorted(cum, [total * i // parts for i in range(1, parts)], side="right").tolist(), n_flows]
    return [(lo, hi) for lo, hi in pairwise(cuts) if hi > lo]


def _summaries_partitioned(
    hops: pd.DataFrame,
    flow: np.ndarray,
    vocab: _Vocabulary,
    ct: pd.DataFrame,
    ctx: _Context,
    labels: np.ndarray,
    partitions: Partitioning,
    threads: int,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Flow summaries over ranges of flows kept on disk: the hops are read once, a block at a time,
    and each hop's summary columns sent to its range's files; each range is then summarised on its
    own, ``threads`` ranges side by side. (flows, each hop's direction code in a mapped column)."""
    n = len(hops)
    blocks = instance_blocks(hops["instance"].to_numpy(), partitions.block_rows)
    n_flows = max(int(flow[lo:hi].max()) for lo, hi in blocks) + 1
    per_flow = np.zeros(n_flows, dtype=np.int64)
    for lo, hi in blocks:
        per_flow += np.bincount(flow[lo:hi], minlength=n_flows)
    ranges = _ranges_of(per_flow, parts_for(n, partitions.rows))
    del per_flow
    lows = np.asarray([lo for lo, _ in ranges], dtype=np.int64)
    dst = hops["dst"].array
    dtypes = {name: hops[name].dtype for name in SUMMARY_HOP_COLUMNS}
    dtypes.update(row=np.int64, dst_address=dst.codes.dtype, err=np.bool_)
    dtypes.update({name: np.int32 for name in ("proto", "src", "sport", "dst", "dport")})
    store = partitions.files("flows", len(ranges), dtypes)
    try:
        for lo, hi in blocks:
            t, err = _hop_tuples(hops, vocab, lo, hi)
            cols = {name: hops[name].to_numpy()[lo:hi] for name in SUMMARY_HOP_COLUMNS if name != "flow_id"}
            cols.update(t, flow_id=flow[lo:hi], row=np.arange(lo, hi), dst_address=dst.codes[lo:hi], err=err)
            store.append(np.searchsorted(lows, cols["flow_id"], side="right") - 1, cols)
        direction = partitions.allocate(n, np.int8)

        def summarise(i: int) -> pd.DataFrame:
            h = store.read(i)
            rows = h.pop("row")
            # instances numbered within the range (in order): lookup tables sized by the range, not the bundle
            instance = h["instance"]
            h["instance"] = np.cumsum(np.r_[False, instance[1:] != instance[:-1]]) if len(instance) else instance
            h["dst_address"] = pd.Categorical.from_codes(h["dst_address"], dtype=dst.dtype)
            f, sel, hop_dir = _summaries_of(h, vocab, ct, ctx, labels, ranges[i])
            direction[rows[sel]] = hop_dir  # ranges hold different hops: threads write different rows
            return f

        summaries = thread_map(threads, summarise, list(range(len(ranges))))
    finally:
        store.remove()
    return pd.concat(summaries, ignore_index=True), direction


def _summaries_of(
    h: dict, vocab: _Vocabulary, ct: pd.DataFrame, ctx: _Context, labels: np.ndarray, flows: tuple[int, int]
) -> tuple[pd.DataFrame, np.ndarray | slice, np.ndarray]:
    """(summaries, hop rows, their direction codes) for the flows with ids in [lo, hi)."""
    lo, hi = flows
    flow = h["flow_id"]
    if lo == 0 and hi > flow.max():
        rows: np.ndarray | slice = slice(None)  # one range: the whole table, nothing gathered
        sub = h
    else:
        rows = np.flatnonzero((flow >= lo) & (flow < hi))
        sub = {name: values[rows] for name, values in h.items()}
    # each thread gets its own shallow copies of the shared frames (pandas caches lazily on objects)
    ctx = _Context(
        ctx.services,
        ctx.dest_points,
        ctx.captures.copy(deep=False),
        ctx.routes.copy(deep=False),
        ctx.peer_redirect_nodes,
    )
    f, hop_dir = _summaries(sub, vocab, ct.copy(deep=False), ctx, labels)
    return f, rows, hop_dir


def _summaries(
    h: dict, vocab: _Vocabulary, ct: pd.DataFrame, ctx: _Context, labels_by_point: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per flow, and each hop's direction code (0 fwd, 1 rev, 2 ICMP error)."""
    t, err = h, h["err"]
    flow = h["flow_id"]
    instance = h["instance"]
    hop_index = h["hop_index"]
    ts = h["ts_corrected_ns"]

    # ---- one row per packet instance: its first sighting, on the sender's side ----
    first = hop_index == 0
    inst = pd.DataFrame(
        {
            "instance": instance[first],
            "flow_id": flow[first],
            "ts0": ts[first],
            "proto": t["proto"][first],
            "src": t["src"][first],
            "sport": t["sport"][first],
            "dst": t["dst"][first],
            "dport": t["dport"][first],
            "flags": h["tcp_flags"].astype(np.int64)[first],
            "plen": h["payload_len"][first],
            "bytes": np.clip(h["ip_len"][first], 0, None),
            "err": err[first],
            "ambiguous": h["ambiguous"][first],
            "icmp_type": h["icmp_type"][first],
            "icmp_code": h["icmp_code"][first],
        }
    )
    inst["syn"] = (inst["proto"] == 6) & ((inst["flags"] & (TCP_SYN | TCP_ACK)) == TCP_SYN)
    # the opener: the first SYN, else the first packet; ICMP errors only when nothing else was seen
    opener = (
        inst.sort_values(["flow_id", "err", "syn", "ts0"], ascending=[True, True, False, True])
        .drop_duplicates("flow_id")
        .set_index("flow_id")
    )
    f = pd.DataFrame(index=opener.index)
    f["client"], f["client_port"] = opener["src"], opener["sport"]
    f["server"], f["server_port"] = opener["dst"], opener["dport"]
    f["proto_num"] = opener["proto"]

    # ---- direction: fwd from the client, rev from any forward destination ----
    inst_flow = inst["flow_id"].to_numpy()
    is_client = (
        (inst["src"].to_numpy() == f["client"].reindex(inst_flow).to_numpy())
        & (inst["sport"].to_numpy() == f["client_port"].reindex(inst_flow).to_numpy())
        & ~inst["err"].to_numpy()
    )
    hop_client = _spread(inst["instance"].to_numpy(), is_client, instance)
    fwd_dst = pd.DataFrame(
        {"flow_id": flow[hop_client], "src": t["dst"][hop_client], "sport": t["dport"][hop_client]}
    ).drop_duplicates()
    fwd_dst["hit"] = True
    hit = inst[["flow_id", "src", "sport"]].merge(fwd_dst, on=["flow_id", "src", "sport"], how="left")["hit"]
    rev = hit.fillna(False).to_numpy(bool) & ~is_client & ~inst["err"].to_numpy()
    inst["dir"] = np.where(inst["err"], 2, np.where(rev, 1, 0))  # 0 fwd, 1 rev, 2 icmp-error
    hop_dir = _spread(inst["instance"].to_numpy(), inst["dir"].to_numpy(), instance)

    # ---- counts, bytes, times ----
    for d, name in ((0, "fwd"), (1, "rev")):
        sel = inst["dir"].to_numpy() == d
        f[f"packets_{name}"] = _per_flow(inst_flow[sel], inst_flow[sel], f.index, "size", 0).astype(np.int64)
        f[f"bytes_{name}"] = _per_flow(inst["bytes"].to_numpy()[sel], inst_flow[sel], f.index, "sum", 0).astype(
            np.int64
        )
    f["first_ns"] = _per_flow(ts, flow, f.index, "min", -1).astype(np.int64)
    f["last_ns"] = _per_flow(ts, flow, f.index, "max", -1).astype(np.int64)
    f["hops"] = _per_flow(ts, flow, f.index, "size", 0).astype(np.int64)
    errs = inst[inst["err"]]
    f["icmp_errors"] = _per_flow(errs["flow_id"].to_numpy(), errs["flow_id"].to_numpy(), f.index, "size", 0).astype(
        np.int64
    )
    types = errs.drop_duplicates(["flow_id", "icmp_type", "icmp_code"]).sort_values(
        ["flow_id", "icmp_type", "icmp_code"]
    )
    types = types.assign(tc=types["icmp_type"].astype(str) + "/" + types["icmp_code"].astype(str))
    f["icmp_error_types"] = join_groups(types, ["flow_id"], "tc", " ").reindex(f.index).fillna("").to_numpy()
    amb = inst[inst["ambiguous"]]
    f["ambiguous"] = _per_flow(amb["flow_id"].to_numpy(), amb["flow_id"].to_numpy(), f.index, "size", 0).astype(
        np.int64
    )

    # ---- NAT legs: the last sighting of forward packets, else conntrack's reply tuple ----
    last_hop = np.zeros(int(instance.max()) + 1, dtype=hop_index.dtype)
    np.maximum.at(last_hop, instance, hop_index)
    last = hop_index == last_hop[instance]
    sel = last & (hop_dir == 0)
    lf = pd.DataFrame(
        {
            "flow_id": flow[sel],
            "src": t["src"][sel],
            "sport": t["sport"][sel],
            "dst": t["dst"][sel],
            "dport": t["dport"][sel],
        }
    )
    base = f.reindex(lf["flow_id"].to_numpy())
    moved = lf[
        (lf["dst"].to_numpy() != base["server"].to_numpy()) | (lf["dport"].to_numpy() != base["server_port"].to_numpy())
    ]
    moved = moved.drop_duplicates("flow_id").set_index("flow_id")
    f["backend"] = moved["dst"].reindex(f.index).fillna(-1).astype(np.int64)
    f["backend_port"] = moved["dport"].reindex(f.index).fillna(-1).astype(np.int64)
    snat = lf[
        (lf["src"].to_numpy() != base["client"].to_numpy()) | (lf["sport"].to_numpy() != base["client_port"].to_numpy())
    ]
    snat = snat.drop_duplicates("flow_id").set_index("flow_id")
    f["snat"] = snat["src"].reindex(f.index).fillna(-1).astype(np.int64)
    f["snat_port"] = snat["sport"].reindex(f.index).fillna(-1).astype(np.int64)
    for col in ("client", "server", "backend", "snat"):
        f[f"{col}_ip"] = vocab.word(f[col].to_numpy())
    _conntrack_legs(f, ct)
    f["proto"] = [PROTO_NAMES.get(int(p), str(p)) for p in f["proto_num"]]
    f["service"], f["service_via"] = _services_of(f, ctx.services)

    # ---- paths: capture points in the order packets cross them ----
    point = h["point"]
    ts0 = _spread(inst["instance"].to_numpy(), inst["ts0"].to_numpy(), instance)
    on_path = hop_dir != 2
    # one int64 key for (flow, direction, point): a group-by on it is several times faster than on three
    n_points = len(labels_by_point)
    group = (flow[on_path] * 2 + hop_dir[on_path]) * n_points + point[on_path]
    g, hop_median = _group_medians(group, hop_index[on_path])
    _, rel_median = _group_medians(group, (ts - ts0)[on_path])
    agg = pd.DataFrame(
        {
            "flow_id": g // (2 * n_points),
            "dir": g // n_points % 2,
            "point": g % n_points,
            "hop": hop_median,
            "rel": rel_median,
        }
    )
    agg = agg.sort_values(["flow_id", "dir", "rel", "hop"])  # by time: instances may skip points (GSO)
    agg["label"] = labels_by_point[agg["point"].to_numpy()]
    paths = join_groups(agg, ["flow_id", "dir"], "label", " > ")
    for d, name in ((0, "fwd"), (1, "rev")):
        sel_paths = paths[paths.index.get_level_values("dir") == d] if len(paths) else paths
        series = (
            pd.Series(sel_paths.to_numpy(), index=sel_paths.index.get_level_values("flow_id"))
            if len(sel_paths)
            else pd.Series(dtype=object)
        )
        f[f"path_{name}"] = series.reindex(f.index).fillna("").to_numpy()

    # link scope is decided once per distinct address, not once per flow
    scoped = np.append(np.asarray([is_link_scoped(w) for w in vocab.words], dtype=bool), False)
    link = scoped[f["client"].to_numpy()] | scoped[f["server"].to_numpy()]  # id -1 picks the trailing False
    f["scope"] = np.where(link, "link", "routed").astype(object)
    f["conn_state"], f["history"] = _conn_states(inst, f)
    _verdicts(f, h, hop_dir, labels_by_point, ctx)
    return f.reset_index(), hop_dir.astype(np.int8)


def point_names(hops: pd.DataFrame, block_rows: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """(node, interface) names of every capture point id, from each point's first hop, a block of
    hops at a time ("" for ids without hops)."""
    point = hops["point"].to_numpy()
    n = len(point)
    size = max((int(point[lo : lo + block_rows].max()) + 1 for lo in range(0, n, block_rows)), default=0)
    first = np.full(size, n, dtype=np.int64)
    for lo in range(0, n, block_rows):
        np.minimum.at(first, point[lo : lo + block_rows], np.arange(lo, min(n, lo + block_rows)))
    ids = np.flatnonzero(first < n)
    names = []
    for col in ("node", "interface"):
        out = np.full(size, "", dtype=object)
        out[ids] = np.asarray(hops[col].array.take(first[ids]), dtype=object).astype(str)
        names.append(out)
    return names[0], names[1]


def point_labels(hops: pd.DataFrame) -> np.ndarray:
    """`node:interface` for every capture point id."""
    node, iface = point_names(hops)
    pairs = zip(node.tolist(), iface.tolist(), strict=True)
    return np.asarray([f"{a}:{b}" if a or b else "" for a, b in pairs], dtype=object)


def _conntrack_legs(f: pd.DataFrame, ct: pd.DataFrame) -> None:
    """The conntrack entry with the flow's original tuple: its state, and NAT legs not seen in captures."""
    keys = ["proto_num", "client_ip", "client_port", "server_ip", "server_port"]
    ctk = ct.rename(
        columns={
            "orig_src": "client_ip",
            "orig_sport": "client_port",
            "orig_dst": "server_ip",
            "orig_dport": "server_port",
        }
    ).drop_duplicates(keys)
    ctk = ctk[[*keys, "state", "nat", "reply_src", "reply_sport", "reply_dst", "reply_dport"]].astype(
        {"client_ip": object, "server_ip": object}
    )
    m = (
        f.reset_index()[["flow_id", *keys]]
        .astype({"client_ip": object, "server_ip": object})
        .merge(ctk, on=keys, how="left")
        .set_index("flow_id")
    )
    f["ct_state"] = m["state"].astype(object).where(m["state"].notna(), "").to_numpy()
    f["ct_nat"] = m["nat"].astype(object).where(m["nat"].notna(), "").to_numpy()
    dnat = (m["nat"].astype(str).isin(["dnat", "both"]) & (f["backend_ip"] == "")).to_numpy()
    f.loc[dnat, "backend_ip"] = m.loc[dnat, "reply_src"].to_numpy()
    f.loc[dnat, "backend_port"] = m.loc[dnat, "reply_sport"].astype(np.int64).to_numpy()
    snat = (m["nat"].astype(str).isin(["snat", "both"]) & (f["snat_ip"] == "")).to_numpy()
    f.loc[snat, "snat_ip"] = m.loc[snat, "reply_dst"].to_numpy()
    f.loc[snat, "snat_port"] = m.loc[snat, "reply_dport"].astype(np.int64).to_numpy()
    _dialled_from_conntrack(f, ct)


def _dialled_from_conntrack(f: pd.DataFrame, ct: pd.DataFrame) -> None:
    """Flows captured only after DNAT (no capture before the NAT point, e.g. eBPF's TC NAT on the
    client veth when that veth was not captured): a DNAT entry whose reply comes from the flow's
    server to its client says what was dialled. The server becomes the dialled address, the
    captured one its backend."""
    dnat = ct[ct["nat"].astype(str).isin(["dnat", "both"])]
    if dnat.empty:
        return
    keys = ["proto_num", "client_ip", "client_port", "server_ip", "server_port"]
    by_reply = (
        dnat.rename(
            columns={
                "reply_dst": "client_ip",
                "reply_dport": "client_port",
                "reply_src": "server_ip",
                "reply_sport": "server_port",
            }
        )
        .drop_duplicates(keys)[[*keys, "orig_dst", "orig_dport", "state", "nat"]]
        .astype({"client_ip": object, "server_ip": object})
    )
    m = (
        f.reset_index()[["flow_id", *keys]]
        .astype({"client_ip": object, "server_ip": object})
        .merge(by_reply, on=keys, how="left")
        .set_index("flow_id")
    )
    hit = (m["orig_dst"].notna() & (f["backend_ip"] == "")).to_numpy()
    if not hit.any():
        return
    f.loc[hit, "backend_ip"] = f.loc[hit, "server_ip"].to_numpy()
    f.loc[hit, "backend_port"] = f.loc[hit, "server_port"].to_numpy()
    f.loc[hit, "server_ip"] = m.loc[hit, "orig_dst"].astype(str).to_numpy()
    f.loc[hit, "server_port"] = m.loc[hit, "orig_dport"].astype(f["server_port"].dtype).to_numpy()
    unset = hit & (f["ct_state"] == "").to_numpy()
    f.loc[unset, "ct_state"] = m.loc[unset, "state"].astype(str).to_numpy()
    f.loc[unset, "ct_nat"] = m.loc[unset, "nat"].astype(str).to_numpy()


def _conn_states(inst: pd.DataFrame, f: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Zeek conn_state and history letters (originator upper case) for TCP; S0/SF for the rest."""
    fl, plen = inst["flags"].to_numpy(), inst["plen"].to_numpy()
    letters = {
        "S": (fl & TCP_SYN != 0) & (fl & TCP_ACK == 0),
        "H": (fl & TCP_SYN != 0) & (fl & TCP_ACK != 0),
        "A": (fl & TCP_ACK != 0) & (fl & (TCP_SYN | TCP_FIN | TCP_RST) == 0) & (plen <= 0),
        "D": plen > 0,
        "F": fl & TCP_FIN != 0,
        "R": fl & TCP_RST != 0,
    }
    tcp = (inst["proto"] == 6).to_numpy() & (inst["dir"] != 2).to_numpy() & (fl >= 0)
    orig = (inst["dir"] == 0).to_numpy()
    parts = [
        pd.DataFrame(
            {
                "flow_id": inst["flow_id"].to_numpy()[m],
                "orig": orig[m],
                "ts0": inst["ts0"].to_numpy()[m],
                "letter": letter,
            }
        )
        for letter, mask in letters.items()
        if (m := mask & tcp).any()
    ]
    state = pd.Series("S0", index=f.index, dtype=object)
    history = pd.Series("", index=f.index, dtype=object)
    if parts:
        ev = pd.concat(parts, ignore_index=True)
        ev = ev.groupby(["flow_id", "orig", "letter"])["ts0"].min().reset_index().sort_values(["flow_id", "ts0"])
        ev["shown"] = np.where(ev["orig"], ev["letter"], ev["letter"].str.lower())
        history = join_groups(ev, ["flow_id"], "shown", "").reindex(f.index).fillna("")
        has = ev.assign(v=True).pivot_table(index="flow_id", columns="shown", values="v", aggfunc="max")
        has = has.reindex(index=f.index, columns=list("SHhRrFf")).astype(object).where(lambda x: x.notna(), False)
        has = has.astype(bool)
        state = pd.Series(_zeek_states(has), index=f.index, dtype=object)
    other = (f["proto_num"] != 6).to_numpy()
    answered = (f["packets_rev"] > 0).to_numpy()
    state[other] = np.where(answered[other], "SF", "S0")
    history[other] = np.where(answered[other], "Dd", "D")
    return state.to_numpy(), history.to_numpy()


def _zeek_states(has: pd.DataFrame) -> np.ndarray:
    """Zeek's conn_state from which history letters each flow shows (one boolean column per letter)."""
    syn, synack = has["S"].to_numpy(), has["h"].to_numpy()
    orig_rst, resp_rst, orig_fin, resp_fin = (has[x].to_numpy() for x in ("R", "r", "F", "f"))
    return np.select(
        [
            ~syn & ~synack,
            syn & ~synack & resp_rst,
            syn & ~synack & orig_rst,
            syn & ~synack & orig_fin,
            syn & ~synack,
            ~syn & synack & resp_rst,
            ~syn & synack & resp_fin,
            ~syn & synack,
            orig_rst,
            resp_rst,
            orig_fin & resp_fin,
            orig_fin,
            resp_fin,
        ],
        ["OTH", "REJ", "RSTOS0", "SH", "S0", "RSTRH", "SHR", "OTH", "RSTO", "RSTR", "SF", "S2", "S3"],
        default="S1",
    )


def join_groups(df: pd.DataFrame, by: list[str], col: str, sep: str) -> pd.Series:
    """Concatenate a string column per group (rows already in order) without a Python call per group."""
    if df.empty:
        return pd.Series(dtype=object)
    keys = df[by].to_numpy()
    change = np.ones(len(df), dtype=bool)
    change[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    starts = np.flatnonzero(change)
    # one string per distinct value, not per row
    codes, uniques = pd.factorize(df[col].to_numpy(), use_na_sentinel=False)
    values = np.asarray([sep + str(v) for v in uniques], dtype=object)[codes]
    joined = np.add.reduceat(values, starts)
    index = (
        pd.MultiIndex.from_arrays([keys[starts, i] for i in range(len(by))], names=by)
        if len(by) > 1
        else pd.Index(keys[starts, 0], name=by[0])
    )
    return pd.Series([j[len(sep) :] for j in joined], index=index, dtype=object)


def _verdicts(f: pd.DataFrame, h: dict, hop_dir: np.ndarray, labels: np.ndarray, ctx: _Context) -> None:
    """delivered / dropped / partial / unobserved, with the last point seen and the first one missing.

    "dropped" needs evidence: a capture on the destination's interface that was running and did not
    see the packets, or a TCP connection attempt never answered, or an ICMP error about the flow.
    Without a capture there and without a reply, delivery is unknown: "unobserved". On an eBPF node
    the destination veth shows a connection's packets only until peer redirect takes over, so an
    answered flow, or a one-way flow other than TCP, seen there at least once is delivered; the
    packets it did not show are counted in ``peer_redirected``.
    """
    server = np.where(f["backend_ip"] != "", f["backend_ip"], f["server_ip"])
    dest = [ctx.dest_points.get(str(s)) for s in server]
    windows = {
        int(r.capture_id): (int(r.window_start_ns), max(int(r.window_end_ns), int(r.last_ns)))
        for r in ctx.captures.itertuples(index=False)
    }
    win = np.asarray([windows[d[2]] if d else (-1, -1) for d in dest], dtype=np.int64).reshape(-1, 2)
    running = (win[:, 0] >= 0) & (win[:, 0] <= f["first_ns"].to_numpy()) & (f["last_ns"].to_numpy() <= win[:, 1])
    dest_label = np.asarray([f"{d[0]}:{d[1]}" if d else "" for d in dest], dtype=object)
    flow = h["flow_id"]
    flow_pos = pd.Series(np.arange(len(f)), index=f.index).reindex(flow).to_numpy()
    at_dest = (hop_dir == 0) & (labels[h["point"]] == dest_label[flow_pos])
    reached = _per_flow(h["instance"][at_dest], flow[at_dest], f.index, "nunique", 0)
    fwd, rev = f["packets_fwd"].to_numpy(), f["packets_rev"].to_numpy()
    known = dest_label != ""
    redirect = np.asarray([bool(d) and d[0] in ctx.peer_redirect_nodes for d in dest], dtype=bool)
    # the destination's policy let the first packets through (they reached its veth); after that BPF
    # redirects to the pod's peer: answered flows, and one-way flows other than TCP (for TCP an
    # unanswered SYN that reached the pod is a different story: no listener, or the reply lost)
    one_way = f["proto_num"].to_numpy() != 6
    redirected = known & redirect & (reached > 0) & (reached < fwd) & ((rev > 0) | one_way)
    f["peer_redirected"] = np.where(redirected, fwd - reached, 0).astype(np.int64)
    tcp_unanswered = (f["proto_num"].to_numpy() == 6) & np.isin(f["conn_state"].to_numpy(), ["S0", "RSTOS0", "SH"])
    conditions = [
        (fwd == 0) & (rev == 0),
        fwd == 0,
        known & (reached == fwd),
        redirected,
        known & ((reached > 0) | ((rev > 0) & running)),
        rev > 0,
        (known & running) | tcp_unanswered | (f["icmp_errors"].to_numpy() > 0),
    ]
    f["verdict"] = np.select(
        conditions,
        ["unobserved", "delivered", "delivered", "delivered", "partial", "delivered", "dropped"],
        default="unobserved",
    )
    f["last_seen"], f["missing_at"] = "", ""
    lost = f.index[f["verdict"].isin(["dropped", "partial"])]
    if not len(lost):
        return
    reached_inst = set(h["instance"][at_dest].tolist())
    sel = np.isin(flow, lost) & (hop_dir == 0)
    sub = pd.DataFrame(
        {
            "flow_id": flow[sel],
            "instance": h["instance"][sel],
            "label": labels[h["point"][sel]],
            "dst": np.asarray(h["dst_address"][sel], dtype=object),
        }
    )
    sub = sub[~sub["instance"].isin(reached_inst)]
    roles = {(str(r.node), str(r.interface)): str(r.role) for r in ctx.captures.itertuples(index=False)}
    # per lost flow: its deepest capture point on the forward path, and the one it should have
    # reached next. Plain lists, written back once: a cell written at a time into Arrow-backed
    # columns was most of an incident's analysis (20,000 dropped flows: 9 s)
    row_of = {fid: i for i, fid in enumerate(f.index.tolist())}
    path_of = f["path_fwd"].tolist()
    last_seen, missing_at = [""] * len(f), [""] * len(f)
    next_point: dict[tuple, str] = {}
    by_flow = np.argsort(sub["flow_id"].to_numpy(), kind="stable")  # each flow's rows, in hop order
    fl = sub["flow_id"].to_numpy()[by_flow]
    label = sub["label"].to_numpy()[by_flow]
    dst = sub["dst"].to_numpy()[by_flow]
    starts = np.flatnonzero(np.r_[True, fl[1:] != fl[:-1]]) if len(fl) else np.zeros(0, dtype=np.int64)
    for start, stop in zip(starts.tolist(), [*starts[1:].tolist(), len(fl)], strict=True):
        row = row_of[int(fl[start])]
        position: dict[str, int] = {}
        for i, point in enumerate(path_of[row].split(" > ")):
            position.setdefault(point, i)  # a point's first place on the path
        deepest, deepest_at = start, -2
        for r in range(start, stop):  # the first of the deepest rows
            at = position.get(label[r], -1)
            if at > deepest_at:
                deepest, deepest_at = r, at
        node, iface = str(label[deepest]).split(":", 1)
        key = (node, iface, str(dst[deepest]), dest[row])
        if key not in next_point:
            next_point[key] = _next_point(*key, ctx, roles)
        last_seen[row], missing_at[row] = label[deepest], next_point[key]
    f["last_seen"], f["missing_at"] = last_seen, missing_at


def _next_point(node: str, iface: str, dst_ip: str, dest: tuple | None, ctx: _Context, roles: dict) -> str:
    """The capture point a packet last seen at node:iface should have crossed next."""
    role = roles.get((node, iface), "")

    def point(n: str, want_role: str) -> str:
        found = [i for (nn, i), r in roles.items() if nn == n and r == want_role]
        return f"{n}:{found[0]}" if found else ""

    if dest is not None and node == dest[0]:
        if role == "uplink":
            return point(node, "tunnel") or f"{dest[0]}:{dest[1]}"
        return f"{dest[0]}:{dest[1]}"
    if role == "workload":
        dev = route_dev(ctx.routes, node, dst_ip)
        if dev and (node, dev) in roles:
            return f"{node}:{dev}"
        return point(node, "tunnel") or point(node, "uplink")
    if role == "tunnel":
        return point(node, "uplink")
    if role == "uplink" and dest is not None:
        return point(dest[0], "uplink")
    return f"{dest[0]}:{dest[1]}" if dest is not None else ""


def _services_of(f: pd.DataFrame, services: Services) -> tuple[list[str], list[str]]:
    """Each flow's service and how it was found: the dialled address first, else (connect-time LB)
    the services whose BPF NAT backends hold the address the flow went to."""
    names, via = [], []
    for ip, port, proto in zip(f["server_ip"].tolist(), f["server_port"].tolist(), f["proto"].tolist(), strict=True):
        name, how = services.dialled(str(ip), int(port), proto)
        # connect-time LB rewrites TCP connect() only (Calico's default BPFConnectTimeLoadBalancing=TCP);
        # UDP to a service is NATed per packet, after the client veth's tap, which shows the service
        if not name and proto == "tcp" and (candidates := services.candidates(str(ip), int(port), proto)):
            name, how = ", ".join(candidates), "backend"
        names.append(name)
        via.append(how)
    return names, via


def _unobserved(fid: int, r, services: Services) -> dict:
    """A conversation only conntrack knows about."""
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
        "service": services.dialled(str(r.orig_dst), int(r.orig_dport), str(r.proto))[0],
        "service_via": services.dialled(str(r.orig_dst), int(r.orig_dport), str(r.proto))[1],
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
        "peer_redirected": 0,
        "icmp_errors": 0,
        "icmp_error_types": "",
        "ambiguous": 0,
        "ct_state": str(r.state),
        "ct_nat": str(r.nat),
        "hops": 0,
    }
