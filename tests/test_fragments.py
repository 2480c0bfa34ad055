"""Fragments put back together at each capture point before the join (join/fragments.py).

Captures are written with dpkt and by hand: a datagram the pod fragments at its 1500-byte MTU on its
veth, and the node fragments again at the tunnel's 1450 inside VXLAN on its uplink. The datagram must
be one packet seen at both points, whatever its protocol or IP version; broken fragment sets must be
anomalies whose fragments still join one by one; and the reassembly must agree with a plain
per-datagram reference on arbitrary fragment sets (hypothesis).
"""

from __future__ import annotations

import ipaddress
import random
import struct

import dpkt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pktutil import eth, ip4, write_pcap

import calforensics
from calforensics.join.fragments import MAX_FRAGMENTS, REASSEMBLY_TIMEOUT_NS, reassemble

POD, SERVER = "192.168.10.9", "192.168.20.7"
POD6, SERVER6 = "fd00:10::9", "fd00:20::7"
VETH = "cali0123456789a"
T0 = 1_700_000_000_000_000_000


def ipv4_fragments(
    proto: int, l4: bytes, mtu: int, ip_id: int = 4321, src: str = POD, dst: str = SERVER
) -> list[bytes]:
    """An IPv4 datagram carrying ``l4`` cut as the kernel cuts it (ip_fragment): each fragment but
    the last carries the most multiple of 8 bytes that fits the MTU after a 20-byte header."""
    step = (mtu - 20) // 8 * 8
    out = []
    for offset in range(0, len(l4), step):
        piece = l4[offset : offset + step]
        flags = (offset // 8) | (0x2000 if offset + step < len(l4) else 0)
        head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), ip_id, flags, 64, proto, 0, ip4(src), ip4(dst))
        out.append(head[:10] + struct.pack(">H", dpkt.in_cksum(head)) + head[12:] + piece)
    return out


def ipv6_fragments(l4: bytes, mtu: int, ident: int = 0x5151, nh: int = 17) -> list[bytes]:
    """IPv6 fragments (fragment header after the fixed header) of ``l4``, at most ``mtu`` bytes each."""
    step = (mtu - 48) // 8 * 8
    out = []
    src, dst = (ipaddress.IPv6Address(a).packed for a in (POD6, SERVER6))
    for offset in range(0, len(l4), step):
        more = offset + step < len(l4)
        piece = l4[offset : offset + step]
        frag = struct.pack(">BBHI", nh, 0, offset | int(more), ident)
        head = struct.pack(">IHBB", 6 << 28, 8 + len(piece), 44, 64) + src + dst
        out.append(head + frag + piece)
    return out


def icmp_echo(size: int) -> tuple[int, bytes]:
    body = struct.pack(">HH", 77, 5) + bytes(random.Random(size).randrange(256) for _ in range(size))
    icmp = dpkt.icmp.ICMP(type=8, code=0, data=body)
    return 1, bytes(icmp)


def udp_payload(size: int) -> tuple[int, bytes]:
    data = bytes(random.Random(size + 1).randrange(256) for _ in range(size))
    u = dpkt.udp.UDP(sport=40000, dport=9000, data=data)
    u.ulen = 8 + size
    return 17, bytes(u)


def tcp_segment(size: int) -> tuple[int, bytes]:
    data = bytes(random.Random(size + 2).randrange(256) for _ in range(size))
    t = dpkt.tcp.TCP(sport=40001, dport=8080, seq=1000, ack=2000, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data=data)
    t.off = 5
    return 6, bytes(t)


