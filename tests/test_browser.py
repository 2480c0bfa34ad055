"""The report in a real browser: headless Chromium opens report.html, and the page must render
its plots and tables, make no network request and log nothing to the console; also for a bundle
with markup (and requests to a hostile host) planted in names, rule comments and policies.

Chromium runs with a fresh profile, and every connection it makes goes to a proxy this test runs
on 127.0.0.1, which records the request line and answers nothing. Chromium itself talks to its
update and account services (Google hosts) with any page, even about:blank; those are left aside
by host, and everything else counts as the page's. Needs Debian's chromium; skipped without it,
except on CI (CI=true), where .ci/run installs it.
"""

import io
import re
import shutil
import socket
import subprocess
import threading

import numpy as np
import pytest
from conftest import SAMPLE, unavailable
from PIL import Image

import calforensics

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
BROWSER_OWN = (".google.com", ".googleapis.com", ".gvt1.com", ".gstatic.com")  # Chromium's services
HOSTILE = "hostile.invalid"


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        unavailable("the browser test needs chromium (Debian package chromium)")
    return CHROMIUM


class RecordingProxy:
    """A proxy that accepts connections on 127.0.0.1, records each request line, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
            except OSError:
                self.requests.append("(nothing sent)")
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def page_requests(self) -> list[str]:
        """Requests other than Chromium's own services."""

        def host(line: str) -> str:
            target = line.split(" ")[1] if " " in line else line
            return target.split("//")[-1].split("/")[0].split(":")[0]

        # Chromium sometimes opens a connection to the proxy and closes it without sending anything
        # (a preconnect): no request, nothing left the page; seen once in a full run
        return [r for r in self.requests if r and not host(r).endswith(BROWSER_OWN)]


