"""Text from a bundle never reaches a terminal, a Markdown or CSV reader as control characters or
markup: every command is run on a bundle whose node, file and rule names carry terminal escape
sequences (clear screen, window title, OSC 52 clipboard), a bidirectional override, Rich markup,
Markdown, HTML and a spreadsheet formula, and the raw bytes of what each writes are checked."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tarfile

from conftest import SAMPLES

from calforensics.render.inert import csv_cell, inert

# a node name: a formula first (CSV), then ESC sequences, BEL, markup of every kind
HOSTILE = "=HYPERLINK(1)\x1b[2J\x1b]0;owned\x07\x1b]52;c;Y2FsYw==\x07[bold red]r**m**<u>h\u202ex"  # no "/": a name
RAW = [b"\x1b", b"\x07", "\u202e".encode()]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "calforensics.cli", *map(str, args)], capture_output=True, timeout=300, cwd=cwd
    )


def test_inert_text_and_csv_cells():
    assert inert("a\x1b[2Jb\x07\u202e\n") == "a\\x1b[2Jb\\x07\\u202e\\x0a"
    assert inert("plain [red] **x** <b>") == "plain [red] **x** <b>"  # markup is each renderer's business
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("-p tcp") == "'-p tcp" and csv_cell("@x") == "'@x"
    assert csv_cell("node-a") == "node-a" and csv_cell(-1) == -1


def hostile_bundle(tmp_path):
    with tarfile.open(SAMPLES / "lab-vxlan.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "lab-vxlan"
    (root / "nodes" / "node-a").rename(root / "nodes" / HOSTILE)
    (root / "nodes" / "node-b" / f"notes-{HOSTILE}.txt").write_text(f"{HOSTILE}\n")
    return root


def test_every_command_writes_bundle_text_inert(tmp_path):
    root = hostile_bundle(tmp_path)
    out = tmp_path / "report"
    runs = {
        "inspect": run_cli("inspect", root),
        "analyze": run_cli("analyze", root, "-o", out),
        "flows": run_cli("flows", root),
        "path": run_cli("path", root, "0"),
        "diff": run_cli("diff", root, out / "findings.json", "-o", tmp_path / "diff"),
    }
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr[-2000:])
        for raw in RAW:
            assert raw not in r.stdout and raw not in r.stderr, (name, raw)
    shown = runs["inspect"].stdout.decode()
    # the escaped forms are what a reader sees, and Rich markup stays text (it would vanish if it were read)
    assert "\\x1b[2J" in shown and "\\x07" in shown and "\\u202e" in shown and "[bold red]r" in shown
    files = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for d in (out, tmp_path / "diff") for p in d.rglob("*") if p.is_file()}
    assert "report/report.md" in files and "report/report.html" in files and any(n.endswith(".csv") for n in files)
    assert "diff/diff.md" in files and "diff/diff.html" in files
    for name, data in files.items():
        if name.endswith((".md", ".html", ".csv")):
            for raw in RAW:
                assert raw not in data, (name, raw)
    md, html = files["report/report.md"].decode(), files["report/report.html"].decode()
    assert "\\*\\*m\\*\\*" in md and "&lt;u>h" in md and "<u>h" not in md
    assert "&lt;u&gt;h" in html and "<u>h" not in html
    # no CSV cell that is text starts like a formula (numbers such as -1 stay numbers)
    for name, data in files.items():
        if not name.endswith(".csv"):
            continue
        for row in csv.reader(data.decode().splitlines()):
            for cell in row:
                if cell[:1] in ("=", "+", "@") or (cell[:1] == "-" and not _number(cell)):
                    raise AssertionError(f"{name}: {cell[:60]!r}")
    assert any(f"'{inert(HOSTILE)}" in data.decode() for n, data in files.items() if n.endswith(".csv"))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_a_hostile_archive_member_name_in_an_error_is_inert(tmp_path):
    """An unusable bundle's one error line quotes the path as given, escaped."""
    bad = tmp_path / f"x{HOSTILE}.tgz"
    bad.write_bytes(b"not an archive")
    r = run_cli("inspect", bad)
    assert r.returncode == 2 and b"\x1b" not in r.stderr and b"\\x1b" in r.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)
