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

from ..ingest.parsers.nft import iptables_chain_name
from ..schema import conform
from .platform import REACH_TEXT, calico_versions, felix_settings, kube_proxy_modes, peer_redirect_reach
from .routing import WIREGUARD_DEVICES

BPF_KINDS = ("bpf_conntrack", "bpf_nat", "bpf_routes", "bpf_counters", "bpf_ifstate", "bpf_policy", "bpftool")
BPF_LISTINGS = ("bpf-prog.txt", "bpf-maps.txt", "bpf-arp.json", "bpf-arp.txt")
# configured MTUs, in the order shown (FelixConfiguration's tunnel MTUs, the operator's, the manifests' veth MTU)
MTU_SETTINGS = ("vxlanMTU", "vxlanMTUV6", "ipipMTU", "wireguardMTU", "wireguardMTUV6", "calicoNetwork.mtu", "veth_mtu")
POLICY_CHAIN_PREFIXES = ("cali-tw-", "cali-fw-", "cali-pi-", "cali-po-", "cali-th-", "cali-fh-")


def detect_dataplane(
    artifacts: pd.DataFrame,
    rules: pd.DataFrame,
    interfaces: pd.DataFrame,
    captures: pd.DataFrame,
    platform_evidence: pd.DataFrame | None = None,
    bpf_nat: pd.DataFrame | None = None,
    ipvs: pd.DataFrame | None = None,
    ipsets: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per node: mode (ebpf, iptables, nftables, mixed, unknown), encryption, and the evidence;
    the Calico release and kube-proxy mode it ran, and the peer redirect that follows (platform.py)."""
    nodes = sorted({str(n) for n in artifacts["node"].astype(str) if n})
    rows = []
    for node in nodes:
        arts = artifacts[artifacts["node"].astype(str) == node]
        names = [PurePosixPath(str(p)).name for p in arts["path"]]
        bpf_files = int(arts["kind"].astype(str).isin(BPF_KINDS).sum()) + sum(n in BPF_LISTINGS for n in names)
        mine = rules[rules["node"].astype(str) == node] if len(rules) else rules
        # Calico's nftables mode names chains after the iptables ones, its layer in front
        chains = {iptables_chain_name(c) for c in mine["chain"].astype(str)} if len(mine) else set()
        policy = sorted(c for c in chains if c.startswith(POLICY_CHAIN_PREFIXES))
        kube = sorted(c for c in chains if c.startswith("KUBE-SVC-") or c == "KUBE-SERVICES")
        if len(mine):  # kube-proxy's nftables mode: its service chains
            in_kube_table = mine["table"].astype(str) == "kube-proxy"
            kube += sorted(c for c in set(mine.loc[in_kube_table, "chain"].astype(str)) if c.startswith("service-"))
        nft_only = len(mine) > 0 and set(mine["source"].astype(str)) <= {"nft", "nft-json"}
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
    if rows:
        _add_platform(rows, nodes, artifacts, rules, interfaces, platform_evidence, bpf_nat, ipvs, ipsets)
    return conform(pd.DataFrame(rows), "dataplane")


def _add_platform(
    rows: list[dict],
    nodes: list[str],
    artifacts: pd.DataFrame,
    rules: pd.DataFrame,
    interfaces: pd.DataFrame,
    evidence: pd.DataFrame | None,
    bpf_nat: pd.DataFrame | None,
    ipvs: pd.DataFrame | None,
    ipsets: pd.DataFrame | None = None,
) -> None:
    evidence = evidence if evidence is not None else pd.DataFrame(columns=["node", "kind"])
    versions = calico_versions(nodes, evidence, rules, artifacts)
    settings = felix_settings(nodes, evidence)
    nat_nodes = set(bpf_nat["node"].astype(str)) if bpf_nat is not None and len(bpf_nat) else set()
    ipvs_nodes = set(ipvs["node"].astype(str)) if ipvs is not None and len(ipvs) else set()
    if ipsets is not None and len(ipsets):  # IPVS mode's frontend set, as `ipset list` shows it
        ipvs_nodes |= set(ipsets.loc[ipsets["set"].astype(str) == "KUBE-CLUSTER-IP", "node"].astype(str))
    for r in rows:  # what the configuration says, where the node's state does not (or says otherwise)
        configured = configured_dataplane(settings[r["node"]])
        if configured and r["mode"] == "unknown":
            r["mode"] = configured[0]
            r["evidence"] += f"; no dataplane state, configured: {configured[1]}"
        elif configured and r["mode"] not in (configured[0], "mixed"):
            r["evidence"] += f"; but configured {configured[0]}: {configured[1]}"
    modes = kube_proxy_modes(
        nodes, evidence, rules, interfaces, {r["node"]: r["mode"] for r in rows}, nat_nodes, ipvs_nodes
    )
    for r in rows:
        node = r["node"]
        v = versions[node]
        r["calico_version"], r["calico_version_from"] = v.text, v.source
        r["kube_proxy"], r["kube_proxy_from"] = modes[node]
        said = settings[node]
        r["mtu_configured"] = " ".join(f"{k}={said[k][0]}" for k in MTU_SETTINGS if k in said)
        r["chain_insert_mode"] = said.get("chainInsertMode", ("", ""))[0]
        if r["mode"] == "ebpf":
            reach, basis = peer_redirect_reach(v, settings[node].get("bpfRedirectToPeer"))
            r["peer_redirect"], r["peer_redirect_from"] = REACH_TEXT[reach], basis


def configured_dataplane(said: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """(mode, where) the node's configuration states: FelixConfiguration `bpfEnabled: true` or
    `nftablesMode: Enabled` (or their FELIX_* forms), the operator's `linuxDataplane`. Nothing when
    it states none of them (iptables is the default, but Auto modes choose by the host)."""
    linux = said.get("linuxDataplane", ("", ""))
    chosen = {"bpf": "ebpf", "nftables": "nftables", "iptables": "iptables"}.get(linux[0].lower())
    if chosen:
        return chosen, linux[1]
    if said.get("bpfEnabled", ("", ""))[0].lower() == "true":
        return "ebpf", said["bpfEnabled"][1]
    if said.get("nftablesMode", ("", ""))[0].lower() == "enabled":
        return "nftables", said["nftablesMode"][1]
    return None


def peer_redirects(dataplane: pd.DataFrame) -> dict[str, frozenset[str]]:
    """node -> the arrivals ("l2", "l3", "wep") whose packets peer redirect takes past the
    destination veth's tap; eBPF nodes only."""
    by_text = {text: reach for reach, text in REACH_TEXT.items()}
    ebpf = dataplane[dataplane["mode"].astype(str) == "ebpf"]
    return {str(n): by_text.get(str(t), frozenset()) for n, t in zip(ebpf["node"], ebpf["peer_redirect"], strict=True)}
