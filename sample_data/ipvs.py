"""Derive a kube-proxy IPVS-mode bundle from a real lab bundle (this kernel has no ip_vs module).

The packets are the lab's: in IPVS mode the ClusterIP is a local address on the `kube-ipvs0` dummy,
and IPVS rewrites the destination to a real server after local input, so the client's veth still
shows the ClusterIP and everything after it the backend, as with iptables' DNAT. With kube-proxy's
`net/ipv4/vs/conntrack=1`, nf_conntrack keeps the same NATed entries. What IPVS mode changes is the
node's state, rewritten here as kube-proxy writes it (pkg/proxy/ipvs/proxier.go):

- iptables: no KUBE-SVC/KUBE-SEP chains; nat KUBE-SERVICES matches the KUBE-CLUSTER-IP ipset
  (masquerade for sources outside the pod network, then ACCEPT), with its comments;
- `ipvsadm -Ln` and `ipvsadm -Ln --stats` (ipvsadm.c formats), `ipset list` with KUBE-CLUSTER-IP;
- `kube-ipvs0` (a DOWN dummy holding every ClusterIP /32) in `ip link` and `ip addr`;
- a services listing (`kubectl get svc -A`), since ipvsadm names no service;
- nft-ruleset.txt removed (it mirrored the iptables chains rewritten above).

    python sample_data/ipvs.py lab-vxlan.tgz lab-ipvs.tgz
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive import pack_derived, unpack

REWRITES = [
    "kube-proxy: IPVS mode (synthetic; this kernel has no ip_vs): iptables-*-save without KUBE-SVC/KUBE-SEP "
    "chains, nat KUBE-SERVICES on the KUBE-CLUSTER-IP ipset",
    "ipvsadm.txt (ipvsadm -Ln), ipvsadm-stats.txt (ipvsadm -Ln --stats), ipset-list.txt: written from the "
    "lab's service and the connections its conntrack dump holds",
    "ip-link.txt, ip-addr.txt: kube-ipvs0 dummy with the ClusterIP",
    "nft-ruleset.txt removed; cluster/kubernetes/services.txt added",
]
IPVS_KUBE_RULES = [
    '-A KUBE-SERVICES ! -s {pod_cidr} -m comment --comment "Kubernetes service cluster ip + port for masquerade '
    'purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ',
    "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
    "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
]


def _ipvs_iptables(text: str, pod_cidr: str) -> str:
    """kube-proxy's iptables-mode service chains out, its IPVS-mode KUBE-SERVICES rules in."""
    out = []
    for line in text.splitlines():
        if re.search(r"KUBE-(SVC|SEP)-", line) or ("-A KUBE-SERVICES" in line and "KUBE-SVC-" in line):
            continue
        out.append(line)
        if line.startswith(":KUBE-SERVICES") and "*nat" in "\n".join(out):
            out.append(":KUBE-NODE-PORT - [0:0]")
    at = max(i for i, x in enumerate(out) if x == "COMMIT" and "*nat" in "\n".join(out[: i + 1]))
    nat_start = max(i for i, x in enumerate(out[:at]) if x.startswith("*"))
    if out[nat_start] == "*nat":
        out[at:at] = ["[0:0] " + r.format(pod_cidr=pod_cidr) for r in IPVS_KUBE_RULES]
    return "\n".join(out) + "\n"


def _connections(conntrack: str, vip: str, port: int) -> list[tuple[str, str]]:
    """(backend ip, port) of each of the node's connections to vip:port."""
    pattern = rf"dst={re.escape(vip)} sport=\d+ dport={port} .*?src=(\S+) dst=\S+ sport=(\d+)"
    return re.findall(pattern, conntrack)


