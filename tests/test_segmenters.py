"""DirectSegmenter on precomputed features: method, API and input errors."""

import numpy as np
import pytest
import xarray as xr

from dsolo_sk import (DirectSegmenter, InterpolationUpsampler,
                      JointBilateralUpsampler, KLDiscrepancy, LogitNormalizer,
                      TransportPath, TransportPathSegmenter,
                      TransportVelocity, TransportVelocitySegmenter)
from dsolo_sk.datasets import make_scenes
from dsolo_sk.features import from_arrays


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(n_scenes=6, n_classes=12, image_size=320,
                       random_state=0)


@pytest.fixture(scope="module")
def small():
    return make_scenes(n_scenes=2, n_classes=5, image_size=64,
                       random_state=1)


def test_ablation_shape_on_generated_scenes(scenes):
    X, y = scenes
    raw = DirectSegmenter(mode="raw",
                          upsampler=InterpolationUpsampler()).score(X, y)
    kl_jbu = DirectSegmenter(mode="kl").score(X, y)
    path = DirectSegmenter(mode="path").score(X, y)
    vel = DirectSegmenter(mode="velocity").score(X, y)
    # the plain reference of the benchmark: 5 Markov steps of a per-class
    # softmax(L / 0.05) over the patches, no class-level test
    plain = DirectSegmenter(
        discrepancy=TransportVelocity(score="steps"),
        normalizer=LogitNormalizer(nms=False, method="softmax",
                                   temperature=0.05, over="class",
                                   min_share=0.0)).score(X, y)
    assert kl_jbu > raw
    assert path > raw + 0.15
    assert vel > raw + 0.15
    assert vel >= plain


@pytest.mark.parametrize("mode", ["raw", "kl", "path", "velocity"])
def test_bit_identical_run_after_run(small, mode):
    X, _ = small
    a = DirectSegmenter(mode=mode).predict(X)
    b = DirectSegmenter(mode=mode).predict(X)
    for u, v in zip(a, b):
        assert u.dtype == np.int64
        np.testing.assert_array_equal(u, v)
    sa = DirectSegmenter(mode=mode).decision_function(X)[0].values
    sb = DirectSegmenter(mode=mode).decision_function(X)[0].values
    assert sa.tobytes() == sb.tobytes()


def test_outputs_shapes_and_labels(small):
    X, y = small
    seg = DirectSegmenter()
    assert seg.fit(X, y) is seg
    labels = seg.predict(X)
    scores = seg.decision_function(X)
    for ds, lab, sc in zip(X, labels, scores):
        assert lab.shape == ds["image"].shape[:2]
        assert isinstance(sc, xr.DataArray)
        assert sc.dims == ("class", "y", "x")
        assert list(sc["class"].values) == list(ds["class"].values)
        np.testing.assert_array_equal(sc.values.argmax(0), lab)
        assert np.isfinite(sc.values).all()
    s = seg.score(X, y)
    assert 0.0 <= s <= 1.0


def test_score_is_mmseg_miou(small):
    from dsolo_sk.metrics import mean_iou
    X, y = small
    seg = DirectSegmenter(mode="path")
    assert seg.score(X, y) == mean_iou(y, seg.predict(X), 5)


def test_empty_class_is_never_predicted():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.2, 0.01, (3, 4, 4))
    logits[2] -= 1.0  # wins no patch after NMS
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    ds = from_arrays(logits, np.ones((16, 16)), image, ["a", "b", "c"])
    for mode in ("kl", "path", "velocity"):
        lab = DirectSegmenter(mode=mode).predict([ds])[0]
        assert 2 not in lab
        sc = DirectSegmenter(mode=mode).decision_function([ds])[0]
        assert np.isfinite(sc.values).all()


def test_sparse_topk_equals_dense_when_nothing_dropped(small):
    X, _ = small
    p = X[0].sizes["patch"]
    a = DirectSegmenter(mode="velocity").decision_function(X)
    b = DirectSegmenter(discrepancy=TransportVelocity(
        score="steps", n_steps=2, min_share=0.01,
        affinity_topk=p)).decision_function(X)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.values, v.values, rtol=1e-4, atol=1e-5)


