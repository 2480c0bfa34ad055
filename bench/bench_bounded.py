"""Bounded memory: decode a capture far larger than the memory it is allowed, under a hard limit.

Run: `python bench/bench_bounded.py [--packets N | --capture FILE] [--limit-mb M] [--chunk-packets K]`,
or `python bench/bench_bounded.py --join [--analyze] --flows F [--limit-mb M] [--partition-packets P]`.

The decode runs in a child process inside a memory cgroup limited to M MB (bench/memlimit.py), with
the packets table spilled to memory-mapped files (`--spill-dir`, `spill=True`). It must finish and
give the same table as an unlimited in-memory decode (checked by digests); with `--control`, the
same decode without spilling runs under the same limit and should be killed, which shows the limit
bites. With ``--join`` the bundle is bench_join's (two nodes, six capture points, NAT and VXLAN,
10 packets a flow each way seen at six points) and the child also joins it and builds its flows, in
partitions of P packets on disk; hops and flows are compared with an unlimited in-memory run. With
``--analyze`` it also runs the analyses and writes the report, and compares findings and tables.
Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def weighted_sum(col: np.ndarray, run: int) -> int:
    """Sum of value times row number (mod 2^64), in runs of rows: changes when values or their order do."""
    total = 0
    for lo in range(0, len(col), run):
        v = col[lo : lo + run].astype(np.uint64)
        total = (total + int((v * np.arange(lo + 1, lo + len(v) + 1, dtype=np.uint64)).sum(dtype=np.uint64))) % 2**64
    return total


def table_digest(packets, run: int = 1 << 20) -> dict:
    """Order-sensitive digests of a packets table, computed in runs of rows so that the digest
    itself stays within the memory limit: equal tables give equal digests."""
    out: dict = {"rows": len(packets)}
    for name in ("fingerprint", "ts_ns", "seq", "frame"):
        out[name] = weighted_sum(packets[name].to_numpy(), run)
    for name in ("src", "dst", "outer_src", "interface"):
        cat = packets[name].array
        codes = cat.codes
        total = sum(int(codes[lo : lo + run].sum(dtype=np.int64)) for lo in range(0, len(codes), run))
        out[name] = [total, list(map(str, cat.categories[:5])), len(cat.categories)]
    return out


def joined_digest(b, run: int = 1 << 20) -> dict:
    """Order-sensitive digests of a bundle's hops (in runs of rows) and of its flows table."""
    import hashlib

    hops = b.hops
    out: dict = {"hops": len(hops)}
    for name in ("instance", "packet", "point", "ts_corrected_ns", "flow_id", "direction", "copy_no"):
        values = hops[name].array
        out[name] = weighted_sum(values.codes if hasattr(values, "codes") else hops[name].to_numpy(), run)
    out["flows"] = hashlib.sha1(b.flows.to_csv(index=False).encode()).hexdigest()
    out["clock_offsets"] = hashlib.sha1(b.clock_offsets.to_csv(index=False).encode()).hexdigest()
    return out


def analysis_digest(b) -> dict:
    """Digests of the analysis: findings.json and every table the analyses add (the bundle's own
    tables are in joined_digest), the report written too (tables none)."""
    import hashlib
    import tempfile

    import calforensics

    a = calforensics.analyze(b)
    with tempfile.TemporaryDirectory() as tmp:
        calforensics.write_report(a, Path(tmp) / "report", tables="none")
    out = {"findings": hashlib.sha1(json.dumps(a.findings, sort_keys=True).encode()).hexdigest()}
    for name in ("drops", "tunnels", "flow_overhead", "mtu_issues", "latency_hops", "latency_flows"):
        out[name] = hashlib.sha1(a.tables()[name].to_csv(index=False).encode()).hexdigest()
    return out


