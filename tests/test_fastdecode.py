"""The compiled decoder and the vectorised reference decoder give identical columns on every capture."""

import glob
import ipaddress
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CORPUS, SAMPLES, unavailable
from pktutil import eth, ip4, tcp4, udp4, vxlan_frame, write_pcap

from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers._fastdecode import available
from calforensics.ingest.parsers.packets import decode_columns
from calforensics.ingest.parsers.pcap import read_frames

pytestmark = pytest.mark.skipif(not available(), reason="numba is not installed")


def assert_same(path) -> int:
    fi = read_frames(path, AnomalyLog("x"))
    ref = decode_columns(fi, compiled=False)
    fast = decode_columns(fi, compiled=True)
    for name, values in ref.items():
        a, b = np.asarray(values), np.asarray(fast[name])
        if isinstance(values, pd.Categorical):
            a, b = np.asarray(values.astype(object)), np.asarray(fast[name].astype(object))
            assert (pd.isna(a) == pd.isna(b)).all(), (path, name)
            a, b = a[~pd.isna(a)], b[~pd.isna(b)]
        assert a.dtype == b.dtype and (a == b).all(), (path, name, np.flatnonzero(a != b)[:5])
    return len(fi)


def test_same_on_the_corpus():
    files = sorted(glob.glob(str(CORPUS / "pcaps" / "*")))
    if not files:
        unavailable(f"no corpus at {CORPUS}")
    assert sum(assert_same(f) for f in files) > 500


def test_same_on_the_lab_samples(tmp_path):
    import tarfile

    total = 0
    for name in ("lab-vxlan", "lab-ipip"):
        with tarfile.open(SAMPLES / f"{name}.tgz") as tar:
            tar.extractall(tmp_path / name, filter="data")
        for f in sorted((tmp_path / name).rglob("*.pcap")):
            total += assert_same(f)
    assert total > 500


def test_same_on_odd_and_damaged_frames(tmp_path):
    import struct

    import dpkt

    inner = tcp4(src="192.168.1.5", dst="192.168.2.7", flags=dpkt.tcp.TH_SYN, opts=b"\x02\x04\x05\xb4")
    frames = [
        eth(inner),
        vxlan_frame(inner),
        vxlan_frame(udp4(), dport=8472),
        eth(tcp4())[:30],
        eth(udp4())[:38],
        eth(tcp4())[: 14 + 20 + 10],
    ]
    ipip = dpkt.ip.IP(src=ip4("10.0.0.1"), dst=ip4("10.0.0.2"), p=4, data=bytes(inner))
    ipip.len = len(bytes(ipip))
    frames.append(eth(ipip))
    gre = dpkt.ip.IP(
        src=ip4("10.0.0.1"), dst=ip4("10.0.0.2"), p=47, data=struct.pack(">HHI", 0x2000, 0x0800, 9) + bytes(inner)
    )
    gre.len = len(bytes(gre))
    frames.append(eth(gre))
    nested = inner  # IPIP inside IPIP, one layer past the depth cap
    for _ in range(5):
        nested = dpkt.ip.IP(src=ip4("10.0.0.1"), dst=ip4("10.0.0.2"), p=4, data=bytes(nested))
        nested.len = len(bytes(nested))
    frames.append(eth(nested))
    bad = bytearray(eth(tcp4()))
    bad[14] = 0x43
    frames.append(bytes(bad))
    assert_same(write_pcap(tmp_path / "odd.pcap", frames))


def test_the_compiled_decoder_numbers_what_the_columns_name():
    """The kernel's own copies of the status, encapsulation, port and label constants equal the
    packets table's (it cannot import them: packet_columns imports the kernel)."""
    from calforensics.ingest.parsers import _fastdecode as k
    from calforensics.ingest.parsers import packet_columns as cols

    statuses = ["OK", "UNSUPPORTED_LINKTYPE", "TRUNC_LINK", "TRUNC_IP", "BAD_IP_VERSION", "BAD_IHL", "BAD_TOTAL"]
    statuses += ["TRUNC_V6EXT", "TRUNC_TCP", "BAD_TCP_OFF", "TRUNC_UDP", "BAD_UDP_LEN", "TRUNC_ICMP", "TRUNC_TUNNEL"]
    statuses += ["BAD_VXLAN", "BAD_GENEVE", "TOO_DEEP", "LT_MISMATCH", "CAP_GT_WIRE"]
    assert [getattr(k, name) for name in statuses] == list(range(len(cols.STATUS_KINDS)))
    kernel_encaps = [k.ENC_NONE, k.ENC_IPIP, k.ENC_VXLAN, k.ENC_GRE, k.ENC_GENEVE]
    assert kernel_encaps == [cols.ENCAP_KINDS.index(e) for e in ("none", "ipip", "vxlan", "gre", "geneve")]
    kernel_limits = (k.GRE_UDP_PORT, k.VXLAN_GPE_PORT, k.MAX_MPLS_LABELS)
    assert kernel_limits == (cols.GRE_UDP_PORT, cols.VXLAN_GPE_PORT, cols.MAX_MPLS_LABELS)


