"""Fragments: every IP datagram put back together at each capture point, before the join.

A pod fragments a datagram at its own MTU, a node refragments it for a smaller tunnel MTU, and
conntrack defragments and refragments it on the way: the fragments differ from point to point, the
datagram does not. So fragments are grouped per capture point (capture and interface) by the
datagram's identity (IP version, addresses, protocol, IP id) and time. A datagram whose fragments
cover it from offset 0 to a last one with MF clear is complete: its first fragment stands for it in
the join, with the whole datagram's fingerprint and length, and its later fragments are left out of
the join (the packets table keeps every frame). Gaps, overlaps, fragments further apart than the
kernel's reassembly time and datagrams in too many pieces are anomalies; their fragments join one
by one, as before. Everything is sorts and segment reductions over the fragment rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..ingest.parsers.packet_columns import FINGERPRINT_FIELDS
from ..ingest.parsers.packets_reference import fingerprint_of, payload_hash_of_nothing

REASSEMBLY_TIMEOUT_NS = 30_000_000_000  # Linux ipfrag_time: fragments further apart are not one datagram
MAX_FRAGMENTS = 1024  # more pieces than this is an attack or a broken capture, not a datagram to rebuild
IPV4_HEADER = (20, 60)  # the IPv4 header's least and greatest length
IPV6_HEADER = (48, 1024)  # the IPv6 header with its fragment header (and any other extension headers)
FRAGMENT_COLUMNS = (
    *("capture_id", "interface", "frame", "ts_ns", "ip_version", "src", "dst", "proto", "ip_id"),
    *("frag_offset", "more_fragments", "ip_len", "outer_ip_len", "payload_len", "caplen", "wirelen", "status"),
)


@dataclass
class Datagrams:
    """The complete datagrams of a packets table, one entry per datagram at each capture point."""

    first: np.ndarray  # packets row of each one's first fragment, ascending
    fragments: np.ndarray  # how many fragments it was in there
    largest: np.ndarray  # the IP length of its largest fragment there
    fragment_bytes: np.ndarray  # its fragments' IP lengths, summed
    outer_bytes: np.ndarray  # the outer IP lengths of the frames that carried them (encapsulated or not), summed
    length: np.ndarray  # the whole datagram's IP length
    payload_len: np.ndarray  # the whole datagram's L4 payload length
    fingerprint: np.ndarray  # the whole datagram's fingerprint
    later: np.ndarray  # packets rows of their later fragments, ascending (left out of the join)

    def __len__(self) -> int:
        return len(self.first)

    def at(self, rows: np.ndarray) -> np.ndarray:
        """For each packets row, the index of the datagram it is the first fragment of, else -1."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(self.first):
            return np.full(len(rows), -1, dtype=np.int64)
        pos = np.searchsorted(self.first, rows).clip(0, len(self.first) - 1)
        return np.where(self.first[pos] == rows, pos, -1)

    def value(self, name: str, at: np.ndarray, otherwise: np.ndarray) -> np.ndarray:
        """A field of the datagrams at indexes ``at`` (from ``at()``), ``otherwise`` where it is -1."""
        padded = np.r_[getattr(self, name), 0]  # index -1 reads the pad
        return np.where(at >= 0, padded[at], otherwise)

    def join_mask(self, n: int) -> np.ndarray | None:
        """Which of ``n`` packets rows the join takes (None: all of them)."""
        if not len(self.later):
            return None
        keep = np.ones(n, dtype=bool)
        keep[self.later] = False
        return keep


def empty_datagrams() -> Datagrams:
    none = np.zeros(0, dtype=np.int64)
    return Datagrams(none, none, none, none, none, none, none, np.zeros(0, dtype=np.uint64), none)


def fragment_rows(packets: pd.DataFrame, block_rows: int = 1 << 22) -> np.ndarray:
    """Rows of the packets that are IP fragments, read a block at a time (the table may be mapped)."""
    more, offset = packets["more_fragments"].to_numpy(), packets["frag_offset"].to_numpy()
    found = [
        lo + np.flatnonzero(more[lo : lo + block_rows] | (offset[lo : lo + block_rows] > 0))
        for lo in range(0, len(packets), block_rows)
    ]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _codes(values: object) -> np.ndarray:
    """Integer codes of a column's values (a categorical's own codes, else factorized)."""
    if isinstance(values, pd.Categorical):
        return values.codes.astype(np.int64)
    return pd.factorize(np.asarray(values))[0].astype(np.int64)


