"""The join: hops, clock offsets and flows, on the lab bundles and on captures with shifted clocks."""

import itertools
import json
import struct
import tarfile

import pytest
from conftest import SAMPLES
from groundtruth import check_bundle, check_clock_offsets, check_flows

import calforensics


def shifted_bundle(tmp_path, name: str, node: str, shift_ns: int):
    """The sample bundle with every capture of one node rewritten as if its clock were off by shift_ns."""
    with tarfile.open(SAMPLES / f"{name}.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / name
    for pcap in (root / "nodes" / node / "pcaps").glob("*.pcap"):
        data = bytearray(pcap.read_bytes())
        assert data[:4] == b"\x4d\x3c\xb2\xa1"  # the collector writes nanosecond pcaps
        off = 24
        while off + 16 <= len(data):
            sec, nsec, incl, _ = struct.unpack_from("<IIII", data, off)
            t = sec * 1_000_000_000 + nsec + shift_ns
            struct.pack_into("<II", data, off, t // 1_000_000_000, t % 1_000_000_000)
            off += 16 + incl
        pcap.write_bytes(bytes(data))
    meta_path = root / "nodes" / node / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["capture"]["start_ns"] += shift_ns
    meta["capture"]["stop_ns"] += shift_ns
    meta_path.write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("shift_ns", [250_000_000, -3_000_000_000])
@pytest.mark.parametrize("name", ["lab-vxlan", "lab-ipip"])
def test_clock_offsets_recover_known_shifts(tmp_path, name, shift_ns):
    truth = json.loads((SAMPLES / f"{name}.ground_truth.json").read_text())
    root = shifted_bundle(tmp_path, name, "node-b", shift_ns)
    with calforensics.open_bundle(root) as b:
        check_clock_offsets(b, truth, shifts={"node-b": shift_ns})
        # with the offset corrected, every flow still has its path and verdict
        check_flows(b, truth)
        corrected = b.hops.groupby("node", observed=True)[["ts_ns", "ts_corrected_ns"]].min()
        assert (
            abs(int(corrected.loc["node-b", "ts_ns"] - corrected.loc["node-b", "ts_corrected_ns"]) - shift_ns)
            < 1_000_000
        )


def test_hops_of_one_packet_across_vxlan(tmp_path):
    truth = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
    gt = next(f for f in truth["flows"] if f["name"] == "pod_to_pod")
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        h = b.hops
        syn = h[(h.src == gt["client_ip"]) & (h.sport == gt["client_port"]) & (h.tcp_flags == 0x02)]
        assert syn.instance.nunique() == 1  # one packet ...
        assert len(syn) == len(gt["path"])  # ... seen at every capture point on its way
        assert syn.sort_values("hop_index")[["node", "interface"]].astype(str).values.tolist() == [
            [p["node"], p["interface"]] for p in gt["path"]
        ]
        assert syn.encap.astype(str).tolist().count("vxlan") == 2  # inside VXLAN on both uplinks
        assert (syn.sort_values("hop_index").delta_ns.iloc[1:] >= 0).all()
        assert not syn.ambiguous.any() and (syn.copy_no == 0).all()
        # every sighting belongs to some instance, and instances never mix fingerprints
        assert h.groupby("instance").fingerprint.nunique().max() == 1
        assert len(h) == int((b.packets.status == "ok").sum() - (b.packets.ip_version == 0).sum())


def test_samples_pass_every_check_with_the_join():
    for name in ("lab-vxlan", "lab-ipip"):
        truth = json.loads((SAMPLES / f"{name}.ground_truth.json").read_text())
        with calforensics.open_bundle(SAMPLES / f"{name}.tgz") as b:
            check_bundle(b, truth)


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "calforensics.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_flows_filters_and_path():
    truth = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
    denied = next(f for f in truth["flows"] if f["name"] == "denied")
    r = run_cli("flows", SAMPLES / "lab-vxlan.tgz", "--verdict", "dropped", "--port", "5432", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1 and rows[0]["client_port"] == denied["client_port"] and rows[0]["verdict"] == "dropped"
    r = run_cli("flows", SAMPLES / "lab-vxlan.tgz", "--service", "default/web")
    assert r.returncode == 0 and "192.168.20.7:8080" in r.stdout and "10.96.0.50:80" in r.stdout
    svc = json.loads(run_cli("flows", SAMPLES / "lab-vxlan.tgz", "--service", "web", "--json").stdout)[0]
    r = run_cli("path", SAMPLES / "lab-vxlan.tgz", svc["flow_id"], "--packets", "2")
    assert r.returncode == 0, r.stderr
    assert "NAT" in r.stdout and "vxlan 4096" in r.stdout and "more packets" in r.stdout
    r = run_cli("path", SAMPLES / "lab-vxlan.tgz", 99999)
    assert r.returncode == 2 and r.stderr.startswith("calforensics: error: no flow 99999")


def _any_capture_bundle(tmp_path, frames_by_ifindex):
    from pktutil import write_pcap

    d = tmp_path / "b" / "nodes" / "n1"
    (d / "pcaps").mkdir(parents=True)
    frames = [struct.pack(">HHIHBB8s", 0x0800, 0, idx, 1, 0, 6, b"\x02" * 8) + ip for idx, ip in frames_by_ifindex]
    times = [1_700_000_000_000_000_000 + 10_000 * i for i in range(len(frames))]  # 10 µs apart
    write_pcap(d / "pcaps" / "any.pcap", frames, linktype=276, times_ns=times)
    (d / "ip-link.txt").write_text(
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq state UP\n    link/ether 52:54:00:00:00:01 brd ff:ff:ff:ff:ff:ff\n"
        "7: cali1234567890a@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP\n    link/ether ee:ee:ee:ee:ee:ee brd ff:ff:ff:ff:ff:ff\n"
    )
    return tmp_path / "b"


def test_any_capture_gives_one_hop_per_interface_and_ambiguity_is_reported(tmp_path):
    from pktutil import tcp4

    syn = bytes(tcp4(src="192.168.1.5", dst="10.0.0.9", ip_id=0, seq=777))
    other = bytes(tcp4(src="192.168.1.5", dst="10.0.0.9", ip_id=0, seq=778))
    # the SYN leaves the pod (cali, ifindex 7) and the node (eth0, ifindex 2); a second identical copy
    # on eth0 makes that packet ambiguous; another SYN (different seq) is a different packet
    root = _any_capture_bundle(tmp_path, [(7, syn), (2, syn), (2, syn), (7, other), (2, other)])
    with calforensics.open_bundle(root) as b:
        h = b.hops
        assert h.instance.nunique() == 2
        first = h[h.packet.isin([0, 1, 2])]
        assert first.instance.nunique() == 1 and first.ambiguous.all()
        assert set(first.interface.astype(str)) == {"cali1234567890a", "eth0"}
        assert sorted(first.copy_no.tolist()) == [0, 0, 1]
        second = h[h.packet.isin([3, 4])]
        assert not second.ambiguous.any() and second.interface.astype(str).tolist() == ["cali1234567890a", "eth0"]
        flow = b.flows.iloc[0]
        assert flow.ambiguous == 1 and flow.packets_fwd == 2


def test_times_keep_nanosecond_precision():
    """Epoch nanoseconds do not survive float64 (~256 ns steps): deltas and flow times stay exact."""
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        h = b.hops.sort_values(["instance", "hop_index"])
        ts = h["ts_corrected_ns"].to_numpy()
        later = h["hop_index"].to_numpy() > 0
        assert (h["delta_ns"].to_numpy()[later] == (ts[1:] - ts[:-1])[later[1:]]).all()
        first = b.hops.groupby("flow_id")["ts_corrected_ns"].min()
        flows = b.flows.set_index("flow_id")
        seen = flows[flows["first_ns"] >= 0]
        assert (seen["first_ns"] == first.reindex(seen.index)).all()
        assert (seen["first_ns"] % 1000 != 0).any()  # real nanosecond timestamps, not rounded ones


def test_segment_helpers_equal_the_pandas_group_bys_they_replace():
    """copy_no and the first sighting per node are computed with sorts and reduceat instead of
    pandas group-bys; on random groups (sorted, as hop rows are) they must give the same values."""
    import numpy as np
    import pandas as pd

    from calforensics.join.hops import _min_within, _rank_within

    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 5000):
        group = np.sort(rng.integers(0, max(1, n // 4), n))
        key = rng.integers(0, 5, n)
        values = rng.integers(-(10**12), 10**12, n)
        df = pd.DataFrame({"g": group, "k": key, "v": values})
        assert (_rank_within(group, key) == df.groupby(["g", "k"]).cumcount().to_numpy()).all()
        assert (_min_within(group, key, values) == df.groupby(["g", "k"])["v"].transform("min").to_numpy()).all()


def _pairs_with_pandas(frame):
    """The group-by formulation _sender_receiver_pairs replaced (kept here as its reference)."""
    per_point = frame.groupby(["fp", "point"]).size()
    repeated = per_point[per_point > 1].index.get_level_values(0).unique()
    sub = frame[~frame["fp"].isin(repeated) & (frame["origin"] >= 0)]
    span = (
        sub.groupby(["fp", "node"], sort=False)
        .agg(tmin=("ts", "min"), tmax=("ts", "max"), origin=("origin", "first"))
        .reset_index()
    )
    span = span[span.groupby("fp")["node"].transform("nunique") >= 2]
    sender = span[span["node"] == span["origin"]][["fp", "node", "tmax"]].rename(columns={"node": "a"})
    receiver = span[span["node"] != span["origin"]][["fp", "node", "tmin"]].rename(columns={"node": "b"})
    pairs = sender.merge(receiver, on="fp")
    pairs["delay"] = pairs["tmin"] - pairs["tmax"]
    return pairs[["a", "b", "delay"]]


def test_sender_receiver_pairs_equal_the_group_by_formulation():
    """Random sightings with repeated fingerprints, unknown senders and origins that change from row
    to row (a rewrite between hops): the same (sender, receiver, delay) rows as the pandas version."""
    import numpy as np
    import pandas as pd

    from calforensics.join.hops import _sender_receiver_pairs

    rng = np.random.default_rng(11)
    for n, unknown in ((0, False), (1, False), (50, False), (50, True), (20_000, False)):
        frame = pd.DataFrame(
            {
                "fp": rng.integers(0, max(1, n // 3), n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15),
                "point": rng.integers(0, 8, n),
                "node": rng.integers(0, 4, n),
                "ts": rng.integers(0, 10**15, n),
                "origin": np.full(n, -1) if unknown else rng.integers(-1, 4, n),  # no sender known at all
            }
        )
        got = _sender_receiver_pairs(*(frame[c].to_numpy() for c in ("fp", "point", "node", "ts", "origin")))
        want = _pairs_with_pandas(frame)
        key = ["a", "b", "delay"]
        got = got.astype("int64").sort_values(key).reset_index(drop=True)
        want = want.astype("int64").sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
        if n == 20_000:
            assert len(want) > 100  # the case exercises real pairs


def test_components_equal_a_union_find():
    """Flows are the connected components of conversations linked by NAT rewrites and conntrack
    entries; the whole-array labelling must give every node the smallest node of its component,
    as the union-find it replaced did, on random graphs with chains, cycles and isolated nodes."""
    import numpy as np

    from calforensics.join.conversations import components as _components

    def union_find(n, a, b):
        parent = list(range(n))

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = find(x), find(y)
            parent[max(rx, ry)] = min(rx, ry)
        return np.asarray([find(x) for x in range(n)])

    rng = np.random.default_rng(5)
    for n, m in ((0, 0), (1, 0), (1, 1), (10, 3), (200, 150), (5000, 4000)):
        a, b = rng.integers(0, max(n, 1), m), rng.integers(0, max(n, 1), m)
        got = _components(n, a, b)
        assert (got == union_find(n, a, b)).all()
    chain = np.arange(999, 0, -1)  # a long path numbered against the propagation's direction
    assert (_components(1000, chain, chain - 1) == 0).all()


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_join_split_by_fingerprint_range_equals_the_whole_table_join(monkeypatch, threads):
    """The join runs fingerprint ranges in threads. An instance never spans two fingerprints, so
    the hops (numbering and order included) and the clock offsets must not depend on the split;
    7 ranges over a small bundle leaves some of them empty."""
    import pandas as pd

    from calforensics.join import hops as join

    monkeypatch.setattr(join, "JOIN_MIN_ROWS", 0)
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz", workers=1) as b:
        owners = join.address_owners(b.interfaces, b.routes)
        whole_hops, whole_offsets = join.build_hops(b.packets, b.captures, owners, threads=1)
        split_hops, split_offsets = join.build_hops(b.packets, b.captures, owners, threads=threads)
    assert len(whole_hops) > 300 and whole_hops["instance"].nunique() > 50
    assert (whole_offsets["uncertainty_ns"] >= 0).all()  # the offsets were estimated, not defaulted
    pd.testing.assert_frame_equal(split_hops, whole_hops)
    pd.testing.assert_frame_equal(split_offsets, whole_offsets)


@pytest.mark.parametrize("threads", [2, 3, 40])
def test_flow_summaries_split_by_flow_range_equal_the_whole_table(monkeypatch, threads):
    """Flow summaries run per range of flows in threads; a flow's summary reads only its own hops,
    so flows and hop directions must not depend on the split (40 ranges: about one flow each)."""
    import pandas as pd

    from calforensics.join import flows, summaries
    from calforensics.join import hops as join

    monkeypatch.setattr(summaries, "SUMMARY_MIN_HOPS", 0)
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz", workers=1) as b:
        hops, _ = join.build_hops(b.packets, b.captures, join.address_owners(b.interfaces, b.routes))
        args = (hops, b.conntrack, b.rules, b.captures, b.routes)
        whole_flows, whole_hops = flows.build_flows(*args, threads=1)
        split_flows, split_hops = flows.build_flows(*args, threads=threads)
    assert len(whole_flows) > 10 and set(whole_flows["verdict"]) >= {"delivered", "dropped"}
    assert {"fwd", "rev"} <= set(whole_hops["direction"])
    pd.testing.assert_frame_equal(split_flows, whole_flows)
    pd.testing.assert_frame_equal(split_hops, whole_hops)


def in_memory(df):
    """A copy of a table whose columns may be mapped files, as ordinary in-memory arrays."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame(
        {c: df[c].array.copy() if isinstance(df[c].dtype, pd.CategoricalDtype) else np.array(df[c]) for c in df}
    )


def is_mapped(array) -> bool:
    """Whether an array's memory is a mapped file (the base of its views is an mmap)."""
    import mmap

    import numpy as np

    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return isinstance(array, mmap.mmap)


@pytest.mark.parametrize(("rows", "block"), [(25, 16), (100, 1000), (300, 5)])
def test_partitioned_join_and_flows_equal_the_in_memory_ones(tmp_path, rows, block):
    """For tables larger than memory, the join and the flow summaries run partition by partition
    from files on disk, reading hops a block at a time, and write hops into mapped files. The
    tables must be those of the in-memory build for any partition size (25 packets: 17 partitions
    of the sample) and block size (5 hops: blocks cut at instance boundaries everywhere), with
    partitions joined and summarised three at a time."""
    import pandas as pd

    from calforensics.join import flows
    from calforensics.join import hops as join
    from calforensics.runtime.parallel import mapped_array
    from calforensics.runtime.partitions import Partitioning

    made = iter(range(1 << 20))
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    parts = Partitioning(rows, lambda: tmp_path, lambda n, dt: mapped_array(arrays / f"{next(made)}.npy", n, dt), block)
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz", workers=1) as b:
        owners = join.address_owners(b.interfaces, b.routes)
        whole_hops, whole_offsets = join.build_hops(b.packets, b.captures, owners)
        part_hops, part_offsets = join.build_hops(b.packets, b.captures, owners, threads=3, partitions=parts)
        assert len(b.packets) > rows  # partitioned at all
        pd.testing.assert_frame_equal(in_memory(part_hops), whole_hops)
        pd.testing.assert_frame_equal(part_offsets, whole_offsets)
        args = (b.conntrack, b.rules, b.captures, b.routes)
        whole_flows, whole_hops = flows.build_flows(whole_hops, *args)
        part_flows, part_hops = flows.build_flows(part_hops, *args, threads=3, partitions=parts)
    assert len(whole_flows) > 10 and set(whole_flows["verdict"]) >= {"delivered", "dropped"}
    pd.testing.assert_frame_equal(part_flows, whole_flows)
    pd.testing.assert_frame_equal(in_memory(part_hops), whole_hops)
    for col in part_hops:  # every column of the hops a mapped file, none copied into memory
        values = part_hops[col].array
        assert is_mapped(values.codes if isinstance(values, pd.Categorical) else part_hops[col].to_numpy()), col
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays"]  # partition files removed


@pytest.mark.parametrize("name", ["lab-vxlan", "lab-ipip"])
def test_spilled_bundle_gives_the_same_analysis_and_report_as_in_memory(tmp_path, name):
    """A spilled bundle is joined in partitions and analysed a block of hops at a time (latency
    pairs in mapped files, one hop pair's delays sorted at a time, transit medians in ranges of
    flows on disk): every table, the findings and the latency plot must be the in-memory ones."""
    import hashlib

    from calforensics.render import plots

    def analysed(workers=1, **kwargs):
        with calforensics.open_bundle(SAMPLES / f"{name}.tgz", workers=workers, **kwargs) as b:
            a = calforensics.analyze(b)
            tables = {t: df.to_csv(index=False) for t, df in a.tables().items()}
            tables["latency_samples"] = a.latency_samples.to_csv(index=False)
            png = hashlib.sha1(plots.latency_cdf(a.latency_samples)).hexdigest()
            return (
                tables,
                json.dumps(a.findings, sort_keys=True),
                png,
                is_mapped(a.latency_samples["delta_us"].to_numpy()),
            )

    tables, findings, png, mapped = analysed(spill=False)
    assert not mapped and len(tables["latency_hops"].splitlines()) > 4
    spilled = analysed(2, spill=True, spill_dir=tmp_path, partition_packets=25, chunk_packets=8)
    assert spilled[3]  # the latency samples really are in a mapped file
    assert spilled[2] == png and spilled[1] == findings
    for table, text in tables.items():
        assert spilled[0][table] == text, table


def test_tunnel_and_flow_overhead_summed_over_blocks_equal_one_group_by():
    """Overhead is summed block by block (blocks of hops of a spilled bundle) and the sums merged:
    they must equal one group-by over all encapsulated packets, the most common overhead a packet
    included (ties: the smallest, as Series.mode orders them)."""
    import numpy as np
    import pandas as pd

    from calforensics.analyses import overhead

    rng = np.random.default_rng(8)
    n = 5000
    e = pd.DataFrame(
        {
            "flow_id": rng.integers(0, 300, n),
            "type": rng.choice(["vxlan", "ipip"], n),
            "vni": rng.choice([-1, 4096], n),
            "src_node": rng.choice(["node-a", "node-b", "10.0.0.9"], n),
            "dst_node": rng.choice(["node-a", "node-b"], n),
            "overhead": rng.choice([20, 50, 70], n),  # equally common sizes: ties for the mode
            "inner": rng.integers(40, 1500, n),
        }
    )
    # a reassembled datagram is one row standing for its fragments, each in a frame of its own
    e["packets"] = rng.choice([1, 1, 1, 3], n)
    e["overhead_total"] = e["overhead"] * e["packets"]
    e["wire"] = e["inner"] + e["overhead_total"] + 14 * e["packets"]
    keys = ["type", "vni", "src_node", "dst_node"]
    one_per_packet = e.loc[e.index.repeat(e["packets"])]  # the most common overhead counts every packet
    want = (
        e.groupby(keys)
        .agg(
            packets=("packets", "sum"),
            overhead_bytes=("overhead_total", "sum"),
            inner_bytes=("inner", "sum"),
            wire_bytes=("wire", "sum"),
        )
        .join(
            one_per_packet.groupby(keys)["overhead"]
            .agg(lambda x: int(x.mode().iloc[0]))
            .rename("overhead_bytes_per_packet")
        )
        .reset_index()
    )
    want["share_of_wire_bytes"] = (want["overhead_bytes"] / want["wire_bytes"]).round(4)
    want_flows = (
        e.groupby(["flow_id", "type"])
        .agg(packets=("packets", "sum"), overhead_bytes=("overhead_total", "sum"), wire_bytes=("wire", "sum"))
        .reset_index()
    )
    want_flows["share_of_wire_bytes"] = (want_flows["overhead_bytes"] / want_flows["wire_bytes"]).round(4)
    for cuts in ([0, n], [0, 1700, 2500, n]):
        blocks = [e.iloc[lo:hi] for lo, hi in itertools.pairwise(cuts)]
        sums = [overhead._sums(x, [*keys, "overhead"], ["packets", "inner", "wire"]) for x in blocks]
        got = overhead.tunnels(sums)
        pd.testing.assert_frame_equal(got, want[overhead.TUNNEL_COLUMNS], check_dtype=False)
        flow_sums = [overhead._sums(x, ["flow_id", "type"], ["packets", "overhead_total", "wire"]) for x in blocks]
        pd.testing.assert_frame_equal(
            overhead.per_flow(flow_sums), want_flows[overhead.FLOW_COLUMNS], check_dtype=False
        )
    assert (want["overhead_bytes_per_packet"] != 70).any()  # the data really has ties broken low


def test_instance_blocks_cover_the_hops_and_never_split_an_instance():
    import numpy as np

    from calforensics.join.conversations import instance_blocks

    rng = np.random.default_rng(9)
    for n, rows in ((0, 4), (1, 1), (50, 7), (1000, 64), (1000, 1)):
        instance = np.sort(rng.integers(0, max(1, n // 3), n))
        instance[n // 2 : n // 2 + min(n // 2, 40)] = instance[n // 2] if n else 0  # one giant instance
        instance = np.sort(instance)
        blocks = instance_blocks(instance, rows)
        if not n:
            assert blocks == []
            continue
        assert [lo for lo, _ in blocks] == [0, *[hi for _, hi in blocks[:-1]]]  # contiguous
        assert blocks[-1][1] == n
        for lo, hi in blocks:
            assert hi > lo
            assert lo == 0 or instance[lo] != instance[lo - 1]  # never inside an instance
            assert hi - lo <= rows or (instance[lo] == instance[hi - 1])  # larger only for one instance
    with pytest.raises(ValueError, match="instance order"):
        instance_blocks(np.array([0, 1, 2, 1, 3]), 10)


def test_first_seen_ids_over_blocks_equal_one_factorisation():
    import numpy as np
    import pandas as pd

    from calforensics.join.conversations import FirstSeen as _FirstSeen

    rng = np.random.default_rng(3)
    values = rng.integers(-5, 40, 1000) * (1 << 40)
    seen, got, firsts = _FirstSeen(), [], []
    for lo in range(0, 1000, 70):
        ids, new = seen.ids(values[lo : lo + 70])
        got.append(ids)
        firsts.extend((new + lo).tolist())
    codes, uniques = pd.factorize(values)
    assert (np.concatenate(got) == codes).all()
    assert (values[firsts] == uniques).all()  # each value's first row, in id order


def test_per_flow_aggregates_equal_pandas_group_bys():
    """Flow summaries aggregate with bincount and ufunc.at on dense flow ids; on random data with
    flows that have no rows, and rows of flows outside the index, they must equal a group-by
    reindexed to the flows with the fill value."""
    import numpy as np
    import pandas as pd

    from calforensics.join.aggregates import per_flow as _per_flow

    rng = np.random.default_rng(9)
    for n in (0, 1, 100, 20_000):
        groups = rng.integers(0, 60, n)
        values = rng.integers(-(10**15), 10**15, n)
        index = pd.Index(np.sort(rng.choice(50, 40, replace=False)))  # flows 50-59 are outside it
        for how, fill in (("size", 0), ("sum", 0), ("min", -1), ("max", -1), ("nunique", 0)):
            vals = (values % 7 if n % 2 else values) if how == "nunique" else values  # huge values: unpacked path
            want = pd.Series(vals).groupby(groups).agg(how).reindex(index, fill_value=fill).to_numpy()
            got = _per_flow(vals, groups, index, how, fill)
            assert (got == want).all(), (n, how)


def test_group_medians_equal_the_pandas_group_by_median():
    """Path order uses per-group medians computed by one sort of packed (group, value) integers,
    or a lexsort when they do not fit; both must equal pandas' median (float64, mean of the two
    middle values), negative values and single-row groups included."""
    import numpy as np
    import pandas as pd

    from calforensics.join.aggregates import group_medians as _group_medians

    rng = np.random.default_rng(21)
    for n, spread in ((0, 10), (1, 10), (101, 10), (5000, 10**9), (5000, 2**61)):
        group = rng.integers(0, max(1, n // 3), n)
        values = rng.integers(-spread, spread, n)
        want = pd.Series(values).groupby(group).median()
        keys, medians = _group_medians(group, values)
        assert (keys == want.index.to_numpy()).all()
        assert (medians == want.to_numpy()).all()


def test_pack_numbers_tuples_as_the_pairwise_factorisation_did():
    """Conversation keys are dense ids in order of first appearance; packing columns into one
    integer by their ranges (several groups when they do not fit in 62 bits) must number rows
    exactly as factorising one column after another did, negative values included."""
    import numpy as np
    import pandas as pd

    from calforensics.join.conversations import dense_ids as _pack

    def pairwise_ids(*cols):
        key = pd.factorize(cols[0])[0].astype(np.int64)
        for col in cols[1:]:
            codes, uniq = pd.factorize(col)
            key = pd.factorize(key * (len(uniq) + 1) + codes)[0].astype(np.int64)
        return key

    rng = np.random.default_rng(2)
    for n, high in ((0, 5), (1, 5), (2000, 5), (50_000, 70_000), (50_000, 2**40)):
        cols = [rng.integers(-1, high, n) for _ in range(5)]
        assert (_pack(*cols) == pairwise_ids(*cols)).all(), (n, high)


def test_first_seen_codes_equal_pandas_factorize():
    """Capture points are numbered with ufunc.at over a small integer range instead of a hash
    table; codes and values must be pd.factorize's (order of first appearance)."""
    import numpy as np
    import pandas as pd

    from calforensics.join.hops import first_seen_codes

    rng = np.random.default_rng(8)
    for n, size in ((0, 0), (1, 3), (500, 7), (100_000, 300)):
        values = rng.integers(0, max(size, 1), n)
        codes, uniq = first_seen_codes(values, size)
        want_codes, want_uniq = pd.factorize(values)
        assert (codes == want_codes).all() and (uniq == want_uniq).all()


def test_latency_tables_do_not_depend_on_the_hops_row_order():
    """Latency takes the join's (instance, hop) row order as given and reduces runs in place; on a
    hops table in shuffled order it must sort and group instead and give the same tables."""
    import types

    import numpy as np
    import pandas as pd

    from calforensics.analyses import latency

    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz", workers=1) as b:
        ordered = types.SimpleNamespace(hops=b.hops, flows=b.flows)
        rng = np.random.default_rng(6)
        shuffled = types.SimpleNamespace(hops=b.hops.iloc[rng.permutation(len(b.hops))], flows=b.flows)
        for fn in (latency.per_flow, latency.per_hop_pair):
            want, got = fn(ordered), fn(shuffled)
            assert len(want) > 3
            pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
        assert latency.per_flow(ordered)["node_transit_us"].notna().sum() > 3  # the transit path ran


def test_corpus_analyses_do_not_depend_on_how_the_work_is_split(corpus, monkeypatch):
    """Broken and odd captures (damaged frames, IPv6, ICMP errors, ambiguous copies) through the
    threaded join and flow summaries, split even where they are small, and through the join and
    flow summaries in partitions on disk: every exported table and the findings must be those of
    one worker in memory."""
    import csv
    import hashlib

    from calforensics.join import hops as join
    from calforensics.join import summaries

    monkeypatch.setattr(join, "JOIN_MIN_ROWS", 0)
    monkeypatch.setattr(summaries, "SUMMARY_MIN_HOPS", 0)

    def digests(path, workers, **bounded):
        with calforensics.open_bundle(path, workers=workers, **bounded) as b:
            a = calforensics.analyze(b)
            out = {name: hashlib.sha1(df.to_csv(index=False).encode()).hexdigest() for name, df in a.tables().items()}
            return out | {"findings": hashlib.sha1(json.dumps(a.findings, sort_keys=True).encode()).hexdigest()}

    with open(corpus / "MANIFEST.tsv", newline="") as fh:
        files = [corpus / row["file"] for row in csv.DictReader(fh, delimiter="\t")]
    compared = partitioned = 0

    def packets_of(path):
        with calforensics.open_bundle(path, workers=1) as b:
            return b.packets

    for path in files:
        try:
            one = digests(path, 1)
        except calforensics.BundleError:
            continue
        assert digests(path, 3) == one, path.name
        # spilled, joined in partitions of 5 packets and read 16 hops at a time: the same again
        assert digests(path, 1, spill=True, partition_packets=5, chunk_packets=2) == one, path.name
        compared += 1
        partitioned += len(packets_of(path)) > 5
    assert compared > 30 and partitioned > 10


def test_instances_that_crossed_most_points_equal_the_pandas_group_by():
    """summaries._crossed_most (path order is read from these): in instance order, from runs; in
    any order, from a sort; both as a pandas group-by gives them."""
    import numpy as np
    import pandas as pd

    from calforensics.join.summaries import _crossed_most

    rng = np.random.default_rng(3)
    instance = np.sort(rng.integers(0, 400, 3000))
    key = (instance * 7919 % 53).astype(np.int64)  # one key (flow and direction) per instance
    frame = pd.DataFrame({"instance": instance, "key": key})
    crossed = frame.groupby("instance")["instance"].transform("size")
    want = (crossed == crossed.groupby(frame["key"]).transform("max")).to_numpy()
    assert want.any() and not want.all()
    assert (_crossed_most(key, instance) == want).all()
    order = rng.permutation(len(instance))
    assert (_crossed_most(key[order], instance[order]) == want[order]).all()
