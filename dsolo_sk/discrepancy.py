"""Discrepancies between class distributions and the uniform distribution.

One small interface: ``compute(q, affinity, mass=None)`` takes the class
distributions ``q`` (N x P, each row a distribution over the P patches), an
affinity between patches (P x P, or ``None`` where unused) and optionally
the mass of each class (N,; by default every class has mass one), and
returns scores (N x P); a higher score means the patch looks more like the
class. The class measure is ``m_c q_c``, and its ratio to the uniform
distribution over patches is ``f_c = P m_c q_c``. All classes are processed
at once.

The degenerate distribution is the uniform ``s = 1/P`` over patches: it is
the stationary distribution of every doubly stochastic Markov chain, and
the one distribution known at inference time without ground truth.
"""

import numbers

import numpy as np
import scipy.sparse as sp
from ot.backend import get_backend
from sklearn.base import BaseEstimator

from ._validation import check_option, check_scalar
from .normalization import _check_min_share
from .transport import (ShiftedKernel, _check_affinity,
                        doubly_stochastic_scaling,
                        lse_matmul, markov_step, repair_affinity,
                        sinkhorn_log_batched, sparsify_topk)

__all__ = ["KLDiscrepancy", "TransportPath", "TransportVelocity",
           "suppress_minor_scores"]

# the readings each discrepancy offers (the segmenters validate against
# the same tuples)
KL_DIRECTIONS = ("reverse", "forward")
PATH_COSTS = ("linear", "neglog")
PATH_SCORES = ("potential", "transport", "cost")
PATH_BALANCES = ("row", "ipf")
VELOCITY_SCORES = ("state", "weighted", "accumulated", "steps")


def _at_least_float32(q):
    """`q` widened to float32 when it is of a half-precision type (numpy
    or torch float16, torch bfloat16), in its own backend and device."""
    if hasattr(q, "detach"):  # a torch tensor
        if q.is_floating_point() and q.element_size() < 4:
            return q.float()
        return q
    if q.dtype.kind == "f" and q.dtype.itemsize < 4:
        return q.astype(np.float32)
    return q


def _check_distributions(q):
    if sp.issparse(q):
        raise TypeError("q must be a dense array of class distributions.")
    if not hasattr(q, "shape"):
        q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] < 1 or q.shape[1] < 1:
        raise ValueError(
            f"q must have shape (n_classes, n_patches), got {q.shape}."
        )
    q = _at_least_float32(q)
    nx = get_backend(q)
    if bool(nx.any(~nx.isfinite(q))):
        raise ValueError("q holds NaN or infinite values.")
    if bool(nx.any(q < 0)):
        raise ValueError("q must be non-negative.")
    sums = nx.sum(q, 1)
    # the test of np.allclose(sums, 1, atol=1e-4), in q's own backend: the
    # sums reach the host only to write the error
    if bool(nx.any(~(nx.abs(sums - 1.0) <= 1e-4 + 1e-5))):
        sums = nx.to_numpy(sums)
        bad = np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-4))[:5].tolist()
        raise ValueError(
            f"each row of q must sum to one; rows {bad} do not (sums "
            f"{sums[bad].round(6).tolist()}). Normalise with "
            "dsolo_sk.normalization.normalize_logits and drop empty classes."
        )
    return q


def _check_mass(mass, q):
    """Class masses as an array of q's backend; ones when `mass` is None."""
    nx = get_backend(q)
    if mass is None:
        return nx.ones((q.shape[0],), type_as=q)
    if hasattr(mass, "detach") and nx.__name__ != "numpy":
        # a tensor beside a tensor q: checked where it lies, never copied
        # to the host (the torch inference path of the segmenter)
        if tuple(mass.shape) != (q.shape[0],):
            raise ValueError(
                f"mass must have shape ({q.shape[0]},), one per class, got "
                f"{tuple(mass.shape)}."
            )
        if bool(nx.any(~nx.isfinite(mass) | (mass <= 0))):
            raise ValueError(
                "mass must be finite and positive; drop classes without "
                "mass."
            )
        out = mass.to(dtype=q.dtype, device=q.device)
        if bool(nx.any(out <= 0)):
            raise ValueError(
                "mass holds values below the range of q's dtype; drop "
                "those classes, or pass float64 q."
            )
        return out
    mass = np.asarray(nx.to_numpy(mass) if hasattr(mass, "detach")
                      else mass, dtype=np.float64)
    if mass.shape != (q.shape[0],):
        raise ValueError(
            f"mass must have shape ({q.shape[0]},), one per class, got "
            f"{mass.shape}."
        )
    if not np.all(np.isfinite(mass)) or (mass <= 0).any():
        raise ValueError(
            "mass must be finite and positive; drop classes without mass."
        )
    out = nx.from_numpy(mass, type_as=q)
    if bool(nx.any(out <= 0)):
        raise ValueError(
            f"mass holds values below the range of q's dtype (smallest "
            f"{mass.min():.3g}); drop those classes, or pass float64 q."
        )
    return out


