"""The packets table as the decoders write it: the names of what can be found (link types, encapsulations,
anomaly kinds) and the output columns, preallocated with their "absent" sentinels. Both decoders (the
compiled one in _fastdecode.py and the vectorised reference in packets_reference.py) fill these."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...runtime.memory import release_freed_memory

VXLAN_PORTS = (4789, 8472)
GENEVE_PORT = 6081
GRE_UDP_PORT = 4754  # GRE-in-UDP (RFC 8086)
VXLAN_GPE_PORT = 4790
MAX_TUNNEL_DEPTH = 4
MAX_MPLS_LABELS = 16  # a label stack deeper than this is taken for damage
PAYLOAD_HASH_BYTES = 16

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
ETH_TEB, ETH_ERSPAN2, ETH_ERSPAN3, ETH_CISCO_METADATA = 0x6558, 0x88BE, 0x22EB, 0x8909
ETH_MPLS, ETH_MPLS_MULTICAST, ETH_PPP = 0x8847, 0x8848, 0x880B
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057

LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_SLL, LINKTYPE_NFLOG, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_SLL2 = 113, 239, 228, 229, 276
RAW_LINKTYPES = (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6)

ENCAP_KINDS = ["none", "ipip", "vxlan", "gre", "geneve", "wireguard"]  # wireguard: set by the WireGuard match
ENC_NONE, ENC_IPIP, ENC_VXLAN, ENC_GRE, ENC_GENEVE = range(5)

# Decoder anomaly kinds; index 0 means "decoded without complaint".
STATUS_KINDS = [
    "ok",
    "unsupported_linktype",
    "truncated_link_header",
    "truncated_ip_header",
    "bad_ip_version",
    "bad_ip_header_length",
    "bad_ip_total_length",
    "truncated_ipv6_extension",
    "truncated_tcp_header",
    "bad_tcp_data_offset",
    "truncated_udp_header",
    "bad_udp_length",
    "truncated_icmp_header",
    "truncated_tunnel_header",
    "bad_vxlan_flags",
    "bad_geneve_version",
    "tunnel_depth_exceeded",
    "linktype_version_mismatch",
    "caplen_exceeds_wirelen",
]
S = {name: i for i, name in enumerate(STATUS_KINDS)}
ICMP4_ERRORS = (3, 4, 5, 11, 12)
ICMP6_ERRORS = (1, 2, 3, 4)
IPV6_EXT_SIMPLE = (0, 43, 60, 135, 139, 140)  # hop-by-hop, routing, dest opts, mobility, HIP, shim6


@dataclass
class AddressColumn:
    """An address column while decoding: IPv4 as uint32, IPv6 rows as 16-byte chunks (last write wins)."""

    n: int
    version: np.ndarray = field(init=False)
    v4: np.ndarray = field(init=False)
    v6_rows: list[np.ndarray] = field(default_factory=list)
    v6_bytes: list[np.ndarray] = field(default_factory=list)
    v6_data: np.ndarray | None = None  # the capture bytes, when v4 holds IPv6 offsets (compiled decoder)
    v6_base: np.ndarray | None = None  # frame starts: those offsets are relative to them

    def __post_init__(self) -> None:
        self.version = np.zeros(self.n, dtype=np.int8)
        self.v4 = np.zeros(self.n, dtype=np.uint32)

    def set4(self, rows: np.ndarray, vals: np.ndarray) -> None:
        self.version[rows] = 4
        self.v4[rows] = vals

    def set6(self, rows: np.ndarray, d: np.ndarray, start: np.ndarray) -> None:
        self.version[rows] = 6
        self.v6_rows.append(rows)
        self.v6_bytes.append(d[start[:, None] + np.arange(16)])

    def use_offsets(self, version: np.ndarray, addr: np.ndarray, data: np.ndarray, frame_starts: np.ndarray) -> None:
        """Adopt columns filled by the compiled decoder: ``addr`` holds the IPv4 address where version
        is 4 and the offset of the IPv6 address bytes (from its frame start) where it is 6 (gathered when the
        column is built, not held from decode until then)."""
        self.n, self.version, self.v4 = len(version), version, addr
        self.v6_rows, self.v6_bytes, self.v6_data, self.v6_base = [], [], data, frame_starts

    def _factorize_ipv4(self) -> tuple[np.ndarray, np.ndarray]:
        """Codes (-1 where the row is not IPv4) and sorted distinct IPv4 values, remapped in place."""
        from ._fastdecode import available, factorize_ipv4, remap_codes

        if available():
            codes = np.empty(self.n, dtype=np.int32)
            uniq = factorize_ipv4(self.v4, self.version, codes)
        else:
            if self.v4.dtype != np.int64:
                self.v4 = self.v4.astype(np.int64)
            self.v4[self.version != 4] = -1  # no IPv4 value is negative: -1 marks the other rows
            codes, uniq = pd.factorize(self.v4, size_hint=1024)
            if len(uniq) and uniq.min() == -1:
                codes[codes == np.flatnonzero(uniq == -1)[0]] = -1
        order = np.argsort(uniq, kind="stable")
        if len(uniq) and uniq[order[0]] == -1:
            order = order[1:]
        # rank of each first-seen code in sorted order; the extra last slot keeps -1 as -1
        rank = np.full(len(uniq) + 1, -1, dtype=codes.dtype)
        rank[order] = np.arange(len(order), dtype=codes.dtype)
        if available():
            remap_codes(codes, rank)
        else:
            codes = rank[codes]
        return codes, uniq[order]

    def column(self) -> pd.Categorical:
        """The categorical, then the decode arrays released."""
        cat = self.categorical()
        self.release()
        release_freed_memory()
        return cat

    def release(self) -> None:
        """Drop the decode arrays once the column is built (``version`` stays: it is ip_version)."""
        self.v4 = np.zeros(0, dtype=np.uint32)
        self.v6_rows, self.v6_bytes, self.v6_data, self.v6_base = [], [], None, None

    def categorical(self) -> pd.Categorical:
        """The column as a categorical of address strings: IPv4 first (sorted), then IPv6 (sorted).

        Built to keep the peak low: IPv6 bytes are gathered only now (for IPv6 rows only), and the
        IPv4 codes come from one pass over the whole column (-1 where the row is not IPv4), so no
        fancy-indexed copies of a million rows are made.
        """
        is6 = self.version == 6
        if is6.any() and self.v6_data is not None:  # compiled decoder: v4 holds the IPv6 offsets
            rows = np.flatnonzero(is6)
            windows = np.lib.stride_tricks.sliding_window_view(self.v6_data, 16)
            at = self.v6_base[rows] + self.v4[rows]
            self.v6_rows, self.v6_bytes, self.v6_data, self.v6_base = [rows], [windows[at]], None, None
        codes, uniq = self._factorize_ipv4()
        cats = [str(ipaddress.IPv4Address(int(u))) for u in uniq]
        if is6.any():
            if len(self.v6_rows) == 1:  # one write (always so from the compiled decoder): rows are unique
                rows, raw = self.v6_rows[0], self.v6_bytes[0]
                live = is6[rows]  # an inner IPv4 header may have overwritten the row since
                if not live.all():
                    rows, raw = rows[live], raw[live]
                raw = np.ascontiguousarray(raw)
            else:
                rows = np.concatenate(self.v6_rows)
                raw = np.concatenate(self.v6_bytes)
                # keep the last write per row (deeper layers overwrite outer ones)
                order = np.arange(len(rows))[::-1]
                _, first = np.unique(rows[order], return_index=True)
                keep = order[first]
                rows, raw = rows[keep], raw[keep]
                live = is6[rows]
                rows, raw = rows[live], np.ascontiguousarray(raw[live])
            uniq6, inv = np.unique(raw.view("V16").ravel(), return_inverse=True)
            codes[rows] = inv + len(cats)
            cats.extend(str(ipaddress.IPv6Address(bytes(u))) for u in uniq6)
        return pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype=object))


class PacketColumns:
    """Output columns, preallocated with their 'absent' sentinels."""

    def __init__(self, n: int, preallocate: bool = True) -> None:
        # the compiled decoder brings its own arrays: allocating these too would double the peak memory
        size = n if preallocate else 0

        def full(dtype: str, value: int = -1) -> np.ndarray:
            return np.full(size, value, dtype=dtype)

        self.n = n
        self.status = np.zeros(n, dtype=np.int8)
        self.pkttype = full("int8")
        self.link_ifindex = full("int32")
        self.eth_type = full("int32")
        self.vlan = full("int32")
        self.outer_src, self.outer_dst = AddressColumn(size), AddressColumn(size)
        self.outer_proto = full("int16")
        self.outer_ip_id = full("int32")
        self.outer_ttl = full("int16")
        self.outer_ip_len = full("int32")
        self.encap = np.zeros(size, dtype=np.int8)
        self.encap_depth = np.zeros(size, dtype=np.int8)
        self.vni = full("int64")
        self.src, self.dst = AddressColumn(size), AddressColumn(size)
        self.proto = full("int16")
        self.ip_id = full("int64")
        self.ttl = full("int16")
        self.ip_len = full("int32")
        self.dont_fragment = np.zeros(size, dtype=bool)
        self.more_fragments = np.zeros(size, dtype=bool)
        self.frag_offset = full("int32")
        self.sport = full("int32")
        self.dport = full("int32")
        self.tcp_flags = full("int16")
        self.seq = full("int64")
        self.ack = full("int64")
        self.tcp_window = full("int32")
        self.tcp_mss = full("int32")
        self.payload_len = full("int32")
        self.payload_off = full("int64")
        self.icmp_type = full("int16")
        self.icmp_code = full("int16")
        self.icmp_echo_seq = full("int32")
        self.icmp_mtu = full("int32")
        self.q_src, self.q_dst = AddressColumn(size), AddressColumn(size)
        self.q_proto = full("int16")
        self.q_ip_id = full("int32")
        self.q_sport = full("int32")
        self.q_dport = full("int32")

    def fail(self, rows: np.ndarray, kind: str) -> None:
        """Mark rows with an anomaly kind unless an earlier layer already did."""
        if len(rows):
            keep = rows[self.status[rows] == 0]
            self.status[keep] = S[kind]


FINGERPRINT_FIELDS = (
    *("proto", "ip_id", "seq", "ack", "tcp_flags", "payload_len"),
    *("icmp_type", "icmp_code", "icmp_echo_seq", "frag_offset"),
)  # hashed into the fingerprint, in this order (never addresses, ports, TTL, checksums)


def fingerprint_fields(c: PacketColumns) -> tuple[np.ndarray, ...]:
    """The fields hashed into the fingerprint, in order; the compiled kernel hashes them in this
    order too (tests/test_fastdecode.py holds the two equal)."""
    return tuple(getattr(c, name) for name in FINGERPRINT_FIELDS)
