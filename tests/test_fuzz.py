"""Property-based tests of the text parsers (hypothesis): arbitrary text and mutated real lines never
raise (what cannot be read becomes anomaly rows), and valid lines generated from random fields
parse back to the same fields.

The real lines are the sample bundle's own files, one per parser; mutations delete, insert,
duplicate, replace and cut characters and whole tokens, the damage a full disk or an error message
printed into a dump does.
"""

import struct
import tarfile

import pandas as pd
import pytest
from conftest import SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calforensics.anomalies import AnomalyLog
from calforensics.ingest.parsers import (
    bpftool,
    calico_bpf,
    conntrack,
    crictl,
    flowlogs,
    iproute,
    ipset,
    iptables,
    ipvs,
    kubectl,
    nft,
    platform,
    resources,
    sysctl,
    traces,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sample_lines() -> dict[str, list[str]]:
    """node-a's text files of the VXLAN sample, by file name."""
    out = {}
    with tarfile.open(SAMPLE) as tar:
        for member in tar.getmembers():
            if member.isfile() and "/node-a/" in member.name and member.name.endswith(".txt"):
                out[member.name.rsplit("/", 1)[1]] = tar.extractfile(member).read().decode().splitlines()
    return out


SAMPLE_LINES = _sample_lines()
# calico-node -bpf dumps (text and JSON), bpftool, trace lines and a pod listing, in the forms
# formats.md gives (the sample bundle is iptables mode and has none of them)
BPF_CT = [
    "ConntrackKey{proto=17 10.48.0.2:53 <-> 10.48.0.135:36450} -> Entry{Type:0, Created:13280597154143, "
    "LastSeen:13280597444227, Flags: 0x110 B-A Data: {A2B:{Bytes:225 Packets:1 Seqno:0 SynSeen:false AckSeen:false "
    "FinSeen:false RstSeen:false Whitelisted:true Opener:false Ifindex:2} B2A:{Bytes:80 Packets:1 Seqno:0 "
    "SynSeen:false AckSeen:false FinSeen:false RstSeen:false Whitelisted:true Opener:true Ifindex:15} "
    "OrigDst:0.0.0.0 OrigSrc:0.0.0.0 OrigPort:0 OrigSPort:0 TunIP:0.0.0.0}} Age: 24.318178817s Active ago 24.317888733s",
    "TCP 10.0.0.1:4321 -> 10.96.0.10:80 -> 10.48.0.5:8080  Active ago 1.5s ESTABLISHED",
]
BPF_CT_JSON = [
    '[{"type": "nat", "proto": "TCP", "src": "10.0.0.1:4321", "dst": "10.48.0.5:8080", "orig_dst": "10.96.0.10:80", '
    '"flags": ["B-A"], "active_ago": "2s", "tcp_state": "ESTABLISHED"}]'
]
BPF_NAT = ["10.49.18.111 port 80 proto 6 id 23 count 2 local 0", "\t23:0\t 10.48.0.210:80", "\t23:1\t 10.48.0.212:80"]
BPF_ROUTES = [
    "   10.0.1.20/32: local host",
    "   10.48.0.0/26: remote workload in-pool nat-out nh 10.0.1.31",
    " 10.48.0.128/32: local workload in-pool nat-out idx 4",
]
BPF_COUNTERS = [
    "+----------+-------------------+---------+--------+-----+",
    "| CATEGORY |       TYPE        | INGRESS | EGRESS | XDP |",
    "+----------+-------------------+---------+--------+-----+",
    "| Dropped  | by policy         |       5 |      0 | N/A |",
    "+----------+-------------------+---------+--------+-----+",
    "dumped cali1234 counters.",
]
BPFTOOL = [
    "key: 0a 00 00 01 0a 60 00 32  9c 40 00 50 06 00 00 00  value: 01 00 00 00 00 00 00 00",
    "Found 1 element",
]
TRACES = [
    "[ 1234.567890] TRACE: filter:cali-tw-cali1234:rule:5 IN=vxlan.calico OUT=cali1234 MAC=aa SRC=10.0.0.1 "
    "DST=10.0.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=4242 DF PROTO=TCP SPT=40000 DPT=5432 WINDOW=64240 RES=0x00 "
    "SYN URGP=0 MARK=0x20000",
    "trace id 8b1c9d6a ip filter FORWARD rule ip daddr 10.0.0.2 counter packets 0 bytes 0 drop (verdict drop)",
]
BPF_TRACES = [  # Calico's BPF debug log (formats as in the eBPF reference, C.4)
    "  <idle>-0 [001] d.s. 912.120001: bpf_trace_printk: cali1f808cfe5dc-I: New packet at ifindex=9; mark=0",
    "  <idle>-0 [001] d.s. 912.120002: bpf_trace_printk: cali1f808cfe5dc-I: IP src=10.0.1.5 dst=10.0.2.9",
    "  <idle>-0 [001] d.s. 912.120004: bpf_trace_printk: cali1f808cfe5dc-I: DENY due to policy",
    "  <idle>-0 [002] d.s. 913.000001: bpf_trace_printk: eth0------------I: Final result=ALLOW rc 0.",
]
SERVICES = [
    "NAMESPACE     NAME         TYPE           CLUSTER-IP     EXTERNAL-IP    PORT(S)                  AGE",
    "kube-system   kube-dns     ClusterIP      10.96.0.10     <none>         53/UDP,53/TCP,9153/TCP   9d",
    "shop          front        LoadBalancer   10.96.7.7      203.0.113.9    80:31080/TCP             2d",
]
PODS = [
    "NAMESPACE     NAME      READY   STATUS    RESTARTS      AGE   IP             NODE     NOMINATED NODE   READINESS GATES",
    "default       client    1/1     Running   2 (5m ago)    10m   192.168.10.5   node-a   <none>           <none>",
]
ENDPOINT_LISTINGS = [  # kubectl get endpoints, then endpointslices (one file may hold several tables)
    "NAMESPACE   NAME   ENDPOINTS                                   AGE",
    "shop        web    192.168.20.7:8080,[fd10::7]:8080            3d",
    "",
    "NAMESPACE   NAME        ADDRESSTYPE   PORTS     ENDPOINTS                     AGE",
    "shop        web-x7k2p   IPv4          8080      192.168.20.7,192.168.20.8     3d",
]
NODE_LISTINGS = [
    "NAME     STATUS   ROLES           AGE   VERSION   INTERNAL-IP   EXTERNAL-IP   OS-IMAGE             KERNEL-VERSION",
    "node-a   Ready    control-plane   9d    v1.31.1   172.18.0.2    <none>        Ubuntu 24.04.1 LTS   6.8.0-45-generic",
    "",
    "NAME     ASN       IPV4            IPV6",
    "node-b   (64512)   172.18.0.3/16   ",
]
CALICO_LISTINGS = [  # calicoctl get ippools -o wide, workloadendpoints, networkpolicies -o wide
    "NAME                  CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR",
    "default-ipv4-ippool   192.168.0.0/16   true   Never      Always      false      false              all()",
]
WEP_LISTING = [
    "NAMESPACE   WORKLOAD   NODE     NETWORKS          INTERFACE",
    "shop        web-1      node-b   192.168.20.7/32   cali0123456789a",
]
CRICTL_PODS = [  # crictl pods (cri-tools' tabwriter: minwidth 20, padding 3)
    "POD ID              CREATED          STATE   NAME   NAMESPACE   ATTEMPT   RUNTIME",
    "7f3c2a1b9d8e4       12 minutes ago   Ready   web    default     0         (default)",
]
CRICTL_INSPECTP = [  # crictl inspectp (-o json)
    "{",
    '  "status": {',
    '    "id": "9e1d",',
    '    "metadata": {"attempt": 0, "name": "web", "namespace": "default", "uid": "b4c1"},',
    '    "state": "SANDBOX_READY",',
    '    "network": {"additionalIps": [{"ip": "fd10::7"}], "ip": "192.168.20.7"}',
    "  },",
    '  "info": {"pid": 4242}',
    "}",
]
POLICY_LISTING = [
    "NAMESPACE   NAME                   TIER      ORDER   SELECTOR",
    "secure      default.db-allow-app   default   100     app == 'db'",
]
NFT_KUBE_PROXY = [  # kube-proxy's nftables mode as `nft -n -a list ruleset` prints it (the lab's kernel)
    "table ip kube-proxy { # handle 2",
    '\tcomment "rules for kube-proxy"',
    "\tmap service-ips { # handle 12",
    "\t\ttype ipv4_addr . inet_proto . inet_service : verdict",
    '\t\tcomment "ClusterIP, ExternalIP and LoadBalancer IP traffic"',
    "\t\telements = { 10.96.0.50 . 6 . 80 : goto service-SUSTUHLJ-default/web/tcp/http,",
    "\t\t\t     10.96.0.10 . 17 . 53 : goto service-FY5PMXPG-kube-system/kube-dns/udp/dns }",
    "\t}",
    "\tmap no-endpoint-services { # handle 13",
    "\t\ttype ipv4_addr . inet_proto . inet_service : verdict",
    '\t\telements = { 10.96.0.70 . 6 . 80 comment "default/gone:http" : goto reject-chain }',
    "\t}",
    "\tchain reject-chain { # handle 9",
    '\t\tcomment "helper for @no-endpoint-services / @no-endpoint-nodeports"',
    "\t\treject # handle 22",
    "\t}",
    "\tchain service-SUSTUHLJ-default/web/tcp/http { # handle 10",
    "\t\tip daddr 10.96.0.50 tcp dport 80 ip saddr != 192.168.0.0/16 jump mark-for-masquerade # handle 26",
    "\t\tnumgen random mod 2 vmap { 0 : goto endpoint-YKFLT22E-default/web/tcp/http__192.168.20.7/8080,",
    "\t\t\t1 : goto endpoint-AAAAAAAA-default/web/tcp/http__192.168.20.8/8080 } # handle 27",
    "\t}",
    "\tchain endpoint-YKFLT22E-default/web/tcp/http__192.168.20.7/8080 { # handle 11",
    "\t\tmeta l4proto 6 dnat to 192.168.20.7:8080 # handle 29",
    "\t}",
    "}",
]
BPF_IFSTATE = [  # calico-node -bpf ifstate dump: "%5d : " + Value.String() (felix/bpf/ifstate/map.go)
    "    4 : {flags: workload,v4Ready, XDPPolicyV4: -1, IngressPolicyV4: 3, EgressPolicyV4: 4, XDPPolicyV6: -1, "
    "IngressPolicyV6: -1, EgressPolicyV6: -1, IngressFilter: -1, EgressFilter: -1, name: calia7a3e029a7b}",
    "    2 : {flags: host,v4Ready, XDPPolicyV4: 0, IngressPolicyV4: 1, EgressPolicyV4: 2, XDPPolicyV6: -1, "
    "IngressPolicyV6: -1, EgressPolicyV6: -1, IngressFilter: -1, EgressFilter: -1, name: eth0}",
]
BPF_POLICY = [  # calico-node -bpf policy dump <iface> all (policy_debug.go, current form)
    "IfaceName: cali3a87a5219a9",
    "Hook: egress",
    "  Tier: default",
    "    Policy: NetworkPolicy secure/db-allow-app",
    "      Rule: secure/db-allow-app  Action: allow",
    "      Match: proto=tcp src={192.168.20.99/32} dport={5432}",
    "      Hit count: 0",
    "    End Policy: NetworkPolicy secure/db-allow-app",
    "  End Tier: default  (action: deny)",
]
FLOW_LOGS = [  # Goldmane's emitter (encoding/json of its Flow struct) and a Calico Enterprise flows.log line
    '{"Key":{"source_name":"client","source_namespace":"default","source_type":1,"dest_name":"db",'
    '"dest_namespace":"secure","dest_type":1,"dest_port":5432,"proto":"tcp","reporter":2,"action":2,'
    '"policies":{"enforced_policies":[{"kind":10,"tier":"default","action":2,"rule_index":-1,"trigger":{"kind":1,'
    '"namespace":"secure","name":"default.db-allow-app","tier":"default","action":2}}]}},"start_time":1700000000,'
    '"end_time":1700000015,"packets_out":4}',
    '{"start_time":1700000000,"end_time":1700000300,"source_ip":"192.168.10.5","source_name":"client",'
    '"source_name_aggr":"client","source_namespace":"default","source_port":40000,"source_type":"wep",'
    '"dest_ip":"192.168.20.9","dest_name":"db","dest_name_aggr":"db","dest_namespace":"secure","dest_port":5432,'
    '"dest_type":"wep","proto":"tcp","action":"deny","reporter":"dst","policies":{"all_policies":'
    '["0|default|secure/default.db-allow-app|deny|-1"]},"bytes_in":0,"bytes_out":240,"packets_in":0,'
    '"packets_out":4,"num_flows":1,"num_flows_started":1,"num_flows_completed":0,"host":"node-b"}',
]
IPVSADM = [  # ipvsadm -Ln, then --stats, as ipvsadm.c prints them
    "IP Virtual Server version 1.2.1 (size=4096)",
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    "TCP  10.96.0.50:80 rr persistent 10800",
    "  -> 192.168.20.7:8080            Masq    1      2          5",
    "UDP  [fd00:96::10]:53 rr",
    "  -> [fd10::1402]:53              Masq    1      0          0",
    "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
    "  -> RemoteAddress:Port",
    "TCP  10.96.0.50:80                      12      345      300 123456K     9876M",
    "  -> 192.168.20.7:8080                  12      345      300 123456K     9876M",
]
NFT_JSON = [  # `nft -j list ruleset` as the lab's kernel prints it (one document)
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, '
    '{"table": {"family": "ip", "name": "calico", "handle": 1}}, '
    '{"chain": {"family": "ip", "table": "calico", "name": "filter-FORWARD", "handle": 1, "type": "filter", '
    '"hook": "forward", "prio": 0, "policy": "accept"}}, '
    '{"rule": {"family": "ip", "table": "calico", "chain": "filter-cali-tw-cali3a87a5219a9", "handle": 59, '
    '"comment": "cali:dUDug0XetTiHckat; End of tier default. Drop if no policies passed packet", "expr": '
    '[{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 131072]}, "right": 0}}, '
    '{"counter": {"packets": 4, "bytes": 240}}, {"drop": null}]}}, '
    '{"map": {"family": "ip", "name": "service-ips", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto", '
    '"inet_service"], "handle": 12, "map": "verdict", "elem": [[{"concat": ["10.96.0.50", "tcp", 80]}, '
    '{"goto": {"target": "service-SUSTUHLJ-default/web/tcp/http"}}]]}}]}'
]
IPSET = [  # ipset list, as ipset prints it
    "Name: KUBE-CLUSTER-IP",
    "Type: hash:ip,port",
    "Revision: 6",
    "Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5e2a1f6c",
    "Size in memory: 408",
    "References: 2",
    "Number of entries: 2",
    "Members:",
    "10.96.0.50,tcp:80",
    '192.168.10.5 timeout 30 packets 4 bytes 240 comment "default/client"',
]
IPTABLES_S = [  # iptables -S as the lab's kernel prints it: no table headers
    "-P FORWARD ACCEPT",
    "-N cali-tw-cali3a87a5219a9",
    '-A FORWARD -m comment --comment "cali:MqxUPRsgvEGUAOEW" -j cali-FORWARD',
    '-A KUBE-SERVICES -d 10.96.0.70/32 -p tcp -m comment --comment "default/gone:http has no endpoints" -m tcp '
    "--dport 80 -j REJECT --reject-with icmp-port-unreachable",
    '-A cali-tw-cali3a87a5219a9 -m comment --comment "cali:dnXGRJh1csT7W47w" -m conntrack --ctstate INVALID -j DROP',
]
IPTABLES_L = [  # iptables -L -n -v -x --line-numbers, likewise
    "Chain FORWARD (policy ACCEPT 0 packets, 0 bytes)",
    "num      pkts      bytes target     prot opt in     out     source               destination",
    "1           0        0 cali-FORWARD  0    --  *      *       0.0.0.0/0            0.0.0.0/0            /* cali:MqxUPRsgvEGUAOEW */",
    "Chain KUBE-SERVICES (2 references)",
    "num      pkts      bytes target     prot opt in     out     source               destination",
    "1           3      180 REJECT     6    --  *      *       0.0.0.0/0            10.96.0.70           "
    "/* default/gone:http has no endpoints */ tcp dpt:80 reject-with icmp-port-unreachable",
]
RESOURCES = [  # kubectl get services,pods -o yaml
    "apiVersion: v1",
    "items:",
    "- apiVersion: v1",
    "  kind: Service",
    "  metadata: {name: web, namespace: default}",
    "  spec:",
    "    clusterIP: 10.96.0.50",
    "    ports:",
    "    - {name: http, port: 80, protocol: TCP, targetPort: 8080}",
    "- apiVersion: v1",
    "  kind: Pod",
    "  metadata: {name: client, namespace: default}",
    "  spec: {nodeName: node-a}",
    "  status: {phase: Running, podIP: 192.168.10.5}",
    "kind: List",
]
RESOURCES_POLICIES = [  # kubectl get networkpolicies -A -o yaml
    "apiVersion: v1",
    "items:",
    "- apiVersion: networking.k8s.io/v1",
    "  kind: NetworkPolicy",
    "  metadata: {name: web-from-client, namespace: default}",
    "  spec:",
    "    podSelector: {matchLabels: {app: web}}",
    "    policyTypes: [Ingress]",
    "    ingress:",
    "    - from: [{podSelector: {matchLabels: {app: client}}}]",
    "      ports: [{port: 8080, protocol: TCP}]",
    "kind: List",
]
RESOURCES_POOLS = [  # calicoctl get ippools -o yaml
    "apiVersion: projectcalico.org/v3",
    "items:",
    "- apiVersion: projectcalico.org/v3",
    "  kind: IPPool",
    "  metadata: {name: default-ipv4-ippool}",
    "  spec: {cidr: 192.168.0.0/16, ipipMode: Never, vxlanMode: Always, natOutgoing: true}",
    "kind: IPPoolList",
]
RESOURCES_ENDPOINTS = [  # kubectl get endpoints,endpointslices -o yaml
    "apiVersion: v1",
    "items:",
    "- apiVersion: v1",
    "  kind: Endpoints",
    "  metadata: {name: web, namespace: shop}",
    "  subsets:",
    "  - addresses: [{ip: 192.168.20.7, nodeName: node-b, targetRef: {kind: Pod, name: web-1}}]",
    "    notReadyAddresses: [{ip: 192.168.20.9}]",
    "    ports: [{name: http, port: 8080, protocol: TCP}]",
    "- apiVersion: discovery.k8s.io/v1",
    "  kind: EndpointSlice",
    "  metadata: {name: web-x7k2p, namespace: shop, labels: {kubernetes.io/service-name: web}}",
    "  endpoints: [{addresses: [192.168.20.7], conditions: {ready: true}}]",
    "  ports: [{name: http, port: 8080}]",
    "kind: List",
]
RESOURCES_NODES = [  # kubectl get nodes -o yaml (with Calico's annotations)
    "apiVersion: v1",
    "kind: Node",
    "metadata:",
    "  name: node-a",
    "  annotations: {projectcalico.org/IPv4Address: 172.18.0.2/16, projectcalico.org/IPv4VXLANTunnelAddr: 192.168.10.0}",
    "status:",
    "  addresses: [{type: InternalIP, address: 172.18.0.2}]",
]
PLATFORM = [  # cluster resources, a pod description and logs, in the forms platform.py reads
    "  spec:",
    "    calicoVersion: v3.29.2",
    '{"spec": {"calicoVersion": "v3.30.0", "bpfRedirectToPeer": "L2Only"}}',
    "    Image:          docker.io/calico/node:v3.29.2",
    "    bpfRedirectToPeer: Disabled",
    "    vxlanMTU: 1450",
    "    chainInsertMode: Append",
    '  veth_mtu: "1440"',
    "      FELIX_BPFENABLED:                   true",
    "      FELIX_IPINIPMTU:                    1480",
    '2026-12-01 09:00:01.234 [INFO][52] felix/daemon.go 366: Felix starting up GOMAXPROCS=4 version="v3.29.2"',
    "      kind: KubeProxyConfiguration",
    "      mode: ipvs",
    'I1221 03:23:16.189324       1 server_linux.go:132] "Using iptables Proxier"',
]

PARSERS = {
    "conntrack": (conntrack.parse_conntrack, SAMPLE_LINES["conntrack-list.txt"]),
    "iptables-save": (iptables.parse_iptables_save, SAMPLE_LINES["iptables-nft-save.txt"]),
    "iptables -S": (iptables.parse_iptables_save, IPTABLES_S),
    "iptables -L": (iptables.parse_iptables_save, IPTABLES_L),
    "nft": (nft.parse_nft_ruleset, SAMPLE_LINES["nft-ruleset.txt"]),
    "nft kube-proxy": (nft.parse_nft_ruleset, NFT_KUBE_PROXY),
    "nft json": (nft.parse_nft_ruleset, NFT_JSON),
    "ip link": (iproute.parse_ip_link, SAMPLE_LINES["ip-link.txt"] + SAMPLE_LINES["ip-addr.txt"]),
    "ip route": (iproute.parse_ip_route, SAMPLE_LINES["ip-route.txt"] + SAMPLE_LINES["ip-route-v6.txt"]),
    "sysctl": (sysctl.parse_sysctls, SAMPLE_LINES["sysctls.txt"]),
    "calico-bpf conntrack": (calico_bpf.parse_bpf_conntrack, BPF_CT),
    "calico-bpf conntrack json": (calico_bpf.parse_bpf_conntrack, BPF_CT_JSON),
    "calico-bpf nat": (calico_bpf.parse_bpf_nat, BPF_NAT),
    "calico-bpf routes": (calico_bpf.parse_bpf_routes, BPF_ROUTES),
    "calico-bpf counters": (calico_bpf.parse_bpf_counters, BPF_COUNTERS),
    "calico-bpf ifstate": (calico_bpf.parse_bpf_ifstate, BPF_IFSTATE),
    "calico-bpf policy": (calico_bpf.parse_bpf_policy, BPF_POLICY),
    "traces": (traces.parse_traces, TRACES),
    "bpf traces": (traces.parse_traces, BPF_TRACES),
    "kubectl": (kubectl.parse_pod_listing, PODS),
    "kubectl services": (kubectl.parse_service_listing, SERVICES),
    "kubectl endpoints": (kubectl.parse_endpoint_listing, ENDPOINT_LISTINGS),
    "kubectl nodes": (kubectl.parse_node_listing, NODE_LISTINGS),
    "calicoctl ippools": (kubectl.parse_pool_listing, CALICO_LISTINGS),
    "calicoctl workloadendpoints": (kubectl.parse_pod_listing, WEP_LISTING),
    "calicoctl policies": (kubectl.parse_policy_listing, POLICY_LISTING),
    "crictl pods": (kubectl.parse_pod_listing, CRICTL_PODS),
    "crictl inspectp json": (crictl.parse_crictl_inspect, CRICTL_INSPECTP),
    "resources endpoints": (resources.parse_endpoint_resources, RESOURCES_ENDPOINTS),
    "resources nodes": (resources.parse_node_resources, RESOURCES_NODES),
    "platform": (platform.parse_platform_evidence, PLATFORM),
    "ipvsadm": (ipvs.parse_ipvsadm, IPVSADM),
    "ipset": (ipset.parse_ipset, IPSET),
    "resources pods": (resources.parse_pod_resources, RESOURCES),
    "resources services": (resources.parse_service_resources, RESOURCES),
    "resources policies": (resources.parse_policy_resources, RESOURCES_POLICIES),
    "resources pools": (resources.parse_pool_resources, RESOURCES_POOLS),
    "flow logs": (flowlogs.parse_flow_logs, FLOW_LOGS),
}


def parse(name: str, lines: list[str]) -> tuple[pd.DataFrame, AnomalyLog]:
    fn, _ = PARSERS[name]
    log = AnomalyLog(name, "fuzzed.txt")
    df = fn(lines, log, node="node-a", artifact="fuzzed.txt")
    assert isinstance(df, pd.DataFrame)
    return df, log


def parse_one(name: str, line: str) -> pd.Series:
    """The one row a valid line gives, read without anomalies."""
    df, log = parse(name, [line])
    assert len(log.rows) == 0 and len(df) == 1, (line, log.rows)
    return df.iloc[0]


def parse_bpftool(lines: list[str]) -> None:
    log = AnomalyLog("bpftool", "fuzzed.txt")
    out = bpftool.parse_bpftool_dump(lines, log, node="node-a", artifact="fuzzed.txt", map_name="cali_v4_ct3")
    assert all(isinstance(df, pd.DataFrame) for df in out.values())


@st.composite
def mutated(draw, lines: list[str]) -> str:
    """A real line damaged by a few random edits."""
    line = draw(st.sampled_from(lines)) if lines else ""
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(line)))
        j = draw(st.integers(i, min(len(line), i + 12)))
        edit = draw(st.sampled_from(["delete", "insert", "replace", "cut", "duplicate", "token"]))
        if edit == "delete":
            line = line[:i] + line[j:]
        elif edit == "insert":
            line = line[:i] + draw(st.text(max_size=8)) + line[i:]
        elif edit == "replace":
            line = line[:i] + draw(st.text(min_size=1, max_size=8)) + line[j:]
        elif edit == "cut":
            line = line[:i]
        elif edit == "duplicate":
            line = line[:j] + line[i:j] + line[j:]
        else:
            tokens = line.split(" ")
            k = draw(st.integers(0, max(0, len(tokens) - 1)))
            tokens[k] = draw(
                st.sampled_from(["=", "src=", "-1", "99999999999999999999", "ffff::", "\x00", "[", "{", ""])
            )
            line = " ".join(tokens)
    return line


