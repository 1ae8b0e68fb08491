"""Checks of arrays: what the public functions take, what the parts return.

Two kinds of check share this module:

- :func:`check_part_output`, the contract of every part of a segmenter
  (a normaliser, a discrepancy, an upsampler: built-in or the user's
  own) at the segmenter's boundary. Whatever the part returned must be a
  numpy array or a torch tensor (detached here), of a real floating type,
  of the expected shape and finite; anything else is refused with a
  message naming the part (its repr) and what was expected, before it can
  fail deep inside the segmenter or turn into wrong labels;
- :func:`check_logits` and :func:`check_real_array`, the inputs of the
  public functions of :mod:`dsolo_sk.normalization` and
  :mod:`dsolo_sk.upsample`.

Arrays stay in their backend: a torch tensor is checked on its device,
with one synchronisation per check.
"""

import numpy as np

__all__ = ["is_tensor", "check_part_output", "check_logits",
           "check_real_array", "describe"]


def is_tensor(x):
    """Whether `x` is a torch tensor (without importing torch)."""
    return hasattr(x, "detach") and hasattr(x, "device")


def describe(value):
    """A few words on `value` for an error message: its type, and the
    shape and dtype of an array."""
    if is_tensor(value) or isinstance(value, np.ndarray):
        return (f"a {type(value).__name__} of shape {tuple(value.shape)} "
                f"and dtype {value.dtype}")
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return f"the string {text if len(text) <= 40 else text[:37] + '...'}"
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"an object of type {type(value).__name__}"


def _n_not_finite(x):
    if is_tensor(x):
        import torch

        return int((~torch.isfinite(x)).sum())
    return int(x.size - np.count_nonzero(np.isfinite(x)))


def _real_float(x):
    """`x` (numpy or torch) of a real floating type, half precision
    widened to float32; None when its type is not real floating."""
    if is_tensor(x):
        if not x.is_floating_point():
            return None
        return x.float() if x.element_size() < 4 else x
    if x.dtype.kind != "f":
        return None
    if x.dtype.itemsize < 4:
        return x.astype(np.float32)
    if x.dtype.itemsize > 8:  # long double
        return x.astype(np.float64)
    return x


def _kind_hint(dtype):
    kind = getattr(dtype, "kind", None)
    text = str(dtype)
    if kind == "c" or "complex" in text:
        return "complex numbers; return real scores (for example .real)"
    if kind == "b" or text.endswith("bool"):
        return "booleans; return float scores (astype(np.float32))"
    if kind in "iu" or "int" in text:
        return "integers; return float scores (astype(np.float32))"
    return f"dtype {dtype}; return float32 or float64 numbers"


