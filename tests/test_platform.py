"""Which Calico release and kube-proxy mode ran, read from every form a bundle states them in, and
the eBPF capture semantics that follow: peer redirect exists from v3.29 (host endpoints' L2
devices), reaches local workloads from v3.31 and L3 devices from v3.32, and never hides a packet
an ICMP error says was lost."""

from __future__ import annotations

import tarfile

import dpkt
import pytest
from conftest import SAMPLES
from pktutil import eth, ip4, udp4, write_pcap

import calforensics
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers.platform import parse_platform_evidence
from calforensics.meaning.platform import VersionReading, arrival, peer_redirect_reach

CLUSTER_INFO_YAML = """apiVersion: v1
items:
- apiVersion: crd.projectcalico.org/v1
  kind: ClusterInformation
  metadata:
    name: default
  spec:
    calicoVersion: {version}
    clusterType: k8s,bgp,kubeadm,kdd
    datastoreReady: true
kind: List
metadata:
  resourceVersion: ""
"""


def evidence(text: str):
    log = AnomalyLog("platform", "f")
    df = parse_platform_evidence(text.split("\n"), log, "", "f")
    return [(str(r.kind), str(r.said_by), str(r.value)) for r in df.itertuples()], log


@pytest.mark.parametrize(
    "text, expected",
    [
        (CLUSTER_INFO_YAML.format(version="v3.28.2"), ("calico_version", "ClusterInformation calicoVersion", "v3.28.2")),
        (  # `kubectl get clusterinformations -o json`
            '{"items": [{"kind": "ClusterInformation", "spec": {"calicoVersion": "v3.30.1", "datastoreReady": true}}]}',
            ("calico_version", "ClusterInformation calicoVersion", "v3.30.1"),
        ),
        (  # `kubectl describe pod calico-node-…`
            "Containers:\n  calico-node:\n    Container ID:   containerd://4f1c\n"
            "    Image:          docker.io/calico/node:v3.29.3\n    Image ID:       docker.io/calico/node@sha256:9a",
            ("calico_version", "calico/node image", "v3.29.3"),
        ),
        (  # pods / daemonsets -o yaml
            "    spec:\n      containers:\n      - env:\n        image: quay.io/calico/node:v3.31.0\n",
            ("calico_version", "calico/node image", "v3.31.0"),
        ),
        (  # Felix's first log line (logrus text, fields sorted)
            '2026-12-01 09:00:01.234 [INFO][52] felix/daemon.go 366: Felix starting up GOMAXPROCS=4 '
            'builddate="2025-11-02T10:00:00+0000" gitcommit="0a1b2c3d" version="v3.28.1"',
            ("calico_version", "Felix starting up", "v3.28.1"),
        ),
        ("Client Version:    v3.30.0\nCluster Calico Version:  v3.30.2\n", ("calico_version", "calicoctl version", "v3.30.2")),
        ("  spec:\n    bpfEnabled: true\n    bpfRedirectToPeer: L2Only\n", ("felix_setting", "bpfRedirectToPeer", "L2Only")),
        ('{"spec": {\n  "bpfRedirectToPeer": "Disabled",\n  "bpfEnabled": true\n}}', ("felix_setting", "bpfRedirectToPeer", "Disabled")),
        (  # `kubectl describe` environment
            "    Environment:\n      FELIX_BPFREDIRECTTOPEER:           Enabled\n",
            ("felix_setting", "bpfRedirectToPeer", "Enabled"),
        ),
        (  # a pod spec's env list
            "        - name: FELIX_BPFREDIRECTTOPEER\n          value: Disabled\n",
            ("felix_setting", "bpfRedirectToPeer", "Disabled"),
        ),
        (  # the kube-proxy ConfigMap, -o yaml
            "  data:\n    config.conf: |-\n      apiVersion: kubeproxy.config.k8s.io/v1alpha1\n      kind: "
            'KubeProxyConfiguration\n      mode: "ipvs"\n',
            ("kube_proxy_mode", "KubeProxyConfiguration mode", "ipvs"),
        ),
        (  # -o json: the configuration is one escaped string
            '"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\\nkind: KubeProxyConfiguration\\nmode: '
            'nftables\\nnodePortAddresses: null\\n"',
            ("kube_proxy_mode", "KubeProxyConfiguration mode", "nftables"),
        ),
        (  # an empty mode is iptables on Linux
            "      kind: KubeProxyConfiguration\n      mode: \"\"\n",
            ("kube_proxy_mode", "KubeProxyConfiguration mode", "iptables"),
        ),
        ('I1221 03:23:16.189324       1 server_linux.go:132] "Using iptables Proxier"', ("kube_proxy_mode", "kube-proxy log", "iptables")),
        ("I0914 12:02:35.508769    2373 server.go:202] Using ipvs Proxier.", ("kube_proxy_mode", "kube-proxy log", "ipvs")),
    ],
)
def test_platform_evidence_in_every_form(text, expected):
    rows, log = evidence(text)
    assert [r for r in rows if r[1] != "bpfEnabled"] == [expected] and not log.rows