def inputs(name: str):
    _, real = PARSERS[name]
    return st.lists(st.one_of(st.text(max_size=80), mutated(real), st.sampled_from(real)), max_size=40)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_arbitrary_and_mutated_lines_never_raise(name):
    @SETTINGS
    @given(lines=inputs(name))
    def check(lines):
        parse(name, lines)

    check()


@SETTINGS
@given(lines=st.lists(st.one_of(st.text(max_size=80), mutated(BPFTOOL)), max_size=30))
def test_bpftool_dumps_never_raise(lines):
    parse_bpftool(lines)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_real_lines_parse_without_anomalies_and_damage_is_reported(name):
    """The unmutated lines are read cleanly; a line of garbage in the middle is an anomaly row, and
    the rows around it are still read (a JSON document is one value: damage anywhere in it leaves
    nothing to read but the anomaly that says so)."""
    _, real = PARSERS[name]
    clean, log = parse(name, real)
    assert len(clean) > 0 and len(log.rows) == 0, log.rows[:3]
    damaged, damaged_log = parse(name, [*real, "\x00garbage } { = ]", *real])
    # a trace log is the kernel's log: lines that are not traces are its other messages, not damage;
    # platform evidence is a few statements in whole documents whose other lines are not its to read
    assert len(damaged_log.rows) >= 1 or name.endswith("traces") or name == "platform"
    if not name.endswith("json") and not name.startswith("resources"):  # one document: damage spoils it whole
        assert len(damaged) >= len(clean)


