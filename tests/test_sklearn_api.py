"""scikit-learn API checks on every public estimator of dsolo_sk, found
automatically.

``parametrize_with_checks`` skips nearly every check for estimators whose
input is not a 2-D array (lists of images or feature Datasets here), so
this module runs scikit-learn's individual checks that need no data, and
its own equivalents of the data checks that apply to fit-free estimators
on lists of samples: fit returns self and learns nothing, outputs do not
depend on fitting, on batch composition or order, pickling, refusal of a
bare array, inputs left unchanged.

An estimator is public when its class is a BaseEstimator defined in
dsolo_sk, its name has no leading underscore and it is reachable from a
module whose dotted path has no private part.
"""

import importlib
import inspect
import pickle
import pkgutil
import warnings

import joblib
import numpy as np
import pytest
import xarray as xr
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.model_selection import KFold, cross_val_score
from sklearn.utils import estimator_checks, get_tags
from sklearn.utils.validation import check_is_fitted

import dsolo_sk
from dsolo_sk.datasets import make_scenes

#: scikit-learn checks that need no data: they run on every estimator.
SKLEARN_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
]

#: every estimator this project is known to have; discovery must find them
KNOWN = {"DirectSegmenter", "TransportPathSegmenter",
         "TransportVelocitySegmenter", "KLDiscrepancy", "TransportPath",
         "TransportVelocity", "CLIPFeatures", "DiffusionAttention",
         "ColorPositionAffinity", "FeatureExtractor", "FeatureCache",
         "LogitNormalizer", "JointBilateralUpsampler",
         "InterpolationUpsampler"}


def _public_modules():
    names = ["dsolo_sk"]
    for info in pkgutil.walk_packages(dsolo_sk.__path__, "dsolo_sk."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _public_estimators():
    found, failed = {}, []
    for name in _public_modules():
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # reported by test_public_modules_import
            failed.append((name, exc))
            continue
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, BaseEstimator)
                    and cls.__module__.startswith("dsolo_sk")
                    and not cls_name.startswith("_")
                    and not inspect.isabstract(cls)):
                found[cls_name] = cls
    return dict(sorted(found.items())), failed


ESTIMATORS, IMPORT_FAILURES = _public_estimators()


def test_public_modules_import():
    assert not IMPORT_FAILURES, IMPORT_FAILURES


def test_discovery_finds_the_known_estimators():
    assert KNOWN <= set(ESTIMATORS), sorted(KNOWN - set(ESTIMATORS))


# -- sample data per estimator ---------------------------------------------
#
# A provider returns (estimator, method name, X, y): the estimator set up
# to run on X, the public method that produces its output. Fit-free
# estimators (with fit) get the data checks; components (compute_* only)
# get the output checks through their own method.

