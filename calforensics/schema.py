"""The public data model: every table's columns, their dtypes and meanings.

This is the single source for `docs/tables.md` (`python -m calforensics.schema > docs/tables.md`)
and for :func:`conform`, which gives every table the same columns and dtypes whether it is empty or
not and whichever artifacts fed it. Integer columns use -1 for "absent"; text columns use "".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INT64 = (-(1 << 63), (1 << 63) - 1)


def to_int(s: str | None, default: int = -1) -> int:
    """Parse decimal or 0x-hex; ``default`` when absent, not a number, or beyond int64 (a damaged
    field must not make the whole table fail to build)."""
    if s is None:
        return default
    try:
        value = int(s, 0) if s.lower().startswith("0x") else int(s)
    except ValueError:
        return default
    return value if INT64[0] <= value <= INT64[1] else default


def int_column(col: pd.Series) -> pd.Series:
    """Integers exactly (no float round trip, which breaks nanosecond timestamps); -1 where absent."""
    return pd.Series(
        [to_int(str(v)) if v is not None and v == v and v != "" else -1 for v in col], index=col.index, dtype="int64"
    )


# (column, dtype, meaning). dtype is one of: int8/16/32/64, uint64, float64, bool, category, string.
SCHEMAS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "artifacts": (
        "Every file in the bundle, recognised or not.",
        [
            ("path", "string", "path inside the bundle (POSIX)"),
            ("node", "category", "node the file belongs to (from `nodes/<node>/`, node-diags hostname, or folder)"),
            (
                "kind",
                "category",
                "what it was recognised as: pcap, iptables, ip6tables, nft, conntrack, ip_link, ip_route, "
                "bpf_conntrack, bpf_nat, bpf_routes, bpf_counters, bpf_ifstate, bpf_policy, bpftool, traces, "
                "kube_listing (kubectl/calicoctl get, crictl pods tables), kube_resources, crictl_inspect, sysctl, "
                "metadata, platform, ipvs, ipset, flow_logs, "
                "other, empty, unrecognised",
            ),
            ("size", "int64", "bytes"),
            (
                "form",
                "string",
                "which of its kind's forms it came in: iptables-save -c, iptables -S, iptables -L -v, nft -j list "
                "ruleset, conntrack -E, /proc/net/nf_conntrack, calico-bpf --json, kubectl -o yaml, pcapng, …",
            ),
            ("rows", "int64", "rows (or frames) it produced; -1 while not yet parsed"),
            ("anomalies", "int64", "anomaly rows it produced"),
            (
                "status",
                "category",
                "pending (not yet read), parsed, no_data (read, nothing usable, e.g. an error message), "
                "skipped (kind other/empty/unrecognised)",
            ),
            ("detail", "string", "why a file was skipped or gave nothing usable; empty for files read"),
        ],
    ),
    "captures": (
        "One row per capture point: a capture file and one of its interfaces.",
        [
            ("capture_id", "int64", "key used by `packets.capture_id`"),
            ("node", "category", "node"),
            ("interface", "string", "interface name: pcapng if_name, else the file name without extension"),
            (
                "role",
                "category",
                "workload (cali*), tunnel (tunl0, vxlan.calico, wireguard.cali, …), uplink, any, other",
            ),
            ("linktype", "int64", "pcap LINKTYPE number"),
            ("linktype_name", "category", "EN10MB, LINUX_SLL, LINUX_SLL2, RAW, …"),
            ("container", "category", "pcap or pcapng"),
            ("snaplen", "int64", "snap length the capture declares"),
            ("capture_filter", "string", "the filter expression the capture records it ran with (pcapng if_filter)"),
            ("packets", "int64", "frames read"),
            ("first_ns", "int64", "first timestamp, ns since the epoch (-1 if no frames)"),
            ("last_ns", "int64", "last timestamp, ns since the epoch (-1 if no frames)"),
            ("artifact", "string", "file in the bundle"),
            ("iface_index", "int64", "interface index inside the file (pcapng), 0 for classic pcap"),
            ("window_start_ns", "int64", "when capturing began: the collector's metadata, else the first packet"),
            ("window_end_ns", "int64", "when capturing ended: the collector's metadata, else the last packet"),
            ("window_recorded", "bool", "the window is the collector's record, not the packets' first and last"),
            ("pod_namespace", "string", "namespace of the pod behind a workload interface (from pod listings)"),
            ("pod_name", "string", "pod behind a workload interface (sha1 of namespace.pod = the cali name)"),
            ("pod_ip", "string", "pod IP (pod listing, else the node's /32 route on that interface)"),
        ],
    ),
    "packets": (
        "One row per frame of every capture, decoded to the innermost L3/L4.",
        [
            ("capture_id", "int32", "capture point (`captures.capture_id`)"),
            ("node", "category", "node"),
            (
                "interface",
                "category",
                "interface; for SLL2 (`-i any`) captures the interface of each packet, from its "
                "ifindex and the node's `ip link`",
            ),
            ("frame", "int64", "1-based packet number within the file"),
            ("ts_ns", "int64", "capture timestamp, ns since the epoch (the node's clock)"),
            ("caplen", "int32", "bytes captured"),
            ("wirelen", "int32", "bytes on the wire"),
            ("iface_index", "int32", "pcapng interface index"),
            (
                "pkttype",
                "int8",
                "SLL/SLL2 packet type (0 to us, 1 broadcast, 2 multicast, 3 other host, 4 outgoing); -1",
            ),
            ("link_ifindex", "int32", "SLL2 interface index; -1"),
            ("eth_type", "int32", "outermost ethertype after VLAN tags (0x8847/0x8848: MPLS labels follow); -1"),
            ("vlan", "int32", "outermost 802.1Q/802.1ad VLAN id; -1"),
            ("outer_src", "category", "outermost IP source"),
            ("outer_dst", "category", "outermost IP destination"),
            ("outer_proto", "int16", "outermost IP protocol / IPv6 next header"),
            ("outer_ip_id", "int32", "outermost IPv4 id; -1"),
            ("outer_ttl", "int16", "outermost TTL / hop limit"),
            ("outer_ip_len", "int32", "outermost IP total length; minus ip_len it is the encapsulation overhead"),
            (
                "encap",
                "category",
                "first encapsulation peeled: none, ipip (4in4, 6in4, 4in6, 6in6), vxlan (and VXLAN-GPE, UDP 4790), "
                "gre (also ERSPAN I/II/III mirror sessions, PPTP's GRE carrying PPP, GRE-in-UDP on 4754), geneve; "
                "wireguard for a message matched to its plaintext (its inner fields are the plaintext's: see "
                "`wireguard`). MPLS label stacks are passed over, not counted as a tunnel",
            ),
            ("encap_depth", "int8", "number of tunnel layers peeled"),
            ("vni", "int64", "VXLAN/Geneve VNI, GRE key or PPTP call id of the first tunnel; -1"),
            ("ip_version", "int8", "innermost IP version, 0 if none"),
            ("src", "category", "innermost IP source"),
            ("dst", "category", "innermost IP destination"),
            ("proto", "int16", "innermost L4 protocol (after IPv6 extension headers); -1"),
            ("ip_id", "int64", "innermost IPv4 id, or IPv6 fragment id; -1"),
            ("ttl", "int16", "innermost TTL / hop limit"),
            ("ip_len", "int32", "innermost IP total length (header + payload) as declared"),
            ("dont_fragment", "bool", "IPv4 DF"),
            ("more_fragments", "bool", "IPv4 MF / IPv6 fragment M flag"),
            ("frag_offset", "int32", "fragment offset in bytes; -1 if no IP"),
            ("sport", "int32", "TCP/UDP source port; -1"),
            ("dport", "int32", "TCP/UDP destination port; -1"),
            ("tcp_flags", "int16", "TCP flags (FIN 0x01 … CWR 0x80, NS 0x100); -1"),
            ("seq", "int64", "TCP sequence number; -1"),
            ("ack", "int64", "TCP acknowledgement number; -1"),
            ("tcp_window", "int32", "TCP window; -1"),
            ("tcp_mss", "int32", "TCP MSS option (SYNs); -1"),
            ("payload_len", "int32", "L4 payload bytes as declared by the headers (not limited by snaplen)"),
            ("icmp_type", "int16", "ICMP/ICMPv6 type; -1"),
            ("icmp_code", "int16", "ICMP/ICMPv6 code; -1"),
            ("icmp_echo_seq", "int32", "echo request/reply sequence; -1"),
            ("icmp_mtu", "int32", "next-hop MTU of ICMP frag-needed / ICMPv6 packet-too-big; -1"),
            ("q_src", "category", "source of the IP header quoted in an ICMP error"),
            ("q_dst", "category", "destination of the quoted header"),
            ("q_proto", "int16", "protocol of the quoted header; -1"),
            ("q_ip_id", "int32", "IPv4 id of the quoted header; -1"),
            ("q_sport", "int32", "source port of the quoted L4 header; -1"),
            ("q_dport", "int32", "destination port of the quoted L4 header; -1"),
            ("payload_hash", "uint64", "hash of the first 16 payload bytes and their count"),
            (
                "fingerprint",
                "uint64",
                "NAT- and encapsulation-invariant packet key: payload hash, protocol, IP id, TCP "
                "seq/ack/flags, payload length, ICMP type/code/echo seq, fragment offset; on the first "
                "fragment of a datagram reassembled at its capture point, the whole datagram's",
            ),
            ("status", "category", "ok, or the decoder anomaly that stopped decoding of this frame"),
        ],
    ),
    "conntrack": (
        "One row per conntrack entry or event (`conntrack -L/-E`, `-o xml`, /proc/net/nf_conntrack).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line (or flow) number"),
            ("form", "category", "list, extended, event, xml, proc"),
            ("event", "category", "NEW, UPDATE, DESTROY for events, else empty"),
            ("event_ts_ns", "int64", "`-o timestamp` event time, ns since the epoch; -1"),
            ("l3", "category", "ipv4 or ipv6"),
            ("proto", "category", "tcp, udp, icmp, …"),
            ("proto_num", "int64", "L4 protocol number"),
            ("timeout", "int64", "seconds left; -1"),
            ("state", "category", "TCP/SCTP/DCCP state, empty for others"),
            ("orig_src", "string", "original tuple source"),
            ("orig_dst", "string", "original tuple destination"),
            ("orig_sport", "int64", "original source port; -1"),
            ("orig_dport", "int64", "original destination port; -1"),
            ("reply_src", "string", "reply tuple source (≠ orig_dst means DNAT)"),
            ("reply_dst", "string", "reply tuple destination (≠ orig_src means SNAT)"),
            ("reply_sport", "int64", "reply source port; -1"),
            ("reply_dport", "int64", "reply destination port; -1"),
            ("icmp_type", "int64", "ICMP type; -1"),
            ("icmp_code", "int64", "ICMP code; -1"),
            ("icmp_id", "int64", "ICMP id; -1"),
            ("orig_packets", "int64", "accounting, original direction; -1"),
            ("orig_bytes", "int64", "; -1"),
            ("reply_packets", "int64", "accounting, reply direction; -1"),
            ("reply_bytes", "int64", "; -1"),
            ("unreplied", "bool", "[UNREPLIED]"),
            ("assured", "bool", "[ASSURED]"),
            ("offload", "category", "offload or hw_offload, else empty"),
            ("mark", "int64", "ct mark (decimal in the dump; Calico's accept bit is 65536); -1"),
            ("zone", "int64", "zone; -1"),
            ("use", "int64", "refcount; -1"),
            ("ct_id", "int64", "`-o id`; -1"),
            ("delta_time", "int64", "seconds since the entry started; -1"),
            ("start", "string", "`-o ktimestamp` start"),
            ("stop", "string", "`-o ktimestamp` stop"),
            ("labels", "string", "`-o labels`"),
            ("helper", "string", "helper"),
            ("nat", "category", "none, dnat, snat or both, from original vs reply tuples"),
        ],
    ),
    "rules": (
        "One row per iptables/nft rule or chain policy, with its Calico and kube-proxy meaning.",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            (
                "source",
                "category",
                "program that wrote the dump (iptables-save, iptables-nft-save, nft, nft-json, "
                "iptables -S, iptables -L, iptables-save (no headers): the last three without *table headers, the "
                "table told from the chain)",
            ),
            ("backend", "category", "legacy or nft"),
            ("family", "category", "ipv4, ipv6, or the nft family"),
            ("table", "category", "filter, nat, mangle, raw, … (nft: the table name)"),
            ("chain", "string", "chain as dumped"),
            ("position", "int64", "1-based rule position; 0 for the chain row"),
            (
                "kind",
                "category",
                "rule, chain (policy and counters of a chain), or element (of an nft set or "
                "map: the key in match, a verdict map's verdict as target)",
            ),
            ("chain_policy", "category", "ACCEPT/DROP for built-in chains; empty for rules and user chains"),
            ("packets", "int64", "counter; -1 if not dumped"),
            ("bytes", "int64", "counter; -1 if not dumped"),
            ("target", "category", "jump/goto target or verdict (DROP, ACCEPT, MARK, DNAT, chain name)"),
            ("goto", "bool", "-g rather than -j"),
            ("target_args", "string", "target options"),
            ("match", "string", "the rule spec after the chain"),
            ("comment", "string", "human comments, joined by '; '"),
            ("rule_hash", "string", "felix rule hash (`cali:<16>`)"),
            ("src", "string", "-s"),
            ("dst", "string", "-d"),
            ("in_iface", "string", "-i"),
            ("out_iface", "string", "-o"),
            ("protocol", "string", "-p"),
            ("dport", "string", "--dport/--dports"),
            ("to_destination", "string", "DNAT --to-destination"),
            (
                "calico_chain",
                "category",
                "workload-to, workload-from, host-endpoint-*, policy-in/out, profile-in/out, "
                "policy-group-in/out, dispatch, set-endpoint-mark, calico; empty if not felix's",
            ),
            ("endpoint_iface", "category", "interface of an endpoint chain (cali-tw-<iface>)"),
            (
                "policy",
                "category",
                "Calico policy or profile the rule belongs to or jumps to (from the chain's comment)",
            ),
            ("policy_kind", "category", "policy, profile, or policy-group (cali-gi-/cali-go-: the policies it holds)"),
            ("direction", "category", "ingress or egress"),
            ("tier", "category", "tier of an endpoint-chain rule (from 'Start of tier' comments)"),
            (
                "action",
                "category",
                "drop, reject, accept, return, dnat, masquerade, accept-mark, pass-mark, drop-mark, "
                "clear-mark, jump, goto, …",
            ),
            (
                "drop_kind",
                "category",
                "for DROP/REJECT: end_of_tier, no_profile, policy_deny, conntrack_invalid, "
                "encap_from_workload, no_endpoints, no_local_endpoints, lb_source_range (kube-proxy), other",
            ),
            ("service", "category", "kube-proxy service port name (namespace/name:port)"),
            ("service_ip", "category", "ClusterIP (KUBE-SERVICES rules and their chains)"),
            ("service_port", "int64", "service port; -1"),
            ("kube_chain", "category", "service, endpoint, external, …"),
            ("endpoint", "category", "backend ip:port of a KUBE-SEP chain or SVC→SEP rule"),
            (
                "duplicate",
                "bool",
                "an nft row of a table iptables-nft manages, which the node's iptables-nft-save dump also shows "
                "(with its comments); analyses use the iptables-save rows",
            ),
        ],
    ),
    "interfaces": (
        "One row per interface from `ip link` / `ip addr` (text or -j JSON).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("ifindex", "int64", "interface index"),
            ("name", "string", "name"),
            ("peer", "string", "after '@' (veth peer `ifN`, or the lower device)"),
            ("mtu", "int64", "MTU; -1"),
            ("state", "string", "operational state"),
            ("flags", "string", "flags"),
            ("mac", "string", "link address"),
            ("link_kind", "string", "vxlan, ipip, wireguard, veth, … (from `ip -d`)"),
            ("vni", "int64", "VXLAN id; -1"),
            ("vxlan_port", "int64", "VXLAN UDP port; -1"),
            ("addresses", "string", "space-separated CIDRs"),
        ],
    ),
    "routes": (
        "One row per route from `ip route` (any table).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("table", "string", "routing table (main unless given)"),
            ("type", "string", "unicast, local, blackhole, unreachable, …"),
            ("dst", "string", "destination"),
            ("via", "string", "gateway"),
            ("dev", "string", "device"),
            ("proto", "string", "proto"),
            ("scope", "string", "scope"),
            ("src", "string", "preferred source"),
            ("metric", "int64", "; -1"),
            ("onlink", "bool", "onlink flag"),
            ("raw", "string", "the route as dumped"),
        ],
    ),
    "bpf_conntrack": (
        "Calico eBPF conntrack entries (calico-bpf text/JSON, bpftool map dumps).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line or element"),
            ("source", "category", "calico-bpf-raw, calico-bpf-pretty, calico-bpf-json(-raw), bpftool"),
            ("proto", "int64", "L4 protocol number"),
            ("src", "string", "opener address (B when the B-A flag is set)"),
            ("sport", "int64", "opener port"),
            ("dst", "string", "other side (backend for NAT entries)"),
            ("dport", "int64", "other side's port"),
            ("entry_type", "category", "normal, nat-forward, nat-reverse"),
            ("flags", "string", "flag names"),
            ("orig_dst", "string", "pre-DNAT destination (service VIP)"),
            ("orig_dport", "int64", "pre-DNAT port; -1"),
            ("tun_ip", "string", "NodePort tunnel peer"),
            ("a2b_packets", "int64", "; -1"),
            ("a2b_bytes", "int64", "; -1"),
            ("b2a_packets", "int64", "; -1"),
            ("b2a_bytes", "int64", "; -1"),
            ("a2b_approved", "int64", "policy approved the A→B leg: 1, 0, or -1 unknown"),
            ("b2a_approved", "int64", "policy approved the B→A leg: 1, 0, or -1 unknown"),
            ("last_seen_ns", "int64", "bpf_ktime (CLOCK_MONOTONIC) of the last packet; -1"),
            ("active_ago_s", "float64", "seconds since the last packet at dump time"),
            ("tcp_state", "string", "ESTABLISHED, SYN-SENT, CLOSED, RESET"),
        ],
    ),
    "bpf_nat": (
        "Calico eBPF service NAT: one row per frontend × backend.",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line or element"),
            ("source", "category", "calico-bpf, calico-bpf-json, bpftool"),
            ("frontend_ip", "string", "service VIP (or node IP / 255.255.255.255 for NodePorts)"),
            ("frontend_port", "int64", "; -1"),
            ("proto", "int64", "; -1"),
            ("svc_id", "int64", "service id; -1"),
            ("count", "int64", "backends (-1 blackhole, 0 none)"),
            ("local", "int64", "node-local backends"),
            ("flags", "string", "external-local, internal-local, nat-exclude, maglev"),
            ("src_cidr", "string", "source-range frontend"),
            ("ordinal", "int64", "backend ordinal; -1 when the frontend has none"),
            ("backend_ip", "string", "backend"),
            ("backend_port", "int64", "; -1"),
        ],
    ),
    "bpf_routes": (
        "Calico eBPF route map entries.",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line or element"),
            ("source", "category", "calico-bpf, calico-bpf-json, bpftool"),
            ("cidr", "string", "prefix"),
            ("flags", "string", "local/remote, host/workload, in-pool, nat-out, tunneled, …"),
            ("ifindex", "int64", "local workload interface; -1"),
            ("next_hop", "string", "remote workload's node"),
        ],
    ),
    "bpf_counters": (
        "Calico eBPF per-interface counters (cumulative since the program was attached).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line or element"),
            ("source", "category", "calico-bpf, calico-bpf-json"),
            ("interface", "string", "interface"),
            ("category", "string", "Total, Accepted, Dropped, Redirect, …"),
            ("type", "string", "reason"),
            ("ingress", "int64", "tc ingress hook (for cali* WEPs: packets from the pod); -1 N/A"),
            ("egress", "int64", "tc egress hook; -1 N/A"),
            ("xdp", "int64", "XDP; -1 N/A"),
        ],
    ),
    "bpf_ifstate": (
        "Calico eBPF interface state (`calico-node -bpf ifstate dump`, text or `--json`): each interface's "
        "flags and the jump-map indexes of its policy programs.",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line or element"),
            ("source", "category", "calico-bpf, calico-bpf-json"),
            ("ifindex", "int64", "interface index"),
            ("name", "string", "interface name"),
            ("flags", "string", "workload, host, v4Ready, v6Ready, vxlan, ipip, wg, l3, bond, …"),
            ("xdp_policy_v4", "int64", "XDP policy program index; -1 none"),
            ("ingress_policy_v4", "int64", "tc ingress policy program index (for a WEP: the pod's egress policy)"),
            ("egress_policy_v4", "int64", "tc egress policy program index (for a WEP: the pod's ingress policy)"),
            ("xdp_policy_v6", "int64", "XDP policy program index, IPv6; -1"),
            ("ingress_policy_v6", "int64", "tc ingress policy program index, IPv6; -1"),
            ("egress_policy_v6", "int64", "tc egress policy program index, IPv6; -1"),
            ("tc_ingress_filter", "int64", "log filter program on tc ingress; -1 none"),
            ("tc_egress_filter", "int64", "log filter program on tc egress; -1 none"),
        ],
    ),
    "bpf_policy": (
        "What Calico's eBPF policy programs hold (`calico-node -bpf policy dump <iface> all`): a row per rule "
        "with its tier, policy, action, match and hit count, and a row per tier end with its action.",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("interface", "string", "interface the program is attached to"),
            ("hook", "category", "ingress, egress (tc hooks; for a WEP ingress is the pod's egress policy), xdp"),
            ("tier", "string", "tier"),
            ("policy_kind", "string", "NetworkPolicy, GlobalNetworkPolicy, … (where the dump says)"),
            ("policy", "string", "policy name"),
            ("rule", "string", "rule name or ID"),
            ("kind", "category", "rule, or end-of-tier"),
            ("action", "category", "allow, deny, pass, log (rules); the tier's end action"),
            ("match", "string", "the rule's match summary (current form)"),
            ("hit_count", "int64", "packets the rule matched (BPF rule counter); -1 not dumped"),
        ],
    ),
    "traces": (
        "Rule traces from `iptables -j TRACE` log lines, `nft monitor trace` and Calico's eBPF debug log "
        "(one row per BPF verdict).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("source", "category", "iptables, nft or calico-bpf"),
            ("time", "string", "log timestamp as printed (calico-bpf: seconds since boot)"),
            ("trace_id", "string", "nft trace id"),
            ("family", "string", "ipv4/ipv6 or nft family"),
            ("table", "string", "table"),
            ("chain", "string", "chain (calico-bpf: the tag, `<interface>-I|E|X`, policy direction)"),
            (
                "type",
                "string",
                "rule, return, policy (iptables); packet, rule, verdict, policy (nft); deny, allow (calico-bpf)",
            ),
            ("rulenum", "int64", "rule number; -1"),
            ("verdict", "string", "nft verdict; calico-bpf message (`DENY due to policy`, `Final result=…`)"),
            ("in_iface", "string", "IN= / iif; calico-bpf: the interface of the tag"),
            ("out_iface", "string", "OUT= / oif"),
            ("src", "string", "source"),
            ("dst", "string", "destination"),
            ("proto", "string", "protocol"),
            ("sport", "int64", "; -1"),
            ("dport", "int64", "; -1"),
            ("ip_id", "int64", "; -1"),
            ("length", "int64", "; -1"),
            ("mark", "string", "packet mark"),
            ("rule", "string", "nft rule text"),
        ],
    ),
    "sysctls": (
        "Kernel settings dumped per node (`sysctl` output): conntrack limits, forwarding, rp_filter.",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("key", "string", "sysctl name"),
            ("value", "string", "value as printed"),
        ],
    ),
    "ipvs": (
        "kube-proxy's IPVS mode: virtual services and their real servers from `ipvsadm -Ln` (with "
        "`--stats`, `--rate`, `--exact`, or `-S`).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("kind", "category", "service (a virtual service) or real (one of its real servers)"),
            ("proto", "category", "tcp, udp, sctp, or fwmark"),
            ("vip", "string", "virtual address (the ClusterIP, external or node address)"),
            ("vport", "int64", "virtual port; -1"),
            ("fwmark", "int64", "firewall mark of a mark-based service; -1"),
            ("scheduler", "string", "rr, lc, sh, …"),
            ("flags", "string", "persistent <timeout>, …"),
            ("backend_ip", "string", "real server address (real rows)"),
            ("backend_port", "int64", "real server port; -1"),
            ("forward", "category", "Masq, Route, Tunnel, Local"),
            ("weight", "int64", "weight; -1"),
            ("active_conns", "int64", "active connections; -1"),
            ("inactive_conns", "int64", "inactive connections; -1"),
            ("conns", "int64", "connections scheduled (--stats); -1"),
            ("in_packets", "int64", "packets in (--stats; K/M/G/T suffixes multiplied out); -1"),
            ("out_packets", "int64", "packets out (--stats); -1"),
            ("in_bytes", "int64", "bytes in (--stats); -1"),
            ("out_bytes", "int64", "bytes out (--stats); -1"),
        ],
    ),
    "ipsets": (
        "Members of the node's ipsets (`ipset list`): kube-proxy's IPVS-mode frontends (KUBE-CLUSTER-IP, "
        "KUBE-EXTERNAL-IP, KUBE-LOAD-BALANCER, KUBE-NODE-PORT-*) and Calico's selector sets (cali40…).",
        [
            ("node", "category", "node"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("set", "string", "set name"),
            ("type", "string", "hash:ip,port, hash:net, bitmap:port, …"),
            ("member", "string", "the member as listed (10.96.0.10,udp:53; 192.168.0.0/16; 30080)"),
            ("options", "string", "what follows it (timeout, packets and bytes counters, …)"),
            ("comment", "string", "the member's comment, if the set keeps them"),
        ],
    ),
    "ip_pools": (
        "Calico IP pools (`calicoctl get ippools [-o wide]`, `-o yaml|json`): the encapsulation and NAT their "
        "pods' traffic should get.",
        [
            ("node", "category", "node the file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line (listings); -1 for an object of a document"),
            ("name", "string", "pool name"),
            ("cidr", "string", "the pool's CIDR"),
            ("ipip_mode", "category", "Never, Always, CrossSubnet; empty when not listed (no -o wide)"),
            ("vxlan_mode", "category", "Never, Always, CrossSubnet; empty when not listed"),
            ("nat_outgoing", "bool", "SNAT for traffic leaving the pools"),
            ("disabled", "bool", "no new addresses from it"),
        ],
    ),
    "network_policies": (
        "Network policies as saved with `kubectl|calicoctl get … -o yaml|json`, or listed (selectors only) "
        "(Kubernetes NetworkPolicy, Calico "
        "NetworkPolicy and GlobalNetworkPolicy, staged ones): what each selects and its rules, a line each.",
        [
            ("node", "category", "node the file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line (listings); -1 for an object of a document"),
            ("kind", "category", "KubernetesNetworkPolicy, NetworkPolicy, GlobalNetworkPolicy, Staged…"),
            ("namespace", "string", "namespace (empty for global policies)"),
            ("name", "string", "name"),
            ("tier", "string", "Calico tier (default for Kubernetes policies)"),
            ("order", "float64", "Calico order; -1 when not set"),
            ("selector", "string", "endpoints it applies to (Calico selector, or podSelector as one)"),
            ("types", "string", "ingress, egress"),
            ("ingress", "string", "its ingress rules, `; `-separated (no rule with Ingress in types: denies all)"),
            ("egress", "string", "its egress rules, likewise"),
        ],
    ),
    "flow_logs": (
        "Calico flow logs saved beside the bundle, from Goldmane (Calico Open Source's flow logs API: "
        "endpoints by pod name) or Calico Enterprise/Cloud (with addresses), one row per flow log entry.",
        [
            ("node", "category", "node the file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line (JSON lines); -1 for an element of one document"),
            ("source", "category", "goldmane or enterprise"),
            ("start_s", "int64", "start of the aggregation interval, UNIX seconds"),
            ("end_s", "int64", "end of the aggregation interval, UNIX seconds"),
            ("src_ip", "string", "source address (Enterprise; empty when aggregated or from Goldmane)"),
            ("src_port", "int64", "source port; -1"),
            ("src_name", "string", "source pod (an aggregated name ends in *), pvt, pub, or a network set"),
            ("src_namespace", "string", "source namespace; - when not namespaced"),
            ("src_type", "category", "wep, hep, ns, net"),
            ("dst_ip", "string", "destination address (Enterprise)"),
            ("dst_port", "int64", "destination port (after DNAT: the backend's); -1"),
            ("dst_name", "string", "destination pod or endpoint"),
            ("dst_namespace", "string", "destination namespace"),
            ("dst_type", "category", "wep, hep, ns, net"),
            ("dst_service", "string", "the service dialled, namespace/name:port"),
            ("proto", "category", "tcp, udp, icmp, …"),
            ("action", "category", "allow, deny (the verdict on the flow)"),
            ("reporter", "category", "src (the client's node) or dst (the server's)"),
            ("policies", "string", "the enforced policy hits in order: tier/name action (rule)"),
            ("deny_policies", "string", "the policies whose hit denied"),
            ("packets_in", "int64", "packets in"),
            ("packets_out", "int64", "packets out"),
            ("bytes_in", "int64", "bytes in"),
            ("bytes_out", "int64", "bytes out"),
            ("connections", "int64", "connections started in the interval"),
            ("host", "string", "node that reported it (Enterprise)"),
        ],
    ),
    "platform_evidence": (
        "What the bundle says about the software that ran, a statement a row: Calico's version "
        "(ClusterInformation, calico/node image tags, Felix's start-up log line, `calicoctl version`), Felix "
        "settings (FelixConfiguration fields and their FELIX_* environment forms) and kube-proxy's mode "
        "(its KubeProxyConfiguration, its `Using … Proxier` log line).",
        [
            ("node", "category", "node the file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("kind", "category", "calico_version, felix_setting, kube_proxy_mode"),
            ("said_by", "string", "what stated it: the field, image or log line"),
            ("value", "string", "the version (v3.28.0), the setting's value, or the mode"),
            ("scope", "string", "the node a per-node FelixConfiguration (`node.<name>`) sets it for; empty: "
             "every node the file speaks for"),
        ],
    ),
    "pods": (
        "Pods from `kubectl get pods` listings (addresses and nodes with `-o wide`) and `-o yaml|json`, and "
        "Calico workload endpoints (`calicoctl get workloadendpoints`), with the pod's host-side interface.",
        [
            ("node", "category", "node the listing file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("namespace", "string", "namespace"),
            ("name", "string", "pod name"),
            ("status", "string", "phase as listed"),
            ("ip", "string", "pod IP"),
            ("pod_node", "string", "node the pod runs on"),
            (
                "interface",
                "string",
                'its workload interface: as a workload endpoint names it, else `cali` + sha1("namespace.pod")[:11]',
            ),
        ],
    ),
    "endpoints": (
        "Service backends from Endpoints and EndpointSlices (`kubectl get endpoints|endpointslices`, "
        "`-o yaml|json`): one row per backend address and port, ready or not.",
        [
            ("node", "category", "node the file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line (listings); -1 for an object of a document"),
            ("namespace", "string", "namespace"),
            ("service", "string", "service (an EndpointSlice listing does not name it: empty)"),
            ("slice", "string", "EndpointSlice name; empty for Endpoints"),
            ("address", "string", "backend address"),
            ("port", "int64", "backend port; -1"),
            ("port_name", "string", "the port's name (the service port it serves)"),
            ("protocol", "string", "tcp, udp, sctp; empty when not said"),
            (
                "ready",
                "category",
                "ready, not_ready, terminating, unknown (an EndpointSlice listing shows "
                "every address; an Endpoints listing only the ready ones)",
            ),
            ("target", "string", "namespace/pod behind the address"),
            ("target_node", "string", "node of that pod"),
        ],
    ),
    "cluster_nodes": (
        "Cluster nodes from `kubectl get nodes [-o wide]`, `calicoctl get nodes -o wide` and `-o yaml|json` "
        "(Kubernetes Nodes with Calico's annotations, Calico Nodes): the addresses each node owns.",
        [
            ("node", "category", "node the file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line (listings); -1 for an object of a document"),
            ("kind", "category", "Node (Kubernetes) or CalicoNode"),
            ("name", "string", "node name"),
            ("status", "string", "Ready, NotReady (with its roles' text in a listing)"),
            ("internal_ip", "string", "InternalIP addresses, space-separated"),
            ("external_ip", "string", "ExternalIP addresses"),
            ("calico_ip", "string", "the address (CIDR) Calico uses for the node (BGP IPv4/IPv6 address)"),
            ("tunnel_ips", "string", "its IPIP, VXLAN and WireGuard interface addresses"),
            ("pod_cidrs", "string", "podCIDRs"),
            ("kernel_version", "string", "kernel"),
            ("container_runtime", "string", "container runtime"),
        ],
    ),
    "dataplane": (
        "Per node: which dataplane its dumps show (eBPF, iptables, nftables) and whether it encrypts with WireGuard.",
        [
            ("node", "string", "node"),
            ("mode", "category", "ebpf, iptables, nftables, mixed (both kinds of state), unknown"),
            ("encryption", "category", "wireguard (a wireguard.cali / wg-v6.cali device), or empty"),
            ("bpf_files", "int64", "BPF state files (calico-bpf dumps, bpftool map dumps, bpf-prog.txt, …)"),
            ("policy_chains", "int64", "Calico per-endpoint iptables/nft policy chains (cali-tw-, cali-fw-, …)"),
            ("kube_proxy_chains", "int64", "kube-proxy service chains (KUBE-SERVICES, KUBE-SVC-*)"),
            ("evidence", "string", "what the mode was read from"),
            (
                "calico_version",
                "string",
                "Calico release that ran (v3.28.0), a range read from the rules' "
                "dialect (>=v3.30, <=v3.29) or several (v3.28.0..v3.29.1); empty if the bundle does not say",
            ),
            ("calico_version_from", "string", "where the version was read (file:line), or why it is a range"),
            (
                "kube_proxy",
                "category",
                "kube-proxy's mode: iptables, ipvs, nftables, replaced (Calico eBPF serves services), none, unknown",
            ),
            ("kube_proxy_from", "string", "where the mode was read"),
            (
                "peer_redirect",
                "string",
                "eBPF peer redirect: which arrivals skip the destination veth's tap "
                "(none; host endpoints L2; + local workloads; + L3 tunnels); empty off eBPF",
            ),
            ("peer_redirect_from", "string", "the version or setting it follows, or the reading assumed"),
            (
                "mtu_configured",
                "string",
                "MTUs the configuration sets (FelixConfiguration vxlanMTU, ipipMTU, "
                "wireguardMTU[V6], calicoNetwork.mtu, veth_mtu), `name=value` space-separated; empty: Calico "
                "detects them from the host's MTU",
            ),
            (
                "chain_insert_mode",
                "string",
                "FelixConfiguration chainInsertMode: Insert (Calico's rules first in "
                "the built-in chains, the default) or Append (after the rules already there); empty when not said",
            ),
        ],
    ),
    "wireguard": (
        "Every WireGuard message on a capture (UDP 51820/51821), tied to the plaintext packet it carried "
        "where the size rule, counter order and time allow.",
        [
            ("packet", "int64", "row of the packets table (the message)"),
            ("node", "category", "node of the capture"),
            ("interface", "category", "capture interface (the uplink)"),
            ("ts_ns", "int64", "capture time"),
            ("direction", "category", "tx (sent by this node), rx (received), or empty if neither end is the node"),
            ("peer", "category", "the other node (or its address when unknown)"),
            ("outer_src", "category", "outer source"),
            ("outer_dst", "category", "outer destination"),
            ("msg_type", "category", "data, keepalive, initiation, response, cookie, unknown"),
            ("receiver_index", "int64", "receiver's index (data, response, cookie); -1"),
            ("sender_index", "int64", "sender's index (initiation, response); -1"),
            ("counter", "int64", "data message counter (per session, from 0); -1"),
            ("udp_payload", "int64", "UDP payload bytes: 32 + padded plaintext for data messages"),
            ("inner_packet", "int64", "row of the packets table of the plaintext (on wireguard.cali); -1"),
            ("inner_len", "int64", "plaintext IP length; -1"),
            (
                "match",
                "category",
                "exact, ambiguous (a skipped neighbour had the same size), segment (one of "
                "several messages of a GSO/GRO super-packet), unmatched, keepalive, handshake, no_plaintext_capture "
                "(no WireGuard device capture on the node), unknown_peer, unknown",
            ),
            ("overhead_bytes", "int64", "outer IP length minus plaintext length (exact/ambiguous); -1"),
            (
                "delay_ns",
                "int64",
                "tx: message time minus plaintext time (encryption); rx: plaintext minus message (decryption); -1",
            ),
        ],
    ),
    "services": (
        "Kubernetes services from `kubectl get services` listings and `-o yaml|json`: one row per service "
        "port (and per cluster IP of a dual-stack service).",
        [
            ("node", "category", "node the listing file belongs to (empty for cluster-wide files)"),
            ("artifact", "string", "file"),
            ("line", "int64", "line"),
            ("namespace", "string", "namespace"),
            ("name", "string", "service name"),
            ("type", "string", "ClusterIP, NodePort, LoadBalancer, ExternalName"),
            ("cluster_ip", "string", "ClusterIP; empty for headless services"),
            ("external_ip", "string", "external IPs as listed"),
            ("port", "int64", "service port"),
            ("port_name", "string", "the port's name (`-o yaml`/`-o json` only; kube-proxy names the port by it)"),
            ("node_port", "int64", "NodePort; -1"),
            ("protocol", "string", "tcp, udp or sctp"),
        ],
    ),
    "hops": (
        "The join: one row per sighting of a packet at a capture point, grouped into packet instances. "
        "A datagram reassembled from its fragments at a point is one sighting there (its first fragment's).",
        [
            ("instance", "int64", "one packet: copies of a fingerprint at several points within the hop window"),
            ("hop_index", "int64", "order of this sighting within the instance (sender's node first)"),
            ("packet", "int64", "row of the packets table"),
            ("point", "int64", "capture point (capture and interface) id"),
            ("capture_id", "int32", "capture"),
            ("node", "category", "node"),
            ("interface", "category", "interface"),
            ("role", "category", "workload, tunnel, uplink, any, other"),
            ("ts_ns", "int64", "timestamp as captured (the node's clock)"),
            ("ts_corrected_ns", "int64", "timestamp on the reference node's clock (clock_offsets applied)"),
            ("delta_ns", "int64", "corrected time since the previous hop of the instance; -1 for the first"),
            ("copy_no", "int64", "0 for the first sighting at this point; 1, 2, … for further copies (duplicates)"),
            ("ambiguous", "bool", "the instance has several copies at one point, so hop pairing is uncertain"),
            ("origin", "category", "node owning the packet's sender address (outer source if encapsulated)"),
            ("encap", "category", "encapsulation here"),
            ("vni", "int64", "VNI / GRE key here; -1"),
            ("outer_src", "category", "outer source here"),
            ("outer_dst", "category", "outer destination here"),
            ("src", "category", "innermost source here (NAT rewrites show)"),
            ("dst", "category", "innermost destination here"),
            ("proto", "int16", "protocol"),
            ("sport", "int32", "source port here; -1"),
            ("dport", "int32", "destination port here; -1"),
            ("ip_id", "int64", "IP id; -1"),
            ("tcp_flags", "int16", "TCP flags; -1"),
            ("ip_len", "int32", "innermost IP length (a reassembled datagram's whole length)"),
            ("payload_len", "int32", "L4 payload length (a reassembled datagram's whole payload)"),
            ("fingerprint", "uint64", "the key the sightings were matched on"),
            ("icmp_type", "int16", "ICMP type; -1"),
            ("icmp_code", "int16", "ICMP code; -1"),
            ("q_src", "category", "source quoted by an ICMP error"),
            ("q_dst", "category", "destination quoted by an ICMP error"),
            ("q_proto", "int16", "protocol quoted by an ICMP error; -1"),
            ("q_sport", "int32", "source port quoted by an ICMP error; -1"),
            ("q_dport", "int32", "destination port quoted by an ICMP error; -1"),
            ("flow_id", "int64", "flow (`flows.flow_id`)"),
            ("direction", "category", "fwd (from the client), rev (from the server), icmp-error (about the flow)"),
        ],
    ),
    "clock_offsets": (
        "Each node's clock against the reference node, from packets matched in both directions.",
        [
            ("node", "string", "node"),
            ("reference", "string", "reference node (offset 0)"),
            ("offset_ns", "int64", "this node's clock minus the reference's; subtract it from the node's timestamps"),
            ("uncertainty_ns", "int64", "half-width of the interval the offset must lie in; -1 when not estimated"),
            ("method", "string", "reference, two-way min delay, or why it could not be estimated"),
            ("via", "string", "nodes the estimate was chained through"),
            ("samples_out", "int64", "packets matched from the reference side to this node"),
            ("samples_back", "int64", "packets matched from this node to the reference side"),
        ],
    ),
    "flows": (
        "One row per connection as the client dialled it, tied to its NAT legs, with its path and verdict.",
        [
            ("flow_id", "int64", "flow id"),
            ("proto", "string", "tcp, udp, icmp, …"),
            ("proto_num", "int64", "protocol number"),
            ("client_ip", "string", "client (sender of the first SYN, else of the first packet)"),
            ("client_port", "int64", "client port; -1"),
            ("server_ip", "string", "server as dialled (e.g. a ClusterIP)"),
            ("server_port", "int64", "port as dialled; -1"),
            (
                "service",
                "string",
                "service of the dialled address (kube-proxy: namespace/name:port-name; BPF NAT or "
                "listing: namespace/name:port); under connect-time LB, the candidates serving the backend, "
                "comma-separated",
            ),
            (
                "service_via",
                "category",
                "kube-proxy, bpf-nat, kubectl listing, or backend (connect-time LB "
                "reverse lookup: the ClusterIP never shows, and a direct connection to the pod looks the same)",
            ),
            ("backend_ip", "string", "destination after DNAT (seen at a later hop, or conntrack's reply source)"),
            ("backend_port", "int64", "port after DNAT; -1"),
            ("snat_ip", "string", "source after SNAT/MASQUERADE"),
            ("snat_port", "int64", "source port after SNAT; -1"),
            ("packets_fwd", "int64", "distinct packets from the client side"),
            ("packets_rev", "int64", "distinct packets from the server side"),
            ("bytes_fwd", "int64", "IP bytes from the client side"),
            ("bytes_rev", "int64", "IP bytes from the server side"),
            ("conn_state", "string", "Zeek conn_state (S0, SF, REJ, S1, RSTO, …; UDP: S0 or SF)"),
            ("history", "string", "Zeek-style history (originator upper case)"),
            ("first_ns", "int64", "first sighting, reference clock; -1"),
            ("last_ns", "int64", "last sighting, reference clock; -1"),
            ("path_fwd", "string", "capture points client → server, `node:interface > …`"),
            ("path_rev", "string", "capture points server → client"),
            (
                "scope",
                "category",
                "routed, or link (link-local, multicast or broadcast: never forwarded, e.g. IPv6 "
                "neighbour discovery); reports leave link-scope flows out of their counts",
            ),
            ("verdict", "category", "delivered, dropped, partial, unobserved (no capture where it would show)"),
            ("last_seen", "string", "for dropped/partial flows: the last capture point the lost packets reached"),
            ("missing_at", "string", "…and the capture point they should have reached next"),
            (
                "peer_redirected",
                "int64",
                "eBPF: forward packets the destination's host-side veth did not show "
                "although the flow was answered (peer redirect skips that tap: delivered, not dropped)",
            ),
            ("icmp_errors", "int64", "ICMP errors quoting this flow's packets"),
            ("icmp_error_types", "string", "their type/code pairs, e.g. 3/4 (fragmentation needed)"),
            ("ambiguous", "int64", "packet instances whose hop pairing is ambiguous"),
            ("ct_state", "string", "state of the conntrack entry with the flow's original tuple"),
            ("ct_nat", "string", "its NAT kind"),
            ("hops", "int64", "sightings (rows of hops) in the flow"),
        ],
    ),
    "anomalies": (
        "Everything not read, or read and found wrong: where and why.",
        [
            ("source", "category", "parser or stage (bundle, pcap, packets, conntrack, rules, …)"),
            ("artifact", "string", "file"),
            ("node", "category", "node"),
            ("location", "string", "line N, frame N, byte N, element N, or a member name"),
            ("kind", "category", "what was wrong (truncated_record, unparsed_line, link_refused, …)"),
            ("detail", "string", "explanation, with the offending text where short"),
        ],
    ),
}


def columns(table: str) -> list[str]:
    return [c for c, _, _ in SCHEMAS[table][1]]


def _conforms(df: pd.DataFrame, table: str) -> bool:
    cols = SCHEMAS[table][1]
    if list(df.columns) != [c for c, _, _ in cols]:
        return False
    for col, dtype, _ in cols:
        actual = df[col].dtype
        if dtype == "category":
            if not isinstance(actual, pd.CategoricalDtype) or actual.categories.dtype != object:
                return False
        elif dtype == "string":
            if actual is not np.dtype(object):
                return False
        elif str(actual) != dtype:
            return False
    return True


def conform(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Give ``df`` exactly the documented columns, in order, with the documented dtypes."""
    if _conforms(df, table):  # already right: no copy (a packets table can be gigabytes)
        return df.reset_index(drop=True) if not isinstance(df.index, pd.RangeIndex) else df
    out = {}
    for col, dtype, _ in SCHEMAS[table][1]:
        s = df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)
        if dtype == "string":
            s = s.astype(object).where(s.notna(), "").astype(object)
        elif dtype == "category":
            s = pd.Series(categorical(s), index=s.index)
        elif dtype == "bool":
            s = s.astype(object).where(s.notna(), False).astype(bool)
        elif dtype == "float64":
            s = pd.to_numeric(s, errors="coerce").astype("float64")
        elif str(s.dtype) != dtype and pd.api.types.is_integer_dtype(s.dtype):
            s = s.astype(dtype)  # another integer width: no per-value parse
        elif str(s.dtype) != dtype:
            s = int_column(s).astype(dtype)
        out[col] = s.reset_index(drop=True)
    return columns_frame(out)  # one block a column: pd.DataFrame(out) would copy them all into 2-D blocks