ADDRESS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
PORT = st.integers(0, 65535)


@SETTINGS
@given(
    proto=st.sampled_from([("tcp", 6), ("udp", 17)]),
    timeout=st.integers(0, 10**6),
    state=st.sampled_from(["ESTABLISHED", "SYN_SENT", "TIME_WAIT", "CLOSE"]),
    orig=st.tuples(ADDRESS, ADDRESS, PORT, PORT),
    reply=st.tuples(ADDRESS, ADDRESS, PORT, PORT),
    unreplied=st.booleans(),
    assured=st.booleans(),
    mark=st.integers(0, 2**32 - 1),
    counters=st.tuples(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40)),
    form=st.sampled_from(["list", "extended", "event"]),
)
def test_conntrack_lines_round_trip(proto, timeout, state, orig, reply, unreplied, assured, mark, counters, form):
    """`conntrack -L` lines, plain and `-o extended`, and `conntrack -E` event lines (formats.md:
    [event,] [family,] protocol, timeout, TCP state, original tuple with counters, [UNREPLIED],
    reply tuple with counters, [ASSURED], mark, use) made from random fields parse back to them."""
    name, number = proto
    v6 = ":" in orig[0]
    family = {"list": "", "extended": "ipv6     10 " if v6 else "ipv4     2 ", "event": "    [NEW] "}[form]
    state_text = f"{state} " if name == "tcp" else ""
    o_pk, o_by, r_pk, r_by = counters
    line = (
        f"{family}{name:<8} {number} {timeout} {state_text}"
        f"src={orig[0]} dst={orig[1]} sport={orig[2]} dport={orig[3]} packets={o_pk} bytes={o_by} "
        f"{'[UNREPLIED] ' if unreplied else ''}"
        f"src={reply[0]} dst={reply[1]} sport={reply[2]} dport={reply[3]} packets={r_pk} bytes={r_by} "
        f"{'[ASSURED] ' if assured else ''}mark={mark} use=1"
    )
    r = parse_one("conntrack", line)
    assert (r["form"], r["event"]) == (form, "NEW" if form == "event" else "")
    assert (r["proto"], r["proto_num"], r["timeout"]) == (name, number, timeout)
    assert r["state"] == (state if name == "tcp" else "")
    assert (r["orig_src"], r["orig_dst"], r["orig_sport"], r["orig_dport"]) == orig
    assert (r["reply_src"], r["reply_dst"], r["reply_sport"], r["reply_dport"]) == reply
    assert (r["orig_packets"], r["orig_bytes"], r["reply_packets"], r["reply_bytes"]) == counters
    assert (bool(r["unreplied"]), bool(r["assured"]), r["mark"]) == (unreplied, assured, mark)