def bundle(tmp_path, veth_frames: list[bytes], uplink_frames: list[bytes], v6: bool = False):
    """Node n1: the pod's veth and the uplink, one capture each, the uplink 30 µs behind."""
    d = tmp_path / "b" / "nodes" / "n1"
    (d / "pcaps").mkdir(parents=True)
    etype = 0x86DD if v6 else 0x0800
    write_pcap(
        d / "pcaps" / f"{VETH}.pcap",
        [eth(f, etype) for f in veth_frames],
        times_ns=[T0 + 1000 * i for i in range(len(veth_frames))],
    )
    write_pcap(
        d / "pcaps" / "eth0.pcap",
        uplink_frames,
        times_ns=[T0 + 30_000 + 1000 * i for i in range(len(uplink_frames))],
    )
    pod = f"{POD6}/128" if v6 else f"{POD}/32"
    (d / "ip-route.txt").write_text(f"{pod} dev {VETH} scope link\n")
    return tmp_path / "b"


def uplink(frames: list[bytes]) -> list[bytes]:
    """Inner IP packets (fragments) in VXLAN from node n1 to n2, as the uplink shows them, built from
    their bytes as they are (dpkt would re-serialise the inner packets)."""
    out = []
    for inner in frames:
        vx = (
            b"\x08\x00\x00\x00"
            + (4096).to_bytes(3, "big")
            + b"\x00"
            + eth(inner, 0x86DD if inner[0] >> 4 == 6 else 0x0800)
        )
        u = dpkt.udp.UDP(sport=33333, dport=4789, data=vx)
        u.ulen = len(bytes(u))
        o = dpkt.ip.IP(src=ip4("10.0.0.11"), dst=ip4("10.0.0.12"), p=17, id=999, data=u)
        o.len = len(bytes(o))
        out.append(eth(o))
    return out


@pytest.mark.parametrize("kind", ["icmp", "udp", "tcp"])
def test_a_datagram_fragmented_otherwise_at_each_point_is_one_packet(tmp_path, kind):
    """ICMP and TCP fragments carry no length that survives refragmenting (UDP's header does): only
    the datagram's own fingerprint makes the two points' first fragments one packet."""
    proto, l4 = {"icmp": icmp_echo, "udp": udp_payload, "tcp": tcp_segment}[kind](3000)
    at_pod = ipv4_fragments(proto, l4, 1500)
    at_tunnel = ipv4_fragments(proto, l4, 1450)
    assert (len(at_pod), len(at_tunnel)) == (3, 3) and [len(f) for f in at_pod] != [len(f) for f in at_tunnel]
    root = bundle(tmp_path, at_pod, uplink(at_tunnel))
    with calforensics.open_bundle(root) as b:
        assert len(b.datagrams) == 2 and list(b.datagrams.fragments) == [3, 3]
        h = b.hops
        assert len(h) == 2 and h.instance.nunique() == 1  # one datagram, seen at both points
        assert set(h.interface.astype(str)) == {VETH, "eth0"}
        assert (h.ip_len == 20 + len(l4)).all()
        assert len(b.flows) == 1 and b.flows.iloc[0].packets_fwd == 1 and b.flows.iloc[0].bytes_fwd == 20 + len(l4)
        assert len(b.anomalies) == 0
        report = calforensics.analyze(b)
        mtu = report.mtu_issues
        detail = mtu[mtu.kind == "fragmented"].detail.tolist()
        assert detail == [
            f"1 datagram(s) of {POD} -> {SERVER} (up to {20 + len(l4)} bytes) fragmented by the sending pod into 3 "
            f"(largest 1500 bytes) at n1:{VETH}; refragmented by n1 into 3 (largest 1444 bytes) at n1:eth0"
        ]
        tunnel = report.tunnels.iloc[0]
        assert tunnel.packets == 3  # every fragment is a VXLAN frame of its own
        assert tunnel.overhead_bytes == 3 * 50


def test_ipv6_fragments_are_put_back_together_too(tmp_path):
    """A node that forwards IPv6 fragments through conntrack defragments them and fragments them
    anew with a fragment id of its own (as the lab's kernel does): the datagram is still one packet."""
    _, l4 = udp_payload(3000)
    at_pod, at_tunnel = ipv6_fragments(l4, 1500, ident=0x5151), ipv6_fragments(l4, 1450, ident=0x7777)
    root = bundle(tmp_path, at_pod, uplink(at_tunnel), v6=True)
    with calforensics.open_bundle(root) as b:
        assert list(b.datagrams.fragments) == [3, 3]
        assert list(b.datagrams.length) == [40 + len(l4)] * 2
        h = b.hops
        assert len(h) == 2 and h.instance.nunique() == 1
        assert b.flows.iloc[0].server_port == 9000 and len(b.anomalies) == 0