def test_what_is_not_a_calico_release_is_not_read():
    rows, _ = evidence(
        # Calico Enterprise numbers its releases apart from Calico Open Source
        '2026-12-01 09:00:01.234 [INFO][52] felix/daemon.go 366: Felix starting up GOMAXPROCS=4 builddate="x" '
        'gitcommit="y" release="CNX" version="v3.20.1"\n'
        "    Image:          quay.io/tigera/cnx-node:v3.20.1\n"
        "    image: docker.io/calico/node-driver-registrar:v3.28.0\n"
        "  mode: ipvs\n"  # a `mode:` outside a KubeProxyConfiguration
    )
    assert rows == []


def test_version_reads_per_node_and_says_where(tmp_path):
    """A node's own statement (its calico-node description) wins over the cluster's; the dataplane
    table and inspect say which release, from which file and line."""
    (tmp_path / "cluster" / "crd").mkdir(parents=True)
    (tmp_path / "cluster" / "crd" / "clusterinformations.crd.projectcalico.org.yaml").write_text(
        CLUSTER_INFO_YAML.format(version="v3.30.0")
    )
    for node in ("node-a", "node-b"):
        (tmp_path / "nodes" / node).mkdir(parents=True)
        (tmp_path / "nodes" / node / "ip-route.txt").write_text("10.0.0.0/24 dev eth0 scope link\n")
    (tmp_path / "nodes" / "node-b" / "calico-system").mkdir()
    (tmp_path / "nodes" / "node-b" / "calico-system" / "calico-node-x7k2p.txt").write_text(
        "Name:             calico-node-x7k2p\nNamespace:        calico-system\nContainers:\n  calico-node:\n"
        "    Image:          docker.io/calico/node:v3.28.1\n"
    )
    with calforensics.open_bundle(tmp_path) as b:
        dp = b.dataplane.set_index("node")
        assert dp.loc["node-a", "calico_version"] == "v3.30.0"
        assert "clusterinformations.crd.projectcalico.org.yaml:8" in dp.loc["node-a", "calico_version_from"]
        assert dp.loc["node-b", "calico_version"] == "v3.28.1"
        assert "calico-node-x7k2p.txt:5" in dp.loc["node-b", "calico_version_from"]
        kinds = dict(zip(b.artifacts.path.str.rsplit("/", n=1).str[-1], b.artifacts.kind.astype(str), strict=True))
        assert kinds["calico-node-x7k2p.txt"] == "platform" and kinds["clusterinformations.crd.projectcalico.org.yaml"] == "kube_resources"
        inv = b.inventory()
    assert {d["node"]: d["calico_version"] for d in inv["dataplane"]} == {"node-a": "v3.30.0", "node-b": "v3.28.1"}


@pytest.mark.parametrize(
    "comment, text",
    [
        ("End of tier default. Drop if no policies passed packet", ">=v3.30"),
        ("Start of tier default", ">=v3.29"),
        ("NetworkPolicy default/allow-web ingress", ">=v3.32"),
        ("Drop if no policies passed packet", "<=v3.29"),
        ("Start of policies", "<=v3.27"),
    ],
)
def test_release_range_from_the_rules_dialect(tmp_path, comment, text):
    """Without a statement, the rules' comments bound the release (formats reference 2.2, 2.5)."""
    (tmp_path / "nodes" / "node-a").mkdir(parents=True)
    (tmp_path / "nodes" / "node-a" / "iptables-save.txt").write_text(
        "*filter\n:cali-tw-cali1234567890a - [0:0]\n:cali-pi-_abcdefghijklmnopqrs - [0:0]\n"
        f'[1:60] -A cali-tw-cali1234567890a -m comment --comment "cali:AAAAAAAAAAAAAAAA" -m comment --comment "{comment}" '
        "-j MARK --set-xmark 0x0/0x20000\nCOMMIT\n"
    )
    with calforensics.open_bundle(tmp_path) as b:
        row = b.dataplane.iloc[0]
        assert row.calico_version == text and "read from" in row.calico_version_from


# --- peer redirect by release, setting and arrival ----------------------------------------------------------

CLIENT, SERVER, LOCAL_SERVER = "192.168.10.5", "192.168.20.7", "192.168.10.9"
T0 = 1_800_000_000_000_000_000


