"""Conversations: each hop's direction-free 5-tuple, numbered in order of first appearance, and the
NAT rewrites seen between the hops of one packet, which link conversations into flows.

Addresses are ids of one vocabulary over every address column, so no per-packet strings are built.
A spilled table is numbered a block of hops at a time into a mapped column, with the same numbering.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from ..runtime.memory import write_back
from ..runtime.partitions import Partitioning
from ..schema import categorical

ICMP4_ERRORS, ICMP6_ERRORS = (3, 4, 5, 11, 12), (1, 2, 3, 4)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


class Vocabulary:
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


def dense_ids(*cols: np.ndarray) -> np.ndarray:
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


def canonical(proto, a, ap, b, bp) -> tuple[np.ndarray, ...]:
    """Order the two endpoints so both directions of a conversation give the same tuple."""
    swap = (a > b) | ((a == b) & (ap > bp))
    return proto, np.where(swap, b, a), np.where(swap, bp, ap), np.where(swap, a, b), np.where(swap, ap, bp)


def hop_tuples(hops: pd.DataFrame, vocab: Vocabulary, lo: int, hi: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
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
class Conversations:
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


def conversations(hops: pd.DataFrame, t: dict[str, np.ndarray]) -> Conversations:
    n = len(hops)
    canon = canonical(t["proto"], t["src"], t["sport"], t["dst"], t["dport"])
    key = dense_ids(*canon)
    n_keys = int(key.max()) + 1 if n else 0
    instance = hops["instance"].to_numpy()
    if n and not (instance[1:] >= instance[:-1]).all():  # hops not in instance order (as the join gives them)
        order = np.argsort(instance, kind="stable")
        packed = _rewrites(key[order], instance[order])
    else:
        packed = _rewrites(key, instance) if n else np.zeros(0, dtype=np.int64)
    first_row = np.full(n_keys, n, dtype=np.int64)
    np.minimum.at(first_row, key, np.arange(n))  # each key's first hop
    return Conversations(key, n_keys, _as_links(packed), [np.asarray(c)[first_row] for c in canon])


class FirstSeen:
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


def conversations_partitioned(hops: pd.DataFrame, vocab: Vocabulary, partitions: Partitioning) -> Conversations:
    """conversations a block of hops at a time, into a mapped key column (same numbering: the
    tuple's parts are numbered by first appearance, then the pairs of part ids, which orders them as
    the tuples themselves)."""
    n = len(hops)
    key = partitions.allocate(n, np.int64)
    ports, addresses, tuples = FirstSeen(), FirstSeen(), FirstSeen()
    rewrites, firsts = [], []
    instance = hops["instance"].to_numpy()
    for lo, hi in instance_blocks(instance, partitions.block_rows):
        t, _ = hop_tuples(hops, vocab, lo, hi)
        proto, src, sport, dst, dport = canon = canonical(t["proto"], t["src"], t["sport"], t["dst"], t["dport"])
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
    return Conversations(key, len(tuples.known), _as_links(packed), per_key)


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