class KLDiscrepancy(BaseEstimator):
    """Pointwise Kullback-Leibler term between ``q_c`` and the uniform ``s``.

    With the class measure :math:`\\mu_c = m_c q_c` and ``s_i = 1/P``:

    - ``direction="forward"``: :math:`\\mu_{ci} \\log(\\mu_{ci} / s_i)`, the
      term of :math:`\\mathrm{KL}(\\mu_c \\| s)` at patch ``i``
      (:math:`0 \\log 0 = 0`).
    - ``direction="reverse"``: :math:`s_i \\log(\\mu_{ci} / s_i)`, minus the
      term of :math:`\\mathrm{KL}(s \\| \\mu_c)`. That term decreases with
      :math:`\\mu_{ci}`, so its negative is used to keep "higher is more
      class-like"; zero mass is floored at ``1e-30``.

    Parameters
    ----------
    direction : {"reverse", "forward"}, default="reverse"
        Which divergence's pointwise term. ``"reverse"`` is monotone in the
        class measure, so after non-maximum suppression its argmax keeps
        each patch's winner; the forward term is negative below the
        uniform level and can hand a patch to a suppressed class (see the
        synthetic benchmark in the method page).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.discrepancy import KLDiscrepancy
    >>> q = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    >>> KLDiscrepancy("forward").compute(q).round(3)
    array([[0.347, 0.347, 0.   , 0.   ],
           [0.   , 0.   , 0.347, 0.347]])
    """

    #: The kl term reads no affinity.
    requires_affinity = False

    def __init__(self, direction="reverse"):
        self.direction = direction

    def _validate_params(self):
        check_option(self.direction, "direction", KL_DIRECTIONS)

    def compute(self, q, affinity=None, mass=None):
        """Scores of shape (N, P); `affinity` is ignored.

        Parameters
        ----------
        q : array of shape (N, P)
            Rows are distributions over patches.
        affinity : ignored
        mass : array of shape (N,), optional
            Class masses; default one per class.

        Returns
        -------
        scores : array of shape (N, P)
        """
        self._validate_params()
        q = _check_distributions(q)
        nx = get_backend(q)
        p = q.shape[1]
        mu = q * _check_mass(mass, q)[:, None]
        ratio = nx.maximum(mu * p, 1e-30 + 0 * q)
        if self.direction == "forward":
            return nx.where(mu > 0, mu * nx.log(ratio), 0 * q)
        return nx.log(ratio) / p


