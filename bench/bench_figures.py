"""The report's figures on a fleet-sized analysis: 5,000 tunnel pairs, 10,000 drops (the report draws
the first 50, one path drawing per distinct path up to PATH_FIGURES) with thousands of packets each,
and hop delays of 2,000 hop pairs (the CDF draws the busiest 8). Prints each figure's time and the
marks it drew. Run: `python bench/bench_figures.py [--tunnels N] [--drops N] [--repeat N]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from calforensics.render import plots
from calforensics.render.report import PATH_FIGURES, REPORT_DROPS


def tunnels(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    inner = rng.integers(1_000, 10_000_000, n)
    return pd.DataFrame(
        {
            "type": "vxlan",
            "vni": 4096,
            "src_node": [f"node-{i % 50}" for i in range(n)],
            "dst_node": [f"node-{(i * 7 + 1) % 50}" for i in range(n)],
            "packets": rng.integers(1, 10_000, n),
            "inner_bytes": inner,
            "overhead_bytes": inner // 20,
            "share_of_wire_bytes": 50 / 1050,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tunnels", type=int, default=5000)
    ap.add_argument("--drops", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t = tunnels(args.tunnels)
    drops = pd.DataFrame(
        {"flow_id": range(args.drops), "src_ip": "10.0.0.1", "src_port": 1, "dst_ip": "10.0.0.2", "dst_port": 80}
    )
    shown = drops.head(REPORT_DROPS)
    first = pd.DataFrame(
        {
            "flow_id": np.repeat(np.arange(REPORT_DROPS), 5_000),
            "ts_corrected_ns": np.tile(np.arange(5_000) * 1_000_000, REPORT_DROPS),
        }
    )
    path = " > ".join(f"node-{i}:eth0" for i in range(6))
    figures = {
        "overhead by tunnel": lambda: plots.overhead_by_tunnel(t),
        "drops over time": lambda: plots.drops_over_time(shown, first, 0),
        "path drawings": lambda: [
            plots.path_diagram(path, "node-2:eth0", "node-3:eth0", "where") for _ in range(PATH_FIGURES)
        ],
    }
    total = 0.0
    for name, draw in figures.items():
        best = min(_timed(draw) for _ in range(args.repeat))
        total += best
        print(f"  {name:20} {best * 1000:7.0f} ms")
    print(
        f"figures of a report on {args.tunnels} tunnel pairs and {args.drops} drops: {total * 1000:.0f} ms "
        f"(bars {plots.FIGURE_TUNNELS}+1, {plots.DROP_ROWS} drop rows of at most {plots.DROP_POINTS} points, "
        f"{PATH_FIGURES} path drawings)"
    )


def _timed(draw) -> float:
    t0 = time.perf_counter()
    draw()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
