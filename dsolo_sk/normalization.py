"""Non-maximum suppression over classes and normalisation over patches.

Logits ``L`` of shape (N, P) become one distribution ``q_c`` over the P
patches per class, and a mass per class. Suppressed entries and classes
that win no patch are handled explicitly: a suppressed entry carries no
mass, and a class with no mass at all gets mass zero, so that the segmenter
never predicts it.

Every function takes numpy arrays or torch tensors and returns the same
kind, on the same device: the math is written once, through POT's backend
(:func:`ot.backend.get_backend`), so the torch inference path of
:class:`~dsolo_sk.DirectSegmenter` (``backend="torch"``) runs exactly this
code on the GPU. The computation is in float64 for both (the logits are
cast first), so float16 model outputs lose nothing here.

.. rubric:: Examples

The accepted values of the ``method``, ``fill`` and ``over`` options:

>>> from dsolo_sk.normalization import NMS_FILLS, NORMALIZATIONS, NORMALIZE_OVER
>>> NORMALIZATIONS, NMS_FILLS, NORMALIZE_OVER
(('softmax', 'l1', 'zscore'), ('zero', 'min'), ('image', 'class'))
"""

import numpy as np
import scipy.sparse as sp
from ot.backend import get_backend
from sklearn.base import BaseEstimator

from ._validation import check_option, check_scalar
from .transport import (_check_affinity, _check_scaling_iter,
                        doubly_stochastic_scaling, markov_step,
                        repair_affinity)

__all__ = ["LogitNormalizer", "suppress_non_maximum", "suppress_minor_classes",
           "suppress_scattered_classes", "subtract_baseline", "normalize_logits", "class_contrast",
           "logit_spread", "NORMALIZATIONS", "NORMALIZER_METHODS",
           "NMS_FILLS", "NORMALIZE_OVER", "TEMPERATURE_UNITS", "BASELINES",
           "PRESENCE_TESTS"]

#: The values of `method` of :func:`normalize_logits`.
NORMALIZATIONS = ("softmax", "l1", "zscore")
#: The values of `method` of :class:`LogitNormalizer`: those of
#: :func:`normalize_logits` and ``"contrast"``.
NORMALIZER_METHODS = NORMALIZATIONS + ("contrast",)
#: The values of `fill` of :func:`suppress_non_maximum`.
NMS_FILLS = ("zero", "min")
#: The values of `over` of :func:`normalize_logits`.
NORMALIZE_OVER = ("image", "class")
#: The values of `temperature_unit` of :class:`LogitNormalizer`.
TEMPERATURE_UNITS = ("logit", "spread")
#: The values of `presence` of :class:`LogitNormalizer`: how the class-level
#: suppression counts the patches a class wins.
PRESENCE_TESTS = ("argmax", "centred", "diffused", "centred-diffused")


def _as_float64(x):
    """`x` as float64 in its own backend: a torch tensor stays a tensor on
    its device (the math below runs through POT's backend ``nx``, the same
    code for numpy and torch), anything else becomes a numpy array."""
    if hasattr(x, "detach") and hasattr(x, "double"):  # a torch tensor
        return x.double()
    return np.asarray(x, dtype=np.float64)


def logit_spread(logits):
    """The spatial spread of an image's logits: pooled within-class std.

    .. math::

        \\sigma = \\Big(\\frac{1}{N P} \\sum_{c, i}
        (L_{ci} - \\bar L_c)^2\\Big)^{1/2},
        \\qquad \\bar L_c = \\frac1P \\sum_i L_{ci}.

    It is unchanged by a per-class offset and proportional to the logits'
    scale, so a temperature in units of :math:`\\sigma` makes a softmax
    over patches invariant to any map :math:`L \\mapsto a L + b_c`
    (:math:`a > 0`). Where the logits are constant over the image the
    spread is taken as one.

    Parameters
    ----------
    logits : ndarray of shape (N, P)
        Class logits per patch; entries that are not finite (suppressed
        classes) are left out.

    Returns
    -------
    spread : float

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.normalization import logit_spread
    >>> L = np.array([[0.1, 0.3], [0.5, 0.7]])
    >>> float(logit_spread(L)), float(logit_spread(100 * L - 3))
    (0.1, 10.0)
    """
    logits = _as_float64(logits)
    nx = get_backend(logits)
    # over the finite entries only: suppressed ones (-inf) do not count
    finite = nx.isfinite(logits)
    n = nx.sum(_as_float64(finite), 1)
    mean = nx.sum(nx.where(finite, logits, 0.0), 1) / nx.maximum(n, 1.0)
    centred = nx.where(finite, logits - mean[:, None], 0.0)
    total = float(nx.sum(n))
    if total == 0:
        return 1.0
    spread = float(nx.sqrt(nx.sum(centred ** 2) / total))
    return spread if spread > 0 and np.isfinite(spread) else 1.0


def _winners(logits):
    """The (N, P) boolean mask of each patch's top class; the first maximum
    wins a tie, as with numpy's argmax (numpy or torch, on its device)."""
    nx = get_backend(logits)
    win = nx.argmax(logits, axis=0)
    return nx.arange(logits.shape[0], type_as=win)[:, None] == win[None, :]


