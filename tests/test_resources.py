"""Kubernetes resources as `kubectl get … -o yaml` and `-o json` save them: pods and services read
into the tables their listings feed, with what only the full objects carry (every pod address, the
services' port names), read safely (no aliases, bounded nesting), and used: an eBPF bundle's
services named as kube-proxy names them."""

from __future__ import annotations

import json
import shutil
import tarfile

from conftest import SAMPLES
from groundtruth import flow_for

import calforensics
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers.resources import parse_pod_resources, parse_service_resources

SERVICES_YAML = """apiVersion: v1
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: default
  spec:
    clusterIP: 10.96.0.50
    clusterIPs:
    - 10.96.0.50
    ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
    selector:
      app: web
    type: ClusterIP
  status:
    loadBalancer: {}
- apiVersion: v1
  kind: Service
  metadata:
    name: front
    namespace: shop
  spec:
    clusterIP: 10.96.7.7
    externalIPs:
    - 198.51.100.7
    ports:
    - name: http
      nodePort: 31080
      port: 80
      protocol: TCP
    type: LoadBalancer
  status:
    loadBalancer:
      ingress:
      - ip: 203.0.113.9
- apiVersion: v1
  kind: Pod
  metadata:
    name: client
    namespace: default
  spec:
    nodeName: node-a
  status:
    phase: Running
    podIP: 192.168.10.5
    podIPs:
    - ip: 192.168.10.5
    - ip: fd10::a05
kind: List
metadata:
  resourceVersion: ""
"""


def parse(fn, text: str):
    log = AnomalyLog("resources", "f")
    return fn(text.split("\n"), log, "", "f"), log


def test_pods_and_services_from_yaml_and_json():
    services, log = parse(parse_service_resources, SERVICES_YAML)
    assert not log.rows
    got = list(zip(services.namespace, services.name, services.cluster_ip, services.port, services.port_name,
                   services.node_port, services.external_ip, strict=True))
    assert got == [
        ("default", "web", "10.96.0.50", 80, "http", -1, ""),
        ("shop", "front", "10.96.7.7", 80, "http", 31080, "198.51.100.7,203.0.113.9"),
    ]
    pods, log = parse(parse_pod_resources, SERVICES_YAML)
    assert not log.rows and pods[["ip", "pod_node", "interface"]].values.tolist() == [
        ["192.168.10.5", "node-a", "calia7a3e029a7b"],
        ["fd10::a05", "node-a", "calia7a3e029a7b"],
    ]
    import yaml

    as_json = json.dumps(yaml.safe_load(SERVICES_YAML), indent=2)  # `-o json` of the same objects
    assert parse(parse_service_resources, as_json)[0].equals(services)
    assert parse(parse_pod_resources, as_json)[0].equals(pods)


def test_unsafe_documents_are_refused_with_an_anomaly():
    laughs = "a: &a ['x','x']\nb: &b [*a,*a]\nc: &c [*b,*b]\nkind: Service\napiVersion: v1\n"
    deep = "apiVersion: v1\nkind: Pod\nspec: " + "[" * 300 + "]" * 300 + "\n"
    tagged = "apiVersion: v1\nkind: Pod\nspec: !!python/object/apply:os.system ['true']\n"
    for text, said in ((laughs, "aliases"), (deep, "deeper"), (tagged, "")):
        df, log = parse(parse_pod_resources, text)
        assert len(df) == 0 and [r[4] for r in log.rows] == ["bad_document"], text[:40]
        assert said in log.rows[0][5]


