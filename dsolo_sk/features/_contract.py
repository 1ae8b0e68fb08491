"""The precomputed-feature contract: one :class:`xarray.Dataset` per image.

Every extractor produces, and every segmenter consumes, a Dataset with

``logits``
    dims ``("class", "row", "col")``, float: cosine similarities between the
    patch embeddings and the class embeddings on the patch grid. The
    coordinate ``class`` holds the class names.
``affinity`` (optional)
    dims ``("patch", "patch_")``, float >= 0, of shape (P, P) with
    P = row * col in row-major order. Row ``i`` says how much patch ``i``
    relates to every other patch (for example a self-attention map). It
    need not be symmetric nor normalised.
``image``
    dims ``("y", "x", "channel")``, uint8 RGB: the guidance image of the
    upsampling. The predicted label map has its height and width.
``query_logits`` (optional)
    dims ``("query", "row", "col")``, float: the cosine similarities of
    every text query, each synonym of a class name its own query, with the
    coordinate ``query_class`` (dim ``"query"``, int) giving the index of
    the class each query belongs to. ``logits`` is their maximum per
    class. The peers' background rule needs them: it takes the softmax over
    all queries before the maximum per class (see
    :func:`dsolo_sk.evaluation.class_probabilities`).
"""

import numpy as np
import xarray as xr

from .._validation import check_classes

__all__ = ["from_arrays", "check_features"]


def _is_tensor(a):
    return hasattr(a, "detach") and hasattr(a, "device")


def max_per_class(values, query_class, n_classes):
    """The maximum over each class's queries: (Q, ...) -> (n_classes, ...).

    Every class needs at least one query. `values` is numpy, or a torch
    tensor whose result stays on its device; `query_class` is a sequence
    of ints (numpy on either path).
    """
    query_class = np.asarray(query_class)
    if _is_tensor(values):
        import torch

        # a writable copy: torch warns on the read-only owner arrays
        index = torch.as_tensor(np.array(query_class, dtype=np.int64),
                                device=values.device)
        index = index.reshape((-1,) + (1,) * (values.ndim - 1))
        out = torch.full((n_classes,) + tuple(values.shape[1:]),
                         float("-inf"), dtype=values.dtype,
                         device=values.device)
        return out.scatter_reduce(0, index.expand(values.shape), values,
                                  reduce="amax")
    values = np.asarray(values)
    out = np.full((n_classes,) + values.shape[1:], -np.inf,
                  dtype=values.dtype)
    for q, c in enumerate(query_class.tolist()):
        out[c] = np.maximum(out[c], values[q])
    return out


def _as_numpy(a, name):
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    try:
        a = np.asarray(a)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be array-like: {exc}") from None
    return a


def _is_floating(a):
    if _is_tensor(a):
        return a.is_floating_point()
    return np.issubdtype(a.dtype, np.floating)


def _n_not_finite(a):
    """How many entries of `a` are NaN or infinite (numpy or torch; a
    tensor is counted on its device)."""
    if _is_tensor(a):
        import torch

        return int((~torch.isfinite(a)).sum())
    return int(np.size(a) - np.isfinite(a).sum())


def _check_logits(logits, classes):
    shape = tuple(logits.shape)
    if len(shape) != 3:
        raise ValueError(
            "logits must have shape (n_classes, rows, cols), got shape "
            f"{shape}; reshape a (n_classes, n_patches) array to the "
            "patch grid first."
        )
    if not _is_floating(logits):
        raise TypeError(
            f"logits must be floating point, got dtype {logits.dtype}."
        )
    if shape[0] != len(classes):
        raise ValueError(
            f"logits has {shape[0]} class maps but {len(classes)} "
            "class names were given; pass one name per map."
        )
    if min(shape[1:]) < 1:
        raise ValueError(f"logits has an empty patch grid {shape[1:]}.")
    n_bad = _n_not_finite(logits)
    if n_bad:
        raise ValueError(
            f"logits holds {n_bad} NaN or infinite values; check the "
            "feature extractor (cosine similarities lie in [-1, 1])."
        )


