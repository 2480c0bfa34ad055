"""Encapsulation overhead per tunnel and per flow, and MTU trouble.

Overhead is what a tunnel adds to each packet on the wire: the outer IP length minus the inner IP
length (VXLAN: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 = 50; IPIP: 20). Each packet is
counted once, at its first encapsulated sighting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..bundle import Bundle
from ..ingest.captures import uplinks as capture_uplinks
from ..ingest.parsers.sysctl import conntrack_fill
from ..schema import categorical, category_code, take_rows
from .blocks import hop_blocks, in_hop_order, select_hops

TUNNEL_COLUMNS = [
    "type",
    "vni",
    "src_node",
    "dst_node",
    "packets",
    "overhead_bytes_per_packet",
    "overhead_bytes",
    "inner_bytes",
    "wire_bytes",
    "share_of_wire_bytes",
]
FLOW_COLUMNS = ["flow_id", "type", "packets", "overhead_bytes", "wire_bytes", "share_of_wire_bytes"]
ETHERNET_HEADER = 14  # wire bytes are the outer IP packet in an Ethernet frame (no VLAN tag, no FCS)
MTU_COLUMNS = ["kind", "flow_id", "node", "interface", "mtu", "packets", "detail"]
BPF_NODEPORT_VNI = 0xCA11C0  # CALI_VXLAN_VNI (felix/bpf-gpl/nat.h): eBPF NodePort forwarding, not the overlay
# bytes each Calico tunnel device adds on the wire: its MTU plus this must fit the host's MTU
# (Calico's defaults: host MTU minus these; WireGuard adds 60 / 80, its padding stays within its MTU)
TUNNEL_DEVICE_HEADROOM = {
    "vxlan.calico": 50,
    "vxlan-v6.calico": 70,
    "tunl0": 20,
    "wireguard.cali": 60,
    "wg-v6.cali": 80,
}

# the device each configured tunnel MTU is for (felix sets the device's MTU from it)
MTU_SETTING_DEVICE = {
    "vxlanMTU": "vxlan.calico",
    "vxlanMTUV6": "vxlan-v6.calico",
    "ipipMTU": "tunl0",
    "wireguardMTU": "wireguard.cali",
    "wireguardMTUV6": "wg-v6.cali",
}


def encapsulated(b: Bundle, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
    """Each encapsulated packet once (its first encapsulated sighting), with its outer and inner sizes,
    from hops [lo, hi) (a block never splits a packet instance); tunnel ends stay categorical."""
    h = b.hops
    hi = len(h) if hi is None else hi
    none = category_code(h["encap"].array, "none")
    tunnelled = (h["encap"].array.codes[lo:hi] != none) & (h["copy_no"].to_numpy()[lo:hi] == 0)
    rows = in_hop_order(lo + np.flatnonzero(tunnelled), h["instance"].to_numpy(), h["hop_index"].to_numpy())
    inst = h["instance"].to_numpy()[rows]
    rows = rows[np.r_[True, inst[1:] != inst[:-1]]] if len(rows) else rows  # each instance's first
    enc = take_rows(h, rows, ["flow_id", "encap", "vni", "outer_src", "outer_dst", "packet"])
    pk = b.packets
    rows = enc["packet"].to_numpy()
    kind = enc["encap"].astype(str).to_numpy()
    # Calico eBPF forwards NodePort traffic to a remote backend's node in VXLAN with its own VNI
    kind = np.where((kind == "vxlan") & (enc["vni"].to_numpy() == BPF_NODEPORT_VNI), "vxlan-nodeport", kind)
    # a tunnel over IPv6 (`vxlan-v6.calico`: 70 bytes) is another tunnel than its IPv4 twin between the same nodes
    senders = categorical(enc["outer_src"])
    over_ipv6 = np.asarray([":" in str(a) for a in senders.categories] + [False], dtype=bool)[senders.codes]
    kind = np.where(over_ipv6, np.char.add(kind.astype(str), "-ipv6"), kind)
    # a reassembled datagram stands for all its fragments, each in a frame of its own
    datagrams = b.datagrams
    d = datagrams.at(rows)
    packets = datagrams.value("fragments", d, 1)
    outer = datagrams.value("outer_bytes", d, pk["outer_ip_len"].to_numpy()[rows].astype(np.int64))
    inner = datagrams.value("fragment_bytes", d, pk["ip_len"].to_numpy()[rows].astype(np.int64))
    return pd.DataFrame(
        {
            "flow_id": enc["flow_id"].to_numpy(),
            "type": kind,
            "vni": enc["vni"].to_numpy(),
            "outer_src": categorical(enc["outer_src"]),
            "outer_dst": categorical(enc["outer_dst"]),
            "packets": packets,
            "overhead": (outer - inner) // packets,  # a packet's
            "overhead_total": outer - inner,
            "inner": inner,
            # as an Ethernet frame carries the packet, whatever link header the capture recorded
            # (an `-i any` capture's cooked header is 16 or 20 bytes): the share is the same for any shape
            "wire": outer + ETHERNET_HEADER * packets,
        }
    )


def _node_names(ends: pd.Categorical, owners: dict[str, str]) -> np.ndarray:
    """A tunnel end the bundle does not know as a node is named by its address."""
    per_category = np.asarray([owners.get(a, a) for a in ends.categories] + [""], dtype=object)
    return per_category[ends.codes]


TUNNEL_KEYS = ["type", "vni", "src_node", "dst_node"]


def overhead_tables(b: Bundle, owners: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tunnels, flow overhead), summed over blocks of hops: per block, packets and bytes per tunnel
    and overhead size and per flow and tunnel type; the blocks' sums add up exactly."""
    blocks, _, _ = hop_blocks(b)
    per_tunnel, per_flow_type = [], []
    for lo, hi in blocks:
        e = encapsulated(b, lo, hi)
        if e.empty:
            continue
        e = e.assign(
            src_node=_node_names(e["outer_src"].array, owners), dst_node=_node_names(e["outer_dst"].array, owners)
        )
        per_tunnel.append(_sums(e, [*TUNNEL_KEYS, "overhead"], ["packets", "inner", "wire"]))
        per_flow_type.append(_sums(e, ["flow_id", "type"], ["packets", "overhead_total", "wire"]))
    return tunnels(per_tunnel), per_flow(per_flow_type)


