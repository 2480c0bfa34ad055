"""What the report shows, in one record: the bundle and every analysis table, plus the findings."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..bundle import Bundle

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
    flow_log_matches: pd.DataFrame = field(default_factory=pd.DataFrame)  # flow_logs.match_flow_logs
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
