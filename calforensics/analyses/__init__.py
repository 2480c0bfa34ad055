"""Stage 4, analyses: why packets were lost, what encapsulation cost, how long each hop took.

In: a Bundle's tables (the joined hops and flows with the node state behind them). Out: an Analysis
(result.py): drops with cause, evidence and confidence (drops.py), overhead and MTU trouble
(overhead.py), latency (latency.py), WireGuard sessions (wireguard.py), Calico flow logs matched to
the captured flows (flow_logs.py) and the findings document
(findings.py). Must not: read files, change the bundle's tables, or format anything for a reader.
"""

from __future__ import annotations

from ..bundle import Bundle
from ..runtime.memory import release_freed_memory
from ..runtime.parallel import thread_map
from . import drops, flow_logs, latency, overhead, wireguard
from .findings import build_findings
from .result import SCHEMA_VERSION, Analysis


def _overhead(bundle: Bundle, owners: dict[str, str]) -> dict:
    tunnels, flow_overhead = overhead.overhead_tables(bundle, owners)
    return {"tunnels": tunnels, "flow_overhead": flow_overhead, "mtu_issues": overhead.mtu_issues(bundle, owners)}


def _latency(bundle: Bundle) -> dict:
    return {
        "latency_hops": latency.per_hop_pair(bundle),
        "latency_samples": latency.hop_samples(bundle),
        "latency_flows": latency.per_flow(bundle),
    }


def analyze(bundle: Bundle) -> Analysis:
    """Drops, overhead and latency, each over the joined tables. The three read the bundle's
    tables only and are independent, so they run in threads when the bundle has workers."""
    owners = bundle.owners
    # every lazily built table is built here, before any thread reads it (built twice at once,
    # a table would log its anomalies twice)
    bundle.load_text_tables()
    bundle.flows  # noqa: B018
    matches = flow_logs.match_flow_logs(bundle)
    work = [
        lambda: {"drops": drops.find_drops(bundle, matches)},
        lambda: _overhead(bundle, owners),
        lambda: _latency(bundle),
    ]
    threads = bundle.runner.effective_workers(len(work))
    results: dict = {}
    for part in thread_map(threads, lambda fn: fn(), work):
        results.update(part)
    release_freed_memory()  # what the threads freed stays in their heaps otherwise, unused by the report
    a = Analysis(
        bundle=bundle, wireguard_sessions=wireguard.sessions(bundle.wireguard), flow_log_matches=matches, **results
    )
    a.findings = build_findings(a)
    return a


__all__ = ["SCHEMA_VERSION", "Analysis", "analyze"]
