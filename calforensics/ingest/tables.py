"""Text dumps into tables: which parser reads which kind of file into which table, and how the
per-file frames of one table are put together (one row per interface, nft rows an iptables dump
already shows flagged). What rules mean is added later, by meaning/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pandas as pd

from ..schema import conform
from .artifacts import Artifact, LogFor, Tick
from .parsers import (
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
from .parsers.text import read_lines

# which parser builds which table from which artifact kind
TEXT_TABLES: dict[str, tuple[str, Callable]] = {
    "conntrack": ("conntrack", conntrack.parse_conntrack),
    "iptables": ("rules", iptables.parse_iptables_save),
    "ip6tables": ("rules", lambda lines, log, node, art: iptables.parse_iptables_save(lines, log, node, art, "ipv6")),
    "nft": ("rules", nft.parse_nft_ruleset),
    "ip_link": ("interfaces", iproute.parse_ip_link),
    "ip_route": ("routes", iproute.parse_ip_route),
    "bpf_conntrack": ("bpf_conntrack", calico_bpf.parse_bpf_conntrack),
    "bpf_nat": ("bpf_nat", calico_bpf.parse_bpf_nat),
    "bpf_routes": ("bpf_routes", calico_bpf.parse_bpf_routes),
    "bpf_counters": ("bpf_counters", calico_bpf.parse_bpf_counters),
    "bpf_ifstate": ("bpf_ifstate", calico_bpf.parse_bpf_ifstate),
    "bpf_policy": ("bpf_policy", calico_bpf.parse_bpf_policy),
    "traces": ("traces", traces.parse_traces),
    "sysctl": ("sysctls", sysctl.parse_sysctls),
    "platform": ("platform_evidence", platform.parse_platform_evidence),
    "ipvs": ("ipvs", ipvs.parse_ipvsadm),
    "ipset": ("ipsets", ipset.parse_ipset),
    "flow_logs": ("flow_logs", flowlogs.parse_flow_logs),
    "crictl_inspect": ("pods", crictl.parse_crictl_inspect),
}


# kinds of file that feed several tables, and the parser each table reads them with
MULTI_TABLES: dict[str, dict[str, Callable]] = {
    "kube_resources": {
        "pods": resources.parse_pod_resources,
        "services": resources.parse_service_resources,
        "endpoints": resources.parse_endpoint_resources,
        "cluster_nodes": resources.parse_node_resources,
        "network_policies": resources.parse_policy_resources,
        "ip_pools": resources.parse_pool_resources,
        "platform_evidence": platform.parse_platform_evidence,
    },
    # `kubectl get` / `calicoctl get` tables, by their titles; `get all -o wide` shows calico-node's image
    "kube_listing": {**kubectl.LISTING_PARSERS, "platform_evidence": platform.parse_platform_evidence},
}
IPROUTE_SECTION = {"interfaces": "link", "routes": "route"}  # table -> the iproute2 output it takes
IPROUTE_PARSER = {"interfaces": iproute.parse_ip_link, "routes": iproute.parse_ip_route}
IPROUTE_KINDS = ("ip_link", "ip_route")


def _section_lines(lines: list[str], table: str, own: bool) -> list[str] | None:
    """The lines of an iproute2 file that this table reads, the others blanked so line numbers hold:
    its own command's output, and (for the file's own table, so they are reported once) lines no
    command starts. None when a file of the other kind holds none of this table's output."""
    kinds = iproute.sections(lines)
    wanted = IPROUTE_SECTION[table]
    if not own and wanted not in kinds:
        return None
    keep = {wanted, ""} if own else {wanted}
    return [line if kind in keep else "" for line, kind in zip(lines, kinds, strict=True)]


def text_table_names() -> list[str]:
    """Every table that text dumps feed, once each, in TEXT_TABLES order (then those only the
    several-table kinds feed)."""
    names = [t for t, _ in TEXT_TABLES.values()] + [t for tables in MULTI_TABLES.values() for t in tables]
    return list(dict.fromkeys(names))


