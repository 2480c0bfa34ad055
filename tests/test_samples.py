"""The committed sample bundles (from real lab runs) read as their ground truth says."""

import json

import pytest
from conftest import SAMPLES
from groundtruth import check_bundle

import calforensics


@pytest.mark.parametrize("name", ["lab-vxlan", "lab-ipip"])
def test_sample_matches_ground_truth(name):
    truth = json.loads((SAMPLES / f"{name}.ground_truth.json").read_text())
    with calforensics.open_bundle(SAMPLES / f"{name}.tgz") as b:
        check_bundle(b, truth)
        assert b.nodes == sorted(truth["nodes"])
        metas = [a for a in b.artifacts.path if a.endswith("metadata.json")]
        assert len(metas) == len(truth["nodes"])


def test_samples_are_small():
    for path in SAMPLES.glob("*.tgz"):
        assert path.stat().st_size < 1_000_000, path


def test_ipip_sample_is_labelled_synthetic_and_vxlan_is_not():
    assert json.loads((SAMPLES / "lab-ipip.ground_truth.json").read_text())["synthetic"] is True
    assert "synthetic" not in json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
