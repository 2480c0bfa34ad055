"""Which service a flow dialled: kube-proxy's KUBE-SERVICES rules, Calico's BPF NAT frontends and
backends, and `kubectl get services` listings for the names BPF NAT does not carry.

In eBPF mode the dialled service shows on the wire only where TC NAT runs after the first tap (the
client's veth). Under connect-time load balancing (the default for TCP) no capture ever shows the
ClusterIP, so a flow to a backend can only be looked up in reverse: every service that backend
serves is a candidate, and a direct pod-to-pod connection looks the same (shared eBPF reference
B.1-B.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from ..schema import conform

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
NODEPORT_WILDCARD = "255.255.255.255"
KUBE_FRONTEND_SETS = ("KUBE-CLUSTER-IP", "KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL", "KUBE-LOAD-BALANCER")

Key = tuple[str, int, str]  # (address, port, protocol name)


@dataclass
class Services:
    """Service lookups for flows: dialled address → service, and backend → candidate services."""

    frontends: dict[Key, tuple[str, str]] = field(default_factory=dict)  # → (name, via)
    backends: dict[Key, list[str]] = field(default_factory=dict)  # BPF NAT backend → service names
    node_ports: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)  # (port, proto) → (name, via)
    node_ips: frozenset[str] = frozenset()  # where a NodePort can be dialled

    def dialled(self, ip: str, port: int, proto: str) -> tuple[str, str]:
        """(service, via) for a dialled address; ("", "") if no service has it."""
        hit = self.frontends.get((ip, port, proto))
        if hit is None and ip in self.node_ips and (port, proto) in self.node_ports:
            return self.node_ports[(port, proto)]
        return hit or ("", "")

    def candidates(self, ip: str, port: int, proto: str) -> list[str]:
        """Services whose BPF NAT backend list holds ip:port (connect-time LB reverse lookup)."""
        return self.backends.get((ip, port, proto), [])


def _proto_name(value: object) -> str:
    try:
        return PROTO_NAMES.get(int(value), str(value))
    except (TypeError, ValueError):
        return str(value).lower()


def build_services(
    rules: pd.DataFrame,
    bpf_nat: pd.DataFrame | None = None,
    listing: pd.DataFrame | None = None,
    node_ips: set[str] | None = None,
    ipvs: pd.DataFrame | None = None,
    ipsets: pd.DataFrame | None = None,
) -> Services:
    """``node_ips``: the nodes' addresses, at which NodePort frontends (`255.255.255.255:<port>` in BPF
    NAT, `80:30080/TCP` in a listing) are dialled. ``ipvs``: kube-proxy's IPVS virtual services and
    real servers (`ipvsadm -Ln`), named by the listing where it has them; ``ipsets``: the same mode's
    frontend sets (KUBE-CLUSTER-IP, …; KUBE-NODE-PORT-TCP/-UDP/-SCTP), for bundles without ipvsadm.
    Without ``bpf_nat``, ``listing``, ``ipvs`` or ``ipsets``: none."""
    bpf_nat = conform(pd.DataFrame(), "bpf_nat") if bpf_nat is None else bpf_nat
    listing = conform(pd.DataFrame(), "services") if listing is None else listing
    out = Services(node_ips=frozenset(node_ips or ()))
    named: dict[Key, str] = {}
    by_node_port: dict[tuple[int, str], str] = {}
    for r in listing.itertuples(index=False):
        # as kube-proxy names a service port where the port's name is known (`-o yaml`), else by number
        label = f"{r.namespace}/{r.name}:{getattr(r, 'port_name', '') or int(r.port)}"
        if r.cluster_ip:
            named[(str(r.cluster_ip), int(r.port), str(r.protocol))] = label
        for ip in str(r.external_ip).split(","):
            if ip:
                named[(ip, int(r.port), str(r.protocol))] = label
        if int(r.node_port) >= 0:
            by_node_port[(int(r.node_port), str(r.protocol))] = label
    svc = rules[(rules["service_ip"].astype(str) != "") & (rules["service_port"] >= 0)]
    for r in svc.itertuples(index=False):
        proto = str(r.protocol).lstrip("!") or "tcp"
        out.frontends[(str(r.service_ip), int(r.service_port), proto)] = (str(r.service), "kube-proxy")
    # NodePorts: `-A KUBE-NODEPORTS … --comment "<spn>" … --dport <port> -j KUBE-EXT-…` (KUBE-SVC-… or
    # KUBE-XLB-… in older releases), dialled at the nodes' own addresses
    has = {"chain", "table", "service", "service_port"} <= set(rules.columns)
    # and a NodePort of a service without endpoints: its REJECT in filter KUBE-EXTERNAL-SERVICES
    node_port = (
        rules[
            (
                ((rules["chain"].astype(str) == "KUBE-NODEPORTS") & (rules["table"].astype(str) == "nat"))
                | (
                    (rules["chain"].astype(str) == "KUBE-EXTERNAL-SERVICES")
                    & (rules["dst"].astype(str) == "")
                    & rules["match"].astype(str).str.contains("--dst-type LOCAL", regex=False)
                )
            )
            & (rules["service"].astype(str) != "")
            & (rules["service_port"] >= 0)
        ]
        if has
        else rules.iloc[:0]
    )
    for r in node_port.itertuples(index=False):
        proto = str(r.protocol).lstrip("!") or "tcp"
        out.node_ports.setdefault((int(r.service_port), proto), (str(r.service), "kube-proxy nodeport"))
    nat = bpf_nat[bpf_nat["frontend_ip"].astype(str) != ""]
    for fe in nat.drop_duplicates(["frontend_ip", "frontend_port", "proto", "svc_id"]).itertuples(index=False):
        proto, port, ip = _proto_name(fe.proto), int(fe.frontend_port), str(fe.frontend_ip)
        name = named.get((ip, port, proto)) or by_node_port.get((port, proto)) or f"bpf-nat id {int(fe.svc_id)}"
        if ip == NODEPORT_WILDCARD:
            out.node_ports.setdefault((port, proto), (name, "bpf-nat"))
        else:
            out.frontends.setdefault((ip, port, proto), (name, "bpf-nat"))
    for be in nat[nat["backend_ip"].astype(str) != ""].itertuples(index=False):
        proto = _proto_name(be.proto)
        fe_name = out.frontends.get((str(be.frontend_ip), int(be.frontend_port), proto), ("", ""))[0]
        name = fe_name or out.node_ports.get((int(be.frontend_port), proto), ("", ""))[0]
        names = out.backends.setdefault((str(be.backend_ip), int(be.backend_port), proto), [])
        if name and name not in names:
            names.append(name)
    for names in out.backends.values():
        names.sort()
    if ipvs is not None and len(ipvs):  # IPVS mode: ipvsadm holds no names, the listing does
        virtual = ipvs[(ipvs["vip"].astype(str) != "") & (ipvs["vport"] >= 0)]
        for v in virtual.itertuples(index=False):
            key = (str(v.vip), int(v.vport), str(v.proto))
            name = named.get(key) or f"ipvs {v.vip}:{int(v.vport)}"
            if key[0] in out.node_ips:  # a NodePort: the virtual service sits on every node address
                out.node_ports.setdefault((key[1], key[2]), (by_node_port.get((key[1], key[2]), name), "ipvs"))
            else:  # (its real servers are not candidates for flows to a backend: IPVS has no connect-time LB)
                out.frontends.setdefault(key, (name, "ipvs"))
    if ipsets is not None and len(ipsets):
        for r in ipsets[ipsets["set"].astype(str).isin(KUBE_FRONTEND_SETS)].itertuples(index=False):
            m = re.fullmatch(r"\[?([0-9A-Fa-f.:]+)\]?,(tcp|udp|sctp):(\d+)", str(r.member))
            if m:
                key = (m.group(1), int(m.group(3)), m.group(2))
                out.frontends.setdefault(key, (named.get(key) or f"ipvs {key[0]}:{key[1]}", "ipset"))
        for r in ipsets[ipsets["set"].astype(str).str.startswith("KUBE-NODE-PORT-")].itertuples(index=False):
            proto = str(r.set).rsplit("-", 1)[-1].lower()
            if str(r.member).isdigit() and proto in ("tcp", "udp", "sctp"):
                key2 = (int(r.member), proto)
                out.node_ports.setdefault(key2, (by_node_port.get(key2) or f"nodeport {key2[0]}/{proto}", "ipset"))
    for key, name in named.items():  # listed services BPF NAT did not show (e.g. no BPF dump)
        out.frontends.setdefault(key, (name, "kubectl listing"))
    return out


def bpf_nat_legs(bpf_conntrack: pd.DataFrame) -> pd.DataFrame:
    """BPF conntrack NAT entries in the shape of conntrack rows (original = client → service,
    reply = backend → client), so the flow build links their two legs as it links nf_conntrack's."""
    nat = bpf_conntrack[
        (bpf_conntrack["entry_type"].astype(str) == "nat-reverse") & (bpf_conntrack["orig_dst"].astype(str) != "")
    ]
    nat = nat.drop_duplicates(["proto", "src", "sport", "orig_dst", "orig_dport", "dst", "dport"])
    return pd.DataFrame(
        {
            "node": nat["node"].astype(str).to_numpy(),
            "proto": [_proto_name(p) for p in nat["proto"]],
            "proto_num": nat["proto"].astype("int64").to_numpy(),
            "state": nat["tcp_state"].astype(str).to_numpy(),
            "orig_src": nat["src"].astype(str).to_numpy(),
            "orig_sport": nat["sport"].astype("int64").to_numpy(),
            "orig_dst": nat["orig_dst"].astype(str).to_numpy(),
            "orig_dport": nat["orig_dport"].astype("int64").to_numpy(),
            "reply_src": nat["dst"].astype(str).to_numpy(),
            "reply_sport": nat["dport"].astype("int64").to_numpy(),
            "reply_dst": nat["src"].astype(str).to_numpy(),
            "reply_dport": nat["sport"].astype("int64").to_numpy(),
            "nat": "dnat",
            "unreplied": False,
        }
    )
