"""Focus: --since/--until/--host/--port/--node cut a bundle down before the join, and keep every
sighting of a packet in focus, across NAT."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLE

import calforensics
from calforensics.join.focus import Focus, parse_time

VIP = "10.96.0.50"  # the lab's ClusterIP (default/web:http)


@pytest.fixture(scope="module")
def whole():
    with calforensics.open_bundle(SAMPLE, workers=1) as b:
        yield b.flows.copy(), b.hops.copy(), b.packets.copy()


def involved(flows, host: str) -> np.ndarray:
    return np.logical_or.reduce(
        [(flows[c] == host).to_numpy() for c in ("client_ip", "server_ip", "backend_ip", "snat_ip")]
    )


def test_a_cluster_ip_keeps_its_flow_whole_across_dnat(whole):
    """The ClusterIP appears only before DNAT; the hops after it (VXLAN, the backend's veth) are
    the same packets (fingerprints) and stay, so the flow is delivered along its whole path."""
    flows, hops, _ = whole
    service = flows[flows["server_ip"] == VIP].iloc[0]
    with calforensics.open_bundle(SAMPLE, workers=1, focus=Focus.of(hosts=[VIP])) as b:
        got, got_hops = b.flows, b.hops
    observed = got[got["verdict"] != "unobserved"]
    assert len(observed) == 1 and len(got_hops) < len(hops) / 3
    f = observed.iloc[0]
    assert f["service"] == service["service"] and f["backend_ip"] == service["backend_ip"]
    assert (f["verdict"], f["path_fwd"], f["packets_fwd"]) == (
        service["verdict"],
        service["path_fwd"],
        service["packets_fwd"],
    )
    assert involved(got, VIP).all()  # conntrack-only flows in focus too, none other


def test_host_port_node_and_time_each_cut_the_hops(whole):
    flows, hops, packets = whole
    client = flows[flows["server_ip"] == VIP].iloc[0]["client_ip"]
    with calforensics.open_bundle(SAMPLE, workers=1, focus=Focus.of(hosts=[client])) as b:
        assert 0 < len(b.hops) < len(hops)
        assert involved(b.flows[b.flows["hops"] > 0], client).all()
    port = int(flows[flows["server_ip"] == VIP].iloc[0]["server_port"])
    with calforensics.open_bundle(SAMPLE, workers=1, focus=Focus.of(ports=[port])) as b:
        seen = b.flows[b.flows["hops"] > 0]
        assert len(seen) and seen[["client_port", "server_port", "backend_port"]].isin([port]).any(axis=1).all()
    with calforensics.open_bundle(SAMPLE, workers=1, focus=Focus.of(nodes=["node-a"])) as b:
        assert set(b.hops["node"].astype(str)) == {"node-a"} and len(b.hops) < len(hops)
        # node-b's captures are out of focus: a flow is never dropped for not reaching them
        assert not b.flows["missing_at"].str.startswith("node-b:").any()
    middle = int(np.median(packets["ts_ns"]))
    with calforensics.open_bundle(SAMPLE, workers=1, focus=Focus(since_ns=middle)) as b:
        assert (b.hops["ts_ns"] >= middle).all() and 0 < len(b.hops) < len(hops)
    with calforensics.open_bundle(SAMPLE, workers=1, focus=Focus(until_ns=middle)) as b:
        assert (b.hops["ts_ns"] <= middle).all() and 0 < len(b.hops) < len(hops)


def test_focus_gives_the_same_tables_spilled_in_partitions(tmp_path):
    focus = Focus.of(hosts=[VIP], nodes=["node-a", "node-b"])
    with calforensics.open_bundle(SAMPLE, workers=1, focus=focus) as b:
        want = b.flows.to_csv(index=False), b.hops.to_csv(index=False)
    kwargs = {"spill": True, "spill_dir": tmp_path, "partition_packets": 30, "chunk_packets": 8}
    with calforensics.open_bundle(SAMPLE, workers=2, focus=focus, **kwargs) as b:
        assert (b.flows.to_csv(index=False), b.hops.to_csv(index=False)) == want


def test_times_parse_as_epoch_seconds_or_iso_8601_in_utc():
    assert parse_time("1700000000.5") == 1_700_000_000_500_000_000
    assert parse_time("2023-11-14T22:13:20Z") == parse_time("2023-11-14T22:13:20") == 1_700_000_000 * 10**9
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000 * 10**9
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")
    with pytest.raises(ValueError):
        Focus.of(ports=[70000])


def test_cli_states_the_focus_and_refuses_bad_values(tmp_path):
    import jsonschema

    cli = [sys.executable, "-m", "calforensics.cli", "analyze", str(SAMPLE), "--tables", "none"]
    run = subprocess.run(
        [*cli, "-o", str(tmp_path / "r"), "--host", VIP, "--node", "node-a", "--since", "2020-01-01T00:00:00"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / "r" / "findings.json").read_text())
    schema = json.loads((ROOT / "docs" / "findings.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["bundle"]["focus"] == {
        "hosts": [VIP],
        "nodes": ["node-a"],
        "ports": [],
        "since_ns": 1_577_836_800 * 10**9,
        "until_ns": None,
    }
    for report in ("report.md", "report.html"):
        assert f"hosts {VIP}; nodes node-a; from 2020-01-01T00:00:00Z" in (tmp_path / "r" / report).read_text()
    for bad in (["--host", "10.96.0.999"], ["--since", "yesterday"], ["--port", "70000"]):
        run = subprocess.run([*cli, "-o", str(tmp_path / "x"), *bad], capture_output=True, text=True, timeout=120)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("calforensics: error:"), run.stderr
