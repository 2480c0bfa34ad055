"""A capture larger than the memory the decode may use is still read, under a hard kernel limit.

The decode runs in a child process inside a memory cgroup (bench/memlimit.py) whose limit is below
the capture plus its packets table; with the table spilled to mapped files it must finish and give
the same table as an unlimited decode. Needs root and a memory cgroup: skipped without them, except
on CI (CI=true), where it must run.
"""

import json
import struct
import subprocess
import sys

import pytest
from conftest import ROOT, unavailable

sys.path.insert(0, str(ROOT / "bench"))

import calforensics

PACKETS = 1_500_000
LIMIT = 320 << 20


@pytest.fixture
def memlimit():
    """bench/memlimit.py, where a memory cgroup can be made (root); else a skip, or on CI a failure."""
    import memlimit

    if not memlimit.available():
        unavailable("the bounded-memory test needs root and a writable memory cgroup")
    return memlimit


def unlimited_table(capture) -> tuple[dict, int]:
    """The in-memory decode's table digest and its size in bytes."""
    from bench_bounded import table_digest

    with calforensics.open_bundle(capture, spill=False) as b:
        return table_digest(b.packets), int(b.packets.memory_usage(deep=False).sum())


def decode_under_limit(memlimit, capture, spill_dir):
    """The spilled decode in a child under LIMIT: (the cgroup run, the child's table digest)."""
    script = ROOT / "bench" / "bench_bounded.py"
    run = memlimit.run_limited(
        [sys.executable, str(script), "--child", str(capture), str(spill_dir)], LIMIT, timeout=120
    )
    assert run.returncode == 0, f"killed by OOM: {run.oom_killed}; {run.stderr[-2000:]}"
    return run, json.loads(run.stdout.strip().splitlines()[-1])["digest"]


def test_spilled_decode_fits_under_a_limit_smaller_than_capture_plus_table(tmp_path, memlimit):
    from bench_ingest import write_capture

    capture = tmp_path / "big.pcap"
    size = write_capture(capture, PACKETS)
    expected, table_bytes = unlimited_table(capture)
    assert size + table_bytes > 1.4 * LIMIT  # the limit really is smaller than what an in-memory decode holds

    run, digest = decode_under_limit(memlimit, capture, tmp_path / "spill")
    assert digest == expected
    assert run.peak_bytes >= 0.9 * LIMIT  # the kernel had to hold it to the limit (page cache reclaimed)
    assert not list((tmp_path / "spill").iterdir())  # mapped column files removed on close


def pcap_to_pcapng(src, dst) -> None:
    """The same records as one pcapng section with one Ethernet interface and microsecond Enhanced
    Packet Blocks (what dumpcap writes), streamed: the test must not hold the file in memory."""
    with open(src, "rb") as fin, open(dst, "wb") as out:
        fin.read(24)
        shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        out.write(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body + struct.pack("<I", 12 + len(shb_body)))
        idb_body = struct.pack("<HHI", 1, 0, 262144)
        out.write(struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body)))
        batch = []
        while header := fin.read(16):
            sec, frac, incl, orig = struct.unpack("<IIII", header)
            frame = fin.read(incl)
            ts = sec * 1_000_000 + frac // 1000  # the pcap is nanosecond; pcapng's default is µs
            pad = (-incl) % 4
            size = 32 + incl + pad
            batch.append(struct.pack("<IIIIIII", 6, size, 0, ts >> 32, ts & 0xFFFFFFFF, incl, orig))
            batch.append(frame + bytes(pad) + struct.pack("<I", size))
            if len(batch) > 20_000:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch))


