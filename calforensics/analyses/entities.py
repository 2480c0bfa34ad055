"""The flows seen from the names an engineer asks about: per service (its frontends, its backends,
its flows by verdict, the time its packets spent in the NAT hop) and per pod (its flows out and in).

A service is what the flows' `service` names (kube-proxy's port name, a BPF NAT frontend, a listing);
a pod is an address the pods table or a workload capture point names (else the address alone is
listed, for the pods whose interfaces were captured)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..bundle import Bundle
from ..schema import category_code
from .blocks import select_hops

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


def nat_hop_delays(b: Bundle) -> pd.DataFrame:
    """(flow_id, us) per forward sighting that follows a NAT rewrite in its packet instance (its
    destination or source changed since the sighting before): the time the packet spent in the NAT
    hop. One pass over the hops block by block (a block never splits an instance; the join gives
    them in instance and hop order), whatever the number of services."""
    h = b.hops
    inst, direction = h["instance"].to_numpy(), h["direction"].array
    fwd = category_code(direction, "fwd")
    fields = [h["src"].array.codes, h["dst"].array.codes, h["sport"].to_numpy(), h["dport"].to_numpy()]
    delta = h["delta_ns"].to_numpy()

    def after_nat(lo: int, hi: int) -> np.ndarray:
        same = np.zeros(hi - lo, dtype=bool)
        same[1:] = inst[lo + 1 : hi] == inst[lo : hi - 1]
        changed = np.zeros(hi - lo, dtype=bool)
        for col in fields:
            changed[1:] |= col[lo + 1 : hi] != col[lo : hi - 1]
        return same & changed & (direction.codes[lo:hi] == fwd) & (delta[lo:hi] >= 0)

    rows = select_hops(b, after_nat, ["flow_id", "delta_ns"])
    return pd.DataFrame({"flow_id": rows["flow_id"].to_numpy(), "us": rows["delta_ns"].to_numpy() / 1e3})


def service_summaries(b: Bundle) -> list[dict]:
    """A row per service the flows dialled."""
    flows = _routed(b)
    flows = flows[flows["service"].astype(str) != ""]
    if flows.empty:
        return []
    service_of = dict(zip(flows["flow_id"].astype(int), flows["service"].astype(str), strict=True))
    delays = nat_hop_delays(b)
    delays = delays.assign(service=delays["flow_id"].astype(int).map(service_of)).dropna(subset=["service"])
    by_service = {s: g["us"].to_numpy() for s, g in delays.groupby("service")}
    out = []
    for service, g in flows.groupby(flows["service"].astype(str), sort=True):
        d = by_service.get(service, np.zeros(0))
        backends = {_endpoint(str(i), int(p)) for i, p in zip(g["backend_ip"], g["backend_port"], strict=True) if i}
        frontends = {_endpoint(str(i), int(p)) for i, p in zip(g["server_ip"], g["server_port"], strict=True)}
        out.append(
            {
                "service": service,
                "frontends": sorted(frontends),
                "backends": sorted(backends),
                "flows": _verdicts(g["verdict"]),
                "flow_ids": sorted(g["flow_id"].astype(int).tolist())[:FLOW_IDS],
                "nat_hop_us": {
                    "packets": len(d),
                    "p50": round(float(np.percentile(d, 50)), 1),
                    "p90": round(float(np.percentile(d, 90)), 1),
                }
                if len(d)
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
    pod_of_ip = {ip: key for key, ips in addresses.items() for ip in ips}
    backend = flows["backend_ip"].astype(str)
    server = backend.where(backend != "", flows["server_ip"].astype(str))
    sides = {
        "out": flows.assign(pod=flows["client_ip"].astype(str).map(pod_of_ip)),
        "in": flows.assign(pod=server.map(pod_of_ip)),
    }
    grouped = {side: dict(list(df.dropna(subset=["pod"]).groupby("pod", sort=False))) for side, df in sides.items()}
    empty = flows.iloc[:0]
    out = []
    for key, ips in sorted(addresses.items()):
        outgoing, incoming = grouped["out"].get(key, empty), grouped["in"].get(key, empty)
        if outgoing.empty and incoming.empty:
            continue
        node, iface = key
        ids = set(outgoing["flow_id"].astype(int)) | set(incoming["flow_id"].astype(int))
        out.append(
            {
                "pod": names.get(key, ""),
                "node": node,
                "interface": iface,
                "addresses": sorted(ips),
                "out": _verdicts(outgoing["verdict"]),
                "in": _verdicts(incoming["verdict"]),
                "flow_ids": sorted(ids)[:FLOW_IDS],
            }
        )
    return out
