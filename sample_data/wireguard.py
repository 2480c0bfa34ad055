"""Derive a synthetic WireGuard bundle from a real lab run at Calico's WireGuard MTU (this kernel has
no wireguard module).

The base run is the VXLAN lab with a 1440-byte overlay (`lab.py --tunnel-mtu 1440`), so the pods'
packets have the sizes a `wireguard.cali` device (MTU 1500 - 60) would carry. Rewritten, by the
rules of the shared WireGuard reference (section D):

- `vxlan.calico` captures become `wireguard.cali` captures: the inner IP packets as they were,
  link type RAW (a wireguard device is ARPHRD_NONE). Super-packets larger than the MTU stay: the
  tap runs before WireGuard splits them (GSO) and after the receiver merges them (GRO);
- every VXLAN packet on the uplinks becomes WireGuard data messages between the same node
  addresses, UDP 51820 -> 51820: type 4, the receiver's index, a per-session counter rising by one
  per message, ciphertext of the padded plaintext plus a 16-byte tag, so UDP payload =
  32 + min(1440, roundup16(L)). A super-packet becomes one message per TCP segment of at most the
  MTU. The sender's and the receiver's copies are the same messages;
- each direction starts with a handshake (initiation 148 B, response 92 B, TOS 0x88), is rekeyed
  once half way (a new handshake, new indexes, counters from 0) and ends with a keepalive (32 B);
- `ip link`/`ip addr`/`ip route`/`ip rule`, conntrack and metadata are rewritten to match (a
  `wireguard.cali` device, routes in table 1 behind the fwmark rule, UDP 51820 conntrack entries).

The metadata of every node and the ground truth say exactly what was rewritten; the ground truth
lists every plaintext ↔ message pair, which the tests check the analyzer's matching against.

    python sample_data/wireguard.py lab-wg-base.tgz lab-wireguard.tgz
"""

from __future__ import annotations

import json
import random
import re
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive import checksum, pack_derived, read_pcap, replace_vxlan_device, unpack, write_pcap

WG_PORT, WG_MTU, WG_MARK, WG_TABLE = 51820, 1440, 0x200000, 1
HANDSHAKE_TOS = 0x88
REWRITES = [
    "pcaps/vxlan.calico.pcap -> pcaps/wireguard.cali.pcap: inner Ethernet header removed, link type RAW",
    "pcaps/eth0.pcap: each VXLAN packet -> WireGuard data messages (UDP 51820, type 4, receiver index, counter, "
    "random ciphertext of the size rule; one message per TCP segment of a super-packet); per direction a handshake "
    "before the first message, a rekey half way and a keepalive at the end (real WireGuard shares one handshake "
    "between both directions)",
    "ip-link.txt, ip-addr.txt: vxlan.calico -> wireguard.cali (MTU 1440)",
    "ip-route.txt: remote pod blocks via table 1 on wireguard.cali (main table: via the peer on eth0); "
    "ip-rule.txt: not fwmark 0x200000/0x200000 lookup 1",
    "conntrack-list.txt: UDP 4789 entries -> UDP 51820 entries",
]