def test_spilled_pcapng_decode_fits_under_the_same_limit(tmp_path, memlimit):
    """pcapng too: its index is read in two passes into mapped arrays of exact size, in written-back
    runs, so the decode fits under a limit below capture plus table."""
    from bench_ingest import write_capture

    pcap = tmp_path / "big.pcap"
    write_capture(pcap, PACKETS)
    capture = tmp_path / "big.pcapng"
    pcap_to_pcapng(pcap, capture)
    pcap.unlink()
    expected, table_bytes = unlimited_table(capture)
    assert capture.stat().st_size + table_bytes > 1.4 * LIMIT
    with calforensics.open_bundle(capture, spill=True, spill_dir=tmp_path / "look") as b:
        assert b.captures["packets"].sum() == PACKETS
        # the index's five per-frame arrays are mapped files, not memory
        assert len(list((tmp_path / "look").glob("calforensics-cols-*/array-*.npy"))) == 5
    _, digest = decode_under_limit(memlimit, capture, tmp_path / "spill")
    assert digest == expected


JOIN_FLOWS = 20_000  # bench_join's bundle: 1.2M frames at six capture points, NAT and VXLAN


@pytest.mark.parametrize(("analyze", "limit_mb"), [(False, 256), (True, 320)])
def test_spilled_join_flows_and_analysis_fit_under_a_limit_below_their_tables(tmp_path, memlimit, analyze, limit_mb):
    """Past the decode: the join and the flow build of a spilled table run in partitions on disk and
    write the hops into mapped files, and the analyses read the hops a block at a time; so decode,
    join and flows of 1.2M frames (and with them the analyses and the report) finish under a limit
    well below the packets and hops tables and the captures, with the hops, flows, clock offsets (and findings and every
    analysis table) of an unlimited in-memory run. 250,000 packets in memory at a time: on this
    two-core machine two partitions of 125,000, one a thread."""
    from bench_bounded import analysis_digest, joined_digest, table_digest
    from bench_join import write_bundle

    root = tmp_path / "bundle"
    write_bundle(root, JOIN_FLOWS, 10)
    with calforensics.open_bundle(root, spill=False) as b:
        expected = table_digest(b.packets) | {"joined": joined_digest(b)}
        if analyze:
            expected["analysis"] = analysis_digest(b)
        tables = sum(int(t.memory_usage(deep=False).sum()) for t in (b.packets, b.hops))
    captures = sum(p.stat().st_size for p in root.rglob("*.pcap"))
    assert tables + captures > 1.4 * (limit_mb << 20)  # what an in-memory analysis holds at least
    script = ROOT / "bench" / "bench_bounded.py"
    cmd = [sys.executable, str(script), "--join", *(["--analyze"] if analyze else []), "--partition-packets", "250000"]
    # the same run on a small bundle first, without a limit: numba compiles the kernels the spilled
    # path takes into its cache (a fresh clone has none), so the limit measures the analysis, not LLVM
    warm = tmp_path / "warm"
    write_bundle(warm, 200, 10)
    done = subprocess.run([*cmd, "--child", str(warm), str(tmp_path / "warm-spill")], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = memlimit.run_limited([*cmd, "--child", str(root), str(tmp_path / "spill")], limit_mb << 20, timeout=300)
    assert run.returncode == 0, f"killed by OOM: {run.oom_killed}; {run.stderr[-2000:]}"
    got = json.loads(run.stdout.strip().splitlines()[-1])["digest"]
    assert got["joined"]["hops"] >= 1_200_000
    assert got == expected
    assert not list((tmp_path / "spill").iterdir())  # mapped and partition files removed on close


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB tmpfs, so that spilling runs out of room (needs root; CI must have it)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a small tmpfs (needs root): {done.stderr.decode(errors='replace')}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_no_room_to_spill_is_one_clear_error_not_a_crash(tmp_path, small_disk):
    """A spill directory without room fails when the files are made (blocks reserved up front), with a
    message naming the directory; the CLI prints one line and exits 2. Without the reservation a
    full disk would kill the process with SIGBUS on some later page write."""
    from bench_ingest import write_capture

    capture = tmp_path / "c.pcap"
    write_capture(capture, 50_000)  # ~9 MB of table: far more than the 1 MB disk
    with (
        pytest.raises(RuntimeError, match=r"cannot keep the packets table in .*small"),
        calforensics.open_bundle(capture, spill=True, spill_dir=small_disk) as b,
    ):
        _ = b.packets
    cli = [sys.executable, "-m", "calforensics.cli", "analyze", str(capture), "-o", str(tmp_path / "r")]
    run = subprocess.run(
        [*cli, "--spill-dir", str(small_disk / "cf")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("calforensics: error: cannot keep the packets table"), lines


def test_no_room_for_partition_files_is_one_clear_error(small_disk):
    """The join's and the flows' partition files are written as they are made; a disk that fills
    up under them is a RuntimeError naming the folder (which the CLI prints as one line, exit 2)."""
    import numpy as np

    from calforensics.runtime.partitions import PartitionFiles

    store = PartitionFiles(small_disk / "join", 4, {"row": np.int64, "ts": np.int64})
    rows = np.arange(200_000)  # 3.2 MB of columns for a 1 MB disk
    with pytest.raises(RuntimeError, match=r"cannot write partition files in .*small"):
        store.append(rows % 4, {"row": rows, "ts": rows})
    store.remove()


LYING_LIMIT = 256 << 20


def lying_captures(folder) -> list:
    """Captures whose headers claim far more than their files hold (each claim > 4 GB in all)."""
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + bytes(46)
    paths = []
    # pcap: an absurd snaplen, and records that each claim 4 GB
    pcap = folder / "claims.pcap"
    with open(pcap, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFFFFFF, 1))
        for i in range(2000):
            fh.write(struct.pack("<IIII", 1_700_000_000, i, len(frame), 0xFFFFFFF0) + frame)
        fh.write(struct.pack("<IIII", 1_700_000_001, 0, 0xFFFFFFF0, 0xFFFFFFF0) + frame)
    paths.append(pcap)
    # pcapng: an interface with an absurd snaplen, packet blocks claiming 4 GB captured, a last block
    # claiming a 4 GB length
    ng = folder / "claims.pcapng"
    with open(ng, "wb") as fh:
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        fh.write(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb)) + shb + struct.pack("<I", 12 + len(shb)))
        idb = struct.pack("<HHI", 1, 0, 0xFFFFFFFF)
        fh.write(struct.pack("<II", 1, 12 + len(idb)) + idb + struct.pack("<I", 12 + len(idb)))
        for i in range(2000):
            body = struct.pack("<IIIII", 0, 0, i, 0xFFFFFFF0, 0xFFFFFFF0) + frame + bytes(-len(frame) % 4)
            fh.write(struct.pack("<II", 6, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))
        fh.write(struct.pack("<II", 6, 0xFFFFFFF0) + bytes(64))
    paths.append(ng)
    return paths


def test_lying_lengths_cannot_make_the_reader_allocate_what_the_file_does_not_hold(tmp_path, memlimit):
    """Headers that claim gigabytes (snaplen, captured lengths, block lengths) in files of a few
    hundred kB are read under a 256 MB limit: what the reader allocates follows the file, not the
    claims; the lies are anomalies, the frames that are there are read."""
    paths = lying_captures(tmp_path)
    probe = (
        "import json, sys, calforensics\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    with calforensics.open_bundle(p, workers=1) as b:\n"
        "        out[p] = [len(b.packets), len(b.anomalies)]\n"
        "print(json.dumps(out))\n"
    )
    run = memlimit.run_limited([sys.executable, "-c", probe, *map(str, paths)], LYING_LIMIT, timeout=120)
    assert run.returncode == 0, f"killed by OOM: {run.oom_killed}; {run.stderr[-2000:]}"
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for path in paths:
        packets, anomalies = got[str(path)]
        assert packets >= 2000 and anomalies >= 1, (path.name, packets, anomalies)
    assert sum(p.stat().st_size for p in paths) < 1 << 20  # the files are small; the claims are not
