"""Analyses: tables in, tables out. `analyze(bundle)` runs them all and assembles the findings."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..bundle import Bundle
from ..memory import release_freed_memory
from ..parallel import thread_map
from . import drops, latency, overhead, wireguard

SCHEMA_VERSION = 1
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


@dataclass
class Analysis:
    """Everything the report shows, as DataFrames, plus the findings document (findings.json)."""

    bundle: Bundle
    drops: pd.DataFrame
    tunnels: pd.DataFrame
    flow_overhead: pd.DataFrame
    mtu_issues: pd.DataFrame
    latency_hops: pd.DataFrame
    latency_samples: pd.DataFrame
    latency_flows: pd.DataFrame
    wireguard_sessions: pd.DataFrame = field(default_factory=pd.DataFrame)
    findings: dict = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table worth exporting: the bundle's and the analyses'."""
        b = self.bundle
        out = {
            name: b.table(name)
            for name in (
                "captures",
                "flows",
                "hops",
                "clock_offsets",
                "conntrack",
                "rules",
                "interfaces",
                "routes",
                "anomalies",
                "artifacts",
                "dataplane",
                "services",
                "wireguard",
                "bpf_conntrack",
                "bpf_nat",
                "bpf_counters",
            )
        }
        out.update(
            drops=self.drops.assign(evidence=self.drops["evidence"].map(_evidence_text)),
            tunnels=self.tunnels,
            flow_overhead=self.flow_overhead,
            mtu_issues=self.mtu_issues,
            latency_hops=self.latency_hops,
            latency_flows=self.latency_flows,
            wireguard_sessions=self.wireguard_sessions,
        )
        return out


def _evidence_text(ev: list[dict]) -> str:
    return " | ".join(f"{e['kind']} ({e['scope']}): {e['detail']}" for e in ev)


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
    work = [
        lambda: {"drops": drops.find_drops(bundle)},
        lambda: _overhead(bundle, owners),
        lambda: _latency(bundle),
    ]
    threads = bundle.runner.effective_workers(len(work))
    results: dict = {}
    for part in thread_map(threads, lambda fn: fn(), work):
        results.update(part)
    release_freed_memory()  # what the threads freed stays in their heaps otherwise, unused by the report
    a = Analysis(bundle=bundle, wireguard_sessions=wireguard.sessions(bundle.wireguard), **results)
    from .findings import build_findings

    a.findings = build_findings(a)
    return a


__all__ = ["SCHEMA_VERSION", "Analysis", "analyze"]