def check_part_output(value, *, role, part, method, shape, what,
                      nonnegative=False):
    """The array a part returned, checked against the segmenter's contract.

    Parameters
    ----------
    value : object
        What ``part.method(...)`` returned.
    role : str
        The part's parameter, ``"normalizer"``, ``"discrepancy"`` or
        ``"upsampler"``.
    part : object
        The part, named (by its repr) in the messages.
    method : str
        Its method, for example ``"compute"``.
    shape : tuple of int
        The expected shape.
    what : str
        What the array is, with the meaning of its shape, for example
        ``"scores of shape (N, P) = (3, 16), one row per class with
        mass"``.
    nonnegative : bool, default=False
        Whether negative values are refused too.

    Returns
    -------
    array
        `value` as a numpy array or a detached torch tensor, of a real
        floating type (float16 and bfloat16 widened to float32), of
        `shape`, finite.

    Raises
    ------
    TypeError
        If `value` is not a numpy array or a torch tensor (a tuple, a
        list, a string, a masked array, a sparse matrix, ...) or is not of
        a real floating type (complex, integer, boolean, object).
    ValueError
        If its shape differs from `shape`, or it holds NaN, infinite or
        (with `nonnegative`) negative values.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk._arrays import check_part_output
    >>> check_part_output(np.zeros((2, 3)), role="discrepancy", part="D()",
    ...                   method="compute", shape=(2, 3),
    ...                   what="scores").shape
    (2, 3)
    >>> check_part_output((np.zeros((2, 3)),), role="discrepancy",
    ...                   part="D()", method="compute", shape=(2, 3),
    ...                   what="scores")
    Traceback (most recent call last):
    ...
    TypeError: the discrepancy 'D()' returned a tuple of 1 items from compute(); expected scores as a numpy array or a torch tensor.
    """
    who = f"the {role} {part!r}"
    if is_tensor(value):
        value = value.detach()
    elif (not isinstance(value, np.ndarray) or isinstance(
            value, (np.matrix, np.ma.MaskedArray))):
        raise TypeError(
            f"{who} returned {describe(value)} from {method}(); expected "
            f"{what} as a numpy array or a torch tensor."
        )
    else:
        value = np.asarray(value)
    out = _real_float(value)
    if out is None:
        raise TypeError(
            f"{who} returned {method}() values of {_kind_hint(value.dtype)}; "
            f"expected {what}, real floating point."
        )
    if tuple(out.shape) != tuple(shape):
        raise ValueError(
            f"{who} returned an array of shape {tuple(out.shape)} from "
            f"{method}(); expected {what}."
        )
    n_bad = _n_not_finite(out)
    if n_bad:
        raise ValueError(
            f"{who} returned {n_bad} NaN or infinite values from "
            f"{method}() (of {int(np.prod(shape))}); expected finite "
            f"{what}. Check its parameters and its input."
        )
    if nonnegative and bool((out < 0).any()):
        raise ValueError(
            f"{who} returned negative values from {method}(); expected "
            f"non-negative {what}."
        )
    return out


def _as_array(x, name):
    """`x` as a numpy array, or the tensor itself (detached)."""
    if is_tensor(x):
        return x.detach()
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array, got {describe(x)}.")
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers: {exc}") \
            from None


def check_real_array(x, name, *, ndim=None, shape=None, finite=True,
                     nonnegative=False, allow_neg_inf=False):
    """Check an array input of a public function; return it.

    `x` is a numpy array (anything :func:`numpy.asarray` turns into one) or
    a torch tensor, which stays one, detached, on its device. Its type
    must be real (integers and floats; booleans, complex numbers, strings
    and objects are refused). With `finite`, NaN and infinite values are
    refused, ``-inf`` excepted where `allow_neg_inf` (suppressed entries).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk._arrays import check_real_array
    >>> check_real_array([[0.5, -np.inf]], "logits", ndim=2,
    ...                  allow_neg_inf=True)
    array([[ 0.5, -inf]])
    >>> check_real_array([[np.nan]], "logits", ndim=2)
    Traceback (most recent call last):
    ...
    ValueError: logits holds 1 NaN values; pass finite numbers.
    """
    x = _as_array(x, name)
    if is_tensor(x):
        bad_type = x.is_complex() or x.dtype.is_complex or str(
            x.dtype) == "torch.bool"
    else:
        bad_type = x.dtype.kind not in "iuf"
    if bad_type:
        raise TypeError(
            f"{name} must hold real numbers, got dtype {x.dtype}."
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array, got shape {tuple(x.shape)}."
        )
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have shape {tuple(shape)}, got "
            f"{tuple(x.shape)}."
        )
    is_float = x.is_floating_point() if is_tensor(x) else x.dtype.kind == "f"
    if finite and is_float:
        n_nan = int((x != x).sum())
        if n_nan:
            raise ValueError(f"{name} holds {n_nan} NaN values; pass finite "
                             "numbers.")
        n_pos = int((x == float("inf")).sum())
        n_neg = 0 if allow_neg_inf else int((x == float("-inf")).sum())
        if n_pos or n_neg:
            allowed = " (-inf marks a suppressed entry)" if allow_neg_inf \
                else ""
            raise ValueError(
                f"{name} holds {n_pos + n_neg} infinite values{allowed}; "
                "pass finite numbers."
            )
    if nonnegative and bool((x < 0).any()):
        raise ValueError(f"{name} must be non-negative.")
    return x


