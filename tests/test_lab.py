"""End to end on a real kernel: build the two-node lab in network namespaces, collect, read, check.

Needs root, network namespaces, iproute2, iptables, conntrack and tcpdump. Where those are missing
the tests say so and skip, except on CI (CI=true), where they must run.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, unavailable
from groundtruth import DUAL_CHECKS, EDGE_CHECKS, check_bundle

import calforensics

sys.path.insert(0, str(ROOT / "sample_data"))


def lab_unavailable() -> str:
    if os.geteuid() != 0:
        return "not root"
    missing = [t for t in ("ip", "bridge", "iptables-restore", "conntrack", "tcpdump", "sysctl") if not shutil.which(t)]
    if missing:
        return "missing tools: " + ", ".join(missing)
    probe = f"cfprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "cannot create network namespaces: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    reason = lab_unavailable()
    if reason:
        unavailable(f"the real-kernel lab is not possible here: {reason}")
    import ebpf
    import ipip
    import ipvs
    import lab
    import wireguard

    out = tmp_path_factory.mktemp("lab")
    vxlan = lab.run(out)
    ipip_bundle = ipip.convert(vxlan, out / "lab-ipip.tgz")
    ebpf.convert(vxlan, out / "lab-ebpf.tgz")
    ipvs.convert(vxlan, out / "lab-ipvs.tgz")
    try:  # a second run at Calico's WireGuard MTU, the base of the WireGuard derivation
        base = lab.run(out, name="lab-wg-base", tunnel_mtu=1440)
    finally:
        lab.set_tunnel_mtu(1450)
    wireguard.convert(base, out / "lab-wireguard.tgz")
    return out, vxlan, ipip_bundle


def test_live_vxlan_lab_matches_ground_truth(lab_run):
    out, vxlan, _ = lab_run
    truth = json.loads((out / "lab-vxlan.ground_truth.json").read_text())
    assert truth["client_results"]["denied"]["outcome"] == "TimeoutError"
    assert truth["client_results"]["mtu"]["second_send"].startswith("refused")  # the kernel learned the PMTU
    with calforensics.open_bundle(vxlan) as b:
        check_bundle(b, truth)
        read = b.captures.set_index(["node", "interface"])["packets"]
        for node in truth["nodes"]:
            meta = json.loads(Path(b._mat.root, f"lab-vxlan/nodes/{node}/metadata.json").read_text())
            assert meta["synthetic"] is False and meta["capture"]["stop_ns"] > meta["capture"]["start_ns"]
            # tcpdump's own count of what it wrote is what we read, interface by interface
            counted = {i["name"]: i["packets_captured"] for i in meta["capture"]["interfaces"]}
            assert counted == {iface: int(n) for (at, iface), n in read.items() if at == node}
            assert all(n > 0 for n in counted.values())


def test_live_ipip_derivative_matches_ground_truth(lab_run):
    out, _, ipip_bundle = lab_run
    truth = json.loads((out / "lab-ipip.ground_truth.json").read_text())
    with calforensics.open_bundle(ipip_bundle) as b:
        check_bundle(b, truth)


@pytest.mark.parametrize("name", ["lab-ebpf", "lab-wireguard", "lab-ipvs"])
def test_live_ebpf_wireguard_and_ipvs_derivatives_match_ground_truth(lab_run, name):
    out = lab_run[0]
    truth = json.loads((out / f"{name}.ground_truth.json").read_text())
    with calforensics.open_bundle(out / f"{name}.tgz") as b:
        check_bundle(b, truth)
        if name == "lab-wireguard":  # every data message tied to its plaintext, none left over
            data = b.wireguard[b.wireguard.msg_type == "data"]
            assert set(data.match.astype(str)) <= {"exact", "segment"} and len(b.wireguard_unpaired_plaintexts) == 0
            assert len(data) == len(truth["wireguard"]["pairs"]) * 2


def scenario_run(
    tmp_path_factory, scenarios: str, rules: str = "iptables", dialect: str = "v3.30"
) -> tuple[Path, Path]:
    """(folder, bundle) of one lab run of a scenario set (`edge`, `dual`) as lab-<set>, its rules
    written as iptables (felix's and kube-proxy's iptables modes, in a felix release's dialect) or
    nft (their nftables modes)."""
    reason = lab_unavailable()
    if reason:
        unavailable(f"the real-kernel lab is not possible here: {reason}")
    if rules == "nft" and not shutil.which("nft"):
        unavailable("the real-kernel lab's nftables shape needs nft")
    import lab

    name = f"lab-{scenarios}" + ("-nft" if rules == "nft" else "") + (f"-{dialect}" if dialect != "v3.30" else "")
    out = tmp_path_factory.mktemp(name)
    return out, lab.run(out, name=name, scenarios=scenarios, rules=rules, dialect=dialect)


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    return scenario_run(tmp_path_factory, "edge")


def test_live_fragments_and_invalid_drops_match_ground_truth(edge_run):
    """A datagram fragmented by the pod and refragmented by the node for the tunnel is one delivered
    datagram; segments of a connection node-b's conntrack forgot, and stray ACKs, are dropped by the
    `--ctstate INVALID` rule, with its counter; a connection to a service without endpoints is refused
    by kube-proxy's REJECT, named with its service (shapes of the same run: tests/test_capture_shapes.py)."""
    out, bundle = edge_run
    truth = json.loads((out / "lab-edge.ground_truth.json").read_text())
    assert truth["client_results"]["fragmented"]["reply_bytes"] == truth["client_results"]["fragmented"]["bytes"]
    assert truth["client_results"]["no_endpoints"]["outcome"] == "ConnectionRefusedError"  # kube-proxy's REJECT
    with calforensics.open_bundle(bundle) as b:
        for check in EDGE_CHECKS:
            check(b, truth)


GONE_ENDPOINTS = """apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: gone-8xk2q
  namespace: default
  labels: {kubernetes.io/service-name: gone}
addressType: IPv4
endpoints:
- addresses: [192.168.20.77]
  conditions: {ready: false}
  nodeName: node-b
  targetRef: {kind: Pod, name: gone-0, namespace: default}
ports:
- {name: http, port: 8080, protocol: TCP}
"""


def test_a_refused_service_quotes_its_saved_backends(edge_run, tmp_path):
    """kube-proxy refuses the service without endpoints; with the service's EndpointSlice saved beside
    the bundle, the drop quotes it: one backend, not ready. Saved listings that do not name the
    service say there was no backend for it."""
    import tarfile

    out, bundle = edge_run
    truth = json.loads((out / "lab-edge.ground_truth.json").read_text())
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path, filter="data")
    root = next(p for p in tmp_path.iterdir() if p.is_dir())
    (root / "cluster" / "kubernetes").mkdir(parents=True, exist_ok=True)
    saved = root / "cluster" / "kubernetes" / "endpointslices.yaml"
    quoted = {}
    for case, text in (("slice", GONE_ENDPOINTS), ("other", GONE_ENDPOINTS.replace("gone", "kept"))):
        saved.write_text(text)
        with calforensics.open_bundle(root) as b:
            from groundtruth import flow_for

            gt = next(f for f in truth["flows"] if f["name"] == "no_endpoints")
            drop = calforensics.analyze(b).drops.set_index("flow_id").loc[int(flow_for(b, gt).flow_id)]
            assert drop.cause_kind == "no_endpoints"
            quoted[case] = [e["detail"] for e in drop.evidence if e["kind"] == "endpoints"]
    assert quoted["slice"] == [
        "EndpointSlice default/gone-8xk2q (cluster/kubernetes/endpointslices.yaml) lists 1 not ready: 192.168.20.77"
    ]
    assert quoted["other"] == ["the saved Endpoints and EndpointSlices list no backend for default/gone"]


