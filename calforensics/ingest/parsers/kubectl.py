"""`kubectl get …` and `calicoctl get …` tables, with or without `-o wide`, read by their header.

Both tools print through Go's tabwriter with a padding of 3 (kubectl: cli-runtime printers'
GetNewTabWriter; calicoctl: its resource printer), so every cell of a column starts where the
column's title starts, titles are at least three spaces apart, and a title of two words (`NOMINATED
NODE`) has one space inside. Rows are sliced at the title positions, because values hold spaces
(RESTARTS `2 (5m ago)`, OS-IMAGE, ENDPOINTS `… + 2 more...`). Which resource a table lists is told
by its column titles, whatever their set and order (kubectl's printers in
pkg/printers/internalversion/printers.go; calicoctl's in calicoctl/resourcemgr/*.go). One file may
hold several tables (`kubectl get all`, concatenated outputs): each title line starts a new one,
and `pod/<name>`-style names lose their resource prefix.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator
from functools import lru_cache

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame

_TITLE_CELL = r"[A-Z][A-Z0-9()\-]*(?: [A-Z][A-Z0-9()\-]*)?"  # one or two upper-case words
TITLE = re.compile(rf"^{_TITLE_CELL}(?: {{2,}}{_TITLE_CELL})*\s*$")
CELL = re.compile(_TITLE_CELL)
# the resource a table lists, from the titles it must have (first match wins)
SHAPES: list[tuple[str, frozenset[str]]] = [
    ("pods", frozenset({"NAME", "READY", "STATUS", "RESTARTS"})),
    ("services", frozenset({"NAME", "TYPE", "CLUSTER-IP", "PORT(S)"})),
    ("endpointslices", frozenset({"NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"})),
    ("endpoints", frozenset({"NAME", "ENDPOINTS"})),
    ("nodes", frozenset({"NAME", "STATUS", "ROLES", "VERSION"})),
    ("calico_nodes", frozenset({"NAME", "ASN", "IPV4"})),
    ("ip_pools", frozenset({"NAME", "CIDR"})),
    ("workload_endpoints", frozenset({"WORKLOAD", "NODE", "NETWORKS", "INTERFACE"})),
    ("kubernetes_policies", frozenset({"NAME", "POD-SELECTOR"})),
    ("calico_policies", frozenset({"NAME", "TIER"})),
    ("calico_policies", frozenset({"NAME", "ORDER", "SELECTOR"})),  # calicoctl before tiers were listed
    ("crictl_pods", frozenset({"POD ID", "STATE", "NAME", "NAMESPACE"})),  # cri-tools cmd/crictl/sandbox.go
    ("crictl_pods", frozenset({"SANDBOX ID", "NAME", "STATE"})),  # crictl before v1.11
]
# which of our tables each listed resource feeds
FEEDS = {
    "pods": "pods",
    "workload_endpoints": "pods",
    "services": "services",
    "endpoints": "endpoints",
    "endpointslices": "endpoints",
    "nodes": "cluster_nodes",
    "calico_nodes": "cluster_nodes",
    "ip_pools": "ip_pools",
    "kubernetes_policies": "network_policies",
    "calico_policies": "network_policies",
    "crictl_pods": "pods",
}
LISTING_TABLES = list(dict.fromkeys(FEEDS.values()))
# cells the printers never leave empty (they print `<none>`, `<unset>` or a default instead): a row
# without one is a cut line or a message printed into the listing, not the resource
NEVER_EMPTY = {
    "pods": ("NAME", "READY", "STATUS"),
    "services": ("NAME", "TYPE", "CLUSTER-IP", "PORT(S)"),
    "endpointslices": ("NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"),
    "endpoints": ("NAME", "ENDPOINTS"),
    "nodes": ("NAME", "STATUS", "ROLES", "VERSION"),
    "calico_nodes": ("NAME",),
    "ip_pools": ("NAME", "CIDR"),
    "workload_endpoints": ("WORKLOAD", "NODE", "INTERFACE"),
    "kubernetes_policies": ("NAME", "POD-SELECTOR"),
    "calico_policies": ("NAME",),
    "crictl_pods": ("NAME", "STATE"),
}
OBJECT_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9._:]*[A-Za-z0-9])?")  # a Kubernetes object's name
MORE = re.compile(r"\s*\+ (\d+) more\.\.\.$")


def shape_of(line: str) -> tuple[str, list[tuple[str, int]]] | None:
    """(resource, [(title, start column)]) when the line is a table's title line; the resource is ""
    for a table of something we do not read (deployments, …)."""
    if not TITLE.match(line.rstrip()):
        return None
    cells = [(m.group(0), m.start()) for m in CELL.finditer(line)]
    titles = {c for c, _ in cells}
    if not titles & {"NAME", "WORKLOAD"}:  # every listing names its objects
        return None
    return next((resource for resource, needed in SHAPES if needed <= titles), ""), cells


def looks_like_listing(lines: list[str]) -> bool:
    return any((shape_of(x) or ("",))[0] for x in lines[:5] if x.strip())


def looks_like_other_listing(lines: list[str]) -> bool:
    """A kubectl table of a resource no table reads (namespaces, deployments, a CRD without printer
    columns: `NAME   CREATED AT`)."""
    return any(shape_of(x) for x in lines[:5] if x.strip())


COMMANDS = {  # the command that prints each listed resource
    "pods": "kubectl get pods",
    "services": "kubectl get services",
    "endpointslices": "kubectl get endpointslices",
    "endpoints": "kubectl get endpoints",
    "nodes": "kubectl get nodes",
    "calico_nodes": "calicoctl get nodes",
    "ip_pools": "calicoctl get ippools",
    "workload_endpoints": "calicoctl get workloadendpoints",
    "kubernetes_policies": "kubectl get networkpolicies",
    "calico_policies": "calicoctl get networkpolicies",
    "crictl_pods": "crictl pods",
}
WIDE_TITLE = {  # a column only `-o wide` adds, per listed resource
    "pods": "IP",
    "services": "SELECTOR",
    "nodes": "INTERNAL-IP",
    "calico_nodes": "ASN",
    "ip_pools": "IPIPMODE",
    "workload_endpoints": "PROFILES",
    "calico_policies": "ORDER",
}


def listing_form(lines: list[str]) -> str:
    """The commands a listing file holds, as typed: `kubectl get pods -o wide`, `calicoctl get ippools`."""
    forms = []
    for line in lines:
        shaped = shape_of(line) if line.strip() else None
        if shaped and shaped[0]:
            resource, cells = shaped
            wide = " -o wide" if WIDE_TITLE.get(resource, "-") in {c for c, _ in cells} else ""
            forms.append(COMMANDS[resource] + wide)
        elif shaped:
            forms.append("tables of other resources (not read)")
    return ", ".join(dict.fromkeys(forms))


@lru_cache(maxsize=4)
def _read(text: str) -> tuple[dict[str, list[tuple[int, dict[str, str]]]], tuple[tuple[int, str], ...]]:
    """Rows by resource, as (line, {title: cell}), and the lines that stand under no title. The rows of
    a table of something no table reads (`kubectl get all`'s deployments) are passed over: the
    artifact's form says the file holds such tables."""
    rows: dict[str, list[tuple[int, dict[str, str]]]] = {}
    orphans: list[tuple[int, str]] = []
    cells: list[tuple[str, int]] = []
    resource, titled = "", False
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        shaped = shape_of(line)
        if shaped:
            (resource, cells), titled = shaped, True
            continue
        if not titled:  # before any title: not a listing's line
            orphans.append((no, line.strip()[:200]))
            continue
        if not resource:
            continue
        values = {}
        for i, (title, start) in enumerate(cells):
            end = cells[i + 1][1] if i + 1 < len(cells) else len(line)
            values[title] = line[start:end].strip()
        rows.setdefault(resource, []).append((no, values))
    return rows, tuple(orphans)


def _rows(lines: list[str], log: AnomalyLog, table: str) -> Iterator[tuple[int, str, dict[str, str]]]:
    """This table's rows of a listing file. Lines under no title are reported by the first table the
    file feeds (so once), or by pods when it feeds none."""
    by_resource, orphans = _read("\n".join(lines))
    fed = [FEEDS[r] for r in by_resource]
    if table == (next((t for t in LISTING_TABLES if t in fed), LISTING_TABLES[0])):
        for no, text in orphans:
            log.add(no, "unparsed_line", text)
    for resource, rows in by_resource.items():
        if FEEDS[resource] == table:
            for no, values in rows:
                named = OBJECT_NAME.fullmatch(_name(values, "WORKLOAD" if "WORKLOAD" in values else "NAME"))
                in_namespace = OBJECT_NAME.fullmatch(values.get("NAMESPACE", "") or "default")
                if named and in_namespace and all(values.get(t) for t in NEVER_EMPTY[resource]):
                    yield no, resource, values
                else:
                    _bad(log, no, values)


def _name(values: dict[str, str], title: str = "NAME") -> str:
    """A name without `kubectl get all`'s `pod/`, `service/` prefix."""
    return values.get(title, "").rpartition("/")[2]


def calico_interface(namespace: str, pod: str, prefix: str = "cali") -> str:
    """Calico's host-side veth name for a pod: prefix + first 11 hex digits of sha1("<ns>.<pod>")."""
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_ip_or_none(text: str) -> bool:
    return text in ("", "<none>") or _is_ip(text)


def _bad(log: AnomalyLog, no: int, values: dict[str, str]) -> None:
    log.add(no, "unparsed_line", "  ".join(v for v in values.values() if v)[:200])


def parse_pod_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`kubectl get pods [-A] [-o wide]` (IP and NODE only with -o wide), `calicoctl get
    workloadendpoints [-o wide]` (whose INTERFACE is the pod's host-side veth, as Calico named it) and
    a node's `crictl pods` (its pods run on the node the file was collected on)."""
    rows: list[dict] = []
    for no, resource, v in _rows(lines, log, "pods"):
        namespace = v.get("NAMESPACE", "") or "default"
        if resource == "crictl_pods":  # the node's own sandboxes: the file's node runs them
            state = {"SANDBOX_READY": "Ready", "SANDBOX_NOTREADY": "NotReady"}.get(v["STATE"], v["STATE"])
            rows.append(_pod(no, namespace, _name(v), state, "", node, ""))
            continue
        if resource == "workload_endpoints":
            name = _name(v, "WORKLOAD")
            nets = [n.split("/")[0] for n in v.get("NETWORKS", "").split(",") if n]
            if not name or not all(_is_ip(n) for n in nets):
                _bad(log, no, v)
                continue
            for ip in nets or [""]:
                rows.append(_pod(no, namespace, name, "", ip, v.get("NODE", ""), v.get("INTERFACE", "")))
            continue
        name, ip = _name(v), v.get("IP", "")
        # a line that does not fit the title's columns (a message printed into the listing, a cut
        # line): its slices are not a pod
        if not name or not re.fullmatch(r"\d+/\d+", v.get("READY", "")) or not _is_ip_or_none(ip):
            _bad(log, no, v)
            continue
        rows.append(_pod(no, namespace, name, v.get("STATUS", ""), ip, v.get("NODE", ""), ""))
    return table_frame(rows, "pods", node, artifact)


def _pod(no: int, namespace: str, name: str, status: str, ip: str, pod_node: str, interface: str) -> dict:
    return {
        "line": no,
        "namespace": namespace,
        "name": name,
        "status": status,
        "ip": "" if ip == "<none>" else ip,
        "pod_node": pod_node.replace("<none>", ""),
        "interface": interface or calico_interface(namespace, name),
    }


SERVICE_PORT = re.compile(r"^(\d+)(?::(\d+))?/(TCP|UDP|SCTP)$")


def parse_service_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`kubectl get services [-A] [-o wide]`: one row per service port (PORT(S) is `80/TCP,443:30443/TCP`).
    eBPF-mode bundles need it to name the services behind BPF NAT frontends, which carry only ids."""
    rows: list[dict] = []
    for no, _, v in _rows(lines, log, "services"):
        cluster_ip, ports, external = v.get("CLUSTER-IP", ""), v.get("PORT(S)", ""), v.get("EXTERNAL-IP", "")
        specs = [SERVICE_PORT.match(p) for p in ports.split(",")] if ports not in ("<none>", "") else []
        ips = [x for x in cluster_ip.split(",") if x]  # dual-stack: both families
        if not _name(v) or not all(_is_ip_or_none(x) or x == "None" for x in ips) or any(m is None for m in specs):
            _bad(log, no, v)
            continue
        for m in specs:
            for ip in ips or [""]:
                rows.append(
                    {
                        "line": no,
                        "namespace": v.get("NAMESPACE", "") or "default",
                        "name": _name(v),
                        "type": v.get("TYPE", ""),
                        "cluster_ip": ip if _is_ip(ip) else "",
                        "external_ip": "" if external in ("<none>", "<pending>") else external,
                        "port": int(m.group(1)),
                        "node_port": int(m.group(2)) if m.group(2) else -1,
                        "protocol": m.group(3).lower(),
                    }
                )
    return table_frame(rows, "services", node, artifact)


def _addresses(cell: str, log: AnomalyLog, no: int) -> list[str]:
    """A cell's comma-separated entries; kubectl shows at most three and says how many it left out."""
    more = MORE.search(cell)
    if more:
        log.add(no, "listing_truncated", f"kubectl left out {more.group(1)} more: {cell[:160]}")
        cell = cell[: more.start()]
    return [x for x in cell.split(",") if x and x not in ("<none>", "<unset>")]


def parse_endpoint_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`kubectl get endpoints` (its ENDPOINTS are the ready addresses only, as `ip:port`) and `kubectl
    get endpointslices` (ENDPOINTS every address, ready or not, PORTS apart): a row per address and port."""
    rows: list[dict] = []
    for no, resource, v in _rows(lines, log, "endpoints"):
        namespace = v.get("NAMESPACE", "") or "default"
        pairs: list[tuple[str, int]] = []
        ok = bool(_name(v))
        if resource == "endpoints":
            for entry in _addresses(v.get("ENDPOINTS", ""), log, no):
                host, _, port = entry.rpartition(":")
                host = host.strip("[]")
                ok = ok and _is_ip(host) and port.isdigit()
                pairs.append((host, int(port) if port.isdigit() else -1))
        else:
            ports = [int(p) if p.isdigit() else -1 for p in _addresses(v.get("PORTS", ""), log, no)]
            for host in _addresses(v.get("ENDPOINTS", ""), log, no):
                ok = ok and _is_ip(host)
                pairs += [(host, p) for p in ports or [-1]]
        if not ok:
            _bad(log, no, v)
            continue
        for host, port in pairs:
            rows.append(
                {
                    "line": no,
                    "namespace": namespace,
                    # an EndpointSlice is named <service>-<random suffix>: the listing does not name
                    # its service, the object's kubernetes.io/service-name label does
                    "service": _name(v) if resource == "endpoints" else "",
                    "slice": _name(v) if resource == "endpointslices" else "",
                    "address": host,
                    "port": port,
                    "ready": "ready" if resource == "endpoints" else "unknown",
                }
            )
    return table_frame(rows, "endpoints", node, artifact)


def parse_node_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`kubectl get nodes [-o wide]` (addresses with -o wide) and `calicoctl get nodes -o wide` (the
    node's BGP addresses, which Calico uses as the node's address)."""
    rows: list[dict] = []
    for no, resource, v in _rows(lines, log, "cluster_nodes"):
        internal = [x for x in v.get("INTERNAL-IP", "").split(",") if x and x != "<none>"]
        external = [x for x in v.get("EXTERNAL-IP", "").split(",") if x and x != "<none>"]
        calico = [x for x in (v.get("IPV4", ""), v.get("IPV6", "")) if x]
        if not _name(v) or not all(_is_ip(x) for x in internal + external) or not all(_is_cidr(x) for x in calico):
            _bad(log, no, v)
            continue
        rows.append(
            {
                "line": no,
                "kind": "CalicoNode" if resource == "calico_nodes" else "Node",
                "name": _name(v),
                "status": v.get("STATUS", ""),
                "internal_ip": " ".join(internal),
                "external_ip": " ".join(external),
                "calico_ip": " ".join(calico),
                "kernel_version": v.get("KERNEL-VERSION", ""),
                "container_runtime": v.get("CONTAINER-RUNTIME", ""),
            }
        )
    return table_frame(rows, "cluster_nodes", node, artifact)


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def parse_pool_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`calicoctl get ippools [-o wide]`: the modes and NAT only with -o wide (calicoctl prints
    `Never` for an unset mode); without it they stay empty, unknown."""
    rows: list[dict] = []
    for no, _, v in _rows(lines, log, "ip_pools"):
        if not _name(v) or not _is_cidr(v.get("CIDR", "")) or "/" not in v.get("CIDR", ""):
            _bad(log, no, v)
            continue
        rows.append(
            {
                "line": no,
                "name": _name(v),
                "cidr": v["CIDR"],
                "ipip_mode": v.get("IPIPMODE", ""),
                "vxlan_mode": v.get("VXLANMODE", ""),
                "nat_outgoing": v.get("NAT", "").lower() == "true",
                "disabled": v.get("DISABLED", "").lower() == "true",
            }
        )
    return table_frame(rows, "ip_pools", node, artifact)


def parse_policy_listing(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`kubectl get networkpolicies` (POD-SELECTOR) and `calicoctl get [global]networkpolicies [-o wide]`
    (TIER, ORDER, SELECTOR): what each selects; the rules are only in `-o yaml`."""
    rows: list[dict] = []
    for no, resource, v in _rows(lines, log, "network_policies"):
        if not _name(v):
            _bad(log, no, v)
            continue
        order = v.get("ORDER", "")
        kubernetes = resource == "kubernetes_policies"
        rows.append(
            {
                "line": no,
                "kind": "KubernetesNetworkPolicy" if kubernetes else "NetworkPolicy",
                "namespace": v.get("NAMESPACE", ""),
                "name": _name(v),
                "tier": v.get("TIER", "") or "default",
                "order": float(order) if re.fullmatch(r"\d+(?:\.\d+)?", order) else -1.0,
                "selector": (v.get("POD-SELECTOR", "") or "all()") if kubernetes else v.get("SELECTOR", ""),
            }
        )
    return table_frame(rows, "network_policies", node, artifact)


LISTING_PARSERS = {
    "pods": parse_pod_listing,
    "services": parse_service_listing,
    "endpoints": parse_endpoint_listing,
    "cluster_nodes": parse_node_listing,
    "ip_pools": parse_pool_listing,
    "network_policies": parse_policy_listing,
}
