"""Batched transport numerics: doubly stochastic scaling and Sinkhorn.

These routines work on all classes at once with one shared P x P matrix:
the state is an (N, P) array and every step is a matrix product, so memory
stays O(P^2 + N P) and no per-class P x P tensor is ever built. They take
numpy arrays or torch tensors alike through POT's backend
(:func:`ot.backend.get_backend`), and the doubly stochastic scaling and the
Markov steps also take a :mod:`scipy.sparse` affinity.

Why hand-written: POT's :func:`ot.sinkhorn` batches over several target
histograms only, and its log-domain solver loops over them in Python while
building a P x P array per histogram and iteration. Here every class has
its own source histogram and the kernel is shared, so one log-domain
iteration is two matrix products. POT's Sinkhorn also takes a cost and
builds a dense kernel from it, whereas the doubly stochastic scaling of an
attention matrix must use that matrix itself (possibly sparse) as the
kernel.
"""

import numbers

import numpy as np
import scipy.sparse as sp
from ot.backend import get_backend

from ._validation import check_scalar

__all__ = ["repair_affinity", "doubly_stochastic_scaling",
           "doubly_stochastic", "markov_step", "ShiftedKernel", "lse_matmul",
           "sinkhorn_log_batched", "sparsify_topk"]


def _backend(*arrays):
    return get_backend(*[a for a in arrays if a is not None
                         and not sp.issparse(a)])


def _check_affinity(affinity, n_patches, who):
    """`affinity` after checking it is a finite, non-negative (P, P)
    array (dense, torch or scipy.sparse) for `n_patches`; `who` names the
    caller in the message for a missing one."""
    if affinity is None:
        raise ValueError(
            f"{who} needs an affinity between patches of shape "
            f"({n_patches}, {n_patches}); pass one (for example from "
            "dsolo_sk.features.ColorPositionAffinity)."
        )
    if affinity.ndim != 2 or affinity.shape != (n_patches, n_patches):
        raise ValueError(
            f"affinity must have shape ({n_patches}, {n_patches}) to match "
            f"the {n_patches} patches, got {tuple(affinity.shape)}."
        )
    data = affinity.data if sp.issparse(affinity) else affinity
    nx = get_backend(data)
    if bool(nx.any(~nx.isfinite(data))):
        raise ValueError("affinity holds NaN or infinite values.")
    if bool(nx.any(data < 0)):
        raise ValueError("affinity must be non-negative.")
    return affinity


def repair_affinity(affinity):
    """Give every patch without affinity a self-loop.

    A patch whose row or column of the affinity is all zero cannot be
    scaled to a stochastic row or column. Such a patch is treated as a
    region of its own: its diagonal entry is set to the mean non-zero row
    sum, so the scaled matrix keeps it in place.

    Parameters
    ----------
    affinity : ndarray, torch.Tensor or scipy.sparse matrix of shape (P, P)
        Non-negative affinity.

    Returns
    -------
    affinity : same type, shape (P, P)
        A copy when a repair was needed, the input otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.transport import repair_affinity
    >>> repair_affinity(np.array([[1., 1., 0.], [1., 1., 0.], [0., 0., 0.]]))
    array([[1., 1., 0.],
           [1., 1., 0.],
           [0., 0., 2.]])
    """
    if sp.issparse(affinity):
        a = sp.csr_array(affinity)
        rows = np.asarray(a.sum(axis=1)).ravel()
        cols = np.asarray(a.sum(axis=0)).ravel()
        empty = (rows <= 0) | (cols <= 0)
        if not empty.any():
            return a
        fill = rows[rows > 0].mean() if (rows > 0).any() else 1.0
        diag = np.where(empty, fill, 0.0).astype(a.dtype)
        return (a + sp.diags_array(diag, format="csr")).tocsr()
    nx = _backend(affinity)
    rows = nx.sum(affinity, 1)
    cols = nx.sum(affinity, 0)
    empty = (rows <= 0) | (cols <= 0)
    if not bool(nx.any(empty)):
        return affinity
    pos = rows > 0
    fill = nx.sum(rows * pos) / max(float(nx.sum(pos * 1.0)), 1.0)
    if float(fill) <= 0:
        fill = 1.0
    diag = nx.where(empty, fill + 0 * rows, 0 * rows)
    return affinity + nx.diag(diag)


