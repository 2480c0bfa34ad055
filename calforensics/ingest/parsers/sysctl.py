"""`sysctl` output (`key = value` lines), as our collector writes it to sysctls.txt."""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame

LINE = re.compile(r"^([a-z0-9_.\-/]+)\s*=\s*(.*)$")


def looks_like_sysctl(lines: list[str]) -> bool:
    body = [x for x in lines[:20] if x.strip()]
    return bool(body) and all(LINE.match(x.strip()) for x in body) and any(x.startswith("net.") for x in body)


def parse_sysctls(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    rows = []
    for no, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        m = LINE.match(s)
        if not m:
            if "cannot stat" in s or "No such file" in s:
                log.add(no, "tool_error", s[:200])
            else:
                log.add(no, "unparsed_line", s[:200])
            continue
        rows.append({"line": no, "key": m.group(1), "value": m.group(2).strip()})
    return table_frame(rows, "sysctls", node, artifact)


def conntrack_fill(sysctls: pd.DataFrame) -> pd.DataFrame:
    """Per node: conntrack entries in use, the table's limit, and the fill ratio."""
    wide = sysctls.pivot_table(index="node", columns="key", values="value", aggfunc="last", observed=True)
    out = []
    for node, row in wide.iterrows():
        count, limit = row.get("net.netfilter.nf_conntrack_count"), row.get("net.netfilter.nf_conntrack_max")
        if isinstance(count, str) and isinstance(limit, str) and count.isdigit() and limit.isdigit() and int(limit):
            out.append({"node": str(node), "count": int(count), "max": int(limit), "fill": int(count) / int(limit)})
    return pd.DataFrame(out, columns=["node", "count", "max", "fill"])
