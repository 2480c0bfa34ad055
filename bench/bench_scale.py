"""Scaling benchmark: decoding a bundle of several captures with 1 and with 2 workers.

Each worker count runs ``--repeat`` times, alternating, and the best of each is compared (every
run listed). Run: `python bench/bench_scale.py [--captures N] [--packets-per-capture N] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_ingest import write_capture

import calforensics
import calforensics.analyses
import calforensics.bundle
import calforensics.render.report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--captures", type=int, default=4)
    ap.add_argument("--packets-per-capture", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each worker count; the best of each is compared")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bundle"
        for i in range(args.captures):
            d = root / "nodes" / f"node-{i}" / "pcaps"
            d.mkdir(parents=True)
            write_capture(d / "eth0.pcap", args.packets_per_capture)
        total = args.captures * args.packets_per_capture
        runs: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeat):  # alternating, so neither count always gets the fresh memory
            for workers in (1, 2):
                with calforensics.open_bundle(root, workers=workers) as b:
                    b.captures  # noqa: B018 - the index is built before timing the decode
                    t = time.perf_counter()
                    packets = b.packets
                    runs[workers].append(time.perf_counter() - t)
                    assert len(packets) == total
                del packets
        times = {workers: min(r) for workers, r in runs.items()}
        for workers, best in times.items():
            listed = ", ".join(f"{x:.2f}" for x in runs[workers])
            print(f"{workers} worker(s): {total / best:12,.0f} packets/s  ({best:.2f} s; runs {listed})")
        print(
            f"speed-up with 2 workers: {times[1] / times[2]:.2f}x ({args.captures} captures of "
            f"{args.packets_per_capture:,} packets)"
        )


if __name__ == "__main__":
    main()
