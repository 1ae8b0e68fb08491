"""Discrepancy objects: math, invariants, numerical soundness."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from dsolo_sk import KLDiscrepancy, TransportPath, TransportVelocity
from dsolo_sk.transport import sparsify_topk


def two_regions(p_side=6, leak=1e-3):
    """A grid split into left and right halves with a clean affinity."""
    grid = np.zeros((p_side, p_side), int)
    grid[:, p_side // 2:] = 1
    lab = grid.ravel()
    affinity = (lab[:, None] == lab[None, :]).astype(float) + leak
    return lab, affinity


def noisy_class_distributions(lab, rng, flips=0.25):
    """NMS-like distributions: each patch won by its class, some flipped."""
    p = lab.size
    win = lab.copy()
    flip = rng.random(p) < flips
    win[flip] = 1 - win[flip]
    w = np.zeros((2, p))
    w[win, np.arange(p)] = rng.uniform(0.5, 1.0, p)
    mass = w.sum(1) / w.sum()
    return w / w.sum(1, keepdims=True), mass


@pytest.mark.parametrize("disc", [TransportPath(), TransportVelocity(),
                                  TransportPath(cost="neglog"),
                                  TransportPath(score="cost"),
                                  TransportVelocity(score="steps")])
def test_two_region_scene_recovered_exactly(disc):
    rng = np.random.default_rng(0)
    lab, affinity = two_regions()
    q, mass = noisy_class_distributions(lab, rng)
    raw = np.argmax(q * mass[:, None], axis=0)
    assert (raw != lab).sum() > 3  # the input is really noisy
    scores = disc.compute(q, affinity, mass)
    np.testing.assert_array_equal(np.argmax(scores, axis=0), lab)


def test_kl_forward_and_reverse_terms():
    q = np.array([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    fwd = KLDiscrepancy("forward").compute(q)
    np.testing.assert_allclose(fwd[0], [0.5 * np.log(2), 0.5 * np.log(2),
                                        0, 0])
    # summing the forward terms gives KL(q || uniform)
    kl = (q[1] * np.log(q[1] * 4)).sum()
    np.testing.assert_allclose(fwd[1].sum(), kl)
    rev = KLDiscrepancy("reverse").compute(q)
    np.testing.assert_allclose(-rev[1].sum(), (0.25 * np.log(0.25 / q[1])).sum())
    assert np.isfinite(rev).all()


def test_mass_enters_the_scores():
    lab, affinity = two_regions()
    q = np.vstack([lab == 0, lab == 0]).astype(float)
    q /= q.sum(1, keepdims=True)
    for disc in (TransportPath(), TransportVelocity(), KLDiscrepancy()):
        s = disc.compute(q, affinity, np.array([0.8, 0.2]))
        assert (s[0, lab == 0] > s[1, lab == 0]).all(), type(disc).__name__


def test_path_torch_and_numpy_agree():
    rng = np.random.default_rng(1)
    lab, affinity = two_regions()
    q, mass = noisy_class_distributions(lab, rng)
    disc = TransportPath()
    ref = disc.compute(q, affinity, mass)
    out = disc.compute(torch.from_numpy(q), torch.from_numpy(affinity),
                       torch.from_numpy(mass))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)
    out32 = disc.compute(torch.from_numpy(q).float(),
                         torch.from_numpy(affinity).float())
    assert out32.dtype == torch.float32


def test_velocity_sparse_equals_dense_when_nothing_dropped():
    rng = np.random.default_rng(2)
    lab, affinity = two_regions()
    q, mass = noisy_class_distributions(lab, rng)
    disc = TransportVelocity()
    dense = disc.compute(q, affinity, mass)
    sparse = disc.compute(q, sparsify_topk(affinity, affinity.shape[0]), mass)
    np.testing.assert_allclose(sparse, dense, rtol=1e-10, atol=1e-12)
    # dropping the weak links between the regions keeps them apart
    top = disc.compute(q, sparsify_topk(affinity, lab.size // 2), mass)
    np.testing.assert_array_equal(top.argmax(0), lab)


def test_velocity_convergence_rule():
    # a state that is already uniform converges at the first step
    p = 16
    q = np.full((1, p), 1.0 / p)
    s = TransportVelocity(score="weighted").compute(q, np.ones((p, p)))
    np.testing.assert_allclose(s, 1.0)  # velocity 1/1 times f0 = 1
    # tau larger than any change: state after one step
    lab, affinity = two_regions(4)
    q = np.eye(p)[:2]
    big = TransportVelocity(tau=1e6).compute(q, affinity)
    small = TransportVelocity(tau=1e-9, max_steps=3, score="state").compute(
        q, affinity)
    steps3 = TransportVelocity(score="steps", n_steps=3).compute(q, affinity)
    steps1 = TransportVelocity(score="steps", n_steps=1).compute(q, affinity)
    np.testing.assert_allclose(big, steps1)
    np.testing.assert_allclose(small, steps3)


@pytest.mark.parametrize("epsilon", [0.01, 0.03])
@pytest.mark.parametrize("cost", ["linear", "neglog"])
def test_no_nan_for_small_epsilon(epsilon, cost):
    rng = np.random.default_rng(3)
    lab, affinity = two_regions(8)
    affinity[3] = 0.0  # a patch without affinity
    affinity[:, 5] = 0.0
    q, mass = noisy_class_distributions(lab, rng)
    for score in ("potential", "transport", "cost"):
        s = TransportPath(epsilon=epsilon, cost=cost, score=score).compute(
            q, affinity, mass)
        assert np.isfinite(s).all(), score


def test_thousand_classes_and_zero_rows_are_finite():
    rng = np.random.default_rng(4)
    p, n = 64, 1000
    affinity = rng.random((p, p))
    affinity[[0, 7]] = 0.0
    affinity[:, 9] = 0.0
    w = rng.random((n, p)) * (rng.random((n, p)) < 0.05)
    w[:, 1] += 1e-3
    q = w / w.sum(1, keepdims=True)
    mass = w.sum(1) / w.sum()
    for disc in (TransportPath(epsilon=0.01), TransportVelocity(),
                 KLDiscrepancy()):
        s = disc.compute(q.astype(np.float32), affinity.astype(np.float32),
                         mass)
        assert s.shape == (n, p)
        assert np.isfinite(s).all(), type(disc).__name__


@pytest.mark.parametrize("bad,match", [
    (dict(q=np.array([[0.5, 0.6]])), "sum to one"),
    (dict(q=np.array([[np.nan, 1.0]])), "NaN"),
    (dict(q=np.array([[-0.5, 1.5]])), "non-negative"),
    (dict(affinity=np.ones((3, 3))), r"shape \(2, 2\)"),
    (dict(affinity=-np.ones((2, 2))), "non-negative"),
    (dict(affinity=None), "needs an affinity"),
    (dict(mass=np.array([1.0, 2.0])), "one per class"),
    (dict(mass=np.array([0.0])), "positive"),
])
def test_bad_input_messages(bad, match):
    args = dict(q=np.array([[0.5, 0.5]]), affinity=np.ones((2, 2)),
                mass=None)
    args.update(bad)
    for disc in (TransportPath(), TransportVelocity()):
        with pytest.raises(ValueError, match=match):
            disc.compute(**args)


@pytest.mark.parametrize("disc,param,value,err", [
    (TransportPath, "epsilon", 0.0, ValueError),
    (TransportPath, "epsilon", -1.0, ValueError),
    (TransportPath, "n_iter", 0, ValueError),
    (TransportPath, "n_iter", 2.5, TypeError),
    (TransportPath, "score", "best", ValueError),
    (TransportVelocity, "tau", 0.0, ValueError),
    (TransportVelocity, "tau", "0.3", TypeError),
    (TransportVelocity, "score", "fast", ValueError),
    (KLDiscrepancy, "direction", "sideways", ValueError),
])
def test_bad_parameters(disc, param, value, err):
    with pytest.raises(err, match=param):
        disc(**{param: value}).compute(np.array([[0.5, 0.5]]), np.ones((2, 2)))


def test_sparse_affinity_for_path_is_densified():
    lab, affinity = two_regions()
    q = np.vstack([lab == 0, lab == 1]).astype(float)
    q /= q.sum(1, keepdims=True)
    a = TransportPath().compute(q, sp.csr_array(affinity))
    b = TransportPath().compute(q, affinity)
    np.testing.assert_allclose(a, b)
