"""Helpers for tests that write their own captures with dpkt."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import dpkt

from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers.packets import decode_frames
from calforensics.ingest.parsers.pcap import read_frames


def ip4(s: str) -> bytes:
    return bytes(int(x) for x in s.split("."))


def tcp4(
    src="10.0.0.1",
    dst="10.0.0.2",
    sport=1234,
    dport=80,
    flags=dpkt.tcp.TH_SYN,
    seq=100,
    ack=0,
    payload=b"",
    ip_id=7,
    ttl=64,
    opts=b"",
) -> dpkt.ip.IP:
    t = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, data=payload, opts=opts)
    t.off = 5 + len(opts) // 4
    p = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=6, id=ip_id, ttl=ttl, data=t)
    p.len = len(bytes(p))
    return p


def udp4(src="10.0.0.1", dst="10.0.0.2", sport=5000, dport=53, payload=b"q", ip_id=9) -> dpkt.ip.IP:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    u.ulen = len(bytes(u))
    p = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=17, id=ip_id, data=u)
    p.len = len(bytes(p))
    return p


def eth(payload, etype=0x0800) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=etype, data=bytes(payload)))


def vxlan_frame(inner: dpkt.ip.IP, vni=4096, dport=4789, outer=("172.16.0.1", "172.16.0.2")) -> bytes:
    vx = b"\x08\x00\x00\x00" + vni.to_bytes(3, "big") + b"\x00" + eth(inner)
    u = dpkt.udp.UDP(sport=33333, dport=dport, data=vx)
    u.ulen = len(bytes(u))
    o = dpkt.ip.IP(src=ip4(outer[0]), dst=ip4(outer[1]), p=17, id=999, data=u)
    o.len = len(bytes(o))
    return eth(o)


def write_pcap(
    path: Path,
    frames: list[bytes],
    linktype=1,
    nano=False,
    big_endian=False,
    t0=1_700_000_000,
    times_ns: list[int] | None = None,
) -> Path:
    """Classic pcap written by hand so both byte orders and resolutions can be produced.

    Frames are a second apart unless ``times_ns`` (nanosecond timestamps; implies nano) is given.
    """
    nano = nano or times_ns is not None
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = io.BytesIO()
    out.write(struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
    for i, f in enumerate(frames):
        sec, frac = (t0 + i, (i * 1000 + 123) if nano else i + 1)
        if times_ns is not None:
            sec, frac = divmod(times_ns[i], 1_000_000_000)
        out.write(struct.pack(e + "IIII", sec, frac, len(f), len(f)))
        out.write(f)
    path.write_bytes(out.getvalue())
    return path


def decode(path: Path):
    log = AnomalyLog("pcap", str(path))
    fi = read_frames(path, log)
    return decode_frames(fi), log, fi
