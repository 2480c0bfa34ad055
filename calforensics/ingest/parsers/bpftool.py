"""`bpftool map dump` of Calico maps: plain hex, `-j` JSON, and the BTF-typed form.

Byte layouts from felix/bpf-gpl (conntrack_types.h, nat_types.h, routes.h) as in the shared formats
reference section 5.2: addresses are network byte order, everything else little-endian.
Each form is first turned into raw key/value bytes (or typed fields), then decoded by map kind.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct

import pandas as pd

from ...anomalies import AnomalyLog
from ...schema import table_frame
from .calico_bpf import CT_TYPES
from .text import check_json_bounds

HEX_ROW = re.compile(r"^(?:[0-9a-f]{2}\s+)*[0-9a-f]{2}$")
CT_FLAG_NAMES = {
    0x1: "nat-out",
    0x2: "fwd-dsr",
    0x4: "np-fwd",
    0x8: "skip-fib",
    0x40: "ext-local",
    0x80: "via-nat-iface",
    0x100: "B-A",
    0x200: "host-psnat",
    0x400: "svc-self",
    0x800: "np-loop",
    0x1000: "np-remote",
    0x2000: "no-dsr",
    0x4000: "no-redir-peer",
    0x8000: "dscp",
}
ROUTE_FLAG_NAMES = {
    0x1: "in-pool",
    0x2: "nat-out",
    0x4: "workload",
    0x8: "local",
    0x10: "host",
    0x20: "same-subnet",
    0x40: "tunneled",
    0x80: "no-dsr",
    0x100: "blackhole-drop",
    0x200: "blackhole-reject",
    0x400: "vxlan",
    0x800: "skip-ingress-redirect",
}
NAT_FLAG_NAMES = {0x1: "external-local", 0x2: "internal-local", 0x4: "nat-exclude", 0x8: "maglev"}


def map_kind(name: str, key_len: int = 0, value_len: int = 0) -> str:
    """Which Calico map a dump is of, from its name (`cali_v4_ct4-id_12`) or, failing that, sizes."""
    n = name.lower()
    for pat, kind in (
        ("_ct", "conntrack"),
        ("nat_fe", "nat_frontend"),
        ("nat_be", "nat_backend"),
        ("routes", "routes"),
    ):
        if pat in n and "ct_nats" not in n:
            return kind
    if (key_len, value_len) == (16, 88):
        return "conntrack"
    if (key_len, value_len) == (16, 20):
        return "nat_frontend"
    return ""


def looks_like_bpftool(lines: list[str]) -> bool:
    head = "\n".join(lines[:40])
    return bool(re.search(r"^key:", head, re.M)) or ('"key"' in head and '"value"' in head)


def _flags(value: int, names: dict[int, str]) -> str:
    return " ".join(name for bit, name in names.items() if value & bit)


def _ip(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def parse_bpftool_dump(
    lines: list[str], log: AnomalyLog, node: str = "", artifact: str = "", map_name: str = ""
) -> dict[str, pd.DataFrame]:
    """Return {"bpf_conntrack"|"bpf_nat"|"bpf_routes": DataFrame} for one dump file."""
    entries = _entries(lines, log)
    out: dict[str, list[dict]] = {"bpf_conntrack": [], "bpf_nat": [], "bpf_routes": []}
    for no, key, value in entries:
        kind = map_kind(
            map_name, len(key) if isinstance(key, bytes) else 0, len(value) if isinstance(value, bytes) else 0
        )
        try:
            if kind == "conntrack":
                out["bpf_conntrack"].append(dict(_ct(key, value), line=no))
            elif kind == "nat_frontend":
                out["bpf_nat"].append(dict(_nat_fe(key, value), line=no))
            elif kind == "nat_backend":
                out["bpf_nat"].append(dict(_nat_be(key, value), line=no))
            elif kind == "routes":
                out["bpf_routes"].append(dict(_route(key, value), line=no))
            else:
                log.add(no, "unknown_map", f"cannot tell which Calico map '{map_name}' is")
                break
        except (struct.error, ValueError, KeyError, TypeError) as exc:
            log.add(no, "bad_entry", f"{kind}: {exc}")
    return {table: table_frame(rows, table, node, artifact) for table, rows in out.items()}


# ---- forms -> (line, key, value) --------------------------------------------------------------
def _entries(lines: list[str], log: AnomalyLog) -> list[tuple[int, bytes | dict, bytes | dict]]:
    first = next((x.strip() for x in lines if x.strip()), "")
    if first.startswith("[") or first.startswith("{"):
        return _json_entries("\n".join(lines), log)
    return _plain_entries(lines, log)


def _hexbytes(text: str) -> bytes | None:
    """Bytes from space-separated two-digit hex; None if any token is not one byte."""
    try:
        return bytes(int(h, 16) for h in text.split())
    except ValueError:  # a token like "0a00" (a lost space) or "zz": not bytes as bpftool prints them
        return None


def _plain_entries(lines: list[str], log: AnomalyLog) -> list[tuple[int, bytes, bytes]]:
    entries = []
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if not s or s.startswith("Found ") or s.startswith("Error"):
            i += 1
            continue
        if s.startswith("key:"):
            start = i + 1
            one = re.match(r"^key:\s*([0-9a-f ]+?)\s+value:\s*([0-9a-f ]+)$", s)
            if one:
                key, value = _hexbytes(one.group(1)), _hexbytes(one.group(2))
                if key is None or value is None:
                    log.add(start, "bad_hex", s[:200])
                else:
                    entries.append((start, key, value))
                i += 1
                continue
            key_hex = s[4:].strip()
            i += 1
            while i < len(lines) and HEX_ROW.match(lines[i].strip()):
                key_hex += " " + lines[i].strip()
                i += 1
            if i < len(lines) and lines[i].strip().startswith("value"):
                v = lines[i].strip()
                val_hex = v.split(":", 1)[1].strip()
                if "<no entry>" in val_hex or (val_hex and not HEX_ROW.match(val_hex)):
                    log.add(i + 1, "lookup_error", val_hex[:200])
                    i += 1
                    continue
                i += 1
                while i < len(lines) and HEX_ROW.match(lines[i].strip()):
                    val_hex += " " + lines[i].strip()
                    i += 1
                key, value = _hexbytes(key_hex), _hexbytes(val_hex)
                if key is None or value is None:
                    log.add(start, "bad_hex", key_hex[:100] + " / " + val_hex[:100])
                else:
                    entries.append((start, key, value))
            else:
                log.add(start, "missing_value", "key without value")
            continue
        log.add(i + 1, "unparsed_line", s[:200])
        i += 1
    return entries


def _flatten(pairs: list[tuple[str, object]]) -> dict:
    """JSON object hook: anonymous struct/union members ("" keys) are merged into their parent."""
    out: dict = {}
    for k, v in pairs:
        if k == "" and isinstance(v, dict):
            for k2, v2 in v.items():
                out.setdefault(k2, v2)
        else:
            out.setdefault(k, v)
    return out


BARE_HEX = re.compile(r"(?<=[:\[,\s])(0x[0-9a-fA-F]+)(?=[\s,\]}])")


def _json_entries(text: str, log: AnomalyLog) -> list[tuple[int, bytes | dict, bytes | dict]]:
    try:
        check_json_bounds(text)
        data = json.loads(BARE_HEX.sub(r'"\1"', text), object_pairs_hook=_flatten)
    except json.JSONDecodeError as exc:
        log.add(exc.lineno, "bad_json", exc.msg)
        return []
    except ValueError as exc:  # too large or too deep to parse safely
        log.add("document", "json_refused", str(exc)[:200])
        return []
    if isinstance(data, list) and data and isinstance(data[0], dict) and "elements" in data[0]:
        data = [e for m in data for e in m.get("elements", [])]
    entries = []
    for i, e in enumerate(data if isinstance(data, list) else [], 1):
        if not isinstance(e, dict):
            continue
        if "formatted" in e:
            e = e["formatted"]
        key, value = e.get("key"), e.get("value")
        if isinstance(value, dict) and "error" in value:
            log.add(f"element {i}", "lookup_error", str(value["error"]))
            continue
        if isinstance(key, list):
            key = _hexbytes(" ".join(str(x) for x in key))
        if isinstance(value, list):
            value = _hexbytes(" ".join(str(x) for x in value))
        if key is None or value is None:
            log.add(f"element {i}", "bad_entry", "element without key or value")
            continue
        entries.append((i, key, value))
    return entries


def _num(v: object) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)  # type: ignore[arg-type]


def _be32(v: object) -> bytes:
    """A __be32 printed by BTF as a host-order decimal back to its 4 network-order bytes."""
    return struct.pack("<I", _num(v))


# ---- decoders ---------------------------------------------------------------------------------
def _ct(key: bytes | dict, value: bytes | dict) -> dict:
    if isinstance(key, dict):
        key = (
            struct.pack("<I", _num(key["protocol"]))
            + _be32(key["addr_a"])
            + _be32(key["addr_b"])
            + struct.pack("<HH", _num(key["port_a"]), _num(key["port_b"]))
        )
    (proto,) = struct.unpack_from("<I", key, 0)
    a_ip, b_ip = _ip(key[4:8]), _ip(key[8:12])
    a_port, b_port = struct.unpack_from("<HH", key, 12)
    rec: dict = {"source": "bpftool", "proto": proto}
    if isinstance(value, dict):
        etype = _num(value.get("type", 0))
        flags = (
            _num(value.get("flags", 0))
            | _num(value.get("flags2", 0)) << 8
            | _num(value.get("flags3", 0)) << 16
            | _num(value.get("flags4", 0)) << 24
        )
        rec["last_seen_ns"] = _num(value.get("last_seen", -1))
        legs = [value.get("a_to_b") or {}, value.get("b_to_a") or {}]
        leg_vals = [
            (_num(lg.get("packets", -1)), _num(lg.get("bytes", -1)), _num(lg.get("approved", -1))) for lg in legs
        ]
        orig_ip = _ip(_be32(value["orig_ip"])) if "orig_ip" in value else ""
        tun_ip = _ip(_be32(value["tun_ip"])) if "tun_ip" in value else ""
        orig_port = _num(value.get("orig_port", 0))
    else:
        if len(value) < 88:
            raise ValueError(f"conntrack value of {len(value)} bytes; this layout needs 88")
        (rec["last_seen_ns"],) = struct.unpack_from("<Q", value, 8)
        etype = value[16]
        flags = value[17] | value[23] << 8 | value[18] << 16 | value[19] << 24
        leg_vals = []
        for base in (24, 48):
            nbytes, packets, _seq, bits, _ifindex = struct.unpack_from("<QIIII", value, base)
            leg_vals.append((packets, nbytes, (bits >> 4) & 1))
        tun_ip, orig_ip = _ip(value[72:76]), _ip(value[76:80])
        (orig_port,) = struct.unpack_from("<H", value, 80)
    rec["entry_type"] = CT_TYPES.get(etype, str(etype))
    rec["flags"] = _flags(flags, CT_FLAG_NAMES)
    b_first = bool(flags & 0x100)
    rec["src"], rec["sport"], rec["dst"], rec["dport"] = (
        (b_ip, b_port, a_ip, a_port) if b_first else (a_ip, a_port, b_ip, b_port)
    )
    if etype != 1:
        (
            (rec["a2b_packets"], rec["a2b_bytes"], rec["a2b_approved"]),
            (rec["b2a_packets"], rec["b2a_bytes"], rec["b2a_approved"]),
        ) = leg_vals
        if orig_ip not in ("", "0.0.0.0"):
            rec["orig_dst"], rec["orig_dport"] = orig_ip, orig_port
        if tun_ip not in ("", "0.0.0.0"):
            rec["tun_ip"] = tun_ip
    return rec


def _nat_fe(key: bytes | dict, value: bytes | dict) -> dict:
    if isinstance(key, dict):
        key = (
            struct.pack("<I", _num(key["prefixlen"]))
            + _be32(key["addr"])
            + struct.pack("<HB", _num(key["port"]), _num(key["protocol"]))
            + _be32(key.get("saddr", 0))
            + b"\0"
        )
    if isinstance(value, dict):
        value = struct.pack(
            "<5I", *(_num(value.get(k, 0)) for k in ("id", "count", "local", "affinity_timeo", "flags"))
        )
    (prefixlen,) = struct.unpack_from("<I", key, 0)
    port, proto = struct.unpack_from("<HB", key, 8)
    svc_id, count, local, _aff, flags = struct.unpack_from("<5I", value, 0)
    src_len = max(0, prefixlen - 56)
    return {
        "source": "bpftool",
        "frontend_ip": _ip(key[4:8]),
        "frontend_port": port,
        "proto": proto,
        "svc_id": svc_id,
        "count": -1 if count == 0xFFFFFFFF else count,
        "local": local,
        "flags": _flags(flags, NAT_FLAG_NAMES),
        "src_cidr": f"{_ip(key[11:15])}/{src_len}" if src_len else "",
        "ordinal": -2,
    }


def _nat_be(key: bytes | dict, value: bytes | dict) -> dict:
    if isinstance(key, dict):
        key = struct.pack("<II", _num(key["id"]), _num(key["ordinal"]))
    if isinstance(value, dict):
        value = _be32(value["addr"]) + struct.pack("<HH", _num(value["port"]), 0)
    svc_id, ordinal = struct.unpack_from("<II", key, 0)
    (port,) = struct.unpack_from("<H", value, 4)
    return {
        "source": "bpftool",
        "svc_id": svc_id,
        "ordinal": ordinal,
        "backend_ip": _ip(value[0:4]),
        "backend_port": port,
    }


def _route(key: bytes | dict, value: bytes | dict) -> dict:
    if isinstance(key, dict):
        key = struct.pack("<I", _num(key["prefixlen"])) + _be32(key["addr"])
    if isinstance(value, dict):
        second = value.get("next_hop", value.get("ifindex", 0))
        flags_v = _num(value["flags"])
        value = struct.pack("<I", flags_v) + (
            _be32(second) if "next_hop" in value and not flags_v & 0x8 else struct.pack("<I", _num(second))
        )
    (prefixlen,) = struct.unpack_from("<I", key, 0)
    (flags,) = struct.unpack_from("<I", value, 0)
    rec = {"source": "bpftool", "cidr": f"{_ip(key[4:8])}/{prefixlen}", "flags": _flags(flags, ROUTE_FLAG_NAMES)}
    if flags & 0x4 and flags & 0x8:  # local workload: second word is the ifindex
        rec["ifindex"] = struct.unpack_from("<I", value, 4)[0]
    elif flags & 0x4:
        rec["next_hop"] = _ip(value[4:8])
    return rec


def combine_nat(df: pd.DataFrame) -> pd.DataFrame:
    """Join bpftool frontend rows (ordinal -2) with backend rows of the same node and service id."""
    if df.empty or not (df["ordinal"] == -2).any():
        return df
    fe = df[df["ordinal"] == -2]
    be = df[(df["source"] == "bpftool") & (df["ordinal"] >= 0) & (df["frontend_ip"] == "")]
    rest = df.drop(index=fe.index.union(be.index))
    merged = fe.drop(columns=["ordinal", "backend_ip", "backend_port"]).merge(
        be[["node", "svc_id", "ordinal", "backend_ip", "backend_port"]], on=["node", "svc_id"], how="left"
    )
    merged["ordinal"] = merged["ordinal"].fillna(-1).astype("int64")
    merged["backend_port"] = merged["backend_port"].fillna(-1).astype("int64")
    merged["backend_ip"] = merged["backend_ip"].fillna("")
    orphans = be[~be["svc_id"].isin(fe["svc_id"])]
    return pd.concat([rest, merged[df.columns], orphans], ignore_index=True)
