"""The packet decoder compiled with numba: one pass over each packet instead of one numpy pass per field.

It fills the same columns, with the same rules, as the vectorised numpy decoder in packets_reference.py, which
stays the reference (and the fallback without numba); tests/test_fastdecode.py holds the two equal on
every capture we have. Layers are walked as a loop over (kind, offset, depth), the same dispatch as
the numpy decoder's recursion.
"""

from __future__ import annotations

import numpy as np

from ._walk import HAVE_NUMBA, njit

# status codes: must match packet_columns.STATUS_KINDS
OK, UNSUPPORTED_LINKTYPE, TRUNC_LINK, TRUNC_IP, BAD_IP_VERSION, BAD_IHL, BAD_TOTAL = 0, 1, 2, 3, 4, 5, 6
TRUNC_V6EXT, TRUNC_TCP, BAD_TCP_OFF, TRUNC_UDP, BAD_UDP_LEN, TRUNC_ICMP, TRUNC_TUNNEL = 7, 8, 9, 10, 11, 12, 13
BAD_VXLAN, BAD_GENEVE, TOO_DEEP, LT_MISMATCH, CAP_GT_WIRE = 14, 15, 16, 17, 18
ENC_NONE, ENC_IPIP, ENC_VXLAN, ENC_GRE, ENC_GENEVE = 0, 1, 2, 3, 4
# must match packet_columns (compiled in as constants; packet_columns imports this module, so not from there)
GRE_UDP_PORT, VXLAN_GPE_PORT, MAX_MPLS_LABELS = 4754, 4790, 16
# layer kinds of the walk
K_DONE, K_ETH, K_IP = 0, 1, 2
# address slots
S_OUTER_SRC, S_OUTER_DST, S_SRC, S_DST, S_QSRC, S_QDST = 0, 1, 2, 3, 4, 5


@njit(cache=True, inline="always")
def _u16(d, i):
    return (np.int64(d[i]) << 8) | np.int64(d[i + 1])


@njit(cache=True, inline="always")
def _u32(d, i):
    return (np.int64(d[i]) << 24) | (np.int64(d[i + 1]) << 16) | (np.int64(d[i + 2]) << 8) | np.int64(d[i + 3])


@njit(cache=True, inline="always")
def _fail(status, r, code):
    if status[r] == 0:
        status[r] = code


@njit(cache=True, inline="always")
def _set4(ver, addr, r, slot, value):
    ver[slot][r] = 4
    addr[slot][r] = value


@njit(cache=True, inline="always")
def _set6(ver, addr, r, slot, off, base):
    ver[slot][r] = 6
    addr[slot][r] = off - base  # relative to the frame: fits the uint32 slot whatever the file size


@njit(cache=True)
def _mss(d, start, end):
    p = start
    while p < end:
        kind = d[p]
        if kind == 0:
            break
        if kind == 1:
            p += 1
            continue
        if p + 1 >= end:
            break
        length = np.int64(d[p + 1])
        if length < 2 or p + length > end:
            break
        if kind == 2 and length == 4:
            return (np.int64(d[p + 2]) << 8) | np.int64(d[p + 3])
        p += length
    return -1


@njit(cache=True, inline="always")
def _clear_l4(i16, i32, i64, r):
    """Forget the L4 fields an outer layer set (ports, TCP, ICMP): this layer has its own, or none."""
    i32[6, r] = -1
    i32[7, r] = -1
    i16[4, r] = -1
    i64[2, r] = -1
    i64[3, r] = -1
    i32[8, r] = -1
    i32[9, r] = -1
    i16[5, r] = -1
    i16[7, r] = -1
    i32[11, r] = -1
    i32[14, r] = -1


