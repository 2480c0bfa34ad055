"""calforensics: offline forensic analysis of Kubernetes networking on Calico, from a diagnostics bundle."""

__version__ = "0.1.0"

from importlib import import_module
from typing import TYPE_CHECKING

# where each public name lives; imported on first use (PEP 562), so `import calforensics.cli` and
# `calforensics --help` do not load pandas, numba and matplotlib
_PUBLIC = {
    "TABLES": "bundle",
    "Analysis": "analyses",
    "Bundle": "bundle",
    "BundleError": "archive",
    "Limits": "archive",
    "analyze": "analyses",
    "open_bundle": "bundle",
    "write_report": "report",
}
__all__ = ["TABLES", "Analysis", "Bundle", "BundleError", "Limits", "analyze", "open_bundle", "write_report"]

if TYPE_CHECKING:
    from .analyses import Analysis, analyze
    from .archive import BundleError, Limits
    from .bundle import TABLES, Bundle, open_bundle
    from .report import write_report


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'calforensics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
