"""Command line: a thin layer over the Python API (`open_bundle`, the inventory)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .render.inert import inert
from .version import __version__

if TYPE_CHECKING:
    from .bundle import Bundle

# the package's heavy modules (pandas, numba, matplotlib) are imported by the commands that use them,
# so `--help` and argument errors answer at once
CHUNK_PACKETS = 1 << 17  # = parallel.CHUNK_PACKETS (a test holds them equal)
PARTITION_ROWS = 1 << 20  # = parallel.PARTITION_ROWS (the same test)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Offline forensics for Calico networking.",
)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)
EXIT_UNUSABLE = 2


def _fail(message: str) -> None:
    sys.stderr.write(f"calforensics: error: {inert(message)}\n")  # one plain line, never wrapped
    raise typer.Exit(EXIT_UNUSABLE)


def _console(width: int) -> Console:
    """Standard output for people: nothing from the bundle is taken for Rich markup or emoji codes
    (text reaches it through _t, with its control characters escaped); ``width`` when not a terminal."""
    return Console(highlight=False, markup=False, emoji=False, width=None if Console().is_terminal else width)


def _t(text: object, style: str = "") -> Text:
    """Bundle text for the terminal: inert (render.inert) and plain, never markup."""
    return Text(inert(text), style=style)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    )


def _open(path: Path, progress: Progress, **options: object) -> Bundle:
    from .bundle import open_bundle
    from .ingest.archive import BundleError

    task = progress.add_task("opening bundle", total=None)

    def tick(what: str, done: int, total: int) -> None:
        progress.update(task, description=what, completed=done, total=total)

    try:
        return open_bundle(path, progress=tick, **options)
    except BundleError as exc:
        progress.stop()
        _fail(str(exc))
        raise  # unreachable: _fail exits


MaxBundle = Annotated[
    str | None, typer.Option("--max-bundle-size", help="refuse archives that unpack to more (e.g. 64G, 500M)")
]
MaxMember = Annotated[str | None, typer.Option("--max-file-size", help="skip archive members larger than this")]
MaxMembers = Annotated[int | None, typer.Option("--max-files", min=1, help="refuse archives with more members")]
MaxDepth = Annotated[int | None, typer.Option("--max-depth", min=1, help="skip members nested deeper")]

# how `analyze` runs (docs/performance.md says when to use which)
Workers = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="cores to use: decode and CSV-writing processes, join and analysis threads "
        "(default: one per core; 1: everything inline)",
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="decode captures on this Dask cluster (tcp://HOST:PORT); its workers are sent the captures' bytes"
    ),
]
ChunkPackets = Annotated[
    int, typer.Option(min=1, help="packets decoded at a time; the decoder's transient memory is ~300 B each")
]
SpillDir = Annotated[
    Path | None,
    typer.Option(
        help="keep the packets table in memory-mapped files here (bounded memory for captures larger than RAM)"
    ),
]
PartitionPackets = Annotated[
    int,
    typer.Option(
        min=1,
        help="with a spilled packets table, join and build flows in partitions on disk, this many "
        "packets in memory at a time (~250 B each), shared by the cores",
    ),
]
# the focus: what of the bundle `analyze` joins
Since = Annotated[
    str | None, typer.Option(help="only packets captured at or after this time (epoch seconds or ISO 8601, UTC)")
]
Until = Annotated[str | None, typer.Option(help="only packets captured at or before this time")]
Hosts = Annotated[list[str] | None, typer.Option(help="only packets to or from this address, across NAT (repeatable)")]
Ports = Annotated[list[int] | None, typer.Option(help="only packets to or from this port (repeatable)")]
Nodes = Annotated[list[str] | None, typer.Option(help="only captures on this node (repeatable)")]


def _size(text: str) -> int:
    """Bytes from 123, 64K, 500M, 64G or 1T (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        _fail(f"not a size: {text!r} (give bytes, or a number with K, M, G or T)")
        raise  # unreachable: _fail exits


def _limits(max_bundle: str | None, max_member: str | None, max_members: int | None, max_depth: int | None):
    """The archive limits asked for on the command line, the defaults for the rest."""
    from dataclasses import replace

    from .ingest.archive import Limits

    asked = {
        "max_total_bytes": _size(max_bundle) if max_bundle else None,
        "max_member_bytes": _size(max_member) if max_member else None,
        "max_members": max_members,
        "max_depth": max_depth,
    }
    return replace(Limits(), **{k: v for k, v in asked.items() if v is not None})


@app.command("inspect")
def inspect_cmd(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help=".tgz/.tar, directory, or pcap/pcapng")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the inventory as JSON.")] = False,
    packets: Annotated[bool, typer.Option("--packets", help="Also decode every packet (slower).")] = False,
    max_bundle_size: MaxBundle = None,
    max_file_size: MaxMember = None,
    max_files: MaxMembers = None,
    max_depth: MaxDepth = None,
) -> None:
    """Inventory of a bundle: nodes, captures, artifacts recognised, anomalies by kind."""

    limits = _limits(max_bundle_size, max_file_size, max_files, max_depth)
    with _progress(not as_json and err.is_terminal) as progress:
        bundle = _open(bundle_path, progress, limits=limits)
        try:
            inv = bundle.inventory(decode_packets=packets)
        finally:
            bundle.close()
    if as_json:
        typer.echo(json.dumps(inv, indent=2, sort_keys=True))
        return
    _print_inventory(inv)