def _write_node(root, node: str, routes: str, pcaps: dict[str, list[tuple[int, bytes]]]) -> None:
    d = root / "nodes" / node
    (d / "pcaps").mkdir(parents=True)
    (d / "ip-route.txt").write_text(routes)
    for veth, frames in pcaps.items():
        write_pcap(d / "pcaps" / f"{veth}.pcap", [f for _, f in frames], times_ns=[t for t, _ in frames])
    with tarfile.open(SAMPLES / "lab-ebpf.tgz") as tar:  # BPF state: the node runs the eBPF dataplane
        (d / "bpf-counters.txt").write_bytes(tar.extractfile("lab-ebpf/nodes/node-b/bpf-counters.txt").read())


def redirected_udp_bundle(root, *, local: bool, version: str | None, setting: str = "") -> None:
    """Five answered UDP datagrams; the destination veth shows the first only (what peer redirect
    leaves it). ``local``: the server is a pod on the client's node, else on node-b behind VXLAN."""
    server = LOCAL_SERVER if local else SERVER
    fwd = [udp4(CLIENT, server, 40000, 9000, payload=b"m%d" % k, ip_id=k + 1) for k in range(5)]
    rev = [udp4(server, CLIENT, 9000, 40000, payload=b"r%d" % k, ip_id=100 + k) for k in range(5)]
    at = [T0 + k * 1_000_000 for k in range(5)]
    client_veth = [(at[k], eth(fwd[k])) for k in range(5)] + [(at[k] + 400_000, eth(rev[k])) for k in range(5)]
    server_veth = [(at[0] + 100_000, eth(fwd[0]))] + [(at[k] + 300_000, eth(rev[k])) for k in range(5)]
    client_veth.sort()
    server_veth.sort()
    a_routes = f"{CLIENT} dev cali0000000000a scope link\n192.168.20.0/26 via 10.0.0.12 dev vxlan.calico onlink\n"
    if local:
        a_routes += f"{LOCAL_SERVER} dev cali0000000000c scope link\n"
        _write_node(root, "node-a", a_routes, {"cali0000000000a": client_veth, "cali0000000000c": server_veth})
    else:
        _write_node(root, "node-a", a_routes, {"cali0000000000a": client_veth})
        b_routes = f"{SERVER} dev cali0000000000b scope link\n192.168.10.0/26 via 10.0.0.11 dev vxlan.calico onlink\n"
        _write_node(root, "node-b", b_routes, {"cali0000000000b": server_veth})
    if version:
        (root / "cluster" / "crd").mkdir(parents=True)
        (root / "cluster" / "crd" / "clusterinformations.crd.projectcalico.org.yaml").write_text(
            CLUSTER_INFO_YAML.format(version=version)
        )
    if setting:
        (root / "cluster" / "crd" / "felixconfigurations.crd.projectcalico.org.yaml").write_text(
            f"apiVersion: v1\nitems:\n- kind: FelixConfiguration\n  spec:\n    bpfEnabled: true\n"
            f"    bpfRedirectToPeer: {setting}\nkind: List\n"
        )


@pytest.mark.parametrize(
    "version, local, setting, verdict",
    [
        ("v3.28.0", False, "", "partial"),  # no peer redirect at all
        ("v3.29.0", False, "", "delivered"),  # from host endpoints (VXLAN arrives at an L2 device)
        ("v3.30.4", True, "", "partial"),  # ...but not from a local workload
        ("v3.31.0", True, "", "delivered"),  # local workloads too
        ("v3.32.0", False, "Disabled", "partial"),  # switched off
        (None, False, "", "delivered"),  # unknown: the current release's defaults, and the report says so
    ],
)
def test_peer_redirect_follows_the_release(tmp_path, version, local, setting, verdict):
    redirected_udp_bundle(tmp_path, local=local, version=version, setting=setting)
    with calforensics.open_bundle(tmp_path) as b:
        f = b.flows[b.flows.proto == "udp"].iloc[0]
        assert (f.verdict, f.packets_fwd, f.packets_rev) == (verdict, 5, 5)
        assert f.peer_redirected == (4 if verdict == "delivered" else 0)
        findings = calforensics.analyze(b).findings["findings"]
        assumed = [x for x in findings if x["kind"] == "platform_assumed"]
        assert bool(assumed) == (version is None)
        if version is None:
            assert "v3.32" in assumed[0]["title"] and "peer redirect" in assumed[0]["title"]


