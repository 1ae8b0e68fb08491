"""Class-level suppression and per-class baselines of the normaliser."""

import numpy as np
import pytest
import torch

from dsolo_sk import LogitNormalizer
from dsolo_sk.normalization import (subtract_baseline, suppress_minor_classes,
                                     suppress_scattered_classes)


def _logits(seed=0, n=6, p=50):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p))


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2, 0.5])
def test_minor_classes_are_those_winning_few_patches(share):
    L = _logits()
    out = suppress_minor_classes(L, share)
    wins = np.bincount(L.argmax(0), minlength=L.shape[0])
    keep = (wins >= share * L.shape[1]) | (wins == wins.max())
    assert keep.any()
    np.testing.assert_array_equal(out[keep], L[keep])
    assert np.all(np.isneginf(out[~keep]))


def test_minor_class_test_reads_only_the_argmax():
    # invariant to the scale, a global offset and a per-patch offset
    L = _logits(1)
    rng = np.random.default_rng(2)
    moved = 37.0 * L - 5.0 + rng.normal(size=(1, L.shape[1]))
    a = np.isinf(suppress_minor_classes(L, 0.15)).all(1)
    b = np.isinf(suppress_minor_classes(moved, 0.15)).all(1)
    np.testing.assert_array_equal(a, b)
    assert a.any() and not a.all()


def test_centred_presence_is_unchanged_by_per_class_offsets():
    # the text bias and the global class score of CLIP's dense logits are
    # per-class offsets: they decide the raw argmax, not the centred one
    L = 0.3 * _logits(4, n=8, p=200)
    for c in range(4):  # four present classes, on a quarter each
        L[c, 50 * c:50 * (c + 1)] += 1.0
    rng = np.random.default_rng(5)
    moved = 3.0 * L + rng.normal(scale=4.0, size=(L.shape[0], 1)) - 2.0
    a = np.isinf(suppress_minor_classes(L, 0.1, centre=True)).all(1)
    b = np.isinf(suppress_minor_classes(moved, 0.1, centre=True)).all(1)
    np.testing.assert_array_equal(a, b)
    assert a.any() and not a.all()
    # the raw argmax test is moved by the same offsets
    raw_a = np.isinf(suppress_minor_classes(L, 0.1)).all(1)
    raw_b = np.isinf(suppress_minor_classes(moved, 0.1)).all(1)
    assert not np.array_equal(raw_a, raw_b)


def test_centred_presence_drops_a_flat_class_that_sits_high():
    rng = np.random.default_rng(6)
    p = 100
    L = rng.normal(scale=0.01, size=(3, p))
    L[1, :50] += 1.0   # two present classes, each on half the image
    L[2, 50:] += 1.0
    L[0] += 3.0        # a flat class above both everywhere
    assert np.isfinite(suppress_minor_classes(L, 0.05)[0]).all()
    out = suppress_minor_classes(L, 0.05, centre=True)
    assert np.isinf(out[0]).all()
    np.testing.assert_array_equal(out[1:], L[1:])


def test_centred_presence_counts_only_wins_above_the_class_level():
    # a class far below the others but for one patch: centred, it is the
    # top class wherever every other class sits a little below its mean,
    # yet stands above its own level at its one patch only
    rng = np.random.default_rng(7)
    L = rng.normal(scale=0.02, size=(4, 144))
    L[0, :72] += 0.2
    L[1, 72:] += 0.2
    L[3] = L.min() - 1.0
    L[3, 10] = L.max() + 1.0
    out = suppress_minor_classes(L, 0.01, centre=True)
    assert np.isinf(out[3]).all()
    assert np.isfinite(out[:2]).all()


def test_centre_is_checked():
    with pytest.raises(TypeError, match="centre"):
        suppress_minor_classes(_logits(), 0.1, centre="yes")


def test_the_class_winning_most_patches_always_stays():
    L = np.zeros((3, 10))
    L[0, :4] = 1.0
    L[1, 4:7] = 1.0
    L[2, 7:] = 1.0
    out = suppress_minor_classes(L, 0.99)
    assert np.isfinite(out[0]).all()
    assert np.isinf(out[1:]).all()


def test_torch_gives_the_same_classes():
    L = _logits(3)
    a = suppress_minor_classes(L, 0.15)
    b = suppress_minor_classes(torch.tensor(L), 0.15)
    assert isinstance(b, torch.Tensor)
    np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), float("inf")])
