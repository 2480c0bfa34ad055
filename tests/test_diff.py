"""`calforensics diff OLD NEW` on the lab's pair: the same cluster before (lab-open: db's policy admits
the client) and after a policy change (lab-vxlan: it admits no pod that exists). Bundles, report
directories and findings.json give the same diff; the committed example diff is what the pair gives."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import jsonschema
import pytest
from conftest import ROOT, SAMPLES

import calforensics
from calforensics.analyses.diff import diff_findings

OPEN, CLOSED = SAMPLES / "lab-open.tgz", SAMPLES / "lab-vxlan.tgz"
SCHEMA = json.loads((ROOT / "docs" / "diff.schema.json").read_text())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("pair")
    docs = {}
    for name, path in (("open", OPEN), ("closed", CLOSED)):
        with calforensics.open_bundle(path) as b:
            docs[name] = calforensics.analyze(b).findings
            calforensics.write_report(calforensics.analyze(b), out / name, tables="none")
    return out, docs


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "calforensics.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_the_policy_change_is_the_diff(pair):
    _, docs = pair
    truth = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
    denied = next(f for f in truth["flows"] if f["name"] == "denied")
    d = diff_findings(docs["open"], docs["closed"])
    jsonschema.validate(d, SCHEMA)
    assert [(f["client_ip"], f["server_ip"], f["server_port"], f["old"], f["new"]) for f in d["flows"]["changed_verdict"]] == [
        (denied["client_ip"], denied["server_ip"], 5432, {"delivered": 1}, {"dropped": 1})
    ]
    assert d["flows"]["appeared"] == d["flows"]["disappeared"] == [] and d["drops"]["resolved"] == []
    (new,) = d["drops"]["new"]
    want = denied["drop"]
    assert (new["cause"]["kind"], new["cause"]["node"], new["cause"]["chain"], new["cause"]["policy"]) == (
        "end_of_tier", want["node"], want["chain"], want["policy"]
    )
    # the end-of-tier DROP rule counted nothing before the change and the lost packets after: first listed
    first = d["rule_counters"][0]
    assert first["drops"] and first["chain"] == want["chain"] and (first["old"], first["new"]) == (0, new["packets"])
    assert d["mtu"] == {"new": [], "resolved": []}  # the MTU drop is in both
    assert d["summary"].startswith("From lab-open to lab-vxlan: 1 new drop(s), 0 resolved; 1 flow(s) changed verdict")
    back = diff_findings(docs["closed"], docs["open"])
    assert len(back["drops"]["resolved"]) == 1 and back["drops"]["new"] == []


def test_every_shape_of_input_gives_the_same_diff(pair, tmp_path):
    """Bundles, report directories and findings.json files, mixed: the same changes."""
    out, _ = pair
    shapes = [(OPEN, CLOSED), (out / "open", out / "closed"), (out / "open" / "findings.json", CLOSED)]
    docs = [calforensics.diff(a, b) for a, b in shapes]
    for d in docs[1:]:
        assert {k: d[k] for k in ("flows", "drops", "rule_counters", "mtu", "counts")} == {
            k: docs[0][k] for k in ("flows", "drops", "rule_counters", "mtu", "counts")
        }
    assert calforensics.diff(CLOSED, CLOSED)["old"]["name"] == "lab-vxlan (old)"


def test_the_command_writes_three_files_and_fails_on_new_drops(tmp_path):
    r = run_cli("diff", OPEN, CLOSED, "-o", tmp_path / "d", "--fail-on", "new-drops")
    assert r.returncode == 1 and r.stdout.startswith("From lab-open to lab-vxlan: 1 new drop(s)")
    doc = json.loads((tmp_path / "d" / "diff.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    md, html = (tmp_path / "d" / "diff.md").read_text(), (tmp_path / "d" / "diff.html").read_text()
    assert "## New drops" in md and "end\\_of\\_tier on node-b" in md
    assert "<h2>New drops (1)</h2>" in html and "<script" not in html
    r = run_cli("diff", CLOSED, OPEN, "-o", tmp_path / "back", "--fail-on", "new-drops")
    assert r.returncode == 0, r.stderr
    r = run_cli("diff", tmp_path / "missing.tgz", OPEN)
    assert r.returncode == 2 and r.stderr.startswith("calforensics: error:")


def test_latency_shifts_beyond_the_spread_only():
    """A hop's median that moved by more than the spread of either run is a shift; within it, noise."""
    with calforensics.open_bundle(CLOSED) as b:
        doc = calforensics.analyze(b).findings
    slower = copy.deepcopy(doc)
    hop = slower["latency"]["hops"][0]
    spread = hop["p90_us"] - hop["p50_us"]
    hop["p50_us"] += spread + 50
    hop["p90_us"] += spread + 50
    noisy = copy.deepcopy(doc)
    noisy["latency"]["hops"][0]["p50_us"] += spread / 2
    (shift,) = diff_findings(doc, slower)["latency_shifts"]
    assert shift["new_p50_us"] - shift["old_p50_us"] == pytest.approx(spread + 50) and shift["from"] == hop["from"]
    assert diff_findings(doc, noisy)["latency_shifts"] == []


def test_the_committed_example_diff_is_what_the_pair_gives(tmp_path):
    committed = json.loads((ROOT / "reports" / "diff-lab-open-lab-vxlan" / "diff.json").read_text())
    fresh = calforensics.diff(OPEN, CLOSED)
    assert json.loads(json.dumps(fresh)) == committed, "make report regenerates reports/diff-lab-open-lab-vxlan"
