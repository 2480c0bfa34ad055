"""Conformance over the shared corpus of real public captures (broken ones included)."""

import csv

import pytest
from pktutil import decode
from tshark_compare import our_frames, tshark_frames

# Frames where tshark and we disagree on purpose, with the reason.
KNOWN_DIVERGENCES = {
    # BIG TCP / GSO super-packets: IPv4 total length 0 (or IPv6 payload length 0) and UDP length 0.
    # tshark marks them malformed and stops at the outer UDP; we take the captured length as the
    # real one (as the kernel does) and decode the VXLAN payload.
    "pcaps/tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap": "big-tcp",
    "pcaps/tcpdump__bigtcp-ipv6-vxlan-ipv6.pcap": "big-tcp",
}
DECODE_AS = {"pcaps/tcpdump__vxlan_port_8472.pcap": ["-d", "udp.port==8472,vxlan"]}


def manifest(corpus):
    with open(corpus / "MANIFEST.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_every_corpus_file_reads_without_exception(corpus):
    rows = manifest(corpus)
    assert len(rows) >= 50
    for row in rows:
        df, log, fi = decode(corpus / row["file"])
        assert len(df) == len(fi)
        if row["tshark_ok"] == "no" or row["notes"].startswith("broken"):
            damaged = len(log.rows) + int((df["status"] != "ok").sum()) if len(df) else len(log.rows)
            assert damaged > 0, f"{row['file']}: broken file produced no anomaly"


def test_frame_counts_match_tshark_where_it_reads_cleanly(corpus):
    for row in manifest(corpus):
        if row["tshark_ok"] != "yes":
            continue
        df, _, _ = decode(corpus / row["file"])
        custom_blocks = 3 if "test202" in row["file"] else 0  # pcapng custom blocks tshark counts as frames
        assert len(df) + custom_blocks == int(row["packets"]), row["file"]


def test_innermost_addresses_ports_protocol_match_tshark(corpus, tshark):
    compared = 0
    for row in manifest(corpus):
        if row["tshark_ok"] != "yes" or row["file"] in KNOWN_DIVERGENCES:
            continue
        path = corpus / row["file"]
        df, _, _ = decode(path)
        theirs = tshark_frames(str(path), DECODE_AS.get(row["file"]))
        ours = our_frames(df)
        assert len(theirs) == len(ours), row["file"]
        for a, b in zip(theirs, ours, strict=True):
            key_a = (a["src"], a["dst"], a["l4"], a["sport"], a["dport"])
            key_b = (b["src"], b["dst"], b["l4"], b["sport"], b["dport"])
            assert key_a == key_b, f"{row['file']} frame {a['frame']}"
            compared += 1
    assert compared > 400


# what each known divergence decodes to: the inner TCP of the VXLAN payload, the outer tunnel ends
DEEPER = {
    "pcaps/tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap": ("192.168.1.2", "192.168.1.1", "10.25.132.11"),
    "pcaps/tcpdump__bigtcp-ipv6-vxlan-ipv6.pcap": ("fd00::1", "fd00::2", "2604:1380:4091:ce00::d"),
}


@pytest.mark.parametrize("name", sorted(KNOWN_DIVERGENCES))
def test_known_divergences_decode_deeper_than_tshark(corpus, tshark, name):
    """Every file left out of the tshark comparison is checked here instead: we reach the inner TCP
    of the BIG TCP super-packet, where tshark stops at the outer UDP (no TCP port of its own)."""
    df, _, _ = decode(corpus / name)
    r = df.iloc[0]
    src, dst, outer_src = DEEPER[name]
    assert (r.encap, r.proto, r.status) == ("vxlan", 6, "ok")
    assert (r.src, r.dst, r.outer_src) == (src, dst, outer_src)
    assert r.ip_len > 65535  # the length the kernel's GSO gave it, taken from the capture
    theirs = tshark_frames(str(corpus / name))[0]
    assert theirs["src"] == outer_src and theirs["l4"] != "tcp", theirs  # tshark stopped at the outer header


def test_every_known_divergence_is_checked():
    assert set(DEEPER) == set(KNOWN_DIVERGENCES)
