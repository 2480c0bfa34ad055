"""`kubectl get pods -A -o wide` listings (as in `calicoctl cluster diags` cluster/kubernetes/pods.txt).

Columns are fixed-width under a header line; positions come from the header, because values such
as RESTARTS (`2 (5m ago)`) contain spaces.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame

HEADER = re.compile(r"^(NAMESPACE\s+)?NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE\b")


def looks_like_pod_listing(lines: list[str]) -> bool:
    return any(HEADER.match(x) for x in lines[:5])


def calico_interface(namespace: str, pod: str, prefix: str = "cali") -> str:
    """Calico's host-side veth name for a pod: prefix + first 11 hex digits of sha1("<ns>.<pod>")."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def parse_pod_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    rows: list[dict] = []
    starts: dict[str, int] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if HEADER.match(line):
            starts = {m.group(0): m.start() for m in re.finditer(r"\S+(?: GATES| NODE(?= ))?", line)}
            continue
        if not starts:
            log.add(no, "unparsed_line", line.strip()[:200])
            continue
        cols = sorted(starts.items(), key=lambda kv: kv[1])
        values = {}
        for i, (name, start) in enumerate(cols):
            end = cols[i + 1][1] if i + 1 < len(cols) else len(line)
            values[name] = line[start:end].strip()
        namespace = values.get("NAMESPACE", "default")
        name, ip = values.get("NAME", ""), values.get("IP", "")
        ready = values.get("READY", "0/0")
        # a line that does not fit the header's columns (a message printed into the listing, a cut
        # line): its slices are not a pod
        if not name or not re.fullmatch(r"\d+/\d+", ready) or not _is_ip_or_none(ip):
            log.add(no, "unparsed_line", line.strip()[:200])
            continue
        rows.append(
            {
                "line": no,
                "namespace": namespace,
                "name": name,
                "status": values.get("STATUS", ""),
                "ip": "" if ip in ("<none>", "") else ip,
                "pod_node": values.get("NODE", "").replace("<none>", ""),
                "interface": calico_interface(namespace, name),
            }
        )
    return table_frame(rows, "pods", node, artifact)


def _is_ip_or_none(text: str) -> bool:
    if text in ("", "<none>"):
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


SERVICE_HEADER = re.compile(r"^(NAMESPACE\s+)?NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)")
SERVICE_PORT = re.compile(r"^(\d+)(?::(\d+))?/(TCP|UDP|SCTP)$")


def looks_like_service_listing(lines: list[str]) -> bool:
    return any(SERVICE_HEADER.match(x) for x in lines[:5])


def parse_service_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`kubectl get services -A [-o wide]`: one row per service port (PORT(S) is `80/TCP,443:30443/TCP`).
    eBPF-mode bundles need it to name the services behind BPF NAT frontends, which carry only ids."""
    rows: list[dict] = []
    header = False
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if SERVICE_HEADER.match(line):
            header, namespaced = True, line.startswith("NAMESPACE")
            continue
        parts = line.split()
        if not header or len(parts) < (6 if namespaced else 5):
            log.add(no, "unparsed_line", line.strip()[:200])
            continue
        namespace, parts = (parts[0], parts[1:]) if namespaced else ("default", parts)
        name, kind, cluster_ip, external, ports = parts[:5]
        specs = [SERVICE_PORT.match(p) for p in ports.split(",")] if ports != "<none>" else []
        if (not _is_ip_or_none(cluster_ip) and cluster_ip != "None") or any(m is None for m in specs):
            log.add(no, "unparsed_line", line.strip()[:200])
            continue
        for m in specs:
            rows.append(
                {
                    "line": no,
                    "namespace": namespace,
                    "name": name,
                    "type": kind,
                    "cluster_ip": cluster_ip if _is_ip_or_none(cluster_ip) and cluster_ip != "<none>" else "",
                    "external_ip": "" if external in ("<none>", "<pending>") else external,
                    "port": int(m.group(1)),
                    "node_port": int(m.group(2)) if m.group(2) else -1,
                    "protocol": m.group(3).lower(),
                }
            )
    return table_frame(rows, "services", node, artifact)
