"""kube-proxy's modes on the same events: the lab's VXLAN run, and that run rewritten as kube-proxy's
IPVS mode leaves it (sample_data/ipvs.py: this kernel has no ip_vs), give the same verdicts, paths,
backends and drops; the service is named by the listing (its port's number, where iptables comments
carry the port's name). The `ipvsadm` forms are read as ipvsadm.c prints them."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT, SAMPLES
from groundtruth import check_bundle, flow_for

import calforensics
from calforensics.analyses.drops import find_drops
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers.ipvs import parse_ipvsadm

sys.path.insert(0, str(ROOT / "sample_data"))


@pytest.fixture(scope="module")
def ipvs_bundle(tmp_path_factory):
    import ipvs

    out = tmp_path_factory.mktemp("ipvs")
    return ipvs.convert(SAMPLES / "lab-vxlan.tgz", out / "lab-ipvs.tgz")


def answers(bundle, truth: dict) -> dict:
    out = {}
    with calforensics.open_bundle(bundle) as b:
        drops = find_drops(b).set_index("flow_id")
        for gt in truth["flows"]:
            f = flow_for(b, gt)
            answer = [f.verdict, f.path_fwd, f.path_rev, f.backend_ip, int(f.backend_port), f.service.split(":")[0]]
            if int(f.flow_id) in drops.index:
                d = drops.loc[int(f.flow_id)]
                answer += [d.cause_kind, d.cause_chain, d.cause_policy, int(d.cause_counter_packets)]
            out[gt["name"]] = answer
    return out


def test_ipvs_mode_gives_the_iptables_answer(ipvs_bundle):
    truth = json.loads(ipvs_bundle.with_name("lab-ipvs.ground_truth.json").read_text())
    with calforensics.open_bundle(ipvs_bundle) as b:
        check_bundle(b, truth)  # ground truth: the service's real server from ipvsadm, the flows, the drops
        dp = b.dataplane.set_index("node")
        assert set(dp.kube_proxy.astype(str)) == {"ipvs"}
        assert all("ipvsadm virtual services" in w and "kube-ipvs0" in w for w in dp.kube_proxy_from)
        # the ClusterIP on kube-ipvs0 is every node's and no node's: a flow to it is not to the node
        assert "10.96.0.50" not in b.owners
        cluster_ip = flow_for(b, next(f for f in truth["flows"] if f["name"] == "cluster_ip"))
        assert (cluster_ip.service, str(cluster_ip.service_via)) == ("default/web:80", "ipvs")
    vxlan_truth = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
    assert answers(ipvs_bundle, truth) == answers(SAMPLES / "lab-vxlan.tgz", vxlan_truth)


IPVSADM = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 172.18.0.2:6443              Masq    1      3          0
TCP  10.96.0.50:80 sh persistent 10800
  -> 192.168.20.7:8080            Masq    1      2          5
  -> 192.168.20.8:8080            Masq    0      0          1
UDP  10.96.0.10:53 rr
TCP  [fd00:96::50]:80 rr
  -> [fd10::1407]:8080            Masq    1      0          0
FWM  5 rr
"""
IPVSADM_STATS = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.96.0.50:80                      12      345      300 123456K     9876M
  -> 192.168.20.7:8080                  12      345      300 123456K     9876M
"""
IPVSADM_RATE = """Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.96.0.50:80                       1        6        5      400      300
  -> 192.168.20.7:8080                   1        6        5      400      300
