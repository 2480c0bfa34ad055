"""The incident report: findings against the lab's ground truth, the published schema, safety, the CLI."""

import base64
import hashlib
import itertools
import json
import re
import subprocess
import sys
import tarfile
from html.parser import HTMLParser

import jsonschema
import pytest
from conftest import ROOT, SAMPLES

import calforensics

SCHEMA = json.loads((ROOT / "docs" / "findings.schema.json").read_text())


@pytest.fixture(scope="module", params=["lab-vxlan", "lab-ipip"])
def analysed(request, tmp_path_factory):
    name = request.param
    truth = json.loads((SAMPLES / f"{name}.ground_truth.json").read_text())
    out = tmp_path_factory.mktemp(name)
    with calforensics.open_bundle(SAMPLES / f"{name}.tgz") as b:
        a = calforensics.analyze(b)
        files = calforensics.write_report(a, out)
        yield truth, a, files


def gt(truth, name):
    return next(f for f in truth["flows"] if f["name"] == name)


def test_findings_validate_against_the_published_schema(analysed):
    _, a, files = analysed
    doc = json.loads(files.findings.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc == json.loads(json.dumps(a.findings))


def test_policy_denied_flow_found_with_its_cause(analysed):
    truth, a, _ = analysed
    want = gt(truth, "denied")
    drop = next(d for d in a.findings["drops"] if d["src_port"] == want["client_port"])
    d = want["drop"]
    assert drop["last_seen"] == d["last_seen"] and drop["missing_at"] == d["missing_at"]
    c = drop["cause"]
    assert (c["node"], c["table"], c["chain"], c["rule_comment"], c["policy"]) == (
        d["node"],
        d["table"],
        d["chain"],
        d["rule_comment"],
        d["policy"],
    )
    assert c["counter_packets"] >= d["min_packets"] and c["counter_packets"] == drop["packets"]
    assert drop["confidence"] == "high"
    kinds = {e["kind"] for e in drop["evidence"]}
    assert {"observed", "counter", "syn_retries", "conntrack"} <= kinds
    headline = a.findings["findings"][0]
    assert headline["severity"] == "critical" and headline["flow_id"] == drop["flow_id"]


def test_encapsulation_overhead_is_exact(analysed):
    truth, a, _ = analysed
    enc = truth["encapsulation"]
    tunnels = a.findings["overhead"]["tunnels"]
    assert {t["type"] for t in tunnels} == {enc["type"]}
    assert {(t["src_node"], t["dst_node"]) for t in tunnels} == {("node-a", "node-b"), ("node-b", "node-a")}
    for t in tunnels:
        assert t["overhead_bytes_per_packet"] == enc["overhead_bytes"]
        assert t["overhead_bytes"] == enc["overhead_bytes"] * t["packets"]  # every packet, not just typical ones
        assert 0 < t["share_of_wire_bytes"] < 1


def test_mtu_scenario_reported_with_its_mtu_and_sender(analysed):
    truth, a, _ = analysed
    want = gt(truth, "mtu")["mtu"]
    issues = {m["kind"]: m for m in a.findings["overhead"]["mtu_issues"]}
    frag = issues["icmp_frag_needed"]
    assert (frag["mtu"], frag["node"]) == (want["mtu"], want["sender_node"])
    assert any(ip in frag["detail"] for ip in want["sender_ips"])
    big = issues["exceeds_tunnel_mtu"]
    assert big["mtu"] == want["mtu"] and f"{want['packet_bytes']} bytes" in big["detail"]
    drop = next(d for d in a.findings["drops"] if d["src_port"] == gt(truth, "mtu")["client_port"])
    assert drop["cause"]["kind"] == "mtu_exceeded" and any(e["kind"] == "icmp" for e in drop["evidence"])


def test_service_flow_has_its_service_and_backend(analysed):
    truth, a, _ = analysed
    want = gt(truth, "cluster_ip")
    flow = next(f for f in a.findings["flows"] if f["client_port"] == want["client_port"])
    assert (flow["server_ip"], flow["server_port"], flow["service"], flow["backend_ip"], flow["backend_port"]) == (
        want["server_ip"],
        want["server_port"],
        want["service"],
        want["backend_ip"],
        want["backend_port"],
    )
    assert flow["verdict"] == "delivered"


def test_latency_rows_for_every_hop_pair_of_cross_node_flows(analysed):
    truth, a, _ = analysed
    rows = {
        (h["from"]["node"], h["from"]["interface"], h["to"]["node"], h["to"]["interface"])
        for h in a.findings["latency"]["hops"]
    }
    for flow in truth["flows"]:
        if flow["verdict"] != "delivered":
            continue
        path = [(p["node"], p["interface"]) for p in flow["path"]]
        for (n1, i1), (n2, i2) in itertools.pairwise(path):
            assert (n1, i1, n2, i2) in rows, (flow["name"], n1, i1, n2, i2)
            assert (n2, i2, n1, i1) in rows  # and the replies' way back
    for h in a.findings["latency"]["hops"]:
        assert 0 <= h["p50_us"] <= h["p90_us"] <= h["p99_us"] <= h["max_us"]
    rtts = {r["flow_id"]: r["handshake_rtt_us"] for r in a.findings["latency"]["flows"]}
    svc = next(f for f in a.findings["flows"] if f["client_port"] == gt(truth, "cluster_ip")["client_port"])
    assert 0 < rtts[svc["id"]] < 100_000


def test_report_files_are_written_and_self_contained(analysed):
    _, _a, files = analysed
    html = files.html.read_text()
    assert "Content-Security-Policy" in html and "data:image/png;base64," in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    # two scripts: the flows as JSON data and the flow table's code, the one the page's policy allows
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert [attrs for attrs, _ in scripts] == [' type="application/json" id="flow-data"', ""]
    code = scripts[1][1]
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html and "innerHTML" not in code and "eval(" not in code
    md = files.markdown.read_text()
    assert md.startswith("# calforensics report") and "## Drops" in md
    names = {p.name for p in files.tables}
    assert {"flows.csv", "hops.csv", "drops.csv", "tunnels.csv", "latency_hops.csv"} <= names


def test_findings_are_deterministic(tmp_path):
    out = []
    for _ in range(2):
        with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
            out.append(
                calforensics.write_report(calforensics.analyze(b), tmp_path / str(len(out))).findings.read_bytes()
            )
    assert out[0] == out[1]


# ---- hostile input ---------------------------------------------------------------------------
SCRIPT = '<script>alert("x")</script>'
IMG = "<img src=x onerror=alert(1)>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def hostile_bundle(tmp_path):
    """The VXLAN sample with markup in an interface name, a rule comment and a policy name."""
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    ipt = root / "nodes" / "node-b" / "iptables-nft-save.txt"
    text = ipt.read_text()
    text = text.replace(
        "End of tier default. Drop if no policies passed packet",
        f"End of tier default. Drop if no policies passed packet {SCRIPT.replace(chr(34), '')}",
    )
    text = text.replace("Policy secure/default.db-allow-app ingress", "Policy secure/<svg/onload=alert(1)> ingress")
    ipt.write_text(text)
    pcaps = root / "nodes" / "node-a" / "pcaps"
    (pcaps / "eth0.pcap").rename(pcaps / f"eth0{IMG}.pcap")
    return root


def test_markup_from_the_bundle_is_inert(tmp_path):
    root = hostile_bundle(tmp_path / "in")
    with calforensics.open_bundle(root) as b:
        a = calforensics.analyze(b)
        files = calforensics.write_report(a, tmp_path / "out")
    doc = json.loads(files.findings.read_text())
    drop = next(d for d in doc["drops"] if d["cause"] and d["cause"]["chain"])
    assert "<script>" in drop["cause"]["rule_comment"] and "<svg/onload" in drop["cause"]["policy"]  # data kept
    html = files.html.read_text()
    parser = _Tags()
    parser.feed(html)
    # the page's own two scripts (its flow data and flow table, see the self-contained test), no other
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "flow-data"}, {}]
    assert not any(tag in ("svg", "iframe", "object") for tag, _ in parser.tags)
    assert not any(k.startswith("on") for _, attrs in parser.tags for k in attrs)
    assert not any(tag == "img" and not attrs.get("src", "").startswith("data:image/png") for tag, attrs in parser.tags)
    assert "&lt;script&gt;" in html and "&lt;svg/onload=alert(1)&gt;" in html and "eth0&lt;img" in html
    md = files.markdown.read_text()
    assert "<script" not in md and "<svg" not in md and "&lt;script>" in md and "&lt;svg/onload" in md