def _alive(logits):
    """The (N,) boolean mask of the classes not dropped: a finite logit at
    some patch."""
    nx = get_backend(logits)
    return nx.sum(_as_float64(nx.isfinite(logits)), 1) > 0


def _check_logits(logits, name="logits"):
    """Refuse NaN and ``+inf`` logits (``-inf`` marks a suppressed entry);
    `logits` is numpy or torch."""
    nx = get_backend(logits)
    bad = nx.isnan(logits) | (logits == np.inf)
    if bool(nx.any(bad)):
        n = int(nx.sum(_as_float64(bad)))
        raise ValueError(
            f"{name} must be finite or -inf (a suppressed entry); {n} "
            f"entries are NaN or +inf."
        )
    return logits


def _check_min_share(min_share):
    check_scalar(min_share, "min_share", min_val=0, max_val=1,
                 include_max=False, unit="(share of the patches)")


def _share_input(logits, min_share):
    """The checked `min_share` and the `logits` of a class-level test as an
    array: a torch tensor stays one, anything else becomes numpy."""
    _check_min_share(min_share)
    if not hasattr(logits, "detach"):
        logits = np.asarray(logits)
    return logits


def _check_baseline(baseline):
    if isinstance(baseline, str):
        check_option(baseline, "baseline", BASELINES)
    else:
        check_scalar(baseline, "baseline", min_val=0, max_val=1,
                     unit="(quantile over the patches)")


def suppress_non_maximum(logits, fill="zero"):
    """Keep, at every patch, only the logit of the winning class.

    Parameters
    ----------
    logits : array of shape (N, P)
        Class logits per patch (numpy or torch).
    fill : {"zero", "min"}, default="zero"
        What the losing classes get. ``"zero"`` gives them ``-inf``, so they
        carry no mass after any normalisation of :func:`normalize_logits`.
        ``"min"`` gives them their class's smallest logit over the image, so
        a softmax still leaves them a little mass.

    Returns
    -------
    suppressed : array of shape (N, P)
        Same kind (numpy or torch) and device as `logits`.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.normalization import suppress_non_maximum
    >>> suppress_non_maximum(np.array([[0.3, 0.1], [0.2, 0.4]]))
    array([[ 0.3, -inf],
           [-inf,  0.4]])
    """
    check_option(fill, "nms_fill", NMS_FILLS)
    if not hasattr(logits, "detach"):  # numpy, or a list: numpy
        logits = np.asarray(logits)
    nx = get_backend(logits)
    keep = _winners(logits)
    if fill == "zero":
        other = nx.full(logits.shape, -np.inf, type_as=logits)
    else:
        other = nx.min(logits, axis=1, keepdims=True)
    return nx.where(keep, logits, other)


def suppress_minor_classes(logits, min_share, centre=False):
    """Drop the classes that win too few patches: class-level suppression.

    With :math:`n_c = \\#\\{i : c = \\arg\\max_k L_{ki}\\}` the number of
    patches where class :math:`c` has the largest logit, every class with
    :math:`n_c < \\mathrm{min\\_share} \\cdot P` gets ``-inf`` everywhere,
    so that it carries no mass after :func:`normalize_logits` and is never
    predicted. The class that wins the most patches always stays.

    With `centre`, the wins are counted on the logits centred per class,
    :math:`C_{ki} = L_{ki} - \\bar L_k` with :math:`\\bar L_k` the class's
    mean over the patches, and only where the top class stands above its
    own level: :math:`n_c = \\#\\{i : c = \\arg\\max_k C_{ki},\\
    C_{ci} > 0\\}`. A class must stand out where it wins, not sit high
    everywhere (nor win, flat, where every other class sits below its
    level). Where no class stands above its level at any patch (logits
    constant over the image), the raw argmax counts instead. The count
    is unchanged by any per-class offset :math:`L_{ci} + b_c` (the text
    bias and the global class score of CLIP's dense logits are such
    offsets; on them the raw argmax is decided by the offsets).

    The per-patch suppression of :func:`suppress_non_maximum` leaves a class
    every patch it wins, however few: an absent class lifted by noise wins
    scattered patches and keeps them through any later step. A present
    class wins a region. The test reads only the per-patch argmax, so it is
    unchanged by any map :math:`L_{ci} \\mapsto a L_{ci} + b_i` with
    :math:`a > 0` (the logits' scale, a global or per-patch offset) and it
    does not read the affinity (sink patches cannot move it).

    Parameters
    ----------
    logits : array of shape (N, P)
        Class logits per patch (numpy or torch), possibly ``-inf``.
    min_share : float in [0, 1)
        The smallest share of the patches a class must win to stay. 0 keeps
        every class.
    centre : bool, default=False
        Count the wins on the logits centred per class.

    Returns
    -------
    logits : array of shape (N, P)
        Same kind and device as `logits`; the dropped classes' rows are
        ``-inf``.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.normalization import suppress_minor_classes
    >>> L = np.array([[0.3, 0.3, 0.3, 0.1],
    ...               [0.1, 0.2, 0.1, 0.4],
    ...               [0.2, 0.1, 0.2, 0.2]])
    >>> suppress_minor_classes(L, 0.25)   # class 2 wins no patch
    array([[ 0.3,  0.3,  0.3,  0.1],
           [ 0.1,  0.2,  0.1,  0.4],
           [-inf, -inf, -inf, -inf]])
    >>> suppress_minor_classes(L, 0.5)    # class 1 wins one patch in four
    array([[ 0.3,  0.3,  0.3,  0.1],
           [-inf, -inf, -inf, -inf],
           [-inf, -inf, -inf, -inf]])

    A class that sits high everywhere (a biased name, say) wins every
    patch of the raw argmax, and none once each class is centred:

    >>> B = np.array([[0.90, 0.91, 0.90, 0.91],
    ...               [0.50, 0.50, 0.10, 0.10],
    ...               [0.10, 0.10, 0.50, 0.50]])
    >>> suppress_minor_classes(B, 0.25).max(1)
    array([0.91, -inf, -inf])
    >>> suppress_minor_classes(B, 0.25, centre=True).max(1)
    array([-inf,  0.5,  0.5])
    """
    logits = _share_input(logits, min_share)
    if not isinstance(centre, (bool, np.bool_)):
        raise TypeError(f"centre must be True or False, got {centre!r}.")
    if min_share == 0:
        return logits
    nx = get_backend(logits)
    if centre:
        raw = _as_float64(logits)
        votes = _centred(raw)
        # a win counts where the top class stands above its own level, by
        # more than the rounding of the mean (a constant row centres to
        # values of order 1e-17 of its level, not to zeros)
        finite = nx.isfinite(raw)
        size = nx.max(nx.where(finite, nx.abs(raw), 0.0), axis=1)
        wins = _winners(votes) & (votes > 1e-9 * size[:, None])
        if not bool(nx.any(wins)):
            # no class stands out anywhere (logits constant over the
            # image): the raw argmax is the only evidence left
            wins = _winners(logits)
    else:
        wins = _winners(logits)
    count = nx.sum(_as_float64(wins), 1)
    keep = (count >= min_share * logits.shape[1]) | (count == nx.max(count))
    return nx.where(keep[:, None], logits,
                    nx.full(logits.shape, -np.inf, type_as=logits))


