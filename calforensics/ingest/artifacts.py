"""The files of a bundle: each one found, named to its node and recognised as a kind (or skipped, and why)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from ..anomalies import AnomalyLog
from .archive import Materialized
from .layout import SOS_HOSTNAME_FILES, classify, form_of, node_of, packet_capture_file, workload_endpoint_node
from .parsers.resources import packet_capture_nodes
from .parsers.text import read_lines

TEXT_SNIFF_BYTES = 64 * 1024
SKIPPED_BECAUSE = {
    "empty": "the file is empty",
    "other": "not a kind of file calforensics reads",
    "unrecognised": "content not recognised as any format calforensics reads",
}


@dataclass
class Artifact:
    path: str
    node: str
    kind: str
    size: int
    form: str = ""  # which of its kind's forms (`iptables -L`, `nft -j list ruleset`, …): layout.form_of
    rows: int = -1  # -1 until parsed
    anomalies: int = 0
    status: str = "pending"  # pending, parsed, no_data, skipped
    detail: str = ""  # why it was skipped or gave nothing usable
    parts: dict = field(default_factory=dict, repr=False)  # (rows, anomalies) per table it fed

    def finish(
        self, rows: int, log: AnomalyLog, lines: list[str] | None, table: str = "", quiet: bool = False
    ) -> None:
        """Record what parsing gave; a file that gave no rows says what it held instead. A file read
        for several tables (one command's output after another's, resources of several kinds) adds
        up what each table took; ``quiet``: such a file is not an anomaly for a table it has nothing for."""
        self.parts[table] = (rows, len(log))
        rows = sum(r for r, _ in self.parts.values())
        self.rows = rows
        self.anomalies = sum(a for _, a in self.parts.values())
        self.status = "parsed"
        self.detail = ""
        if rows == 0 and lines is not None:
            text = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
            if text and not log.rows and not quiet:
                log.add(1, "no_data", f"no {self.kind} data; file says: {text[0][:200]}")
                self.anomalies += 1
            self.status = "no_data"
            self.detail = f"no {self.kind} data" + (f"; file says: {text[0][:200]}" if text else ": only blank lines")


LogFor = Callable[[str, Artifact], AnomalyLog]  # the anomaly log of (source, artifact): one per pair
Tick = Callable[[str, int, int], None]  # progress: (what, done, total)


# kinds of file that hold one node's state (the others: cluster-wide listings and resources, logs)
NODE_KINDS = {
    "pcap", "iptables", "ip6tables", "nft", "conntrack", "ip_link", "ip_route", "bpf_conntrack", "bpf_nat",
    "bpf_routes", "bpf_counters", "bpf_ifstate", "bpf_policy", "bpftool", "traces", "sysctl", "ipvs", "ipset",
    "metadata", "crictl_inspect",
}  # fmt: skip


def find_artifacts(mat: Materialized, name: str = "") -> list[Artifact]:
    """Every file of the materialised bundle, with its node and kind (by path and by content). A flat
    folder of one node's command outputs names no node: its node is what its `hostname` file says,
    else the bundle's ``name``."""
    root = mat.root
    hostname = ""  # calicoctl node diags name their node only in diagnostics/hostname
    sos_hosts: dict[str, str] = {}  # a sosreport's folder -> the hostname it records
    for rel in mat.files:
        if PurePosixPath(rel).name == "hostname" and "diagnostics" in PurePosixPath(rel).parts:
            hostname = _first_line(root / rel)
        for tail in SOS_HOSTNAME_FILES:
            if rel == tail or rel.endswith("/" + tail):
                sos_hosts.setdefault(rel[: -len(tail)].rstrip("/"), _first_line(root / rel))
    arts = []
    tops = {PurePosixPath(rel).parts[0] for rel in mat.files}
    # an archive's single top-level folder (`calico-diagnostics-…/`) names the bundle, not a node
    strip = len(tops) == 1 and all(len(PurePosixPath(r).parts) > 1 for r in mat.files)
    # a sosreport given as its own folder: every file outside `nodes/` is that host's
    whole_sos = sos_hosts.get("") if any(r.startswith("sos_commands/") for r in mat.files) else None
    for rel in mat.files:
        full = root / rel
        size = full.stat().st_size
        with open(full, "rb") as fh:
            head = fh.read(TEXT_SNIFF_BYTES)
        lines = None
        if b"\0" not in head[:4096]:
            lines = head.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")[:400]
        kind = classify(rel, head, lines)
        if size == 0:
            kind = "empty"
        node = node_of(rel, hostname, skip_root=strip, sos_hosts=sos_hosts)
        if whole_sos is not None and "nodes" not in PurePosixPath(rel).parts[:-1]:
            node = whole_sos
        art = Artifact(rel, node, kind, size, form_of(kind, head, lines, rel))
        if kind in ("other", "unrecognised", "empty"):
            art.status, art.rows, art.detail = "skipped", 0, SKIPPED_BECAUSE[kind]
        arts.append(art)
    own = [a for a in arts if a.kind in NODE_KINDS]
    if len(mat.files) > 1 and own and not any(a.node for a in arts):
        top = [r for r in mat.files if PurePosixPath(r).name == "hostname" and len(PurePosixPath(r).parts) <= 2]
        node = _first_line(root / top[0]) if top else name
        for art in own:
            art.node = node
    return arts


def _first_line(path: Path) -> str:
    with open(path, "rb") as fh:
        first = fh.read(256).decode("utf-8", errors="replace").strip().splitlines()
    return first[0].strip() if first else ""


def bundle_name(p: Path) -> str:
    name = p.name
    for suffix in (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar", ".pcapng", ".pcap"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name or "bundle"


def place_packet_captures(
    arts: list[Artifact], root: Path, pods: Callable[[], pd.DataFrame], log_for: LogFor, log: AnomalyLog
) -> None:
    """PacketCapture files named by a pod rather than by a workload endpoint (whose name holds the
    node) say no node: the saved PacketCapture's status names it, else the pod listing of the
    interface's pod (``pods``: the pods table, read only when needed). What neither says keeps its
    folder's name, and an anomaly says so."""
    named = [(art, packet_capture_file(art.path)) for art in arts if art.kind == "pcap"]
    unplaced = [(art, captured) for art, captured in named if captured and not workload_endpoint_node(captured[0])]
    if not unplaced:
        return
    statuses: dict[str, str] = {}
    for art in (a for a in arts if a.kind == "kube_resources"):
        statuses |= packet_capture_nodes(read_lines(root / art.path), log_for("resources", art))
    located = pods()
    located = located[located["pod_node"].astype(str) != ""]
    interfaces = dict(zip(located["interface"].astype(str), located["pod_node"].astype(str), strict=True))
    for art, (endpoint, iface) in unplaced:
        node = statuses.get(PurePosixPath(art.path).name) or interfaces.get(iface, "")
        if node:
            art.node = node
        else:
            log.add(
                art.path,
                "node_unknown",
                f"PacketCapture file of {endpoint} on {iface}: no saved PacketCapture status or pod listing "
                f"names its node; read as node {art.node!r}",
            )
