"""Dask runs: two worker processes give the single-process confusion matrix."""

import os

import numpy as np
import pytest

from dsolo_sk.datasets import load_dataset, write_fake_dataset
from dsolo_sk.distributed import evaluate_distributed, worker_model_loads
from dsolo_sk.evaluation import evaluate
from dsolo_sk.protocols import get_protocol

MODE = os.environ.get("DSOLO_SK_TEST_MODE", "velocity")


@pytest.fixture
def segmenter(tiny_clip_files):
    from dsolo_sk.features import CLIPFeatures, ColorPositionAffinity
    from dsolo_sk.segmenters import DirectSegmenter

    clip = CLIPFeatures(tiny_clip_files["config"],
                        tiny_clip_files["checkpoint"], device="cpu",
                        templates=["a photo of a {}.", "{}"])
    return DirectSegmenter(mode=MODE, extractor=clip,
                           affinity=ColorPositionAffinity(), progress=False)


def test_two_dask_workers_give_the_identical_matrix(segmenter, tmp_path):
    from distributed import Client, LocalCluster

    root = write_fake_dataset("voc21", tmp_path / "data", n_images=6,
                              size=(30, 40), seed=2)
    ds = load_dataset("voc21", root)
    protocol = get_protocol("voc21", short_side=48)
    local = evaluate(segmenter, ds, protocol=protocol, progress=False)
    assert local.confusion_matrix.sum() > 0
    out = tmp_path / "out"
    # Start locally, finish on Dask: the output folder is shared.
    evaluate(segmenter, ds, protocol=protocol, out=out, limit=1,
             progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, \
            Client(cluster) as client:
        res = evaluate_distributed(segmenter, ds, client=client,
                                   protocol=protocol, out=out,
                                   progress=False)
        loads = worker_model_loads(client)
    assert res.n_computed == 5
    np.testing.assert_array_equal(res.confusion_matrix,
                                  local.confusion_matrix)
    # Two worker processes, each loading the CLIP model at most once.
    assert len(loads) == 2
    clip_loads = [n for per_worker in loads.values()
                  for key, n in per_worker.items() if "clip" in key.lower()]
    assert clip_loads and all(n == 1 for n in clip_loads)
    assert len(os.listdir(out / "per_image")) == 6
