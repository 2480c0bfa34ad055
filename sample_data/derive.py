"""What the sample derivations share (ipip.py, ebpf.py, wireguard.py): exact pcap reading and
writing, checksums, bpftool's hex dump form, unpacking a lab bundle and packing the derived one
with its ground truth, and replacing the lab's `vxlan.calico` device in `ip link` / `ip addr` dumps."""

from __future__ import annotations

import io
import json
import re
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

from calforensics.collect.collector import pack


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_pcap(path: Path, frames: list[tuple[int, bytes]], linktype: int) -> None:
    """Nanosecond pcap written by hand so timestamps stay exact (ints, not floats)."""
    out = io.BytesIO()
    out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
    for ts_ns, frame in frames:
        out.write(struct.pack("<IIII", ts_ns // 1_000_000_000, ts_ns % 1_000_000_000, len(frame), len(frame)))
        out.write(frame)
    path.write_bytes(out.getvalue())


def read_pcap(path: Path) -> list[tuple[int, bytes]]:
    """(ns timestamp, frame) from a classic pcap of either resolution, exactly."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    mult = 1 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1000
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        out.append((sec * 1_000_000_000 + frac * mult, data[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return out


def bpftool_hex(data: bytes) -> list[str]:
    """Bytes as `bpftool map dump` prints them without BTF (fprint_hex): 16 a row, two spaces after
    the eighth (formats reference 5.3)."""
    rows = []
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        left = " ".join(f"{x:02x}" for x in chunk[:8])
        right = " ".join(f"{x:02x}" for x in chunk[8:])
        rows.append(left + ("  " + right if right else ""))
    return rows


def unpack(src: Path, into: Path) -> Path:
    """The lab bundle's single top folder, extracted under ``into``."""
    with tarfile.open(src) as tar:
        tar.extractall(into, filter="data")
    (bundle,) = [p for p in into.iterdir() if p.is_dir()]
    return bundle


def pack_derived(bundle: Path, truth: dict, dst: Path) -> Path:
    """Write the ground truth into the bundle and beside the archive, and pack the bundle as ``dst``
    (its top folder renamed after the archive)."""
    name = dst.name.split(".")[0]
    text = json.dumps(truth, indent=2, sort_keys=True) + "\n"
    (bundle / "ground_truth.json").write_text(text)
    out_dir = bundle.parent.parent / name
    bundle.rename(out_dir)
    pack(out_dir, dst)
    dst.with_name(name + ".ground_truth.json").write_text(text)
    return dst


def replace_vxlan_device(text: str, head: Callable[[str], list[str]], detail: str, name: str) -> str:
    """`ip link` / `ip addr` text with the `vxlan.calico` device replaced: ``head(index)`` gives its new
    first lines, ``detail`` replaces the `vxlan …` detail line, its addresses move to ``name``."""
    out, inside = [], False
    for line in text.splitlines():
        if re.match(r"^\d+: vxlan\.calico[:@]", line):
            out += head(line.split(":")[0])
            inside = True
            continue
        if inside and line.startswith((" ", "\t")):
            if line.strip().startswith("vxlan "):
                out.append(detail)
            elif line.strip().startswith("inet "):
                out.append(line.replace("vxlan.calico", name))
            continue
        inside = False
        out.append(line)
    return "\n".join(out) + "\n"