def test_ip_pool_nat_outgoing_checked_against_the_egress_flow(edge_run, tmp_path):
    """node-a masquerades its pod's connection to node-b's own address (felix's cali-nat-outgoing): a
    pool that says natOutgoing true raises nothing, one that says false names that flow."""
    import tarfile

    out, bundle = edge_run
    truth = json.loads((out / "lab-edge.ground_truth.json").read_text())
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path, filter="data")
    root = next(p for p in tmp_path.iterdir() if p.is_dir())
    (root / "cluster" / "crd").mkdir(parents=True, exist_ok=True)
    said = {}
    for nat in ("true", "false"):
        (root / "cluster" / "crd" / "ippools.yaml").write_text(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: default-ipv4-ippool}\n"
            f"spec: {{cidr: 192.168.0.0/16, vxlanMode: Always, ipipMode: Never, natOutgoing: {nat}}}\n"
        )
        with calforensics.open_bundle(root) as b:
            from groundtruth import flow_for

            egress = int(flow_for(b, next(f for f in truth["flows"] if f["name"] == "egress")).flow_id)
            said[nat] = calforensics.analyze(b).findings["ip_pool_nat"]
    assert said["true"] == []
    assert [(m["pool"], m["nat_outgoing"], m["flow_ids"], m["said"]) for m in said["false"]] == [
        ("default-ipv4-ippool", False, [egress], "were masqueraded")
    ]


