"""WireGuard message headers of UDP 51820/51821 packets, read from the frame bytes (whole arrays, no
per-packet Python): the packets table decodes them as plain UDP, and the matching of encrypted
messages to their plaintext needs each message's type, indexes and counter.

Wire format (shared WireGuard reference D.3): type (1 byte) + 3 reserved, then for a data message
(type 4) the receiver's index (u32 LE) and the counter (u64 LE); an initiation (1) carries the
sender's index; a response (2) the sender's then the receiver's index; a cookie reply (3) the
receiver's index.
"""

from __future__ import annotations

import numpy as np

from .pcap import FrameIndex

WG_PORTS = (51820, 51821)
MESSAGE_TYPES = {1: "initiation", 2: "response", 3: "cookie", 4: "data"}
HANDSHAKE_SIZES = {1: 148, 2: 92, 3: 64}  # UDP payload bytes of the handshake messages
KEEPALIVE_SIZE = 32  # a data message with no plaintext
LINK_HEADER = {1: 14, 113: 16, 276: 20, 101: 0, 12: 0, 14: 0, 228: 0, 229: 0, 0: 4, 108: 4}


def _u32le(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    b = data[at[:, None] + np.arange(4)].astype(np.int64)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)


def message_headers(fi: FrameIndex, rows: np.ndarray) -> dict[str, np.ndarray]:
    """For frames ``rows`` of a capture (UDP packets on a WireGuard port, not tunnelled): message
    type (-1 unreadable), receiver index, sender index and counter (-1 where the type has none)."""
    n = len(rows)
    out = {k: np.full(n, -1, dtype=np.int64) for k in ("msg_type", "receiver_index", "sender_index", "counter")}
    if not n or not len(fi.data):
        return out
    # per interface of the file (few), then per frame by index: no Python step per frame
    linktypes = np.asarray([ci.linktype for ci in fi.interfaces] or [-1], dtype=np.int64)
    headers = np.asarray([LINK_HEADER.get(int(t), -1) for t in linktypes], dtype=np.int64)
    at_iface = fi.iface[rows] if len(fi.interfaces) > 1 else np.zeros(n, dtype=np.int64)
    link, l3 = linktypes[at_iface], headers[at_iface]
    start = fi.offsets[rows]
    caplen = fi.caplens[rows].astype(np.int64)
    ok = l3 >= 0
    eth = ok & (link == 1)
    for _ in range(2):  # 802.1Q / 802.1ad tags before the IP header
        at = np.where(eth & (l3 + 2 <= caplen), start + l3 - 2, 0)
        ethertype = (fi.data[at].astype(np.int64) << 8) | fi.data[at + 1]
        tagged = eth & np.isin(ethertype, (0x8100, 0x88A8))
        l3 = np.where(tagged, l3 + 4, l3)
    ok &= l3 < caplen
    first = fi.data[np.where(ok, start + l3, 0)].astype(np.int64)
    version = first >> 4
    ip_header = np.where(version == 4, (first & 0x0F) * 4, np.where(version == 6, 40, -1))
    payload = l3 + ip_header + 8
    ok &= (ip_header >= 20) & (payload + 16 <= caplen)
    where = np.flatnonzero(ok)
    if not len(where):
        return out
    base = start[where] + payload[where]
    msg_type = fi.data[base].astype(np.int64)
    word1 = _u32le(fi.data, base + 4)
    word2 = _u32le(fi.data, base + 8)
    counter = word2 | (_u32le(fi.data, base + 12) << 32)
    out["msg_type"][where] = msg_type
    out["receiver_index"][where] = np.select([msg_type == 4, msg_type == 2, msg_type == 3], [word1, word2, word1], -1)
    out["sender_index"][where] = np.where(np.isin(msg_type, (1, 2)), word1, -1)
    out["counter"][where] = np.where(msg_type == 4, counter & 0x7FFF_FFFF_FFFF_FFFF, -1)
    return out
