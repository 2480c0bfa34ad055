"""Which Calico release and kube-proxy mode each node ran, and what follows from them.

The release decides how some captures read. In the eBPF dataplane, peer redirect sends packets
to a pod's peer without passing the tap of its host-side veth (shared eBPF reference A.3):
none in v3.28; from host endpoints' L2 devices (eth0, vxlan.calico) in v3.29-v3.30 (setting
`BPFRedirectToPeer`, default L2Only); also from local workloads in v3.31; and from L3 devices
(tunl0, wireguard.cali) by default from v3.32 (default Enabled). A lost packet must never be
explained by a mechanism the node's release does not have.

The release comes from what the bundle states (platform_evidence: ClusterInformation, image tags,
Felix's start-up line), else from a range the rules' dialect allows (formats reference 2.2, 2.5:
`Start of tier` from v3.29, `End of tier <t>. Drop if …` from v3.30, `<Kind> <ns>/<name> ingress`
policy comments from v3.32; `Policy <name> ingress` up to v3.31) and from the calico-bpf JSON
dumps (the `--json` flag exists from v3.31). A range reads as its lowest release: the fewest
mechanisms that the bundle proves. With nothing at all, the current release's defaults are
assumed, and the report says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

Version = tuple[int, int, int]
NEWEST: Version = (3, 32, 0)  # the release whose defaults are assumed when a bundle says nothing
L3_DEVICES = ("tunl0", "wireguard.cali", "wg-v6.cali")
REACH_TEXT = {
    frozenset(): "none",
    frozenset({"l2"}): "from host endpoints' L2 devices (eth0, VXLAN)",
    frozenset({"l2", "wep"}): "from host endpoints' L2 devices and local workloads",
    frozenset({"l2", "l3"}): "from host endpoints' L2 and L3 devices (IPIP, WireGuard)",
    frozenset({"l2", "l3", "wep"}): "from host endpoints' L2 and L3 devices and local workloads",
}
NEW_POLICY_COMMENT = re.compile(r"^(?!Policy |Profile )[A-Z][A-Za-z]*Policy \S+ (?:ingress|egress)$")
OLD_POLICY_COMMENT = re.compile(r"^Policy \S+ (?:ingress|egress)$")


def parse_version(text: str) -> Version | None:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def show(v: Version) -> str:
    return f"v{v[0]}.{v[1]}.{v[2]}"


@dataclass
class VersionReading:
    """A node's Calico release: exactly (lo == hi), a range, or unknown (both None)."""

    lo: Version | None = None
    hi: Version | None = None
    source: str = ""
    stated: bool = False  # read from a statement of the release (else a range of minor releases)

    @property
    def text(self) -> str:
        def edge(v: Version) -> str:
            return show(v) if self.stated else f"v{v[0]}.{v[1]}"

        if self.lo and self.hi:
            return edge(self.lo) if self.lo == self.hi else f"{edge(self.lo)}..{edge(self.hi)}"
        if self.lo:
            return f">={edge(self.lo)}"
        if self.hi:
            return f"<={edge(self.hi)}"
        return ""


def calico_versions(nodes: list[str], evidence: pd.DataFrame, rules: pd.DataFrame, artifacts: pd.DataFrame) -> dict:
    """node -> VersionReading: the node's own statements, else the cluster's, else a range from the
    node's rules and BPF dumps."""
    said = evidence[evidence["kind"].astype(str) == "calico_version"] if len(evidence) else evidence
    out = {}
    for node in nodes:
        mine = said[said["node"].astype(str) == node] if len(said) else said
        if not len(mine) and len(said):
            mine = said[said["node"].astype(str) == ""]
        if len(mine):
            versions = sorted({v for v in map(parse_version, mine["value"].astype(str)) if v})
            first = mine.iloc[0]
            where = f"{first['said_by']} in {first['artifact']}:{int(first['line'])}"
            if len(versions) > 1:
                where = f"several releases stated ({', '.join(map(show, versions))}); first: {where}"
            out[node] = VersionReading(versions[0], versions[-1], where, stated=True)
            continue
        out[node] = _dialect_range(node, rules, artifacts)
    return out