def test_min_share_is_validated(bad):
    with pytest.raises(ValueError, match="min_share"):
        suppress_minor_classes(_logits(), bad)
    with pytest.raises(ValueError, match="min_share"):
        LogitNormalizer(min_share=bad).normalize(_logits())


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_baseline_is_the_quantile_of_the_finite_entries(q):
    L = _logits(4, p=37)
    L[1, :5] = -np.inf
    L[3] = -np.inf
    out = subtract_baseline(L, q)
    assert np.array_equal(np.isfinite(out), np.isfinite(L))
    for c in range(L.shape[0]):
        ok = np.isfinite(L[c])
        if ok.any():
            np.testing.assert_allclose(
                out[c, ok], L[c, ok] - np.quantile(L[c, ok], q))
    t = subtract_baseline(torch.tensor(L), q).numpy()
    np.testing.assert_allclose(np.where(np.isfinite(t), t, 0),
                               np.where(np.isfinite(out), out, 0))


@pytest.mark.parametrize("bad", [-0.5, 1.5, float("nan")])
def test_baseline_is_validated(bad):
    with pytest.raises(ValueError, match="baseline"):
        LogitNormalizer(baseline=bad).normalize(_logits())


@pytest.mark.parametrize("nms", [True, False])
def test_a_baseline_makes_the_normaliser_blind_to_per_class_offsets(nms):
    L = _logits(5)
    rng = np.random.default_rng(6)
    moved = 12.0 * L + rng.normal(scale=3.0, size=(L.shape[0], 1))
    norm = LogitNormalizer(nms=nms, baseline=0.25)
    q, m = norm.normalize(L)
    q2, m2 = norm.normalize(moved)
    np.testing.assert_allclose(q, q2, atol=1e-12)
    np.testing.assert_allclose(m, m2, atol=1e-12)


def test_dropped_classes_get_no_mass():
    L = np.array([[1.0, 1.0, 1.0, 0.0],
                  [0.0, 0.0, 0.0, 1.0],
                  [0.5, 0.5, 0.5, 0.5]])
    for norm in (LogitNormalizer(min_share=0.3),
                 LogitNormalizer(min_share=0.3, nms=False, baseline=0.25),
                 LogitNormalizer(min_share=0.3, method="softmax"),
                 LogitNormalizer(min_share=0.3, method="contrast",
                                 nms=False)):
        q, m = norm.normalize(L)
        assert m[0] > 0 and m[1] == 0 and m[2] == 0, norm
        np.testing.assert_allclose(q[0].sum(), 1.0)


def test_off_baseline_is_the_median_where_another_class_wins():
    L = _logits(7, n=4, p=60)
    L[2] = -np.inf
    out = subtract_baseline(L, "off")
    win = L.argmax(0)
    for c in (0, 1, 3):
        off = win != c
        np.testing.assert_allclose(out[c], L[c] - np.median(L[c, off]))
    assert np.isinf(out[2]).all()
    t = subtract_baseline(torch.tensor(L), "off").numpy()
    np.testing.assert_allclose(np.where(np.isfinite(t), t, 0),
                               np.where(np.isfinite(out), out, 0))


def test_off_baseline_does_not_cancel_a_class_covering_most_patches():
    # class 0 covers 80 % of the patches, 1 above its level there; a
    # median over all patches would cancel it, the level where it loses
    # does not
    rng = np.random.default_rng(8)
    L = rng.normal(scale=0.1, size=(3, 100))
    L[0, :80] += 1.0
    L[1, 80:] += 1.0
    L[0] += 0.5  # a class bias, half the signal
    off = subtract_baseline(L, "off")
    assert (off.argmax(0)[:80] == 0).mean() > 0.9
    assert (off.argmax(0)[80:] == 1).mean() > 0.9
    med = subtract_baseline(L, 0.5)
    assert (med.argmax(0)[:80] == 0).mean() < 0.7


def test_baselines_are_scale_free():
    L = _logits(9)
    for baseline in ("off", 0.25):
        np.testing.assert_allclose(subtract_baseline(25.0 * L - 3.0,
                                                     baseline),
                                   25.0 * subtract_baseline(L, baseline),
                                   atol=1e-9)


def test_spread_leaves_out_suppressed_entries():
    from dsolo_sk.normalization import logit_spread

    L = _logits(11)
    with_dropped = np.vstack([L, np.full((2, L.shape[1]), -np.inf)])
    assert logit_spread(with_dropped) == pytest.approx(logit_spread(L))


