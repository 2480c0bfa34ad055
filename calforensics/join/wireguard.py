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
just after it if the skip was decided by size alone: which of the two was lost cannot be told. Only
`exact` pairs join their plaintext's packet instance: the message's row in the packets table takes the
plaintext's inner fields (encap `wireguard`), so flows, overhead and latency cross the encrypted hop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..ingest.parsers.wireguard import KEEPALIVE_SIZE
from ..meaning.routing import WIREGUARD_DEVICES, route_gateway
from ..schema import conform

DEFAULT_MTU = {4: 1440, 6: 1420}  # Calico's defaults at a 1500-byte host MTU (host MTU - 60 / - 80)
OVERHEAD = 32  # WireGuard data header 16 + Poly1305 tag 16, on top of the padded plaintext
WINDOW_NS = 1_000_000_000  # a plaintext and its message are at most this far apart on one node
MAX_SEGMENTS = 64  # a 64 KiB GSO super-packet at a 1420-byte MTU leaves as 47 messages
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


def _lockstep(inner: pd.DataFrame, outer: pd.DataFrame, mtu: int, tx: bool) -> tuple | None:
    """The common case at whole-array speed: as many plaintexts as messages, none larger than the
    MTU, every size as the rule says and every message in time for its plaintext, so the k-th
    plaintext went in the k-th message. None if any of that fails."""
    L = inner["ip_len"].to_numpy().astype(np.int64)
    U = outer["udp_payload"].to_numpy().astype(np.int64)
    if len(L) != len(U) or not len(L) or (mtu < L).any():
        return None
    want = OVERHEAD + np.minimum(mtu, (L + 15) // 16 * 16)
    d = outer["ts_ns"].to_numpy() - inner["ts_ns"].to_numpy()
    d = d if tx else -d
    if not ((want == U).all() and (d >= 0).all() and (d <= WINDOW_NS).all()):
        return None
    at = np.arange(len(L), dtype=np.int64)
    return at, at, np.full(len(L), "exact", dtype=object)


MATCH_KINDS = [
    "unmatched",
    "exact",
    "ambiguous",
    "segment",
    "keepalive",
    "handshake",
    "no_plaintext_capture",
    "unknown_peer",
    "unknown",
]
TYPE_NAMES = ["unknown", "initiation", "response", "cookie", "data", "keepalive"]
DIRECTIONS = ["", "tx", "rx"]


def _codes(packets: pd.DataFrame, column: str, rows: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    cat = packets[column].array
    return np.asarray(cat.codes[rows], dtype=np.int64), cat.categories


def _owner_ids(categories: pd.Index, owners: dict[str, str], nodes: list[str]) -> np.ndarray:
    """Per address category (plus a trailing -1 for no address): the index of its owner node, or -1."""
    index = {n: k for k, n in enumerate(nodes)}
    return np.asarray([index.get(owners.get(str(a), ""), -1) for a in categories] + [-1], dtype=np.int64)


@dataclass
class _Messages:
    """Every message's facts as arrays (row i: the message at packet row ``rows[i]``), and what the
    match writes for it: its kind, the plaintext it carried, that plaintext's length, the delay."""

    rows: np.ndarray
    node: np.ndarray  # code into ``nodes``
    nodes: list[str]
    direction: np.ndarray  # 0 neither end is this node, 1 sent, 2 received
    peer: np.ndarray  # code into ``peer_labels`` (-1: none)
    peer_labels: np.ndarray
    ts: np.ndarray
    udp_payload: np.ndarray
    kind: np.ndarray  # index into TYPE_NAMES
    receiver: np.ndarray
    counter: np.ndarray
    match: np.ndarray
    inner_packet: np.ndarray
    inner_len: np.ndarray
    delay: np.ndarray


def match_wireguard(
    packets: pd.DataFrame,
    messages: pd.DataFrame,
    owners: dict[str, str],
    mtus: dict,
    routes: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(wireguard table, outer rows and inner rows of the exact pairs, plaintext rows no message
    carried as far as the captures show). ``messages`` has the packet row and header fields of every
    UDP message on a WireGuard port; ``mtus`` maps (node, device) to MTU; ``routes`` tell a
    plaintext's peer node when the bundle does not know who owns its remote address. Addresses and
    names are worked on as category codes: a busy node pair has millions of messages."""
    none = np.zeros(0, np.int64)
    if messages.empty:
        return conform(pd.DataFrame(), "wireguard"), none, none, none
    m = _messages(packets, messages, owners)
    plain = _plaintexts(packets, owners, m.nodes, routes)
    data = np.flatnonzero((m.kind == 4) & (m.direction > 0))
    group_of = pd.DataFrame({"node": m.node[data], "direction": m.direction[data], "peer": m.peer[data]})
    groups = group_of.groupby(["node", "direction", "peer"], sort=True).indices
    lone_rows = [_pair_group(m, data[at], key, groups, plain, mtus) for key, at in groups.items()]
    exact = m.match == MATCH_KINDS.index("exact")
    lone = np.concatenate(lone_rows) if lone_rows else none
    return _table(packets, messages, m), m.rows[exact], m.inner_packet[exact], lone.astype(np.int64)


def _messages(packets: pd.DataFrame, messages: pd.DataFrame, owners: dict[str, str]) -> _Messages:
    """Each message's node, direction (by which end that node owns), peer, kind, and the match of the
    kinds that carry no plaintext (handshakes, keepalives, unknown types)."""
    rows = messages["packet"].to_numpy().astype(np.int64)
    n = len(rows)
    node, nodes = _codes(packets, "node", rows)
    nodes = [str(x) for x in nodes]
    src, src_cats = _codes(packets, "outer_src", rows)
    dst, dst_cats = _codes(packets, "outer_dst", rows)
    src_owner = _owner_ids(src_cats, owners, nodes)[src]
    dst_owner = _owner_ids(dst_cats, owners, nodes)[dst]
    tx = src_owner == node
    rx = ~tx & (dst_owner == node)
    direction = np.select([tx, rx], [1, 2], 0)
    # the peer: its node where the address is a known node's, else the address itself
    k = len(nodes)
    peer = np.select(
        [tx & (dst_owner >= 0), tx, rx & (src_owner >= 0), rx],
        [dst_owner, k + len(src_cats) + dst, src_owner, k + src],
        -1,
    )
    peer_labels = np.asarray(nodes + [str(a) for a in src_cats] + [str(a) for a in dst_cats], dtype=object)
    udp_payload = packets["payload_len"].to_numpy()[rows].astype(np.int64)
    msg_type = messages["msg_type"].to_numpy().astype(np.int64)
    kind = np.where((msg_type >= 1) & (msg_type <= 4), msg_type, 0)
    keepalive = (msg_type == 4) & (udp_payload == KEEPALIVE_SIZE)
    kind[keepalive] = 5
    match = np.where((kind >= 1) & (kind <= 3), MATCH_KINDS.index("handshake"), 0).astype(np.int8)
    match[keepalive] = MATCH_KINDS.index("keepalive")
    match[kind == 0] = MATCH_KINDS.index("unknown")
    return _Messages(
        rows,
        node,
        nodes,
        direction,
        peer,
        peer_labels,
        packets["ts_ns"].to_numpy()[rows],
        udp_payload,
        kind,
        messages["receiver_index"].to_numpy().astype(np.int64),
        messages["counter"].to_numpy().astype(np.int64),
        match,
        np.full(n, -1, dtype=np.int64),
        np.full(n, -1, dtype=np.int64),
        np.full(n, -1, dtype=np.int64),
    )


def _pair_group(
    m: _Messages, rows_at: np.ndarray, key: tuple, groups: dict, plain: pd.DataFrame, mtus: dict
) -> np.ndarray:
    """Pair one (node, direction, peer)'s data messages with that node's plaintexts, writing the
    match into ``m``; returns the plaintext rows no message carried."""
    g_node, g_dir, g_peer = key
    none = np.zeros(0, np.int64)
    mine = plain[(plain["node"] == g_node) & (plain["direction"] == g_dir)]
    if mine.empty:
        m.match[rows_at] = MATCH_KINDS.index("no_plaintext_capture")
        return none
    alone = sum(1 for other in groups if other[:2] == (g_node, g_dir)) == 1
    if g_peer < len(m.nodes):  # plaintexts to or from that node; with no other peer, those of unknown peer too
        mine = mine[(mine["peer"] == g_peer) | ((mine["peer"] < 0) & alone)]
    elif not alone:  # the messages' peer is not a known node, and there are several: cannot split
        m.match[rows_at] = MATCH_KINDS.index("unknown_peer")
        return none
    device = str(mine["device"].iloc[0])
    mtu = mtus.get((m.nodes[g_node], device), DEFAULT_MTU[WIREGUARD_DEVICES.get(device, 4)])
    # messages in session order (first seen), then counter order
    ts, receiver = m.ts[rows_at], m.receiver[rows_at]
    first = pd.Series(ts).groupby(receiver).transform("min").to_numpy()
    order = np.lexsort((m.counter[rows_at], receiver, first))
    outer = pd.DataFrame({"udp_payload": m.udp_payload[rows_at][order], "ts_ns": ts[order]})
    inner = mine.sort_values(["ts_ns", "packet"], kind="stable").reset_index(drop=True)
    sending = g_dir == 1
    lone = none
    pairs = _lockstep(inner, outer, mtu, sending)
    if pairs is None:  # something lost, split or out of time: walk it
        walked, lone_at = _walk(inner, outer, mtu, sending)
        lone = inner["packet"].to_numpy()[lone_at]
        pairs = (
            np.asarray([p[0] for p in walked], dtype=np.int64),
            np.asarray([p[1] for p in walked], dtype=np.int64),
            np.asarray([MATCH_KINDS.index(p[2]) for p in walked], dtype=np.int8),
        )
    else:
        pairs = (pairs[0], pairs[1], np.full(len(pairs[0]), MATCH_KINDS.index("exact"), dtype=np.int8))
    i, j, how = pairs
    at_rows = rows_at[order][j]
    m.match[at_rows] = how
    m.inner_packet[at_rows] = inner["packet"].to_numpy()[i]
    m.inner_len[at_rows] = inner["ip_len"].to_numpy()[i]
    d = m.ts[at_rows] - inner["ts_ns"].to_numpy()[i]
    m.delay[at_rows] = d if sending else -d
    return lone


def _table(packets: pd.DataFrame, messages: pd.DataFrame, m: _Messages) -> pd.DataFrame:
    rows = m.rows
    single = np.isin(m.match, (MATCH_KINDS.index("exact"), MATCH_KINDS.index("ambiguous")))
    outer_ip_len = packets["outer_ip_len"].to_numpy()[rows].astype(np.int64)
    peer_codes, peer_names = pd.factorize(np.where(m.peer >= 0, m.peer_labels[np.maximum(m.peer, 0)], ""))
    table = pd.DataFrame(
        {
            "packet": rows,
            "node": pd.Categorical.from_codes(m.node, categories=m.nodes),
            "interface": packets["interface"].array.take(rows),
            "ts_ns": m.ts,
            "direction": pd.Categorical.from_codes(m.direction, categories=DIRECTIONS),
            "peer": pd.Categorical.from_codes(peer_codes, categories=pd.Index(peer_names, dtype=object)),
            "outer_src": packets["outer_src"].array.take(rows),
            "outer_dst": packets["outer_dst"].array.take(rows),
            "msg_type": pd.Categorical.from_codes(m.kind, categories=TYPE_NAMES),
            "receiver_index": m.receiver,
            "sender_index": messages["sender_index"].to_numpy().astype(np.int64),
            "counter": m.counter,
            "udp_payload": m.udp_payload,
            "inner_packet": m.inner_packet,
            "inner_len": m.inner_len,
            "match": pd.Categorical.from_codes(m.match, categories=MATCH_KINDS),
            "overhead_bytes": np.where(single, outer_ip_len - m.inner_len, -1),
            "delay_ns": m.delay,
        }
    )
    return conform(table, "wireguard")


def _plaintexts(
    packets: pd.DataFrame, owners: dict[str, str], nodes: list[str], routes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Packets on WireGuard devices: node (index into ``nodes``), device, direction (1 tx: to another
    node, 2 rx: to this one) and peer (the other node's index, -1 unknown). A remote address no node
    of the bundle owns gets its peer from the node's route to it (`<pod block> via <node>`)."""
    # by each packet's own interface: an `-i any` capture holds the WireGuard device's packets too
    interface = packets["interface"].array
    wanted = [k for k, name in enumerate(interface.categories) if str(name) in WIREGUARD_DEVICES]
    columns = ["packet", "node", "device", "direction", "peer", "ts_ns", "ip_len", "payload_len"]
    if not wanted:
        return pd.DataFrame(columns=columns)
    on = np.flatnonzero(np.isin(interface.codes, wanted))
    on = on[(packets["ip_len"].to_numpy()[on] > 0)]
    node = np.asarray(packets["node"].array.codes[on], dtype=np.int64)
    src, src_cats = _codes(packets, "src", on)
    dst, dst_cats = _codes(packets, "dst", on)
    src_owner = _owner_ids(src_cats, owners, nodes)[src]
    dst_owner = _owner_ids(dst_cats, owners, nodes)[dst]
    # received: to this node's pod, or (that pod unknown to the bundle) from another node's
    rx = (dst_owner == node) | ((dst_owner < 0) & (src_owner >= 0) & (src_owner != node))
    peer = np.where(rx, src_owner, dst_owner)
    if routes is not None and len(routes) and (peer < 0).any():
        remote = np.where(rx, src, np.where(dst >= 0, len(src_cats) + dst, -1))  # ids over both vocabularies
        labels = [str(a) for a in src_cats] + [str(a) for a in dst_cats]
        index = {n: i for i, n in enumerate(nodes)}
        unknown = np.flatnonzero(peer < 0)
        pairs, inverse = np.unique(np.stack([node[unknown], remote[unknown]]), axis=1, return_inverse=True)
        found = [
            index.get(owners.get(route_gateway(routes, nodes[n], labels[a]), ""), -1) if a >= 0 else -1
            for n, a in pairs.T.tolist()
        ]
        peer[unknown] = np.asarray(found, dtype=np.int64)[inverse.ravel()]
    iface, iface_cats = _codes(packets, "interface", on)
    return pd.DataFrame(
        {
            "packet": on,
            "node": node,
            "device": np.asarray([str(x) for x in iface_cats] + [""], dtype=object)[iface],
            "direction": np.where(rx, 2, 1),
            "peer": peer,
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
