"""`nft list ruleset` (optionally `-n -a`, with counters; or `-j`, JSON) into the same rule rows as
iptables-save.

Calico's nftables mode names regular chains after the iptables ones, prefixed by the layer
(`filter-cali-tw-<iface>`); :func:`iptables_chain_name` undoes that so the Calico meaning applies.
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .text import load_json_bounded

TABLE = re.compile(r"^table\s+(\S+)\s+(\S+)\s*\{")
CHAIN = re.compile(r"^chain\s+(\S+)\s*\{")
BLOCK = re.compile(r"^(set|map|flowtable|counter|quota|ct\s+\S+|limit|secmark|synproxy)\s+(\S+).*\{\s*(?:#.*)?$")
ELEMENT_VERDICT = re.compile(r"^(?P<key>.*?)\s*:\s*(?P<verdict>goto \S+|jump \S+|drop|accept|reject|return|continue)$")
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
PROTOCOL_NAMES = {"1": "icmp", "4": "ipencap", "6": "tcp", "17": "udp", "58": "ipv6-icmp", "132": "sctp"}


def looks_like_nft(lines: list[str]) -> bool:
    return any(TABLE.match(x.strip()) for x in lines[:200]) or looks_like_nft_json(lines)


def iptables_chain_name(chain: str) -> str:
    for layer in LAYERS:
        if chain.startswith(layer) and chain[len(layer) :].startswith(("cali-", "KUBE-")):
            return chain[len(layer) :]
    return chain


def _braces(s: str) -> int:
    """Net `{` minus `}` outside quoted strings (comments may hold braces)."""
    return sum((c == "{") - (c == "}") for c in re.sub(r'"(?:[^"\\]|\\.)*"', "", s))


def parse_nft_ruleset(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`nft list ruleset`: tables, chains (with their hook and policy), rules, and the elements of sets
    and maps (a verdict map's elements are dispatch rules: kube-proxy's nftables mode keeps its
    services in them); other blocks are skipped whole. A rule or an element list that spans lines
    (an anonymous `vmap { … }`) is read as one."""
    if looks_like_nft_json(lines):
        return parse_nft_json(lines, log, node, artifact)
    rows: list[dict] = []
    family = table = chain = ""
    depth = 0
    skip_depth = -1
    position = 0
    block: tuple[str, str] | None = None  # (kind, name) of the set or map being read
    pending, pending_no = "", 0  # a statement continued over lines
    for no, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or (s.startswith("#") and not s.startswith("# handle")):
            continue
        if pending:
            s, no = f"{pending} {s}", pending_no
            pending = ""
        if skip_depth >= 0:
            if block is not None and s.startswith("elements = {"):
                if _braces(s) > 0:
                    pending, pending_no = s, no
                    continue
                rows += _elements(s, block, family, table, no)
                continue
            depth += _braces(s)
            if depth <= skip_depth:
                skip_depth, block = -1, None
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
        m = BLOCK.match(s) if depth == 1 else None
        if m:
            skip_depth = 1
            block = (m.group(1), m.group(2)) if m.group(1) in ("set", "map") else None
            depth += _braces(s)
            if depth <= skip_depth:
                skip_depth, block = -1, None
            continue
        if depth == 1 and s.startswith("comment "):  # the table's own comment
            continue
        if depth == 2 and _braces(s) > 0:  # a rule whose anonymous set or map goes on below
            pending, pending_no = s, no
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
        if s.startswith(("type ", "policy ", "devices ", "flags ", "comment ")):  # a chain's own settings
            continue
        position += 1
        rows.append({"line": no, "family": family, "table": table, "chain": chain, **_rule(s, position)})
    return table_frame(rows, "rules", node, artifact)


