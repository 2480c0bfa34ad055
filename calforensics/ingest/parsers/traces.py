"""Rule traces: kernel log lines from `iptables -j TRACE` and `nft monitor trace` output.

iptables (xt_LOG / nf_log_syslog): `TRACE: table:chain:type:rulenum IN=… OUT=… SRC=… DST=… … PROTO=TCP SPT=… DPT=…`
with any dmesg / journal / syslog prefix. nft: `trace id <hex> <family> <table> <chain> packet|rule|verdict|policy …`.
Calico eBPF debug log (`bpftool prog tracelog`): `<comm>-<pid> [cpu] flags <secs>: bpf_trace_printk: <tag>: <msg>`,
tag = interface padded with `-` then `-I`/`-E`/`-X` (policy direction); one row per verdict
(`DENY due to policy`, `Final result=…`, rule Log action `policy DENIED …`), with the tuple from the
packet's earlier lines on that tag (shared eBPF reference C.4).
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame

IPT = re.compile(r"TRACE: (\w+):([^:\s]+):(\w+):(\d+)\s?(.*)$")
NFT = re.compile(r"trace id ([0-9a-f]+) (\S+) (\S+) (\S+) (packet|rule|verdict|policy|unknown)\b:?\s*(.*)$")
DMESG_TS = re.compile(r"^\[\s*(\d+\.\d+)\]")
SYSLOG_TS = re.compile(r"^(\w{3}\s+\d+\s+\d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+)")
KV = re.compile(r"\b([A-Z]+)=(\S*)")
BPF = re.compile(r"(?:^|\s)(\d+\.\d+): (?:bpf_trace_printk|0): (?:IPv6 )?(\S+?)-*-([IEX]): (.*)$")
BPF_LOG_ACTION = re.compile(r"policy (ALLOWED|DENIED)\s+proto (\d+) src (\S+):(\d+) dest (\S+):(\d+)")
BPF_PROTO = {"6": "TCP", "17": "UDP", "1": "ICMP", "58": "ICMPV6"}


def looks_like_traces(lines: list[str]) -> bool:
    return any("TRACE: " in x or x.lstrip().startswith("trace id ") or "bpf_trace_printk: " in x for x in lines[:2000])


def parse_traces(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Rule traces of three kinds, mixed as kernel logs mix them: iptables TRACE lines, `nft monitor
    trace` lines and Calico's BPF debug log; other lines are the log's own, not damage."""
    rows: list[dict] = []
    packet: dict[str, dict] = {}  # per BPF tag: the tuple of the packet being processed
    for no, line in enumerate(lines, 1):
        if "bpf_trace_printk: " in line or ": 0: " in line:  # older kernels print `0:` (calico#6450)
            rec = _bpf_line(no, line, packet)
            if rec is None and "bpf_trace_printk: " in line:
                log.add(no, "unparsed_line", line.strip()[:200])
            elif rec:
                rows.append(rec)
            if rec is not None:
                continue
        if "TRACE:" in line:
            rec = _iptables_trace(no, line)
        elif "trace id " in line:
            rec = _nft_trace(no, line)
        else:
            continue
        if rec is None:
            log.add(no, "unparsed_line", line.strip()[:200])
        else:
            rows.append(rec)
    return table_frame(rows, "traces", node, artifact)


def _iptables_trace(no: int, line: str) -> dict | None:
    """`TRACE: table:chain:type:rulenum IN=… OUT=… SRC=…` (the TRACE target's kernel log line)."""
    m = IPT.search(line)
    if not m:
        return None
    kv = dict(KV.findall(m.group(5)))
    return {
        "line": no,
        "source": "iptables",
        "time": _time(line),
        "table": m.group(1),
        "chain": m.group(2),
        "type": m.group(3),
        "rulenum": m.group(4),
        "in_iface": kv.get("IN", ""),
        "out_iface": kv.get("OUT", ""),
        "src": kv.get("SRC", ""),
        "dst": kv.get("DST", ""),
        "proto": kv.get("PROTO", ""),
        "sport": kv.get("SPT"),
        "dport": kv.get("DPT"),
        "ip_id": kv.get("ID"),
        "length": kv.get("LEN"),
        "mark": kv.get("MARK", ""),
        "family": "ipv6" if ":" in kv.get("SRC", "") else "ipv4",
    }


