"""A mutation fuzzer over captures: bit flips, truncation, lying record lengths, an absurd snaplen,
zero-length records and garbage pcapng blocks, in a bounded number of seeded cases that CI runs.

Each damaged capture is opened, decoded and (one case in four) analysed with its report: no
exception, a time bound per file, and nothing lost silently: every record the reader could not
take is an anomaly row, and every decoded packet whose status is not "ok" has its anomaly row.
For longer runs: `CALFORENSICS_FUZZ_CASES=5000 make test` (or pytest this file), or coverage-guided
with atheris (docs/fuzzing.md).
"""

import os
import random
import struct
import sys
import tarfile
import time

import pytest
from conftest import ROOT

import calforensics

sys.path.insert(0, str(ROOT / "bench"))

CASES = int(os.environ.get("CALFORENSICS_FUZZ_CASES", "40"))
SECONDS_PER_FILE = 20  # far above what a 300-frame capture takes (~0.2 s), far below a hang
RECORD_DAMAGE = {"truncated_record", "bad_record_length", "bad_block_length", "truncated_block", "bad_block"}


def records(data: bytes) -> list[int]:
    """Offsets of a nanosecond little-endian pcap's record headers (the base capture's own form)."""
    out, off = [], 24
    while off + 16 <= len(data):
        out.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return out


def mutate_pcap(base: bytes, rnd: random.Random) -> tuple[str, bytes]:
    data = bytearray(base)
    offsets = records(base)
    kind = rnd.choice(["flips", "truncate", "lying_length", "zero_length", "snaplen", "garbage_tail"])
    if kind == "flips":
        for _ in range(rnd.choice((1, 5, 50))):
            at = rnd.randrange(24, len(data))
            data[at] ^= 1 << rnd.randrange(8)
    elif kind == "truncate":
        data = data[: rnd.randrange(25, len(data))]
    elif kind == "lying_length":
        at = rnd.choice(offsets)
        struct.pack_into("<I", data, at + 8, rnd.choice((0xFFFFFFFF, len(data), 1 << 20, 70_000)))
    elif kind == "zero_length":
        at = rnd.choice(offsets)
        data[at:at] = struct.pack("<IIII", 1_700_000_000, 0, 0, 0)
    elif kind == "snaplen":
        struct.pack_into("<I", data, 16, rnd.choice((0, 0xFFFFFFFF, 1)))
    else:
        data += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
    return kind, bytes(data)


