"""What a rule means to Calico (felix) and to kube-proxy, derived from chain names and comments.

Facts from felix/rules (rule_defs.go, endpoints.go, policy.go) and kube-proxy's proxier.go, as
summarised in the shared formats reference sections 2 and 6. Works on the `rules` table of both
iptables-save and nft (whose chain names are mapped back to iptables names first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ..ingest.parsers.nft import iptables_chain_name

CALICO_PREFIXES = [  # longest first
    ("cali-thfw-", "host-endpoint-forward-to"),
    ("cali-fhfw-", "host-endpoint-forward-from"),
    ("cali-pri-", "profile-in"),
    ("cali-pro-", "profile-out"),
    ("cali-tw-", "workload-to"),
    ("cali-fw-", "workload-from"),
    ("cali-th-", "host-endpoint-to"),
    ("cali-fh-", "host-endpoint-from"),
    ("cali-pi-", "policy-in"),
    ("cali-po-", "policy-out"),
    ("cali-gi-", "policy-group-in"),
    ("cali-go-", "policy-group-out"),
    ("cali-sm-", "set-endpoint-mark"),
]
ENDPOINT_KINDS = {
    "workload-to",
    "workload-from",
    "host-endpoint-to",
    "host-endpoint-from",
    "host-endpoint-forward-to",
    "host-endpoint-forward-from",
    "set-endpoint-mark",
}
# "Policy <name> ingress" (<= v3.31) or "<Kind> <ns>/<name> egress" (v3.32+), "Profile <name> ingress"
POLICY_COMMENT = re.compile(
    r"^(Policy|Profile|[A-Z][A-Za-z]*Policy|[A-Z][A-Za-z]*NetworkPolicy)\s+(\S+)\s+(ingress|egress)$"
)
TIER_START = re.compile(r"Start of tier (\S+)")
TIER_END = re.compile(r"End of tier (\S+?)\.")
SVC_COMMENT = re.compile(
    r"^(?P<spn>\S+?) (?:cluster IP|external IP|loadbalancer IP|has no endpoints|has no local endpoints|"
    r"health check node port)$|^masquerade traffic for (?P<spn2>\S+) external destinations$|"
    r"^(?P<spn3>\S+) -> (?P<ep>\S+)$|"
    # KUBE-PROXY-FIREWALL: a LoadBalancer's loadBalancerSourceRanges turning a source away
    r"^(?P<spn5>\S+) traffic not accepted by KUBE-FW-\S+$|"
    # the service port name alone: KUBE-NODEPORTS and KUBE-SEP rules (`default/web:http`, older `default/web:`)
    r"^(?P<spn4>[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]*)?)$"
)
# kube-proxy's chains that match a service frontend (nat and filter): DNAT jumps, and in filter the
# REJECT of a service without endpoints and the DROPs of KUBE-PROXY-FIREWALL
KUBE_SERVICE_CHAINS = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-", "KUBE-SEP-")  # one service's
KUBE_FRONT_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")
ACCEPT_MARK, PASS_MARK, DROP_MARK = 0x10000, 0x20000, 0x40000
NFT_CT_INVALID = re.compile(r"\bct state (?:invalid|0x0*1)\b(?!,)")  # `nft -n` prints states as bits
# kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go): chains named
# `<kind>-<hash8>-<ns>/<svc>/<proto>/<port name>[__<endpoint ip>/<port>]`, services in verdict maps
KUBE_NFT_CHAIN = re.compile(
    r"^(?P<kind>service|external|endpoint|firewall)-[A-Z2-7]{8}-(?P<ns>[^/]+)/(?P<svc>[^/]+)/(?P<proto>[a-z]+)/"
    r"(?P<port>[^/]*?)(?:__(?P<ep>.+)/(?P<epport>\d+))?$"
)
KUBE_NFT_MAPS = {  # map -> (key holds an address, what its elements are)
    "service-ips": (True, "frontend"),
    "service-nodeports": (False, "frontend"),
    "no-endpoint-services": (True, "no_endpoints"),
    "no-endpoint-nodeports": (False, "no_endpoints"),
    "firewall-ips": (True, "firewall"),
}
PROTO_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp"}
MEANING_COLUMNS = [
    "calico_chain",
    "endpoint_iface",
    "policy",
    "policy_kind",
    "direction",
    "tier",
    "action",
    "drop_kind",
    "service",
    "service_ip",
    "service_port",
    "kube_chain",
    "endpoint",
]


def calico_chain_kind(chain: str) -> tuple[str, str]:
    """(kind, suffix) for a felix chain name; ("", "") for chains that are not Calico's."""
    for prefix, kind in CALICO_PREFIXES:
        if chain.startswith(prefix):
            return kind, chain[len(prefix) :]
    if chain in ("cali-from-wl-dispatch", "cali-to-wl-dispatch") or chain.startswith(
        ("cali-from-wl-dispatch-", "cali-to-wl-dispatch-", "cali-from-hep-forward", "cali-to-hep-forward")
    ):
        return "dispatch", ""
    if chain.startswith("cali-"):
        return "calico", ""
    return "", ""