def _sums(e: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    return e.groupby(keys)[columns].sum()


def _merged(parts: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    both = pd.concat(parts) if len(parts) > 1 else parts[0]
    return both.groupby(level=list(range(len(keys)))).sum() if len(parts) > 1 else both


def tunnels(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Per tunnel (type, VNI, ends): packets, bytes and overhead, from the blocks' sums per tunnel
    and overhead size; the overhead a packet is the tunnel's most common (the smallest of equals)."""
    if not parts:
        return pd.DataFrame(columns=TUNNEL_COLUMNS)
    by_size = _merged(parts, [*TUNNEL_KEYS, "overhead"]).reset_index()
    by_size["overhead_bytes"] = by_size["overhead"] * by_size["packets"]
    g = by_size.groupby(TUNNEL_KEYS)[["packets", "overhead_bytes", "inner", "wire"]].sum()
    # the most common overhead: the most packets, then the smallest size (as Series.mode orders ties)
    common = by_size.sort_values([*TUNNEL_KEYS, "packets", "overhead"], ascending=[True] * 4 + [False, True])
    g["overhead_bytes_per_packet"] = common.drop_duplicates(TUNNEL_KEYS).set_index(TUNNEL_KEYS)["overhead"]
    g = g.rename(columns={"inner": "inner_bytes", "wire": "wire_bytes"}).reset_index()
    g["share_of_wire_bytes"] = (g["overhead_bytes"] / g["wire_bytes"]).round(4)
    return g[TUNNEL_COLUMNS]


def per_flow(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Per flow and tunnel type: encapsulated packets and their overhead, from the blocks' sums."""
    if not parts:
        return pd.DataFrame(columns=FLOW_COLUMNS)
    g = _merged(parts, ["flow_id", "type"]).rename(columns={"overhead_total": "overhead_bytes", "wire": "wire_bytes"})
    g = g.reset_index()
    g["share_of_wire_bytes"] = (g["overhead_bytes"] / g["wire_bytes"]).round(4)
    return g[FLOW_COLUMNS]


def mtu_issues(b: Bundle, owners: dict[str, str]) -> pd.DataFrame:
    """ICMP frag-needed / packet-too-big, fragments, packets too big for the tunnel, MSS too large,
    tunnel devices whose MTU leaves no room for their encapsulation, conntrack table fill."""
    pk = b.packets
    first = _size_candidates(b)
    at = first["packet"].to_numpy()  # packet columns are gathered by row, not merged on an index
    tmtu, said = _tunnel_mtus(b)
    rows = [
        *_frag_needed(first, pk, owners),
        *_fragmented(b, first, pk, at),
        *_exceeds_tunnel_mtu(first, pk, at, tmtu, said),
        *_mss_too_large(first, pk, tmtu, said),
        *_tunnel_devices_too_big(b),
        *_configured_mtus(b),
        *_conntrack_fill(b),
    ]
    return pd.DataFrame(rows, columns=MTU_COLUMNS)


def _size_candidates(b: Bundle) -> pd.DataFrame:
    """First sightings any MTU check could pick: ICMP errors about size, fragments, non-TCP packets
    with DF leaving a pod, TCP SYNs (the checks themselves run on these rows only)."""
    h = b.hops
    pk = b.packets
    hop_index, proto, packet = h["hop_index"].to_numpy(), h["proto"].to_numpy(), h["packet"].to_numpy()
    icmp_type, icmp_code = h["icmp_type"].to_numpy(), h["icmp_code"].to_numpy()
    tcp_flags, role = h["tcp_flags"].to_numpy(), h["role"].array
    workload = category_code(role, "workload")
    frag_offset, more, df = (pk[c].to_numpy() for c in ("frag_offset", "more_fragments", "dont_fragment"))

    def candidate(lo: int, hi: int) -> np.ndarray:
        out = hop_index[lo:hi] == 0
        rows = lo + np.flatnonzero(out)
        p, at = proto[rows], packet[rows]
        size_error = ((p == 1) & (icmp_type[rows] == 3) & (icmp_code[rows] == 4)) | ((p == 58) & (icmp_type[rows] == 2))
        df_from_pod = (role.codes[rows] == workload) & (p != 6)
        df_from_pod[df_from_pod] = df[at[df_from_pod]]
        fragment = (frag_offset[at] > 0) | more[at]
        syn = (p == 6) & ((tcp_flags[rows] & 0x12) == 0x02)
        out[rows - lo] = size_error | fragment | df_from_pod | syn
        return out

    return select_hops(
        b,
        candidate,
        [
            *("flow_id", "packet", "node", "interface", "role", "src", "dst", "proto", "icmp_type", "icmp_code"),
            *("q_dst", "q_dport", "ip_len", "tcp_flags"),
        ],
    )


def _frag_needed(first: pd.DataFrame, pk: pd.DataFrame, owners: dict[str, str]) -> list[dict]:
    """ICMP fragmentation needed (v4 3/4) and packet too big (v6 2/0), at their first sighting."""
    ptb = first[
        ((first["proto"] == 1) & (first["icmp_type"] == 3) & (first["icmp_code"] == 4))
        | ((first["proto"] == 58) & (first["icmp_type"] == 2))
    ]
    rows = []
    for r in ptb.itertuples(index=False):
        mtu = int(pk.at[r.packet, "icmp_mtu"])
        sender = owners.get(str(r.src), "")
        rows.append(
            {
                "kind": "icmp_frag_needed",
                "flow_id": int(r.flow_id),
                "node": sender or str(r.node),
                "interface": str(r.interface),
                "mtu": mtu,
                "packets": 1,
                "detail": f"{r.src} ({sender or 'unknown node'}) told {r.dst}: packet to "
                f"{r.q_dst}:{r.q_dport} too big, next-hop MTU {mtu}",
            }
        )
    return rows


def _fragmented(b: Bundle, first: pd.DataFrame, pk: pd.DataFrame, at: np.ndarray) -> list[dict]:
    """Fragmented datagrams, per flow: who fragmented them, where, and into how many pieces, from the
    datagrams put back together at each capture point; fragments that could not be put back
    together are counted as they are."""
    datagrams = b.datagrams
    whole = datagrams.at(at) >= 0
    fragment = (pk["frag_offset"].to_numpy()[at] > 0) | pk["more_fragments"].to_numpy()[at]
    rows = _fragmented_datagrams(b, set(first.loc[whole & fragment, "flow_id"].tolist()))
    for fid, g in first[fragment & ~whole].groupby("flow_id"):
        r = g.iloc[0]
        rows.append(
            {
                "kind": "fragmented",
                "flow_id": int(fid),
                "node": str(r.node),
                "interface": str(r.interface),
                "mtu": -1,
                "packets": len(g),
                "detail": f"{len(g)} IP fragment(s) of {r.src} -> {r.dst} not put back together",
            }
        )
    return rows


FRAGMENT_FIELDS = {"pieces": "fragments", "largest": "largest", "length": "length"}


def _fragmented_datagrams(b: Bundle, flows: set[int]) -> list[dict]:
    """Per flow: the first point its datagrams were seen fragmented at (the sender fragmented them, or
    the node), and every later point where they were in other pieces (a node refragmented them).
    One group-by over the flows' datagram hops; the words are put together a row at a time."""
    if not flows:
        return []
    datagrams = b.datagrams
    packet = b.hops["packet"].to_numpy()
    hops = select_hops(
        b,
        lambda lo, hi: datagrams.at(packet[lo:hi]) >= 0,
        ["flow_id", "instance", "hop_index", "node", "interface", "role", "packet", "src", "dst", "direction"],
    )
    hops = hops[hops["flow_id"].isin(flows).to_numpy() & (hops["direction"].astype(str) == "fwd").to_numpy()]
    at = datagrams.at(hops["packet"].to_numpy())
    hops = hops.assign(**{name: datagrams.value(attr, at, -1) for name, attr in FRAGMENT_FIELDS.items()})
    points = (
        hops.groupby(["flow_id", "node", "interface"], observed=True, sort=False)
        .agg(
            hop=("hop_index", "median"),
            pieces=("pieces", "max"),
            largest=("largest", "max"),
            role=("role", "first"),
        )
        .reset_index()
        .sort_values(["flow_id", "hop"], kind="stable")
    )
    per_flow = hops.groupby("flow_id", sort=True).agg(
        datagrams=("instance", "nunique"), length=("length", "max"), src=("src", "first"), dst=("dst", "first")
    )
    steps: dict[int, list[str]] = {}
    start: dict[int, tuple[str, str]] = {}
    before: dict[int, tuple[int, int]] = {}
    columns = ("flow_id", "node", "interface", "pieces", "largest", "role")
    for fid, node, iface, pieces, largest, role in zip(*(points[c].tolist() for c in columns), strict=True):
        now = (int(pieces), int(largest))
        if fid not in start:
            start[fid] = (str(node), str(iface))
            who = "the sending pod" if str(role) == "workload" else f"{node} or before"
            steps[fid] = [f"{who} into {now[0]} (largest {now[1]} bytes) at {node}:{iface}"]
        elif now != before[fid]:
            steps[fid].append(f"{node} into {now[0]} (largest {now[1]} bytes) at {node}:{iface}")
        before[fid] = now
    return [
        {
            "kind": "fragmented",
            "flow_id": int(fid),
            "node": start[fid][0],
            "interface": start[fid][1],
            "mtu": -1,
            "packets": int(r.datagrams),
            "detail": f"{int(r.datagrams)} datagram(s) of {r.src} -> {r.dst} (up to {int(r.length)} bytes) "
            f"fragmented by " + "; refragmented by ".join(steps[fid]),
        }
        for fid, r in zip(per_flow.index.tolist(), per_flow.itertuples(index=False), strict=True)
    ]


def _exceeds_tunnel_mtu(
    first: pd.DataFrame, pk: pd.DataFrame, at: np.ndarray, tmtu: dict[str, int], said: dict[str, str]
) -> list[dict]:
    """Packets with DF bigger than the tunnel they must cross (TCP excluded: GSO/TSO super-packets
    are segmented before the wire, so their captured size says nothing about the path)."""
    big = first[
        (first["role"] == "workload").to_numpy() & pk["dont_fragment"].to_numpy()[at] & (first["proto"] != 6).to_numpy()
    ]
    big = big[_mtu_of(big["node"], tmtu) < big["ip_len"].to_numpy()]
    rows = []
    for fid, g in big.groupby("flow_id"):
        r = g.iloc[0]
        mtu = tmtu[str(r.node)]
        rows.append(
            {
                "kind": "exceeds_tunnel_mtu",
                "flow_id": int(fid),
                "node": str(r.node),
                "interface": str(r.interface),
                "mtu": int(mtu),
                "packets": len(g),
                "detail": f"{len(g)} packet(s) of {int(g['ip_len'].max())} bytes with DF from {r.src} "
                f"(pod interface {r.interface}) exceed the tunnel MTU {int(mtu)} on {r.node}"
                + (f" ({said[str(r.node)]})" if str(r.node) in said else ""),
            }
        )
    return rows


def _mss_too_large(first: pd.DataFrame, pk: pd.DataFrame, tmtu: dict[str, int], said: dict[str, str]) -> list[dict]:
    """MSS announced in SYNs larger than the tunnel allows."""
    syn = first[(first["proto"] == 6) & ((first["tcp_flags"] & 0x12) == 0x02)]
    syn = syn.assign(tcp_mss=pk["tcp_mss"].to_numpy()[syn["packet"].to_numpy()])
    syn = syn[syn["tcp_mss"].to_numpy() > _mtu_of(syn["node"], tmtu) - 40]
    rows = []
    for r in syn.itertuples(index=False):
        mtu = int(tmtu[str(r.node)])
        rows.append(
            {
                "kind": "mss_too_large",
                "flow_id": int(r.flow_id),
                "node": str(r.node),
                "interface": str(r.interface),
                "mtu": mtu,
                "packets": 1,
                "detail": f"SYN from {r.src} announces MSS {int(r.tcp_mss)}, more than the tunnel MTU {mtu} "
                f"allows ({mtu - 40})" + (f" ({said[str(r.node)]})" if str(r.node) in said else ""),
            }
        )
    return rows


def _conntrack_fill(b: Bundle) -> list[dict]:
    """Conntrack tables 80% full or more (sysctls)."""
    return [
        {
            "kind": "conntrack_table_fill",
            "flow_id": -1,
            "node": r.node,
            "interface": "",
            "mtu": -1,
            "packets": int(r.count),
            "detail": f"conntrack table {r.fill:.0%} full ({r.count} of {r.max})",
        }
        for r in conntrack_fill(b.sysctls).itertuples(index=False)
        if r.fill >= 0.8
    ]


def _tunnel_devices_too_big(b: Bundle) -> list[dict]:
    """Tunnel devices whose MTU plus their encapsulation exceeds the host's MTU (the smallest MTU of
    the node's uplinks): full-size inner packets then make outer packets the uplink cannot carry."""
    ifs = b.interfaces
    uplinks = capture_uplinks(b.interfaces)
    out = []
    for node, mine in ifs[ifs["mtu"] > 0].groupby("node", observed=True):
        host = mine[mine["name"].isin(uplinks.get(str(node), set()))]["mtu"]
        if host.empty:
            continue
        host_mtu = int(host.min())
        for r in mine[mine["name"].isin(TUNNEL_DEVICE_HEADROOM)].itertuples(index=False):
            headroom = TUNNEL_DEVICE_HEADROOM[str(r.name)]
            if int(r.mtu) + headroom > host_mtu:
                out.append(
                    {
                        "kind": "tunnel_mtu_too_large",
                        "flow_id": -1,
                        "node": str(node),
                        "interface": str(r.name),
                        "mtu": int(r.mtu),
                        "packets": 0,
                        "detail": f"{r.name} on {node} has MTU {int(r.mtu)}: with its {headroom} bytes of "
                        f"encapsulation a full-size packet exceeds the host MTU {host_mtu} "
                        f"(at most {host_mtu - headroom})",
                    }
                )
    return out


def _configured_mtus(b: Bundle) -> list[dict]:
    """Tunnel MTUs the configuration sets (FelixConfiguration vxlanMTU, ipipMTU, wireguardMTU) that leave
    no room for the encapsulation on the node's uplink, or that its tunnel device does not have (set
    after Felix last applied it, or overridden per node)."""
    ifs = b.interfaces
    uplinks = capture_uplinks(ifs)
    out = []
    for r in b.dataplane.itertuples(index=False):
        node = str(r.node)
        mine = ifs[(ifs["node"].astype(str) == node) & (ifs["mtu"] > 0)]
        host = mine[mine["name"].isin(uplinks.get(node, set()))]["mtu"]
        device_mtu = dict(zip(mine["name"].astype(str), mine["mtu"].astype(int), strict=True))
        for setting, value in (x.split("=", 1) for x in str(r.mtu_configured).split()):
            device = MTU_SETTING_DEVICE.get(setting)
            if device is None or not value.isdigit() or int(value) == 0:  # 0: Calico detects it
                continue
            mtu, headroom = int(value), TUNNEL_DEVICE_HEADROOM[device]
            if len(host) and mtu + headroom > int(host.min()):
                detail = (
                    f"configured {setting} {mtu} on {node}: with {device}'s {headroom} bytes of encapsulation "
                    f"a full-size packet exceeds the host MTU {int(host.min())} (at most {int(host.min()) - headroom})"
                )
                out.append(_config_row("configured_mtu_too_large", node, device, mtu, detail))
            if device in device_mtu and device_mtu[device] != mtu:
                detail = (
                    f"configured {setting} {mtu}, but {device} on {node} has MTU {device_mtu[device]} "
                    "(the setting changed after Felix set the device, or a per-node setting overrides it)"
                )
                out.append(_config_row("configured_mtu_not_applied", node, device, device_mtu[device], detail))
    return out


def _config_row(kind: str, node: str, device: str, mtu: int, detail: str) -> dict:
    return {"kind": kind, "flow_id": -1, "node": node, "interface": device, "mtu": mtu, "packets": 0, "detail": detail}


def _mtu_of(nodes: pd.Series, tmtu: dict[str, int]) -> np.ndarray:
    """The tunnel MTU of each row's node; infinity where the node has no tunnel device."""
    return np.asarray([tmtu.get(str(n), np.inf) for n in nodes], dtype=float)


def _tunnel_mtus(b: Bundle) -> tuple[dict[str, int], dict[str, str]]:
    """Per node, the MTU of its Calico tunnel device (vxlan.calico, tunl0, wireguard.cali); where the
    bundle has no such device, the tunnel MTU its configuration sets for the IP pools' encapsulation
    (FelixConfiguration vxlanMTU, ipipMTU, wireguardMTU), with what said it (the second dict)."""
    ifs = b.interfaces
    tun = ifs[ifs["name"].isin(list(TUNNEL_DEVICE_HEADROOM)) & (ifs["mtu"] > 0)]
    out = {str(n): int(m) for n, m in tun.groupby("node", observed=True)["mtu"].min().items()}
    said: dict[str, str] = {}
    wanted = _pool_mtu_settings(b.ip_pools)
    for r in b.dataplane.itertuples(index=False):
        configured = [x.split("=", 1) for x in str(r.mtu_configured).split() if "=" in x]
        values = [(int(v), k) for k, v in configured if k in wanted and v.isdigit() and int(v) > 0]
        if str(r.node) not in out and values:
            out[str(r.node)], setting = min(values)
            said[str(r.node)] = f"configured {setting}; no tunnel device in the bundle"
    return out, said


def _pool_mtu_settings(pools: pd.DataFrame) -> set[str]:
    """The configured MTUs that apply to the pools' encapsulation (all of them when no pool says)."""
    modes = set()
    for r in pools.itertuples(index=False):
        modes |= {m for m, v in (("vxlan", str(r.vxlan_mode)), ("ipip", str(r.ipip_mode))) if v not in ("", "Never")}
    settings = {"vxlan": {"vxlanMTU", "vxlanMTUV6"}, "ipip": {"ipipMTU"}}
    chosen = set().union(*(settings[m] for m in modes)) if modes else set().union(*settings.values())
    return chosen | {"wireguardMTU", "wireguardMTUV6"}