def _nft_trace(no: int, line: str) -> dict | None:
    """`trace id … family table chain packet|rule|verdict|policy …` (`nft monitor trace`)."""
    m = NFT.search(line)
    if not m:
        return None
    rest = m.group(6)
    rec = {
        "line": no,
        "source": "nft",
        "time": _time(line),
        "trace_id": m.group(1),
        "family": m.group(2),
        "table": m.group(3),
        "chain": m.group(4),
        "type": m.group(5),
    }
    v = re.search(r"\(verdict (\w+)(?: (\S+))?\)", rest) or re.search(r"^(\w+)(?: (\S+))?$", rest.strip())
    if m.group(5) in ("rule", "verdict", "policy") and v:
        rec["verdict"] = v.group(1) + (f" {v.group(2)}" if v.group(2) else "")
    if m.group(5) == "rule":
        rec["rule"] = re.sub(r"\s*\(verdict.*$", "", rest).strip()
    for key, pat in (
        ("in_iface", r'iif "([^"]+)"'),
        ("out_iface", r'oif "([^"]+)"'),
        ("src", r"ip6? saddr (\S+)"),
        ("dst", r"ip6? daddr (\S+)"),
        ("ip_id", r"ip id (\d+)"),
        ("length", r"ip length (\d+)"),
        ("sport", r"(?:tcp|udp) sport (\d+)"),
        ("dport", r"(?:tcp|udp) dport (\d+)"),
        ("mark", r"meta mark (0x[0-9a-f]+)"),
    ):
        mm = re.search(pat, rest)
        if mm:
            rec[key] = mm.group(1)
    pm = re.search(r"\b(tcp|udp|icmp|icmpv6)\b", rest)
    if pm and m.group(5) == "packet":
        rec["proto"] = pm.group(1).upper()
    return rec


def _time(line: str) -> str:
    m = DMESG_TS.match(line.strip()) or SYSLOG_TS.match(line.strip())
    return m.group(1) if m else ""


def _bpf_line(no: int, line: str, packet: dict[str, dict]) -> dict | None:
    """A verdict row; {} for a line that only adds to the packet's tuple; None if not a trace line."""
    m = BPF.search(line)
    if not m:
        return None
    secs, iface, hook, msg = m.groups()
    tag = f"{iface}-{hook}"
    if msg.startswith("New packet"):
        packet[tag] = {}
    state = packet.setdefault(tag, {})
    for key, pat in (("src", r"\bsrc=([0-9a-fA-F.:]+)"), ("dst", r"\bdst=([0-9a-fA-F.:]+)")):
        mm = re.search(pat, msg)
        if mm and ("." in mm.group(1) or msg.startswith("IP")):
            state[key] = mm.group(1)
    ports = re.search(r"ports: s=(\d+) d=(\d+)", msg)
    if ports:
        state["sport"], state["dport"] = ports.groups()
        state["proto"] = msg.split(";")[0].strip().upper()
    action = BPF_LOG_ACTION.search(msg)
    if action:
        state = {
            "proto": BPF_PROTO.get(action.group(2), action.group(2)),
            "src": action.group(3),
            "sport": action.group(4),
            "dst": action.group(5),
            "dport": action.group(6),
        }
    verdict = msg.startswith(("DENY due to policy", "Final result=")) or action
    if not verdict:
        return {}
    denied = "DENY" in msg or (action and action.group(1) == "DENIED")
    return {
        "line": no,
        "source": "calico-bpf",
        "time": secs,
        "family": "ipv6" if " IPv6 " in line else "ipv4",
        "table": "bpf",
        "chain": tag,
        "type": "deny" if denied else "allow",
        "verdict": msg.strip(),
        "in_iface": iface,
        **state,
    }
