"""Write the synthetic sample bundle `sample_data/two-node-vxlan.tgz`.

A stand-in until the real-kernel lab (issue 3) produces samples: two Calico nodes with VXLAN,
a pod-to-pod TCP connection across nodes, a ClusterIP connection DNATed by kube-proxy, and a
connection denied by policy. Pcaps are written with dpkt; the state dumps use the exact forms of
the tools (iptables-save -c, conntrack -L -o extended,id, ip link, ip route). Labelled synthetic
in metadata.json. Deterministic: the same bytes every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import dpkt

OUT = Path(__file__).resolve().parent / "two-node-vxlan.tgz"
T0 = 1_764_331_200.0  # 2025-11-28 12:00:00 UTC
NODE_A, NODE_B = "10.0.0.11", "10.0.0.12"
POD_A, POD_B, POD_DENIED = "192.168.10.5", "192.168.20.7", "192.168.20.9"
CLUSTER_IP = "10.96.0.50"
VNI = 4096


def veth(namespace: str, pod: str) -> str:
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


IF_A = veth("default", "client")
IF_B = veth("default", "web")
IF_DENIED = veth("secure", "db")


def ip4(s: str) -> bytes:
    return bytes(int(x) for x in s.split("."))


def tcp_packet(src, dst, sport, dport, flags, seq, ack, payload=b"", ip_id=1, ttl=64) -> dpkt.ip.IP:
    t = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=64240, data=payload)
    if flags & dpkt.tcp.TH_SYN:
        t.opts = b"\x02\x04\x05\x82"  # MSS 1410
        t.off = 6
    p = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=6, id=ip_id, ttl=ttl, data=t)
    p.len = len(bytes(p))
    return p


def eth(payload: dpkt.ip.IP) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=b"\xee" * 6, dst=b"\x02\x00\x00\x00\x00\x01", type=0x0800, data=payload))


def vxlan(inner: dpkt.ip.IP, outer_src: str, outer_dst: str, ip_id: int) -> bytes:
    inner_frame = eth(inner)
    vx = b"\x08\x00\x00\x00" + VNI.to_bytes(3, "big") + b"\x00" + inner_frame
    u = dpkt.udp.UDP(sport=40000 + ip_id % 1000, dport=4789, data=vx)
    u.ulen = len(bytes(u))
    o = dpkt.ip.IP(src=ip4(outer_src), dst=ip4(outer_dst), p=17, id=ip_id + 30000, ttl=64, data=u)
    o.len = len(bytes(o))
    return eth(o)


def write_pcap(records: list[tuple[float, bytes]]) -> bytes:
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB, nano=True)
    for ts, frame in records:
        w.writepkt(frame, ts=ts)
    return buf.getvalue()


def conversations() -> dict[str, list[tuple[float, bytes]]]:
    caps: dict[str, list[tuple[float, bytes]]] = {
        f"node-a/{IF_A}": [],
        "node-a/vxlan.calico": [],
        "node-a/eth0": [],
        f"node-b/{IF_B}": [],
        "node-b/vxlan.calico": [],
        "node-b/eth0": [],
        f"node-b/{IF_DENIED}": [],
    }
    hop = 0.00004  # 40 us between capture points

    def a_to_b(t, pkt: dpkt.ip.IP, ip_id: int, dst_iface: str) -> None:
        caps[f"node-a/{IF_A}"].append((t, eth(pkt)))
        routed = dpkt.ip.IP(bytes(pkt))
        routed.ttl -= 1
        routed.sum = 0
        caps["node-a/vxlan.calico"].append((t + hop, eth(routed)))
        caps["node-a/eth0"].append((t + 2 * hop, vxlan(routed, NODE_A, NODE_B, ip_id)))
        caps["node-b/eth0"].append((t + 0.0003, vxlan(routed, NODE_A, NODE_B, ip_id)))
        caps["node-b/vxlan.calico"].append((t + 0.0003 + hop, eth(routed)))
        if dst_iface:
            final = dpkt.ip.IP(bytes(routed))
            final.ttl -= 1
            final.sum = 0
            caps[f"node-b/{dst_iface}"].append((t + 0.0003 + 2 * hop, eth(final)))

    def b_to_a(t, pkt: dpkt.ip.IP, ip_id: int) -> None:
        caps[f"node-b/{IF_B}"].append((t, eth(pkt)))
        routed = dpkt.ip.IP(bytes(pkt))
        routed.ttl -= 1
        routed.sum = 0
        caps["node-b/vxlan.calico"].append((t + hop, eth(routed)))
        caps["node-b/eth0"].append((t + 2 * hop, vxlan(routed, NODE_B, NODE_A, ip_id)))
        caps["node-a/eth0"].append((t + 0.0003, vxlan(routed, NODE_B, NODE_A, ip_id)))
        caps["node-a/vxlan.calico"].append((t + 0.0003 + hop, eth(routed)))
        final = dpkt.ip.IP(bytes(routed))
        final.ttl -= 1
        final.sum = 0
        caps[f"node-a/{IF_A}"].append((t + 0.0003 + 2 * hop, eth(final)))

    S, SA, A, PA, FA = (
        dpkt.tcp.TH_SYN,
        dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK,
        dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK,
    )
    # 1. pod to pod across nodes: client:41000 -> web:8080
    t = T0 + 1.0
    a_to_b(t, tcp_packet(POD_A, POD_B, 41000, 8080, S, 1000, 0, ip_id=101), 101, IF_B)
    b_to_a(t + 0.001, tcp_packet(POD_B, POD_A, 8080, 41000, SA, 5000, 1001, ip_id=201), 201)
    a_to_b(t + 0.002, tcp_packet(POD_A, POD_B, 41000, 8080, A, 1001, 5001, ip_id=102), 102, IF_B)
    a_to_b(t + 0.003, tcp_packet(POD_A, POD_B, 41000, 8080, PA, 1001, 5001, b"GET / HTTP/1.1\r\n\r\n", 103), 103, IF_B)
    b_to_a(t + 0.004, tcp_packet(POD_B, POD_A, 8080, 41000, PA, 5001, 1019, b"HTTP/1.1 200 OK\r\n\r\n", 202), 202)
    a_to_b(t + 0.005, tcp_packet(POD_A, POD_B, 41000, 8080, FA, 1019, 5020, ip_id=104), 104, IF_B)
    b_to_a(t + 0.006, tcp_packet(POD_B, POD_A, 8080, 41000, FA, 5020, 1020, ip_id=203), 203)
    # 2. ClusterIP: client dials 10.96.0.50:80; on node-a's veth the packet is pre-DNAT, after it web:8080
    t = T0 + 2.0
    syn = tcp_packet(POD_A, CLUSTER_IP, 42000, 80, S, 7000, 0, ip_id=111)
    caps[f"node-a/{IF_A}"].append((t, eth(syn)))
    dnat = tcp_packet(POD_A, POD_B, 42000, 8080, S, 7000, 0, ip_id=111, ttl=63)
    caps["node-a/vxlan.calico"].append((t + hop, eth(dnat)))
    caps["node-a/eth0"].append((t + 2 * hop, vxlan(dnat, NODE_A, NODE_B, 111)))
    caps["node-b/eth0"].append((t + 0.0003, vxlan(dnat, NODE_A, NODE_B, 111)))
    caps["node-b/vxlan.calico"].append((t + 0.0003 + hop, eth(dnat)))
    caps[f"node-b/{IF_B}"].append(
        (t + 0.0003 + 2 * hop, eth(tcp_packet(POD_A, POD_B, 42000, 8080, S, 7000, 0, ip_id=111, ttl=62)))
    )
    # 3. denied by policy on node-b: SYN and two retries reach vxlan.calico but never the db pod
    t = T0 + 3.0
    for k, delay in enumerate((0.0, 1.0, 3.0)):
        a_to_b(t + delay, tcp_packet(POD_A, POD_DENIED, 43000, 5432, S, 9000, 0, ip_id=121 + k), 121 + k, "")
    return caps


IPTABLES_B = f"""# Generated by iptables-nft-save v1.8.9 (nf_tables) on Fri Nov 28 12:00:10 2025
*nat
:PREROUTING ACCEPT [12:720]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [3:180]
:POSTROUTING ACCEPT [3:180]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-XGLOHA7QRQ3V22RZ - [0:0]
:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]
:cali-POSTROUTING - [0:0]
:cali-nat-outgoing - [0:0]
[5:300] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[1:60] -A KUBE-SERVICES -d {CLUSTER_IP}/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-XGLOHA7QRQ3V22RZ
[1:60] -A KUBE-SVC-XGLOHA7QRQ3V22RZ -m comment --comment "default/web:http -> {POD_B}:8080" -j KUBE-SEP-AAAAAAAAAAAAAAAA
[0:0] -A KUBE-SEP-AAAAAAAAAAAAAAAA -s {POD_B}/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
[1:60] -A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination {POD_B}:8080
[3:180] -A cali-POSTROUTING -m comment --comment "cali:Z-c7XtVd2Bq7s_hA" -j cali-nat-outgoing
[0:0] -A cali-nat-outgoing -m comment --comment "cali:flqWnvo8yq4ULQLa" -m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully
COMMIT
*filter
:INPUT ACCEPT [100:6000]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [90:5400]
:cali-FORWARD - [0:0]
:cali-to-wl-dispatch - [0:0]
:cali-tw-{IF_B} - [0:0]
:cali-tw-{IF_DENIED} - [0:0]
:cali-pi-_tTE-E7yY40ogArNVgKt - [0:0]
:cali-pri-kns.secure - [0:0]
[40:2400] -A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD
[40:2400] -A cali-FORWARD -m comment --comment "cali:vjrMJCRpqwy5oRoX" -j cali-to-wl-dispatch
[21:1260] -A cali-to-wl-dispatch -o {IF_B} -m comment --comment "cali:HXVRf6Z6uKzV4YrZ" -g cali-tw-{IF_B}
[3:180] -A cali-to-wl-dispatch -o {IF_DENIED} -m comment --comment "cali:8Uj0vX3XA3tJ3dxe" -g cali-tw-{IF_DENIED}
[18:1080] -A cali-tw-{IF_B} -m comment --comment "cali:b1WkHxYvnKzQ8L3f" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[0:0] -A cali-tw-{IF_B} -m comment --comment "cali:3nqEHVPdz9hVhgxw" -m conntrack --ctstate INVALID -j DROP
[2:120] -A cali-tw-{IF_B} -m comment --comment "cali:HqDZuW76n3mdpCix" -j MARK --set-xmark 0x0/0x10000
[2:120] -A cali-tw-{IF_B} -m comment --comment "cali:pSb6ZlZtTU8Ku7wL" -j cali-pri-kns.default
[2:120] -A cali-tw-{IF_B} -m comment --comment "cali:RnZHt9r_TDuk8NI7" -m comment --comment "Return if profile accepted" -m mark --mark 0x10000/0x10000 -j RETURN
[0:0] -A cali-tw-{IF_DENIED} -m comment --comment "cali:a1b2c3d4e5f6g7h8" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[3:180] -A cali-tw-{IF_DENIED} -m comment --comment "cali:HqDZuW76n3mdpCiy" -j MARK --set-xmark 0x0/0x10000
[3:180] -A cali-tw-{IF_DENIED} -m comment --comment "cali:1ZzAbQ9nU4fNq2kd" -m comment --comment "Start of tier default" -j MARK --set-xmark 0x0/0x20000
[3:180] -A cali-tw-{IF_DENIED} -m comment --comment "cali:yWm8oY1YDuoYpkS6" -m mark --mark 0x0/0x20000 -j cali-pi-_tTE-E7yY40ogArNVgKt
[0:0] -A cali-tw-{IF_DENIED} -m comment --comment "cali:RnZHt9r_TDuk8NI8" -m comment --comment "Return if policy accepted" -m mark --mark 0x10000/0x10000 -j RETURN
[3:180] -A cali-tw-{IF_DENIED} -m comment --comment "cali:mFJHSWPsX6BjHV5u" -m comment --comment "End of tier default. Drop if no policies passed packet" -m mark --mark 0x0/0x20000 -j DROP
[0:0] -A cali-tw-{IF_DENIED} -m comment --comment "cali:s2Jrc8hOvqYYH_jj" -m comment --comment "Drop if no profiles matched" -j DROP
[3:180] -A cali-pi-_tTE-E7yY40ogArNVgKt -m comment --comment "cali:M4Und37HGrw6jUk8" -m comment --comment "Policy secure/default.db-allow-app ingress" -m set --match-set cali40s:LrVD8vMIGQDyv8Y7sPFB1Ge src -j MARK --set-xmark 0x10000/0x10000
COMMIT
# Completed on Fri Nov 28 12:00:10 2025
"""

CONNTRACK_A = f"""ipv4     2 tcp      6 117 TIME_WAIT src={POD_A} dst={POD_B} sport=41000 dport=8080 packets=4 bytes=238 src={POD_B} dst={POD_A} sport=8080 dport=41000 packets=3 bytes=189 [ASSURED] mark=0 zone=0 use=1 id=3121428001
ipv4     2 tcp      6 118 SYN_SENT src={POD_A} dst={CLUSTER_IP} sport=42000 dport=80 packets=1 bytes=60 [UNREPLIED] src={POD_B} dst={POD_A} sport=8080 dport=42000 packets=0 bytes=0 mark=0 zone=0 use=1 id=3121428002
ipv4     2 tcp      6 115 SYN_SENT src={POD_A} dst={POD_DENIED} sport=43000 dport=5432 packets=3 bytes=180 [UNREPLIED] src={POD_DENIED} dst={POD_A} sport=5432 dport=43000 packets=0 bytes=0 mark=0 zone=0 use=1 id=3121428003
"""
CONNTRACK_B = """conntrack v1.4.7 (conntrack-tools): Invalid commands combination
Try `conntrack -h' or 'conntrack --help' for more information.
"""


def ip_link(iface: str, peer_index: int, index: int) -> str:
    return (
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\n"
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP mode DEFAULT group default qlen 1000\n"
        "    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff\n"
        "3: vxlan.calico: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default\n"
        "    link/ether 66:5c:3e:2b:1a:01 brd ff:ff:ff:ff:ff:ff\n"
        f"{index}: {iface}@if{peer_index}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UP mode DEFAULT group default\n"
        "    link/ether ee:ee:ee:ee:ee:ee brd ff:ff:ff:ff:ff:ff link-netns cni-1234\n"
    )


def files() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, recs in conversations().items():
        node, iface = key.split("/")
        out[f"nodes/{node}/pcaps/{iface}.pcap"] = write_pcap(sorted(recs))
    out["nodes/node-a/conntrack-list.txt"] = CONNTRACK_A.encode()
    out["nodes/node-b/conntrack-list.txt"] = CONNTRACK_B.encode()
    out["nodes/node-b/iptables-nft-save.txt"] = IPTABLES_B.encode()
    out["nodes/node-b/iptables-legacy-save.txt"] = b"iptables-legacy-save: command not found\n"
    out["nodes/node-a/ip-link.txt"] = ip_link(IF_A, 2, 7).encode()
    out["nodes/node-b/ip-link.txt"] = (ip_link(IF_B, 2, 8) + ip_link(IF_DENIED, 2, 9).split("\n", 6)[6]).encode()
    out["nodes/node-a/ip-route.txt"] = (
        f"default via 10.0.0.1 dev eth0 proto dhcp src {NODE_A} metric 100\n"
        f"10.0.0.0/24 dev eth0 proto kernel scope link src {NODE_A}\n"
        "blackhole 192.168.10.0/26 proto 80\n"
        f"{POD_A} dev {IF_A} scope link\n"
        "192.168.20.0/26 via 192.168.20.0 dev vxlan.calico onlink\n"
    ).encode()
    out["nodes/node-b/ip-route.txt"] = (
        f"default via 10.0.0.1 dev eth0 proto dhcp src {NODE_B} metric 100\n"
        f"{POD_B} dev {IF_B} scope link\n{POD_DENIED} dev {IF_DENIED} scope link\n"
        "192.168.10.0/26 via 192.168.10.0 dev vxlan.calico onlink\n"
    ).encode()
    out["metadata.json"] = json.dumps(
        {
            "synthetic": True,
            "generator": "sample_data/make_samples.py",
            "note": "Synthetic stand-in for a real-kernel lab bundle: pcaps written with dpkt, state dumps in the "
            "tools' exact output forms. Not captured on a kernel.",
            "nodes": {"node-a": NODE_A, "node-b": NODE_B},
        },
        indent=2,
        sort_keys=True,
    ).encode()
    return out


def write_bundle(path: Path = OUT) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files().items()):
            info = tarfile.TarInfo(f"two-node-vxlan/{name}")
            info.size = len(data)
            info.mtime = int(T0)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    import gzip

    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


if __name__ == "__main__":
    print(write_bundle())