def cost_from_affinity(affinity, kind="neglog", balance="row",
                       n_iter=15):
    """Transport cost between patches built from an affinity.

    The affinity is repaired (:func:`dsolo_sk.transport.repair_affinity`)
    and balanced (parameter `balance`):

    - ``"row"``: row-normalised, :math:`\\hat A_{ij} = A_{ij} / \\sum_k
      A_{ik}`;
    - ``"ipf"``: scaled to a doubly stochastic matrix
      :math:`\\hat A = \\mathrm{diag}(r) A \\mathrm{diag}(c)` by
      iterative proportional fitting
      (:func:`dsolo_sk.transport.doubly_stochastic_scaling`, `n_iter`
      iterations). A "sink" patch that every row attends to gets a large
      column sum, which the column scaling divides away, so the cost is
      not captured by it; row normalisation keeps the sink as every row's
      nearest patch.

    Then:

    - ``"neglog"``: :math:`C_{ij} = -\\log \\max(\\hat A_{ij}, 10^{-12})`,
      so the Gibbs kernel is :math:`K = \\hat A^{1/\\varepsilon}`.
    - ``"linear"``: :math:`C_{ij} = 1 - \\hat A_{ij} / \\max_k \\hat A_{ik}`,
      in [0, 1].

    Parameters
    ----------
    affinity : array of shape (P, P)
        Dense or :mod:`scipy.sparse` (densified) non-negative affinity.
    kind : {"neglog", "linear"}, default="neglog"
    balance : {"row", "ipf"}, default="row"
    n_iter : int, default=15
        Iterations of the proportional fitting of ``balance="ipf"``.

    Returns
    -------
    cost : array of shape (P, P)

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.discrepancy import cost_from_affinity
    >>> cost_from_affinity(np.array([[3., 1.], [1., 1.]]), "linear")
    array([[0.        , 0.66666667],
           [0.        , 0.        ]])
    """
    check_option(kind, "cost", PATH_COSTS)
    check_option(balance, "balance", PATH_BALANCES)
    if sp.issparse(affinity):
        affinity = affinity.toarray()
    affinity = repair_affinity(affinity)
    nx = get_backend(affinity)
    if balance == "ipf":
        r, c = doubly_stochastic_scaling(affinity, n_iter)
        a = affinity * r[:, None] * c[None, :]
    else:
        a = affinity / nx.sum(affinity, 1)[:, None]
    if kind == "neglog":
        return -nx.log(nx.maximum(a, 1e-12 + 0 * a))
    return 1.0 - a / nx.max(a, 1)[:, None]