@njit(cache=True)
def _quoted(d, r, off, end, ver, addr, i16, i32, i64, base):
    """The IP header (and the first 4 bytes of L4) quoted inside an ICMP error."""
    if off + 1 > end:
        return
    v = d[off] >> 4
    if v == 4 and off + 20 <= end:
        ihl = np.int64(d[off] & 0x0F) * 4
        _set4(ver, addr, r, S_QSRC, _u32(d, off + 12))
        _set4(ver, addr, r, S_QDST, _u32(d, off + 16))
        p = np.int64(d[off + 9])
        i16[6, r] = p  # q_proto
        i32[16, r] = _u16(d, off + 4)  # q_ip_id
        lo = off + ihl
        if (p == 6 or p == 17 or p == 132) and lo + 4 <= end:
            i32[12, r] = _u16(d, lo)
            i32[13, r] = _u16(d, lo + 2)
    elif v == 6 and off + 40 <= end:
        _set6(ver, addr, r, S_QSRC, off + 8, base)
        _set6(ver, addr, r, S_QDST, off + 24, base)
        p = np.int64(d[off + 6])
        i16[6, r] = p
        lo = off + 40
        if (p == 6 or p == 17 or p == 132) and lo + 4 <= end:
            i32[12, r] = _u16(d, lo)
            i32[13, r] = _u16(d, lo + 2)


@njit(cache=True, inline="always")
def _enter_tunnel(i8, i64, status, r, kind, vni, depth, max_depth):
    """Record the outermost tunnel's kind and VNI/key (i8[1], i64[0]) and the tunnel depth (i8[2]);
    False, with TOO_DEEP, past max_depth (packets_reference.ReferenceDecoder._enter_tunnel, one packet)."""
    if i8[1, r] == ENC_NONE:
        i8[1, r] = kind
        i64[0, r] = vni
    i8[2, r] = depth + 1
    if depth + 1 > max_depth:
        _fail(status, r, TOO_DEEP)
        return False
    return True


