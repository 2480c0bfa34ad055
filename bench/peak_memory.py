"""Peak resident memory of a stretch of code, measured by the kernel (Linux).

``ru_maxrss`` is the peak of the whole process so far, so anything measured after a larger earlier
peak (the dpkt loop, say) looks free. Writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to
the current RSS; the growth is then VmHWM at the end minus VmRSS at the start.
"""

from __future__ import annotations

from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakGrowth:
    """``with PeakGrowth() as peak: ...``; then ``peak.bytes`` is the peak RSS growth inside the block."""

    def __enter__(self) -> PeakGrowth:
        Path("/proc/self/clear_refs").write_text("5")
        self.start = _status("VmRSS")
        self.bytes = 0
        return self

    def now(self) -> int:
        """Peak growth so far (callable inside the block)."""
        return _status("VmHWM") - self.start

    def __exit__(self, *exc: object) -> None:
        self.bytes = self.now()
