"""The Bundle: every artifact found, recognised and parsed into documented, lazily built tables."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .anomalies import AnomalyLog, anomalies_frame
from .archive import Limits, Materialized, materialize
from .dataplane import detect_dataplane, ebpf_nodes
from .flows import build_flows
from .focus import Focus
from .join import Joined, address_owners, build_hops
from .layout import classify, interface_role, node_of
from .memory import WRITE_BACK_ROWS, release_freed_memory, write_back
from .parallel import CHUNK_PACKETS, PARTITION_ROWS, Runner, narrow_codes
from .parsers import bpftool, calico_bpf, conntrack, iproute, iptables, kubectl, nft, sysctl, traces
from .parsers.packets import VXLAN_PORTS
from .parsers.pcap import FrameIndex, read_frames
from .parsers.text import read_lines
from .parsers.wireguard import WG_PORTS, message_headers
from .rulemeaning import add_rule_meaning
from .schema import SCHEMAS, columns_frame, conform
from .services import Services, bpf_nat_legs, build_services
from .wireguard import join_matches, match_wireguard

TEXT_SNIFF_BYTES = 64 * 1024
DEFAULT_LIMITS = Limits()
LINKTYPE_NAMES = {
    0: "NULL",
    1: "EN10MB",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    239: "NFLOG",
    276: "LINUX_SLL2",
}
ProgressFn = Callable[[str, int, int], None]

# which parser builds which table from which artifact kind
TEXT_TABLES: dict[str, tuple[str, Callable]] = {
    "conntrack": ("conntrack", conntrack.parse_conntrack),
    "iptables": ("rules", iptables.parse_iptables_save),
    "ip6tables": ("rules", lambda lines, log, node, art: iptables.parse_iptables_save(lines, log, node, art, "ipv6")),
    "nft": ("rules", nft.parse_nft_ruleset),
    "ip_link": ("interfaces", iproute.parse_ip_link),
    "ip_route": ("routes", iproute.parse_ip_route),
    "bpf_conntrack": ("bpf_conntrack", calico_bpf.parse_bpf_conntrack),
    "bpf_nat": ("bpf_nat", calico_bpf.parse_bpf_nat),
    "bpf_routes": ("bpf_routes", calico_bpf.parse_bpf_routes),
    "bpf_counters": ("bpf_counters", calico_bpf.parse_bpf_counters),
    "traces": ("traces", traces.parse_traces),
    "kube_pods": ("pods", kubectl.parse_pod_listing),
    "kube_services": ("services", kubectl.parse_service_listing),
    "sysctl": ("sysctls", sysctl.parse_sysctls),
}
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
    "traces",
    "pods",
    "services",
    "sysctls",
    "dataplane",
    "wireguard",
    "anomalies",
]


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
    rows: int = -1  # -1 until parsed
    anomalies: int = 0
    status: str = "pending"  # pending, parsed, no_data, skipped
    detail: str = ""  # why it was skipped or gave nothing usable


def _label(value: object) -> str:
    """A name as the categorical columns hold it: missing becomes ""."""
    return "" if value is None or pd.isna(value) else str(value)


def _code(categories: dict[str, int], label: str) -> int:
    """The code of ``label`` in an insertion-ordered category table, adding it when new."""
    return categories.setdefault(label, len(categories))


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
        a time span, hosts or ports (calforensics.focus)."""
        self.focus = focus or Focus()
        self.path = Path(path)
        self.name = _bundle_name(self.path)
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
        self.artifacts_list = self._inventory()

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
    def _inventory(self) -> list[Artifact]:
        root = self._mat.root
        hostname = ""  # calicoctl node diags name their node only in diagnostics/hostname
        for rel in self._mat.files:
            if PurePosixPath(rel).name == "hostname" and "diagnostics" in PurePosixPath(rel).parts:
                first = (root / rel).read_text(errors="replace").strip().splitlines()
                hostname = first[0].strip() if first else ""
        arts = []
        tops = {PurePosixPath(rel).parts[0] for rel in self._mat.files}
        # an archive's single top-level folder (`calico-diagnostics-…/`) names the bundle, not a node
        strip = len(tops) == 1 and all(len(PurePosixPath(r).parts) > 1 for r in self._mat.files)
        for rel in self._mat.files:
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
            art = Artifact(rel, node_of(rel, hostname, skip_root=strip), kind, size)
            if kind in ("other", "unrecognised", "empty"):
                art.status, art.rows, art.detail = "skipped", 0, SKIPPED_BECAUSE[kind]
            arts.append(art)
        return arts

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
        frames = []
        arts = [a for a in self.artifacts_list if TEXT_TABLES.get(a.kind, ("",))[0] == table]
        for i, art in enumerate(arts):
            self._tick(f"reading {table}", i, len(arts))
            lines = read_lines(self._mat.root / art.path)
            log = self._log(table, art)
            df = TEXT_TABLES[art.kind][1](lines, log, art.node, art.path)
            if art.kind == "conntrack" and PurePosixPath(art.path).name == "nf_conntrack" and len(df):
                df["form"] = pd.Categorical(["proc"] * len(df))
            self._finish_artifact(art, len(df), log, lines)
            frames.append(df)
        frames += self._bpftool_tables.get(table, [])
        result = _concat(frames, table)
        if table == "rules":
            result = add_rule_meaning(_mark_nft_duplicates(result))
        if table == "bpf_nat":
            result = bpftool.combine_nat(result)
        if table == "interfaces":
            result = _merge_interfaces(result)
        result = conform(result, table)
        self._text[table] = result
        return result

    @cached_property
    def _bpftool_tables(self) -> dict[str, list[pd.DataFrame]]:
        """`bpftool map dump` files feed several BPF tables at once, so they are parsed together."""
        out: dict[str, list[pd.DataFrame]] = {}
        for art in (a for a in self.artifacts_list if a.kind == "bpftool"):
            lines = read_lines(self._mat.root / art.path)
            log = self._log("bpftool", art)
            tables = bpftool.parse_bpftool_dump(lines, log, art.node, art.path, PurePosixPath(art.path).stem)
            self._finish_artifact(art, sum(len(v) for v in tables.values()), log, lines)
            for name, df in tables.items():
                out.setdefault(name, []).append(df)
        return out

    def _finish_artifact(self, art: Artifact, rows: int, log: AnomalyLog, lines: list[str] | None) -> None:
        art.rows = rows
        art.anomalies = len(log)
        art.status = "parsed"
        if rows == 0 and lines is not None:
            text = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
            if text and not log.rows:
                log.add(1, "no_data", f"no {art.kind} data; file says: {text[0][:200]}")
                art.anomalies = len(log)
            art.status = "no_data"
            art.detail = f"no {art.kind} data" + (f"; file says: {text[0][:200]}" if text else ": only blank lines")

    # ---- captures ---------------------------------------------------------------------------
    def _frame_index(self, art: Artifact) -> FrameIndex:
        if art.path not in self._frames:
            log = self._log("pcap", art)
            self._frames[art.path] = read_frames(self._mat.root / art.path, log, self.runner.allocate, self.runner.maps)
        return self._frames[art.path]

    @cached_property
    def captures(self) -> pd.DataFrame:
        """One row per capture point (file + interface)."""
        rows = []
        pcaps = [a for a in self.artifacts_list if a.kind == "pcap"]
        uplinks = self._uplinks()
        for i, art in enumerate(pcaps):
            self._tick("indexing captures", i, len(pcaps))
            fi = self._frame_index(art)
            log = self._log("pcap", art)
            art.rows, art.anomalies, art.status = len(fi), len(log), "parsed"
            stem = _capture_stem(art.path)
            n_if = max(1, len(fi.interfaces))
            for k in range(n_if):
                ci = fi.interfaces[k] if k < len(fi.interfaces) else None
                sel = fi.iface == k if n_if > 1 else slice(None)  # no per-frame copies for one interface
                ts = fi.ts_ns[sel]
                iface = (ci.name if ci and ci.name else stem) if n_if == 1 or not ci or ci.name else f"{stem}#{k}"
                rows.append(
                    {
                        "capture_id": len(rows),
                        "node": art.node,
                        "interface": iface,
                        "role": interface_role(iface, uplinks.get(art.node)),
                        "linktype": ci.linktype if ci else -1,
                        "linktype_name": LINKTYPE_NAMES.get(ci.linktype, f"LINKTYPE_{ci.linktype}") if ci else "",
                        "container": fi.container,
                        "snaplen": ci.snaplen if ci else -1,
                        "packets": len(ts),
                        "first_ns": int(ts.min()) if len(ts) else -1,
                        "last_ns": int(ts.max()) if len(ts) else -1,
                        "artifact": art.path,
                        "iface_index": k,
                    }
                )
        df = pd.DataFrame(rows, columns=["capture_id", "node", "interface", "iface_index", "artifact"])
        if rows:
            df = pd.DataFrame(rows)
            self._add_capture_context(df)
        return conform(df, "captures")

    def _add_capture_context(self, caps: pd.DataFrame) -> None:
        """Capture window from the collector's metadata; the pod behind each workload interface."""
        windows = {}
        for art in (a for a in self.artifacts_list if a.kind == "metadata"):
            try:
                meta = json.loads((self._mat.root / art.path).read_text(errors="replace"))
                cap = meta.get("capture", {})
                windows[art.node] = (int(cap.get("start_ns", -1)), int(cap.get("stop_ns", -1)))
                art.rows, art.status = 1, "parsed"
            except (ValueError, TypeError, AttributeError) as exc:
                self._log("metadata", art).add("file", "bad_json", str(exc))
                art.status, art.anomalies, art.detail = "no_data", 1, f"not usable metadata: {str(exc)[:200]}"
        start = [windows.get(n, (-1, -1))[0] for n in caps["node"]]
        end = [windows.get(n, (-1, -1))[1] for n in caps["node"]]
        caps["window_start_ns"] = [w if w >= 0 else f for w, f in zip(start, caps["first_ns"], strict=True)]
        caps["window_end_ns"] = [w if w >= 0 else f for w, f in zip(end, caps["last_ns"], strict=True)]
        pods = self.pods
        by_iface = {(r.pod_node, r.interface): r for r in pods.itertuples(index=False)}
        by_iface_any = {r.interface: r for r in pods.itertuples(index=False)}
        routes = self.routes
        local = routes[(routes["dev"] != "") & routes["scope"].isin(["link", ""]) & (routes["type"] == "unicast")]
        ip_by_iface = {
            (r.node, r.dev): r.dst.split("/")[0]
            for r in local.itertuples(index=False)
            if r.dst.endswith("/32") or "/" not in r.dst
        }
        ns, name, ip = [], [], []
        for node, iface, role in zip(caps["node"], caps["interface"], caps["role"], strict=True):
            pod = by_iface.get((node, iface)) or by_iface_any.get(iface) if role == "workload" else None
            ns.append(pod.namespace if pod else "")
            name.append(pod.name if pod else "")
            ip.append(
                (pod.ip if pod and pod.ip else "") or ip_by_iface.get((node, iface), "") if role == "workload" else ""
            )
        caps["pod_namespace"], caps["pod_name"], caps["pod_ip"] = ns, name, ip

    def _uplinks(self) -> dict[str, set[str]]:
        """Per node, interfaces that carry an address and are not loopback, workload or tunnel."""
        ifs = self.interfaces
        out: dict[str, set[str]] = {}
        for r in ifs.itertuples(index=False):
            candidate = r.name != "lo" and not r.name.startswith("cali") and interface_role(r.name) != "tunnel"
            if candidate and any("." in a and not a.startswith("127.") for a in str(r.addresses).split()):
                out.setdefault(r.node, set()).add(r.name)
        return out

    @cached_property
    def packets(self) -> pd.DataFrame:
        """One row per frame of every capture, decoded down to the innermost L3/L4."""
        caps = self.captures
        pcaps = [a for a in self.artifacts_list if a.kind == "pcap" and len(self._frame_index(a))]
        if not pcaps:
            return conform(pd.DataFrame(), "packets")
        ifname_by_node = self._ifindex_names()
        layout = {c: t for c, t, _ in SCHEMAS["packets"][1] if c not in ("capture_id", "node", "interface")}
        counts = [len(self._frame_index(a)) for a in pcaps]
        cols = self.runner.decode(
            [self._frame_index(a) for a in pcaps],
            [self._mat.root / a.path for a in pcaps],
            self.vxlan_ports,
            layout,
            lambda done, total: self._tick("decoding packets", done, total),
        )
        messages = self._wireguard_headers(pcaps, counts, cols)  # read from the frame bytes, before they go
        # node and interface as categorical codes built per capture: per-packet name objects would cost
        # ~50 bytes and a Python-level factorize a packet
        for art in pcaps:  # decoded: frame offsets and file mappings are no longer needed
            self._frame_index(art).release_bytes()
        total = sum(counts)
        allocate = self.runner.allocate  # mapped files when the table is spilled
        capture_id = allocate(total, np.int32)
        node_codes = allocate(total, np.int16)  # written in place per capture: no concatenation
        iface_codes = allocate(total, np.int32)
        node_cats: dict[str, int] = {}
        iface_cats: dict[str, int] = {}
        start = 0
        for art, n in zip(pcaps, counts, strict=True):
            fi = self._frame_index(art)
            n_if = max(1, len(fi.interfaces))
            mine = caps[caps["artifact"] == art.path].set_index("iface_index")
            ids = mine["capture_id"].reindex(range(n_if)).fillna(-1).to_numpy(np.int32)
            used = np.bincount(fi.iface, minlength=n_if) > 0
            labels = mine["interface"].reindex(range(n_if)).to_numpy(object)
            lut = np.array(
                [_code(iface_cats, _label(x)) if used[i] else -1 for i, x in enumerate(labels)], dtype=np.int32
            )
            lookup = ifname_by_node.get(art.node, {})
            node_code = _code(node_cats, _label(art.node))
            for lo in range(start, start + n, WRITE_BACK_ROWS):  # in runs: bounded transients, written back
                run = slice(lo, min(start + n, lo + WRITE_BACK_ROWS))
                local = fi.iface[run.start - start : run.stop - start]
                np.take(ids, local, out=capture_id[run])
                codes = iface_codes[run]
                np.take(lut, local, out=codes)
                ifindex = np.asarray(cols["link_ifindex"][run])
                sll2 = ifindex >= 0
                if sll2.any():  # `-i any` (SLL2): each packet's own interface, named through `ip link`
                    uniq, inv = np.unique(ifindex[sll2], return_inverse=True)
                    named = [_code(iface_cats, lookup.get(int(x), f"if{int(x)}")) for x in uniq.tolist()]
                    codes[sll2] = np.asarray(named, dtype=np.int32)[inv]
                node_codes[run] = node_code
                for arr in (capture_id, iface_codes, node_codes):
                    write_back(arr[run])
                status = cols["status"].codes[run]
                bad = status != 0
                if bad.any():
                    log = self._log("packets", art)
                    frames = np.asarray(cols["frame"][run])[bad]
                    log.extend_frames(frames.tolist(), np.asarray(cols["status"].categories)[status[bad]].tolist())
                    art.anomalies = len(self._log("pcap", art)) + len(log)
            start += n
        front = {
            "capture_id": np.asarray(capture_id),
            "node": pd.Categorical.from_codes(
                np.asarray(narrow_codes(node_codes, len(node_cats), allocate)),
                categories=pd.Index(list(node_cats), dtype=object),
            ),
            "interface": pd.Categorical.from_codes(
                np.asarray(narrow_codes(iface_codes, len(iface_cats), allocate)),
                categories=pd.Index(list(iface_cats), dtype=object),
            ),
        }
        del node_codes, iface_codes
        # WireGuard: each matched message's row takes its plaintext's inner fields, so the join that
        # follows sees one packet on both sides of the encryption
        wireguard, outer, inner, self._wireguard_lone = match_wireguard(
            columns_frame({**front, **cols}),
            messages,
            self.owners,
            self._mtus(),
            self.routes,
        )
        join_matches(cols, outer, inner)
        self._wireguard = wireguard
        return conform(columns_frame({**front, **cols}), "packets")

    def _wireguard_headers(self, pcaps: list[Artifact], counts: list[int], cols: dict) -> pd.DataFrame:
        """Header fields of the UDP messages on WireGuard ports (packet row, type, indexes, counter)."""
        proto, sport, dport = cols["proto"], cols["sport"], cols["dport"]
        parts = []
        start = 0
        for art, n in zip(pcaps, counts, strict=True):
            run = slice(start, start + n)
            on_port = np.isin(np.asarray(sport[run]), WG_PORTS) | np.isin(np.asarray(dport[run]), WG_PORTS)
            plain = (np.asarray(proto[run]) == 17) & (cols["encap"].codes[run] == 0) & (cols["status"].codes[run] == 0)
            local = np.flatnonzero(on_port & plain)
            if len(local):
                headers = message_headers(self._frame_index(art), local)
                parts.append(pd.DataFrame({"packet": local + start, **headers}))
            start += n
        columns = ["packet", "msg_type", "receiver_index", "sender_index", "counter"]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns, dtype=np.int64)

    def _mtus(self) -> dict[tuple[str, str], int]:
        ifs = self.interfaces
        return {(str(r.node), str(r.name)): int(r.mtu) for r in ifs.itertuples(index=False) if r.mtu > 0}

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

    def _ifindex_names(self) -> dict[str, dict[int, str]]:
        out: dict[str, dict[int, str]] = {}
        for r in self.interfaces.itertuples(index=False):
            if r.ifindex >= 0:
                out.setdefault(r.node, {})[int(r.ifindex)] = r.name
        return out

    # ---- the join --------------------------------------------------------------------------------
    @cached_property
    def _joined(self) -> Joined:
        self._tick("joining capture points", 0, 2)
        owners = self.owners
        threads = self.runner.cores  # the join's work splits into as many parts as asked
        packets = self.packets
        partitions = self.runner.partitioning(len(packets))
        keep = self.focus.packets(packets, self.runner.allocate) if self.focus else None
        hops, offsets = build_hops(packets, self.captures, owners, threads=threads, partitions=partitions, keep=keep)
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
            ebpf_nodes=ebpf_nodes(self.dataplane),
        )
        release_freed_memory()
        return Joined(hops=hops, clock_offsets=offsets, flows=flows)

    @cached_property
    def owners(self) -> dict[str, str]:
        """IP -> node for node addresses and local pod addresses (`join.address_owners`)."""
        return address_owners(self.interfaces, self.routes)

    @cached_property
    def service_index(self) -> Services:
        """Service lookups from kube-proxy rules, BPF NAT frontends/backends and service listings."""
        node_ips = set(address_owners(self.interfaces, self.routes.iloc[:0]))  # the nodes' own addresses only
        return build_services(self.rules, self.bpf_nat, self.services, node_ips)

    @cached_property
    def dataplane(self) -> pd.DataFrame:
        """Per node: eBPF, iptables or nftables dataplane, WireGuard or not, and the evidence."""
        return detect_dataplane(self.artifacts, self.rules, self.interfaces, self.captures)

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
    def traces(self) -> pd.DataFrame:
        return self._text_table("traces")

    @property
    def pods(self) -> pd.DataFrame:
        return self._text_table("pods")

    @property
    def services(self) -> pd.DataFrame:
        return self._text_table("services")

    @property
    def sysctls(self) -> pd.DataFrame:
        return self._text_table("sysctls")

    def load_text_tables(self) -> None:
        for table in dict.fromkeys(t for t, _ in TEXT_TABLES.values()):
            self._text_table(table)

    @property
    def artifacts(self) -> pd.DataFrame:
        """Every file in the bundle: what it was recognised as, node, rows produced, anomalies."""
        return conform(pd.DataFrame([a.__dict__ for a in self.artifacts_list]), "artifacts")

    @property
    def anomalies(self) -> pd.DataFrame:
        """Everything not read or found wrong so far (call after loading the tables you need)."""
        rows = list(self._bundle_log.rows)
        for log in self._logs.values():
            rows.extend(log.rows)
        return conform(anomalies_frame(rows), "anomalies")

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(TABLES)}")
        return getattr(self, name)


