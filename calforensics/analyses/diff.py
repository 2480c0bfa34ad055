"""What changed between two analyses (yesterday's bundle and today's, a healthy node and a sick one),
from their findings.json documents: flows that appeared, disappeared or changed verdict; drops new
and resolved with their causes; rule counters that moved; MTU findings new and resolved; hop
latencies that shifted beyond their spread.

Flows are matched by what they were, not by their ids or client ports (both differ between runs):
protocol, client address, the server as dialled and its port, the service. Drops likewise, with their
cause; rule counters by node, family, table, chain and the rule's text (positions move); MTU findings
by kind, node and interface; hop latencies by their pair of capture points and NAT.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DIFF_SCHEMA_VERSION = 1
MAX_FINDINGS_BYTES = 1 << 30  # a findings.json read for a diff: a report of millions of flows fits
LISTED = 200  # entries of a section listed (most significant first); the counts cover all


def _flow_key(f: dict) -> tuple:
    return (f["proto"], f["client_ip"], f["server_ip"], f["server_port"], f["service"] or "")


def _key_dict(key: tuple) -> dict:
    proto, client, server, port, service = key
    return {"proto": proto, "client_ip": client, "server_ip": server, "server_port": port, "service": service}


def _verdicts(flows: list[dict]) -> dict[tuple, dict[str, int]]:
    out: dict[tuple, dict[str, int]] = {}
    for f in flows:
        counts = out.setdefault(_flow_key(f), {})
        counts[f["verdict"]] = counts.get(f["verdict"], 0) + 1
    return out


def _drop_key(d: dict) -> tuple:
    c = d["cause"] or {}
    return (
        d["proto"],
        d["src_ip"],
        d["dst_ip"],
        d["dst_port"],
        c.get("kind") or "",
        c.get("node") or "",
        c.get("chain") or "",
        c.get("policy") or "",
    )


def _drops(drops: list[dict]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for d in drops:
        key = _drop_key(d)
        entry = out.setdefault(
            key,
            {
                "proto": d["proto"],
                "src_ip": d["src_ip"],
                "dst_ip": d["dst_ip"],
                "dst_port": d["dst_port"],
                "service": d["service"],
                "cause": d["cause"],
                "flows": 0,
                "packets": 0,
                "flow_ids": [],
            },
        )
        entry["flows"] += 1
        entry["packets"] += d["packets"]
        entry["flow_ids"].append(d["flow_id"])
    return out


def diff_findings(old: dict, new: dict, old_name: str = "", new_name: str = "") -> dict:
    """The changes from ``old`` to ``new`` (two findings documents)."""
    flows_old, flows_new = _verdicts(old["flows"]), _verdicts(new["flows"])
    appeared = [{**_key_dict(k), "verdicts": v} for k, v in flows_new.items() if k not in flows_old]
    gone = [{**_key_dict(k), "verdicts": v} for k, v in flows_old.items() if k not in flows_new]
    changed = [
        {**_key_dict(k), "old": flows_old[k], "new": v}
        for k, v in flows_new.items()
        if k in flows_old and set(flows_old[k]) != set(v)
    ]
    drops_old, drops_new = _drops(old["drops"]), _drops(new["drops"])
    new_drops = [v for k, v in drops_new.items() if k not in drops_old]
    resolved = [v for k, v in drops_old.items() if k not in drops_new]
    counters = _moved_counters(old.get("rule_counters", []), new.get("rule_counters", []))
    mtu_old = {(m["kind"], m["node"], m["interface"]): m for m in old["overhead"]["mtu_issues"]}
    mtu_new = {(m["kind"], m["node"], m["interface"]): m for m in new["overhead"]["mtu_issues"]}
    doc = {
        "schema_version": DIFF_SCHEMA_VERSION,
        "old": {"name": old_name or old["bundle"]["name"], "flows": len(old["flows"]), "drops": len(old["drops"])},
        "new": {"name": new_name or new["bundle"]["name"], "flows": len(new["flows"]), "drops": len(new["drops"])},
        "flows": {
            "appeared": _cut(sorted(appeared, key=_flow_order)),
            "disappeared": _cut(sorted(gone, key=_flow_order)),
            "changed_verdict": _cut(sorted(changed, key=_flow_order)),
        },
        "drops": {
            "new": _cut(sorted(new_drops, key=lambda d: -d["packets"])),
            "resolved": _cut(sorted(resolved, key=lambda d: -d["packets"])),
        },
        "rule_counters": _cut(counters),
        "mtu": {
            "new": _cut([m for k, m in mtu_new.items() if k not in mtu_old]),
            "resolved": _cut([m for k, m in mtu_old.items() if k not in mtu_new]),
        },
        "latency_shifts": _cut(_latency_shifts(old["latency"]["hops"], new["latency"]["hops"])),
        "counts": {
            "flows_appeared": len(appeared),
            "flows_disappeared": len(gone),
            "flows_changed_verdict": len(changed),
            "new_drops": len(new_drops),
            "resolved_drops": len(resolved),
            "rule_counters_moved": len(counters),
            "new_mtu_issues": sum(1 for k in mtu_new if k not in mtu_old),
            "resolved_mtu_issues": sum(1 for k in mtu_old if k not in mtu_new),
        },
    }
    doc["summary"] = _summary(doc)
    return doc


def _flow_order(f: dict) -> tuple:
    return (f["client_ip"], f["server_ip"], f["server_port"] if f["server_port"] is not None else -1, f["proto"])


def _cut(items: list[dict]) -> list[dict]:
    return items[:LISTED]


def _counter_key(r: dict) -> tuple:
    return (r["node"], r["family"], r["table"], r["chain"], r["rule"])


DROPPING = re.compile(r"-j (?:DROP|REJECT)\b|\b(?:drop|reject)\b", re.I)
COUNTER_FIELDS = ("node", "family", "table", "chain", "rule", "comment")


def _moved_counters(old: list[dict], new: list[dict]) -> list[dict]:
    """Rules whose packet counter differs: dropping rules first, then the biggest move (a rule gone
    from the list counted nothing, or was left past findings.json's bound)."""
    before = {_counter_key(r): r for r in old}
    after = {_counter_key(r): r for r in new}
    moved = []
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        was, now = (a["packets"] if a else 0), (b["packets"] if b else 0)
        if was != now:
            r = b or a
            drops = bool(DROPPING.search(r["rule"]))
            moved.append({**{k: r[k] for k in COUNTER_FIELDS}, "drops": drops, "old": was, "new": now})
    # ties broken by the whole key: the same rule in both families moves alike (the set above has no order)
    return sorted(moved, key=lambda r: (not r["drops"], -abs(r["new"] - r["old"]), *(r[k] for k in COUNTER_FIELDS)))


def _hop_key(h: dict) -> tuple:
    return (h["from"]["node"], h["from"]["interface"], h["to"]["node"], h["to"]["interface"], h["nat"])


def _latency_shifts(old: list[dict], new: list[dict]) -> list[dict]:
    """Hop pairs whose median moved by more than either run's spread (p90 - p50)."""
    before = {_hop_key(h): h for h in old}
    out = []
    for h in new:
        was = before.get(_hop_key(h))
        if was is None:
            continue
        spread = max(was["p90_us"] - was["p50_us"], h["p90_us"] - h["p50_us"])
        shift = h["p50_us"] - was["p50_us"]
        if abs(shift) > spread:
            out.append(
                {
                    "from": h["from"],
                    "to": h["to"],
                    "nat": h["nat"],
                    "old_p50_us": was["p50_us"],
                    "new_p50_us": h["p50_us"],
                    "spread_us": round(spread, 1),
                    "old_count": was["count"],
                    "new_count": h["count"],
                }
            )
    return sorted(out, key=lambda s: -abs(s["new_p50_us"] - s["old_p50_us"]))


def _summary(doc: dict) -> str:
    """What changed, in a sentence or two."""
    c = doc["counts"]
    parts = []
    if c["new_drops"] or c["resolved_drops"]:
        parts.append(f"{c['new_drops']} new drop(s), {c['resolved_drops']} resolved")
    if c["flows_changed_verdict"]:
        parts.append(f"{c['flows_changed_verdict']} flow(s) changed verdict")
    if c["flows_appeared"] or c["flows_disappeared"]:
        parts.append(f"{c['flows_appeared']} flow(s) appeared, {c['flows_disappeared']} disappeared")
    if c["rule_counters_moved"]:
        parts.append(f"{c['rule_counters_moved']} rule counter(s) moved")
    if c["new_mtu_issues"] or c["resolved_mtu_issues"]:
        parts.append(f"{c['new_mtu_issues']} new MTU finding(s), {c['resolved_mtu_issues']} resolved")
    if doc["latency_shifts"]:
        parts.append(f"{len(doc['latency_shifts'])} hop(s) slower or faster beyond their spread")
    head = f"From {doc['old']['name']} to {doc['new']['name']}: "
    text = head + ("; ".join(parts) + "." if parts else "nothing changed.")
    first = doc["drops"]["new"][0] if doc["drops"]["new"] else None
    if first:
        c0 = first["cause"] or {}
        why = f"{c0.get('kind')} on {c0.get('node')}" + (f" (policy {c0['policy']})" if c0.get("policy") else "")
        text += (
            f" New: {first['proto'].upper()} from {first['src_ip']} to {first['dst_ip']}:{first['dst_port']} "
            f"dropped by {why if c0 else 'an unknown cause'}."
        )
    return text


def findings_of(path: str | Path, **bundle_options: object) -> tuple[dict, str]:
    """(findings, name) of one side of a diff: a findings.json, a report directory holding one, or a
    bundle, analysed here (``bundle_options`` as for open_bundle)."""
    p = Path(path)
    report = p / "findings.json" if p.is_dir() else p
    if report.name.endswith(".json") and report.is_file():
        if report.stat().st_size > MAX_FINDINGS_BYTES:
            raise ValueError(f"{report} is over {MAX_FINDINGS_BYTES} bytes")
        doc = json.loads(report.read_text())
        if not isinstance(doc, dict) or "flows" not in doc or "drops" not in doc:
            raise ValueError(f"{report} is not a calforensics findings.json")
        return doc, str(doc.get("bundle", {}).get("name") or p.name)
    from ..bundle import open_bundle
    from . import analyze

    with open_bundle(p, **bundle_options) as b:
        return analyze(b).findings, b.name


def diff(old: str | Path, new: str | Path, **bundle_options: object) -> dict:
    """What changed from ``old`` to ``new``: bundles, reports or findings.json files, in any mix."""
    (a, a_name), (b, b_name) = findings_of(old, **bundle_options), findings_of(new, **bundle_options)
    if a_name == b_name:  # the same bundle name twice (yesterday's and today's): say which is which
        a_name, b_name = f"{a_name} (old)", f"{b_name} (new)"
    return diff_findings(a, b, a_name, b_name)