# Kept whole on purpose (some 350 lines): it is the hot loop whose speed docs/performance.md records,
# and split into a compiled function a layer it would make calls a layer a packet inside that loop.
# Comments mark the layers instead, in the reference decoder's order (packets_reference.py).
@njit(cache=True)
def decode_kernel(
    d, starts, caplens, linktypes, vxlan_ports, max_depth, status, i8, i16, i32, i64, flags, ver, addr, payload_off
):
    """Decode rows whose link type the kernel knows (NFLOG is left to the numpy decoder).

    Column layout (first index):
    i8:  0 pkttype, 1 encap, 2 encap_depth
    i16: 0 outer_proto, 1 outer_ttl, 2 proto, 3 ttl, 4 tcp_flags, 5 icmp_type, 6 q_proto, 7 icmp_code
    i32: 0 link_ifindex, 1 eth_type, 2 vlan, 3 outer_ip_len, 4 ip_len, 5 frag_offset, 6 sport, 7 dport,
         8 tcp_window, 9 tcp_mss, 10 payload_len, 11 icmp_echo_seq, 12 q_sport, 13 q_dport, 14 icmp_mtu,
         15 outer_ip_id, 16 q_ip_id
    i64: 0 vni, 1 ip_id, 2 seq, 3 ack
    payload_off: where the L4 payload starts in ``d`` (its own array: only the fingerprint needs it)
    flags: 0 dont_fragment, 1 more_fragments
    ver, addr: tuples of six arrays (each freed as its column is built): 0 outer_src, 1 outer_dst, 2 src,
         3 dst, 4 q_src, 5 q_dst; ver 4: addr is the IPv4 address,
         ver 6: addr is the offset of the 16 address bytes from the frame's start (uint32 arrays: one
         for both kinds saves 24 bytes a packet, relative offsets another 24)
    """
    n = starts.shape[0]
    for r in range(n):
        # every cell starts at its "absent" value here, so callers can hand in uninitialised arrays
        i8[0, r], i8[1, r], i8[2, r] = -1, 0, 0
        for k in range(i16.shape[0]):
            i16[k, r] = -1
        for k in range(i32.shape[0]):
            i32[k, r] = -1
        for k in range(i64.shape[0]):
            i64[k, r] = -1
        payload_off[r] = -1
        flags[0, r], flags[1, r] = False, False
        for k in range(6):
            ver[k][r], addr[k][r] = 0, 0
        lt = linktypes[r]
        if lt == 239:  # NFLOG: TLVs, left to the numpy decoder
            continue
        off = starts[r]
        end = off + caplens[r]
        kind = K_DONE
        et = np.int64(-1)
        depth = 0
        et_at = 12
        skip = 14
        # ---- link layer ----
        if lt == 1:  # Ethernet
            if off + 14 > end:
                _fail(status, r, TRUNC_LINK)
                continue
            kind = K_ETH
        elif lt == 113:  # Linux cooked SLL
            if off + 16 > end:
                _fail(status, r, TRUNC_LINK)
                continue
            i8[0, r] = _u16(d, off)
            kind, et_at, skip = K_ETH, 14, 16
        elif lt == 276:  # SLL2
            if off + 20 > end:
                _fail(status, r, TRUNC_LINK)
                continue
            i32[0, r] = _u32(d, off + 4)
            i8[0, r] = d[off + 10]
            kind, et_at, skip = K_ETH, 0, 20
        elif lt == 101 or lt == 12 or lt == 14 or lt == 228 or lt == 229:
            if off + 1 > end:
                _fail(status, r, TRUNC_LINK)
                continue
            v = d[off] >> 4
            et = 0x0800 if v == 4 else (0x86DD if v == 6 else -1)
            if lt == 228 and v == 6:
                _fail(status, r, LT_MISMATCH)
            elif lt == 229:
                if v == 4:
                    _fail(status, r, LT_MISMATCH)
                if v != 6:
                    et = -1
            if et < 0:
                _fail(status, r, BAD_IP_VERSION)
            kind = K_IP
        elif lt == 0 or lt == 108:  # NULL / LOOP
            if off + 4 > end:
                _fail(status, r, TRUNC_LINK)
                continue
            be = _u32(d, off)
            le = np.int64(d[off]) | (np.int64(d[off + 1]) << 8) | (np.int64(d[off + 2]) << 16)
            fam = be if lt == 108 else (le if be > 0xFFFF else be)
            et = 0x0800 if fam == 2 else (0x86DD if (fam == 10 or fam == 24 or fam == 28 or fam == 30) else -1)
            i32[1, r] = et
            off += 4
            kind = K_IP
        else:
            _fail(status, r, UNSUPPORTED_LINKTYPE)
            continue
        # ---- layers, outermost first ----
        while kind != K_DONE:
            if kind == K_ETH:
                et = _u16(d, off + et_at)
                off += skip
                for _ in range(3):
                    if (et == 0x8100 or et == 0x88A8 or et == 0x9100) and off + 4 <= end:
                        if depth == 0 and i32[2, r] < 0:
                            i32[2, r] = _u16(d, off) & 0x0FFF
                        et = _u16(d, off + 2)
                        off += 4
                    else:
                        break
                if depth == 0:
                    i32[1, r] = et
                kind = K_IP
                continue
            # K_IP
            kind = K_DONE
            if et == 0x8847 or et == 0x8848:  # MPLS: past the label stack; IPv4 or IPv6 by the first nibble
                bottom = False
                for _ in range(MAX_MPLS_LABELS):
                    if off + 4 > end:
                        break
                    bottom = (d[off + 2] & 0x01) != 0
                    off += 4
                    if bottom:
                        break
                if not bottom:
                    _fail(status, r, TRUNC_LINK if depth == 0 else TRUNC_TUNNEL)
                    break
                nibble = (d[off] >> 4) if off < end else 0
                et = 0x0800 if nibble == 4 else (0x86DD if nibble == 6 else -1)
            if et == 0x0800:
                if off + 20 > end:
                    _fail(status, r, TRUNC_IP)
                    break
                b0 = d[off]
                if (b0 >> 4) != 4:
                    _fail(status, r, BAD_IP_VERSION)
                    break
                ihl = np.int64(b0 & 0x0F) * 4
                if ihl < 20 or off + ihl > end:
                    _fail(status, r, BAD_IHL)
                    break
                total = _u16(d, off + 2)
                bad_total = total != 0 and total < ihl
                if bad_total:
                    _fail(status, r, BAD_TOTAL)
                l3end = end if (total == 0 or bad_total) else min(end, off + total)
                ip_len = end - off if total == 0 else total
                fragw = _u16(d, off + 6)
                proto = np.int64(d[off + 9])
                ip_id = _u16(d, off + 4)
                ttl = np.int64(d[off + 8])
                if depth == 0:
                    _set4(ver, addr, r, S_OUTER_SRC, _u32(d, off + 12))
                    _set4(ver, addr, r, S_OUTER_DST, _u32(d, off + 16))
                    i16[0, r], i32[15, r], i16[1, r], i32[3, r] = proto, ip_id, ttl, ip_len
                _set4(ver, addr, r, S_SRC, _u32(d, off + 12))
                _set4(ver, addr, r, S_DST, _u32(d, off + 16))
                i16[2, r], i64[1, r], i16[3, r], i32[4, r] = proto, ip_id, ttl, ip_len
                flags[0, r] = (fragw & 0x4000) != 0
                flags[1, r] = (fragw & 0x2000) != 0
                frag = (fragw & 0x1FFF) * 8
                i32[5, r] = frag
                l4 = off + ihl
                if frag != 0:  # a later fragment: no L4 header, and none of an outer layer's
                    _clear_l4(i16, i32, i64, r)
                    i32[10, r] = l3end - l4
                    payload_off[r] = l4
                    break
            elif et == 0x86DD:
                if off + 40 > end:
                    _fail(status, r, TRUNC_IP)
                    break
                if (d[off] >> 4) != 6:
                    _fail(status, r, BAD_IP_VERSION)
                    break
                plen = _u16(d, off + 4)
                l3end = end if plen == 0 else min(end, off + 40 + plen)
                nh = np.int64(d[off + 6])
                hlim = np.int64(d[off + 7])
                if depth == 0:
                    _set6(ver, addr, r, S_OUTER_SRC, off + 8, starts[r])
                    _set6(ver, addr, r, S_OUTER_DST, off + 24, starts[r])
                    i16[0, r], i16[1, r] = nh, hlim
                    i32[3, r] = end - off if plen == 0 else plen + 40
                _set6(ver, addr, r, S_SRC, off + 8, starts[r])
                _set6(ver, addr, r, S_DST, off + 24, starts[r])
                i16[3, r] = hlim
                i32[4, r] = end - off if plen == 0 else plen + 40
                i64[1, r] = -1
                i32[5, r] = 0
                flags[1, r] = False
                flags[0, r] = False
                cur = off + 40
                alive = True
                for _ in range(8):
                    simple = nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140
                    if not (simple or nh == 44 or nh == 51):
                        break
                    if cur + 8 > l3end:
                        _fail(status, r, TRUNC_V6EXT)
                        alive = False
                        break
                    new_nh = np.int64(d[cur])
                    if nh == 44:
                        fo = _u16(d, cur + 2)
                        i32[5, r] = (fo >> 3) * 8
                        flags[1, r] = (fo & 1) != 0
                        i64[1, r] = _u32(d, cur + 4)
                        hlen = 8
                    elif nh == 51:
                        hlen = (np.int64(d[cur + 1]) + 2) * 4
                    else:
                        hlen = (np.int64(d[cur + 1]) + 1) * 8
                    nh = new_nh
                    cur += hlen
                if not alive:
                    break
                if cur > l3end:
                    _fail(status, r, TRUNC_V6EXT)
                    break
                proto = nh
                i16[2, r] = nh
                l4 = cur
                if i32[5, r] != 0:
                    _clear_l4(i16, i32, i64, r)
                    i32[10, r] = l3end - cur
                    payload_off[r] = cur
                    break
            else:
                break
            # ---- L4 of a first fragment (or unfragmented packet); outer L4 fields are replaced ----
            _clear_l4(i16, i32, i64, r)
            i32[10, r] = l3end - l4
            payload_off[r] = l4
            if (proto == 6 or proto == 17) and l4 + 4 <= l3end:  # ports, even from a cut-short header
                i32[6, r] = _u16(d, l4)
                i32[7, r] = _u16(d, l4 + 2)
            if proto == 6:
                if l4 + 20 > l3end:
                    _fail(status, r, TRUNC_TCP)
                else:
                    doff = np.int64(d[l4 + 12] >> 4) * 4
                    i64[2, r] = _u32(d, l4 + 4)
                    i64[3, r] = _u32(d, l4 + 8)
                    i16[4, r] = np.int64(d[l4 + 13]) | (np.int64(d[l4 + 12] & 1) << 8)
                    i32[8, r] = _u16(d, l4 + 14)
                    okd = doff >= 20 and l4 + doff <= l3end
                    if not okd:
                        _fail(status, r, BAD_TCP_OFF)
                    i32[10, r] = l3end - l4 - doff if okd else 0
                    payload_off[r] = l4 + doff if okd else l3end
                    if okd and (d[l4 + 13] & 0x02) != 0 and doff > 20:
                        i32[9, r] = _mss(d, l4 + 20, l4 + doff)
            elif proto == 17:
                if l4 + 8 > l3end:
                    _fail(status, r, TRUNC_UDP)
                else:
                    sport = _u16(d, l4)
                    dport = _u16(d, l4 + 2)
                    ulen = _u16(d, l4 + 4)
                    bad = ulen != 0 and ulen < 8
                    if bad:
                        _fail(status, r, BAD_UDP_LEN)
                    i32[10, r] = (l3end - l4 - 8) if (ulen == 0 or bad) else ulen - 8
                    payload_off[r] = l4 + 8
                    is_vx = False
                    sport_vx = False
                    for p in vxlan_ports:
                        if dport == p:
                            is_vx = True
                        if sport == p:
                            sport_vx = True
                    if not is_vx and sport_vx and dport != 6081:
                        is_vx = True
                    if is_vx:
                        o = l4 + 8
                        if o + 8 > l3end:
                            _fail(status, r, TRUNC_TUNNEL)
                        elif (d[o] & 0x08) == 0:
                            _fail(status, r, BAD_VXLAN)
                        else:
                            if _enter_tunnel(i8, i64, status, r, ENC_VXLAN, _u32(d, o + 4) >> 8, depth, max_depth):
                                depth += 1
                                off = o + 8
                                end = l3end
                                if off + 14 > end:
                                    _fail(status, r, TRUNC_TUNNEL)
                                else:
                                    kind, et_at, skip = K_ETH, 12, 14
                    elif dport == 6081:
                        o = l4 + 8
                        if o + 8 > l3end:
                            _fail(status, r, TRUNC_TUNNEL)
                        elif (d[o] >> 6) != 0:
                            _fail(status, r, BAD_GENEVE)
                        else:
                            hdr = 8 + np.int64(d[o] & 0x3F) * 4
                            ptype = _u16(d, o + 2)
                            if o + hdr > l3end:
                                _fail(status, r, TRUNC_TUNNEL)
                            else:
                                vni = _u32(d, o + 4) >> 8
                                if _enter_tunnel(i8, i64, status, r, ENC_GENEVE, vni, depth, max_depth):
                                    depth += 1
                                    kind, off, end, et = _by_ethertype(d, o + hdr, l3end, ptype, status, r, depth)
                                    et_at, skip = 12, 14
                    elif dport == GRE_UDP_PORT or sport == GRE_UDP_PORT:
                        o = l4 + 8
                        if o + 4 > l3end:
                            _fail(status, r, TRUNC_TUNNEL)
                        else:
                            walk = _gre(d, o, l3end, status, r, i8, i64, depth, max_depth, off, end)
                            entered, kind, off, end, et = walk
                            if entered:
                                depth += 1
                                et_at, skip = 12, 14
                    elif dport == VXLAN_GPE_PORT or sport == VXLAN_GPE_PORT:
                        o = l4 + 8
                        if o + 8 > l3end:
                            _fail(status, r, TRUNC_TUNNEL)
                        else:
                            nxt = d[o + 3]
                            if _enter_tunnel(i8, i64, status, r, ENC_VXLAN, _u32(d, o + 4) >> 8, depth, max_depth):
                                depth += 1
                                off = o + 8
                                end = l3end
                                if nxt == 3:
                                    if off + 14 > end:
                                        _fail(status, r, TRUNC_TUNNEL)
                                    else:
                                        kind, et_at, skip = K_ETH, 12, 14
                                elif nxt == 1 or nxt == 2 or nxt == 5:
                                    kind = K_IP
                                    et = 0x0800 if nxt == 1 else (0x86DD if nxt == 2 else 0x8847)
            elif proto == 1 or proto == 58:
                if l4 + 8 > l3end:
                    _fail(status, r, TRUNC_ICMP)
                else:
                    t = np.int64(d[l4])
                    code = np.int64(d[l4 + 1])
                    i16[5, r] = t
                    i16[7, r] = code
                    i32[10, r] = l3end - l4 - 8
                    payload_off[r] = l4 + 8
                    if proto == 1:
                        if t == 0 or t == 8 or t == 13 or t == 14:
                            i32[11, r] = _u16(d, l4 + 6)
                        if t == 3 and code == 4:
                            i32[14, r] = _u16(d, l4 + 6)
                        if t == 3 or t == 4 or t == 5 or t == 11 or t == 12:
                            _quoted(d, r, l4 + 8, l3end, ver, addr, i16, i32, i64, starts[r])
                    else:
                        if t == 128 or t == 129:
                            i32[11, r] = _u16(d, l4 + 6)
                        if t == 2:
                            i32[14, r] = _u32(d, l4 + 4)
                        if t == 1 or t == 2 or t == 3 or t == 4:
                            _quoted(d, r, l4 + 8, l3end, ver, addr, i16, i32, i64, starts[r])
            elif proto == 4 or proto == 41:
                if _enter_tunnel(i8, i64, status, r, ENC_IPIP, np.int64(-1), depth, max_depth):
                    depth += 1
                    off = l4
                    end = l3end
                    et = 0x0800 if proto == 4 else 0x86DD
                    kind = K_IP
            elif proto == 47:
                if l4 + 4 > l3end:
                    _fail(status, r, TRUNC_TUNNEL)
                else:
                    entered, kind, off, end, et = _gre(d, l4, l3end, status, r, i8, i64, depth, max_depth, off, end)
                    if entered:
                        depth += 1
                        et_at, skip = 12, 14