def _check_queries(query_logits, query_class, logits):
    """Shapes, types, the query -> class index and the maximum per class."""
    if query_logits.ndim != 3 or query_logits.shape[1:] != logits.shape[1:]:
        raise ValueError(
            f"query_logits must have shape (n_queries, rows, cols) with the "
            f"patch grid of logits {logits.shape[1:]}, got "
            f"{query_logits.shape}."
        )
    if not np.issubdtype(query_logits.dtype, np.floating):
        raise TypeError(f"query_logits must be floating point, got dtype "
                        f"{query_logits.dtype}.")
    if not np.all(np.isfinite(query_logits)):
        raise ValueError("query_logits holds NaN or infinite values.")
    if query_class.shape != (query_logits.shape[0],) or not np.issubdtype(
            query_class.dtype, np.integer):
        raise ValueError(
            f"query_class must hold one integer class index per query "
            f"({query_logits.shape[0]}), got {query_class.dtype} of shape "
            f"{query_class.shape}."
        )
    n = logits.shape[0]
    if query_class.size and (query_class.min() < 0 or query_class.max() >= n):
        raise ValueError(f"query_class holds indices outside [0, {n}); each "
                         "entry is the index of a class of logits.")
    missing = sorted(set(range(n)) - set(query_class.tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no query in query_logits; "
                         "every class needs at least one.")
    if not np.allclose(max_per_class(query_logits, query_class, n), logits,
                       rtol=1e-5, atol=1e-6):
        raise ValueError(
            "logits must be the maximum of query_logits over each class's "
            "queries; pass the logits computed from the same queries."
        )


def _check_affinity(affinity, n_patches):
    shape = tuple(affinity.shape)
    if len(shape) != 2 or shape != (n_patches, n_patches):
        raise ValueError(
            f"affinity must have shape (P, P) = ({n_patches}, {n_patches}) "
            f"for a patch grid of {n_patches} patches, got {shape}. "
            "Resample the attention maps to the logits' patch grid."
        )
    if not _is_floating(affinity):
        raise TypeError(
            f"affinity must be floating point, got dtype {affinity.dtype}."
        )
    if _n_not_finite(affinity):
        raise ValueError("affinity holds NaN or infinite values.")
    if bool((affinity < 0).any()):
        raise ValueError(
            f"affinity must be non-negative, its minimum is "
            f"{float(affinity.min())!r}; pass attention probabilities or "
            "exponentiated similarities, not raw scores."
        )


def check_arrays(logits, affinity, classes):
    """Check one image's logits and affinity as :func:`from_arrays` does,
    numpy or torch tensors, without copying a tensor off its device (the
    torch inference path of :class:`~dsolo_sk.DirectSegmenter`, which
    builds no Dataset)."""
    _check_logits(logits, classes)
    if affinity is not None:
        _check_affinity(affinity, int(logits.shape[1]) * int(logits.shape[2]))


def _check_image(image):
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be an (H, W, 3) RGB array, got shape {image.shape}."
        )
    if image.dtype != np.uint8:
        raise TypeError(
            f"image must be uint8 RGB, got dtype {image.dtype}; convert "
            "with skimage.util.img_as_ubyte."
        )
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: shape {image.shape}.")


def from_arrays(logits, affinity, image, classes, *, query_logits=None,
                query_class=None):
    """Build the feature Dataset of one image from plain arrays.

    Parameters
    ----------
    logits : array-like of shape (n_classes, rows, cols)
        Cosine similarities on the patch grid.
    affinity : array-like of shape (P, P) or None
        Non-negative affinity between patches, P = rows * cols in row-major
        order. ``None`` when only the ``"raw"`` and ``"kl"`` modes will be
        used.
    image : array-like of shape (H, W, 3), uint8
        The RGB image; guides the upsampling and sets the output size.
    classes : sequence of str
        One distinct name per class map.
    query_logits : array-like of shape (n_queries, rows, cols), optional
        Cosine similarities of every text query (each synonym its own),
        whose maximum over each class's queries is `logits`.
    query_class : array-like of shape (n_queries,), int, optional
        The class index of each query; required with `query_logits`.

    Returns
    -------
    features : xarray.Dataset
        Variables ``logits``, ``affinity`` (when given), ``image`` and
        ``query_logits`` (when given) as described in
        :mod:`dsolo_sk.features`.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import from_arrays
    >>> rng = np.random.default_rng(0)
    >>> ds = from_arrays(rng.random((3, 2, 2)), np.ones((4, 4)),
    ...                  np.zeros((32, 32, 3), np.uint8), ["cat", "dog", "sky"])
    >>> ds["logits"].dims, ds.sizes["patch"]
    (('class', 'row', 'col'), 4)

    With one query per synonym (class 0 has two):

    >>> q = rng.random((3, 2, 2))
    >>> ds = from_arrays(np.stack([q[:2].max(0), q[2]]), None,
    ...                  np.zeros((32, 32, 3), np.uint8), ["sky, cloud", "cat"],
    ...                  query_logits=q, query_class=[0, 0, 1])
    >>> ds["query_logits"].dims, ds["query_class"].values.tolist()
    (('query', 'row', 'col'), [0, 0, 1])
    """
    classes = check_classes(classes)
    logits = _as_numpy(logits, "logits")
    _check_logits(logits, classes)
    image = _as_numpy(image, "image")
    _check_image(image)
    n_patches = logits.shape[1] * logits.shape[2]
    data_vars = {
        "logits": (("class", "row", "col"), logits),
        "image": (("y", "x", "channel"), image),
    }
    if affinity is not None:
        affinity = _as_numpy(affinity, "affinity")
        _check_affinity(affinity, n_patches)
        data_vars["affinity"] = (("patch", "patch_"), affinity)
    coords = {"class": list(classes), "channel": ["R", "G", "B"]}
    if (query_logits is None) != (query_class is None):
        raise ValueError("query_logits and query_class go together: pass "
                         "both or neither.")
    if query_logits is not None:
        query_logits = _as_numpy(query_logits, "query_logits")
        query_class = _as_numpy(query_class, "query_class")
        _check_queries(query_logits, query_class, logits)
        data_vars["query_logits"] = (("query", "row", "col"), query_logits)
        coords["query_class"] = ("query", query_class.astype(np.int64))
    return xr.Dataset(data_vars, coords=coords)


