"""Non-maximum suppression over classes and normalisation over patches.

Logits ``L`` of shape (N, P) become one distribution ``q_c`` over the P
patches per class, and a mass per class. Suppressed entries and classes
that win no patch are handled explicitly: a suppressed entry carries no
mass, and a class with no mass at all gets mass zero, so that the segmenter
never predicts it.

.. rubric:: Examples

The accepted values of the ``method``, ``fill`` and ``over`` options:

>>> from dsolo_sk.normalization import NMS_FILLS, NORMALIZATIONS, NORMALIZE_OVER
>>> NORMALIZATIONS, NMS_FILLS, NORMALIZE_OVER
(('softmax', 'l1', 'zscore'), ('zero', 'min'), ('image', 'class'))
"""

import numpy as np

from ._validation import check_option, check_scalar

__all__ = ["suppress_non_maximum", "normalize_logits", "NORMALIZATIONS",
           "NMS_FILLS", "NORMALIZE_OVER"]

#: The values of `method` of :func:`normalize_logits`.
NORMALIZATIONS = ("softmax", "l1", "zscore")
#: The values of `fill` of :func:`suppress_non_maximum`.
NMS_FILLS = ("zero", "min")
#: The values of `over` of :func:`normalize_logits`.
NORMALIZE_OVER = ("image", "class")


def suppress_non_maximum(logits, fill="zero"):
    """Keep, at every patch, only the logit of the winning class.

    Parameters
    ----------
    logits : ndarray of shape (N, P)
        Class logits per patch.
    fill : {"zero", "min"}, default="zero"
        What the losing classes get. ``"zero"`` gives them ``-inf``, so they
        carry no mass after any normalisation of :func:`normalize_logits`.
        ``"min"`` gives them their class's smallest logit over the image, so
        a softmax still leaves them a little mass.

    Returns
    -------
    suppressed : ndarray of shape (N, P)

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.normalization import suppress_non_maximum
    >>> suppress_non_maximum(np.array([[0.3, 0.1], [0.2, 0.4]]))
    array([[ 0.3, -inf],
           [-inf,  0.4]])
    """
    check_option(fill, "nms_fill", NMS_FILLS)
    logits = np.asarray(logits)
    win = np.argmax(logits, axis=0)
    keep = np.zeros(logits.shape, dtype=bool)
    keep[win, np.arange(logits.shape[1])] = True
    if fill == "zero":
        other = np.full_like(logits, -np.inf)
    else:
        other = np.broadcast_to(logits.min(axis=1, keepdims=True),
                                logits.shape)
    return np.where(keep, logits, other)


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
    logits : ndarray of shape (N, P)
        Logits, possibly ``-inf`` where suppressed.
    method : {"softmax", "l1", "zscore"}, default="l1"
        The weights.
    temperature : float, default=0.01
        The softmax temperature ``T`` (CLIP's is 1/100).
    over : {"image", "class"}, default="image"
        The normalisation's scope.

    Returns
    -------
    q : ndarray of shape (N, P)
        Rows sum to one, except rows of empty classes, which are zero.
    mass : ndarray of shape (N,)
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
    logits = np.asarray(logits, dtype=np.float64)
    finite = np.isfinite(logits)
    if not finite.any():
        raise ValueError("every logit is suppressed or infinite.")
    if method == "l1":
        w = np.where(finite, logits - logits[finite].min(), 0.0)
    else:
        if method == "softmax":
            z = np.where(finite, logits / temperature, -np.inf)
        else:
            n = finite.sum(1, keepdims=True)
            mean = np.where(finite, logits, 0.0).sum(1, keepdims=True) / \
                np.maximum(n, 1)
            var = (np.where(finite, logits - mean, 0.0) ** 2).sum(
                1, keepdims=True) / np.maximum(n, 1)
            std = np.sqrt(var)
            std = np.where(std > 0, std, 1.0)
            z = np.where(finite, (logits - mean) / std, -np.inf)
        # the shift cancels in q; it is global when the masses compare
        # classes, per class otherwise (so no class underflows to zero)
        top = (np.max(z) if over == "image"
               else np.max(z, axis=1, keepdims=True))
        top = np.where(np.isfinite(top), top, 0.0)
        w = np.where(finite, np.exp(z - top), 0.0)
    if not w.any():
        # all finite logits are equal (a blank image, say): no entry is
        # preferred, so every unsuppressed entry gets the same weight
        w = finite.astype(np.float64)
    total = w.sum(1)
    q = w / np.where(total > 0, total, 1.0)[:, None]
    if over == "image":
        mass = total / total.sum()
    else:
        mass = (total > 0).astype(np.float64)
    return q, mass
