"""WireGuard: message headers (checked against tshark), the message ↔ plaintext match against the
WireGuard sample's ground truth (every pair, no false pair, exact overhead), sessions, loss and
ambiguity."""

import json
import re
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES
from groundtruth import flow_for, wireguard_padding

import calforensics
from calforensics.join.wireguard import _lockstep, _walk, padded

TRUTH = json.loads((SAMPLES / "lab-wireguard.ground_truth.json").read_text())
WG = TRUTH["wireguard"]


@pytest.fixture(scope="module")
def bundle():
    with calforensics.open_bundle(SAMPLES / "lab-wireguard.tgz") as b:
        yield b


@pytest.fixture
def unpacked(tmp_path):
    with tarfile.open(SAMPLES / "lab-wireguard.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "lab-wireguard"


def match_pairs(b) -> list[tuple]:
    """Every message with the plaintext it was tied to, by what stays put across capture shapes (times,
    sessions, counters, names), not packet rows: (node, direction, peer, session, counter, message time,
    match, the plaintext's interface and time)."""
    wg, p = b.wireguard, b.packets
    inner = wg.inner_packet.to_numpy()
    has = inner >= 0
    at = np.where(has, inner, 0)
    inner_iface = np.where(has, p.interface.astype(str).to_numpy()[at], "")
    inner_ts = np.where(has, p.ts_ns.to_numpy()[at], -1)
    cols = [wg[c].astype(str).tolist() for c in ("node", "direction", "peer")]
    cols += [wg[c].tolist() for c in ("receiver_index", "counter", "ts_ns")]
    cols += [wg["match"].astype(str).tolist(), inner_iface.tolist(), inner_ts.tolist()]
    return sorted(zip(*cols, strict=True))


def frame_rows(b, node: str, interface: str) -> dict[int, int]:
    """1-based frame number -> packets row, for one capture point."""
    p = b.packets
    sel = p[(p.node == node) & (p.interface == interface)]
    return dict(zip(sel.frame.tolist(), sel.index.tolist(), strict=True))


def truth_pairs(b, removed: dict | None = None) -> tuple[set, set]:
    """(single-message pairs, segment pairs) as (message row, plaintext row), at both ends.
    ``removed`` maps a node to an eth0 frame number taken out of its capture."""
    single, segments = set(), set()
    for node in TRUTH["nodes"]:
        eth, tun = frame_rows(b, node, "eth0"), frame_rows(b, node, "wireguard.cali")
        gone = (removed or {}).get(node, 0)
        for p in WG["pairs"]:
            if node not in (p["from"], p["to"]):
                continue
            end = "sender" if p["from"] == node else "receiver"
            frame = p[f"{end}_frame"]
            if gone and frame == gone:
                continue
            frame -= 1 if gone and frame > gone else 0
            pair = (eth[frame], tun[p[f"{end}_inner_frame"]])
            (single if p["segments"] == 1 else segments).add(pair)
    return single, segments


def test_message_headers_match_tshark(bundle, unpacked, tshark):
    for node in TRUTH["nodes"]:
        pcap = unpacked / "nodes" / node / "pcaps" / "eth0.pcap"
        fields = ["-e", "frame.number", "-e", "wg.type", "-e", "wg.receiver", "-e", "wg.sender", "-e", "wg.counter"]
        out = subprocess.run(
            ["tshark", "-r", str(pcap), "-Y", "wg", "-T", "fields", *fields],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        theirs = {}
        for line in out.splitlines():
            no, typ, receiver, sender, counter = (line.split("\t") + [""] * 5)[:5]
            theirs[int(no)] = (
                int(typ),
                int(receiver, 16) if receiver else -1,
                int(sender, 16) if sender else -1,
                int(counter) if counter else -1,
            )
        wg = bundle.wireguard
        mine = wg[(wg.node == node)].merge(bundle.packets[["frame"]], left_on="packet", right_index=True)
        ours = {
            int(r.frame): (
                {"data": 4, "keepalive": 4, "initiation": 1, "response": 2, "cookie": 3}[str(r.msg_type)],
                int(r.receiver_index),
                int(r.sender_index),
                int(r.counter),
            )
            for r in mine.itertuples()
        }
        assert len(theirs) > 250 and ours == theirs


def test_every_pair_matched_and_no_false_pair(bundle):
    wg = bundle.wireguard
    single, segments = truth_pairs(bundle)
    exact = wg[wg.match == "exact"]
    assert set(zip(exact.packet, exact.inner_packet, strict=True)) == single
    seg = wg[wg.match == "segment"]
    assert set(zip(seg.packet, seg.inner_packet, strict=True)) == segments
    assert set(wg.match.astype(str)) == {"exact", "segment", "handshake", "keepalive"}
    assert len(single) == 2 * sum(p["segments"] == 1 for p in WG["pairs"])


def test_overhead_per_packet_is_exact(bundle):
    wg = bundle.wireguard
    exact = wg[wg.match == "exact"]
    want = 60 + np.asarray([wireguard_padding(int(n), WG["mtu"]) for n in exact.inner_len])
    assert len(exact) and (exact.overhead_bytes.to_numpy() == want).all()
    by_payload = {(p["udp_payload"], p["segment_len"]) for p in WG["pairs"] if p["segments"] == 1}
    assert set(zip(exact.udp_payload, exact.inner_len, strict=True)) == by_payload
    p = bundle.packets.loc[exact.packet]  # the joined rows: outer lengths stay the message's
    assert (p.outer_ip_len.to_numpy() - p.ip_len.to_numpy() == exact.overhead_bytes.to_numpy()).all()
    assert set(p.encap.astype(str)) == {"wireguard"}


def test_sessions_keepalives_handshakes_and_rekeys(bundle):
    a = calforensics.analyze(bundle)
    w = a.findings["wireguard"]
    assert w["keepalives"] == 2 * WG["keepalives"]  # each seen at both ends
    assert w["handshakes"] == 2 * WG["handshakes_per_capture"]
    assert w["rekeys"] == len(WG["sessions"]) - WG["keepalives"]  # one new session per direction
    assert (w["ambiguous"], w["unmatched_outer"], w["unmatched_inner"]) == (0, 0, 0)
    got = {(s["outer_src"], s["receiver_index"], s["messages"]) for s in w["sessions"]}
    ips = {n: v["ip"] for n, v in TRUTH["nodes"].items()}
    assert got == {(ips[s["from"]], s["receiver_index"], s["messages"]) for s in WG["sessions"]}
    assert all(s["counter_gaps"] == 0 and s["first_counter"] == 0 for s in w["sessions"])
    assert w["overhead_bytes"]["min"] >= 60 and w["overhead_bytes"]["max"] <= 75


def test_the_join_crosses_the_encrypted_hop(bundle):
    a = calforensics.analyze(bundle)
    gt = next(f for f in TRUTH["flows"] if f["name"] == "pod_to_pod")
    f = flow_for(bundle, gt)
    assert "node-a:wireguard.cali > node-a:eth0 > node-b:eth0 > node-b:wireguard.cali" in f.path_fwd
    hops = a.latency_hops
    pairs = set(zip(hops.from_node + ":" + hops.from_interface, hops.to_node + ":" + hops.to_interface, strict=True))
    assert {("node-a:wireguard.cali", "node-a:eth0"), ("node-b:eth0", "node-b:wireguard.cali")} <= pairs
    tunnels = a.tunnels
    assert set(tunnels.type.astype(str)) == {"wireguard"}
    mtu = a.mtu_issues
    assert set(mtu[mtu.kind == "exceeds_tunnel_mtu"].mtu) == {WG["mtu"]}  # the tunnel MTU from ip link


def test_a_lost_message_shows_as_a_counter_gap_and_an_unpaired_plaintext(unpacked):
    """Remove one data message from the receiver's uplink: the receiver's session has a gap, the
    plaintext it carried has no partner, and every other pair is still made, none of them false."""
    pcap = unpacked / "nodes" / "node-b" / "pcaps" / "eth0.pcap"
    victim = next(p for p in WG["pairs"] if p["to"] == "node-b" and p["segments"] == 1 and p["counter"] == 3)
    data = pcap.read_bytes()
    off, frames = 24, []
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frames.append(data[off : off + 16 + incl])
        off += 16 + incl
    del frames[victim["receiver_frame"] - 1]
    pcap.write_bytes(data[:24] + b"".join(frames))
    with calforensics.open_bundle(unpacked) as b:
        a = calforensics.analyze(b)
        w = a.findings["wireguard"]
        rx = [s for s in w["sessions"] if s["node"] == "node-b" and s["receiver_index"] == victim["receiver_index"]]
        assert [s["counter_gaps"] for s in rx] == [1]
        assert w["unmatched_inner"] == 1 and w["unmatched_outer"] == 0
        assert any(f["kind"] == "wireguard_loss" for f in a.findings["findings"])
        wg = b.wireguard
        single, segments = truth_pairs(b, removed={"node-b": victim["receiver_frame"]})
        exact = wg[wg.match == "exact"]
        assert set(zip(exact.packet, exact.inner_packet, strict=True)) == single  # all others, none false
        seg = wg[wg.match == "segment"]
        assert set(zip(seg.packet, seg.inner_packet, strict=True)) == segments


def test_ambiguous_pair_is_said_so():
    """Two plaintexts of the same size, one message, both in time: which one it carried cannot be
    told, and the pair says so (before or after the skip)."""
    inner = pd.DataFrame({"ip_len": [60, 60, 100], "payload_len": [0, 0, 40], "ts_ns": [0, 10, 20]})
    outer = pd.DataFrame({"udp_payload": [96, 144], "ts_ns": [15, 25]})
    pairs, lone = _walk(inner, outer, 1440, tx=True)
    assert pairs == [(0, 0, "ambiguous"), (2, 1, "exact")] and lone == [1]
    # the message sent before the second plaintext existed: time decides, the pair is exact
    outer.loc[0, "ts_ns"] = 5
    pairs, lone = _walk(inner, outer, 1440, tx=True)
    assert pairs == [(0, 0, "exact"), (2, 1, "exact")] and lone == [1]
    # two messages of the same size, one plaintext: the first message or the second
    inner2 = pd.DataFrame({"ip_len": [60, 100], "payload_len": [0, 40], "ts_ns": [0, 20]})
    outer2 = pd.DataFrame({"udp_payload": [96, 96, 144], "ts_ns": [5, 8, 25]})
    pairs, lone = _walk(inner2, outer2, 1440, tx=True)
    assert pairs == [(0, 0, "ambiguous"), (1, 2, "exact")] and lone == []
    outer.loc[0, "ts_ns"] = 15
    # the same with sizes that tell them apart: exact
    inner.loc[0, "ip_len"] = 80
    pairs, lone = _walk(inner, outer, 1440, tx=True)
    assert pairs == [(1, 0, "exact"), (2, 1, "exact")] and lone == [0]


def test_messages_without_a_plaintext_capture_are_said_so(unpacked):
    (unpacked / "nodes" / "node-a" / "pcaps" / "wireguard.cali.pcap").unlink()
    with calforensics.open_bundle(unpacked) as b:
        wg = b.wireguard
        data = wg[(wg.node == "node-a") & (wg.msg_type == "data")]
        assert len(data) and set(data.match.astype(str)) == {"no_plaintext_capture"}
        assert set(wg[wg.node == "node-b"].match.astype(str)) == {"exact", "segment", "handshake", "keepalive"}


@pytest.mark.parametrize(
    ("length", "mtu", "padding"),
    [(1, 1420, 15), (16, 1420, 0), (1419, 1420, 1), (1420, 1420, 0), (1500, 1420, 0), (1501, 1420, 15), (80, 1440, 0)],
)
def test_the_kernel_padding_rule_as_written_out(length, mtu, padding):
    """The tests' own copy of send.c's rule, on values worked out by hand: up to 16, never past the MTU;
    a GSO super-packet (longer than the MTU) pads only its last unit."""
    assert wireguard_padding(length, mtu) == padding


def test_our_padding_is_the_kernels():
    for mtu in (1280, 1420, 1440):
        for length in range(1, 3 * mtu + 17):
            assert padded(length, mtu) == length + wireguard_padding(length, mtu), (length, mtu)


def test_lockstep_fast_path_agrees_with_the_walk():
    rng = np.random.default_rng(7)
    n = 2000
    inner = pd.DataFrame({"ip_len": rng.integers(40, 1441, n), "ts_ns": np.arange(n) * 1000})
    inner["payload_len"] = inner["ip_len"] - 40
    outer = pd.DataFrame(
        {
            "udp_payload": [32 + int(x) + wireguard_padding(int(x), 1440) for x in inner["ip_len"]],
            "ts_ns": inner["ts_ns"] + rng.integers(0, 900, n),
        }
    )
    fast = _lockstep(inner, outer, 1440, tx=True)
    walked, lone = _walk(inner, outer, 1440, tx=True)
    assert fast is not None and lone == []
    assert list(zip(*(a.tolist() for a in fast), strict=True)) == walked
    outer.loc[5, "ts_ns"] = -1  # a message before its plaintext: not lock-step any more
    assert _lockstep(inner, outer, 1440, tx=True) is None


def test_a_wireguard_device_too_big_for_the_host_is_found(unpacked):
    """Calico sets wireguard.cali to the host MTU minus 60: at 1500 on a 1500-byte host a full-size
    plaintext makes a 1560-byte packet on the uplink."""
    for path in unpacked.glob("nodes/*/ip-*.txt"):  # ip link and ip addr both list the device
        path.write_text(
            path.read_text().replace(
                f"wireguard.cali: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu {WG['mtu']}",
                "wireguard.cali: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1500",
            )
        )
    with calforensics.open_bundle(unpacked) as b:
        issues = calforensics.analyze(b).mtu_issues
        too_big = issues[issues.kind == "tunnel_mtu_too_large"]
        assert sorted(too_big.node) == sorted(TRUTH["nodes"]) and set(too_big.mtu) == {1500}
    with calforensics.open_bundle(SAMPLES / "lab-wireguard.tgz") as b:  # at 1440 all is well
        assert "tunnel_mtu_too_large" not in set(calforensics.analyze(b).mtu_issues.kind)


def test_a_packet_too_big_for_wireguard_is_missing_at_the_wireguard_device(bundle):
    """The route to a remote pod is in WireGuard's table (ip rule: not fwmark … lookup 1), not main:
    the packet the tunnel refused should next have crossed wireguard.cali, not eth0."""
    gt = next(f for f in TRUTH["flows"] if f["name"] == "mtu")
    f = flow_for(bundle, gt)
    assert (f.verdict, f.missing_at) == ("dropped", f"{gt['mtu']['sender_node']}:wireguard.cali")


def test_reports_have_a_wireguard_section(bundle, tmp_path):
    files = calforensics.write_report(calforensics.analyze(bundle), tmp_path / "r", tables="none")
    md, html = files.markdown.read_text(), files.html.read_text()
    for s in WG["sessions"]:  # every session, at both ends
        index = f"{s['receiver_index']:#010x}"
        assert md.count(index) == 2 and html.count(index) == 2
    assert "## WireGuard" in md and "<h2>WireGuard</h2>" in html
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:  # and none without WireGuard
        files = calforensics.write_report(calforensics.analyze(b), tmp_path / "v", tables="none")
        assert "WireGuard" not in files.markdown.read_text()


def test_ipv6_wireguard_device_and_port(tmp_path):
    """wg-v6.cali and UDP 51821 between IPv6 node addresses: 80 bytes of outer headers and tag plus
    the padding, the device's MTU (1420) from ip link; both directions paired, keepalive known."""
    import ipaddress

    from pktutil import write_pcap

    def ip6(src: str, dst: str, nxt: int, payload: bytes) -> bytes:
        head = struct.pack("!IHBB", 6 << 28, len(payload), nxt, 64)
        return head + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + payload

    def tcp(sport: int, dport: int, seq: int, data: bytes) -> bytes:
        return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x18, 512, 0, 0) + data

    nodes = {"node-a": ("fd00::11", "fd10::5", "cali0000000000a"), "node-b": ("fd00::12", "fd20::7", "cali0000000000b")}
    t0 = 1_800_000_000_000_000_000
    plain = {"node-a": [], "node-b": []}
    wire = {"node-a": [], "node-b": []}
    sizes = [0, 20, 100, 1000, 1360]  # plaintext lengths 60, 80, 160, 1060, 1420 (the MTU)
    counters = {"node-a": 0, "node-b": 0}
    for k, size in enumerate(sizes * 4):
        a_to_b = k % 2 == 0
        sender, receiver = ("node-a", "node-b") if a_to_b else ("node-b", "node-a")
        inner = ip6(nodes[sender][1], nodes[receiver][1], 6, tcp(40000, 8080, k, bytes(size)))
        message = struct.pack("<BxxxIQ", 4, 0xA0 if a_to_b else 0xB0, counters[sender]) + bytes(
            len(inner) + wireguard_padding(len(inner), 1420) + 16
        )
        counters[sender] += 1
        udp = struct.pack("!HHHH", 51821, 51821, 8 + len(message), 0) + message
        outer = b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip6(nodes[sender][0], nodes[receiver][0], 17, udp)
        ts = t0 + k * 1_000_000
        plain[sender].append((ts, inner))
        wire[sender].append((ts + 5_000, outer))
        wire[receiver].append((ts + 30_000, outer))
        plain[receiver].append((ts + 35_000, inner))
    keepalive = struct.pack("<BxxxIQ", 4, 0xA0, counters["node-a"]) + bytes(16)
    udp = struct.pack("!HHHH", 51821, 51821, 8 + len(keepalive), 0) + keepalive
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip6(nodes["node-a"][0], nodes["node-b"][0], 17, udp)
    wire["node-a"].append((t0 + 10**9, frame))
    for node, (addr, pod, veth) in nodes.items():
        pcaps = tmp_path / "nodes" / node / "pcaps"
        pcaps.mkdir(parents=True)
        for name, frames, linktype in (("wg-v6.cali", plain[node], 101), ("eth0", sorted(wire[node]), 1)):
            write_pcap(pcaps / f"{name}.pcap", [f for _, f in frames], linktype, times_ns=[t for t, _ in frames])
        (tmp_path / "nodes" / node / "ip-addr.txt").write_text(
            f"2: eth0: <BROADCAST,UP> mtu 1500 state UP\n    inet6 {addr}/64 scope global\n"
            "3: wg-v6.cali: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 state UNKNOWN\n"
            f"4: {veth}@if2: <BROADCAST,UP> mtu 1500 state UP\n"
        )
        (tmp_path / "nodes" / node / "ip-route.txt").write_text(f"{pod} dev {veth} metric 1024 pref medium\n")
    with calforensics.open_bundle(tmp_path) as b:
        wg = b.wireguard
        assert set(wg.msg_type.astype(str)) == {"data", "keepalive"}
        data = wg[wg.msg_type == "data"]
        assert len(data) == 4 * len(sizes) * 2 and set(data.match.astype(str)) == {"exact"}
        assert set(data.overhead_bytes - 80 - data.inner_len.map(lambda n: wireguard_padding(n, 1420))) == {0}
        assert set(b.packets.loc[data.packet, "encap"].astype(str)) == {"wireguard"}
        f = b.flows[b.flows.proto == "tcp"]
        paths = dict(zip(f.client_ip, f.path_fwd, strict=True))  # each pod opened one connection
        assert paths == {
            "fd10::5": "node-a:wg-v6.cali > node-a:eth0 > node-b:eth0 > node-b:wg-v6.cali",
            "fd20::7": "node-b:wg-v6.cali > node-b:eth0 > node-a:eth0 > node-a:wg-v6.cali",
        }


def test_an_any_capture_holds_both_sides_of_the_encryption(unpacked, bundle):
    """`tcpdump -i any` (SLL2) on node-a instead of separate eth0 and wireguard.cali captures: each
    packet's own interface tells plaintext from message, and the match is the same."""
    sys.path.insert(0, str(SAMPLES))
    from derive import read_pcap, write_pcap

    pcaps = unpacked / "nodes" / "node-a" / "pcaps"
    links = (unpacked / "nodes" / "node-a" / "ip-link.txt").read_text()
    index = {name: int(i) for i, name in re.findall(r"^(\d+): ([^:@]+)[:@]", links, re.M)}
    frames = []
    for name, strip, hatype in (("eth0", 14, 1), ("wireguard.cali", 0, 0xFFFE)):
        for ts, frame in read_pcap(pcaps / f"{name}.pcap"):
            proto = frame[12:14] if strip else b"\x08\x00"
            sll2 = proto + b"\0\0" + struct.pack("!IHBB", index[name], hatype, 4, 6) + b"\0" * 8
            frames.append((ts, sll2 + frame[strip:]))
        (pcaps / f"{name}.pcap").unlink()
    write_pcap(pcaps / "any.pcap", sorted(frames, key=lambda x: x[0]), 276)
    with calforensics.open_bundle(unpacked) as b:
        got = match_pairs(b)
    want = match_pairs(bundle)
    assert got == want
    assert sum(1 for pair in got if pair[0] == "node-a" and pair[6] == "exact") > 0


def test_peers_from_routes_when_the_remote_pods_are_unknown(unpacked, bundle):
    """Without node-b's routes nothing says which node holds 192.168.20.7: node-a's route to the
    block (`via 10.0.0.12`) does, and the match is the same."""
    (unpacked / "nodes" / "node-b" / "ip-route.txt").unlink()
    with calforensics.open_bundle(unpacked) as b:
        got = match_pairs(b)
    assert got == match_pairs(bundle)
    assert sum(1 for pair in got if pair[6] == "exact") > 0
