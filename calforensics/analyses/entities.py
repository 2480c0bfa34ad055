"""The flows seen from the names an engineer asks about: per service (its frontends, its backends,
its flows by verdict, the time its packets spent in the NAT hop) and per pod (its flows out and in).

A service is what the flows' `service` names (kube-proxy's port name, a BPF NAT frontend, a listing);
a pod is an address the pods table or a workload capture point names (else the address alone is
listed, for the pods whose interfaces were captured)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..bundle import Bundle

FLOW_IDS = 50  # flow ids listed per service or pod; the flow table's filter finds the rest
VERDICTS = ("delivered", "dropped", "partial", "unobserved")


def _endpoint(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}" if port >= 0 else host


def _verdicts(series: pd.Series) -> dict[str, int]:
    counts = series.astype(str).value_counts()
    return {v: int(counts.get(v, 0)) for v in VERDICTS if counts.get(v, 0)}


def _routed(b: Bundle) -> pd.DataFrame:
    flows = b.flows
    return flows[flows["scope"].astype(str) != "link"]


def nat_hop_delays(hops: pd.DataFrame, flow_ids: set[int]) -> np.ndarray:
    """Microseconds between the sighting before a NAT rewrite and the one after it (the packet's
    destination, or its source, changed between them), for the forward packets of these flows."""
    h = hops[hops["flow_id"].isin(flow_ids) & (hops["direction"].astype(str) == "fwd")]
    if h.empty:
        return np.zeros(0)
    h = h.sort_values(["instance", "hop_index"])
    inst = h["instance"].to_numpy()
    same = np.r_[False, inst[1:] == inst[:-1]]
    cols = [h[c].astype(str).to_numpy() for c in ("src", "dst")] + [h[c].to_numpy() for c in ("sport", "dport")]
    changed = np.zeros(len(h), dtype=bool)
    for col in cols:
        changed[1:] |= col[1:] != col[:-1]
    delta = h["delta_ns"].to_numpy()
    return delta[same & changed & (delta >= 0)] / 1e3


def service_summaries(b: Bundle) -> list[dict]:
    """A row per service the flows dialled."""
    flows = _routed(b)
    flows = flows[flows["service"].astype(str) != ""]
    out = []
    for service, g in flows.groupby(flows["service"].astype(str), sort=True):
        delays = nat_hop_delays(b.hops, set(g["flow_id"].astype(int)))
        backends = {_endpoint(str(i), int(p)) for i, p in zip(g["backend_ip"], g["backend_port"], strict=True) if i}
        out.append(
            {
                "service": service,
                "frontends": sorted(
                    {_endpoint(str(i), int(p)) for i, p in zip(g["server_ip"], g["server_port"], strict=True)}
                ),
                "backends": sorted(backends),
                "flows": _verdicts(g["verdict"]),
                "flow_ids": sorted(g["flow_id"].astype(int).tolist())[:FLOW_IDS],
                "nat_hop_us": {
                    "packets": len(delays),
                    "p50": round(float(np.percentile(delays, 50)), 1),
                    "p90": round(float(np.percentile(delays, 90)), 1),
                }
                if len(delays)
                else None,
            }
        )
    return out


def pod_summaries(b: Bundle) -> list[dict]:
    """A row per pod with flows, keyed by its workload interface on its node: its name from the pods
    table or a capture point of that interface, its addresses from those and from the node's routes
    to it (both families), and its flows out (it was the client) and in (the server or backend)."""
    names: dict[tuple[str, str], str] = {}
    addresses: dict[tuple[str, str], set[str]] = {}
    pods = b.pods
    for ns, name, ip, node, iface in zip(
        pods["namespace"], pods["name"], pods["ip"], pods["pod_node"], pods["interface"], strict=True
    ):
        key = (str(node), str(iface))
        names.setdefault(key, f"{ns}/{name}")
        if ip:
            addresses.setdefault(key, set()).add(str(ip))
    caps = b.captures
    if "pod_ip" in caps:
        for node, iface, ns, name, ip in zip(
            caps["node"], caps["interface"], caps["pod_namespace"], caps["pod_name"], caps["pod_ip"], strict=True
        ):
            key = (str(node), str(iface))
            if name:
                names.setdefault(key, f"{ns}/{name}")
            if ip:
                addresses.setdefault(key, set()).add(str(ip))
    routes = b.routes
    local = routes[routes["dev"].astype(str).str.startswith("cali") & (routes["type"].astype(str) == "unicast")]
    for node, dev, dst in zip(local["node"], local["dev"], local["dst"], strict=True):
        ip, _, bits = str(dst).partition("/")
        if bits in ("", "32", "128"):
            addresses.setdefault((str(node), str(dev)), set()).add(ip)
    flows = _routed(b)
    client = flows["client_ip"].astype(str)
    backend = flows["backend_ip"].astype(str)
    server = backend.where(backend != "", flows["server_ip"].astype(str))
    out = []
    for (node, iface), ips in sorted(addresses.items()):
        outgoing, incoming = flows[client.isin(ips)], flows[server.isin(ips)]
        if outgoing.empty and incoming.empty:
            continue
        ids = set(outgoing["flow_id"].astype(int)) | set(incoming["flow_id"].astype(int))
        out.append(
            {
                "pod": names.get((node, iface), ""),
                "node": node,
                "interface": iface,
                "addresses": sorted(ips),
                "out": _verdicts(outgoing["verdict"]),
                "in": _verdicts(incoming["verdict"]),
                "flow_ids": sorted(ids)[:FLOW_IDS],
            }
        )
    return out
