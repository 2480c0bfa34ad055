"""Every figure of the report has a bounded number of marks, whatever the bundle's size: the top N
by weight, the rest summed into one mark and named (the tables behind the figures hold everything)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES

import calforensics
from calforensics.render import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures drawn, kept instead of encoded."""
    drawn = []

    def keep(fig):
        drawn.append(fig)
        return b"png"

    monkeypatch.setattr(plots, "_png", keep)
    return drawn


def tunnels(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    inner = rng.integers(1_000, 10_000_000, n)
    return pd.DataFrame(
        {
            "type": ["vxlan"] * n,
            "vni": [4096] * n,
            "src_node": [f"node-{i % 50}" for i in range(n)],
            "dst_node": [f"node-{(i * 7 + 1) % 50}" for i in range(n)],
            "packets": rng.integers(1, 10_000, n),
            "inner_bytes": inner,
            "overhead_bytes": inner // 20,
            "share_of_wire_bytes": np.full(n, 50 / 1050),
        }
    )


def test_the_overhead_figure_draws_the_top_tunnels_and_one_for_the_rest(figures):
    t = tunnels(5000)
    plots.overhead_by_tunnel(t)
    (fig,) = figures
    ax = fig.axes[0]
    labels = [x.get_text() for x in ax.get_yticklabels()]
    assert len(ax.patches) == 2 * (plots.FIGURE_TUNNELS + 1) and len(labels) == plots.FIGURE_TUNNELS + 1
    assert labels[-1] == f"{5000 - plots.FIGURE_TUNNELS} other tunnel pairs"
    # nothing lost: the bars add up to every tunnel's bytes
    assert sum(p.get_width() for p in ax.patches) == pytest.approx(float((t.inner_bytes + t.overhead_bytes).sum()))
    # the busiest pair is drawn on its own (bars: every inner one, then every encapsulation one after it)
    ends = [p.get_x() + p.get_width() for p in ax.patches[plots.FIGURE_TUNNELS + 1 :]]
    assert max(ends[: plots.FIGURE_TUNNELS]) == pytest.approx((t.inner_bytes + t.overhead_bytes).max())


def test_drops_over_time_draws_a_bounded_number_of_packets(figures):
    n = 50
    drops = pd.DataFrame({"flow_id": range(n), "src_ip": "10.0.0.1", "src_port": 1, "dst_ip": "10.0.0.2", "dst_port": 80})
    first = pd.DataFrame(
        {"flow_id": np.repeat(np.arange(n), 10_000), "ts_corrected_ns": np.tile(np.arange(10_000) * 1_000_000, n)}
    )
    plots.drops_over_time(drops, first, 0)
    (fig,) = figures
    points = [len(c.get_offsets()) for c in fig.axes[0].collections]
    assert len(points) == plots.DROP_ROWS and max(points) == plots.DROP_POINTS
    assert sum("10000 packets" in t.get_text() for t in fig.axes[0].texts) == plots.DROP_ROWS
    assert f"{n - plots.DROP_ROWS} more are listed below" in fig.axes[0].get_title(loc="left")


def test_the_report_draws_a_bounded_number_of_path_figures(monkeypatch, tmp_path):
    import calforensics.render.report as report

    calls = []
    monkeypatch.setattr(report, "PATH_FIGURES", 1)
    monkeypatch.setattr(plots, "path_diagram", lambda *a, **k: calls.append(a) or b"png")
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        a = calforensics.analyze(b)
        assert len(a.drops) == 2
        calforensics.write_report(a, tmp_path, tables="none")
    drop_paths = [c for c in calls if len(c) >= 3 and c[2]]
    assert len(drop_paths) == 1  # the second drop's path is only in its text