def test_same_on_mirror_and_carrier_encapsulations_whole_and_cut(tmp_path):
    from encapframes import FRAMES, damaged

    frames = [frame for frame, _, _ in FRAMES.values()] + [frame for frame, _ in damaged().values()]
    # and every frame cut at every length: each header's length checks, in both decoders
    frames += [frame[:n] for frame, _, _ in FRAMES.values() for n in range(14, len(frame), 3)]
    assert assert_same(write_pcap(tmp_path / "encap.pcap", frames)) == len(frames)


@pytest.mark.parametrize("compiled", [True, False])
def test_address_factorize_matches_pandas(monkeypatch, compiled):
    """Address codes from the compiled factorize and from the pandas fallback: sorted IPv4 categories,
    -1 (missing) for rows that are not IPv4, whatever the number of distinct addresses."""
    from calforensics.ingest.parsers import _fastdecode
    from calforensics.ingest.parsers.packet_columns import AddressColumn as _AddrSlot

    monkeypatch.setattr(_fastdecode, "available", lambda: compiled)
    rng = np.random.default_rng(7)
    for distinct in (1, 3, 3000):
        pool = rng.integers(0, 2**32, distinct)
        values = pool[rng.integers(0, distinct, 20_000)].astype(np.int64)
        version = rng.choice(np.array([0, 4, 4, 4, 6], dtype=np.int8), len(values))
        values[version == 0] = 0
        slot = _AddrSlot(len(values))
        slot.version, slot.v4 = version, values.copy()
        slot.v6_rows, slot.v6_bytes = [np.flatnonzero(version == 6)], [np.zeros(((version == 6).sum(), 16), np.uint8)]
        got = slot.categorical()
        is4 = version == 4
        expect = pd.Categorical(
            [str(ipaddress.IPv4Address(int(v))) for v in values[is4]],
        )
        assert list(got.categories[: len(expect.categories)]) == sorted(
            expect.categories, key=lambda a: int(ipaddress.IPv4Address(a))
        )
        assert (np.asarray(got.astype(object))[is4] == np.asarray(expect.astype(object))).all()
        assert pd.isna(np.asarray(got.astype(object))[version == 0]).all()
        assert (np.asarray(got.astype(object))[version == 6] == "::").all()


# ---- the compiled pcapng block run ------------------------------------------------------------
def _index_both(source, monkeypatch):
    """(compiled, reader-only) frame indexes and anomaly rows for one pcapng file or its bytes; the
    compiled one also read in two passes into exact arrays (as for a spilled index) must agree."""
    from calforensics.ingest.parsers import pcap

    fast_log, slow_log, exact_log = AnomalyLog("x"), AnomalyLog("x"), AnomalyLog("x")
    fast = read_frames(source, fast_log)
    exact = read_frames(source, exact_log, lambda n, dtype: np.empty(n, dtype=dtype), lambda n: True)
    _assert_same_index(exact, fast, exact_log.rows, fast_log.rows, "two passes")
    with monkeypatch.context() as m:
        m.setattr(pcap._Frames, "epb_run", lambda self, data, off, *rest: off)
        slow = read_frames(source, slow_log)
    return fast, slow, fast_log.rows, slow_log.rows


def _assert_same_index(fast, slow, fast_rows, slow_rows, what):
    for name in ("offsets", "caplens", "wirelens", "ts_ns", "iface"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), (what, name)
    assert fast.records == slow.records and fast.interfaces == slow.interfaces, what
    assert fast_rows == slow_rows, what


