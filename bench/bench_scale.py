"""Scaling benchmark: decoding a bundle of several captures with 1 and with 2 workers.

Run: `python bench/bench_scale.py [--captures N] [--packets-per-capture N]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_ingest import write_capture

import calforensics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--captures", type=int, default=4)
    ap.add_argument("--packets-per-capture", type=int, default=500_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bundle"
        for i in range(args.captures):
            d = root / "nodes" / f"node-{i}" / "pcaps"
            d.mkdir(parents=True)
            write_capture(d / "eth0.pcap", args.packets_per_capture)
        total = args.captures * args.packets_per_capture
        times = {}
        for workers in (1, 2):
            with calforensics.open_bundle(root, workers=workers) as b:
                b.captures  # noqa: B018 - the index is built before timing the decode
                t = time.perf_counter()
                packets = b.packets
                times[workers] = time.perf_counter() - t
                assert len(packets) == total
            print(f"{workers} worker(s): {total / times[workers]:12,.0f} packets/s  ({times[workers]:.2f} s)")
        print(
            f"speed-up with 2 workers: {times[1] / times[2]:.2f}x ({args.captures} captures of "
            f"{args.packets_per_capture:,} packets)"
        )


if __name__ == "__main__":
    main()
