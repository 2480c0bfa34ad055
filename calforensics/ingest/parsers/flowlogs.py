"""Calico flow logs, as saved beside a bundle, into one table whatever their source.

- Calico Open Source's flow logs API (Goldmane, goldmane/proto/api.proto): `Flow` messages, a key
  (`source_name`, `dest_name`, namespaces, types, `dest_port`, the service, `proto`, `reporter`,
  `action`, `policies` with `enforced_policies`/`pending_policies` hits of kind, namespace, name,
  tier, action, rule index) and counts. Saved as Goldmane's emitter writes them (encoding/json of the
  Go structs: snake_case names, `Key`, enums as numbers, a flow per line) or as protojson (grpcurl,
  Whisker: camelCase names, enums by name), whole, in a list, or as `{"id", "flow"}` results. There
  are no addresses: endpoints are pods by name (an aggregated name ends in `*`).
- Calico Enterprise and Calico Cloud flow logs ("Flow log data types"): flat JSON objects with
  `source_ip`, `source_name`, `source_name_aggr`, …, `dest_service_*`, `action`, `reporter`,
  `policies.all_policies|enforced_policies|pending_policies` as `<index>|<tier>|<name>|<action>|<rule>`,
  a line each (flows.log) or Elasticsearch hits (`_source`).
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .text import load_json_bounded, preamble

ACTIONS = {0: "", 1: "allow", 2: "deny", 3: "pass", "actionunspecified": ""}
REPORTERS = {0: "", 1: "src", 2: "dst", "reporterunspecified": ""}
ENDPOINT_TYPES = {
    0: "",
    1: "wep",
    2: "hep",
    3: "ns",
    4: "net",
    "workloadendpoint": "wep",
    "hostendpoint": "hep",
    "networkset": "ns",
    "network": "net",
    "endpointtypeunspecified": "",
}
POLICY_KINDS = {
    1: "CalicoNetworkPolicy",
    2: "GlobalNetworkPolicy",
    3: "StagedNetworkPolicy",
    4: "StagedGlobalNetworkPolicy",
    5: "StagedKubernetesNetworkPolicy",
    6: "NetworkPolicy",
    9: "Profile",
    10: "EndOfTier",
    11: "ClusterNetworkPolicy",
}
MARKERS = re.compile(r'"(?:source_namespace|sourceNamespace|source_name_aggr|dest_service_name|destServiceName)"')


def looks_like_flow_logs(lines: list[str]) -> bool:
    head = "\n".join(lines[:20])
    return head.lstrip().startswith(("{", "[")) and bool(MARKERS.search(head))


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _normal(obj: object) -> object:
    """Keys in snake_case whatever the JSON was written with."""
    if isinstance(obj, dict):
        return {_snake(str(k)): _normal(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normal(v) for v in obj]
    return obj


def _enum(table: dict, value: object) -> str:
    if isinstance(value, str):
        low = value.lower()
        return str(table.get(low, low))
    if isinstance(value, int):
        return str(table.get(value, value))
    return ""


def _records(lines: list[str], log: AnomalyLog) -> list[tuple[int | str, dict]]:
    """(where, record) for every flow: JSON lines, or one document holding a list of them."""
    body = [(no, x) for no, x in enumerate(lines, 1) if x.strip() and not preamble(x, no, log)]
    text = "\n".join(x for _, x in body).strip()
    out: list[tuple[int | str, dict]] = []
    if text.startswith("[") or (len(body) > 1 and not body[1][1].lstrip().startswith("{")):
        try:
            doc = load_json_bounded(text)
        except ValueError as exc:
            log.add("document", "bad_json", str(exc)[:200])
            return []
        items = doc if isinstance(doc, list) else [doc]
    else:
        items = []
        for no, x in body:
            try:
                items.append((no, load_json_bounded(x)))
            except ValueError as exc:
                log.add(no, "bad_json", str(exc)[:200])
        return [(no, r) for no, doc in items for r in _unwrap(doc)]
    for i, doc in enumerate(items, 1):
        out += [(f"element {i}", r) for r in _unwrap(doc)]
    return out


def _unwrap(doc: object) -> list[dict]:
    """The flow objects inside a document: itself, `items`/`flows` lists, `{"id", "flow"}` results,
    Elasticsearch hits."""
    if isinstance(doc, list):
        return [r for d in doc for r in _unwrap(d)]
    if not isinstance(doc, dict):
        return []
    if isinstance(doc.get("hits"), dict):
        hits = doc["hits"].get("hits") or []
        return [r for h in hits for r in _unwrap(h.get("_source") if isinstance(h, dict) else h)]
    for key in ("items", "flows", "results"):
        if isinstance(doc.get(key), list):
            return _unwrap(doc[key])
    if isinstance(doc.get("flow"), dict):
        return [doc["flow"]]
    return [doc]


def parse_flow_logs(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    rows = []
    for where, raw in _records(lines, log):
        rec = _normal(raw)
        if not isinstance(rec, dict):
            continue
        try:
            row = _goldmane(rec) if isinstance(rec.get("key"), dict) else _enterprise(rec)
        except (TypeError, ValueError, AttributeError) as exc:
            log.add(where, "unparsed_flow", f"{exc}: {str(raw)[:160]}")
            continue
        if row is None:
            log.add(where, "unparsed_flow", f"not a flow log: {str(raw)[:160]}")
            continue
        rows.append({"line": where if isinstance(where, int) else -1, **row})
    return table_frame(rows, "flow_logs", node, artifact)


def _service(ns: object, name: object, port: object) -> str:
    if not name or name == "-":
        return ""
    return f"{ns}/{name}" + (f":{port}" if port not in (None, "", "-") else "")


def _goldmane(rec: dict) -> dict:
    key = rec["key"]
    hits = (key.get("policies") or {}).get("enforced_policies") or []
    described = [_goldmane_hit(h) for h in hits if isinstance(h, dict)]
    return {
        "source": "goldmane",
        "start_s": rec.get("start_time", 0),
        "end_s": rec.get("end_time", 0),
        "src_name": key.get("source_name", ""),
        "src_namespace": key.get("source_namespace", ""),
        "src_type": _enum(ENDPOINT_TYPES, key.get("source_type", 0)),
        "dst_name": key.get("dest_name", ""),
        "dst_namespace": key.get("dest_namespace", ""),
        "dst_type": _enum(ENDPOINT_TYPES, key.get("dest_type", 0)),
        "dst_port": key.get("dest_port", -1),
        "dst_service": _service(
            key.get("dest_service_namespace"),
            key.get("dest_service_name"),
            key.get("dest_service_port_name") or key.get("dest_service_port"),
        ),
        "proto": str(key.get("proto", "")).lower(),
        "action": _enum(ACTIONS, key.get("action", 0)),
        "reporter": _enum(REPORTERS, key.get("reporter", 0)),
        "policies": "; ".join(d for d, _, _ in described),
        "deny_policies": ", ".join(dict.fromkeys(name for _, name, action in described if action == "deny")),
        "packets_in": rec.get("packets_in", 0),
        "packets_out": rec.get("packets_out", 0),
        "bytes_in": rec.get("bytes_in", 0),
        "bytes_out": rec.get("bytes_out", 0),
        "connections": rec.get("num_connections_started", 0),
    }


def _goldmane_hit(hit: dict) -> tuple[str, str, str]:
    """(description, the policy's name, action) of a PolicyHit; an end-of-tier hit names the policy
    that triggered it."""
    kind = _enum(POLICY_KINDS, hit.get("kind", 0))
    action = _enum(ACTIONS, hit.get("action", 0))
    target = hit.get("trigger") if kind.lower() == "endoftier" and isinstance(hit.get("trigger"), dict) else hit
    ns, name = target.get("namespace", ""), target.get("name", "")
    full = f"{ns}/{name}" if ns else str(name)
    rule = hit.get("rule_index", -1)
    what = "end of tier" if kind.lower() == "endoftier" else f"rule {rule}"
    return f"{hit.get('tier', '')}/{full} {action} ({kind}, {what})", full, action


def _enterprise(rec: dict) -> dict | None:
    if "source_namespace" not in rec and "source_ip" not in rec:
        return None
    policies = rec.get("policies") or {}
    hits = policies.get("enforced_policies") or policies.get("all_policies") or []
    parsed = []
    for h in hits if isinstance(hits, list) else []:
        parts = str(h).split("|")
        if len(parts) == 5:
            index, tier, name, action, rule = parts
            parsed.append((int(index) if index.lstrip("-").isdigit() else 0, tier, name, action, rule))
    parsed.sort()
    return {
        "source": "enterprise",
        "start_s": rec.get("start_time", 0),
        "end_s": rec.get("end_time", 0),
        "src_ip": rec.get("source_ip") or "",
        "src_port": rec.get("source_port") if rec.get("source_port") is not None else -1,
        "src_name": rec.get("source_name_aggr") or rec.get("source_name") or "",
        "src_namespace": rec.get("source_namespace", ""),
        "src_type": rec.get("source_type", ""),
        "dst_ip": rec.get("dest_ip") or "",
        "dst_port": rec.get("dest_port") if rec.get("dest_port") is not None else -1,
        "dst_name": rec.get("dest_name_aggr") or rec.get("dest_name") or "",
        "dst_namespace": rec.get("dest_namespace", ""),
        "dst_type": rec.get("dest_type", ""),
        "dst_service": _service(
            rec.get("dest_service_namespace"), rec.get("dest_service_name"), rec.get("dest_service_port")
        ),
        "proto": str(rec.get("proto", "")).lower(),
        "action": str(rec.get("action", "")).lower(),
        "reporter": str(rec.get("reporter", "")).lower(),
        "policies": "; ".join(f"{t}/{n} {a} (rule {r})" for _, t, n, a, r in parsed),
        "deny_policies": ", ".join(dict.fromkeys(n for _, _, n, a, _ in parsed if a == "deny")),
        "packets_in": rec.get("packets_in", 0),
        "packets_out": rec.get("packets_out", 0),
        "bytes_in": rec.get("bytes_in", 0),
        "bytes_out": rec.get("bytes_out", 0),
        "connections": rec.get("num_flows_started", rec.get("num_flows", 0)),
        "host": rec.get("host", ""),
    }