def suppress_scattered_classes(logits, ratio, affinity, min_share, n_iter=15):
    """Drop the classes whose wins do not survive one step over the affinity.

    The second stage of the class-level suppression
    (``LogitNormalizer(presence="diffused")``). The class ratios
    :math:`f_c = P m_c q_c` (the class measures over the uniform
    distribution) take one step of the Markov chain of the affinity,
    balanced to a doubly stochastic :math:`T = \\mathrm{diag}(r) A
    \\mathrm{diag}(c)` by iterative proportional fitting
    (:func:`dsolo_sk.transport.doubly_stochastic_scaling`):

    .. math::

        g_c = f_c T, \\qquad
        n_c = \\#\\{i : c = \\arg\\max_k g_{ki}\\},

    and every class with :math:`n_c < \\mathrm{min\\_share} \\cdot P`
    gets ``-inf`` everywhere, unless it wins at least the average share of
    the patches in the logits' own argmax, :math:`P / K` patches with
    :math:`K` the classes left: the step judges only the classes smaller
    than the average one. The class that wins the most patches of
    :math:`g` always stays, and a class already dropped (all ``-inf``)
    stays dropped.

    A present class wins a region, which one step of averaging over the
    patches it attends to keeps; an absent class lifted by noise or by a
    confusion wins scattered patches, and each of them is outvoted by its
    neighbours. Counting wins after the step therefore separates the two
    better than the per-patch argmax of :func:`suppress_minor_classes`,
    which this stage follows. A class of average size or larger is not
    the noise this stage looks for, and sparing it keeps the test from
    collapsing onto the class of largest mass where the affinity is so
    broad that one step averages the whole image. The ratios are
    scale-free when `ratio` is (they come from the normalised
    distributions), and the balanced chain divides a sink patch's column
    away, so that a few patches every row attends to move the count
    little.

    Parameters
    ----------
    logits : array of shape (N, P)
        Class logits per patch (numpy or torch), possibly ``-inf``; only
        the rows that are all ``-inf`` (classes already dropped) are read.
    ratio : array of shape (N, P)
        Non-negative class ratios :math:`f_c` (same kind as `logits`).
    affinity : array of shape (P, P)
        Non-negative affinity between patches: numpy, a torch tensor on
        the device of `logits`, or a :mod:`scipy.sparse` matrix (numpy
        only).
    min_share : float in [0, 1)
        The smallest share of the patches a class must win after the step
        to stay. 0 keeps every class.
    n_iter : int, default=15
        Iterations of the proportional fitting, at most 100 000.

    Returns
    -------
    logits : array of shape (N, P)
        Same kind and device as `logits`; the dropped classes' rows are
        ``-inf``.

    See Also
    --------
    suppress_minor_classes : The first stage, on the per-patch argmax.

    Examples
    --------
    Two regions of four patches each. Class 2 wins one patch of each
    region by a small margin, and loses both once each patch is averaged
    with its region:

    >>> import numpy as np
    >>> from dsolo_sk.normalization import suppress_scattered_classes
    >>> A = np.kron(np.eye(2), np.ones((4, 4)))
    >>> f = np.array([[2.0, 2.0, 2.0, 1.4, 0.0, 0.0, 0.0, 0.0],
    ...               [0.0, 0.0, 0.0, 0.0, 1.6, 2.0, 2.0, 2.0],
    ...               [0.0, 0.0, 0.0, 1.5, 1.7, 0.0, 0.0, 0.0]])
    >>> L = np.log1p(f)
    >>> L.argmax(0)                      # class 2 wins a quarter
    array([0, 0, 0, 2, 2, 1, 1, 1])
    >>> suppress_scattered_classes(L, f, A, 0.2).max(1) == -np.inf
    array([False, False,  True])
    """
    logits = _share_input(logits, min_share)
    _check_logits(_as_float64(logits))
    _check_scaling_iter(n_iter)
    if min_share == 0:
        return logits
    nx = get_backend(logits)
    n, p = logits.shape
    ratio = _as_float64(ratio)
    if tuple(ratio.shape) != (n, p):
        raise ValueError(
            f"ratio must have the shape of the logits {(n, p)}, got "
            f"{tuple(ratio.shape)}."
        )
    if bool(nx.any(~nx.isfinite(ratio))) or bool(nx.any(ratio < 0)):
        raise ValueError("ratio must be finite and non-negative.")
    affinity = _check_affinity(affinity, p, "suppress_scattered_classes")
    if sp.issparse(affinity):
        if nx.__name__ != "numpy":
            raise TypeError("a scipy.sparse affinity needs numpy logits.")
        affinity = sp.csr_array(affinity).astype(np.float64)
    else:
        if not hasattr(affinity, "detach") or nx.__name__ != "torch":
            affinity = nx.from_numpy(np.asarray(affinity, dtype=np.float64),
                                     type_as=ratio)
        affinity = _as_float64(affinity)
    affinity = repair_affinity(affinity)
    r, c = doubly_stochastic_scaling(affinity, n_iter)
    g = markov_step(ratio, affinity, r, c)
    alive = _alive(logits)
    g = nx.where(alive[:, None], g, nx.full(g.shape, -np.inf, type_as=g))
    count = nx.sum(_as_float64(_winners(g)), 1)
    own = nx.sum(_as_float64(_winners(logits)), 1)
    large = own >= p / nx.sum(_as_float64(alive))
    keep = alive & ((count >= min_share * p) | (count == nx.max(count))
                    | large)
    return nx.where(keep[:, None], logits,
                    nx.full(logits.shape, -np.inf, type_as=logits))


