"""Flow summaries: one row per flow from its hops, all flows at once on integer columns: who opened it,
each packet's direction, counts, bytes and times, the NAT legs seen, the path through the capture
points, Zeek's conn_state and history, and the verdict. Per range of flow ids, in threads, or per
partition on disk for a spilled table (a flow's summary reads only its own hops)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from itertools import pairwise

import numpy as np
import pandas as pd

from ..ingest.layout import interface_role
from ..runtime.parallel import thread_map
from ..runtime.partitions import Partitioning, parts_for
from .aggregates import group_medians, join_groups, per_flow, spread
from .conversations import Vocabulary, hop_tuples, instance_blocks
from .hops import is_link_scoped
from .nat_legs import conntrack_legs, services_of
from .verdicts import FlowContext, add_verdicts

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre", 4: "ipip"}

SUMMARY_HOP_COLUMNS = (
    *("flow_id", "instance", "hop_index", "ts_corrected_ns", "tcp_flags", "payload_len", "ip_len"),
    *("ambiguous", "icmp_type", "icmp_code", "point"),
)  # what a flow summary reads of its hops (with dst, the ICMP-error mask and the flow tuples)
SUMMARY_MIN_HOPS = 200_000  # below this many hops, threads cost more than they save


def summarise(
    hops: pd.DataFrame,
    flow: np.ndarray,
    t: dict[str, np.ndarray],
    err: np.ndarray,
    vocab: Vocabulary,
    ct: pd.DataFrame,
    ctx: FlowContext,
    labels: np.ndarray,
    threads: int,
) -> tuple[pd.DataFrame, np.ndarray]:
    """(flows, each hop's direction code) for hops in memory: per range of flow ids, in ``threads``
    (one below SUMMARY_MIN_HOPS hops). ``t`` and ``err`` are the hops' flow tuples and ICMP-error mask."""
    n = len(hops)
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
    return flows, direction


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


def summarise_partitioned(
    hops: pd.DataFrame,
    flow: np.ndarray,
    vocab: Vocabulary,
    ct: pd.DataFrame,
    ctx: FlowContext,
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
            t, err = hop_tuples(hops, vocab, lo, hi)
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
    h: dict, vocab: Vocabulary, ct: pd.DataFrame, ctx: FlowContext, labels: np.ndarray, flows: tuple[int, int]
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
    ctx = replace(ctx, captures=ctx.captures.copy(deep=False), routes=ctx.routes.copy(deep=False))
    f, hop_dir = _summaries(sub, vocab, ct.copy(deep=False), ctx, labels)
    return f, rows, hop_dir


def _summaries(
    h: dict, vocab: Vocabulary, ct: pd.DataFrame, ctx: FlowContext, labels_by_point: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per flow, and each hop's direction code (0 fwd, 1 rev, 2 ICMP error)."""
    inst = _instances(h)
    f = _openers(inst)
    hop_dir = _directions(h, inst, f)
    _counts(f, h, inst)
    _nat_legs_seen(f, h, hop_dir, vocab)
    conntrack_legs(f, ct)
    f["proto"] = [PROTO_NAMES.get(int(p), str(p)) for p in f["proto_num"]]
    f["service"], f["service_via"] = services_of(f, ctx.services)
    _paths(f, h, inst, hop_dir, labels_by_point)
    # link scope is decided once per distinct address, not once per flow
    scoped = np.append(np.asarray([is_link_scoped(w) for w in vocab.words], dtype=bool), False)
    link = scoped[f["client"].to_numpy()] | scoped[f["server"].to_numpy()]  # id -1 picks the trailing False
    f["scope"] = np.where(link, "link", "routed").astype(object)
    f["conn_state"], f["history"] = _conn_states(inst, f)
    add_verdicts(f, h, hop_dir, labels_by_point, ctx)
    return f.reset_index(), hop_dir.astype(np.int8)


def _instances(h: dict) -> pd.DataFrame:
    """One row per packet instance: its first sighting, on the sender's side (ICMP errors as the
    flow of the packet they quote)."""
    first = h["hop_index"] == 0
    return pd.DataFrame(
        {
            "instance": h["instance"][first],
            "flow_id": h["flow_id"][first],
            "ts0": h["ts_corrected_ns"][first],
            "proto": h["proto"][first],
            "src": h["src"][first],
            "sport": h["sport"][first],
            "dst": h["dst"][first],
            "dport": h["dport"][first],
            "flags": h["tcp_flags"].astype(np.int64)[first],
            "plen": h["payload_len"][first],
            "bytes": np.clip(h["ip_len"][first], 0, None),
            "err": h["err"][first],
            "ambiguous": h["ambiguous"][first],
            "icmp_type": h["icmp_type"][first],
            "icmp_code": h["icmp_code"][first],
        }
    )


def _openers(inst: pd.DataFrame) -> pd.DataFrame:
    """A frame indexed by flow id with the client and server of each flow's opening packet: the
    first SYN, else the first packet; ICMP errors only when nothing else was seen."""
    inst["syn"] = (inst["proto"] == 6) & ((inst["flags"] & (TCP_SYN | TCP_ACK)) == TCP_SYN)
    opener = (
        inst.sort_values(["flow_id", "err", "syn", "ts0"], ascending=[True, True, False, True])
        .drop_duplicates("flow_id")
        .set_index("flow_id")
    )
    f = pd.DataFrame(index=opener.index)
    f["client"], f["client_port"] = opener["src"], opener["sport"]
    f["server"], f["server_port"] = opener["dst"], opener["dport"]
    f["proto_num"] = opener["proto"]
    return f


def _directions(h: dict, inst: pd.DataFrame, f: pd.DataFrame) -> np.ndarray:
    """Each instance's direction (inst["dir"]) and each hop's: fwd from the client, rev from any
    forward destination, 2 for ICMP errors."""
    flow, instance = h["flow_id"], h["instance"]
    inst_flow = inst["flow_id"].to_numpy()
    is_client = (
        (inst["src"].to_numpy() == f["client"].reindex(inst_flow).to_numpy())
        & (inst["sport"].to_numpy() == f["client_port"].reindex(inst_flow).to_numpy())
        & ~inst["err"].to_numpy()
    )
    hop_client = spread(inst["instance"].to_numpy(), is_client, instance)
    fwd_dst = pd.DataFrame(
        {"flow_id": flow[hop_client], "src": h["dst"][hop_client], "sport": h["dport"][hop_client]}
    ).drop_duplicates()
    fwd_dst["hit"] = True
    hit = inst[["flow_id", "src", "sport"]].merge(fwd_dst, on=["flow_id", "src", "sport"], how="left")["hit"]
    rev = hit.fillna(False).to_numpy(bool) & ~is_client & ~inst["err"].to_numpy()
    inst["dir"] = np.where(inst["err"], 2, np.where(rev, 1, 0))  # 0 fwd, 1 rev, 2 icmp-error
    return spread(inst["instance"].to_numpy(), inst["dir"].to_numpy(), instance)


def _counts(f: pd.DataFrame, h: dict, inst: pd.DataFrame) -> None:
    """Packets and bytes each way, first and last time, hops, ICMP errors and ambiguous instances."""
    flow, ts = h["flow_id"], h["ts_corrected_ns"]
    inst_flow = inst["flow_id"].to_numpy()
    for d, name in ((0, "fwd"), (1, "rev")):
        sel = inst["dir"].to_numpy() == d
        f[f"packets_{name}"] = per_flow(inst_flow[sel], inst_flow[sel], f.index, "size", 0).astype(np.int64)
        f[f"bytes_{name}"] = per_flow(inst["bytes"].to_numpy()[sel], inst_flow[sel], f.index, "sum", 0).astype(np.int64)
    f["first_ns"] = per_flow(ts, flow, f.index, "min", -1).astype(np.int64)
    f["last_ns"] = per_flow(ts, flow, f.index, "max", -1).astype(np.int64)
    f["hops"] = per_flow(ts, flow, f.index, "size", 0).astype(np.int64)
    errs = inst[inst["err"]]
    f["icmp_errors"] = per_flow(errs["flow_id"].to_numpy(), errs["flow_id"].to_numpy(), f.index, "size", 0).astype(
        np.int64
    )
    types = errs.drop_duplicates(["flow_id", "icmp_type", "icmp_code"]).sort_values(
        ["flow_id", "icmp_type", "icmp_code"]
    )
    types = types.assign(tc=types["icmp_type"].astype(str) + "/" + types["icmp_code"].astype(str))
    f["icmp_error_types"] = join_groups(types, ["flow_id"], "tc", " ").reindex(f.index).fillna("").to_numpy()
    amb = inst[inst["ambiguous"]]
    f["ambiguous"] = per_flow(amb["flow_id"].to_numpy(), amb["flow_id"].to_numpy(), f.index, "size", 0).astype(np.int64)


def _nat_legs_seen(f: pd.DataFrame, h: dict, hop_dir: np.ndarray, vocab: Vocabulary) -> None:
    """Backend and SNAT as the last sighting of forward packets shows them (conntrack's reply tuple
    fills in the rest, nat_legs.conntrack_legs); every address column as text."""
    flow, instance, hop_index = h["flow_id"], h["instance"], h["hop_index"]
    last_hop = np.zeros(int(instance.max()) + 1, dtype=hop_index.dtype)
    np.maximum.at(last_hop, instance, hop_index)
    last = hop_index == last_hop[instance]
    sel = last & (hop_dir == 0)
    lf = pd.DataFrame(
        {
            "flow_id": flow[sel],
            "src": h["src"][sel],
            "sport": h["sport"][sel],
            "dst": h["dst"][sel],
            "dport": h["dport"][sel],
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


def _paths(f: pd.DataFrame, h: dict, inst: pd.DataFrame, hop_dir: np.ndarray, labels_by_point: np.ndarray) -> None:
    """path_fwd and path_rev: capture points in the order packets cross them."""
    flow, instance, hop_index, ts, point = h["flow_id"], h["instance"], h["hop_index"], h["ts_corrected_ns"], h["point"]
    ts0 = spread(inst["instance"].to_numpy(), inst["ts0"].to_numpy(), instance)
    on_path = hop_dir != 2
    # one int64 key for (flow, direction, point): a group-by on it is several times faster than on three
    n_points = len(labels_by_point)
    group = (flow[on_path] * 2 + hop_dir[on_path]) * n_points + point[on_path]
    g, hop_median = group_medians(group, hop_index[on_path])
    rel = (ts - ts0)[on_path]
    # a point's time is measured on the instances that crossed the most points of their flow and
    # direction: a median over a different set of packets at each point (those a drop stopped
    # early, retransmissions) can put a later point first. A point none of those crossed takes the
    # median of all its hops.
    whole = _crossed_most(flow[on_path] * 2 + hop_dir[on_path], instance[on_path])
    g_whole, rel_whole = group_medians(group[whole], rel[whole])
    at = np.searchsorted(g_whole, g).clip(0, max(len(g_whole) - 1, 0))
    found = (g_whole[at] == g) if len(g_whole) else np.zeros(len(g), dtype=bool)
    rel_median = np.where(found, rel_whole[at] if len(g_whole) else 0.0, 0.0)
    if not found.all():
        rest = np.isin(group, g[~found])
        g_rest, rel_rest = group_medians(group[rest], rel[rest])
        rel_median[~found] = rel_rest[np.searchsorted(g_rest, g[~found])]
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


def _crossed_most(key: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """A mask of the hops whose instance crossed as many points as any of its key (flow and direction).
    The join gives hops in instance order: runs, then one group-by over instances (a sixth of the hops)."""
    n = len(instance)
    if not n:
        return np.zeros(0, dtype=bool)
    if (instance[1:] >= instance[:-1]).all():
        starts = np.flatnonzero(np.r_[True, instance[1:] != instance[:-1]])
        crossed = np.diff(np.r_[starts, n])
        most = pd.Series(crossed).groupby(key[starts]).transform("max").to_numpy()
        return np.repeat(crossed == most, crossed)
    _, inverse, hops_per_instance = np.unique(instance, return_inverse=True, return_counts=True)
    crossed = hops_per_instance[inverse]
    return crossed == pd.Series(crossed).groupby(key).transform("max").to_numpy()


def _first_hops(hops: pd.DataFrame, block_rows: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """(capture point ids with hops, the row of each one's first hop), reading the point column a
    block of hops at a time (hops may be mapped files)."""
    point = hops["point"].to_numpy()
    n = len(point)
    size = max((int(point[lo : lo + block_rows].max()) + 1 for lo in range(0, n, block_rows)), default=0)
    first = np.full(size, n, dtype=np.int64)
    for lo in range(0, n, block_rows):
        np.minimum.at(first, point[lo : lo + block_rows], np.arange(lo, min(n, lo + block_rows)))
    ids = np.flatnonzero(first < n)
    return ids, first[ids]


def point_names(hops: pd.DataFrame, block_rows: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """(node, interface) names of every capture point id, from each point's first hop ("" for ids
    without hops)."""
    ids, first = _first_hops(hops, block_rows)
    size = int(ids.max()) + 1 if len(ids) else 0
    names = []
    for col in ("node", "interface"):
        out = np.full(size, "", dtype=object)
        out[ids] = np.asarray(hops[col].array.take(first), dtype=object).astype(str)
        names.append(out)
    return names[0], names[1]


def point_roles(captures: pd.DataFrame, hops: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(node, interface) -> role of every capture point: each capture's, then those of the points the
    hops cross, which include the interfaces inside an `-i any` capture (the captures table lists it
    as one capture)."""
    roles = {(str(r.node), str(r.interface)): str(r.role) for r in captures.itertuples(index=False)}
    _, first = _first_hops(hops)
    cols = [np.asarray(hops[c].array.take(first), dtype=object).astype(str) for c in ("node", "interface", "role")]
    roles.update(zip(zip(cols[0].tolist(), cols[1].tolist(), strict=True), cols[2].tolist(), strict=True))
    return roles


def role_of(roles: dict[tuple[str, str], str], node: str, interface: str) -> str:
    """A capture point's role: from point_roles, else from its name (a pod's veth that an `-i any`
    capture watched without a packet placed on it: the drops before it)."""
    return roles.get((node, interface)) or (interface_role(interface) if interface else "")


def point_labels(hops: pd.DataFrame) -> np.ndarray:
    """`node:interface` for every capture point id."""
    node, iface = point_names(hops)
    pairs = zip(node.tolist(), iface.tolist(), strict=True)
    return np.asarray([f"{a}:{b}" if a or b else "" for a, b in pairs], dtype=object)


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