def test_an_mtu_drop_is_not_peer_redirect_in_any_release(tmp_path):
    """A v3.28 eBPF bundle: a small datagram answered, then a DF datagram too big for the tunnel,
    answered by ICMP frag-needed. The big one never reached the server's veth: a loss, in v3.28
    (no peer redirect) and in v3.32 alike (the ICMP error says where it went)."""
    for version in ("v3.28.0", "v3.32.0"):
        root = tmp_path / version
        small = udp4(CLIENT, SERVER, 43153, 9000, payload=b"x" * 40, ip_id=1)
        reply = udp4(SERVER, CLIENT, 9000, 43153, payload=b"ok", ip_id=50)
        big = udp4(CLIENT, SERVER, 43153, 9000, payload=b"y" * 1472, ip_id=2)
        big.df = 1
        icmp = dpkt.icmp.ICMP(type=3, code=4, data=dpkt.icmp.ICMP.Unreach(mtu=1450, data=bytes(big)[:28]))
        err = dpkt.ip.IP(src=ip4("192.168.10.0"), dst=ip4(CLIENT), p=1, id=77, data=icmp)
        err.len = len(bytes(err))
        _write_node(
            root,
            "node-a",
            f"{CLIENT} dev cali0000000000a scope link\n192.168.20.0/26 via 10.0.0.12 dev vxlan.calico onlink\n",
            {
                "cali0000000000a": [
                    (T0, eth(small)),
                    (T0 + 500_000, eth(reply)),
                    (T0 + 1_000_000, eth(big)),
                    (T0 + 1_050_000, eth(err)),
                ]
            },
        )
        _write_node(
            root,
            "node-b",
            f"{SERVER} dev cali0000000000b scope link\n192.168.10.0/26 via 10.0.0.11 dev vxlan.calico onlink\n",
            {"cali0000000000b": [(T0 + 100_000, eth(small)), (T0 + 300_000, eth(reply))]},
        )
        (root / "cluster" / "crd").mkdir(parents=True)
        (root / "cluster" / "crd" / "clusterinformations.crd.projectcalico.org.yaml").write_text(
            CLUSTER_INFO_YAML.format(version=version)
        )
        with calforensics.open_bundle(root) as b:
            f = b.flows[(b.flows.proto == "udp") & (b.flows.client_port == 43153)].iloc[0]
            assert (f.verdict, f.peer_redirected, f.icmp_errors) == ("partial", 0, 1), version
            assert f.last_seen == "node-a:cali0000000000a"
            assert not any(x["kind"] == "peer_redirect" for x in calforensics.analyze(b).findings["findings"])


def test_redirect_reach_by_release_and_setting():
    def reach(lo, hi=None, setting=""):
        v = VersionReading(lo, hi if hi else lo, stated=True) if lo else VersionReading(None, hi)
        return set(peer_redirect_reach(v, (setting, "s") if setting else None)[0])

    assert reach((3, 28, 5)) == set()
    assert reach((3, 29, 0)) == reach((3, 30, 9)) == {"l2"}
    assert reach((3, 31, 0)) == {"l2", "wep"}
    assert reach((3, 32, 0)) == reach((3, 33, 1)) == {"l2", "l3", "wep"}
    assert reach((3, 30, 0), setting="Enabled") == {"l2", "l3"}
    assert reach((3, 32, 0), setting="L2Only") == {"l2", "wep"}
    assert reach(None, (3, 29, 99)) == set()  # only an upper bound: read as the oldest release it allows
    assert reach(None) == {"l2", "l3", "wep"}  # nothing known: the current release's defaults


def test_arrival_from_path_or_route():
    assert arrival("b", "a:calia > a:vxlan.calico > a:eth0 > b:eth0 > b:vxlan.calico > b:calib", "") == "l2"
    assert arrival("b", "a:calia > a:tunl0 > b:tunl0 > b:calib", "") == "l3"
    assert arrival("a", "a:calia > a:calic", "calia") == "wep"
    assert arrival("b", "a:calia > b:calib", "wireguard.cali") == "l3"
    assert arrival("b", "a:calia > b:calib", "vxlan.calico") == "l2"


def test_inspect_shows_each_nodes_release_mode_and_dataplane_with_evidence():
    """`calforensics inspect` on the eBPF sample: per node the dataplane, the Calico release read from
    ClusterInformation (file and line), kube-proxy replaced by BPF NAT, and the peer redirect that follows."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "calforensics.cli", "inspect", str(SAMPLES / "lab-ebpf.tgz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for node in ("node-a", "node-b"):
        block = out.split(f"  {node}: ", 1)[1].split("\n  ", 4)
        text = "\n".join(block[:4])
        assert text.startswith("ebpf dataplane"), text
        assert "Calico v3.32.0 (ClusterInformation calicoVersion in lab-ebpf/cluster/crd/clusterinformations" in text
        assert "kube-proxy: replaced (no kube-proxy chains; Calico's BPF NAT holds the services)" in text
        assert "eBPF peer redirect: from host endpoints' L2 and L3 devices and local workloads" in text