def convert(src: Path, dst: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = unpack(src, Path(tmp) / "in")
        truth = json.loads((bundle / "ground_truth.json").read_text())
        svc = truth["service"]
        vip, port = svc["cluster_ip"], int(svc["port"])
        pod_cidr = "192.168.0.0/16"
        for node_dir in sorted((bundle / "nodes").iterdir()):
            for path in node_dir.glob("ip*tables-*save.txt"):
                text = path.read_text()
                if "*nat" in text and "KUBE-" in text:
                    path.write_text(_ipvs_iptables(text, pod_cidr))
            (node_dir / "nft-ruleset.txt").unlink(missing_ok=True)
            conns = _connections((node_dir / "conntrack-list.txt").read_text(), vip, port)
            backend = svc["backends"][0].rsplit(":", 1)
            rows = [
                "IP Virtual Server version 1.2.1 (size=4096)",
                "Prot LocalAddress:Port Scheduler Flags",
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
                f"TCP  {vip}:{port} rr",
                f"  -> {backend[0] + ':' + backend[1]:<28} {'Masq':<7} {1:<6} {0:<10} {len(conns):<10}".rstrip(),
            ]
            (node_dir / "ipvsadm.txt").write_text("\n".join(rows) + "\n")
            packets = len(conns) * 6
            stats = [
                "IP Virtual Server version 1.2.1 (size=4096)",
                f"{'Prot LocalAddress:Port':<33} {'Conns':>8} {'InPkts':>8} {'OutPkts':>8} {'InBytes':>8} {'OutBytes':>8}",
                "  -> RemoteAddress:Port",
                f"{'TCP  ' + vip + ':' + str(port):<33}{len(conns):9}{packets:9}{packets:9}{packets * 60:9}{packets * 60:9}",
                f"  -> {backend[0] + ':' + backend[1]:<28}{len(conns):9}{packets:9}{packets:9}{packets * 60:9}"
                f"{packets * 60:9}",
            ]
            (node_dir / "ipvsadm-stats.txt").write_text("\n".join(stats) + "\n")
            (node_dir / "ipset-list.txt").write_text(
                "Name: KUBE-CLUSTER-IP\nType: hash:ip,port\nRevision: 6\n"
                "Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5e2a1f6c\n"
                "Size in memory: 296\nReferences: 2\nNumber of entries: 1\nMembers:\n"
                f"{vip},tcp:{port}\n"
            )
            for name in ("ip-link.txt", "ip-addr.txt"):
                path = node_dir / name
                text = path.read_text().rstrip("\n")
                index = max(int(m) for m in re.findall(r"^(\d+): ", text, re.M)) + 1
                text += (
                    f"\n{index}: kube-ipvs0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN "
                    + ("mode DEFAULT " if name == "ip-link.txt" else "")
                    + "group default \n    link/ether 2e:4b:1a:73:5c:0d brd ff:ff:ff:ff:ff:ff"
                )
                if name == "ip-addr.txt":
                    text += f"\n    inet {vip}/32 scope global kube-ipvs0\n       valid_lft forever preferred_lft forever"
                else:
                    text += " promiscuity 0 \n    dummy addrgenmode eui64 numtxqueues 1 numrxqueues 1"
                path.write_text(text + "\n")
            meta = json.loads((node_dir / "metadata.json").read_text())
            meta.update(synthetic=True, synthetic_source=src.name, synthetic_rewrites=REWRITES)
            (node_dir / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        namespace, name = svc["name"].split(":")[0].split("/")
        listing = bundle / "cluster" / "kubernetes" / "services.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(
            "NAMESPACE   NAME         TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)    AGE   SELECTOR\n"
            f"{namespace:<12}{name:<13}ClusterIP   {vip:<13}<none>        {port}/TCP     1h    app=web\n"
        )
        for flow in truth["flows"]:  # named by the listing: it gives the port's number, not its name
            if flow.get("service") == svc["name"]:
                flow["service"] = f"{namespace}/{name}:{port}"
        truth["synthetic"] = True
        truth["synthetic_rewrites"] = REWRITES
        truth["kube_proxy"] = "ipvs"
        return pack_derived(bundle, truth, dst)


if __name__ == "__main__":
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])))