def _matvec_right(affinity, x):
    """``affinity @ x`` for dense or sparse `affinity` and 1-D `x`."""
    if sp.issparse(affinity):
        return affinity @ x
    return _backend(affinity).dot(affinity, x)


def _matvec_left(x, affinity):
    """``x @ affinity`` for dense or sparse `affinity`; `x` is 1-D or 2-D."""
    if sp.issparse(affinity):
        return np.asarray((affinity.T @ x.T).T)
    return _backend(affinity).dot(x, affinity)


# the most iterations of the proportional fitting: it converges in tens
_MAX_SCALING_ITER = 100_000


def _check_scaling_iter(n_iter):
    """The checked iteration count of the proportional fitting."""
    return check_scalar(n_iter, "n_iter", target_type=numbers.Integral,
                        min_val=1, max_val=_MAX_SCALING_ITER)


def doubly_stochastic_scaling(affinity, n_iter=15):
    """Iterative proportional fitting of a non-negative matrix.

    Finds positive vectors ``r`` and ``c`` such that
    ``T = diag(r) A diag(c)`` has unit row and column sums (Sinkhorn-Knopp):
    alternately ``c <- 1 / (A^T r)`` and ``r <- 1 / (A c)``. The last update
    is on ``r``, so rows of ``T`` sum to one exactly and columns to within
    the convergence of `n_iter` iterations.

    Parameters
    ----------
    affinity : ndarray, torch.Tensor or scipy.sparse matrix of shape (P, P)
        Non-negative affinity, repaired with :func:`repair_affinity`.
    n_iter : int, default=15
        Number of (column, row) update pairs, at most 100 000.

    Returns
    -------
    r, c : arrays of shape (P,)
        Row and column scalings.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.transport import doubly_stochastic_scaling
    >>> A = np.array([[2., 1.], [1., 3.]])
    >>> r, c = doubly_stochastic_scaling(A, n_iter=50)
    >>> T = r[:, None] * A * c[None, :]
    >>> np.allclose(T.sum(0), 1) and np.allclose(T.sum(1), 1)
    True
    """
    _check_scaling_iter(n_iter)
    if sp.issparse(affinity):
        p = affinity.shape[0]
        r = np.ones(p, dtype=affinity.dtype)
        for _ in range(n_iter):
            c = 1.0 / _matvec_left(r, affinity)
            r = 1.0 / _matvec_right(affinity, c)
        return r, c
    nx = _backend(affinity)
    r = nx.ones((affinity.shape[0],), type_as=affinity)
    c = r
    for _ in range(n_iter):
        c = 1.0 / nx.dot(r, affinity)
        r = 1.0 / nx.dot(affinity, c)
    return r, c


def doubly_stochastic(affinity, n_iter=15):
    """Doubly stochastic transition matrix of an affinity by IPF.

    ``T = diag(r) A diag(c)`` with the scalings of
    :func:`doubly_stochastic_scaling`, after :func:`repair_affinity`.

    Parameters
    ----------
    affinity : ndarray, torch.Tensor or scipy.sparse matrix of shape (P, P)
        Non-negative affinity.
    n_iter : int, default=15
        IPF iterations.

    Returns
    -------
    T : same type as `affinity`, shape (P, P)

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.transport import doubly_stochastic
    >>> T = doubly_stochastic(np.random.default_rng(0).random((5, 5)))
    >>> bool(np.abs(T.sum(0) - 1).max() < 1e-5)
    True
    """
    affinity = repair_affinity(affinity)
    r, c = doubly_stochastic_scaling(affinity, n_iter)
    if sp.issparse(affinity):
        return sp.csr_array(sp.diags_array(r) @ affinity @ sp.diags_array(c))
    return r[:, None] * affinity * c[None, :]


def markov_step(state, affinity, r, c):
    """One step ``f <- f T`` of the chain ``T = diag(r) A diag(c)``.

    Parameters
    ----------
    state : array of shape (N, P)
        One row per class.
    affinity : ndarray, torch.Tensor or scipy.sparse matrix of shape (P, P)
        The (repaired) affinity ``A``; ``T`` is never formed.
    r, c : arrays of shape (P,)
        Scalings from :func:`doubly_stochastic_scaling`.

    Returns
    -------
    state : array of shape (N, P)

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.transport import doubly_stochastic_scaling, markov_step
    >>> A = np.array([[2., 1.], [1., 2.]])
    >>> r, c = doubly_stochastic_scaling(A)
    >>> f = np.array([[2., 0.]])            # all mass on the first patch
    >>> markov_step(f, A, r, c).round(3)    # half way to uniform per step
    array([[1.333, 0.667]])
    """
    return _matvec_left(state * r[None, :], affinity) * c[None, :]


