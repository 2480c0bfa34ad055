"""The vectorised reference decoder: link layer, IPv4/IPv6, TCP/UDP/ICMP and tunnels, in numpy.

Every step works on arrays of rows (all frames at one layer at once), Zeek-style: each layer checks
its length first, records a named anomaly on damage and stops there, otherwise hands the inner bytes
to the next layer chosen from a dispatch table (UDP 4789 -> VXLAN -> Ethernet -> IP). Nesting depth is
capped. It is the reference the compiled decoder (_fastdecode.py) is held equal to in the tests, the
fallback where numba is missing, and the reader of NFLOG frames, which the compiled decoder leaves here.
"""

from __future__ import annotations

import numpy as np

from .packet_columns import (
    ENC_GENEVE,
    ENC_GRE,
    ENC_IPIP,
    ENC_NONE,
    ENC_VXLAN,
    ETH_CISCO_METADATA,
    ETH_ERSPAN2,
    ETH_ERSPAN3,
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    ETH_MPLS_MULTICAST,
    ETH_PPP,
    ETH_QINQ,
    ETH_QINQ_OLD,
    ETH_TEB,
    ETH_VLAN,
    GENEVE_PORT,
    GRE_UDP_PORT,
    ICMP4_ERRORS,
    ICMP6_ERRORS,
    IPV6_EXT_SIMPLE,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LOOP,
    LINKTYPE_NFLOG,
    LINKTYPE_NULL,
    LINKTYPE_SLL,
    LINKTYPE_SLL2,
    MAX_MPLS_LABELS,
    PAYLOAD_HASH_BYTES,
    PPP_IPV4,
    PPP_IPV6,
    RAW_LINKTYPES,
    VXLAN_GPE_PORT,
    PacketColumns,
    fingerprint_fields,
)


