"""A two-node Calico-shaped cluster in network namespaces, run for real, with ground truth.

Built the way Calico builds one: pods with host veths named `cali` + 11 hex digits of
sha1("namespace.pod"), /32 pod addresses, the 169.254.1.1 gateway answered by proxy ARP, a VXLAN
overlay `vxlan.calico` (VNI 4096, port 4789, MTU 1450) with static neighbour/fdb entries,
felix-shaped iptables (nf_tables backend) and kube-proxy-shaped service chains. Scenarios with
known outcomes run while `calforensics collect` captures on each node; the result is a bundle plus
`ground_truth.json`. Traffic stays between the lab's own namespaces. Needs root, iproute2,
iptables, conntrack and tcpdump. Cleans up on any exit; takes about 15 seconds.

    sudo python sample_data/lab.py OUT_DIR      # writes OUT_DIR/lab-vxlan.tgz and ground truth
    sudo python sample_data/lab.py OUT_DIR --tunnel-mtu 1440 --name lab-wg-base
    sudo python sample_data/lab.py OUT_DIR --scenarios edge --name lab-edge   # fragments, INVALID drops
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from calforensics.collect.collector import CollectOptions, Collector, pack

VNI, VXLAN_PORT, VXLAN_MTU, UNDERLAY_MTU = 4096, 4789, 1450, 1500
POD_CIDR = "192.168.0.0/16"
CLUSTER_IP, SERVICE_PORT, SERVICE = "10.96.0.50", 80, "default/web:http"
GONE_IP, GONE_SERVICE = "10.96.0.70", "default/gone:http"  # a service whose pods are all gone: no endpoints
REQUIRED_TOOLS = ("ip", "bridge", "iptables-restore", "iptables-save", "conntrack", "tcpdump", "sysctl")


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    block: str
    tunnel_ip: str
    vxlan_mac: str


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str
    ip: str
    mtu: int = VXLAN_MTU

    @property
    def iface(self) -> str:
        return calico_veth(self.namespace, self.name)


NODES = [
    Node("node-a", "10.0.0.11", "192.168.10.0/26", "192.168.10.0", "66:0a:0a:00:00:0b"),
    Node("node-b", "10.0.0.12", "192.168.20.0/26", "192.168.20.0", "66:0a:0a:00:00:0c"),
]
PODS = [
    Pod("default", "client", "node-a", "192.168.10.5"),
    Pod("default", "mtu-bad", "node-a", "192.168.10.9", mtu=UNDERLAY_MTU),  # ignores the VXLAN overhead
    Pod("default", "web", "node-b", "192.168.20.7"),
    Pod("secure", "db", "node-b", "192.168.20.9"),
]
DB_POLICY = "secure/default.db-allow-app"  # allows only 192.168.20.99 (no such pod): the client is denied
# how felix of each release writes the db policy's chains (formats reference 2.2, 2.5; felix/rules/policy.go):
# (tier start comment, end-of-tier drop comment, policy ID hashed into the chain name, the policy's name
# in its first rule's comment, that comment's kind word); kube-proxy's SVC -> SEP comment follows suit
# (`<spn> -> <endpoint>` today, `<spn>` alone in older releases)
DIALECTS = {
    "v3.28": (None, "Drop if no policies passed packet", DB_POLICY, DB_POLICY, "Policy"),
    "v3.30": (
        "Start of tier default",
        "End of tier default. Drop if no policies passed packet",
        DB_POLICY,
        DB_POLICY,
        "Policy",
    ),
    "v3.32": (
        "Start of tier default",
        "End of tier default. Drop if no policies passed packet",
        "np/secure/db-allow-app",
        "secure/db-allow-app",
        "NetworkPolicy",
    ),
}
DIALECT = "v3.30"  # the samples' (run(dialect=…) writes another)
DB_ALLOWED_SOURCE = "192.168.20.99/32"
POLICY = "closed"  # `open`: db's policy admits the client pod too (the "before" of the diff pair)
# the dual-stack run (--scenarios dual): an IPv6 underlay, `vxlan-v6.calico` (70 bytes a packet), pods
# with an address of each family, ip6tables shaped like felix's and kube-proxy's
VXLAN6_MTU = 1430  # 1500 - 70: Calico's VXLAN-over-IPv6 MTU, which the dual-stack pods take
POD_CIDR6, CLUSTER_IP6 = "fd10::/48", "fd00:96::50"
NODE6 = {
    "node-a": ("fd00::11", "fd10::a00/122", "fd10::a00", "66:0a:0a:00:01:0b"),
    "node-b": ("fd00::12", "fd10::1400/122", "fd10::1400", "66:0a:0a:00:01:0c"),
}  # underlay, block, tunnel, MAC
POD6 = {"client": "fd10::a05", "mtu-bad": "fd10::a09", "web": "fd10::1407", "db": "fd10::1409"}
DB_ALLOWED_SOURCE6 = "fd10::14ff/128"
HOST_VETH_LINK_LOCAL = "fe80::ecee:eeff:feee:eeee"  # the host side's (MAC ee:ee:ee:ee:ee:ee), the pods' gateway


def calico_veth(namespace: str, pod: str) -> str:
    """VethNameForWorkload: `cali` + first 11 hex digits of sha1("<namespace>.<pod>")."""
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def length_limited(prefix: str, suffix: str, max_len: int = 28) -> str:
    """felix's GetLengthLimitedID: hash the suffix when prefix+suffix would be too long."""
    if len(prefix + suffix) <= max_len:
        return prefix + suffix
    digest = base64.urlsafe_b64encode(hashlib.sha256(suffix.encode()).digest()).decode()
    return prefix + "_" + digest[: max_len - 1 - len(prefix)]


