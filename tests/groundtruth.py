"""Checks of a lab bundle's tables against the lab's ground truth (shared by sample and live-lab tests).

Each check states what the tables can already show; later issues (hops, flows, findings) extend them.
"""

from __future__ import annotations

import calforensics

TUNNEL_DEVICE = {"ipip": "tunl0", "vxlan": "vxlan.calico", "wireguard": "wireguard.cali"}


def wireguard_padding(length: int, mtu: int) -> int:
    """Bytes WireGuard adds to a plaintext of ``length`` bytes before encrypting it, as the kernel
    computes them (drivers/net/wireguard/send.c, calculate_skb_padding, with MESSAGE_PADDING_MULTIPLE
    16): the last unit is the length past the last whole MTU when the packet is larger than the MTU
    (a GSO super-packet), it is padded up to a multiple of 16, and never past the MTU. Written out
    here from the kernel, apart from calforensics' own rule, so tests check one against the other."""
    last_unit = length
    if last_unit > mtu:
        last_unit %= mtu
    padded_size = min(mtu, (last_unit + 16 - 1) // 16 * 16)
    return padded_size - last_unit


def check_captures(b: calforensics.Bundle, truth: dict) -> None:
    caps = b.captures
    tunnel = TUNNEL_DEVICE[truth["encapsulation"]["type"]]
    for node in truth["nodes"]:
        mine = caps[caps.node == node].set_index("interface")
        if node in truth.get("any_only", ()):  # `tcpdump -i any` alone: one capture, its points named inside
            assert list(mine.index) == ["any"] and mine.loc["any", "linktype_name"] == "LINUX_SLL2"
            seen = set(b.hops.loc[b.hops.node == node, "interface"].astype(str))
            pods = {p["interface"] for p in truth["pods"].values() if p["node"] == node}
            assert {tunnel, "eth0"} <= seen and pods & seen, seen
            continue
        assert mine.loc[tunnel, "role"] == "tunnel", (node, tunnel)
        assert mine.loc["eth0", "role"] == "uplink", node
        for pod in truth["pods"].values():
            if pod["node"] == node:
                assert mine.loc[pod["interface"], "role"] == "workload", (node, pod)
        if truth["encapsulation"]["type"] in ("ipip", "wireguard"):
            assert mine.loc[tunnel, "linktype_name"] == "RAW"


def check_encapsulation(b: calforensics.Bundle, truth: dict) -> None:
    enc = truth["encapsulation"]
    node_ips = {n["ip"] for n in truth["nodes"].values()}
    pod_ips = {p["ip"] for p in truth["pods"].values()}
    p = b.packets
    tunneled = p[p.encap == enc["type"]]
    assert len(tunneled) > 0
    assert set(tunneled.interface.astype(str)) == {"eth0"}
    assert set(tunneled.outer_src.astype(str)) <= node_ips and set(tunneled.outer_dst.astype(str)) <= node_ips
    assert set(tunneled.src.astype(str)) <= pod_ips and set(tunneled.dst.astype(str)) <= pod_ips
    if enc["type"] == "vxlan":
        assert (tunneled.vni == enc["vni"]).all()
    # every inner packet of the pod-to-pod flow is carried on both nodes' uplinks
    flow = next(f for f in truth["flows"] if f["name"] in ("pod_to_pod", "forgotten"))
    legs = tunneled[
        (tunneled.src == flow["client_ip"])
        & (tunneled.sport == flow["client_port"])
        & (tunneled.dst == flow["server_ip"])
        & (tunneled.dport == flow["server_port"])
    ]
    assert set(legs.node.astype(str)) == set(truth["nodes"])
    # encapsulation overhead: the uplink frame minus its Ethernet header minus the inner IP packet
    # (VXLAN: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 = 50; IPIP: outer IP 20; WireGuard: outer
    # IP 20 + UDP 8 + header 16 + tag 16, plus the plaintext's padding to 16 bytes)
    overhead = (legs.wirelen - 14 - legs.ip_len).to_numpy()
    if enc["type"] == "wireguard":
        want = [60 + wireguard_padding(int(n), enc["tunnel_mtu"]) for n in legs.ip_len]
        assert overhead.tolist() == want
    else:
        assert sorted(set(overhead.tolist())) == [enc["overhead_bytes"]], overhead


def check_service_dnat(b: calforensics.Bundle, truth: dict) -> None:
    if truth["dataplane"] == "ebpf":
        return check_bpf_services(b, truth)
    flow = next(f for f in truth["flows"] if f["name"] == "cluster_ip")
    ct = b.conntrack
    entry = ct[
        (ct.node == flow["dnat_node"])
        & (ct.orig_src == flow["client_ip"])
        & (ct.orig_sport == flow["client_port"])
        & (ct.orig_dst == flow["server_ip"])
    ]
    assert len(entry) == 1
    e = entry.iloc[0]
    assert (e.nat, e.orig_dport, e.reply_src, e.reply_sport) == (
        "dnat",
        flow["server_port"],
        flow["backend_ip"],
        flow["backend_port"],
    )
    if truth.get("kube_proxy") == "ipvs":  # the real server of the virtual service, from ipvsadm
        ipvs = b.ipvs
        real = ipvs[(ipvs.node == flow["dnat_node"]) & (ipvs.kind == "real") & (ipvs.vip == flow["server_ip"])]
        assert set(zip(real.backend_ip, real.backend_port, strict=True)) == {(flow["backend_ip"], flow["backend_port"])}
        return None
    rules = b.rules
    sep = rules[
        (rules.node == flow["dnat_node"])
        & (rules.service == flow["service"])
        & (rules.action == "dnat")
        & ~rules.duplicate
    ]
    assert sep.endpoint.astype(str).tolist() == [f"{flow['backend_ip']}:{flow['backend_port']}"]
    assert (sep.packets >= 1).all()


def check_bpf_services(b: calforensics.Bundle, truth: dict) -> None:
    """BPF NAT frontends and backends as the ground truth's services, from JSON on one node and text on
    the other; the service listing names them."""
    nat = b.bpf_nat
    for svc in truth["services"]:
        for node in truth["nodes"]:
            fe = nat[(nat.node == node) & (nat.frontend_ip == svc["cluster_ip"]) & (nat.frontend_port == svc["port"])]
            assert set(fe.svc_id) == {svc["svc_id"]}, (node, svc["name"])
            assert {f"{r.backend_ip}:{r.backend_port}" for r in fe.itertuples()} == set(svc["backends"])
        listed = b.services[(b.services.cluster_ip == svc["cluster_ip"]) & (b.services.port == svc["port"])]
        assert [f"{r.namespace}/{r.name}:{r.port}" for r in listed.itertuples()] == [svc["name"]]
    assert set(nat.source) == {"calico-bpf", "calico-bpf-json"}


def check_policy_drop(b: calforensics.Bundle, truth: dict) -> None:
    flow = next(f for f in truth["flows"] if f["name"] == "denied")
    drop = flow["drop"]
    if truth["dataplane"] == "ebpf":
        return check_bpf_policy_drop(b, flow)
    rules = b.rules
    rule = rules[
        (rules.node == drop["node"])
        & (rules.table == drop["table"])
        & (rules.chain == drop["chain"])
        & (rules.comment == drop["rule_comment"])
        & ~rules.duplicate
    ]
    assert len(rule) == 1
    r = rule.iloc[0]
    assert (r.action, r.drop_kind, r.policy) == ("drop", "end_of_tier", drop["policy"])
    assert r.packets >= drop["min_packets"]
    # the dropped SYNs were seen where the drop says and never at the missing hop
    p = b.packets
    syns = p[(p.src == flow["client_ip"]) & (p.sport == flow["client_port"]) & (p.dport == flow["server_port"])]
    at = {(str(n), str(i)) for n, i in zip(syns.node, syns.interface, strict=True)}
    assert (drop["last_seen"]["node"], drop["last_seen"]["interface"]) in at
    assert (drop["missing_at"]["node"], drop["missing_at"]["interface"]) not in at
    last = syns[(syns.node == drop["last_seen"]["node"]) & (syns.interface == drop["last_seen"]["interface"])]
    assert len(last) == r.packets  # every SYN that reached the node was counted by the drop rule


def check_bpf_policy_drop(b: calforensics.Bundle, flow: dict) -> None:
    """The drop counter on the destination veth's egress hook counts every SYN that reached its node;
    BPF conntrack there has the opener's leg approved and not the destination's."""
    drop = flow["drop"]
    c = b.bpf_counters
    row = c[(c.node == drop["node"]) & (c.interface == drop["interface"]) & (c.category == "Dropped")]
    row = row[row.type == "by policy"]
    assert len(row) == 1 and row.iloc[0].egress == drop["counter_packets"] and row.iloc[0].ingress == 0
    p = b.packets
    syns = p[(p.src == flow["client_ip"]) & (p.sport == flow["client_port"]) & (p.dport == flow["server_port"])]
    last = syns[(syns.node == drop["last_seen"]["node"]) & (syns.interface == drop["last_seen"]["interface"])]
    assert len(last) == drop["counter_packets"] >= drop["min_packets"]
    assert not len(
        syns[(syns.node == drop["missing_at"]["node"]) & (syns.interface == drop["missing_at"]["interface"])]
    )
    ct = b.bpf_conntrack
    legs = ct[(ct.node == drop["node"]) & (ct.sport == flow["client_port"]) & (ct.source == "bpftool")]
    assert legs[["a2b_approved", "b2a_approved"]].values.tolist() == [[1, 0]]


def check_frag_needed(b: calforensics.Bundle, truth: dict) -> None:
    flow = next(f for f in truth["flows"] if f["name"] == "mtu")
    mtu = flow["mtu"]
    p = b.packets
    icmp = p[(p.icmp_type == 3) & (p.icmp_code == 4)]
    assert len(icmp) >= 1
    assert set(icmp.icmp_mtu) == {mtu["mtu"]}
    assert set(icmp.src.astype(str)) <= set(mtu["sender_ips"])
    assert set(icmp.node.astype(str)) == {mtu["sender_node"]}
    assert (icmp.q_src == flow["client_ip"]).all() and (icmp.q_dport == flow["server_port"]).all()
    too_big = p[(p.src == flow["client_ip"]) & (p.sport == flow["client_port"])]
    assert len(too_big) >= 1  # the datagram was captured, and only where the truth says it went
    assert set(zip(too_big.node.astype(str), too_big.interface.astype(str), strict=True)) == {
        (point["node"], point["interface"]) for point in flow["path"]
    }
    assert (too_big.ip_len == mtu["packet_bytes"]).all() and too_big.dont_fragment.all()


ALL_CHECKS = [check_captures, check_encapsulation, check_service_dnat, check_policy_drop, check_frag_needed]


def check_bundle(b: calforensics.Bundle, truth: dict) -> None:
    for check in ALL_CHECKS:
        check(b, truth)
    assert len(b.anomalies) == 0, b.anomalies.head()


def flow_for(b: calforensics.Bundle, gt: dict):
    flows = b.flows
    match = flows[
        (flows.proto == gt["proto"]) & (flows.client_ip == gt["client_ip"]) & (flows.client_port == gt["client_port"])
    ]
    assert len(match) == 1, (gt["name"], len(match))
    return match.iloc[0]


def check_flows(b: calforensics.Bundle, truth: dict) -> None:
    for gt in truth["flows"]:
        f = flow_for(b, gt)
        assert (f.server_ip, f.server_port, f.verdict) == (gt["server_ip"], gt["server_port"], gt["verdict"]), gt[
            "name"
        ]
        assert f.path_fwd == " > ".join(f"{h['node']}:{h['interface']}" for h in gt["path"]), gt["name"]
        if "service_candidates" in gt:  # connect-time LB: only a reverse lookup of the backend is possible
            assert (f.service, f.service_via, f.backend_ip) == (", ".join(gt["service_candidates"]), "backend", "")
        elif "backend_ip" in gt:
            assert (f.service, f.backend_ip, f.backend_port) == (gt["service"], gt["backend_ip"], gt["backend_port"])
            # the NAT leg shows between hops: the dialled address before the DNAT node's tunnel, the backend after
            hops = b.flow_path(int(f.flow_id))
            fwd = hops[hops.direction == "fwd"]
            assert set(fwd[fwd.role == "workload"].groupby("node", observed=True).dst.first().astype(str)) == {
                gt["server_ip"],
                gt["backend_ip"],
            }
        else:
            assert f.backend_ip == "" and f.service == ""
        assert f.snat_ip == gt.get("snat_ip", ""), gt["name"]  # masqueraded on the way out, or not at all
        if gt["verdict"] == "delivered":
            back = " > ".join(f"{h['node']}:{h['interface']}" for h in reversed(gt["path"]))
            assert f.path_rev == back and f.packets_rev > 0, gt["name"]
        if "drop" in gt:
            d = gt["drop"]
            assert f.last_seen == f"{d['last_seen']['node']}:{d['last_seen']['interface']}"
            assert f.missing_at == f"{d['missing_at']['node']}:{d['missing_at']['interface']}"
            assert f.conn_state == "S0" and f.packets_fwd >= d["min_packets"]
        if "mtu" in gt:
            assert f.icmp_errors >= 1 and f.icmp_error_types == "3/4"
        if gt["proto"] == "tcp" and gt["verdict"] == "delivered":
            assert f.conn_state == "SF"


def check_clock_offsets(b: calforensics.Bundle, truth: dict, shifts: dict | None = None) -> None:
    """Every node's offset is estimated, within its uncertainty of the known shift, to under a millisecond."""
    offsets = b.clock_offsets.set_index("node")
    assert set(offsets.index) == set(truth["nodes"])
    ref = offsets["reference"].iloc[0]
    for node, row in offsets.iterrows():
        expected = (shifts or {}).get(node, 0) - (shifts or {}).get(ref, 0)
        assert 0 <= row.uncertainty_ns < 1_000_000, (node, row.uncertainty_ns)
        assert abs(row.offset_ns - expected) <= row.uncertainty_ns, (node, row.offset_ns, expected)


ALL_CHECKS += [check_flows, check_clock_offsets]


def check_edge_flows(b: calforensics.Bundle, truth: dict) -> None:
    """The edge run: a datagram fragmented by its pod and refragmented by its node is one delivered
    datagram each way, with who fragmented it where; segments node-b's conntrack calls INVALID are
    dropped by the INVALID rule of the web pod's cali-tw chain, whose counter covers every one lost."""
    from calforensics.analyses.drops import find_drops
    from calforensics.analyses.overhead import mtu_issues

    flows, drops = b.flows, find_drops(b).set_index("flow_id")
    lost: dict[str, int] = {}
    counters: dict[str, int] = {}
    for gt in truth["flows"]:
        f = flow_for(b, gt)
        assert (f.server_ip, f.server_port, f.verdict) == (gt["server_ip"], gt["server_port"], gt["verdict"]), gt
        assert f.path_fwd == " > ".join(f"{h['node']}:{h['interface']}" for h in gt["path"]), (gt["name"], f.path_fwd)
        if "fragments" in gt:
            frag = gt["fragments"]
            assert (f.packets_fwd, f.packets_rev) == (1, 1)  # one datagram each way, at every point
            assert f.bytes_fwd == frag["bytes"] + 28
            finding = mtu_issues(b, b.owners)
            finding = finding[(finding.kind == "fragmented") & (finding.flow_id == f.flow_id)]
            assert len(finding) == 1
            detail = finding.iloc[0].detail
            # a fragment's payload is a multiple of 8 bytes, after a 20-byte IPv4 header (ip_fragment)
            pod, tunnel = ((mtu - 20) // 8 * 8 + 20 for mtu in (frag["pod_mtu"], frag["tunnel_mtu"]))
            assert f"by the sending pod into 3 (largest {pod} bytes) at {gt['path'][0]['node']}:" in detail, detail
            assert f"refragmented by node-a into 3 (largest {tunnel} bytes) at node-a:vxlan.calico" in detail, detail
        if "drop" in gt:
            d, row = gt["drop"], drops.loc[int(f.flow_id)]
            assert f.last_seen == f"{d['last_seen']['node']}:{d['last_seen']['interface']}"
            assert f.missing_at == f"{d['missing_at']['node']}:{d['missing_at']['interface']}"
            assert (row.cause_kind, row.cause_node, row.cause_table, row.cause_chain) == (
                d["kind"],
                d["node"],
                d["table"],
                d["chain"],
            )
            assert row.confidence == "high" and row.packets >= d.get("min_packets", 1)
            if "rule_comment" in d:
                assert row.cause_rule_comment == d["rule_comment"] and f.service == gt["service"]
            lost[d["kind"]] = lost.get(d["kind"], 0) + int(row.packets)
            counters[d["kind"]] = int(row.cause_counter_packets)
    # the INVALID rule counted every segment lost between the two points, the REJECT every SYN refused
    assert all(lost[kind] <= counters[kind] for kind in lost) and lost, (lost, counters)
    # no fragment is left over as a port-less flow of its own
    assert not ((flows.proto == "udp") & (flows.client_port == -1)).any()
    assert len(b.datagrams) > 0 and len(b.anomalies) == 0, b.anomalies.head()


EDGE_CHECKS = [check_captures, check_encapsulation, check_edge_flows, check_clock_offsets]


def check_dual_flows(b: calforensics.Bundle, truth: dict) -> None:
    """The dual-stack run: IPv4 and IPv6 flows through the same join: paths over `vxlan.calico` and
    `vxlan-v6.calico`, the IPv6 ClusterIP's backend, the IPv6 policy drop with its ip6tables rule,
    the Packet Too Big with its MTU, the pod's own IPv6 fragments, and VXLAN over IPv6 at 70 bytes."""
    from calforensics.analyses.drops import find_drops
    from calforensics.analyses.overhead import mtu_issues, overhead_tables

    drops = find_drops(b).set_index("flow_id")
    mtu = mtu_issues(b, b.owners)
    for gt in truth["flows"]:
        f = flow_for(b, gt)
        assert (f.server_ip, f.server_port, f.verdict) == (gt["server_ip"], gt["server_port"], gt["verdict"]), gt
        assert f.path_fwd == " > ".join(f"{h['node']}:{h['interface']}" for h in gt["path"]), (gt["name"], f.path_fwd)
        if "backend_ip" in gt:
            assert (f.service, f.backend_ip, f.backend_port) == (gt["service"], gt["backend_ip"], gt["backend_port"])
        if "drop" in gt:
            d, row = gt["drop"], drops.loc[int(f.flow_id)]
            assert (f.last_seen, f.missing_at) == tuple(
                f"{p['node']}:{p['interface']}" for p in (d["last_seen"], d["missing_at"])
            )
            assert (row.cause_node, row.cause_table, row.cause_chain, row.cause_policy) == (
                d["node"],
                d["table"],
                d["chain"],
                d["policy"],
            )
            assert row.cause_rule_comment == d["rule_comment"] and row.confidence == "high"
        if "mtu" in gt:
            m = gt["mtu"]
            assert f.icmp_errors >= 1 and f.icmp_error_types == "2/0"  # ICMPv6 Packet Too Big
            ptb = mtu[(mtu.kind == "icmp_frag_needed") & (mtu.flow_id == f.flow_id)]
            assert list(zip(ptb.node, ptb.mtu, strict=True)) == [(m["sender_node"], m["mtu"])]
            # the pod then fragments its datagram itself (IPv6 routers never do): 48-byte headers
            largest = (m["mtu"] - 48) // 8 * 8 + 48
            frag = mtu[(mtu.kind == "fragmented") & (mtu.flow_id == f.flow_id)].detail.tolist()
            assert len(frag) == 1 and f"by the sending pod into 2 (largest {largest} bytes)" in frag[0], frag
    # IPv6 conntrack (`conntrack -L -f ipv6`): the ClusterIP connection's entry on node-a, DNATed to the pod
    ct = b.conntrack
    service = next(f for f in truth["flows"] if f["name"] == "cluster_ip_v6")
    legs = ct[(ct.orig_dst == truth["service"]["cluster_ip6"]) & (ct.orig_sport == service["client_port"])]
    assert set(zip(legs.node.astype(str), legs.reply_src.astype(str), strict=True)) == {
        ("node-a", service["backend_ip"])
    }
    tunnels, _ = overhead_tables(b, b.owners)
    per_type = dict(zip(tunnels.type, tunnels.overhead_bytes_per_packet, strict=True))
    assert per_type == {"vxlan": 50, "vxlan-ipv6": truth["encapsulation"]["v6"]["overhead_bytes"]}
    assert len(b.anomalies) == 0, b.anomalies.head()


DUAL_CHECKS = [check_captures, check_dual_flows, check_clock_offsets]
