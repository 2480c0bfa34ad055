"""Focus: cut a fleet-sized bundle down to the incident before anything is joined.

A packet is in focus when it was captured on one of the given nodes, between ``since`` and
``until`` (each node's own clock: offsets are not known before the join), and carries one of the
given addresses or ports anywhere in its headers (inner, outer, or the header an ICMP error quotes).
Every other sighting of a packet in focus is kept too (same fingerprint), so a packet still shows
across its NAT rewrites: ``--host`` with a ClusterIP keeps the hops after DNAT, where the ClusterIP
no longer appears. Packets out of focus are left out of the join, not out of the packets table.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..schema import per_category

ADDRESS_COLUMNS = ("src", "dst", "outer_src", "outer_dst", "q_src", "q_dst")
PORT_COLUMNS = ("sport", "dport", "q_sport", "q_dport")


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from seconds since the epoch or an ISO 8601 time (UTC if it
    names no zone). Raises ValueError with what was wrong."""
    try:
        return round(float(text) * 1e9)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (give seconds since the epoch or ISO 8601)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round(when.timestamp() * 1e9)


@dataclass(frozen=True)
class Focus:
    """What to keep: each given criterion must hold; an empty one keeps everything."""

    since_ns: int | None = None
    until_ns: int | None = None
    hosts: frozenset[str] = field(default_factory=frozenset)
    ports: frozenset[int] = field(default_factory=frozenset)
    nodes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        since: str | None = None,
        until: str | None = None,
        hosts: list[str] | None = None,
        ports: list[int] | None = None,
        nodes: list[str] | None = None,
    ) -> Focus:
        """From what a user typed; raises ValueError on a bad time, address or port."""
        for host in hosts or []:
            ipaddress.ip_address(host)  # ValueError names the bad address
        for port in ports or []:
            if not 0 <= int(port) <= 65535:
                raise ValueError(f"not a port: {port}")
        return cls(
            since_ns=parse_time(since) if since else None,
            until_ns=parse_time(until) if until else None,
            hosts=frozenset(str(ipaddress.ip_address(h)) for h in hosts or []),
            ports=frozenset(int(p) for p in ports or []),
            nodes=frozenset(nodes or []),
        )

    def __bool__(self) -> bool:
        return bool(self.since_ns is not None or self.until_ns is not None or self.hosts or self.ports or self.nodes)

    def describe(self) -> dict:
        """For findings.json and the report: what the analysis was cut down to."""
        return {
            "since_ns": self.since_ns,
            "until_ns": self.until_ns,
            "hosts": sorted(self.hosts),
            "ports": sorted(self.ports),
            "nodes": sorted(self.nodes),
        }

    def packets(self, packets: pd.DataFrame, allocate=np.empty, block_rows: int = 1 << 20) -> np.ndarray:
        """Which packets are in focus, with every sighting of a packet in focus (same fingerprint)."""
        n = len(packets)
        keep = allocate(n, np.bool_)
        wanted = (lambda v: str(v) in self.hosts) if self.hosts else None
        hosts = {c: per_category(packets[c], wanted, False)[0] for c in ADDRESS_COLUMNS} if wanted else {}
        node_ok = per_category(packets["node"], lambda v: str(v) in self.nodes, False)[0] if self.nodes else None
        ports = np.asarray(sorted(self.ports), dtype=np.int64)
        for lo in range(0, n, block_rows):
            hi = min(n, lo + block_rows)
            ok = np.ones(hi - lo, dtype=bool)
            if node_ok is not None:
                ok &= node_ok[packets["node"].array.codes[lo:hi]]
            ts = packets["ts_ns"].to_numpy()[lo:hi]
            if self.since_ns is not None:
                ok &= ts >= self.since_ns
            if self.until_ns is not None:
                ok &= ts <= self.until_ns
            if hosts:
                ok &= np.logical_or.reduce([lut[packets[c].array.codes[lo:hi]] for c, lut in hosts.items()])
            if len(ports):
                ok &= np.logical_or.reduce([np.isin(packets[c].to_numpy()[lo:hi], ports) for c in PORT_COLUMNS])
            keep[lo:hi] = ok
        if not (self.hosts or self.ports):
            return keep  # node and time: per sighting, nothing to extend
        # every sighting of a packet in focus: across NAT rewrites its addresses and ports change
        fp = packets["fingerprint"].to_numpy()
        kept = [fp[lo : lo + block_rows][keep[lo : lo + block_rows]] for lo in range(0, n, block_rows)]
        wanted = pd.unique(np.concatenate(kept)) if kept else fp[:0]
        node_time = Focus(self.since_ns, self.until_ns, nodes=self.nodes)
        within = node_time.packets(packets, allocate, block_rows) if node_time else None
        for lo in range(0, n, block_rows):
            hi = min(n, lo + block_rows)
            more = np.isin(fp[lo:hi], wanted)
            keep[lo:hi] |= more if within is None else more & within[lo:hi]
        return keep

    def conntrack(self, ct: pd.DataFrame) -> pd.DataFrame:
        """Conntrack entries in focus: on the given nodes, with a given address or port in either
        tuple (entries carry no time, so since/until do not apply)."""
        if not (self.nodes or self.hosts or self.ports):
            return ct
        keep = np.ones(len(ct), dtype=bool)
        if self.nodes:
            keep &= ct["node"].astype(str).isin(self.nodes).to_numpy()
        if self.hosts:
            cols = ("orig_src", "orig_dst", "reply_src", "reply_dst")
            keep &= np.logical_or.reduce([ct[c].astype(str).isin(self.hosts).to_numpy() for c in cols])
        if self.ports:
            cols = ("orig_sport", "orig_dport", "reply_sport", "reply_dport")
            keep &= np.logical_or.reduce([ct[c].isin(self.ports).to_numpy() for c in cols])
        return ct[keep].reset_index(drop=True)

    def captures(self, captures: pd.DataFrame) -> pd.DataFrame:
        """Capture points in focus: those on the given nodes (a node left out is as if not captured)."""
        if not self.nodes:
            return captures
        return captures[captures["node"].astype(str).isin(self.nodes)].reset_index(drop=True)