def test_broken_fragment_sets_are_anomalies_and_their_fragments_join_one_by_one(tmp_path):
    proto, l4 = udp_payload(4000)
    whole = ipv4_fragments(proto, l4, 1500, ip_id=1)
    gap = [f for i, f in enumerate(ipv4_fragments(proto, l4, 1500, ip_id=2)) if i != 1]
    no_first = ipv4_fragments(proto, l4, 1500, ip_id=3)[1:]
    no_last = ipv4_fragments(proto, l4, 1500, ip_id=4)[:-1]
    overlap = ipv4_fragments(proto, l4, 1500, ip_id=5)
    overlap.insert(2, overlap[1])
    frames = [*whole, *gap, *no_first, *no_last, *overlap]
    root = bundle(tmp_path, frames, [])
    with calforensics.open_bundle(root) as b:
        assert list(b.datagrams.fragments) == [3]
        kinds = b.anomalies.groupby("kind", observed=True).size().to_dict()
        assert kinds == {
            "fragment_gap": 1,
            "first_fragment_missing": 1,
            "last_fragment_missing": 1,
            "overlapping_fragments": 1,
        }
        assert set(b.anomalies.source.astype(str)) == {"fragments"}
        assert all("not reassembled" in d for d in b.anomalies.detail)
        # the complete datagram joins as one packet, the others' fragments one by one
        assert len(b.hops) == 1 + len(gap) + len(no_first) + len(no_last) + len(overlap)


def test_fragments_further_apart_than_the_reassembly_time_are_not_one_datagram(tmp_path):
    proto, l4 = udp_payload(2000)
    first, last = ipv4_fragments(proto, l4, 1500)
    d = tmp_path / "b" / "nodes" / "n1" / "pcaps"
    d.mkdir(parents=True)
    write_pcap(d / f"{VETH}.pcap", [eth(first), eth(last)], times_ns=[T0, T0 + REASSEMBLY_TIMEOUT_NS + 1])
    with calforensics.open_bundle(tmp_path / "b") as b:
        assert len(b.datagrams) == 0
        assert set(b.anomalies.kind.astype(str)) == {"last_fragment_missing", "first_fragment_missing"}


# ---- against a reference, on arbitrary fragment sets -------------------------------------------
def _reference(frags: pd.DataFrame) -> tuple[dict[tuple[int, int], int], int]:
    """({(ip id, row of its first fragment): fragments} of the complete datagrams, how many
    candidates): a datagram is the fragments of one id no further apart in time than the reassembly
    time, complete when, in offset order, they start at 0, meet end to end, end with MF clear and
    repeat no offset."""
    complete, candidates = {}, 0
    for ip_id, g in frags.sort_values("ts_ns", kind="stable").groupby("ip_id", sort=True):
        window = (g["ts_ns"].diff() > REASSEMBLY_TIMEOUT_NS).cumsum()
        for _, w in g.groupby(window):
            candidates += 1
            w = w.sort_values("frag_offset", kind="stable")
            offsets, sizes = w["frag_offset"].tolist(), w["size"].tolist()
            if (
                offsets[0] == 0
                and not w["more"].iloc[-1]
                and len(set(offsets)) == len(offsets)
                and all(o + n == after for o, n, after in zip(offsets, sizes, offsets[1:], strict=False))
                and 1 < len(w) <= MAX_FRAGMENTS
            ):
                complete[(int(ip_id), int(w["row"].iloc[0]))] = len(w)
    return complete, candidates