def check_logits(logits, name="logits"):
    """Logits of shape (N, P): real, 2-D, no NaN or ``+inf``; ``-inf``
    marks a suppressed entry. A torch tensor stays one (detached); anything
    else becomes a numpy array."""
    return check_real_array(logits, name, ndim=2, allow_neg_inf=True)


def check_normalizer_output(out, part, n_classes, n_patches):
    """The ``(q, mass)`` a normaliser returned, checked.

    ``q`` must be finite, non-negative, of shape (N, P), every row of a
    class with mass summing to one; ``mass`` finite, non-negative, of
    shape (N,). Returns both, as :func:`check_part_output` does.
    """
    shape = (n_classes, n_patches)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(
            f"the normalizer {part!r} returned {describe(out)} from "
            "normalize(); expected a pair (q, mass): class distributions "
            f"of shape (N, P) = {shape} and class masses of shape (N,) = "
            f"({n_classes},)."
        )
    q = check_part_output(
        out[0], role="normalizer", part=part, method="normalize",
        shape=shape, nonnegative=True,
        what=f"class distributions q of shape (N, P) = {shape}, one row "
             "per class of the logits")
    mass = check_part_output(
        out[1], role="normalizer", part=part, method="normalize",
        shape=(n_classes,), nonnegative=True,
        what=f"class masses of shape (N,) = ({n_classes},), one per class")
    sums = q.sum(1)
    live = mass > 0
    bad = live & ((sums - 1.0).abs() > 1e-3 if is_tensor(sums)
                  else np.abs(sums - 1.0) > 1e-3)
    if bool(bad.any()):
        rows = (bad.nonzero()[:, 0] if is_tensor(bad)
                else np.flatnonzero(bad))[:5].tolist()
        raise ValueError(
            f"the normalizer {part!r} returned class distributions whose "
            f"rows {rows} do not sum to one although their class has mass; "
            "each row of q must be a distribution over the patches (or "
            "the class's mass zero)."
        )
    return q, mass


def float32_scores(scores):
    """Scores as float32 without losing their ranking to a common offset.

    Float64 scores whose common offset float32 cannot resolve (scores near
    ``1e8`` differing by less than one, say) are shifted by the midpoint of
    their range first: a constant shift changes no argmax, whereas the
    cast would make the classes tie. Scores already float32 pass as they
    are. Returns a float32 array of the same backend.

    Raises
    ------
    ValueError
        If the scores span more than float32 holds.
    """
    if is_tensor(scores):
        import torch

        if scores.dtype != torch.float32:
            if scores.dtype == torch.float64 and scores.numel():
                hi, lo = float(scores.max()), float(scores.min())
                if _offset_dominates(hi, lo):
                    scores = scores - (hi + lo) / 2
            scores = scores.float()
        n_bad = _n_not_finite(scores)
    else:
        if scores.dtype != np.float32:
            if scores.dtype == np.float64 and scores.size:
                hi, lo = float(scores.max()), float(scores.min())
                if _offset_dominates(hi, lo):
                    scores = scores - (hi + lo) / 2
            scores = scores.astype(np.float32)
        n_bad = _n_not_finite(scores)
    if n_bad:
        raise ValueError(
            "scores span more than float32 holds (their largest and "
            "smallest values differ by more than 3e38); rescale them."
        )
    return scores


def _offset_dominates(hi, lo):
    """Whether the float32 rounding of values in [lo, hi] (about
    ``max|v| * 2**-24``) exceeds 1/4096 of their spread."""
    spread = hi - lo
    return max(abs(hi), abs(lo)) * 2.0 ** -24 > spread * 2.0 ** -12


def below(scores):
    """A value strictly below every score, distinct from the lowest one in
    float32 (a margin relative to its magnitude, not a fixed 1.0 that
    float32 loses above 2**24), and finite."""
    low = float(scores.min())
    fill = low - max(1.0, abs(low) * 2.0 ** -10)
    return max(fill, -float(np.finfo(np.float32).max))