#: The named readings of `baseline` of :func:`subtract_baseline` (a
#: number is a quantile over all the patches).
BASELINES = ("off", "outside", "mean")


def subtract_baseline(logits, baseline):
    """Subtract from each class its own level over the image.

    .. math::

        L'_{ci} = L_{ci} - \\beta_c .

    A per-class offset, such as the bias of a class name's text embedding,
    cancels, so the classes compete by where they stand out rather than by
    how high they sit. The level :math:`\\beta_c` (parameter `baseline`):

    - ``"off"``: the median of the class's logits over the patches where
      another class has the largest logit,
      :math:`\\beta_c = \\mathrm{median}\\{L_{cj} : \\arg\\max_k L_{kj}
      \\ne c\\}`: the class's level where it is not, whatever share of
      the image it covers (over all its patches if it wins them all);
    - ``"outside"``: the same median over the patches where the class is
      not the top class of the logits centred per class
      (:math:`L_{kj} - \\bar L_k`), so that which patches count is
      unchanged by a per-class offset, and the level with it;
    - ``"mean"``: the class's mean over the patches,
      :math:`\\beta_c = \\frac1P \\sum_j L_{cj}`, which cancels any
      per-class offset exactly (the text bias and the global class score
      of CLIP's dense logits are such offsets);
    - a number :math:`q \\in [0, 1]`: the :math:`q`-quantile of the class's
      logits over all the patches. A low quantile is the level of the
      patches the class does not cover only while it covers less than
      :math:`1 - q` of the image; the median would cancel the signal of a
      class that covers most of it.

    Only finite entries count; rows that are entirely ``-inf`` (dropped
    classes) stay so. A map :math:`L \\mapsto a L + b` (:math:`a > 0`)
    multiplies the result by :math:`a`; with a number, a per-class offset
    leaves it unchanged (with ``"mean"`` and ``"outside"`` always; with
    ``"off"``, as long as the offsets leave the argmax unchanged).

    Parameters
    ----------
    logits : array of shape (N, P)
        Class logits per patch (numpy or torch), possibly ``-inf``.
    baseline : "off", "outside", "mean" or float in [0, 1]
        The level subtracted.

    Returns
    -------
    logits : array of shape (N, P)
        float64, same kind and device as `logits`.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.normalization import subtract_baseline
    >>> L = np.array([[0.9, 0.8, 0.8, 0.8], [0.1, 0.1, 0.1, 0.5]])
    >>> subtract_baseline(L, 0.25).argmax(0)   # the raw argmax is [0 0 0 0]
    array([0, 0, 0, 1])
    >>> subtract_baseline(L, "off").round(3)   # class 0 wins everywhere
    array([[0.1, 0. , 0. , 0. ],
           [0. , 0. , 0. , 0.4]])
    """
    _check_baseline(baseline)
    logits = _as_float64(logits)
    nx = get_backend(logits)
    finite = nx.isfinite(logits)
    if isinstance(baseline, str) and baseline == "mean":
        level = _finite_mean(logits)
    elif isinstance(baseline, str):  # "off" or "outside"
        votes = _centred(logits) if baseline == "outside" else logits
        off = finite & ~_winners(votes)
        level = _masked_quantile(logits, off, 0.5)
        lonely = nx.sum(_as_float64(off), 1) == 0  # wins every patch
        if bool(nx.any(lonely)):
            level = nx.where(lonely, _masked_quantile(logits, finite, 0.5),
                             level)
    else:
        level = _masked_quantile(logits, finite, baseline)
    return nx.where(finite, logits - level[:, None], logits)


