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


class PeakAnon:
    """``with PeakAnon() as peak: ...``; ``peak.now()`` is the peak growth of anonymous memory so far.

    For runs over memory-mapped files, whose RSS (and VmHWM) counts file pages the kernel may drop
    at any time: anonymous memory (RssAnon) is what the process itself holds. The kernel keeps no
    peak of it, so a thread samples it every 10 ms (a peak shorter than that can be missed).
    """

    def __enter__(self) -> PeakAnon:
        import threading

        self.start = _status("RssAnon")
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _status("RssAnon"))

    def now(self) -> int:
        self.peak = max(self.peak, _status("RssAnon"))
        return self.peak - self.start

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = self.now()