def test_fixed_mode_segmenters_fix_their_discrepancy(small):
    X, _ = small
    path = TransportPathSegmenter(discrepancy=TransportPath(epsilon=0.2))
    vel = TransportVelocitySegmenter(discrepancy=TransportVelocity(tau=0.5))
    for seg in (path, vel):
        assert "mode" not in seg.get_params()
    assert path.get_params()["discrepancy__epsilon"] == 0.2
    np.testing.assert_array_equal(
        path.predict(X)[0],
        DirectSegmenter(discrepancy=TransportPath(epsilon=0.2)).predict(X)[0])
    np.testing.assert_array_equal(
        vel.predict(X)[0],
        DirectSegmenter(mode="velocity",
                        discrepancy=TransportVelocity(tau=0.5)).predict(X)[0])
    # the default discrepancy of each is its own method's
    np.testing.assert_array_equal(TransportPathSegmenter().predict(X)[0],
                                  DirectSegmenter(mode="path").predict(X)[0])
    with pytest.raises(ValueError):
        path.set_params(mode="velocity")
    with pytest.raises(TypeError, match="TransportPath"):
        TransportPathSegmenter(discrepancy=TransportVelocity()).predict(X)


# -- composition -------------------------------------------------------------


def test_few_parameters_and_none_shared_with_the_parts():
    seg = DirectSegmenter(normalizer=LogitNormalizer(),
                          discrepancy=TransportVelocity(),
                          upsampler=JointBilateralUpsampler())
    own = seg.get_params(deep=False)
    assert len(own) <= 12
    deep = seg.get_params(deep=True)
    part_names = {k.split("__", 1)[1] for k in deep if "__" in k}
    assert not part_names & set(own)
    for name in ("discrepancy__tau", "normalizer__nms_fill",
                 "upsampler__sigma_range"):
        assert name in deep


def test_given_discrepancy_decides_the_method(small):
    X, _ = small
    # mode is ignored when a discrepancy is given
    a = DirectSegmenter(mode="kl", discrepancy=TransportPath()).predict(X)
    b = DirectSegmenter(mode="path").predict(X)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # a "passthrough" discrepancy is the raw method
    a = DirectSegmenter(discrepancy="passthrough").decision_function(X)
    b = DirectSegmenter(mode="raw").decision_function(X)
    np.testing.assert_array_equal(a[0].values, b[0].values)
    assert a[0].attrs["method"] == "raw"


def test_parts_change_the_result_as_their_parameters_say(small):
    X, _ = small
    base = DirectSegmenter(mode="kl").decision_function(X)[0].values
    nearest = DirectSegmenter(
        mode="kl", upsampler=InterpolationUpsampler("nearest")
    ).decision_function(X)[0].values
    assert not np.array_equal(base, nearest)
    # nearest-neighbour maps are constant over each 16 x 16 patch
    assert np.all(nearest[:, :16, :16] == nearest[:, :1, :1])
    forward = DirectSegmenter(discrepancy=KLDiscrepancy("forward"))
    assert not np.array_equal(forward.decision_function(X)[0].values, base)
    no_nms = DirectSegmenter(mode="kl", normalizer=LogitNormalizer(nms=False))
    assert not np.array_equal(no_nms.decision_function(X)[0].values, base)


class _Smoothed:
    """A user discrepancy: the class ratio averaged over the affinity."""

    def __init__(self, weight=1.0):
        self.weight = weight

    def get_params(self, deep=True):
        return {"weight": self.weight}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def compute(self, q, affinity, mass=None):
        a = affinity / affinity.sum(1, keepdims=True)
        f = q * q.shape[1] * (1 if mass is None else mass[:, None])
        return f + self.weight * f @ a.T