def _finite_mean(logits):
    """The (N,) mean of each class's finite logits (0 for a dropped
    class), float64 of the kind of `logits`."""
    nx = get_backend(logits)
    finite = nx.isfinite(logits)
    n = nx.maximum(_as_float64(nx.sum(finite, 1)), 1.0)
    return nx.sum(nx.where(finite, logits, 0.0), 1) / n


def _centred(logits):
    """`logits` less each class's finite mean (:func:`_finite_mean`);
    entries that are not finite stay as they are."""
    nx = get_backend(logits)
    return nx.where(nx.isfinite(logits),
                    logits - _finite_mean(logits)[:, None], logits)


def _masked_quantile(values, mask, q):
    """The `q`-quantile (linear interpolation, as :func:`numpy.quantile`)
    of each row's entries where `mask` holds; 0 for a row without any.
    Written with sorting and gathering, so that torch tensors stay on
    their device (POT's backend has no masked quantile)."""
    nx = get_backend(values)
    srt = nx.sort(nx.where(mask, values, np.inf), axis=1)  # kept ones first
    n = nx.sum(_as_float64(mask), 1)
    last = nx.maximum(n - 1, 0.0)
    pos = q * last
    lo = nx.floor(pos)
    hi = nx.minimum(lo + 1, last)
    v_lo, v_hi = _gather(srt, lo), _gather(srt, hi)
    v_lo = nx.where(nx.isfinite(v_lo), v_lo, 0.0)
    v_hi = nx.where(nx.isfinite(v_hi), v_hi, 0.0)
    return nx.where(n > 0, v_lo + (pos - lo) * (v_hi - v_lo), 0.0)


def _gather(rows, idx):
    """``rows[k, idx[k]]`` for every row, in numpy or torch."""
    if hasattr(rows, "detach"):
        return rows.gather(1, idx.long()[:, None])[:, 0]
    return np.take_along_axis(rows, idx.astype(np.int64)[:, None], 1)[:, 0]


def normalize_logits(logits, method="l1", temperature=0.01, over="image"):
    """Turn logits into class distributions over patches and class masses.

    First every entry gets a non-negative weight ``w`` (parameter
    `method`); suppressed entries (``-inf``) get zero:

    - ``"softmax"``: :math:`w_{ci} = \\exp(L_{ci} / T)`;
    - ``"l1"``: :math:`w_{ci} = L_{ci} - \\min L`, the shift by the image's
      smallest finite logit over all classes and patches;
    - ``"zscore"``: :math:`w_{ci} = \\exp((L_{ci} - \\bar L_c) / s_c)`, with
      each class's mean and standard deviation over its unsuppressed
      patches.

    Where every weight is zero (all finite logits equal), every unsuppressed
    entry gets the same weight.

    Then each class's weights are normalised over the patches,
    :math:`q_c = w_c / \\sum_i w_{ci}`, and the class gets a mass
    :math:`m_c` (parameter `over`):

    - ``"image"``: the weights are one distribution over all classes and
      patches, and :math:`m_c = \\sum_i w_{ci} / \\sum_{k,i} w_{ki}` is the
      class's share of it (the masses sum to one);
    - ``"class"``: every class is a distribution of its own, :math:`m_c = 1`.

    The class measure is :math:`m_c q_c`; its ratio to the uniform
    distribution over patches is :math:`f_c = P m_c q_c`.

    Parameters
    ----------
    logits : array of shape (N, P)
        Logits, possibly ``-inf`` where suppressed (numpy or torch).
    method : {"softmax", "l1", "zscore"}, default="l1"
        The weights.
    temperature : float, default=0.01
        The softmax temperature ``T`` (CLIP's is 1/100).
    over : {"image", "class"}, default="image"
        The normalisation's scope.

    Returns
    -------
    q : array of shape (N, P)
        Rows sum to one, except rows of empty classes, which are zero;
        float64, of the kind (numpy or torch) and device of `logits`.
    mass : array of shape (N,)
        Class masses; zero for empty classes (all suppressed, or no weight).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.normalization import normalize_logits
    >>> L = np.array([[0.3, 0.2, 0.1], [-np.inf, 0.4, 0.5]])
    >>> q, mass = normalize_logits(L)
    >>> q.round(3)
    array([[0.667, 0.333, 0.   ],
           [0.   , 0.429, 0.571]])
    >>> mass.round(3)
    array([0.3, 0.7])
    """
    check_option(method, "normalization", NORMALIZATIONS)
    check_option(over, "normalize_over", NORMALIZE_OVER)
    check_scalar(temperature, "temperature", min_val=0, include_min=False)
    return _normalize(_check_logits(_as_float64(logits)), method,
                      temperature, over)


