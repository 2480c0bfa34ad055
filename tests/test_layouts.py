"""Bundle layouts other tools leave: Calico Enterprise/Cloud PacketCapture files as `calicoctl
captured-packets copy` brings them back (`<workload endpoint>_<interface>.pcap`, flat, no node), files
copied out of a `kubectl debug node/<node>` pod (its pod is node-debugger-<node>-<5 characters>, the
host's files under /host), and a node's crictl outputs (`crictl pods`, `crictl inspectp`).

The VXLAN sample re-laid out in those shapes gives the same capture points and the same flows as the
collector's own layout."""

from __future__ import annotations

import json
import shutil
import tarfile

from conftest import SAMPLES

import calforensics
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.layout import packet_capture_file, workload_endpoint_node
from calforensics.ingest.parsers.crictl import parse_crictl_inspect
from calforensics.ingest.parsers.kubectl import calico_interface

PACKET_CAPTURE = """apiVersion: projectcalico.org/v3
kind: PacketCapture
metadata: {{name: incident, namespace: default}}
spec: {{selector: all()}}
status:
  files:
  - directory: /var/log/calico/pcap/default/incident
    fileNames: [mtu-bad_{iface}.pcap]
    node: node-a
    state: Finished
"""

CRICTL_PODS = """POD ID              CREATED          STATE   NAME   NAMESPACE   ATTEMPT   RUNTIME
7f3c2a1b9d8e4       12 minutes ago   Ready   web    default     0         (default)
"""


def crictl_inspectp(name: str, namespace: str, ip: str) -> str:
    """One pod sandbox as `crictl inspectp` prints it (-o json, its default): the CRI status and info."""
    status = {
        "id": "9e1d" + "0" * 60,
        "metadata": {"attempt": 0, "name": name, "namespace": namespace, "uid": "b4c1"},
        "state": "SANDBOX_READY",
        "createdAt": "2026-12-08T03:00:00.000000000Z",
        "network": {"additionalIps": [], "ip": ip},
        "linux": {"namespaces": {"options": {"ipc": "POD", "network": "POD", "pid": "CONTAINER"}}},
        "labels": {"io.kubernetes.pod.name": name},
    }
    return json.dumps({"status": status, "info": {"pid": 4242, "runtimeSpec": {}}}, indent=2) + "\n"


def test_names_of_packet_capture_files_and_workload_endpoints():
    assert packet_capture_file("x/web-1_cali0123456789a.pcap") == ("web-1", "cali0123456789a")
    assert packet_capture_file("node--a-k8s-web--1-eth0_eni0123456789a-1700000000.pcap")[1] == "eni0123456789a"
    assert packet_capture_file("eth0.pcap") is None and packet_capture_file("my_capture.pcap") is None
    assert workload_endpoint_node("node--a-k8s-web--1-eth0") == "node-a"
    assert workload_endpoint_node("ip--10--0--0--5.ec2.internal-k8s-db-eth0") == "ip-10-0-0-5.ec2.internal"
    assert workload_endpoint_node("web-1") == ""


