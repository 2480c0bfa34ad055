"""diff.html, diff.md and diff.json: what changed between two analyses (analyses.diff). Text from
the bundles is inert in each, as in the reports (HTML autoescape and render.inert, markdown.md)."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from ..version import __version__
from .inert import template_value
from .markdown import _table, md


def _flow(f: dict) -> str:
    port = f":{f['server_port']}" if f.get("server_port") is not None else ""
    service = f" ({f['service']})" if f.get("service") else ""
    return f"{f['proto']} {f['client_ip']} → {f['server_ip']}{port}{service}"


def _counts(v: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(v.items()))


def _drop(d: dict) -> str:
    c = d["cause"] or {}
    cause = f"{c.get('kind')} on {c.get('node')}" if c else "cause unknown"
    where = f" {c['chain']}" if c.get("chain") else ""
    policy = f" (policy {c['policy']})" if c.get("policy") else ""
    what = f"{d['proto']} {d['src_ip']} → {d['dst_ip']}:{d['dst_port']}"
    return f"{what}: {cause}{where}{policy}; {d['packets']} packet(s)"


def _hop(s: dict) -> str:
    return f"{s['from']['node']}:{s['from']['interface']} → {s['to']['node']}:{s['to']['interface']}"


def _sections(doc: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    """(title, column titles, rows) of each section, in the order both renderings show them."""
    f, mtu = doc["flows"], doc["mtu"]

    def drops(entries: list[dict]) -> list[list[object]]:
        return [[_drop(d), ", ".join(map(str, d["flow_ids"][:10]))] for d in entries]

    def flows(entries: list[dict]) -> list[list[object]]:
        return [[_flow(x), _counts(x["verdicts"])] for x in entries]

    def findings(entries: list[dict]) -> list[list[object]]:
        return [[m["kind"], m["node"], m["detail"]] for m in entries]

    counters = [
        [r["node"], f"{r['table']}/{r['chain']}", r["comment"] or r["rule"], r["old"], r["new"]]
        for r in doc["rule_counters"]
    ]
    shifts = [[_hop(s), s["old_p50_us"], s["new_p50_us"], s["spread_us"]] for s in doc["latency_shifts"]]
    return [
        ("New drops", ["drop", "flows (new)"], drops(doc["drops"]["new"])),
        ("Resolved drops", ["drop", "flows (old)"], drops(doc["drops"]["resolved"])),
        (
            "Flows that changed verdict",
            ["flow", "old", "new"],
            [[_flow(x), _counts(x["old"]), _counts(x["new"])] for x in f["changed_verdict"]],
        ),
        ("Flows that appeared", ["flow", "verdicts"], flows(f["appeared"])),
        ("Flows that disappeared", ["flow", "verdicts"], flows(f["disappeared"])),
        ("Rule counters that moved", ["node", "chain", "rule", "old packets", "new packets"], counters),
        ("New MTU findings", ["kind", "node", "detail"], findings(mtu["new"])),
        ("Resolved MTU findings", ["kind", "node", "detail"], findings(mtu["resolved"])),
        ("Hop latency shifts beyond their spread", ["hop", "old p50 µs", "new p50 µs", "spread µs"], shifts),
    ]


def render_diff_markdown(doc: dict) -> str:
    title = f"# calforensics diff: {md(doc['old']['name'])} → {md(doc['new']['name'])}"
    lines = [title, "", f"**{md(doc['summary'])}**", ""]
    for heading, headers, rows in _sections(doc):
        lines += [f"## {heading}", ""]
        lines += [*_table(headers, rows), ""] if rows else ["None.", ""]
    lines.append(f"calforensics {__version__}")
    return "\n".join(lines) + "\n"


def render_diff_html(doc: dict) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("calforensics", "render/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=template_value,
    )
    return env.get_template("diff.html.j2").render(doc=doc, flow=_flow, counts=_counts, drop=_drop, version=__version__)


def write_diff(doc: dict, out_dir: str | Path) -> dict[str, Path]:
    """diff.json (docs/diff.schema.json), diff.md and diff.html under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "diff.json", "md": out / "diff.md", "html": out / "diff.html"}
    paths["json"].write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    paths["md"].write_text(render_diff_markdown(doc))
    paths["html"].write_text(render_diff_html(doc))
    return paths