def test_user_discrepancy_plugs_in_and_gets_the_affinity(small):
    X, y = small
    seg = DirectSegmenter(discrepancy=_Smoothed(0.5))
    labels = seg.predict(X)
    assert labels[0].shape == y[0].shape
    assert seg.decision_function(X)[0].attrs["method"] == "custom"
    assert 0 <= seg.score(X, y) <= 1
    # nested parameters of a user object are routed too
    assert seg.set_params(discrepancy__weight=2.0).discrepancy.weight == 2.0


def test_user_discrepancy_without_affinity_gets_none():
    class NoAffinity(_Smoothed):
        requires_affinity = False

        def compute(self, q, affinity, mass=None):
            assert affinity is None
            return q * mass[:, None]

    logits, _, image, classes = _arrays()
    ds = from_arrays(logits, None, image, classes)
    assert DirectSegmenter(discrepancy=NoAffinity()).predict([ds])[0].shape \
        == (32, 32)


def test_bad_user_discrepancy_output_is_an_error(small):
    X, _ = small

    class Wrong(_Smoothed):
        def compute(self, q, affinity, mass=None):
            return q[:, :3]

    class Nan(_Smoothed):
        def compute(self, q, affinity, mass=None):
            return q * np.nan

    with pytest.raises(ValueError, match="shape"):
        DirectSegmenter(discrepancy=Wrong()).predict(X)
    with pytest.raises(ValueError, match="NaN"):
        DirectSegmenter(discrepancy=Nan()).predict(X)


@pytest.mark.parametrize("params,match", [
    (dict(discrepancy=object()), "compute"),
    (dict(normalizer=TransportPath()), "normalize"),
    (dict(upsampler="passthrough"), "upsample"),
    (dict(discrepancy="skip"), "compute"),
])
def test_parts_without_their_method_are_refused(params, match):
    ds = from_arrays(*_arrays())
    with pytest.raises(TypeError, match=match):
        DirectSegmenter(**params).predict([ds])


# -- bad input ---------------------------------------------------------------


def _arrays(n=3, side=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.2, 0.02, (n, side, side))
    affinity = rng.random((side * side, side * side))
    image = rng.integers(0, 255, (8 * side, 8 * side, 3), dtype=np.uint8)
    return logits, affinity, image, [f"c{k}" for k in range(n)]


@pytest.mark.parametrize("change,err,match", [
    (lambda a: a.__setitem__(0, np.full((3, 4, 4), np.nan)), ValueError,
     "NaN"),
    (lambda a: a.__setitem__(0, np.full((3, 4, 4), np.inf)), ValueError,
     "infinite"),
    (lambda a: a.__setitem__(1, -np.ones((16, 16))), ValueError,
     "non-negative"),
    (lambda a: a.__setitem__(1, np.ones((15, 15))), ValueError,
     r"\(16, 16\)"),
    (lambda a: a.__setitem__(3, ["a", "a", "b"]), ValueError, "duplicate"),
    (lambda a: a.__setitem__(3, ["a", "b"]), ValueError, "one name per map"),
    (lambda a: a.__setitem__(3, "abc"), TypeError, "bare string"),
    (lambda a: a.__setitem__(2, np.zeros((32, 32), np.uint8)), ValueError,
     "RGB"),
    (lambda a: a.__setitem__(2, np.zeros((32, 32, 3))), TypeError, "uint8"),
])
def test_from_arrays_refuses_bad_arrays(change, err, match):
    args = list(_arrays())
    change(args)
    with pytest.raises(err, match=match):
        from_arrays(*args)


def test_fewer_than_two_classes():
    logits, affinity, image, _ = _arrays(n=1)
    with pytest.raises(ValueError, match="at least two"):
        from_arrays(logits, affinity, image, ["only"])


