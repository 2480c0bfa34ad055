"""One answer for every capture shape: the same events captured per interface, per interface and with
`tcpdump -i any` beside them, with `-i any` alone (SLL2 or SLL v1, filtered as the seed's experiment
or not), in one pcapng a node, or cut at 128 bytes, give the same flows, verdicts, drops, paths,
clock offsets and latency rows; where a shape cannot know something (a filter, a late capture
window), the report says so and calls nothing dropped that was not.

The shapes are derived from the VXLAN lab run: a node's per-interface captures are merged into the
Linux cooked (SLL2) capture that `tcpdump -i any` writes, with the interface index `ip link` gives
each, and the packet type the kernel gives a packet the node sent (outgoing: from the interface's
own address) or received; and rewritten as SLL v1, which names no interface. Where both are kept, the
`any` copies may be a few microseconds off the interface's own (two sockets timestamp one packet
apart), and either capture may start later, as one started by hand would.
"""

import json
import re
import struct
import sys
import tarfile

import pytest
from conftest import SAMPLES

import calforensics

sys.path.insert(0, str(SAMPLES))


def add_any_capture(
    root, node: str, keep_own: bool, jitter_ns: int = 0, skip_first_ns: int = 0, own_from_ns: int = 0
) -> int:
    """Write nodes/<node>/pcaps/any.pcap (SLL2) from the node's interface captures, leaving out their
    first ``skip_first_ns``; drop those captures unless ``keep_own``, or keep them from ``own_from_ns``
    on only. Returns how many frames the `any` capture holds."""
    from derive import read_pcap, write_pcap

    pcaps = root / "nodes" / node / "pcaps"
    links = (root / "nodes" / node / "ip-link.txt").read_text()
    index = {name: int(i) for i, name in re.findall(r"^(\d+): ([^:@]+)[:@]", links, re.M)}
    own_mac = {
        name: bytes.fromhex(mac.replace(":", ""))
        for name, mac in re.findall(r"^\d+: ([^:@]+)[:@].*\n\s+link/ether ([0-9a-f:]{17})", links, re.M)
    }
    frames = []
    for p in sorted(pcaps.glob("*.pcap")):
        start = None
        for k, (ts, frame) in enumerate(read_pcap(p)):
            start = ts if start is None else start
            if ts - start < skip_first_ns:
                continue
            # a frame from the interface's own address is one the node sent: packet type 4 (outgoing),
            # as the kernel's packet socket says; else 0 (to this host)
            pkttype = 4 if frame[6:12] == own_mac[p.stem] else 0
            # protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length 6, source MAC
            header = frame[12:14] + b"\0\0" + struct.pack("!IHBB", index[p.stem], 1, pkttype, 6) + frame[6:12] + b"\0\0"
            frames.append((ts + (k % 3) * jitter_ns, header + frame[14:]))
        if not keep_own:
            p.unlink()
        elif own_from_ns:
            own = list(read_pcap(p))
            write_pcap(p, [(ts, f) for ts, f in own if ts - own[0][0] >= own_from_ns], 1)
    write_pcap(pcaps / "any.pcap", sorted(frames, key=lambda x: x[0]), 276)
    return len(frames)


def answer(b: calforensics.Bundle) -> dict:
    """What the report says, by what stays put across shapes (not row or point numbers)."""
    a = calforensics.analyze(b)
    flow_cols = ["proto", "client_ip", "client_port", "server_ip", "server_port", "service", "backend_ip"]
    flow_cols += ["verdict", "path_fwd", "path_rev", "packets_fwd", "packets_rev", "last_seen", "missing_at"]
    flows = b.flows[b.flows["scope"] == "routed"]
    drop_cols = ["src_ip", "src_port", "dst_ip", "dst_port", "packets", "cause_kind", "cause_chain", "cause_policy"]
    return {
        "flows": sorted(map(tuple, flows[flow_cols].astype(str).to_numpy().tolist())),
        "drops": sorted(map(tuple, a.drops[drop_cols].astype(str).to_numpy().tolist())),
        "mtu": sorted(map(tuple, a.mtu_issues[["kind", "node", "mtu"]].astype(str).to_numpy().tolist())),
        "tunnels": sorted(
            map(
                tuple,
                a.tunnels[
                    ["type", "src_node", "dst_node", "packets", "overhead_bytes_per_packet", "share_of_wire_bytes"]
                ]
                .astype(str)
                .to_numpy()
                .tolist(),
            )
        ),
        "latency": sorted(
            (r.from_node, r.from_interface, r.to_node, r.to_interface, int(r.count))
            for r in a.latency_hops.itertuples(index=False)
        ),
        "offsets": {r.node: (int(r.offset_ns), int(r.uncertainty_ns)) for r in b.clock_offsets.itertuples()},
        "hops": len(b.hops),
    }