class Logits(BaseEstimator):
    """A deterministic model-free stand-in for CLIP."""

    def __init__(self, grid=4):
        self.grid = grid

    def _validate_params(self):
        if not isinstance(self.grid, int) or self.grid < 1:
            raise ValueError("grid must be a positive int.")

    def compute_logits(self, image, classes):
        g, (h, w) = self.grid, image.shape[:2]
        small = image[: h // g * g, : w // g * g].reshape(
            g, h // g, g, w // g, 3).mean(axis=(1, 3)) / 255.0
        centres = np.linspace(0, 1, len(classes))[:, None, None]
        return (-np.abs(small.mean(-1)[None] - centres)).astype(np.float32)


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(n_scenes=3, n_classes=5, image_size=32,
                       random_state=0)


def _images(scenes):
    X, y = scenes
    return [ds["image"].values for ds in X], y


def _extractor(scenes):
    from dsolo_sk.features import FeatureExtractor

    classes = [str(c) for c in scenes[0][0]["class"].values]
    return FeatureExtractor(logits=Logits(), affinity=False, classes=classes,
                            progress=False)


def _segmenter(cls):
    def provide(request, scenes):
        X, y = scenes
        from dsolo_sk import InterpolationUpsampler

        return (cls(upsampler=InterpolationUpsampler(), progress=False),
                "predict", X, y)
    return provide


def _feature_extractor(request, scenes):
    images, y = _images(scenes)
    return _extractor(scenes), "transform", images, y


def _feature_cache(request, scenes):
    from dsolo_sk.model_selection import FeatureCache, clear_feature_cache

    clear_feature_cache()
    images, y = _images(scenes)
    return FeatureCache(_extractor(scenes)), "transform", images, y


def _affinity_component(request, scenes):
    from dsolo_sk.features import ColorPositionAffinity

    images, _ = _images(scenes)
    return ColorPositionAffinity(), "compute_affinity", images[0], (4, 4)


def _attention_component(request, scenes):
    from dsolo_sk.features import ProjectedAttentionAffinity

    images, _ = _images(scenes)
    return (ProjectedAttentionAffinity(n_sinks=1), "compute_affinity",
            images[0], (4, 4))


def _degraded_component(request, scenes):
    from dsolo_sk.features import DegradedAffinity, ProjectedAttentionAffinity

    images, _ = _images(scenes)
    return (DegradedAffinity(ProjectedAttentionAffinity(), random_state=0),
            "compute_affinity", images[0], (4, 4))


def _prototype_component(request, scenes):
    from dsolo_sk.features import ColorPrototypeLogits

    images, _ = _images(scenes)
    classes = [str(c) for c in scenes[0][0]["class"].values]
    colours = {c: (40 * k % 256, 255 - 40 * k % 256, 128)
               for k, c in enumerate(classes)}
    return (ColorPrototypeLogits(colours, patch_size=8), "compute_logits",
            images[0], classes)


def _clip_component(request, scenes):
    images, _ = _images(scenes)
    clip = request.getfixturevalue("tiny_clip")
    return clip, "compute_logits", images[0], ["cat", "dog, puppy"]


def _diffusion_component(request, scenes):
    from dsolo_sk.features import DiffusionAttention

    images, _ = _images(scenes)
    est = DiffusionAttention(request.getfixturevalue("tiny_sd_dir"),
                             resolution=64, device="cpu")
    return est, "compute_affinity", images[0], (4, 4)


def _discrepancy(cls):
    def provide(request, scenes):
        ds = scenes[0][0]
        logits = ds["logits"].values.reshape(ds.sizes["class"], -1)
        q = np.exp(logits * 10)
        q = (q / q.sum(1, keepdims=True)).astype(np.float32)
        return cls(), "compute", q, ds["affinity"].values
    return provide


def _normalizer(request, scenes):
    ds = scenes[0][0]
    logits = ds["logits"].values.reshape(ds.sizes["class"], -1)
    return dsolo_sk.LogitNormalizer(), "normalize", logits, None


def _upsampler(cls):
    def provide(request, scenes):
        ds = scenes[0][0]
        return cls(), "upsample", ds["logits"].values, ds["image"].values
    return provide


PROVIDERS = {
    "LogitNormalizer": _normalizer,
    "JointBilateralUpsampler": _upsampler(dsolo_sk.JointBilateralUpsampler),
    "InterpolationUpsampler": _upsampler(dsolo_sk.InterpolationUpsampler),
    "DirectSegmenter": _segmenter(dsolo_sk.DirectSegmenter),
    "TransportPathSegmenter": _segmenter(dsolo_sk.TransportPathSegmenter),
    "TransportVelocitySegmenter": _segmenter(
        dsolo_sk.TransportVelocitySegmenter),
    "FeatureExtractor": _feature_extractor,
    "FeatureCache": _feature_cache,
    "ColorPositionAffinity": _affinity_component,
    "ProjectedAttentionAffinity": _attention_component,
    "DegradedAffinity": _degraded_component,
    "ColorPrototypeLogits": _prototype_component,
    "CLIPFeatures": _clip_component,
    "DiffusionAttention": _diffusion_component,
    "KLDiscrepancy": _discrepancy(dsolo_sk.KLDiscrepancy),
    "TransportPath": _discrepancy(dsolo_sk.TransportPath),
    "TransportVelocity": _discrepancy(dsolo_sk.TransportVelocity),
}

FIT_FREE = [n for n, c in ESTIMATORS.items() if hasattr(c, "fit")]


def _provide(name, request, scenes):
    if name not in PROVIDERS:
        pytest.skip(f"{name} has no sample data in PROVIDERS of "
                    "tests/test_sklearn_api.py: add one to check it.")
    return PROVIDERS[name](request, scenes)


def _run(est, method, X, y):
    out = getattr(est, method)(X) if y is None or method in (
        "predict", "transform", "decision_function") else None
    if out is None:
        out = getattr(est, method)(X, y)
    return out


def _assert_same(a, b):
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
    elif isinstance(a, xr.Dataset):
        xr.testing.assert_identical(a, b)
    elif isinstance(a, xr.DataArray):
        xr.testing.assert_identical(a, b)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _fingerprint(X):
    """A hash of a list of samples by value (joblib.hash of an xarray
    object changes with its internal caches)."""
    return joblib.hash([
        [(k, v.dims, v.values) for k, v in sorted(x.variables.items())]
        if isinstance(x, xr.Dataset) else np.asarray(x) for x in X])


def _params_hash(est):
    return joblib.hash({k: repr(v) for k, v in est.get_params().items()})


# -- checks on every estimator ---------------------------------------------

@pytest.mark.parametrize("check", SKLEARN_CHECKS)
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_sklearn_check(name, check):
    est = ESTIMATORS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=FutureWarning)
        getattr(estimator_checks, check)(name, est)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_not_a_classifier_nor_regressor(name):
    # ClassifierMixin's stratified folds and accuracy score would be wrong
    # for label maps
    est = ESTIMATORS[name]()
    assert not is_classifier(est) and not is_regressor(est)
    assert get_tags(est).estimator_type not in ("classifier", "regressor")


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_pickle_and_clone_keep_params_and_carry_no_weights(name, request,
                                                           scenes):
    est = _provide(name, request, scenes)[0] if name in PROVIDERS \
        else ESTIMATORS[name]()
    for other in (pickle.loads(pickle.dumps(est)), clone(est)):
        assert type(other) is type(est)
        assert _params_hash(other) == _params_hash(est)
        assert repr(other) == repr(est)
    assert len(pickle.dumps(est)) < 50_000


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_outputs_survive_clone_and_pickle(name, request, scenes):
    est, method, X, y = _provide(name, request, scenes)
    first = _run(est, method, X, y)
    _assert_same(first, _run(est, method, X, y))  # deterministic
    _assert_same(first, _run(clone(est), method, X, y))
    _assert_same(first, _run(pickle.loads(pickle.dumps(est)), method, X, y))