def open_bundle(path: str | Path, **kwargs) -> Bundle:
    """Open a bundle (.tgz/.tar.gz/.tar, directory, or one pcap/pcapng). Raises BundleError if unusable."""
    return Bundle(path, **kwargs)


def _bundle_name(p: Path) -> str:
    name = p.name
    for suffix in (".tar.gz", ".tgz", ".tar", ".pcapng", ".pcap"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name or "bundle"


def _capture_stem(rel: str) -> str:
    name = PurePosixPath(rel).name
    for suffix in (".pcapng", ".pcap", ".cap"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _merge_interfaces(df: pd.DataFrame) -> pd.DataFrame:
    """`ip link` and `ip addr` of one node describe the same interfaces: one row each, facts combined."""
    if df.empty:
        return df
    rows = []
    for _, group in df.groupby(["node", "ifindex", "name"], sort=False, observed=True):
        row = group.iloc[0].to_dict()
        for col in df.columns:
            values = [v for v in group[col] if v not in ("", -1) and v == v]
            if values:
                row[col] = values[0]
        row["addresses"] = " ".join(dict.fromkeys(a for v in group["addresses"] for a in str(v).split()))
        rows.append(row)
    return pd.DataFrame(rows, columns=df.columns)


def _mark_nft_duplicates(rules: pd.DataFrame) -> pd.DataFrame:
    """Flag nft rows of tables that an iptables-nft-save dump of the same node already shows."""
    rules = rules.copy()
    saved = rules[rules["source"].astype(str).str.contains("tables") & (rules["backend"].astype(str) == "nft")]
    family = saved["family"].astype(str).map({"ipv4": "ip", "ipv6": "ip6"})
    seen = set(zip(saved["node"].astype(str), family, saved["table"].astype(str), strict=True))
    nft = rules["source"].astype(str) == "nft"
    keys = zip(rules["node"].astype(str), rules["family"].astype(str), rules["table"].astype(str), strict=True)
    rules["duplicate"] = [bool(is_nft and key in seen) for is_nft, key in zip(nft, keys, strict=True)]
    return rules


def _concat(frames: list[pd.DataFrame], table: str) -> pd.DataFrame:
    """Stack per-artifact frames; categories are rebuilt over the union (conform does that)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return conform(pd.DataFrame(), table)
    return pd.concat(frames, ignore_index=True)