class TransportPath(BaseEstimator):
    """Discrepancy read from the entropic optimal transport path to uniform.

    For every class, the entropic optimal transport from ``q_c`` to the
    uniform ``s`` over a cost ``C`` built from the affinity
    (:func:`cost_from_affinity`) is solved by log-domain Sinkhorn
    (:func:`dsolo_sk.transport.sinkhorn_log_batched`, all classes at once):

    .. math::

        \\pi_c^* = \\arg\\min_{\\pi \\in \\Pi(q_c, s)}
        \\sum_{ij} C_{ij} \\pi_{ij}
        - \\varepsilon \\sum_{ij} \\pi_{ij} (\\ln \\pi_{ij} - 1)
        = \\mathrm{diag}(\\mu_c) K \\mathrm{diag}(\\nu_c),
        \\quad K = e^{-C/\\varepsilon}.

    The per-patch score (parameter `score`) reads the plan:

    - ``"potential"``: the centred dual potential of the uniform side,
      plus the entropic prior of the class's mass,
      :math:`-(g_{cj} - \\frac1P \\sum_k g_{ck}) + \\varepsilon \\log m_c`
      with :math:`g_{cj} = \\varepsilon \\log \\nu_{cj}`. A patch is cheap
      to reach from the class's mass when it belongs to the class; the
      prior is the shift of the potential when the source marginal is the
      class measure :math:`m_c q_c` rather than :math:`q_c` (it vanishes
      when all masses are equal).
    - ``"transport"``: the class map carried along the plan,
      :math:`P \\sum_i \\pi^*_c(i, j) f_c(i)` with
      :math:`f_c = P m_c q_c`.
    - ``"cost"``: minus the mean cost of the mass arriving at ``j``,
      :math:`-\\sum_i \\pi^*_c(i,j) C_{ij} / \\sum_i \\pi^*_c(i,j)`.

    Parameters
    ----------
    epsilon : float, default=0.1
        Entropic regularisation.
    n_iter : int, default=50
        Sinkhorn iterations, a fixed count (no tolerance), so that a
        result never depends on a convergence test.
    cost : {"linear", "neglog"}, default="linear"
        How the cost is built from the affinity.
    score : {"potential", "transport", "cost"}, default="potential"
        How the per-patch score is read from the plan.
    balance : {"ipf", "row"}, default="ipf"
        How the affinity is balanced before the cost is built (see
        :func:`cost_from_affinity`): doubly stochastic by proportional
        fitting, which is robust to sink patches, or row-normalised. With
        ``"row"`` a patch that every row attends to becomes every patch's
        cheapest destination and the plan loses the image's structure (on
        the synthetic benchmark, adding three sink patches changes 35 to
        70 % of the labels; with ``"ipf"`` at most 2.5 %).
    min_share : float in [0, 1), default=0.0
        Classes that win fewer than ``min_share * P`` patches of the
        scores' argmax are dropped, the smallest first
        (:func:`suppress_minor_scores`): a class-level test read after the
        transport: it reads only the scores' argmax, so it keeps their
        invariances. 0 keeps every class.

    Notes
    -----
    The computation runs in the backend (numpy or torch, any device) and
    the float type of `q`, but never below float32: half-precision `q`
    (the output of a float16 model) is widened first, because the
    log-domain Sinkhorn iterations and the proportional fitting lose the
    plan's structure in float16 (10 bits of mantissa, and
    :math:`e^{-C/\\varepsilon}` underflows below 6e-8).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.discrepancy import TransportPath
    >>> A = np.kron(np.eye(2), np.ones((2, 2))) + 0.01   # two regions
    >>> q = np.array([[0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 0.2, 0.8]])
    >>> TransportPath().compute(q, A).argmax(0)
    array([0, 0, 1, 1])
    """

    def __init__(self, epsilon=0.1, n_iter=50, cost="linear",
                 score="potential", balance="ipf", min_share=0.0):
        self.epsilon = epsilon
        self.n_iter = n_iter
        self.cost = cost
        self.score = score
        self.balance = balance
        self.min_share = min_share

    #: The path needs an affinity between patches.
    requires_affinity = True

    def _validate_params(self):
        check_scalar(self.epsilon, "epsilon", min_val=0, include_min=False,
                     max_val=1e3)
        check_scalar(self.n_iter, "n_iter", target_type=numbers.Integral,
                     min_val=1, max_val=100_000)
        check_option(self.cost, "cost", PATH_COSTS)
        check_option(self.score, "score", PATH_SCORES)
        check_option(self.balance, "balance", PATH_BALANCES)
        _check_min_share(self.min_share)

    def compute(self, q, affinity, mass=None):
        """Scores of shape (N, P).

        Parameters
        ----------
        q : array of shape (N, P)
            Rows are distributions over patches (numpy or torch).
        affinity : array of shape (P, P)
            Non-negative affinity (same backend as `q`; scipy.sparse is
            densified).
        mass : array of shape (N,), optional
            Class masses; default one per class.

        Returns
        -------
        scores : array of shape (N, P)
        """
        self._validate_params()
        q = _check_distributions(q)
        mass = _check_mass(mass, q)
        affinity = _check_affinity(affinity, q.shape[1], "TransportPath")
        nx = get_backend(q)
        cost = cost_from_affinity(affinity, self.cost, self.balance)
        if sp.issparse(affinity) or type(cost) is not type(q):
            cost = nx.from_numpy(np.asarray(cost), type_as=q)
        cost = cost + 0 * q[:1, :1]  # dtype of q
        p = q.shape[1]
        b = nx.full((p,), 1.0 / p, type_as=q)
        log_u, log_v = sinkhorn_log_batched(q, b, cost, self.epsilon,
                                            self.n_iter)
        return suppress_minor_scores(
            self._scores(q, mass, cost, log_u, log_v), self.min_share)

    def _scores(self, q, mass, cost, log_u, log_v):
        """The per-patch score of `score`, read from the plan's scalings."""
        nx = get_backend(q)
        p = q.shape[1]
        if self.score == "potential":
            g = self.epsilon * log_v
            return (-(g - nx.mean(g, 1)[:, None])
                    + self.epsilon * nx.log(mass)[:, None])
        log_k = ShiftedKernel(-cost / self.epsilon)
        if self.score == "transport":
            with np.errstate(divide="ignore"):
                log_f = nx.log(q * p * mass[:, None])
            log_t = lse_matmul(log_u + log_f, log_k) + log_v
            return p * nx.exp(log_t)
        log_s = lse_matmul(log_u, log_k)
        log_e = lse_matmul(log_u, log_k.log_k + nx.log(cost + 1e-30))
        return -nx.exp(log_e - log_s)