"""
IPVSADM_SAVE = """-A -t 10.96.0.50:80 -s rr
-a -t 10.96.0.50:80 -r 192.168.20.7:8080 -m -w 1
-A -u 10.96.0.10:53 -s rr
-a -u 10.96.0.10:53 -r 10.244.0.2:53 -m -w 1
"""


def parse(text: str):
    log = AnomalyLog("ipvs", "f")
    return parse_ipvsadm(text.split("\n"), log, "n1", "f"), log


def test_ipvsadm_listing_forms():
    df, log = parse(IPVSADM)
    assert not log.rows
    real = df[df.kind == "real"]
    got = list(zip(real.proto, real.vip, real.vport, real.backend_ip, real.backend_port, real.weight, real.inactive_conns, strict=True))
    assert got == [
        ("tcp", "10.96.0.1", 443, "172.18.0.2", 6443, 1, 0),
        ("tcp", "10.96.0.50", 80, "192.168.20.7", 8080, 1, 5),
        ("tcp", "10.96.0.50", 80, "192.168.20.8", 8080, 0, 1),
        ("tcp", "fd00:96::50", 80, "fd10::1407", 8080, 1, 0),
    ]
    services = df[df.kind == "service"].set_index("line")
    assert services.loc[6, ["scheduler", "flags"]].tolist() == ["sh", "persistent 10800"]
    assert (services.loc[12, "proto"], services.loc[12, "fwmark"]) == ("fwmark", 5)
    stats, log = parse(IPVSADM_STATS)  # without --exact, 100 million and more print in thousands, millions…
    assert not log.rows and stats.in_bytes.tolist() == [123456000] * 2 and stats.out_bytes.tolist() == [9876000000] * 2
    rate, log = parse(IPVSADM_RATE)
    assert not log.rows and rate.backend_ip.tolist() == ["", "192.168.20.7"]
    saved, log = parse(IPVSADM_SAVE)
    assert not log.rows
    from calforensics.ingest.layout import sniff_text  # `ipvsadm -S` is not taken for `iptables -S`

    assert sniff_text("rules", IPVSADM_SAVE.split("\n")) == "ipvs"
    assert saved[saved.kind == "real"][["proto", "backend_ip", "forward"]].values.tolist() == [
        ["tcp", "192.168.20.7", "Masq"],
        ["udp", "10.244.0.2", "Masq"],
    ]
    broken, log = parse(IPVSADM.replace("  -> 192.168.20.8:8080            Masq    0      0          1", "  -> 192.168.20.8:8080  Masq x"))
    assert len(log.rows) == 1 and len(broken) == len(df) - 1  # the damaged line, and only it, is an anomaly


IPSET_LIST = """Name: KUBE-CLUSTER-IP
Type: hash:ip,port
Revision: 6
Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5e2a1f6c
Size in memory: 408
References: 2
Number of entries: 2
Members:
10.96.0.50,tcp:80
10.96.0.10,udp:53

Name: KUBE-NODE-PORT-TCP
Type: bitmap:port
Revision: 3
Header: range 0-65535
Size in memory: 8268
References: 1
Number of entries: 1
Members:
30080

Name: cali40s:LrVD8vMIGQDyv8Y7sPFB1Ge
Type: hash:net
Revision: 7
Header: family inet hashsize 1024 maxelem 1048576 comment bucketsize 12 initval 0x1c2b3a4d
Size in memory: 552
References: 1
Number of entries: 1
Members:
192.168.10.5 comment "default/client"
"""


def test_ipset_list_and_ipvs_mode_without_ipvsadm(ipvs_bundle, tmp_path):
    """`ipset list` as ipset prints it; an IPVS-mode bundle without ipvsadm still names its frontends
    and its mode from kube-proxy's sets."""
    import tarfile

    from calforensics.ingest.parsers.ipset import parse_ipset

    log = AnomalyLog("ipsets", "f")
    df = parse_ipset([*IPSET_LIST.split("\n"), "stray line"], log, "n1", "f")
    assert list(zip(df["set"], df.member, df.comment, strict=True)) == [
        ("KUBE-CLUSTER-IP", "10.96.0.50,tcp:80", ""),
        ("KUBE-CLUSTER-IP", "10.96.0.10,udp:53", ""),
        ("KUBE-NODE-PORT-TCP", "30080", ""),
        ("cali40s:LrVD8vMIGQDyv8Y7sPFB1Ge", "192.168.10.5", "default/client"),
    ]
    assert [r[4] for r in log.rows] == ["unparsed_line"]
    with tarfile.open(ipvs_bundle) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-ipvs"
    for path in root.glob("nodes/*/ipvsadm*.txt"):
        path.unlink()
    truth = json.loads(ipvs_bundle.with_name("lab-ipvs.ground_truth.json").read_text())
    gt = next(f for f in truth["flows"] if f["name"] == "cluster_ip")
    with calforensics.open_bundle(root) as b:
        assert set(b.dataplane.kube_proxy.astype(str)) == {"ipvs"} and len(b.ipsets) > 0
        f = flow_for(b, gt)
        assert (f.service, str(f.service_via), f.backend_ip) == (gt["service"], "ipset", gt["backend_ip"])


