"""The packets table from a capture's frames: every frame decoded down to the innermost L3/L4.

The compiled decoder (_fastdecode.py) runs where numba is there, the vectorised reference decoder
(packets_reference.py) elsewhere, and both fill the same columns (packet_columns.py). The result keeps
the outer L3, the (first) encapsulation with its VNI, and the innermost L3/L4, plus the header quoted
inside ICMP errors and a NAT-invariant fingerprint.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...anomalies import AnomalyLog
from ...runtime.memory import release_freed_memory
from .packet_columns import (
    ENCAP_KINDS,
    LINKTYPE_NFLOG,
    MAX_TUNNEL_DEPTH,
    PAYLOAD_HASH_BYTES,
    STATUS_KINDS,
    VXLAN_PORTS,
    PacketColumns,
)
from .packets_reference import ReferenceDecoder
from .pcap import FrameIndex, read_frames


class PacketDecoder:
    """Decodes all frames of one capture file into packet columns: the compiled decoder where numba
    is there, else the reference; then the columns as the packets table takes them."""

    def __init__(
        self,
        frames: FrameIndex,
        vxlan_ports: tuple[int, ...] = VXLAN_PORTS,
        max_depth: int = MAX_TUNNEL_DEPTH,
        compiled: bool | None = None,
    ) -> None:
        from ._fastdecode import available

        self.f = frames
        self.d = frames.data
        self.vxlan_ports = np.asarray(vxlan_ports, dtype=np.int64)
        self.max_depth = max_depth
        # the compiled decoder when numba is there; the vectorised one is the reference and the fallback
        self.compiled = available() if compiled is None else compiled
        self.c = PacketColumns(len(frames), preallocate=not self.compiled)
        self.payload_hash = np.zeros(0, dtype=np.uint64)
        self.fingerprint = np.zeros(0, dtype=np.uint64)

    def decode(self) -> dict[str, object]:
        f, c = self.f, self.c
        start = f.offsets
        c.fail(np.flatnonzero(f.caplens > f.wirelens), "caplen_exceeds_wirelen")
        linktypes = np.asarray([i.linktype for i in f.interfaces] or [0], dtype=np.int32)
        lt = linktypes[f.iface] if len(f) else np.zeros(0, dtype=np.int32)
        if self.compiled and len(f):
            # the kernels take start and length: an int64 array of frame ends would cost 8 bytes a packet
            nflog = np.flatnonzero(lt == LINKTYPE_NFLOG)  # rows the kernel leaves to the numpy decoder
            self._decode_compiled(start, f.caplens, lt)
            if len(nflog):
                reference = ReferenceDecoder(self.d, c, self.vxlan_ports, self.max_depth)
                reference.nflog(nflog, start[nflog], start[nflog] + f.caplens[nflog])
            self._fingerprint_compiled()
            release_freed_memory()
        else:
            reference = ReferenceDecoder(self.d, c, self.vxlan_ports, self.max_depth)
            reference.decode(start, start + f.caplens, lt)
            self.payload_hash, self.fingerprint = reference.payload_hash, reference.fingerprint
        return self._finish()

    def _decode_compiled(self, start: np.ndarray, caplens: np.ndarray, lt: np.ndarray) -> None:
        """One compiled pass per packet (parsers/_fastdecode.py), into the same columns."""
        from ._fastdecode import decode_kernel

        c, n = self.c, self.c.n
        # uninitialised: the kernel writes every cell (one pass in cache instead of a fill pass per array)
        i8 = np.empty((3, n), dtype=np.int8)
        i16 = np.empty((8, n), dtype=np.int16)
        i32 = np.empty((17, n), dtype=np.int32)
        i64 = np.empty((4, n), dtype=np.int64)
        c.payload_off = np.empty(n, dtype=np.int64)
        flags = np.empty((2, n), dtype=bool)
        # one array per address slot (not one block), so each is freed as soon as its column is built
        ver = tuple(np.empty(n, dtype=np.int8) for _ in range(6))
        addr = tuple(np.empty(n, dtype=np.uint32) for _ in range(6))
        decode_kernel(
            self.d,
            start,
            caplens,
            lt,
            self.vxlan_ports,
            self.max_depth,
            c.status,
            i8,
            i16,
            i32,
            i64,
            flags,
            ver,
            addr,
            c.payload_off,
        )
        c.pkttype, c.encap, c.encap_depth = i8[0], i8[1], i8[2]
        (c.outer_proto, c.outer_ttl, c.proto, c.ttl, c.tcp_flags, c.icmp_type, c.q_proto, c.icmp_code) = i16
        (
            c.link_ifindex,
            c.eth_type,
            c.vlan,
            c.outer_ip_len,
            c.ip_len,
            c.frag_offset,
            c.sport,
            c.dport,
            c.tcp_window,
            c.tcp_mss,
            c.payload_len,
            c.icmp_echo_seq,
            c.q_sport,
            c.q_dport,
            c.icmp_mtu,
            c.outer_ip_id,
            c.q_ip_id,
        ) = i32
        c.vni, c.ip_id, c.seq, c.ack = i64
        c.dont_fragment, c.more_fragments = flags
        for k, slot in enumerate((c.outer_src, c.outer_dst, c.src, c.dst, c.q_src, c.q_dst)):
            slot.use_offsets(ver[k], addr[k], self.d, start)

    def _fingerprint_compiled(self) -> None:
        """The reference's fingerprint in the compiled kernel, reading each column where it lies (the
        kernel hashes them in fingerprint_fields' order; tests/test_fastdecode.py holds the two equal)."""
        from ._fastdecode import fingerprint_kernel

        c, f = self.c, self.f
        self.payload_hash = np.empty(c.n, dtype=np.uint64)
        self.fingerprint = np.empty(c.n, dtype=np.uint64)
        fingerprint_kernel(
            self.d,
            f.offsets,
            f.caplens,
            c.payload_off,
            c.payload_len,
            c.proto,
            c.ip_id,
            c.seq,
            c.ack,
            c.tcp_flags,
            c.icmp_type,
            c.icmp_code,
            c.icmp_echo_seq,
            c.frag_offset,
            PAYLOAD_HASH_BYTES,
            self.payload_hash,
            self.fingerprint,
        )
        c.payload_off = np.zeros(0, dtype=np.int64)  # not a table column; 8 bytes a packet less at the peak

    def _finish(self) -> dict[str, object]:
        c, f = self.c, self.f
        return {
            "frame": np.arange(f.first_frame + 1, f.first_frame + c.n + 1, dtype=np.int64),
            "ts_ns": f.ts_ns,
            "caplen": f.caplens.astype(np.int32, copy=False),
            "wirelen": f.wirelens.astype(np.int32, copy=False),
            "iface_index": f.iface,
            "pkttype": c.pkttype,
            "link_ifindex": c.link_ifindex,
            "eth_type": c.eth_type,
            "vlan": c.vlan,
            "outer_src": c.outer_src.column(),
            "outer_dst": c.outer_dst.column(),
            "outer_proto": c.outer_proto,
            "outer_ip_id": c.outer_ip_id,
            "outer_ttl": c.outer_ttl,
            "outer_ip_len": c.outer_ip_len,
            "encap": pd.Categorical.from_codes(c.encap, categories=pd.Index(ENCAP_KINDS, dtype=object)),
            "encap_depth": c.encap_depth,
            "vni": c.vni,
            "ip_version": c.src.version,
            "src": c.src.column(),
            "dst": c.dst.column(),
            "proto": c.proto,
            "ip_id": c.ip_id,
            "ttl": c.ttl,
            "ip_len": c.ip_len,
            "dont_fragment": c.dont_fragment,
            "more_fragments": c.more_fragments,
            "frag_offset": c.frag_offset,
            "sport": c.sport,
            "dport": c.dport,
            "tcp_flags": c.tcp_flags,
            "seq": c.seq,
            "ack": c.ack,
            "tcp_window": c.tcp_window,
            "tcp_mss": c.tcp_mss,
            "payload_len": c.payload_len,
            "icmp_type": c.icmp_type,
            "icmp_code": c.icmp_code,
            "icmp_echo_seq": c.icmp_echo_seq,
            "icmp_mtu": c.icmp_mtu,
            "q_src": c.q_src.column(),
            "q_dst": c.q_dst.column(),
            "q_proto": c.q_proto,
            "q_ip_id": c.q_ip_id,
            "q_sport": c.q_sport,
            "q_dport": c.q_dport,
            "payload_hash": self.payload_hash,
            "fingerprint": self.fingerprint,
            "status": pd.Categorical.from_codes(c.status, categories=pd.Index(STATUS_KINDS, dtype=object)),
        }


def decode_columns(
    frames: FrameIndex, vxlan_ports: tuple[int, ...] = VXLAN_PORTS, compiled: bool | None = None
) -> dict[str, object]:
    """Decode a frame index into packets-table columns (numpy arrays and categoricals, no DataFrame:
    building one per capture and concatenating would copy every column twice)."""
    with np.errstate(over="ignore"):
        return PacketDecoder(frames, vxlan_ports=vxlan_ports, compiled=compiled).decode()


def decode_capture(source: str | bytes, vxlan_ports: tuple[int, ...] = VXLAN_PORTS) -> dict[str, object]:
    """One whole capture's packet columns, from its file or bytes (the Dask task, so module-level)."""
    return decode_columns(read_frames(source, AnomalyLog("pcap")), vxlan_ports)


def decode_frames(frames: FrameIndex, vxlan_ports: tuple[int, ...] = VXLAN_PORTS) -> pd.DataFrame:
    """Decode a frame index into the packets table columns (without capture metadata)."""
    from ...schema import columns_frame

    return columns_frame(decode_columns(frames, vxlan_ports))
