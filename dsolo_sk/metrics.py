"""Segmentation metrics, computed the way the field's benchmarks do.

Intersections and unions are summed over the whole dataset before the
ratio is taken; the mean over classes ignores classes whose union is empty
(``nanmean``); pixels labelled 255 in the ground truth are ignored.

:data:`mean_iou_scorer` plugs the mean IoU into scikit-learn's model
selection (``scoring=``).

.. rubric:: Examples

>>> from sklearn.model_selection import KFold, cross_val_score
>>> from dsolo_sk import DirectSegmenter, InterpolationUpsampler
>>> from dsolo_sk.datasets import make_scenes
>>> from dsolo_sk.metrics import mean_iou_scorer
>>> X, y = make_scenes(n_scenes=4, n_classes=5, image_size=64,
...                    random_state=0)
>>> seg = DirectSegmenter(upsampler=InterpolationUpsampler("nearest"))
>>> scores = cross_val_score(seg, X, y,
...                          cv=KFold(2), scoring=mean_iou_scorer)
>>> scores.shape, bool(((scores >= 0) & (scores <= 1)).all())
((2,), True)
"""

import warnings

import numpy as np
import xarray as xr

from ._validation import IGNORE_INDEX, check_scalar

#: Largest number of classes of a confusion matrix (it holds n_classes ** 2
#: counts: 128 MiB at this size).
MAX_CLASSES = 4096

__all__ = ["confusion_matrix", "iou_from_confusion", "per_class_iou",
           "mean_iou"]


def _pairs(y_true, y_pred):
    if isinstance(y_true, np.ndarray) and y_true.ndim == 2:
        y_true, y_pred = [y_true], [y_pred]
    for arg, name in ((y_true, "y_true"), (y_pred, "y_pred")):
        if isinstance(arg, (str, bytes)) or not hasattr(arg, "__len__"):
            raise TypeError(
                f"{name} must be a list of label maps, got "
                f"{type(arg).__name__}."
            )
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"{len(y_true)} ground-truth masks for {len(y_pred)} predictions;"
            " pass one prediction per mask."
        )
    for k, (t, p) in enumerate(zip(y_true, y_pred)):
        try:
            t, p = np.asarray(t), np.asarray(p)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"mask {k} or its prediction is not an array of labels "
                f"({exc})."
            ) from None
        if t.shape != p.shape:
            raise ValueError(
                f"mask {k} has shape {t.shape} but its prediction has "
                f"{p.shape}."
            )
        for arr, what in ((t, "ground truth"), (p, "prediction")):
            if not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(
                    f"{what} {k} must hold integer labels, got dtype "
                    f"{arr.dtype}."
                )
        yield t, p


def confusion_matrix(y_true, y_pred, n_classes, *, ignore_index=IGNORE_INDEX,
                     reduce_zero_label=False):
    """Pixel confusion matrix summed over a list of label maps.

    Parameters
    ----------
    y_true : list of ndarray of shape (H, W)
        Ground-truth label maps.
    y_pred : list of ndarray of shape (H, W)
        Predicted label maps, same shapes.
    n_classes : int
        Number of classes; labels outside ``[0, n_classes)`` in the ground
        truth (such as `ignore_index`) are ignored.
    ignore_index : int, default=255
        Ground-truth label to ignore.
    reduce_zero_label : bool, default=False
        Map ground-truth label 0 to `ignore_index` and subtract one from the
        others first (the ADE20K, VOC20 and Context59 convention).

    Returns
    -------
    cm : ndarray of shape (n_classes, n_classes), dtype int64
        ``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.metrics import confusion_matrix
    >>> t = np.array([[0, 1], [1, 255]])
    >>> p = np.array([[0, 1], [0, 1]])
    >>> confusion_matrix([t], [p], 2)
    array([[1, 0],
           [1, 1]])
    """
    check_scalar(n_classes, "n_classes", target_type=(int, np.integer),
                 min_val=1, max_val=MAX_CLASSES)
    n_classes = int(n_classes)
    check_scalar(ignore_index, "ignore_index", target_type=(int, np.integer))
    if not isinstance(reduce_zero_label, (bool, np.bool_)):
        raise TypeError(
            f"reduce_zero_label must be True or False, got "
            f"{reduce_zero_label!r}."
        )
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in _pairs(y_true, y_pred):
        t = t.astype(np.int64)
        if reduce_zero_label:
            zero = t == 0
            t = t - 1
            t[zero] = ignore_index
            t[t == ignore_index - 1] = ignore_index
        keep = (t != ignore_index) & (t >= 0) & (t < n_classes)
        t, p = t[keep], p[keep].astype(np.int64)
        valid = (p >= 0) & (p < n_classes)
        if not valid.all():
            raise ValueError(
                f"predictions hold labels {np.unique(p[~valid])[:10].tolist()}"
                f" outside [0, {n_classes})."
            )
        cm += np.bincount(t * n_classes + p,
                          minlength=n_classes ** 2).reshape(n_classes,
                                                             n_classes)
    return cm


