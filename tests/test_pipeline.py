"""Pipelines from raw images: cached features, grid searches, shared weights.

The feature step runs real extractors: the tiny random CLIP of conftest.py
(saved as a config and a safetensors checkpoint, loaded back through
CLIPFeatures) or a counting stand-in, and the model-free colour-position
affinity.
"""

import copy
import os
import pickle
import shutil
import warnings

import joblib
import numpy as np
import pytest
import xarray as xr
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from dsolo_sk import (DirectSegmenter, InterpolationUpsampler, TransportPath,
                      TransportVelocity)
from dsolo_sk.datasets import make_scenes
from dsolo_sk.features import (CLIPFeatures, ColorPositionAffinity,
                               FeatureExtractor)
from dsolo_sk.features._cache import load_count
from dsolo_sk.model_selection import (FeatureCache, clear_feature_cache,
                                      feature_cache_info,
                                      make_segmentation_pipeline)

N_IMAGES = 4


def affinity():
    """The model-free affinity the tests use with FeatureExtractor."""
    return ColorPositionAffinity()


#: calls of CountingLogits.compute_logits in this process (clones share it)
CALLS = []


class CountingLogits(BaseEstimator):
    """A deterministic stand-in for CLIP that counts its forwards."""

    def __init__(self, grid=4):
        self.grid = grid

    def _validate_params(self):  # FeatureExtractor calls it when present
        if not isinstance(self.grid, int) or self.grid < 1:
            raise ValueError(f"grid must be a positive int, got {self.grid}")

    def compute_logits(self, image, classes):
        CALLS.append(1)
        g = self.grid
        h, w = image.shape[:2]
        small = image[: h // g * g, : w // g * g].reshape(
            g, h // g, g, w // g, 3).mean(axis=(1, 3)) / 255.0
        n = len(classes)
        centres = np.linspace(0, 1, n)[:, None, None]
        grey = small.mean(-1)[None]
        return (-np.abs(grey - centres)).astype(np.float32)


@pytest.fixture(scope="module")
def raw_scenes():
    X, y = make_scenes(n_scenes=N_IMAGES, n_classes=5, image_size=64,
                       random_state=0)
    images = [ds["image"].values for ds in X]
    classes = [str(c) for c in X[0]["class"].values]
    return images, y, classes


def _counting_pipeline(classes, **kwargs):
    return make_segmentation_pipeline(
        DirectSegmenter(discrepancy=TransportVelocity(),
                        upsampler=InterpolationUpsampler()),
        logits=CountingLogits(),
        affinity=affinity(), classes=classes, progress=False, **kwargs)


def test_extractor_accepts_color_position_affinity(raw_scenes):
    images, _, classes = raw_scenes
    fe = FeatureExtractor(logits=CountingLogits(),
                          affinity=ColorPositionAffinity(), classes=classes,
                          progress=False)
    [ds] = fe.transform(images[:1])
    assert ds["affinity"].shape == (16, 16)


def test_fit_free_pipeline_reports_fitted(raw_scenes):
    images, y, classes = raw_scenes
    pipe = _counting_pipeline(classes)
    check_is_fitted(pipe)  # no fit needed: the last step is fit-free
    labels = pipe.predict(images[:2])
    assert [lab.shape for lab in labels] == [(64, 64)] * 2
    scores = pipe.decision_function(images[:1])[0]
    assert isinstance(scores, xr.DataArray)
    assert scores.dims == ("class", "y", "x")
    assert list(scores["class"].values) == classes
    np.testing.assert_array_equal(scores.argmax("class").values, labels[0])
    assert 0 <= pipe.score(images, y) <= 1
    assert pipe.fit(images, y) is pipe


def test_nested_params(raw_scenes):
    _, _, classes = raw_scenes
    pipe = _counting_pipeline(classes)
    params = pipe.get_params()
    for name in ("segment__discrepancy__tau", "segment__mode",
                 "segment__upsampler__method",
                 "features__transformer__classes",
                 "features__transformer__logits__grid", "features__memory"):
        assert name in params
    pipe.set_params(segment__discrepancy__tau=0.7,
                    features__transformer__logits__grid=2)
    assert pipe.named_steps["segment"].discrepancy.tau == 0.7
    assert pipe.named_steps["features"].transformer.logits.grid == 2
    assert clone(pipe).get_params()["segment__discrepancy__tau"] == 0.7


def _fold_scores(est, X, y, cv):
    return [clone(est).fit([X[i] for i in tr], [y[i] for i in tr])
            .score([X[i] for i in te], [y[i] for i in te])
            for tr, te in cv.split(X)]


def test_grid_search_extracts_each_image_once(raw_scenes):
    images, y, classes = raw_scenes
    clear_feature_cache()
    CALLS.clear()
    grid = [{"segment__discrepancy": [TransportVelocity()],
             "segment__discrepancy__tau": [0.1, 0.3, 1.0]},
            {"segment__discrepancy": [TransportPath()],
             "segment__discrepancy__epsilon": [0.05, 0.5]}]
    cv = KFold(2)
    search = GridSearchCV(_counting_pipeline(classes), grid, cv=cv,
                          error_score="raise").fit(images, y)
    # 5 candidates x 2 folds (fit + score) + the refit: one forward each
    assert len(CALLS) == N_IMAGES
    assert feature_cache_info()["misses"] == N_IMAGES
    assert feature_cache_info()["hits"] > 5 * N_IMAGES
    best = search.best_estimator_
    assert search.best_score_ == pytest.approx(
        np.mean(_fold_scores(best, images, y, cv)), abs=1e-12)
    # precomputed features give the very same search
    feats = FeatureExtractor(logits=CountingLogits(), affinity=affinity(),
                             classes=classes, progress=False).transform(images)
    on_feats = GridSearchCV(
        DirectSegmenter(upsampler=InterpolationUpsampler()),
        [{k[len("segment__"):]: v for k, v in sub.items()} for sub in grid],
        cv=cv,
        error_score="raise").fit(feats, y)
    np.testing.assert_allclose(on_feats.cv_results_["mean_test_score"],
                               search.cv_results_["mean_test_score"],
                               rtol=0, atol=1e-12)


def test_pipeline_memory_alone_recomputes_validation_features(raw_scenes,
                                                              tmp_path):
    """Pipeline(memory=...) caches fit_transform only: each candidate's
    score on the validation fold extracts again. This is why the feature
    step is a FeatureCache."""
    images, y, classes = raw_scenes
    grid = {"segment__discrepancy__tau": [0.1, 0.3, 1.0]}
    CALLS.clear()
    plain = make_segmentation_pipeline(
        DirectSegmenter(discrepancy=TransportVelocity(),
                        upsampler=InterpolationUpsampler()),
        logits=CountingLogits(),
        affinity=affinity(), classes=classes, progress=False, cache=False,
        memory=str(tmp_path))
    assert isinstance(plain.named_steps["features"], FeatureExtractor)
    a = GridSearchCV(plain, grid, cv=KFold(2), error_score="raise",
                     refit=False).fit(images, y)
    plain_calls = len(CALLS)
    # fits are cached (each image once as training data), validation
    # transforms are not (3 candidates x every image)
    assert plain_calls == N_IMAGES + 3 * N_IMAGES
    clear_feature_cache()
    CALLS.clear()
    b = GridSearchCV(_counting_pipeline(classes), grid, cv=KFold(2),
                     error_score="raise", refit=False).fit(images, y)
    assert len(CALLS) == N_IMAGES
    np.testing.assert_allclose(a.cv_results_["mean_test_score"],
                               b.cv_results_["mean_test_score"], atol=1e-12)


def test_grid_search_pipeline_with_tiny_clip(raw_scenes, tiny_clip):
    images, y, classes = raw_scenes
    clear_feature_cache()
    pipe = make_segmentation_pipeline(
        DirectSegmenter(discrepancy=TransportVelocity()), logits=tiny_clip,
        affinity=affinity(), classes=classes, progress=False)
    pipe.predict(images[:1])  # loads the model (once per process)
    loads = load_count()
    cv = KFold(2)
    search = GridSearchCV(pipe, {"segment__discrepancy__tau": [0.05, 0.3,
                                                               1.5]}, cv=cv,
                          error_score="raise").fit(images, y)
    assert load_count() == loads  # no clone reloaded the weights
    assert feature_cache_info()["misses"] == N_IMAGES
    assert search.best_score_ == pytest.approx(
        np.mean(_fold_scores(search.best_estimator_, images, y, cv)),
        abs=1e-12)
    feats = search.best_estimator_.named_steps["features"].transform(images)
    assert feats[0]["logits"].shape == (5, 8, 8)  # 64 px / 8 px patches
    assert list(feats[0]["class"].values) == classes


def test_clone_of_segmenter_with_loaded_model_copies_no_weights(
        raw_scenes, tiny_clip_files, tmp_path):
    images, y, classes = raw_scenes
    # a checkpoint of our own: its cache key is new, so its loads count
    ckpt = tmp_path / "clone_test.safetensors"
    shutil.copy(tiny_clip_files["checkpoint"], ckpt)
    clip = CLIPFeatures(tiny_clip_files["config"], str(ckpt), short_side=32,
                        templates=["a photo of a {}."], device="cpu")
    seg = DirectSegmenter(extractor=clip, affinity=affinity(),
                          discrepancy=TransportVelocity(), classes=classes,
                          progress=False)
    before = load_count()
    first = seg.predict(images[:1])
    assert load_count() == before + 1
    size = len(pickle.dumps(seg))
    for other in (clone(seg), copy.deepcopy(seg),
                  pickle.loads(pickle.dumps(seg)),
                  clone(seg).set_params(discrepancy__tau=0.5)):
        assert len(pickle.dumps(other)) == pytest.approx(size, abs=64)
        np.testing.assert_array_equal(
            other.set_params(discrepancy__tau=0.3).predict(images[:1])[0],
            first[0])
    assert load_count() == before + 1
    assert size < 20_000  # parameters only, no weights
    # a search straight on the segmenter (features recomputed per
    # candidate, as there is no cache step) still loads nothing
    GridSearchCV(seg, {"discrepancy__tau": [0.1, 0.3]}, cv=KFold(2),
                 error_score="raise").fit(images, y)
    assert load_count() == before + 1


# -- FeatureCache on its own ---------------------------------------------------

def _cache(classes, **kwargs):
    fe = FeatureExtractor(logits=CountingLogits(), affinity=False,
                          classes=classes, progress=False)
    return FeatureCache(fe, **kwargs)


def test_feature_cache_keys(raw_scenes, tmp_path):
    images, _, classes = raw_scenes
    clear_feature_cache()
    CALLS.clear()
    cache = _cache(classes)
    first = cache.transform(images[:2])
    assert len(CALLS) == 2
    # same pixels in new arrays, a clone, progress changed: all hits
    again = clone(cache).set_params(transformer__progress=True).transform(
        [im.copy() for im in images[:2]])
    assert len(CALLS) == 2
    for a, b in zip(first, again):
        xr.testing.assert_identical(a, b)
    # a sample repeated within one call is computed once
    cache.transform([images[2], images[2].copy()])
    assert len(CALLS) == 3
    # any other parameter is a new key
    cache.set_params(transformer__logits__grid=2).transform(images[:1])
    cache.set_params(transformer__classes=classes[::-1]).transform(images[:1])
    assert len(CALLS) == 5
    # one changed pixel is a new key
    edited = images[0].copy()
    edited[0, 0, 0] ^= 1
    _cache(classes).transform([edited])
    assert len(CALLS) == 6


def test_feature_cache_paths_and_disk(raw_scenes, tmp_path):
    from PIL import Image

    images, _, classes = raw_scenes
    path = tmp_path / "scene.png"
    Image.fromarray(images[0]).save(path)
    clear_feature_cache()
    CALLS.clear()
    store = tmp_path / "store"
    cache = _cache(classes, memory=str(store))
    [a] = cache.transform([str(path)])
    # on disk: an empty in-process store changes nothing
    clear_feature_cache()
    [b] = clone(cache).set_params(
        memory=joblib.Memory(str(store), verbose=0)).transform([path])
    assert len(CALLS) == 1
    xr.testing.assert_identical(a, b)
    assert len(os.listdir(store / "dsolo_sk_features")) == 1
    # a rewritten file is a new key
    Image.fromarray(images[1]).save(path)
    os.utime(path, ns=(1, 1))
    [c] = cache.transform([path])
    assert len(CALLS) == 2
    np.testing.assert_array_equal(c["image"].values, images[1])
    # PIL images are hashed by their pixels
    pil = Image.fromarray(images[1])
    cache.transform([pil, Image.fromarray(images[1])])
    assert len(CALLS) == 3


def test_feature_cache_bounded_store(raw_scenes):
    images, _, classes = raw_scenes
    clear_feature_cache()
    CALLS.clear()
    cache = _cache(classes, max_bytes=0)
    out = cache.transform(images[:2])
    assert feature_cache_info()["entries"] == 0
    assert feature_cache_info()["bytes"] == 0
    cache.transform(images[:2])
    assert len(CALLS) == 4  # nothing kept
    assert out[1]["image"].shape == (64, 64, 3)
    one = out[0].nbytes
    cache.set_params(max_bytes=int(1.5 * one)).transform(images[:2])
    assert feature_cache_info()["entries"] == 1  # the oldest went first


def test_feature_cache_outputs_are_copies(raw_scenes):
    images, _, classes = raw_scenes
    clear_feature_cache()
    cache = _cache(classes)
    [a] = cache.transform(images[:1])
    a["extra"] = a["logits"] * 2
    a.attrs["note"] = "changed"
    [b] = cache.transform(images[:1])
    assert "extra" not in b and "note" not in b.attrs


def test_feature_cache_validation(raw_scenes):
    images, _, classes = raw_scenes
    with pytest.raises(TypeError, match="requires fitting"):
        FeatureCache(StandardScaler()).fit()
    with pytest.raises(TypeError, match="transform"):
        FeatureCache(CountingLogits()).transform(images[:1])
    with pytest.raises(TypeError, match="memory"):
        _cache(classes, memory=3).transform(images[:1])
    with pytest.raises(ValueError, match="max_bytes"):
        _cache(classes, max_bytes=-1).fit()
    with pytest.raises(TypeError, match="list"):
        _cache(classes).transform(images[0])
    with pytest.raises(ValueError, match="classes"):
        FeatureCache(FeatureExtractor(logits=CountingLogits())).fit(images)

    class Short(BaseEstimator):
        def transform(self, X):
            return X[:-1]

        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.requires_fit = False
            return tags

    with pytest.raises(ValueError, match="one output per sample"):
        FeatureCache(Short()).transform([1, 2])


def test_pipeline_refuses_bare_image(raw_scenes):
    images, _, classes = raw_scenes
    pipe = _counting_pipeline(classes)
    with pytest.raises(TypeError, match="list"):
        pipe.predict(images[0])
    with pytest.raises(TypeError, match="list"):
        DirectSegmenter(classes=classes).predict(images[0])


def test_pipeline_pickles(raw_scenes):
    images, _, classes = raw_scenes
    pipe = _counting_pipeline(classes)
    a = pipe.predict(images[:1])[0]
    b = pickle.loads(pickle.dumps(pipe)).predict(images[:1])[0]
    np.testing.assert_array_equal(a, b)



def test_feature_cache_keys_xarray_samples_by_value():
    """joblib.hash of an xarray object changes with its internal caches:
    FeatureCache keys them by their variables' values instead."""
    class Double(BaseEstimator):
        def transform(self, X):
            CALLS.append(len(X))
            return [ds * 2 for ds in X]

        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.requires_fit = False
            return tags

    X, _ = make_scenes(n_scenes=2, n_classes=5, image_size=32,
                       random_state=0)
    clear_feature_cache()
    CALLS.clear()
    cache = FeatureCache(Double())
    first = cache.transform(X)
    again = cache.transform([ds.copy(deep=True) for ds in X])
    assert CALLS == [2]
    for a, b in zip(first, again):
        xr.testing.assert_identical(a, b)
    changed = X[0].copy(deep=True)
    changed["logits"][0, 0, 0] += 1
    cache.transform([changed])
    assert CALLS == [2, 1]


class _UserLogits(BaseEstimator):
    """A user's extractor: a BaseEstimator without _validate_params."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def compute_logits(self, image, classes):
        ramp = np.linspace(0, self.scale, 4, dtype=np.float32).reshape(2, 2)
        return np.stack([ramp * (k + 1) for k in range(len(classes))])


def test_extractor_accepts_user_estimators_without_validate_params():
    pipe = make_segmentation_pipeline(
        DirectSegmenter(mode="kl",
                        upsampler=InterpolationUpsampler("nearest")), logits=_UserLogits(),
        affinity=False, classes=["a", "b"], progress=False)
    GridSearchCV(pipe, {"features__transformer__logits__scale": [1.0, 2.0]},
                 cv=KFold(2), error_score="raise").fit(
        [np.zeros((8, 8, 3), np.uint8)] * 2, [np.zeros((8, 8), int)] * 2)


@pytest.mark.parametrize("mode", ["kl", "path", "velocity"])
def test_blank_image_through_pipeline(mode):
    """A uniform image can give spatially constant logits: the segmenter
    must still return a label map (of the winning class), not fail."""
    class Flat:
        def compute_logits(self, image, classes):
            return np.stack([np.full((2, 2), 0.3 - 0.1 * k, np.float32)
                             for k in range(len(classes))])

    pipe = make_segmentation_pipeline(
        DirectSegmenter(mode=mode,
                        upsampler=InterpolationUpsampler("nearest")), logits=Flat(),
        affinity=affinity(), classes=["a", "b"], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        [labels] = pipe.predict([np.zeros((16, 16, 3), np.uint8)])
    assert labels.shape == (16, 16)
    assert np.all(labels == 0)
