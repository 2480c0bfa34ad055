"""What the join keys a packet on: its fingerprint, with its first payload bytes or without them.

The fingerprint hashes a packet's first 16 payload bytes with its header fields. A capture cut
short (`tcpdump -s 128`, a header-only habit) holds fewer of them, and fewer still inside VXLAN,
where the payload starts 50 bytes later than on the pod's veth: the copies of one packet would hash
differently and never match. So when any capture of a bundle declares a snap length that short,
every packet is keyed by its header fields alone (IP id, TCP seq/ack/flags, lengths, ICMP fields,
fragment offset). Packets those cannot tell apart (UDP with IP id 0 and equal lengths) join as
ambiguous, and are counted so; the report says the bundle was matched this way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..ingest.parsers.packet_columns import FINGERPRINT_FIELDS
from ..ingest.parsers.packets_reference import fingerprint_of, payload_hash_of_nothing
from ..runtime.memory import WRITE_BACK_ROWS, write_back

SHORT_SNAPLEN = 512  # a capture cut shorter than this may cut a packet before its first payload bytes


def cut_short(captures: pd.DataFrame) -> pd.DataFrame:
    """The captures whose declared snap length may cut a packet before its first payload bytes."""
    snaplen = captures["snaplen"].to_numpy()
    return captures[(snaplen > 0) & (snaplen < SHORT_SNAPLEN)]


def header_fingerprints(columns: dict) -> None:
    """Every packet's fingerprint from its header fields alone, in place (mapped columns too), a run
    of rows at a time. A cut frame's payload length is first made the declared one: the bytes cut
    off its end are the innermost packet's last (TCP, ICMP and later fragments count what is there;
    UDP's length field already says it)."""
    fingerprint, payload_len = columns["fingerprint"], columns["payload_len"]
    nothing = np.full(min(len(fingerprint), WRITE_BACK_ROWS), payload_hash_of_nothing(), dtype=np.uint64)
    for lo in range(0, len(fingerprint), WRITE_BACK_ROWS):
        hi = min(len(fingerprint), lo + WRITE_BACK_ROWS)
        cut = np.asarray(columns["wirelen"][lo:hi], dtype=np.int64) - np.asarray(columns["caplen"][lo:hi])
        counted = (np.asarray(columns["proto"][lo:hi]) != 17) | (np.asarray(columns["frag_offset"][lo:hi]) > 0)
        grow = (cut > 0) & counted & (np.asarray(payload_len[lo:hi]) >= 0)
        payload_len[lo:hi][grow] += cut[grow].astype(payload_len.dtype)
        fields = tuple(np.asarray(columns[name][lo:hi]) for name in FINGERPRINT_FIELDS)
        fingerprint[lo:hi] = fingerprint_of(nothing[: hi - lo], fields)
        write_back(fingerprint[lo:hi])
        write_back(payload_len[lo:hi])