def test_nan_logits_in_a_hand_made_dataset_are_refused():
    ds = from_arrays(*_arrays())
    bad = ds.copy(deep=True)
    bad["logits"][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DirectSegmenter().predict([bad])


def test_missing_affinity_in_a_mode_that_needs_one():
    logits, _, image, classes = _arrays()
    ds = from_arrays(logits, None, image, classes)
    for mode in ("path", "velocity"):
        with pytest.raises(ValueError, match="affinity"):
            DirectSegmenter(mode=mode).predict([ds])
    assert DirectSegmenter(mode="kl").predict([ds])[0].shape == (32, 32)


@pytest.mark.parametrize("params,err,match", [
    (dict(mode="fast"), ValueError, "mode"),
    (dict(discrepancy=TransportVelocity(tau=0)), ValueError, "tau"),
    (dict(discrepancy=TransportVelocity(tau=-0.3)), ValueError, "tau"),
    (dict(discrepancy=TransportVelocity(tau=float("nan"))), ValueError,
     "tau"),
    (dict(discrepancy=TransportVelocity(tau=float("inf"))), ValueError,
     "tau"),
    (dict(discrepancy=TransportPath(epsilon=0)), ValueError, "epsilon"),
    (dict(discrepancy=TransportPath(epsilon=-1e-3)), ValueError, "epsilon"),
    (dict(discrepancy=TransportPath(epsilon=float("nan"))), ValueError,
     "epsilon"),
    (dict(discrepancy=TransportPath(epsilon=1e300)), ValueError, "epsilon"),
    (dict(upsampler=InterpolationUpsampler("cubic")), ValueError, "method"),
    (dict(upsampler=JointBilateralUpsampler(sigma_range=float("nan"))),
     ValueError, "sigma_range"),
    (dict(upsampler=JointBilateralUpsampler(sigma_spatial=64)), ValueError,
     "patches"),
    (dict(upsampler=JointBilateralUpsampler(sigma_spatial=float("inf"))),
     ValueError, "sigma_spatial"),
    (dict(normalizer=LogitNormalizer(method="max")), ValueError, "method"),
    (dict(normalizer=LogitNormalizer(temperature=float("nan"))), ValueError,
     "temperature"),
    (dict(discrepancy=TransportPath(n_iter=0)), ValueError, "n_iter"),
    (dict(discrepancy=TransportVelocity(n_iter=1.5)), TypeError, "n_iter"),
    (dict(discrepancy=TransportPath(score="best")), ValueError, "score"),
    (dict(discrepancy=TransportVelocity(score="best")), ValueError, "score"),
    (dict(discrepancy=TransportVelocity(affinity_topk=0)), ValueError,
     "affinity_topk"),
    (dict(normalizer=LogitNormalizer(nms="yes")), TypeError, "nms"),
    (dict(classes=["a"]), ValueError, "at least two"),
    (dict(classes="cat,dog"), TypeError, "bare string"),
    (dict(device=0), TypeError, "device"),
])
def test_bad_parameters(params, err, match):
    ds = from_arrays(*_arrays())
    with pytest.raises(err, match=match):
        DirectSegmenter(**params).predict([ds])
    with pytest.raises(err, match=match):
        DirectSegmenter(**params).fit([ds])


def test_bare_array_and_empty_list_are_refused():
    ds = from_arrays(*_arrays())
    with pytest.raises(TypeError, match="list"):
        DirectSegmenter().predict(ds["image"].values)
    with pytest.raises(ValueError, match="empty"):
        DirectSegmenter().predict([])
    with pytest.raises(TypeError, match="mixes"):
        DirectSegmenter().predict([ds, ds["image"].values])


def test_mask_errors(small):
    X, y = small
    seg = DirectSegmenter(mode="kl")
    with pytest.raises(ValueError, match="2 samples"):
        seg.score(X, y[:1])
    with pytest.raises(ValueError, match="shape"):
        seg.score(X, [y[0][:-1], y[1]])
    bad = y[0].copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match=r"outside the 5 classes"):
        seg.score(X, [bad, y[1]])
    ok = y[0].copy()
    ok[0, :5] = 255  # ignored
    assert 0 <= seg.score(X, [ok, y[1]]) <= 1
    with pytest.raises(TypeError, match="integer"):
        seg.score(X, [y[0].astype(float), y[1]])
    with pytest.raises(TypeError, match="list"):
        seg.score(X, np.stack(y))