def columns_frame(columns: dict) -> pd.DataFrame:
    """A DataFrame over the given arrays without copying them into consolidated blocks.

    `pd.DataFrame(dict)` stacks same-dtype columns into 2-D blocks: for a packets table that is a
    full copy of every column (~0.4 s per million packets); concatenating Series keeps one block
    per column and copies nothing.
    """
    if not columns:
        return pd.DataFrame()
    # copy=False: pandas 3 otherwise copies every ndarray handed to Series (copy-on-write)
    return pd.concat([pd.Series(v, name=k, copy=False) for k, v in columns.items()], axis=1)


def codes_dtype(categories: int) -> type:
    """The dtype pandas keeps a categorical's codes in for this many categories: codes handed to
    ``Categorical.from_codes`` in it are used as they are, not copied."""
    return next(dt for dt in (np.int8, np.int16, np.int32, np.int64) if categories < np.iinfo(dt).max)


def per_category(values, fn, fill) -> tuple[np.ndarray, np.ndarray]:
    """(lookup table, codes): ``fn`` of each row's value is ``table[codes]``, decided once per
    distinct value (code -1, no value, picks the trailing ``fill``)."""
    cat = categorical(values)
    return np.asarray([fn(v) for v in cat.categories] + [fill]), cat.codes


def category_code(values: pd.Categorical, label: str) -> int:
    """The code of ``label`` among a categorical's categories; -2 (matching no row, not even a
    missing value's -1) when it is not one of them."""
    return int(values.categories.get_loc(label)) if label in values.categories else -2


