"""The node collector: captures and state dumps written in our bundle layout (docs/bundle-layout.md).

Run as root on a node, or inside a network namespace (`netns`). It only reads: captures with
tcpdump, then dumps conntrack, iptables/nft, iproute2, sysctls and Calico BPF state. Nothing is
sent anywhere and no setting is changed. A missing tool is recorded in the metadata, never fatal.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..version import __version__

RING_BLOCK_TIMEOUT_S = 1.2  # libpcap hands a partly filled ring block to tcpdump after 1 s (its timeout)
TUNNEL_DEVICES = ("tunl0", "vxlan.calico", "vxlan-v6.calico", "wireguard.cali", "wg-v6.cali")
# (file, argv) run after the capture; output is the command's stdout, stderr goes to the metadata
STATE_COMMANDS: list[tuple[str, list[str]]] = [
    ("iptables-legacy-save.txt", ["iptables-legacy-save", "-c"]),
    ("iptables-nft-save.txt", ["iptables-nft-save", "-c"]),
    ("ip6tables-legacy-save.txt", ["ip6tables-legacy-save", "-c"]),
    ("ip6tables-nft-save.txt", ["ip6tables-nft-save", "-c"]),
    ("nft-ruleset.txt", ["nft", "-n", "-a", "list", "ruleset"]),
    ("conntrack-list.txt", ["conntrack", "-L", "-o", "extended,id"]),
    ("conntrack-list-v6.txt", ["conntrack", "-L", "-f", "ipv6", "-o", "extended,id"]),  # -L alone: IPv4 only
    ("ip-link.txt", ["ip", "-d", "link", "show"]),
    ("ip-addr.txt", ["ip", "addr", "show"]),
    ("ip-route.txt", ["ip", "route", "show", "table", "all"]),
    ("ip-route-v6.txt", ["ip", "-6", "route", "show", "table", "all"]),
    ("ip-rule.txt", ["ip", "rule", "show"]),
    ("ip-neigh.txt", ["ip", "neigh", "show"]),
]
SYSCTLS = [
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
    "net.netfilter.nf_conntrack_acct",
    "net.netfilter.nf_conntrack_timestamp",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.tcp_mtu_probing",
]
CALICO_BPF = [
    ("conntrack dump", "bpf-conntrack"),
    ("nat dump", "bpf-nat"),
    ("routes dump", "bpf-routes"),
    ("counters dump", "bpf-counters"),
    ("ifstate dump", "bpf-ifstate"),
    ("arp dump", "bpf-arp"),
]
VERSION_COMMANDS = {
    "tcpdump": ["tcpdump", "--version"],
    "conntrack": ["conntrack", "--version"],
    "iptables": ["iptables", "--version"],
    "nft": ["nft", "--version"],
    "ip": ["ip", "-V"],
    "bpftool": ["bpftool", "version"],
    "calico-node": ["calico-node", "-v"],
}
TCPDUMP_STATS = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel)")


class CollectError(Exception):
    """The collector cannot run at all (e.g. the network namespace does not exist)."""


@dataclass
class CollectOptions:
    out: Path  # bundle directory (created); the node's files go to out/nodes/<node>/
    node: str | None = None  # default: the netns name, else the hostname
    netns: str | None = None
    interfaces: list[str] | None = None  # default: cali*, tunnels, the uplink
    any_interface: bool = False  # also capture `-i any` (Linux cooked SLL2)
    duration: float | None = None  # seconds; None = until stop() / Ctrl-C
    events: bool = False  # also record `conntrack -E` during the capture
    snaplen: int = 0  # 0 = whole packets


@dataclass
class _Capture:
    iface: str
    path: Path
    proc: subprocess.Popen
    stderr: list[str] = field(default_factory=list)
    listening: threading.Event = field(default_factory=threading.Event)


class Collector:
    """Start captures, stop them, dump state, write metadata. `collect()` does all four."""

    def __init__(self, opts: CollectOptions) -> None:
        self.opts = opts
        if opts.netns and not (Path("/run/netns") / opts.netns).exists():
            raise CollectError(f"network namespace {opts.netns!r} does not exist")
        self.node = opts.node or opts.netns or platform.node() or "node"
        self.dir = Path(opts.out) / "nodes" / self.node
        self.meta: dict = {
            "collector": f"calforensics collect {__version__}",
            "node": self.node,
            "netns": opts.netns or "",
            "synthetic": False,
            "commands": [],
            "missing_tools": [],
        }
        self.captures: list[_Capture] = []
        self.events: subprocess.Popen | None = None

    # ---- running commands, optionally inside the namespace ---------------------------------------
    def _argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.opts.netns, *argv] if self.opts.netns else argv

    def _have(self, tool: str) -> bool:
        if shutil.which(tool):
            return True
        if tool not in self.meta["missing_tools"]:
            self.meta["missing_tools"].append(tool)
        return False

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess | None:
        if not self._have(argv[0]):
            return None
        try:
            return subprocess.run(self._argv(argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.meta["commands"].append({"argv": argv, "error": str(exc)})
            return None

    def _dump(self, name: str, argv: list[str]) -> None:
        r = self.run(argv)
        entry = {"file": name, "argv": argv}
        if r is None:
            entry["missing"] = not shutil.which(argv[0])
        else:
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_bytes(r.stdout)
            entry.update(exit_code=r.returncode, stderr=r.stderr.decode(errors="replace")[-2000:])
        self.meta["commands"].append(entry)

    # ---- capture ---------------------------------------------------------------------------------
    def discover_interfaces(self) -> list[str]:
        """cali* workload veths, Calico tunnel devices, and the uplink (the default route's device)."""
        r = self.run(["ip", "-o", "link", "show"])
        names = []
        for line in r.stdout.decode(errors="replace").splitlines() if r else []:
            m = re.match(r"^\d+:\s+([^:@\s]+)", line)
            if m:
                names.append(m.group(1))
        chosen = [n for n in names if n.startswith("cali") or n in TUNNEL_DEVICES]
        r = self.run(["ip", "-4", "route", "show", "default"])
        m = re.search(r"\bdev (\S+)", r.stdout.decode(errors="replace")) if r else None
        uplink = m.group(1) if m else ""
        if not uplink:  # no default route (a lab node): the first addressed non-Calico interface
            r = self.run(["ip", "-o", "-4", "addr", "show", "scope", "global"])
            for line in r.stdout.decode(errors="replace").splitlines() if r else []:
                dev = line.split()[1]
                if not dev.startswith("cali") and dev not in TUNNEL_DEVICES:
                    uplink = dev
                    break
        if uplink and uplink not in chosen:
            chosen.append(uplink)
        return chosen

    def start(self) -> None:
        if not self._have("tcpdump"):
            raise CollectError("tcpdump is not installed; cannot capture")
        (self.dir / "pcaps").mkdir(parents=True, exist_ok=True)
        ifaces = list(self.opts.interfaces or self.discover_interfaces())
        if self.opts.any_interface:
            ifaces.append("any")
        self.meta["capture"] = {"start_ns": time.time_ns(), "start_monotonic_ns": time.monotonic_ns(), "interfaces": []}
        for iface in ifaces:
            path = self.dir / "pcaps" / f"{iface}.pcap"
            argv = [
                "tcpdump",
                "-i",
                iface,
                "-n",
                "-s",
                str(self.opts.snaplen),
                "-U",
                "-Z",
                "root",
                "--time-stamp-precision=nano",
                "-w",
                str(path),
            ]
            proc = subprocess.Popen(
                self._argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            cap = _Capture(iface, path, proc)
            threading.Thread(target=self._watch, args=(cap,), daemon=True).start()
            self.captures.append(cap)
        if self.opts.events and self._have("conntrack"):
            out = open(self.dir / "conntrack-events.txt", "wb")  # noqa: SIM115 - closed in stop()
            self.events = subprocess.Popen(
                self._argv(["conntrack", "-E", "-o", "timestamp,extended,id"]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
            self._events_file = out
        deadline = time.monotonic() + 10
        for cap in self.captures:  # tcpdump says "listening on" once the socket is open
            cap.listening.wait(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def _watch(cap: _Capture) -> None:
        assert cap.proc.stderr is not None
        for line in cap.proc.stderr:
            cap.stderr.append(line.rstrip())
            if "listening on" in line:
                cap.listening.set()
        cap.listening.set()  # ended (or failed): nobody should wait longer

    def stop(self) -> None:
        # tcpdump gets its packets a ring block at a time, a block handed over when full or after its
        # timeout (1 s): a packet of the last second would still be in the kernel when tcpdump is
        # interrupted, counted as received but never written. So the window ends now, and the
        # captures a little over a block timeout later. (--immediate-mode would hand each packet
        # over at once, but through one ring frame per snap length: a 2 MiB buffer holds seven, and
        # an `-i any` capture's bursts overflow it.)
        stop_ns, stop_monotonic_ns = time.time_ns(), time.monotonic_ns()
        if any(cap.proc.poll() is None for cap in self.captures):
            time.sleep(RING_BLOCK_TIMEOUT_S)
        for cap in self.captures:
            if cap.proc.poll() is None:
                cap.proc.send_signal(signal.SIGINT)
        for cap in self.captures:
            try:
                cap.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cap.proc.kill()
                cap.proc.wait()
        if self.events is not None:
            self.events.send_signal(signal.SIGINT)
            try:
                self.events.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.events.kill()
            self._events_file.close()
        capture = self.meta.setdefault("capture", {})
        capture["stop_ns"] = stop_ns
        capture["stop_monotonic_ns"] = stop_monotonic_ns
        for cap in self.captures:
            time.sleep(0.05)  # let the stderr reader see tcpdump's closing statistics
            stats = {kind: int(n) for n, kind in TCPDUMP_STATS.findall("\n".join(cap.stderr))}
            capture["interfaces"].append(
                {
                    "name": cap.iface,
                    "file": f"pcaps/{cap.path.name}",
                    "exit_code": cap.proc.returncode,
                    "packets_captured": stats.get("captured", -1),
                    "received_by_filter": stats.get("received by filter", -1),
                    "dropped_by_kernel": stats.get("dropped by kernel", -1),
                    "stderr": [x for x in cap.stderr if "packets" not in x][-5:],
                }
            )

    # ---- state -----------------------------------------------------------------------------------
    def dump_state(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, argv in STATE_COMMANDS:
            self._dump(name, argv)
        r = self.run(["sysctl", *SYSCTLS])
        if r is not None:
            (self.dir / "sysctls.txt").write_bytes(r.stdout)
        if shutil.which("calico-node"):
            for sub, stem in CALICO_BPF:
                r = self.run(["calico-node", "-bpf", *sub.split(), "--json"])
                if r is not None and r.returncode == 0:
                    (self.dir / f"{stem}.json").write_bytes(r.stdout)
                else:
                    self._dump(f"{stem}.txt", ["calico-node", "-bpf", *sub.split()])
        if shutil.which("bpftool"):
            self._dump("bpf-prog.txt", ["bpftool", "prog", "list"])
            self._dump("bpf-maps.txt", ["bpftool", "map", "list"])
            listing = (
                (self.dir / "bpf-maps.txt").read_text(errors="replace") if (self.dir / "bpf-maps.txt").exists() else ""
            )
            for map_id, name in re.findall(r"^(\d+):.*name (cali\w+)", listing, re.M):
                self._dump(f"bpf-maps/{name}-id_{map_id}.txt", ["bpftool", "map", "dump", "id", map_id])

    def write_metadata(self) -> None:
        self.meta["hostname"] = platform.node()
        self.meta["kernel"] = platform.release()
        try:
            self.meta["clock_source"] = (
                Path("/sys/devices/system/clocksource/clocksource0/current_clocksource").read_text().strip()
            )
        except OSError:
            self.meta["clock_source"] = ""
        tools = {}
        for tool, argv in VERSION_COMMANDS.items():
            if shutil.which(argv[0]):
                try:
                    r = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
                    tools[tool] = (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else ""
                except (OSError, subprocess.TimeoutExpired):
                    tools[tool] = ""
        self.meta["tools"] = tools
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "metadata.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")


def collect(opts: CollectOptions, stop: threading.Event | None = None) -> Path:
    """Capture until ``opts.duration`` passes, ``stop`` is set, or Ctrl-C; then dump state. Returns the node dir."""
    c = Collector(opts)
    c.start()
    try:
        if opts.duration is not None:
            (stop or threading.Event()).wait(opts.duration)
        elif stop is not None:
            stop.wait()
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
        c.dump_state()
        c.write_metadata()
    return c.dir


def pack(directory: Path, archive: Path) -> Path:
    """Write a bundle directory as a .tgz whose single top-level folder is the bundle's name."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file():
                tar.add(path, arcname=f"{archive.name.split('.')[0]}/{path.relative_to(directory).as_posix()}")
    return archive


def require_root() -> None:
    if os.geteuid() != 0:
        raise CollectError("collect must run as root (tcpdump, conntrack and iptables-save need it)")