def kube_hash(text: str) -> str:
    """kube-proxy's chain suffix: first 16 chars of base32(sha256(text))."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def rule_hash(chain: str, index: int) -> str:
    return base64.urlsafe_b64encode(hashlib.sha224(f"{chain}/{index}".encode()).digest()).decode()[:16]


class Lab:
    def __init__(self, prefix: str | None = None, ipv6: bool = False, rules: str = "iptables") -> None:
        self.prefix = prefix or f"cflab{os.getpid() % 100000}"
        self.ipv6 = ipv6  # dual stack: no duplicate address detection, so addresses work at once
        self.rules = rules  # iptables (felix's and kube-proxy's iptables modes) or nft (their nftables modes)
        self.netns: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    # ---- plumbing ----------------------------------------------------------------------------
    @staticmethod
    def sh(*argv: str, check: bool = True, input_text: str | None = None) -> str:
        r = subprocess.run(argv, capture_output=True, text=True, input=input_text, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def in_ns(self, ns: str, *argv: str, **kw) -> str:
        return self.sh("ip", "netns", "exec", self.ns(ns), *argv, **kw)

    def add_netns(self, name: str) -> None:
        self.sh("ip", "netns", "add", self.ns(name))
        self.netns.append(self.ns(name))
        self.in_ns(name, "ip", "link", "set", "lo", "up")
        if self.ipv6:
            self.in_ns(name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for name in reversed(self.netns):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.netns.clear()

    # ---- topology ----------------------------------------------------------------------------
    def build(self) -> None:
        for node in NODES:
            self.add_netns(node.name)
            for key, value in (
                ("net.ipv4.ip_forward", "1"),
                ("net.netfilter.nf_conntrack_acct", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ):
                self.in_ns(node.name, "sysctl", "-qw", f"{key}={value}")
        a, b = NODES
        self.sh(
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            self.ns(a.name),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.ns(b.name),
        )
        for node in NODES:
            self.in_ns(node.name, "ip", "link", "set", "eth0", "mtu", str(UNDERLAY_MTU), "up")
            self.in_ns(node.name, "ip", "addr", "add", f"{node.ip}/24", "dev", "eth0")
            # a default route (needed for proxy ARP of 169.254.1.1); nothing outside the lab answers on eth0
            self.in_ns(node.name, "ip", "route", "add", "default", "dev", "eth0")
            self.in_ns(
                node.name,
                "ip",
                "link",
                "add",
                "vxlan.calico",
                "address",
                node.vxlan_mac,
                "type",
                "vxlan",
                "id",
                str(VNI),
                "dstport",
                str(VXLAN_PORT),
                "local",
                node.ip,
                "dev",
                "eth0",
                "nolearning",
            )
            self.in_ns(node.name, "ip", "link", "set", "vxlan.calico", "mtu", str(VXLAN_MTU), "up")
            self.in_ns(node.name, "ip", "addr", "add", f"{node.tunnel_ip}/32", "dev", "vxlan.calico")
            self.in_ns(node.name, "ip", "route", "add", "blackhole", node.block, "proto", "80")
        for node in NODES:
            for peer in NODES:
                if peer is node:
                    continue
                self.in_ns(
                    node.name,
                    "ip",
                    "neigh",
                    "add",
                    peer.tunnel_ip,
                    "lladdr",
                    peer.vxlan_mac,
                    "dev",
                    "vxlan.calico",
                    "nud",
                    "permanent",
                )
                self.in_ns(node.name, "bridge", "fdb", "add", peer.vxlan_mac, "dev", "vxlan.calico", "dst", peer.ip)
                self.in_ns(
                    node.name,
                    "ip",
                    "route",
                    "add",
                    peer.block,
                    "via",
                    peer.tunnel_ip,
                    "dev",
                    "vxlan.calico",
                    "onlink",
                    "proto",
                    "80",
                )
        for pod in PODS:
            self.add_pod(pod)
        for node in NODES:
            if self.rules == "nft":
                self.in_ns(node.name, "nft", "-f", "-", input_text=nft_rules(node))
            else:
                self.in_ns(node.name, "iptables-restore", input_text=felix_rules(node))

    def add_pod(self, pod: Pod) -> None:
        pns = f"pod-{pod.name}"
        self.add_netns(pns)
        self.sh(
            "ip",
            "link",
            "add",
            pod.iface,
            "netns",
            self.ns(pod.node),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.ns(pns),
        )
        self.in_ns(
            pod.node, "ip", "link", "set", pod.iface, "address", "ee:ee:ee:ee:ee:ee", "mtu", str(UNDERLAY_MTU), "up"
        )
        self.in_ns(
            pod.node,
            "sysctl",
            "-qw",
            f"net.ipv4.conf.{pod.iface}.proxy_arp=1",
            f"net.ipv4.neigh.{pod.iface}.proxy_delay=0",
            f"net.ipv4.conf.{pod.iface}.rp_filter=0",
        )
        self.in_ns(pod.node, "ip", "route", "add", f"{pod.ip}/32", "dev", pod.iface, "scope", "link")
        self.in_ns(pns, "ip", "link", "set", "eth0", "mtu", str(pod.mtu), "up")
        self.in_ns(pns, "ip", "addr", "add", f"{pod.ip}/32", "dev", "eth0")
        self.in_ns(pns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        self.in_ns(pns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")

    def build_ipv6(self) -> None:
        """Dual stack on top of build(): the nodes' IPv6 underlay and `vxlan-v6.calico`, an IPv6 address
        for every pod (its gateway the host veth's link-local address, as Calico sets it), felix- and
        kube-proxy-shaped ip6tables. Duplicate address detection is off so addresses work at once."""
        for node in NODES:
            ip6, block, tunnel, mac = NODE6[node.name]
            self.in_ns(node.name, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
            self.in_ns(node.name, "ip", "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
            self.in_ns(
                node.name,
                "ip",
                "link",
                "add",
                "vxlan-v6.calico",
                "address",
                mac,
                "type",
                "vxlan",
                "id",
                str(VNI),
                "dstport",
                str(VXLAN_PORT),
                "local",
                ip6,
                "dev",
                "eth0",
                "nolearning",
            )
            self.in_ns(node.name, "ip", "link", "set", "vxlan-v6.calico", "mtu", str(VXLAN6_MTU), "up")
            self.in_ns(node.name, "ip", "-6", "addr", "add", f"{tunnel}/128", "dev", "vxlan-v6.calico", "nodad")
            self.in_ns(node.name, "ip", "-6", "route", "add", "blackhole", block, "proto", "80")
        for node in NODES:
            for peer in NODES:
                if peer is node:
                    continue
                pip6, pblock, ptunnel, pmac = NODE6[peer.name]
                self.in_ns(
                    node.name,
                    "ip",
                    "-6",
                    "neigh",
                    "add",
                    ptunnel,
                    "lladdr",
                    pmac,
                    "dev",
                    "vxlan-v6.calico",
                    "nud",
                    "permanent",
                )
                self.in_ns(node.name, "bridge", "fdb", "add", pmac, "dev", "vxlan-v6.calico", "dst", pip6)
                self.in_ns(
                    node.name,
                    "ip",
                    "-6",
                    "route",
                    "add",
                    pblock,
                    "via",
                    ptunnel,
                    "dev",
                    "vxlan-v6.calico",
                    "onlink",
                    "proto",
                    "80",
                )
        for pod in PODS:
            pns, ip6 = f"pod-{pod.name}", POD6[pod.name]
            self.in_ns(pns, "ip", "-6", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
            self.in_ns(pns, "ip", "-6", "route", "add", "default", "via", HOST_VETH_LINK_LOCAL, "dev", "eth0")
            self.in_ns(pod.node, "ip", "-6", "route", "add", f"{ip6}/128", "dev", pod.iface)
        for node in NODES:
            self.in_ns(node.name, "ip6tables-restore", input_text=felix_rules(node, family=6))

    # ---- traffic -----------------------------------------------------------------------------
    def start_servers(self, ipv6: bool = False) -> None:
        servers = [("web", WEB_SERVER), ("db", DB_SERVER)]
        if ipv6:  # the same servers on the pods' IPv6 addresses (IPv6-only sockets beside the IPv4 ones)
            servers += [
                (
                    pod,
                    code.replace("socket.socket()", "socket.socket(socket.AF_INET6)")
                    .replace("socket.AF_INET, socket.SOCK_DGRAM", "socket.AF_INET6, socket.SOCK_DGRAM")
                    .replace('("0.0.0.0", ', '("::", ')
                    .replace("s.bind(", "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); s.bind(")
                    .replace("u.bind(", "u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); u.bind(")
                    # a reply of other bytes, as real protocols' replies are: IPv6 has no IP id, so a
                    # byte-for-byte echo is its request's twin to the fingerprint (counted ambiguous)
                    .replace("u.sendto(data, addr)", "u.sendto(b'R' + data[1:], addr)"),
                )
                for pod, code in servers
            ]
        for pod, code in servers:
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(f"pod-{pod}"), sys.executable, "-c", code],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.procs.append(p)
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{pod} server failed: {p.stderr.read() if p.stderr else ''}")

    def client(self, pod: str, code: str) -> dict:
        out = self.in_ns(f"pod-{pod}", sys.executable, "-c", CLIENT_PRELUDE + textwrap.dedent(code))
        return json.loads(out.strip().splitlines()[-1])

    def client_in_two_steps(self, pod: str, code: str, between) -> dict:
        """A client that prints its first step as a JSON line, waits for a line on stdin, and ends
        with its result: ``between(first_step)`` runs in the gap (e.g. a node forgets a connection)."""
        p = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns(f"pod-{pod}"),
                sys.executable,
                "-c",
                CLIENT_PRELUDE + textwrap.dedent(code),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        assert p.stdin is not None and p.stdout is not None
        first = json.loads(p.stdout.readline())
        between(first)
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"{pod} client failed: {err}")
        return {**first, **json.loads(out.strip().splitlines()[-1])}


WEB_SERVER = r"""
import socket, threading
def http():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen()
    while True:
        c, _ = s.accept()
        c.recv(4096); c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"); c.close()
def sink():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8081)); s.listen()
    while True:
        c, _ = s.accept()
        while c.recv(65536): pass
        c.close()
