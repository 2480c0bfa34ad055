"""Which file is what, and from which node: bundle layouts and content sniffing.

Layouts (see docs/bundle-layout.md): `calicoctl node diags` (root `diagnostics/`, flat files),
`calicoctl cluster diags` (`nodes/<node>/…`), our collector's `nodes/<node>/pcaps/<iface>.pcap[ng]`,
and anything else, recognised by content with the node taken from the nearest folder name.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from .parsers import (
    bpftool,
    conntrack,
    crictl,
    flowlogs,
    iproute,
    ipset,
    iptables,
    ipvs,
    kubectl,
    nft,
    platform,
    resources,
    sysctl,
    traces,
)
from .parsers.pcap import sniff_capture

# exact file names (lower case) from calicoctl node/cluster diags and our collector
BY_NAME = {
    "ipv4_tables": "iptables",
    "ipv6_tables": "ip6tables",
    "iptables-legacy-save.txt": "iptables",
    "iptables-nft-save.txt": "iptables",
    "iptables-save.txt": "iptables",
    "ip6tables-save.txt": "ip6tables",
    "ip6tables-legacy-save.txt": "ip6tables",
    "ip6tables-nft-save.txt": "ip6tables",
    "nft_ruleset": "nft",
    "nft-ruleset.txt": "nft",
    "conntrack-list.txt": "conntrack",
    "conntrack-list-v6.txt": "conntrack",
    "conntrack.txt": "conntrack",
    "nf_conntrack": "conntrack",
    "conntrack-events.txt": "conntrack",
    "metadata.json": "metadata",
    "sysctls.txt": "sysctl",
    "ip-link.txt": "ip_link",
    "ip-addr.txt": "ip_link",
    "ipv4_addr": "ip_link",
    "ipv6_addr": "ip_link",
    "ip-route.txt": "ip_route",
    "ip-route-v6.txt": "ip_route",
    "ipsets": "ipset",
    "ipset-list.txt": "ipset",
    "ipset_container": "ipset",
    "ipv4_route": "ip_route",
    "ipv6_route": "ip_route",
}
BPF_PREFIX = {
    "bpf-conntrack": "bpf_conntrack",
    "bpf-nat": "bpf_nat",
    "bpf-routes": "bpf_routes",
    "bpf-counters": "bpf_counters",
    "bpf-ifstate": "bpf_ifstate",
    "bpf-policy": "bpf_policy",
}
# known but not (yet) turned into tables: listed in artifacts as such, never silently
KNOWN_OTHER = {
    "date",
    "hostname",
    "netstat",
    "ss",
    "tc-qdisc.txt",
    "bpf-ipsets.txt",  # calico-node -bpf ipsets dump (cluster diags)
    "version.yaml",  # kubectl version -o yaml (cluster diags)
    "ip-rule.txt",
    "ip-neigh.txt",
    "bpf-prog.txt",
    "bpf-maps.txt",
    "ground_truth.json",
}
PLATFORM_STEMS = {"pods", "daemonsets", "configmaps", "calico-system", "tigera-operator"}
PLATFORM_PREFIXES = (
    "clusterinformations",
    "felixconfigurations",
    "installations",
    "calico-node-",
    "kube-proxy-",
)
CONTAINER_DIRS = {"pcaps", "bpf-maps", "logs", "diagnostics", "captures", "state", "host", "tmp"}
TUNNEL_IFACES = {
    "tunl0",
    "vxlan.calico",
    "vxlan-v6.calico",
    "wireguard.cali",
    "wg-v6.cali",
    "flannel.1",
    "egress.calico",
}
UPLINK = re.compile(r"^(eth|ens|enp|eno|bond|wlan|en\w)\S*$")


SOS_HOSTNAME_FILES = ("sos_commands/host/hostname", "sos_commands/general/hostname", "etc/hostname")
SOS_FOLDER = re.compile(r"^sosreport-(.+?)(?:-\d{4}-\d{2}-\d{2}-\w+|-\d{8,})?$")


def sos_root(rel: str) -> str:
    """The sosreport a file belongs to: the folder holding its `sos_commands/` ("" if none)."""
    parts = PurePosixPath(rel).parts
    for i, part in enumerate(parts[:-1]):
        if part == "sos_commands" or (part.startswith("sosreport-") and i + 1 < len(parts) - 1):
            return "/".join(parts[:i]) if part == "sos_commands" else "/".join(parts[: i + 1])
    return ""


def sos_hostname(root: str) -> str:
    """A sosreport's node from its folder name (`sosreport-<host>[-<label>]-<date>-<random>`), when the
    report has no hostname file to say it."""
    m = SOS_FOLDER.match(PurePosixPath(root).name) if root else None
    return m.group(1) if m else ""


# `kubectl debug node/<node>` names its pod node-debugger-<node>-<5 random characters> (kubectl's
# debug.go); files copied out of it keep the host's paths under /host
NODE_DEBUGGER = re.compile(r"^node-debugger-(.+)-[a-z0-9]{5}$")
# Calico Enterprise/Cloud PacketCapture: "{workload endpoint name}_{host network interface}.pcap", a
# rotated file with an index after it (tigera/api PacketCaptureFile); the host-side interface is
# Calico's: a prefix and 11 hex digits
PACKET_CAPTURE_FILE = re.compile(r"^(?P<endpoint>.+)_(?P<iface>[a-z]{2,5}[0-9a-f]{11})(?:[-_.]\d+)?\.pcap(?:\.\d+)?$")
WEP_SEPARATOR = re.compile(r"(?<!-)-(?!-)")


def packet_capture_file(rel: str) -> tuple[str, str] | None:
    """(workload endpoint, interface) of a PacketCapture file, by its name."""
    m = PACKET_CAPTURE_FILE.match(PurePosixPath(rel).name)
    return (m.group("endpoint"), m.group("iface")) if m else None


def workload_endpoint_node(name: str) -> str:
    """The node in a workload endpoint's name, `<node>-<orchestrator>-<workload>-<endpoint>` with each
    part's own dashes doubled (libcalico-go names: node-a, k8s, web-1, eth0 -> node--a-k8s-web--1-eth0)."""
    parts = WEP_SEPARATOR.split(name)
    if len(parts) >= 4 and parts[1] in ("k8s", "cni", "libnetwork", "openstack"):
        return parts[0].replace("--", "-")
    return ""


