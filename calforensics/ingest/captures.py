"""Captures into tables: one row per capture point (file and interface), and the packets table's
capture, node and interface columns written beside the decoded ones, a run of rows at a time."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..runtime.memory import WRITE_BACK_ROWS, write_back
from ..runtime.parallel import narrow_codes
from .artifacts import Artifact, LogFor, Tick
from .layout import interface_role, packet_capture_file
from .parsers.pcap import FrameIndex
from .parsers.text import load_json_bounded
from .parsers.wireguard import WG_PORTS, message_headers

LINKTYPE_NAMES = {
    0: "NULL",
    1: "EN10MB",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    239: "NFLOG",
    276: "LINUX_SLL2",
}
FrameIndexOf = Callable[[Artifact], FrameIndex]
RouteDev = Callable[[str, str], str]  # (node, address) -> the device the node's route for it names
LINKTYPE_SLL = 113
PACKET_OUTGOING = 4  # the Linux cooked header's packet type of a packet the node sent


def capture_points(
    pcaps: list[Artifact], frame_index: FrameIndexOf, log_for: LogFor, tick: Tick, uplinks: dict[str, set[str]]
) -> pd.DataFrame:
    """One row per capture point: each interface of each capture file, with its packets and time span."""
    rows = []
    for i, art in enumerate(pcaps):
        tick("indexing captures", i, len(pcaps))
        fi = frame_index(art)
        log = log_for("pcap", art)
        art.rows, art.anomalies, art.status = len(fi), len(log), "parsed"
        stem = _capture_stem(art.path)
        n_if = max(1, len(fi.interfaces))
        for k in range(n_if):
            ci = fi.interfaces[k] if k < len(fi.interfaces) else None
            sel = fi.iface == k if n_if > 1 else slice(None)  # no per-frame copies for one interface
            ts = fi.ts_ns[sel]
            iface = (ci.name if ci and ci.name else stem) if n_if == 1 or not ci or ci.name else f"{stem}#{k}"
            rows.append(
                {
                    "capture_id": len(rows),
                    "node": art.node,
                    "interface": iface,
                    "role": interface_role(iface, uplinks.get(art.node)),
                    "linktype": ci.linktype if ci else -1,
                    "linktype_name": LINKTYPE_NAMES.get(ci.linktype, f"LINKTYPE_{ci.linktype}") if ci else "",
                    "container": fi.container,
                    "snaplen": ci.snaplen if ci else -1,
                    "capture_filter": ci.capture_filter if ci else "",
                    "packets": len(ts),
                    "first_ns": int(ts.min()) if len(ts) else -1,
                    "last_ns": int(ts.max()) if len(ts) else -1,
                    "artifact": art.path,
                    "iface_index": k,
                }
            )
    if not rows:
        return pd.DataFrame(rows, columns=["capture_id", "node", "interface", "iface_index", "artifact"])
    return pd.DataFrame(rows)


def add_capture_windows(caps: pd.DataFrame, metadata: list[Artifact], root: Path, log_for: LogFor) -> None:
    """Each capture's window from the collector's metadata (else its own first and last packet)."""
    windows = {}
    for art in metadata:
        try:
            meta = load_json_bounded((root / art.path).read_text(errors="replace"))
            cap = meta.get("capture", {})
            windows[art.node] = (int(cap.get("start_ns", -1)), int(cap.get("stop_ns", -1)))
            art.rows, art.status = 1, "parsed"
        except (ValueError, TypeError, AttributeError) as exc:
            log_for("metadata", art).add("file", "bad_json", str(exc))
            art.status, art.anomalies, art.detail = "no_data", 1, f"not usable metadata: {str(exc)[:200]}"
    start = [windows.get(n, (-1, -1))[0] for n in caps["node"]]
    end = [windows.get(n, (-1, -1))[1] for n in caps["node"]]
    caps["window_start_ns"] = [w if w >= 0 else f for w, f in zip(start, caps["first_ns"], strict=True)]
    caps["window_end_ns"] = [w if w >= 0 else f for w, f in zip(end, caps["last_ns"], strict=True)]
    caps["window_recorded"] = [a >= 0 and b >= 0 for a, b in zip(start, end, strict=True)]


def add_capture_pods(caps: pd.DataFrame, pods: pd.DataFrame, routes: pd.DataFrame) -> None:
    """The pod behind each workload interface: from a pod listing, else the node's /32 route to it."""
    by_iface = {(r.pod_node, r.interface): r for r in pods.itertuples(index=False)}
    by_iface_any = {r.interface: r for r in pods.itertuples(index=False)}
    local = routes[(routes["dev"] != "") & routes["scope"].isin(["link", ""]) & (routes["type"] == "unicast")]
    ip_by_iface = {
        (r.node, r.dev): r.dst.split("/")[0]
        for r in local.itertuples(index=False)
        if r.dst.endswith("/32") or "/" not in r.dst
    }
    ns, name, ip = [], [], []
    for node, iface, role in zip(caps["node"], caps["interface"], caps["role"], strict=True):
        pod = by_iface.get((node, iface)) or by_iface_any.get(iface) if role == "workload" else None
        ns.append(pod.namespace if pod else "")
        name.append(pod.name if pod else "")
        ip.append(
            (pod.ip if pod and pod.ip else "") or ip_by_iface.get((node, iface), "") if role == "workload" else ""
        )
    caps["pod_namespace"], caps["pod_name"], caps["pod_ip"] = ns, name, ip


