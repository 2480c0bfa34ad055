"""Join benchmark: hops and flows over a generated two-node bundle with known rewrites.

Each packet of each connection is written at six capture points (client veth, vxlan.calico and
eth0 on node-a; eth0, vxlan.calico and the server veth on node-b): DNAT from a ClusterIP to the pod
between the client veth and the tunnel, VXLAN on the uplinks, and node-b's clock 2 ms ahead.
Replies take the reverse path. Prints hops/s for the hop matching and flows/s for the summaries,
and checks that the join recovered what was written. Run: `python bench/bench_join.py [--flows N]`.
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from pathlib import Path

import calforensics
import calforensics.analyses
import calforensics.bundle
import calforensics.render.report

NODE_A, NODE_B = "10.0.0.11", "10.0.0.12"
CLIENT, SERVER, VIP = "192.168.10.5", "192.168.20.7", "10.96.0.10"
SHIFT_B = 2_000_000  # node-b's clock is 2 ms ahead
ETH = b"\x02" * 6 + b"\x04" * 6


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def checksum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, ident: int, payload: bytes, ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0, ip4(src), ip4(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 64240, 0, 0) + data


def eth(payload: bytes) -> bytes:
    return ETH + b"\x08\x00" + payload


def vxlan(inner_ip: bytes, src: str, dst: str, ident: int) -> bytes:
    vx = b"\x08\x00\x00\x00" + (4096).to_bytes(3, "big") + b"\x00" + eth(inner_ip)
    udp = struct.pack("!HHHH", 40000 + ident % 20000, 4789, 8 + len(vx), 0) + vx
    return eth(ipv4(src, dst, 17, ident, udp))


def fragments(src: str, dst: str, ident: int, l4: bytes, mtu: int) -> list[bytes]:
    """An IPv4 datagram (no DF) cut as the kernel cuts it: payload multiples of 8 after a 20-byte header."""
    step = (mtu - 20) // 8 * 8
    out = []
    for off in range(0, len(l4), step):
        piece = l4[off : off + step]
        flags = (off // 8) | (0x2000 if off + step < len(l4) else 0)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), ident, flags, 64, 17, 0, ip4(src), ip4(dst))
        out.append(hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + piece)
    return out


def cooked_v1(frame: bytes, outgoing: bool) -> bytes:
    """An Ethernet frame as `tcpdump -i any` writes it in Linux cooked v1: packet type (4 sent by the
    node, 0 to it), ARPHRD_ETHER, address length, address, protocol; no interface index."""
    return struct.pack("!HHH8s", 4 if outgoing else 0, 1, 6, frame[6:12] + b"\0\0") + frame[12:]


class Writer:
    def __init__(self, path: Path, linktype: int = 1) -> None:
        self.fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
        self.buf: list[bytes] = []

    def add(self, ts: int, frame: bytes) -> None:
        self.buf.append(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(frame), len(frame)) + frame)
        if len(self.buf) > 50_000:
            self.fh.write(b"".join(self.buf))
            self.buf.clear()

    def close(self) -> None:
        self.fh.write(b"".join(self.buf))
        self.fh.close()


def write_bundle(root: Path, flows: int, packets_per_flow: int, fragment_every: int = 0, any_v1: bool = False) -> int:
    """The bundle; returns how many packet instances it holds. ``fragment_every``: every Nth
    instance is a 3000-byte UDP datagram the client pod fragments at 1500 bytes and node-a again at
    the tunnel's 1450. ``any_v1``: node-a's three points are one `tcpdump -i any` capture in Linux
    cooked v1 (no interface index: the packets are placed by direction and routes)."""
    points = {
        ("node-a", "calia7a3e029a7b"),
        ("node-a", "vxlan.calico"),
        ("node-a", "eth0"),
        ("node-b", "eth0"),
        ("node-b", "vxlan.calico"),
        ("node-b", "cali68caf03a5f4"),
    }
    writers = {}
    for node, iface in points:
        (root / "nodes" / node / "pcaps").mkdir(parents=True, exist_ok=True)
        if not (any_v1 and node == "node-a"):
            writers[(node, iface)] = Writer(root / "nodes" / node / "pcaps" / f"{iface}.pcap")
    if any_v1:
        any_a = Writer(root / "nodes" / "node-a" / "pcaps" / "any.pcap", linktype=113)
        for iface in ("calia7a3e029a7b", "vxlan.calico", "eth0"):
            writers[("node-a", iface)] = any_a
    for node, own, pod, iface in (
        ("node-a", NODE_A, CLIENT, "calia7a3e029a7b"),
        ("node-b", NODE_B, SERVER, "cali68caf03a5f4"),
    ):
        (root / "nodes" / node / "ip-addr.txt").write_text(
            f"2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq state UP\n"
            f"    link/ether 52:54:00:00:00:01 brd ff:ff:ff:ff:ff:ff\n    inet {own}/24 scope global eth0\n"
        )
        tunnel = "192.168.20.0/26 via 192.168.20.0 dev vxlan.calico onlink\n" if any_v1 and node == "node-a" else ""
        (root / "nodes" / node / "ip-route.txt").write_text(f"default dev eth0\n{pod} dev {iface} scope link\n{tunnel}")
    t = 1_700_000_000_000_000_000
    ident = 0
    instances = 0
    for f in range(flows):
        sport = 10000 + f % 50000
        for k in range(packets_per_flow):
            ident = (ident + 1) & 0xFFFF
            forward = k % 2 == 0
            seq = f * 1000 + k
            flags = 0x02 if k == 0 else 0x12 if k == 1 else 0x10
            if fragment_every and instances % fragment_every == fragment_every - 1:
                datagram = struct.pack("!HHHH", sport, 9000, 3008, 0) + bytes([f % 251]) * 3000
                at_pod, in_tunnel = (fragments(CLIENT, SERVER, ident, datagram, mtu) for mtu in (1500, 1450))
                hops = [(("node-a", "calia7a3e029a7b"), eth(p)) for p in at_pod]
                for point in (("node-a", "vxlan.calico"), ("node-b", "vxlan.calico"), ("node-b", "cali68caf03a5f4")):
                    hops += [(point, eth(p)) for p in in_tunnel]
                for node in ("node-a", "node-b"):
                    hops += [((node, "eth0"), vxlan(p, NODE_A, NODE_B, ident)) for p in in_tunnel]
                path = [("node-a", i) for i in ("calia7a3e029a7b", "vxlan.calico", "eth0")]
                path += [("node-b", i) for i in ("eth0", "vxlan.calico", "cali68caf03a5f4")]
                hops.sort(key=lambda x: path.index(x[0]))  # in path order, each point's fragments in order
                forward = True
            elif forward:
                pre = ipv4(CLIENT, VIP, 6, ident, tcp(sport, 80, seq, 0, flags, b"x" * (k % 3) * 100))
                post = ipv4(CLIENT, SERVER, 6, ident, tcp(sport, 8080, seq, 0, flags, b"x" * (k % 3) * 100), 63)
                hops = [
                    (("node-a", "calia7a3e029a7b"), eth(pre)),
                    (("node-a", "vxlan.calico"), eth(post)),
                    (("node-a", "eth0"), vxlan(post, NODE_A, NODE_B, ident)),
                    (("node-b", "eth0"), vxlan(post, NODE_A, NODE_B, ident)),
                    (("node-b", "vxlan.calico"), eth(post)),
                    (("node-b", "cali68caf03a5f4"), eth(post)),
                ]
            else:
                post = ipv4(SERVER, CLIENT, 6, ident, tcp(8080, sport, seq, seq, flags))
                pre = ipv4(VIP, CLIENT, 6, ident, tcp(80, sport, seq, seq, flags), 63)
                hops = [
                    (("node-b", "cali68caf03a5f4"), eth(post)),
                    (("node-b", "vxlan.calico"), eth(post)),
                    (("node-b", "eth0"), vxlan(post, NODE_B, NODE_A, ident)),
                    (("node-a", "eth0"), vxlan(post, NODE_B, NODE_A, ident)),
                    (("node-a", "vxlan.calico"), eth(post)),
                    (("node-a", "calia7a3e029a7b"), eth(pre)),
                ]
            for h, (point, frame) in enumerate(hops):
                wire = 50_000 if (point[0] == "node-b") == forward else 0
                shift = SHIFT_B if point[0] == "node-b" else 0
                if any_v1 and point[0] == "node-a":
                    frame = cooked_v1(frame, outgoing=(point[1] == "calia7a3e029a7b") != forward)
                writers[point].add(t + h * 10_000 + wire + shift, frame)
            instances += 1
            t += 200_000
    for w in set(writers.values()):
        w.close()
    return instances


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--packets-per-flow", type=int, default=10)
    ap.add_argument("--fragment-every", type=int, default=0, help="every Nth packet a datagram fragmented twice")
    ap.add_argument("--any-v1", action="store_true", help="node-a captured with `-i any` in Linux cooked v1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench-join"
        t = time.perf_counter()
        instances = write_bundle(root, args.flows, args.packets_per_flow, args.fragment_every, args.any_v1)
        gen_s = time.perf_counter() - t
        with calforensics.open_bundle(root) as b:
            t = time.perf_counter()
            packets = b.packets
            decode_s = time.perf_counter() - t
            from calforensics.join.flows import build_flows
            from calforensics.join.hops import address_owners, build_hops

            t = time.perf_counter()
            keep = b.datagrams.join_mask(len(packets))  # a reassembled datagram joins as its first fragment
            hops, offsets = build_hops(
                packets, b.captures, address_owners(b.interfaces, b.routes), keep=keep, datagrams=b.datagrams
            )
            hops_s = time.perf_counter() - t
            t = time.perf_counter()
            flows, hops = build_flows(hops, b.conntrack, b.rules, b.captures, b.routes)
            flows_s = time.perf_counter() - t
    offset_b = int(offsets.set_index("node").loc["node-b", "offset_ns"])
    unc_b = int(offsets.set_index("node").loc["node-b", "uncertainty_ns"])
    print(
        f"bundle: {args.flows:,} flows x {args.packets_per_flow} packets at 6 capture points "
        f"= {len(packets):,} frames (written in {gen_s:.1f} s)"
    )
    print(f"decode:        {len(packets) / decode_s:12,.0f} packets/s  ({decode_s:.2f} s)")
    print(
        f"hops:          {len(hops) / hops_s:12,.0f} hops/s     ({hops_s:.2f} s, {hops.instance.nunique():,} "
        f"instances; {instances:,} written)"
    )
    print(f"flows:         {len(flows) / flows_s:12,.0f} flows/s    ({flows_s:.2f} s, {len(flows):,} flows)")
    print(f"clock offset:  node-b {offset_b / 1e6:.3f} ms ± {unc_b / 1e3:.1f} µs (written: {SHIFT_B / 1e6:.3f} ms)")
    tcp, datagrams = flows[flows.proto == "tcp"], flows[flows.proto == "udp"]  # udp: the fragmented datagrams
    ok = (
        hops.instance.nunique() == instances
        and len(tcp) == args.flows
        and abs(offset_b - SHIFT_B) <= unc_b
        and (tcp.backend_ip == SERVER).all()
        and (tcp.server_ip == VIP).all()
        and (datagrams.server_ip == SERVER).all()
        and len(tcp) + len(datagrams) == len(flows)
    )
    print(f"recovered what was written: {ok}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