def test_crictl_inspectp_in_its_forms():
    both = crictl_inspectp("web", "default", "192.168.20.7") + crictl_inspectp("db", "secure", "192.168.20.9")
    log = AnomalyLog("crictl", "f")
    pods = parse_crictl_inspect(both.split("\n"), log, "node-b", "f")
    assert not log.rows
    assert pods[["namespace", "name", "status", "ip", "pod_node"]].values.tolist() == [
        ["default", "web", "Ready", "192.168.20.7", "node-b"],
        ["secure", "db", "Ready", "192.168.20.9", "node-b"],
    ]
    table = "ID: 9e1d00\nName: web\nUID: b4c1\nNamespace: default\nAttempt: 0\nStatus: SANDBOX_READY\n"
    table += "Created: 2026-12-08 03:00:00 +0000 UTC\nIP Address: 192.168.20.7\nLabels:\n\tapp -> web\n"
    again = parse_crictl_inspect(table.split("\n"), log, "node-b", "f")
    assert again[["name", "ip", "interface"]].values.tolist() == [["web", "192.168.20.7", calico_interface("default", "web")]]
    cut = parse_crictl_inspect((both[: len(both) // 2 + 40]).split("\n"), log, "node-b", "f")
    assert len(cut) == 1 and [r[4] for r in log.rows] == ["bad_json"]


def relaid(tmp_path, placed: bool):
    """The VXLAN sample with its workload captures as PacketCapture files in one flat folder and node-a's
    uplink capture copied out of a node debugger pod; ``placed``: with what names their nodes."""
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    nodes = root / "nodes"
    captured = root / "captured"
    captured.mkdir()
    ifaces = {pod: calico_interface(ns, pod) for ns, pod in [("default", "client"), ("default", "mtu-bad"), ("default", "web"), ("secure", "db")]}
    moves = {
        ("node-a", ifaces["client"]): captured / f"node--a-k8s-client-eth0_{ifaces['client']}.pcap",
        ("node-a", ifaces["mtu-bad"]): captured / f"mtu-bad_{ifaces['mtu-bad']}.pcap",
        ("node-b", ifaces["web"]): captured / f"web_{ifaces['web']}.pcap",
        ("node-b", ifaces["db"]): captured / f"db_{ifaces['db']}-1765162800.pcap",  # a rotated file
        ("node-a", "eth0"): root / "node-debugger-node-a-x7k2p" / "host" / "tmp" / "eth0.pcap",
    }
    for (node, iface), target in moves.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(nodes / node / "pcaps" / f"{iface}.pcap", target)
    if placed:
        (captured / "packetcapture.yaml").write_text(PACKET_CAPTURE.format(iface=ifaces["mtu-bad"]))
        (nodes / "node-b" / "crictl-pods.txt").write_text(CRICTL_PODS)
        (nodes / "node-b" / "crictl-inspectp.json").write_text(crictl_inspectp("db", "secure", "192.168.20.9"))
    return root


def answers(path):
    with calforensics.open_bundle(path) as b:
        caps = sorted(zip(b.captures.node.astype(str), b.captures.interface.astype(str), b.captures.role.astype(str), strict=True))
        flows = sorted(
            zip(b.flows.proto, b.flows.client_ip, b.flows.server_ip, b.flows.server_port, b.flows.verdict, strict=True)
        )
        anomalies = b.anomalies
        forms = dict(zip(b.artifacts.path, b.artifacts.form, strict=True))
    return caps, flows, anomalies, forms


def test_packet_capture_debugger_and_crictl_layouts_give_the_same_answer(tmp_path):
    base_caps, base_flows, _, _ = answers(SAMPLES / "lab-vxlan.tgz")
    caps, flows, anomalies, forms = answers(relaid(tmp_path / "placed", placed=True))
    assert caps == base_caps and flows == base_flows
    assert "node_unknown" not in set(anomalies.kind)
    assert sum(f == "pcap (Calico PacketCapture)" for f in forms.values()) == 4
    # without the PacketCapture status and the node's crictl outputs, the pod-named files' nodes are
    # not known: each says so, and is read as the folder's
    caps, _, anomalies, _ = answers(relaid(tmp_path / "bare", placed=False))
    unknown = anomalies[anomalies.kind == "node_unknown"]
    assert len(unknown) == 3 and {n for n, _, _ in caps} == {"node-a", "node-b", "captured"}


def test_every_file_cluster_diags_writes_is_known(tmp_path):
    """`calicoctl cluster diags` as calicoctl/commands/cluster/diags.go writes it: `kubectl get … -o wide`
    and `-o yaml` of the cluster's resources and Calico's CRDs, `kubectl get all` of calico-system,
    `kubectl version -o yaml`, per node the dataplane dumps, CNI logs and each Calico pod's log and
    description. Every file is recognised (read, or known and listed as `other`), none `unrecognised`,
    and the listings feed their tables."""
    from test_kube_listings import ENDPOINTS_YAML, NODES_YAML, PODS_WIDE, tabwrite

    root = tmp_path / "calico-diagnostics-20261208_030000"
    files = {
        "cluster/version.yaml": "clientVersion:\n  gitVersion: v1.31.1\nserverVersion:\n  gitVersion: v1.31.1\n",
        "cluster/kubernetes/pods.txt": "\n".join(tabwrite(PODS_WIDE)) + "\n",
        "cluster/kubernetes/endpoints.yaml": ENDPOINTS_YAML,
        "cluster/kubernetes/endpoints.txt": "\n".join(
            tabwrite([["NAMESPACE", "NAME", "ENDPOINTS", "AGE"], ["shop", "web", "192.168.20.7:8080,192.168.20.8:8080", "3d"]])
        ),
        "cluster/kubernetes/nodes.yaml": NODES_YAML,
        "cluster/kubernetes/namespaces.txt": "\n".join(tabwrite([["NAME", "STATUS", "AGE"], ["shop", "Active", "9d"]])),
        "cluster/kubernetes/deployments.txt": "\n".join(
            tabwrite([["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["shop", "web", "2/2", "2", "2", "3d"]])
        ),
        "cluster/crd/ippools.crd.projectcalico.org.txt": "\n".join(
            tabwrite([["NAME", "CREATED AT"], ["default-ipv4-ippool", "2026-12-01T10:00:00Z"]])
        ),
        "cluster/calico-system/calico-system.txt": "\n\n".join(
            "\n".join(tabwrite(table))
            for table in (
                [
                    ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
                    ["pod/calico-node-x7k2p", "1/1", "Running", "0", "9d", "172.18.0.2", "node-a", "<none>", "<none>"],
                ],
                [
                    ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"],
                    ["service/calico-typha", "ClusterIP", "10.96.0.88", "<none>", "5473/TCP", "9d", "k8s-app=calico-typha"],
                ],
                [
                    ["NAME", "DESIRED", "CURRENT", "READY", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES"],
                    ["daemonset.apps/calico-node", "2", "2", "2", "2", "9d", "calico-node", "docker.io/calico/node:v3.30.2"],
                ],
            )
        ),
        "nodes/node-a/calico-system/calico-node-x7k2p.log": "2026-12-08 03:00:00.000 [INFO][1] felix/int_dataplane.go 1: ready\n",
        "nodes/node-a/calico-cni.log": "2026-12-08 03:00:00.000 [INFO][1] cni-plugin/plugin.go 100: Calico CNI ADD\n",
        "nodes/node-a/ip-rule.txt": "0:\tfrom all lookup local\n",
        "nodes/node-a/bpf-ipsets.txt": "IP set 0x1234\n  10.0.0.1/32\n",
        "nodes/node-a/tc-qdisc.txt": "qdisc noqueue 0: dev lo root refcnt 2\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with calforensics.open_bundle(root) as b:
        b.load_text_tables()
        kinds = dict(zip(b.artifacts.path, b.artifacts.kind.astype(str), strict=True))
        assert "unrecognised" not in kinds.values(), kinds
        assert kinds["cluster/calico-system/calico-system.txt"] == "kube_listing"
        assert "calico-node-x7k2p" in set(b.pods.name) and "calico-typha" in set(b.services.name)
        assert set(b.endpoints.address) == {"192.168.20.7", "192.168.20.8", "192.168.20.9"}
        assert set(b.cluster_nodes.name) == {"node-a.example.internal", "node-b"}
        # the release from calico-node's image in `kubectl get all -o wide`
        assert b.dataplane.set_index("node").loc["node-a", "calico_version"] == "v3.30.2"


def test_a_flat_folder_of_one_nodes_command_outputs(tmp_path):
    """One node's files saved side by side, each named by the command that printed it, no node folder:
    the node is what its `hostname` file says (else the folder's name), and its state reads as in the
    collector's layout."""
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    node_a = tmp_path / "lab-vxlan" / "nodes" / "node-a"
    flat = tmp_path / "incident-1234"
    flat.mkdir()
    names = {
        "iptables-nft-save.txt": "iptables-save_-c",
        "ip-route.txt": "ip_route_show_table_all",
        "ip-link.txt": "ip_-d_link",
        "ip-addr.txt": "ip_addr",
        "conntrack-list.txt": "conntrack_-L_-o_extended",
        "sysctls.txt": "sysctl_-a",
    }
    for src, dst in names.items():
        shutil.copy(node_a / src, flat / dst)
    for pcap in (node_a / "pcaps").iterdir():
        shutil.copy(pcap, flat / pcap.name)
    with calforensics.open_bundle(tmp_path / "lab-vxlan") as b:
        want_caps = sorted(b.captures.loc[b.captures.node == "node-a", "interface"].astype(str))
        mine = b.rules[(b.rules.node == "node-a") & (b.rules.backend.astype(str) == "nft")]
        want_rules = len(mine[mine.source.astype(str) != "nft"])
        want_mode = b.dataplane.set_index("node").loc["node-a", "mode"]
    for hostname, node in (("", "incident-1234"), ("node-a\n", "node-a")):
        if hostname:
            (flat / "hostname").write_text(hostname)
        with calforensics.open_bundle(flat) as b:
            assert b.nodes == [node]
            assert sorted(b.captures.interface.astype(str)) == want_caps
            assert len(b.rules) == want_rules and b.dataplane["mode"].tolist() == [want_mode]
            assert "unrecognised" not in set(b.artifacts.kind.astype(str))
