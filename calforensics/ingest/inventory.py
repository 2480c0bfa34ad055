"""The bundle inventory: what `calforensics inspect` prints, as plain data (also for `--json`)."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

LINE_SKIP_KINDS = {"unparsed_line", "unparsed_element", "bad_entry", "bad_xml", "bad_json", "lookup_error"}


def _iso(ns: int) -> str:
    if ns < 0:
        return ""
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def inventory(
    name: str,
    nodes: list[str],
    caps: pd.DataFrame,
    arts: pd.DataFrame,
    anomalies: pd.DataFrame,
    dataplane: pd.DataFrame,
    frames_skipped: int,
) -> dict:
    """Everything found in the bundle, how much of it was read, and what was not (`Bundle.inventory`
    gathers the tables once they are read)."""
    by_kind = (
        anomalies.groupby(["source", "kind"], observed=True)
        .size()
        .reset_index(name="count")
        .sort_values(["count", "source", "kind"], ascending=[False, True, True])
    )
    return {
        "bundle": name,
        "nodes": nodes,
        "dataplane": [
            {c: (str(v) if not isinstance(v, int) else v) for c, v in r._asdict().items()}
            for r in dataplane.itertuples(index=False)
        ],
        "captures": [
            {
                "node": r.node,
                "interface": r.interface,
                "role": r.role,
                "linktype": r.linktype_name,
                "container": r.container,
                "packets": int(r.packets),
                "start_ns": int(r.first_ns),
                "end_ns": int(r.last_ns),
                "start": _iso(int(r.first_ns)),
                "duration_s": (r.last_ns - r.first_ns) / 1e9 if r.first_ns >= 0 else None,
                "artifact": r.artifact,
            }
            for r in caps.itertuples(index=False)
        ],
        "artifacts": [
            {
                "path": r.path,
                "node": r.node,
                "kind": r.kind,
                "form": str(r.form),
                "size": int(r.size),
                "rows": int(r.rows),
                "anomalies": int(r.anomalies),
                "status": r.status,
                "detail": r.detail,
            }
            for r in arts.itertuples(index=False)
        ],
        "artifact_kinds": {str(k): int(v) for k, v in arts["kind"].value_counts().items() if v},
        "anomalies": {
            "total": len(anomalies),
            "by_kind": [
                {"source": str(r.source), "kind": str(r.kind), "count": int(r.count)}
                for r in by_kind.itertuples(index=False)
            ],
        },
        "skipped": {
            "artifacts_parsed": int((arts["status"].isin(["parsed", "no_data"])).sum()),
            "artifacts_unrecognised": int((arts["kind"] == "unrecognised").sum()),
            "artifacts_refused": int(anomalies["kind"].astype(str).str.endswith("_refused").sum()),
            "lines_skipped": int(anomalies["kind"].astype(str).isin(LINE_SKIP_KINDS).sum()),
            "frames_skipped": int(frames_skipped),
        },
    }