def kube_chain_kind(chain: str) -> str:
    for prefix, kind in (
        ("KUBE-SVC-", "service"),
        ("KUBE-SVL-", "service-local"),
        ("KUBE-EXT-", "external"),
        ("KUBE-FW-", "firewall"),
        ("KUBE-SEP-", "endpoint"),
        ("KUBE-XLB-", "external"),
    ):
        if chain.startswith(prefix):
            return kind
    return chain.lower().removeprefix("kube-") if chain.startswith("KUBE-") else ""


def _mark_action(target: str, args: str) -> str:
    m = re.search(r"--set-x?mark\s+(0x[0-9a-fA-F]+|\d+)(?:/(0x[0-9a-fA-F]+|\d+))?", args)
    if target == "MARK" and m:
        value = int(m.group(1), 0)
        if value & ACCEPT_MARK:
            return "accept-mark"
        if value & PASS_MARK:
            return "pass-mark"
        if value & DROP_MARK:
            return "drop-mark"
        return "clear-mark" if value == 0 else "mark"
    return ""


def _action(target: str, args: str, goto: bool) -> str:
    t = target.upper()
    if t in ("DROP", "REJECT", "ACCEPT", "RETURN", "DNAT", "SNAT", "MASQUERADE", "LOG", "NFLOG", "TRACE"):
        return t.lower()
    if t == "MARK":
        return _mark_action(t, args)
    if not target:
        return ""
    return "goto" if goto else "jump"


def _drop_kind(chain_kind: str, comment: str, match: str, action: str) -> str:
    if action not in ("drop", "reject"):
        return ""
    c = comment.lower()
    if "has no endpoints" in c:
        return "no_endpoints"
    if "has no local endpoints" in c:
        return "no_local_endpoints"
    if "traffic not accepted by kube-fw-" in c:
        return "lb_source_range"
    if "drop if no policies passed packet" in c or "end of tier" in c:
        return "end_of_tier"
    if "no profiles matched" in c:
        return "no_profile"
    if "encapped packets originating in" in c:
        return "encap_from_workload"
    if "INVALID" in match or NFT_CT_INVALID.search(match):
        return "conntrack_invalid"
    if chain_kind in ("policy-in", "policy-out", "profile-in", "profile-out"):
        return "policy_deny"
    return "other"


@dataclass
class _Rows:
    """The rules table's columns as plain lists, read once for the passes below; ``group`` is each
    rule's (node, artifact, table): chains are named within it."""

    df: pd.DataFrame
    chains: list[str]
    targets: list[str]
    comments: list[str]
    matches: list[str]
    args: list[str]
    gotos: list
    kinds: list[str]
    group: list[tuple[str, str, str]]

    @classmethod
    def of(cls, df: pd.DataFrame) -> _Rows:
        return cls(
            df,
            [iptables_chain_name(str(c)) for c in df["chain"]],
            [iptables_chain_name(str(t)) for t in df["target"]],
            df["comment"].fillna("").astype(str).tolist(),
            df["match"].fillna("").astype(str).tolist(),
            df["target_args"].fillna("").astype(str).tolist(),
            df["goto"].tolist(),
            df["kind"].astype(str).tolist(),
            list(zip(df["node"].astype(str), df["artifact"].astype(str), df["table"].astype(str), strict=True)),
        )