def read_text_table(
    table: str,
    arts: list[Artifact],
    root: Path,
    log_for: LogFor,
    tick: Tick,
    bpftool_frames: Callable[[], list[pd.DataFrame]],
) -> pd.DataFrame:
    """One table from every artifact whose kind feeds it, plus what `bpftool` dumps gave it
    (asked for after this table's own files, so anomaly logs keep the order they are opened in)."""
    frames = []
    mine = [a for a in arts if TEXT_TABLES.get(a.kind, ("",))[0] == table]
    if table in IPROUTE_SECTION:  # one iproute2 command's output after another's: each to its own table
        mine += [a for a in arts if a.kind in IPROUTE_KINDS and a not in mine]
    mine += [a for a in arts if table in MULTI_TABLES.get(a.kind, {})]
    for i, art in enumerate(mine):
        tick(f"reading {table}", i, len(mine))
        lines = read_lines(root / art.path)
        if table in IPROUTE_SECTION:
            lines = _section_lines(lines, table, own=TEXT_TABLES[art.kind][0] == table)
            if lines is None:
                continue
        log = log_for(table, art)
        if art.kind in MULTI_TABLES:
            parse = MULTI_TABLES[art.kind][table]
        else:
            parse = IPROUTE_PARSER[table] if table in IPROUTE_SECTION else TEXT_TABLES[art.kind][1]
        df = parse(lines, log, art.node, art.path)
        if art.kind == "conntrack" and PurePosixPath(art.path).name == "nf_conntrack" and len(df):
            df["form"] = pd.Categorical(["proc"] * len(df))
        art.finish(len(df), log, lines, table, quiet=art.kind in MULTI_TABLES)
        frames.append(df)
    result = _concat([*frames, *bpftool_frames()], table)
    if table == "rules":
        result = _mark_nft_duplicates(result)
    if table == "bpf_nat":
        result = bpftool.combine_nat(result)
    if table == "interfaces":
        result = _merge_interfaces(result)
    return result


def read_bpftool_dumps(arts: list[Artifact], root: Path, log_for: LogFor) -> dict[str, list[pd.DataFrame]]:
    """`bpftool map dump` files feed several BPF tables at once, so they are parsed together."""
    out: dict[str, list[pd.DataFrame]] = {}
    for art in (a for a in arts if a.kind == "bpftool"):
        lines = read_lines(root / art.path)
        log = log_for("bpftool", art)
        tables = bpftool.parse_bpftool_dump(lines, log, art.node, art.path, PurePosixPath(art.path).stem)
        art.finish(sum(len(v) for v in tables.values()), log, lines)
        for name, df in tables.items():
            out.setdefault(name, []).append(df)
    return out


def _merge_interfaces(df: pd.DataFrame) -> pd.DataFrame:
    """`ip link` and `ip addr` of one node describe the same interfaces: one row each, facts combined."""
    if df.empty:
        return df
    rows = []
    for _, group in df.groupby(["node", "ifindex", "name"], sort=False, observed=True):
        row = group.iloc[0].to_dict()
        for col in df.columns:
            values = [v for v in group[col] if v not in ("", -1) and v == v]
            if values:
                row[col] = values[0]
        row["addresses"] = " ".join(dict.fromkeys(a for v in group["addresses"] for a in str(v).split()))
        rows.append(row)
    return pd.DataFrame(rows, columns=df.columns)


def _mark_nft_duplicates(rules: pd.DataFrame) -> pd.DataFrame:
    """Flag nft rows of tables that an iptables-nft-save dump of the same node already shows, and
    `nft -j` rows of tables the node's text ruleset already shows."""
    rules = rules.copy()
    saved = rules[rules["source"].astype(str).str.contains("tables") & (rules["backend"].astype(str) == "nft")]
    family = saved["family"].astype(str).map({"ipv4": "ip", "ipv6": "ip6"})
    seen = set(zip(saved["node"].astype(str), family, saved["table"].astype(str), strict=True))
    nft_rows = rules["source"].astype(str).isin(["nft", "nft-json"])
    keys = list(zip(rules["node"].astype(str), rules["family"].astype(str), rules["table"].astype(str), strict=True))
    # the same ruleset saved as text and as `nft -j` JSON: the JSON rows repeat the text's
    as_text = {k for k, src in zip(keys, rules["source"].astype(str), strict=True) if src == "nft"}
    json_rows = rules["source"].astype(str) == "nft-json"
    rules["duplicate"] = [
        bool(is_nft and (key in seen or (is_json and key in as_text)))
        for is_nft, is_json, key in zip(nft_rows, json_rows, keys, strict=True)
    ]
    return rules


def _concat(frames: list[pd.DataFrame], table: str) -> pd.DataFrame:
    """Stack per-artifact frames; categories are rebuilt over the union (conform does that)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return conform(pd.DataFrame(), table)
    return pd.concat(frames, ignore_index=True)