def _pcapng_bytes() -> bytes:
    """Two sections, three interfaces (µs, ns and 2^-20 s resolutions, one with a time offset),
    Enhanced, Simple and obsolete packet blocks, in little endian, as dpkt writes them."""
    import io

    import dpkt

    out = io.BytesIO()
    opt = dpkt.pcapng.PcapngOptionLE
    ts_ns = 1_700_000_000_123_456_789
    for section in range(2):
        idbs = [
            dpkt.pcapng.InterfaceDescriptionBlockLE(linktype=1, opts=[opt(code=2, data=b"eth0"), opt(code=0)]),
            dpkt.pcapng.InterfaceDescriptionBlockLE(
                linktype=1, opts=[opt(code=2, data=b"cali1"), opt(code=9, data=b"\x09"), opt(code=0)]
            ),
            dpkt.pcapng.InterfaceDescriptionBlockLE(
                linktype=101,
                opts=[
                    opt(code=9, data=b"\x94"),
                    opt(code=14, data=(-5).to_bytes(8, "little", signed=True)),
                    opt(code=0),
                ],
            ),
        ]
        w = dpkt.pcapng.Writer(out, shb=dpkt.pcapng.SectionHeaderBlockLE(), idb=idbs)
        for i in range(300):
            iface = i % 3
            ts = (ts_ns // 1000, ts_ns, (ts_ns * (1 << 20)) // 1_000_000_000)[iface] + i
            frame = bytes(udp4(src=f"10.0.{section}.{i % 250}")) if iface == 2 else eth(tcp4(ip_id=i))
            w.writepkt(
                dpkt.pcapng.EnhancedPacketBlockLE(
                    iface_id=iface, ts_high=ts >> 32, ts_low=ts & 0xFFFFFFFF, pkt_data=frame
                )
            )
            if i % 97 == 0:
                frame = eth(tcp4())
                pad = (-len(frame)) % 4
                spb = struct.pack("<III", 3, 16 + len(frame) + pad, len(frame)) + frame + bytes(pad)
                out.write(spb + struct.pack("<I", 16 + len(frame) + pad))
    return out.getvalue()


def test_pcapng_block_run_equals_the_reader_on_the_corpus(monkeypatch):
    files = sorted(glob.glob(str(CORPUS / "pcaps" / "*.pcapng")))
    if not files:
        unavailable(f"no corpus at {CORPUS}")
    for f in files:
        _assert_same_index(*_index_both(f, monkeypatch), f)


def test_pcapng_block_run_equals_the_reader_on_mutated_files(monkeypatch):
    """Bit flips, lying lengths and truncations anywhere: the compiled run must hand every damaged
    block to the reader, so indexes and anomalies stay identical (a small seeded fuzz)."""
    import random

    good = _pcapng_bytes()
    fast, slow, fr, sr = _index_both(good, monkeypatch)
    assert len(fast) == 2 * 300 + 2 * 4 and not fr  # every packet block, no anomaly
    _assert_same_index(fast, slow, fr, sr, "clean")
    rnd = random.Random(6)
    for case in range(150):
        data = bytearray(good)
        for _ in range(rnd.choice((1, 2, 8))):
            at = rnd.randrange(len(data))
            data[at] = rnd.choice((data[at] ^ (1 << rnd.randrange(8)), 0, 0xFF))
        if case % 10 == 0:
            data = data[: rnd.randrange(len(data))]
        _assert_same_index(*_index_both(bytes(data), monkeypatch), f"case {case}")


# ---- the compiled classic-pcap index ---------------------------------------------------------
def _reference_pcap_index(data: bytes):
    """A plain struct reading of a classic pcap: (offset, caplen, wirelen, ts_ns) per whole record,
    and the rows whose sub-second field is out of range (the reader's first 100)."""
    from calforensics.ingest.parsers.pcap import MAX_RECORD, PCAP_MAGICS

    endian, mult = PCAP_MAGICS[data[:4]]
    limit = 1_000_000 if mult == 1000 else 1_000_000_000
    rows, bad, off = [], [], 24
    if len(data) < 24 or struct.unpack_from(endian + "H", data, 4)[0] != 2:
        return rows, bad  # no header, or a version the reader does not index
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from(endian + "IIII", data, off)
        if incl > MAX_RECORD or off + 16 + incl > len(data):
            break
        if frac >= limit and len(bad) < 100:
            bad.append(len(rows) + 1)
        rows.append((off + 16, min(incl, 2**31 - 1), min(orig, 2**31 - 1), sec * 1_000_000_000 + frac * mult))
        off += 16 + incl
    return rows, bad


def test_pcap_index_equals_a_plain_reading_of_every_record():
    """Corpus captures and seeded mutations of one (flipped bytes, lying lengths, bad sub-second
    fields, truncation): the compiled two-pass index equals a plain struct walk, record by record."""
    import random

    files = sorted(glob.glob(str(CORPUS / "pcaps" / "*.pcap")))
    if not files:
        unavailable(f"no corpus at {CORPUS}")
    cases = []
    for f in files:
        data = Path(f).read_bytes()
        if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            cases.append((f, data))
    assert len(cases) > 10
    rnd = random.Random(7)
    base = max((d for _, d in cases), key=len)
    for case in range(100):
        data = bytearray(base)
        for _ in range(rnd.choice((1, 3, 10))):
            at = rnd.randrange(24, len(data))
            data[at] = rnd.choice((data[at] ^ (1 << rnd.randrange(8)), 0, 0xFF))
        if case % 7 == 0:
            data = data[: rnd.randrange(24, len(data))]
        cases.append((f"mutation {case}", bytes(data)))
    for what, data in cases:
        rows, bad = _reference_pcap_index(data)
        log = AnomalyLog("x")
        fi = read_frames(data, log)
        got = list(zip(fi.offsets.tolist(), fi.caplens.tolist(), fi.wirelens.tolist(), fi.ts_ns.tolist(), strict=True))
        assert got == rows, what
        flagged = [int(r[3].split()[1]) for r in log.rows if r[4] == "bad_timestamp"]
        assert flagged == bad, what
