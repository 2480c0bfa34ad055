"""calforensics: offline forensic analysis of Kubernetes networking on Calico, from a diagnostics bundle.

The pipeline, one folder a stage: ingest/ (bundle to raw tables) -> meaning/ (what node state means)
-> join/ (one packet at every capture point; flows) -> analyses/ (drops, overhead, latency) -> render/
(the report). runtime/ runs the work and collect/ writes bundles; bundle.py is the façade over the
first three stages; schema.py and anomalies.py are shared by all.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from .version import __version__ as __version__

# where each public name lives; imported on first use (PEP 562), so `import calforensics.cli` and
# `calforensics --help` do not load pandas, numba and matplotlib
_PUBLIC = {
    "TABLES": "bundle",
    "Analysis": "analyses",
    "Bundle": "bundle",
    "BundleError": "ingest.archive",
    "Limits": "ingest.archive",
    "analyze": "analyses",
    "diff": "analyses.diff",
    "write_diff": "render.diff",
    "open_bundle": "bundle",
    "write_report": "render.report",
}
__all__ = [
    "TABLES",
    "Analysis",
    "Bundle",
    "BundleError",
    "Limits",
    "analyze",
    "diff",
    "open_bundle",
    "write_diff",
    "write_report",
]

if TYPE_CHECKING:
    from .analyses import Analysis, analyze
    from .analyses.diff import diff
    from .bundle import TABLES, Bundle, open_bundle
    from .ingest.archive import BundleError, Limits
    from .render.diff import write_diff
    from .render.report import write_report


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'calforensics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
