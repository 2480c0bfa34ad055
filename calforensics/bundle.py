"""The Bundle: the façade over the stages. Every artifact found and recognised (ingest/), its state
given meaning (meaning/), its packets joined into hops and flows (join/), each as a documented table
built on first use. Table building lives in the stage that owns each table; the Bundle only asks
for them in order and keeps them."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import pandas as pd

from .anomalies import AnomalyLog, anomalies_frame
from .ingest import captures as capture_tables
from .ingest.archive import Limits, Materialized, materialize
from .ingest.artifacts import Artifact, bundle_name, find_artifacts, place_packet_captures
from .ingest.inventory import inventory
from .ingest.parsers.packets import VXLAN_PORTS, decode_capture, decode_columns
from .ingest.parsers.pcap import FrameIndex, read_frames
from .ingest.tables import read_bpftool_dumps, read_text_table, text_table_names
from .join.filters import assumed_filters, common_hosts, filtered_points
from .join.flows import build_flows
from .join.focus import Focus
from .join.fragments import Datagrams, empty_datagrams, mark_datagrams, reassemble
from .join.hops import Joined, address_owners, build_hops, second_copies
from .join.keys import cut_short, header_fingerprints
from .join.summaries import point_roles
from .join.wireguard import join_matches, match_wireguard
from .meaning.dataplane import detect_dataplane, peer_redirects
from .meaning.routing import route_dev
from .meaning.rules import add_rule_meaning
from .meaning.services import Services, bpf_nat_legs, build_services
from .runtime.memory import release_freed_memory
from .runtime.parallel import CHUNK_PACKETS, PARTITION_ROWS, Runner
from .runtime.partitions import parts_for
from .schema import SCHEMAS, columns_frame, conform

DEFAULT_LIMITS = Limits()
ProgressFn = Callable[[str, int, int], None]
TABLES = [
    "artifacts",
    "captures",
    "packets",
    "hops",
    "clock_offsets",
    "flows",
    "conntrack",
    "rules",
    "interfaces",
    "routes",
    "bpf_conntrack",
    "bpf_nat",
    "bpf_routes",
    "bpf_counters",
    "bpf_ifstate",
    "bpf_policy",
    "traces",
    "pods",
    "services",
    "endpoints",
    "cluster_nodes",
    "sysctls",
    "ipvs",
    "ipsets",
    "network_policies",
    "ip_pools",
    "flow_logs",
    "platform_evidence",
    "dataplane",
    "wireguard",
    "anomalies",
]


class Bundle:
    """A diagnostics bundle opened for analysis. Tables are pandas DataFrames built on first use."""

    def __init__(
        self,
        path: str | Path,
        *,
        limits: Limits = DEFAULT_LIMITS,
        vxlan_ports: tuple[int, ...] = VXLAN_PORTS,
        progress: ProgressFn | None = None,
        workers: int | None = None,
        scheduler: str | None = None,
        chunk_packets: int = CHUNK_PACKETS,
        spill_dir: str | Path | None = None,
        spill: bool | None = None,
        partition_packets: int = PARTITION_ROWS,
        focus: Focus | None = None,
    ) -> None:
        """``chunk_packets``, ``spill``/``spill_dir`` and ``partition_packets`` bound memory on large
        captures (see Runner). ``focus`` cuts the join and everything after it down to some nodes,
        a time span, hosts or ports (calforensics.join.focus)."""
        self.focus = focus or Focus()
        self.path = Path(path)
        self.name = bundle_name(self.path)
        self.vxlan_ports = vxlan_ports
        self._progress = progress
        self.runner = Runner(
            workers=workers,
            scheduler=scheduler,
            chunk_packets=chunk_packets,
            spill_dir=str(spill_dir) if spill_dir else None,
            spill=spill,
            partition_rows=partition_packets,
        )
        self._bundle_log = AnomalyLog("bundle", str(self.path))
        self._mat: Materialized = materialize(self.path, self._bundle_log, limits)
        self._logs: dict[tuple[str, str], AnomalyLog] = {}
        self._text: dict[str, pd.DataFrame] = {}
        self._frames: dict[str, FrameIndex] = {}
        self.artifacts_list = find_artifacts(self._mat, self.name)
        # PacketCapture files name their pod, not always their node: placed before any table uses the nodes
        place_packet_captures(self.artifacts_list, self._mat.root, lambda: self.pods, self._log, self._bundle_log)

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._frames.clear()
        self._mat.cleanup()
        self.runner.cleanup()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Bundle {self.name!r}: {len(self.artifacts_list)} artifacts, nodes {self.nodes}>"

    # ---- inventory ------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        return sorted({a.node for a in self.artifacts_list if a.node})

    def _log(self, source: str, art: Artifact) -> AnomalyLog:
        key = (source, art.path)
        if key not in self._logs:
            self._logs[key] = AnomalyLog(source, art.path, art.node)
        return self._logs[key]

    def _tick(self, what: str, done: int, total: int) -> None:
        if self._progress:
            self._progress(what, done, total)

    # ---- text tables ----------------------------------------------------------------------
    def _text_table(self, table: str) -> pd.DataFrame:
        if table in self._text:
            return self._text[table]
        result = read_text_table(
            table,
            self.artifacts_list,
            self._mat.root,
            self._log,
            self._tick,
            lambda: self._bpftool_tables.get(table, []),  # all bpftool dumps, parsed once, when first asked
        )
        if table == "rules":
            result = add_rule_meaning(result)
        result = conform(result, table)
        self._text[table] = result
        return result

    @cached_property
    def _bpftool_tables(self) -> dict[str, list[pd.DataFrame]]:
        return read_bpftool_dumps(self.artifacts_list, self._mat.root, self._log)

    # ---- captures ---------------------------------------------------------------------------
    def _frame_index(self, art: Artifact) -> FrameIndex:
        if art.path not in self._frames:
            log = self._log("pcap", art)
            self._frames[art.path] = read_frames(self._mat.root / art.path, log, self.runner.allocate, self.runner.maps)
        return self._frames[art.path]

    @cached_property
    def captures(self) -> pd.DataFrame:
        """One row per capture point (file + interface)."""
        pcaps = [a for a in self.artifacts_list if a.kind == "pcap"]
        uplinks = capture_tables.uplinks(self.interfaces)
        df = capture_tables.capture_points(pcaps, self._frame_index, self._log, self._tick, uplinks)
        if len(df):
            metadata = [a for a in self.artifacts_list if a.kind == "metadata"]
            capture_tables.add_capture_windows(df, metadata, self._mat.root, self._log)
            capture_tables.add_capture_pods(df, self.pods, self.routes)
        return conform(df, "captures")

    @cached_property
    def packets(self) -> pd.DataFrame:
        """One row per frame of every capture, decoded down to the innermost L3/L4."""
        caps = self.captures
        pcaps = [a for a in self.artifacts_list if a.kind == "pcap" and len(self._frame_index(a))]
        if not pcaps:
            return conform(pd.DataFrame(), "packets")
        ifname_by_node = capture_tables.ifindex_names(self.interfaces)
        layout = {c: t for c, t, _ in SCHEMAS["packets"][1] if c not in ("capture_id", "node", "interface")}
        counts = [len(self._frame_index(a)) for a in pcaps]
        cols = self.runner.decode(
            [self._frame_index(a) for a in pcaps],
            [self._mat.root / a.path for a in pcaps],
            partial(decode_columns, vxlan_ports=self.vxlan_ports),
            partial(decode_capture, vxlan_ports=self.vxlan_ports),
            layout,
            lambda done, total: self._tick("decoding packets", done, total),
        )
        # captures cut short: every packet is keyed by its headers alone (join/keys.py), before
        # anything copies a fingerprint
        self._header_keys = len(cut_short(caps)) > 0
        if self._header_keys:
            header_fingerprints(cols)
        # WireGuard headers are read from the frame bytes, before they go
        messages = capture_tables.wireguard_headers(pcaps, counts, cols, self._frame_index)
        for art in pcaps:  # decoded: frame offsets and file mappings are no longer needed
            self._frame_index(art).release_bytes()
        front = capture_tables.packet_points(
            pcaps,
            counts,
            self._frame_index,
            caps,
            cols,
            ifname_by_node,
            self.runner.allocate,
            self._log,
            route_dev=partial(route_dev, self.routes),  # SLL v1 `-i any`: each packet's interface by its route
        )
        # WireGuard: each matched message's row takes its plaintext's inner fields, so the join that
        # follows sees one packet on both sides of the encryption
        wireguard, outer, inner, self._wireguard_lone = match_wireguard(
            columns_frame({**front, **cols}),
            messages,
            self.owners,
            capture_tables.interface_mtus(self.interfaces),
            self.routes,
        )
        join_matches(cols, outer, inner)
        self._wireguard = wireguard
        table = conform(columns_frame({**front, **cols}), "packets")
        # fragments: each datagram put together at each capture point, so the join matches it
        # however every node fragmented it
        self._datagrams, problems = reassemble(table, payload_bytes=not self._header_keys)
        mark_datagrams(cols, self._datagrams)
        artifact_of = {int(r.capture_id): str(r.artifact) for r in caps.itertuples(index=False)}
        by_path = {a.path: a for a in pcaps}
        for capture_id, location, kind, detail in problems:
            self._log("fragments", by_path[artifact_of[capture_id]]).add(location, kind, detail)
        return table

    @property
    def datagrams(self) -> Datagrams:
        """The IP datagrams reassembled from their fragments at each capture point."""
        _ = self.packets
        found = getattr(self, "_datagrams", None)
        return found if found is not None else empty_datagrams()

    @property
    def wireguard(self) -> pd.DataFrame:
        """Every WireGuard message on the uplinks, matched to the plaintext it carried where possible."""
        _ = self.packets
        return getattr(self, "_wireguard", conform(pd.DataFrame(), "wireguard"))

    @property
    def wireguard_unpaired_plaintexts(self) -> np.ndarray:
        """Packet rows on WireGuard devices that no captured message carried (a message lost before the
        sender's uplink tap or not captured at the receiver's), among the node pairs with messages."""
        _ = self.packets
        return getattr(self, "_wireguard_lone", np.zeros(0, np.int64))

    # ---- the join --------------------------------------------------------------------------------
    @cached_property
    def _joined(self) -> Joined:
        self._tick("joining capture points", 0, 2)
        owners = self.owners
        threads = self.runner.cores  # the join's work splits into as many parts as asked
        packets = self.packets
        partitions = self.runner.partitioning(len(packets))
        keep = self.focus.packets(packets, self.runner.allocate) if self.focus else None
        # a packet two captures took at one interface (an `-i any` capture beside its own) is one sighting
        parts = parts_for(len(packets), partitions.rows) if partitions is not None else 1
        second = second_copies(packets, self.captures, parts)
        if second is not None:
            keep = ~second if keep is None else np.asarray(keep) & ~second
        del second
        later = self.datagrams.join_mask(len(packets))  # a reassembled datagram joins as its first fragment
        if later is not None:
            keep = later if keep is None else np.asarray(keep) & later
        del later
        hops, offsets = build_hops(
            packets, self.captures, owners, threads=threads, partitions=partitions, keep=keep, datagrams=self.datagrams
        )
        del keep
        release_freed_memory()  # the join's freed transients, before the flow build makes its own
        self._tick("building flows", 1, 2)
        conntrack, captures = self.focus.conntrack(self.conntrack), self.focus.captures(self.captures)
        bpf_legs = bpf_nat_legs(self.bpf_conntrack)
        if len(bpf_legs):  # BPF NAT entries link a flow's service and backend legs like nf_conntrack's
            conntrack = self.focus.conntrack(pd.concat([conntrack, bpf_legs], ignore_index=True))
        flows, hops = build_flows(
            hops,
            conntrack,
            self.rules,
            captures,
            self.routes,
            threads=threads,
            partitions=partitions,
            services=self.service_index,
            peer_redirect=peer_redirects(self.dataplane),
            filtered=filtered_points(self.capture_filters, captures),
        )
        release_freed_memory()
        return Joined(hops=hops, clock_offsets=offsets, flows=flows)

    @cached_property
    def point_roles(self) -> dict[tuple[str, str], str]:
        """(node, interface) -> role of every capture point: each capture's, and those of the
        interfaces seen inside `-i any` captures (which the captures table lists as one)."""
        return point_roles(self.captures, self.hops)

    @cached_property
    def capture_filters(self) -> dict[int, str]:
        """capture_id -> the filter a filtered capture ran with: recorded (pcapng if_filter), or taken
        from `-i any` and uplink captures whose every packet has an address other than their node's
        (`join.filters`)."""
        return assumed_filters(common_hosts(self.packets), self.captures, self.owners)

    @cached_property
    def owners(self) -> dict[str, str]:
        """IP -> node for node addresses and local pod addresses (`join.address_owners`)."""
        return address_owners(self.interfaces, self.routes, self.cluster_nodes, self.pods, self.nodes)

    @cached_property
    def service_index(self) -> Services:
        """Service lookups from kube-proxy rules, BPF NAT frontends/backends and service listings."""
        # the nodes' own addresses only
        node_ips = set(address_owners(self.interfaces, self.routes.iloc[:0], self.cluster_nodes, None, self.nodes))
        return build_services(self.rules, self.bpf_nat, self.services, node_ips, self.ipvs, self.ipsets)

    @cached_property
    def dataplane(self) -> pd.DataFrame:
        """Per node: eBPF, iptables or nftables dataplane, WireGuard or not, and the evidence."""
        return detect_dataplane(
            self.artifacts,
            self.rules,
            self.interfaces,
            self.captures,
            self.platform_evidence,
            self.bpf_nat,
            self.ipvs,
            self.ipsets,
        )

    @property
    def hops(self) -> pd.DataFrame:
        """Every sighting of every packet, grouped into instances (one packet at several points)."""
        return self._joined.hops

    @property
    def clock_offsets(self) -> pd.DataFrame:
        """Each node's clock offset against the reference node, with its uncertainty."""
        return self._joined.clock_offsets

    @property
    def flows(self) -> pd.DataFrame:
        """One row per connection as the client dialled it, with NAT legs, path and verdict."""
        return self._joined.flows

    def flow_path(self, flow_id: int) -> pd.DataFrame:
        """The hops of one flow in time order: where each packet was seen, when, and how it looked there."""
        h = self.hops
        return h[h["flow_id"] == flow_id].sort_values(["ts_corrected_ns", "instance", "hop_index"])

    # ---- the public tables --------------------------------------------------------------------
    @property
    def conntrack(self) -> pd.DataFrame:
        return self._text_table("conntrack")

    @property
    def rules(self) -> pd.DataFrame:
        return self._text_table("rules")

    @property
    def interfaces(self) -> pd.DataFrame:
        return self._text_table("interfaces")

    @property
    def routes(self) -> pd.DataFrame:
        return self._text_table("routes")

    @property
    def bpf_conntrack(self) -> pd.DataFrame:
        return self._text_table("bpf_conntrack")

    @property
    def bpf_nat(self) -> pd.DataFrame:
        return self._text_table("bpf_nat")

    @property
    def bpf_routes(self) -> pd.DataFrame:
        return self._text_table("bpf_routes")

    @property
    def bpf_counters(self) -> pd.DataFrame:
        return self._text_table("bpf_counters")

    @property
    def bpf_ifstate(self) -> pd.DataFrame:
        return self._text_table("bpf_ifstate")

    @property
    def bpf_policy(self) -> pd.DataFrame:
        return self._text_table("bpf_policy")

    @property
    def traces(self) -> pd.DataFrame:
        return self._text_table("traces")

    @property
    def pods(self) -> pd.DataFrame:
        return self._text_table("pods")

    @property
    def services(self) -> pd.DataFrame:
        return self._text_table("services")

    @property
    def endpoints(self) -> pd.DataFrame:
        return self._text_table("endpoints")

    @property
    def cluster_nodes(self) -> pd.DataFrame:
        return self._text_table("cluster_nodes")

    @property
    def sysctls(self) -> pd.DataFrame:
        return self._text_table("sysctls")

    @property
    def ipvs(self) -> pd.DataFrame:
        return self._text_table("ipvs")

    @property
    def ipsets(self) -> pd.DataFrame:
        return self._text_table("ipsets")

    @property
    def ip_pools(self) -> pd.DataFrame:
        return self._text_table("ip_pools")

    @property
    def network_policies(self) -> pd.DataFrame:
        return self._text_table("network_policies")

    @property
    def flow_logs(self) -> pd.DataFrame:
        return self._text_table("flow_logs")

    @property
    def platform_evidence(self) -> pd.DataFrame:
        return self._text_table("platform_evidence")

    def load_text_tables(self) -> None:
        for table in text_table_names():
            self._text_table(table)

    @property
    def artifacts(self) -> pd.DataFrame:
        """Every file in the bundle: what it was recognised as, node, rows produced, anomalies."""
        return conform(
            pd.DataFrame([{k: v for k, v in a.__dict__.items() if k != "parts"} for a in self.artifacts_list]),
            "artifacts",
        )

    @property
    def anomalies(self) -> pd.DataFrame:
        """Everything not read or found wrong so far (call after loading the tables you need)."""
        rows = list(self._bundle_log.rows)
        for log in self._logs.values():
            rows.extend(log.rows)
        return conform(anomalies_frame(rows), "anomalies")

    def inventory(self, decode_packets: bool = False) -> dict:
        """What `calforensics inspect` prints, as plain data: every file, capture point and anomaly
        kind, and how much was skipped (``decode_packets``: decode every frame too, for its anomalies)."""
        caps = self.captures
        self.load_text_tables()
        if decode_packets:
            _ = self.packets
        arts, anomalies = self.artifacts, self.anomalies
        pcaps = [a for a in self.artifacts_list if a.kind == "pcap"]
        frames_skipped = sum(self._frame_index(a).records - len(self._frame_index(a)) for a in pcaps)
        return inventory(self.name, self.nodes, caps, arts, anomalies, self.dataplane, frames_skipped)

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(TABLES)}")
        return getattr(self, name)


def open_bundle(path: str | Path, **kwargs) -> Bundle:
    """Open a bundle (.tgz/.tar.gz/.tar, directory, or one pcap/pcapng). Raises BundleError if unusable."""
    return Bundle(path, **kwargs)
