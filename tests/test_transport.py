"""Transport numerics against independent references (POT, scipy)."""

import numpy as np
import ot
import pytest
import scipy.sparse as sp
import torch
from scipy.special import logsumexp

from dsolo_sk.discrepancy import cost_from_affinity
from dsolo_sk.features import ColorPositionAffinity
from dsolo_sk.transport import (doubly_stochastic, doubly_stochastic_scaling,
                                lse_matmul, markov_step, repair_affinity,
                                sinkhorn_log_batched, sparsify_topk)


@pytest.fixture(scope="module")
def photo_affinity():
    from skimage import data
    return ColorPositionAffinity().compute_affinity(data.astronaut(),
                                                    (14, 14)).astype(np.float64)


def _distributions(rng, n, p, zeros=0.3):
    q = rng.random((n, p)) * (rng.random((n, p)) > zeros)
    q[:, 0] += 1e-3
    return q / q.sum(1, keepdims=True)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # POT, zeros
@pytest.mark.parametrize("cost_kind,reg", [("linear", 0.1), ("linear", 0.03),
                                           ("neglog", 0.5)])
def test_sinkhorn_matches_pot_class_by_class(photo_affinity, cost_kind, reg):
    rng = np.random.default_rng(0)
    p = photo_affinity.shape[0]
    q = _distributions(rng, 5, p)
    b = np.full(p, 1.0 / p)
    cost = cost_from_affinity(photo_affinity, cost_kind)
    log_u, log_v = sinkhorn_log_batched(q, b, cost, reg, n_iter=50)
    for c in range(q.shape[0]):
        plan = np.exp(log_u[c][:, None] - cost / reg + log_v[c][None, :])
        ref = ot.sinkhorn(q[c], b, cost, reg, method="sinkhorn_log",
                          numItermax=50, stopThr=0, warn=False)
        np.testing.assert_allclose(plan, ref, atol=1e-10, rtol=1e-7)


def test_sinkhorn_converged_plan_matches_default_pot_solver(photo_affinity):
    # well conditioned: POT's plain (non-log) solver runs; after enough
    # iterations both reach the same plan
    rng = np.random.default_rng(1)
    p = photo_affinity.shape[0]
    q = _distributions(rng, 3, p, zeros=0.0)
    b = np.full(p, 1.0 / p)
    cost = cost_from_affinity(photo_affinity, "linear")
    log_u, log_v = sinkhorn_log_batched(q, b, cost, 0.1, n_iter=500)
    for c in range(3):
        plan = np.exp(log_u[c][:, None] - cost / 0.1 + log_v[c][None, :])
        ref = ot.sinkhorn(q[c], b, cost, 0.1, numItermax=5000, stopThr=1e-12)
        assert np.abs(plan - ref).max() < 1e-4 * plan.max()
        np.testing.assert_allclose(plan.sum(1), q[c], atol=1e-9)


def test_sinkhorn_torch_equals_numpy(photo_affinity):
    rng = np.random.default_rng(2)
    p = photo_affinity.shape[0]
    q = _distributions(rng, 4, p)
    b = np.full(p, 1.0 / p)
    cost = cost_from_affinity(photo_affinity, "linear")
    lu, lv = sinkhorn_log_batched(q, b, cost, 0.1)
    tu, tv = sinkhorn_log_batched(torch.from_numpy(q), torch.from_numpy(b),
                                  torch.from_numpy(cost), 0.1)
    np.testing.assert_allclose(tv.numpy(), lv, atol=1e-9)
    finite = np.isfinite(lu)
    np.testing.assert_array_equal(finite, torch.isfinite(tu).numpy())
    np.testing.assert_allclose(tu.numpy()[finite], lu[finite], atol=1e-9)


def test_lse_matmul_exact_where_products_underflow():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 40)) * 300
    w[0, :20] = -np.inf
    k = rng.normal(size=(40, 30)) * 300
    for dtype in (np.float64, np.float32):
        out = lse_matmul(w.astype(dtype), k.astype(dtype))
        ref = logsumexp(w[:, :, None] + k[None], axis=1)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)


def test_ipf_doubly_stochastic_within_1e5_on_attention():
    # a self-attention map like the UNet's: softmax(q k^T / sqrt(d)),
    # at the paper's 15 iterations, in float32
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(784, 64)), rng.normal(size=(784, 64))
    att = torch.softmax(torch.from_numpy(q @ k.T / 8), 1).numpy()
    T = doubly_stochastic(att.astype(np.float32), n_iter=15)
    assert T.dtype == np.float32
    assert np.abs(T.sum(0) - 1).max() < 1e-5
    assert np.abs(T.sum(1) - 1).max() < 1e-5
    assert (T >= 0).all()


def test_ipf_converges_on_a_sharp_affinity(photo_affinity):
    # a sharper affinity converges more slowly: 15 iterations leave the
    # columns off, more iterations reach 1e-5
    T15 = doubly_stochastic(photo_affinity, n_iter=15)
    T300 = doubly_stochastic(photo_affinity, n_iter=300)
    err15 = np.abs(T15.sum(0) - 1).max()
    err300 = np.abs(T300.sum(0) - 1).max()
    assert err300 < 1e-5 < err15
    np.testing.assert_allclose(T300.sum(1), 1, atol=1e-12)


def test_ipf_sparse_equals_dense_when_nothing_dropped(photo_affinity):
    p = photo_affinity.shape[0]
    dense = photo_affinity
    sparse = sparsify_topk(dense, p)  # keeps every entry
    assert sparse.nnz == p * p
    r_d, c_d = doubly_stochastic_scaling(repair_affinity(dense))
    r_s, c_s = doubly_stochastic_scaling(repair_affinity(sparse))
    np.testing.assert_allclose(r_s, r_d, rtol=1e-10)
    np.testing.assert_allclose(c_s, c_d, rtol=1e-10)
    f = np.random.default_rng(0).random((7, p))
    np.testing.assert_allclose(markov_step(f, sparse, r_s, c_s),
                               markov_step(f, dense, r_d, c_d), rtol=1e-10)
    np.testing.assert_allclose(doubly_stochastic(sparse).toarray(),
                               doubly_stochastic(dense), rtol=1e-10)


def test_sparse_topk_keeps_the_largest_entries():
    rng = np.random.default_rng(4)
    a = rng.random((30, 30))
    s = sparsify_topk(a, 5).toarray()
    assert ((s > 0).sum(1) == 5).all()
    np.testing.assert_array_equal(np.sort(s, 1)[:, -5:], np.sort(a, 1)[:, -5:])


def test_repair_affinity_zero_rows_and_columns():
    a = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    fixed = repair_affinity(a)
    assert fixed[2, 2] > 0 and (fixed[:2, :2] == a[:2, :2]).all()
    T = doubly_stochastic(a)
    np.testing.assert_allclose(T.sum(0), 1, atol=1e-6)
    np.testing.assert_allclose(T.sum(1), 1, atol=1e-6)
    Ts = doubly_stochastic(sp.csr_array(a)).toarray()
    np.testing.assert_allclose(Ts, T, atol=1e-12)
