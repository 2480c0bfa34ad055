"""WireGuard match benchmark: plaintext on `wireguard.cali` and its data messages on `eth0` at both
ends of a node pair, generated with the size rule and per-session counters, one message in
``--loss`` missed by the receiver's uplink capture (its plaintext is still there, so that direction
is walked message by message; without loss it is matched at whole-array speed). Prints decode time,
match time and messages/s, and checks that every message that was not lost was matched (exactly, or
as ambiguous next to a lost one of the same size). Run: `python bench/bench_wireguard.py [--packets N]`.
"""

from __future__ import annotations

import argparse
import random
import struct
import tempfile
import time
from pathlib import Path

import calforensics
import calforensics.bundle
from calforensics.join.wireguard import match_wireguard, padded

NODE_A, NODE_B = "10.0.0.11", "10.0.0.12"
POD_A, POD_B = "192.168.10.5", "192.168.20.7"
ETH = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
MTU = 1440


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ipv4(src: str, dst: str, proto: int, ident: int, payload: bytes) -> bytes:
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, 64, proto, 0, ip4(src), ip4(dst))
        + payload
    )


def write(path: Path, frames: list[tuple[int, bytes]], linktype: int) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
        for ts, frame in frames:
            f.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(frame), len(frame)))
            f.write(frame)


def build(root: Path, packets: int, loss: int) -> int:
    rng = random.Random(1)
    t0 = 1_800_000_000_000_000_000
    plain = {"node-a": [], "node-b": []}
    eth = {"node-a": [], "node-b": []}
    lost = 0
    for k in range(packets):
        a_to_b = k % 2 == 0
        sender, receiver = ("node-a", "node-b") if a_to_b else ("node-b", "node-a")
        src, dst = (POD_A, POD_B) if a_to_b else (POD_B, POD_A)
        size = rng.choice((52, 60, 100, 600, 1400, 1440))
        tcp = struct.pack("!HHIIBBHHH", 40000, 8080, k, 0, 0x50, 0x10, 512, 0, 0) + bytes(size - 40)
        inner = ipv4(src, dst, 6, k, tcp)
        ts = t0 + k * 20_000
        counter = k // 2
        message = struct.pack("<BxxxIQ", 4, 7 if a_to_b else 9, counter) + bytes(padded(size, MTU) + 16)
        udp = struct.pack("!HHHH", 51820, 51820, 8 + len(message), 0) + message
        outer = ETH + ipv4(NODE_A if a_to_b else NODE_B, NODE_B if a_to_b else NODE_A, 17, k, udp)
        plain[sender].append((ts, inner))
        eth[sender].append((ts + 3_000, outer))
        plain[receiver].append((ts + 11_000, inner))
        if loss and k % loss == loss - 1:
            lost += 1  # the receiver's uplink capture missed it
            continue
        eth[receiver].append((ts + 8_000, outer))
    for node in ("node-a", "node-b"):
        pcaps = root / "nodes" / node / "pcaps"
        pcaps.mkdir(parents=True)
        write(pcaps / "wireguard.cali.pcap", plain[node], 101)
        write(pcaps / "eth0.pcap", sorted(eth[node]), 1)
        me, pod, block = (NODE_A, POD_A, "192.168.10.0/26") if node == "node-a" else (NODE_B, POD_B, "192.168.20.0/26")
        (root / "nodes" / node / "ip-addr.txt").write_text(
            f"2: eth0: <BROADCAST,UP> mtu 1500 state UP\n    inet {me}/24 scope global eth0\n"
            f"3: wireguard.cali: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu {MTU} state UNKNOWN\n"
            f"4: cali12345678901@if2: <BROADCAST,UP> mtu 1500 state UP\n"
        )
        (root / "nodes" / node / "ip-route.txt").write_text(
            f"{pod} dev cali12345678901 scope link\nblackhole {block}\n"
        )
    return lost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=1_000_000, help="plaintext packets (both directions)")
    ap.add_argument("--loss", type=int, default=1000, help="lose one message in this many (0: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "wg"
        lost = build(root, args.packets, args.loss)
        spent = []

        def timed(*args, **kwargs):  # the match as the bundle runs it, inside the packets table's build
            t = time.perf_counter()
            out = match_wireguard(*args, **kwargs)
            spent.append(time.perf_counter() - t)
            return out

        calforensics.bundle.match_wireguard = timed
        t = time.perf_counter()
        with calforensics.open_bundle(root, workers=1) as b:
            packets = b.packets
            total = time.perf_counter() - t
            wg = b.wireguard
        match_s = spent[0]
        exact = int((wg["match"] == "exact").sum())
        ambiguous = int((wg["match"] == "ambiguous").sum())
        want = 2 * args.packets - lost
        print(
            f"{len(packets):,} frames, {len(wg):,} messages; decode + match {total:.2f} s; "
            f"match {match_s:.2f} s ({len(wg) / match_s:,.0f} messages/s); "
            f"{exact:,} exact + {ambiguous} ambiguous of {want:,} expected, {lost} missed by a capture"
        )
        assert exact + ambiguous == want and ambiguous <= 2 * lost, (exact, ambiguous, want)


if __name__ == "__main__":
    main()