def node_of(rel: str, diag_hostname: str = "", skip_root: bool = False, sos_hosts: dict | None = None) -> str:
    """Node of a file: `nodes/<node>/…`, the hostname of a node-diags bundle or of the sosreport it is
    in (``sos_hosts``: sosreport folder -> hostname), else the nearest folder.

    ``skip_root`` drops an archive's single top-level folder (`calico-diagnostics-…/`), which names
    the bundle rather than a node.
    """
    parts = PurePosixPath(rel).parts
    for i, part in enumerate(parts[:-1]):
        if part == "nodes" and i + 1 < len(parts) - 1:
            return parts[i + 1]
    root = sos_root(rel)
    if root or (parts and parts[0] == "sos_commands"):
        return (sos_hosts or {}).get(root) or sos_hostname(root) or diag_hostname
    if "diagnostics" in parts[:-1]:
        return diag_hostname
    if "cluster" in parts[:-1]:  # cluster-wide listings (cluster diags' cluster/…)
        return ""
    captured = packet_capture_file(rel)
    if captured and workload_endpoint_node(captured[0]):
        return workload_endpoint_node(captured[0])
    for part in parts[:-1]:
        debugger = NODE_DEBUGGER.match(part)
        if debugger:
            return debugger.group(1)
    folders = parts[1:-1] if skip_root else parts[:-1]
    for part in reversed(folders):
        if part not in CONTAINER_DIRS and not part.startswith(("calico-diagnostics-", "diags-")):
            return part
    return diag_hostname or ""