@pytest.mark.parametrize("mode", ["kl", "path", "velocity"])
def test_an_absent_class_winning_scattered_patches_is_never_predicted(mode):
    from dsolo_sk import DirectSegmenter
    from dsolo_sk.datasets import make_scenes
    from dsolo_sk.features import from_arrays

    X, _ = make_scenes(n_scenes=1, n_classes=6, image_size=192,
                       random_state=0)
    ds = X[0]
    L = ds["logits"].values.astype(np.float64)
    n, rows, cols = L.shape
    # an extra class, far below the others but for 1 % of the patches,
    # scattered, where noise lifts it to the top
    extra = np.full((1, rows, cols), L.min() - 1.0)
    rng = np.random.default_rng(0)
    spots = rng.choice(rows * cols, max(1, rows * cols // 100),
                       replace=False)
    extra.reshape(-1)[spots] = L.max() + 1.0
    moved = from_arrays(np.concatenate([L, extra]).astype(np.float32),
                        ds["affinity"].values, ds["image"].values,
                        [str(c) for c in ds["class"].values] + ["extra"])
    labels = DirectSegmenter(mode=mode, progress=False).predict([moved])[0]
    assert not np.any(labels == n)
    # without the class-level suppression the raw argmax keeps it
    assert np.any(moved["logits"].values.argmax(0) == n)


def _scene(seed=0):
    from dsolo_sk.datasets import make_scenes

    X, _ = make_scenes(n_scenes=1, n_classes=6, image_size=192,
                       random_state=seed)
    ds = X[0]
    L = ds["logits"].values.astype(np.float64)
    return ds, L.reshape(L.shape[0], -1), ds["affinity"].values


def _with_extra(L, patches, margin):
    """`L` and one more class: a confuser at every patch's mean logit,
    lifted above the top class by `margin` (a share of the logits' range)
    on `patches`."""
    extra = L.mean(0, keepdims=True)
    extra[0, patches] = L.max(0)[patches] + margin * (L.max() - L.min())
    return np.vstack([L, extra])


def _ratio(L):
    q, m = LogitNormalizer(nms=False, baseline="off",
                           min_share=0.0).normalize(L)
    return q * (L.shape[1] * m)[:, None]


def test_scattered_wins_are_outvoted_but_a_region_stays():
    _, L, A = _scene()
    p = L.shape[1]
    rng = np.random.default_rng(0)
    # 10 % of the patches: above min_share, so the argmax test keeps both
    scattered = rng.choice(p, p // 10, replace=False)
    noisy = _with_extra(L, scattered, 0.02)  # wins by a small margin
    assert np.isfinite(suppress_minor_classes(noisy, 0.03)[-1]).all()
    out = suppress_scattered_classes(noisy, _ratio(noisy), A, 0.03)
    assert np.isneginf(out[-1]).all()
    np.testing.assert_array_equal(out[:-1], noisy[:-1])
    # the same number of patches as one block of rows: a region
    block = np.arange(p // 10)
    present = _with_extra(L, block, 0.02)
    out = suppress_scattered_classes(present, _ratio(present), A, 0.03)
    assert np.isfinite(out[-1]).all()


def test_scattered_test_keeps_dropped_classes_dropped_and_one_class():
    _, L, A = _scene(1)
    dropped = suppress_minor_classes(L, 0.2)
    gone = np.isneginf(dropped).all(1)
    assert gone.any()
    out = suppress_scattered_classes(dropped, _ratio(dropped), A, 0.99)
    assert np.isneginf(out[gone]).all()
    assert np.isfinite(out).all(1).sum() == 1
    assert suppress_scattered_classes(L, _ratio(L), A, 0.0) is L


def test_scattered_test_on_tensors_and_sparse_affinity():
    import scipy.sparse as sp

    _, L, A = _scene(2)
    f = _ratio(L)
    a = suppress_scattered_classes(L, f, A, 0.1)
    b = suppress_scattered_classes(torch.tensor(L), torch.tensor(f),
                                   torch.tensor(A), 0.1)
    c = suppress_scattered_classes(L, f, sp.csr_array(A), 0.1)
    assert isinstance(b, torch.Tensor)
    np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(a, c)
    with pytest.raises(TypeError, match="sparse"):
        suppress_scattered_classes(torch.tensor(L), torch.tensor(f),
                                   sp.csr_array(A), 0.1)


def test_scattered_test_checks_its_inputs():
    _, L, A = _scene()
    f = _ratio(L)
    with pytest.raises(ValueError, match="affinity must have shape"):
        suppress_scattered_classes(L, f, A[:-1, :-1], 0.1)
    with pytest.raises(ValueError, match="must be non-negative"):
        suppress_scattered_classes(L, f, -A, 0.1)
    with pytest.raises(ValueError, match="ratio must have the shape"):
        suppress_scattered_classes(L, f[:, :-1], A, 0.1)
    bad = A.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        suppress_scattered_classes(L, f, bad, 0.1)
    with pytest.raises(ValueError, match="min_share"):
        suppress_scattered_classes(L, f, A, float("nan"))


def test_diffused_presence_needs_the_affinity_and_a_known_name():
    _, L, A = _scene()
    norm = LogitNormalizer(presence="diffused")
    assert norm.requires_affinity
    assert not LogitNormalizer().requires_affinity
    with pytest.raises(ValueError, match="normalize\\(logits, affinity\\)"):
        norm.normalize(L)
    with pytest.raises(ValueError, match="presence"):
        LogitNormalizer(presence="coherent").normalize(L, A)


def test_diffused_presence_is_scale_free_and_renormalises():
    _, L, A = _scene(3)
    rng = np.random.default_rng(3)
    noisy = _with_extra(L, rng.choice(L.shape[1], L.shape[1] // 10,
                                      replace=False), 0.02)
    norm = LogitNormalizer(nms=False, baseline="off", presence="diffused")
    q, m = norm.normalize(noisy, A)
    assert m[-1] == 0 and np.allclose(m.sum(), 1.0)
    assert np.allclose(q[m > 0].sum(1), 1.0)
    q2, m2 = norm.normalize(25.0 * noisy - 3.0, A)
    np.testing.assert_allclose(q2, q, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m2, m, rtol=1e-9, atol=1e-12)
    # the argmax presence alone keeps the extra class
    assert LogitNormalizer(nms=False, baseline="off").normalize(noisy)[1][-1] > 0


def test_a_normaliser_reading_the_affinity_gets_it_in_every_mode():
    from dsolo_sk import DirectSegmenter, KLDiscrepancy

    ds, L, A = _scene()
    norm = LogitNormalizer(presence="diffused")
    seg = DirectSegmenter(normalizer=norm, discrepancy=KLDiscrepancy(),
                          progress=False)
    assert seg._needs_affinity
    assert DirectSegmenter(mode="path")._needs_affinity
    assert not DirectSegmenter(mode="kl")._needs_affinity
    labels = seg.predict([ds])[0]
    assert labels.shape == ds["image"].shape[:2]
    with pytest.raises(ValueError, match="affinity"):
        seg.predict([ds.drop_vars("affinity")])

    class Recorder(KLDiscrepancy):
        def compute(self, q, affinity=None, mass=None):
            seen.append((q.dtype, affinity))
            return super().compute(q, affinity, mass)

    # the discrepancy gets float32 distributions, as from any normaliser,
    # and no affinity when it reads none
    seen = []
    DirectSegmenter(normalizer=norm, discrepancy=Recorder(),
                    progress=False).predict([ds])
    assert seen[0][0] == np.float32 and seen[0][1] is None


def test_the_path_default_never_predicts_a_scattered_confuser():
    from dsolo_sk import DirectSegmenter
    from dsolo_sk.features import from_arrays

    ds, L, A = _scene(4)
    n, rows, cols = ds["logits"].shape
    rng = np.random.default_rng(4)
    noisy = _with_extra(L, rng.choice(rows * cols, rows * cols // 10,
                                      replace=False), 0.02)
    moved = from_arrays(noisy.reshape(n + 1, rows, cols).astype(np.float32),
                        A, ds["image"].values,
                        [str(c) for c in ds["class"].values] + ["extra"])
    labels = DirectSegmenter(mode="path", progress=False).predict([moved])[0]
    assert not np.any(labels == n)
    # with the argmax presence test the confuser keeps pixels
    argmax = DirectSegmenter(
        mode="path", progress=False,
        normalizer=LogitNormalizer(nms=False, baseline="off"))
    assert np.any(argmax.predict([moved])[0] == n)


def test_mean_baseline_makes_the_distributions_offset_free():
    from dsolo_sk import LogitNormalizer

    rng = np.random.default_rng(4)
    L = rng.normal(size=(5, 40))
    b = rng.normal(scale=10.0, size=(5, 1))  # a per-class offset
    norm = LogitNormalizer(nms=False, method="softmax", temperature=2.0,
                           temperature_unit="spread", min_share=0.0,
                           baseline="mean")
    q, m = norm.normalize(L)
    q2, m2 = norm.normalize(L + b)
    np.testing.assert_allclose(q2, q, atol=1e-12)
    np.testing.assert_allclose(m2, m, atol=1e-12)
    # keeping part of each class's level breaks the invariance, by design
    q3, m3 = norm.set_params(baseline_weight=0.9).normalize(L + b)
    assert not np.allclose(m3, m)
    with pytest.raises(ValueError, match="baseline_weight"):
        norm.set_params(baseline_weight=1.5).normalize(L)


def test_suppress_minor_scores_drops_the_smallest_winner_first():
    from dsolo_sk.discrepancy import TransportVelocity, suppress_minor_scores

    s = np.array([[3., 3., 3., 0., 0.], [1., 1., 1., 1., 2.],
                  [0., 0., 0., 2., 1.]])
    np.testing.assert_array_equal(suppress_minor_scores(s, 0.3).argmax(0),
                                  [0, 0, 0, 2, 2])
    # invariant to a scale and a common offset of the scores
    np.testing.assert_array_equal(
        suppress_minor_scores(7 * s - 3, 0.3).argmax(0), [0, 0, 0, 2, 2])
    assert suppress_minor_scores(s, 0.0) is s
    with pytest.raises(ValueError, match="min_share"):
        suppress_minor_scores(s, float("nan"))
    with pytest.raises(ValueError, match="min_share"):
        TransportVelocity(min_share=1.0).compute(
            np.full((2, 4), 0.25), np.ones((4, 4)))


def test_transport_path_drops_the_classes_winning_few_patches():
    from dsolo_sk.discrepancy import TransportPath, suppress_minor_scores

    rng = np.random.default_rng(9)
    q = rng.random((6, 40)) ** 4
    q /= q.sum(1, keepdims=True)
    A = rng.random((40, 40))
    A = A + A.T
    full = TransportPath().compute(q, A)
    wins = np.bincount(full.argmax(0), minlength=6)
    share = (np.sort(wins)[1] + 0.5) / 40   # the smallest winner is below
    pruned = TransportPath(min_share=share).compute(q, A)
    np.testing.assert_array_equal(pruned, suppress_minor_scores(full, share))
    assert np.bincount(pruned.argmax(0), minlength=6).min() == 0
    assert (pruned.argmax(0) != full.argmax(0)).any()
    with pytest.raises(ValueError, match="min_share"):
        TransportPath(min_share=float("nan")).compute(q, A)


def test_the_outside_baseline_is_invariant_to_per_class_offsets():
    rng = np.random.default_rng(8)
    L = 0.3 * rng.normal(size=(5, 120))
    L[0, :60] += 1.0
    L[1, 60:] += 1.0
    b = rng.normal(scale=3.0, size=(5, 1))
    np.testing.assert_allclose(subtract_baseline(L + b, "outside"),
                               subtract_baseline(L, "outside"), atol=1e-12)
    # the raw argmax of "off" moves with the offsets
    assert not np.allclose(subtract_baseline(L + b, "off"),
                           subtract_baseline(L, "off"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_positive_infinite_logits_are_refused(bad):
    from dsolo_sk.normalization import normalize_logits

    L = _logits()
    L[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        LogitNormalizer().normalize(L)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        normalize_logits(L)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        suppress_scattered_classes(L, np.ones_like(L), np.ones((50, 50)), 0.1)
    # -inf marks a suppressed entry and stays valid
    L[2, 3] = -np.inf
    q, m = LogitNormalizer().normalize(L)
    assert np.isfinite(q).all() and np.isfinite(m).all()


@pytest.mark.parametrize("ratio", [-1.0, np.nan, np.inf])
def test_scattered_class_ratios_must_be_finite_and_non_negative(ratio):
    L = _logits()
    f = np.ones_like(L)
    f[0, 0] = ratio
    with pytest.raises(ValueError, match="ratio"):
        suppress_scattered_classes(L, f, np.ones((50, 50)), 0.1)


@pytest.mark.parametrize("n_iter", [0, 2.5, 10 ** 9, np.nan])
def test_scattered_class_iterations_are_bounded(n_iter):
    from dsolo_sk.transport import doubly_stochastic_scaling

    L = _logits()
    with pytest.raises((ValueError, TypeError), match="n_iter"):
        suppress_scattered_classes(L, np.ones_like(L), np.ones((50, 50)),
                                   0.1, n_iter=n_iter)
    with pytest.raises((ValueError, TypeError), match="n_iter"):
        doubly_stochastic_scaling(np.ones((4, 4)), n_iter)


def test_centred_presence_falls_back_to_the_argmax_on_constant_logits():
    # constant over the image: no class stands out, the argmax decides
    L = np.repeat(np.array([[0.2], [0.23], [0.18]]), 6, axis=1)
    out = suppress_minor_classes(L, 0.1, centre=True)
    np.testing.assert_array_equal(np.isfinite(out).all(1),
                                  [False, True, False])
