"""`ipvsadm -Ln` (also `--stats`, `--rate`, `--exact`, and `-S` / `--save`) into virtual services and
their real servers: kube-proxy's IPVS mode keeps its services there.

Grammar from ipvsadm.c (list_all, print_title, print_service_entry, print_largenum):
`IP Virtual Server version 1.2.1 (size=4096)`, a title (`Prot LocalAddress:Port Scheduler Flags` /
`  -> RemoteAddress:Port Forward Weight ActiveConn InActConn`, or the `Conns InPkts OutPkts InBytes
OutBytes` / `CPS InPPS OutPPS InBPS OutBPS` columns), then per virtual service
`TCP  10.96.0.1:443 rr [persistent N]` (`FWM  <mark>` for firewall-mark services; IPv6 as
`[addr]:port`) and per real server `  -> 10.244.1.5:6443  Masq  1  0  0`. Without `--exact`,
statistics of 100 million and more print as thousands, millions… with a K, M, G or T suffix. `-S`
prints the services as commands: `-A -t 10.96.0.1:443 -s rr`, `-a -t 10.96.0.1:443 -r 10.244.1.5:6443 -m -w 1`.
"""

from __future__ import annotations

import re

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .text import split_hostport

HEADER = re.compile(r"^IP Virtual Server version \S+")
TITLES = ("Prot LocalAddress:Port", "-> RemoteAddress:Port")
SERVICE = re.compile(r"^(TCP|UDP|SCTP)\s+(\S+)(?:\s+(.*))?$|^FWM\s+(\d+)(?:\s+IPv6)?(?:\s+(.*))?$")
REAL = re.compile(r"^->\s+(\S+)(?:\s+(.*))?$")
SAVED_SERVICE = re.compile(r"^-A\s+(-[tuf]|--tcp-service|--udp-service|--sctp-service|--fwmark-service)\s+(\S+)(.*)$")
SAVED_REAL = re.compile(r"^-a\s+(-[tuf]|--\S+-service)\s+(\S+)\s+(?:-r|--real-server)\s+(\S+)(.*)$")
SUFFIX = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
FORWARD = {"-m": "Masq", "-g": "Route", "-i": "Tunnel"}
STAT_COLUMNS = ("conns", "in_packets", "out_packets", "in_bytes", "out_bytes")
SAVED_PROTO = {"-t": "tcp", "--tcp-service": "tcp", "-u": "udp", "--udp-service": "udp", "--sctp-service": "sctp"}


def looks_like_ipvsadm(lines: list[str]) -> bool:
    head = [x.strip() for x in lines[:50]]
    return any(HEADER.match(x) or x.startswith(TITLES[0]) for x in head) or any(
        SAVED_SERVICE.match(x) for x in head
    )


def _number(text: str) -> int:
    """A statistic as printed: digits, or (no --exact) a count of thousands, millions … with its suffix."""
    m = re.fullmatch(r"(\d+)([KMGT]?)", text)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * SUFFIX.get(m.group(2), 1)


def parse_ipvsadm(lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "") -> pd.DataFrame:
    """One row per virtual service (kind `service`) and per real server (kind `real`, with its
    service's address): forwarding method, weight, connections, and the statistics `--stats` prints."""
    rows: list[dict] = []
    service: dict | None = None
    columns = "list"  # which title came last: list, stats or rate
    for no, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or HEADER.match(s):
            continue
        if s.startswith(TITLES[0]):
            columns = "stats" if "InPkts" in s else "rate" if "CPS" in s else "list"
            continue
        if s.startswith(TITLES[1]):
            continue
        try:
            m = SAVED_SERVICE.match(s)
            if m:
                service = _service(no, SAVED_PROTO.get(m.group(1), "fwmark"), m.group(2), m.group(3))
                rows.append(service)
                continue
            m = SAVED_REAL.match(s)
            if m:
                ip, port = split_hostport(m.group(3))
                vip, vport = split_hostport(m.group(2))
                words = m.group(4).split()
                forward = next((FORWARD[w] for w in words if w in FORWARD), "Route")
                weight = int(words[words.index("-w") + 1]) if "-w" in words else 1
                rows.append(
                    {
                        "line": no,
                        "kind": "real",
                        "proto": SAVED_PROTO.get(m.group(1), "fwmark"),
                        "vip": vip,
                        "vport": vport,
                        "backend_ip": ip,
                        "backend_port": port,
                        "forward": forward,
                        "weight": weight,
                    }
                )
                continue
            m = SERVICE.match(s)
            if m:
                if m.group(4):
                    service = _service(no, "fwmark", m.group(4), m.group(5) or "")
                else:
                    service = _service(no, m.group(1).lower(), m.group(2), m.group(3) or "", columns)
                rows.append(service)
                continue
            m = REAL.match(s)
            if m and service is not None:
                rows.append(_real(no, service, m.group(1), (m.group(2) or "").split(), columns))
                continue
        except (ValueError, IndexError) as exc:
            log.add(no, "unparsed_line", f"{exc}: {s[:200]}")
            continue
        log.add(no, "unparsed_line", s[:200])
    return table_frame(rows, "ipvs", node, artifact)


def _service(no: int, proto: str, address: str, rest: str, columns: str = "list") -> dict:
    row: dict = {"line": no, "kind": "service", "proto": proto}
    if proto == "fwmark":
        row["fwmark"] = int(address)
    else:
        row["vip"], row["vport"] = split_hostport(address)
        if row["vport"] < 0:
            raise ValueError(f"no port in {address!r}")
    words = rest.split()
    if columns == "stats" and len(words) == len(STAT_COLUMNS):
        row.update(zip(STAT_COLUMNS, map(_number, words), strict=True))
    elif columns == "list" and words:
        if words[0] == "-s":  # saved form: -s <scheduler>
            words = words[1:]
        row["scheduler"] = words[0] if words else ""
        row["flags"] = " ".join(words[1:])
    elif columns == "rate" and len(words) != 5:
        raise ValueError("a rate line has five numbers")
    return row


def _real(no: int, service: dict, address: str, words: list[str], columns: str) -> dict:
    ip, port = split_hostport(address)
    row = {
        "line": no,
        "kind": "real",
        "proto": service["proto"],
        "vip": service.get("vip", ""),
        "vport": service.get("vport", -1),
        "fwmark": service.get("fwmark", -1),
        "backend_ip": ip,
        "backend_port": port,
    }
    if columns == "stats":
        row.update(zip(STAT_COLUMNS, map(_number, words), strict=True))
    elif columns == "list":
        row["forward"], row["weight"] = words[0], int(words[1])
        row["active_conns"], row["inactive_conns"] = int(words[2]), int(words[3])
    return row