@pytest.fixture(scope="module")
def per_interface():
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        return answer(b)


@pytest.fixture
def unpacked(tmp_path):
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "lab-vxlan"


@pytest.mark.parametrize("cooked", ["SLL2", "SLL v1"])
def test_an_any_capture_beside_the_interfaces_own_changes_nothing(unpacked, per_interface, cooked):
    """Every packet node-a's interfaces showed is in the `any` capture too (but its first 5 ms): one
    observation each, one path point, no latency row from an interface to itself; in SLL v1 too,
    whose copies are placed by direction and routes on the same points."""
    assert add_any_capture(unpacked, "node-a", keep_own=True, jitter_ns=3_000, skip_first_ns=5_000_000) > 100
    if cooked == "SLL v1":
        as_linux_cooked_v1(unpacked, "node-a")
    with calforensics.open_bundle(unpacked) as b:
        got = answer(b)
    assert got == per_interface
    assert not [row for row in got["latency"] if row[:2] == row[2:4]]


def test_interface_captures_started_late_and_an_any_capture_make_one_point_each(unpacked, per_interface):
    """node-a's own captures start 5 ms after its `any` capture: the first packets are in the `any`
    capture only, the rest in both. Each interface is still one capture point, whichever capture
    saw a packet, and the events are the same."""
    add_any_capture(unpacked, "node-a", keep_own=True, own_from_ns=5_000_000)
    with calforensics.open_bundle(unpacked) as b:
        got = answer(b)
        paths = b.flows["path_fwd"].tolist() + b.flows["path_rev"].tolist()
    assert got == per_interface
    assert all(len(path.split(" > ")) == len(set(path.split(" > "))) for path in paths)


def test_an_any_capture_alone_gives_the_same_answer(unpacked, per_interface):
    """`tcpdump -i any` instead of node-a's per-interface captures: SLL2 names each packet's interface."""
    add_any_capture(unpacked, "node-a", keep_own=False)
    with calforensics.open_bundle(unpacked) as b:
        assert set(b.captures[b.captures["node"] == "node-a"]["interface"].astype(str)) == {"any"}
        got = answer(b)
        said = [f for f in calforensics.analyze(b).findings["findings"] if f["kind"] == "capture_shape"]
    assert got == per_interface
    # the report says what this shape cannot tell, for node-a only
    assert len(said) == 1 and said[0]["title"].startswith("node-a had only an `-i any` capture:")


def test_the_two_captures_joined_in_partitions_on_disk_give_the_same_answer(unpacked, tmp_path):
    add_any_capture(unpacked, "node-a", keep_own=True, jitter_ns=3_000)
    with calforensics.open_bundle(unpacked, workers=1) as b:
        whole = answer(b)
    spill = {"spill": True, "spill_dir": tmp_path / "spill", "partition_packets": 50, "workers": 2}
    with calforensics.open_bundle(unpacked, **spill) as b:
        parted = answer(b)
    assert parted == whole and whole["hops"] > 0


def test_second_copies_do_not_depend_on_blocks_or_fingerprint_ranges(unpacked):
    from calforensics.join.hops import second_copies

    add_any_capture(unpacked, "node-a", keep_own=True, jitter_ns=3_000, skip_first_ns=5_000_000)
    with calforensics.open_bundle(unpacked) as b:
        whole = second_copies(b.packets, b.captures)
        cut = second_copies(b.packets, b.captures, parts=7, block_rows=13)
        own = b.packets["capture_id"].isin(b.captures.loc[b.captures["interface"] != "any", "capture_id"])
    assert whole is not None and whole.sum() > 100 and (whole == cut).all()
    assert not whole[own.to_numpy()].any()  # the interfaces' own captures keep their copies


def test_an_any_capture_alone_on_the_servers_node_finds_the_drop_and_its_policy(unpacked, per_interface):
    """The destination pods' veths are inside node-b's `any` capture: delivery and loss are read
    there, so the policy drop keeps its last point, its next point and its cause."""
    add_any_capture(unpacked, "node-b", keep_own=False)
    with calforensics.open_bundle(unpacked) as b:
        got = answer(b)
    assert got == per_interface
    assert any(d[5] == "end_of_tier" for d in got["drops"])