def mutate_pcapng(base: bytes, rnd: random.Random) -> tuple[str, bytes]:
    data = bytearray(base)
    # block starts: section header, interface description, then enhanced packet blocks
    starts, off = [], 0
    while off + 12 <= len(data):
        starts.append(off)
        off += struct.unpack_from("<I", data, off + 4)[0]
    kind = rnd.choice(["flips", "truncate", "lying_block_length", "garbage_block", "zero_block"])
    at = rnd.choice(starts[2:])
    if kind == "flips":
        for _ in range(rnd.choice((1, 5, 50))):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
    elif kind == "truncate":
        data = data[: rnd.randrange(1, len(data))]
    elif kind == "lying_block_length":
        struct.pack_into("<I", data, at + 4, rnd.choice((0xFFFFFFFC, 8, 13, len(data))))
    elif kind == "garbage_block":
        body = bytes(rnd.randrange(256) for _ in range(4 * rnd.randrange(0, 16)))
        block_type = rnd.choice((0x0BAD, 0x80000001, 3, 5))
        data[at:at] = struct.pack("<II", block_type, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    else:
        data[at:at] = struct.pack("<III", 6, 12, 12)  # an enhanced packet block too short for its header
    return kind, bytes(data)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    from bench_ingest import write_capture
    from test_bounded import pcap_to_pcapng

    folder = tmp_path_factory.mktemp("bases")
    pcap = folder / "base.pcap"
    write_capture(pcap, 300)
    pcapng = folder / "base.pcapng"
    pcap_to_pcapng(pcap, pcapng)
    return {"pcap": pcap.read_bytes(), "pcapng": pcapng.read_bytes()}


def check_damaged(path, kind, whole: int, analyse: bool, out) -> bool:
    """Open, decode (and maybe analyse) one damaged capture of a base that held ``whole`` packets.
    False when it was refused as unusable (damage in the file header: one clear error, as for any
    unusable input); callers check that most cases were read, or the checks below would not run."""
    started = time.monotonic()
    try:
        b = calforensics.open_bundle(path, workers=1)
    except calforensics.BundleError:
        return False
    with b:
        packets, anomalies = b.packets, b.anomalies
        # every decoded packet that is not "ok" has its anomaly row
        bad = int((packets["status"].astype(str) != "ok").sum())
        assert (anomalies["source"] == "packets").sum() == bad, kind
        # a capture the reader could not walk to its end says where it stopped
        if kind in ("truncate", "lying_length", "lying_block_length", "zero_block") and len(packets) < whole:
            assert anomalies["source"].isin(["pcap", "pcapng"]).any(), kind
        if analyse:
            calforensics.write_report(calforensics.analyze(b), out, tables="none")
    assert time.monotonic() - started < SECONDS_PER_FILE, kind
    return True


@pytest.mark.parametrize("form", ["pcap", "pcapng"])
def test_damaged_captures_never_crash_hang_or_lose_records_silently(tmp_path, bases, form):
    rnd = random.Random(11 if form == "pcap" else 12)
    mutate = mutate_pcap if form == "pcap" else mutate_pcapng
    seen_kinds = set()
    read = 0
    for case in range(CASES):
        kind, data = mutate(bases[form], rnd)
        seen_kinds.add(kind)
        path = tmp_path / f"case{case}.{form}"
        path.write_bytes(data)
        read += check_damaged(path, kind, 300, case % 4 == 0, tmp_path / f"report{case}")
        path.unlink()
    assert len(seen_kinds) >= 4
    assert read >= CASES * 3 // 4  # most damage is past the file header: those cases were read


def test_damaged_corpus_captures_never_crash_hang_or_lose_records_silently(tmp_path, corpus):
    """The same damage to real public captures (the conformance corpus: many link types, byte
    orders, time resolutions and pcapng layouts), a few cases each."""
    files = sorted(p for p in (corpus / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))
    assert len(files) > 20
    rnd = random.Random(13)
    ran = read = 0
    for n, base in enumerate(files):
        data = base.read_bytes()
        with calforensics.open_bundle(base, workers=1) as b:  # every corpus capture opens undamaged
            whole = len(b.packets)
        pcapng = data[:4] == b"\x0a\x0d\x0d\x0a"
        for case in range(max(1, CASES // 20)):
            try:
                kind, damaged = (mutate_pcapng if pcapng else mutate_pcap)(data, rnd)
            except (struct.error, IndexError, ValueError):
                continue  # a layout the mutator cannot walk (big-endian, odd blocks): other cases cover it
            path = tmp_path / f"{n}-{case}{base.suffix}"
            path.write_bytes(damaged)
            read += check_damaged(path, kind, whole, False, None)
            path.unlink()
            ran += 1
    assert ran > 20 and read >= ran * 3 // 4


def test_damaged_encapsulations_never_crash_and_both_decoders_agree(tmp_path):
    """The same damage to a capture of MPLS, ERSPAN, PPTP, GRE-in-UDP and VXLAN-GPE frames: read
    without a crash or a silent loss, and the compiled decoder and the reference agree on every row."""
    from encapframes import FRAMES
    from pktutil import write_pcap
    from test_fastdecode import assert_same

    base = write_pcap(tmp_path / "base.pcap", [frame for frame, _, _ in FRAMES.values()] * 4, nano=True)
    data, rnd, read = base.read_bytes(), random.Random(4754), 0
    for case in range(CASES):
        kind, damaged = mutate_pcap(data, rnd)
        path = tmp_path / f"case{case}.pcap"
        path.write_bytes(damaged)
        if check_damaged(path, kind, len(FRAMES) * 4, case % 8 == 0, tmp_path / f"report{case}"):
            read += 1
            assert_same(path)
        path.unlink()
    assert read >= CASES * 3 // 4


def test_damaged_wireguard_uplink_never_crashes_the_match(tmp_path):
    """Flipped bytes, cut and lying records in a WireGuard uplink capture: the message headers are read
    where the bytes are there, the match goes on, every message still gets a match kind."""
    from conftest import SAMPLES

    with tarfile.open(SAMPLES / "lab-wireguard.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-wireguard"
    eth0 = root / "nodes" / "node-a" / "pcaps" / "eth0.pcap"
    base = eth0.read_bytes()
    rnd = random.Random(51820)
    for case in range(6):
        kind, data = mutate_pcap(base, rnd)
        eth0.write_bytes(data)
        # a bundle folder: a damaged capture in it is an anomaly, never a refusal of the whole bundle
        assert check_damaged(root, kind, len(records(base)), case % 2 == 0, tmp_path / f"report{case}")
        with calforensics.open_bundle(root, workers=1) as b:
            wg = b.wireguard
            assert len(wg) and wg["match"].notna().all() and (wg["match"].astype(str) != "").all()


def test_damaged_fragments_never_crash_the_reassembly(tmp_path):
    """Fragments of IPv4 and IPv6 datagrams, whole and refragmented inside VXLAN, damaged: read and
    put back together without a crash; what is put back together is fragments from offset 0 on,
    and both decoders agree on every row (a later fragment carries no outer L4 ports)."""
    from pktutil import eth, write_pcap
    from test_fastdecode import assert_same
    from test_fragments import ipv4_fragments, ipv6_fragments, udp_payload, uplink

    _, l4 = udp_payload(3000)
    frames = []
    for k in range(3):  # one capture point: each datagram has its own id (else they would overlap)
        frames += [eth(f) for f in ipv4_fragments(17, l4, 1500, ip_id=k)]
        frames += uplink(ipv4_fragments(17, l4, 1450, ip_id=10 + k))
        frames += [eth(f, 0x86DD) for f in ipv6_fragments(l4, 1500, ident=20 + k)]
        frames += uplink(ipv6_fragments(l4, 1450, ident=30 + k))
    with calforensics.open_bundle(write_pcap(tmp_path / "whole.pcap", frames, nano=True), workers=1) as b:
        assert len(b.datagrams) == 12 and len(b.anomalies) == 0  # undamaged, every one is put back together
    base = write_pcap(tmp_path / "base.pcap", frames, nano=True)
    data, rnd, read = base.read_bytes(), random.Random(1480), 0
    for case in range(CASES):
        kind, damaged = mutate_pcap(data, rnd)
        path = tmp_path / f"case{case}.pcap"
        path.write_bytes(damaged)
        if check_damaged(path, kind, len(frames), case % 8 == 0, tmp_path / f"report{case}"):
            read += 1
            assert_same(path)
            with calforensics.open_bundle(path, workers=1) as b:
                p, d = b.packets, b.datagrams
                assert (p["frag_offset"].to_numpy()[d.first] == 0).all()
                assert (p["frag_offset"].to_numpy()[d.later] > 0).all()
                assert (d.fragments >= 2).all() and len(d.later) == int((d.fragments - 1).sum())
        path.unlink()
    assert read >= CASES * 3 // 4
