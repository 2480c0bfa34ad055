"""Capture containers: classic pcap and pcapng, read into a frame index.

The reader walks record headers once and produces flat numpy arrays (offset, caplen, wirelen,
timestamp, interface) over the file's bytes; the packet decoder then works on those arrays in bulk.
Lengths in the file are never trusted for allocation: the file is memory-mapped and every record
is checked against the bytes actually present.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...anomalies import AnomalyLog
from ...runtime.memory import WRITE_BACK_ROWS, write_back
from ._walk import INT64_MAX, STOP_TOO_LONG, STOP_TRAILING, STOP_TRUNCATED, _epb_run, in_memory, index_pcap

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
# A record larger than this is treated as a corrupt length, not as a packet (libpcap uses 256 KiB
# for its maximum snaplen; BIG TCP/GSO captures reach ~200 KiB, so allow generous headroom).
MAX_RECORD = 16 * 1024 * 1024

# pcapng block types
BT_IDB, BT_OPB, BT_SPB, BT_NRB, BT_ISB, BT_EPB = 1, 2, 3, 4, 5, 6
# pcapng option codes
OPT_ENDOFOPT, OPT_IF_NAME, OPT_IF_DESCRIPTION, OPT_IF_TSRESOL, OPT_IF_FILTER, OPT_IF_TSOFFSET = 0, 2, 3, 9, 11, 14


def sniff_capture(head: bytes) -> str | None:
    """Return "pcap" or "pcapng" from a file's first bytes, else None."""
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_SHB and len(head) >= 12 and head[8:12] in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
        return "pcapng"
    return None


@dataclass
class CaptureInterface:
    """One interface of a capture file (classic pcap has exactly one)."""

    linktype: int
    snaplen: int
    name: str = ""
    description: str = ""
    section: int = 0
    capture_filter: str = ""  # pcapng if_filter: the libpcap filter expression the capture ran with


@dataclass
class FrameIndex:
    """Where each frame lies in ``data`` and what the file says about it."""

    container: str
    data: np.ndarray  # uint8 view over the whole file
    offsets: np.ndarray  # int64 start of frame bytes
    caplens: np.ndarray  # int32 captured bytes
    wirelens: np.ndarray  # int32 original length on the wire (clipped at 2**31 - 1)
    ts_ns: np.ndarray  # int64 nanoseconds since the epoch
    iface: np.ndarray  # int32 index into ``interfaces``
    interfaces: list[CaptureInterface] = field(default_factory=list)
    records: int = 0  # records seen in the file (packets + damaged ones)
    first_frame: int = 0  # frames before this index's first row (non-zero for a slice)

    def __len__(self) -> int:
        return len(self.caplens)

    def release_bytes(self) -> None:
        """Forget where frames lie once they are decoded: the offsets (8 bytes a frame) and the
        file's mapping go; lengths, times and interfaces stay (the packets table shares them)."""
        self.offsets = np.zeros(0, dtype=np.int64)
        self.data = np.zeros(0, dtype=np.uint8)

    def slice(self, lo: int, hi: int) -> FrameIndex:
        """Rows [lo, hi) as an index of their own (views, no copies): the unit of chunked decoding."""
        return FrameIndex(
            container=self.container,
            data=self.data,
            offsets=self.offsets[lo:hi],
            caplens=self.caplens[lo:hi],
            wirelens=self.wirelens[lo:hi],
            ts_ns=self.ts_ns[lo:hi],
            iface=self.iface[lo:hi],
            interfaces=self.interfaces,
            records=hi - lo,
            first_frame=self.first_frame + lo,
        )


