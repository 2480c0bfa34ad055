"""Calico flow logs beside the captures: Goldmane's (Calico Open Source's flow logs API) and Calico
Enterprise's, read in every form they are saved in, matched to the captured flows by what they keep
(pods by name, or addresses), naming the policy behind a drop, and said where they disagree with
what the captures show."""

from __future__ import annotations

import json
import sys
import tarfile

import pytest
from conftest import ROOT, SAMPLES
from groundtruth import flow_for

import calforensics
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers.flowlogs import parse_flow_logs

sys.path.insert(0, str(ROOT / "sample_data"))

VXLAN = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
EBPF = json.loads((SAMPLES / "lab-ebpf.ground_truth.json").read_text())


def goldmane_emitted(src, dst, port, action, reporter, policies, start, end=None, service=None) -> str:
    """A Flow as Goldmane's emitter writes it: encoding/json of the Go struct (snake_case, `Key`,
    enums as numbers, zero values left out)."""
    key = {
        "source_name": src[1],
        "source_namespace": src[0],
        "source_type": 1,
        "dest_name": dst[1],
        "dest_namespace": dst[0],
        "dest_type": 1,
        "dest_port": port,
        "proto": "tcp",
        "reporter": reporter,
        "action": action,
        "policies": {"enforced_policies": policies},
    }
    if service:  # a connection dialled through a service: (namespace, name, port name, port)
        key.update(
            dest_service_namespace=service[0], dest_service_name=service[1], dest_service_port_name=service[2],
            dest_service_port=service[3],
        )
    flow = {"Key": key, "start_time": start, "end_time": end or start + 15, "packets_out": 4, "num_connections_started": 1}
    return json.dumps(flow, separators=(",", ":"))


END_OF_TIER_DENY = {  # the tier's end denied: its trigger is the policy that selected the pod and allowed nothing
    "kind": 10,
    "tier": "default",
    "action": 2,
    "rule_index": -1,
    "trigger": {"kind": 1, "namespace": "secure", "name": "default.db-allow-app", "tier": "default", "action": 2},
}


def enterprise(flow: dict, action: str, reporter: str, policies: list[str], start: int) -> str:
    """A Calico Enterprise flows.log line ("Flow log data types"), no aggregation."""
    return json.dumps(
        {
            "start_time": start,
            "end_time": start + 300,
            "source_ip": flow["client_ip"],
            "source_name": "client",
            "source_name_aggr": "client",
            "source_namespace": "default",
            "source_port": flow["client_port"],
            "source_type": "wep",
            "dest_ip": flow.get("backend_ip", flow["server_ip"]),
            "dest_name": "-",
            "dest_name_aggr": "web-*",
            "dest_namespace": "default",
            "dest_port": flow.get("backend_port", flow["server_port"]),
            "dest_type": "wep",
            "proto": flow["proto"],
            "action": action,
            "reporter": reporter,
            "policies": {"all_policies": policies, "enforced_policies": policies, "pending_policies": []},
            "bytes_in": 0,
            "bytes_out": 60,
            "num_flows": 1,
            "num_flows_started": 1,
            "num_flows_completed": 0,
            "packets_in": 0,
            "packets_out": 1,
            "host": "node-b",
        }
    )


def parse(text: str):
    log = AnomalyLog("flow_logs", "f")
    return parse_flow_logs(text.split("\n"), log, "", "f"), log


def test_flow_log_forms():
    emitted = goldmane_emitted(("default", "client"), ("secure", "db"), 5432, 2, 2, [END_OF_TIER_DENY], 1700000000)
    protojson = json.dumps(  # grpcurl / Whisker: camelCase, enums by name, in a list of FlowResults
        [
            {
                "id": "7",
                "flow": {
                    "key": {
                        "sourceName": "client",
                        "sourceNamespace": "default",
                        "sourceType": "WorkloadEndpoint",
                        "destName": "web-*",
                        "destNamespace": "default",
                        "destType": "WorkloadEndpoint",
                        "destPort": "8080",
                        "destServiceName": "web",
                        "destServiceNamespace": "default",
                        "destServicePortName": "http",
                        "proto": "tcp",
                        "reporter": "Src",
                        "action": "Allow",
                        "policies": {
                            "enforcedPolicies": [
                                {"kind": "Profile", "name": "kns.default", "action": "Allow", "ruleIndex": "0"}
                            ]
                        },
                    },
                    "startTime": "1700000000",
                    "endTime": "1700000015",
                },
            }
        ],
        indent=2,
    )
    line = enterprise(VXLAN["flows"][1], "deny", "dst", ["0|default|secure/default.db-allow-app|deny|-1"], 1700000000)
    hits = json.dumps({"hits": {"total": 1, "hits": [{"_index": "tigera_secure_ee_flows", "_source": json.loads(line)}]}})
    rows = {}
    for name, text in (("emitted", emitted), ("protojson", protojson), ("enterprise", line), ("es", hits)):
        df, log = parse(text)
        assert len(df) == 1 and not log.rows, (name, log.rows)
        rows[name] = df.iloc[0]
    e = rows["emitted"]
    assert (e.source, e.action, e.reporter, e.src_name, e.dst_name, e.dst_port, e.src_type) == (
        "goldmane", "deny", "dst", "client", "db", 5432, "wep"
    )
    assert e.deny_policies == "secure/default.db-allow-app" and "end of tier" in e.policies
    p = rows["protojson"]
    assert (p.action, p.reporter, p.dst_name, p.dst_port, p.dst_service, p.deny_policies) == (
        "allow", "src", "web-*", 8080, "default/web:http", ""
    )
    for name in ("enterprise", "es"):
        r = rows[name]
        assert (r.source, r.src_ip, r.action, r.deny_policies, r.host) == (
            "enterprise", VXLAN["flows"][1]["client_ip"], "deny", "secure/default.db-allow-app", "node-b"
        )
    broken, log = parse(emitted + "\n{not json\n" + emitted)  # a damaged line is an anomaly, the rest read
    assert len(broken) == 2 and [r[4] for r in log.rows] == ["bad_json"]
    deep, log = parse("[" * 200 + "]" * 200)
    assert len(deep) == 0 and [r[4] for r in log.rows] == ["bad_json"] and "deeper" in log.rows[0][5]


