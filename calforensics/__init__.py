"""calforensics: offline forensic analysis of Kubernetes networking on Calico, from a diagnostics bundle."""

from .archive import BundleError, Limits
from .bundle import TABLES, Bundle, open_bundle

__version__ = "0.1.0"
__all__ = ["TABLES", "Bundle", "BundleError", "Limits", "open_bundle"]