def add_rule_meaning(rules: pd.DataFrame) -> pd.DataFrame:
    """Return ``rules`` with the Calico / kube-proxy meaning columns added."""
    df = rules.copy()
    n = len(df)
    out: dict[str, list] = {c: [""] * n for c in MEANING_COLUMNS}
    out["service_port"] = [-1] * n
    r = _Rows.of(df)
    chain_policy = _row_facts(r, out)
    _endpoint_policies(r, out, chain_policy)
    _kube_services(r, out)
    protocols = _kube_nft(r, out)
    if protocols:  # an element's key says its protocol; the parser could not tell a key from a match
        df["protocol"] = df["protocol"].astype(object)
        for i, proto in protocols.items():
            df.iat[i, df.columns.get_loc("protocol")] = proto
    for col in MEANING_COLUMNS:
        df[col] = out[col]
        if col != "service_port":
            df[col] = df[col].astype("category")
    df["service_port"] = df["service_port"].astype("int64")
    return df


def _row_facts(r: _Rows, out: dict[str, list]) -> dict[tuple, tuple[str, str, str]]:
    """Per-row facts (chain kinds, endpoint, action, drop kind), and which policy or profile each
    policy chain belongs to: from its first rule's comment, and profiles also by their chain name
    (cali-pri-kns.default)."""
    chain_policy: dict[tuple, tuple[str, str, str]] = {}
    for i in range(len(r.chains)):
        ck, suffix = calico_chain_kind(r.chains[i])
        out["calico_chain"][i] = ck
        if ck in ENDPOINT_KINDS:
            out["endpoint_iface"][i] = suffix
        out["kube_chain"][i] = kube_chain_kind(r.chains[i])
        if r.kinds[i] != "rule":
            continue
        out["action"][i] = _action(str(r.df["target"].iat[i]), r.args[i], r.gotos[i])
        out["drop_kind"][i] = _drop_kind(ck, r.comments[i], r.matches[i], out["action"][i])
        for part in r.comments[i].split("; "):
            m = POLICY_COMMENT.match(part.strip())
            if m and ck.startswith(("policy", "profile")):
                kind = "profile" if m.group(1) == "Profile" else "policy"
                chain_policy.setdefault((*r.group[i], r.chains[i]), (m.group(2), m.group(3), kind))
    for i in range(len(r.chains)):
        ck = out["calico_chain"][i]
        key = (*r.group[i], r.chains[i])
        if key in chain_policy:
            continue
        direction = "ingress" if ck.endswith("-in") else "egress"
        suffix = r.chains[i].split("-", 2)[2] if r.chains[i].count("-") >= 2 else ""
        if ck in ("profile-in", "profile-out"):
            chain_policy[key] = (suffix, direction, "profile")
        elif ck in ("policy-in", "policy-out") and suffix and not suffix.startswith("_"):
            # a policy ID short enough not to be hashed (GetLengthLimitedID) is the chain's own suffix:
            # `<ns>/<name>` (up to v3.28), `<tier>/<name>` (v3.29-v3.31), `<kind>/<ns>/<name>` (v3.32+)
            chain_policy[key] = (suffix, direction, "policy")
    return chain_policy