@SETTINGS
@given(
    entries=st.lists(
        st.tuples(
            st.from_regex(r"net\.[a-z_]{1,12}(\.[a-z_0-9]{1,12}){0,3}", fullmatch=True),
            st.integers(-(2**40), 2**40).map(str) | st.from_regex(r"[a-z0-9_]{1,10}", fullmatch=True),
        ),
        max_size=20,
        unique_by=lambda kv: kv[0],
    )
)
def test_sysctl_lines_round_trip(entries):
    """`sysctl -a` lines (`key = value`) parse back to their keys and values."""
    df, log = parse("sysctl", [f"{k} = {v}" for k, v in entries])
    assert len(log.rows) == 0
    assert dict(zip(df["key"], df["value"].astype(str), strict=True)) == dict(entries)


IFACE = st.from_regex(r"(eth[0-9]|cali[0-9a-f]{11}|vxlan\.calico|tunl0)", fullmatch=True)
V4 = st.ip_addresses(v=4).map(str)
CHAIN = st.from_regex(r"(cali-(tw|fw|pi|po)-[A-Za-z0-9_]{1,12}|KUBE-SVC-[A-Z0-9]{16}|FORWARD)", fullmatch=True)


@SETTINGS
@given(
    prefix=st.integers(0, 32),
    dst=V4,
    via=st.one_of(st.none(), V4),
    dev=IFACE,
    metric=st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    onlink=st.booleans(),
)
def test_ip_route_lines_round_trip(prefix, dst, via, dev, metric, onlink):
    """`ip route` lines (destination, via, dev, metric, onlink) parse back to those fields."""
    import ipaddress

    net = str(ipaddress.ip_network(f"{dst}/{prefix}", strict=False))
    line = f"{net}{f' via {via}' if via else ''} dev {dev}{f' metric {metric}' if metric is not None else ''}"
    line += " onlink" if onlink else ""
    r = parse_one("ip route", line)
    assert (r["dst"], r["via"], r["dev"]) == (net, via or "", dev)
    assert (r["metric"], bool(r["onlink"]), r["type"], r["table"]) == (
        metric if metric is not None else -1,
        onlink,
        "unicast",
        "main",
    )