def suppress_minor_scores(scores, min_share):
    """Drop the classes that win too few patches of the scores' argmax.

    With :math:`n_c = |\\{i : \\arg\\max_k s_{ki} = c\\}|`, every class
    with :math:`n_c < \\mathrm{min\\_share} \\cdot P` is a candidate, and
    the candidate with the fewest wins gets a score below every other
    score at every patch; the count repeats on the classes left (the
    dropped class's patches go to their runner-up, which may lift another
    candidate above the share) until none falls below it. The class that
    wins the most patches always stays. A class lifted above the others
    at a few scattered patches by noise is absent; its patches go to the
    runner-up there.
    The test reads only the argmax, so it is invariant to any map of the
    scores that keeps it (a scale, a common offset).

    Parameters
    ----------
    scores : array of shape (N, P)
        Per-class scores (numpy or torch).
    min_share : float in [0, 1)
        The smallest share of the patches a class must win; 0 returns
        `scores` unchanged.

    Returns
    -------
    scores : array of shape (N, P)
        Same kind, dtype and device as `scores`.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.discrepancy import suppress_minor_scores
    >>> s = np.array([[3., 3., 3., 0., 0.],
    ...               [1., 1., 1., 1., 2.],
    ...               [0., 0., 0., 2., 1.]])
    >>> s.argmax(0)
    array([0, 0, 0, 2, 1])
    >>> suppress_minor_scores(s, 0.3).argmax(0)   # class 1 goes, 2 stays
    array([0, 0, 0, 2, 2])
    """
    _check_min_share(min_share)
    n, p = scores.shape
    if min_share == 0 or n < 2:
        return scores
    nx = get_backend(scores)
    floor = nx.min(scores) - 1.0
    alive = np.ones(n, dtype=bool)
    for _ in range(n):
        masked = nx.where(nx.from_numpy(alive, type_as=scores)[:, None] > 0,
                          scores, floor)
        wins = np.bincount(nx.to_numpy(nx.argmax(masked, 0)), minlength=n)
        low = alive & (wins < min_share * p)
        low[int(np.argmax(wins))] = False
        if not low.any():
            break
        alive[int(np.argmin(np.where(low, wins, p + 1)))] = False
    keep = nx.from_numpy(alive, type_as=scores)[:, None] > 0
    return nx.where(keep, scores, floor)


