"""Write an analysis to disk: report.html, report.md, findings.json and the tables.

`calforensics analyze` is `open_bundle` + `analyze` + `write_report`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import jinja2
import markupsafe
import numpy as np
import pandas as pd

from ..analyses import Analysis
from ..analyses.blocks import select_hops
from ..schema import category_code
from ..version import __version__
from . import plots
from .exports import EXPORT_FORMATS, write_jsonl, write_zeek_conn
from .inert import csv_frame, inert_data, template_value
from .markdown import REPORT_DROPS, artifact_rows, focus_text, render_markdown, wireguard_text

TABLE_FORMATS = ("csv", "parquet", "none")
HTML_FLOWS = 300  # flows report.html lists as static rows (what shows with scripts off)
PATH_FIGURES = 8  # distinct drop paths drawn (a drawing each); further drops' paths are in their text
HTML_FLOW_DATA = 20_000  # flows the page carries for its flow table to filter, sort and page through
FLOW_KEYS = [
    *("id", "proto", "client", "server", "service", "backend", "snat", "packets", "state", "verdict", "path"),
    "tags",  # not shown: what a service's or a pod's link filters by
]
FLOWS_JS = (Path(__file__).parent / "templates" / "flows.js").read_text()
# the one script the page may run, by its hash (Content-Security-Policy script-src)
FLOWS_JS_HASH = base64.b64encode(hashlib.sha256(FLOWS_JS.encode()).digest()).decode()


@dataclass
class ReportFiles:
    directory: Path
    html: Path
    markdown: Path
    findings: Path
    tables: list[Path]
    exports: list[Path] = field(default_factory=list)


def _b64(png: bytes | None) -> str:
    return base64.b64encode(png).decode() if png else ""


def _images(a: Analysis) -> dict:
    b = a.bundle
    flows = b.flows
    hops = b.hops
    t0 = int(hops["ts_corrected_ns"].min()) if len(hops) else 0
    detailed = a.drops.head(REPORT_DROPS)  # the drops the report details
    paths = {}
    path_of = dict(zip(flows["flow_id"].tolist(), flows["path_fwd"].tolist(), strict=True))
    drawn: dict[tuple, str] = {}  # drops along the same path, lost at the same place, share one drawing
    for d in detailed.itertuples(index=False):
        key = (path_of[int(d.flow_id)], d.last_seen, d.missing_at)
        if key not in drawn and len(drawn) < PATH_FIGURES:
            drawn[key] = _b64(plots.path_diagram(*key, "where the packets stopped"))
        paths[int(d.flow_id)] = drawn.get(key, "")  # past PATH_FIGURES: the text says where
    service_paths = {}
    for f in flows[(flows["service"] != "") & (flows["verdict"] != "unobserved")].head(3).itertuples(index=False):
        service_paths[int(f.flow_id)] = _b64(
            plots.path_diagram(
                f.path_fwd,
                title=f"flow {f.flow_id}: {f.client_ip}:{f.client_port} → {f.service} ({f.server_ip}:"
                f"{f.server_port}) → {f.backend_ip}:{f.backend_port}",
            )
        )
    return {
        "latency": _b64(plots.latency_cdf(a.latency_samples)),
        "overhead": _b64(plots.overhead_by_tunnel(a.tunnels)),
        "drops": _b64(plots.drops_over_time(detailed, _first_sightings(b, detailed["flow_id"].to_numpy()), t0)),
        "paths": paths,
        "service_paths": service_paths,
    }


def _first_sightings(b, flow_ids: np.ndarray) -> pd.DataFrame:
    """(flow_id, ts_corrected_ns) of the forward packets of these flows, where first seen."""
    h = b.hops
    flow, hop_index, direction = h["flow_id"].to_numpy(), h["hop_index"].to_numpy(), h["direction"].array
    fwd = category_code(direction, "fwd")

    def first_forward(lo: int, hi: int) -> np.ndarray:
        return np.isin(flow[lo:hi], flow_ids) & (direction.codes[lo:hi] == fwd) & (hop_index[lo:hi] == 0)

    return select_hops(b, first_forward, ["flow_id", "ts_corrected_ns"])


def _slowest(a: Analysis, n: int = 10) -> list[dict]:
    lf = a.latency_flows.dropna(subset=["handshake_rtt_us"]).sort_values("handshake_rtt_us", ascending=False).head(n)
    flows = a.bundle.flows.set_index("flow_id")
    out = []
    for r in lf.itertuples(index=False):
        f = flows.loc[r.flow_id]
        out.append(
            {
                "flow_id": int(r.flow_id),
                "client": f"{f.client_ip}:{f.client_port}",
                "server": f"{f.server_ip}:{f.server_port}",
                "rtt": r.handshake_rtt_us,
                "max_hop": "" if pd.isna(r.max_hop_us) else r.max_hop_us,
                "transit": "" if pd.isna(r.node_transit_us) else r.node_transit_us,
            }
        )
    return out


def _endpoint(ip: object, port: object) -> str:
    if not ip:
        return ""
    host = f"[{ip}]" if ":" in str(ip) else str(ip)
    return f"{host}:{port}" if port is not None else host


def _pod_tag(p: dict) -> str:
    return f"pod={p['node']}:{p['interface']};"


def _service_tag(service: str) -> str:
    return f"svc={service};"


def _pod_rows(doc: dict) -> list[dict]:
    """The pods section's rows, each with the flow table query that shows its flows (its tag)."""
    return [{**p, "query": _pod_tag(p)} for p in doc["pods"]]


