"""Deterministic output: the same bundle gives byte-identical reports, findings.json and table
exports on every run, with one worker or two, and with the tables spilled and joined in partitions.

Every place where work is split is forced to split even on small bundles (the join's fingerprint
ranges, the flow summaries' ranges, the CSV export's parts, the spilled path's partitions and
blocks), so a result that depended on the split or on thread timing would show here.
"""

import hashlib

import pytest
from conftest import SAMPLES

import calforensics


def outputs(path, out, tables, **kwargs) -> dict[str, str]:
    """Every file the report writes, as a digest of its bytes."""
    with calforensics.open_bundle(path, **kwargs) as b:
        files = calforensics.write_report(calforensics.analyze(b), out, tables=tables)
    return {
        str(f.relative_to(files.directory)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(files.directory.rglob("*"))
        if f.is_file()
    }


@pytest.mark.parametrize("tables", ["csv", "parquet"])
@pytest.mark.parametrize("name", ["lab-vxlan", "lab-ipip", "lab-ebpf", "lab-wireguard"])
def test_reports_and_tables_are_byte_identical_across_runs_workers_and_spilling(tmp_path, monkeypatch, name, tables):
    from calforensics.join import hops as join
    from calforensics.join import summaries
    from calforensics.render import report

    monkeypatch.setattr(join, "JOIN_MIN_ROWS", 0)
    monkeypatch.setattr(summaries, "SUMMARY_MIN_HOPS", 0)
    monkeypatch.setattr(report, "CSV_PART_ROWS", 50)
    path = SAMPLES / f"{name}.tgz"
    runs = {
        "one worker": {"workers": 1},
        "one worker again": {"workers": 1},
        "two workers": {"workers": 2},
        "two workers again": {"workers": 2},
        "spilled, partitions of 40 packets": {
            "workers": 2,
            "spill": True,
            "spill_dir": tmp_path / "spill",
            "partition_packets": 40,
            "chunk_packets": 8,
        },
    }
    got = {label: outputs(path, tmp_path / label, tables, **kwargs) for label, kwargs in runs.items()}
    first = got["one worker"]
    assert {"findings.json", "report.html", "report.md", f"tables/hops.{tables}"} <= set(first)
    for label, files in got.items():
        assert files == first, label
