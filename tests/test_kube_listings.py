"""`kubectl get …` and `calicoctl get …` tables, read by their column titles whatever the set and order,
and cluster resources used: nodes and pods own addresses, backends quoted by the drops they explain,
configured MTUs checked against the devices and the host.

The listings are written as the printers write them: Go's tabwriter with padding 3, each cell starting
where its title starts (kubectl: pkg/printers/internalversion/printers.go; calicoctl:
calicoctl/resourcemgr/*.go headings and templates)."""

from __future__ import annotations

import tarfile

import pandas as pd
from conftest import SAMPLES

import calforensics
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers import kubectl, resources
from calforensics.join.hops import address_owners
from calforensics.schema import conform


def tabwrite(rows: list[list[str]], padding: int = 3, minwidth: int = 10) -> list[str]:
    """Cells aligned as Go's tabwriter aligns them (every cell but the last padded to its column)."""
    widths = [max(minwidth, *(len(r[i]) + padding for r in rows)) for i in range(len(rows[0]) - 1)]
    return ["".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + r[-1] for r in rows]


def read(fn, lines: list[str]):
    log = AnomalyLog("listing", "f")
    return fn(lines, log, "", "f"), log


PODS_WIDE = [
    ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
    ["default", "client", "1/1", "Running", "2 (5m ago)", "10m", "192.168.10.5", "node-a", "<none>", "<none>"],
    ["shop", "web-7d4b9c-x2k", "1/1", "Running", "0", "3d", "192.168.20.7", "node-b", "<none>", "<none>"],
    ["kube-system", "coredns-5d78c9869d-abcde", "0/1", "Pending", "0", "10m", "<none>", "<none>", "<none>", "<none>"],
]


def test_pod_listings_with_and_without_wide_in_any_column_order():
    wide, log = read(kubectl.parse_pod_listing, tabwrite(PODS_WIDE))
    assert not log.rows
    assert wide[["namespace", "name", "ip", "pod_node"]].values.tolist() == [
        ["default", "client", "192.168.10.5", "node-a"],
        ["shop", "web-7d4b9c-x2k", "192.168.20.7", "node-b"],
        ["kube-system", "coredns-5d78c9869d-abcde", "", ""],
    ]
    # without -o wide: no address, no node; the same pods
    plain, log = read(kubectl.parse_pod_listing, tabwrite([r[:6] for r in PODS_WIDE]))
    assert not log.rows and plain.name.tolist() == wide.name.tolist() and set(plain.ip) == {""}
    # columns in another order, with --show-labels' LABELS (commas and equals signs) at the end
    order = [7, 1, 0, 6, 2, 3, 4, 5]
    shuffled = [[r[i] for i in order] + [lab] for r, lab in zip(PODS_WIDE, ["LABELS", "app=client", "app=web,tier=fe", "k8s-app=kube-dns"], strict=True)]
    again, log = read(kubectl.parse_pod_listing, tabwrite(shuffled))
    assert not log.rows
    pd.testing.assert_frame_equal(again.drop(columns="line"), wide.drop(columns="line"))