def padded(length: int, mtu: int = WG_MTU) -> int:
    """Plaintext length after WireGuard's padding (send.c calculate_skb_padding)."""
    last = length % mtu if length > mtu else length
    return length + min(mtu, (last + 15) // 16 * 16) - last


def _segments(inner: bytes, mtu: int = WG_MTU) -> list[bytes]:
    """A TCP super-packet cut into segments of at most the MTU, as GSO cuts it (headers copied,
    sequence numbers advanced, IP id incremented, lengths and checksums fixed)."""
    if len(inner) <= mtu or inner[9] != 6:
        return [inner]
    ihl = (inner[0] & 0x0F) * 4
    doff = (inner[ihl + 12] >> 4) * 4
    head, payload = inner[: ihl + doff], inner[ihl + doff :]
    mss = mtu - ihl - doff
    out = []
    seq = struct.unpack_from("!I", inner, ihl + 4)[0]
    ip_id = struct.unpack_from("!H", inner, 4)[0]
    for k in range(0, len(payload), mss):
        chunk = payload[k : k + mss]
        seg = bytearray(head + chunk)
        struct.pack_into("!H", seg, 2, len(seg))
        struct.pack_into("!H", seg, 4, (ip_id + k // mss) & 0xFFFF)
        struct.pack_into("!H", seg, 10, 0)
        struct.pack_into("!H", seg, 10, checksum(bytes(seg[:ihl])))
        struct.pack_into("!I", seg, ihl + 4, (seq + k) & 0xFFFFFFFF)
        if k + mss < len(payload):  # PSH and FIN only on the last segment
            seg[ihl + 13] &= ~0x09 & 0xFF
        out.append(bytes(seg))
    return out


class Session:
    """One direction's WireGuard keypair: the receiver's index and the next counter."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.index = rng.getrandbits(32)
        self.counter = 0

    def data(self, plaintext_len: int) -> bytes:
        body = struct.pack("<BxxxIQ", 4, self.index, self.counter)
        self.counter += 1
        return body + self.rng.randbytes(padded(plaintext_len) + 16 if plaintext_len else 16)


def _outer(eth: bytes, src: bytes, dst: bytes, payload: bytes, ip_id: int, tos: int = 0) -> bytes:
    udp = struct.pack("!HHHH", WG_PORT, WG_PORT, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(udp), ip_id & 0xFFFF, 0, 64, 17, 0, src, dst))
    struct.pack_into("!H", ip, 10, checksum(bytes(ip)))
    pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return eth[:14] + bytes(ip) + udp


def _vxlan_inner(frame: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(outer src, outer dst, inner IP packet) of an IPv4 VXLAN frame, else None."""
    if len(frame) < 64 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    if struct.unpack_from("!H", frame, 36)[0] != 4789:
        return None
    inner_eth = frame[14 + 20 + 8 + 8 :]
    if inner_eth[12:14] != b"\x08\x00":
        return None
    return frame[26:30], frame[30:34], inner_eth[14:]


def convert(src: Path, dst: Path) -> Path:
    rng = random.Random(51820)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = unpack(src, Path(tmp) / "in")
        truth = json.loads((bundle / "ground_truth.json").read_text())
        nodes = {name: n for name, n in truth["nodes"].items()}
        ip_node = {bytes(int(x) for x in n["ip"].split(".")): name for name, n in nodes.items()}
        eth = {name: read_pcap(bundle / "nodes" / name / "pcaps" / "eth0.pcap") for name in nodes}
        tun = {name: read_pcap(bundle / "nodes" / name / "pcaps" / "vxlan.calico.pcap") for name in nodes}
        # the tunnel packets each direction carried, in order, as each end's uplink saw them
        carried: dict[tuple[str, str], dict[str, list]] = {}
        for name, frames in eth.items():
            for k, (ts, frame) in enumerate(frames):
                v = _vxlan_inner(frame)
                if v is None:
                    continue
                pair = (ip_node[v[0]], ip_node[v[1]])
                carried.setdefault(pair, {}).setdefault(name, []).append((k, ts, frame, v[2]))
        new_eth: dict[str, list[tuple[int, bytes, str]]] = {n: [] for n in nodes}  # (ts, frame, note)
        for name, frames in eth.items():
            for ts, frame in frames:
                if _vxlan_inner(frame) is None:
                    new_eth[name].append((ts, frame, ""))
        pairs_truth: list[dict] = []
        sessions_truth: list[dict] = []
        for (a, b), seen in sorted(carried.items()):
            sender, receiver = seen[a], seen[b]
            assert [x[3] for x in sender] == [x[3] for x in receiver], "both uplinks saw the same tunnel packets"
            half = len(sender) // 2
            src_ip, dst_ip = (bytes(int(x) for x in nodes[n]["ip"].split(".")) for n in (a, b))
            ip_id = rng.getrandbits(16)
            session = None
            for k, ((_, ts_a, frame_a, inner), (_, ts_b, frame_b, _)) in enumerate(zip(sender, receiver, strict=True)):
                if k in (0, half):  # handshake: a new session before the first message and half way
                    initiator_index = rng.getrandbits(32)
                    session = Session(rng)
                    init = struct.pack("<BxxxI", 1, initiator_index) + rng.randbytes(140)
                    resp = struct.pack("<BxxxII", 2, session.index, initiator_index) + rng.randbytes(80)
                    for offset, payload, there in ((-400_000, init, (a, b)), (-200_000, resp, (b, a))):
                        for node, when, eth_frame in ((a, ts_a, frame_a), (b, ts_b, frame_b)):
                            s, d = (src_ip, dst_ip) if there == (a, b) else (dst_ip, src_ip)
                            new_eth[node].append(
                                (when + offset, _outer(eth_frame, s, d, payload, ip_id, HANDSHAKE_TOS), "handshake")
                            )
                            ip_id += 1
                    sessions_truth.append({"from": a, "to": b, "receiver_index": session.index, "messages": 0})
                segments = _segments(inner)
                for s_no, segment in enumerate(segments):
                    message = session.data(len(segment))
                    sessions_truth[-1]["messages"] += 1
                    # the sender's segments leave after the uplink time the tunnel packet had, 100 ns apart;
                    # the receiver's arrive by then (its plaintext, merged again, shows after them)
                    sent, received = ts_a + s_no * 100, ts_b - (len(segments) - 1 - s_no) * 100
                    for node, when, eth_frame in ((a, sent, frame_a), (b, received, frame_b)):
                        new_eth[node].append((when, _outer(eth_frame, src_ip, dst_ip, message, ip_id), "data"))
                    ip_id += 1
                    pairs_truth.append(
                        {
                            "from": a,
                            "to": b,
                            "tunnel_packet": k,
                            "segment": s_no,
                            "segments": len(segments),
                            "inner_len": len(inner),
                            "segment_len": len(segment),
                            "udp_payload": len(message),
                            "receiver_index": session.index,
                            "counter": session.counter - 1,
                            "sender_ts_ns": sent,
                            "receiver_ts_ns": received,
                        }
                    )
            keepalive = session.data(0)
            sessions_truth[-1]["messages"] += 1
            last_a, last_b = sender[-1][1], receiver[-1][1]
            for node, when, eth_frame in ((a, last_a, sender[-1][2]), (b, last_b, receiver[-1][2])):
                new_eth[node].append(
                    (when + 200_000_000, _outer(eth_frame, src_ip, dst_ip, keepalive, ip_id), "keepalive")
                )
            ip_id += 1
        for name in nodes:
            node_dir = bundle / "nodes" / name
            frames = sorted(new_eth[name], key=lambda x: x[0])
            write_pcap(node_dir / "pcaps" / "eth0.pcap", [(ts, f) for ts, f, _ in frames], 1)
            raw = [(ts, f[14:]) for ts, f in tun[name] if f[12:14] == b"\x08\x00"]
            write_pcap(node_dir / "pcaps" / "wireguard.cali.pcap", raw, 101)
            (node_dir / "pcaps" / "vxlan.calico.pcap").unlink()
            _rewrite_state(node_dir, name, nodes)
            meta = json.loads((node_dir / "metadata.json").read_text())
            for iface in meta["capture"]["interfaces"]:
                if iface["name"] == "vxlan.calico":
                    iface.update(name="wireguard.cali", file="pcaps/wireguard.cali.pcap", packets_captured=len(raw))
                    iface["stderr"] = [
                        "tcpdump: listening on wireguard.cali, link-type RAW (Raw IP), snapshot length 262144 bytes"
                    ]
                elif iface["name"] == "eth0":
                    iface.update(packets_captured=len(frames), received_by_filter=len(frames))
            meta.update(synthetic=True, synthetic_source=src.name, synthetic_rewrites=REWRITES)
            (node_dir / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            # where each pair's messages ended up in this node's eth0 capture (1-based frame numbers)
            data_frames = [i + 1 for i, (_, _, note) in enumerate(frames) if note == "data"]
            order = sorted(
                (p for p in pairs_truth if name in (p["from"], p["to"])),
                key=lambda p: p["sender_ts_ns"] if p["from"] == name else p["receiver_ts_ns"],
            )
            assert len(order) == len(data_frames)
            for p, frame_no in zip(order, data_frames, strict=True):
                p["sender_frame" if p["from"] == name else "receiver_frame"] = frame_no
            tun_no = {}
            for i, (_, f) in enumerate(raw):
                tun_no.setdefault(f, []).append(i + 1)
            for p in pairs_truth:
                if name in (p["from"], p["to"]):
                    inner = carried[(p["from"], p["to"])][name][p["tunnel_packet"]][3]
                    key = "sender_inner_frame" if p["from"] == name else "receiver_inner_frame"
                    p[key] = tun_no[inner][0] if len(tun_no[inner]) == 1 else tun_no[inner]
        truth["synthetic"] = True
        truth["synthetic_rewrites"] = REWRITES
        truth["encapsulation"] = {
            "type": "wireguard",
            "port": WG_PORT,
            "tunnel_mtu": WG_MTU,
            "underlay_mtu": truth["encapsulation"]["underlay_mtu"],
            "overhead_bytes": "60 + padding to 16 (outer IPv4 20 + UDP 8 + WireGuard header 16 + tag 16)",
        }
        for flow in truth["flows"]:
            for hop in flow["path"]:
                if hop["interface"] == "vxlan.calico":
                    hop["interface"] = "wireguard.cali"
            if "drop" in flow and flow["drop"]["last_seen"]["interface"] == "vxlan.calico":
                flow["drop"]["last_seen"]["interface"] = "wireguard.cali"
        truth["wireguard"] = {
            "mtu": WG_MTU,
            "pairs": pairs_truth,
            "sessions": sessions_truth,
            "handshakes_per_capture": 2 * sum(1 for _ in sessions_truth),
            "keepalives": len(carried),
        }
        return pack_derived(bundle, truth, dst)


def _wireguard_head(index: str) -> list[str]:
    return [
        f"{index}: wireguard.cali: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu {WG_MTU} qdisc noqueue state "
        "UNKNOWN mode DEFAULT group default qlen 1000",
        "    link/none ",
    ]


def _rewrite_state(node_dir: Path, name: str, nodes: dict) -> None:
    for file in ("ip-link.txt", "ip-addr.txt"):
        path = node_dir / file
        detail = "    wireguard addrgenmode none numtxqueues 1 numrxqueues 1"
        path.write_text(replace_vxlan_device(path.read_text(), _wireguard_head, detail, "wireguard.cali"))
    routes = []
    for line in (node_dir / "ip-route.txt").read_text().splitlines():
        m = re.match(r"^(\S+) via \S+ dev vxlan\.calico proto 80 onlink", line)
        if m:
            peer = next(n for n in nodes.values() if n["block"] == m.group(1))
            routes.append(f"{m.group(1)} via {peer['ip']} dev eth0 proto 80 onlink ")
            routes.append(f"{m.group(1)} dev wireguard.cali table {WG_TABLE} proto 80 scope link ")
            continue
        if "vxlan.calico" in line:
            line = line.replace("vxlan.calico", "wireguard.cali")
        routes.append(line)
    (node_dir / "ip-route.txt").write_text("\n".join(routes) + "\n")
    v6 = node_dir / "ip-route-v6.txt"
    v6.write_text("\n".join(x for x in v6.read_text().splitlines() if "vxlan.calico" not in x) + "\n")
    (node_dir / "ip-rule.txt").write_text(
        "0:\tfrom all lookup local\n"
        f"99:\tnot from all fwmark {WG_MARK:#x}/{WG_MARK:#x} lookup {WG_TABLE}\n"
        "32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n"
    )
    neigh = node_dir / "ip-neigh.txt"
    neigh.write_text("\n".join(x for x in neigh.read_text().splitlines() if "vxlan.calico" not in x) + "\n")
    ct = node_dir / "conntrack-list.txt"
    lines = [x for x in ct.read_text().splitlines() if "dport=4789" not in x and "sport=4789" not in x]
    me = nodes[name]["ip"]
    for peer in (n["ip"] for n in nodes.values() if n["ip"] != me):
        lines.append(
            f"ipv4     2 udp      17 179 src={me} dst={peer} sport={WG_PORT} dport={WG_PORT} packets=40 bytes=9000 "
            f"src={peer} dst={me} sport={WG_PORT} dport={WG_PORT} packets=40 bytes=9000 [ASSURED] mark=0 use=1"
        )
    ct.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])))