def _print_inventory(inv: dict) -> None:
    out = _console(160)
    out.print(_t(f"Bundle {inv['bundle']}", style="bold"))
    out.print(_t(f"Nodes: {', '.join(inv['nodes']) or '(none named)'}"))
    for d in inv["dataplane"]:
        wg = " + WireGuard" if d["encryption"] else ""
        out.print(_t(f"  {d['node']}: {d['mode']} dataplane{wg} ({d['evidence']})"))
        for label, value, source in (
            ("Calico", d["calico_version"] or "release not stated", d["calico_version_from"]),
            ("kube-proxy:", d["kube_proxy"], d["kube_proxy_from"]),
            ("eBPF peer redirect:", d["peer_redirect"], d["peer_redirect_from"]),
        ):
            if value:
                out.print(_t(f"    {label} {value}" + (f" ({source})" if source else "")))
    caps = Table(title="Captures", title_justify="left")
    for col in ("node", "interface", "role", "link", "packets", "start (UTC)", "duration s"):
        caps.add_column(col, justify="right" if col in ("packets", "duration s") else "left")
    for c in inv["captures"]:
        caps.add_row(
            _t(c["node"]),
            _t(c["interface"]),
            c["role"],
            c["linktype"],
            str(c["packets"]),
            c["start"] or "-",
            f"{c['duration_s']:.3f}" if c["duration_s"] is not None else "-",
        )
    out.print(caps)
    arts = Table(title="Artifacts", title_justify="left")
    for col in ("path", "node", "kind", "form", "rows", "anomalies", "status", "why"):
        arts.add_column(col, justify="right" if col in ("rows", "anomalies") else "left")
    for a in inv["artifacts"]:
        counts = (str(a["rows"]), str(a["anomalies"]))
        arts.add_row(
            _t(a["path"]), _t(a["node"]), a["kind"], a.get("form", ""), *counts, a["status"], _t(a["detail"])
        )
    out.print(arts)
    an = inv["anomalies"]
    if an["total"]:
        t = Table(title=f"Anomalies ({an['total']})", title_justify="left")
        t.add_column("source")
        t.add_column("kind")
        t.add_column("count", justify="right")
        for row in an["by_kind"]:
            t.add_row(row["source"], _t(row["kind"]), str(row["count"]))
        out.print(t)
    sk = inv["skipped"]
    out.print(
        _t(
            f"Read {sk['artifacts_parsed']} artifacts ({sk['artifacts_unrecognised']} unrecognised, "
            f"{sk['artifacts_refused']} refused); {sk['lines_skipped']} lines and {sk['frames_skipped']} "
            f"capture records skipped; {an['total']} anomalies in all."
        )
    )


def _endpoint(ip: str, port: int) -> str:
    if not ip:
        return ""
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}" if port >= 0 else ip


def _select_flows(flows, addr: str | None, port: int | None, service: str | None, verdict: str | None):
    sel = flows
    if addr:
        cols = ["client_ip", "server_ip", "backend_ip", "snat_ip"]
        sel = sel[sel[cols].eq(addr).any(axis=1)]
    if port is not None:
        cols = ["client_port", "server_port", "backend_port", "snat_port"]
        sel = sel[sel[cols].eq(port).any(axis=1)]
    if service:
        sel = sel[sel["service"].str.contains(service, regex=False)]
    if verdict:
        sel = sel[sel["verdict"].astype(str) == verdict]
    return sel


