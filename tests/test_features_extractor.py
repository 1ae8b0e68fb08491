"""FeatureExtractor: images in, contract Datasets out, sklearn behaviour."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)
from sklearn.utils.validation import check_is_fitted

from dsolo_sk.features import CLIPFeatures, check_features
from dsolo_sk.features import _cache
from dsolo_sk.features.extractor import FeatureExtractor

CLASSES = ["cat", "coffee, cup", "sky"]


class GreyAffinity:
    """A minimal affinity extractor: similarity of mean grey level."""

    def compute_affinity(self, image, grid_shape):
        h, w = grid_shape
        g = image.mean(2)
        ys = np.linspace(0, g.shape[0], h + 1).astype(int)
        xs = np.linspace(0, g.shape[1], w + 1).astype(int)
        m = np.array([[g[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean()
                       for j in range(w)] for i in range(h)]).ravel() / 255
        a = np.exp(-(m[:, None] - m[None]) ** 2 / 0.02)
        return (a / a.sum(1, keepdims=True)).astype(np.float32)


@pytest.fixture
def fe(tiny_clip):
    return FeatureExtractor(logits=tiny_clip, affinity=GreyAffinity(),
                            classes=CLASSES, progress=False)


def test_transform_builds_contract_datasets(fe, photos):
    feats = fe.fit(photos).transform(photos)
    assert len(feats) == 3
    for ds, img in zip(feats, photos):
        check_features(ds, require_affinity=True)
        np.testing.assert_array_equal(ds["image"].values, img)
        rows, cols = ds.sizes["row"], ds.sizes["col"]
        assert ds["affinity"].shape == (rows * cols, rows * cols)
        assert list(ds["class"].values) == CLASSES
        assert ds["logits"].dtype == np.float32
    # the grid follows the image's aspect ratio (short side 64, patch 8)
    assert (feats[0].sizes["row"], feats[0].sizes["col"]) == (8, 8)
    assert (feats[1].sizes["row"], feats[1].sizes["col"]) == (8, 12)


def test_no_affinity(fe, photos):
    for off in (False, "none"):
        [ds] = clone(fe).set_params(affinity=off).transform(photos[:1])
        assert "affinity" not in ds
        check_features(ds)


def test_image_forms_give_the_same_features(fe, photos, tmp_path):
    from PIL import Image

    rgb = photos[2]
    grey = rgb.mean(2).astype(np.uint8)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    path = tmp_path / "cat.png"
    Image.fromarray(rgb).save(path)
    ref, from_path, from_pil, from_float, from_rgba = fe.transform(
        [rgb, str(path), Image.fromarray(rgb), rgb / 255.0, rgba])
    for ds in (from_path, from_pil, from_float, from_rgba):
        np.testing.assert_array_equal(ds["logits"].values, ref["logits"].values)
        np.testing.assert_array_equal(ds["image"].values, rgb)
    g, g1 = fe.transform([grey, grey[:, :, None]])
    np.testing.assert_array_equal(g["image"].values, np.dstack([grey] * 3))
    np.testing.assert_array_equal(g["logits"].values, g1["logits"].values)


@pytest.fixture
def unloaded_fe(tiny_clip_files):
    """An extractor whose CLIP (bfloat16 key) no other test loads."""
    clip = CLIPFeatures(tiny_clip_files["config"], tiny_clip_files["checkpoint"],
                        short_side=64, device="cpu", dtype="bfloat16")
    return FeatureExtractor(logits=clip, affinity=GreyAffinity(),
                            classes=CLASSES, progress=False)


GOOD = np.zeros((16, 16, 3), np.uint8)


@pytest.mark.parametrize("X, exc, match", [
    (GOOD, TypeError, "bare array"),
    ("cat.png", TypeError, "bare string"),
    ([], ValueError, "empty"),
    ([np.zeros((16, 16, 2), np.uint8)], ValueError, "2 channels"),
    ([np.zeros((16, 16, 5), np.uint8)], ValueError, "5 channels"),
    ([np.zeros((0, 16, 3), np.uint8)], ValueError, "empty"),
    ([np.zeros((16, 0), np.uint8)], ValueError, "empty"),
    ([np.zeros((16, 16, 3), object)], TypeError, "dtype object"),
    ([np.zeros((16, 16, 3), complex)], TypeError, "complex"),
    ([np.zeros((16, 16), bool)], TypeError, "boolean"),
    ([np.full((16, 16, 3), 200.0)], ValueError, r"\[0, 1\]"),
    ([np.full((16, 16, 3), np.nan)], ValueError, "NaN"),
    ([np.full((16, 16, 3), 300, np.int64)], ValueError, "outside"),
    ([np.zeros((2, 16, 16, 3), np.uint8)], ValueError, "list of arrays"),
    ([GOOD, "/no/such/image.png"], FileNotFoundError, "does not exist"),
    ([b"\x89PNG"], TypeError, "bytes"),
])
def test_bad_images_refused_before_loading(unloaded_fe, X, exc, match):
    loads = _cache.load_count()
    with pytest.raises(exc, match=match):
        unloaded_fe.transform(X)
    with pytest.raises(exc, match=match):
        unloaded_fe.fit(X)
    assert _cache.load_count() == loads


@pytest.mark.parametrize("params, exc, match", [
    ({"classes": "cat"}, TypeError, "bare string"),
    ({"classes": []}, ValueError, "at least two"),
    ({"classes": None}, ValueError, "classes is required"),
    ({"classes": ["cat", "cat"]}, ValueError, "duplicate"),
    ({"logits": "clip"}, TypeError, "compute_logits"),
    ({"affinity": "sd2"}, ValueError, "affinity must be"),
    ({"affinity": object()}, TypeError, "compute_affinity"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"logits": CLIPFeatures("ViT-B-61")}, ValueError, "unknown open_clip"),
    ({"logits": CLIPFeatures(pretrained="/no/weights.safetensors")},
     ValueError, "no such file"),
])
def test_bad_params_refused_before_loading(unloaded_fe, params, exc, match):
    loads = _cache.load_count()
    est = clone(unloaded_fe).set_params(**params)
    with pytest.raises(exc, match=match):
        est.transform([GOOD])
    with pytest.raises(exc, match=match):
        est.fit([GOOD])
    assert _cache.load_count() == loads


def test_sklearn_api(fe, photos):
    name = "FeatureExtractor"
    check_parameters_default_constructible(name, FeatureExtractor())
    check_no_attributes_set_in_init(name, FeatureExtractor())
    check_get_params_invariance(name, fe)
    check_set_params(name, fe)
    check_is_fitted(FeatureExtractor())  # fit-free: never "not fitted"
    tags = fe.__sklearn_tags__()
    assert not tags.requires_fit and not tags.input_tags.two_d_array
    assert fe.get_params()["logits__short_side"] == 64
    c = clone(fe).set_params(classes=["a", "b"], logits__short_side=32)
    assert fe.classes == CLASSES and fe.logits.short_side == 64
    [ds] = c.transform(photos[:1])
    assert list(ds["class"].values) == ["a", "b"] and ds.sizes["row"] == 4


def test_pipeline_step(fe, photos):
    pipe = Pipeline([("features", fe)])
    check_is_fitted(pipe)
    out = pipe.fit_transform(photos[:2])
    assert len(out) == 2
    np.testing.assert_array_equal(pipe.transform(photos[:1])[0]["logits"].values,
                                  out[0]["logits"].values)


class UserLogits(BaseEstimator):
    """A user's extractor: a BaseEstimator with no _validate_params of its own."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def compute_logits(self, image, classes):
        ramp = np.linspace(0, self.scale, 4, dtype=np.float32).reshape(2, 2)
        return np.stack([ramp * (k + 1) for k in range(len(classes))])