@njit(cache=True)
def _gre(d, o, end, status, r, i8, i64, depth, max_depth, off, frame_end):
    """A GRE header at ``o`` (in UDP 4754 or IP protocol 47): (entered, next layer kind, its offset,
    its end, its ethertype); not entered, the walk stops where it was (``off``, ``frame_end``)."""
    hdr, ptype, key = _gre_header(d, o, end)
    if hdr >= 0 and _enter_tunnel(i8, i64, status, r, ENC_GRE, key, depth, max_depth):
        kind, nxt, nxt_end, et = _by_ethertype(d, o + hdr, end, ptype, status, r, depth + 1)
        return True, kind, nxt, nxt_end, et
    return False, K_DONE, off, frame_end, np.int64(-1)


@njit(cache=True)
def _gre_header(d, o, end):
    """GRE's header as packets_reference.ReferenceDecoder._gre reads it, for one packet (the caller
    has checked its first 4 bytes are there): (header length, payload ethertype, key or PPTP call id),
    header length -1 when the payload is not one we follow."""
    gflags = _u16(d, o)
    ptype = _u16(d, o + 2)
    csum = (gflags & 0x8000) != 0
    keyed = (gflags & 0x2000) != 0
    seqd = (gflags & 0x1000) != 0
    pptp = (gflags & 0x7) == 1 and ptype == 0x880B  # PPTP's enhanced GRE: key (length, call id) always
    acked = pptp and (gflags & 0x0080) != 0
    hdr = np.int64(8) if pptp else 4 + 4 * np.int64(csum) + 4 * np.int64(keyed)
    hdr += 4 * np.int64(seqd) + 4 * np.int64(acked)
    none = np.int64(-1)
    if not ((gflags & 0x7) == 0 or pptp) or o + hdr > end:
        return none, none, none
    key = none
    if pptp:
        key = _u16(d, o + 6)
    elif keyed:
        key = _u32(d, o + 4 + 4 * np.int64(csum))
    if ptype == 0x88BE:  # ERSPAN type II has an 8-byte header; type I (no sequence number) none
        if seqd:
            hdr += 8
        ptype = 0x6558
    elif ptype == 0x22EB:  # ERSPAN type III: 12 bytes, and an 8-byte platform subheader when O is set
        platform = o + hdr + 12 <= end and (d[o + hdr + 11] & 0x01) != 0
        hdr += 20 if platform else 12
        ptype = 0x6558
    elif pptp:  # PPP: address and control unless compressed away, a protocol of one byte or two
        p = o + hdr
        if p + 2 <= end and d[p] == 0xFF and d[p + 1] == 0x03:
            p += 2
        proto = none
        if p + 1 <= end and (d[p] & 0x01) != 0:
            proto = np.int64(d[p])
            p += 1
        else:
            if p + 2 <= end:
                proto = _u16(d, p)
            p += 2
        ptype = 0x0800 if proto == 0x0021 else (0x86DD if proto == 0x0057 else -1)
        hdr = p - o
    follow = ptype == 0x0800 or ptype == 0x86DD or ptype == 0x6558 or ptype == 0x8909
    if not (follow or ptype == 0x8847 or ptype == 0x8848) or o + hdr > end:
        return none, none, none
    return hdr, np.int64(ptype), key


