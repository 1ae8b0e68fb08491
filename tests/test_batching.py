"""Batched feature extraction (FeatureExtractor(batch_size=...)) equals the
per-image path, with the tiny random CLIP and Stable Diffusion models."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone

from dsolo_sk.features import (CLIPFeatures, DiffusionAttention,
                               FeatureExtractor)

CLASSES = ["sky, cloud", "cat", "road"]


def _images():
    """Mixed sizes, with runs of equal sizes broken by other sizes."""
    rng = np.random.default_rng(0)
    shapes = [(48, 64), (48, 64), (48, 64), (64, 48), (48, 64), (64, 48),
              (64, 48)]
    return [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in shapes]


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return DiffusionAttention(tiny_sd_dir, resolution=32, up_blocks=(0, 1),
                              device="cpu")


def _assert_same(a, b):
    assert len(a) == len(b)
    for da, db in zip(a, b):
        assert set(da.data_vars) == set(db.data_vars)
        for name in da.data_vars:
            np.testing.assert_allclose(da[name].values, db[name].values,
                                       rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(da["image"].values, db["image"].values)
        np.testing.assert_array_equal(da["query_class"].values,
                                      db["query_class"].values)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_clip_and_sd_batched_equal_per_image(tiny_clip, sd, batch_size):
    images = _images()
    fe = FeatureExtractor(logits=tiny_clip, affinity=sd, classes=CLASSES,
                          progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fe.transform(images)
        out = clone(fe).set_params(batch_size=batch_size).transform(images)
    _assert_same(out, ref)
    assert out[3]["logits"].shape == (3, 11, 8)


class _Recording:
    """Wraps an extractor's methods and records how they are called."""

    def __init__(self, inner, batch):
        self.inner = inner
        self.calls = []
        if batch:
            self.compute_logits_batch = self._logits_batch
            self.compute_affinity_batch = self._affinity_batch

    def compute_logits(self, image, classes):
        self.calls.append(1)
        return self.inner.compute_logits(image, classes)

    def compute_affinity(self, image, grid_shape):
        self.calls.append(1)
        return self.inner.compute_affinity(image, grid_shape)

    def _logits_batch(self, images, classes):
        self.calls.append(len(images))
        return self.inner.compute_logits_batch(images, classes)

    def _affinity_batch(self, images, grid_shape):
        self.calls.append(len(images))
        return self.inner.compute_affinity_batch(images, grid_shape)


@pytest.mark.parametrize("batch_size, sizes", [
    (1, [1] * 7), (2, [2, 1, 1, 1, 2]), (3, [3, 1, 1, 2])])
def test_chunks_are_consecutive_same_size_runs(tiny_clip, sd, batch_size,
                                               sizes):
    images = _images()
    clip = _Recording(tiny_clip, batch=True)
    aff = _Recording(sd, batch=True)
    fe = FeatureExtractor(logits=clip, affinity=aff, classes=CLASSES,
                          progress=False, batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fe.transform(images)
        ref = FeatureExtractor(logits=tiny_clip, affinity=sd, classes=CLASSES,
                               progress=False).transform(images)
    assert clip.calls == sizes and aff.calls == sizes
    for da, db in zip(out, ref):
        np.testing.assert_allclose(da["logits"].values, db["logits"].values,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(da["affinity"].values,
                                   db["affinity"].values, rtol=1e-5, atol=1e-6)


def test_user_extractors_without_batch_methods(tiny_clip, sd):
    images = _images()
    clip = _Recording(tiny_clip, batch=False)
    aff = _Recording(sd, batch=False)
    fe = FeatureExtractor(logits=clip, affinity=aff, classes=CLASSES,
                          progress=False, batch_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fe.transform(images)
        ref = FeatureExtractor(logits=tiny_clip, affinity=sd, classes=CLASSES,
                               progress=False).transform(images)
    assert clip.calls == [1] * 7 and aff.calls == [1] * 7
    for da, db in zip(out, ref):
        np.testing.assert_array_equal(da["logits"].values, db["logits"].values)
        np.testing.assert_array_equal(da["affinity"].values,
                                      db["affinity"].values)


def test_clip_batch_methods_mixed_sizes(tiny_clip):
    images = _images()
    fresh = clone(tiny_clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = fresh.compute_query_logits_batch(images, CLASSES)
        logits = fresh.compute_logits_batch(images, CLASSES)
        for img, (q, owner), lg in zip(images, batch, logits):
            q1, owner1 = clone(tiny_clip).set_params(
                text_batch_size=7).compute_query_logits(img, CLASSES)
            np.testing.assert_allclose(q, q1, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(owner, owner1)
            np.testing.assert_array_equal(
                lg, np.stack([np.maximum(q[0], q[1]), q[2], q[3]]))


def test_sd_batch_keeps_per_image_maps(sd):
    """Two different images in one batch: each gets its own attention."""
    images = _images()
    batch = sd.compute_affinity_batch(images[:3], (6, 8))
    for img, a in zip(images[:3], batch):
        np.testing.assert_allclose(a, sd.compute_affinity(img, (6, 8)),
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(batch[0], batch[1], atol=1e-4)


@pytest.mark.parametrize("bad, err", [(0, ValueError), (1.5, TypeError),
                                      (float("nan"), TypeError),
                                      (True, TypeError)])
def test_batch_size_validated(bad, err):
    fe = FeatureExtractor(logits=CLIPFeatures(), affinity=False,
                          classes=["a", "b"], batch_size=bad)
    with pytest.raises(err, match="batch_size"):
        fe.fit()
    with pytest.raises(err, match="batch_size"):
        fe.transform([np.zeros((8, 8, 3), np.uint8)])


def test_models_see_one_forward_per_same_size_chunk(tiny_clip, sd):
    """The image tower and the UNet each run once per chunk, on the whole
    chunk (forward hooks on the real modules)."""
    images = _images()
    clip = clone(tiny_clip).set_params(text_batch_size=5)  # no cached results
    seen = {"clip": [], "unet": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visual = clip._load().model.visual
        unet = sd._load().unet
    hooks = [visual.transformer.register_forward_hook(
                 lambda m, a, o: seen["clip"].append(a[0].shape[0])),
             unet.conv_in.register_forward_hook(
                 lambda m, a, o: seen["unet"].append(a[0].shape[0]))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            FeatureExtractor(logits=clip, affinity=sd, classes=CLASSES,
                             progress=False, batch_size=3).transform(images)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"clip": [3, 1, 1, 2], "unet": [3, 1, 1, 2]}