def check_features(features, *, require_affinity=False, name="features"):
    """Validate a feature Dataset against the contract.

    Parameters
    ----------
    features : xarray.Dataset
        As produced by :func:`from_arrays` or an extractor.
    require_affinity : bool, default=False
        Whether the ``affinity`` variable must be present.
    name : str
        Name used in error messages.

    Returns
    -------
    features : xarray.Dataset
        The same object.

    Raises
    ------
    TypeError, ValueError
        With a message naming what is missing or malformed.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import check_features, from_arrays
    >>> ds = from_arrays(np.zeros((2, 2, 2)), None,
    ...                  np.zeros((16, 16, 3), np.uint8), ["cat", "dog"])
    >>> check_features(ds) is ds
    True
    >>> check_features(ds, require_affinity=True)
    Traceback (most recent call last):
    ...
    ValueError: features has no 'affinity' variable, which this mode needs; ...
    """
    if not isinstance(features, xr.Dataset):
        raise TypeError(
            f"{name} must be an xarray.Dataset built by "
            "dsolo_sk.features.from_arrays or a feature extractor, got "
            f"{type(features).__name__}."
        )
    for var, dims in (("logits", ("class", "row", "col")),
                      ("image", ("y", "x", "channel"))):
        if var not in features:
            raise ValueError(
                f"{name} has no {var!r} variable; build it with "
                "dsolo_sk.features.from_arrays."
            )
        if features[var].dims != dims:
            raise ValueError(
                f"{name}[{var!r}] must have dims {dims}, got "
                f"{features[var].dims}."
            )
    classes = check_classes(
        [str(c) for c in features["class"].values]
        if "class" in features.coords else None,
        name=f"{name}['class']",
    )
    _check_logits(features["logits"].values, classes)
    _check_image(features["image"].values)
    if "query_logits" in features:
        if features["query_logits"].dims != ("query", "row", "col") or \
                "query_class" not in features.coords:
            raise ValueError(
                f"{name}['query_logits'] must have dims ('query', 'row', "
                "'col') and a 'query_class' coordinate; build it with "
                "dsolo_sk.features.from_arrays."
            )
        _check_queries(features["query_logits"].values,
                       features["query_class"].values,
                       features["logits"].values)
    if "affinity" in features:
        if features["affinity"].dims != ("patch", "patch_"):
            raise ValueError(
                f"{name}['affinity'] must have dims ('patch', 'patch_'), "
                f"got {features['affinity'].dims}."
            )
        _check_affinity(features["affinity"].values,
                        features.sizes["row"] * features.sizes["col"])
    elif require_affinity:
        raise ValueError(
            f"{name} has no 'affinity' variable, which this mode needs; "
            "compute one with an affinity extractor (for example "
            "dsolo_sk.features.ColorPositionAffinity) or use mode='raw' or "
            "mode='kl'."
        )
    return features
