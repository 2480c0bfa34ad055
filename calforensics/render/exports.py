"""Outputs other tools read: Zeek's conn.log (for the SIEMs and Zeek tools engineers keep) and JSON
lines (for `jq`). Parquet tables, which DuckDB reads, are written with the report (--tables parquet).

conn.log follows Zeek's TSV log format (base/frameworks/logging/writers/ascii.zeek): the `#separator`,
`#set_separator`, `#empty_field`, `#unset_field`, `#path`, `#open`, `#fields` and `#types` header
lines, a tab-separated row per connection, `#close`. Zeek's own conn.log fields come first, in its
order; ours follow, named `calforensics.*`. A field we do not know is unset (`-`), an empty one
`(empty)`; text from the bundle is escaped as Zeek escapes it (`\\x09`), through render.inert.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from ..analyses import Analysis
from .inert import inert

EXPORT_FORMATS = ("zeek", "jsonl")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# (field, Zeek type) of conn.log, then ours
CONN_FIELDS = [
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("service", "string"),
    ("duration", "interval"),
    ("orig_bytes", "count"),
    ("resp_bytes", "count"),
    ("conn_state", "string"),
    ("local_orig", "bool"),
    ("local_resp", "bool"),
    ("missed_bytes", "count"),
    ("history", "string"),
    ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"),
    ("resp_pkts", "count"),
    ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
    ("calforensics.flow_id", "count"),
    ("calforensics.verdict", "string"),
    ("calforensics.k8s_service", "string"),
    ("calforensics.backend_h", "addr"),
    ("calforensics.backend_p", "port"),
    ("calforensics.snat_h", "addr"),
    ("calforensics.snat_p", "port"),
    ("calforensics.path", "string"),
    ("calforensics.drop_cause", "string"),
]
UNSET, EMPTY = "-", "(empty)"


def zeek_uid(bundle: str, flow_id: int) -> str:
    """A connection uid as Zeek writes them (`C` and base62), the same for the same flow of the same
    bundle in every run, so logs of two runs join."""
    n = int.from_bytes(hashlib.sha1(f"{bundle}/{flow_id}".encode()).digest()[:12], "big")
    out = ""
    while len(out) < 17:
        n, r = divmod(n, 62)
        out += BASE62[r]
    return "C" + out


def _text(value: object) -> str:
    text = inert(value)
    return text if text else EMPTY


def _time(ns: int) -> str:
    return f"{ns / 1e9:.6f}" if ns >= 0 else UNSET


def _count(n: int) -> str:
    return str(int(n)) if n >= 0 else UNSET


def write_zeek_conn(a: Analysis, path: Path) -> int:
    """conn.log of every routed flow (link-scope flows such as IPv6 neighbour discovery left out, as
    the report leaves them out of its counts). Returns the rows written."""
    flows = a.bundle.flows
    flows = flows[flows["scope"].astype(str) != "link"]
    causes = dict(zip(a.drops["flow_id"].astype(int), a.drops["cause_kind"].astype(str), strict=True))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H-%M-%S")
    lines = [
        "#separator \\x09",
        "#set_separator\t,",
        f"#empty_field\t{EMPTY}",
        f"#unset_field\t{UNSET}",
        "#path\tconn",
        f"#open\t{stamp}",
        "#fields\t" + "\t".join(f for f, _ in CONN_FIELDS),
        "#types\t" + "\t".join(t for _, t in CONN_FIELDS),
    ]
    name = a.bundle.name
    for f in flows.itertuples(index=False):
        duration = (f.last_ns - f.first_ns) / 1e9 if f.first_ns >= 0 and f.last_ns >= 0 else -1.0
        row = [
            _time(f.first_ns),
            zeek_uid(name, int(f.flow_id)),
            _text(f.client_ip),
            _count(f.client_port),
            _text(f.server_ip),
            _count(f.server_port),
            _text(f.proto) if f.proto in ("tcp", "udp", "icmp") else "unknown_transport",
            UNSET,  # Zeek's service is the application protocol, which we do not identify
            f"{duration:.6f}" if duration >= 0 else UNSET,
            UNSET,  # payload bytes: the flows table counts IP bytes (orig_ip_bytes)
            UNSET,
            _text(f.conn_state),
            UNSET,
            UNSET,
            UNSET,
            _text(f.history),
            _count(f.packets_fwd),
            _count(f.bytes_fwd),
            _count(f.packets_rev),
            _count(f.bytes_rev),
            EMPTY,
            str(int(f.flow_id)),
            _text(f.verdict),
            _text(f.service) if f.service else UNSET,
            _text(f.backend_ip) if f.backend_ip else UNSET,
            _count(f.backend_port) if f.backend_ip else UNSET,
            _text(f.snat_ip) if f.snat_ip else UNSET,
            _count(f.snat_port) if f.snat_ip else UNSET,
            _text(f.path_fwd),
            _text(causes[int(f.flow_id)]) if causes.get(int(f.flow_id)) else UNSET,
        ]
        lines.append("\t".join(row))
    lines.append(f"#close\t{stamp}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 9


def write_jsonl(a: Analysis, directory: Path) -> dict[str, int]:
    """flows.jsonl, drops.jsonl and hops.jsonl: a JSON object a line, columns as in the tables (a
    drop's evidence as a list of objects). Returns the rows written per file."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, df in (("flows", a.bundle.flows), ("drops", a.drops), ("hops", a.bundle.hops)):
        path = directory / f"{name}.jsonl"
        with open(path, "w") as fh:
            for start in range(0, len(df), 100_000):  # a bounded slice at a time: hops can be millions
                text = df.iloc[start : start + 100_000].to_json(orient="records", lines=True, force_ascii=True)
                fh.write(text if text.endswith("\n") else text + "\n")
        out[f"jsonl/{name}.jsonl"] = len(df)
    return out
