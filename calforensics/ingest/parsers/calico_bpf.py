"""`calico-node -bpf …` (calico-bpf) dumps, text and `--json`: conntrack, nat, routes, counters,
ifstate, and `policy dump <iface> all`.

Formats from felix/cmd/calico-bpf/commands/*.go and felix/bpf/**/map.go String() methods (shared
formats reference section 1.3).
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .text import LOG_LINE, load_json_bounded, preamble, split_hostport

PROTO_NAMES = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMP6": 58, "SCTP": 132}
CT_TYPES = {0: "normal", 1: "nat-forward", 2: "nat-reverse"}
TCP_STATES = ("CLOSED", "RESET", "ESTABLISHED", "SYN-SENT")
DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|µs|us|ns)")
UNIT_S = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
CT_KEY = re.compile(r"ConntrackKey\{proto=(\d+) (\S+) <-> (\S+)\}")
LEG = re.compile(r"(A2B|B2A):\{([^}]*)\}")
NAT_FRONTEND = re.compile(
    r"^(\S+) port (\d+) proto (\d+) id (\d+) count (-?\d+) local (\d+)(?: flags ([\w, -]+?))?(?: src (\S+))?\s*$"
)
NAT_BACKEND = re.compile(r"^\s*(\d+):(\d+)\s+(?:(\S+)|is missing)\s*$")
ROUTE_LINE = re.compile(r"^\s*([0-9a-fA-F.:]+/\d+):\s+(.*)$")


def duration_s(text: str) -> float:
    """Go time.Duration string (`1m2.5s`, `24.3ms`) to seconds; NaN if it is not one."""
    parts = DURATION.findall(text)
    if not parts:
        return float("nan")
    return sum(float(v) * UNIT_S[u] for v, u in parts)


def load_json(lines: list[str], log: AnomalyLog | None = None) -> object | None:
    """JSON after any log preamble lines (each an anomaly in ``log``); None if the text is not JSON."""
    body = []
    for no, x in enumerate(lines, 1):
        if log is not None and x.strip() and preamble(x, no, log):
            continue
        if log is None and LOG_LINE.match(x):
            continue
        body.append(x)
    text = "\n".join(body).strip()
    start = min([i for i in (text.find("["), text.find("{")) if i >= 0], default=-1)
    if start < 0:
        return None
    try:
        return load_json_bounded(text[start:])
    except ValueError as exc:  # malformed, too large or too deep
        if log is not None and ("bound" in str(exc) or "deeper" in str(exc)):
            log.add("document", "json_refused", str(exc)[:200])
        return None


def _looks_json(lines: list[str]) -> bool:
    return any(x.strip().startswith(("[", "{")) for x in lines[:20])


# ---- conntrack -------------------------------------------------------------------------------
def parse_bpf_conntrack(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    data = load_json(lines, log) if _looks_json(lines) else None
    rows: list[dict] = []
    if isinstance(data, list):
        for i, e in enumerate(data, 1):
            if isinstance(e, dict):
                rows.append(_ct_json(e, i))
            else:
                log.add(f"element {i}", "unparsed_element", str(e)[:200])
    else:
        for no, line in enumerate(lines, 1):
            s = line.strip()
            if not s or s.startswith(("Dumping", "dumped", "Found")) or preamble(s, no, log):
                continue
            rec = _ct_raw(s) if s.startswith("ConntrackKey") else _ct_pretty(s)
            if rec is None:
                log.add(no, "unparsed_line", s[:200])
                continue
            rec["line"] = no
            rows.append(rec)
    return table_frame(rows, "bpf_conntrack", node, artifact)


def _ct_raw(s: str) -> dict | None:
    m = CT_KEY.search(s)
    if not m:
        return None
    a_ip, a_port = split_hostport(m.group(2))
    b_ip, b_port = split_hostport(m.group(3))
    rec: dict = {"source": "calico-bpf-raw", "proto": int(m.group(1))}
    t = re.search(r"Type:(\d+)", s)
    rec["entry_type"] = CT_TYPES.get(int(t.group(1)), t.group(1)) if t else ""
    ls = re.search(r"LastSeen:(\d+)", s)
    rec["last_seen_ns"] = ls.group(1) if ls else None
    fl = re.search(r"Flags:\s*(<none>|0x[0-9a-fA-F]+((?:\s+[A-Za-z][\w-]*(?=\s))*))", s)
    names = fl.group(2).split() if fl and fl.group(2) else []
    rec["flags"] = " ".join(n for n in names if n not in ("Data",))
    legs = {k: dict(kv.split(":", 1) for kv in body.split() if ":" in kv) for k, body in LEG.findall(s)}
    for leg, col in (("A2B", "a2b"), ("B2A", "b2a")):
        d = legs.get(leg, {})
        rec[f"{col}_packets"] = d.get("Packets")
        rec[f"{col}_bytes"] = d.get("Bytes")
        appr = d.get("Approved", d.get("Whitelisted"))
        rec[f"{col}_approved"] = {"true": 1, "false": 0}.get(appr or "", -1)
    b_first = "B-A" in names
    rec["src"], rec["sport"], rec["dst"], rec["dport"] = (
        (b_ip, b_port, a_ip, a_port) if b_first else (a_ip, a_port, b_ip, b_port)
    )
    for key, col in (("OrigDst", "orig_dst"), ("OrigPort", "orig_dport"), ("TunIP", "tun_ip")):
        m2 = re.search(key + r":(\S+?)[\s}]", s)
        if m2 and m2.group(1) not in ("0.0.0.0", "::"):
            rec[col] = m2.group(1)
    if rec.get("orig_dport") in ("0", 0):
        rec["orig_dport"] = None
    ago = re.search(r"Active ago (\S+)", s)
    rec["active_ago_s"] = duration_s(ago.group(1)) if ago else None
    rec["tcp_state"] = next((st for st in TCP_STATES if s.endswith(" " + st)), "")
    return rec


def _ct_pretty(s: str) -> dict | None:
    head, sep, tail = s.partition(" Active ago ")
    parts = head.split()
    if len(parts) < 4 or parts[2] != "->":
        return None
    proto = parts[0]
    rec: dict = {
        "source": "calico-bpf-pretty",
        "entry_type": "normal",
        "proto": PROTO_NAMES.get(proto, int(proto[6:]) if proto.startswith("Proto-") and proto[6:].isdigit() else -1),
    }
    rec["src"], rec["sport"] = split_hostport(parts[1])
    if len(parts) >= 6 and parts[4] == "->":
        rec["entry_type"] = "nat-reverse"
        rec["orig_dst"], rec["orig_dport"] = split_hostport(parts[3])
        rec["dst"], rec["dport"] = split_hostport(parts[5])
        m = re.search(r"forwarded to/from (\S+)", head)
        if m:
            rec["tun_ip"] = m.group(1)
    else:
        rec["dst"], rec["dport"] = split_hostport(parts[3])
    if sep:
        bits = tail.split()
        rec["active_ago_s"] = duration_s(bits[0]) if bits else None
        rec["tcp_state"] = bits[1] if len(bits) > 1 and bits[1] in TCP_STATES else ""
    return rec


def _ct_json(e: dict, i: int) -> dict:
    rec: dict = {
        "line": i,
        "flags": " ".join(e.get("flags") or []),
        "tcp_state": e.get("tcp_state", ""),
        "active_ago_s": duration_s(str(e.get("active_ago", "")))
        if isinstance(e.get("active_ago"), str)
        else e.get("active_ago"),
    }
    proto = e.get("proto")
    rec["proto"] = PROTO_NAMES.get(str(proto).upper(), proto) if not isinstance(proto, int) else proto
    if "addr_a" in e:  # raw JSON: normalised A/B pair
        rec["source"] = "calico-bpf-json-raw"
        a = (e.get("addr_a"), e.get("port_a"))
        b = (e.get("addr_b"), e.get("port_b"))
        first, second = (b, a) if "B-A" in (e.get("flags") or []) else (a, b)
        rec["src"], rec["sport"] = first
        rec["dst"], rec["dport"] = second
        rec["entry_type"] = e.get("type", "")
    else:
        rec["source"] = "calico-bpf-json"
        rec["src"], rec["sport"] = split_hostport(str(e.get("src", "")))
        rec["dst"], rec["dport"] = split_hostport(str(e.get("dst", "")))
        rec["entry_type"] = "nat-reverse" if e.get("type") == "nat" else e.get("type", "normal")
        if e.get("orig_dst"):
            rec["orig_dst"], rec["orig_dport"] = split_hostport(str(e["orig_dst"]))
        rec["tun_ip"] = e.get("tunnel_ip", "")
    return rec


# ---- nat -------------------------------------------------------------------------------------
def parse_bpf_nat(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    data = load_json(lines, log) if _looks_json(lines) else None
    rows: list[dict] = []
    if isinstance(data, list):
        for i, svc in enumerate(data, 1):
            if not isinstance(svc, dict):
                log.add(f"element {i}", "unparsed_element", str(svc)[:200])
                continue
            backends = svc.get("backends") or []
            for fe in svc.get("frontends") or []:
                base = {
                    "line": i,
                    "source": "calico-bpf-json",
                    "frontend_ip": fe.get("addr"),
                    "frontend_port": fe.get("port"),
                    "proto": fe.get("proto"),
                    "svc_id": fe.get("id", svc.get("id")),
                    "count": fe.get("count"),
                    "local": fe.get("local"),
                    "flags": " ".join(fe.get("flags") or []),
                    "src_cidr": fe.get("src_cidr", ""),
                }
                rows.extend(_with_backends(base, [(o, b.get("addr"), b.get("port")) for o, b in enumerate(backends)]))
    else:
        current: dict | None = None
        pending: list[tuple] = []
        for no, line in enumerate(lines, 1):
            s = line.rstrip()
            if not s.strip() or preamble(s, no, log):
                continue
            m = NAT_FRONTEND.match(s.strip())
            if m:
                if current is not None:
                    rows.extend(_with_backends(current, pending))
                current = {
                    "line": no,
                    "source": "calico-bpf",
                    "frontend_ip": m.group(1),
                    "frontend_port": m.group(2),
                    "proto": m.group(3),
                    "svc_id": m.group(4),
                    "count": m.group(5),
                    "local": m.group(6),
                    "flags": (m.group(7) or "").replace(",", " ").strip(),
                    "src_cidr": m.group(8) or "",
                }
                pending = []
                continue
            b = NAT_BACKEND.match(s)
            if b and current is not None:
                ip, port = split_hostport(b.group(3)) if b.group(3) else ("", -1)
                pending.append((b.group(2), ip, port))
                continue
            log.add(no, "unparsed_line", s.strip()[:200])
        if current is not None:
            rows.extend(_with_backends(current, pending))
    return table_frame(rows, "bpf_nat", node, artifact)


def _with_backends(base: dict, backends: list[tuple]) -> list[dict]:
    if not backends:
        return [dict(base, ordinal=-1)]
    return [dict(base, ordinal=o, backend_ip=ip or "", backend_port=port) for o, ip, port in backends]


# ---- routes ----------------------------------------------------------------------------------
def parse_bpf_routes(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    data = load_json(lines, log) if _looks_json(lines) else None
    rows: list[dict] = []
    if isinstance(data, list):
        for i, r in enumerate(data, 1):
            if isinstance(r, dict):
                rows.append(
                    {
                        "line": i,
                        "source": "calico-bpf-json",
                        "cidr": r.get("dest", ""),
                        "flags": " ".join(r.get("flags") or []),
                        "ifindex": r.get("ifindex"),
                        "next_hop": r.get("next_hop", ""),
                    }
                )
    else:
        for no, line in enumerate(lines, 1):
            if not line.strip() or preamble(line, no, log):
                continue
            m = ROUTE_LINE.match(line)
            if not m:
                log.add(no, "unparsed_line", line.strip()[:200])
                continue
            words = m.group(2).split()
            rec = {"line": no, "source": "calico-bpf", "cidr": m.group(1)}
            flags = []
            k = 0
            while k < len(words):
                if words[k] == "idx" and k + 1 < len(words):
                    rec["ifindex"] = words[k + 1]
                    k += 2
                elif words[k] == "nh" and k + 1 < len(words):
                    rec["next_hop"] = words[k + 1]
                    k += 2
                else:
                    flags.append(words[k])
                    k += 1
            rec["flags"] = " ".join(flags)
            rows.append(rec)
    return table_frame(rows, "bpf_routes", node, artifact)


# ---- counters --------------------------------------------------------------------------------
def parse_bpf_counters(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    data = load_json(lines, log) if _looks_json(lines) else None
    rows: list[dict] = []
    if data is not None:
        for i, entry in enumerate(data if isinstance(data, list) else [data], 1):
            if not isinstance(entry, dict):
                continue
            for c in entry.get("counters") or []:
                rows.append(
                    {
                        "line": i,
                        "source": "calico-bpf-json",
                        "interface": entry.get("interface", ""),
                        "category": c.get("category", ""),
                        "type": c.get("type", ""),
                        "ingress": c.get("ingress"),
                        "egress": c.get("egress"),
                        "xdp": c.get("xdp"),
                    }
                )
    else:
        table: list[dict] = []
        category = ""
        for no, line in enumerate(lines, 1):
            s = line.strip()
            cap = re.match(r"^dumped (\S+) counters\.?$", s)
            if cap:
                for r in table:
                    r["interface"] = cap.group(1)
                rows.extend(table)
                table, category = [], ""
                continue
            if not s.startswith("|"):
                if s and not s.startswith("+") and not preamble(s, no, log):
                    log.add(no, "unparsed_line", s[:200])
                continue
            cells = [c.strip() for c in s.strip("|").split("|")]
            if len(cells) != 5 or cells[0] == "CATEGORY":
                continue
            cat, typ, ing, eg, xdp = cells
            if not (ing or eg or xdp) and table:  # wrapped TYPE text continues the previous row
                table[-1]["type"] = f"{table[-1]['type']} {typ}".strip()
                continue
            category = cat or category
            table.append(
                {
                    "line": no,
                    "source": "calico-bpf",
                    "category": category,
                    "type": typ,
                    "ingress": ing,
                    "egress": eg,
                    "xdp": xdp,
                }
            )
        if table:
            log.add("end", "missing_caption", f"{len(table)} counter rows without a 'dumped <iface> counters.' line")
            rows.extend(table)
    return table_frame(rows, "bpf_counters", node, artifact)


# ---- ifstate ---------------------------------------------------------------------------------
IFSTATE_LINE = re.compile(r"^\s*(\d+)\s*:\s*\{(.*)\}\s*$")
IFSTATE_FIELDS = {  # Value.String() name -> column (felix/bpf/ifstate/map.go)
    "XDPPolicyV4": "xdp_policy_v4",
    "IngressPolicyV4": "ingress_policy_v4",
    "EgressPolicyV4": "egress_policy_v4",
    "XDPPolicyV6": "xdp_policy_v6",
    "IngressPolicyV6": "ingress_policy_v6",
    "EgressPolicyV6": "egress_policy_v6",
    "IngressFilter": "tc_ingress_filter",
    "EgressFilter": "tc_egress_filter",
}


def parse_bpf_ifstate(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`calico-node -bpf ifstate dump`: `%5d : {flags: workload,v4Ready, XDPPolicyV4: -1, …, name: cali…}`
    per interface (older releases print fewer fields), or `--json` objects with the same facts."""
    data = load_json(lines, log) if _looks_json(lines) else None
    rows: list[dict] = []
    if isinstance(data, list):
        for i, e in enumerate(data, 1):
            if not isinstance(e, dict):
                log.add(f"element {i}", "unparsed_element", str(e)[:200])
                continue
            row = {"line": i, "source": "calico-bpf-json", "ifindex": e.get("ifindex"), "name": e.get("name", "")}
            row["flags"] = " ".join(str(f) for f in e.get("flags") or [])
            row.update({col: e.get(col) for col in IFSTATE_FIELDS.values()})
            rows.append(row)
    else:
        for no, line in enumerate(lines, 1):
            if not line.strip() or preamble(line, no, log):
                continue
            m = IFSTATE_LINE.match(line)
            if not m:
                log.add(no, "unparsed_line", line.strip()[:200])
                continue
            body = m.group(2)
            row = {"line": no, "source": "calico-bpf", "ifindex": m.group(1)}
            flags = re.match(r"\s*flags:\s*(\S*?),?(?:\s|$)", body)
            row["flags"] = " ".join(f for f in (flags.group(1) if flags else "").split(",") if f)
            name = re.search(r"\bname:\s*([^,}\s]*)", body)
            row["name"] = name.group(1) if name else ""
            for key, value in re.findall(r"(\w+):\s*(-?\d+)", body):
                if key in IFSTATE_FIELDS:
                    row[IFSTATE_FIELDS[key]] = value
            rows.append(row)
    return table_frame(rows, "bpf_ifstate", node, artifact)