@app.command("analyze")
def analyze_cmd(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help=".tgz/.tar, directory, or pcap/pcapng")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="report directory (default: reports/<bundle-name>)")
    ] = None,
    tables: Annotated[str, typer.Option(help="export tables as csv, parquet, or none")] = "csv",
    export: Annotated[
        list[str] | None,
        typer.Option("--export", help="also write for other tools: zeek (conn.log), jsonl (flows, drops, hops)"),
    ] = None,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="exit 1 when this is found: drops")] = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    chunk_packets: ChunkPackets = CHUNK_PACKETS,
    spill_dir: SpillDir = None,
    partition_packets: PartitionPackets = PARTITION_ROWS,
    since: Since = None,
    until: Until = None,
    host: Hosts = None,
    port: Ports = None,
    node: Nodes = None,
    max_bundle_size: MaxBundle = None,
    max_file_size: MaxMember = None,
    max_files: MaxMembers = None,
    max_depth: MaxDepth = None,
) -> None:
    """Analyse a bundle: drops with their causes, overhead and MTU, latency; write the report.

    --since/--until/--host/--port/--node cut the bundle down to the incident before the join."""
    from .analyses import analyze
    from .join.focus import Focus
    from .render.exports import EXPORT_FORMATS
    from .render.report import TABLE_FORMATS, write_report

    if tables not in TABLE_FORMATS:
        _fail(f"--tables must be one of {', '.join(TABLE_FORMATS)}")
    exports = tuple(dict.fromkeys(export or ()))
    if set(exports) - set(EXPORT_FORMATS):
        _fail(f"--export takes: {', '.join(EXPORT_FORMATS)}")
    if fail_on not in (None, "drops"):
        _fail("--fail-on takes: drops")
    try:
        focus = Focus.of(since, until, host, port, node)
    except ValueError as exc:
        _fail(str(exc))
    limits = _limits(max_bundle_size, max_file_size, max_files, max_depth)
    with _progress(err.is_terminal) as progress:
        bundle = _open(
            bundle_path,
            progress,
            workers=workers,
            scheduler=scheduler,
            chunk_packets=chunk_packets,
            spill_dir=spill_dir,
            spill=True if spill_dir else None,
            partition_packets=partition_packets,
            focus=focus,
            limits=limits,
        )
        try:
            analysis = analyze(bundle)
            progress.update(progress.task_ids[0], description="writing the report")
            out_dir = output or Path("reports") / bundle.name
            files = write_report(analysis, out_dir, tables=tables, exports=exports)
        except RuntimeError as exc:
            _fail(str(exc))
        finally:
            bundle.close()
    _print_summary(analysis.findings, files.directory)
    if fail_on == "drops" and analysis.findings["drops"]:
        raise typer.Exit(1)


