"""Calico's flow logs beside the captures: which log entries speak of which captured flow, and where
the two disagree.

A flow log entry is an aggregate over an interval (15 s in Goldmane, minutes in Enterprise), so it is
matched by what it keeps: protocol, the destination port after DNAT (the backend's), whether a
service was dialled (Goldmane and Enterprise log a service's connections with it), its endpoints
(addresses where Enterprise kept them, else pods by namespace and name, an aggregated name such as
`web-7d9f-*` matching every pod it covers) and time (its interval, with a minute's slack for clocks).
Goldmane names no addresses: its endpoints are found through the pod listing.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import numpy as np
import pandas as pd

from ..bundle import Bundle

SLACK_NS = 60 * 10**9
MATCH_COLUMNS = ["flow_id", "log", "source", "reporter", "action", "deny_policies", "policies", "host", "artifact"]


def _pods(b: Bundle) -> dict[str, tuple[str, str]]:
    pods = b.pods
    return {
        str(ip): (str(ns), str(name))
        for ip, ns, name in zip(pods["ip"], pods["namespace"], pods["name"], strict=True)
        if str(ip)
    }


def _endpoint(ip: str, name: str, namespace: str, log_ip: str, pods: dict[str, tuple[str, str]]) -> bool:
    """Whether a flow's address is the log entry's endpoint: by address where it has one, else by pod."""
    if log_ip:
        return ip == log_ip
    if not name or name in ("-", "pvt", "pub"):
        return False
    pod = pods.get(ip)
    return pod is not None and (not namespace or namespace == "-" or pod[0] == namespace) and fnmatchcase(pod[1], name)


def match_flow_logs(b: Bundle) -> pd.DataFrame:
    """One row per (captured flow, flow log entry) that speak of the same connection."""
    logs = b.flow_logs
    flows = b.flows
    if logs.empty or flows.empty:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    pods = _pods(b)
    proto = flows["proto"].astype(str).to_numpy()
    ports = np.stack([flows["server_port"].to_numpy(), flows["backend_port"].to_numpy()])
    first, last = flows["first_ns"].to_numpy(), flows["last_ns"].to_numpy()
    client = flows["client_ip"].astype(str).to_numpy()
    backend = flows["backend_ip"].astype(str)
    server = np.where(backend != "", backend, flows["server_ip"].astype(str))
    # a connection dialled through a service is logged with it (dest_service_*), a direct one without;
    # under eBPF connect-time LB the capture cannot tell, so such a flow may be either
    natted = (backend != "").to_numpy()
    either = (flows["service_via"].astype(str) == "backend").to_numpy()
    rows = []
    for i, e in enumerate(logs.itertuples(index=False)):
        cand = (proto == str(e.proto)) & ((ports == int(e.dst_port)).any(axis=0) | (int(e.dst_port) < 0))
        cand &= either | (natted == bool(str(e.dst_service)))
        if int(e.start_s) > 0 and int(e.end_s) > 0:
            cand &= (last >= int(e.start_s) * 10**9 - SLACK_NS) & (first <= int(e.end_s) * 10**9 + SLACK_NS)
        for k in np.flatnonzero(cand):
            if not _endpoint(client[k], str(e.src_name), str(e.src_namespace), str(e.src_ip), pods):
                continue
            if not _endpoint(str(server[k]), str(e.dst_name), str(e.dst_namespace), str(e.dst_ip), pods):
                continue
            rows.append(
                {
                    "flow_id": int(flows["flow_id"].iat[k]),
                    "log": i,
                    "source": str(e.source),
                    "reporter": str(e.reporter),
                    "action": str(e.action),
                    "deny_policies": str(e.deny_policies),
                    "policies": str(e.policies),
                    "host": str(e.host),
                    "artifact": str(e.artifact),
                }
            )
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def evidence(matches: pd.DataFrame, flow_id: int) -> tuple[list[dict], str]:
    """The flow log entries of a lost flow as evidence, and the policies that denied it ("" if none)."""
    mine = matches[matches["flow_id"] == flow_id]
    out, denied = [], []
    for m in mine.itertuples(index=False):
        who = f"{m.source} flow log, {m.reporter or '?'} reporter" + (f" {m.host}" if m.host else "")
        detail = f"{who}: {m.action or 'no action'}"
        if m.deny_policies:
            detail += f" by {m.deny_policies}"
            denied.append(m.deny_policies)
        if m.policies:
            detail += f" ({m.policies})"
        out.append({"kind": "flow_log", "scope": "per_flow", "detail": detail})
    return out, ", ".join(dict.fromkeys(denied))


def disagreements(matches: pd.DataFrame, flows: pd.DataFrame) -> list[dict]:
    """Flows the captures and the flow logs tell apart: a captured drop every matching entry calls
    allowed, or a delivered flow an entry calls denied. One dict per flow: flow_id, verdict, what
    the flow logs said."""
    if matches.empty:
        return []
    verdicts = flows.set_index("flow_id")["verdict"].astype(str)
    out = []
    for flow_id, mine in matches.groupby("flow_id", sort=True):
        verdict = verdicts.get(flow_id, "")
        actions = set(mine["action"].astype(str))
        if verdict in ("dropped", "partial") and actions == {"allow"}:
            said = "allowed"
        elif verdict == "delivered" and "deny" in actions:
            denied = ", ".join(p for p in dict.fromkeys(mine["deny_policies"].astype(str)) if p)
            said = "denied" + (f" by {denied}" if denied else "")
        else:
            continue
        reporters = ", ".join(sorted(set(mine["reporter"].astype(str)) - {""})) or "unknown"
        out.append({"flow_id": int(flow_id), "verdict": verdict, "said": said, "reporters": reporters})
    return out
