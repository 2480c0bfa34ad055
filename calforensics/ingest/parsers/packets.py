"""Vectorised packet decoder: link layer, IPv4/IPv6, TCP/UDP/ICMP, tunnels, into columns.

Every step works on arrays of rows (all frames at one layer at once), Zeek-style: each layer
checks its length first, records a named anomaly on damage and stops there, otherwise hands the
inner bytes to the next layer chosen from a dispatch table (UDP 4789 -> VXLAN -> Ethernet -> IP).
Nesting depth is capped. The result keeps the outer L3, the (first) encapsulation with its VNI,
and the innermost L3/L4, plus the header quoted inside ICMP errors and a NAT-invariant fingerprint.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...anomalies import AnomalyLog
from ...runtime.memory import release_freed_memory
from .pcap import FrameIndex, read_frames

VXLAN_PORTS = (4789, 8472)
GENEVE_PORT = 6081
MAX_TUNNEL_DEPTH = 4
PAYLOAD_HASH_BYTES = 16

ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100
ETH_TEB, ETH_ERSPAN2, ETH_ERSPAN3, ETH_CISCO_METADATA = 0x6558, 0x88BE, 0x22EB, 0x8909

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


def _u16(d: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (d[i].astype(np.int64) << 8) | d[i + 1]


def _u32(d: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (
        (d[i].astype(np.int64) << 24) | (d[i + 1].astype(np.int64) << 16) | (d[i + 2].astype(np.int64) << 8) | d[i + 3]
    )


@dataclass
class _AddrSlot:
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


class _Columns:
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
        self.outer_src, self.outer_dst = _AddrSlot(size), _AddrSlot(size)
        self.outer_proto = full("int16")
        self.outer_ip_id = full("int32")
        self.outer_ttl = full("int16")
        self.outer_ip_len = full("int32")
        self.encap = np.zeros(size, dtype=np.int8)
        self.encap_depth = np.zeros(size, dtype=np.int8)
        self.vni = full("int64")
        self.src, self.dst = _AddrSlot(size), _AddrSlot(size)
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
        self.q_src, self.q_dst = _AddrSlot(size), _AddrSlot(size)
        self.q_proto = full("int16")
        self.q_ip_id = full("int32")
        self.q_sport = full("int32")
        self.q_dport = full("int32")

    def fail(self, rows: np.ndarray, kind: str) -> None:
        """Mark rows with an anomaly kind unless an earlier layer already did."""
        if len(rows):
            keep = rows[self.status[rows] == 0]
            self.status[keep] = S[kind]


class PacketDecoder:
    """Decodes all frames of one capture file into packet columns."""

    def __init__(
        self,
        frames: FrameIndex,
        vxlan_ports: tuple[int, ...] = VXLAN_PORTS,
        max_depth: int = MAX_TUNNEL_DEPTH,
        compiled: bool | None = None,
    ) -> None:
        from ._fastdecode import available

        self.f = frames
        self.d = frames.data
        self.vxlan_ports = np.asarray(vxlan_ports, dtype=np.int64)
        self.max_depth = max_depth
        # the compiled decoder when numba is there; this vectorised one is the reference and the fallback
        self.compiled = available() if compiled is None else compiled
        self.c = _Columns(len(frames), preallocate=not self.compiled)

    # ---- link layer ---------------------------------------------------------------------
    def decode(self) -> dict[str, object]:
        f, c = self.f, self.c
        start = f.offsets
        c.fail(np.flatnonzero(f.caplens > f.wirelens), "caplen_exceeds_wirelen")
        linktypes = np.asarray([i.linktype for i in f.interfaces] or [0], dtype=np.int32)
        lt = linktypes[f.iface] if len(f) else np.zeros(0, dtype=np.int32)
        if self.compiled and len(f):
            # the kernels take start and length: an int64 array of frame ends would cost 8 bytes a packet
            nflog = np.flatnonzero(lt == LINKTYPE_NFLOG)  # rows the kernel leaves to the numpy decoder
            self._decode_compiled(start, f.caplens, lt)
            if len(nflog):
                self._nflog(nflog, start[nflog], start[nflog] + f.caplens[nflog])
            self._fingerprint_compiled()
            release_freed_memory()
        else:
            end = start + f.caplens
            for linktype in np.unique(lt):
                rows = np.flatnonzero(lt == linktype)
                self._link(int(linktype), rows, start[rows], end[rows])
            self._fingerprint(end)
        return self._finish()

    def _decode_compiled(self, start: np.ndarray, caplens: np.ndarray, lt: np.ndarray) -> None:
        """One compiled pass per packet (parsers/_fastdecode.py), into the same columns."""
        from ._fastdecode import decode_kernel

        c, n = self.c, self.c.n
        # uninitialised: the kernel writes every cell (one pass in cache instead of a fill pass per array)
        i8 = np.empty((3, n), dtype=np.int8)
        i16 = np.empty((8, n), dtype=np.int16)
        i32 = np.empty((17, n), dtype=np.int32)
        i64 = np.empty((4, n), dtype=np.int64)
        c.payload_off = np.empty(n, dtype=np.int64)
        flags = np.empty((2, n), dtype=bool)
        # one array per address slot (not one block), so each is freed as soon as its column is built
        ver = tuple(np.empty(n, dtype=np.int8) for _ in range(6))
        addr = tuple(np.empty(n, dtype=np.uint32) for _ in range(6))
        decode_kernel(
            self.d,
            start,
            caplens,
            lt,
            self.vxlan_ports,
            self.max_depth,
            c.status,
            i8,
            i16,
            i32,
            i64,
            flags,
            ver,
            addr,
            c.payload_off,
        )
        c.pkttype, c.encap, c.encap_depth = i8[0], i8[1], i8[2]
        (c.outer_proto, c.outer_ttl, c.proto, c.ttl, c.tcp_flags, c.icmp_type, c.q_proto, c.icmp_code) = i16
        (
            c.link_ifindex,
            c.eth_type,
            c.vlan,
            c.outer_ip_len,
            c.ip_len,
            c.frag_offset,
            c.sport,
            c.dport,
            c.tcp_window,
            c.tcp_mss,
            c.payload_len,
            c.icmp_echo_seq,
            c.q_sport,
            c.q_dport,
            c.icmp_mtu,
            c.outer_ip_id,
            c.q_ip_id,
        ) = i32
        c.vni, c.ip_id, c.seq, c.ack = i64
        c.dont_fragment, c.more_fragments = flags
        for k, slot in enumerate((c.outer_src, c.outer_dst, c.src, c.dst, c.q_src, c.q_dst)):
            slot.use_offsets(ver[k], addr[k], self.d, start)

    def _link(self, linktype: int, rows: np.ndarray, off: np.ndarray, end: np.ndarray) -> None:
        d, c = self.d, self.c
        if linktype == LINKTYPE_ETHERNET:
            self._ethernet(rows, off, end, depth=0)
        elif linktype == LINKTYPE_SLL:
            ok = off + 16 <= end
            c.fail(rows[~ok], "truncated_link_header")
            rows, off, end = rows[ok], off[ok], end[ok]
            c.pkttype[rows] = _u16(d, off)
            self._ethertype_chain(rows, off, end, depth=0)
        elif linktype == LINKTYPE_SLL2:
            ok = off + 20 <= end
            c.fail(rows[~ok], "truncated_link_header")
            rows, off, end = rows[ok], off[ok], end[ok]
            c.link_ifindex[rows] = _u32(d, off + 4)
            c.pkttype[rows] = d[off + 10]
            self._ethertype_chain(rows, off, end, depth=0, et_at=0, skip=20)
        elif linktype in RAW_LINKTYPES:
            ok = off + 1 <= end
            c.fail(rows[~ok], "truncated_link_header")
            rows, off, end = rows[ok], off[ok], end[ok]
            ver = d[off] >> 4
            et = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, -1))
            if linktype == LINKTYPE_IPV4:
                c.fail(rows[ver == 6], "linktype_version_mismatch")
            elif linktype == LINKTYPE_IPV6:
                c.fail(rows[ver == 4], "linktype_version_mismatch")
                et = np.where(ver == 6, et, -1)
            c.fail(rows[et < 0], "bad_ip_version")
            self._ip(rows, off, end, et, depth=0)
        elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            ok = off + 4 <= end
            c.fail(rows[~ok], "truncated_link_header")
            rows, off, end = rows[ok], off[ok], end[ok]
            be = _u32(d, off)
            le = d[off].astype(np.int64) | (d[off + 1].astype(np.int64) << 8) | (d[off + 2].astype(np.int64) << 16)
            fam = be if linktype == LINKTYPE_LOOP else np.where(be > 0xFFFF, le, be)
            et = np.where(fam == 2, ETH_IPV4, np.where(np.isin(fam, (10, 24, 28, 30)), ETH_IPV6, -1))
            c.eth_type[rows] = et
            self._ip(rows, off + 4, end, et, depth=0)
        elif linktype == LINKTYPE_NFLOG:
            self._nflog(rows, off, end)
        else:
            c.fail(rows, "unsupported_linktype")

    def _nflog(self, rows: np.ndarray, off: np.ndarray, end: np.ndarray) -> None:
        """NFLOG frames carry TLVs; rare enough to walk per frame, then decode in bulk."""
        d = self.d
        keep_rows, keep_off, keep_end, keep_et = [], [], [], []
        for r, o, e in zip(rows.tolist(), off.tolist(), end.tolist(), strict=True):
            if o + 4 > e:
                self.c.fail(np.asarray([r]), "truncated_link_header")
                continue
            fam = int(d[o])
            p = o + 4
            while p + 4 <= e:
                tlv_len = int(d[p]) | (int(d[p + 1]) << 8)
                tlv_type = int(d[p + 2]) | (int(d[p + 3]) << 8)
                if tlv_len < 4:
                    break
                if tlv_type == 9:  # NFULA_PAYLOAD
                    keep_rows.append(r)
                    keep_off.append(p + 4)
                    keep_end.append(min(e, p + tlv_len))
                    keep_et.append(ETH_IPV4 if fam == 2 else ETH_IPV6 if fam == 10 else -1)
                    break
                p += (tlv_len + 3) & ~3
        if keep_rows:
            self._ip(
                np.asarray(keep_rows),
                np.asarray(keep_off, dtype=np.int64),
                np.asarray(keep_end, dtype=np.int64),
                np.asarray(keep_et, dtype=np.int64),
                depth=0,
            )

    def _ethernet(self, rows: np.ndarray, off: np.ndarray, end: np.ndarray, depth: int) -> None:
        ok = off + 14 <= end
        self.c.fail(rows[~ok], "truncated_link_header" if depth == 0 else "truncated_tunnel_header")
        self._ethertype_chain(rows[ok], off[ok], end[ok], depth, et_at=12, skip=14)

    def _ethertype_chain(self, rows, off, end, depth: int, et_at: int = 14, skip: int = 16) -> None:
        """Read the ethertype at ``off+et_at``, payload at ``off+skip``, then peel VLAN tags."""
        d, c = self.d, self.c
        et = _u16(d, off + et_at)
        off = off + skip
        for _ in range(3):
            tagged = np.isin(et, (ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD)) & (off + 4 <= end)
            if not tagged.any():
                break
            t = np.flatnonzero(tagged)
            if depth == 0:
                first = t[c.vlan[rows[t]] < 0]
                c.vlan[rows[first]] = _u16(d, off[first]) & 0x0FFF
            et[t] = _u16(d, off[t] + 2)
            off[t] += 4
        if depth == 0:
            c.eth_type[rows] = et
        self._ip(rows, off, end, et, depth)

    # ---- IP -----------------------------------------------------------------------------
    def _ip(self, rows, off, end, et, depth: int) -> None:
        v4 = et == ETH_IPV4
        v6 = et == ETH_IPV6
        if v4.any():
            self._ipv4(rows[v4], off[v4], end[v4], depth)
        if v6.any():
            self._ipv6(rows[v6], off[v6], end[v6], depth)

    def _ipv4(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        ok = off + 20 <= end
        c.fail(rows[~ok], "truncated_ip_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        b0 = d[off]
        ok = (b0 >> 4) == 4
        c.fail(rows[~ok], "bad_ip_version")
        rows, off, end, b0 = rows[ok], off[ok], end[ok], b0[ok]
        ihl = (b0 & 0x0F).astype(np.int64) * 4
        ok = (ihl >= 20) & (off + ihl <= end)
        c.fail(rows[~ok], "bad_ip_header_length")
        rows, off, end, ihl = rows[ok], off[ok], end[ok], ihl[ok]
        total = _u16(d, off + 2)
        bad_total = (total != 0) & (total < ihl)
        c.fail(rows[bad_total], "bad_ip_total_length")
        # total length 0 is TSO/BIG TCP: the real length is what was captured
        l3end = np.where((total == 0) | bad_total, end, np.minimum(end, off + total))
        ip_len = np.where(total == 0, end - off, total)
        fragw = _u16(d, off + 6)
        proto = d[off + 9].astype(np.int16)
        ip_id = _u16(d, off + 4)
        ttl = d[off + 8].astype(np.int16)
        src, dst = _u32(d, off + 12), _u32(d, off + 16)
        if depth == 0:
            c.outer_src.set4(rows, src)
            c.outer_dst.set4(rows, dst)
            c.outer_proto[rows], c.outer_ip_id[rows], c.outer_ttl[rows] = proto, ip_id, ttl
            c.outer_ip_len[rows] = ip_len
        c.src.set4(rows, src)
        c.dst.set4(rows, dst)
        c.proto[rows], c.ip_id[rows], c.ttl[rows], c.ip_len[rows] = proto, ip_id, ttl, ip_len
        c.dont_fragment[rows] = (fragw & 0x4000) != 0
        c.more_fragments[rows] = (fragw & 0x2000) != 0
        frag_off = (fragw & 0x1FFF) * 8
        c.frag_offset[rows] = frag_off
        first = frag_off == 0
        self._l4(rows[first], off[first] + ihl[first], l3end[first], proto[first], depth, ipver=4)
        rest = rows[~first]
        c.payload_len[rest] = l3end[~first] - off[~first] - ihl[~first]
        c.payload_off[rest] = off[~first] + ihl[~first]

    def _ipv6(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        ok = off + 40 <= end
        c.fail(rows[~ok], "truncated_ip_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        ok = (d[off] >> 4) == 6
        c.fail(rows[~ok], "bad_ip_version")
        rows, off, end = rows[ok], off[ok], end[ok]
        plen = _u16(d, off + 4)
        l3end = np.where(plen == 0, end, np.minimum(end, off + 40 + plen))
        nh = d[off + 6].astype(np.int64)
        hlim = d[off + 7].astype(np.int16)
        if depth == 0:
            c.outer_src.set6(rows, d, off + 8)
            c.outer_dst.set6(rows, d, off + 24)
            c.outer_proto[rows], c.outer_ttl[rows] = nh, hlim
            c.outer_ip_len[rows] = np.where(plen == 0, end - off, plen + 40)
        c.src.set6(rows, d, off + 8)
        c.dst.set6(rows, d, off + 24)
        c.ttl[rows] = hlim
        c.ip_len[rows] = np.where(plen == 0, end - off, plen + 40)
        c.ip_id[rows] = -1
        c.frag_offset[rows] = 0
        c.more_fragments[rows] = False
        c.dont_fragment[rows] = False
        cur = off + 40
        alive = np.ones(len(rows), dtype=bool)
        for _ in range(8):
            simple = alive & np.isin(nh, IPV6_EXT_SIMPLE)
            frag = alive & (nh == 44)
            ah = alive & (nh == 51)
            ext = simple | frag | ah
            if not ext.any():
                break
            short = ext & (cur + 8 > l3end)
            c.fail(rows[short], "truncated_ipv6_extension")
            alive &= ~short
            ext &= ~short
            i = np.flatnonzero(ext)
            ci = cur[i]
            new_nh = d[ci].astype(np.int64)
            hlen = np.where(
                frag[i], 8, np.where(ah[i], (d[ci + 1].astype(np.int64) + 2) * 4, (d[ci + 1].astype(np.int64) + 1) * 8)
            )
            fi = i[frag[i]]
            if len(fi):
                fo = _u16(d, cur[fi] + 2)
                c.frag_offset[rows[fi]] = (fo >> 3) * 8
                c.more_fragments[rows[fi]] = (fo & 1) != 0
                c.ip_id[rows[fi]] = _u32(d, cur[fi] + 4)
            nh[i] = new_nh
            cur[i] = ci + hlen
        over = alive & (cur > l3end)
        c.fail(rows[over], "truncated_ipv6_extension")
        alive &= ~over
        rows, cur, l3end, nh = rows[alive], cur[alive], l3end[alive], nh[alive]
        c.proto[rows] = nh
        first = c.frag_offset[rows] == 0
        self._l4(rows[first], cur[first], l3end[first], nh[first].astype(np.int16), depth, ipver=6)
        rest = rows[~first]
        c.payload_len[rest] = l3end[~first] - cur[~first]
        c.payload_off[rest] = cur[~first]

    # ---- L4 -----------------------------------------------------------------------------
    def _l4(self, rows, off, l3end, proto, depth: int, ipver: int) -> None:
        c = self.c
        # any L4 fields from an outer layer are replaced by this layer's
        for col in (
            c.sport,
            c.dport,
            c.tcp_flags,
            c.seq,
            c.ack,
            c.tcp_window,
            c.tcp_mss,
            c.icmp_type,
            c.icmp_code,
            c.icmp_echo_seq,
            c.icmp_mtu,
        ):
            col[rows] = -1
        c.payload_len[rows] = l3end - off
        c.payload_off[rows] = off
        for p, fn in ((6, self._tcp), (17, self._udp), (1, self._icmp4), (58, self._icmp6)):
            m = proto == p
            if m.any():
                fn(rows[m], off[m], l3end[m], depth)
        tun = (proto == 4) | (proto == 41)
        if tun.any():
            self._tunnel(
                rows[tun],
                off[tun],
                l3end[tun],
                ENC_IPIP,
                depth,
                np.where(proto[tun] == 4, ETH_IPV4, ETH_IPV6),
                vni=None,
            )
        gre = proto == 47
        if gre.any():
            self._gre(rows[gre], off[gre], l3end[gre], depth)

    def _tcp(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        self._partial_ports(rows, off, end)
        ok = off + 20 <= end
        c.fail(rows[~ok], "truncated_tcp_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        doff = (d[off + 12] >> 4).astype(np.int64) * 4
        c.sport[rows], c.dport[rows] = _u16(d, off), _u16(d, off + 2)
        c.seq[rows], c.ack[rows] = _u32(d, off + 4), _u32(d, off + 8)
        c.tcp_flags[rows] = d[off + 13] | ((d[off + 12] & 1).astype(np.int16) << 8)
        c.tcp_window[rows] = _u16(d, off + 14)
        ok = (doff >= 20) & (off + doff <= end)
        c.fail(rows[~ok], "bad_tcp_data_offset")
        c.payload_len[rows] = np.where(ok, end - off - doff, 0)
        c.payload_off[rows] = np.where(ok, off + doff, end)
        syn = ok & ((d[off + 13] & 0x02) != 0) & (doff > 20)
        for r, o, dl in zip(rows[syn].tolist(), off[syn].tolist(), doff[syn].tolist(), strict=True):
            c.tcp_mss[r] = _mss_option(d, o + 20, o + dl)

    def _udp(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        self._partial_ports(rows, off, end)
        ok = off + 8 <= end
        c.fail(rows[~ok], "truncated_udp_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        sport, dport = _u16(d, off), _u16(d, off + 2)
        c.sport[rows], c.dport[rows] = sport, dport
        ulen = _u16(d, off + 4)
        bad = (ulen != 0) & (ulen < 8)
        c.fail(rows[bad], "bad_udp_length")
        # UDP length 0 happens under BIG TCP/GSO: the payload is what follows
        c.payload_len[rows] = np.where((ulen == 0) | bad, end - off - 8, ulen - 8)
        c.payload_off[rows] = off + 8
        vx = np.isin(dport, self.vxlan_ports) | (np.isin(sport, self.vxlan_ports) & ~(dport == GENEVE_PORT))
        if vx.any():
            self._vxlan(rows[vx], off[vx] + 8, end[vx], depth)
        gv = (dport == GENEVE_PORT) & ~vx
        if gv.any():
            self._geneve(rows[gv], off[gv] + 8, end[gv], depth)

    def _partial_ports(self, rows, off, end) -> None:
        """Ports sit in the first 4 bytes: keep them even when the rest of the header is cut off."""
        ok = off + 4 <= end
        self.c.sport[rows[ok]] = _u16(self.d, off[ok])
        self.c.dport[rows[ok]] = _u16(self.d, off[ok] + 2)

    def _icmp4(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        ok = off + 8 <= end
        c.fail(rows[~ok], "truncated_icmp_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        t = d[off].astype(np.int16)
        code = d[off + 1].astype(np.int16)
        c.icmp_type[rows], c.icmp_code[rows] = t, code
        c.payload_len[rows] = end - off - 8
        c.payload_off[rows] = off + 8
        echo = np.isin(t, (0, 8, 13, 14))
        c.icmp_echo_seq[rows[echo]] = _u16(d, off[echo] + 6)
        frag_needed = (t == 3) & (code == 4)
        c.icmp_mtu[rows[frag_needed]] = _u16(d, off[frag_needed] + 6)
        err = np.isin(t, ICMP4_ERRORS)
        self._quoted(rows[err], off[err] + 8, end[err])

    def _icmp6(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        ok = off + 8 <= end
        c.fail(rows[~ok], "truncated_icmp_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        t = d[off].astype(np.int16)
        c.icmp_type[rows], c.icmp_code[rows] = t, d[off + 1]
        c.payload_len[rows] = end - off - 8
        c.payload_off[rows] = off + 8
        echo = np.isin(t, (128, 129))
        c.icmp_echo_seq[rows[echo]] = _u16(d, off[echo] + 6)
        ptb = t == 2
        c.icmp_mtu[rows[ptb]] = _u32(d, off[ptb] + 4)
        err = np.isin(t, ICMP6_ERRORS)
        self._quoted(rows[err], off[err] + 8, end[err])

    def _quoted(self, rows, off, end) -> None:
        """The IP header (and first 8 bytes of L4) quoted inside an ICMP error."""
        d, c = self.d, self.c
        has = off + 1 <= end
        rows, off, end = rows[has], off[has], end[has]
        ver = d[off] >> 4
        q4 = (ver == 4) & (off + 20 <= end)
        r4, o4, e4 = rows[q4], off[q4], end[q4]
        ihl = (d[o4] & 0x0F).astype(np.int64) * 4
        c.q_src.set4(r4, _u32(d, o4 + 12))
        c.q_dst.set4(r4, _u32(d, o4 + 16))
        c.q_proto[r4] = d[o4 + 9]
        c.q_ip_id[r4] = _u16(d, o4 + 4)
        self._quoted_ports(r4, o4 + ihl, e4, d[o4 + 9])
        q6 = (ver == 6) & (off + 40 <= end)
        r6, o6, e6 = rows[q6], off[q6], end[q6]
        c.q_src.set6(r6, d, o6 + 8)
        c.q_dst.set6(r6, d, o6 + 24)
        c.q_proto[r6] = d[o6 + 6]
        self._quoted_ports(r6, o6 + 40, e6, d[o6 + 6])

    def _quoted_ports(self, rows, off, end, proto) -> None:
        d, c = self.d, self.c
        ok = np.isin(proto, (6, 17, 132)) & (off + 4 <= end)
        c.q_sport[rows[ok]] = _u16(d, off[ok])
        c.q_dport[rows[ok]] = _u16(d, off[ok] + 2)

    # ---- tunnels ------------------------------------------------------------------------
    def _enter_tunnel(self, rows, kind: int, depth: int, vni) -> np.ndarray:
        """Record the encapsulation; return the rows allowed one level deeper."""
        c = self.c
        first = c.encap[rows] == ENC_NONE
        c.encap[rows[first]] = kind
        if vni is not None:
            c.vni[rows[first]] = vni[first]
        c.encap_depth[rows] = depth + 1
        too_deep = depth + 1 > self.max_depth
        if too_deep:
            c.fail(rows, "tunnel_depth_exceeded")
        return np.zeros(len(rows), dtype=bool) if too_deep else np.ones(len(rows), dtype=bool)

    def _tunnel(self, rows, off, end, kind: int, depth: int, et, vni) -> None:
        go = self._enter_tunnel(rows, kind, depth, vni)
        self._ip(rows[go], off[go], end[go], np.asarray(et)[go], depth + 1)

    def _vxlan(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        ok = off + 8 <= end
        c.fail(rows[~ok], "truncated_tunnel_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        ok = (d[off] & 0x08) != 0
        c.fail(rows[~ok], "bad_vxlan_flags")
        rows, off, end = rows[ok], off[ok], end[ok]
        vni = _u32(d, off + 4) >> 8
        go = self._enter_tunnel(rows, ENC_VXLAN, depth, vni)
        self._ethernet(rows[go], off[go] + 8, end[go], depth + 1)

    def _geneve(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        ok = off + 8 <= end
        c.fail(rows[~ok], "truncated_tunnel_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        ok = (d[off] >> 6) == 0
        c.fail(rows[~ok], "bad_geneve_version")
        rows, off, end = rows[ok], off[ok], end[ok]
        hdr = 8 + (d[off] & 0x3F).astype(np.int64) * 4
        ptype = _u16(d, off + 2)
        vni = _u32(d, off + 4) >> 8
        ok = off + hdr <= end
        c.fail(rows[~ok], "truncated_tunnel_header")
        rows, off, end, hdr, ptype, vni = rows[ok], off[ok], end[ok], hdr[ok], ptype[ok], vni[ok]
        go = self._enter_tunnel(rows, ENC_GENEVE, depth, vni)
        self._payload_by_ethertype(rows[go], off[go] + hdr[go], end[go], ptype[go], depth + 1)

    def _gre(self, rows, off, end, depth: int) -> None:
        d, c = self.d, self.c
        ok = off + 4 <= end
        c.fail(rows[~ok], "truncated_tunnel_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        flags = _u16(d, off)
        ptype = _u16(d, off + 2)
        csum, keyed, seqd = (flags & 0x8000) != 0, (flags & 0x2000) != 0, (flags & 0x1000) != 0
        hdr = 4 + 4 * csum.astype(np.int64) + 4 * keyed + 4 * seqd
        # version 1 is PPTP's enhanced GRE carrying PPP: not a tunnel we follow
        ok = ((flags & 0x7) == 0) & (off + hdr <= end)
        rows, off, end, hdr, ptype, keyed, csum = rows[ok], off[ok], end[ok], hdr[ok], ptype[ok], keyed[ok], csum[ok]
        key = np.where(keyed, _u32(d, np.minimum(off + 4 + 4 * csum, end - 4)), -1)
        erspan2 = ptype == ETH_ERSPAN2
        erspan3 = ptype == ETH_ERSPAN3
        hdr = hdr + np.where(erspan2, 8, 0) + np.where(erspan3, 12, 0)
        ptype = np.where(erspan2 | erspan3, ETH_TEB, ptype)
        follow = np.isin(ptype, (ETH_IPV4, ETH_IPV6, ETH_TEB, ETH_CISCO_METADATA)) & (off + hdr <= end)
        rows, off, end, hdr, ptype, key = (
            rows[follow],
            off[follow],
            end[follow],
            hdr[follow],
            ptype[follow],
            key[follow],
        )
        go = self._enter_tunnel(rows, ENC_GRE, depth, key)
        self._payload_by_ethertype(rows[go], off[go] + hdr[go], end[go], ptype[go], depth + 1)

    def _payload_by_ethertype(self, rows, off, end, ptype, depth: int) -> None:
        cmd = (ptype == ETH_CISCO_METADATA) & (off + 8 <= end)
        if cmd.any():  # Cisco MetaData inside GRE: next ethertype, then 6 bytes of version/length/SGT
            ptype = ptype.copy()
            off = off.copy()
            ptype[cmd] = _u16(self.d, off[cmd])
            off[cmd] += 8
        teb = ptype == ETH_TEB
        if teb.any():
            self._ethernet(rows[teb], off[teb], end[teb], depth)
        ip = ~teb
        if ip.any():
            self._ip(rows[ip], off[ip], end[ip], ptype[ip], depth)

    # ---- fingerprint & output -------------------------------------------------------------
    def _fingerprint_cols(self) -> tuple[np.ndarray, ...]:
        """The fields hashed into the fingerprint, in order (never addresses, ports, TTL, checksums)."""
        c = self.c
        return (
            c.proto,
            c.ip_id,
            c.seq,
            c.ack,
            c.tcp_flags,
            c.payload_len,
            c.icmp_type,
            c.icmp_code,
            c.icmp_echo_seq,
            c.frag_offset,
        )

    def _fingerprint_compiled(self) -> None:
        """_fingerprint in the compiled kernel, reading each column where it lies (the kernel hashes
        them in _fingerprint_cols' order; tests/test_fastdecode.py holds the two equal)."""
        from ._fastdecode import fingerprint_kernel

        c, f = self.c, self.f
        self.payload_hash = np.empty(c.n, dtype=np.uint64)
        self.fingerprint = np.empty(c.n, dtype=np.uint64)
        fingerprint_kernel(
            self.d,
            f.offsets,
            f.caplens,
            c.payload_off,
            c.payload_len,
            c.proto,
            c.ip_id,
            c.seq,
            c.ack,
            c.tcp_flags,
            c.icmp_type,
            c.icmp_code,
            c.icmp_echo_seq,
            c.frag_offset,
            PAYLOAD_HASH_BYTES,
            self.payload_hash,
            self.fingerprint,
        )
        c.payload_off = np.zeros(0, dtype=np.int64)  # not a table column; 8 bytes a packet less at the peak

    def _fingerprint(self, frame_end: np.ndarray) -> None:
        """Hash of fields that survive NAT and encapsulation (never addresses, ports, TTL, checksums)."""
        c, d = self.c, self.d
        n = c.n
        cols = self._fingerprint_cols()
        plen = np.clip(c.payload_len, 0, PAYLOAD_HASH_BYTES).astype(np.int64)
        avail = np.clip(frame_end - c.payload_off, 0, PAYLOAD_HASH_BYTES)
        take = np.where(c.payload_off >= 0, np.minimum(plen, avail), 0)
        h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
        if n and len(d) >= PAYLOAD_HASH_BYTES:
            # gather 16 bytes per row through a sliding-window view (one copy, no index matrix)
            start = np.clip(c.payload_off, 0, len(d) - PAYLOAD_HASH_BYTES)
            block = np.lib.stride_tricks.sliding_window_view(d, PAYLOAD_HASH_BYTES)[start]
            words = np.ascontiguousarray(block).view("<u8")
            late = np.flatnonzero((c.payload_off > start) & (take > 0))  # the file's last few bytes
            for r in late.tolist():
                tail = bytes(d[c.payload_off[r] : c.payload_off[r] + take[r]]).ljust(PAYLOAD_HASH_BYTES, b"\0")
                words[r] = np.frombuffer(tail, dtype="<u8")
            for k in range(words.shape[1]):
                keep = np.clip(take - 8 * k, 0, 8).astype(np.uint64)
                # mask = lowest `keep` bytes (little-endian view), all ones when keep == 8
                mask = np.where(
                    keep == 8, np.uint64(0xFFFFFFFFFFFFFFFF), (np.uint64(1) << (keep * np.uint64(8))) - np.uint64(1)
                )
                h = _mix(h ^ (words[:, k] & mask))
        self.payload_hash = _mix(h ^ take.astype(np.uint64))
        fp = self.payload_hash
        for col in cols:
            fp = _mix(fp ^ col.astype(np.int64).view(np.uint64))
        self.fingerprint = fp

    def _finish(self) -> dict[str, object]:
        c, f = self.c, self.f
        return {
            "frame": np.arange(f.first_frame + 1, f.first_frame + c.n + 1, dtype=np.int64),
            "ts_ns": f.ts_ns,
            "caplen": f.caplens.astype(np.int32, copy=False),
            "wirelen": f.wirelens.astype(np.int32, copy=False),
            "iface_index": f.iface,
            "pkttype": c.pkttype,
            "link_ifindex": c.link_ifindex,
            "eth_type": c.eth_type,
            "vlan": c.vlan,
            "outer_src": c.outer_src.column(),
            "outer_dst": c.outer_dst.column(),
            "outer_proto": c.outer_proto,
            "outer_ip_id": c.outer_ip_id,
            "outer_ttl": c.outer_ttl,
            "outer_ip_len": c.outer_ip_len,
            "encap": pd.Categorical.from_codes(c.encap, categories=pd.Index(ENCAP_KINDS, dtype=object)),
            "encap_depth": c.encap_depth,
            "vni": c.vni,
            "ip_version": c.src.version,
            "src": c.src.column(),
            "dst": c.dst.column(),
            "proto": c.proto,
            "ip_id": c.ip_id,
            "ttl": c.ttl,
            "ip_len": c.ip_len,
            "dont_fragment": c.dont_fragment,
            "more_fragments": c.more_fragments,
            "frag_offset": c.frag_offset,
            "sport": c.sport,
            "dport": c.dport,
            "tcp_flags": c.tcp_flags,
            "seq": c.seq,
            "ack": c.ack,
            "tcp_window": c.tcp_window,
            "tcp_mss": c.tcp_mss,
            "payload_len": c.payload_len,
            "icmp_type": c.icmp_type,
            "icmp_code": c.icmp_code,
            "icmp_echo_seq": c.icmp_echo_seq,
            "icmp_mtu": c.icmp_mtu,
            "q_src": c.q_src.column(),
            "q_dst": c.q_dst.column(),
            "q_proto": c.q_proto,
            "q_ip_id": c.q_ip_id,
            "q_sport": c.q_sport,
            "q_dport": c.q_dport,
            "payload_hash": self.payload_hash,
            "fingerprint": self.fingerprint,
            "status": pd.Categorical.from_codes(c.status, categories=pd.Index(STATUS_KINDS, dtype=object)),
        }


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-distributed 64-bit mixer that numpy can vectorise."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _mss_option(d: np.ndarray, start: int, end: int) -> int:
    """Walk TCP options for MSS (kind 2); -1 if absent or malformed."""
    p = start
    while p < end:
        kind = int(d[p])
        if kind == 0:
            break
        if kind == 1:
            p += 1
            continue
        if p + 1 >= end:
            break
        length = int(d[p + 1])
        if length < 2 or p + length > end:
            break
        if kind == 2 and length == 4:
            return (int(d[p + 2]) << 8) | int(d[p + 3])
        p += length
    return -1


def decode_columns(
    frames: FrameIndex, vxlan_ports: tuple[int, ...] = VXLAN_PORTS, compiled: bool | None = None
) -> dict[str, object]:
    """Decode a frame index into packets-table columns (numpy arrays and categoricals, no DataFrame:
    building one per capture and concatenating would copy every column twice)."""
    with np.errstate(over="ignore"):
        return PacketDecoder(frames, vxlan_ports=vxlan_ports, compiled=compiled).decode()


def decode_capture(source: str | bytes, vxlan_ports: tuple[int, ...] = VXLAN_PORTS) -> dict[str, object]:
    """One whole capture's packet columns, from its file or bytes (the Dask task, so module-level)."""
    return decode_columns(read_frames(source, AnomalyLog("pcap")), vxlan_ports)


def decode_frames(frames: FrameIndex, vxlan_ports: tuple[int, ...] = VXLAN_PORTS) -> pd.DataFrame:
    """Decode a frame index into the packets table columns (without capture metadata)."""
    from ...schema import columns_frame

    return columns_frame(decode_columns(frames, vxlan_ports))