def reassemble(
    packets: pd.DataFrame, block_rows: int = 1 << 22, payload_bytes: bool = True
) -> tuple[Datagrams, list[tuple[int, str, str, str]]]:
    """(the complete datagrams, anomalies as (capture_id, location, kind, detail) rows); the
    datagrams' fingerprints are made as the packets' are (``payload_bytes``: with them, see keys.py)."""
    rows = fragment_rows(packets, block_rows)
    if not len(rows):
        return empty_datagrams(), []
    frag = pd.DataFrame({c: packets[c].array.take(rows) for c in FRAGMENT_COLUMNS})
    frag = frag[(frag["status"].astype(str) == "ok").to_numpy() & frag["ip_version"].isin([4, 6]).to_numpy()]
    frag["row"] = rows[frag.index.to_numpy()]
    if frag.empty:
        return empty_datagrams(), []
    # the datagram's identity at its point, column by column: one lexsort, then runs (no hashing)
    identity = [
        _codes(frag[col].array) if col in ("interface", "src", "dst") else frag[col].to_numpy(np.int64)
        for col in ("capture_id", "interface", "ip_version", "src", "dst", "proto", "ip_id")
    ]
    ts = frag["ts_ns"].to_numpy(np.int64)
    order = np.lexsort((ts, *reversed(identity)))
    frag = frag.iloc[order].reset_index(drop=True)
    ts = ts[order]
    other = np.zeros(len(frag) - 1, dtype=bool)
    for column in identity:
        column = column[order]
        other |= column[1:] != column[:-1]
    new = np.r_[True, other | (ts[1:] - ts[:-1] > REASSEMBLY_TIMEOUT_NS)]
    frag["datagram"] = np.cumsum(new) - 1
    datagrams, problems = _complete(frag)
    return _with_fingerprints(datagrams, packets, payload_bytes), problems


def _complete(frag: pd.DataFrame) -> tuple[Datagrams, list[tuple[int, str, str, str]]]:
    """Check each candidate datagram's fragments in offset order and rebuild the complete ones."""
    frag = frag.sort_values(["datagram", "frag_offset"], kind="stable").reset_index(drop=True)
    dg = frag["datagram"].to_numpy()
    offset = frag["frag_offset"].to_numpy(np.int64)
    ip_len = frag["ip_len"].to_numpy(np.int64)
    v6 = frag["ip_version"].to_numpy() == 6
    whole_frame = frag["caplen"].to_numpy() >= frag["wirelen"].to_numpy()
    header_least = np.where(v6, IPV6_HEADER[0], IPV4_HEADER[0])
    # a later fragment's bytes: its IP payload, from its own header length where the frame is whole
    header = np.where(whole_frame, ip_len - frag["payload_len"].to_numpy(np.int64), header_least)
    size = ip_len - header
    starts = np.flatnonzero(np.r_[True, dg[1:] != dg[:-1]])
    stops = np.r_[starts[1:], len(frag)]
    count = stops - starts
    last = stops - 1
    nxt_offset = np.r_[offset[1:], -1]
    same_next = np.r_[dg[1:] == dg[:-1], False]
    # the first fragment's header length is what its length leaves over the second one's offset
    first_header = np.where(count > 1, ip_len[starts] - nxt_offset[starts], -1)
    head_ok = (first_header >= header_least[starts]) & (first_header <= np.where(v6[starts], IPV6_HEADER[1], 60))
    later_joins = np.ones(len(frag), dtype=bool)  # each later fragment starts where the one before ended
    inner = same_next & np.r_[False, same_next[:-1]]  # a fragment with fragments on both sides
    later_joins[inner] = (offset + size)[inner] == nxt_offset[inner]
    joins = np.logical_and.reduceat(later_joins, starts) if len(frag) else np.zeros(0, dtype=bool)
    more = frag["more_fragments"].to_numpy()
    ends = ~more[last]
    duplicate = np.r_[same_next[:-1] & (offset[1:] == offset[:-1]), False]
    has_duplicate = np.logical_or.reduceat(duplicate, starts) if len(frag) else np.zeros(0, dtype=bool)
    begins = offset[starts] == 0
    too_many = count > MAX_FRAGMENTS
    ok = begins & ends & (count > 1) & head_ok & joins & ~has_duplicate & ~too_many
    problems = _problems(frag, starts, ok, begins, ends, head_ok, joins, has_duplicate, too_many)
    good = np.flatnonzero(ok)
    if not len(good):
        return empty_datagrams(), problems
    s, e = starts[good], last[good]
    length = first_header[good] - np.where(v6[s], 8, 0) + offset[e] + size[e]
    first_payload = frag["payload_len"].to_numpy(np.int64)[s]
    later_bytes = length - (ip_len[s] - np.where(v6[s], 8, 0))  # what the later fragments add
    udp = frag["proto"].to_numpy()[s] == 17  # UDP's length field already counts the whole datagram
    payload = np.where(udp, first_payload, first_payload + later_bytes)
    largest = np.maximum.reduceat(ip_len, starts)[good]
    fragment_bytes = np.add.reduceat(ip_len, starts)[good]
    outer_bytes = np.add.reduceat(frag["outer_ip_len"].to_numpy(np.int64), starts)[good]
    member = np.repeat(ok, count)
    first_of = np.zeros(len(frag), dtype=bool)
    first_of[starts] = True
    order = np.argsort(frag["row"].to_numpy()[s], kind="stable")
    return Datagrams(
        first=frag["row"].to_numpy()[s][order],
        fragments=count[good][order],
        largest=largest[order],
        fragment_bytes=fragment_bytes[order],
        outer_bytes=outer_bytes[order],
        length=length[order],
        payload_len=payload[order],
        fingerprint=np.zeros(0, dtype=np.uint64),
        later=np.sort(frag["row"].to_numpy()[member & ~first_of]),
    ), problems


