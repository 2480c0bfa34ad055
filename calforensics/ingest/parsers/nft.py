"""`nft list ruleset` (optionally `-n -a`, with counters) into the same rule rows as iptables-save.

Calico's nftables mode names regular chains after the iptables ones, prefixed by the layer
(`filter-cali-tw-<iface>`); :func:`iptables_chain_name` undoes that so the Calico meaning applies.
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame

TABLE = re.compile(r"^table\s+(\S+)\s+(\S+)\s*\{")
CHAIN = re.compile(r"^chain\s+(\S+)\s*\{")
BLOCK = re.compile(r"^(set|map|flowtable|counter|quota|ct\s+\S+|limit|secmark|synproxy)\s+\S+.*\{\s*$")
HOOK = re.compile(r"type\s+\S+\s+hook\s+(\S+).*?policy\s+(\w+)")
COUNTER = re.compile(r"counter packets (\d+) bytes (\d+)")
COMMENT = re.compile(r'comment\s+"((?:[^"\\]|\\.)*)"')
HANDLE = re.compile(r"\s*# handle (\d+)\s*$")
VERDICT = re.compile(
    r"\b(accept|drop|reject(?: with [^#]*?)?|return|queue|continue|masquerade(?: [^#]*?)?|"
    r"jump \S+|goto \S+|dnat (?:ip6? )?to \S+|snat (?:ip6? )?to \S+|redirect(?: to \S+)?)\s*"
    r"(?:comment|$)"
)
LAYERS = ("filter-", "nat-", "mangle-", "raw-")


def looks_like_nft(lines: list[str]) -> bool:
    return any(TABLE.match(x.strip()) for x in lines[:200])


def iptables_chain_name(chain: str) -> str:
    for layer in LAYERS:
        if chain.startswith(layer) and chain[len(layer) :].startswith(("cali-", "KUBE-")):
            return chain[len(layer) :]
    return chain


def parse_nft_ruleset(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`nft list ruleset`: tables, chains (with their hook and policy) and rules; sets, maps and other
    blocks are skipped whole."""
    rows: list[dict] = []
    family = table = chain = ""
    depth = 0
    skip_depth = -1
    position = 0
    for no, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or (s.startswith("#") and not s.startswith("# handle")):
            continue
        if skip_depth >= 0:
            depth += s.count("{") - s.count("}")
            if depth <= skip_depth:
                skip_depth = -1
            continue
        m = TABLE.match(s)
        if m:
            family, table = m.group(1), m.group(2)
            depth = 1
            continue
        m = CHAIN.match(s)
        if m and depth == 1:
            chain, position = m.group(1), 0
            depth = 2
            continue
        if depth == 1 and BLOCK.match(s):
            skip_depth = 1
            depth += s.count("{") - s.count("}")
            if depth <= skip_depth:
                skip_depth = -1
            continue
        if s == "}":
            depth -= 1
            if depth == 1:
                chain = ""
            elif depth <= 0:
                table = family = ""
                depth = 0
            continue
        if depth != 2 or not chain:
            log.add(no, "unparsed_line", s[:200])
            continue
        h = HOOK.search(s)
        if h:
            rows.append(
                {
                    "line": no,
                    "family": family,
                    "table": table,
                    "chain": chain,
                    "position": 0,
                    "kind": "chain",
                    "chain_policy": h.group(2).upper(),
                    "source": "nft",
                    "backend": "nft",
                }
            )
            continue
        if s.startswith(("type ", "policy ", "devices ", "flags ")):
            continue
        position += 1
        rows.append({"line": no, "family": family, "table": table, "chain": chain, **_rule(s, position)})
    return table_frame(rows, "rules", node, artifact)


def _rule(s: str, position: int) -> dict:
    """One rule line of a chain: counters, verdict (jump/goto target, NAT arguments), Calico's rule
    hash and comment, and the match text with its fields."""
    body = HANDLE.sub("", s)
    cnt = COUNTER.search(body)
    comment = COMMENT.search(body)
    comment_text = comment.group(1).replace('\\"', '"') if comment else ""
    rule_hash, human = "", comment_text
    if comment_text.startswith("cali:"):
        rule_hash, _, human = comment_text[5:].partition(";")
        human = human.strip()
    verdict = VERDICT.search(body)
    target, goto, args = "", False, ""
    if verdict:
        words = verdict.group(1).split(None, 1)
        target = words[0].upper()
        if target in ("JUMP", "GOTO"):
            goto = target == "GOTO"
            target = words[1]
        elif target in ("DNAT", "SNAT"):
            args = words[1] if len(words) > 1 else ""
        elif len(words) > 1:
            args = words[1]
    to_dest = ""
    if target == "DNAT":
        to_dest = args.split()[-1] if args else ""
    match_text = COMMENT.sub("", body)
    return {
        "position": position,
        "kind": "rule",
        "packets": cnt.group(1) if cnt else None,
        "bytes": cnt.group(2) if cnt else None,
        "target": target,
        "goto": goto,
        "target_args": args,
        "match": match_text.strip(),
        "comment": human,
        "rule_hash": rule_hash,
        "source": "nft",
        "backend": "nft",
        "to_destination": to_dest,
        **_nft_matches(match_text),
    }


def _nft_matches(body: str) -> dict:
    out: dict = {}
    for key, pat in (
        ("in_iface", r'iifname\s+(!=\s*)?"?([^"\s]+)"?'),
        ("out_iface", r'oifname\s+(!=\s*)?"?([^"\s]+)"?'),
        ("src", r"ip6? saddr\s+(!=\s*)?(\S+)"),
        ("dst", r"ip6? daddr\s+(!=\s*)?(\S+)"),
        ("dport", r"(?:tcp|udp|sctp|th) dport\s+(!=\s*)?(\S+)"),
    ):
        m = re.search(pat, body)
        if m:
            out[key] = ("!" if m.group(1) else "") + m.group(2)
    m = re.search(r"(?:meta l4proto|ip protocol|ip6 nexthdr)\s+(\S+)", body) or re.search(
        r"\b(tcp|udp|sctp)\s+dport", body
    )
    if m:
        out["protocol"] = m.group(1)
    return out