@njit(cache=True)
def _by_ethertype(d, off, end, ptype, status, r, depth):
    """The next layer after a tunnel header that names its payload by ethertype."""
    if ptype == 0x8909 and off + 8 <= end:  # Cisco MetaData: next ethertype, then 6 more bytes
        ptype = _u16(d, off)
        off += 8
    if ptype == 0x6558:
        if off + 14 > end:
            _fail(status, r, TRUNC_TUNNEL)
            return K_DONE, off, end, np.int64(-1)
        return K_ETH, off, end, np.int64(-1)
    return K_IP, off, end, np.int64(ptype)


def available() -> bool:
    return HAVE_NUMBA


@njit(cache=True, inline="always")
def _mix(x):
    """splitmix64 finaliser (the same as packets_reference._mix)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@njit(cache=True, inline="always")
def _bits(v):
    """An int64 column value as the uint64 with the same bits (as numpy's .view(np.uint64))."""
    return np.uint64(v) if v >= 0 else ~np.uint64(-(v + 1))


@njit(cache=True, nogil=True)
def fingerprint_kernel(
    d,
    starts,
    caplens,
    payload_off,
    payload_len,
    proto,
    ip_id,
    seq,
    ack,
    tcp_flags,
    icmp_type,
    icmp_code,
    icmp_echo_seq,
    frag_offset,
    hash_bytes,
    out_payload,
    out_fp,
):
    """packets_reference.ReferenceDecoder._fingerprint, one packet at a time, reading the columns where they lie
    (stacking them into one int64 matrix first cost 80 bytes a packet)."""
    n = starts.shape[0]
    size = d.shape[0]
    for r in range(n):
        off = payload_off[r]
        plen = min(max(np.int64(payload_len[r]), 0), hash_bytes)
        avail = min(max(starts[r] + caplens[r] - off, 0), hash_bytes)
        take = min(plen, avail) if off >= 0 else np.int64(0)
        h = np.uint64(0xCBF29CE484222325)
        if size >= hash_bytes:
            for k in range(hash_bytes // 8):
                word = np.uint64(0)
                for b in range(8):
                    i = 8 * k + b
                    if i < take:
                        word |= np.uint64(d[off + i]) << np.uint64(8 * b)
                h = _mix(h ^ word)
        h = _mix(h ^ np.uint64(take))
        out_payload[r] = h
        # the same order as packets_reference.ReferenceDecoder._fingerprint
        fp = h
        fp = _mix(fp ^ _bits(np.int64(proto[r])))
        fp = _mix(fp ^ _bits(np.int64(ip_id[r])))
        fp = _mix(fp ^ _bits(np.int64(seq[r])))
        fp = _mix(fp ^ _bits(np.int64(ack[r])))
        fp = _mix(fp ^ _bits(np.int64(tcp_flags[r])))
        fp = _mix(fp ^ _bits(np.int64(payload_len[r])))
        fp = _mix(fp ^ _bits(np.int64(icmp_type[r])))
        fp = _mix(fp ^ _bits(np.int64(icmp_code[r])))
        fp = _mix(fp ^ _bits(np.int64(icmp_echo_seq[r])))
        fp = _mix(fp ^ _bits(np.int64(frag_offset[r])))
        out_fp[r] = fp


@njit(cache=True)
def _rehash(keys, used, ids, cap):
    new_keys = np.empty(cap, dtype=np.int64)
    new_used = np.zeros(cap, dtype=np.bool_)
    new_ids = np.empty(cap, dtype=np.int32)
    for h in range(keys.shape[0]):
        if used[h]:
            j = (np.uint64(keys[h]) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
            j = np.int64(j) & (cap - 1)
            while new_used[j]:
                j = (j + 1) & (cap - 1)
            new_keys[j], new_used[j], new_ids[j] = keys[h], True, ids[h]
    return new_keys, new_used, new_ids


@njit(cache=True)
def factorize_ipv4(values, version, codes):
    """Codes (first-seen order, -1 where version is not 4) and distinct values of an address column.

    pandas' factorize sizes a hash table for every row and returns int64 codes; a column has a few
    thousand addresses at most, so a small table that grows and int32 codes keep the transient
    memory at 4 bytes a packet.
    """
    cap = 1024
    keys = np.empty(cap, dtype=np.int64)
    used = np.zeros(cap, dtype=np.bool_)
    ids = np.empty(cap, dtype=np.int32)
    uniq = np.empty(cap, dtype=np.int64)
    nu = 0
    for r in range(values.shape[0]):
        if version[r] != 4:
            codes[r] = -1
            continue
        v = np.int64(values[r])
        h = np.int64((np.uint64(v) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & (cap - 1)
        while used[h] and keys[h] != v:
            h = (h + 1) & (cap - 1)
        if not used[h]:
            if 2 * (nu + 1) > cap:
                cap *= 2
                keys, used, ids = _rehash(keys, used, ids, cap)
                grown = np.empty(cap, dtype=np.int64)
                grown[:nu] = uniq[:nu]
                uniq = grown
                h = np.int64((np.uint64(v) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & (cap - 1)
                while used[h]:
                    h = (h + 1) & (cap - 1)
            keys[h], used[h], ids[h] = v, True, nu
            uniq[nu] = v
            nu += 1
        codes[r] = ids[h]
    return uniq[:nu]


@njit(cache=True)
def remap_codes(codes, rank):
    """codes[r] = rank[codes[r]] in place, -1 kept (np.take with out= copies the codes as intp first)."""
    for r in range(codes.shape[0]):
        if codes[r] >= 0:
            codes[r] = rank[codes[r]]