def _problems(
    frag: pd.DataFrame,
    starts: np.ndarray,
    ok: np.ndarray,
    begins: np.ndarray,
    ends: np.ndarray,
    head_ok: np.ndarray,
    joins: np.ndarray,
    duplicate: np.ndarray,
    too_many: np.ndarray,
) -> list[tuple[int, str, str, str]]:
    """One anomaly row per capture point and kind of trouble, naming a few of the frames."""
    kind = np.select(
        [too_many, duplicate, ~begins, ~ends, ~(head_ok & joins)],
        [
            "too_many_fragments",
            "overlapping_fragments",
            "first_fragment_missing",
            "last_fragment_missing",
            "fragment_gap",
        ],
        default="",
    )
    bad = np.flatnonzero(~ok & (kind != ""))
    if not len(bad):
        return []
    table = pd.DataFrame(
        {
            "capture_id": frag["capture_id"].to_numpy()[starts[bad]],
            "interface": frag["interface"].astype(str).to_numpy()[starts[bad]],
            "frame": frag["frame"].to_numpy()[starts[bad]],
            "kind": kind[bad],
            "src": frag["src"].astype(str).to_numpy()[starts[bad]],
            "dst": frag["dst"].astype(str).to_numpy()[starts[bad]],
        }
    )
    out = []
    what = {
        "too_many_fragments": f"more than {MAX_FRAGMENTS} fragments",
        "overlapping_fragments": "two fragments at one offset",
        "first_fragment_missing": "no fragment at offset 0",
        "last_fragment_missing": "no last fragment (MF clear)",
        "fragment_gap": "fragments that do not meet",
    }
    for (cap, iface, k), g in table.groupby(["capture_id", "interface", "kind"], sort=True):
        frames = ", ".join(str(int(f)) for f in g["frame"].head(5))
        out.append(
            (
                int(cap),
                f"frame {frames}" if len(g) == 1 else f"frames {frames}{', ...' if len(g) > 5 else ''}",
                str(k),
                f"{len(g)} datagram(s) at {iface} not reassembled ({what[str(k)]}), e.g. {g['src'].iloc[0]} -> "
                f"{g['dst'].iloc[0]}: their fragments are joined one by one",
            )
        )
    return out


def _with_fingerprints(datagrams: Datagrams, packets: pd.DataFrame, payload_bytes: bool = True) -> Datagrams:
    """The datagrams with the fingerprint each would have had unfragmented: its first fragment's
    fields with the whole payload length (the payload hash covers the first bytes only), and for
    IPv6 no id (an unfragmented IPv6 packet has none)."""
    if not len(datagrams):
        return datagrams
    rows = datagrams.first
    v6 = packets["ip_version"].to_numpy()[rows] == 6
    fields = []
    for name in FINGERPRINT_FIELDS:
        values = packets[name].to_numpy()[rows]
        if name == "payload_len":
            values = datagrams.payload_len
        elif name == "ip_id":  # an IPv6 fragment id is not the datagram's: a node that refragments
            values = np.where(v6, -1, values)  # (conntrack defragments, then fragments anew) picks its own
        fields.append(values)
    hashed = packets["payload_hash"].to_numpy()[rows]
    if not payload_bytes:
        hashed = np.full(len(rows), payload_hash_of_nothing(), dtype=np.uint64)
    datagrams.fingerprint = fingerprint_of(hashed, tuple(fields))
    return datagrams


def mark_datagrams(columns: dict, datagrams: Datagrams) -> None:
    """Give each complete datagram's first fragment the datagram's fingerprint, in place (mapped
    columns too): the join then matches it with the same datagram fragmented otherwise elsewhere."""
    if len(datagrams):
        columns["fingerprint"][datagrams.first] = datagrams.fingerprint