def uplinks(interfaces: pd.DataFrame) -> dict[str, set[str]]:
    """Per node, interfaces that carry an address and are not loopback, workload or tunnel."""
    out: dict[str, set[str]] = {}
    for r in interfaces.itertuples(index=False):
        candidate = r.name != "lo" and not r.name.startswith("cali") and interface_role(r.name) != "tunnel"
        if candidate and any("." in a and not a.startswith("127.") for a in str(r.addresses).split()):
            out.setdefault(r.node, set()).add(r.name)
    return out


def ifindex_names(interfaces: pd.DataFrame) -> dict[str, dict[int, str]]:
    """Per node, interface index -> name (to name the interface of each `-i any` SLL2 packet)."""
    out: dict[str, dict[int, str]] = {}
    for r in interfaces.itertuples(index=False):
        if r.ifindex >= 0:
            out.setdefault(r.node, {})[int(r.ifindex)] = r.name
    return out


def interface_mtus(interfaces: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {(str(r.node), str(r.name)): int(r.mtu) for r in interfaces.itertuples(index=False) if r.mtu > 0}


def packet_points(
    pcaps: list[Artifact],
    counts: list[int],
    frame_index: FrameIndexOf,
    caps: pd.DataFrame,
    cols: dict,
    ifname_by_node: dict[str, dict[int, str]],
    allocate: Callable[[int, type], np.ndarray],
    log_for: LogFor,
    route_dev: RouteDev | None = None,
) -> dict[str, object]:
    """Each packet's capture_id, node and interface columns, and the decoder's anomalies logged.

    An `-i any` capture in SLL2 names each packet's interface by its index; one in SLL v1 does not,
    so each packet is placed by its direction and the node's routes (``route_dev``, see _by_route).
    Node and interface are categorical codes built per capture: per-packet name objects would cost
    ~50 bytes and a Python-level factorize a packet. Written in place, a run at a time, into arrays
    from ``allocate`` (mapped files when the table is spilled): bounded transients, written back."""
    total = sum(counts)
    capture_id = allocate(total, np.int32)
    node_codes = allocate(total, np.int16)
    iface_codes = allocate(total, np.int32)
    node_cats: dict[str, int] = {}
    iface_cats: dict[str, int] = {}
    start = 0
    for art, n in zip(pcaps, counts, strict=True):
        fi = frame_index(art)
        n_if = max(1, len(fi.interfaces))
        mine = caps[caps["artifact"] == art.path].set_index("iface_index")
        ids = mine["capture_id"].reindex(range(n_if)).fillna(-1).to_numpy(np.int32)
        used = np.bincount(fi.iface, minlength=n_if) > 0
        labels = mine["interface"].reindex(range(n_if)).to_numpy(object)
        lut = np.array([_code(iface_cats, _label(x)) if used[i] else -1 for i, x in enumerate(labels)], dtype=np.int32)
        lookup = ifname_by_node.get(art.node, {})
        node_code = _code(node_cats, _label(art.node))
        sll1 = np.asarray([i.linktype == LINKTYPE_SLL for i in fi.interfaces] or [False], dtype=bool)
        for lo in range(start, start + n, WRITE_BACK_ROWS):
            run = slice(lo, min(start + n, lo + WRITE_BACK_ROWS))
            local = fi.iface[run.start - start : run.stop - start]
            np.take(ids, local, out=capture_id[run])
            codes = iface_codes[run]
            np.take(lut, local, out=codes)
            ifindex = np.asarray(cols["link_ifindex"][run])
            sll2 = ifindex >= 0
            if sll2.any():  # `-i any` (SLL2): each packet's own interface, named through `ip link`
                uniq, inv = np.unique(ifindex[sll2], return_inverse=True)
                named = [_code(iface_cats, lookup.get(int(x), f"if{int(x)}")) for x in uniq.tolist()]
                codes[sll2] = np.asarray(named, dtype=np.int32)[inv]
            if route_dev is not None and sll1.any():
                _by_route(np.flatnonzero(sll1[local] & ~sll2), run, cols, codes, iface_cats, art.node, route_dev)
            node_codes[run] = node_code
            for arr in (capture_id, iface_codes, node_codes):
                write_back(arr[run])
            _log_decode_anomalies(art, cols, run, log_for)
        start += n
    return {
        "capture_id": np.asarray(capture_id),
        "node": _categorical(node_codes, node_cats, allocate),
        "interface": _categorical(iface_codes, iface_cats, allocate),
    }


def _by_route(
    rows: np.ndarray, run: slice, cols: dict, codes: np.ndarray, iface_cats: dict, node: str, route_dev: RouteDev
) -> None:
    """Place packets of an SLL v1 `-i any` capture (rows of the run) on the interface they crossed:
    a packet the node sent (packet type 4, outgoing) left by the device its route to the outermost
    destination names; any other arrived by the device its route back to the outermost source names
    (the reverse path). Each copy carries its own addresses, so a rewrite (NAT) or an encapsulation
    between copies puts them apart: a pod's packet arrives on its veth, leaves by vxlan.calico to the
    backend, and leaves again, in VXLAN, by eth0. Looked up once per distinct address."""
    if not len(rows):
        return
    outgoing = np.asarray(cols["pkttype"][run])[rows] == PACKET_OUTGOING
    for column, mine in (("outer_dst", outgoing), ("outer_src", ~outgoing)):
        at = rows[mine]
        addresses = cols[column]
        address_codes = np.asarray(addresses.codes[run])[at]
        uniq, inverse = np.unique(address_codes, return_inverse=True)
        names = [_route_of(route_dev, node, str(addresses.categories[u])) if u >= 0 else "" for u in uniq.tolist()]
        placed = np.asarray([_code(iface_cats, name) if name else -2 for name in names], dtype=np.int32)[inverse]
        keep = placed >= 0  # no route, no address: it stays at the capture's own point, `any`
        codes[at[keep]] = placed[keep]


def _route_of(route_dev: RouteDev, node: str, address: str) -> str:
    """The device the node's route for an address names; none for a link-local or multicast address,
    which every interface has a route for (`fe80::/64` on each): that copy stays unplaced."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return ""
    return route_dev(node, address)


def _log_decode_anomalies(art: Artifact, cols: dict, run: slice, log_for: LogFor) -> None:
    status = cols["status"].codes[run]
    bad = status != 0
    if bad.any():
        log = log_for("packets", art)
        frames = np.asarray(cols["frame"][run])[bad]
        log.extend_frames(frames.tolist(), np.asarray(cols["status"].categories)[status[bad]].tolist())
        art.anomalies = len(log_for("pcap", art)) + len(log)


def _categorical(codes: np.ndarray, categories: dict[str, int], allocate) -> pd.Categorical:
    narrow = np.asarray(narrow_codes(codes, len(categories), allocate))
    return pd.Categorical.from_codes(narrow, categories=pd.Index(list(categories), dtype=object))


def wireguard_headers(pcaps: list[Artifact], counts: list[int], cols: dict, frame_index: FrameIndexOf) -> pd.DataFrame:
    """Header fields of the UDP messages on WireGuard ports (packet row, type, indexes, counter),
    read from the frame bytes (so before they are released)."""
    proto, sport, dport = cols["proto"], cols["sport"], cols["dport"]
    parts = []
    start = 0
    for art, n in zip(pcaps, counts, strict=True):
        run = slice(start, start + n)
        on_port = np.isin(np.asarray(sport[run]), WG_PORTS) | np.isin(np.asarray(dport[run]), WG_PORTS)
        plain = (np.asarray(proto[run]) == 17) & (cols["encap"].codes[run] == 0) & (cols["status"].codes[run] == 0)
        local = np.flatnonzero(on_port & plain)
        if len(local):
            headers = message_headers(frame_index(art), local)
            parts.append(pd.DataFrame({"packet": local + start, **headers}))
        start += n
    columns = ["packet", "msg_type", "receiver_index", "sender_index", "counter"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns, dtype=np.int64)


def _label(value: object) -> str:
    """A name as the categorical columns hold it: missing becomes ""."""
    return "" if value is None or pd.isna(value) else str(value)


def _code(categories: dict[str, int], label: str) -> int:
    """The code of ``label`` in an insertion-ordered category table, adding it when new."""
    return categories.setdefault(label, len(categories))


def _capture_stem(rel: str) -> str:
    """The interface a capture file's name says: the file name without its extension, or the
    interface of a PacketCapture file (`<endpoint>_<cali…>.pcap`)."""
    captured = packet_capture_file(rel)
    if captured:
        return captured[1]
    name = PurePosixPath(rel).name
    for suffix in (".pcapng", ".pcap", ".cap"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