def test_a_policy_change_between_two_runs_is_the_diff(lab_run, tmp_path_factory):
    """The core run again with db's policy admitting the client (the cluster before the change): the
    diff from it to the core run names the client's connection to db as the one flow that changed,
    dropped by the end-of-tier rule of db's policy, whose counter moved."""
    out = tmp_path_factory.mktemp("lab-open")
    import lab

    before = lab.run(out, name="lab-open", policy="open")
    truth = json.loads((lab_run[0] / "lab-vxlan.ground_truth.json").read_text())
    assert json.loads((out / "lab-open.ground_truth.json").read_text())["client_results"]["denied"]["outcome"] == "connected"
    d = calforensics.diff(before, lab_run[1])
    denied = next(f for f in truth["flows"] if f["name"] == "denied")
    assert [(f["server_ip"], f["old"], f["new"]) for f in d["flows"]["changed_verdict"]] == [
        (denied["server_ip"], {"delivered": 1}, {"dropped": 1})
    ]
    (new,) = d["drops"]["new"]
    assert (new["cause"]["kind"], new["cause"]["chain"]) == ("end_of_tier", denied["drop"]["chain"])
    assert d["rule_counters"][0]["chain"] == denied["drop"]["chain"] and d["rule_counters"][0]["old"] == 0


@pytest.fixture(scope="module")
def nft_runs(tmp_path_factory):
    return {s: scenario_run(tmp_path_factory, s, rules="nft") for s in ("core", "edge")}


def rule_answers(bundle: Path, truth: dict) -> dict:
    """Per ground-truth flow: what the rules let the analysis say (verdict, service, backend, and a
    drop's cause with its chain as iptables names it, its policy, and whether its counter covers the
    packets lost), and per node the dataplane and kube-proxy mode."""
    from groundtruth import flow_for

    from calforensics.analyses.drops import find_drops
    from calforensics.ingest.parsers.nft import iptables_chain_name

    out = {}
    with calforensics.open_bundle(bundle) as b:
        drops = find_drops(b).set_index("flow_id")
        for gt in truth["flows"]:
            f = flow_for(b, gt)
            answer = [f.verdict, f.service, f.backend_ip, int(f.backend_port)]
            if int(f.flow_id) in drops.index:
                d = drops.loc[int(f.flow_id)]
                counted = int(d.cause_counter_packets)
                answer += [d.cause_kind, d.cause_node, iptables_chain_name(d.cause_chain), d.cause_policy]
                answer += ["no counter" if counted < 0 else counted >= int(d.packets)]
            out[gt["name"]] = answer
        modes = {r.node: (r.mode, r.kube_proxy) for r in b.dataplane.itertuples()}
        assert len(b.anomalies) == 0, b.anomalies.head()
    return {"flows": out, "modes": modes}


def test_rule_shapes_give_the_same_answer(lab_run, edge_run, nft_runs):
    """The same runs with their rules written by Calico's nftables dataplane and kube-proxy's nftables
    mode (real `nft` on the lab's kernel) give the same verdicts, services, backends, drop causes,
    chains and policies as with iptables. kube-proxy's nftables mode keeps no counters: its service
    without endpoints is named by a map element, and the answer says there is no counter."""
    runs = {
        "core": (lab_run[0] / "lab-vxlan.ground_truth.json", lab_run[1]),
        "edge": (edge_run[0] / "lab-edge.ground_truth.json", edge_run[1]),
    }
    for scenarios, (truth_file, bundle) in runs.items():
        iptables = rule_answers(bundle, json.loads(truth_file.read_text()))
        out, nft_bundle = nft_runs[scenarios]
        nft = rule_answers(nft_bundle, json.loads((out / f"lab-{scenarios}-nft.ground_truth.json").read_text()))
        assert set(iptables["modes"].values()) == {("iptables", "iptables")}
        assert set(nft["modes"].values()) == {("nftables", "nftables")}
        for name, answer in iptables["flows"].items():
            expected = list(answer)
            if name == "no_endpoints":
                assert answer[4:7] == ["no_endpoints", "node-a", "KUBE-SERVICES"] and answer[-1] is True
                expected[6], expected[-1] = "no-endpoint-services", "no counter"  # a map element, uncounted
            assert nft["flows"][name] == expected, (scenarios, name)