def _endpoint_policies(r: _Rows, out: dict[str, list], chain_policy: dict) -> None:
    """Endpoint-chain rules inherit the policy they jump to and the tier they sit in; a tier's
    end-of-tier drop is attributed to the policies of that tier (none of them accepted the packet),
    a "no profiles matched" drop to the chain's profiles."""
    tier = ""
    prev_chain: tuple = ()
    tier_policies: list[str] = []
    profiles: list[str] = []
    # a policy-group chain (cali-gi-/cali-go-: policies sharing a selector) stands for the policies it
    # jumps to, in order
    groups: dict[tuple, list[str]] = {}
    for i in range(len(r.chains)):
        if out["calico_chain"][i] in ("policy-group-in", "policy-group-out") and r.kinds[i] == "rule":
            pol = chain_policy.get((*r.group[i], r.targets[i]))
            if pol and pol[0] not in groups.setdefault((*r.group[i], r.chains[i]), []):
                groups[(*r.group[i], r.chains[i])].append(pol[0])
    for key, names in groups.items():
        ingress = key[-1].startswith("cali-gi-")
        chain_policy.setdefault(key, (", ".join(names), "ingress" if ingress else "egress", "policy-group"))
    for i in range(len(r.chains)):
        key = (*r.group[i], r.chains[i])
        if key != prev_chain:
            tier, prev_chain, tier_policies, profiles = "", key, [], []
        if TIER_START.search(r.comments[i]):
            tier_policies = []
        m = TIER_START.search(r.comments[i]) or TIER_END.search(r.comments[i])
        if m:
            tier = m.group(1)
        pol = chain_policy.get(key) or chain_policy.get((*r.group[i], r.targets[i]))
        if pol:
            out["policy"][i], out["direction"][i], out["policy_kind"][i] = pol
            if key not in chain_policy:  # a jump from an endpoint chain
                if pol[2] == "profile":
                    profiles.append(pol[0])
                else:
                    tier_policies += groups.get((*r.group[i], r.targets[i]), [pol[0]])
        elif out["calico_chain"][i] in ("workload-to", "host-endpoint-to"):
            out["direction"][i] = "ingress"
        elif out["calico_chain"][i] in ("workload-from", "host-endpoint-from"):
            out["direction"][i] = "egress"
        if out["calico_chain"][i] in ENDPOINT_KINDS:
            out["tier"][i] = tier
            if out["drop_kind"][i] == "end_of_tier" and tier_policies:
                out["policy"][i], out["policy_kind"][i] = ", ".join(tier_policies), "policy"
            elif out["drop_kind"][i] == "no_profile" and profiles:
                out["policy"][i], out["policy_kind"][i] = ", ".join(profiles), "profile"


def _kube_services(r: _Rows, out: dict[str, list]) -> None:
    """kube-proxy: service chains from KUBE-SERVICES / KUBE-NODEPORTS, endpoints from SVC -> SEP jumps."""
    df, n = r.df, len(r.chains)
    svc_of_chain: dict[tuple, tuple[str, str, int]] = {}
    for i in range(n):
        if r.kinds[i] != "rule":
            continue
        m = SVC_COMMENT.match(r.comments[i])
        if not m:
            continue
        spn = next((m.group(g) for g in ("spn", "spn2", "spn3", "spn4", "spn5") if m.group(g)), "").rstrip(":")
        out["service"][i] = spn
        if m.group("ep"):
            out["endpoint"][i] = m.group("ep")
        if r.chains[i] in KUBE_FRONT_CHAINS and out["action"][i] in ("drop", "reject"):
            # kube-proxy turning a frontend away (no endpoints, a source outside the LB's ranges); without
            # a destination it is a NodePort (`-m addrtype --dst-type LOCAL`)
            out["service_ip"][i] = str(df["dst"].iat[i]).removesuffix("/32").removesuffix("/128")
            out["service_port"][i] = int(re.sub(r"\D.*", "", str(df["dport"].iat[i])) or -1)
        if r.chains[i] in ("KUBE-SERVICES", "KUBE-NODEPORTS") and r.targets[i].startswith("KUBE-"):
            vip = str(df["dst"].iat[i]).removesuffix("/32").removesuffix("/128")
            port = int(re.sub(r"\D.*", "", str(df["dport"].iat[i])) or -1)
            out["service_ip"][i], out["service_port"][i] = vip, port
            if not r.targets[i].startswith(KUBE_SERVICE_CHAINS):
                pass  # a shared helper (KUBE-MARK-MASQ, …) serves every service: it is none of theirs
            elif r.chains[i] == "KUBE-SERVICES":
                svc_of_chain[(*r.group[i], r.targets[i])] = (spn, vip, port)
            else:
                svc_of_chain.setdefault((*r.group[i], r.targets[i]), (spn, "", port))
    # propagate service -> SVC chain rules -> SEP chains (two rounds covers SVC->SEP and EXT->SVC->SEP)
    for _ in range(2):
        for i in range(n):
            key = (*r.group[i], r.chains[i])
            if key in svc_of_chain and r.kinds[i] == "rule" and r.targets[i].startswith(KUBE_SERVICE_CHAINS):
                svc_of_chain.setdefault((*r.group[i], r.targets[i]), svc_of_chain[key])
    for i in range(n):
        info = svc_of_chain.get((*r.group[i], r.chains[i]))
        if info:
            spn, vip, port = info
            out["service"][i] = out["service"][i] or spn
            out["service_ip"][i] = out["service_ip"][i] or vip
            if out["service_port"][i] < 0:
                out["service_port"][i] = port
        if r.chains[i].startswith("KUBE-SEP-") and df["to_destination"].iat[i]:
            out["endpoint"][i] = str(df["to_destination"].iat[i])


