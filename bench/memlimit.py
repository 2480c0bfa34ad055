"""Run a command under a hard memory limit (a Linux memory cgroup), to show that memory is bounded.

A memory cgroup charges anonymous memory *and* the page cache its processes use, but reclaims
clean and written-back file pages under its limit: a program whose own memory is bounded runs on
under a limit far below the files it maps, and one that is not is killed by the kernel (OOM). That
is a stronger check than sampling RSS, which counts mapped file pages the kernel could drop.
Works with cgroup v1 (memory controller) and v2; needs root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LimitedRun:
    returncode: int
    stdout: str
    stderr: str
    oom_killed: bool
    peak_bytes: int  # the cgroup's peak charge (page cache included)
    limit_hits: int  # times the charge reached the limit and the kernel had to reclaim


def _own_memory_cgroup() -> tuple[Path, int] | None:
    """(a directory where a child cgroup can be made, cgroup version), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (base / "memory.limit_in_bytes").exists():
                return base, 1
    for line in lines:
        if line.startswith("0::"):
            base = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
            controllers = base / "cgroup.controllers"
            if controllers.exists() and "memory" in controllers.read_text().split():
                return base, 2
    return None


def available() -> bool:
    found = _own_memory_cgroup()
    return found is not None and os.access(found[0], os.W_OK)


def run_limited(cmd: list[str], limit_bytes: int, timeout: float = 600, env: dict | None = None) -> LimitedRun:
    """Run ``cmd`` in a fresh memory cgroup limited to ``limit_bytes``; the cgroup is removed after."""
    found = _own_memory_cgroup()
    if found is None:
        raise RuntimeError("no writable memory cgroup here")
    base, version = found
    group = base / f"calforensics-limit-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        if version == 1:
            (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap = group / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(limit_bytes))  # no escape into swap either
        else:
            (group / "memory.max").write_text(str(limit_bytes))
            (group / "memory.swap.max").write_text("0")
        procs = group / "cgroup.procs"

        def enter() -> None:  # runs in the child between fork and exec
            procs.write_text(str(os.getpid()))

        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=enter, env=env, check=False
        )
        if version == 1:
            peak = int((group / "memory.max_usage_in_bytes").read_text())
            oom = "oom_kill 1" in (group / "memory.oom_control").read_text() or proc.returncode == -9
            hits = int((group / "memory.failcnt").read_text())
        else:
            peak_file = group / "memory.peak"
            peak = int(peak_file.read_text()) if peak_file.exists() else -1
            events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
            oom, hits = int(events.get("oom_kill", 0)) > 0, int(events.get("max", 0))
        return LimitedRun(proc.returncode, proc.stdout, proc.stderr, oom, peak, hits)
    finally:
        _remove(group)


def _remove(group: Path) -> None:
    """Kill what is left in the cgroup (a timed-out run's worker processes, say), then remove it."""
    for _ in range(50):
        pids = (group / "cgroup.procs").read_text().split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)
    group.rmdir()
