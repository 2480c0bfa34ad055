import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
CORPUS = Path(os.environ.get("CALFORENSICS_CORPUS", ROOT.parent / "shared" / "corpus"))
SAMPLES = ROOT / "sample_data"
SAMPLE = SAMPLES / "lab-vxlan.tgz"


@pytest.fixture
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").exists():
        pytest.skip(f"corpus not found at {CORPUS} (set CALFORENSICS_CORPUS)")
    return CORPUS
