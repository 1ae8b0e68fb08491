"""DirectSegmenter on precomputed features: method, API and input errors."""

import numpy as np
import pytest
import xarray as xr

from dsolo_sk import (DirectSegmenter, TransportPathSegmenter,
                      TransportVelocitySegmenter)
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
    raw = DirectSegmenter(mode="raw", upsample="bilinear").score(X, y)
    kl_jbu = DirectSegmenter(mode="kl").score(X, y)
    path = DirectSegmenter(mode="path").score(X, y)
    vel = DirectSegmenter(mode="velocity").score(X, y)
    plain = DirectSegmenter(mode="velocity", velocity_score="steps").score(
        X, y)
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
    b = DirectSegmenter(mode="velocity",
                        affinity_topk=p).decision_function(X)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.values, v.values, rtol=1e-4, atol=1e-5)


def test_fixed_mode_segmenters_expose_their_parameters_only(small):
    X, _ = small
    path = TransportPathSegmenter(epsilon=0.2)
    vel = TransportVelocitySegmenter(tau=0.5)
    assert "mode" not in path.get_params() and "tau" not in path.get_params()
    assert "epsilon" not in vel.get_params()
    assert "mode" not in vel.get_params()
    np.testing.assert_array_equal(
        path.predict(X)[0],
        DirectSegmenter(mode="path", epsilon=0.2).predict(X)[0])
    np.testing.assert_array_equal(
        vel.predict(X)[0],
        DirectSegmenter(mode="velocity", tau=0.5).predict(X)[0])
    with pytest.raises(ValueError):
        path.set_params(mode="velocity")


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
    (dict(tau=0), ValueError, "tau"),
    (dict(tau=-0.3), ValueError, "tau"),
    (dict(epsilon=0), ValueError, "epsilon"),
    (dict(epsilon=-1e-3), ValueError, "epsilon"),
    (dict(upsample="cubic"), ValueError, "upsample"),
    (dict(normalization="max"), ValueError, "normalization"),
    (dict(sinkhorn_iter=0), ValueError, "sinkhorn_iter"),
    (dict(ipf_iter=1.5), TypeError, "ipf_iter"),
    (dict(path_score="best"), ValueError, "path_score"),
    (dict(velocity_score="best"), ValueError, "velocity_score"),
    (dict(affinity_topk=0), ValueError, "affinity_topk"),
    (dict(nms="yes"), TypeError, "nms"),
    (dict(classes=["a"]), ValueError, "at least two"),
    (dict(classes="cat,dog"), TypeError, "bare string"),
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