def _print_summary(doc: dict, out_dir: Path) -> None:
    out = _console(160)
    flows = doc["flows"]
    counts = {v: sum(1 for f in flows if f["verdict"] == v) for v in ("delivered", "dropped", "partial", "unobserved")}
    out.print(
        _t(
            f"{doc['bundle']['name']}: {len(doc['bundle']['nodes'])} nodes, {len(doc['bundle']['captures'])} "
            f"capture points, {len(flows)} flows ({counts['delivered']} delivered, {counts['dropped']} dropped, "
            f"{counts['partial']} partial, {counts['unobserved']} unobserved)",
            style="bold",
        )
    )
    out.print(_t(doc["verdict"]["text"]), soft_wrap=True)  # one line, whatever its length
    colors = {"critical": "red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}
    for f in doc["findings"]:
        out.print(_t(f"  {f['severity'].upper():8} ", style=colors[f["severity"]]) + _t(f["title"]))
    out.print(_t(f"report: {out_dir / 'report.html'}  ({out_dir / 'report.md'}, {out_dir / 'findings.json'})"))


@app.command("flows")
def flows_cmd(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE")],
    addr: Annotated[
        str | None, typer.Option(help="only flows with this address (client, server, backend, SNAT)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="only flows with this port")] = None,
    service: Annotated[str | None, typer.Option(help="only flows to services whose name contains this")] = None,
    verdict: Annotated[str | None, typer.Option(help="delivered, dropped, partial or unobserved")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the flows as JSON records")] = False,
) -> None:
    """Connections as their clients dialled them: NAT legs, packets each way, state, verdict, path."""
    with _progress(not as_json and err.is_terminal) as progress:
        bundle = _open(bundle_path, progress)
        try:
            flows = _select_flows(bundle.flows, addr, port, service, verdict)
        finally:
            bundle.close()
    if as_json:
        typer.echo(flows.to_json(orient="records", indent=2))
        return
    out = _console(200)
    t = Table(title=f"Flows ({len(flows)})", title_justify="left")
    for col in (
        "id",
        "proto",
        "client",
        "server (dialled)",
        "service",
        "backend",
        "pkts →/←",
        "state",
        "verdict",
        "last seen → missing",
    ):
        t.add_column(col, justify="right" if col in ("id", "pkts →/←") else "left")
    for f in flows.itertuples(index=False):
        style = {"dropped": "red", "partial": "yellow", "unobserved": "dim"}.get(str(f.verdict), "")
        t.add_row(
            str(f.flow_id),
            f.proto,
            _t(_endpoint(f.client_ip, f.client_port)),
            _t(_endpoint(f.server_ip, f.server_port)),
            _t(f.service + (" (connect-time LB or direct?)" if str(f.service_via) == "backend" else "")),
            _t(_endpoint(f.backend_ip, f.backend_port)),
            f"{f.packets_fwd}/{f.packets_rev}",
            _t(f"{f.conn_state} {f.history}".strip()),
            _t(
                str(f.verdict) + (f" ({f.peer_redirected} peer-redirected)" if f.peer_redirected else ""), style=style
            ),
            _t(f"{f.last_seen} → {f.missing_at}" if f.last_seen else ""),
        )
    out.print(t)


@app.command("diff")
def diff_cmd(
    old: Annotated[Path, typer.Argument(metavar="OLD", help="bundle, report directory or findings.json")],
    new: Annotated[Path, typer.Argument(metavar="NEW", help="bundle, report directory or findings.json")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="directory for diff.html, diff.md, diff.json")
    ] = None,
    fail_on: Annotated[
        str | None, typer.Option("--fail-on", help="exit 1 when this is found: new-drops")
    ] = None,
    max_bundle_size: MaxBundle = None,
    max_file_size: MaxMember = None,
    max_files: MaxMembers = None,
    max_depth: MaxDepth = None,
) -> None:
    """What changed from OLD to NEW (yesterday's bundle and today's, a healthy node and a sick one):
    flows that appeared, disappeared or changed verdict, drops new and resolved, rule counters that
    moved, MTU findings, hop latencies that shifted beyond their spread."""
    from .analyses.diff import diff
    from .ingest.archive import BundleError
    from .render.diff import write_diff

    if fail_on not in (None, "new-drops"):
        _fail("--fail-on takes: new-drops")
    limits = _limits(max_bundle_size, max_file_size, max_files, max_depth)
    try:
        doc = diff(old, new, limits=limits)
    except (BundleError, ValueError, OSError) as exc:
        _fail(str(exc))
    out_dir = output or Path("reports") / f"diff-{_stem(old)}-{_stem(new)}"
    paths = write_diff(doc, out_dir)
    out = _console(160)
    out.print(_t(doc["summary"]), soft_wrap=True)
    out.print(_t(f"diff: {paths['html']}  ({paths['md']}, {paths['json']})"))
    if fail_on == "new-drops" and doc["counts"]["new_drops"]:
        raise typer.Exit(1)


def _stem(path: Path) -> str:
    name = path.name if path.name != "findings.json" else path.parent.name
    for suffix in (".tar.gz", ".tgz", ".tar", ".json", ".pcapng", ".pcap"):
        name = name.removesuffix(suffix)
    return name or "bundle"


@app.command("path")
def path_cmd(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE")],
    flow: Annotated[int, typer.Argument(metavar="FLOW", help="flow id (from `calforensics flows`)")],
    packets: Annotated[int, typer.Option(help="show at most this many packets")] = 20,
) -> None:
    """One flow hop by hop: when each packet was seen where, the delay from the previous hop, and how it
    looked there (encapsulation, addresses after NAT)."""
    with _progress(err.is_terminal) as progress:
        bundle = _open(bundle_path, progress)
        try:
            flows = bundle.flows
            if not 0 <= flow < len(flows):
                _fail(f"no flow {flow}; this bundle has flows 0 to {len(flows) - 1}")
            f = flows.iloc[flow]
            hops = bundle.flow_path(flow)
        finally:
            bundle.close()
    out = _console(200)
    out.print(
        _t(
            f"Flow {flow}: {f.proto} {_endpoint(f.client_ip, f.client_port)} → "
            f"{_endpoint(f.server_ip, f.server_port)}"
            + (f" ({f.service})" if f.service else "")
            + f"  verdict {f.verdict}",
            style="bold",
        )
    )
    if f.path_fwd:
        out.print(_t(f"path →  {f.path_fwd}"))
    if f.path_rev:
        out.print(_t(f"path ←  {f.path_rev}"))
    t0 = int(hops["ts_corrected_ns"].min()) if len(hops) else 0
    t = Table(title_justify="left")
    for col in ("pkt", "dir", "time ms", "+µs", "node:interface", "encap", "src → dst here", "flags", "note"):
        t.add_column(col, justify="right" if col in ("pkt", "time ms", "+µs") else "left")
    shown = list(dict.fromkeys(hops["instance"].tolist()))[:packets]
    for n, inst in enumerate(shown):
        rows = hops[hops["instance"] == inst].sort_values("hop_index")
        prev_tuple = None
        for r in rows.itertuples(index=False):
            here = (r.src, r.sport, r.dst, r.dport)
            note = "NAT" if prev_tuple is not None and here != prev_tuple else ""
            prev_tuple = here
            encap = "" if r.encap == "none" else (f"{r.encap} {r.vni}" if r.vni >= 0 else str(r.encap))
            t.add_row(
                str(n) if r.hop_index == 0 else "",
                str(r.direction) if r.hop_index == 0 else "",
                f"{(r.ts_corrected_ns - t0) / 1e6:.3f}",
                "" if r.delta_ns < 0 else f"{r.delta_ns / 1e3:.1f}",
                _t(f"{r.node}:{r.interface}"),
                _t(encap),
                _t(f"{_endpoint(str(r.src), int(r.sport))} → {_endpoint(str(r.dst), int(r.dport))}"),
                _tcp_flags(int(r.tcp_flags))
                if r.proto == 6
                else (f"icmp {r.icmp_type}/{r.icmp_code}" if r.icmp_type >= 0 else ""),
                note,
            )
    out.print(t)
    if len(set(hops["instance"])) > packets:
        out.print(_t(f"… {len(set(hops['instance'])) - packets} more packets (--packets N)"))


def _tcp_flags(flags: int) -> str:
    names = [(0x02, "S"), (0x10, "."), (0x08, "P"), (0x01, "F"), (0x04, "R")]
    return "".join(n for bit, n in names if flags & bit) if flags >= 0 else ""


@app.command("collect")
def collect_cmd(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="bundle directory to write (or .tgz to pack)")],
    node: Annotated[str | None, typer.Option(help="node name (default: the netns name, else hostname)")] = None,
    netns: Annotated[str | None, typer.Option(help="run inside this network namespace")] = None,
    interface: Annotated[list[str] | None, typer.Option("-i", "--interface", help="capture here (repeat)")] = None,
    any_interface: Annotated[bool, typer.Option("--any", help="also capture `-i any`")] = False,
    duration: Annotated[float | None, typer.Option(help="seconds to capture (default: until Ctrl-C)")] = None,
    events: Annotated[bool, typer.Option(help="also record `conntrack -E` during the capture")] = False,
) -> None:
    """Capture on this node (or netns) and dump its networking state into a bundle. Needs root."""
    from .collect.collector import CollectError, CollectOptions, collect, pack, require_root

    target = out
    if out.name.endswith((".tgz", ".tar.gz")):
        out = out.with_name(out.name.split(".")[0])
    try:
        require_root()
        err.print(
            f"capturing on {netns or 'this node'}; press Ctrl-C to stop"
            if duration is None
            else f"capturing for {duration:g} s"
        )
        node_dir = collect(
            CollectOptions(
                out=out,
                node=node,
                netns=netns,
                interfaces=interface or None,
                any_interface=any_interface,
                duration=duration,
                events=events,
            )
        )
    except CollectError as exc:
        _fail(str(exc))
    if target != out:
        pack(out, target)
    typer.echo(str(target if target != out else node_dir))


@app.command("version")
def version_cmd() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("calforensics: interrupted")
        sys.exit(130)
    except RuntimeError as exc:  # a condition the user can act on (no room to spill, no Dask cluster)
        if os.environ.get("CALFORENSICS_DEBUG"):
            raise
        sys.stderr.write(f"calforensics: error: {exc}\n")
        sys.exit(EXIT_UNUSABLE)
    except Exception as exc:  # a bug of ours: one line for the user, the traceback on request
        if os.environ.get("CALFORENSICS_DEBUG"):
            raise
        sys.stderr.write(
            f"calforensics: internal error: {type(exc).__name__}: {exc} (set CALFORENSICS_DEBUG=1 for the traceback)\n"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