def test_kubectl_get_all_splits_at_each_title_and_drops_the_resource_prefix():
    text = [
        *tabwrite([["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["pod/client", "1/1", "Running", "0", "5m"]]),
        "",
        *tabwrite(
            [
                ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"],
                ["service/web", "ClusterIP", "10.96.0.50,fd00::50", "<none>", "80/TCP,443/TCP", "3d", "app=web"],
            ]
        ),
        "",
        *tabwrite([["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["deployment.apps/web", "2/2", "2", "2", "3d"]]),
    ]
    pods, pod_log = read(kubectl.parse_pod_listing, text)
    services, service_log = read(kubectl.parse_service_listing, text)
    assert pods.name.tolist() == ["client"]
    assert services[["name", "cluster_ip", "port"]].values.tolist() == [
        ["web", "10.96.0.50", 80],
        ["web", "fd00::50", 80],
        ["web", "10.96.0.50", 443],
        ["web", "fd00::50", 443],
    ]
    # the deployment table is no table of ours: passed over, and the file's form says it holds one
    assert not pod_log.rows and not service_log.rows
    assert kubectl.listing_form(text) == "kubectl get pods, kubectl get services -o wide, tables of other resources (not read)"


def test_endpoints_and_endpointslices_listings_and_objects_agree():
    listing = tabwrite(
        [
            ["NAMESPACE", "NAME", "ENDPOINTS", "AGE"],
            ["shop", "web", "192.168.20.7:8080,192.168.20.8:8080,[fd10::7]:8080 + 1 more...", "3d"],
            ["default", "gone", "<none>", "1d"],
        ]
    )
    eps, log = read(kubectl.parse_endpoint_listing, listing)
    assert eps[["service", "address", "port", "ready"]].values.tolist() == [
        ["web", "192.168.20.7", 8080, "ready"],
        ["web", "192.168.20.8", 8080, "ready"],
        ["web", "fd10::7", 8080, "ready"],
    ]
    assert [r[4] for r in log.rows] == ["listing_truncated"] and "1 more" in log.rows[0][5]
    slices, log = read(
        kubectl.parse_endpoint_listing,
        tabwrite(
            [
                ["NAMESPACE", "NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
                ["shop", "web-x7k2p", "IPv4", "8080", "192.168.20.7,192.168.20.8,192.168.20.9", "3d"],
                ["default", "gone-abcde", "IPv4", "<unset>", "<unset>", "1d"],
            ]
        ),
    )
    assert not log.rows
    assert slices[["slice", "address", "port", "ready"]].values.tolist() == [
        ["web-x7k2p", "192.168.20.7", 8080, "unknown"],
        ["web-x7k2p", "192.168.20.8", 8080, "unknown"],
        ["web-x7k2p", "192.168.20.9", 8080, "unknown"],
    ]
    objects, log = read(resources.parse_endpoint_resources, ENDPOINTS_YAML.split("\n"))
    assert not log.rows
    got = objects[["service", "slice", "address", "port", "port_name", "ready", "target", "target_node"]]
    assert got.values.tolist() == [
        ["web", "", "192.168.20.7", 8080, "http", "ready", "shop/web-1", "node-b"],
        ["web", "", "192.168.20.8", 8080, "http", "ready", "shop/web-2", "node-b"],
        ["web", "", "192.168.20.9", 8080, "http", "not_ready", "shop/web-3", "node-a"],
        ["web", "web-x7k2p", "192.168.20.7", 8080, "http", "ready", "shop/web-1", "node-b"],
        ["web", "web-x7k2p", "192.168.20.8", 8080, "http", "ready", "shop/web-2", "node-b"],
        ["web", "web-x7k2p", "192.168.20.9", 8080, "http", "not_ready", "shop/web-3", "node-a"],
    ]
    # the same backends in every form: the slice listing shows all, the Endpoints listing the ready ones
    assert set(slices.address) == set(objects.address)
    assert set(eps.address) - {"fd10::7"} == set(objects.loc[objects.ready == "ready", "address"])


ENDPOINTS_YAML = """apiVersion: v1
items:
- apiVersion: v1
  kind: Endpoints
  metadata: {name: web, namespace: shop}
  subsets:
  - addresses:
    - ip: 192.168.20.7
      nodeName: node-b
      targetRef: {kind: Pod, name: web-1, namespace: shop}
    - ip: 192.168.20.8
      nodeName: node-b
      targetRef: {kind: Pod, name: web-2, namespace: shop}
    notReadyAddresses:
    - ip: 192.168.20.9
      nodeName: node-a
      targetRef: {kind: Pod, name: web-3, namespace: shop}
    ports:
    - {name: http, port: 8080, protocol: TCP}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-x7k2p
    namespace: shop
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  endpoints:
  - addresses: [192.168.20.7]
    conditions: {ready: true, serving: true, terminating: false}
    nodeName: node-b
    targetRef: {kind: Pod, name: web-1, namespace: shop}
  - addresses: [192.168.20.8]
    conditions: {ready: true}
    nodeName: node-b
    targetRef: {kind: Pod, name: web-2, namespace: shop}
  - addresses: [192.168.20.9]
    conditions: {ready: false}
    nodeName: node-a
    targetRef: {kind: Pod, name: web-3, namespace: shop}
  ports:
  - {name: http, port: 8080, protocol: TCP}
kind: List
metadata: {resourceVersion: ""}
"""

NODES_YAML = """apiVersion: v1
kind: Node
metadata:
  name: node-a.example.internal
  annotations:
    projectcalico.org/IPv4Address: 172.18.0.2/16
    projectcalico.org/IPv4VXLANTunnelAddr: 192.168.10.0
spec:
  podCIDR: 192.168.10.0/24
  podCIDRs: [192.168.10.0/24]
status:
  addresses:
  - {type: InternalIP, address: 172.18.0.2}
  - {type: Hostname, address: node-a}
  conditions:
  - {type: Ready, status: "True"}
  nodeInfo: {kernelVersion: 6.8.0-45-generic, containerRuntimeVersion: "containerd://1.7.22"}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node-b
spec:
  bgp: {ipv4Address: 172.18.0.3/16, ipv4IPIPTunnelAddr: 192.168.20.1}
  ipv4VXLANTunnelAddr: 192.168.20.0
  wireguard: {interfaceIPv4Address: 192.168.20.2}
  addresses:
  - {address: 172.18.0.3, type: InternalIP}
"""


def test_nodes_and_workload_endpoints_in_every_form():
    listing = tabwrite(
        [
            ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"],
            ["node-a", "Ready", "control-plane", "9d", "v1.31.1", "172.18.0.2", "<none>", "Ubuntu 24.04.1 LTS", "6.8.0-45-generic", "containerd://1.7.22"],
            ["node-b", "NotReady", "<none>", "9d", "v1.31.1", "172.18.0.3", "<none>", "Ubuntu 24.04.1 LTS", "6.8.0-45-generic", "containerd://1.7.22"],
        ]
    )
    nodes, log = read(kubectl.parse_node_listing, listing)
    assert not log.rows
    assert nodes[["name", "status", "internal_ip", "kernel_version"]].values.tolist() == [
        ["node-a", "Ready", "172.18.0.2", "6.8.0-45-generic"],
        ["node-b", "NotReady", "172.18.0.3", "6.8.0-45-generic"],
    ]
    # calicoctl get nodes -o wide: the IPV6 cell of an IPv4-only node is empty
    calico, log = read(
        kubectl.parse_node_listing,
        tabwrite([["NAME", "ASN", "IPV4", "IPV6"], ["node-a", "(64512)", "172.18.0.2/16", ""]], minwidth=5),
    )
    assert not log.rows and calico[["kind", "calico_ip"]].values.tolist() == [["CalicoNode", "172.18.0.2/16"]]
    objects, log = read(resources.parse_node_resources, NODES_YAML.split("\n"))
    assert not log.rows
    assert objects[["kind", "name", "internal_ip", "calico_ip", "tunnel_ips", "status"]].values.tolist() == [
        ["Node", "node-a.example.internal", "172.18.0.2", "172.18.0.2/16", "192.168.10.0", "Ready"],
        ["CalicoNode", "node-b", "172.18.0.3", "172.18.0.3/16", "192.168.20.1 192.168.20.0 192.168.20.2", ""],
    ]
    weps, log = read(
        kubectl.parse_pod_listing,
        tabwrite(
            [
                ["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
                ["shop", "web-1", "node-b", "192.168.20.7/32,fd10::7/128", "cali0123456789a"],
            ],
            minwidth=5,
        ),
    )
    assert not log.rows
    assert weps[["namespace", "name", "ip", "pod_node", "interface"]].values.tolist() == [
        ["shop", "web-1", "192.168.20.7", "node-b", "cali0123456789a"],
        ["shop", "web-1", "fd10::7", "node-b", "cali0123456789a"],
    ]
    wep_yaml = (
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--b-k8s-web--1-eth0, namespace: shop}\n"
        "spec: {pod: web-1, node: node-b, interfaceName: cali0123456789a, ipNetworks: [192.168.20.7/32, fd10::7/128]}\n"
    )
    same, log = read(resources.parse_pod_resources, wep_yaml.split("\n"))
    assert not log.rows
    cols = ["namespace", "name", "ip", "pod_node", "interface"]
    assert same[cols].values.tolist() == weps[cols].values.tolist()


def test_calicoctl_pools_and_policies_listed():
    pools, log = read(
        kubectl.parse_pool_listing,
        tabwrite(
            [
                ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"],
                ["default-ipv4-ippool", "192.168.0.0/16", "true", "Never", "Always", "false", "false", "all()"],
            ],
            minwidth=5,
        ),
    )
    assert not log.rows
    assert pools[["cidr", "nat_outgoing", "ipip_mode", "vxlan_mode"]].values.tolist() == [
        ["192.168.0.0/16", True, "Never", "Always"]
    ]
    plain, log = read(kubectl.parse_pool_listing, tabwrite([["NAME", "CIDR", "SELECTOR"], ["p", "10.0.0.0/8", "all()"]], minwidth=5))
    assert not log.rows and (plain.ipip_mode.iloc[0], plain.vxlan_mode.iloc[0]) == ("", "")
    policies, log = read(
        kubectl.parse_policy_listing,
        tabwrite(
            [
                ["NAMESPACE", "NAME", "TIER", "ORDER", "SELECTOR"],
                ["secure", "default.db-allow-app", "default", "100", "app == 'db'"],
            ],
            minwidth=5,
        ),
    )
    k8s, log2 = read(
        kubectl.parse_policy_listing,
        tabwrite([["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"], ["quiet", "deny-all", "<none>", "2d"], ["default", "web", "app=web", "2d"]]),
    )
    assert not log.rows and not log2.rows
    assert policies[["namespace", "name", "order", "selector"]].values.tolist() == [
        ["secure", "default.db-allow-app", 100.0, "app == 'db'"]
    ]
    assert k8s[["kind", "selector"]].values.tolist() == [["KubernetesNetworkPolicy", "<none>"], ["KubernetesNetworkPolicy", "app=web"]]


def test_cut_lines_and_messages_in_a_listing_are_anomalies():
    lines = [
        *tabwrite(PODS_WIDE[:2]),
        "Error from server (Forbidden): pods is forbidden: User cannot list resource",
        "default   cut",
    ]
    df, log = read(kubectl.parse_pod_listing, lines)
    assert df.name.tolist() == ["client"] and [r[3] for r in log.rows] == ["line 3", "line 4"]


def test_resources_own_the_addresses_the_nodes_state_does_not_show():
    """Nodes' addresses (a node named by its FQDN goes to the bundle's short name) and running pods'
    addresses fill gaps; what the nodes' own interfaces say is never overridden; an address two
    resources give to different nodes is nobody's."""
    nodes, _ = read(resources.parse_node_resources, NODES_YAML.split("\n"))
    pods = conform(
        pd.DataFrame(
            [
                {"namespace": "shop", "name": "web-1", "status": "Running", "ip": "192.168.20.7", "pod_node": "node-b"},
                {"namespace": "shop", "name": "old", "status": "Succeeded", "ip": "192.168.20.9", "pod_node": "node-a"},
                {"namespace": "x", "name": "a", "status": "Running", "ip": "192.168.30.1", "pod_node": "node-a"},
                {"namespace": "x", "name": "b", "status": "Running", "ip": "192.168.30.1", "pod_node": "node-b"},
            ]
        ),
        "pods",
    )
    interfaces = conform(pd.DataFrame([{"node": "node-b", "name": "eth0", "ifindex": 2, "addresses": "172.18.0.2/16"}]), "interfaces")
    routes = conform(pd.DataFrame(), "routes")
    owners = address_owners(interfaces, routes, nodes, pods, ["node-a", "node-b"])
    assert owners["172.18.0.2"] == "node-b"  # the interface's claim stands
    assert owners["192.168.10.0"] == "node-a"  # node-a.example.internal, as the bundle names it
    assert owners["192.168.20.2"] == owners["192.168.20.7"] == owners["172.18.0.3"] == "node-b"
    assert "192.168.20.9" not in owners and "192.168.30.1" not in owners


FELIX_YAML = """apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: default
spec:
  vxlanMTU: {mtu}
  chainInsertMode: Append
  logSeverityScreen: Info
"""


def test_configured_mtu_checked_against_the_device_and_the_host(tmp_path):
    """The VXLAN sample's vxlan.calico has MTU 1450 on a 1500 uplink: a FelixConfiguration saying 1450
    raises nothing; one saying 1500 leaves no room for VXLAN's 50 bytes and is not what the device has."""
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    (root / "cluster" / "crd").mkdir(parents=True, exist_ok=True)
    said = {}
    for mtu in (1450, 1500):
        (root / "cluster" / "crd" / "felixconfigurations.crd.projectcalico.org.yaml").write_text(FELIX_YAML.format(mtu=mtu))
        with calforensics.open_bundle(root) as b:
            dp = b.dataplane.set_index("node")
            assert dp.loc["node-a", "mtu_configured"] == f"vxlanMTU={mtu}" and dp.loc["node-a", "chain_insert_mode"] == "Append"
            issues = calforensics.analyze(b).mtu_issues
            said[mtu] = sorted(issues.loc[issues.kind.str.startswith("configured_"), ["kind", "node"]].itertuples(index=False, name=None))
    assert said[1450] == []
    assert said[1500] == [
        ("configured_mtu_not_applied", "node-a"),
        ("configured_mtu_not_applied", "node-b"),
        ("configured_mtu_too_large", "node-a"),
        ("configured_mtu_too_large", "node-b"),
    ]


def test_a_bundle_reads_listings_of_every_kind(tmp_path):
    """A flat folder of saved listings: each file is `kube_listing`, its form the commands it holds,
    and each table fed."""
    (tmp_path / "pods.txt").write_text("\n".join(tabwrite(PODS_WIDE)) + "\n")
    (tmp_path / "ippools.txt").write_text(
        "\n".join(tabwrite([["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"], ["p", "192.168.0.0/16", "true", "Never", "Always", "false", "false", "all()"]], minwidth=5))
    )
    (tmp_path / "endpoints.txt").write_text("\n".join(tabwrite([["NAME", "ENDPOINTS", "AGE"], ["web", "192.168.20.7:8080", "3d"]])))
    with calforensics.open_bundle(tmp_path) as b:
        b.load_text_tables()
        arts = b.artifacts.set_index("path")
        assert set(arts.kind) == {"kube_listing"} and set(arts.status) == {"parsed"}
        assert arts.loc["ippools.txt", "form"] == "calicoctl get ippools -o wide"
        assert arts.loc["pods.txt", "form"] == "kubectl get pods -o wide"
        assert (len(b.pods), len(b.ip_pools), len(b.endpoints)) == (3, 1, 1)
        assert len(b.anomalies) == 0


def test_a_per_node_felix_configuration_speaks_for_its_node(tmp_path):
    """FelixConfiguration `default` sets vxlanMTU for every node, `node.node-b` its own; node-b's
    calico-node environment (FELIX_CHAININSERTMODE in its description) outranks both, as in Felix."""
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    (root / "cluster" / "crd").mkdir(parents=True, exist_ok=True)
    (root / "cluster" / "crd" / "felixconfigurations.crd.projectcalico.org.yaml").write_text(
        "apiVersion: v1\nitems:\n"
        "- apiVersion: crd.projectcalico.org/v1\n  kind: FelixConfiguration\n  metadata:\n    name: default\n"
        "  spec:\n    vxlanMTU: 1450\n    chainInsertMode: Insert\n"
        "- apiVersion: crd.projectcalico.org/v1\n  kind: FelixConfiguration\n  metadata:\n    name: node.node-b\n"
        "  spec:\n    vxlanMTU: 1400\n    chainInsertMode: Append\n"
        "kind: List\nmetadata:\n  resourceVersion: ''\n"
    )
    (root / "nodes" / "node-b" / "calico-system").mkdir(parents=True)
    (root / "nodes" / "node-b" / "calico-system" / "calico-node-x7k2p.txt").write_text(
        "Name:             calico-node-x7k2p\nNamespace:        calico-system\nContainers:\n  calico-node:\n"
        "    Environment:\n      FELIX_CHAININSERTMODE:              Insert\n"
    )
    with calforensics.open_bundle(root) as b:
        dp = b.dataplane.set_index("node")
        assert dp.loc["node-a", ["mtu_configured", "chain_insert_mode"]].tolist() == ["vxlanMTU=1450", "Insert"]
        assert dp.loc["node-b", ["mtu_configured", "chain_insert_mode"]].tolist() == ["vxlanMTU=1400", "Insert"]
        issues = calforensics.analyze(b).mtu_issues
        # node-b's vxlan.calico has 1450, not the 1400 its own configuration says
        assert issues.loc[issues.kind == "configured_mtu_not_applied", "node"].tolist() == ["node-b"]


def test_without_a_tunnel_device_the_configured_mtu_judges_the_packets(tmp_path):
    """The VXLAN sample's mtu-bad pod sends DF datagrams of 1500 bytes into the 1450-byte overlay. With
    node-a's interface dumps taken away the overlay's MTU is unknown and nothing is said; a saved
    FelixConfiguration's vxlanMTU for the pool's VXLAN gives it back, and the finding says so."""
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    for name in ("ip-link.txt", "ip-addr.txt"):
        (root / "nodes" / "node-a" / name).unlink()
    said = {}
    for case in ("bare", "configured"):
        if case == "configured":
            (root / "cluster" / "crd").mkdir(parents=True, exist_ok=True)
            (root / "cluster" / "crd" / "felixconfigurations.yaml").write_text(FELIX_YAML.format(mtu=1450))
            (root / "cluster" / "crd" / "ippools.yaml").write_text(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
                "spec: {cidr: 192.168.0.0/16, vxlanMode: Always, ipipMode: Never, natOutgoing: true}\n"
            )
        with calforensics.open_bundle(root) as b:
            issues = calforensics.analyze(b).mtu_issues
            said[case] = issues[(issues.kind == "exceeds_tunnel_mtu") & (issues.node == "node-a")].detail.tolist()
    assert said["bare"] == []
    assert len(said["configured"]) == 1 and "tunnel MTU 1450 on node-a (configured vxlanMTU" in said["configured"][0]


def test_the_configured_dataplane_where_no_state_says_it(tmp_path):
    """A node whose bundle holds captures but no rules or BPF dumps is of unknown dataplane; a
    FelixConfiguration with bpfEnabled names it eBPF (and says it was configured); on a node whose
    rules show iptables, the same configuration is noted as disagreeing."""
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    for f in (root / "nodes" / "node-a").glob("*tables*save.txt"):
        f.unlink()
    (root / "nodes" / "node-a" / "nft-ruleset.txt").unlink()
    with calforensics.open_bundle(root) as b:
        assert b.dataplane.set_index("node").loc["node-a", "mode"] == "unknown"
    (root / "cluster" / "crd").mkdir(parents=True, exist_ok=True)
    (root / "cluster" / "crd" / "felixconfigurations.yaml").write_text(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  bpfEnabled: true\n"
    )
    with calforensics.open_bundle(root) as b:
        dp = b.dataplane.set_index("node")
        assert dp.loc["node-a", "mode"] == "ebpf" and "configured: bpfEnabled: true in" in dp.loc["node-a", "evidence"]
        assert dp.loc["node-b", "mode"] == "iptables" and "but configured ebpf" in dp.loc["node-b", "evidence"]
