"""iproute2 output: `ip link` / `ip addr` (also `-d` details and `-j` JSON) and `ip route`."""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .text import load_json_bounded

LINK_HEAD = re.compile(r"^(\d+):\s+([^:@\s]+)(?:@([^:\s]+))?:\s+<([^>]*)>(.*)$")
ROUTE_TYPES = {
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "nat",
    "anycast",
}
ROUTE_START = re.compile(
    r"^(default|[0-9a-fA-F.:]+(?:/\d+)?|unicast|local|broadcast|multicast|blackhole|"
    r"unreachable|prohibit|throw|anycast)\s"
)


# the first line of each iproute2 command's output, for files that hold several one after another
RULE_HEAD = re.compile(r"^\d+:\s+(?:not\s+)?from\s")  # ip rule
NEIGH_HEAD = re.compile(  # ip neigh
    r"^\S+ dev \S+ .*\b(?:REACHABLE|STALE|DELAY|PROBE|FAILED|INCOMPLETE|NOARP|PERMANENT|NONE)\s*$|^\S+ dev \S+ lladdr "
)
FDB_HEAD = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5} (?:dev \S+|vlan |master )")  # bridge fdb


def sections(lines: list[str]) -> list[str]:
    """Which command's output each line is: "link" (`ip link`, `ip addr`, `-d`, `-s`), "route",
    "rule", "neigh", "fdb", or "" for a line no command starts; an indented line (a link's details,
    a route's next hops) belongs to the line above."""
    out: list[str] = []
    current = ""
    for line in lines:
        s = line.rstrip()
        if not s.strip():
            out.append("")
            continue
        if line[:1].isspace() and current:
            out.append(current)
            continue
        if LINK_HEAD.match(s):
            current = "link"
        elif RULE_HEAD.match(s):
            current = "rule"
        elif NEIGH_HEAD.match(s):
            current = "neigh"
        elif FDB_HEAD.match(s):
            current = "fdb"
        elif ROUTE_START.match(s + " "):
            current = "route"
        else:
            current = ""
        out.append(current)
    return out


def looks_like_ip_link(lines: list[str]) -> bool:
    return any(LINK_HEAD.match(x) for x in lines[:10])


def looks_like_ip_route(lines: list[str]) -> bool:
    body = [x for x in lines[:30] if x.strip()]
    return (
        bool(body)
        and all(ROUTE_START.match(x) or x.startswith((" ", "\t")) for x in body[:10])
        and any(" dev " in x or x.split()[0] in ROUTE_TYPES for x in body)
    )


def parse_ip_link(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    rows: list[dict] = []
    text = "\n".join(lines).strip()
    if text.startswith("["):
        try:
            for i, e in enumerate(load_json_bounded(text), 1):
                info = e.get("linkinfo") or {}
                data = info.get("info_data") or {}
                rows.append(
                    {
                        "line": i,
                        "ifindex": e.get("ifindex"),
                        "name": e.get("ifname", ""),
                        "peer": e.get("link", "") or (f"if{e['link_index']}" if "link_index" in e else ""),
                        "mtu": e.get("mtu"),
                        "state": e.get("operstate", ""),
                        "flags": ",".join(e.get("flags", [])),
                        "mac": e.get("address", ""),
                        "link_kind": info.get("info_kind", ""),
                        "vni": data.get("id"),
                        "vxlan_port": data.get("port"),
                        "addresses": " ".join(f"{a.get('local')}/{a.get('prefixlen')}" for a in e.get("addr_info", [])),
                    }
                )
        except (ValueError, AttributeError, TypeError) as exc:  # malformed, too large or too deep
            log.add("file", "bad_json", str(exc))
    else:
        cur: dict | None = None
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            m = LINK_HEAD.match(line)
            if m:
                cur = {
                    "line": no,
                    "ifindex": m.group(1),
                    "name": m.group(2),
                    "peer": m.group(3) or "",
                    "flags": m.group(4),
                    "addresses": "",
                }
                rest = m.group(5)
                for key, col in (("mtu", "mtu"), ("state", "state")):
                    mm = re.search(rf"\b{key} (\S+)", rest)
                    if mm:
                        cur[col] = mm.group(1)
                rows.append(cur)
                continue
            s = line.strip()
            if cur is None or not line[:1].isspace():
                log.add(no, "unparsed_line", s[:200])
                continue
            if s.startswith("link/"):
                parts = s.split()
                cur["mac"] = parts[1] if len(parts) > 1 else ""
            elif s.startswith(("inet ", "inet6 ")):
                cur["addresses"] = (cur["addresses"] + " " + s.split()[1]).strip()
            elif s.startswith(("vxlan ", "ipip ", "wireguard", "veth", "bridge ", "gre ", "geneve ", "dummy")):
                cur["link_kind"] = s.split()[0]
                vni = re.search(r"\bid (\d+)", s)
                port = re.search(r"\bdstport (\d+)", s)
                cur["vni"] = vni.group(1) if vni else None
                cur["vxlan_port"] = port.group(1) if port else None
    return table_frame(rows, "interfaces", node, artifact)


def parse_ip_route(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    rows: list[dict] = []
    for no, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if line[:1].isspace() and rows:  # multipath `nexthop via … dev …` continuation
            rows[-1]["raw"] += " " + s
            nh = re.search(r"via (\S+).*?dev (\S+)", s)
            if nh and not rows[-1].get("via"):
                rows[-1]["via"], rows[-1]["dev"] = nh.group(1), nh.group(2)
            continue
        toks = s.split()
        if not ROUTE_START.match(s + " "):
            log.add(no, "unparsed_line", s[:200])
            continue
        rec: dict = {"line": no, "raw": s, "type": "unicast", "table": "main", "onlink": "onlink" in toks}
        i = 0
        if toks[0] in ROUTE_TYPES:
            rec["type"] = toks[0]
            i = 1
        rec["dst"] = toks[i] if i < len(toks) else ""
        i += 1
        while i < len(toks):
            k = toks[i]
            if k in ("via", "dev", "proto", "scope", "src", "metric", "table") and i + 1 < len(toks):
                rec[k] = toks[i + 1]
                i += 2
            else:
                i += 1
        rows.append(rec)
    return table_frame(rows, "routes", node, artifact)