class ReferenceDecoder:
    """Decodes frames of one capture, given as offsets into its bytes ``data``, into ``columns``."""

    def __init__(self, data: np.ndarray, columns: PacketColumns, vxlan_ports: np.ndarray, max_depth: int) -> None:
        self.d = data
        self.c = columns
        self.vxlan_ports = vxlan_ports
        self.max_depth = max_depth
        self.payload_hash = np.zeros(0, dtype=np.uint64)
        self.fingerprint = np.zeros(0, dtype=np.uint64)

    def decode(self, start: np.ndarray, end: np.ndarray, linktypes: np.ndarray) -> None:
        """Every frame, a link type at a time, then the fingerprints."""
        for linktype in np.unique(linktypes):
            rows = np.flatnonzero(linktypes == linktype)
            self._link(int(linktype), rows, start[rows], end[rows])
        self._fingerprint(end)

    def nflog(self, rows: np.ndarray, off: np.ndarray, end: np.ndarray) -> None:
        """NFLOG frames only (the compiled decoder leaves them to this one)."""
        self._nflog(rows, off, end)

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
        mpls = (et == ETH_MPLS) | (et == ETH_MPLS_MULTICAST)
        if mpls.any():
            off, et = off.copy(), np.asarray(et, dtype=np.int64).copy()
            off[mpls], et[mpls] = self._mpls(rows[mpls], off[mpls], end[mpls], depth)
        v4 = et == ETH_IPV4
        v6 = et == ETH_IPV6
        if v4.any():
            self._ipv4(rows[v4], off[v4], end[v4], depth)
        if v6.any():
            self._ipv6(rows[v6], off[v6], end[v6], depth)

    def _mpls(self, rows, off, end, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Past an MPLS label stack (to its bottom-of-stack entry): (payload offset, payload ethertype).
        The payload names no protocol, so it is IPv4 or IPv6 by its first nibble, as tshark takes it;
        anything else is left undecoded."""
        d = self.d
        off = off.copy()
        live = np.ones(len(rows), dtype=bool)  # still inside the stack
        broken = np.zeros(len(rows), dtype=bool)  # the stack runs past the frame or past MAX_MPLS_LABELS
        for _ in range(MAX_MPLS_LABELS):
            cut = live & (off + 4 > end)
            broken |= cut
            live &= ~cut
            bottom = live & ((d[np.minimum(off + 2, len(d) - 1)] & 0x01) != 0)
            off = np.where(live, off + 4, off)
            live &= ~bottom
            if not live.any():
                break
        broken |= live
        self.c.fail(rows[broken], "truncated_link_header" if depth == 0 else "truncated_tunnel_header")
        nibble = np.where(off < end, d[np.minimum(off, len(d) - 1)] >> 4, 0)
        et = np.where(nibble == 4, ETH_IPV4, np.where(nibble == 6, ETH_IPV6, -1))
        return off, np.where(broken, -1, et)

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
        self._clear_l4(rest)
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
        self._clear_l4(rest)
        c.payload_len[rest] = l3end[~first] - cur[~first]
        c.payload_off[rest] = cur[~first]

    # ---- L4 -----------------------------------------------------------------------------
    def _clear_l4(self, rows) -> None:
        """Forget the L4 fields an outer layer set: this layer has its own, or (a later fragment) none."""
        c = self.c
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

    def _l4(self, rows, off, l3end, proto, depth: int, ipver: int) -> None:
        c = self.c
        self._clear_l4(rows)  # any L4 fields from an outer layer are replaced by this layer's
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
        gu = ((dport == GRE_UDP_PORT) | (sport == GRE_UDP_PORT)) & ~vx & ~gv
        if gu.any():
            self._gre(rows[gu], off[gu] + 8, end[gu], depth)
        gpe = ((dport == VXLAN_GPE_PORT) | (sport == VXLAN_GPE_PORT)) & ~vx & ~gv & ~gu
        if gpe.any():
            self._vxlan_gpe(rows[gpe], off[gpe] + 8, end[gpe], depth)

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

    def _vxlan_gpe(self, rows, off, end, depth: int) -> None:
        """VXLAN-GPE: VXLAN's header with a next-protocol byte (1 IPv4, 2 IPv6, 3 Ethernet, 5 MPLS)."""
        d, c = self.d, self.c
        ok = off + 8 <= end
        c.fail(rows[~ok], "truncated_tunnel_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        nxt = d[off + 3].astype(np.int64)
        vni = _u32(d, off + 4) >> 8
        go = self._enter_tunnel(rows, ENC_VXLAN, depth, vni)
        rows, off, end, nxt = rows[go], off[go] + 8, end[go], nxt[go]
        eth = nxt == 3
        if eth.any():
            self._ethernet(rows[eth], off[eth], end[eth], depth + 1)
        et = np.select([nxt == 1, nxt == 2, nxt == 5], [ETH_IPV4, ETH_IPV6, ETH_MPLS], -1)
        ip = et >= 0
        if ip.any():
            self._ip(rows[ip], off[ip], end[ip], et[ip], depth + 1)

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
        """GRE version 0 (IP, Ethernet, MPLS; ERSPAN I, II and III mirror sessions) and version 1,
        PPTP's enhanced GRE carrying PPP. ERSPAN type I has no header of its own (no sequence
        number in the GRE header), type II 8 bytes, type III 12 plus 8 when its O bit says a
        platform subheader follows."""
        d, c = self.d, self.c
        ok = off + 4 <= end
        c.fail(rows[~ok], "truncated_tunnel_header")
        rows, off, end = rows[ok], off[ok], end[ok]
        flags = _u16(d, off)
        ptype = _u16(d, off + 2)
        csum, keyed, seqd = (flags & 0x8000) != 0, (flags & 0x2000) != 0, (flags & 0x1000) != 0
        pptp = ((flags & 0x7) == 1) & (ptype == ETH_PPP)  # key (payload length, call id) always there
        acked = pptp & ((flags & 0x0080) != 0)
        hdr = np.where(pptp, 8, 4 + 4 * csum.astype(np.int64) + 4 * keyed) + 4 * seqd + 4 * acked
        ok = (((flags & 0x7) == 0) | pptp) & (off + hdr <= end)
        rows, off, end, hdr, ptype, keyed, csum, seqd, pptp = (
            a[ok] for a in (rows, off, end, hdr, ptype, keyed, csum, seqd, pptp)
        )
        last = np.maximum(end - 4, off)  # a clamp for reads that the masks below discard
        key = np.where(keyed & ~pptp, _u32(d, np.minimum(off + 4 + 4 * csum, last)), -1)
        key = np.where(pptp, _u16(d, np.minimum(off + 6, last)), key)  # the call id
        erspan = (ptype == ETH_ERSPAN2) | (ptype == ETH_ERSPAN3)
        platform = (ptype == ETH_ERSPAN3) & (off + hdr + 12 <= end)
        platform &= (d[np.minimum(off + hdr + 11, np.maximum(end - 1, off))] & 0x01) != 0
        hdr = hdr + np.where((ptype == ETH_ERSPAN2) & seqd, 8, 0) + np.where(ptype == ETH_ERSPAN3, 12, 0) + 8 * platform
        ptype = np.where(erspan, ETH_TEB, ptype)
        if pptp.any():
            hdr, ptype = hdr.copy(), ptype.copy()
            hdr[pptp], ptype[pptp] = self._ppp(off[pptp] + hdr[pptp], end[pptp])
            hdr[pptp] -= off[pptp]
        payloads = (ETH_IPV4, ETH_IPV6, ETH_TEB, ETH_CISCO_METADATA, ETH_MPLS, ETH_MPLS_MULTICAST)
        follow = np.isin(ptype, payloads) & (off + hdr <= end)
        rows, off, end, hdr, ptype, key = (a[follow] for a in (rows, off, end, hdr, ptype, key))
        go = self._enter_tunnel(rows, ENC_GRE, depth, key)
        self._payload_by_ethertype(rows[go], off[go] + hdr[go], end[go], ptype[go], depth + 1)

    def _ppp(self, off, end) -> tuple[np.ndarray, np.ndarray]:
        """Past a PPP header: address and control (0xff03) unless compressed away, then the protocol,
        one byte when compressed (an odd first byte, RFC 1661) or two. (payload offset, IPv4 or IPv6
        as an ethertype, else -1)."""
        d = self.d
        last = np.maximum(end - 1, 0)
        framed = (off + 2 <= end) & (d[np.minimum(off, last)] == 0xFF) & (d[np.minimum(off + 1, last)] == 0x03)
        off = off + 2 * framed
        first = d[np.minimum(off, last)].astype(np.int64)
        short = (off + 1 <= end) & ((first & 0x01) != 0)
        proto = np.where(short, first, np.where(off + 2 <= end, _u16(d, np.minimum(off, np.maximum(end - 2, 0))), -1))
        et = np.select([proto == PPP_IPV4, proto == PPP_IPV6], [ETH_IPV4, ETH_IPV6], -1)
        return off + np.where(short, 1, 2), et

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

    def _fingerprint(self, frame_end: np.ndarray) -> None:
        """Hash of fields that survive NAT and encapsulation (never addresses, ports, TTL, checksums)."""
        c, d = self.c, self.d
        n = c.n
        cols = fingerprint_fields(c)
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
        self.fingerprint = fingerprint_of(self.payload_hash, cols)


def payload_hash_of_nothing() -> np.uint64:
    """The payload hash of a packet with no payload bytes, as _fingerprint computes it: the key of
    every packet when the payload cannot be in every copy (captures cut short)."""
    h = np.full(1, 0xCBF29CE484222325, dtype=np.uint64)
    for _ in range(PAYLOAD_HASH_BYTES // 8):
        h = _mix(h ^ np.uint64(0))
    return _mix(h ^ np.uint64(0))[0]


def fingerprint_of(payload_hash: np.ndarray, fields: tuple[np.ndarray, ...]) -> np.ndarray:
    """A packet's fingerprint from its payload hash and its FINGERPRINT_FIELDS values, in order
    (a reassembled datagram's is made again from its first fragment's, with the whole length)."""
    fp = payload_hash
    for col in fields:
        fp = _mix(fp ^ np.asarray(col).astype(np.int64).view(np.uint64))
    return fp


def _u16(d: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (d[i].astype(np.int64) << 8) | d[i + 1]


def _u32(d: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (
        (d[i].astype(np.int64) << 24) | (d[i + 1].astype(np.int64) << 16) | (d[i + 2].astype(np.int64) << 8) | d[i + 3]
    )


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
