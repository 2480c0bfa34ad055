"""Compare our decoded packets with tshark's view of the same file (used by conformance tests)."""

from __future__ import annotations

import subprocess

import pandas as pd

FIELDS = [
    "frame.number",
    "frame.encap_type",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "frame.protocols",
]


def tshark_frames(path: str, extra: list[str] | None = None) -> list[dict[str, str]]:
    """Innermost addresses/ports per frame, as tshark sees them (last occurrence of each field)."""
    cmd = ["tshark", "-n", "-r", path, "-T", "fields", "-E", "occurrence=l", "-E", "separator=\t"]
    cmd += extra or []
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) != len(FIELDS):
            continue
        rec = dict(zip(FIELDS, parts, strict=True))
        if not rec["frame.encap_type"]:
            continue  # a pcapng custom block that tshark shows as a frame; not a packet
        stack = rec["frame.protocols"].split(":")
        l3_at = [i for i, p in enumerate(stack) if p in ("ip", "ipv6")]
        l3 = [stack[i] for i in l3_at]
        # an L4 header before the innermost IP header belongs to an outer layer (e.g. VXLAN's UDP)
        l4 = [p for i, p in enumerate(stack) if p in ("tcp", "udp") and (not l3_at or i > l3_at[-1])]
        rows.append(
            {
                "frame": int(rec["frame.number"]),
                "l3": l3[-1] if l3 else "",
                "src": rec["ip.src"] if l3 and l3[-1] == "ip" else rec["ipv6.src"] if l3 else "",
                "dst": rec["ip.dst"] if l3 and l3[-1] == "ip" else rec["ipv6.dst"] if l3 else "",
                "l4": l4[-1] if l4 else "",
                "sport": rec[f"{l4[-1]}.srcport"] if l4 else "",
                "dport": rec[f"{l4[-1]}.dstport"] if l4 else "",
            }
        )
    return rows


def our_frames(packets: pd.DataFrame) -> list[dict[str, str]]:
    """The same view from our packets table: the quoted header for ICMP errors, else innermost."""
    rows = []
    for r in packets.itertuples(index=False):
        quoted = isinstance(r.q_src, str)
        src = r.q_src if quoted else r.src
        dst = r.q_dst if quoted else r.dst
        proto = r.q_proto if quoted else r.proto
        sport = r.q_sport if quoted else r.sport
        dport = r.q_dport if quoted else r.dport
        l4 = {6: "tcp", 17: "udp"}.get(int(proto), "") if sport >= 0 else ""
        rows.append(
            {
                "frame": int(r.frame),
                "src": src if isinstance(src, str) else "",
                "dst": dst if isinstance(dst, str) else "",
                "l4": l4,
                "sport": str(sport) if l4 else "",
                "dport": str(dport) if l4 else "",
            }
        )
    return rows
