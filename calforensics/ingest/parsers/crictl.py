"""`crictl inspectp` output saved on a node: the pod sandboxes the node's container runtime ran, with
their addresses, so a folder a node's engineer collected with crictl names its pods and their
workload interfaces.

Forms (cri-tools cmd/crictl/sandbox.go): `-o json` (the default of `inspectp`: `{"status": {...},
"info": {...}}`, one document per pod, concatenated when several pods are inspected in one call),
`-o yaml`, and `-o table` (`ID:`, `Name:`, `Namespace:`, `Status:`, `IP Address:` lines). The
sandbox status is the CRI PodSandboxStatus: metadata (name, namespace), state
(SANDBOX_READY, SANDBOX_NOTREADY) and network (ip, additionalIps). `crictl pods` tables are read
with the kubectl listings (kubectl.py)."""

from __future__ import annotations

import json
import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .kubectl import calico_interface
from .resources import load_documents
from .text import check_json_bounds

SANDBOX_STATE = re.compile(r'"?state"?\s*:\s*"?SANDBOX_(?:READY|NOTREADY)')
TABLE_FIELD = re.compile(r"^(ID|Name|UID|Namespace|Attempt|Status|Created|IP Address):\s*(.*)$")
STATES = {"SANDBOX_READY": "Ready", "SANDBOX_NOTREADY": "NotReady"}


def looks_like_crictl_inspect(lines: list[str]) -> bool:
    head = "\n".join(lines[:80])
    table = re.search(r"^Status: SANDBOX_(?:READY|NOTREADY)\s*$", head, re.M) and "IP Address:" in head
    return bool(SANDBOX_STATE.search(head) and re.search(r'"?network"?\s*:', head)) or bool(table)


def parse_crictl_inspect(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """A row per pod address (pod_node: the node the file was collected on)."""
    text = "\n".join(lines)
    first = text.lstrip()[:1]
    if first == "{":
        statuses = _json_statuses(text, log)
    elif first and TABLE_FIELD.match(text.lstrip().split("\n", 1)[0]):
        statuses = _table_statuses(lines)
    else:
        statuses = [d.get("status") for d in load_documents(lines, log) if isinstance(d.get("status"), dict)]
    rows = []
    for status in statuses:
        meta = status.get("metadata") if isinstance(status.get("metadata"), dict) else {}
        network = status.get("network") if isinstance(status.get("network"), dict) else {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if not name:
            log.add("document", "unparsed_element", f"a pod sandbox without a name: {str(status)[:160]}")
            continue
        extra = [str(a.get("ip")) for a in network.get("additionalIps") or [] if isinstance(a, dict) and a.get("ip")]
        for ip in [str(network["ip"]), *extra] if network.get("ip") else [""]:
            rows.append(
                {
                    "line": -1,
                    "namespace": namespace,
                    "name": name,
                    "status": STATES.get(str(status.get("state", "")), str(status.get("state", ""))),
                    "ip": ip,
                    "pod_node": node,
                    "interface": calico_interface(namespace, name),
                }
            )
    return table_frame(rows, "pods", node, artifact)


def _json_statuses(text: str, log: AnomalyLog) -> list[dict]:
    """Each concatenated JSON document's sandbox status; a document that does not decode ends the
    reading with an anomaly (what came before it is kept)."""
    try:
        check_json_bounds(text)
    except ValueError as exc:
        log.add("document", "refused", str(exc))
        return []
    decoder, out, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return out
        try:
            doc, at = decoder.raw_decode(text, at)
        except ValueError as exc:
            log.add(f"offset {at}", "bad_json", str(exc)[:200])
            return out
        status = doc.get("status") if isinstance(doc, dict) else None
        if isinstance(status, dict):
            out.append(status)


def _table_statuses(lines: list[str]) -> list[dict]:
    """`crictl inspectp -o table`: `ID:` starts a pod; Name, Namespace, Status and IP Address follow."""
    out: list[dict] = []
    for line in lines:
        m = TABLE_FIELD.match(line.strip())
        if not m:
            continue
        field, value = m.group(1), m.group(2).strip()
        if field == "ID":
            out.append({"metadata": {}, "network": {}})
        elif out and field in ("Name", "Namespace"):
            out[-1]["metadata"][field.lower()] = value
        elif out and field == "Status":
            out[-1]["state"] = value
        elif out and field == "IP Address" and value:
            out[-1]["network"]["ip"] = value
    return out