def iou_from_confusion(cm):
    """Per-class intersection over union from a confusion matrix.

    ``IoU_c = cm[c, c] / (sum_p cm[c, p] + sum_t cm[t, c] - cm[c, c])``;
    NaN where the union is empty (class absent from both).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.metrics import iou_from_confusion
    >>> iou_from_confusion(np.array([[1, 0], [1, 1]]))
    array([0.5, 0.5])
    """
    cm = np.asarray(cm, dtype=np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1),
                        np.nan)


def per_class_iou(y_true, y_pred, classes, **kwargs):
    """Per-class IoU as an :class:`xarray.DataArray` with class coordinates.

    Parameters
    ----------
    y_true, y_pred : list of ndarray of shape (H, W)
        Ground truth and predictions.
    classes : sequence of str
        The class names; their count sets ``n_classes``.
    **kwargs
        Passed to :func:`confusion_matrix`.

    Returns
    -------
    iou : xarray.DataArray of dims ("class",)

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.metrics import per_class_iou
    >>> t = np.array([[0, 1], [1, 1]])
    >>> per_class_iou([t], [t], ["sky", "tree"]).values
    array([1., 1.])
    """
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(
            f"classes must be a list of class names, got {classes!r}.")
    classes = list(classes)
    cm = confusion_matrix(y_true, y_pred, len(classes), **kwargs)
    return xr.DataArray(iou_from_confusion(cm), dims=("class",),
                        coords={"class": classes}, name="iou")


def mean_iou(y_true, y_pred, n_classes, **kwargs):
    """Mean intersection over union, the mmseg way.

    Intersections and unions are summed over all images, the IoU is taken
    per class and averaged with ``nanmean`` (classes absent from both the
    ground truth and the predictions do not count).

    Parameters
    ----------
    y_true, y_pred : list of ndarray of shape (H, W)
        Ground truth and predictions.
    n_classes : int
        Number of classes.
    **kwargs
        Passed to :func:`confusion_matrix` (``ignore_index``,
        ``reduce_zero_label``).

    Returns
    -------
    miou : float in [0, 1], or NaN
        NaN, with an :class:`sklearn.exceptions.UndefinedMetricWarning`,
        when no pixel is scored (every ground-truth pixel ignored).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.metrics import mean_iou
    >>> t = np.array([[0, 1], [1, 255]])
    >>> p = np.array([[0, 1], [0, 1]])
    >>> mean_iou([t], [p], 2)
    0.5
    """
    cm = confusion_matrix(y_true, y_pred, n_classes, **kwargs)
    iou = iou_from_confusion(cm)
    if np.all(np.isnan(iou)):
        from sklearn.exceptions import UndefinedMetricWarning

        warnings.warn(
            "no pixel was scored: every ground-truth pixel is ignored (or "
            "there are no masks), so the mean IoU is undefined; returning "
            "NaN.", UndefinedMetricWarning, stacklevel=2)
        return float("nan")
    return float(np.nanmean(iou))


def _mean_iou_of_labels(y_true, y_pred, **kwargs):
    """:func:`mean_iou` with the number of classes read off the labels.

    The score function of :data:`mean_iou_scorer`. Classes above every
    label of both lists are absent from both, so they would be NaN and
    left out of the mean: the result equals ``mean_iou(y_true, y_pred,
    n_classes)`` for any ``n_classes`` larger than every label.

    Examples
    --------
    >>> from sklearn.model_selection import cross_val_score, KFold
    >>> from dsolo_sk import DirectSegmenter, InterpolationUpsampler
    >>> from dsolo_sk.datasets import make_scenes
    >>> from dsolo_sk.metrics import mean_iou_scorer
    >>> X, y = make_scenes(n_scenes=4, n_classes=5, image_size=64,
    ...                    random_state=0)
    >>> seg = DirectSegmenter(upsampler=InterpolationUpsampler("nearest"))
    >>> scores = cross_val_score(seg, X, y, cv=KFold(2),
    ...                          scoring=mean_iou_scorer, error_score="raise")
    >>> bool(scores[1] == seg.score(X[2:], y[2:]))
    True
    """
    y_true = [np.asarray(t) for t in y_true]
    y_pred = [np.asarray(p) for p in y_pred]
    ignore = kwargs.get("ignore_index", IGNORE_INDEX)
    top = 0
    for t, p in zip(y_true, y_pred):
        valid = t[(t != ignore) & (t >= 0)]
        for arr in (valid, p):
            if arr.size:
                top = max(top, int(arr.max()))
    return mean_iou(y_true, y_pred, top + 1, **kwargs)


def _make_mean_iou_scorer():
    from sklearn.metrics import make_scorer

    return make_scorer(_mean_iou_of_labels)


#: Scorer for ``scoring=`` in scikit-learn's model selection
#: (``GridSearchCV(..., scoring=mean_iou_scorer)``): the mean IoU
#: (:func:`mean_iou`) of ``estimator.predict(X)`` against the masks ``y``,
#: pixels labelled 255 ignored. It equals the segmenters' ``score`` and
#: works with any estimator whose ``predict`` returns label maps, Pipelines
#: included. For other settings build a scorer from :func:`mean_iou`:
#: ``make_scorer(mean_iou, n_classes=150, reduce_zero_label=True)``.
#: The description of :mod:`dsolo_sk.metrics` shows it in
#: ``cross_val_score``.
mean_iou_scorer = _make_mean_iou_scorer()

__all__ += ["mean_iou_scorer"]