def _packets_of(frags: pd.DataFrame) -> pd.DataFrame:
    """Packets-table rows for fragments of UDP datagrams at one capture point (the first fragment's
    payload length is the UDP header's, the whole datagram's, as the decoder gives it)."""
    n = len(frags)
    ip_len = 20 + frags["size"].to_numpy()
    columns = {
        "capture_id": np.zeros(n, dtype=np.int64),
        "interface": pd.Categorical([VETH] * n),
        "frame": np.arange(1, n + 1),
        "ts_ns": frags["ts_ns"].to_numpy(),
        "ip_version": np.full(n, 4),
        "src": pd.Categorical([POD] * n),
        "dst": pd.Categorical([SERVER] * n),
        "proto": np.full(n, 17),
        "ip_id": frags["ip_id"].to_numpy(),
        "frag_offset": frags["frag_offset"].to_numpy(),
        "more_fragments": frags["more"].to_numpy(),
        "ip_len": ip_len,
        "outer_ip_len": ip_len,
        "payload_len": np.where(frags["frag_offset"] == 0, 4000, frags["size"]),
        "caplen": ip_len + 14,
        "wirelen": ip_len + 14,
        "status": pd.Categorical(["ok"] * n),
        "payload_hash": np.zeros(n, dtype=np.uint64),
    }
    columns.update({c: np.full(n, -1) for c in ("seq", "ack", "tcp_flags", "icmp_type", "icmp_code", "icmp_echo_seq")})
    return pd.DataFrame(columns)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 3),  # ip id (reused: datagrams of one id apart in time, or run together)
            st.integers(2, 5),  # fragments
            st.sampled_from(["none", "drop_one", "duplicate", "shuffle"]),
            st.integers(0, 1),  # minutes after the datagram before
            st.randoms(use_true_random=False),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_reassembly_equals_a_plain_reference(datagrams):
    rows, t = [], T0
    for ip_id, count, damage, minutes, rng in datagrams:
        t += minutes * 60_000_000_000
        sizes = [rng.choice([8, 16, 1480]) for _ in range(count - 1)] + [rng.choice([1, 7, 100])]
        offsets = np.cumsum([0, *sizes[:-1]]).tolist()
        frags = [(o, n, k < count - 1) for k, (o, n) in enumerate(zip(offsets, sizes, strict=True))]
        if damage == "drop_one":
            frags.pop(rng.randrange(len(frags)))
        elif damage == "duplicate":
            frags.insert(1, frags[0])
        elif damage == "shuffle":
            rng.shuffle(frags)
        rows += [(t + k * 1000, ip_id, o, n, more) for k, (o, n, more) in enumerate(frags)]
    frags = pd.DataFrame(rows, columns=["ts_ns", "ip_id", "frag_offset", "size", "more"])
    frags = frags.sort_values("ts_ns", kind="stable").reset_index(drop=True).assign(row=lambda f: np.arange(len(f)))
    want, candidates = _reference(frags)
    got, problems = reassemble(_packets_of(frags))
    ids = frags["ip_id"].to_numpy()[got.first]
    assert dict(zip(zip(ids.tolist(), got.first.tolist(), strict=True), got.fragments.tolist(), strict=True)) == want
    assert sorted(got.later.tolist() + got.first.tolist()) == sorted(
        r for (ip_id, first), k in want.items() for r in _members(frags, ip_id, first, k)
    )
    # every candidate not put back together is counted in an anomaly
    assert sum(int(p[3].split(" datagram")[0]) for p in problems) == candidates - len(want)


def _members(frags: pd.DataFrame, ip_id: int, first: int, count: int) -> list[int]:
    """The rows of the complete datagram whose first fragment is row ``first``: its id's fragments
    in the same time window."""
    same = frags[frags["ip_id"] == ip_id].sort_values("ts_ns", kind="stable")
    window = (same["ts_ns"].diff() > REASSEMBLY_TIMEOUT_NS).cumsum()
    rows = same[window == window[same["row"] == first].iloc[0]]["row"].tolist()
    assert len(rows) == count
    return rows