def test_classes_that_disagree_with_the_features(small):
    X, _ = small
    with pytest.raises(ValueError, match="differ"):
        DirectSegmenter().predict(X, classes=["x", "y", "z", "u", "v"])


def test_raw_images_need_classes():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="classes"):
        DirectSegmenter().predict([img])


def test_class_masses_below_float32_range_are_empty_not_nan(small):
    """A sharp softmax leaves some classes a mass of 1e-300: in float32
    that is zero, and the path's log-mass would be -inf."""
    X, _ = small
    ds = X[0]
    logits = ds["logits"].values.astype(np.float64) * 100.0
    sharp = from_arrays(logits, ds["affinity"].values, ds["image"].values,
                        [str(c) for c in ds["class"].values])
    norm = LogitNormalizer(method="softmax", temperature=0.01)
    q, mass = norm.normalize(logits.reshape(logits.shape[0], -1))
    assert (mass > 0).any() and (mass[mass > 0] < 1e-38).any()
    for disc in (TransportPath(), TransportVelocity(), KLDiscrepancy()):
        scores = DirectSegmenter(normalizer=norm, discrepancy=disc
                                 ).decision_function([sharp])[0]
        assert np.isfinite(scores.values).all()
    with pytest.raises(ValueError, match="range of q's dtype"):
        TransportPath().compute(q[mass > 0].astype(np.float32),
                                ds["affinity"].values, mass[mass > 0])


def test_tuning_a_part_left_at_none_says_how(small):
    X, y = small
    with pytest.raises(ValueError, match=r"upsampler=JointBilateralUpsampler"):
        DirectSegmenter().set_params(upsampler__sigma_range=0.2)
    with pytest.raises(ValueError, match="discrepancy=TransportVelocity"):
        TransportVelocitySegmenter().set_params(discrepancy__tau=0.2)
    # given in the same call, or before, it works
    seg = DirectSegmenter().set_params(upsampler=JointBilateralUpsampler(),
                                       upsampler__sigma_range=0.2)
    assert seg.upsampler.sigma_range == 0.2
    assert seg.set_params(upsampler__sigma_range=0.3).upsampler.sigma_range \
        == 0.3


def test_device_and_dtype_reach_the_default_extractors_and_are_checked():
    from dsolo_sk.features import CLIPFeatures, DiffusionAttention
    from dsolo_sk.features._cache import load_count

    before = load_count()
    for bad in ("gpu", "cuda:7"):
        with pytest.raises(ValueError, match="device"):
            DirectSegmenter(device=bad).fit()
        with pytest.raises(ValueError, match="device"):
            DirectSegmenter(device=bad, classes=["a", "b"]).predict(
                [np.zeros((32, 32, 3), np.uint8)])
    assert load_count() == before  # nothing loaded
    fe = DirectSegmenter(device="cpu", dtype="float16")._feature_extractor(
        ["a", "b"])
    assert isinstance(fe.logits, CLIPFeatures)
    assert isinstance(fe.affinity, DiffusionAttention)
    for part in (fe.logits, fe.affinity):
        assert (part.device, part.dtype) == ("cpu", "float16")
    # the kl mode reads no affinity: no diffusion model is built
    kl = DirectSegmenter(mode="kl", device="cpu")._feature_extractor(["a", "b"])
    assert kl.affinity is False and kl.logits.device == "cpu"


def test_batch_size_reaches_the_feature_extractor_and_is_checked():
    fe = DirectSegmenter(batch_size=4)._feature_extractor(["a", "b"])
    assert fe.batch_size == 4
    for bad in (0, 2.5, float("nan"), True):
        with pytest.raises((ValueError, TypeError), match="batch_size"):
            DirectSegmenter(batch_size=bad).fit()
    assert len(DirectSegmenter().get_params(deep=False)) <= 12
