"""What other tools read: Zeek's conn.log read back with zat (Zeek Analysis Tools), JSON lines with
the json module, and the Parquet tables queried with DuckDB."""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import SAMPLES
from zat.log_to_dataframe import LogToDataFrame

import calforensics
from calforensics.render.exports import CONN_FIELDS, zeek_uid


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    with calforensics.open_bundle(SAMPLES / "lab-vxlan.tgz") as b:
        a = calforensics.analyze(b)
        files = calforensics.write_report(a, out, tables="parquet", exports=("zeek", "jsonl"))
        flows = b.flows.copy()
        drops = a.drops.copy()
        hops = len(b.hops)
    return out, files, flows, drops, hops


def test_zeek_conn_log_reads_back_with_zat(exported):
    out, files, flows, drops, _ = exported
    conn = LogToDataFrame().create_dataframe(str(out / "zeek" / "conn.log"))
    routed = flows[flows.scope.astype(str) != "link"]
    assert len(conn) == len(routed) and conn.uid.is_unique
    assert list(conn.reset_index().columns) == [f for f, _ in CONN_FIELDS]
    by_id = conn.set_index("calforensics.flow_id")
    for f in routed.itertuples():
        row = by_id.loc[f.flow_id]
        assert row.uid == zeek_uid("lab-vxlan", f.flow_id)
        assert (str(row["id.orig_h"]), str(row["id.resp_h"]), row.conn_state, row.history) == (
            f.client_ip, f.server_ip, f.conn_state, f.history
        )
        assert (int(row.orig_pkts), int(row.resp_ip_bytes), row["calforensics.verdict"]) == (
            f.packets_fwd, f.bytes_rev, str(f.verdict)
        )
    dropped = by_id[by_id["calforensics.verdict"] == "dropped"]
    assert set(dropped["calforensics.drop_cause"]) == set(drops.cause_kind)
    assert (out / "zeek" / "conn.log") in files.exports
    assert "zeek/conn.log" in files.markdown.read_text()


def test_jsonl_holds_every_flow_drop_and_hop(exported):
    out, _, flows, drops, hops = exported
    rows = {n: [json.loads(x) for x in (out / "jsonl" / f"{n}.jsonl").read_text().splitlines()] for n in ("flows", "drops", "hops")}
    assert (len(rows["flows"]), len(rows["drops"]), len(rows["hops"])) == (len(flows), len(drops), hops)
    assert {r["flow_id"] for r in rows["drops"]} == set(drops.flow_id)
    assert all(isinstance(r["evidence"], list) and r["evidence"][0]["kind"] for r in rows["drops"])


def test_parquet_tables_open_in_duckdb(exported):
    out, _, flows, drops, _ = exported
    t = out / "tables"
    got = dict(duckdb.sql(f"select verdict, count(*) from '{t / 'flows.parquet'}' group by 1").fetchall())
    assert got == flows.verdict.astype(str).value_counts().to_dict()
    joined = duckdb.sql(
        f"select d.flow_id, f.client_ip, d.cause_kind from '{t / 'drops.parquet'}' d "
        f"join '{t / 'flows.parquet'}' f using (flow_id) order by d.flow_id"
    ).fetchall()
    assert [(r[0], r[2]) for r in joined] == sorted(zip(drops.flow_id, drops.cause_kind, strict=True))
