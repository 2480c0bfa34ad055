"""Real outputs from other people's nodes (../shared/realworld, provenance in its MANIFEST.tsv): Calico
Felix's own iptables and nft test dumps and a kube-proxy node's iptables, and pcapng files written by
another CNI's packet capture. Each must read without one unparsed line and mean what we know it holds."""

from __future__ import annotations

import csv

import pytest

import calforensics
from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers.iptables import parse_iptables_save
from calforensics.ingest.parsers.nft import parse_nft_ruleset
from calforensics.meaning.rules import add_rule_meaning


def read(realworld, name: str, parser):
    log = AnomalyLog("rules", name)
    df = add_rule_meaning(parser((realworld / name).read_text().split("\n"), log, "n1", name))
    assert log.rows == [], log.rows[:3]
    return df


def test_the_manifest_lists_what_is_tested(realworld):
    with open(realworld / "MANIFEST.tsv", newline="") as fh:
        files = {row["file"] for row in csv.DictReader(fh, delimiter="\t")}
    assert files == {p.name for p in realworld.iterdir() if p.name not in ("MANIFEST.tsv", "README.md")}


def test_felix_iptables_dump(realworld):
    """iptables-save v1.8.4 of a Calico dev node: four tables, chain counters only."""
    df = read(realworld, "iptables__projectcalico_calico__fv-cali-iptables-dump.txt", parse_iptables_save)
    assert df.kind.value_counts().to_dict() == {"rule": 57, "chain": 40}
    assert set(df.table) == {"filter", "raw", "mangle", "nat"}
    felix = df[df.chain.str.startswith("cali-")]
    assert (felix.calico_chain != "").all() and (felix[felix.kind == "rule"].rule_hash != "").all()
    dispatch = df[(df.calico_chain == "dispatch") & (df.kind == "rule")]
    assert dispatch.comment.tolist() == ["Unknown interface", "Unknown interface"]
    assert set(dispatch.action) == {"drop"}


def test_kube_proxy_node_iptables_dump(realworld):
    """A kube-proxy + docker node (iptables-save v1.8.3): kube-dns without endpoints, the kubernetes
    service with one endpoint; the shared KUBE-MARK-MASQ chain is no service's."""
    df = read(realworld, "iptables__projectcalico_calico__fv-iptables-dump.txt", parse_iptables_save)
    rejected = df[df.drop_kind == "no_endpoints"]
    assert sorted(zip(rejected.service, rejected.service_ip, rejected.service_port, strict=True)) == [
        ("kube-system/kube-dns:dns", "10.96.0.10", 53),
        ("kube-system/kube-dns:dns-tcp", "10.96.0.10", 53),
        ("kube-system/kube-dns:metrics", "10.96.0.10", 9153),
    ]
    dnat = df[df.action == "dnat"]
    assert list(zip(dnat.service, dnat.endpoint, strict=True)) == [("default/kubernetes:https", "10.128.0.183:6443")]
    assert set(df[df.chain == "KUBE-MARK-MASQ"].service) == {""}
    from calforensics.meaning.services import build_services

    assert build_services(df).dialled("10.96.0.1", 443, "tcp") == ("default/kubernetes:https", "kube-proxy")


def test_felix_nft_dump(realworld):
    """`nft list ruleset` of a Calico nftables-mode dev node: chains named with their layer, sets whose
    elements wrap over lines."""
    df = read(realworld, "nft__projectcalico_calico__fv-cali-nftables-dump.txt", parse_nft_ruleset)
    assert df.kind.value_counts().to_dict() == {"rule": 62, "chain": 14, "element": 9}
    elements = df[df.kind == "element"].groupby("chain").match.apply(list).to_dict()
    assert elements["cali40this-host"] == ["10.128.0.212", "127.0.0.0", "127.0.0.1", "192.168.122.1"]
    assert elements["cali40all-vxlan-net"] == ["10.128.0.208", "10.128.0.211", "10.128.0.213"]
    assert set(df[df.chain == "filter-cali-from-wl-dispatch"].calico_chain) == {"dispatch"}
    accept = df[df.comment == "Policy explicitly accepted packet."]
    assert accept.action.tolist() == ["accept"] and accept.chain.tolist() == ["filter-FORWARD"]


@pytest.mark.parametrize(
    "name, client, server, proto, flows, packets",
    [
        ("pcap__antrea-io_antrea__lfx-packetcapture-icmp.pcapng", "10.244.1.3", "8.8.8.8", "icmp", 1, 10),
        ("pcap__antrea-io_antrea__lfx-packetcapture-tcp-syn-53.pcapng", "10.244.1.2", "8.8.8.8", "tcp", 5, 5),
    ],
)
def test_another_cnis_packet_capture(realworld, name, client, server, proto, flows, packets):
    """pcapng written by Antrea's PacketCapture: ten echo requests, five SYNs to port 53, nothing back."""
    with calforensics.open_bundle(realworld / name) as b:
        assert len(b.anomalies) == 0 and len(b.packets) == packets
        f = b.flows
        assert len(f) == flows and set(f.client_ip) == {client} and set(f.server_ip) == {server}
        assert set(f.proto) == {proto} and int(f.packets_fwd.sum()) == packets and int(f.packets_rev.sum()) == 0
        if proto == "tcp":  # SYNs never answered: each its own connection attempt, dropped
            assert set(f.server_port) == {53} and set(f.verdict) == {"dropped"} and f.client_port.nunique() == 5
