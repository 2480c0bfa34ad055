"""Capture filters: what a capture could not have shown, so that its silence is not read as a drop.

`tcpdump -i any -n host A and host B` (the seed's tracing experiment) never takes the VXLAN or IPIP
copies on the uplink, whose outer addresses are the nodes', nor a packet SNATed to the node's
address. A capture filter is not in a classic pcap, so it is inferred: the addresses every IP
packet of a capture has as its outermost source or destination. A pod's veth always shows its
pod's address and an uplink its node's: that is no filter, only the path. An `-i any` or uplink
capture whose every packet has an address that is not its node's (nor one of its pods') was
filtered to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_PACKETS = 10  # fewer IP packets than this say nothing of a filter
DENSE_COUNTS = 1 << 21  # captures x addresses up to this are counted in one array (16 MiB at most)
# captures whose packets, unfiltered, have no address in common beyond their node's: an `-i any`
# capture, an uplink's (a pod's veth, or a tunnel device in a quiet run, may well show one pod only)
FILTERED_ROLES = ("any", "uplink")


def common_hosts(packets: pd.DataFrame, block_rows: int = 1 << 18) -> dict[int, frozenset[str]]:
    """capture_id -> the addresses every IP packet of the capture has as its outermost source or
    destination (empty when no address is in all, or the capture has few IP packets). Read a block
    of rows at a time, small: each row's keys take some 50 bytes while counted (the table may be
    spilled under a memory limit)."""
    if not len(packets):
        return {}
    cap = packets["capture_id"].to_numpy()
    version = packets["ip_version"].to_numpy()
    src, dst = packets["outer_src"].array, packets["outer_dst"].array
    n_caps = int(cap.max()) + 1
    names = pd.Index(src.categories).union(pd.Index(dst.categories))  # one numbering for both columns
    n_addr = len(names) + 1  # the last: no address
    to_name = [np.r_[names.get_indexer(col.categories), n_addr - 1] for col in (src, dst)]
    # counted by capture * n_addr + address: in one array where that is small, else sparsely
    dense = n_caps * n_addr <= DENSE_COUNTS
    counted = np.zeros(n_caps * n_addr if dense else 0, dtype=np.int64)
    with_addr = pd.Series(dtype=np.int64)
    ip_packets = np.zeros(n_caps, dtype=np.int64)
    for lo in range(0, len(packets), block_rows):
        hi = min(len(packets), lo + block_rows)
        ip = version[lo:hi] > 0
        c = cap[lo:hi][ip].astype(np.int64)
        s, d = (lut[np.asarray(col.codes[lo:hi])[ip]] for lut, col in zip(to_name, (src, dst), strict=True))
        ip_packets += np.bincount(c, minlength=n_caps)
        keys = np.r_[c * n_addr + d, (c * n_addr + s)[s != d]]  # an address counted once a packet
        if dense:
            counted += np.bincount(keys, minlength=n_caps * n_addr)
        else:
            keys, counts = np.unique(keys, return_counts=True)
            with_addr = with_addr.add(pd.Series(counts, index=keys), fill_value=0)
    if dense:
        keys = np.flatnonzero(counted)
        with_addr = pd.Series(counted[keys], index=keys)
    keys, counts = with_addr.index.to_numpy(np.int64), with_addr.to_numpy(np.int64)
    capture, address = keys // n_addr, keys % n_addr
    everywhere = (counts == ip_packets[capture]) & (address < n_addr - 1) & (ip_packets[capture] >= MIN_PACKETS)
    out: dict[int, set[str]] = {int(c): set() for c in np.flatnonzero(ip_packets >= MIN_PACKETS)}
    for c, a in zip(capture[everywhere].tolist(), address[everywhere].tolist(), strict=True):
        out[c].add(str(names[a]))
    return {c: frozenset(hosts) for c, hosts in out.items()}


def assumed_filters(
    hosts: dict[int, frozenset[str]], captures: pd.DataFrame, owners: dict[str, str]
) -> dict[int, str]:
    """capture_id -> the filter each filtered capture ran with: the one it records (pcapng
    if_filter), else, for `-i any` and uplink captures whose every packet has an address that is not
    its node's own (``owners``: address -> node, pods included), `host A and host B` of those."""
    out = {}
    for r in captures.itertuples(index=False):
        recorded = str(getattr(r, "capture_filter", "") or "")
        if recorded:
            out[int(r.capture_id)] = recorded
            continue
        if str(r.role) not in FILTERED_ROLES:
            continue
        common = hosts.get(int(r.capture_id), frozenset())
        named = {a for a in common if owners.get(a) != str(r.node)}
        if named:
            out[int(r.capture_id)] = filter_text(common)
    return out


def filtered_points(filters: dict[int, str], captures: pd.DataFrame) -> dict[str, str]:
    """The assumed filters by capture point: `node:interface`, or `node:*` for an `-i any` capture."""
    out = {}
    for r in captures.itertuples(index=False):
        if int(r.capture_id) in filters:
            label = f"{r.node}:*" if str(r.role) == "any" else f"{r.node}:{r.interface}"
            out[label] = filters[int(r.capture_id)]
    return out


def filter_text(hosts: frozenset[str]) -> str:
    return " and ".join(f"host {h}" for h in sorted(hosts))
