"""Anomalies: everything we could not read, or read but found wrong, with where and why.

Bad input never crashes a parser and never disappears: each parser appends to an
``AnomalyLog`` and keeps going. The bundle concatenates all logs into the ``anomalies`` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

ANOMALY_COLUMNS = ["source", "artifact", "node", "location", "kind", "detail"]


@dataclass
class AnomalyLog:
    """Collects anomaly rows for one artifact (file) parsed by one parser."""

    source: str  # parser / format name, e.g. "pcap", "conntrack"
    artifact: str = ""  # path of the file inside the bundle
    node: str = ""
    rows: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)

    def add(self, location: str | int, kind: str, detail: str = "") -> None:
        """Record one anomaly. ``location`` is e.g. ``line 12`` or ``frame 7``."""
        if isinstance(location, int):
            location = f"line {location}"
        self.rows.append((self.source, self.artifact, self.node, str(location), kind, detail[:500]))

    def extend_frames(self, frames: list[int], kinds: list[str], details: list[str] | None = None) -> None:
        """Bulk-add per-frame anomalies (from the vectorised packet decoder)."""
        details = details or [""] * len(frames)
        for fr, kind, det in zip(frames, kinds, details, strict=True):
            self.rows.append((self.source, self.artifact, self.node, f"frame {fr}", kind, det))

    def __len__(self) -> int:
        return len(self.rows)


def anomalies_frame(rows: list[tuple[str, ...]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=ANOMALY_COLUMNS)
    for col in ("source", "kind", "node"):
        df[col] = df[col].astype("category")
    return df
