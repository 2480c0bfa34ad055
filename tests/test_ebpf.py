"""Calico's eBPF dataplane: mode, services from BPF NAT, NAT legs from BPF conntrack, peer redirect,
and drops placed on BPF hooks, against the eBPF sample's ground truth and with pieces taken away."""

import json
import shutil
import tarfile

import pandas as pd
import pytest
from conftest import SAMPLES
from groundtruth import flow_for

import calforensics
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers import kubectl, traces

TRUTH = json.loads((SAMPLES / "lab-ebpf.ground_truth.json").read_text())
FLOWS = {f["name"]: f for f in TRUTH["flows"]}


@pytest.fixture(scope="module")
def analysis():
    with calforensics.open_bundle(SAMPLES / "lab-ebpf.tgz") as b:
        yield calforensics.analyze(b)


@pytest.fixture
def unpacked(tmp_path):
    with tarfile.open(SAMPLES / "lab-ebpf.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "lab-ebpf"


def test_dataplane_is_detected_per_node():
    with calforensics.open_bundle(SAMPLES / "lab-ebpf.tgz") as b:
        modes = dict(zip(b.dataplane.node, b.dataplane["mode"].astype(str), strict=True))
    assert modes == {node: "ebpf" for node in TRUTH["nodes"]}
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:  # iptables: policy and kube-proxy chains
        dp = b.dataplane
        assert set(dp["mode"].astype(str)) == {"iptables"} and (dp.bpf_files == 0).all()
        assert (dp.policy_chains > 0).all() and (dp.kube_proxy_chains > 0).all()


def test_service_flows_tied_to_backends_from_bpf_nat(analysis):
    b = analysis.bundle
    udp = flow_for(b, FLOWS["udp"])  # TC NAT: the client's veth shows the service, everything after the backend
    assert (udp.server_ip, udp.server_port) == (FLOWS["udp"]["server_ip"], FLOWS["udp"]["server_port"])
    assert (udp.backend_ip, udp.backend_port) == (FLOWS["udp"]["backend_ip"], FLOWS["udp"]["backend_port"])
    assert (udp.service, str(udp.service_via)) == (FLOWS["udp"]["service"], "bpf-nat")
    for name in ("cluster_ip", "pod_to_pod"):  # connect-time LB: every capture shows the backend only
        f = flow_for(b, FLOWS[name])
        assert f.server_ip == FLOWS[name]["server_ip"] and f.backend_ip == ""
        assert f.service.split(", ") == FLOWS[name]["service_candidates"] and str(f.service_via) == "backend"
    bulk = flow_for(b, FLOWS["bulk"])  # port 8081 backs no service
    assert bulk.service == "" and str(bulk.service_via) == ""
    mtu = flow_for(b, FLOWS["mtu"])  # UDP is NATed per packet, so a UDP flow to a backend was dialled directly
    assert mtu.service == ""


def test_nat_leg_from_bpf_conntrack_when_no_capture_shows_the_service(unpacked):
    """Without the client veth's capture no packet shows the service address: the BPF conntrack NAT
    entry (JSON on node-a) says what was dialled."""
    client = TRUTH["pods"]["default/client"]
    (unpacked / "nodes" / client["node"] / "pcaps" / f"{client['interface']}.pcap").unlink()
    gt = FLOWS["udp"]
    with calforensics.open_bundle(unpacked) as b:
        f = flow_for(b, gt)
        assert (f.server_ip, f.server_port, f.backend_ip, f.backend_port) == (
            gt["server_ip"],
            gt["server_port"],
            gt["backend_ip"],
            gt["backend_port"],
        )
        assert (f.service, f.ct_nat) == (gt["service"], "dnat")
        assert len(b.flows[(b.flows.client_port == gt["client_port"])]) == 1  # not also an unobserved copy
    (unpacked / "nodes" / client["node"] / "bpf-conntrack.json").unlink()  # without it: only the backend
    with calforensics.open_bundle(unpacked) as b:
        f = flow_for(b, gt)
        assert (f.server_ip, f.backend_ip, f.service) == (gt["backend_ip"], "", "")


def test_peer_redirect_is_not_a_drop(analysis, unpacked):
    flows = analysis.bundle.flows
    redirected = [flow_for(analysis.bundle, f) for f in TRUTH["flows"] if f.get("peer_redirect_hidden")]
    assert all(f.verdict == "delivered" and f.peer_redirected > 0 for f in redirected)
    assert int(flows.peer_redirected.sum()) == TRUTH["peer_redirect_hidden_packets"]
    assert "partial" not in set(flows.verdict.astype(str))
    assert any(f["kind"] == "peer_redirect" for f in analysis.findings["findings"])
    # the same captures without the BPF state are eBPF only as the saved FelixConfiguration says
    # (bpfEnabled), and read the same; without it too, an iptables-less unknown dataplane: the missing
    # packets at the destination veth are then partial deliveries, so the eBPF reading is what fixes them
    for path in unpacked.glob("nodes/*/bpf-*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with calforensics.open_bundle(unpacked) as b:
        assert set(b.dataplane["mode"].astype(str)) == {"ebpf"} and "configured" in b.dataplane.evidence.iloc[0]
        assert {flow_for(b, f).verdict for f in TRUTH["flows"] if f.get("peer_redirect_hidden")} == {"delivered"}
    (unpacked / "cluster" / "crd" / "felixconfigurations.crd.projectcalico.org.yaml").unlink()
    with calforensics.open_bundle(unpacked) as b:
        assert set(b.dataplane["mode"].astype(str)) == {"unknown"}
        assert {flow_for(b, f).verdict for f in TRUTH["flows"] if f.get("peer_redirect_hidden")} == {"partial"}


def test_policy_drop_at_the_right_hook_with_bpf_evidence(analysis):
    gt = FLOWS["denied"]
    drop = gt["drop"]
    d = analysis.drops.set_index("flow_id").loc[int(flow_for(analysis.bundle, gt).flow_id)]
    assert d.last_seen == f"{drop['last_seen']['node']}:{drop['last_seen']['interface']}"
    assert d.missing_at == f"{drop['missing_at']['node']}:{drop['missing_at']['interface']}"
    assert (d.cause_kind, d.cause_node, d.cause_table) == ("bpf_policy_drop", drop["node"], "bpf")
    assert d.cause_chain == f"{drop['interface']} tc {drop['hook']}"
    assert d.cause_counter_packets == drop["counter_packets"]
    kinds = {(e["kind"], e["scope"]) for e in d.evidence}
    assert {("bpf_counter", "cumulative"), ("bpf_conntrack", "per_flow"), ("bpf_trace", "per_flow")} <= kinds
    assert d.confidence == "high"
    # the MTU drop on node-a has no BPF drop counter behind it: no BPF cause is made up, and the
    # evidence says that no counter moved on the hooks in between
    mtu = analysis.drops.set_index("flow_id").loc[int(flow_for(analysis.bundle, FLOWS["mtu"]).flow_id)]
    assert mtu.cause_kind == "mtu_exceeded"
    assert [e["detail"].split(":")[0] for e in mtu.evidence if e["kind"].startswith("bpf_")] == [
        "no drop counter moved on node-a"
    ]


def test_policy_drop_without_corroboration_is_not_high(unpacked):
    """The counter alone is cumulative: without the conntrack legs and the trace log, the same drop is
    placed on the same hook with medium confidence."""
    node = unpacked / "nodes" / FLOWS["denied"]["drop"]["node"]
    shutil.rmtree(node / "bpf-maps")
    (node / "bpf-tracelog.txt").unlink()
    with calforensics.open_bundle(unpacked) as b:
        a = calforensics.analyze(b)
        d = a.drops.set_index("flow_id").loc[int(flow_for(b, FLOWS["denied"]).flow_id)]
        assert d.cause_kind == "bpf_policy_drop" and d.confidence == "medium"
        assert {e["kind"] for e in d.evidence} & {"bpf_conntrack", "bpf_trace"} == set()


def test_findings_and_reports_say_what_is_cumulative(analysis, tmp_path):
    doc = analysis.findings
    assert [d["mode"] for d in doc["bundle"]["dataplane"]] == ["ebpf", "ebpf"]
    scopes = {e["scope"] for d in doc["drops"] for e in d["evidence"]}
    assert scopes == {"per_flow", "cumulative"}
    files = calforensics.write_report(analysis, tmp_path / "r", tables="none")
    md = files.markdown.read_text()
    assert "(bpf\\_counter, cumulative)" in md and "Dataplane: node-a ebpf" in md
    assert "cumulative" in files.html.read_text()


def test_service_listing_parser():
    lines = [
        "NAMESPACE     NAME         TYPE           CLUSTER-IP     EXTERNAL-IP    PORT(S)                      AGE",
        "default       kubernetes   ClusterIP      10.96.0.1      <none>         443/TCP                      9d",
        "kube-system   kube-dns     ClusterIP      10.96.0.10     <none>         53/UDP,53/TCP,9153/TCP       9d",
        "shop          front        LoadBalancer   10.96.7.7      203.0.113.9    80:31080/TCP                 2d",
        "shop          headless     ClusterIP      None           <none>         8080/TCP                     2d",
        "Error from server (Forbidden): services is forbidden",
    ]
    log = AnomalyLog("services", "f")
    df = kubectl.parse_service_listing(lines, log)
    assert df[["namespace", "name", "port", "protocol"]].values.tolist() == [
        ["default", "kubernetes", 443, "tcp"],
        ["kube-system", "kube-dns", 53, "udp"],
        ["kube-system", "kube-dns", 53, "tcp"],
        ["kube-system", "kube-dns", 9153, "tcp"],
        ["shop", "front", 80, "tcp"],
        ["shop", "headless", 8080, "tcp"],
    ]
    assert df.node_port.tolist()[4] == 31080 and df.external_ip.tolist()[4] == "203.0.113.9"
    assert df.cluster_ip.tolist()[5] == "" and len(log.rows) == 1


def test_bpf_trace_lines():
    """Tags as in the reference (C.4): interface padded with '-' to 15 characters, then I/E/X; the old
    `0:` form; one row per verdict, with the tuple from the packet's earlier lines on that tag."""
    lines = [
        "  <idle>-0 [001] d.s. 912.120001: bpf_trace_printk: cali1f808cfe5dc-I: New packet at ifindex=9; mark=0",
        "  <idle>-0 [001] d.s. 912.120002: bpf_trace_printk: cali1f808cfe5dc-I: IP src=10.0.1.5 dst=10.0.2.9",
        "  <idle>-0 [001] d.s. 912.120003: bpf_trace_printk: cali1f808cfe5dc-I: TCP; ports: s=40000 d=5432",
        "  <idle>-0 [001] d.s. 912.120004: bpf_trace_printk: cali1f808cfe5dc-I: DENY due to policy",
        "  <idle>-0 [002] d.s. 913.000001: bpf_trace_printk: eth0------------I: Final result=ALLOW rc 0.",
        "  <idle>-0 [002] d.s. 913.000002: 0: enp9s0---E: Final result=DENY (12)",
        "  curl-77 [000] .... 914.5: bpf_trace_printk: cali0a1b2c3d4e5-E: policy DENIED  proto 6 src 10.0.1.5:1234"
        " dest 10.96.0.10:53",
    ]
    df = traces.parse_traces(lines, AnomalyLog("traces", "f"))
    assert df[["in_iface", "chain", "type", "src", "sport", "dst", "dport"]].values.tolist() == [
        ["cali1f808cfe5dc", "cali1f808cfe5dc-I", "deny", "10.0.1.5", 40000, "10.0.2.9", 5432],
        ["eth0", "eth0-I", "allow", "", -1, "", -1],
        ["enp9s0", "enp9s0-E", "deny", "", -1, "", -1],
        ["cali0a1b2c3d4e5", "cali0a1b2c3d4e5-E", "deny", "10.0.1.5", 1234, "10.96.0.10", 53],
    ]
    assert set(df.source.astype(str)) == {"calico-bpf"} and df.time.tolist()[0] == "912.120004"


def test_bpf_state_next_to_iptables_policy_chains_is_mixed(tmp_path):
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    with tarfile.open(SAMPLES / "lab-ebpf.tgz") as tar:
        counters = tar.extractfile("lab-ebpf/nodes/node-b/bpf-counters.txt").read()
    (tmp_path / "lab-vxlan" / "nodes" / "node-b" / "bpf-counters.txt").write_bytes(counters)
    with calforensics.open_bundle(tmp_path / "lab-vxlan") as b:
        dp = b.dataplane.set_index("node")
        assert (dp.loc["node-a", "mode"], dp.loc["node-b", "mode"]) == ("iptables", "mixed")
        assert "both present" in dp.loc["node-b", "evidence"]
        # a mixed node is not read with eBPF semantics: the iptables drop stays the cause
        a = calforensics.analyze(b)
        assert set(a.drops.cause_kind) == {"end_of_tier", "mtu_exceeded"}


@pytest.mark.parametrize(
    ("last_seen", "missing_at", "hooks"),
    [
        # the source pod's egress policy: its veth's tc ingress runs after that veth's tap
        ("a:caliS", "a:vxlan.calico", [("a", "caliS", "ingress"), ("a", "vxlan.calico", "egress")]),
        # the destination pod's ingress policy: its veth's tc egress runs before that veth's tap
        ("b:vxlan.calico", "b:caliD", [("b", "vxlan.calico", "ingress"), ("b", "caliD", "egress")]),
        ("a:caliS", "a:caliD", [("a", "caliS", "ingress"), ("a", "caliD", "egress")]),  # same node
        # leaving the node: the uplink's tc egress; arriving at another node: its XDP, before any tap
        ("a:vxlan.calico", "a:eth0", [("a", "eth0", "egress")]),
        ("a:eth0", "b:eth0", [("b", "eth0", "xdp")]),
        # arriving: the uplink's tc ingress (host endpoint policy) runs after its tap
        ("b:eth0", "b:vxlan.calico", [("b", "eth0", "ingress")]),
    ],
)
def test_bpf_hooks_between_two_capture_points(last_seen, missing_at, hooks):
    """The shared eBPF reference's table A.4: which programs ran between the last tap that saw a
    packet and the first that did not."""
    from calforensics.analyses.drops import _bpf_hooks

    roles = {
        ("a", "caliS"): "workload",
        ("a", "caliD"): "workload",
        ("b", "caliD"): "workload",
        ("a", "vxlan.calico"): "tunnel",
        ("b", "vxlan.calico"): "tunnel",
        ("a", "eth0"): "uplink",
        ("b", "eth0"): "uplink",
    }
    assert _bpf_hooks(last_seen, missing_at, roles) == hooks


def test_nodeport_forwarding_vxlan_is_told_from_the_overlay(tmp_path):
    """Calico eBPF forwards NodePort traffic to a remote backend's node in VXLAN with VNI 0xca11c0;
    the overlay has its own VNI (4096). The overhead table keeps them apart by name."""
    from pktutil import tcp4, vxlan_frame, write_pcap

    frames = [vxlan_frame(tcp4(sport=40000 + k), vni=0xCA11C0 if k % 2 else 4096) for k in range(6)]
    write_pcap(tmp_path / "eth0.pcap", frames)
    with calforensics.open_bundle(tmp_path / "eth0.pcap") as b:
        tunnels = calforensics.analyze(b).tunnels
        assert dict(zip(tunnels.type, tunnels.vni, strict=True)) == {"vxlan": 4096, "vxlan-nodeport": 0xCA11C0}


def test_services_from_bpftool_nat_map_dumps(unpacked):
    """Only `bpftool map dump` of the NAT frontend and backend maps (no calico-bpf `nat dump`): the
    same services and backends, the same connect-time-LB candidates."""
    import ipaddress
    import struct
    import sys

    sys.path.insert(0, str(SAMPLES))
    from derive import bpftool_hex as _hex_rows

    fe, be = [], []
    for svc in TRUTH["services"]:
        ip = ipaddress.ip_address(svc["cluster_ip"]).packed
        proto = {"tcp": 6, "udp": 17}[svc["proto"]]
        key = struct.pack("<I", 56) + ip + struct.pack("<HB", svc["port"], proto) + bytes(5)
        value = struct.pack("<5I", svc["svc_id"], len(svc["backends"]), 0, 0, 0)
        fe += ["key:", *_hex_rows(key), "value:", *_hex_rows(value)]
        for ordinal, backend in enumerate(svc["backends"]):
            addr, port = backend.rsplit(":", 1)
            k = struct.pack("<II", svc["svc_id"], ordinal)
            v = ipaddress.ip_address(addr).packed + struct.pack("<HH", int(port), 0)
            be.append(f"key: {_hex_rows(k)[0]}  value: {_hex_rows(v)[0]}")
    for node in TRUTH["nodes"]:
        for path in (unpacked / "nodes" / node).glob("bpf-nat.*"):
            path.unlink()
    maps = unpacked / "nodes" / "node-a" / "bpf-maps"
    maps.mkdir()
    (maps / "cali_v4_nat_fe3-id_50.txt").write_text("\n".join([*fe, f"Found {len(TRUTH['services'])} elements"]) + "\n")
    (maps / "cali_v4_nat_be-id_51.txt").write_text("\n".join([*be, f"Found {len(be)} elements"]) + "\n")
    with calforensics.open_bundle(unpacked) as b:
        assert set(b.bpf_nat.source) == {"bpftool"} and len(b.anomalies) == 0
        udp = flow_for(b, FLOWS["udp"])
        assert (udp.service, str(udp.service_via), udp.backend_ip) == (
            FLOWS["udp"]["service"],
            "bpf-nat",
            FLOWS["udp"]["backend_ip"],
        )
        ctlb = flow_for(b, FLOWS["cluster_ip"])
        assert ctlb.service.split(", ") == FLOWS["cluster_ip"]["service_candidates"]


def test_nodeport_frontends_only_at_node_addresses():
    """A BPF NodePort frontend (255.255.255.255:<port>) and a listing's `80:30080/TCP` name flows to a
    node address at that port, not flows to any address that happens to use the port."""
    from calforensics.meaning.services import build_services

    nat = pd.DataFrame(
        {
            "frontend_ip": ["255.255.255.255", "10.96.0.50"],
            "frontend_port": [30080, 80],
            "proto": [6, 6],
            "svc_id": [23, 23],
            "backend_ip": ["192.168.20.7", "192.168.20.7"],
            "backend_port": [8080, 8080],
        }
    )
    listing = pd.DataFrame(
        {
            "namespace": ["default"],
            "name": ["web"],
            "cluster_ip": ["10.96.0.50"],
            "external_ip": [""],
            "port": [80],
            "node_port": [30080],
            "protocol": ["tcp"],
        }
    )
    rules = pd.DataFrame(columns=["service_ip", "service_port", "protocol", "service"])
    s = build_services(rules, nat, listing, {"10.0.0.11"})
    assert s.dialled("10.0.0.11", 30080, "tcp") == ("default/web:80", "bpf-nat")
    assert s.dialled("203.0.113.7", 30080, "tcp") == ("", "")
    assert s.dialled("10.96.0.50", 80, "tcp") == ("default/web:80", "bpf-nat")
    assert s.candidates("192.168.20.7", 8080, "tcp") == ["default/web:80"]


def test_no_drop_counter_moved_is_said(unpacked):
    """The reference's C.3 step 5: with the drop counter at 0 on the hooks in between, the drop is still
    placed there, without a BPF cause, and the evidence says what else could have dropped it."""
    node = unpacked / "nodes" / FLOWS["denied"]["drop"]["node"]
    counters = node / "bpf-counters.txt"
    lines = counters.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "dumped cali3a87a5219a9" in line)
    lines[at - 3] = lines[at - 3].replace(f"| {FLOWS['denied']['drop']['counter_packets']}  ", "| 0  ")
    counters.write_text("\n".join(lines) + "\n")
    with calforensics.open_bundle(unpacked) as b:
        d = calforensics.analyze(b).drops.set_index("flow_id").loc[int(flow_for(b, FLOWS["denied"]).flow_id)]
        assert d.cause_kind == ""
        assert any("no drop counter moved" in e["detail"] and e["scope"] == "cumulative" for e in d.evidence)


def test_one_way_udp_after_its_first_packet_is_peer_redirect_not_loss(tmp_path):
    """UDP with no reply to a pod on an eBPF node: the destination veth shows about the first packet
    only (the reference's A.3), so the rest is not lost. Without the BPF state it reads as partial."""
    from pktutil import eth, udp4, write_pcap

    client, server = "192.168.10.5", "192.168.20.7"
    packets = [udp4(client, server, 40000, 9000, payload=b"m%d" % k, ip_id=k + 1) for k in range(5)]
    for node, veth, frames in (("node-a", "cali0000000000a", packets), ("node-b", "cali0000000000b", packets[:1])):
        pcaps = tmp_path / "nodes" / node / "pcaps"
        pcaps.mkdir(parents=True)
        times = [1_800_000_000_000_000_000 + k * 1_000_000 + (50_000 if node == "node-b" else 0) for k in range(5)]
        write_pcap(pcaps / f"{veth}.pcap", [eth(p) for p in frames], times_ns=times[: len(frames)])
        pod = client if node == "node-a" else server
        (tmp_path / "nodes" / node / "ip-route.txt").write_text(f"{pod} dev {veth} scope link\n")
        with tarfile.open(SAMPLES / "lab-ebpf.tgz") as tar:  # the node's BPF state: counters
            member = "lab-ebpf/nodes/node-b/bpf-counters.txt"
            (tmp_path / "nodes" / node / "bpf-counters.txt").write_bytes(tar.extractfile(member).read())
    with calforensics.open_bundle(tmp_path) as b:
        f = b.flows[b.flows.proto == "udp"].iloc[0]
        assert (f.verdict, f.peer_redirected, f.packets_rev) == ("delivered", 4, 0)
    for path in tmp_path.glob("nodes/*/bpf-counters.txt"):
        path.unlink()
    with calforensics.open_bundle(tmp_path) as b:
        assert b.flows[b.flows.proto == "udp"].iloc[0].verdict == "partial"


# `calico-node -bpf policy dump <iface> all` as policy_debug.go prints it: the current form (tiers,
# policies and rules with hit counts) and the older one (the program's comments among its instructions)
POLICY_DUMP_CURRENT = """IfaceName: {iface}
Hook: ingress
IfaceName: {iface}
Hook: egress
  Tier: default
    Policy: NetworkPolicy secure/db-allow-app
      Rule: secure/db-allow-app  Action: allow
      Match: proto=tcp src={{192.168.20.99/32}} dport={{5432}}
      Hit count: 0
    End Policy: NetworkPolicy secure/db-allow-app
  End Tier: default  (action: deny)
"""
POLICY_DUMP_OLDER = """IfaceName: {iface}
Hook: egress
Policy Info:
\t// Start of tier default
\t// Start of policy secure/default.db-allow-app
\t// Start of rule secure/default.db-allow-app action:"allow" protocol:{{number:6}}
\t// Rule MatchID: 0x1a2b3c4d5e6f7081
allow:
\tb701000000000000 MovImm64 R1 0
\t// End of rule secure/default.db-allow-app
\t// End of policy secure/default.db-allow-app
\t// End of tier default: deny
\t9500000000000000 Exit
"""


@pytest.mark.parametrize(
    "form, policy, hits",
    [(POLICY_DUMP_CURRENT, "secure/db-allow-app", "0 hit(s) on secure/db-allow-app (allow)"), (POLICY_DUMP_OLDER, "secure/default.db-allow-app", "")],
)
def test_policy_dump_names_the_policy_behind_a_bpf_drop(unpacked, form, policy, hits):
    """BPF counters cannot say which policy dropped: a policy dump of the hook can. The db pod's
    egress hook runs one tier that ends in deny, and its only rule (allow from a pod that does not
    exist) counted no hit: that policy is the one behind the drop. Log lines and kubectl's notice
    around the dump are skipped with an anomaly each."""
    drop = FLOWS["denied"]["drop"]
    text = form.format(iface=drop["interface"])
    text = 'Defaulted container "calico-node" out of: calico-node, install-cni (init)\n' + text
    text = text.replace("Hook: egress\n", 'Hook: egress\n2026-12-01 09:00:01.234 [INFO][1] felix/bpf.go 12: loading maps\n', 1)
    (unpacked / "nodes" / drop["node"] / f"bpf-policy-{drop['interface']}.txt").write_text(text)
    with calforensics.open_bundle(unpacked) as b:
        d = calforensics.analyze(b).drops.set_index("flow_id").loc[int(flow_for(b, FLOWS["denied"]).flow_id)]
        assert (d.cause_kind, d.cause_policy) == ("bpf_policy_drop", policy)
        said = [e["detail"] for e in d.evidence if e["kind"] == "bpf_policy"]
        assert len(said) == 1 and "tier default ends in deny" in said[0] and hits in said[0]
        skipped = b.anomalies[b.anomalies.source == "bpf_policy"]
        assert sorted(skipped.kind.astype(str)) == ["log_line_skipped", "notice_skipped"]
        rows = b.bpf_policy
        assert set(rows.kind.astype(str)) == {"rule", "end-of-tier"} and set(rows.hook.astype(str)) == {"egress"}


def test_bpf_ifstate_text_and_json():
    from calforensics.ingest.parsers.calico_bpf import parse_bpf_ifstate

    text = [
        "INFO[0000] FIPS mode enabled=false source=\"main.go:137\"",
        "    4 : {flags: workload,v4Ready, XDPPolicyV4: -1, IngressPolicyV4: 3, EgressPolicyV4: 4, XDPPolicyV6: -1, "
        "IngressPolicyV6: -1, EgressPolicyV6: -1, IngressFilter: -1, EgressFilter: -1, name: calia7a3e029a7b}",
        "    2 : {flags: host,v4Ready, XDPPolicyV4: 0, IngressPolicyV4: 1, EgressPolicyV4: 2, XDPPolicyV6: -1, "
        "IngressPolicyV6: -1, EgressPolicyV6: -1, IngressFilter: -1, EgressFilter: -1, name: eth0}",
    ]
    log = AnomalyLog("bpf_ifstate", "f")
    df = parse_bpf_ifstate(text, log, "n", "f")
    assert [(int(r.ifindex), r.name, r.flags, int(r.ingress_policy_v4), int(r.egress_policy_v4)) for r in df.itertuples()] == [
        (4, "calia7a3e029a7b", "workload v4Ready", 3, 4),
        (2, "eth0", "host v4Ready", 1, 2),
    ]
    assert [r[4] for r in log.rows] == ["log_line_skipped"]
    as_json = json.dumps(
        [{"ifindex": 4, "name": "calia7a3e029a7b", "flags": ["workload", "v4Ready"], "ingress_policy_v4": 3,
          "egress_policy_v4": 4, "xdp_policy_v4": -1, "tc_ingress_filter": -1, "tc_egress_filter": -1}]
    )
    df = parse_bpf_ifstate(as_json.split("\n"), AnomalyLog("bpf_ifstate", "f"), "n", "f")
    assert (int(df.ifindex[0]), df["flags"][0], int(df.egress_policy_v4[0]), int(df.ingress_policy_v6[0])) == (4, "workload v4Ready", 4, -1)