def _flow_tags(doc: dict) -> dict[int, str]:
    """Per flow, the tags its service and its pods give it (one word each, so the flow table's
    filter finds exactly a service's or a pod's flows: `svc=<service>;`, `pod=<node>:<interface>;`)."""
    by_ip: dict[str, list[str]] = {}
    for p in doc["pods"]:
        for ip in p["addresses"]:
            by_ip.setdefault(ip, []).append(_pod_tag(p))
    tags = {}
    for f in doc["flows"]:
        words = [_service_tag(f["service"])] if f["service"] else []
        server = f["backend_ip"] or f["server_ip"]
        words += by_ip.get(f["client_ip"], []) + by_ip.get(server, [])
        tags[f["id"]] = " ".join(dict.fromkeys(words))
    return tags


def _flow_data(flows: list[dict], tags: dict[int, str]) -> markupsafe.Markup:
    """The flows the page's table works on, as a JSON data block: a row a flow (FLOW_KEYS), text made
    inert, and `<`, `>`, `&` written as JSON escapes so nothing in it can end the block."""
    rows = [
        [
            f["id"],
            f["proto"],
            _endpoint(f["client_ip"], f["client_port"]),
            _endpoint(f["server_ip"], f["server_port"]),
            f["service"] or "",
            _endpoint(f["backend_ip"], f["backend_port"]),
            _endpoint(f["snat_ip"], f["snat_port"]),
            f["packets"],
            f"{f['conn_state']} {f['history']}".strip(),
            f["verdict"],
            " › ".join(f"{p['node']}:{p['interface']}" for p in f["path"]),
            tags.get(f["id"], ""),
        ]
        for f in flows
    ]
    text = json.dumps({"keys": FLOW_KEYS, "rows": inert_data(rows)}, ensure_ascii=True, separators=(",", ":"))
    return markupsafe.Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def render_html(a: Analysis, files: list[tuple[str, int | None]]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("calforensics", "render/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=template_value,
    )
    doc = a.findings
    verdicts = {
        v: sum(1 for f in doc["flows"] if f["verdict"] == v) for v in ("delivered", "dropped", "partial", "unobserved")
    }
    # the flows that matter: lost ones first, then the busiest; all of them are in tables/flows.*
    order = {"dropped": 0, "partial": 1, "delivered": 2, "unobserved": 3}
    ranked = sorted(doc["flows"], key=lambda f: (order[f["verdict"]], -f["packets"], f["id"]))
    shown = [f for f in ranked if f["verdict"] != "unobserved"][:HTML_FLOWS]
    carried = ranked[:HTML_FLOW_DATA]
    shown_drops = {d["flow_id"] for d in doc["drops"][:REPORT_DROPS]}
    rows = {f["id"] for f in shown}
    # each claim of the verdict links to its drop, else to its row of the flows table, where shown
    answer = [
        (
            c["text"],
            f"flow-{c['flow_id']}" if c["flow_id"] in shown_drops else f"row-{c['flow_id']}" * (c["flow_id"] in rows),
        )
        for c in doc["verdict"]["claims"]
    ]
    return env.get_template("report.html.j2").render(
        doc=doc,
        answer=answer,
        drops=doc["drops"][:REPORT_DROPS],
        more_drops=max(0, len(doc["drops"]) - REPORT_DROPS),
        verdicts=verdicts,
        focus=focus_text(doc["bundle"].get("focus")),
        wireguard_text=wireguard_text(doc["wireguard"]) if doc.get("wireguard") else "",
        artifacts=artifact_rows(a),
        images=_images(a),
        flows=shown,
        flow_data=_flow_data(carried, _flow_tags(doc)),
        pods=_pod_rows(doc),
        carried=len(carried),
        flows_js=markupsafe.Markup(FLOWS_JS),
        flows_js_hash=FLOWS_JS_HASH,
        slowest=_slowest(a),
        files=files,
        version=__version__,
    )


def findings_json(a: Analysis) -> str:
    """Indented for people when small; compact (and ~10x faster to write) when it lists many flows."""
    indent = 2 if len(a.findings["flows"]) <= 2000 else None
    return json.dumps(a.findings, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"


CSV_PART_ROWS = 200_000  # rows of a table one export task writes; bigger tables are cut into parts
_EXPORTING: dict[str, pd.DataFrame] = {}  # tables being exported, inherited by forked writers


@dataclass
class _CsvPart:
    table: str
    start: int
    stop: int
    path: Path
    header: bool


def _write_csv_part(part: _CsvPart) -> None:
    rows = _EXPORTING[part.table].iloc[part.start : part.stop]
    rows.to_csv(part.path, index=False, header=part.header, lineterminator="\n")


def _csv_parts(tables: dict[str, pd.DataFrame], directory: Path) -> list[_CsvPart]:
    """Row ranges of every table, each written to its own file and concatenated after: the text of
    a row does not depend on the rows around it, so the pieces join into the whole table's bytes."""
    parts = []
    for name, df in tables.items():
        bounds = [*range(0, len(df), CSV_PART_ROWS), len(df)] if len(df) else [0, 0]
        for i, (start, stop) in enumerate(pairwise(bounds)):
            parts.append(_CsvPart(name, start, stop, directory / f".{name}.csv.part{i}", header=i == 0))
    return parts


def _append(piece, out) -> None:
    """Copy a file's bytes to the end of another (unbuffered files), in the kernel where it can."""
    size, done = os.fstat(piece.fileno()).st_size, 0
    try:
        while done < size:
            n = os.copy_file_range(piece.fileno(), out.fileno(), size - done)
            if n == 0:
                break
            done += n
    except (AttributeError, OSError):  # not Linux, or a file system without it: copy by hand
        pass
    piece.seek(done)
    shutil.copyfileobj(piece, out, 1 << 20)


class TableExport:
    """The tables of a report, written under ``out_dir/tables`` in ``fmt`` (csv, parquet, none).

    A table of more than CSV_PART_ROWS rows, with more than one worker, is written as CSV in row
    parts by forked processes while this process goes on (rendering the report); ``finish`` waits
    and joins the parts. (Starting the bundle's tables before the analyses, to overlap them too,
    was measured: no gain on two cores, where the writers already keep both busy.)
    """

    def __init__(self, out_dir: str | Path, fmt: str, workers: int) -> None:
        if fmt not in TABLE_FORMATS:
            raise ValueError(f"tables must be one of {', '.join(TABLE_FORMATS)}")
        self.directory = Path(out_dir) / "tables"
        self.fmt = fmt
        self.workers = workers if "fork" in multiprocessing.get_all_start_methods() else 1
        self.paths: dict[str, Path] = {}
        self._parts: list[_CsvPart] = []
        self._pending: list = []
        self._pools: list[ProcessPoolExecutor] = []

    def add(self, frames: dict[str, pd.DataFrame]) -> None:
        if self.fmt == "none" or not frames:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths.update({name: self.directory / f"{name}.{self.fmt}" for name in frames})
        if self.fmt == "parquet":
            for name, df in frames.items():
                try:
                    df.to_parquet(self.paths[name], index=False)
                except ImportError as exc:
                    raise RuntimeError("Parquet export needs pyarrow: pip install 'calforensics[parquet]'") from exc
            return
        frames = {name: csv_frame(df) for name, df in frames.items()}  # text a terminal or spreadsheet cannot run
        parts = _csv_parts(frames, self.directory)
        if self.workers <= 1 or len(parts) <= len(frames):  # nothing to cut: forking would cost more
            for name, df in frames.items():
                df.to_csv(self.paths[name], index=False, lineterminator="\n")
            return
        _EXPORTING.update(frames)  # before the pool forks its processes (at the first submit)
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("fork"))
        self._pools.append(pool)
        self._parts += parts
        self._pending += [pool.submit(_write_csv_part, part) for part in parts]

    def finish(self) -> None:
        """Join each table's parts in row order, each as soon as it and those before it are
        written (the joining overlaps the writers still at work), then remove them."""
        futures = dict(zip((id(p) for p in self._parts), self._pending, strict=True))
        for name in dict.fromkeys(p.table for p in self._parts):
            with open(self.paths[name], "wb", buffering=0) as out:
                for part in (p for p in self._parts if p.table == name):
                    futures[id(part)].result()
                    with open(part.path, "rb", buffering=0) as piece:
                        _append(piece, out)
                    part.path.unlink()
        self.close()

    def close(self) -> None:
        """Stop the writers and remove part files (also after a failure)."""
        for pool in self._pools:
            pool.shutdown(cancel_futures=True)
        for part in self._parts:
            part.path.unlink(missing_ok=True)
        self._pools, self._pending, self._parts = [], [], []
        _EXPORTING.clear()


def write_report(a: Analysis, out_dir: str | Path, tables: str = "csv", exports: tuple[str, ...] = ()) -> ReportFiles:
    """report.html, report.md, findings.json, the tables (see TableExport: large CSV tables are
    written by forked processes while this one renders the report) and ``exports`` for other tools
    (render.exports: `zeek` conn.log, `jsonl` flows, drops and hops)."""
    if tables not in TABLE_FORMATS:
        raise ValueError(f"tables must be one of {', '.join(TABLE_FORMATS)}")
    if unknown := set(exports) - set(EXPORT_FORMATS):
        raise ValueError(f"exports must be among {', '.join(EXPORT_FORMATS)}, not {', '.join(sorted(unknown))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export = TableExport(out, tables, a.bundle.runner.cores)
    try:
        frames = a.tables() if tables != "none" else {}
        export.add(frames)
        written: list[tuple[str, int | None]] = [(f"tables/{name}.{tables}", len(df)) for name, df in frames.items()]
        if "zeek" in exports:
            written.append(("zeek/conn.log", write_zeek_conn(a, out / "zeek" / "conn.log")))
        if "jsonl" in exports:
            written += list(write_jsonl(a, out / "jsonl").items())
        (out / "findings.json").write_text(findings_json(a))
        # each report lists the other files beside it, never itself
        (out / "report.md").write_text(render_markdown(a, [("report.html", None), ("findings.json", None), *written]))
        (out / "report.html").write_text(render_html(a, [("report.md", None), ("findings.json", None), *written]))
        export.finish()
    finally:
        export.close()
    extra = [out / path for path, _ in written if not path.startswith("tables/")]
    return ReportFiles(
        out, out / "report.html", out / "report.md", out / "findings.json", list(export.paths.values()), extra
    )