def test_an_ebpf_bundles_services_named_as_kube_proxy_names_them(tmp_path):
    """The eBPF sample with `kubectl get services -o yaml` in place of its listing: the UDP flow's BPF
    NAT frontend is named by the service port's name, `default/echo:udp`, not its number."""
    with tarfile.open(SAMPLES / "lab-ebpf.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-ebpf"
    (root / "cluster" / "kubernetes" / "services.txt").unlink()
    (root / "cluster" / "kubernetes" / "services.yaml").write_text(
        SERVICES_YAML.replace("name: front", "name: echo").replace("namespace: shop", "namespace: default")
        .replace("clusterIP: 10.96.7.7", "clusterIP: 10.96.0.60")
        .replace("- name: http\n      nodePort: 31080\n      port: 80\n      protocol: TCP", "- name: udp\n      port: 9000\n      protocol: UDP")
    )
    truth = json.loads((SAMPLES / "lab-ebpf.ground_truth.json").read_text())
    gt = next(f for f in truth["flows"] if f["name"] == "udp")
    with calforensics.open_bundle(root) as b:
        kinds = dict(zip(b.artifacts.path, b.artifacts.kind.astype(str), strict=True))
        assert kinds["cluster/kubernetes/services.yaml"] == "kube_resources"
        f = flow_for(b, gt)
        assert (f.service, str(f.service_via)) == ("default/echo:udp", "bpf-nat")
        assert b.services.set_index("name").loc["web", "port_name"] == "http"
    shutil.rmtree(tmp_path)


POLICIES_YAML = """apiVersion: v1
items:
- apiVersion: projectcalico.org/v3
  kind: NetworkPolicy
  metadata:
    name: default.db-allow-app
    namespace: secure
  spec:
    tier: default
    order: 100
    selector: app == 'db'
    types:
    - Ingress
    ingress:
    - action: Allow
      protocol: TCP
      source:
        nets:
        - 192.168.20.99/32
      destination:
        ports:
        - 5432
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata:
    name: web-from-client
    namespace: default
  spec:
    podSelector:
      matchLabels:
        app: web
    policyTypes:
    - Ingress
    ingress:
    - from:
      - podSelector:
          matchLabels:
            app: client
      ports:
      - port: 8080
        protocol: TCP
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata:
    name: deny-all
    namespace: quiet
  spec:
    podSelector: {}
    policyTypes:
    - Ingress
kind: List
metadata:
  resourceVersion: ""
"""


def test_network_policies_and_the_drop_that_quotes_them(tmp_path):
    """Calico and Kubernetes network policies read into one table, a line per rule; the VXLAN sample's
    policy drop quotes the policy its end-of-tier rule names: what it selects and that no rule allowed."""
    from calforensics.ingest.parsers.resources import parse_policy_resources

    df, log = parse(parse_policy_resources, POLICIES_YAML)
    assert not log.rows
    got = {r.name: (r.kind, r.namespace, r.selector, r.ingress) for r in df.itertuples()}
    assert got == {
        "default.db-allow-app": ("NetworkPolicy", "secure", "app == 'db'", "allow tcp from nets 192.168.20.99/32 to ports 5432"),
        "web-from-client": ("KubernetesNetworkPolicy", "default", "app == 'web'", "allow from pods app == 'client' on TCP/8080"),
        "deny-all": ("KubernetesNetworkPolicy", "quiet", "all()", "no rule: denies all"),
    }
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    (root / "cluster" / "kubernetes").mkdir(parents=True, exist_ok=True)
    (root / "cluster" / "kubernetes" / "networkpolicies.yaml").write_text(POLICIES_YAML)
    truth = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
    gt = next(f for f in truth["flows"] if f["name"] == "denied")
    with calforensics.open_bundle(root) as b:
        d = calforensics.analyze(b).drops.set_index("flow_id").loc[int(flow_for(b, gt).flow_id)]
        quoted = [e["detail"] for e in d.evidence if e["kind"] == "policy"]
        assert quoted == [
            "NetworkPolicy secure/default.db-allow-app (tier default) selects app == 'db': none of its rules allowed "
            "the packet; ingress: allow tcp from nets 192.168.20.99/32 to ports 5432; egress: no egress rules"
        ]


POOLS_YAML = """apiVersion: v1
items:
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    name: default-ipv4-ippool
  spec:
    blockSize: 26
    cidr: 192.168.0.0/16
    ipipMode: {ipip}
    natOutgoing: true
    nodeSelector: all()
    vxlanMode: {vxlan}
kind: List
metadata:
  resourceVersion: ""
"""


def test_ip_pool_encapsulation_checked_against_the_captures(tmp_path):
    """The VXLAN sample's pods cross nodes in VXLAN: a pool that says so raises nothing; one that says
    IPIP Always, or no encapsulation, is told apart from what the captures show; CrossSubnet is not judged."""
    from calforensics.ingest.parsers.resources import parse_pool_resources

    pools, log = parse(parse_pool_resources, POOLS_YAML.format(ipip="Never", vxlan="Always"))
    assert not log.rows and pools[["cidr", "ipip_mode", "vxlan_mode", "nat_outgoing"]].values.tolist() == [
        ["192.168.0.0/16", "Never", "Always", True]
    ]
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    (root / "cluster" / "crd").mkdir(parents=True, exist_ok=True)
    pool_file = root / "cluster" / "crd" / "ippools.crd.projectcalico.org.yaml"
    said = {}
    for ipip, vxlan in (("Never", "Always"), ("Always", "Never"), ("Never", "Never"), ("Never", "CrossSubnet")):
        pool_file.write_text(POOLS_YAML.format(ipip=ipip, vxlan=vxlan))
        with calforensics.open_bundle(root) as b:
            a = calforensics.analyze(b)
            said[(ipip, vxlan)] = [h["title"] for h in a.findings["findings"] if h["kind"] == "ip_pool_encapsulation"]
    assert said[("Never", "Always")] == said[("Never", "CrossSubnet")] == []
    assert len(said[("Always", "Never")]) == 1 and "ipipMode Always" in said[("Always", "Never")][0]
    assert "in vxlan" in said[("Always", "Never")][0] and "in vxlan" in said[("Never", "Never")][0]
