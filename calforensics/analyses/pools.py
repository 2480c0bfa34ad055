"""What the IP pools say against what the captures show: the encapsulation their pods' traffic
between nodes should get (vxlanMode, ipipMode) and the SNAT their traffic out of the pools should
get (natOutgoing: felix's cali-nat-outgoing MASQUERADE of pool sources to destinations outside
every pool)."""

from __future__ import annotations

import ipaddress

import pandas as pd

from ..bundle import Bundle
from ..ingest.layout import interface_role

POOL_TYPES = {"ipip": ("ipip",), "vxlan": ("vxlan", "vxlan-ipv6")}


def pool_mismatches(b: Bundle, flow_overhead: pd.DataFrame) -> list[dict]:
    """IP pools whose pods' traffic between nodes was not encapsulated as the pool says: a pool in
    VXLAN (or IPIP) mode `Always` whose crossing flows went another way or bare, or a pool in neither
    mode whose flows were tunnelled. CrossSubnet may go either way and is not judged; WireGuard hides
    the encapsulation and is not judged either, nor a pool listed without its modes."""
    pools = _judged(b.ip_pools)
    if pools.empty:
        return []
    flows = b.flows
    nodes_crossed = flows["path_fwd"].astype(str).map(lambda p: len({x.split(":", 1)[0] for x in p.split(" > ") if x}))
    crossing = flows[nodes_crossed > 1]
    types = flow_overhead.groupby("flow_id")["type"].agg(lambda t: set(map(str, t))).to_dict()
    out = []
    for p, net in _networks(pools):
        modes = {"vxlan": str(p.vxlan_mode), "ipip": str(p.ipip_mode)}
        if "CrossSubnet" in modes.values():
            continue
        expected = {t for mode, m in modes.items() if m == "Always" for t in POOL_TYPES[mode]} or {"none"}
        seen: dict[str, int] = {}
        for f in crossing.itertuples(index=False):
            ends = [str(f.client_ip), str(f.backend_ip or f.server_ip)]
            if not any(_in(net, ip) for ip in ends):
                continue
            got = types.get(int(f.flow_id), set()) or {"none"}
            if "wireguard" in got:
                continue
            for t in got - expected:
                seen[t] = seen.get(t, 0) + 1
        if seen:
            mode = ", ".join(f"{k}Mode {v}" for k, v in modes.items())
            out.append({"pool": str(p.name), "cidr": str(p.cidr), "modes": mode, "seen": seen})
    return out


def pool_nat_mismatches(b: Bundle) -> list[dict]:
    """Pools whose pods' flows out of every pool were not masqueraded as natOutgoing says: with
    natOutgoing, a flow that left the pod's node on an uplink still from the pod's address; without
    it, a flow masqueraded all the same. Service traffic (kube-proxy's own SNAT) is not judged."""
    pools = _judged(b.ip_pools)
    if pools.empty:
        return []
    networks = list(_networks(pools))
    flows = b.flows
    flows = flows[(flows["service"].astype(str) == "") & flows["verdict"].astype(str).isin(["delivered", "partial"])]
    owners = b.owners
    out = []
    for p, net in networks:
        wrong: list[int] = []
        for f in flows.itertuples(index=False):
            dest = str(f.backend_ip or f.server_ip)
            if not _in(net, str(f.client_ip)) or any(_in(n, dest) for _, n in networks):
                continue
            node = owners.get(str(f.client_ip), "")
            left = any(
                point.startswith(node + ":") and interface_role(point.split(":", 1)[1]) == "uplink"
                for point in str(f.path_fwd).split(" > ")
            )
            masqueraded = bool(str(f.snat_ip))
            if (bool(p.nat_outgoing) and left and not masqueraded) or (not p.nat_outgoing and masqueraded):
                wrong.append(int(f.flow_id))
        if wrong:
            said = "left their node from the pod's address" if p.nat_outgoing else "were masqueraded"
            out.append(
                {
                    "pool": str(p.name),
                    "cidr": str(p.cidr),
                    "nat_outgoing": bool(p.nat_outgoing),
                    "flows": len(wrong),
                    "flow_ids": wrong[:20],
                    "said": said,
                }
            )
    return out


def _judged(pools: pd.DataFrame) -> pd.DataFrame:
    """Enabled pools whose modes and NAT are known (a listing without -o wide shows neither), each
    once where it was saved twice."""
    if pools.empty:
        return pools
    pools = pools[~pools["disabled"].astype(bool)]
    pools = pools.sort_values("vxlan_mode", key=lambda m: m.astype(str) == "").drop_duplicates(["name", "cidr"])
    return pools[(pools["vxlan_mode"].astype(str) != "") & (pools["ipip_mode"].astype(str) != "")]


def _networks(pools: pd.DataFrame):
    for p in pools.itertuples(index=False):
        try:
            yield p, ipaddress.ip_network(str(p.cidr), strict=False)
        except ValueError:
            continue


def _in(net, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in net
    except ValueError:
        return False
