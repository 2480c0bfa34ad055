"""The example notebook runs top to bottom against the sample bundle, so it cannot rot."""

import nbformat
from conftest import ROOT
from nbclient import NotebookClient


def test_explore_notebook_executes():
    path = ROOT / "notebooks" / "explore.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # path diagram, drops over time, latency CDF
    text = " ".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "default/web:http" in text and "end_of_tier" in text