class ShiftedKernel:
    """A log-kernel with its column-shifted exponential, computed once.

    Holds ``log_k``, its column maxima ``M`` and ``exp(log_k - M)``, so that
    repeated :func:`lse_matmul` calls with the same kernel (every Sinkhorn
    iteration) exponentiate the P x P matrix only once.

    Parameters
    ----------
    log_k : array of shape (P, Q)
        Finite log-kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.transport import ShiftedKernel, lse_matmul
    >>> log_k = np.log(np.array([[1., 2.], [3., 4.]]))
    >>> kernel = ShiftedKernel(log_k)
    >>> kernel.big.round(3), kernel.kexp.round(3)
    (array([1.099, 1.386]), array([[0.333, 0.5  ],
           [1.   , 1.   ]]))
    >>> np.exp(lse_matmul(np.zeros((1, 2)), kernel))  # column sums
    array([[4., 6.]])
    """

    def __init__(self, log_k):
        nx = _backend(log_k)
        self.log_k = log_k
        self.big = nx.max(log_k, 0)
        self.kexp = nx.exp(log_k - self.big[None, :])


def _sqrt_tiny(x):
    """The square root of the smallest normal number of `x`'s float type,
    read from the dtype alone (a torch tensor is not copied to the host)."""
    if isinstance(x.dtype, np.dtype):
        return float(np.sqrt(np.finfo(x.dtype).tiny))
    import torch  # only ever reached with a torch tensor

    return float(np.sqrt(torch.finfo(x.dtype).tiny))