@pytest.fixture(scope="module")
def dialect_runs(tmp_path_factory):
    return {d: scenario_run(tmp_path_factory, "core", dialect=d) for d in ("v3.28", "v3.32")}


def test_felix_releases_give_the_same_answer(lab_run, dialect_runs):
    """The core run with its rules as felix v3.28 writes them (no tier comments, `Drop if no policies
    passed packet`, kube-proxy's older `<spn>` endpoint comments) and as v3.32 does (`NetworkPolicy
    <ns>/<name> ingress`, the policy chain hashed from `np/<ns>/<name>`) gives the same verdicts,
    services, backends and drops, each drop naming the policy as that release names it; the release
    range the rules allow is read from them."""
    base = rule_answers(lab_run[1], json.loads((lab_run[0] / "lab-vxlan.ground_truth.json").read_text()))
    releases = {"v3.28": "<=v3.29", "v3.32": ">=v3.32"}
    for dialect, (out, bundle) in dialect_runs.items():
        truth = json.loads((out / f"lab-core-{dialect}.ground_truth.json").read_text())
        answers = rule_answers(bundle, truth)
        assert answers["modes"] == base["modes"]
        for name, answer in base["flows"].items():
            expected = list(answer)
            if name == "denied":  # the policy as the release names it
                expected[7] = next(f for f in truth["flows"] if f["name"] == "denied")["drop"]["policy"]
            assert answers["flows"][name] == expected, (dialect, name)
        with calforensics.open_bundle(bundle) as b:
            versions = dict(zip(b.dataplane.node, b.dataplane.calico_version, strict=True))
        assert versions["node-b"] == releases[dialect], versions  # node-b holds the policy's chains


@pytest.fixture(scope="module")
def dual_run(tmp_path_factory):
    return scenario_run(tmp_path_factory, "dual")


def test_live_dual_stack_run_matches_ground_truth(dual_run):
    """IPv4 and IPv6 side by side: an IPv6 connection, an IPv6 ClusterIP, an IPv6 policy drop with its
    ip6tables rule, ICMPv6 Packet Too Big and the pod's own IPv6 fragments, VXLAN over IPv6 at 70 bytes."""
    out, bundle = dual_run
    truth = json.loads((out / "lab-dual.ground_truth.json").read_text())
    results = truth["client_results"]
    assert results["denied_v6"]["outcome"] == "TimeoutError" and results["mtu_v6"]["reply"] == 1452
    with calforensics.open_bundle(bundle) as b:
        for check in DUAL_CHECKS:
            check(b, truth)
        read = b.captures.set_index(["node", "interface"])["packets"]
        for node in truth["nodes"]:  # what tcpdump wrote is what we read, and the kernel dropped nothing
            meta = json.loads(Path(b._mat.root, f"lab-dual/nodes/{node}/metadata.json").read_text())
            for i in meta["capture"]["interfaces"]:
                assert i["packets_captured"] == int(read[(node, i["name"])]) and i["dropped_by_kernel"] == 0, i


def test_lab_left_no_namespaces_behind(lab_run, edge_run, dual_run):
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "cflab" not in listing


def test_collector_records_missing_tools_and_carries_on(tmp_path, monkeypatch):
    from calforensics.collect import collector as collect

    real_which = shutil.which
    monkeypatch.setattr(
        collect.shutil, "which", lambda tool: None if tool in ("conntrack", "nft") else real_which(tool)
    )
    c = collect.Collector(collect.CollectOptions(out=tmp_path, node="n1"))
    c.dump_state()
    c.write_metadata()
    meta = json.loads((tmp_path / "nodes" / "n1" / "metadata.json").read_text())
    assert {"conntrack", "nft"} <= set(meta["missing_tools"])
    missing = {e["file"] for e in meta["commands"] if e.get("missing")}
    assert {"conntrack-list.txt", "nft-ruleset.txt"} <= missing
    assert not (tmp_path / "nodes" / "n1" / "conntrack-list.txt").exists()
    if real_which("ip"):
        assert (tmp_path / "nodes" / "n1" / "ip-link.txt").stat().st_size > 0


def test_collector_refuses_unknown_namespace(tmp_path):
    from calforensics.collect import collector as collect

    with pytest.raises(collect.CollectError, match="does not exist"):
        collect.Collector(collect.CollectOptions(out=tmp_path, netns="no-such-netns-cf"))