def classify(rel: str, head: bytes, lines: list[str] | None) -> str:
    """Artifact kind from name and content. ``lines`` are the first lines if the file is text."""
    name = PurePosixPath(rel).name.lower()
    if sniff_capture(head):
        return "pcap"
    parts = PurePosixPath(rel).parts
    if len(parts) >= 2 and parts[-2] == "bpf-maps":
        return "bpftool"
    if name in BY_NAME:
        return BY_NAME[name]
    if name.startswith("bpf-policy"):  # one dump per interface: bpf-policy-<iface>.txt
        return "bpf_policy"
    for prefix, kind in BPF_PREFIX.items():
        if name.startswith(prefix) and not name.startswith(prefix + "-"):
            return kind
    if name in KNOWN_OTHER:
        return "other"
    if lines is None:
        return "unrecognised"
    kind = sniff_text(name, lines)
    if kind == "unrecognised" and (name.endswith(".log") or kubectl.looks_like_other_listing(lines)):
        return "other"  # logs (cluster diags' CNI logs) and kubectl listings of what no table reads
    return kind


def sniff_text(name: str, lines: list[str]) -> str:
    if iptables.looks_like_iptables_save(lines):
        headed = [x for x in lines[:400] if x.startswith("# Generated by ")]
        if headed:
            return "ip6tables" if headed[0].startswith("# Generated by ip6tables") else "iptables"
        # headerless forms: sosreport and runbooks name the command (`ip6tables_-t_nat_-nvL`), else the content tells
        return "ip6tables" if "ip6tables" in name or iptables.content_family(lines) == "ipv6" else "iptables"
    if nft.looks_like_nft(lines):
        return "nft"
    if ipvs.looks_like_ipvsadm(lines):
        return "ipvs"
    if ipset.looks_like_ipset(lines):
        return "ipset"
    if conntrack.looks_like_conntrack(lines):
        return "conntrack"
    if bpftool.looks_like_bpftool(lines):
        return "bpftool"
    head = "\n".join(lines[:50])
    if "ConntrackKey{" in head or re.search(r"^(TCP|UDP|ICMP6?|Proto-\d+) \S+ -> \S+", head, re.M):
        return "bpf_conntrack"
    if re.search(r"^\S+ port \d+ proto \d+ id \d+ count", head, re.M):
        return "bpf_nat"
    if re.search(r"\| CATEGORY \|", head):
        return "bpf_counters"
    if re.search(r"^\s*\d+ : \{flags: ", head, re.M):  # ifstate dump: `%5d : <Value.String()>`
        return "bpf_ifstate"
    if re.search(r"^IfaceName: \S+\s*\nHook: \w+", head, re.M):  # policy dump <iface> <hook>
        return "bpf_policy"
    # `calico-node -bpf routes dump`: "%15v: %s", the CIDR right-aligned, then the route's words
    if re.search(r"^\s*[0-9a-fA-F.:]+/\d+: (?:local|remote) (?:host|workload)\b", head, re.M):
        return "bpf_routes"
    if kubectl.looks_like_listing(lines):
        return "kube_listing"
    if iproute.looks_like_ip_link(lines):
        return "ip_link"
    if iproute.looks_like_ip_route(lines):
        return "ip_route"
    if traces.looks_like_traces(lines):
        return "traces"
    if sysctl.looks_like_sysctl(lines):
        return "sysctl"
    if crictl.looks_like_crictl_inspect(lines):
        return "crictl_inspect"
    if flowlogs.looks_like_flow_logs(lines):
        return "flow_logs"
    if resources.looks_like_resources(lines):
        return "kube_resources"
    if platform.looks_like_platform(lines) or _platform_name(name):
        return "platform"
    return "unrecognised"


def _platform_name(name: str) -> bool:
    """Cluster resources and pod dumps that state versions and modes further in than a sniff reads:
    `calicoctl cluster diags`' pods/daemonsets/configmaps YAML, ClusterInformation, FelixConfiguration,
    the operator's Installation, calico-node and kube-proxy pod descriptions and logs."""
    stem, dot, ext = name.partition(".")
    if not dot or ext.rsplit(".", 1)[-1] not in ("yaml", "yml", "json", "txt", "log"):
        return False
    return stem in PLATFORM_STEMS or name.startswith(PLATFORM_PREFIXES)