def as_linux_cooked_v1(root, node: str) -> None:
    """The node's `any` capture rewritten from SLL2 (20-byte header) to SLL v1 (16): packet type,
    ARPHRD, address length, address, protocol; no interface index."""
    from derive import read_pcap, write_pcap

    any_pcap = root / "nodes" / node / "pcaps" / "any.pcap"
    v1 = [
        (ts, f[10:11].rjust(2, b"\0") + f[8:10] + b"\0\x06" + f[12:20] + f[0:2] + f[20:])
        for ts, f in read_pcap(any_pcap)
    ]
    write_pcap(any_pcap, v1, 113)


@pytest.mark.parametrize("node", ["node-a", "node-b"])
def test_a_linux_cooked_v1_any_capture_alone_gives_the_same_answer(unpacked, per_interface, node):
    """SLL v1 names no interface: each packet is placed by its direction and the node's routes (the
    client's veth, vxlan.calico to the backend after DNAT, eth0 in VXLAN), and the report says so."""
    add_any_capture(unpacked, node, keep_own=False)
    as_linux_cooked_v1(unpacked, node)
    with calforensics.open_bundle(unpacked) as b:
        got = answer(b)
        said = [f for f in calforensics.analyze(b).findings["findings"] if f["kind"] == "capture_shape"]
        assert set(b.captures.loc[b.captures["node"] == node, "linktype_name"].astype(str)) == {"LINUX_SLL"}
        routed = b.flows[b.flows["scope"] == "routed"]["flow_id"]
        placed = b.hops[b.hops["flow_id"].isin(routed)]
        assert (placed["interface"].astype(str) != "any").all()  # every routed packet has its interface
    assert got == per_interface
    assert [(f["severity"], f["title"].split(":")[0]) for f in said] == [
        (
            "low",
            f"{node} had only an `-i any` capture in Linux cooked v1, which does not say which interface each packet crossed",
        )
    ]


def test_per_interface_captures_say_nothing_of_their_shape():
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        assert not [f for f in calforensics.analyze(b).findings["findings"] if f["kind"] == "capture_shape"]


def test_the_seeds_filtered_any_captures_give_the_same_verdicts_for_what_they_took(unpacked, per_interface):
    """`tcpdump -i any -n host A and host B` on both nodes, as in the seed's tracing experiment: the
    VXLAN copies on eth0 (outer addresses the nodes') are never taken. The flows between A and B
    keep their verdicts, their paths without eth0, and no drop is read from what the filter left
    out; the report says which filter it assumed on each node."""
    import socket

    from derive import read_pcap, write_pcap

    a, b_ip = "192.168.10.5", "192.168.20.7"
    hosts = {socket.inet_aton(a), socket.inet_aton(b_ip)}
    for node in ("node-a", "node-b"):
        add_any_capture(unpacked, node, keep_own=False)
        any_pcap = unpacked / "nodes" / node / "pcaps" / "any.pcap"
        kept = [(ts, f) for ts, f in read_pcap(any_pcap) if f[0:2] == b"\x08\x00" and {f[32:36], f[36:40]} == hosts]
        write_pcap(any_pcap, kept, 276)
    with calforensics.open_bundle(unpacked) as b:
        got = answer(b)
        said = [f for f in calforensics.analyze(b).findings["findings"] if f["kind"] == "capture_filter"]
        assert list(b.capture_filters.values()) == [f"host {a} and host {b_ip}"] * 2
    between = [f for f in per_interface["flows"] if {f[1], f[3]} == {a, b_ip}]
    without_eth0 = [
        (
            *f[:7],
            f[7],
            *(" > ".join(p for p in path.split(" > ") if not p.endswith(":eth0")) for path in f[8:10]),
            *f[10:],
        )
        for f in between
    ]
    assert [f for f in got["flows"] if {f[1], f[3]} == {a, b_ip}] == without_eth0 and len(between) >= 3
    assert got["drops"] == []
    assert [s["title"].split("'s ")[0] for s in said] == ["node-a", "node-b"]


