"""Derive a synthetic IPIP bundle from a real VXLAN lab bundle (this kernel has no ipip module).

Every VXLAN packet on a node's uplink is re-encapsulated as IPv4-in-IPv4 between the same node
addresses (outer header fields kept, protocol 4, lengths and checksum recomputed); the
`vxlan.calico` captures become `tunl0` captures (raw IP, as tcpdump records an ipip device); ICMP
frag-needed messages announce the IPIP MTU; the state dumps are rewritten to match (tunl0 device,
routes via node addresses, conntrack's generic protocol-4 entries). The metadata of every node and
the ground truth say exactly what was rewritten: `"synthetic": true`.

    python sample_data/ipip.py lab-vxlan.tgz lab-ipip.tgz
"""

from __future__ import annotations

import json
import re
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive import checksum, pack_derived, read_pcap, replace_vxlan_device, unpack, write_pcap

IPIP_OVERHEAD, IPIP_MTU, VXLAN_MTU = 20, 1480, 1450
REWRITES = [
    "pcaps/eth0.pcap: VXLAN (outer IPv4 + UDP 4789 + VXLAN + inner Ethernet) re-encapsulated as IPv4 protocol 4",
    "pcaps/vxlan.calico.pcap -> pcaps/tunl0.pcap: inner Ethernet header removed, link type RAW, IPv4 only",
    "pcaps/cali*.pcap: ICMP frag-needed next-hop MTU 1450 -> 1480",
    "ip-link.txt, ip-addr.txt: vxlan.calico -> tunl0 (ipip, MTU 1480)",
    "ip-route.txt, ip-neigh.txt: routes via the peer node address on tunl0",
    "conntrack-list.txt: UDP 4789 entries -> generic protocol 4 entries",
]


def _ipip_from_vxlan(frame: bytes) -> bytes:
    """Ethernet/IPv4/UDP 4789/VXLAN/Ethernet/IPv4 -> Ethernet/IPv4(proto 4)/IPv4; others unchanged."""
    if len(frame) < 14 + 20 + 8 + 8 + 14 or frame[12:14] != b"\x08\x00":
        return frame
    ihl = (frame[14] & 0x0F) * 4
    l4 = 14 + ihl
    if frame[14 + 9] != 17 or struct.unpack_from("!H", frame, l4 + 2)[0] != 4789:
        return frame
    inner_eth = l4 + 8 + 8
    if frame[inner_eth + 12 : inner_eth + 14] != b"\x08\x00":
        return b""  # inner ARP/IPv6 has no IPIP equivalent
    inner = frame[inner_eth + 14 :]
    outer = bytearray(frame[14 : 14 + ihl])
    outer[9] = 4
    struct.pack_into("!H", outer, 2, ihl + len(inner))
    struct.pack_into("!H", outer, 10, 0)
    struct.pack_into("!H", outer, 10, checksum(bytes(outer)))
    return frame[:14] + bytes(outer) + inner


def _fix_icmp_mtu(frame: bytes) -> bytes:
    """Rewrite an ICMP frag-needed's next-hop MTU from the VXLAN to the IPIP value."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 1:
        return frame
    icmp = 14 + (frame[14] & 0x0F) * 4
    if frame[icmp] != 3 or frame[icmp + 1] != 4 or struct.unpack_from("!H", frame, icmp + 6)[0] != VXLAN_MTU:
        return frame
    buf = bytearray(frame)
    struct.pack_into("!H", buf, icmp + 6, IPIP_MTU)
    struct.pack_into("!H", buf, icmp + 2, 0)
    struct.pack_into("!H", buf, icmp + 2, checksum(bytes(buf[icmp:])))
    return bytes(buf)


IPIP_DETAIL = "    ipip any remote any local any ttl inherit nopmtudisc"


def _tunl0_head(index: str) -> list[str]:
    return [
        f"{index}: tunl0@NONE: <NOARP,UP,LOWER_UP> mtu {IPIP_MTU} qdisc noqueue state UNKNOWN mode DEFAULT "
        "group default qlen 1000",
        "    link/ipip 0.0.0.0 brd 0.0.0.0",
    ]


def convert(src: Path, dst: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = unpack(src, Path(tmp) / "in")
        truth = json.loads((bundle / "ground_truth.json").read_text())
        tunnel_to_node = {n["tunnel_ip"]: n["ip"] for n in truth["nodes"].values()}
        for node_dir in sorted((bundle / "nodes").iterdir()):
            pcaps = node_dir / "pcaps"
            eth = [(ts, _ipip_from_vxlan(f)) for ts, f in read_pcap(pcaps / "eth0.pcap")]
            write_pcap(pcaps / "eth0.pcap", [(ts, f) for ts, f in eth if f], 1)
            tun = [(ts, f[14:]) for ts, f in read_pcap(pcaps / "vxlan.calico.pcap") if f[12:14] == b"\x08\x00"]
            write_pcap(pcaps / "tunl0.pcap", tun, 101)
            (pcaps / "vxlan.calico.pcap").unlink()
            for cap in pcaps.glob("cali*.pcap"):
                write_pcap(cap, [(ts, _fix_icmp_mtu(f)) for ts, f in read_pcap(cap)], 1)
            for name in ("ip-link.txt", "ip-addr.txt"):
                path = node_dir / name
                path.write_text(replace_vxlan_device(path.read_text(), _tunl0_head, IPIP_DETAIL, "tunl0"))
            for name in ("ip-route.txt", "ip-neigh.txt"):
                text = (node_dir / name).read_text()
                for tunnel_ip, node_ip in tunnel_to_node.items():
                    text = text.replace(f"via {tunnel_ip} dev vxlan.calico", f"via {node_ip} dev tunl0")
                text = "\n".join(x for x in text.splitlines() if "lladdr" not in x or "vxlan.calico" not in x)
                (node_dir / name).write_text(text.replace("vxlan.calico", "tunl0") + "\n")
            ct = node_dir / "conntrack-list.txt"
            lines, pairs = [], []
            for line in ct.read_text().splitlines():
                m = re.search(r"udp\s+17 \d+ src=(\S+) dst=(\S+) sport=\d+ dport=4789", line)
                if m:
                    if m.groups() not in pairs:
                        pairs.append(m.groups())
                    continue
                lines.append(line)
            for a, b in pairs:
                lines.append(
                    f"ipv4     2 unknown  4 599 src={a} dst={b} [UNREPLIED] src={b} dst={a} mark=0 zone=0 use=1"
                )
            ct.write_text("\n".join(lines) + "\n")
            meta = json.loads((node_dir / "metadata.json").read_text())
            meta.update(synthetic=True, synthetic_source=src.name, synthetic_rewrites=REWRITES)
            (node_dir / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        truth["synthetic"] = True
        truth["synthetic_rewrites"] = REWRITES
        truth["encapsulation"] = {
            "type": "ipip",
            "overhead_bytes": IPIP_OVERHEAD,
            "tunnel_mtu": IPIP_MTU,
            "underlay_mtu": truth["encapsulation"]["underlay_mtu"],
        }
        for flow in truth["flows"]:
            for hop in flow["path"]:
                if hop["interface"] == "vxlan.calico":
                    hop["interface"] = "tunl0"
            if "drop" in flow and flow["drop"]["last_seen"]["interface"] == "vxlan.calico":
                flow["drop"]["last_seen"]["interface"] = "tunl0"
            if "mtu" in flow:
                flow["mtu"]["mtu"] = IPIP_MTU
        return pack_derived(bundle, truth, dst)


if __name__ == "__main__":
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])))
