"""Flows: connections as their clients dialled them, tied to their NAT legs, with path and verdict.

Conversations (direction-free 5-tuples, conversations.py) seen with different tuples in one packet
instance (a NAT rewrite between hops) or linked by a conntrack entry's original and reply tuples
(nat_legs.py) are unioned; each union is a flow. Summaries are computed for all flows at once on
integer columns (summaries.py), verdicts last (verdicts.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..meaning.services import Services, build_services
from ..runtime.memory import write_back
from ..runtime.partitions import Partitioning
from ..schema import columns_frame, conform
from .conversations import Conversations, Vocabulary, components, conversations, conversations_partitioned, hop_tuples
from .nat_legs import conntrack_links, conntrack_only_flows
from .summaries import point_labels, point_roles, summarise, summarise_partitioned
from .verdicts import FlowContext, destination_points


def build_flows(
    hops: pd.DataFrame,
    conntrack: pd.DataFrame,
    rules: pd.DataFrame,
    captures: pd.DataFrame,
    routes: pd.DataFrame,
    threads: int = 1,
    partitions: Partitioning | None = None,
    services: Services | None = None,
    peer_redirect: dict[str, frozenset[str]] | None = None,
    filtered: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(flows, hops with flow_id and direction filled in). Flow summaries are computed per range of
    flows in ``threads`` (a flow's summary depends on its own hops only, so the split changes nothing).
    With ``partitions``, the ranges are partitions on disk, ``threads`` of them summarised at a time,
    and hops are read a block at a time: memory is bounded by the partitions (same tables).
    ``services`` names dialled addresses (default: kube-proxy's rules only); ``peer_redirect``: per eBPF
    node, the arrivals (meaning.platform.arrival) whose packets its release's peer redirect takes past
    the destination veth's tap, so a veth that missed some of them is not loss;
    ``filtered``: the capture filters per point, whose silence is no evidence (filters.py)."""
    hops = hops.copy(deep=False)  # copy-on-write: new columns land in this frame only, nothing is copied
    n = len(hops)
    bounded = partitions is not None and partitions.wanted(n)
    vocab = Vocabulary(hops["src"], hops["dst"], hops["q_src"], hops["q_dst"])
    if bounded:
        conv = conversations_partitioned(hops, vocab, partitions)
    else:
        t, err = hop_tuples(hops, vocab, 0, n)
        conv = conversations(hops, t)
    # conntrack: a NATed entry links its original and reply conversations
    ct = conntrack[conntrack["orig_src"] != ""].reset_index(drop=True)
    ct_orig, ct_reply = conntrack_links(ct, conv, vocab)
    comp, roots, flow = _flow_of_each_hop(conv, ct_orig, ct_reply, partitions if bounded else None)
    del conv  # its key column is the flow column now (in place, when spilled)
    if not bounded:
        hops["flow_id"] = flow

    services = services if services is not None else build_services(rules)
    ctx = FlowContext(services, destination_points(captures, routes), captures, routes, dict(peer_redirect or {}))
    ctx.filtered = dict(filtered or {})
    flows = pd.DataFrame()
    if n:
        labels = point_labels(hops)
        ctx.point_roles = point_roles(captures, hops)
        if bounded:
            flows, direction = summarise_partitioned(hops, flow, vocab, ct, ctx, labels, partitions, threads)
        else:
            flows, direction = summarise(hops, flow, t, err, vocab, ct, ctx, labels, threads)
        names = pd.Index(["fwd", "rev", "icmp-error"], dtype=object)
        directions = pd.Categorical.from_codes(direction, categories=names)
        if not bounded:
            hops["direction"] = directions

    extra = conntrack_only_flows(ct, ct_orig, ct_reply, comp, set(roots.tolist()), len(flows), ctx.services)
    table = conform(pd.concat([flows, pd.DataFrame(extra)], ignore_index=True) if extra else flows, "flows")
    table = _numbered_by_first_seen(table, hops, flow, partitions if bounded else None)
    if bounded:  # a frame over the mapped columns as they are (setting a column would copy it into memory)
        hops = columns_frame({**{c: hops[c] for c in hops.columns}, "flow_id": flow, "direction": directions})
    return table, conform(hops, "hops")


def _flow_of_each_hop(
    conv: Conversations, ct_orig: list[int], ct_reply: list[int], partitions: Partitioning | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(each conversation's component, the components' roots, each hop's flow id). Flows are the
    components of conversations linked by NAT rewrites and conntrack entries. With ``partitions``
    the conversation key column becomes the flow column in place, a block at a time."""
    links = conv.rewrites
    both = [(a, b) for a, b in zip(ct_orig, ct_reply, strict=True) if a >= 0 and b >= 0]
    if both:
        links = np.concatenate([links, np.asarray(both, dtype=np.int64).T], axis=1)
    comp = components(conv.count, links[0], links[1])
    # every key occurs among the hops, so numbering the keys' components numbers the hops' flows
    roots, flow_of_key = np.unique(comp, return_inverse=True)
    flow_of_key = flow_of_key.astype(np.int64)
    if partitions is None:
        return comp, roots, flow_of_key[conv.key] if len(conv.key) else np.zeros(0, np.int64)
    flow = conv.key
    for lo in range(0, len(flow), partitions.block_rows):
        flow[lo : lo + partitions.block_rows] = flow_of_key[flow[lo : lo + partitions.block_rows]]
        write_back(flow[lo : lo + partitions.block_rows])
    return comp, roots, flow


def _numbered_by_first_seen(
    table: pd.DataFrame, hops: pd.DataFrame, flow: np.ndarray, partitions: Partitioning | None
) -> pd.DataFrame:
    """Flows numbered in the order they were first seen (conntrack-only ones last), and the hops'
    flow ids renumbered to match: in place a block at a time with ``partitions``, else in ``hops``."""
    if not len(table):
        return table
    first = table["first_ns"].where(table["first_ns"] >= 0, np.iinfo(np.int64).max)
    order = np.lexsort((table["flow_id"].to_numpy(), first.to_numpy()))
    renumber = np.empty(len(table), dtype=np.int64)
    renumber[table["flow_id"].to_numpy()[order]] = np.arange(len(table))
    table = table.iloc[order].reset_index(drop=True)
    table["flow_id"] = np.arange(len(table))
    if partitions is not None:
        for lo in range(0, len(flow), partitions.block_rows):
            flow[lo : lo + partitions.block_rows] = renumber[flow[lo : lo + partitions.block_rows]]
            write_back(flow[lo : lo + partitions.block_rows])
    else:
        hops["flow_id"] = renumber[hops["flow_id"].to_numpy()]
    return table
