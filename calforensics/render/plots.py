"""Report figures with matplotlib (Agg), returned as PNG bytes for embedding.

Bundle-derived text goes into labels, its control characters shown escaped (render.inert);
mathtext parsing is off so a `$` in an interface name or a comment is drawn as a dollar sign and
cannot make matplotlib fail.
"""

from __future__ import annotations

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analyses.latency import PAIR_LABELS, hop_pair_delays
from .inert import inert

STYLE = {
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "calforensics",
    "path.simplify": True,
}


def _png(fig, tight: bool = True) -> bytes:
    """The figure as PNG; ``tight`` crops to what was drawn (a second layout pass: a figure that
    sets its own margins skips it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


CDF_POINTS = 32_000  # steps drawn per CDF line: dozens per pixel of the figure's width


def _cdf_ranks(n: int) -> np.ndarray:
    """Ranks of the sorted samples a CDF line is drawn through: all of them up to CDF_POINTS, else
    evenly spaced ranks with the first and last. At 32,000 a ~700-pixel-wide figure differs from
    the full line by a few levels of antialiasing at most (tested); a step through millions of
    samples took over a second and most of the report's time."""
    if n <= CDF_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, CDF_POINTS).round().astype(np.int64))


def latency_cdf(samples: pd.DataFrame, top: int = 8) -> bytes | None:
    """CDF of hop delays per hop pair, for the busiest pairs."""
    if samples.empty:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        # one hop pair's delays at a time (samples can be many millions, in mapped files)
        grouped = hop_pair_delays(samples)
        pairs = grouped.pairs
        names = [
            inert(f"{a}:{b} → {c}:{d}") + (" (NAT)" if nat else "")
            for a, b, c, d, nat in zip(*(pairs[c].tolist() for c in PAIR_LABELS), strict=True)
        ]
        counts = pairs["count"].tolist()
        # the busiest first; equally busy ones by name
        for i in sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[:top]:
            d = grouped.sorted_delays(i)
            ranks = _cdf_ranks(len(d))
            ax.step(np.maximum(d[ranks], 0.1), (ranks + 1) / len(d), where="post", label=names[i])
        ax.set_xscale("log")
        # plain tick labels: with mathtext off, log axes would print their LaTeX source
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("delay from the previous capture point (µs, clock-corrected)")
        ax.set_ylabel("fraction of packets")
        ax.legend(fontsize=7, loc="lower right", frameon=False)
        return _png(fig)


FIGURE_TUNNELS = 20  # tunnel pairs drawn one bar each: the most wire bytes first, the rest as one
DROP_POINTS = 200  # packets drawn per dropped flow (evenly spread over its own; its count is written)
DROP_ROWS = 20  # dropped flows drawn over time, a row each (the report lists more; the figure says so)


def top_tunnels(tunnels: pd.DataFrame, top: int = FIGURE_TUNNELS) -> pd.DataFrame:
    """The ``top`` tunnel pairs by wire bytes, then one row summing the others, named by how many
    (the tunnels table holds every pair)."""
    if len(tunnels) <= top:
        return tunnels
    wire = tunnels["inner_bytes"] + tunnels["overhead_bytes"]
    order = np.argsort(-wire.to_numpy(), kind="stable")
    head, rest = tunnels.iloc[order[:top]], tunnels.iloc[order[top:]]
    inner, overhead = int(rest["inner_bytes"].sum()), int(rest["overhead_bytes"].sum())
    other = {c: "" for c in tunnels.columns}
    other.update(
        type=f"{len(rest)} other tunnel pairs",
        vni="",
        src_node="",
        dst_node="",
        inner_bytes=inner,
        overhead_bytes=overhead,
        share_of_wire_bytes=overhead / max(1, inner + overhead),
    )
    return pd.concat([head, pd.DataFrame([other])], ignore_index=True)


