"""Packet decoding on captures the tests write themselves with dpkt."""

import struct
import subprocess

import dpkt
from encapframes import FRAMES, damaged
from pktutil import decode, eth, ip4, tcp4, udp4, vxlan_frame, write_pcap
from tshark_compare import our_frames, tshark_frames


def test_pcap_resolutions_and_byte_orders(tmp_path):
    frame = eth(tcp4())
    for nano in (False, True):
        for be in (False, True):
            p = write_pcap(tmp_path / f"x{nano}{be}.pcap", [frame, frame], nano=nano, big_endian=be)
            df, log, _ = decode(p)
            assert len(df) == 2 and not log.rows
            expected = 1_700_000_000 * 10**9 + (123 if nano else 1000)
            assert df.ts_ns.iloc[0] == expected
            assert df.src.iloc[0] == "10.0.0.1" and df.dport.iloc[0] == 80


def test_pcapng_interfaces_and_tsresol(tmp_path):
    buf = tmp_path / "x.pcapng"
    with open(buf, "wb") as fh:
        shb = dpkt.pcapng.SectionHeaderBlockLE()
        idb0 = dpkt.pcapng.InterfaceDescriptionBlockLE(
            linktype=1,
            opts=[
                dpkt.pcapng.PcapngOptionLE(code=2, data=b"cali12345678901"),
                dpkt.pcapng.PcapngOptionLE(code=9, data=b"\x09"),
                dpkt.pcapng.PcapngOptionLE(code=0),
            ],
        )
        idb1 = dpkt.pcapng.InterfaceDescriptionBlockLE(
            linktype=101, opts=[dpkt.pcapng.PcapngOptionLE(code=2, data=b"tunl0"), dpkt.pcapng.PcapngOptionLE(code=0)]
        )
        w = dpkt.pcapng.Writer(fh, shb=shb, idb=[idb0, idb1])
        ts_ns = 1_700_000_000_123_456_789
        for iface, frame, ts in ((0, eth(tcp4()), ts_ns), (1, bytes(udp4()), ts_ns // 1000)):
            epb = dpkt.pcapng.EnhancedPacketBlockLE(
                iface_id=iface, ts_high=ts >> 32, ts_low=ts & 0xFFFFFFFF, pkt_data=frame
            )
            w.writepkt(epb)
    df, log, fi = decode(buf)
    assert [i.name for i in fi.interfaces] == ["cali12345678901", "tunl0"]
    assert len(df) == 2 and not log.rows
    assert df.ts_ns.iloc[0] == ts_ns  # if_tsresol 10^-9
    assert df.ts_ns.iloc[1] == ts_ns // 1000 * 1000  # default microseconds
    assert df.proto.tolist() == [6, 17]


def test_vlan_qinq_sll_sll2_raw_null(tmp_path):
    ip = bytes(tcp4(src="10.1.1.1", dst="10.2.2.2"))
    qinq = (
        b"\x04" * 6
        + b"\x02" * 6
        + b"\x88\xa8"
        + struct.pack(">H", 100)
        + b"\x81\x00"
        + struct.pack(">H", 200)
        + b"\x08\x00"
        + ip
    )
    sll = struct.pack(">HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800) + ip
    sll2 = struct.pack(">HHIHBB8s", 0x0800, 0, 7, 1, 4, 6, b"\x02" * 8) + ip
    null = struct.pack("<I", 2) + ip
    for frames, lt in (([qinq], 1), ([sll], 113), ([sll2], 276), ([ip], 101), ([null], 0), ([ip], 228)):
        df, log, _ = decode(write_pcap(tmp_path / f"l{lt}.pcap", frames, linktype=lt))
        assert df.src.iloc[0] == "10.1.1.1" and df.dst.iloc[0] == "10.2.2.2", lt
        assert df.status.iloc[0] == "ok" and not log.rows
    df, _, _ = decode(tmp_path / "l1.pcap")
    assert df.vlan.iloc[0] == 100
    df, _, _ = decode(tmp_path / "l276.pcap")
    assert df.link_ifindex.iloc[0] == 7 and df.pkttype.iloc[0] == 4


def test_ipv4_options_and_ipv6_extension_headers(tmp_path):
    p = tcp4(ip_id=4242)
    p.opts = b"\x94\x04\x00\x00"  # router alert
    p.hl = 6
    p.len = len(bytes(p))
    tcp = bytes(dpkt.tcp.TCP(sport=1, dport=2, flags=dpkt.tcp.TH_ACK, seq=5, data=b"abc"))
    hbh = bytes([6, 0, 1, 4, 0, 0, 0, 0])  # hop-by-hop, next TCP
    frag = bytes([0, 0, 0, 0, 0, 0, 0, 9])  # fragment header, offset 0, id 9 -> next filled below
    ext = bytes([44]) + hbh[1:] + bytes([6]) + frag[1:]
    v6 = struct.pack(
        ">IHBB16s16s",
        0x60000000,
        len(ext) + len(tcp),
        0,
        64,
        bytes.fromhex("fd000000000000000000000000000001"),
        bytes.fromhex("fd000000000000000000000000000002"),
    )
    df, log, _ = decode(write_pcap(tmp_path / "o.pcap", [eth(p), eth(v6 + ext + tcp, 0x86DD)]))
    assert df.ip_id.iloc[0] == 4242 and df.sport.iloc[0] == 1234
    assert df.src.iloc[1] == "fd00::1" and df.proto.iloc[1] == 6 and df.sport.iloc[1] == 1
    assert df.ip_id.iloc[1] == 9 and df.payload_len.iloc[1] == 3
    assert not log.rows and (df.status == "ok").all()


def test_tunnels_vxlan_ipip_gre_geneve(tmp_path):
    inner = tcp4(src="192.168.1.5", dst="192.168.2.7", sport=41000, dport=8080)
    ipip = dpkt.ip.IP(src=ip4("10.0.0.11"), dst=ip4("10.0.0.12"), p=4, data=bytes(inner))
    ipip.len = len(bytes(ipip))
    gre = dpkt.ip.IP(
        src=ip4("10.0.0.11"), dst=ip4("10.0.0.12"), p=47, data=struct.pack(">HHI", 0x2000, 0x0800, 77) + bytes(inner)
    )
    gre.len = len(bytes(gre))
    gen_hdr = struct.pack(">BBHI", 0, 0, 0x6558, 5000 << 8) + eth(inner)
    gu = dpkt.udp.UDP(sport=1, dport=6081, data=gen_hdr)
    gu.ulen = len(bytes(gu))
    gen = dpkt.ip.IP(src=ip4("10.0.0.11"), dst=ip4("10.0.0.12"), p=17, data=gu)
    gen.len = len(bytes(gen))
    frames = [eth(inner), vxlan_frame(inner), vxlan_frame(inner, vni=1, dport=8472), eth(ipip), eth(gre), eth(gen)]
    df, log, _ = decode(write_pcap(tmp_path / "t.pcap", frames))
    assert df.encap.astype(str).tolist() == ["none", "vxlan", "vxlan", "ipip", "gre", "geneve"]
    assert df.vni.tolist() == [-1, 4096, 1, -1, 77, 5000]
    assert (df.src == "192.168.1.5").all() and (df.dport == 8080).all()
    assert df.outer_src.iloc[1] == "172.16.0.1" and df.outer_src.iloc[3] == "10.0.0.11"
    # the same packet at every hop has the same NAT/encapsulation-invariant fingerprint
    assert df.fingerprint.nunique() == 1
    assert not log.rows


def test_fingerprint_survives_dnat_but_separates_packets(tmp_path):
    before = tcp4(dst="10.96.0.10", dport=80, payload=b"GET /", flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK)
    after = tcp4(dst="192.168.2.7", dport=8080, payload=b"GET /", flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, ttl=63)
    other = tcp4(dst="192.168.2.7", dport=8080, payload=b"GET /x", flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK)
    df, _, _ = decode(write_pcap(tmp_path / "n.pcap", [eth(before), eth(after), eth(other)]))
    assert df.fingerprint.iloc[0] == df.fingerprint.iloc[1] != df.fingerprint.iloc[2]


def test_icmp_errors_quote_the_original_header(tmp_path):
    orig = tcp4(src="192.168.1.5", dst="192.168.2.7", sport=41000, dport=8080, ip_id=321)
    quoted = bytes(orig)[:28]
    icmp = dpkt.icmp.ICMP(type=3, code=4, data=b"\x00\x00\x05\xaa" + quoted)  # frag needed, MTU 1450
    p = dpkt.ip.IP(src=ip4("10.0.0.12"), dst=ip4("192.168.1.5"), p=1, data=bytes(icmp))
    p.len = len(bytes(p))
    df, _, _ = decode(write_pcap(tmp_path / "i.pcap", [eth(p)]))
    r = df.iloc[0]
    assert (r.icmp_type, r.icmp_code, r.icmp_mtu) == (3, 4, 1450)
    assert (r.q_src, r.q_dst, r.q_proto, r.q_sport, r.q_dport, r.q_ip_id) == (
        "192.168.1.5",
        "192.168.2.7",
        6,
        41000,
        8080,
        321,
    )


def test_tcp_mss_option(tmp_path):
    df, _, _ = decode(write_pcap(tmp_path / "m.pcap", [eth(tcp4(opts=b"\x01\x01\x02\x04\x05\xb4"[2:] + b"\x01\x01"))]))
    assert df.tcp_mss.iloc[0] == 1460


def test_damage_becomes_anomalies_not_exceptions(tmp_path):
    good = eth(tcp4())
    short_ip = good[: 14 + 12]
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x42
    bad_vxlan = bytearray(vxlan_frame(tcp4()))
    bad_vxlan[14 + 20 + 8] = 0  # clear the VXLAN I flag
    p = write_pcap(tmp_path / "d.pcap", [good, short_ip, bytes(bad_ihl), bytes(bad_vxlan)])
    raw = p.read_bytes()
    p.write_bytes(raw + struct.pack("<IIII", 1, 0, 5000, 5000) + b"\x00" * 10)  # record cut short
    df, log, fi = decode(p)
    assert len(df) == 4 and fi.records == 5
    assert df.status.astype(str).tolist() == ["ok", "truncated_ip_header", "bad_ip_header_length", "bad_vxlan_flags"]
    assert [r[4] for r in log.rows] == ["truncated_record"]


def test_decoding_matches_tshark_on_our_own_captures(tmp_path, tshark):
    inner = tcp4(src="192.168.1.5", dst="192.168.2.7", sport=41000, dport=8080)
    frames = [eth(inner), vxlan_frame(inner), eth(udp4()), eth(tcp4(src="10.9.9.9", sport=9))]
    p = write_pcap(tmp_path / "ts.pcap", frames)
    df, _, _ = decode(p)
    theirs = tshark_frames(str(p))
    ours = our_frames(df)
    assert len(theirs) == len(ours) == 4
    for a, b in zip(theirs, ours, strict=True):
        assert (a["src"], a["dst"], a["l4"], a["sport"], a["dport"]) == (
            b["src"],
            b["dst"],
            b["l4"],
            b["sport"],
            b["dport"],
        )
    assert subprocess.run(["tshark", "-v"], capture_output=True).returncode == 0


def test_mirror_and_carrier_encapsulations_reach_the_innermost_packet(tmp_path):
    """MPLS label stacks (on Ethernet, in GRE, in VXLAN-GPE), ERSPAN types I, II and III (with and
    without the platform subheader), PPTP's GRE with every PPP header form, GRE-in-UDP and
    VXLAN-GPE: each frame decodes to its innermost packet, with the tunnel's key, call id or VNI."""
    df, log, _ = decode(write_pcap(tmp_path / "encap.pcap", [frame for frame, _, _ in FRAMES.values()]))
    assert len(df) == len(FRAMES) and not log.rows
    for (name, (_, (encap, key), inner)), r in zip(FRAMES.items(), df.itertuples(), strict=True):
        assert (r.status, r.encap, r.vni) == ("ok", encap, key), name
        assert (r.src, r.dst, r.proto, r.sport, r.dport) == inner, name


def test_mirror_and_carrier_encapsulations_decode_as_tshark_does(tmp_path, tshark):
    p = write_pcap(tmp_path / "encap.pcap", [frame for frame, _, _ in FRAMES.values()])
    df, _, _ = decode(p)
    theirs, ours = tshark_frames(str(p)), our_frames(df)
    assert len(theirs) == len(ours) == len(FRAMES)
    for name, a, b in zip(FRAMES, theirs, ours, strict=True):
        keys = ("src", "dst", "l4", "sport", "dport")
        assert [a[k] for k in keys] == [b[k] for k in keys], name
        assert a["l4"] in ("tcp", "udp"), name  # tshark too reached the inner packet


def test_encapsulation_headers_cut_short_are_named_anomalies(tmp_path):
    cases = damaged()
    df, _, _ = decode(write_pcap(tmp_path / "cut.pcap", [frame for frame, _ in cases.values()]))
    assert dict(zip(cases, df.status.astype(str), strict=True)) == {name: want for name, (_, want) in cases.items()}


def test_ipip_variants_and_tunnel_depth_cap(tmp_path):
    inner4 = tcp4(src="192.168.1.5", dst="192.168.2.7")
    t6 = bytes(dpkt.tcp.TCP(sport=7, dport=8, flags=dpkt.tcp.TH_SYN))
    inner6 = struct.pack(">IHBB16s16s", 0x60000000, len(t6), 6, 64, bytes(15) + b"\x01", bytes(15) + b"\x02") + t6

    def v4(proto, payload):
        p = dpkt.ip.IP(src=ip4("10.0.0.11"), dst=ip4("10.0.0.12"), p=proto, data=payload)
        p.len = len(bytes(p))
        return bytes(p)

    def v6(nxt, payload):
        return (
            struct.pack(">IHBB16s16s", 0x60000000, len(payload), nxt, 64, bytes(15) + b"\x0a", bytes(15) + b"\x0b")
            + payload
        )

    nested = bytes(inner4)
    for _ in range(6):
        nested = v4(4, nested)
    frames = [eth(v4(41, inner6)), eth(v6(4, bytes(inner4)), 0x86DD), eth(v6(41, inner6), 0x86DD), eth(nested)]
    df, _, _ = decode(write_pcap(tmp_path / "ipip.pcap", frames))
    assert df.encap.astype(str).tolist() == ["ipip"] * 4
    assert df.src.astype(str).tolist()[:3] == ["::1", "192.168.1.5", "::1"]
    assert df.outer_src.astype(str).tolist()[:3] == ["10.0.0.11", "::a", "::a"]
    assert df.status.astype(str).tolist() == ["ok", "ok", "ok", "tunnel_depth_exceeded"]


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path):
    frame = eth(tcp4())

    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    data = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    data += block(1, struct.pack("<HHI", 1, 0, 96))  # snaplen 96
    data += block(3, struct.pack("<I", len(frame)) + frame)  # simple packet block: no timestamp
    data += block(
        2, struct.pack("<HHIIII", 0, 0, 0, 1_700_000_000_000_000 & 0xFFFFFFFF, len(frame), len(frame)) + frame
    )
    data += block(0xBAD, b"custom")  # unknown block types are skipped
    p = tmp_path / "spb.pcapng"
    p.write_bytes(data)
    df, log, _ = decode(p)
    assert len(df) == 2 and not log.rows
    assert (df.src == "10.0.0.1").all() and df.ts_ns.iloc[0] == 0
