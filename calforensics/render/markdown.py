"""report.md: the summary and the findings, pasteable into an incident ticket.

Every string that came from the bundle goes through `md()`, which neutralises Markdown and HTML.
"""

from __future__ import annotations

import datetime as dt
import re

from ..analyses import Analysis
from .inert import inert

REPORT_DROPS = 50  # drops detailed in report.md and report.html (with a path diagram); findings.json has all

# characters that start Markdown constructs mid-line; `<` and `&` are escaped so no HTML tag or entity
# survives, and callers never put bundle text at the start of a line (where `#`, `-` and `>` would matter)
MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md(value: object) -> str:
    """Bundle text made inert in Markdown (and in the HTML many Markdown viewers allow)."""
    text = inert(value).replace("&", "&amp;").replace("<", "&lt;")
    return MD_SPECIAL.sub(r"\\\1", text)


def _table(headers: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
    return out


def focus_text(focus: dict | None) -> str:
    """What the analysis was cut down to, in words ("" for the whole bundle)."""
    if not focus:
        return ""

    def when(ns: int) -> str:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")

    parts = [
        *([f"hosts {', '.join(focus['hosts'])}"] if focus["hosts"] else []),
        *([f"ports {', '.join(map(str, focus['ports']))}"] if focus["ports"] else []),
        *([f"nodes {', '.join(focus['nodes'])}"] if focus["nodes"] else []),
        *([f"from {when(focus['since_ns'])}"] if focus["since_ns"] is not None else []),
        *([f"until {when(focus['until_ns'])}"] if focus["until_ns"] is not None else []),
    ]
    return "; ".join(parts) + " (packets out of focus were left out of the join)"


def wireguard_text(wg: dict) -> str:
    """One paragraph on the WireGuard match, for both reports."""
    overhead = wg["overhead_bytes"]
    return (
        f"{wg['messages']} messages: {wg['matched']} data messages paired with their plaintext "
        f"({wg['ambiguous']} ambiguous), {wg['segmented']} segments of GSO/GRO super-packets, "
        f"{wg['unmatched_outer']} message(s) and {wg['unmatched_inner']} plaintext(s) without a partner, "
        f"{wg['no_plaintext_capture']} on nodes without a WireGuard device capture; {wg['keepalives']} keepalives, "
        f"{wg['handshakes']} handshake messages, {wg['rekeys']} rekey(s)."
        + (
            f" Overhead per packet {overhead['min']}-{overhead['max']} bytes (mean {overhead['mean']}): "
            "60 plus the padding to 16 (IPv4)."
            if overhead
            else ""
        )
    )


def render_markdown(a: Analysis, files: list[tuple[str, int | None]]) -> str:
    """The report as Markdown, a section at a time (the HTML template has the same sections)."""
    doc = a.findings
    lines = [
        *_summary(doc),
        *_findings(doc["findings"]),
        *_drops(doc["drops"]),
        *_services(doc.get("services", [])),
        *_pods(doc.get("pods", [])),
        *_overhead(doc["overhead"]),
        *_wireguard(doc.get("wireguard")),
        *_latency(doc["latency"]),
        *_clocks(doc["clock_offsets"]),
        *_what_was_read(a),
        *_files(files),
    ]
    return "\n".join(lines)


def _summary(doc: dict) -> list[str]:
    """The title, then one paragraph of counts, the focus and each node's dataplane."""
    b = doc["bundle"]
    flows = doc["flows"]
    verdicts = {
        v: sum(1 for f in flows if f["verdict"] == v) for v in ("delivered", "dropped", "partial", "unobserved")
    }
    v = doc["verdict"]
    shown = {d["flow_id"] for d in doc["drops"][:REPORT_DROPS]}
    claims = "; ".join(
        f"[{md(c['text'])}](#flow-{c['flow_id']})" if c["flow_id"] in shown else md(c["text"]) for c in v["claims"]
    )
    lines = [
        f"# calforensics report: {md(b['name'])}",
        "",
        f"**{md(v['lead'])}{claims}{'.' if v['claims'] else ''}{md(v['tail'])}**",
        "",
        f"Nodes: {', '.join(md(n) for n in b['nodes']) or 'none named'}; {len(b['captures'])} capture points; "
        f"{len(flows)} flows ({verdicts['delivered']} delivered, {verdicts['dropped']} dropped, "
        f"{verdicts['partial']} partial, {verdicts['unobserved']} unobserved); "
        f"{doc['anomalies']['total']} anomalies while reading.",
        "",
    ]
    if focus := focus_text(b.get("focus")):
        lines += [f"Focus: {md(focus)}", ""]
    if b.get("dataplane"):
        modes = "; ".join(
            f"{md(d['node'])} {md(d['mode'])}"
            + (f" + {md(d['encryption'])}" if d["encryption"] else "")
            + f" ({md(d['evidence'])})"
            + f", Calico {md(d['calico_version'] or 'release not stated')}, kube-proxy {md(d['kube_proxy'])}"
            + (f", peer redirect {md(d['peer_redirect'])} ({md(d['peer_redirect_from'])})" * bool(d["peer_redirect"]))
            for d in b["dataplane"]
        )
        lines += [f"Dataplane: {modes}", ""]
    return lines


def _findings(findings: list[dict]) -> list[str]:
    lines = ["## Findings", ""]
    if not findings:
        lines.append("Nothing found.")
    for f in findings:
        flow = f" (flow {f['flow_id']})" if f["flow_id"] is not None else ""
        lines.append(f"- **{f['severity'].upper()}** {md(f['title'])}{flow}")
    lines.append("")
    return lines


def _drops(drops: list[dict]) -> list[str]:
    """The first REPORT_DROPS drops, each with where it was lost, its cause and its evidence."""
    if not drops:
        return []
    lines = ["## Drops", ""]
    for d in drops[:REPORT_DROPS]:
        lines += _drop(d)
    if len(drops) > REPORT_DROPS:
        more = len(drops) - REPORT_DROPS
        lines += [f"{more} more dropped flow(s): findings.json and the drops table list every one.", ""]
    return lines


def _drop(d: dict) -> list[str]:
    c = d["cause"] or {}
    lines = [
        f'### <a id="flow-{d["flow_id"]}"></a>Flow {d["flow_id"]}: {md(d["proto"])} '
        f"{md(d['src_ip'])}:{d['src_port']} → "
        f"{md(d['dst_ip'])}:{d['dst_port']}",
        "",
    ]
    seen = d["last_seen"] or {}
    miss = d["missing_at"] or {}
    lines.append(
        f"- packets: {d['packets']}; last seen at {md(seen.get('node', '?'))}:"
        f"{md(seen.get('interface', '?'))}; missing at "
        f"{md(miss.get('node', '?'))}:{md(miss.get('interface', '?'))}; confidence {d['confidence']}"
    )
    if c:
        lines.append(
            f"- cause: {md(c['kind'])} on {md(c['node'])}"
            + (f", chain {md(c['chain'])}" if c.get("chain") else "")
            + (f', rule "{md(c["rule_comment"])}"' if c.get("rule_comment") else "")
            + (f", policy {md(c['policy'])}" if c.get("policy") else "")
            + (f", counter {c['counter_packets']} packets" if c.get("counter_packets") is not None else "")
        )
    for e in d["evidence"]:
        lines.append(f"- evidence ({md(e['kind'])}, {md(e['scope'].replace('_', ' '))}): {md(e['detail'])}")
    lines.append("")
    return lines


def _overhead(ov: dict) -> list[str]:
    if not (ov["tunnels"] or ov["mtu_issues"]):
        return []
    lines = ["## Encapsulation overhead and MTU", ""]
    if ov["tunnels"]:
        lines += _table(
            ["tunnel", "VNI", "from", "to", "packets", "bytes/packet", "overhead bytes", "share of wire"],
            [
                [
                    t["type"],
                    t["vni"],
                    t["src_node"],
                    t["dst_node"],
                    t["packets"],
                    t["overhead_bytes_per_packet"],
                    t["overhead_bytes"],
                    f"{t['share_of_wire_bytes']:.1%}",
                ]
                for t in ov["tunnels"]
            ],
        )
        lines.append("")
    for m in ov["mtu_issues"]:
        lines.append(f"- {md(m['kind'])}: {md(m['detail'])}")
    lines.append("")
    return lines


def _wireguard(wg: dict | None) -> list[str]:
    if not wg:
        return []
    lines = ["## WireGuard", "", md(wireguard_text(wg)), ""]
    lines += _table(
        [
            *("node", "direction", "peer", "receiver index", "messages"),
            *("counters", "gaps", "paired", "segments", "unpaired"),
        ],
        [
            [
                md(s["node"]),
                s["direction"],
                md(s["peer"]),
                f"{s['receiver_index']:#010x}",
                s["messages"],
                f"{s['first_counter']}-{s['last_counter']}",
                s["counter_gaps"],
                s["matched"],
                s["segments"],
                s["unmatched"],
            ]
            for s in wg["sessions"]
        ],
    )
    lines.append("")
    return lines


def _latency(lat: dict) -> list[str]:
    if not lat["hops"]:
        return []
    lines = ["## Latency per hop (clock-corrected, µs)", ""]
    lines += _table(
        ["from", "to", "NAT", "count", "p50", "p90", "p99", "max"],
        [
            [
                f"{h['from']['node']}:{h['from']['interface']}",
                f"{h['to']['node']}:{h['to']['interface']}",
                "yes" if h["nat"] else "",
                h["count"],
                h["p50_us"],
                h["p90_us"],
                h["p99_us"],
                h["max_us"],
            ]
            for h in lat["hops"]
        ],
    )
    lines.append("")
    return lines


def _clocks(offs: list[dict]) -> list[str]:
    if not offs:
        return []
    lines = ["## Clock offsets", ""]
    lines += _table(
        ["node", "offset (µs)", "uncertainty (µs)", "method"],
        [
            [
                o["node"],
                f"{o['offset_ns'] / 1e3:.1f}",
                f"{o['uncertainty_ns'] / 1e3:.1f}" if o["uncertainty_ns"] >= 0 else "unknown",
                o["method"],
            ]
            for o in offs
        ],
    )
    lines.append("")
    return lines


def _what_was_read(a: Analysis) -> list[str]:
    lines = [
        "## What was read",
        "",
        "Every file of the bundle: what it was taken for, what it gave, and why "
        "it was skipped or gave nothing usable (the anomalies table says what could not be read).",
        "",
    ]
    lines += _table(["file", "node", "kind", "rows", "anomalies", "status", "why"], artifact_rows(a))
    lines.append("")
    return lines


def _counts(by_verdict: dict[str, int]) -> str:
    return ", ".join(f"{n} {v}" for v, n in by_verdict.items())


def _services(services: list[dict]) -> list[str]:
    if not services:
        return []
    def nat(hop: dict | None) -> str:
        return f"{hop['p50']} / {hop['p90']} ({hop['packets']})" if hop else ""

    rows = [
        [
            s["service"],
            ", ".join(s["frontends"]),
            ", ".join(s["backends"]) or "none seen",
            _counts(s["flows"]),
            nat(s["nat_hop_us"]),
            ", ".join(map(str, s["flow_ids"])),
        ]
        for s in services
    ]
    headers = ["service", "frontends", "backends", "flows", "NAT hop µs p50 / p90 (packets)", "flow ids"]
    return ["## Services", "", *_table(headers, rows), ""]


def _pods(pods: list[dict]) -> list[str]:
    if not pods:
        return []
    rows = [
        [
            p["pod"] or "(not named)",
            p["node"],
            p["interface"],
            ", ".join(p["addresses"]),
            _counts(p["out"]),
            _counts(p["in"]),
            ", ".join(map(str, p["flow_ids"])),
        ]
        for p in pods
    ]
    headers = ["pod", "node", "interface", "addresses", "flows out", "flows in", "flow ids"]
    return ["## Pods", "", *_table(headers, rows), ""]


def _files(files: list[tuple[str, int | None]]) -> list[str]:
    """The files written beside this report: the other report, findings.json, each table with its rows."""
    lines = ["## Files", ""]
    lines += [f"- [{md(path)}]({path})" + (f": {rows} rows" if rows is not None else "") for path, rows in files]
    return [*lines, ""]


def artifact_rows(a: Analysis) -> list[list[object]]:
    """A row per file of the bundle (the artifacts table), for the reports."""
    arts = a.bundle.artifacts
    cols = ("path", "node", "kind", "rows", "anomalies", "status", "detail")
    return [list(r) for r in zip(*(arts[c].astype(str).tolist() for c in cols), strict=True)]