def overhead_by_tunnel(tunnels: pd.DataFrame) -> bytes | None:
    """Bytes per tunnel pair, inner and encapsulation: at most FIGURE_TUNNELS + 1 bars."""
    if tunnels.empty:
        return None
    tunnels = top_tunnels(tunnels)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.45 * len(tunnels)))
        labels = [
            inert(f"{t.type} {t.vni} {t.src_node} → {t.dst_node}" if t.src_node else t.type)
            for t in tunnels.itertuples(index=False)
        ]
        y = np.arange(len(tunnels))
        ax.barh(y, tunnels["inner_bytes"], color="#8fb3d9", label="inner packets")
        ax.barh(y, tunnels["overhead_bytes"], left=tunnels["inner_bytes"], color="#d9534f", label="encapsulation")
        for i, t in enumerate(tunnels.itertuples(index=False)):
            ax.text(
                t.inner_bytes + t.overhead_bytes, i, f"  {t.share_of_wire_bytes:.1%} overhead", va="center", fontsize=8
            )
        ax.set_yticks(y, labels)
        ax.set_xlabel("bytes")
        ax.set_xlim(0, float((tunnels["inner_bytes"] + tunnels["overhead_bytes"]).max()) * 1.3)
        ax.legend(fontsize=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2)
        return _png(fig)


def drops_over_time(drops: pd.DataFrame, first: pd.DataFrame, t0: int) -> bytes | None:
    """When each drop's forward packets were sent: ``first`` holds their first sightings (flow_id,
    ts_corrected_ns), found in one pass over the hops, not one per drop."""
    if drops.empty:
        return None
    more = len(drops) - DROP_ROWS
    drops = drops.head(DROP_ROWS)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.4 * len(drops)))
        times = {int(f): g.to_numpy() for f, g in first.groupby("flow_id", sort=False)["ts_corrected_ns"]}
        for i, d in enumerate(drops.itertuples(index=False)):
            t = (times.get(int(d.flow_id), np.zeros(0, dtype=np.int64)) - t0) / 1e9
            if len(t) > DROP_POINTS:  # a long-lost flow: its packets evenly spread, and how many
                ax.text(t.max(), i, f"  {len(t)} packets", va="center", fontsize=7)
                t = np.sort(t)[np.linspace(0, len(t) - 1, DROP_POINTS).round().astype(np.int64)]
            ax.scatter(t, np.full(len(t), i), marker="x", color="#d9534f")
        ax.set_yticks(
            range(len(drops)),
            [
                inert(f"flow {d.flow_id}: {d.src_ip}:{d.src_port} → {d.dst_ip}:{d.dst_port}")
                for d in drops.itertuples(index=False)
            ],
        )
        ax.set_xlabel("seconds since the first packet in the bundle")
        if more > 0:
            ax.set_title(f"the first {DROP_ROWS} dropped flows; {more} more are listed below", fontsize=8, loc="left")
        ax.set_ylim(-0.7, len(drops) - 0.3)
        return _png(fig)


def path_diagram(path: str, last_seen: str = "", missing_at: str = "", title: str = "") -> bytes | None:
    """The capture points of a flow in order; where it stopped and where it was missed, in red."""
    points = [p for p in path.split(" > ") if p]
    if missing_at and missing_at not in points:
        points.append(missing_at)
    if not points:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(min(12, 1.6 * len(points) + 1), 1.5))
        for i, p in enumerate(points):
            missing = p == missing_at
            color = "#f2dede" if missing else "#dff0d8"
            edge = "#d9534f" if missing or p == last_seen else "#5cb85c"
            ax.add_patch(plt.Rectangle((i * 1.6, 0), 1.3, 0.8, facecolor=color, edgecolor=edge, linewidth=1.5))
            node, _, iface = inert(p).partition(":")
            ax.text(i * 1.6 + 0.65, 0.52, node, ha="center", va="center", fontsize=7)
            ax.text(i * 1.6 + 0.65, 0.28, iface, ha="center", va="center", fontsize=7)
            if missing:
                ax.text(i * 1.6 + 0.65, 0.95, "missing", ha="center", color="#d9534f", fontsize=7)
            if i:
                ax.annotate(
                    "",
                    xy=(i * 1.6, 0.4),
                    xytext=(i * 1.6 - 0.3, 0.4),
                    arrowprops={"arrowstyle": "->", "color": "#d9534f" if missing else "#555"},
                )
        ax.set_xlim(-0.1, len(points) * 1.6)
        ax.set_ylim(0, 1.1)
        ax.axis("off")
        if title:
            ax.set_title(inert(title), fontsize=8, loc="left")
        # the drawing fills the figure (axis off, its own limits): margins set here, no crop pass
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.03, top=0.86 if title else 0.97)
        return _png(fig, tight=False)