# -- checks on fit-free estimators -----------------------------------------

@pytest.mark.parametrize("name", FIT_FREE)
def test_fit_free_tags_and_fitted_state(name, request, scenes):
    est, method, X, y = _provide(name, request, scenes)
    tags = get_tags(est)
    assert tags.requires_fit is False
    assert tags.input_tags.two_d_array is False
    assert tags.target_tags.required is False
    check_is_fitted(est)  # usable without fit, so "fitted"
    before = _run(est, method, X, y)
    state, params = dict(vars(est)), _params_hash(est)
    assert est.fit(X, y) is est
    assert est.fit(X) is est
    assert _params_hash(est) == params  # fit changes no parameter
    added = set(vars(est)) - set(state)
    assert all(a.endswith("_") or a.startswith("_") for a in added), added
    assert not hasattr(est, "n_features_in_")
    _assert_same(before, _run(est, method, X, y))


@pytest.mark.parametrize("name", FIT_FREE)
def test_batch_subset_and_order_invariance(name, request, scenes):
    est, method, X, y = _provide(name, request, scenes)
    out = _run(est, method, X, y)
    assert len(out) == len(X)
    for k in range(len(X)):
        _assert_same(out[k], _run(est, method, [X[k]], y)[0])
    _assert_same(out[::-1], _run(est, method, X[::-1], y))


@pytest.mark.parametrize("name", FIT_FREE)
def test_inputs_left_unchanged(name, request, scenes):
    est, method, X, y = _provide(name, request, scenes)
    X = [x.copy(deep=True) if hasattr(x, "dims") else np.array(x) for x in X]
    before = _fingerprint(X)
    _run(est, method, X, y)
    est.fit(X, y)
    assert _fingerprint(X) == before


@pytest.mark.parametrize("name", FIT_FREE)
def test_bare_array_and_empty_batch_refused(name, request, scenes):
    est, method, X, y = _provide(name, request, scenes)
    images, _ = _images(scenes)
    for call in (getattr(est, method), est.fit):
        with pytest.raises(TypeError, match="list"):
            call(images[0])
        with pytest.raises(ValueError, match="empty"):
            call([])


@pytest.mark.parametrize("name", [n for n in FIT_FREE
                                  if hasattr(ESTIMATORS[n], "score")])
def test_score_in_cross_validation(name, request, scenes):
    est, method, X, y = _provide(name, request, scenes)
    scores = cross_val_score(est, X, y, cv=KFold(3), error_score="raise")
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[0] == est.score(X[:1], y[:1])


@pytest.mark.parametrize("name", [n for n in FIT_FREE
                                  if hasattr(ESTIMATORS[n],
                                             "decision_function")])
def test_decision_function_is_labelled_and_matches_predict(name, request,
                                                           scenes):
    est, _, X, _ = _provide(name, request, scenes)
    scores = est.decision_function(X)
    labels = est.predict(X)
    for s, lab, ds in zip(scores, labels, X):
        assert isinstance(s, xr.DataArray)
        assert s.dims == ("class", "y", "x")
        np.testing.assert_array_equal(s["class"].values, ds["class"].values)
        assert s.shape[1:] == ds["image"].shape[:2] == lab.shape
        np.testing.assert_array_equal(s.argmax("class").values, lab)
