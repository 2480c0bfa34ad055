"""conntrack dumps: `conntrack -L` (default and `-o extended,id,timestamp,ktimestamp,labels`),
`conntrack -E` events (with `-o timestamp` prefixes), `-o xml`, and `/proc/net/nf_conntrack`.

Grammar from libnetfilter_conntrack's snprintf_default.c and snprintf_xml.c (see
docs/formats in the shared reference, section 4). Every `key=value` field is optional.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame

L4_NAMES = {"tcp", "udp", "icmp", "icmpv6", "sctp", "gre", "dccp", "udplite", "unknown"}
STATES = {
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
    "LISTEN",
    "CLOSED",
    "COOKIE_WAIT",
    "COOKIE_ECHOED",
    "SHUTDOWN_SENT",
    "SHUTDOWN_RECD",
    "SHUTDOWN_ACK_SENT",
    "HEARTBEAT_SENT",
    "HEARTBEAT_ACKED",
    "REQUEST",
    "RESPOND",
    "PARTOPEN",
    "OPEN",
    "CLOSEREQ",
    "CLOSING",
    "TIMEWAIT",
    "IGNORE",
    "INVALID",
    "RETRANS",
    "UNACK",
}
EVENT_TS = re.compile(r"^\[(\d+)\.(\d{1,9})\]\s*")
KTIMESTAMP = re.compile(r"\[(start|stop)=([^\]]*)\]")
SUMMARY = re.compile(r"conntrack v[\d.]+ \(conntrack-tools\): (\d+) flow (?:entries|events) have been shown")
TOOL_ERROR = re.compile(r"conntrack v[\d.]+ \(conntrack-tools\): (.*)|^Try `conntrack -h'|^conntrack: ")


def looks_like_conntrack(lines: list[str]) -> bool:
    for line in lines[:50]:
        s = EVENT_TS.sub("", line.strip())
        if s.startswith("<?xml") and any("<conntrack" in x for x in lines[:3]):
            return True
        if " src=" in s and " dst=" in s and (s.split()[0].lower() in L4_NAMES | {"ipv4", "ipv6"} or s.startswith("[")):
            return True
    return False


def parse_conntrack(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """Parse any supported conntrack text form into the `conntrack` table."""
    if any(line.lstrip().startswith("<?xml") or line.lstrip().startswith("<conntrack") for line in lines[:3]):
        rows = _parse_xml("\n".join(lines), log)
    else:
        rows = []
        for no, line in enumerate(lines, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if SUMMARY.search(s):
                continue
            if TOOL_ERROR.search(s):
                log.add(no, "tool_error", s)
                continue
            rec = _parse_line(s)
            if rec is None:
                log.add(no, "unparsed_line", s[:200])
                continue
            rec["line"] = no
            rows.append(rec)
    return add_nat_kind(table_frame(rows, "conntrack", node, artifact))


def add_nat_kind(df: pd.DataFrame) -> pd.DataFrame:
    """Derive the NAT kind from the original vs reply tuples (DNAT: reply source differs from the
    original destination; SNAT: reply destination differs from the original source)."""
    has_reply = df["reply_src"] != ""
    dnat = has_reply & ((df["reply_src"] != df["orig_dst"]) | (df["reply_sport"] != df["orig_dport"]))
    snat = has_reply & ((df["reply_dst"] != df["orig_src"]) | (df["reply_dport"] != df["orig_sport"]))
    nat = pd.Series("none", index=df.index, dtype=object)
    nat[dnat & ~snat] = "dnat"
    nat[snat & ~dnat] = "snat"
    nat[dnat & snat] = "both"
    df["nat"] = pd.Categorical(nat, categories=["none", "dnat", "snat", "both"])
    return df


def _parse_line(s: str) -> dict | None:
    rec: dict = {"form": "list"}
    m = EVENT_TS.match(s)
    if m:
        frac = m.group(2).ljust(9, "0")
        rec["event_ts_ns"] = int(m.group(1)) * 1_000_000_000 + int(frac)
        s = s[m.end() :]
    for k, v in KTIMESTAMP.findall(s):
        rec[k] = v.strip()
    s = KTIMESTAMP.sub(" ", s)
    toks = s.split()
    i = 0
    if i < len(toks) and toks[i] in ("[NEW]", "[UPDATE]", "[DESTROY]"):
        rec["event"] = toks[i][1:-1]
        rec["form"] = "event"
        i += 1
    if i + 1 < len(toks) and toks[i] in ("ipv4", "ipv6") and toks[i + 1].isdigit():
        rec["l3"] = toks[i]
        rec["form"] = "extended" if rec["form"] == "list" else rec["form"]
        i += 2
    if i + 1 >= len(toks) or toks[i] not in L4_NAMES or not toks[i + 1].isdigit():
        return None
    rec["proto"], rec["proto_num"] = toks[i], int(toks[i + 1])
    i += 2
    if i < len(toks) and toks[i].isdigit():
        rec["timeout"] = int(toks[i])
        i += 1
    if i < len(toks) and toks[i] in STATES:
        rec["state"] = toks[i]
        i += 1
    direction = None
    prev_key = ""
    for tok in toks[i:]:
        if tok.startswith("[") and tok.endswith("]"):
            flag = tok[1:-1]
            if flag == "UNREPLIED":
                rec["unreplied"] = True
            elif flag == "ASSURED":
                rec["assured"] = True
            elif flag in ("OFFLOAD", "HW_OFFLOAD"):
                rec["offload"] = flag.lower()
            continue
        key, eq, val = tok.partition("=")
        if not eq:
            continue
        if key == "src":
            direction = "orig" if direction is None else "reply"
        if (
            (key in ("src", "dst") and direction)
            or (key in ("sport", "dport") and direction)
            or (key in ("packets", "bytes") and direction)
        ):
            rec[f"{direction}_{key}"] = val
        elif key in ("type", "code") and direction == "orig":
            rec[f"icmp_{key}"] = val
        elif key == "id" and prev_key == "code":
            if direction == "orig":
                rec["icmp_id"] = val
        elif key == "id":
            rec["ct_id"] = val
        elif key in ("mark", "zone", "use", "helper", "labels"):
            rec[key] = val
        elif key == "delta-time":
            rec["delta_time"] = val
        prev_key = key
    if not rec.get("orig_src") or not rec.get("orig_dst"):  # a cut line ("... src=") is not an entry
        return None
    if "l3" not in rec:
        rec["l3"] = "ipv6" if ":" in rec["orig_src"] else "ipv4"
    if rec["form"] == "extended" and "zone" in rec and "use" in rec and "mark" in rec:
        rec["form"] = "extended"
    return rec


def _parse_xml(text: str, log: AnomalyLog) -> list[dict]:
    rows: list[dict] = []
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        # event streams may be cut short: parse flow by flow
        root = None
        log.add("file", "bad_xml", str(exc))
    flows = root.iter("flow") if root is not None else []
    if root is None:
        for no, line in enumerate(text.split("\n"), 1):
            if "<flow" in line:
                try:
                    rows.append(_xml_flow(ET.fromstring(line[line.index("<flow") : line.rindex("</flow>") + 7]), no))
                except (ET.ParseError, ValueError) as exc:
                    log.add(no, "bad_xml", str(exc))
        return rows
    for n, flow in enumerate(flows, 1):
        rows.append(_xml_flow(flow, n))
    return rows


def _xml_flow(flow: ET.Element, no: int) -> dict:
    rec: dict = {"form": "xml", "line": no}
    if flow.get("type"):
        rec["event"] = flow.get("type", "").upper()
    for meta in flow.findall("meta"):
        d = meta.get("direction")
        if d in ("original", "reply"):
            p = "orig" if d == "original" else "reply"
            l3 = meta.find("layer3")
            l4 = meta.find("layer4")
            if l3 is not None:
                rec["l3"] = l3.get("protoname")
                rec[f"{p}_src"] = l3.findtext("src", "")
                rec[f"{p}_dst"] = l3.findtext("dst", "")
            if l4 is not None:
                rec["proto"] = l4.get("protoname")
                rec["proto_num"] = l4.get("protonum")
                rec[f"{p}_sport"] = l4.findtext("sport")
                rec[f"{p}_dport"] = l4.findtext("dport")
            c = meta.find("counters")
            if c is not None:
                rec[f"{p}_packets"] = c.findtext("packets")
                rec[f"{p}_bytes"] = c.findtext("bytes")
        else:
            for tag in ("state", "timeout", "mark", "zone", "use", "id"):
                val = meta.findtext(tag)
                if val is not None:
                    rec["ct_id" if tag == "id" else tag] = val
            rec["assured"] = meta.find("assured") is not None
            rec["unreplied"] = meta.find("unreplied") is not None
            ts = meta.find("timestamp")
            if ts is not None:
                rec["start"] = ts.findtext("start", "")
                rec["stop"] = ts.findtext("stop", "")
            if meta.findtext("deltatime") is not None:
                rec["delta_time"] = meta.findtext("deltatime")
    return rec