@SETTINGS
@given(
    chain=CHAIN,
    counters=st.tuples(st.integers(0, 2**40), st.integers(0, 2**50)),
    proto=st.sampled_from(["tcp", "udp"]),
    dport=st.integers(1, 65535),
    target=st.sampled_from(["DROP", "ACCEPT", "RETURN", "MARK"]),
    rule_hash=st.from_regex(r"[A-Za-z0-9_-]{16}", fullmatch=True),
)
def test_iptables_save_rules_round_trip(chain, counters, proto, dport, target, rule_hash):
    """`iptables-save -c` rules (counters, chain, protocol, port, Calico's rule-hash comment, target)
    parse back to those fields."""
    packets, octets = counters
    lines = [
        "*filter",
        f":{chain} - [0:0]",
        f'[{packets}:{octets}] -A {chain} -p {proto} -m comment --comment "cali:{rule_hash}" '
        f"-m {proto} --dport {dport} -j {target}",
        "COMMIT",
    ]
    df, log = parse("iptables-save", lines)
    assert len(log.rows) == 0, log.rows
    rule = df[df["kind"] == "rule"]
    assert len(rule) == 1
    r = rule.iloc[0]
    assert (r["table"], r["chain"], r["packets"], r["bytes"]) == ("filter", chain, packets, octets)
    assert (r["protocol"], r["dport"], r["target"], r["rule_hash"]) == (proto, str(dport), target, rule_hash)


