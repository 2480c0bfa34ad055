"""Frames in the encapsulations switch mirrors and other networks deliver: MPLS label stacks, ERSPAN
types I, II and III, PPTP's GRE carrying PPP, GRE-in-UDP and VXLAN-GPE. Built byte by byte (dpkt
would re-serialise some of these layers its own way: it compresses PPP's protocol field, for one),
each with what its innermost packet is."""

from __future__ import annotations

import struct

import dpkt
from pktutil import ip4, tcp4

INNER = tcp4(src="192.168.1.5", dst="192.168.2.7", sport=41000, dport=8080)
INNER_V4 = ("192.168.1.5", "192.168.2.7", 6, 41000, 8080)


def _inner6() -> bytes:
    udp = struct.pack("!HHHH", 999, 53, 9, 0) + b"q"
    return struct.pack("!IHBB", 0x60000000, len(udp), 17, 64) + bytes(15) + b"\x01" + bytes(15) + b"\x02" + udp


INNER6 = _inner6()
INNER_V6 = ("::1", "::2", 17, 999, 53)


def ethernet(payload: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x04" * 6 + b"\x02" * 6 + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, payload: bytes, src: str = "172.16.0.1", dst: str = "172.16.0.2") -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, ip4(src), ip4(dst))
    checksum = dpkt.in_cksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def udp(dport: int, payload: bytes, sport: int = 40000) -> bytes:
    return ipv4(17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def mpls(labels: list[int], payload: bytes) -> bytes:
    """A label stack (label, bottom-of-stack on the last, TTL 64) and its payload."""
    last = len(labels) - 1
    return b"".join(struct.pack("!I", (lab << 12) | ((k == last) << 8) | 64) for k, lab in enumerate(labels)) + payload


def gre(ptype: int, payload: bytes, flags: int = 0, options: bytes = b"") -> bytes:
    return struct.pack("!HH", flags, ptype) + options + payload


def pptp(ppp_header: bytes, payload: bytes, call_id: int = 5) -> bytes:
    """Enhanced GRE (version 1, key and sequence number present) carrying one PPP frame."""
    body = ppp_header + payload
    return struct.pack("!HHHHI", 0x3001, 0x880B, len(body), call_id, 9) + body


def vxlan_gpe(next_protocol: int, payload: bytes, vni: int = 5) -> bytes:
    return struct.pack("!BHBI", 0x0C, 0, next_protocol, vni << 8) + payload


ERSPAN2 = struct.pack("!II", 0x10000001, 5)  # version 1 (type II), session 1; index 5
ERSPAN3 = struct.pack("!III", 0x20000001, 0, 0)  # version 2 (type III), session 1; no O bit
ERSPAN3_PLATFORM = struct.pack("!III", 0x20000001, 0, 1) + bytes(8)  # O bit: an 8-byte subheader follows
SEQ = struct.pack("!I", 7)

# name -> (frame, (encapsulation, VNI or GRE key or PPTP call id), innermost packet)
FRAMES: dict[str, tuple[bytes, tuple[str, int], tuple]] = {
    "mpls": (ethernet(mpls([100, 200], bytes(INNER)), 0x8847), ("none", -1), INNER_V4),
    "mpls_ipv6": (ethernet(mpls([100], INNER6), 0x8847), ("none", -1), INNER_V6),
    "mpls_multicast": (ethernet(mpls([7], bytes(INNER)), 0x8848), ("none", -1), INNER_V4),
    "erspan_type1": (ethernet(ipv4(47, gre(0x88BE, ethernet(bytes(INNER))))), ("gre", -1), INNER_V4),
    "erspan_type2": (
        ethernet(ipv4(47, gre(0x88BE, ERSPAN2 + ethernet(bytes(INNER)), 0x1000, SEQ))),
        ("gre", -1),
        INNER_V4,
    ),
    "erspan_type3": (
        ethernet(ipv4(47, gre(0x22EB, ERSPAN3 + ethernet(bytes(INNER)), 0x1000, SEQ))),
        ("gre", -1),
        INNER_V4,
    ),
    "erspan_type3_platform": (
        ethernet(ipv4(47, gre(0x22EB, ERSPAN3_PLATFORM + ethernet(bytes(INNER)), 0x1000, SEQ))),
        ("gre", -1),
        INNER_V4,
    ),
    "gre_mpls": (ethernet(ipv4(47, gre(0x8847, mpls([300], bytes(INNER))))), ("gre", -1), INNER_V4),
    "gre_in_udp": (ethernet(udp(4754, gre(0x0800, bytes(INNER), 0x2000, struct.pack("!I", 77)))), ("gre", 77), INNER_V4),
    "pptp_ppp": (ethernet(ipv4(47, pptp(b"\xff\x03\x00\x21", bytes(INNER)))), ("gre", 5), INNER_V4),
    "pptp_ppp_compressed_protocol": (ethernet(ipv4(47, pptp(b"\xff\x03\x21", bytes(INNER)))), ("gre", 5), INNER_V4),
    "pptp_ppp_no_address": (ethernet(ipv4(47, pptp(b"\x00\x21", bytes(INNER)))), ("gre", 5), INNER_V4),
    "pptp_ppp_both_compressed": (ethernet(ipv4(47, pptp(b"\x21", bytes(INNER)))), ("gre", 5), INNER_V4),
    "pptp_ppp_ipv6": (ethernet(ipv4(47, pptp(b"\xff\x03\x00\x57", INNER6))), ("gre", 5), INNER_V6),
    "vxlan_gpe_ipv4": (ethernet(udp(4790, vxlan_gpe(1, bytes(INNER)))), ("vxlan", 5), INNER_V4),
    "vxlan_gpe_ipv6": (ethernet(udp(4790, vxlan_gpe(2, INNER6))), ("vxlan", 5), INNER_V6),
    "vxlan_gpe_ethernet": (ethernet(udp(4790, vxlan_gpe(3, ethernet(bytes(INNER))))), ("vxlan", 5), INNER_V4),
    "vxlan_gpe_mpls": (ethernet(udp(4790, vxlan_gpe(5, mpls([9], bytes(INNER))))), ("vxlan", 5), INNER_V4),
}


def damaged() -> dict[str, tuple[bytes, str]]:
    """Frames cut inside each new header, with the anomaly the decoders must name."""
    stack = ethernet(mpls([1, 2, 3], bytes(INNER)), 0x8847)
    no_bottom = ethernet(b"".join(struct.pack("!I", (k << 12) | 64) for k in range(20)) + bytes(INNER), 0x8847)
    gre_stack = ethernet(ipv4(47, gre(0x8847, mpls([1, 2], b""))[:10]))
    return {
        "mpls_cut": (stack[: 14 + 6], "truncated_link_header"),
        "mpls_without_bottom": (no_bottom, "truncated_link_header"),
        "gre_mpls_cut": (gre_stack, "truncated_tunnel_header"),
        "vxlan_gpe_cut": (ethernet(udp(4790, vxlan_gpe(1, b"")[:5])), "truncated_tunnel_header"),
        "vxlan_gpe_ethernet_cut": (ethernet(udp(4790, vxlan_gpe(3, b"\x00" * 6))), "truncated_tunnel_header"),
        "gre_in_udp_cut": (ethernet(udp(4754, b"\x00\x00")), "truncated_tunnel_header"),
    }