@pytest.fixture
def vxlan_with_flow_logs(tmp_path):
    """The VXLAN sample with a pod listing and, on node-b, Goldmane's flow logs of the run: the denied
    connection to db (denied), the one through the ClusterIP (said denied: wrong) and the MTU datagram
    (said allowed: lost after policy)."""
    import lab

    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    (root / "cluster" / "kubernetes").mkdir(parents=True, exist_ok=True)
    (root / "cluster" / "kubernetes" / "pods.txt").write_text(lab.pod_listing())
    with calforensics.open_bundle(root) as b:
        start = int(b.flows.first_ns[b.flows.first_ns > 0].min()) // 10**9
    flows = {f["name"]: f for f in VXLAN["flows"]}
    allow_profile = [{"kind": 9, "name": "kns.default", "action": 1, "rule_index": 0}]
    lines = [
        goldmane_emitted(("default", "client"), ("secure", "db"), 5432, 2, 2, [END_OF_TIER_DENY], start),
        goldmane_emitted(
            ("default", "client"), ("default", "web"), 8080, 2, 2, [END_OF_TIER_DENY], start, service=("default", "web", "http", 80)
        ),
        json.dumps(
            {
                "Key": {
                    "source_name": "mtu-bad",
                    "source_namespace": "default",
                    "dest_name": "web",
                    "dest_namespace": "default",
                    "dest_port": flows["mtu"]["server_port"],
                    "proto": "udp",
                    "reporter": 1,
                    "action": 1,
                    "policies": {"enforced_policies": allow_profile},
                },
                "start_time": start,
                "end_time": start + 15,
            }
        ),
    ]
    (root / "nodes" / "node-b" / "goldmane-flows.json").write_text("\n".join(lines) + "\n")
    return root


def test_flow_logs_name_drops_and_disagreements(vxlan_with_flow_logs):
    flows = {f["name"]: f for f in VXLAN["flows"]}
    with calforensics.open_bundle(vxlan_with_flow_logs) as b:
        assert b.artifacts.set_index("path").kind["nodes/node-b/goldmane-flows.json"] == "flow_logs"
        a = calforensics.analyze(b)
        drops = a.drops.set_index("flow_id")
        denied = drops.loc[int(flow_for(b, flows["denied"]).flow_id)]
        logged = [e["detail"] for e in denied.evidence if e["kind"] == "flow_log"]
        assert logged == [
            "goldmane flow log, dst reporter: deny by secure/default.db-allow-app "
            "(default/secure/default.db-allow-app deny (EndOfTier, end of tier))"
        ]
        disagree = {h["flow_id"]: h["title"] for h in a.findings["findings"] if h["kind"] == "flow_log_disagrees"}
        cluster_ip, mtu = (int(flow_for(b, flows[n]).flow_id) for n in ("cluster_ip", "mtu"))
        assert set(disagree) == {cluster_ip, mtu}
        assert "say denied by secure/default.db-allow-app, but the captures show it delivered" in disagree[cluster_ip]
        assert "the captures show it dropped, but Calico's flow logs (src reporter) say allowed" in disagree[mtu]
        # the entry of the connection through the service is not the direct connection's to the same pod
        assert set(a.flow_log_matches.flow_id) == {cluster_ip, mtu, int(denied.name)}


def test_a_flow_log_names_the_policy_behind_a_bpf_drop(tmp_path):
    """The eBPF sample's policy drop: BPF counters cannot name its policy; Goldmane's deny can."""
    import lab

    with tarfile.open(SAMPLES / "lab-ebpf.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-ebpf"
    (root / "cluster" / "kubernetes" / "pods.txt").write_text(lab.pod_listing())
    gt = next(f for f in EBPF["flows"] if f["name"] == "denied")
    with calforensics.open_bundle(root) as b:
        assert calforensics.analyze(b).drops.set_index("flow_id").loc[int(flow_for(b, gt).flow_id)].cause_policy == ""
        start = int(b.flows.first_ns[b.flows.first_ns > 0].min()) // 10**9
    deny = goldmane_emitted(("default", "client"), ("secure", "db"), 5432, 2, 2, [END_OF_TIER_DENY], start)
    (root / "cluster" / "goldmane.json").write_text(deny + "\n")
    with calforensics.open_bundle(root) as b:
        d = calforensics.analyze(b).drops.set_index("flow_id").loc[int(flow_for(b, gt).flow_id)]
        assert (d.cause_kind, d.cause_policy) == ("bpf_policy_drop", "secure/default.db-allow-app")