# ---- policy dump -----------------------------------------------------------------------------
def parse_bpf_policy(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """`calico-node -bpf policy dump <iface> <hook|all>`: the tiers, policies and rules a BPF policy
    program holds, a row per rule with its action and hit count, and a row per tier end with its
    action. Two forms (felix/cmd/calico-bpf/commands/policy_debug.go): the current one (`Tier: t`,
    `Policy: <Kind> <name>`, `Rule: <name>  Action: deny`, `Match: …`, `Hit count: N`,
    `End Tier: t  (action: deny)`), and the older one that prints the program's own comments
    (`// Start of tier t`, `// Start of rule …`, `// End of tier t: deny`) among its instructions."""
    rows: list[dict] = []
    iface = hook = tier = policy = ""
    rule: dict | None = None
    for no, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or preamble(s, no, log):
            continue
        comment = s[2:].strip() if s.startswith("//") else ""
        if s.startswith("IfaceName:"):
            iface, tier, policy, rule = s.split(":", 1)[1].strip(), "", "", None
        elif s.startswith("Hook:"):
            hook, tier, policy, rule = s.split(":", 1)[1].strip(), "", "", None
        elif s.startswith(("Error:", "Policy Info:", "#####")) or re.fullmatch(r"[0-9a-f]{16} .*|[\w.-]+:", s):
            continue  # an error the dump reports, a heading, an instruction or a jump label
        elif s.startswith("Tier:") or comment.startswith("Start of tier "):
            tier = (s.split(":", 1)[1] if s.startswith("Tier:") else comment[len("Start of tier ") :]).strip()
        elif s.startswith("End Tier:") or comment.startswith("End of tier "):
            m = re.match(r"End Tier:\s*(\S+)(?:\s+\(action: (\w+)\))?", s) or re.match(
                r"End of tier (\S+?)(?::\s*(\w+))?$", comment
            )
            if m:
                rows.append(_policy_row(no, iface, hook, m.group(1), "", "", "end-of-tier", (m.group(2) or "").lower()))
            tier, policy = "", ""
        elif s.startswith("Policy:") or (comment.startswith("Start of ") and not comment.startswith("Start of rule")):
            policy = (s.split(":", 1)[1] if s.startswith("Policy:") else comment[len("Start of ") :]).strip()
        elif s.startswith("End Policy:") or (comment.startswith("End of ") and not comment.startswith("End of rule")):
            policy = ""
        elif s.startswith("Rule:") or comment.startswith("Start of rule "):
            m = re.match(r"Rule:\s*(\S+)(?:\s+Action:\s*(\w+))?", s) or re.match(
                r'Start of rule (\S+)(?:.*?action:"(\w+)")?', comment
            )
            name, action = (m.group(1), m.group(2) or "") if m else ("", "")
            rule = _policy_row(no, iface, hook, tier, policy, name, "rule", action.lower())
            rows.append(rule)
        elif s.startswith("Match:") and rule is not None:
            rule["match"] = s.split(":", 1)[1].strip()
        elif s.startswith("Hit count:") and rule is not None:
            rule["hit_count"] = s.split(":", 1)[1].strip()
        elif comment:
            continue  # the older form's other comments (matches, MatchIDs) describe its instructions
        else:
            log.add(no, "unparsed_line", s[:200])
    return table_frame(rows, "bpf_policy", node, artifact)


def _policy_row(no: int, iface: str, hook: str, tier: str, policy: str, rule: str, kind: str, action: str) -> dict:
    kind_name, _, name = policy.partition(" ")
    return {
        "line": no,
        "interface": iface,
        "hook": hook,
        "tier": tier,
        "policy_kind": kind_name if name else "",
        "policy": name or policy,
        "rule": rule,
        "kind": kind,
        "action": action,
    }
