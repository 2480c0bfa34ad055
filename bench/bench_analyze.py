"""End to end: `calforensics analyze` on a generated bundle (bench_join's two-node layout), stage by
stage, with 1 and with 2 workers.

Prints, per stage (index the captures, decode packets, join and flows, analyses, report), the time
and the peak resident-memory growth, then packets/s for the whole analysis. Each worker count runs
in a fresh process, so neither run inherits the other's memory or caches. Run:
`python bench/bench_analyze.py [--flows N] [--workers 1 2] [--tables csv none] [--incident] [--spill]
[--fragment-every N] [--any-v1]` (the last two: capture shapes, see bench_join.write_bundle).
With ``--spill`` the packets table is spilled to mapped files and the join and flows run in
partitions on disk (``--partition-packets``); memory is then measured as anonymous memory (RSS
would count the mapped files' pages).
With ``--incident`` node-b's captures keep only their first and last frames, as if everything in
between was lost on the way: every flow is then a drop to explain (the case an engineer is paged for).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dpkt
from bench_join import write_bundle
from peak_memory import PeakAnon, PeakGrowth

import calforensics
import calforensics.analyses
import calforensics.bundle
import calforensics.render.report


def run(root: Path, workers: int, out: Path, tables: str, partition: int = 0) -> None:
    rows = []
    t_all = time.perf_counter()
    spill = {"spill": True, "spill_dir": out.parent / "spill", "partition_packets": partition} if partition else {}
    with (
        PeakAnon() if partition else PeakGrowth() as total,
        calforensics.open_bundle(root, workers=workers, **spill) as b,
    ):
        for stage, work in (
            ("index captures", lambda: b.captures),
            ("decode packets", lambda: b.packets),
            ("join and flows", lambda: b.flows),
            ("analyses", lambda: calforensics.analyze(b)),
        ):
            t = time.perf_counter()
            result = work()
            rows.append((stage, time.perf_counter() - t, total.now()))
        t = time.perf_counter()
        calforensics.write_report(result, out, tables=tables)
        rows.append(("report", time.perf_counter() - t, total.now()))
        packets = len(b.packets)
    s = time.perf_counter() - t_all
    for stage, secs, peak in rows:
        print(f"  {stage:16s} {secs:7.2f} s   peak growth so far {peak / 2**20:7.0f} MB")
    print(
        f"analyze, tables {tables}, {workers} worker(s): {packets:,} frames in {s:.2f} s = "
        f"{packets / s:,.0f} packets/s; "
        f"peak growth {total.bytes / 2**20:.0f} MB ({total.bytes / packets:.0f} B/packet)"
        + (f"; spilled, partitions of {partition:,} packets, anonymous memory" if partition else "")
    )


def lose_at_destination(root: Path) -> None:
    """node-b's captures keep their first and last frames (so they ran the whole time) and nothing else."""
    for path in sorted((root / "nodes" / "node-b" / "pcaps").glob("*.pcap")):
        with open(path, "rb") as fh:
            reader = dpkt.pcap.Reader(fh)
            frames, linktype = list(reader), reader.datalink()
        with open(path, "wb") as fh:
            writer = dpkt.pcap.Writer(fh, linktype=linktype, nano=True)
            for ts, frame in (frames[0], frames[-1]):
                writer.writepkt(frame, ts=ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tables", nargs="+", default=["none", "csv"], choices=["none", "csv", "parquet"])
    ap.add_argument("--incident", action="store_true", help="lose everything between node-a and node-b")
    ap.add_argument("--spill", action="store_true", help="spill the tables and join in partitions on disk")
    ap.add_argument("--partition-packets", type=int, default=1 << 20)
    ap.add_argument("--fragment-every", type=int, default=0, help="every Nth packet a datagram fragmented twice")
    ap.add_argument("--any-v1", action="store_true", help="node-a captured with `-i any` in Linux cooked v1")
    ap.add_argument("--run", nargs=3, metavar=("ROOT", "WORKERS", "TABLES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        with tempfile.TemporaryDirectory() as tmp:
            partition = args.partition_packets if args.spill else 0
            run(Path(args.run[0]), int(args.run[1]), Path(tmp) / "report", args.run[2], partition)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench-analyze"
        write_bundle(root, args.flows, 10, args.fragment_every, args.any_v1)
        if args.incident:
            lose_at_destination(root)
        for tables in args.tables:
            for w in args.workers:
                cmd = [sys.executable, __file__, "--flows", str(args.flows), "--run", str(root), str(w), tables]
                cmd[2:2] = ["--spill", "--partition-packets", str(args.partition_packets)] if args.spill else []
                subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