def interface_role(name: str, uplinks: set[str] | None = None) -> str:
    if name in ("any", ""):
        return "any" if name == "any" else "other"
    if name.startswith("cali"):
        return "workload"
    if name in TUNNEL_IFACES:
        return "tunnel"
    if uplinks is not None and name in uplinks:
        return "uplink"
    if UPLINK.match(name):
        return "uplink"
    return "other"


def form_of(kind: str, head: bytes, lines: list[str] | None, name: str = "") -> str:
    """The form a recognised file came in, as the person who saved it would name the command: which of
    a kind's several forms (iptables-save or `iptables -S` or `-L`; nft text or `-j`; text or JSON …)."""
    text = "\n".join(lines[:400]) if lines else ""
    first = next((x.strip() for x in (lines or []) if x.strip() and not x.startswith("#")), "")
    if kind == "pcap":
        container = "pcapng" if head[:4] == b"\x0a\x0d\x0d\x0a" else "pcap"
        return f"{container} (Calico PacketCapture)" if packet_capture_file(name) else container
    if kind in ("iptables", "ip6tables"):
        tool = kind  # ip6tables prints every form as iptables does
        if lines and iptables.looks_like_iptables_listing(lines):
            return f"{tool} -L" + (" -v" if re.search(r"^\s*(?:num\s+)?pkts\s+bytes", text, re.M) else "")
        if re.search(r"^\*(filter|nat|mangle|raw|security)\s*$", text, re.M):
            return f"{tool}-save -c" if re.search(r"^\[\d+:\d+\] -A ", text, re.M) else f"{tool}-save"
        return f"{tool} -S" if re.search(r"^-[PN] ", text, re.M) else f"{tool}-save lines (no headers)"
    if kind == "nft":
        return "nft -j list ruleset" if lines and nft.looks_like_nft_json(lines) else "nft list ruleset"
    if kind == "conntrack":
        if first.startswith("<?xml") or first.startswith("<conntrack"):
            return "conntrack -o xml"
        if first.startswith(("[NEW]", "[UPDATE]", "[DESTROY]")) or re.search(r"^\s*\[\d+\.\d+\]\s+\[", text, re.M):
            return "conntrack -E"
        if PurePosixPath(name).name == "nf_conntrack":
            return "/proc/net/nf_conntrack"
        return "conntrack -L -o extended" if re.match(r"^ipv[46]\s+\d+\s", first) else "conntrack -L"
    if kind.startswith("bpf_") or kind == "bpftool":
        json_form = first.startswith(("[", "{")) or bool(re.search(r"^\s*[\[{]", text[:200], re.M))
        if kind == "bpftool":
            return "bpftool map dump (JSON)" if json_form else "bpftool map dump"
        return "calico-bpf --json" if json_form else "calico-bpf text"
    if kind == "ip_link":
        return "ip -j link/addr" if first.startswith("[") else "ip link/addr"
    if kind == "kube_listing" and lines:
        return kubectl.listing_form(lines)
    if kind == "kube_resources":
        return "kubectl -o json" if first.startswith(("{", "[")) else "kubectl -o yaml"
    if kind == "flow_logs":
        return "Goldmane JSON" if re.search(r'"[Kk]ey"\s*:', text) else "Calico Enterprise JSON"
    if kind == "traces":
        if "bpf_trace_printk" in text:
            return "Calico BPF debug log"
        return "nft monitor trace" if "trace id " in text else "iptables TRACE (kernel log)"
    if kind == "ipvs":
        if re.search(r"^-A ", text, re.M):
            return "ipvsadm -S"
        return "ipvsadm -Ln --stats" if "InPkts" in text else "ipvsadm -Ln --rate" if "CPS" in text else "ipvsadm -Ln"
    return {
        "ip_route": "ip route",
        "ipset": "ipset list",
        "sysctl": "sysctl -a",
        "crictl_inspect": "crictl inspectp",
        "platform": "version and setting statements",
        "metadata": "calforensics collect metadata",
    }.get(kind, "")