class TransportVelocity(BaseEstimator):
    """Discrepancy read from the speed of a Markov chain towards uniform.

    The affinity becomes a doubly stochastic transition matrix
    :math:`T = \\mathrm{diag}(r) A \\mathrm{diag}(c)` by iterative
    proportional fitting (:func:`dsolo_sk.transport.doubly_stochastic_scaling`),
    whose stationary distribution is uniform. Each class map, on the scale
    of the ratio of the class measure to the uniform distribution,
    :math:`f_c^{(0)} = P m_c q_c`, evolves as

    .. math::

        f_c^{(l)} = f_c^{(0)} T^l \\longrightarrow m_c \\mathbf 1.

    The convergence step of patch ``i`` is the first ``l`` at which
    :math:`|f_{ci}^{(l)} - f_{ci}^{(l-1)}| \\le \\tau` (``max_steps`` if
    none), and its velocity is :math:`v_{ci} = 1/l^*_{ci}`: slow
    convergence means a large discrepancy. The per-patch score (parameter
    `score`):

    - ``"state"``: the patch's own state at its convergence step,
      :math:`f_{ci}^{(l^*_{ci})}`.
    - ``"weighted"``: the velocity-weighted initial ratio,
      :math:`v_{ci} f_{ci}^{(0)}`.
    - ``"accumulated"``: the accumulated deviation from the stationary
      state, :math:`\\sum_{l=0}^{l^*_{ci}} (f_{ci}^{(l)} - m_c)`.
    - ``"steps"``: the plain baseline, :math:`f_{ci}^{(n)}` after a fixed
      number ``n = n_steps`` of steps for every patch alike.

    Each step is one product of the (N, P) state with the affinity, so a
    :mod:`scipy.sparse` affinity with k entries per row costs O(k P).

    Parameters
    ----------
    tau : float, default=0.3
        Convergence threshold on the ratio scale.
    n_iter : int, default=15
        Iterations of the proportional fitting.
    max_steps : int, default=100
        Cap on the number of Markov steps.
    score : {"state", "weighted", "accumulated", "steps"}, default="state"
        How the per-patch score is read from the chain.
    n_steps : int, default=5
        Steps of the ``"steps"`` baseline.
    min_share : float in [0, 1), default=0.0
        Classes that win fewer than ``min_share * P`` patches of the
        scores' argmax are given a score below every other and so never
        predicted, until no class falls below it
        (:func:`suppress_minor_scores`). It reads the chain's output, not
        the raw logits, so it keeps the invariances of the scores.
    affinity_topk : int, optional
        Keep only the largest `affinity_topk` entries of each row of a
        dense affinity (:func:`dsolo_sk.transport.sparsify_topk`, a sparse
        matrix; numpy only): each step then costs O(k P) instead of
        O(P^2).

    Notes
    -----
    The computation runs in the backend (numpy or torch, any device) and
    the float type of `q`, but never below float32: half-precision `q`
    (the output of a float16 model) is widened first, because the
    proportional fitting and the threshold `tau` on differences of the
    ratio need more than float16's 10 bits of mantissa.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.discrepancy import TransportVelocity
    >>> A = np.kron(np.eye(2), np.ones((2, 2))) + 0.01   # two regions
    >>> q = np.array([[0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 0.2, 0.8]])
    >>> TransportVelocity().compute(q, A).argmax(0)
    array([0, 0, 1, 1])
    """

    #: The chain needs an affinity between patches.
    requires_affinity = True

    def __init__(self, tau=0.3, n_iter=15, max_steps=100, score="state",
                 n_steps=5, affinity_topk=None, min_share=0.0):
        self.tau = tau
        self.n_iter = n_iter
        self.max_steps = max_steps
        self.score = score
        self.n_steps = n_steps
        self.affinity_topk = affinity_topk
        self.min_share = min_share

    def _validate_params(self):
        _check_min_share(self.min_share)
        check_scalar(self.tau, "tau", min_val=0, include_min=False,
                     max_val=1e6, unit="(ratio to the uniform level)")
        for name, top in (("n_iter", 100_000), ("max_steps", 10_000),
                          ("n_steps", 10_000)):
            check_scalar(getattr(self, name), name,
                         target_type=numbers.Integral, min_val=1,
                         max_val=top)
        check_option(self.score, "score",
                     VELOCITY_SCORES)
        if self.affinity_topk is not None:
            check_scalar(self.affinity_topk, "affinity_topk",
                         target_type=numbers.Integral, min_val=1)

    def compute(self, q, affinity, mass=None):
        """Scores of shape (N, P).

        Parameters
        ----------
        q : array of shape (N, P)
            Rows are distributions over patches (numpy or torch).
        affinity : array or scipy.sparse matrix of shape (P, P)
            Non-negative affinity; sparse needs numpy `q`.
        mass : array of shape (N,), optional
            Class masses; default one per class.

        Returns
        -------
        scores : array of shape (N, P)
        """
        self._validate_params()
        q = _check_distributions(q)
        mass = _check_mass(mass, q)
        affinity = _check_affinity(affinity, q.shape[1], "TransportVelocity")
        nx = get_backend(q)
        if self.affinity_topk is not None and not sp.issparse(affinity):
            if nx.__name__ != "numpy":
                raise TypeError("affinity_topk needs numpy q and affinity.")
            affinity = sparsify_topk(np.asarray(affinity), self.affinity_topk)
        if sp.issparse(affinity):
            if nx.__name__ != "numpy":
                raise TypeError("a scipy.sparse affinity needs numpy q.")
            affinity = affinity.astype(q.dtype)
        else:
            affinity = affinity + 0 * q[:1, :1]  # dtype of q
        affinity = repair_affinity(affinity)
        r, c = doubly_stochastic_scaling(affinity, self.n_iter)
        f0 = q * (q.shape[1] * mass)[:, None]
        f = f0
        if self.score == "steps":
            for _ in range(self.n_steps):
                f = markov_step(f, affinity, r, c)
            return suppress_minor_scores(f, self.min_share)
        state = f0
        steps = nx.full(f0.shape, float(self.max_steps), type_as=f0)
        acc = f0 - mass[:, None]
        done = f0 < -1.0  # all False, in the backend's type
        for step in range(1, self.max_steps + 1):
            nxt = markov_step(f, affinity, r, c)
            newly = (~done) & (nx.abs(nxt - f) <= self.tau)
            acc = nx.where(done, acc, acc + (nxt - mass[:, None]))
            state = nx.where(newly, nxt, state)
            steps = nx.where(newly, step + 0 * steps, steps)
            done = done | newly
            f = nxt
            if not bool(nx.any(~done)):
                break
        state = nx.where(done, state, f)
        if self.score == "state":
            out = state
        elif self.score == "weighted":
            out = f0 / steps
        else:
            out = acc
        return suppress_minor_scores(out, self.min_share)