def take_rows(df: pd.DataFrame, rows: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Some columns of some rows of a large table, gathered a column at a time (a boolean filter
    or ``iloc`` copies every column of the table: for the hops, ~35 of them)."""
    return columns_frame(
        {
            c: df[c].array.take(rows) if isinstance(df[c].dtype, pd.CategoricalDtype) else df[c].to_numpy()[rows]
            for c in columns
        }
    )


def categorical(values) -> pd.Categorical:
    """A categorical whose categories are plain Python strings (object dtype).

    pandas 3 would otherwise infer Arrow-backed string categories, and every later conversion of a
    million-row column to numpy objects then goes through Arrow one element at a time.
    """
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        cat = values.array if isinstance(values, pd.Series) else values
        cats = cat.categories
        if cats.dtype == object:
            return cat
        return pd.Categorical.from_codes(cat.codes, categories=pd.Index(cats.astype(object), dtype=object))
    arr = np.asarray(values, dtype=object)
    arr = np.where(pd.isna(arr), "", arr)
    codes, uniques = pd.factorize(arr)
    return pd.Categorical.from_codes(codes, categories=pd.Index([str(u) for u in uniques], dtype=object))


def table_frame(rows: list[dict], table: str, node: str = "", artifact: str = "") -> pd.DataFrame:
    """A parser's rows as the documented table (the node and artifact they came from filled in)."""
    df = pd.DataFrame(rows, columns=columns(table), dtype=object)
    df["node"] = node
    df["artifact"] = artifact
    return conform(df, table)


def markdown() -> str:
    lines = [
        "# Tables",
        "",
        "Generated from `calforensics/schema.py` (`make docs`); do not edit by hand.",
        "",
        "Every table is a pandas DataFrame: `bundle.<table>` or `bundle.table(name)`. Integer columns use -1 "
        'for "absent" and text columns "" so that tables stay numpy-friendly.',
        "",
    ]
    for table, (doc, cols) in SCHEMAS.items():
        lines += [f"## `{table}`", "", doc, "", "| column | dtype | meaning |", "|---|---|---|"]
        lines += [f"| `{c}` | {t} | {m.replace('|', '/')} |" for c, t, m in cols]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