def child(capture: str, spill_dir: str | None, chunk: int, partition: int, join: bool, analyze: bool) -> None:
    import calforensics

    t = time.perf_counter()
    spill = spill_dir is not None
    opened = calforensics.open_bundle(
        capture, spill=spill, spill_dir=spill_dir, chunk_packets=chunk, partition_packets=partition
    )
    with opened as b:
        digest = table_digest(b.packets)
        if join:
            digest["joined"] = joined_digest(b)
        if analyze:
            digest["analysis"] = analysis_digest(b)
    status = Path("/proc/self/status").read_text()
    hwm = int(status.split("VmHWM:")[1].split()[0]) * 1024
    print(json.dumps({"digest": digest, "seconds": time.perf_counter() - t, "vm_hwm": hwm}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=3_000_000)
    ap.add_argument("--capture", help="use this pcap instead of writing one")
    ap.add_argument("--limit-mb", type=int, default=400)
    ap.add_argument("--chunk-packets", type=int, default=1 << 17)
    ap.add_argument("--control", action="store_true", help="also run without spilling under the same limit")
    ap.add_argument("--join", action="store_true", help="bench_join's bundle, joined and its flows built too")
    ap.add_argument("--flows", type=int, default=20_000, help="with --join: flows in the bundle")
    ap.add_argument("--analyze", action="store_true", help="with --join: run the analyses and the report too")
    ap.add_argument("--partition-packets", type=int, default=1 << 21)
    ap.add_argument("--child", nargs=2, metavar=("CAPTURE", "SPILL_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spill = None if args.child[1] == "-" else args.child[1]
        child(args.child[0], spill, args.chunk_packets, args.partition_packets, args.join, args.analyze)
        return
    sys.path.insert(0, str(HERE))
    from bench_ingest import write_capture
    from memlimit import available, run_limited

    import calforensics

    if not available():
        sys.exit("bench_bounded: needs a writable memory cgroup (Linux, root)")
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(args.capture) if args.capture else Path(tmp) / "big.pcap"
        if args.join and not args.capture:
            from bench_join import write_bundle

            capture = Path(tmp) / "bundle"
            write_bundle(capture, args.flows, 10)
        elif not args.capture:
            write_capture(capture, args.packets)
        size = sum(p.stat().st_size for p in capture.rglob("*.pcap")) if capture.is_dir() else capture.stat().st_size
        limit = args.limit_mb << 20
        print(f"capture: {size / 1e6:,.0f} MB; memory limit {args.limit_mb} MB")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--chunk-packets", str(args.chunk_packets)]
        cmd += ["--partition-packets", str(args.partition_packets), *(["--join"] if args.join else [])]
        cmd += [*(["--analyze"] if args.analyze else []), "--child"]
        run = run_limited([*cmd, str(capture), str(Path(tmp) / "spill")], limit, timeout=7200)
        if run.returncode != 0:
            print(f"spilled run FAILED under the limit (oom={run.oom_killed}): {run.stderr.strip()[-500:]}")
            sys.exit(1)
        got = json.loads(run.stdout.strip().splitlines()[-1])
        rows = got["digest"]["rows"]
        what = "spilled decode" + (", join and flows" if args.join else "")
        what += ", analyses, report" if args.analyze else ""
        print(
            f"{what}:   {rows:,} packets in {got['seconds']:.1f} s ({rows / got['seconds']:,.0f} packets/s) "
            f"under {args.limit_mb} MB; "
            f"cgroup peak {run.peak_bytes / 2**20:,.0f} MB (page cache included), "
            f"process peak RSS {got['vm_hwm'] / 2**20:,.0f} MB (mapped file pages included)"
        )
        table_mb = rows * 173 / 2**20
        print(f"for scale:        the table is ~{table_mb:,.0f} MB, the capture {size / 2**20:,.0f} MB")
        if args.control:
            # without spilling, the table alone is over the limit: the kernel kills it, or it thrashes on
            # refaulting the capture's pages until the time limit
            try:
                ctl = run_limited([*cmd, str(capture), "-"], limit, timeout=max(60.0, 5 * got["seconds"]))
                print(f"control (no spill), same limit: exit {ctl.returncode}, killed by OOM: {ctl.oom_killed}")
            except subprocess.TimeoutExpired:
                print("control (no spill), same limit: did not finish in 5x the spilled time (thrashing)")
        if rows <= 5_000_000:
            with calforensics.open_bundle(capture, spill=False) as b:
                expected = table_digest(b.packets)
                if args.join:
                    expected["joined"] = joined_digest(b)
                if args.analyze:
                    expected["analysis"] = analysis_digest(b)
            same = expected == got["digest"]
            print(f"same tables as an unlimited in-memory run: {same}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