def _elements(s: str, block: tuple[str, str], family: str, table: str, no: int) -> list[dict]:
    """`elements = { k1 : v1, k2 comment "…" : v2 }` of a set or map, one row each: the key in
    `match`, a verdict map's verdict as the target (goto/jump chain, or drop, reject, …)."""
    body = s[s.index("{") + 1 : s.rindex("}")] if "}" in s else s[s.index("{") + 1 :]
    parts = re.findall(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+', body)
    out = []
    for position, part in enumerate((p.strip() for p in parts if p.strip()), 1):
        comment = COMMENT.search(part)
        text = COMMENT.sub("", part).strip()
        row = {
            "line": no,
            "family": family,
            "table": table,
            "chain": block[1],
            "position": position,
            "kind": "element",
            "comment": comment.group(1).replace('\\"', '"') if comment else "",
            "source": "nft",
            "backend": "nft",
        }
        m = ELEMENT_VERDICT.match(text) if block[0] == "map" else None
        if m:
            verdict = m.group("verdict").split(None, 1)
            row["match"] = m.group("key").strip()
            if verdict[0] in ("goto", "jump"):
                row.update(target=verdict[1], goto=verdict[0] == "goto")
            else:
                row["target"] = verdict[0].upper()
        else:
            row["match"] = text
        out.append(row)
    return out


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
    m = re.search(r"(?:meta l4proto|ip protocol|ip6 nexthdr)\s+(\w+)\b(?! \.)", body) or re.search(
        r"\b(tcp|udp|sctp)\s+dport", body
    )
    if m:  # `nft -n` prints protocol numbers; iptables-save their names
        out["protocol"] = PROTOCOL_NAMES.get(m.group(1), m.group(1))
    return out


# ---- `nft -j list ruleset` ----------------------------------------------------------------------
VERDICTS = ("accept", "drop", "reject", "return", "continue", "queue")


def looks_like_nft_json(lines: list[str]) -> bool:
    return '"nftables"' in "".join(lines[:3])[:200]


def parse_nft_json(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`nft -j list ruleset` (libnftables-json(5)) into the rows the text form gives: chains with their
    hook and policy, rules with their counter, verdict, comment and matches (rendered as nft prints
    them, so the same meaning applies), and the elements of maps and sets."""
    try:
        doc = load_json_bounded("\n".join(lines))
    except ValueError as exc:
        log.add("document", "bad_json", str(exc)[:200])
        return table_frame([], "rules", node, artifact)
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        log.add("document", "bad_json", "no nftables list")
        return table_frame([], "rules", node, artifact)
    rows: list[dict] = []
    positions: dict[tuple, int] = {}
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict) or len(item) != 1:
            log.add(f"element {i}", "unparsed_element", str(item)[:200])
            continue
        (kind, body), = item.items()
        if kind in ("metainfo", "table") or not isinstance(body, dict):
            continue
        where = {"line": i, "family": body.get("family", ""), "table": body.get("table", "")}
        try:
            if kind == "chain":
                if body.get("hook"):
                    rows.append(
                        {**where, "chain": body.get("name", ""), "position": 0, "kind": "chain",
                         "chain_policy": str(body.get("policy", "")).upper(), "source": "nft-json", "backend": "nft"}
                    )
            elif kind in ("map", "set"):
                for position, elem in enumerate(body.get("elem") or [], 1):
                    rows.append({**where, "chain": body.get("name", ""), "position": position, **_json_element(elem)})
            elif kind == "rule":
                key = (where["family"], where["table"], body.get("chain", ""))
                positions[key] = positions.get(key, 0) + 1
                rows.append({**where, "chain": body.get("chain", ""), **_json_rule(body, positions[key])})
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            log.add(f"element {i}", "unparsed_element", f"{exc}: {str(item)[:160]}")
    return table_frame(rows, "rules", node, artifact)


def _json_element(elem: object) -> dict:
    value, verdict = (elem[0], elem[1]) if isinstance(elem, list) and len(elem) == 2 else (elem, None)
    comment = ""
    if isinstance(value, dict) and "elem" in value:
        comment = str(value["elem"].get("comment", ""))
        value = value["elem"].get("val")
    row = {"kind": "element", "match": _render(value), "comment": comment, "source": "nft-json", "backend": "nft"}
    if isinstance(verdict, dict):
        (name, arg), = verdict.items()
        if name in ("goto", "jump"):
            row.update(target=arg["target"], goto=name == "goto")
        else:
            row["target"] = name.upper()
    return row


def _json_rule(body: dict, position: int) -> dict:
    """A rule's statements: matches rendered as text, the counter, and the verdict or NAT statement."""
    text, target, args, goto, counter = [], "", "", False, None
    for stmt in body.get("expr") or []:
        (name, arg), = stmt.items()
        if name == "match":
            op = "" if arg.get("op") in ("==", "in") else f"{arg.get('op')} "
            text.append(f"{_render(arg.get('left'))} {op}{_render(arg.get('right'))}")
        elif name == "counter":
            counter = arg
            text.append(f"counter packets {arg.get('packets', 0)} bytes {arg.get('bytes', 0)}")
        elif name in ("jump", "goto"):
            target, goto = arg["target"], name == "goto"
            text.append(f"{name} {target}")
        elif name in VERDICTS:
            target = name.upper()
            text.append(name)
        elif name in ("dnat", "snat"):
            target = name.upper()
            args = f"{arg.get('addr', '')}" + (f":{arg['port']}" if "port" in arg else "")
            text.append(f"{name} to {args}")
        elif name == "masquerade":
            target = "MASQUERADE"
            text.append("masquerade")
        elif name == "vmap":
            text.append(f"{_render(arg.get('key'))} vmap {_render(arg.get('data'))}")
        else:
            text.append(f"{name} {_render(arg)}".strip())
    comment = str(body.get("comment", ""))
    rule_hash, human = "", comment
    if comment.startswith("cali:"):
        rule_hash, _, human = comment[5:].partition(";")
        human = human.strip()
    match_text = " ".join(text)
    return {
        "position": position,
        "kind": "rule",
        "packets": counter.get("packets") if counter else None,
        "bytes": counter.get("bytes") if counter else None,
        "target": target,
        "goto": goto,
        "target_args": args,
        "match": match_text,
        "comment": human,
        "rule_hash": rule_hash,
        "source": "nft-json",
        "backend": "nft",
        "to_destination": args if target == "DNAT" else "",
        **_nft_matches(match_text),
    }


def _render(value: object) -> str:
    """A JSON expression as `nft` prints it, near enough for the matches read from it."""
    if isinstance(value, dict):
        if "payload" in value:
            p = value["payload"]
            return f"{p.get('protocol', '')} {p.get('field', '')}".strip()
        if "meta" in value:
            return f"meta {value['meta'].get('key', '')}"
        if "ct" in value:
            return f"ct {value['ct'].get('key', '')}"
        if "concat" in value:
            return " . ".join(_render(v) for v in value["concat"])
        if "set" in value:
            return "{ " + ", ".join(_render(v) for v in value["set"]) + " }"
        if "prefix" in value:
            return f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
        if "range" in value:
            return "-".join(_render(v) for v in value["range"])
        if "goto" in value or "jump" in value:
            (name, arg), = value.items()
            return f"{name} {arg.get('target', '')}"
        for op in ("&", "|", "^"):
            if op in value:
                left, right = value[op]
                right_text = f"0x{right:08x}" if isinstance(right, int) else _render(right)
                return f"{_render(left)} {op} {right_text}"
        if "numgen" in value:
            return f"numgen {value['numgen'].get('mode', '')} mod {value['numgen'].get('mod', '')}"
        return " ".join(f"{k} {_render(v)}" for k, v in value.items())
    if isinstance(value, list):
        if len(value) == 2 and not isinstance(value[0], (dict, list)) and isinstance(value[1], dict):
            return f"{_render(value[0])} : {_render(value[1])}"  # an anonymous map's element
        return ", ".join(_render(v) for v in value)
    if value is None:
        return ""
    return str(value)