# ---- the command -----------------------------------------------------------------------------
def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "calforensics.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_cli_analyze_default_directory_exit_codes_and_parquet(tmp_path):
    r = run_cli("analyze", SAMPLES / "lab-vxlan.tgz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "reports" / "lab-vxlan" / "report.html").exists()
    assert "CRITICAL" in r.stdout and "report:" in r.stdout
    r = run_cli("analyze", SAMPLES / "lab-vxlan.tgz", "-o", tmp_path / "p", "--tables", "parquet", "--fail-on", "drops")
    assert r.returncode == 1, r.stderr
    import pandas as pd

    flows = pd.read_parquet(tmp_path / "p" / "tables" / "flows.parquet")
    assert (flows["verdict"].astype(str) == "dropped").sum() == 2
    r = run_cli("analyze", tmp_path / "missing.tgz")
    assert r.returncode == 2 and r.stderr.startswith("calforensics: error:")
    r = run_cli("analyze", SAMPLES / "lab-vxlan.tgz", "--tables", "xls")
    assert r.returncode == 2 and "--tables" in r.stderr


def test_cli_chunked_spilled_parallel_analysis_writes_the_same_report(tmp_path):
    """--chunk-packets, --spill-dir and --workers change where and how packets are decoded, never
    what the report says: findings.json and every exported table are byte-identical."""
    r = run_cli("analyze", SAMPLES / "lab-vxlan.tgz", "-o", tmp_path / "plain", "--workers", "1")
    assert r.returncode == 0, r.stderr
    spill = tmp_path / "spill"
    r = run_cli(
        "analyze", SAMPLES / "lab-vxlan.tgz", "-o", tmp_path / "cut", "--chunk-packets", "37", "--spill-dir", spill,
        "--workers", "2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    plain, cut = tmp_path / "plain", tmp_path / "cut"
    names = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file() and p.suffix in (".json", ".csv"))
    assert len(names) > 5
    for name in names:
        assert (cut / name).read_bytes() == (plain / name).read_bytes(), name
    assert spill.is_dir() and not list(spill.iterdir())  # the mapped files were removed


def test_tables_written_in_row_parts_by_forked_writers_equal_one_writer(tmp_path, monkeypatch):
    """With workers, CSV tables are written in row ranges by forked processes and concatenated;
    cut into 7-row parts, every file must be byte for byte what a single to_csv writes, and no
    part file may be left behind."""
    import calforensics.render.report as report

    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz", workers=1) as b:
        one = calforensics.write_report(calforensics.analyze(b), tmp_path / "one")
    monkeypatch.setattr(report, "CSV_PART_ROWS", 7)
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz", workers=2) as b:
        parts = calforensics.write_report(calforensics.analyze(b), tmp_path / "parts")
    assert [p.name for p in parts.tables] == [p.name for p in one.tables]
    hops = (tmp_path / "one" / "tables" / "hops.csv").read_text().splitlines()
    assert len(hops) > 7 * 10  # the hops table really was cut into many parts
    for table in one.tables:
        assert (tmp_path / "parts" / "tables" / table.name).read_bytes() == table.read_bytes(), table.name
    assert sorted(p.name for p in (tmp_path / "parts" / "tables").iterdir()) == sorted(p.name for p in one.tables)
    assert parts.findings.read_bytes() == one.findings.read_bytes()


@pytest.mark.parametrize("name", ["lab-vxlan", "lab-dual"])
def test_committed_example_report_changes_only_on_purpose(tmp_path, name):
    """A change detector, not a check of correctness: reports/<sample> is byte for byte what
    `make report` writes today, so any change to the report shows up in review (regenerate it when
    the change is meant). Whether the report is right is what the ground-truth tests check."""
    with calforensics.open_bundle(SAMPLES / f"{name}.tgz") as b:
        files = calforensics.write_report(calforensics.analyze(b), tmp_path, tables="none")
    committed = ROOT / "reports" / name
    assert files.findings.read_text() == (committed / "findings.json").read_text()
    fresh_md = files.markdown.read_text().split("## Files")[0]
    assert fresh_md == (committed / "report.md").read_text().split("## Files")[0]


def test_every_corpus_capture_analyses_to_a_valid_report(corpus, tmp_path):
    """Broken and odd captures included: the analysis runs and its findings follow the schema."""
    import csv

    with open(corpus / "MANIFEST.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    analysed = 0
    for row in rows:
        try:
            b = calforensics.open_bundle(corpus / row["file"])
        except calforensics.BundleError:
            # unusable input is reported as such (exit 2 in the CLI), not analysed: only broken files
            assert row["tshark_ok"] == "no" or row["notes"].startswith("broken"), row["file"]
            continue
        with b:
            files = calforensics.write_report(calforensics.analyze(b), tmp_path / row["file"], tables="none")
        jsonschema.validate(json.loads(files.findings.read_text()), SCHEMA)
        analysed += 1
    assert len(rows) >= 50 and analysed >= len(rows) * 9 // 10


def test_latency_cdf_drawn_through_fewer_points_looks_the_same(monkeypatch):
    """A CDF line is drawn through at most CDF_POINTS of its sorted samples; with 400,000 samples
    over four decades the figure must look like the one drawn through every sample: no pixel off
    by more than a few levels of antialiasing (of 255)."""
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    from calforensics.render import plots

    rng = np.random.default_rng(4)
    n = 400_000
    samples = pd.DataFrame(
        {
            "from_node": "node-a",
            "from_interface": np.where(rng.random(n) < 0.5, "eth0", "vxlan.calico"),
            "to_node": "node-b",
            "to_interface": "eth0",
            "nat": False,
            "delta_us": 10 ** rng.uniform(0, 4, n),
        }
    )

    def pixels(png: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    fewer = pixels(plots.latency_cdf(samples))
    assert len(plots._cdf_ranks(n)) <= n // 10  # the drawn line really is thinned
    monkeypatch.setattr(plots, "CDF_POINTS", 10**9)
    every = pixels(plots.latency_cdf(samples))
    assert fewer.shape == every.shape
    assert np.abs(fewer.astype(int) - every.astype(int)).max() <= 8


def test_drops_alike_make_one_headline_and_the_report_details_a_bounded_number(analysed, monkeypatch, tmp_path):
    """An incident drops many flows the same way: drops to the same service, over the same stretch
    of path, with the same cause, make one headline that counts them, while findings.json keeps
    every drop; report.md and report.html detail at most REPORT_DROPS and say how many more."""
    import copy

    import calforensics.render.report as report
    from calforensics.analyses.findings import _headlines
    from calforensics.render import markdown

    _, a, _ = analysed
    doc = copy.deepcopy(a.findings)
    first = doc["drops"][0]
    clones = [dict(copy.deepcopy(first), flow_id=1000 + i, src_port=40000 + i) for i in range(5)]
    doc["drops"] = doc["drops"] + clones
    heads = [h for h in _headlines(None, doc) if h["kind"] == "drop"]
    assert len(heads) == len(a.findings["drops"])  # the clones joined their original's headline
    grouped = next(h for h in heads if h["flow_id"] == first["flow_id"])
    assert grouped["title"].startswith(f"6 {first['proto'].upper()} flows to {first['dst_ip']}:{first['dst_port']}")
    singles = [h for h in heads if h["flow_id"] != first["flow_id"]]
    assert all(" flows to " not in h["title"] for h in singles)

    monkeypatch.setattr(markdown, "REPORT_DROPS", 1)
    monkeypatch.setattr(report, "REPORT_DROPS", 1)
    files = calforensics.write_report(a, tmp_path, tables="none")
    more = len(a.findings["drops"]) - 1
    assert more >= 1
    md = files.markdown.read_text()
    assert md.split("## Drops")[1].split("\n## ")[0].count("### <a id=") == 1
    assert f"{more} more dropped flow(s)" in md
    html = files.html.read_text()
    assert html.count('alt="path of flow') == 1 + len(
        re.findall('alt="path of flow [0-9]+"', html.split('<h2 id="flows">Flows</h2>')[1])
    )
    assert f"{more} more dropped flow(s)" in html
    assert len(json.loads(files.findings.read_text())["drops"]) == len(a.findings["drops"])


def test_evidence_is_listed_once_in_order_of_weight(tmp_path):
    """The denied flow's conntrack entry saved twice on node-a (a second dump of the same table) is
    listed once, saying so; the drop's evidence runs from what counted it to what the packets show."""
    from groundtruth import flow_for

    from calforensics.analyses.drops import EVIDENCE_WEIGHT

    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    node_a = root / "nodes" / "node-a"
    (node_a / "conntrack-again.txt").write_text((node_a / "conntrack-list.txt").read_text())
    truth = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
    gt = next(f for f in truth["flows"] if f["name"] == "denied")
    with calforensics.open_bundle(root) as b:
        d = calforensics.analyze(b).drops.set_index("flow_id").loc[int(flow_for(b, gt).flow_id)]
    details = [e["detail"] for e in d.evidence]
    assert len(details) == len(set(details))
    twice = [x for x in details if x.startswith("node-a: tcp SYN_SENT") and x.endswith("(in 2 dumps)")]
    assert len(twice) == 1, details
    weights = [EVIDENCE_WEIGHT[e["kind"]] for e in d.evidence]
    assert weights == sorted(weights) and d.evidence[0]["kind"] == "counter" and d.evidence[-1]["kind"] == "observed"


def test_the_report_opens_with_the_answer(tmp_path):
    """The verdict names the VXLAN sample's two failures in one sentence, each claim about its own
    flow; report.html opens with it, each claim a link to an anchor the page has; report.md and the
    terminal summary open with it too."""
    from groundtruth import flow_for

    truth = json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        a = calforensics.analyze(b)
        ids = {gt["name"]: int(flow_for(b, gt).flow_id) for gt in truth["flows"]}
        files = calforensics.write_report(a, tmp_path / "r")
    v = a.findings["verdict"]
    assert v["text"] == (
        "2 of 6 flows failed: TCP from 192.168.10.5 to 192.168.20.9:5432 is dropped at the end of tier default on "
        "node-b (policy secure/default.db-allow-app, 4 packet(s)); UDP from 192.168.10.9 to 192.168.20.7:9000 "
        "exceeds the VXLAN MTU 1450 on node-a."
    )
    assert [c["flow_id"] for c in v["claims"]] == [ids["denied"], ids["mtu"]]
    assert len(re.findall(r"[.!?](?:\s|$)", v["text"])) <= 3
    html = files.html.read_text()
    answer = re.search(r'<p class="answer">(.*?)</p>', html, re.S).group(1)
    links = re.findall(r'href="#([\w-]+)"', answer)
    assert links == [f"flow-{ids['denied']}", f"flow-{ids['mtu']}"]
    assert all(f'id="{x}"' in html for x in links)
    assert html.index('class="answer"') < html.index("<h2>Findings</h2>")
    md_text = files.markdown.read_text()
    assert md_text.split("\n")[2].startswith("**2 of 6 flows failed: [TCP from 192.168.10.5")
    r = run_cli("analyze", SAMPLES / "lab-vxlan.tgz", "-o", tmp_path / "cli", "--tables", "none")
    assert r.stdout.splitlines()[1] == v["text"]


def test_the_pages_flow_data_is_bounded_and_cannot_end_its_block(tmp_path, monkeypatch):
    """The page carries at most HTML_FLOW_DATA flows and says so plainly beyond it; bundle text in the
    data block (here a service named to close the block and open a script) stays inside it."""
    import calforensics.render.report as report

    flow = {
        "id": 1, "proto": "tcp", "client_ip": "10.0.0.1", "client_port": 1, "server_ip": "10.0.0.2", "server_port": 80,
        "service": '</script><script>alert(1)</script>\x1b[2J', "backend_ip": None, "backend_port": None,
        "snat_ip": None, "snat_port": None, "packets": 2, "conn_state": "SF", "history": "Sh", "verdict": "delivered",
        "path": [{"node": "n", "interface": "eth0", "role": "uplink"}],
    }  # fmt: skip
    block = str(report._flow_data([flow], {}))
    assert "<" not in block and ">" not in block and "\x1b" not in block
    assert json.loads(block)["rows"][0][4] == "</script><script>alert(1)</script>\\x1b[2J"
    monkeypatch.setattr(report, "HTML_FLOW_DATA", 3)
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        files = calforensics.write_report(calforensics.analyze(b), tmp_path, tables="none")
    html = files.html.read_text()
    data = json.loads(re.search(r'<script type="application/json" id="flow-data">(.*?)</script>', html).group(1))
    assert len(data["rows"]) == 3 and "This page carries the first 3 of 6 flows" in html