@SETTINGS
@given(
    chain=CHAIN,
    rulenum=st.integers(1, 999),
    ifaces=st.tuples(IFACE, IFACE),
    ends=st.tuples(V4, V4, st.integers(1, 65535), st.integers(1, 65535)),
    ip_id=st.integers(0, 65535),
    length=st.integers(20, 65535),
)
def test_trace_lines_round_trip(chain, rulenum, ifaces, ends, ip_id, length):
    """iptables TRACE lines as the kernel logs them parse back to table, chain, rule number,
    interfaces, addresses, ports, IP id and length."""
    src, dst, sport, dport = ends
    line = (
        f"[ 1234.567890] TRACE: filter:{chain}:rule:{rulenum} IN={ifaces[0]} OUT={ifaces[1]} MAC=aa "
        f"SRC={src} DST={dst} LEN={length} TOS=0x00 PREC=0x00 TTL=63 ID={ip_id} DF PROTO=TCP SPT={sport} "
        f"DPT={dport} WINDOW=64240 RES=0x00 SYN URGP=0"
    )
    r = parse_one("traces", line)
    assert (r["table"], r["chain"], r["rulenum"], r["in_iface"], r["out_iface"]) == ("filter", chain, rulenum, *ifaces)
    assert (r["src"], r["dst"], r["sport"], r["dport"], r["ip_id"], r["length"]) == (
        src,
        dst,
        sport,
        dport,
        ip_id,
        length,
    )