def lse_matmul(log_w, log_k, *, chunk=2 ** 22):
    """``out[n, j] = log sum_i exp(log_w[n, i] + log_k[i, j])`` by products.

    The sum is computed as ``exp(log_w - m) @ exp(log_k - M)`` with row
    maxima ``m`` of `log_w` and column maxima ``M`` of `log_k`, which
    costs one matrix product. Where that product underflows (the largest
    term of the sum lies far below ``m + M``, as happens for small
    entropic regularisation), the entry is recomputed exactly by a
    log-sum-exp over ``i``, in chunks of at most `chunk` elements.

    Parameters
    ----------
    log_w : array of shape (N, P)
        May hold ``-inf`` (zero weights), not NaN; every row needs one
        finite entry.
    log_k : array of shape (P, Q) or ShiftedKernel
        Finite log-kernel, or its precomputed :class:`ShiftedKernel`.
    chunk : int
        Memory bound of the exact fallback, in elements.

    Returns
    -------
    out : array of shape (N, Q)

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.special import logsumexp
    >>> from dsolo_sk.transport import lse_matmul
    >>> rng = np.random.default_rng(0)
    >>> w, k = rng.normal(size=(2, 3)) * 500, rng.normal(size=(3, 4)) * 500
    >>> ref = logsumexp(w[:, :, None] + k[None], axis=1)
    >>> bool(np.allclose(lse_matmul(w, k), ref))
    True
    """
    kernel = log_k if isinstance(log_k, ShiftedKernel) else ShiftedKernel(
        log_k)
    log_k = kernel.log_k
    nx = _backend(log_w, log_k)
    m = nx.max(log_w, 1)
    prod = nx.dot(nx.exp(log_w - m[:, None]), kernel.kexp)
    tiny = _sqrt_tiny(prod)
    bad = prod < tiny
    out = (nx.log(nx.maximum(prod, tiny + 0 * prod)) + m[:, None]
           + kernel.big[None, :])
    if bool(nx.any(bad)):
        rows, cols = nx.where(bad)
        per = max(1, chunk // max(1, log_w.shape[1]))
        fixed = []
        for s in range(0, rows.shape[0], per):
            rr, cc = rows[s:s + per], cols[s:s + per]
            fixed.append(nx.logsumexp(log_w[rr, :] + log_k[:, cc].T, axis=1))
        out[rows, cols] = nx.concatenate(fixed)
    return out


def sinkhorn_log_batched(a, b, cost, reg, n_iter=50):
    """Entropic optimal transport from every row of `a` to `b`, in log domain.

    For each class ``n`` solves

    .. math::

        \\pi_n^* = \\arg\\min_{\\pi \\in \\Pi(a_n, b)} \\langle C, \\pi\\rangle
        - \\varepsilon H(\\pi),
        \\qquad \\pi_n^* = \\mathrm{diag}(e^{u_n}) K \\mathrm{diag}(e^{v_n}),
        \\quad K = e^{-C / \\varepsilon},

    by the updates of :func:`ot.bregman.sinkhorn_log`, in the same order and
    from the same start (``u = v = 0``), so class ``n``'s plan equals
    ``ot.sinkhorn(a[n], b, cost, reg, method="sinkhorn_log",
    numItermax=n_iter, stopThr=0)``:

    .. math::

        v_n \\leftarrow \\log b - \\mathrm{LSE}_i(-C_{ij}/\\varepsilon + u_{ni}),
        \\qquad
        u_n \\leftarrow \\log a_n - \\mathrm{LSE}_j(-C_{ij}/\\varepsilon + v_{nj}).

    All classes share one kernel; each half-iteration is one
    :func:`lse_matmul`.

    Parameters
    ----------
    a : array of shape (N, P)
        Source histograms (rows sum to one; zeros allowed).
    b : array of shape (Q,)
        Target histogram, positive.
    cost : array of shape (P, Q)
        Finite cost matrix.
    reg : float
        Entropic regularisation ``epsilon`` > 0.
    n_iter : int, default=50
        Number of iterations (no early stop, so results are reproducible).

    Returns
    -------
    log_u : array of shape (N, P)
        Log scaling of the source side (``-inf`` where ``a`` is zero).
    log_v : array of shape (N, Q)
        Log scaling of the target side; ``reg * log_v`` is the dual
        potential of `b`.

    Examples
    --------
    >>> import numpy as np, ot
    >>> from dsolo_sk.transport import sinkhorn_log_batched
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((3, 6)); a /= a.sum(1, keepdims=True)
    >>> b = np.full(6, 1 / 6); C = rng.random((6, 6))
    >>> lu, lv = sinkhorn_log_batched(a, b, C, 0.1)
    >>> plan = np.exp(lu[1][:, None] - C / 0.1 + lv[1][None, :])
    >>> ref = ot.sinkhorn(a[1], b, C, 0.1, method="sinkhorn_log",
    ...                   numItermax=50, stopThr=0, warn=False)
    >>> bool(np.allclose(plan, ref, atol=1e-10))
    True
    """
    nx = _backend(a, b, cost)
    log_k = ShiftedKernel(-cost / reg)
    log_kt = ShiftedKernel(-cost.T / reg)
    with np.errstate(divide="ignore"):
        log_a = nx.log(a)
    log_b = nx.log(b)
    u = nx.zeros(a.shape, type_as=a)
    v = nx.zeros((a.shape[0], cost.shape[1]), type_as=a)
    for _ in range(n_iter):
        v = log_b[None, :] - lse_matmul(u, log_k)
        u = log_a - lse_matmul(v, log_kt)
    return u, v


def sparsify_topk(affinity, k):
    """Keep the `k` largest entries of each row of a dense affinity.

    Parameters
    ----------
    affinity : ndarray of shape (P, P)
        Dense non-negative affinity.
    k : int
        Entries kept per row (``1 <= k <= P``).

    Returns
    -------
    sparse : scipy.sparse.csr_array of shape (P, P)
        With ``k * P`` stored entries; multiplying by it costs O(k P).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.transport import sparsify_topk
    >>> sparsify_topk(np.array([[3., 1., 2.], [1., 5., 4.], [0., 1., 2.]]),
    ...               2).toarray()
    array([[3., 0., 2.],
           [0., 5., 4.],
           [0., 1., 2.]])
    """
    affinity = np.asarray(affinity)
    p = affinity.shape[0]
    k = int(min(max(k, 1), p))
    idx = np.argpartition(-affinity, k - 1, axis=1)[:, :k]
    idx.sort(axis=1)
    vals = np.take_along_axis(affinity, idx, axis=1)
    rows = np.repeat(np.arange(p), k)
    return sp.csr_array((vals.ravel(), (rows, idx.ravel())), shape=(p, p))