def _dialect_range(node: str, rules: pd.DataFrame, artifacts: pd.DataFrame) -> VersionReading:
    """The releases a node's rule comments and BPF dump forms allow."""
    lo: Version | None = None
    hi: Version | None = None
    why: list[str] = []
    comments: set[str] = set()
    if len(rules):
        mine = rules[(rules["node"].astype(str) == node) & (rules["comment"].astype(str) != "")]
        for c in mine["comment"].astype(str).unique():
            comments.update(p.strip() for p in c.split("; "))

    def at_least(v: Version, because: str) -> None:
        nonlocal lo
        if lo is None or v > lo:
            lo = v
            why.append(because)

    def at_most(v: Version, because: str) -> None:
        nonlocal hi
        if hi is None or v < hi:
            hi = v
            why.append(because)

    if any(NEW_POLICY_COMMENT.match(c) for c in comments):
        at_least((3, 32, 0), "policy chains commented `<Kind> <ns>/<name> ingress|egress` (v3.32+)")
    if any(c.startswith("End of tier ") for c in comments):
        at_least((3, 30, 0), "`End of tier <tier>. Drop if no policies passed packet` (v3.30+)")
    if any(c.startswith("Start of tier ") for c in comments):
        at_least((3, 29, 0), "`Start of tier <tier>` (v3.29+)")
    if any(OLD_POLICY_COMMENT.match(c) for c in comments):
        at_most((3, 31, 99), "policy chains commented `Policy <name> ingress|egress` (up to v3.31)")
    if "Drop if no policies passed packet" in comments:
        at_most((3, 29, 99), "`Drop if no policies passed packet` without a tier (up to v3.29)")
    if "Start of policies" in comments:
        at_most((3, 27, 99), "`Start of policies` (up to v3.27)")
    if len(artifacts):
        names = [PurePosixPath(str(p)).name for p in artifacts.loc[artifacts["node"].astype(str) == node, "path"]]
        if any(n.startswith("bpf-") and n.endswith(".json") for n in names):
            at_least((3, 31, 0), "calico-bpf `--json` dumps (v3.31+)")
    if lo and hi and lo > hi:  # contradictory hints (an upgrade half done?): say so, read none of them
        return VersionReading(None, None, "rules and dumps disagree: " + "; ".join(why))
    return VersionReading(lo, hi, "read from " + "; ".join(why) if why else "")


def felix_settings(nodes: list[str], evidence: pd.DataFrame) -> dict[str, dict[str, tuple[str, str]]]:
    """node -> {setting: (value, where)}; a node's own statement wins over the cluster's: a per-node
    FelixConfiguration (`node.<name>`) over `default`, and the node's FELIX_* environment over both,
    as Felix itself ranks them."""
    said = evidence[evidence["kind"].astype(str) == "felix_setting"] if len(evidence) else evidence
    out: dict[str, dict[str, tuple[str, str]]] = {n: {} for n in nodes}
    short = {n.split(".")[0]: n for n in nodes}
    if len(said):  # a per-node FelixConfiguration speaks for its node wherever the file was found
        scope = said["scope"].astype(str).map(lambda s: s if s in out else short.get(s.split(".")[0], s))
        said = said.assign(node=scope.where(scope != "", said["node"].astype(str)))
        # within a node's own: the datastore's node.<name> first, its environment (pod description) after
        said = said.sort_values("scope", key=lambda s: s.astype(str) == "", kind="stable")
    for scope_node in ("", *nodes):  # cluster-wide first, then each node's own over it
        rows = said[said["node"].astype(str) == scope_node] if len(said) else said
        for r in rows.itertuples(index=False):
            for node in nodes if scope_node == "" else [scope_node]:
                out[node][str(r.said_by)] = (str(r.value), f"{r.said_by}: {r.value} in {r.artifact}:{int(r.line)}")
    return out


def peer_redirect_reach(version: VersionReading, setting: tuple[str, str] | None) -> tuple[frozenset[str], str]:
    """(arrivals peer redirect takes past the destination veth's tap, and what that follows).
    Arrivals: "l2" (eth0, vxlan.calico), "l3" (tunl0, WireGuard), "wep" (a pod on the same node)."""
    v = version.lo
    basis = f"Calico {version.text}" if v else ""
    if v is None and version.hi is not None:  # only an upper bound: the oldest release it allows
        v, basis = (3, 28, 0), f"Calico {version.text}, read as its oldest release with eBPF (v3.28)"
    if v is None:
        v, basis = NEWEST, f"assumed: the bundle states no Calico release, {show(NEWEST)} defaults read"
    if v < (3, 29, 0):
        return frozenset(), basis + ", no peer redirect before v3.29"
    wep = {"wep"} if v >= (3, 31, 0) else set()
    value = (setting or ("", ""))[0].lower()
    if value == "disabled":
        return frozenset(), setting[1] if setting else basis
    if value == "l2only":
        return frozenset({"l2", *wep}), f"{setting[1]}; {basis}" if setting else basis
    if value == "enabled" or v >= (3, 32, 0):
        return frozenset({"l2", "l3", *wep}), f"{setting[1]}; {basis}" if setting else basis + ", default Enabled"
    return frozenset({"l2", *wep}), basis + ", default L2Only"