class _Frames:
    """Per-frame columns filled while walking blocks (by the compiled run and the reader): growable
    arrays in memory, or, with ``alloc``, arrays of an exact size known from a counting pass (mapped
    files for a spilled index). With ``count_only`` nothing is stored: the walk just counts rows."""

    def __init__(self, capacity: int = 1 << 12, alloc: Allocator | None = None, count_only: bool = False) -> None:
        self.n = 0
        self.count_only = count_only
        self.exact = alloc is not None
        new = alloc or in_memory
        size = 0 if count_only else capacity
        self.off = new(size, np.int64)
        # lengths as int32, the packets table's dtype, clipped as they are written: a bogus length past
        # 2**31 stays huge, not negative
        self.cap = new(size, np.int32)
        self.wire = new(size, np.int32)
        self.ts = new(size, np.int64)
        self.ifc = new(size, np.int32)

    def grow(self) -> None:
        size = max(2 * len(self.off), 1 << 12)
        for name in ("off", "cap", "wire", "ts", "ifc"):
            old = getattr(self, name)
            new = np.empty(size, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def push(self, off: int, cap: int, wire: int, ts: int, ifc: int) -> None:
        if self.count_only:
            self.n += 1
            return
        if self.n == len(self.off):
            self.grow()
        i, clip = self.n, np.iinfo(np.int32).max
        self.off[i], self.cap[i], self.wire[i], self.ts[i], self.ifc[i] = off, min(cap, clip), min(wire, clip), ts, ifc
        self.n += 1

    def epb_run(self, data: np.ndarray, off: int, little: bool, section_ifaces: list[int], conv: np.ndarray) -> int:
        """Let the compiled run index clean Enhanced Packet Blocks from ``off``; the offset it stopped at."""
        section_map = np.asarray(section_ifaces, dtype=np.int64)
        room = INT64_MAX if self.count_only else len(self.off)
        while True:
            # mapped (exact) arrays are filled in runs, each written back as it is finished
            stop = min(room, self.n + WRITE_BACK_ROWS) if (self.exact or self.count_only) else room
            before = self.n
            filled, off = _epb_run(
                data, off, little, section_map, conv, self.n, stop, self.count_only,
                self.off, self.cap, self.wire, self.ts, self.ifc,
            )  # fmt: skip
            self.n = int(filled)
            if self.exact:
                for col in (self.off, self.cap, self.wire, self.ts, self.ifc):
                    write_back(col[before : self.n])
            if self.n < stop or (self.exact and self.n == room):
                return int(off)  # at a block for the reader, or the end (exact: every counted row is in)
            if self.n == room:
                self.grow()
                room = len(self.off)

    def index(self, container: str, data: np.ndarray, interfaces: list[CaptureInterface], records: int):
        n = self.n
        # growable arrays are copied down to their rows; exact ones are the index as they are
        take = (lambda a: a[:n]) if self.exact else (lambda a: a[:n].copy())
        return FrameIndex(
            container=container,
            data=data,
            offsets=take(self.off),
            caplens=take(self.cap),
            wirelens=take(self.wire),
            ts_ns=take(self.ts),
            iface=take(self.ifc),
            interfaces=interfaces,
            records=records,
        )


Allocator = Callable[[int, type], np.ndarray]
MIN_PACKET_BLOCK = 32  # bytes of the smallest pcapng Enhanced Packet Block: a bound on its rows


def map_file(path: str | Path) -> np.ndarray:
    """Memory-map a file read-only as uint8 (an empty array for an empty file)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            return np.zeros(0, dtype=np.uint8)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mm, dtype=np.uint8)


def read_frames(
    source: str | Path | bytes | np.ndarray,
    log: AnomalyLog,
    alloc: Allocator | None = None,
    maps: Callable[[int], bool] | None = None,
) -> FrameIndex:
    """Index every frame of a pcap or pcapng file (a path, or its bytes); damage becomes anomalies in ``log``.

    ``alloc(n, dtype)`` gives the index's per-frame arrays (default: in memory); a classic pcap's index
    is built in bounded transient memory, so with arrays mapped from files the index of a capture
    larger than RAM can be built. ``maps(n)`` says whether ``alloc`` would map an index of ``n``
    rows: a pcapng that could need it is read in two passes, so its arrays are of exact size."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = np.frombuffer(source, dtype=np.uint8)
    elif isinstance(source, np.ndarray):
        data = source
    else:
        data = map_file(source)
    head = bytes(data[:12])
    kind = sniff_capture(head)
    if kind == "pcap":
        return _read_pcap(data, log, alloc or in_memory)
    if kind == "pcapng":
        # two passes (exact, mapped arrays) only where an index this file could hold would be mapped
        exact = alloc is not None and maps is not None and maps(len(data) // MIN_PACKET_BLOCK)
        return _read_pcapng(data, log, alloc if exact else None)
    log.add("file", "not_a_capture", f"unknown magic {head[:4].hex()}")
    return _Frames().index("unknown", data, [], 0)


def _read_pcap(data: np.ndarray, log: AnomalyLog, alloc: Allocator) -> FrameIndex:
    buf = memoryview(data)
    frames = _Frames()
    if len(buf) < 24:
        log.add("header", "truncated_header", f"pcap global header needs 24 bytes, file has {len(buf)}")
        return frames.index("pcap", data, [], 0)
    endian, ts_mult = PCAP_MAGICS[bytes(buf[:4])]
    major, minor, _zone, _sigfigs, snaplen, linkfield = struct.unpack_from(endian + "HHiIII", buf, 4)
    linktype = linkfield & 0x0FFFFFFF
    if linkfield & 0x03FF0000:
        log.add("header", "reserved_linktype_bits", f"linktype field 0x{linkfield:08x} has reserved bits set")
        linktype = linkfield & 0xFFFF
    interfaces = [CaptureInterface(linktype=linktype, snaplen=snaplen)]
    if major != 2:
        log.add("header", "unsupported_version", f"pcap version {major}.{minor}; only 2.x is defined")
        return frames.index("pcap", data, interfaces, 0)
    if minor != 4:
        log.add("header", "unusual_version", f"pcap version {major}.{minor} (expected 2.4); reading anyway")

    # the walk follows lengths only, then a second compiled pass reads every record header
    size = len(buf)
    (offsets, caplens, wirelens, ts_ns), bad_ts, reason, off = index_pcap(
        data, endian == "<", ts_mult, MAX_RECORD, alloc
    )
    n = len(offsets)
    if reason in (STOP_TOO_LONG, STOP_TRUNCATED):
        (incl,) = struct.unpack_from(endian + "I", buf, off + 8)
        if reason == STOP_TOO_LONG:
            log.add(f"frame {n + 1}", "bad_record_length", f"captured length {incl} at byte {off} is not plausible")
        else:
            log.add(
                f"frame {n + 1}",
                "truncated_record",
                f"record needs {incl} bytes, file has {size - off - 16} left (capture cut short)",
            )
    elif reason == STOP_TRAILING:
        log.add(f"frame {n + 1}", "truncated_record_header", f"{size - off} trailing bytes after last record")
    records = n + (off < size)
    iface = alloc(n, np.int32)
    too_long: list[int] = []
    for lo in range(0, n, WRITE_BACK_ROWS):
        iface[lo : lo + WRITE_BACK_ROWS] = 0
        write_back(iface[lo : lo + WRITE_BACK_ROWS])
        if snaplen and len(too_long) < 100:
            too_long.extend((np.flatnonzero(caplens[lo : lo + WRITE_BACK_ROWS] > snaplen)[:100] + lo + 1).tolist())
    for fr in (bad_ts + 1).tolist():
        log.add(f"frame {fr}", "bad_timestamp", "sub-second timestamp field is out of range")
    for fr in too_long[:100]:
        log.add(f"frame {fr}", "caplen_exceeds_snaplen", f"captured length exceeds snaplen {snaplen}")
    return FrameIndex(
        container="pcap",
        data=data,
        offsets=offsets,
        caplens=caplens,
        wirelens=wirelens,
        ts_ns=ts_ns,
        iface=iface,
        interfaces=interfaces,
        records=records,
    )


def _parse_options(buf: memoryview, start: int, end: int, endian: str) -> tuple[dict[int, list[bytes]], str]:
    """Parse a pcapng option list; returns (options by code, error text or "")."""
    opts: dict[int, list[bytes]] = {}
    off = start
    while off + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, off)
        if code == OPT_ENDOFOPT:
            return opts, ""
        val_end = off + 4 + length
        if val_end > end:
            return opts, f"option {code} length {length} runs past the block"
        opts.setdefault(code, []).append(bytes(buf[off + 4 : val_end]))
        off = val_end + (-length % 4)
    return opts, ""


def _ts_to_ns_factor(tsresol: int) -> tuple[int, int, int]:
    """Return (mul, div, shift) so that ns = (ts * mul // div) >> shift for a pcapng if_tsresol."""
    if tsresol & 0x80:
        return 1_000_000_000, 1, tsresol & 0x7F
    exp = tsresol
    if exp <= 9:
        return 10 ** (9 - exp), 1, 0
    return 1, 10 ** (exp - 9), 0


def _conversions(ts_conv: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Per interface (mul, div, shift, offset in ns, usable) for the compiled EPB run; an interface
    whose offset does not fit 64-bit nanoseconds is left to the reader (usable 0)."""
    rows = []
    for mul, div, shift, tsoff in ts_conv:
        offset_ns = tsoff * 1_000_000_000
        fits = -INT64_MAX <= offset_ns <= INT64_MAX and mul <= INT64_MAX and div <= INT64_MAX
        rows.append((mul, div, shift, offset_ns, 1) if fits else (1, 1, 0, 0, 0))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 5)


def _read_pcapng(data: np.ndarray, log: AnomalyLog, alloc: Allocator | None = None) -> FrameIndex:
    """With ``alloc``, two passes: one counts the rows (its anomalies thrown away), one fills arrays
    of exactly that size from ``alloc`` (mapped files for a spilled index), in written-back runs;
    otherwise one pass into growable arrays in memory."""
    if alloc is None:
        frames = _Frames()
        interfaces, n = _walk_pcapng(data, log, frames)
    else:
        counter = _Frames(count_only=True)
        _walk_pcapng(data, AnomalyLog("pcapng count"), counter)
        frames = _Frames(counter.n, alloc=alloc)
        interfaces, n = _walk_pcapng(data, log, frames)
    return frames.index("pcapng", data, interfaces, n)


def _walk_pcapng(data: np.ndarray, log: AnomalyLog, frames: _Frames) -> tuple[list[CaptureInterface], int]:
    """Every block in file order; packet rows go to ``frames``. Returns the interfaces and the
    number of packet blocks seen (damaged ones included). Damage to a block's framing stops the walk
    (what follows cannot be found); damage inside a packet block skips that block only."""
    buf = memoryview(data)
    size = len(buf)
    interfaces: list[CaptureInterface] = []
    section_ifaces: list[int] = []  # global index of each interface in the current section
    ts_conv: list[tuple[int, int, int, int]] = []  # per global iface: mul, div, shift, offset_s
    endian = "<"
    off = 0
    section = -1
    n = 0
    conv = np.zeros((0, 5), dtype=np.int64)
    while off + 12 <= size:
        if section >= 0 and section_ifaces:
            # the bulk of a file: clean EPBs indexed by the compiled run; the rest (and any damage) below
            start_rows = frames.n
            off = frames.epb_run(data, off, endian == "<", section_ifaces, conv)
            n += frames.n - start_rows
            if off + 12 > size:
                continue
        if struct.unpack_from("<I", buf, off)[0] == 0x0A0D0D0A:
            endian = _byte_order(buf, off, log)
            if not endian:
                break
        btype, blen = struct.unpack_from(endian + "II", buf, off)
        if not _framed(buf, off, btype, blen, size, endian, log):
            break
        body, body_end = off + 8, off + blen - 4
        if btype == 0x0A0D0D0A:
            if not _section_header(buf, body, body_end, endian, off, log):
                break
            section += 1
            section_ifaces = []
        elif section < 0:
            log.add(f"byte {off}", "missing_section_header", "block before any section header")
            break
        elif btype == BT_IDB:
            described = _interface_block(buf, body, body_end, endian, off, section, log)
            if described is None:
                break
            section_ifaces.append(len(interfaces))
            interfaces.append(described[0])
            ts_conv.append(described[1])
            conv = _conversions(ts_conv)
        elif btype in (BT_EPB, BT_OPB, BT_SPB):
            n += 1
            _packet_block(buf, btype, body, body_end, endian, n, section_ifaces, ts_conv, frames, log)
        off += blen
    else:
        if off != size:
            log.add(f"byte {off}", "truncated_block", f"{size - off} trailing bytes after last block")
    return interfaces, n


def _byte_order(buf: memoryview, off: int, log: AnomalyLog) -> str:
    """A section header's byte order ("<" or ">"), or "" when its magic is missing."""
    bom = bytes(buf[off + 8 : off + 12])
    if bom == b"\x4d\x3c\x2b\x1a":
        return "<"
    if bom == b"\x1a\x2b\x3c\x4d":
        return ">"
    log.add(f"byte {off}", "bad_section_header", "byte-order magic missing")
    return ""


def _framed(buf: memoryview, off: int, btype: int, blen: int, size: int, endian: str, log: AnomalyLog) -> bool:
    """Whether the block's leading and trailing lengths agree and fit in the file."""
    if blen < 12 or blen % 4 or off + blen > size:
        if off + blen > size and blen >= 12:
            log.add(f"byte {off}", "truncated_block", f"block type {btype} of {blen} bytes runs past end of file")
        else:
            log.add(f"byte {off}", "bad_block_length", f"block type {btype} has length {blen}")
        return False
    trailer = struct.unpack_from(endian + "I", buf, off + blen - 4)[0]
    if trailer != blen:
        log.add(f"byte {off}", "block_length_mismatch", f"leading length {blen}, trailing {trailer}")
        return False
    return True


def _section_header(buf: memoryview, body: int, body_end: int, endian: str, off: int, log: AnomalyLog) -> bool:
    major, minor = struct.unpack_from(endian + "HH", buf, body + 4)
    if major != 1 or minor not in (0, 2):
        log.add(f"byte {off}", "unsupported_version", f"pcapng section version {major}.{minor}")
        return False
    _, err = _parse_options(buf, body + 16, body_end, endian)
    if err:
        log.add(f"byte {off}", "bad_option", f"section header: {err}")
        return False
    return True


def _interface_block(
    buf: memoryview, body: int, body_end: int, endian: str, off: int, section: int, log: AnomalyLog
) -> tuple[CaptureInterface, tuple[int, int, int, int]] | None:
    """The interface an IDB describes and its timestamp conversion (mul, div, shift, offset_s)."""
    if body_end - body < 8:
        log.add(f"byte {off}", "bad_block_length", "interface block too short")
        return None
    linktype, _res, snaplen = struct.unpack_from(endian + "HHI", buf, body)
    opts, err = _parse_options(buf, body + 8, body_end, endian)
    if err:
        log.add(f"byte {off}", "bad_option", f"interface block: {err}")
    name = opts.get(OPT_IF_NAME, [b""])[0].split(b"\0")[0].decode("utf-8", "replace")
    desc = opts.get(OPT_IF_DESCRIPTION, [b""])[0].split(b"\0")[0].decode("utf-8", "replace")
    # if_filter: a type byte, then the filter; type 0 is a libpcap expression (a BPF program is not kept)
    raw_filter = opts.get(OPT_IF_FILTER, [b""])[0]
    capture_filter = raw_filter[1:].split(b"\0")[0].decode("utf-8", "replace") if raw_filter[:1] == b"\0" else ""
    tsresol = opts.get(OPT_IF_TSRESOL, [b"\x06"])[0][:1] or b"\x06"
    tsoff_raw = opts.get(OPT_IF_TSOFFSET, [b""])[0]
    tsoff = struct.unpack(endian + "q", tsoff_raw)[0] if len(tsoff_raw) == 8 else 0
    interface = CaptureInterface(linktype, snaplen, name, desc, section, capture_filter.strip())
    return interface, (*_ts_to_ns_factor(tsresol[0]), tsoff)


def _packet_block(
    buf: memoryview,
    btype: int,
    body: int,
    body_end: int,
    endian: str,
    n: int,
    section_ifaces: list[int],
    ts_conv: list[tuple[int, int, int, int]],
    frames: _Frames,
    log: AnomalyLog,
) -> None:
    """One enhanced, obsolete or simple packet block (frame ``n``) into ``frames``, or an anomaly."""
    if btype == BT_SPB:
        local_if, ts_raw = 0, None
        (wire,) = struct.unpack_from(endian + "I", buf, body)
        data_off = body + 4
        cap = min(wire, body_end - data_off)
    else:
        if body_end - body < 20:
            log.add(f"frame {n}", "bad_block_length", "packet block too short")
            return
        if btype == BT_EPB:
            local_if, hi, lo, cap, wire = struct.unpack_from(endian + "IIIII", buf, body)
        else:
            local_if, _drops, hi, lo, cap, wire = struct.unpack_from(endian + "HHIIII", buf, body)
        ts_raw = (hi << 32) | lo
        data_off = body + 20
    if local_if >= len(section_ifaces):
        log.add(f"frame {n}", "unknown_interface", f"interface id {local_if} not described in section")
        return
    if data_off + cap > body_end:
        log.add(f"frame {n}", "bad_record_length", f"captured length {cap} exceeds its block")
        cap = max(0, body_end - data_off)
    gi = section_ifaces[local_if]
    if ts_raw is None:
        ts = 0
    else:
        mul, div, shift, tsoff = ts_conv[gi]
        ts = ((ts_raw * mul // div) >> shift) + tsoff * 1_000_000_000
        if not 0 <= ts < 2**63:
            log.add(f"frame {n}", "bad_timestamp", f"timestamp {ts_raw} does not fit in nanoseconds")
            ts = 0
    frames.push(data_off, cap, wire, ts, gi)