def echo():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9000))
    while True:
        data, addr = u.recvfrom(65535); u.sendto(data, addr)
for f in (http, sink, echo): threading.Thread(target=f, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
DB_SERVER = r"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5432)); s.listen()
print("ready", flush=True)
threading.Event().wait()
"""
CLIENT_PRELUDE = "import json, socket, time\n"


def felix_rules(node: Node, family: int = 4) -> str:
    """iptables-restore (family 6: ip6tables-restore) input shaped like felix's and kube-proxy's rules
    for this node's pods."""
    pods = [p for p in PODS if p.node == node.name]
    chains: dict[str, list[str]] = {}
    v6 = family == 6
    pod_cidr, cluster_ip = (POD_CIDR6, CLUSTER_IP6) if v6 else (POD_CIDR, CLUSTER_IP)
    allowed, host = (DB_ALLOWED_SOURCE6, "/128") if v6 else (DB_ALLOWED_SOURCE, "/32")
    if POLICY == "open":  # db-allow-app admits the client: its connections to db are delivered
        allowed = f"{POD6['client']}/128" if v6 else f"{next(p for p in PODS if p.name == 'client').ip}/32"

    def ip_of(pod: Pod) -> str:
        return POD6[pod.name] if v6 else pod.ip

    def endpoint(pod: Pod, port: int) -> str:
        return f"[{ip_of(pod)}]:{port}" if v6 else f"{ip_of(pod)}:{port}"

    def add(table_chain: str, spec: str, comment: str = "", felix: bool = False) -> None:
        _, chain = table_chain.split(":")
        rules = chains.setdefault(table_chain, [])
        parts = []
        if felix or chain.startswith("cali-") or "-j cali-" in spec:  # felix's rules carry its rule hash
            parts.append(f'-m comment --comment "cali:{rule_hash(chain, len(rules))}"')
        if comment:
            parts.append(f'-m comment --comment "{comment}"')
        rules.append(f"-A {chain} " + " ".join([*parts, spec]).strip())

    svc_chain = "KUBE-SVC-" + kube_hash(SERVICE + "tcp")
    web = next(p for p in PODS if p.name == "web")
    sep_chain = "KUBE-SEP-" + kube_hash(SERVICE + "tcp" + endpoint(web, 8080))
    add("raw:PREROUTING", "-j cali-PREROUTING")
    add("raw:cali-PREROUTING", "-j MARK --set-xmark 0x0/0xf0000")
    add("nat:PREROUTING", "-j cali-PREROUTING")
    add("nat:PREROUTING", "-j KUBE-SERVICES", "kubernetes service portals")
    add("nat:OUTPUT", "-j KUBE-SERVICES", "kubernetes service portals")
    add("nat:POSTROUTING", "-j cali-POSTROUTING")
    add("nat:POSTROUTING", "-j KUBE-POSTROUTING", "kubernetes postrouting rules")
    add("nat:cali-PREROUTING", "-j cali-fip-dnat")
    add("nat:cali-POSTROUTING", "-j cali-fip-snat")
    add("nat:cali-POSTROUTING", "-j cali-nat-outgoing")
    add("nat:cali-nat-outgoing", f"-s {pod_cidr} ! -d {pod_cidr} -j MASQUERADE --random-fully")
    add("nat:KUBE-MARK-MASQ", "-j MARK --set-xmark 0x4000/0x4000")
    add("nat:KUBE-POSTROUTING", "-m mark ! --mark 0x4000/0x4000 -j RETURN")
    add("nat:KUBE-POSTROUTING", "-j MARK --set-xmark 0x4000/0x0")
    add("nat:KUBE-POSTROUTING", "-j MASQUERADE --random-fully", "kubernetes service traffic requiring SNAT")
    add(
        "nat:KUBE-SERVICES",
        f"-d {cluster_ip}{host} -p tcp -m tcp --dport {SERVICE_PORT} -j {svc_chain}",
        f"{SERVICE} cluster IP",
    )
    add(
        "nat:" + svc_chain,
        f"! -s {pod_cidr} -d {cluster_ip}{host} -p tcp -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ",
        f"{SERVICE} cluster IP",
    )
    add("nat:" + svc_chain, f"-j {sep_chain}", SERVICE if DIALECT == "v3.28" else f"{SERVICE} -> {endpoint(web, 8080)}")
    add("nat:" + sep_chain, f"-s {ip_of(web)}{host} -j KUBE-MARK-MASQ", SERVICE)
    add("nat:" + sep_chain, f"-p tcp -m tcp -j DNAT --to-destination {endpoint(web, 8080)}", SERVICE)
    # filter FORWARD as felix and kube-proxy leave it: felix's chain inserted first, kube-proxy's service
    # checks after it, and felix's accept appended last, so kube-proxy can still reject what policy allowed
    add("filter:FORWARD", "-j cali-FORWARD")
    add("filter:FORWARD", "-m conntrack --ctstate NEW -j KUBE-SERVICES", "kubernetes service portals")
    add(
        "filter:FORWARD",
        "-m mark --mark 0x10000/0x10000 -j ACCEPT",
        "Policy explicitly accepted packet.",
        felix=True,
    )
    add("filter:OUTPUT", "-m conntrack --ctstate NEW -j KUBE-SERVICES", "kubernetes service portals")
    chains.setdefault("filter:KUBE-SERVICES", [])
    if not v6:
        add(
            "filter:KUBE-SERVICES",
            f"-d {GONE_IP}/32 -p tcp -m tcp --dport {SERVICE_PORT} -j REJECT --reject-with icmp-port-unreachable",
            f"{GONE_SERVICE} has no endpoints",
        )
    add("filter:cali-FORWARD", "-j MARK --set-xmark 0x0/0xe0000")
    add("filter:cali-FORWARD", "-i cali+ -j cali-from-wl-dispatch")
    add("filter:cali-FORWARD", "-o cali+ -j cali-to-wl-dispatch")
    for pod in pods:
        add("filter:cali-from-wl-dispatch", f"-i {pod.iface} -g cali-fw-{pod.iface}")
        add("filter:cali-to-wl-dispatch", f"-o {pod.iface} -g cali-tw-{pod.iface}")
    add("filter:cali-from-wl-dispatch", "-j DROP", "Unknown interface")
    add("filter:cali-to-wl-dispatch", "-j DROP", "Unknown interface")
    profiles = set()
    for pod in pods:
        profile = f"kns.{pod.namespace}"
        profiles.add(profile)
        for chain, prof_chain in (
            (f"cali-fw-{pod.iface}", f"cali-pro-{profile}"),
            (f"cali-tw-{pod.iface}", f"cali-pri-{profile}"),
        ):
            t = "filter:" + chain
            add(t, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
            add(t, "-m conntrack --ctstate INVALID -j DROP")
            add(t, "-j MARK --set-xmark 0x0/0x10000")
            if chain.startswith("cali-fw-"):
                add(
                    t,
                    f"-p udp -m multiport --dports {VXLAN_PORT} -j DROP",
                    "Drop VXLAN encapped packets originating in workloads",
                )
                add(t, "-p ipencap -j DROP", "Drop IPinIP encapped packets originating in workloads")
            if chain.startswith("cali-tw-") and pod.name == "db":
                tier_start, tier_end, policy_id, policy_name, kind = DIALECTS[DIALECT]
                pol_chain = length_limited("cali-pi-", policy_id)
                add(t, "-j MARK --set-xmark 0x0/0x20000", tier_start or "")
                add(t, f"-m mark --mark 0x0/0x20000 -j {pol_chain}")
                add(t, "-m mark --mark 0x10000/0x10000 -j RETURN", "Return if policy accepted")
                add(t, "-m mark --mark 0x0/0x20000 -j DROP", tier_end)
                add(
                    "filter:" + pol_chain,
                    f"-s {allowed} -p tcp -m tcp --dport 5432 -j MARK --set-xmark 0x10000/0x10000",
                    f"{kind} {policy_name} ingress",
                )
                add("filter:" + pol_chain, "-m mark --mark 0x10000/0x10000 -j RETURN")
            add(t, f"-j {prof_chain}")
            add(t, "-m mark --mark 0x10000/0x10000 -j RETURN", "Return if profile accepted")
            add(t, "-j DROP", "Drop if no profiles matched")
    for profile in sorted(profiles):
        for direction, prefix in (("ingress", "cali-pri-"), ("egress", "cali-pro-")):
            add(f"filter:{prefix}{profile}", "-j MARK --set-xmark 0x10000/0x10000", f"Profile {profile} {direction}")
            add(f"filter:{prefix}{profile}", "-m mark --mark 0x10000/0x10000 -j RETURN")
    builtin = {
        "raw": ["PREROUTING", "OUTPUT"],
        "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "filter": ["INPUT", "FORWARD", "OUTPUT"],
    }
    out = []
    for table in ("raw", "nat", "filter"):
        out.append(f"*{table}")
        out += [f":{c} ACCEPT [0:0]" for c in builtin[table]]
        user = sorted({tc.split(":")[1] for tc in chains if tc.startswith(table + ":")} - set(builtin[table]))
        user += [c for c in ("cali-fip-dnat", "cali-fip-snat") if table == "nat" and c not in user]
        out += [f":{c} - [0:0]" for c in sorted(set(user))]
        for tc, rules in chains.items():
            if tc.startswith(table + ":"):
                out += rules
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def kube_nft_hash(text: str) -> str:
    """kube-proxy's nftables chain hash (hashAndTruncate): base32(sha256), first 8 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:8]


def nft_rules(node: Node) -> str:
    """`nft -f` input for the same node in nftables mode: Calico's `table ip calico` (felix's nftables
    dataplane: chains named after the iptables ones with their layer in front, never hashed; workload
    dispatch by verdict maps; every rule counted) and kube-proxy's `table ip kube-proxy` (its nftables
    mode: services in verdict maps, chains named `service-<hash>-<ns>/<svc>/<proto>/<port>`, no
    counters). The same policy, services and drops as felix_rules writes for iptables."""
    pods = [p for p in PODS if p.node == node.name]
    web = next(p for p in PODS if p.name == "web")
    chains: dict[str, list[str]] = {}

    def add(chain: str, rule: str, comment: str = "") -> None:
        rules = chains.setdefault(chain, [])
        text = f"cali:{rule_hash(chain, len(rules))};" + (f" {comment}" if comment else "")
        rules.append(f'{rule} comment "{text}"')

    hooks = {
        "filter-FORWARD": "type filter hook forward priority filter; policy accept;",
        "nat-POSTROUTING": "type nat hook postrouting priority srcnat; policy accept;",
    }
    add("filter-FORWARD", "counter jump filter-cali-FORWARD")
    add("filter-FORWARD", "meta mark & 0x00010000 == 0x00010000 counter accept", "Policy explicitly accepted packet.")
    add("filter-cali-FORWARD", "counter meta mark set meta mark & 0xfff1ffff")
    add("filter-cali-FORWARD", 'iifname "cali*" counter jump filter-cali-from-wl-dispatch')
    add("filter-cali-FORWARD", 'oifname "cali*" counter jump filter-cali-to-wl-dispatch')
    add("filter-cali-from-wl-dispatch", "iifname vmap @filter-cali-from-wl-dispatch")
    add("filter-cali-from-wl-dispatch", "counter drop", "Unknown interface")
    add("filter-cali-to-wl-dispatch", "oifname vmap @filter-cali-to-wl-dispatch")
    add("filter-cali-to-wl-dispatch", "counter drop", "Unknown interface")
    add("nat-POSTROUTING", "counter jump nat-cali-POSTROUTING")
    add("nat-cali-POSTROUTING", "counter jump nat-cali-nat-outgoing")
    add("nat-cali-nat-outgoing", f"ip saddr {POD_CIDR} ip daddr != {POD_CIDR} counter masquerade fully-random")
    policy_chain = f"filter-cali-pi-{DB_POLICY}"  # nftables names are long enough never to be hashed
    profiles = set()
    for pod in pods:
        profile = f"kns.{pod.namespace}"
        profiles.add(profile)
        for chain, prof_chain in (
            (f"filter-cali-fw-{pod.iface}", f"filter-cali-pro-{profile}"),
            (f"filter-cali-tw-{pod.iface}", f"filter-cali-pri-{profile}"),
        ):
            add(chain, "ct state related,established counter accept")
            add(chain, "ct state invalid counter drop")
            add(chain, "counter meta mark set meta mark & 0xfffeffff")
            if "-fw-" in chain:
                add(chain, f"udp dport {VXLAN_PORT} counter drop", "Drop VXLAN encapped packets originating in workloads")
                add(chain, "ip protocol 4 counter drop", "Drop IPinIP encapped packets originating in workloads")
            if "-tw-" in chain and pod.name == "db":
                add(chain, "counter meta mark set meta mark & 0xfffdffff", "Start of tier default")
                add(chain, f"meta mark & 0x00020000 == 0x00000000 counter jump {policy_chain}")
                add(chain, "meta mark & 0x00010000 == 0x00010000 counter return", "Return if policy accepted")
                add(
                    chain,
                    "meta mark & 0x00020000 == 0x00000000 counter drop",
                    "End of tier default. Drop if no policies passed packet",
                )
            add(chain, f"counter jump {prof_chain}")
            add(chain, "meta mark & 0x00010000 == 0x00010000 counter return", "Return if profile accepted")
            add(chain, "counter drop", "Drop if no profiles matched")
    if any(p.name == "db" for p in pods):
        add(
            policy_chain,
            f"ip saddr {pod('client').ip if POLICY == 'open' else DB_ALLOWED_SOURCE} tcp dport 5432 counter "
            "meta mark set meta mark | 0x00010000",
            f"Policy {DB_POLICY} ingress",
        )
        add(policy_chain, "meta mark & 0x00010000 == 0x00010000 counter return")
    for profile in sorted(profiles):
        for direction, prefix in (("ingress", "filter-cali-pri-"), ("egress", "filter-cali-pro-")):
            add(prefix + profile, "counter meta mark set meta mark | 0x00010000", f"Profile {profile} {direction}")
            add(prefix + profile, "meta mark & 0x00010000 == 0x00010000 counter return")
    out = ["table ip calico {"]
    for direction, verdict in (("from", "fw"), ("to", "tw")):
        elements = ", ".join(f'"{p.iface}" : goto filter-cali-{verdict}-{p.iface}' for p in pods)
        out += [f"  map filter-cali-{direction}-wl-dispatch {{", "    type ifname : verdict"]
        out += [f"    elements = {{ {elements} }}"] if elements else []
        out.append("  }")
    for chain, rules in chains.items():
        out.append(f'  chain {chain} {{')
        out += [f"    {hooks[chain]}"] if chain in hooks else []
        out += [f"    {r}" for r in rules]
        out.append("  }")
    out.append("}")

    # kube-proxy, nftables mode (pkg/proxy/nftables/proxier.go)
    port_name = SERVICE.split(":")[1]
    svc = f"default/web/tcp/{port_name}"
    svc_chain = f"service-{kube_nft_hash(svc)}-{svc}"
    ep = f"{svc}__{web.ip}/8080"
    ep_chain = f"endpoint-{kube_nft_hash(ep)}-{ep}"
    out += [
        "table ip kube-proxy {",
        '  comment "rules for kube-proxy"',
        "  map service-ips {",
        "    type ipv4_addr . inet_proto . inet_service : verdict",
        '    comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"',
        f"    elements = {{ {CLUSTER_IP} . tcp . {SERVICE_PORT} : goto {svc_chain} }}",
        "  }",
        "  map no-endpoint-services {",
        "    type ipv4_addr . inet_proto . inet_service : verdict",
        '    comment "vmap to drop or reject packets to services with no endpoints"',
        f'    elements = {{ {GONE_IP} . tcp . {SERVICE_PORT} comment "{GONE_SERVICE}" : goto reject-chain }}',
        "  }",
        "  chain mark-for-masquerade {",
        "    meta mark set meta mark | 0x00004000",
        "  }",
        "  chain masquerading {",
        "    meta mark & 0x00004000 == 0x00000000 return",
        "    meta mark set meta mark ^ 0x00004000",
        "    masquerade fully-random",
        "  }",
        "  chain services {",
        "    ip daddr . meta l4proto . th dport vmap @service-ips",
        "  }",
        "  chain service-endpoints-check {",
        "    ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        "  }",
        "  chain reject-chain {",
        '    comment "helper for @no-endpoint-services / @no-endpoint-nodeports"',
        "    reject",
        "  }",
        "  chain nat-prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    jump services",
        "  }",
        "  chain nat-output {",
        "    type nat hook output priority -100; policy accept;",
        "    jump services",
        "  }",
        "  chain nat-postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        "    jump masquerading",
        "  }",
        "  chain filter-forward {",
        "    type filter hook forward priority -110; policy accept;",
        "    ct state new jump service-endpoints-check",
        "  }",
        f"  chain {svc_chain} {{",
        f"    ip daddr {CLUSTER_IP} tcp dport {SERVICE_PORT} ip saddr != {POD_CIDR} jump mark-for-masquerade",
        f"    numgen random mod 1 vmap {{ 0 : goto {ep_chain} }}",
        "  }",
        f"  chain {ep_chain} {{",
        f"    ip saddr {web.ip} jump mark-for-masquerade",
        f"    meta l4proto tcp dnat to {web.ip}:8080",
        "  }",
        "}",
    ]
    return "\n".join(out) + "\n"


def http_get(address: str, port: int) -> str:
    """A client that GETs / from address:port (either family) and says its port and the reply."""
    return f"""
        s = socket.create_connection(("{address}", {port}), timeout=5); port = s.getsockname()[1]
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: web\\r\\n\\r\\n"); reply = s.recv(4096); s.close()
        print(json.dumps({{"sport": port, "reply": reply.decode()}}))"""


def run_scenarios(lab: Lab) -> dict:
    """Each scenario runs inside a pod namespace and reports what it did (ports, outcome)."""
    web = next(p for p in PODS if p.name == "web")
    db = next(p for p in PODS if p.name == "db")
    results = {}
    results["pod_to_pod"] = lab.client("client", http_get(web.ip, 8080))
    results["cluster_ip"] = lab.client("client", http_get(CLUSTER_IP, SERVICE_PORT))
    results["udp"] = lab.client(
        "client",
        f"""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5); u.bind(("0.0.0.0", 0))
        u.sendto(b"ping-udp", ("{web.ip}", 9000)); data, _ = u.recvfrom(100)
        print(json.dumps({{"sport": u.getsockname()[1], "reply": data.decode()}}))""",
    )
    results["bulk"] = lab.client(
        "client",
        f"""
        s = socket.create_connection(("{web.ip}", 8081), timeout=5); port = s.getsockname()[1]
        block = b"calforensics-bulk-" * 4096
        sent = 0
        while sent < 262144:
            s.sendall(block); sent += len(block)
        s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
        print(json.dumps({{"sport": port, "bytes": sent}}))""",
    )
    results["mtu"] = lab.client(
        "mtu-bad",
        f"""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 0))
        u.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: set DF, never fragment
        u.sendto(b"M" * 1472, ("{web.ip}", 9000)); time.sleep(0.3)
        try:
            u.sendto(b"M" * 1472, ("{web.ip}", 9000)); second = "sent"
        except OSError as exc:
            second = f"refused: {{exc.strerror}}"
        print(json.dumps({{"sport": u.getsockname()[1], "bytes": 1472, "second_send": second}}))""",
    )
    results["denied"] = lab.client(
        "client",
        f"""
        s = socket.socket(); s.bind(("0.0.0.0", 0)); port = s.getsockname()[1]; s.settimeout(3.5); t = time.time()
        try:
            s.connect(("{db.ip}", 5432)); outcome = "connected"
        except OSError as exc:
            outcome = type(exc).__name__
        print(json.dumps({{"sport": port, "outcome": outcome, "seconds": round(time.time() - t, 2)}}))""",
    )
    return results


STRAY_ACK = """
import struct
def checksum(data):
    data += bytes(len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
def stray_ack(src, dst, sport, dport):
    # a bare ACK of no connection, as a late segment of one long forgotten (raw socket: the kernel adds IPv4)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 123456789, 987654321, 5 << 4, 0x10, 502, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    return tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
"""


def run_edge_scenarios(lab: Lab) -> dict:
    """Packets that are not a connection's first: a datagram fragmented by its pod and refragmented
    by the node for the tunnel, a connection node-b's conntrack forgets mid-stream, and stray ACKs;
    and a connection to a service without endpoints, which kube-proxy's REJECT refuses; and a
    connection from a pod to node-b's own address, outside the pod CIDR, which node-a masquerades
    (felix's cali-nat-outgoing rule for a natOutgoing pool).
    node-b runs with nf_conntrack_tcp_loose=0, so it calls a segment of no known connection INVALID
    and felix's `--ctstate INVALID -j DROP` rule in the web pod's cali-tw chain drops it."""
    client, web = pod("client"), pod("web")
    results = {}
    results["fragmented"] = lab.client(
        "mtu-bad",
        f"""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5); u.bind(("0.0.0.0", 0))
        u.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_PMTUDISC_DONT: no DF, the kernel fragments at the pod MTU
        u.sendto(b"F" * 4000, ("{web.ip}", 9000)); data, _ = u.recvfrom(65535)
        print(json.dumps({{"sport": u.getsockname()[1], "bytes": 4000, "reply_bytes": len(data)}}))""",
    )

    def forget(first: dict) -> None:  # node-b's conntrack loses the connection (flushed, table full, restart)
        lab.in_ns(
            "node-b", "conntrack", "-D", "-p", "tcp", "--orig-src", client.ip, "--orig-port-src", str(first["sport"])
        )

    results["forgotten"] = lab.client_in_two_steps(
        "client",
        f"""
        import sys
        s = socket.create_connection(("{web.ip}", 8081), timeout=5); port = s.getsockname()[1]
        s.sendall(b"before" * 100); time.sleep(0.2)
        print(json.dumps({{"sport": port}}), flush=True); sys.stdin.readline()
        s.sendall(b"after" * 100); time.sleep(1.6)
        print(json.dumps({{"unacked": True}}))""",
        forget,
    )
    results["no_endpoints"] = lab.client(
        "client",
        f"""
        s = socket.socket(); s.bind(("0.0.0.0", 0)); port = s.getsockname()[1]; s.settimeout(3)
        try:
            s.connect(("{GONE_IP}", {SERVICE_PORT})); outcome = "connected"
        except OSError as exc:
            outcome = type(exc).__name__
        print(json.dumps({{"sport": port, "outcome": outcome}}))""",
    )
    b = NODES[1]
    node_server = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns(b.name), sys.executable, "-c", NODE_SERVER.format(ip=b.ip, port=EGRESS_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lab.procs.append(node_server)
    assert node_server.stdout is not None and node_server.stdout.readline().strip() == "ready"
    results["egress"] = lab.client(
        "client",
        f"""
        s = socket.create_connection(("{b.ip}", {EGRESS_PORT}), timeout=5); port = s.getsockname()[1]
        s.sendall(b"out" * 100); data = s.recv(65535); s.close()
        print(json.dumps({{"sport": port, "reply_bytes": len(data)}}))""",
    )
    results["stray_ack"] = lab.client(
        "client",
        STRAY_ACK
        + f"""
held = socket.socket(); held.bind(("0.0.0.0", 0)); sport = held.getsockname()[1]  # the port stays ours
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for _ in range(3):
    raw.sendto(stray_ack("{client.ip}", "{web.ip}", sport, 8080), ("{web.ip}", 0)); time.sleep(0.2)
print(json.dumps({{"sport": sport, "sent": 3}}))""",
    )
    return results


EGRESS_PORT = 7070
NODE_SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("{ip}", {port})); s.listen()
print("ready", flush=True)
c, _ = s.accept(); c.sendall(c.recv(65535)); c.close()
"""


def edge_ground_truth(results: dict) -> dict:
    client, bad, web = pod("client"), pod("mtu-bad"), pod("web")
    b = NODES[1]
    invalid_drop = {
        "node": b.name,
        "last_seen": {"node": b.name, "interface": "vxlan.calico"},
        "missing_at": {"node": b.name, "interface": web.iface},
        "table": "filter",
        "chain": f"cali-tw-{web.iface}",
        "kind": "conntrack_invalid",
    }
    to_web = {"node": b.name, "interface": web.iface}
    return {
        **cluster_truth(),
        "conntrack_tcp_loose": {"node-a": 1, "node-b": 0},
        "flows": [
            flow(
                "fragmented",
                "udp",
                bad,
                results["fragmented"]["sport"],
                (web.ip, 9000),
                "delivered",
                [*crossing(bad), to_web],
                fragments={"bytes": results["fragmented"]["bytes"], "pod_mtu": bad.mtu, "tunnel_mtu": VXLAN_MTU},
            ),
            flow(
                "forgotten",
                "tcp",
                client,
                results["forgotten"]["sport"],
                (web.ip, 8081),
                "partial",
                [*crossing(client), to_web],
                drop=invalid_drop,
            ),
            flow(  # kube-proxy REJECTs it in node-a's filter FORWARD: ICMP port unreachable, connection refused
                "no_endpoints",
                "tcp",
                client,
                results["no_endpoints"]["sport"],
                (GONE_IP, SERVICE_PORT),
                "dropped",
                [{"node": client.node, "interface": client.iface}],
                service=GONE_SERVICE,
                drop={
                    "node": client.node,
                    "last_seen": {"node": client.node, "interface": client.iface},
                    "missing_at": {"node": client.node, "interface": "eth0"},
                    "table": "filter",
                    "chain": "KUBE-SERVICES",
                    "kind": "no_endpoints",
                    "rule_comment": f"{GONE_SERVICE} has no endpoints",
                },
            ),
            flow(  # masqueraded on its way out of node-a: node-b sees node-a's address
                "egress",
                "tcp",
                client,
                results["egress"]["sport"],
                (b.ip, EGRESS_PORT),
                "delivered",
                [{"node": client.node, "interface": client.iface}, {"node": client.node, "interface": "eth0"}, {"node": b.name, "interface": "eth0"}],
                snat_ip=NODES[0].ip,
            ),
            flow(
                "stray_ack",
                "tcp",
                client,
                results["stray_ack"]["sport"],
                (web.ip, 8080),
                "dropped",
                crossing(client),
                drop={**invalid_drop, "min_packets": results["stray_ack"]["sent"]},
            ),
        ],
        "client_results": results,
    }


def pod_listing() -> str:
    """What `kubectl get pods -A -o wide` would print for the lab (cluster diags keep it)."""
    rows = [
        ("NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES")
    ]
    rows += [(p.namespace, p.name, "1/1", "Running", "0", "1m", p.ip, p.node, "<none>", "<none>") for p in PODS]
    widths = [max(len(r[i]) for r in rows) + 3 for i in range(len(rows[0]))]
    return "\n".join("".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"


def pod(name: str) -> Pod:
    return next(p for p in PODS if p.name == name)


def crossing(source: Pod) -> list[dict]:
    """The capture points from a node-a pod to node-b's overlay, in order."""
    a, b = NODES
    return [
        {"node": a.name, "interface": source.iface},
        {"node": a.name, "interface": "vxlan.calico"},
        {"node": a.name, "interface": "eth0"},
        {"node": b.name, "interface": "eth0"},
        {"node": b.name, "interface": "vxlan.calico"},
    ]


def flow(name: str, proto: str, src: Pod, sport: int, dst: tuple, verdict: str, path: list, **extra) -> dict:
    return {
        "name": name,
        "proto": proto,
        "client_ip": src.ip,
        "client_port": sport,
        "server_ip": dst[0],
        "server_port": dst[1],
        "verdict": verdict,
        "path": path,
        **extra,
    }


def db_policy_drop(tunnel: str) -> dict:
    """Where and why the client's connections to db are dropped: after node-b's tunnel device, by
    the end-of-tier rule of db's cali-tw chain (db's policy admits no pod that exists)."""
    db, b = pod("db"), NODES[1]
    return {
        "node": b.name,
        "last_seen": {"node": b.name, "interface": tunnel},
        "missing_at": {"node": b.name, "interface": db.iface},
        "table": "filter",
        "chain": f"cali-tw-{db.iface}",
        "policy": DIALECTS[DIALECT][3],
        "rule_comment": DIALECTS[DIALECT][1],
    }


def cluster_truth() -> dict:
    """What every run's ground truth says of the cluster itself."""
    web = pod("web")
    return {
        "schema": 1,
        "dataplane": "iptables",
        "encapsulation": {
            "type": "vxlan",
            "vni": VNI,
            "port": VXLAN_PORT,
            "overhead_bytes": 50,
            "tunnel_mtu": VXLAN_MTU,
            "underlay_mtu": UNDERLAY_MTU,
        },
        "nodes": {n.name: {"ip": n.ip, "block": n.block, "tunnel_ip": n.tunnel_ip} for n in NODES},
        "pods": {
            f"{p.namespace}/{p.name}": {"node": p.node, "ip": p.ip, "interface": p.iface, "mtu": p.mtu} for p in PODS
        },
        "service": {"name": SERVICE, "cluster_ip": CLUSTER_IP, "port": SERVICE_PORT, "backends": [f"{web.ip}:8080"]},
    }


def ground_truth(results: dict) -> dict:
    client, bad, web, db = pod("client"), pod("mtu-bad"), pod("web"), pod("db")
    a, b = NODES
    cross = crossing(client)
    return {
        **cluster_truth(),
        "flows": [
            flow(
                "pod_to_pod",
                "tcp",
                client,
                results["pod_to_pod"]["sport"],
                (web.ip, 8080),
                "delivered",
                [*cross, {"node": b.name, "interface": web.iface}],
            ),
            flow(
                "cluster_ip",
                "tcp",
                client,
                results["cluster_ip"]["sport"],
                (CLUSTER_IP, SERVICE_PORT),
                "delivered",
                [*cross, {"node": b.name, "interface": web.iface}],
                service=SERVICE,
                backend_ip=web.ip,
                backend_port=8080,
                dnat_node=a.name,
            ),
            flow(
                "udp",
                "udp",
                client,
                results["udp"]["sport"],
                (web.ip, 9000),
                "delivered",
                [*cross, {"node": b.name, "interface": web.iface}],
            ),
            flow(
                "bulk",
                "tcp",
                client,
                results["bulk"]["sport"],
                (web.ip, 8081),
                "delivered",
                [*cross, {"node": b.name, "interface": web.iface}],
                bytes=results["bulk"]["bytes"],
            ),
            flow(
                "denied",
                "tcp",
                client,
                results["denied"]["sport"],
                (db.ip, 5432),
                "dropped",
                cross,
                drop={
                    **db_policy_drop("vxlan.calico"),
                    "min_packets": 2,
                    "client_outcome": results["denied"]["outcome"],
                },
            )
            if POLICY == "closed"
            else flow(  # db's policy admits the client: connected, then closed
                "denied", "tcp", client, results["denied"]["sport"], (db.ip, 5432), "delivered",
                [*cross, {"node": b.name, "interface": db.iface}],
            ),
            flow(
                "mtu",
                "udp",
                bad,
                results["mtu"]["sport"],
                (web.ip, 9000),
                "dropped",
                [{"node": a.name, "interface": bad.iface}],
                mtu={
                    "kind": "frag_needed",
                    "mtu": VXLAN_MTU,
                    "sender_node": a.name,
                    "sender_ips": [a.ip, a.tunnel_ip],
                    "payload_bytes": results["mtu"]["bytes"],
                    "packet_bytes": results["mtu"]["bytes"] + 28,
                    "pod_mtu": bad.mtu,
                },
            ),
        ],
        "client_results": results,
    }


def run_dual_scenarios(lab: Lab) -> dict:
    """Dual stack: an IPv4 connection, and over IPv6 a delivered connection, a ClusterIP connection
    DNATed on node-a, a policy drop, and a datagram too big for `vxlan-v6.calico` (node-a answers
    Packet Too Big; the pod then fragments its second send itself, as IPv6 senders do)."""
    web, db = POD6["web"], POD6["db"]
    results = {}
    results["pod_to_pod_v4"] = lab.client("client", http_get(pod("web").ip, 8080))
    results["pod_to_pod_v6"] = lab.client("client", http_get(web, 8080))
    results["cluster_ip_v6"] = lab.client("client", http_get(CLUSTER_IP6, SERVICE_PORT))
    results["denied_v6"] = lab.client(
        "client",
        f"""
        s = socket.socket(socket.AF_INET6); s.bind(("::", 0)); port = s.getsockname()[1]; s.settimeout(3.5)
        try:
            s.connect(("{db}", 5432)); outcome = "connected"
        except OSError as exc:
            outcome = type(exc).__name__
        print(json.dumps({{"sport": port, "outcome": outcome}}))""",
    )
    results["mtu_v6"] = lab.client(
        "mtu-bad",
        f"""
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.settimeout(3); u.bind(("::", 0))
        u.sendto(b"M" * 1452, ("{web}", 9000)); time.sleep(0.3)  # 1500 bytes: too big for the tunnel
        u.sendto(b"N" * 1452, ("{web}", 9000))  # the kernel learned the path MTU: fragmented at the pod
        try:
            reply = len(u.recvfrom(65535)[0])
        except OSError as exc:
            reply = type(exc).__name__
        print(json.dumps({{"sport": u.getsockname()[1], "bytes": 1452, "reply": reply}}))""",
    )
    return results


def dual_ground_truth(results: dict) -> dict:
    client, bad, web = pod("client"), pod("mtu-bad"), pod("web")
    a, b = NODES

    def cross6(source: Pod) -> list[dict]:
        return [
            {"node": a.name, "interface": source.iface},
            {"node": a.name, "interface": "vxlan-v6.calico"},
            {"node": a.name, "interface": "eth0"},
            {"node": b.name, "interface": "eth0"},
            {"node": b.name, "interface": "vxlan-v6.calico"},
        ]

    to_web = {"node": b.name, "interface": web.iface}

    def v6(name: str, proto: str, src: Pod, dst: tuple, verdict: str, path: list, **extra) -> dict:
        return {
            **flow(name, proto, src, results[name]["sport"], dst, verdict, path, **extra),
            "client_ip": POD6[src.name],
        }

    truth = cluster_truth()
    truth["any_only"] = list(ANY_ONLY["dual"])
    truth["encapsulation"]["v6"] = {"device": "vxlan-v6.calico", "overhead_bytes": 70, "tunnel_mtu": VXLAN6_MTU}
    truth["nodes6"] = {name: {"ip": v[0], "block": v[1], "tunnel_ip": v[2]} for name, v in NODE6.items()}
    truth["pods6"] = {f"{p.namespace}/{p.name}": POD6[p.name] for p in PODS}
    truth["service"]["cluster_ip6"] = CLUSTER_IP6
    truth["flows"] = [
        flow(
            "pod_to_pod_v4",
            "tcp",
            client,
            results["pod_to_pod_v4"]["sport"],
            (web.ip, 8080),
            "delivered",
            [*crossing(client), to_web],
        ),
        v6("pod_to_pod_v6", "tcp", client, (POD6["web"], 8080), "delivered", [*cross6(client), to_web]),
        v6(
            "cluster_ip_v6",
            "tcp",
            client,
            (CLUSTER_IP6, SERVICE_PORT),
            "delivered",
            [*cross6(client), to_web],
            service=SERVICE,
            backend_ip=POD6["web"],
            backend_port=8080,
            dnat_node=a.name,
        ),
        v6(
            "denied_v6",
            "tcp",
            client,
            (POD6["db"], 5432),
            "dropped",
            cross6(client),
            drop=db_policy_drop("vxlan-v6.calico"),
        ),
        v6(
            "mtu_v6",
            "udp",
            bad,
            (POD6["web"], 9000),
            "partial",
            [*cross6(bad), to_web],
            mtu={
                "kind": "packet_too_big",
                "mtu": VXLAN6_MTU,
                "sender_node": a.name,
                "payload_bytes": 1452,
                "packet_bytes": 1452 + 48,
            },
        ),
    ]
    truth["client_results"] = results
    return truth


SCENARIOS = {
    "core": (run_scenarios, ground_truth),
    "edge": (run_edge_scenarios, edge_ground_truth),
    "dual": (run_dual_scenarios, dual_ground_truth),
}


def set_tunnel_mtu(mtu: int) -> None:
    """Run the lab with another overlay MTU (pods follow it; the mtu-bad pod keeps the underlay's).
    The WireGuard sample is built from a run at 1440, Calico's WireGuard MTU on a 1500-byte host."""
    global VXLAN_MTU, PODS
    VXLAN_MTU = mtu
    PODS = [p if p.mtu == UNDERLAY_MTU else Pod(p.namespace, p.name, p.node, p.ip, mtu) for p in PODS]


ANY_ONLY = {"dual": ("node-a",)}  # nodes a run captures with `tcpdump -i any` (SLL2) alone, not per interface


def run(
    out_dir: Path,
    name: str = "lab-vxlan",
    tunnel_mtu: int | None = None,
    scenarios: str = "core",
    rules: str = "iptables",
    dialect: str = "v3.30",
    policy: str = "closed",
) -> Path:
    """Build the lab, run one set of scenarios (`core`: the samples'; `edge`: fragments, INVALID drops
    and a service without endpoints; `dual`: IPv4 and IPv6, node-a captured with `-i any` alone) while
    collecting, and write the bundle and its ground truth. ``rules``: `iptables` (felix's and
    kube-proxy's iptables modes) or `nft` (Calico's nftables dataplane and kube-proxy's nftables mode;
    IPv4 scenario sets only). ``dialect``: the felix release whose comments and policy chain names the
    iptables rules take (DIALECTS: v3.28, v3.30, v3.32). ``policy``: `closed` (db's policy admits no pod
    that exists: the client's connection to db is dropped) or `open` (it admits the client: the same
    cluster before that policy change, the other half of the diff pair)."""
    if rules == "nft" and scenarios == "dual":
        raise SystemExit("the nft rule writer covers IPv4 only")
    global DIALECT, POLICY
    DIALECT, dialect_before = dialect, DIALECT
    POLICY, policy_before = policy, POLICY
    scenario_run, scenario_truth = SCENARIOS[scenarios]
    if tunnel_mtu is not None:
        set_tunnel_mtu(tunnel_mtu)
    missing = [t for t in REQUIRED_TOOLS if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        raise SystemExit(f"lab needs root and {', '.join(missing) or 'nothing else'}")
    out_dir = Path(out_dir)
    bundle_dir = out_dir / name
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    global PODS
    lab, pods_before = Lab(ipv6=scenarios == "dual", rules=rules), PODS
    try:
        if scenarios == "dual":  # the pods take the smaller of the two tunnels' MTUs, as Calico sets it
            PODS = [p if p.mtu == UNDERLAY_MTU else Pod(p.namespace, p.name, p.node, p.ip, VXLAN6_MTU) for p in PODS]
        lab.build()
        if scenarios == "edge":
            lab.in_ns("node-b", "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
        if scenarios == "dual":
            lab.build_ipv6()
        lab.start_servers(ipv6=scenarios == "dual")
        collectors = [
            Collector(
                CollectOptions(
                    out=bundle_dir,
                    node=n.name,
                    netns=lab.ns(n.name),
                    interfaces=["any"] if n.name in ANY_ONLY.get(scenarios, ()) else None,
                )
            )
            for n in NODES
        ]
        threads = [threading.Thread(target=c.start) for c in collectors]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = scenario_run(lab)
        time.sleep(0.5)
        # every node's captures stopped at once, as one collection would: a node stopped later keeps
        # packets the other's capture no longer took (tcpdump hands over each packet at once)
        stops = [threading.Thread(target=c.stop) for c in collectors]
        for t in stops:
            t.start()
        for t in stops:
            t.join()
        for c in collectors:
            c.dump_state()
            c.write_metadata()
        listing = bundle_dir / "cluster" / "kubernetes" / "pods.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(pod_listing())
        truth = scenario_truth(results)
        truth["rules"], truth["felix_dialect"], truth["db_policy"] = rules, dialect, policy
    finally:
        lab.cleanup()
        PODS, DIALECT, POLICY = pods_before, dialect_before, policy_before
    (bundle_dir / "ground_truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    archive = pack(bundle_dir, out_dir / f"{name}.tgz")
    shutil.copy(bundle_dir / "ground_truth.json", out_dir / f"{name}.ground_truth.json")
    shutil.rmtree(bundle_dir)
    return archive


if __name__ == "__main__":
    args = sys.argv[1:]
    mtu = int(args[args.index("--tunnel-mtu") + 1]) if "--tunnel-mtu" in args else None
    name = args[args.index("--name") + 1] if "--name" in args else "lab-vxlan"
    scenarios = args[args.index("--scenarios") + 1] if "--scenarios" in args else "core"
    rules = args[args.index("--rules") + 1] if "--rules" in args else "iptables"
    dialect = args[args.index("--dialect") + 1] if "--dialect" in args else "v3.30"
    policy = args[args.index("--policy") + 1] if "--policy" in args else "closed"
    out = next(
        (a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or not args[i - 1].startswith("--"))), None
    )
    print(
        run(
            Path(out or Path(__file__).resolve().parent),
            name=name,
            tunnel_mtu=mtu,
            scenarios=scenarios,
            rules=rules,
            dialect=dialect,
            policy=policy,
        )
    )