class CheckedAffinity(GreyAffinity):
    checked = 0

    def _validate_params(self):
        CheckedAffinity.checked += 1


def test_user_estimators_and_their_own_validation():
    # sklearn's inherited BaseEstimator._validate_params is not called (it
    # would ask for _parameter_constraints); a class's own one is.
    before = CheckedAffinity.checked
    fe = FeatureExtractor(UserLogits(), CheckedAffinity(), classes=["a", "b"],
                          progress=False)
    [ds] = fe.fit_transform([GOOD])
    assert ds["logits"].shape == (2, 2, 2) and ds["affinity"].shape == (4, 4)
    assert CheckedAffinity.checked == before + 2  # fit, then transform


def test_defaults_are_the_paper_models():
    logits, aff = FeatureExtractor(classes=CLASSES)._parts()
    assert isinstance(logits, CLIPFeatures)
    assert (logits.model, logits.pretrained, logits.window) == (
        "ViT-B-16", "openai", None)
    assert type(aff).__name__ == "DiffusionAttention"


def test_features_carry_the_per_query_cosines(fe, tiny_clip, photos):
    from dsolo_sk.features import from_arrays

    [ds] = fe.transform(photos[1:2])
    q, owner = tiny_clip.compute_query_logits(photos[1], CLASSES)
    assert ds["query_logits"].dims == ("query", "row", "col")
    np.testing.assert_array_equal(ds["query_logits"].values, q)
    assert ds["query_class"].values.tolist() == owner.tolist() == [0, 1, 1, 2]
    np.testing.assert_array_equal(ds["logits"].values[1],
                                  np.maximum(q[1], q[2]))
    check_features(ds)
    # The contract refuses cosines that do not match the logits ...
    image = ds["image"].values
    logits = ds["logits"].values
    with pytest.raises(ValueError, match="maximum of query_logits"):
        from_arrays(logits, None, image, CLASSES, query_logits=q + 0.01,
                    query_class=owner)
    # ... a class without a query, an index out of range, a lone argument
    with pytest.raises(ValueError, match=r"classes \[2\] have no query"):
        from_arrays(logits, None, image, CLASSES, query_logits=q[:3],
                    query_class=owner[:3])
    with pytest.raises(ValueError, match="outside"):
        from_arrays(logits, None, image, CLASSES, query_logits=q,
                    query_class=[0, 1, 1, 3])
    with pytest.raises(ValueError, match="go together"):
        from_arrays(logits, None, image, CLASSES, query_logits=q)
    with pytest.raises(ValueError, match="patch grid"):
        from_arrays(logits, None, image, CLASSES, query_logits=q[:, :2],
                    query_class=owner)
    # and a Dataset whose cosines were changed afterwards
    bad = ds.copy(deep=True)
    bad["query_logits"].values[0] += 1
    with pytest.raises(ValueError, match="maximum of query_logits"):
        check_features(bad)
