"""End to end: `calforensics analyze` on a generated bundle (bench_join's two-node layout).

Prints packets/s for the whole analysis (read, decode, join, flows, analyses, report) and the peak
resident memory. Run: `python bench/bench_analyze.py [--flows N]`.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench_join import write_bundle

import calforensics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench-analyze"
        write_bundle(root, args.flows, 10)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        with calforensics.open_bundle(root, workers=args.workers) as b:
            a = calforensics.analyze(b)
            calforensics.write_report(a, Path(tmp) / "report", tables="none")
            packets = len(b.packets)
        s = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"analyze: {packets:,} frames, {args.flows:,} flows in {s:.2f} s = {packets / s:,.0f} packets/s "
        f"(workers={args.workers}); peak RSS {rss / 1024:.0f} MB (+{(rss - rss0) / 1024:.0f} MB)"
    )


if __name__ == "__main__":
    main()
