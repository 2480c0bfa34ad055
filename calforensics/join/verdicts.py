"""Verdicts: was each flow delivered, dropped, partly lost or not seen at all, where was it last
seen, and at which capture point should it have shown up next."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..meaning.platform import arrival
from ..meaning.routing import route_dev
from ..meaning.services import Services
from .aggregates import per_flow


@dataclass
class FlowContext:
    """What flow summaries look things up in."""

    services: Services
    dest_points: dict[str, tuple[str, str, int]]
    captures: pd.DataFrame
    routes: pd.DataFrame
    # eBPF nodes -> the arrivals (platform.arrival) that peer redirect takes past the destination veth's tap
    peer_redirect: dict[str, frozenset[str]] = field(default_factory=dict)
    point_roles: dict[tuple[str, str], str] = field(default_factory=dict)  # every capture point's (point_roles)
    filtered: dict[str, str] = field(default_factory=dict)  # capture filters by point (filters.py)

    def blind(self, point: str, path: str) -> bool:
        """Whether a capture filter may have kept a flow's packets from ``point`` (`node:interface`):
        the point's capture was filtered, and either it is an uplink (the filter sees outer
        addresses, the nodes' after encapsulation or SNAT) or the flow shows nowhere on that node."""
        node, _, iface = point.partition(":")
        if point not in self.filtered and f"{node}:*" not in self.filtered:
            return False
        on_node = any(p.partition(":")[0] == node for p in path.split(" > ") if p)
        return self.point_roles.get((node, iface)) == "uplink" or not on_node


def destination_points(captures: pd.DataFrame, routes: pd.DataFrame | None = None) -> dict[str, tuple[str, str, int]]:
    """Pod IP -> (node, interface, capture_id) of the capture on its workload interface. An `-i any`
    capture covers every interface of its node: each pod the node routes to a veth (a /32 on a
    cali* device) is watched by it there, unless a capture of that veth alone is in the bundle."""
    out = {
        str(r.pod_ip): (str(r.node), str(r.interface), int(r.capture_id))
        for r in captures.itertuples(index=False)
        if r.role == "workload" and r.pod_ip
    }
    if routes is None:
        return out
    veths = routes[routes["dev"].astype(str).str.startswith("cali") & (routes["type"].astype(str) == "unicast")]
    # every address a pod has (IPv4 and IPv6 in a dual-stack cluster): the node's host routes to its veth
    host_routes = veths[
        veths["dst"].astype(str).str.endswith(("/32", "/128")) | ~veths["dst"].astype(str).str.contains("/")
    ]
    by_veth = {(str(n), str(d)): [] for n, d in zip(host_routes["node"], host_routes["dev"], strict=True)}
    for n, d, dst in zip(host_routes["node"], host_routes["dev"], host_routes["dst"], strict=True):
        by_veth[(str(n), str(d))].append(str(dst).split("/")[0])
    for r in captures.itertuples(index=False):
        if r.role == "workload":
            for ip in by_veth.get((str(r.node), str(r.interface)), []):
                out.setdefault(ip, (str(r.node), str(r.interface), int(r.capture_id)))
    any_captures = captures[captures["role"].astype(str) == "any"]
    if any_captures.empty:
        return out
    for cap in any_captures.itertuples(index=False):
        mine = veths[veths["node"].astype(str) == str(cap.node)]
        for dst, dev in zip(mine["dst"].astype(str), mine["dev"].astype(str), strict=True):
            if dst.endswith(("/32", "/128")) or "/" not in dst:
                out.setdefault(dst.split("/")[0], (str(cap.node), dev, int(cap.capture_id)))
    return out