@SETTINGS
@given(
    links=st.lists(
        st.tuples(
            IFACE,
            st.integers(68, 65535),
            st.sampled_from(["UP", "DOWN", "UNKNOWN"]),
            st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda x: x[0],
    )
)
def test_ip_link_lines_round_trip(links):
    """`ip -d link` entries (index, name, flags, mtu, state, MAC) parse back to those fields."""
    lines = []
    for i, (name, mtu, state, mac) in enumerate(links, 1):
        lines.append(
            f"{i}: {name}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu {mtu} qdisc noqueue state {state} mode DEFAULT "
            "group default qlen 1000"
        )
        lines.append(f"    link/ether {mac} brd ff:ff:ff:ff:ff:ff promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 ")
    df, log = parse("ip link", lines)
    assert len(log.rows) == 0 and len(df) == len(links), log.rows
    got = list(zip(df["ifindex"], df["name"], df["mtu"], df["state"], df["mac"], strict=True))
    assert got == [(i, name, mtu, state, mac) for i, (name, mtu, state, mac) in enumerate(links, 1)]


@SETTINGS
@given(
    routes=st.lists(
        st.tuples(st.ip_addresses(v=4), st.integers(8, 32), st.one_of(st.none(), V4), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_calico_bpf_route_lines_round_trip(routes):
    """`calico-node -bpf routes dump` lines (CIDR, flags, next hop or interface index) parse back."""
    import ipaddress

    lines, want = [], []
    for addr, prefix, next_hop, workload in routes:
        cidr = str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
        if next_hop:
            lines.append(f"   {cidr}: remote workload in-pool nat-out nh {next_hop}")
            want.append((cidr, next_hop, -1))
        else:
            idx = prefix + 1
            lines.append(f"   {cidr}: local {'workload in-pool nat-out' if workload else 'host'} idx {idx}")
            want.append((cidr, "", idx))
    df, log = parse("calico-bpf routes", lines)
    assert len(log.rows) == 0
    assert list(zip(df["cidr"], df["next_hop"], df["ifindex"], strict=True)) == want


@SETTINGS
@given(
    services=st.lists(
        st.tuples(
            V4, st.integers(1, 65535), st.sampled_from([6, 17]), st.lists(st.tuples(V4, PORT), min_size=1, max_size=4)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_calico_bpf_nat_text_round_trips(services):
    """`calico-node -bpf nat dump` (a frontend line, then its backends) parses back to each
    frontend's address, port and protocol with its backends in order."""
    lines, want = [], []
    for svc_id, (ip, port, proto, backends) in enumerate(services, 1):
        lines.append(f"{ip} port {port} proto {proto} id {svc_id} count {len(backends)} local 0")
        for i, (bip, bport) in enumerate(backends):
            lines.append(f"\t{svc_id}:{i}\t {bip}:{bport}")
            want.append((ip, port, proto, svc_id, bip, bport))
    df, log = parse("calico-bpf nat", lines)
    assert len(log.rows) == 0
    cols = ["frontend_ip", "frontend_port", "proto", "svc_id", "backend_ip", "backend_port"]
    assert list(zip(*(df[c] for c in cols), strict=True)) == want


@SETTINGS
@given(
    family=st.sampled_from(["ip", "ip6", "inet"]),
    chain=CHAIN,
    rules=st.lists(
        st.tuples(
            st.sampled_from(["tcp", "udp"]),
            st.integers(1, 65535),
            st.tuples(st.integers(0, 2**40), st.integers(0, 2**50)),
            st.sampled_from(["drop", "accept", "return"]),
            st.from_regex(r"[A-Za-z0-9_-]{16}", fullmatch=True),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_nft_rules_round_trip(family, chain, rules):
    """`nft list ruleset` rules (protocol, port, counter, verdict, Calico's rule-hash comment) parse
    back to those fields, in order, in their table and chain."""
    lines = [f"table {family} filter {{", f"\tchain {chain} {{"]
    for proto, dport, (packets, octets), verdict, rule_hash in rules:
        lines.append(
            f"\t\t{'meta l4proto' if family == 'inet' else 'ip protocol'} {proto} {proto} dport {dport} "
            f'counter packets {packets} bytes {octets} {verdict} comment "cali:{rule_hash}"'
        )
    lines += ["\t}", "}"]
    df, log = parse("nft", lines)
    assert len(log.rows) == 0, log.rows
    got = df[df["kind"] == "rule"]
    assert (got["table"] == "filter").all() and (got["chain"] == chain).all() and (got["family"] == family).all()
    cols = ["protocol", "dport", "packets", "bytes", "target", "rule_hash"]
    want = [(p, str(d), pk, by, v.upper(), h) for p, d, (pk, by), v, h in rules]
    assert list(zip(*(got[c] for c in cols), strict=True)) == want


@SETTINGS
@given(
    backends=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), V4, PORT), min_size=1, max_size=6),
    one_line=st.booleans(),
)
def test_bpftool_nat_backend_dumps_round_trip(backends, one_line):
    """`bpftool map dump` of cali_v4_nat_be (key: service id, ordinal; value: backend address, port),
    on one line or split over lines as bpftool prints longer entries, parses back to those fields."""
    import ipaddress

    def hexes(data: bytes) -> str:
        return " ".join(f"{b:02x}" for b in data)

    lines = []
    for svc_id, ordinal, ip, port in backends:
        key = struct.pack("<II", svc_id, ordinal)
        value = ipaddress.ip_address(ip).packed + struct.pack("<HH", port, 0)
        if one_line:
            lines.append(f"key: {hexes(key)}  value: {hexes(value)}")
        else:
            lines += ["key:", hexes(key), "value:", hexes(value)]
    lines.append(f"Found {len(backends)} elements")
    log = AnomalyLog("bpftool", "cali_v4_nat_be.txt")
    out = bpftool.parse_bpftool_dump(lines, log, "node-a", "cali_v4_nat_be.txt", "cali_v4_nat_be")
    assert len(log.rows) == 0, log.rows
    nat = out["bpf_nat"]
    got = list(zip(nat["svc_id"], nat["ordinal"], nat["backend_ip"], nat["backend_port"], strict=True))
    assert got == backends


@SETTINGS
@given(
    entries=st.lists(
        st.tuples(st.sampled_from([("TCP", 6), ("UDP", 17)]), V4, PORT, V4, PORT, st.integers(0, 10**6)),
        min_size=1,
        max_size=6,
    )
)
def test_calico_bpf_conntrack_json_round_trips(entries):
    """`calico-node -bpf conntrack dump --json` entries (protocol, both ends, age) parse back."""
    import json

    doc = [
        {"type": "normal", "proto": name, "src": f"{s}:{sp}", "dst": f"{d}:{dp}", "flags": [], "active_ago": f"{age}s"}
        for (name, _), s, sp, d, dp, age in entries
    ]
    df, log = parse("calico-bpf conntrack json", [json.dumps(doc, indent=1)])
    assert len(log.rows) == 0, log.rows
    cols = ["proto", "src", "sport", "dst", "dport", "active_ago_s", "entry_type"]
    want = [(num, s, sp, d, dp, float(age), "normal") for (_, num), s, sp, d, dp, age in entries]
    assert list(zip(*(df[c] for c in cols), strict=True)) == want


@SETTINGS
@given(
    iface=IFACE,
    counts=st.lists(
        st.tuples(
            st.sampled_from(["by policy", "by failed CSUM", "packets hitting"]),
            st.integers(0, 2**40),
            st.integers(0, 2**40),
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda c: c[0],
    ),
)
def test_calico_bpf_counter_tables_round_trip(iface, counts):
    """`calico-node -bpf counters dump` tables (category, type, ingress, egress, XDP) with their
    interface caption parse back to those counts."""
    rule = "+----------+-------------------+---------+--------+-----+"
    lines = [rule, "| CATEGORY |       TYPE        | INGRESS | EGRESS | XDP |", rule]
    for i, (kind, ingress, egress) in enumerate(counts):
        lines.append(f"| {'Dropped' if i == 0 else '':8} | {kind:17} | {ingress:7} | {egress:6} | N/A |")
    lines += [rule, f"dumped {iface} counters."]
    df, log = parse("calico-bpf counters", lines)
    assert len(log.rows) == 0, log.rows
    got = list(zip(df["interface"], df["category"], df["type"], df["ingress"], df["egress"], df["xdp"], strict=True))
    assert got == [(iface, "Dropped", kind, ingress, egress, -1) for kind, ingress, egress in counts]


@SETTINGS
@given(
    version=st.tuples(st.integers(3, 3), st.integers(20, 40), st.integers(0, 12)),
    form=st.sampled_from(["yaml", "json", "image", "felix", "calicoctl"]),
    redirect=st.sampled_from(["Enabled", "Disabled", "L2Only"]),
    proxy=st.sampled_from(["iptables", "ipvs", "nftables"]),
    noise=st.lists(st.text(max_size=60), max_size=5),
)
def test_platform_statements_round_trip(version, form, redirect, proxy, noise):
    """A release, a Felix setting and kube-proxy's mode, each in a form of its own, read back among
    lines of anything else."""
    v = "v{}.{}.{}".format(*version)
    said = {
        "yaml": f"    calicoVersion: {v}",
        "json": f'{{"spec": {{"calicoVersion": "{v}"}}}}',
        "image": f"    Image:          docker.io/calico/node:{v}",
        "felix": f'2026-01-01 00:00:00.000 [INFO][1] felix/daemon.go 1: Felix starting up GOMAXPROCS=2 version="{v}"',
        "calicoctl": f"Cluster Calico Version:  {v}",
    }[form]
    clean = [x for x in noise if not platform.MARKERS.search(x) and "mode" not in x]
    lines = [*clean, said, f"    bpfRedirectToPeer: {redirect}", "  kind: KubeProxyConfiguration", f"  mode: {proxy}"]
    df, _ = parse("platform", lines)
    got = sorted(zip(df["kind"].astype(str), df["value"].astype(str), strict=True))
    assert got == sorted([("calico_version", v), ("felix_setting", redirect), ("kube_proxy_mode", proxy)])


@SETTINGS
@given(
    elements=st.lists(
        st.tuples(V4, st.sampled_from(["6", "17", "tcp", "udp"]), PORT, st.from_regex(r"[a-z][a-z0-9/-]{0,20}", fullmatch=True)),
        min_size=1,
        max_size=8,
    ),
    per_line=st.integers(1, 4),
)
def test_nft_verdict_map_elements_round_trip(elements, per_line):
    """A verdict map's elements, over as many lines as nft wraps them onto, parse back to their keys and
    verdict chains, in order (kube-proxy's nftables mode keeps its services in them)."""
    items = [f"{ip} . {proto} . {port} : goto service-{target}" for ip, proto, port, target in elements]
    chunks = [", ".join(items[k : k + per_line]) for k in range(0, len(items), per_line)]
    body = ",\n\t\t\t     ".join(chunks).split("\n")
    body[0] = "\t\telements = { " + body[0]
    body[-1] += " }"
    lines = ["table ip kube-proxy {", "\tmap service-ips {", "\t\ttype ipv4_addr . inet_proto . inet_service : verdict"]
    lines += [*body, "\t}", "}"]
    df, log = parse("nft", lines)
    assert len(log.rows) == 0, log.rows
    got = df[df["kind"] == "element"]
    want = [(f"{ip} . {proto} . {port}", f"service-{target}") for ip, proto, port, target in elements]
    assert list(zip(got["match"], got["target"], strict=True)) == want and (got["chain"] == "service-ips").all()


@SETTINGS
@given(
    services=st.lists(
        st.tuples(
            st.sampled_from(["TCP", "UDP"]),
            ADDRESS,
            PORT,
            st.lists(st.tuples(ADDRESS, PORT, st.integers(0, 10**13)), max_size=3),
        ),
        min_size=1,
        max_size=5,
    ),
    exact=st.booleans(),
)
def test_ipvsadm_stats_round_trip(services, exact):
    """`ipvsadm -Ln --stats` services and real servers read back: addresses in either family, and
    statistics printed in full (--exact) or, from 100 million up, in thousands, millions… with a suffix."""

    def printed(n: int) -> str:
        if exact:  # print_largenum: at least 9 wide, and always a space before
            return f"{n:{9 if len(str(n)) <= 8 else len(str(n)) + 1}d}"
        if n < 10**8:
            return f"{n:9d}"
        for limit, div, suffix in ((10**9, 10**3, "K"), (10**11, 10**6, "M"), (10**14, 10**9, "G")):
            if n < limit:
                return f"{n // div:8d}{suffix}"
        return f"{n // 10**12:8d}T"

    def shown(n: int) -> int:
        text = printed(n).strip()
        return int(text[:-1]) * {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[text[-1]] if text[-1] in "KMGT" else int(text)

    def hostport(ip: str, port: int) -> str:
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    lines = ["Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes", "  -> RemoteAddress:Port"]
    want = []
    for proto, vip, vport, reals in services:
        lines.append(f"{proto}  {hostport(vip, vport)}".ljust(33) + "".join(printed(7) for _ in range(5)))
        want.append(("service", proto.lower(), vip, vport, "", -1, 7))
        for ip, port, stat in reals:
            lines.append(f"  -> {hostport(ip, port):<28}" + printed(stat) * 5)
            want.append(("real", proto.lower(), vip, vport, ip, port, shown(stat)))
    df, log = parse("ipvsadm", lines)
    assert not log.rows, log.rows
    got = list(zip(df.kind, df.proto, df.vip, df.vport, df.backend_ip, df.backend_port, df.in_bytes, strict=True))
    assert got == want
