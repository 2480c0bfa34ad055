"""Every table has exactly its documented columns and dtypes, empty or not; the docs are current."""

from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE
from pktutil import eth, tcp4, write_pcap

import calforensics
from calforensics.schema import SCHEMAS, markdown


def check(bundle):
    for table in calforensics.TABLES:
        df = bundle.table(table)
        documented = SCHEMAS[table][1]
        assert list(df.columns) == [c for c, _, _ in documented], table
        for col, dtype, _ in documented:
            actual = str(df[col].dtype)
            assert actual == dtype or (dtype == "string" and actual == "object"), (table, col, actual, dtype)


def test_sample_bundle_matches_schema():
    with calforensics.open_bundle(SAMPLE) as b:
        check(b)


def test_empty_tables_match_schema(tmp_path):
    with calforensics.open_bundle(write_pcap(tmp_path / "one.pcap", [eth(tcp4())])) as b:
        check(b)
        assert len(b.conntrack) == 0 and len(b.rules) == 0


@pytest.mark.parametrize("name", ["tables.md"])
def test_docs_are_generated_from_schema(name):
    assert (ROOT / "docs" / name).read_text() == markdown(), "run `make docs`"
    assert Path(ROOT / "docs" / name).stat().st_size > 1000