KUBE_FRONTENDS = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-EXT-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-FW-BBBBBBBBBBBBBBBB - [0:0]
:KUBE-SVC-CCCCCCCCCCCCCCCC - [0:0]
-A KUBE-SERVICES -d 10.96.7.7/32 -p tcp -m comment --comment "shop/front:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-CCCCCCCCCCCCCCCC
-A KUBE-SERVICES -d 198.51.100.7/32 -p tcp -m comment --comment "shop/front:http external IP" -m tcp --dport 80 -j KUBE-EXT-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -d 203.0.113.9/32 -p tcp -m comment --comment "shop/front:http loadbalancer IP" -m tcp --dport 80 -j KUBE-FW-BBBBBBBBBBBBBBBB
-A KUBE-NODEPORTS -p tcp -m comment --comment "shop/front:http" -m tcp --dport 31080 -j KUBE-EXT-AAAAAAAAAAAAAAAA
-A KUBE-EXT-AAAAAAAAAAAAAAAA -j KUBE-SVC-CCCCCCCCCCCCCCCC
-A KUBE-FW-BBBBBBBBBBBBBBBB -j KUBE-EXT-AAAAAAAAAAAAAAAA
COMMIT
"""


def test_every_frontend_of_a_service_is_named():
    """ClusterIP, external IP, LoadBalancer IP and NodePort of one service, in kube-proxy's iptables
    mode: each dialled address names it."""
    from calforensics.ingest.parsers.iptables import parse_iptables_save
    from calforensics.meaning.rules import add_rule_meaning
    from calforensics.meaning.services import build_services

    rules = add_rule_meaning(parse_iptables_save(KUBE_FRONTENDS.split("\n"), AnomalyLog("r", "f"), "n1", "f"))
    services = build_services(rules, node_ips={"10.0.0.11"})
    for address, port in (("10.96.7.7", 80), ("198.51.100.7", 80), ("203.0.113.9", 80), ("10.0.0.11", 31080)):
        assert services.dialled(address, port, "tcp")[0] == "shop/front:http", address
    assert services.dialled("10.0.0.12", 31080, "tcp") == ("", "")  # not a node address


OLDER_TURN_AWAY = """*nat
:KUBE-XLB-DDDDDDDDDDDDDDDD - [0:0]
:KUBE-FW-EEEEEEEEEEEEEEEE - [0:0]
[3:180] -A KUBE-XLB-DDDDDDDDDDDDDDDD -m comment --comment "shop/local:http has no local endpoints" -j KUBE-MARK-DROP
[2:120] -A KUBE-FW-EEEEEEEEEEEEEEEE -m comment --comment "shop/front:http loadbalancer IP" -j KUBE-MARK-DROP
COMMIT
"""


@pytest.mark.parametrize(
    "service, kind, chain, counted",
    [
        ("shop/local:http", "no_local_endpoints", "KUBE-XLB-DDDDDDDDDDDDDDDD", 3),
        ("shop/front:http", "lb_source_range", "KUBE-FW-EEEEEEEEEEEEEEEE", 2),
    ],
)
def test_older_kube_proxy_mark_drop_is_named_by_what_it_turns_away(service, kind, chain, counted):
    """Older kube-proxy marks packets for KUBE-FIREWALL to drop (KUBE-MARK-DROP): from its KUBE-XLB chain
    for a service with no local endpoints, from its KUBE-FW chain for a source outside a LoadBalancer's
    ranges. A flow dialling the service and never answered is put down to the rule that marked it."""
    from types import SimpleNamespace

    from calforensics.analyses.drops import _service_cause
    from calforensics.ingest.parsers.iptables import parse_iptables_save
    from calforensics.meaning.rules import add_rule_meaning

    rules = add_rule_meaning(parse_iptables_save(OLDER_TURN_AWAY.split("\n"), AnomalyLog("r", "f"), "node-a", "f"))
    flow = SimpleNamespace(
        backend_ip="", path_fwd="node-a:eth0", server_ip="203.0.113.9", server_port=80, service=service
    )
    cause, evidence = _service_cause(rules[rules.kind == "rule"], flow)
    assert (cause["kind"], cause["chain"], cause["counter_packets"]) == (kind, chain, counted)
    assert "marked for drop" in evidence["detail"] and service in evidence["detail"]
    other = SimpleNamespace(**{**vars(flow), "service": "shop/other:http"})
    assert _service_cause(rules[rules.kind == "rule"], other) == (None, None)
