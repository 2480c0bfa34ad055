"""Kubernetes and Calico resources saved as `kubectl get … -o yaml|json` or `calicoctl get … -o
yaml|json` (cluster diags' cluster/kubernetes/ and cluster/crd/, runbooks' dumps): pods, workload
endpoints, services, Endpoints and EndpointSlices, nodes, network policies and IP pools into the
tables their listings also feed, with what only the full objects carry (every pod address, the
service ports' names that kube-proxy's comments use, backends that are not ready, policy rules).

YAML is read with a safe loader that also refuses aliases (a document of anchors can expand without
bound) and nesting past MAX_DEPTH, after a size bound; JSON goes through the same bounds
(text.load_json_bounded). A `kind: List` is read item by item.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pandas as pd
import yaml

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .kubectl import calico_interface
from .text import MAX_JSON_BYTES, MAX_JSON_DEPTH, load_json_bounded, preamble

KIND = re.compile(r'^\s*"?kind"?\s*:\s*"?(\w+)', re.M)
API_VERSION = re.compile(r'^\s*"?apiVersion"?\s*:', re.M)


def looks_like_resources(lines: list[str]) -> bool:
    head = "\n".join(lines[:60])
    return bool(API_VERSION.search(head)) and bool(KIND.search(head))


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader without aliases and with a nesting bound."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases are not read (a document of anchors can expand without bound)")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_JSON_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_documents(lines: list[str], log: AnomalyLog) -> list[dict]:
    """Every resource object in the text: JSON or YAML documents, List items unwrapped. What cannot
    be read safely is one anomaly, and nothing from that document."""
    body = [x for no, x in enumerate(lines, 1) if not (x.strip() and preamble(x, no, log))]
    text = "\n".join(body)
    if len(text) > MAX_JSON_BYTES:
        log.add("document", "refused", f"{len(text)} bytes is over the {MAX_JSON_BYTES}-byte bound")
        return []
    docs, error = _parsed(text)
    if error:
        log.add("document", "bad_document", error)
        return []
    out: list[dict] = []
    for doc in docs:
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            listed = isinstance(item, dict) and isinstance(item.get("items"), list)
            if listed and str(item.get("kind", "")).endswith("List"):
                out += [i for i in item["items"] if isinstance(i, dict)]
            elif isinstance(item, dict):
                out.append(item)
    return out


@lru_cache(maxsize=4)
def _parsed(text: str) -> tuple[tuple, str]:
    """(documents, error) of a resources file. One file feeds several tables (pods, services,
    policies, pools), each reading it in turn: it is parsed once. The documents are only read."""
    try:
        if text.lstrip().startswith(("{", "[")):
            return (load_json_bounded(text),), ""
        return tuple(yaml.load_all(text, Loader=_BoundedLoader)), ""  # a SafeLoader: no object construction
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        return (), str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _meta(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _dict(obj: dict, key: str) -> dict:
    return obj.get(key) if isinstance(obj.get(key), dict) else {}


def _calico(obj: dict) -> bool:
    return "projectcalico.org" in str(obj.get("apiVersion", ""))


def parse_pod_resources(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Pods: a row per address (status.podIPs: both families in a dual-stack cluster). Calico's
    WorkloadEndpoints too: a pod's addresses and the host-side interface Calico gave it."""
    rows = []
    for obj in load_documents(lines, log):
        if obj.get("kind") == "WorkloadEndpoint":
            rows += _workload_endpoint(obj)
            continue
        if obj.get("kind") != "Pod":
            continue
        namespace, name = _meta(obj)
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        ips = [str(p.get("ip")) for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")]
        ips = ips or ([str(status["podIP"])] if status.get("podIP") else [""])
        for ip in ips:
            rows.append(
                {
                    "line": -1,
                    "namespace": namespace,
                    "name": name,
                    "status": str(status.get("phase", "")),
                    "ip": ip,
                    "pod_node": str(spec.get("nodeName", "")),
                    "interface": calico_interface(namespace, name),
                }
            )
    return table_frame(rows, "pods", node, artifact)


def _workload_endpoint(obj: dict) -> list[dict]:
    namespace, name = _meta(obj)
    spec = _dict(obj, "spec")
    pod = str(spec.get("pod") or spec.get("workload") or name)
    nets = [str(n).split("/")[0] for n in spec.get("ipNetworks") or [] if n]
    return [
        {
            "line": -1,
            "namespace": namespace,
            "name": pod,
            "status": "",
            "ip": ip,
            "pod_node": str(spec.get("node", "")),
            "interface": str(spec.get("interfaceName") or calico_interface(namespace, pod)),
        }
        for ip in nets or [""]
    ]


def parse_service_resources(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Services: a row per port, with its name (kube-proxy names a service port `<ns>/<svc>:<port name>`),
    the cluster IPs, external IPs and load-balancer ingress addresses."""
    rows = []
    for obj in load_documents(lines, log):
        if obj.get("kind") != "Service":
            continue
        namespace, name = _meta(obj)
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        cluster_ips = [str(x) for x in spec.get("clusterIPs") or [spec.get("clusterIP")] if x and x != "None"]
        ingress = (status.get("loadBalancer") or {}).get("ingress") or [] if isinstance(status, dict) else []
        external = [str(x) for x in spec.get("externalIPs") or []] + [
            str(x["ip"]) for x in ingress if isinstance(x, dict) and x.get("ip")
        ]
        for port in spec.get("ports") or []:
            if not isinstance(port, dict) or not str(port.get("port", "")).isdigit():
                log.add("document", "unparsed_element", f"service {namespace}/{name}: port {str(port)[:120]}")
                continue
            for ip in cluster_ips or [""]:
                rows.append(
                    {
                        "line": -1,
                        "namespace": namespace,
                        "name": name,
                        "type": str(spec.get("type", "ClusterIP")),
                        "cluster_ip": ip,
                        "external_ip": ",".join(external),
                        "port": int(port["port"]),
                        "port_name": str(port.get("name", "")),
                        "node_port": int(port["nodePort"]) if str(port.get("nodePort", "")).isdigit() else -1,
                        "protocol": str(port.get("protocol", "TCP")).lower(),
                    }
                )
    return table_frame(rows, "services", node, artifact)


POLICY_KINDS = {"NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy", "StagedGlobalNetworkPolicy"}


def parse_policy_resources(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Network policies (Kubernetes NetworkPolicy, Calico NetworkPolicy and GlobalNetworkPolicy, staged
    ones too): what each selects and, per direction, its rules in one readable line each, so a drop
    can quote the rules of the policy behind it."""
    rows = []
    for obj in load_documents(lines, log):
        kind = str(obj.get("kind", ""))
        if kind not in POLICY_KINDS:
            continue
        namespace, name = _meta(obj)
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        calico = "projectcalico.org" in str(obj.get("apiVersion", ""))
        if kind == "NetworkPolicy" and not calico:
            kind = "KubernetesNetworkPolicy"
        if kind.startswith("Global") or kind == "StagedGlobalNetworkPolicy":
            namespace = ""
        rules = {
            d: [_calico_rule(r) if calico else _k8s_rule(r, d) for r in spec.get(d) or [] if isinstance(r, dict)]
            for d in ("ingress", "egress")
        }
        types = [str(t).lower() for t in spec.get("types") or spec.get("policyTypes") or []]
        rows.append(
            {
                "line": -1,
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "tier": str(spec.get("tier", "default") if calico else "default"),
                "order": float(spec["order"]) if isinstance(spec.get("order"), (int, float)) else -1.0,
                "selector": str(spec.get("selector", "")) if calico else _k8s_selector(spec.get("podSelector")),
                "types": ",".join(types),
                "ingress": "; ".join(rules["ingress"]) or ("no rule: denies all" if "ingress" in types else ""),
                "egress": "; ".join(rules["egress"]) or ("no rule: denies all" if "egress" in types else ""),
            }
        )
    return table_frame(rows, "network_policies", node, artifact)


def _k8s_selector(selector: object) -> str:
    if not isinstance(selector, dict):
        return "all()"
    terms = [f"{k} == '{v}'" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        if isinstance(e, dict):
            terms.append(f"{e.get('key')} {str(e.get('operator', '')).lower()} {e.get('values', [])}")
    return " && ".join(terms) or "all()"


def _ports(ports: object) -> str:
    out = []
    for p in ports if isinstance(ports, list) else []:
        if isinstance(p, dict):
            end = f"-{p['endPort']}" if p.get("endPort") else ""
            out.append(f"{p.get('protocol', 'TCP')}/{p.get('port', '*')}{end}")
        else:
            out.append(str(p))
    return ",".join(out)


def _k8s_rule(rule: dict, direction: str) -> str:
    peers = []
    for peer in rule.get("from" if direction == "ingress" else "to") or []:
        if not isinstance(peer, dict):
            continue
        if isinstance(peer.get("ipBlock"), dict):
            block = peer["ipBlock"]
            peers.append(f"{block.get('cidr')}" + (f" except {block.get('except')}" if block.get("except") else ""))
            continue
        pods = _k8s_selector(peer["podSelector"]) if "podSelector" in peer else ""
        spaces = _k8s_selector(peer["namespaceSelector"]) if "namespaceSelector" in peer else ""
        said = (f"pods {pods}" if pods else "", f"namespaces {spaces}" if spaces else "")
        peers.append(" in ".join(x for x in said if x))
    side = "from" if direction == "ingress" else "to"
    text = f"allow {side} " + (" or ".join(peers) if peers else "anywhere")
    ports = _ports(rule.get("ports"))
    return text + (f" on {ports}" if ports else "")


def _calico_rule(rule: dict) -> str:
    parts = [str(rule.get("action", "Allow")).lower()]
    if rule.get("protocol"):
        parts.append(str(rule["protocol"]).lower())
    for side in ("source", "destination"):
        end = rule.get(side) if isinstance(rule.get(side), dict) else {}
        said = []
        for key in ("selector", "namespaceSelector", "serviceAccounts", "services"):
            if end.get(key):
                said.append(f"{key} {end[key]}")
        if end.get("nets"):
            said.append("nets " + ",".join(map(str, end["nets"])))
        if end.get("notNets"):
            said.append("not nets " + ",".join(map(str, end["notNets"])))
        if end.get("ports"):
            said.append("ports " + ",".join(map(str, end["ports"])))
        if said:
            parts.append(("from " if side == "source" else "to ") + " ".join(said))
    return " ".join(parts)


def parse_pool_resources(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Calico IP pools (`kubectl get ippools.crd.projectcalico.org -o yaml`, `calicoctl get ippools -o
    yaml`): the encapsulation and NAT their pods' traffic should get."""
    rows = []
    for obj in load_documents(lines, log):
        if obj.get("kind") != "IPPool":
            continue
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        rows.append(
            {
                "line": -1,
                "name": _meta(obj)[1],
                "cidr": str(spec.get("cidr", "")),
                "ipip_mode": str(spec.get("ipipMode", "Never") or "Never"),
                "vxlan_mode": str(spec.get("vxlanMode", "Never") or "Never"),
                "nat_outgoing": bool(spec.get("natOutgoing", False)),
                "disabled": bool(spec.get("disabled", False)),
            }
        )
    return table_frame(rows, "ip_pools", node, artifact)


def parse_endpoint_resources(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Endpoints (subsets: ready `addresses`, `notReadyAddresses`, ports) and EndpointSlices (each
    endpoint's `conditions.ready`, the service in label kubernetes.io/service-name): a row per backend
    address and port, ready or not, with the pod and node behind it."""
    rows = []
    for obj in load_documents(lines, log):
        kind = obj.get("kind")
        if kind not in ("Endpoints", "EndpointSlice"):
            continue
        namespace, name = _meta(obj)
        if kind == "Endpoints":
            for subset in obj.get("subsets") or []:
                if not isinstance(subset, dict):
                    continue
                ports = _endpoint_ports(subset.get("ports"))
                for ready, key in (("ready", "addresses"), ("not_ready", "notReadyAddresses")):
                    for a in subset.get(key) or []:
                        if isinstance(a, dict) and a.get("ip"):
                            rows += _backend_rows(namespace, name, "", str(a["ip"]), ports, ready, a)
            continue
        service = str(_dict(_dict(obj, "metadata"), "labels").get("kubernetes.io/service-name", ""))
        ports = _endpoint_ports(obj.get("ports"))
        for e in obj.get("endpoints") or []:
            if not isinstance(e, dict):
                continue
            state = _dict(e, "conditions")
            ready = "unknown" if "ready" not in state else "ready" if state.get("ready") else "not_ready"
            if state.get("terminating"):
                ready = "terminating"
            for address in e.get("addresses") or []:
                rows += _backend_rows(namespace, service, name, str(address), ports, ready, e)
    return table_frame(rows, "endpoints", node, artifact)


def _endpoint_ports(ports: object) -> list[tuple[int, str, str]]:
    out = []
    for p in ports if isinstance(ports, list) else []:
        if isinstance(p, dict):
            port = int(p["port"]) if str(p.get("port", "")).isdigit() else -1
            out.append((port, str(p.get("name", "") or ""), str(p.get("protocol", "TCP")).lower()))
    return out or [(-1, "", "")]


def _backend_rows(
    namespace: str, service: str, slice_name: str, address: str, ports: list, ready: str, entry: dict
) -> list[dict]:
    target = _dict(entry, "targetRef")
    pod = f"{target.get('namespace', namespace)}/{target['name']}" if target.get("name") else ""
    return [
        {
            "line": -1,
            "namespace": namespace,
            "service": service,
            "slice": slice_name,
            "address": address,
            "port": port,
            "port_name": port_name,
            "protocol": protocol,
            "ready": ready,
            "target": pod,
            "target_node": str(entry.get("nodeName", "") or ""),
        }
        for port, port_name, protocol in ports
    ]


# Calico's annotations on Kubernetes nodes (libcalico-go's k8s node conversion) and its Node fields
NODE_ANNOTATIONS = {
    "projectcalico.org/IPv4Address": "calico_ip",
    "projectcalico.org/IPv6Address": "calico_ip",
    "projectcalico.org/IPv4VXLANTunnelAddr": "tunnel_ips",
    "projectcalico.org/IPv6VXLANTunnelAddr": "tunnel_ips",
    "projectcalico.org/IPv4IPIPTunnelAddr": "tunnel_ips",
    "projectcalico.org/IPv4WireguardInterfaceAddr": "tunnel_ips",
    "projectcalico.org/IPv6WireguardInterfaceAddr": "tunnel_ips",
}


def parse_node_resources(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Kubernetes Nodes (status.addresses, podCIDRs, Calico's address annotations) and Calico Nodes
    (spec.bgp addresses, tunnel addresses, WireGuard interface addresses): a row per node."""
    rows = []
    for obj in load_documents(lines, log):
        if obj.get("kind") != "Node":
            continue
        _, name = _meta(obj)
        spec, status = _dict(obj, "spec"), _dict(obj, "status")
        found: dict[str, list[str]] = {"calico_ip": [], "tunnel_ips": []}
        if _calico(obj):
            bgp, wireguard = _dict(spec, "bgp"), _dict(spec, "wireguard")
            found["calico_ip"] += [str(bgp[k]) for k in ("ipv4Address", "ipv6Address") if bgp.get(k)]
            tunnels = [bgp.get("ipv4IPIPTunnelAddr"), spec.get("ipv4VXLANTunnelAddr"), spec.get("ipv6VXLANTunnelAddr")]
            tunnels += [wireguard.get("interfaceIPv4Address"), wireguard.get("interfaceIPv6Address")]
            found["tunnel_ips"] += [str(t) for t in tunnels if t]
            addresses = [a for a in spec.get("addresses") or [] if isinstance(a, dict)]
        else:
            notes = _dict(_dict(obj, "metadata"), "annotations")
            for key, column in NODE_ANNOTATIONS.items():
                if notes.get(key):
                    found[column].append(str(notes[key]))
            addresses = [a for a in status.get("addresses") or [] if isinstance(a, dict)]
        by_type: dict[str, list[str]] = {}
        for a in addresses:
            by_type.setdefault(str(a.get("type", "")), []).append(str(a.get("address", "")))
        ready = [c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"]
        info = _dict(status, "nodeInfo")
        rows.append(
            {
                "line": -1,
                "kind": "CalicoNode" if _calico(obj) else "Node",
                "name": name,
                "status": ("Ready" if str(ready[0].get("status")) == "True" else "NotReady") if ready else "",
                "internal_ip": " ".join(by_type.get("InternalIP", []) + by_type.get("CalicoNodeIP", [])),
                "external_ip": " ".join(by_type.get("ExternalIP", [])),
                "calico_ip": " ".join(found["calico_ip"]),
                "tunnel_ips": " ".join(found["tunnel_ips"]),
                "pod_cidrs": " ".join(str(c) for c in spec.get("podCIDRs") or [spec.get("podCIDR")] if c),
                "kernel_version": str(info.get("kernelVersion", "")),
                "container_runtime": str(info.get("containerRuntimeVersion", "")),
            }
        )
    return table_frame(rows, "cluster_nodes", node, artifact)


def packet_capture_nodes(lines: list[str], log: AnomalyLog) -> dict[str, str]:
    """File name -> node from saved Calico Enterprise/Cloud PacketCapture resources (status.files: the
    node, directory and file names of each capture), to place the files `calicoctl captured-packets
    copy` brings back without saying which node wrote them."""
    out: dict[str, str] = {}
    for obj in load_documents(lines, log):
        if obj.get("kind") != "PacketCapture":
            continue
        for entry in _dict(obj, "status").get("files") or []:
            if isinstance(entry, dict) and entry.get("node"):
                for name in entry.get("fileNames") or []:
                    out[str(name)] = str(entry["node"])
    return out