def _normalize(logits, method, temperature, over):
    """The work of :func:`normalize_logits` on checked float64 `logits`
    and options (:class:`LogitNormalizer` checks them once, at its
    boundary)."""
    nx = get_backend(logits)
    finite = nx.isfinite(logits)
    if not bool(nx.any(finite)):
        raise ValueError("every logit is suppressed or infinite.")
    if method == "l1":
        low = nx.min(nx.where(finite, logits, np.inf))
        w = nx.where(finite, logits - low, 0.0)
    else:
        if method == "softmax":
            z = nx.where(finite, logits / temperature, -np.inf)
        else:
            n = _as_float64(nx.sum(finite, 1, keepdims=True))
            mean = _finite_mean(logits)[:, None]
            var = nx.sum(nx.where(finite, logits - mean, 0.0) ** 2, 1,
                         keepdims=True) / nx.maximum(n, 1.0)
            std = nx.sqrt(var)
            std = nx.where(std > 0, std, 1.0)
            z = nx.where(finite, (logits - mean) / std, -np.inf)
        # the shift cancels in q; it is global when the masses compare
        # classes, per class otherwise (so no class underflows to zero)
        top = (nx.max(z) if over == "image"
               else nx.max(z, axis=1, keepdims=True))
        top = nx.where(nx.isfinite(top), top, 0.0)
        w = nx.where(finite, nx.exp(z - top), 0.0)
    if not bool(nx.any(w != 0)):
        # all finite logits are equal (a blank image, say): no entry is
        # preferred, so every unsuppressed entry gets the same weight
        w = _as_float64(finite)
    return _distributions(w, over)


def _distributions(w, over):
    """Class distributions and masses of non-negative weights (N, P)."""
    nx = get_backend(w)
    total = nx.sum(w, 1)
    q = w / nx.where(total > 0, total, 1.0)[:, None]
    if over == "image":
        mass = total / nx.sum(total)
    else:
        mass = _as_float64(total > 0)
    return q, mass


def class_contrast(logits, temperature):
    """Per-patch class probabilities of the logits centred per class.

    .. math::

        w_{ci} = \\frac{\\exp\\big((L_{ci} - \\bar L_c)/T\\big)}
        {\\sum_k \\exp\\big((L_{ki} - \\bar L_k)/T\\big)},
        \\qquad \\bar L_c = \\frac1P \\sum_i L_{ci}.

    Centring each class over the patches removes what is constant over
    the image for that class: a per-class bias of the text embedding, and
    the leakage of a present class into every patch. The softmax over
    classes then lets the classes compete at every patch, so an absent
    class, flat but for noise, cannot take a patch where a present class
    stands out. Suppressed entries (``-inf``) get no weight; the mean
    runs over each class's finite entries.

    Parameters
    ----------
    logits : ndarray of shape (N, P)
        Logits, possibly ``-inf`` where suppressed.
    temperature : float
        The softmax temperature, on the logits' scale.

    Returns
    -------
    weights : ndarray of shape (N, P)
        Every column with a finite entry sums to one.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.normalization import class_contrast
    >>> L = np.array([[0.9, 0.8, 0.7], [0.1, 0.2, 0.6]])  # class 0 biased
    >>> class_contrast(L, 0.1).argmax(0)
    array([0, 0, 1])
    """
    check_scalar(temperature, "temperature", min_val=0, include_min=False)
    logits = _as_float64(logits)
    nx = get_backend(logits)
    finite = nx.isfinite(logits)
    mean = _finite_mean(logits)[:, None]
    z = nx.where(finite, (logits - mean) / temperature, -np.inf)
    top = nx.max(z, axis=0, keepdims=True)
    top = nx.where(nx.isfinite(top), top, 0.0)
    w = nx.where(finite, nx.exp(z - top), 0.0)
    total = nx.sum(w, 0, keepdims=True)
    return w / nx.where(total > 0, total, 1.0)


