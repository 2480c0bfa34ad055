"""`ipset list` (also `ipset list -o plain` and `-t`) into one row per member.

Grammar from ipset's list output (lib/session.c, the plain format): per set `Name: <set>`, `Type:
<type>`, `Revision:`, `Header: …`, `Size in memory:`, `References:`, `Number of entries:`, then
`Members:` and one member a line, with its options after it (`timeout 30`, `packets 4 bytes 240`,
`comment "…"`); a blank line between sets. kube-proxy's IPVS mode keeps its frontends in sets such
as KUBE-CLUSTER-IP (`10.96.0.10,udp:53`), KUBE-EXTERNAL-IP, KUBE-LOAD-BALANCER and
KUBE-NODE-PORT-TCP (`30080`); Calico keeps its selectors' members in `cali40…` sets.
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .text import preamble

HEADER = re.compile(r"^(Name|Type|Revision|Header|Size in memory|References|Number of entries|Initval):\s*(.*)$")
COMMENT = re.compile(r'\s+comment\s+"((?:[^"\\]|\\.)*)"')
# an address, network, port, range, MAC or interface, joined by commas (hash:ip,port,net …)
MEMBER = re.compile(r"^(?=[^\s]*\d)[\w.:/,\[\]-]+$")


def looks_like_ipset(lines: list[str]) -> bool:
    head = [x.strip() for x in lines[:20]]
    return any(x.startswith("Name: ") for x in head) and any(x.startswith("Type: ") for x in head)


def parse_ipset(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    rows: list[dict] = []
    name = kind = ""
    members = False
    for no, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s:
            members = False
            continue
        if preamble(s, no, log):
            continue
        m = HEADER.match(s)
        if m:
            if m.group(1) == "Name":
                name, kind, members = m.group(2).strip(), "", False
            elif m.group(1) == "Type":
                kind = m.group(2).strip()
            continue
        if s == "Members:":
            members = bool(name)
            if not name:
                log.add(no, "unparsed_line", "Members: without a set name")
            continue
        if not members:
            log.add(no, "unparsed_line", s[:200])
            continue
        comment = COMMENT.search(s)
        body = COMMENT.sub("", s).split()
        if not body or not MEMBER.match(body[0]):
            log.add(no, "unparsed_line", s[:200])
            continue
        rows.append(
            {
                "line": no,
                "set": name,
                "type": kind,
                "member": body[0] if body else "",
                "options": " ".join(body[1:]),
                "comment": comment.group(1) if comment else "",
            }
        )
    return table_frame(rows, "ipsets", node, artifact)
