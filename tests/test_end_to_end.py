"""Raw photos to label maps: DirectSegmenter with the real extractors.

CLIP and Stable Diffusion are tiny random models saved in their real
formats (see conftest.py) and loaded through the same code as the
pretrained ones, so these tests check the plumbing (shapes, dtypes,
determinism, caching, validation order), not segmentation quality.
"""

import numpy as np
import pytest
from sklearn.base import clone

from dsolo_sk.features import DiffusionAttention, FeatureExtractor
from dsolo_sk.features import _cache
from dsolo_sk.segmenters import DirectSegmenter

CLASSES = ["person, astronaut", "cup, coffee", "cat", "background"]


@pytest.fixture(scope="module")
def sd_attention(tiny_sd_dir):
    return DiffusionAttention(tiny_sd_dir, resolution=64, device="cpu")


@pytest.fixture(scope="module")
def features(tiny_clip, sd_attention, photos):
    return FeatureExtractor(tiny_clip, sd_attention, classes=CLASSES,
                            progress=False).transform(photos)


def test_features_of_real_photos(features, photos):
    for ds, img in zip(features, photos):
        a = ds["affinity"].values
        assert a.dtype == np.float32 and (a >= 0).all()
        np.testing.assert_allclose(a.sum(1), 1, atol=1e-5)
        assert ds.sizes["patch"] == ds.sizes["row"] * ds.sizes["col"]
        assert ds["image"].shape == img.shape


@pytest.mark.parametrize("mode", ["velocity", "path"])
def test_predict_on_raw_photos(mode, tiny_clip, sd_attention, photos, features):
    seg = DirectSegmenter(mode=mode, extractor=tiny_clip, affinity=sd_attention,
                          progress=False)
    labels = seg.predict(photos, CLASSES)
    assert len(labels) == len(photos)
    for lab, img in zip(labels, photos):
        assert lab.shape == img.shape[:2] and lab.dtype == np.int64
        assert lab.min() >= 0 and lab.max() < len(CLASSES)
    # deterministic: the features computed apart give the same labels
    for a, b in zip(labels, seg.predict(features)):
        np.testing.assert_array_equal(a, b)
    # a clone, with classes as a parameter, shares the loaded models
    loads = _cache.load_count()
    [again] = clone(seg).set_params(classes=CLASSES).predict(photos[:1])
    assert _cache.load_count() == loads
    np.testing.assert_array_equal(again, labels[0])


def test_modes_without_affinity_do_not_load_sd(tiny_clip, tiny_sd_dir, photos):
    unused = DiffusionAttention(tiny_sd_dir, device="cpu", dtype="bfloat16")
    tiny_clip.compute_logits(photos[0], CLASSES)  # CLIP already loaded
    loads = _cache.load_count()
    seg = DirectSegmenter(mode="kl", extractor=tiny_clip, affinity=unused,
                          progress=False)
    labels = seg.predict(photos[:1], CLASSES)
    assert labels[0].shape == photos[0].shape[:2]
    assert _cache.load_count() == loads


@pytest.mark.parametrize("images, exc", [
    ([np.zeros((10, 10, 2), np.uint8)], ValueError),
    ([np.zeros((0, 10, 3), np.uint8)], ValueError),
    ([np.zeros((10, 10, 3), complex)], TypeError),
])
def test_bad_photos_refused_before_loading(tiny_clip_files, tiny_sd_dir,
                                           images, exc):
    from dsolo_sk.features import CLIPFeatures

    clip = CLIPFeatures(tiny_clip_files["config"], tiny_clip_files["checkpoint"],
                        device="cpu", dtype="bfloat16")
    sd = DiffusionAttention(tiny_sd_dir, device="cpu", dtype="bfloat16")
    loads = _cache.load_count()
    seg = DirectSegmenter(mode="velocity", extractor=clip, affinity=sd,
                          progress=False)
    with pytest.raises(exc):
        seg.predict(images, CLASSES)
    with pytest.raises(TypeError, match="bare string"):
        seg.predict([np.zeros((10, 10, 3), np.uint8)], "cat")
    assert _cache.load_count() == loads