def kube_proxy_modes(
    nodes: list[str],
    evidence: pd.DataFrame,
    rules: pd.DataFrame,
    interfaces: pd.DataFrame,
    dataplane_modes: dict[str, str],
    bpf_nat_nodes: set[str],
    ipvs_nodes: set[str] | None = None,
) -> dict[str, tuple[str, str]]:
    """node -> (mode, evidence). What the node's own state shows first (kube-proxy's tables, its
    IPVS dummy device, Calico's BPF NAT in place of both), then what configuration or logs say."""
    said = evidence[evidence["kind"].astype(str) == "kube_proxy_mode"] if len(evidence) else evidence
    out = {}
    for node in nodes:
        mine = rules[rules["node"].astype(str) == node] if len(rules) else rules
        tables = set(mine["table"].astype(str)) if len(mine) else set()
        chains = set(mine["chain"].astype(str)) if len(mine) else set()
        targets = set(mine["target"].astype(str)) if len(mine) else set()
        matches = " ".join(mine["match"].astype(str).unique()) if len(mine) else ""
        devices = set(interfaces.loc[interfaces["node"].astype(str) == node, "name"].astype(str))
        if "kube-proxy" in tables:
            mode, why = "nftables", "nft table kube-proxy"
        elif node in (ipvs_nodes or set()) or "kube-ipvs0" in devices or "KUBE-CLUSTER-IP" in matches:
            mode = "ipvs"
            why = "; ".join(
                w
                for w, present in (
                    ("ipvsadm virtual services or the KUBE-CLUSTER-IP ipset", node in (ipvs_nodes or set())),
                    ("kube-ipvs0 device", "kube-ipvs0" in devices),
                    ("KUBE-CLUSTER-IP ipset in rules", "KUBE-CLUSTER-IP" in matches),
                )
                if present
            )
        elif any(t.startswith("KUBE-SVC-") for t in targets) or any(c.startswith("KUBE-SVC-") for c in chains):
            mode, why = "iptables", "KUBE-SVC-* chains"
        elif dataplane_modes.get(node) == "ebpf" and node in bpf_nat_nodes:
            mode, why = "replaced", "no kube-proxy chains; Calico's BPF NAT holds the services"
        elif len(mine):
            mode, why = "none", "rules dumped, no kube-proxy chains in them"
        else:
            mode, why = "unknown", ""
        stated = said[said["node"].astype(str).isin([node, ""])] if len(said) else said
        if len(stated):
            first = stated.iloc[0]
            claim = f"{first['said_by']} says {first['value']} ({first['artifact']}:{int(first['line'])})"
            if mode in ("unknown", "none"):
                mode, why = str(first["value"]), claim
            elif str(first["value"]) != mode:
                why += f"; but {claim}"
            else:
                why += f"; {claim}"
        out[node] = (mode, why)
    return out


def arrival(dest_node: str, path_fwd: str, client_route_dev: str) -> str:
    """How a flow's packets reached the destination pod's node, as peer redirect distinguishes them:
    "wep" (from a pod on the node), "l3" (tunl0, WireGuard) or "l2" (eth0, vxlan.calico). Read from
    the points the flow crossed on that node, else from where it was first seen and the node's route
    back to the client (``client_route_dev``)."""
    points = [p.partition(":") for p in path_fwd.split(" > ") if p]
    here = [iface for node, _, iface in points if node == dest_node]
    if any(i in L3_DEVICES for i in here[:-1]):
        return "l3"
    if points and points[0][0] == dest_node and points[0][2].startswith("cali") and len(here) > 1:
        return "wep"
    if any(i for i in here[:-1]):
        return "l2"
    if client_route_dev in L3_DEVICES:
        return "l3"
    return "wep" if client_route_dev.startswith("cali") else "l2"
