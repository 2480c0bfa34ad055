"""The committed sample bundles (from real lab runs) read as their ground truth says."""

import json
import tarfile

import pytest
from conftest import SAMPLES
from groundtruth import DUAL_CHECKS, check_bundle

import calforensics


@pytest.mark.parametrize("name", ["lab-vxlan", "lab-ipip", "lab-ebpf", "lab-wireguard"])
def test_sample_matches_ground_truth(name):
    truth = json.loads((SAMPLES / f"{name}.ground_truth.json").read_text())
    with calforensics.open_bundle(SAMPLES / f"{name}.tgz") as b:
        check_bundle(b, truth)
        assert b.nodes == sorted(truth["nodes"])
        metas = [a for a in b.artifacts.path if a.endswith("metadata.json")]
        assert len(metas) == len(truth["nodes"])


def test_dual_stack_sample_with_an_any_capture_matches_ground_truth():
    """A real run: node-a captured with `tcpdump -i any` (SLL2) alone, IPv4 and IPv6 flows side by side."""
    truth = json.loads((SAMPLES / "lab-dual.ground_truth.json").read_text())
    with calforensics.open_bundle(SAMPLES / "lab-dual.tgz") as b:
        for check in DUAL_CHECKS:
            check(b, truth)
        said = [f["title"] for f in calforensics.analyze(b).findings["findings"] if f["kind"] == "capture_shape"]
    assert truth["any_only"] == ["node-a"] and [t.split(":")[0] for t in said] == ["node-a had only an `-i any` capture"]


def test_samples_are_small():
    for path in SAMPLES.glob("*.tgz"):
        assert path.stat().st_size < 1_000_000, path


def test_derived_samples_are_labelled_synthetic_and_vxlan_is_not():
    for name in ("lab-ipip", "lab-ebpf", "lab-wireguard"):
        truth = json.loads((SAMPLES / f"{name}.ground_truth.json").read_text())
        assert truth["synthetic"] is True and truth["synthetic_rewrites"], name
        with tarfile.open(SAMPLES / f"{name}.tgz") as tar:  # and so is every node's metadata
            metas = [m for m in tar.getmembers() if m.name.endswith("/metadata.json")]
            assert len(metas) == len(truth["nodes"])
            for m in metas:
                meta = json.loads(tar.extractfile(m).read())
                assert meta["synthetic"] is True and meta["synthetic_rewrites"] == truth["synthetic_rewrites"]
    assert "synthetic" not in json.loads((SAMPLES / "lab-vxlan.ground_truth.json").read_text())