class LogitNormalizer(BaseEstimator):
    """Non-maximum suppression and normalisation of class logits.

    The step of :class:`~dsolo_sk.DirectSegmenter` between the logits and
    the discrepancy: logits ``L`` of shape (N, P) become class
    distributions over the patches ``q`` (N, P) and class masses ``m``
    (N,). In order:

    1. class-level suppression (`min_share` > 0): the classes that are the
       top class at fewer than ``min_share * P`` patches are dropped
       (:func:`suppress_minor_classes`; with ``presence="centred"`` the
       top class of the logits centred per class); with
       ``presence="diffused"`` (``"centred-diffused"``: after the centred
       test) the classes left must also win that share of the patches after one
       step of the class ratios over the affinity
       (:func:`suppress_scattered_classes`, on the result of steps 2-4),
       and steps 2-4 run again without the classes it drops;
    2. a per-class baseline (`baseline` not None): each class's own level
       (``"off"``: its median where another class wins; a number: that
       quantile over the patches) is subtracted (:func:`subtract_baseline`),
       so that a per-class offset cancels;
    3. patch-level suppression (`nms`): every patch keeps only its winning
       class's logit (:func:`suppress_non_maximum`, the losers get
       `nms_fill`);
    4. every class's weights are normalised over the patches
       (:func:`normalize_logits`):

    .. math::

        q_{ci} = \\frac{w_{ci}}{\\sum_j w_{cj}}, \\qquad
        m_c = \\frac{\\sum_i w_{ci}}{\\sum_{k,i} w_{ki}}
        \\ (\\text{over="image"}) \\quad\\text{or}\\quad m_c = 1
        \\ (\\text{over="class"}),

    with the weights ``w`` of `method` (``"l1"``: the logits shifted by
    their minimum; ``"softmax"``: :math:`e^{L/T}`; ``"zscore"``:
    :math:`e^{(L - \\bar L_c)/s_c}`). A class that keeps no weight gets
    mass zero and is never predicted.

    Parameters
    ----------
    nms : bool, default=True
        Non-maximum suppression over classes before normalisation.
    nms_fill : {"zero", "min"}, default="zero"
        What the suppressed entries get: no weight at all (``"zero"``), or
        their class's smallest logit over the image (``"min"``).
    method : {"l1", "softmax", "zscore", "contrast"}, default="l1"
        The weights. ``"contrast"``: the softmax over classes, at every
        patch, of the logits centred per class (:func:`class_contrast`),
        so that the class ratio :math:`f_c = P m_c q_c` is the class's
        probability at each patch; suppression, when on, keeps at every
        patch the winning class's probability only.
    temperature : float, default=0.01
        Softmax temperature of ``method="softmax"`` (CLIP's is 1/100), in
        the unit of `temperature_unit`.
    over : {"image", "class"}, default="image"
        One distribution over all classes and patches, so that each class
        has a mass (its share), or one distribution per class.
    temperature_unit : {"logit", "spread"}, default="logit"
        ``"logit"``: `temperature` is on the logits' own scale.
        ``"spread"``: it is a multiple of each image's
        :func:`logit_spread`, which makes the softmax scale-free.
    min_share : float in [0, 1), default=0.03
        Class-level suppression: the smallest share of the patches a class
        must win (be the top class of the logits at) to stay; the others
        carry no mass and are never predicted. The class that wins the most
        patches always stays. It reads only the per-patch argmax, so it is
        invariant to the logits' scale and offset. 0 keeps every class.
        The default is chosen by the worst scene family of the synthetic
        benchmark (method page); a class covering less of the image than
        this is at risk, so lower it for vocabularies of many small
        things.
    baseline : "off", "outside", "mean" or float in [0, 1], optional
        A level subtracted from each class's logits before the suppression
        and the weights (:func:`subtract_baseline`): ``"off"``, the median
        of the class's logits where another class wins; ``"outside"``,
        the same where another class wins once every class is centred
        (exactly invariant to per-class offsets); ``"mean"``, its
        mean over the patches; a number, that quantile of its logits over
        all the patches. None subtracts nothing. It cancels per-class
        offsets (a class name's bias).
    presence : {"argmax", "centred", "diffused", "centred-diffused"}, \
default="argmax"
        How the class-level suppression counts a class's patches:
        ``"argmax"``, where the class is the top class of the logits only;
        ``"centred"``, where it is the top class of the logits centred per
        class, :math:`L_{ci} - \\bar L_c` (unchanged by a per-class offset
        :math:`L_{ci} + b_c`, such as CLIP's text bias and global class
        score, which decide the raw argmax on CLIP's dense logits);
        ``"diffused"``, also where it is the top class of its ratio
        :math:`f_c = P m_c q_c` after one step of the Markov chain of the
        affinity (:func:`suppress_scattered_classes`), which outvotes the
        scattered patches an absent class wins by noise;
        ``"centred-diffused"``, the centred test, then the step. The two
        with a step read the affinity: :meth:`normalize` must get it, and
        :attr:`requires_affinity` is true.

    baseline_weight : float in [0, 1], default=1.0
        The fraction :math:`w` of the baseline subtracted,
        :math:`L' = L - w \\beta_c`. 1 subtracts all of it, and with
        ``baseline="mean"`` the distributions are then exactly invariant to
        a per-class offset :math:`L_{ci} + b_c`; below 1 a fraction
        :math:`(1 - w)` of each class's level over the image stays and
        counts as evidence of the class's presence (the velocity mode
        keeps 7 %, the kl mode 85 %: their benchmark table is on the method
        page).

    Attributes
    ----------
    requires_affinity : bool
        Whether :meth:`normalize` needs the affinity (``presence=
        "diffused"`` or ``"centred-diffused"``);
        :class:`~dsolo_sk.DirectSegmenter` passes it then.

    See Also
    --------
    suppress_non_maximum, normalize_logits : The two steps as functions.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk import LogitNormalizer
    >>> L = np.array([[0.3, 0.2, 0.1], [0.1, 0.4, 0.5]])
    >>> q, mass = LogitNormalizer(nms=False).normalize(L)
    >>> q.round(3)
    array([[0.667, 0.333, 0.   ],
           [0.   , 0.429, 0.571]])
    >>> mass.round(3)
    array([0.3, 0.7])
    """

    def __init__(self, nms=True, nms_fill="zero", method="l1",
                 temperature=0.01, over="image", temperature_unit="logit",
                 min_share=0.03, baseline=None, presence="argmax",
                 baseline_weight=1.0):
        self.nms = nms
        self.nms_fill = nms_fill
        self.method = method
        self.temperature = temperature
        self.over = over
        self.temperature_unit = temperature_unit
        self.min_share = min_share
        self.baseline = baseline
        self.presence = presence
        self.baseline_weight = baseline_weight

    @property
    def requires_affinity(self):
        """Whether :meth:`normalize` reads the affinity."""
        return self.presence in ("diffused", "centred-diffused")

    def _validate_params(self):
        if not isinstance(self.nms, (bool, np.bool_)):
            raise TypeError(f"nms must be True or False, got {self.nms!r}.")
        check_option(self.nms_fill, "nms_fill", NMS_FILLS)
        check_option(self.method, "method", NORMALIZER_METHODS)
        check_scalar(self.temperature, "temperature", min_val=0,
                     include_min=False, max_val=1e6)
        check_option(self.over, "over", NORMALIZE_OVER)
        check_option(self.temperature_unit, "temperature_unit",
                     TEMPERATURE_UNITS)
        _check_min_share(self.min_share)
        if self.baseline is not None:
            _check_baseline(self.baseline)
        check_option(self.presence, "presence", PRESENCE_TESTS)
        check_scalar(self.baseline_weight, "baseline_weight", min_val=0,
                     max_val=1, unit="(fraction of the baseline)")

    def normalize(self, logits, affinity=None):
        """Class distributions and masses of one image's logits.

        Parameters
        ----------
        logits : array of shape (N, P)
            Class logits per patch: numpy, or a torch tensor on any device
            (the same code runs, through POT's backend).
        affinity : array of shape (P, P), optional
            The affinity between the patches, needed (and only read) with
            ``presence="diffused"``: numpy, a torch tensor on the device
            of `logits`, or a :mod:`scipy.sparse` matrix (numpy only).

        Returns
        -------
        q : array of shape (N, P)
            Rows sum to one, except rows of classes without mass (zero);
            float64, of the kind and device of `logits`.
        mass : array of shape (N,)
            Class masses; zero for classes that keep no weight.
        """
        self._validate_params()
        if not hasattr(logits, "detach"):  # a torch tensor stays one
            logits = np.asarray(logits)
        if logits.ndim != 2:
            raise ValueError(
                f"logits must have shape (n_classes, n_patches), got "
                f"{logits.shape}."
            )
        _check_logits(_as_float64(logits))
        if self.requires_affinity and affinity is None:
            raise ValueError(
                f"LogitNormalizer(presence={self.presence!r}) reads the "
                "affinity: call normalize(logits, affinity)."
            )
        if self.min_share > 0:
            logits = suppress_minor_classes(
                logits, self.min_share,
                centre=self.presence in ("centred", "centred-diffused"))
        q, mass = self._weights(logits)
        if self.requires_affinity and self.min_share > 0:
            nx = get_backend(q)
            ratio = q * (q.shape[1] * mass)[:, None]
            kept = suppress_scattered_classes(logits, ratio, affinity,
                                              self.min_share)
            if bool(nx.any(_alive(logits) & ~_alive(kept))):
                q, mass = self._weights(kept)
        return q, mass

    def _weights(self, logits):
        """Steps 2-4: the baseline, patch-level suppression, weights."""
        if self.baseline is not None:
            raw = _as_float64(logits)
            logits = subtract_baseline(raw, self.baseline)
            if self.baseline_weight < 1:
                # L - w beta = (1 - w) L + w (L - beta)
                nx = get_backend(logits)
                w = float(self.baseline_weight)
                logits = nx.where(nx.isfinite(raw),
                                  (1 - w) * raw + w * logits, raw)
        temperature = self.temperature
        if self.temperature_unit == "spread":
            temperature = temperature * logit_spread(logits)
        if self.method == "contrast":
            w = class_contrast(logits, temperature)
            if self.nms:
                nx = get_backend(w)
                w = suppress_non_maximum(w, self.nms_fill)
                w = nx.where(nx.isfinite(w), w, 0.0)
            return _distributions(w, self.over)
        if self.nms:
            logits = suppress_non_maximum(logits, self.nms_fill)
        return _normalize(_as_float64(logits), self.method, temperature,
                          self.over)
