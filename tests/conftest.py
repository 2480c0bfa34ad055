import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
CORPUS = Path(os.environ.get("CALFORENSICS_CORPUS", ROOT.parent / "shared" / "corpus"))
REALWORLD = Path(os.environ.get("CALFORENSICS_REALWORLD", ROOT.parent / "shared" / "realworld"))
SAMPLES = ROOT / "sample_data"
SAMPLE = SAMPLES / "lab-vxlan.tgz"


def unavailable(reason: str) -> NoReturn:
    """A test whose tool or data is missing here is skipped, saying why; on CI (CI set) it fails
    instead, since there everything it needs is installed and a skip would hide a lost check."""
    if os.environ.get("CI"):
        pytest.fail(f"must run on CI, but {reason}")
    pytest.skip(reason)


@pytest.fixture
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").exists():
        unavailable(f"corpus not found at {CORPUS} (set CALFORENSICS_CORPUS)")
    return CORPUS


@pytest.fixture
def realworld() -> Path:
    """Real outputs from other people's nodes (../shared/realworld, with their provenance in MANIFEST.tsv)."""
    if not (REALWORLD / "MANIFEST.tsv").exists():
        unavailable(f"real-world outputs not found at {REALWORLD} (set CALFORENSICS_REALWORLD)")
    return REALWORLD


@pytest.fixture
def tshark() -> str:
    """tshark, which decoding is checked against (.ci/run installs it)."""
    path = shutil.which("tshark")
    if path is None:
        unavailable("tshark not installed")
    return path
