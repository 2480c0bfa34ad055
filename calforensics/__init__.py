"""calforensics: offline forensic analysis of Kubernetes networking on Calico, from a diagnostics bundle."""

__version__ = "0.1.0"

from .analyses import Analysis, analyze
from .archive import BundleError, Limits
from .bundle import TABLES, Bundle, open_bundle
from .report import write_report

__all__ = ["TABLES", "Analysis", "Bundle", "BundleError", "Limits", "analyze", "open_bundle", "write_report"]
