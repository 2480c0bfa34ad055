"""The join across WireGuard: each encrypted message on a node's uplink tied to the plaintext packet
its `wireguard.cali` (`wg-v6.cali`) capture shows, by size, per-session counter order and time.

Encryption leaves nothing to match bytes on, but three things hold (shared WireGuard reference
D.3-D.4): the message's UDP payload is 32 + the padded plaintext length, P = min(MTU, roundup16(L));
a session's counter rises by one per message in the order the sender queued the plaintexts; and
the sender's tap sees the plaintext before the ciphertext, the receiver's after it. So per node,
direction and peer, the plaintexts in time order and the data messages in (session, counter) order
are walked together, pairing where size and time agree. A plaintext larger than the MTU is a GSO
super-packet that left as several messages (received: several messages merged by GRO); keepalives
(32 bytes) use a counter value and carry nothing; handshakes are told by type.

When a message or plaintext is left without a partner, the pair just before it is `ambiguous` if it
could as well have been made with the one left over (same size, time allowing), and so is the pair
just after it if the skip was decided by size alone: which of the two was lost cannot be told. Only `exact`
pairs join their plaintext's packet instance: the message's row in the packets table takes the
plaintext's inner fields (encap `wireguard`), so flows, overhead and latency cross the encrypted hop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .parsers.wireguard import KEEPALIVE_SIZE, MESSAGE_TYPES
from .schema import conform

WIREGUARD_DEVICES = {"wireguard.cali": 4, "wg-v6.cali": 6}
DEFAULT_MTU = {4: 1440, 6: 1420}  # Calico's defaults at a 1500-byte host MTU (host MTU - 60 / - 80)
OVERHEAD = 32  # WireGuard data header 16 + Poly1305 tag 16, on top of the padded plaintext
WINDOW_NS = 1_000_000_000  # a plaintext and its message are at most this far apart on one node
MAX_SEGMENTS = 64
# the inner fields a matched message takes from its plaintext (the packets table's innermost L3/L4)
INNER_COLUMNS = [
    "ip_version",
    "src",
    "dst",
    "proto",
    "ip_id",
    "ttl",
    "ip_len",
    "dont_fragment",
    "more_fragments",
    "frag_offset",
    "sport",
    "dport",
    "tcp_flags",
    "seq",
    "ack",
    "tcp_window",
    "tcp_mss",
    "payload_len",
    "icmp_type",
    "icmp_code",
    "icmp_echo_seq",
    "icmp_mtu",
    "q_src",
    "q_dst",
    "q_proto",
    "q_ip_id",
    "q_sport",
    "q_dport",
    "payload_hash",
    "fingerprint",
]


def padded(length: int, mtu: int) -> int:
    """Plaintext length after WireGuard's padding (send.c calculate_skb_padding)."""
    last = length % mtu if length > mtu else length
    return length + min(mtu, (last + 15) // 16 * 16) - last


def _walk(inner: pd.DataFrame, outer: pd.DataFrame, mtu: int, tx: bool) -> tuple[list, list]:
    """Pair one direction's plaintexts (time order) with its data messages (session, counter order).
    Returns ([(inner row, outer row, kind)], [inner rows without a message])."""
    L = inner["ip_len"].to_numpy()
    payload = inner["payload_len"].to_numpy()
    t_in = inner["ts_ns"].to_numpy()
    U = outer["udp_payload"].to_numpy()
    t_out = outer["ts_ns"].to_numpy()
    pairs: list[tuple[int, int, str]] = []
    lone_inner: list[int] = []
    skipped: set[int] = set()  # sizes of what was skipped by size alone since the last pair (time is certain)

    def expected(i: int) -> int:
        return OVERHEAD + padded(int(L[i]), mtu)

    def in_time(i: int, j: int) -> int:
        """-1: the message is too early for this plaintext, 1: too late, 0: possible."""
        d = int(t_out[j] - t_in[i]) if tx else int(t_in[i] - t_out[j])
        return -1 if d < 0 else (1 if d > WINDOW_NS else 0)

    def segments(i: int, j: int) -> int:
        """Messages from j on that carry plaintext i's GSO segments (sum rule), or 0."""
        header = int(L[i] - payload[i])
        lo = hi = 0
        for k in range(MAX_SEGMENTS):
            if j + k >= len(U) or in_time(i, j + k) != 0 or U[j + k] <= OVERHEAD:
                return 0
            p = int(U[j + k]) - OVERHEAD
            lo, hi = lo + max(header, p - 15) - header, hi + p - header
            if k >= 1 and lo <= payload[i] <= hi:
                return k + 1
            if lo > payload[i]:
                return 0
        return 0

    def doubt_last(inner_skipped: int = -1, outer_skipped: int = -1) -> None:
        """The last pair is ambiguous if it could as well have been made with what is skipped now."""
        if not pairs or pairs[-1][2] == "segment":
            return
        li, lj, _ = pairs[-1]
        if inner_skipped >= 0 and expected(li) == expected(inner_skipped) and in_time(inner_skipped, lj) == 0:
            pairs[-1] = (li, lj, "ambiguous")
        if outer_skipped >= 0 and U[lj] == U[outer_skipped] and in_time(li, outer_skipped) == 0:
            pairs[-1] = (li, lj, "ambiguous")

    i = j = 0
    while i < len(L) and j < len(U):
        timing = in_time(i, j)
        if timing < 0 if tx else timing > 0:  # tx: message before its plaintext; rx: after the window
            doubt_last(outer_skipped=j)
            j += 1
            continue
        if timing > 0 if tx else timing < 0:  # no message in time for this plaintext
            doubt_last(inner_skipped=i)
            lone_inner.append(i)
            i += 1
            continue
        if L[i] <= mtu and U[j] == expected(i):
            pairs.append((i, j, "ambiguous" if int(U[j]) in skipped else "exact"))
            skipped.clear()
            i, j = i + 1, j + 1
            continue
        if L[i] > mtu and (k := segments(i, j)):
            pairs += [(i, j + s, "segment") for s in range(k)]
            skipped.clear()
            i, j = i + 1, j + k
            continue
        if i + 1 < len(L) and U[j] == expected(i + 1):  # by size: this plaintext has no message
            doubt_last(inner_skipped=i)
            skipped.add(expected(i))
            lone_inner.append(i)
            i += 1
        else:  # by size: this message has no plaintext
            doubt_last(outer_skipped=j)
            skipped.add(int(U[j]))
            j += 1
    lone_inner += list(range(i, len(L)))
    return pairs, lone_inner


def match_wireguard(
    packets: pd.DataFrame, messages: pd.DataFrame, captures: pd.DataFrame, owners: dict[str, str], mtus: dict
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(wireguard table, outer rows and inner rows of the exact pairs, plaintext rows no message
    carried as far as the captures show). ``messages`` has the packet row
    and header fields of every UDP message on a WireGuard port; ``mtus`` maps (node, device) to MTU."""
    if messages.empty:
        none = np.zeros(0, np.int64)
        return conform(pd.DataFrame(), "wireguard"), none, none, none
    rows = messages["packet"].to_numpy()
    msg = messages.assign(
        node=np.asarray(packets["node"].array.take(rows), dtype=object).astype(str),
        interface=np.asarray(packets["interface"].array.take(rows), dtype=object).astype(str),
        ts_ns=packets["ts_ns"].to_numpy()[rows],
        outer_src=np.asarray(packets["outer_src"].array.take(rows), dtype=object).astype(str),
        outer_dst=np.asarray(packets["outer_dst"].array.take(rows), dtype=object).astype(str),
        outer_ip_len=packets["outer_ip_len"].to_numpy()[rows],
        udp_payload=packets["payload_len"].to_numpy()[rows],
    )
    src_owner = msg["outer_src"].map(owners).fillna("")
    dst_owner = msg["outer_dst"].map(owners).fillna("")
    tx = (src_owner == msg["node"]).to_numpy()
    rx = ~tx & (dst_owner == msg["node"]).to_numpy()
    msg["direction"] = np.select([tx, rx], ["tx", "rx"], "")
    msg["peer"] = np.select(
        [tx, rx],
        [dst_owner.where(dst_owner != "", msg["outer_dst"]), src_owner.where(src_owner != "", msg["outer_src"])],
        "",
    )
    kind = msg["msg_type"].map(MESSAGE_TYPES).fillna("unknown").to_numpy(dtype=object)
    keepalive = (msg["msg_type"] == 4).to_numpy() & (msg["udp_payload"] == KEEPALIVE_SIZE).to_numpy()
    kind[keepalive] = "keepalive"
    msg["kind"] = kind
    n = len(msg)
    match = np.where(np.isin(kind, ("initiation", "response", "cookie")), "handshake", "unmatched").astype(object)
    match[keepalive] = "keepalive"
    match[kind == "unknown"] = "unknown"
    inner_packet = np.full(n, -1, dtype=np.int64)
    inner_len = np.full(n, -1, dtype=np.int64)
    delay = np.full(n, -1, dtype=np.int64)

    plain = _plaintexts(packets, captures, owners)
    data = np.flatnonzero((kind == "data") & (msg["direction"] != "").to_numpy())
    groups = msg.iloc[data].groupby(["node", "direction", "peer"], sort=True).indices
    lone_rows: list[int] = []
    for (node, direction, peer), at in groups.items():
        rows_at = data[at]
        mine = plain[(plain["node"] == node) & (plain["direction"] == direction)]
        if mine.empty:
            match[rows_at] = "no_plaintext_capture"
            continue
        peers = set(mine["peer"])
        if peer in peers:
            mine = mine[mine["peer"] == peer]
        elif len(groups_of(groups, node, direction)) > 1:  # several peers and none named: cannot split
            match[rows_at] = "unknown_peer"
            continue
        mtu = mtus.get((node, str(mine["device"].iloc[0])), DEFAULT_MTU[WIREGUARD_DEVICES[mine["device"].iloc[0]]])
        outer = msg.iloc[rows_at].copy()
        first = outer.groupby("receiver_index")["ts_ns"].transform("min")
        order = np.lexsort((outer["counter"].to_numpy(), outer["receiver_index"].to_numpy(), first.to_numpy()))
        outer = outer.iloc[order]
        inner = mine.sort_values(["ts_ns", "packet"], kind="stable")
        pairs, lone = _walk(inner, outer, mtu, direction == "tx")
        lone_rows += inner["packet"].to_numpy()[lone].tolist()
        outer_at = rows_at[order]
        for i, j, how in pairs:
            k = outer_at[j]
            match[k] = how
            inner_packet[k] = int(inner["packet"].iloc[i])
            inner_len[k] = int(inner["ip_len"].iloc[i])
            d = int(msg["ts_ns"].iloc[k] - inner["ts_ns"].iloc[i])
            delay[k] = d if direction == "tx" else -d
    table = pd.DataFrame(
        {
            "packet": rows,
            "node": msg["node"].to_numpy(),
            "interface": msg["interface"].to_numpy(),
            "ts_ns": msg["ts_ns"].to_numpy(),
            "direction": msg["direction"].to_numpy(),
            "peer": msg["peer"].to_numpy(),
            "outer_src": msg["outer_src"].to_numpy(),
            "outer_dst": msg["outer_dst"].to_numpy(),
            "msg_type": kind,
            "receiver_index": msg["receiver_index"].to_numpy(),
            "sender_index": msg["sender_index"].to_numpy(),
            "counter": msg["counter"].to_numpy(),
            "udp_payload": msg["udp_payload"].to_numpy(),
            "inner_packet": inner_packet,
            "inner_len": inner_len,
            "match": match,
            "overhead_bytes": np.where(
                np.isin(match, ("exact", "ambiguous")), msg["outer_ip_len"].to_numpy() - inner_len, -1
            ),
            "delay_ns": delay,
        }
    )
    exact = match == "exact"
    return conform(table, "wireguard"), rows[exact], inner_packet[exact], np.asarray(lone_rows, dtype=np.int64)


def groups_of(groups: dict, node: str, direction: str) -> list:
    return [k for k in groups if k[0] == node and k[1] == direction]


def _plaintexts(packets: pd.DataFrame, captures: pd.DataFrame, owners: dict[str, str]) -> pd.DataFrame:
    """Packets on WireGuard devices, with their direction (tx: to another node) and peer node."""
    devices = captures[captures["interface"].astype(str).isin(WIREGUARD_DEVICES)]
    if devices.empty:
        return pd.DataFrame(columns=["packet", "node", "device", "direction", "peer", "ts_ns", "ip_len", "payload_len"])
    on = np.flatnonzero(np.isin(packets["capture_id"].to_numpy(), devices["capture_id"].to_numpy()))
    on = on[(packets["ip_len"].to_numpy()[on] > 0)]
    node = np.asarray(packets["node"].array.take(on), dtype=object).astype(str)
    src = pd.Series(np.asarray(packets["src"].array.take(on), dtype=object).astype(str))
    dst = pd.Series(np.asarray(packets["dst"].array.take(on), dtype=object).astype(str))
    src_owner, dst_owner = src.map(owners).fillna("").to_numpy(), dst.map(owners).fillna("").to_numpy()
    rx = dst_owner == node
    return pd.DataFrame(
        {
            "packet": on,
            "node": node,
            "device": np.asarray(packets["interface"].array.take(on), dtype=object).astype(str),
            "direction": np.where(rx, "rx", "tx"),
            "peer": np.where(rx, src_owner, dst_owner),
            "ts_ns": packets["ts_ns"].to_numpy()[on],
            "ip_len": packets["ip_len"].to_numpy()[on].astype(np.int64),
            "payload_len": packets["payload_len"].to_numpy()[on].astype(np.int64),
        }
    )


def join_matches(columns: dict, outer: np.ndarray, inner: np.ndarray) -> None:
    """Give each matched message's row its plaintext's inner fields, in place (mapped columns too),
    and mark it encap `wireguard`: the join then puts it in its plaintext's packet instance."""
    if not len(outer):
        return
    for name in INNER_COLUMNS:
        col = columns[name]
        values = col._ndarray if isinstance(col, pd.Categorical) else col
        values[outer] = values[inner]
    encap = columns["encap"]
    encap._ndarray[outer] = list(encap.categories).index("wireguard")
    columns["encap_depth"][outer] = 1