def pcapng_of_interfaces(
    path, interfaces: list[tuple[str, int, list[tuple[int, bytes]]]], snaplen: int = 262144, capture_filter: str = ""
) -> None:
    """One pcapng of several interfaces, as `tcpdump -i a -i b` or dumpcap writes it: an interface
    description block each (if_name, nanosecond if_tsresol, and the capture filter as dumpcap records
    it in if_filter: type 0, a libpcap expression), then every frame in time order."""

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    def option(code: int, value: bytes) -> bytes:
        return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for name, linktype, _ in interfaces:
        opts = option(2, name.encode()) + option(9, b"\x09")
        opts += (option(11, b"\0" + capture_filter.encode()) if capture_filter else b"") + struct.pack("<HH", 0, 0)
        out.append(block(1, struct.pack("<HHI", linktype, 0, snaplen) + opts))
    frames = sorted((ts, k, f) for k, (_, _, fs) in enumerate(interfaces) for ts, f in fs)
    for ts, k, frame in frames:
        cut = frame[:snaplen]
        out.append(block(6, struct.pack("<IIIII", k, ts >> 32, ts & 0xFFFFFFFF, len(cut), len(frame)) + cut))
    path.write_bytes(b"".join(out))


def test_one_pcapng_of_all_interfaces_per_node_gives_the_same_answer(unpacked, per_interface):
    """Each node's interfaces in one pcapng (an interface description block each), not a file each."""
    from derive import read_pcap

    for node in ("node-a", "node-b"):
        pcaps = sorted((unpacked / "nodes" / node / "pcaps").glob("*.pcap"))
        pcapng_of_interfaces(
            unpacked / "nodes" / node / "pcaps" / "all.pcapng", [(p.stem, 1, read_pcap(p)) for p in pcaps]
        )
        for p in pcaps:
            p.unlink()
    with calforensics.open_bundle(unpacked) as b:
        assert set(b.captures["container"].astype(str)) == {"pcapng"} and len(b.captures) == 8
        got = answer(b)
    assert got == per_interface


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_captures_cut_at_128_bytes_give_the_same_answer(unpacked, per_interface, container):
    """`tcpdump -s 128` everywhere: inside VXLAN a data segment's payload starts past byte 116, so
    the copies of one packet hold different parts of it. They are matched by their header fields
    alone (the payload length as declared), and the report says so."""
    from derive import read_pcap

    for p in sorted(unpacked.glob("nodes/*/pcaps/*.pcap")):
        frames = read_pcap(p)
        if container == "pcapng":
            pcapng_of_interfaces(p.with_suffix(".pcapng"), [(p.stem, 1, frames)], snaplen=128)
            p.unlink()
            continue
        out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 128, 1)]
        for ts, frame in frames:
            out.append(struct.pack("<IIII", ts // 10**9, ts % 10**9, min(len(frame), 128), len(frame)) + frame[:128])
        p.write_bytes(b"".join(out))
    with calforensics.open_bundle(unpacked) as b:
        assert (b.packets["caplen"] <= 128).all() and (b.packets["caplen"] < b.packets["wirelen"]).any()
        got = answer(b)
        said = [f["title"] for f in calforensics.analyze(b).findings["findings"] if f["kind"] == "capture_shape"]
    assert got == per_interface
    assert len(said) == 1 and said[0].startswith("8 capture(s) cut frames at 128 bytes")


def test_capture_windows_that_differ_by_node_call_nothing_dropped_that_was_not(unpacked, per_interface):
    """node-b's captures start after the first flow and stop before the last: the flows it saw keep
    their answer, the flows outside its window are not drops, and the real drop stays."""
    from derive import read_pcap, write_pcap

    frames = {p: read_pcap(p) for p in sorted(unpacked.glob("nodes/node-b/pcaps/*.pcap"))}
    everything = sorted(ts for fs in frames.values() for ts, _ in fs)
    start, stop = everything[len(everything) // 10], everything[-len(everything) // 10]
    for p, fs in frames.items():
        write_pcap(p, [(ts, f) for ts, f in fs if start <= ts <= stop], 1)
    meta_path = unpacked / "nodes" / "node-b" / "metadata.json"
    meta = json.loads(meta_path.read_text())  # the collector's record of when it captured says so too
    meta["capture"]["start_ns"], meta["capture"]["stop_ns"] = start, stop
    meta_path.write_text(json.dumps(meta))
    with calforensics.open_bundle(unpacked) as b:
        got = answer(b)
        window = b.captures[b.captures["node"] == "node-b"]
        assert (window["window_start_ns"] == start).all() and (window["window_end_ns"] == stop).all()
    dropped = {f[:5] for f in per_interface["flows"] if f[7] == "dropped"}
    assert {f[:5] for f in got["flows"] if f[7] == "dropped"} <= dropped
    assert {d[:4] for d in got["drops"]} <= {d[:4] for d in per_interface["drops"]}
    kept = [f for f in got["flows"] if f in per_interface["flows"]]
    assert len(kept) >= 2  # the flows inside node-b's window keep their whole answer
