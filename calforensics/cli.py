"""Command line: a thin layer over the Python API (`open_bundle`, the inventory)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from .archive import BundleError
from .bundle import Bundle, open_bundle
from .inventory import inventory

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Offline forensics for Calico networking.",
)
err = Console(stderr=True)
EXIT_UNUSABLE = 2


def _fail(message: str) -> None:
    sys.stderr.write(f"calforensics: error: {message}\n")  # one plain line, never wrapped
    raise typer.Exit(EXIT_UNUSABLE)


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


def _open(path: Path, progress: Progress) -> Bundle:
    task = progress.add_task("opening bundle", total=None)

    def tick(what: str, done: int, total: int) -> None:
        progress.update(task, description=what, completed=done, total=total)

    try:
        return open_bundle(path, progress=tick)
    except BundleError as exc:
        progress.stop()
        _fail(str(exc))
        raise  # unreachable: _fail exits


@app.command("inspect")
def inspect_cmd(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help=".tgz/.tar, directory, or pcap/pcapng")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the inventory as JSON.")] = False,
    packets: Annotated[bool, typer.Option("--packets", help="Also decode every packet (slower).")] = False,
) -> None:
    """Inventory of a bundle: nodes, captures, artifacts recognised, anomalies by kind."""
    with _progress(not as_json and err.is_terminal) as progress:
        bundle = _open(bundle_path, progress)
        try:
            inv = inventory(bundle, decode_packets=packets)
        finally:
            bundle.close()
    if as_json:
        typer.echo(json.dumps(inv, indent=2, sort_keys=True))
        return
    _print_inventory(inv)


def _print_inventory(inv: dict) -> None:
    out = Console(highlight=False, width=None if Console().is_terminal else 160)
    out.print(Text(f"Bundle {inv['bundle']}", style="bold"))
    out.print(Text(f"Nodes: {', '.join(inv['nodes']) or '(none named)'}"))
    caps = Table(title="Captures", title_justify="left")
    for col in ("node", "interface", "role", "link", "packets", "start (UTC)", "duration s"):
        caps.add_column(col, justify="right" if col in ("packets", "duration s") else "left")
    for c in inv["captures"]:
        caps.add_row(
            Text(c["node"]),
            Text(c["interface"]),
            c["role"],
            c["linktype"],
            str(c["packets"]),
            c["start"] or "-",
            f"{c['duration_s']:.3f}" if c["duration_s"] is not None else "-",
        )
    out.print(caps)
    arts = Table(title="Artifacts", title_justify="left")
    for col in ("path", "node", "kind", "rows", "anomalies", "status"):
        arts.add_column(col, justify="right" if col in ("rows", "anomalies") else "left")
    for a in inv["artifacts"]:
        arts.add_row(Text(a["path"]), Text(a["node"]), a["kind"], str(a["rows"]), str(a["anomalies"]), a["status"])
    out.print(arts)
    an = inv["anomalies"]
    if an["total"]:
        t = Table(title=f"Anomalies ({an['total']})", title_justify="left")
        t.add_column("source")
        t.add_column("kind")
        t.add_column("count", justify="right")
        for row in an["by_kind"]:
            t.add_row(row["source"], Text(row["kind"]), str(row["count"]))
        out.print(t)
    sk = inv["skipped"]
    out.print(
        Text(
            f"Read {sk['artifacts_parsed']} artifacts ({sk['artifacts_unrecognised']} unrecognised, "
            f"{sk['artifacts_refused']} refused); {sk['lines_skipped']} lines and {sk['frames_skipped']} "
            f"capture records skipped; {an['total']} anomalies in all."
        )
    )


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
    from .collect import CollectError, CollectOptions, collect, pack, require_root

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
    except Exception as exc:  # a bug of ours: one line for the user, the traceback on request
        if os.environ.get("CALFORENSICS_DEBUG"):
            raise
        sys.stderr.write(
            f"calforensics: internal error: {type(exc).__name__}: {exc} (set CALFORENSICS_DEBUG=1 for the traceback)\n"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