def kube_nft_service(chain: str) -> tuple[str, str, str]:
    """(service port name, chain kind, endpoint ip:port) of a kube-proxy nftables chain name."""
    m = KUBE_NFT_CHAIN.match(chain)
    if not m:
        return "", "", ""
    spn = f"{m.group('ns')}/{m.group('svc')}" + (f":{m.group('port')}" if m.group("port") else "")
    ip, port = m.group("ep") or "", m.group("epport")
    ep = (f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}") if ip else ""
    return spn, m.group("kind"), ep


def _kube_nft(r: _Rows, out: dict[str, list]) -> dict[int, str]:
    """kube-proxy's nftables table: services, frontends and endpoints from its chain names and its verdict
    maps' elements (`<ip> . <proto> . <port> : goto service-…`), services without endpoints from
    `no-endpoint-services` (an element comment names them; `goto reject-chain` rejects, `drop` drops),
    LoadBalancer source ranges from its firewall chains. Returns each element row's protocol."""
    protocols: dict[int, str] = {}
    for i in range(len(r.chains)):
        if r.group[i][2] != "kube-proxy":
            continue
        spn, kind, ep = kube_nft_service(r.chains[i])
        if spn:
            out["service"][i], out["kube_chain"][i] = spn, kind
            if ep:
                out["endpoint"][i] = ep
            if kind == "firewall" and out["action"][i] == "drop":
                out["drop_kind"][i] = "lb_source_range"
            continue
        if r.kinds[i] != "element" or r.chains[i] not in KUBE_NFT_MAPS:
            continue
        with_address, what = KUBE_NFT_MAPS[r.chains[i]]
        key = [k.strip() for k in r.matches[i].split(" . ")]
        if len(key) != (3 if with_address else 2):
            continue
        proto, port = key[-2], key[-1]
        protocols[i] = PROTO_NUMBERS.get(proto, proto)
        out["service_port"][i] = int(port) if port.isdigit() else -1
        if with_address:
            out["service_ip"][i] = key[0]
        out["service"][i] = kube_nft_service(r.targets[i])[0] or r.comments[i]
        out["kube_chain"][i] = "nodeport" if not with_address else ("firewall" if what == "firewall" else "service")
        if what == "no_endpoints":
            out["action"][i] = "reject" if r.targets[i] == "reject-chain" else r.targets[i].lower()
            out["drop_kind"][i] = "no_endpoints" if out["action"][i] in ("drop", "reject") else ""
    return protocols