def open_in_chromium(chromium, html, tmp_path, fragment: str = "") -> tuple[np.ndarray, str, str, list[str]]:
    """(screenshot pixels, the DOM after load, Chromium's log, the page's requests); ``fragment``
    is added to the page's address."""
    proxy = RecordingProxy()
    try:
        common = [
            chromium,
            *FLAGS,
            f"--proxy-server=http://127.0.0.1:{proxy.port}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,6000",
        ]
        shot = tmp_path / "shot.png"
        url = html.resolve().as_uri() + fragment
        run = subprocess.run(
            [*common, f"--user-data-dir={tmp_path / 'profile-1'}", f"--screenshot={shot}", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
        dom = subprocess.run(
            [*common, f"--user-data-dir={tmp_path / 'profile-2'}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dom.returncode == 0, dom.stderr[-2000:]
    finally:
        proxy.close()
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    return pixels, dom.stdout, run.stderr + dom.stderr, proxy.page_requests()


def near(pixels: np.ndarray, rgb: str, tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of a colour (#rrggbb) in every channel."""
    want = np.asarray([int(rgb[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - want) <= tolerance).all(axis=2).sum())


def console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def test_report_renders_plots_and_tables_offline_and_quietly(chromium, tmp_path):
    with calforensics.open_bundle(SAMPLE) as b:
        files = calforensics.write_report(calforensics.analyze(b), tmp_path / "report", tables="none")
    pixels, dom, log, requests = open_in_chromium(chromium, files.html, tmp_path)
    assert requests == [] and console_lines(log) == []
    # the plots were decoded and drawn: the overhead chart's bar colours are on screen
    assert near(pixels, "#8fb3d9") > 500 and near(pixels, "#d9534f") > 200
    assert (pixels < 200).any(axis=2).mean() > 0.02  # text and tables, not a blank page
    assert dom.count("<table") >= 3 and dom.count("<tr") > 20 and dom.count('src="data:image/png;base64,') >= 3


def test_hostile_markup_stays_text_in_the_browser(chromium, tmp_path):
    """Markup planted in the bundle (scripts, event handlers, SVG, images and a script fetching a
    hostile host) is shown as text: no request leaves the page and nothing runs."""
    from test_report import hostile_bundle

    root = hostile_bundle(tmp_path / "in")
    rules = root / "nodes" / "node-b" / "iptables-nft-save.txt"
    planted = f'<script>fetch("http://{HOSTILE}/s")</script><img src=http://{HOSTILE}/i.png>'
    rules.write_text(rules.read_text().replace("Drop if no policies passed packet", f"Drop {planted}", 1))
    with calforensics.open_bundle(root) as b:
        files = calforensics.write_report(calforensics.analyze(b), tmp_path / "report", tables="none")
    assert HOSTILE in files.html.read_text()  # the planted text is in the report (as text)
    pixels, dom, log, requests = open_in_chromium(chromium, files.html, tmp_path)
    assert requests == [] and console_lines(log) == []
    # the page's own two scripts (the flows as a JSON data block, the flow table's code) and no other
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", dom, re.S)
    assert len(scripts) == 2 and not any("fetch(" in s and HOSTILE in s for s in scripts) and HOSTILE in dom
    assert near(pixels, "#d9534f") > 200  # and the report still rendered its plots


def flow_rows(dom: str) -> tuple[list[int], str]:
    """(flow ids of the flow table's rows in order, its status line) from a page's DOM."""
    table = dom.split('id="flow-table"')[1].split("</table>")[0]
    status = re.search(r'id="flow-status"[^>]*>([^<]*)<', dom)
    return [int(x) for x in re.findall(r'<tr id="row-(\d+)"', table)], status.group(1) if status else ""


def test_the_flow_table_filters_sorts_and_pages(chromium, tmp_path):
    """With scripts on, the flow table works on every flow the page carries: a view set in the
    address (as a reader's clicks set it) filters by any text and by verdict, sorts by a column
    either way and pages; the one script runs under the page's Content-Security-Policy without a
    complaint or a request. With scripts off the static table and its note stand."""
    with calforensics.open_bundle(SAMPLE) as b:
        a = calforensics.analyze(b)
        files = calforensics.write_report(a, tmp_path / "report", tables="none")
    flows = a.findings["flows"]
    by_packets = [f["id"] for f in sorted(flows, key=lambda f: (-f["packets"], f["id"]))]
    views = {
        "#flows?q=5432": ([f["id"] for f in flows if f["server_port"] == 5432], "1 of 6 flows match"),
        "#flows?v=dropped&sort=id": (sorted(f["id"] for f in flows if f["verdict"] == "dropped"), "2 of 6"),
        "#flows?sort=packets&desc=1": (by_packets, "6 of 6 flows match; page 1 of 1"),
        "#flows?sort=packets&desc=1&size=2&page=2": (by_packets[2:4], "page 2 of 3 (2 a page)"),
        # words are all found, anywhere in the row: its path, or its pod's tag (the flow to the pod
        # behind that interface never reached it)
        "#flows?q=node-b%3Acali3a87a5219a9+tcp": (
            sorted(
                {f["id"] for f in flows if any(f"{p['node']}:{p['interface']}" == "node-b:cali3a87a5219a9" for p in f["path"])}
                | {i for p in a.findings["pods"] if p["interface"] == "cali3a87a5219a9" for i in p["flow_ids"]}
            ),
            "of 6 flows match",
        ),
    }
    for fragment, (want, said) in views.items():
        _, dom, log, requests = open_in_chromium(chromium, files.html, tmp_path / fragment[7:12], fragment)
        rows, status = flow_rows(dom)
        assert rows == want and said in status, (fragment, rows, status)
        assert requests == [] and console_lines(log) == [], (fragment, console_lines(log))
        assert 'id="flow-controls" hidden' not in dom
    # a reader without scripts has the page as written (headless Chromium dumps no DOM with scripts
    # off): the static rows, the controls hidden, the note saying where the rest is
    page = files.html.read_text()
    rows, status = flow_rows(page)
    assert sorted(rows) == sorted(f["id"] for f in flows if f["verdict"] != "unobserved") and status == ""
    assert 'id="flow-controls" hidden' in page and "With scripts on, this table filters" in page


def test_service_and_pod_names_show_their_flows(chromium, tmp_path):
    """A service's or a pod's name is a link to the flow table's view of its flows: opened at that
    address, the page lists exactly them."""
    with calforensics.open_bundle(SAMPLE) as b:
        a = calforensics.analyze(b)
        files = calforensics.write_report(a, tmp_path / "report", tables="none")
    html = files.html.read_text()
    links = re.findall(r'<a href="(#flows\?q=[^"]+)">', html)
    assert len(links) == len(a.findings["services"]) + len(a.findings["pods"]) >= 5
    wanted = [sorted(x["flow_ids"]) for x in a.findings["services"] + a.findings["pods"]]
    for i, (link, want) in enumerate(zip(links, wanted, strict=True)):
        _, dom, log, _ = open_in_chromium(chromium, files.html, tmp_path / f"v{i}", link.replace("&amp;", "&"))
        rows, _ = flow_rows(dom)
        assert sorted(rows) == want, (link, rows)
        assert console_lines(log) == []
