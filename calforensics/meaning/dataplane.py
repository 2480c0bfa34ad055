"""Which dataplane each node runs, from what its dumps contain: Calico's eBPF dataplane leaves BPF
state (calico-bpf dumps, `bpf-maps/`, `bpftool prog list`) and no per-endpoint iptables policy chains
or kube-proxy chains; the iptables and nftables dataplanes leave those chains. WireGuard shows as a
`wireguard.cali` / `wg-v6.cali` device (listed or captured).

The mode decides how absence is read: in eBPF mode the destination's host-side veth does not show
packets that peer redirect delivered, so their absence there is not a drop (shared eBPF reference A.3).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pandas as pd

from ..schema import conform
from .routing import WIREGUARD_DEVICES

BPF_KINDS = ("bpf_conntrack", "bpf_nat", "bpf_routes", "bpf_counters", "bpftool")
BPF_LISTINGS = ("bpf-prog.txt", "bpf-maps.txt", "bpf-ifstate.json", "bpf-ifstate.txt", "bpf-arp.json", "bpf-arp.txt")
POLICY_CHAIN_PREFIXES = ("cali-tw-", "cali-fw-", "cali-pi-", "cali-po-", "cali-th-", "cali-fh-")


def detect_dataplane(
    artifacts: pd.DataFrame, rules: pd.DataFrame, interfaces: pd.DataFrame, captures: pd.DataFrame
) -> pd.DataFrame:
    """One row per node: mode (ebpf, iptables, nftables, mixed, unknown), encryption, and the evidence."""
    nodes = sorted({str(n) for n in artifacts["node"].astype(str) if n})
    rows = []
    for node in nodes:
        arts = artifacts[artifacts["node"].astype(str) == node]
        names = [PurePosixPath(str(p)).name for p in arts["path"]]
        bpf_files = int(arts["kind"].astype(str).isin(BPF_KINDS).sum()) + sum(n in BPF_LISTINGS for n in names)
        mine = rules[rules["node"].astype(str) == node] if len(rules) else rules
        chains = set(mine["chain"].astype(str)) if len(mine) else set()
        policy = sorted(c for c in chains if c.startswith(POLICY_CHAIN_PREFIXES))
        kube = sorted(c for c in chains if c.startswith("KUBE-SVC-") or c == "KUBE-SERVICES")
        nft_only = len(mine) > 0 and set(mine["source"].astype(str)) <= {"nft"}
        devices = set(interfaces.loc[interfaces["node"].astype(str) == node, "name"].astype(str))
        devices |= set(captures.loc[captures["node"].astype(str) == node, "interface"].astype(str))
        wg = sorted(d for d in devices if d in WIREGUARD_DEVICES)
        evidence = []
        if bpf_files:
            evidence.append(f"{bpf_files} BPF state file(s)")
        evidence.append(
            f"{len(policy)} Calico endpoint policy chain(s)" if policy else "no Calico endpoint policy chains"
        )
        evidence.append(f"{len(kube)} kube-proxy service chain(s)" if kube else "no kube-proxy service chains")
        if bpf_files and not policy:
            mode = "ebpf"
        elif bpf_files and policy:
            mode = "mixed"
            evidence.append("BPF state and iptables policy chains both present (a switch between dataplanes?)")
        elif policy or kube:
            mode = "nftables" if nft_only else "iptables"
        else:
            mode = "unknown"
        if wg:
            evidence.append("WireGuard device " + ", ".join(wg))
        rows.append(
            {
                "node": node,
                "mode": mode,
                "encryption": "wireguard" if wg else "",
                "bpf_files": bpf_files,
                "policy_chains": len(policy),
                "kube_proxy_chains": len(kube),
                "evidence": "; ".join(evidence),
            }
        )
    return conform(pd.DataFrame(rows), "dataplane")


def ebpf_nodes(dataplane: pd.DataFrame) -> set[str]:
    return set(dataplane.loc[dataplane["mode"].astype(str) == "ebpf", "node"].astype(str))