def add_verdicts(f: pd.DataFrame, h: dict, hop_dir: np.ndarray, labels: np.ndarray, ctx: FlowContext) -> None:
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
    blind = np.zeros(len(f), dtype=bool)
    if ctx.filtered:  # a filtered capture's silence is no evidence for flows its filter may have left out
        paths = (f["path_fwd"] + " > " + f["path_rev"]).to_numpy()
        blind = np.asarray([bool(d) and ctx.blind(d, p) for d, p in zip(dest_label, paths, strict=True)], dtype=bool)
        running &= ~blind
    flow = h["flow_id"]
    flow_pos = pd.Series(np.arange(len(f)), index=f.index).reindex(flow).to_numpy()
    at_dest = (hop_dir == 0) & (labels[h["point"]] == dest_label[flow_pos])
    reached = per_flow(h["instance"][at_dest], flow[at_dest], f.index, "nunique", 0)
    # the forward packets the destination's capture should have shown: those first seen while it ran
    # (a capture that started late or stopped early on the destination's node is no evidence for the
    # rest). Only a window the collector recorded says so: a capture's first and last packets say
    # when its interface was busy, not when it was captured
    recorded = {int(r.capture_id): bool(r.window_recorded) for r in ctx.captures.itertuples(index=False)}
    judged = np.asarray([recorded.get(d[2], False) if d else False for d in dest], dtype=bool)
    first = (hop_dir == 0) & (h["hop_index"] == 0)
    sent_at, pos = h["ts_corrected_ns"][first], flow_pos[first]
    inside = ~judged[pos] | ((win[pos, 0] <= sent_at) & (sent_at <= win[pos, 1]))
    watched = np.where(blind, 0, per_flow(h["instance"][first][inside], flow[first][inside], f.index, "nunique", 0))
    fwd, rev = f["packets_fwd"].to_numpy(), f["packets_rev"].to_numpy()
    known = dest_label != ""
    # the destination's policy let the first packets through (they reached its veth); after that BPF
    # redirects to the pod's peer: answered flows, and one-way flows other than TCP (for TCP an
    # unanswered SYN that reached the pod is a different story: no listener, or the reply lost),
    # where the node's release redirects packets that arrive the way these did
    one_way = f["proto_num"].to_numpy() != 6
    # (an ICMP error about the flow says its missing packets were lost on the way, whatever the release)
    maybe = known & (reached > 0) & (reached < fwd) & ((rev > 0) | one_way) & (f["icmp_errors"].to_numpy() == 0)
    maybe &= np.asarray([bool(d) and bool(ctx.peer_redirect.get(d[0])) for d in dest], dtype=bool)
    redirected = np.zeros(len(f), dtype=bool)
    paths, clients = f["path_fwd"].to_numpy(), f["client_ip"].to_numpy()
    for i in np.flatnonzero(maybe):
        node = dest[i][0]
        way = arrival(node, str(paths[i]), route_dev(ctx.routes, node, str(clients[i])))
        redirected[i] = way in ctx.peer_redirect[node]
    f["peer_redirected"] = np.where(redirected, fwd - reached, 0).astype(np.int64)
    tcp_unanswered = (f["proto_num"].to_numpy() == 6) & np.isin(f["conn_state"].to_numpy(), ["S0", "RSTOS0", "SH"])
    conditions = [
        (fwd == 0) & (rev == 0),
        fwd == 0,
        known & (reached > 0) & (reached >= watched),
        redirected,
        known & ((reached > 0) | ((rev > 0) & running)),
        rev > 0,
        (known & (watched > 0)) | tcp_unanswered | (f["icmp_errors"].to_numpy() > 0),
    ]
    f["verdict"] = np.select(
        conditions,
        ["unobserved", "delivered", "delivered", "delivered", "partial", "delivered", "dropped"],
        default="unobserved",
    )
    f["last_seen"], f["missing_at"] = "", ""
    # nothing came back and the destination tells nothing (not captured, or not then): where the
    # packets were last seen may still have a next capture point that was capturing and never saw them
    # (routed flows only: a link-local or multicast packet never goes past its link)
    one_way = (f["verdict"] == "unobserved").to_numpy() & (fwd > 0) & (rev == 0) & (f["scope"] == "routed").to_numpy()
    lost = f.index[f["verdict"].isin(["dropped", "partial"]).to_numpy() | one_way]
    if len(lost):
        _where_lost(f, h, hop_dir, labels, ctx, lost, at_dest, dest)
    if one_way.any():
        _dropped_before_next_point(f, one_way, ctx)


def _dropped_before_next_point(f: pd.DataFrame, one_way: np.ndarray, ctx: FlowContext) -> None:
    """One-way flows whose next capture point was capturing all the while they were seen, and never
    saw them, are dropped before it; the others stay unobserved, with no place named."""
    windows: dict[str, tuple[int, int]] = {}
    for r in ctx.captures.itertuples(index=False):
        window = (int(r.window_start_ns), max(int(r.window_end_ns), int(r.last_ns)))
        if str(r.role) == "any":  # an `-i any` capture watches every interface of its node
            windows.setdefault(f"{r.node}:*", window)
        else:
            windows[f"{r.node}:{r.interface}"] = window
    missing, paths = f["missing_at"].to_numpy(), f["path_fwd"].to_numpy()
    start, end = np.full(len(f), -1, dtype=np.int64), np.full(len(f), -1, dtype=np.int64)
    for i in np.flatnonzero(one_way & (missing != "")):
        point = str(missing[i])
        if point in str(paths[i]).split(" > ") or ctx.blind(point, str(paths[i])):
            continue  # some of its packets did go on there, or a capture filter may have left them out
        start[i], end[i] = windows.get(point, windows.get(point.split(":", 1)[0] + ":*", (-1, -1)))
    watched = (start >= 0) & (start <= f["first_ns"].to_numpy()) & (f["last_ns"].to_numpy() <= end)
    f.loc[one_way & watched, "verdict"] = "dropped"
    quiet = one_way & ~watched
    f.loc[quiet, "last_seen"] = ""
    f.loc[quiet, "missing_at"] = ""


def _where_lost(
    f: pd.DataFrame,
    h: dict,
    hop_dir: np.ndarray,
    labels: np.ndarray,
    ctx: FlowContext,
    lost: pd.Index,
    at_dest: np.ndarray,
    dest: list[tuple | None],
) -> None:
    """last_seen and missing_at of the lost flows: each one's deepest capture point on the forward
    path among the packets that never reached the destination, and the point it should have crossed next."""
    flow = h["flow_id"]
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
    roles = ctx.point_roles
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


def _next_point(node: str, iface: str, dst_ip: str, dest: tuple | None, ctx: FlowContext, roles: dict) -> str:
    """The capture point a packet last seen at node:iface should have crossed next ("" if none was
    captured there)."""
    role = roles.get((node, iface), "")
    if dest is None:  # a destination not captured: the node's route says whether a pod of its own is next
        dev = route_dev(ctx.routes, node, dst_ip)
        if dev.startswith("cali") and dev != iface:
            return f"{node}:{dev}" if (node, dev) in roles else ""

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
