"""Crash-safe benchmark evaluation.

:func:`evaluate` runs a segmenter over a benchmark under a
:class:`~dsolo_sk.protocols.Protocol` and sums the pixel confusion matrix.
With an output folder, every image's result is written as soon as it is
computed, so that a run killed at any point resumes where it stopped and
ends with the same confusion matrix:

``OUT/run.json``
    What is being evaluated (dataset, split, protocol, segmenter). A
    resumed run must match it.
``OUT/per_image/<id>.json``
    The sparse confusion matrix of one image, with a SHA-256 checksum of
    its content. Written to a temporary file in the same folder, flushed to
    disk, then renamed over the final name (``os.replace``, atomic), so a
    result file is either complete or absent. A file whose checksum does
    not match, that cannot be parsed or that belongs to another run is
    reported, deleted and recomputed, never counted.
``OUT/results.json`` and ``OUT/per_class_iou.csv``
    Written at the end: per-class IoU, mIoU, the confusion matrix and the
    exact protocol used.

How an image is scored (``predict_image``): resize it so its short side is
``protocol.short_side`` (long side at most ``protocol.long_side_max``),
score the whole image or average the scores of sliding windows, upsample
the per-class scores bilinearly to the original size and take the argmax
over classes. Where the protocol has thresholds (datasets with a
background class), pixels whose top probability is below
``prob_threshold`` then go to class 0, the probabilities being CLIP's own,
computed as the peers compute them (:func:`class_probabilities`), or those
of the estimator's scores (``protocol.background_rule``). The estimator
supplies the scores through ``decision_function`` (or ``predict_proba``).

The Dask runner, :mod:`dsolo_sk.distributed`, builds on this module; this
module does not import it.
"""

import csv
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import xarray as xr

from . import __version__, _io
from ._validation import check_classes, check_option, check_scalar
from .features._contract import max_per_class
from .features._images import resize_image
from .metrics import confusion_matrix, iou_from_confusion
from .protocols import SETTINGS, Protocol, get_protocol

__all__ = ["evaluate", "predict_image", "class_probabilities",
           "EvaluationResult", "ResultStore", "describe_estimator"]

RECORD_FORMAT = "dsolo_sk.per_image/1"
RUN_FORMAT = "dsolo_sk.run/1"


# -- scoring one image -------------------------------------------------------
def class_probabilities(query_logits, query_class, logit_scale, *,
                        n_classes=None):
    r"""Class probabilities as the peers' background rule computes them.

    A softmax at temperature ``1 / logit_scale`` over **every** text query
    (each synonym of a class name its own query, VOC21's 26 background
    names included), then the maximum over each class's queries:

    .. math::

        p_c = \max_{q \in c} \frac{\exp(s\,\cos_q)}
              {\sum_{q'} \exp(s\,\cos_{q'})}.

    Taking the maximum over synonyms first and the softmax over classes
    after gives the same argmax but a larger top probability, so fewer
    pixels would fall below the threshold.

    Parameters
    ----------
    query_logits : array-like of shape (n_queries, ...)
        Cosine similarities of every query (for example
        :meth:`~dsolo_sk.features.CLIPFeatures.compute_query_logits`, or a
        feature Dataset's ``query_logits``).
    query_class : array-like of shape (n_queries,), int
        The class of each query.
    logit_scale : float
        The softmax's scale (40 for most peers; see
        :class:`~dsolo_sk.protocols.Protocol`).
    n_classes : int, optional
        Number of classes; default ``max(query_class) + 1``.

    Returns
    -------
    ndarray of shape (n_classes, ...), float32

    Examples
    --------
    The worked example of the VOC21 layout (26 background names, 20
    classes of which two have synonyms: 56 queries) at scale 40: every
    background name at cosine 0.20, the aeroplane at 0.23, the other
    queries at 0.18. Aeroplane wins, with probability 0.078, below the
    threshold 0.1: the pixel is background. The maximum over synonyms
    first would give 0.258.

    >>> import numpy as np
    >>> from dsolo_sk.datasets import load_class_names
    >>> from dsolo_sk.evaluation import class_probabilities
    >>> from dsolo_sk.features.clip import split_synonyms
    >>> owner = [k for k, name in enumerate(load_class_names("voc21"))
    ...          for _ in split_synonyms(name)]
    >>> cos = np.where(np.array(owner) == 0, 0.20, 0.18)
    >>> cos[owner.index(1)] = 0.23
    >>> p = class_probabilities(cos, owner, 40)
    >>> len(owner), int(p.argmax()), round(float(p.max()), 3)
    (56, 1, 0.078)
    """
    check_scalar(logit_scale, "logit_scale", min_val=0, include_min=False)
    q = np.asarray(query_logits, dtype=np.float32)
    owner = np.asarray(query_class)
    if q.ndim < 1 or q.shape[0] < 1 or owner.shape != q.shape[:1] or \
            not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(
            f"query_class must hold one integer class index per query: "
            f"query_logits has {q.shape[:1]} queries, query_class is "
            f"{owner.dtype} of shape {owner.shape}.")
    if n_classes is None:
        n_classes = int(owner.max()) + 1
    check_scalar(n_classes, "n_classes", target_type=Integral, min_val=1)
    if owner.min() < 0 or owner.max() >= n_classes:
        raise ValueError(f"query_class holds indices outside [0, {n_classes})"
                         "; each entry is the index of a query's class.")
    z = np.exp(logit_scale * (q - q.max(0, keepdims=True)))
    z /= z.sum(0, keepdims=True)
    return max_per_class(z, owner, n_classes)


def _segmenter_extractor(estimator):
    """The logits extractor a segmenter of this package runs, or None.

    Mirrors what the segmenter does with its parameters (``extractor``,
    default ``CLIPFeatures()``, given the segmenter's ``device`` and
    ``dtype``), so that the extractor's per-image memo serves both.
    """
    if not hasattr(estimator, "get_params"):
        return None
    params = estimator.get_params(deep=False)
    if "extractor" not in params or params.get("classes") is None:
        return None
    extractor = params["extractor"]
    if extractor is None:
        from .features import CLIPFeatures

        extractor = CLIPFeatures()
    if not callable(getattr(extractor, "compute_query_logits", None)):
        return None
    if hasattr(extractor, "get_params"):
        from sklearn.base import clone

        own = extractor.get_params(deep=False)
        extractor = clone(extractor).set_params(**{
            k: params[k] for k in ("device", "dtype")
            if params.get(k) is not None and k in own})
    return extractor


def _background_rule(estimator, protocol, geometry):
    """(rule, query source) of the thresholds; the source is a callable
    image -> (query_logits, query_class) for the "clip" rules."""
    rule = protocol.background_rule
    source = None
    if geometry == "estimator" and rule != "scores":
        extractor = _segmenter_extractor(estimator)
        if extractor is not None:
            classes = list(estimator.get_params(deep=False)["classes"])

            def source(image):
                return extractor.compute_query_logits(image, classes)
    if rule == "auto":
        rule = "scores" if source is None else "clip"
    if rule != "scores" and source is None:
        raise ValueError(
            f"background_rule={rule!r} reads CLIP's per-query cosines, which "
            f"{type(estimator).__name__} does not compute: only a segmenter "
            "of this package whose extractor has compute_query_logits (as "
            "CLIPFeatures does) gives them. Use a protocol with "
            "background_rule='scores' (or 'auto') for this estimator.")
    return rule, source


def _apply_thresholds(labels, scores, probs, protocol, rule):
    """SCLIP's area rule, then the probability threshold, on the labels."""
    if protocol.area_threshold is not None:
        area = np.bincount(labels.ravel(), minlength=len(scores))[1:]
        small = np.flatnonzero(area <= protocol.area_threshold
                               * area.sum()) + 1
        if small.size:
            scores = scores.copy()
            scores[small] = -np.inf
            probs = probs.copy()
            probs[small] = 0
            labels = scores.argmax(0)
    if protocol.prob_threshold is not None:
        if rule == "clip_label":
            top = np.take_along_axis(probs, labels[None], 0)[0]
        else:
            top = probs.max(0)
        labels = np.where(top < protocol.prob_threshold, 0, labels)
    return labels


def _resize_image(image, shape, resampling="antialias"):
    return resize_image(image, shape, resampling)


def _upsample_scores(scores, shape):
    """Bilinear resize of (N, h, w) scores to `shape` (align_corners=False)."""
    if tuple(scores.shape[1:]) == tuple(shape):
        return scores
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    return F.interpolate(t[None], size=tuple(shape), mode="bilinear",
                         align_corners=False)[0].numpy()


def _score_method(estimator, scores):
    if callable(estimator) and not hasattr(estimator, "decision_function") \
            and not hasattr(estimator, "predict_proba"):
        return "callable"
    if scores == "auto":
        scores = ("decision_function" if hasattr(estimator,
                                                 "decision_function")
                  else "predict_proba")
    if not hasattr(estimator, scores):
        raise TypeError(
            f"{type(estimator).__name__} has no {scores} method; the "
            "evaluation needs per-class score maps. Pass an estimator with "
            "decision_function or predict_proba, or a callable image -> "
            "scores of shape (n_classes, H, W)."
        )
    return scores


def _window_scores(estimator, method, crop, n_classes):
    if method == "callable":
        out = estimator(crop)
    else:
        out = getattr(estimator, method)([crop])
        out = out[0] if isinstance(out, (list, tuple)) else out
        if isinstance(out, np.ndarray) and out.ndim == 4:
            out = out[0]
    if isinstance(out, xr.DataArray) and out.dims[0] != "class":
        out = out.transpose("class", ...)
    try:
        out = np.asarray(out, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the segmenter returned {type(out).__name__} scores that are not "
            f"a numeric array ({exc}); expected ({n_classes}, H, W) scores."
        ) from None
    if out.ndim != 3 or out.shape[0] != n_classes:
        raise ValueError(
            f"the segmenter returned scores of shape {out.shape} for a "
            f"{crop.shape[:2]} window; expected ({n_classes}, H, W), one map "
            "per class of the dataset."
        )
    if not np.isfinite(out).all():
        n_nan = int(np.isnan(out).sum())
        n_inf = int(np.isinf(out).sum())
        raise ValueError(
            f"the segmenter returned {n_nan} NaN and {n_inf} infinite scores "
            f"for a {crop.shape[:2]} window; scores must be finite (an "
            "argmax over NaN would silently predict class 0). Check the "
            "segmenter's parameters and features."
        )
    if out.shape[1:] != crop.shape[:2]:
        out = _upsample_scores(out, crop.shape[:2])
    return out


def predict_image(estimator, image, protocol, *, scores="auto",
                  geometry="harness"):
    """Label map of one image under an evaluation protocol.

    Parameters
    ----------
    estimator : estimator or callable
        Its ``decision_function([image])`` (or ``predict_proba``) returns
        per-class scores of shape (n_classes, h, w) for the image it gets;
        a plain callable ``image -> scores`` works too. The classes must
        already be set (for the segmenters of this package:
        ``set_params(classes=dataset.classes)``).
    image : ndarray of shape (H, W, 3), uint8
        The image at its original size.
    protocol : Protocol
    scores : {"auto", "decision_function", "predict_proba"}, default="auto"
        Which method gives the scores. With ``background_rule="scores"``,
        ``"predict_proba"`` output is read as probabilities by the
        thresholds; any other score goes through
        ``softmax(logit_scale * score)`` first.
    geometry : {"harness", "estimator"}, default="harness"
        ``"harness"``: resize the image and cut the windows of the protocol
        here, average the window scores and upsample them bilinearly.
        ``"estimator"``: the estimator gets the original image and applies
        the protocol's resizing and windows itself (see
        :func:`prepare_estimator`); scores not at the original size are
        upsampled bilinearly.

    Returns
    -------
    ndarray of shape (H, W), int64

    Notes
    -----
    The labels are the argmax of the scores. On datasets with a background
    class the protocol's thresholds follow, in SCLIP's order: the area rule
    (``area_threshold``: a class other than 0 whose predicted area is at
    most that fraction of the area of all classes other than 0 is removed
    and its pixels take their next best class), then the probability
    threshold (pixels whose probability is below ``prob_threshold`` go to
    class 0). The probabilities depend on ``protocol.background_rule``:

    ``"clip"``
        CLIP's own, :func:`class_probabilities` of the per-query cosines of
        the segmenter's extractor (upsampled bilinearly to the original
        size), read at their maximum: the peers' test, whatever the
        segmenter's scores are. Needs ``geometry="estimator"`` and a
        segmenter of this package.
    ``"clip_label"``
        The same probabilities, read at the predicted label.
    ``"scores"``
        ``softmax(logit_scale * score)`` of the estimator's scores, or its
        ``predict_proba`` output: the peers' rule for an estimator whose
        scores are cosines, one query per class.
    ``"auto"``
        ``"clip"`` where it applies, ``"scores"`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.evaluation import predict_image
    >>> from dsolo_sk.protocols import Protocol
    >>> def redness(image):  # class 0: not red, class 1: red
    ...     r = image[..., 0] / 255.0
    ...     return np.stack([1 - r, r])
    >>> image = np.zeros((40, 60, 3), np.uint8)
    >>> image[:, 30:, 0] = 255
    >>> protocol = Protocol(dataset="toy", n_classes=2, short_side=32)
    >>> labels = predict_image(redness, image, protocol)
    >>> labels.shape, int(labels[0, 0]), int(labels[0, -1])
    ((40, 60), 0, 1)
    """
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a Protocol, got "
                        f"{type(protocol).__name__}.")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got "
                         f"{image.dtype} {image.shape}.")
    check_option(geometry, "geometry", ("harness", "estimator"))
    method = _score_method(estimator, scores)
    n = protocol.n_classes
    if geometry == "estimator":
        full = _window_scores(estimator, method, image, n)
    else:
        resized = _resize_image(image,
                                protocol.resized_shape(image.shape[:2]),
                                protocol.resampling)
        h, w = resized.shape[:2]
        total = np.zeros((n, h, w), np.float32)
        count = np.zeros((h, w), np.float32)
        for y0, y1, x0, x1 in protocol.windows((h, w)):
            total[:, y0:y1, x0:x1] += _window_scores(
                estimator, method, resized[y0:y1, x0:x1], n)
            count[y0:y1, x0:x1] += 1
        full = _upsample_scores(total / count, image.shape[:2])
    labels = full.argmax(0)
    if protocol.prob_threshold is None and protocol.area_threshold is None:
        return labels.astype(np.int64)
    rule, source = _background_rule(estimator, protocol, geometry)
    if rule == "scores":
        if method == "predict_proba":
            probs = full
        else:  # softmax over classes
            probs = np.exp(protocol.logit_scale
                           * (full - full.max(0, keepdims=True)))
            probs /= probs.sum(0, keepdims=True)
    else:
        queries, owner = source(image)
        probs = class_probabilities(
            _upsample_scores(queries, image.shape[:2]), owner,
            protocol.logit_scale, n_classes=n)
    return _apply_thresholds(labels, full, probs, protocol,
                             rule).astype(np.int64)


# -- describing the run --------------------------------------------------------
def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "get_params"):
        return describe_estimator(value)
    if callable(value):
        return f"{getattr(value, '__module__', '?')}." \
               f"{getattr(value, '__qualname__', type(value).__name__)}"
    return type(value).__name__


def describe_estimator(estimator):
    """A JSON-ready, stable description of an estimator or callable.

    scikit-learn estimators give their class and parameters (nested
    estimators described the same way); plain callables their qualified
    name. Stored in ``run.json`` and ``results.json``.

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> from dsolo_sk.evaluation import describe_estimator
    >>> describe_estimator(Ridge(alpha=2.0))["params"]["alpha"]
    2.0
    """
    if hasattr(estimator, "get_params"):
        params = estimator.get_params(deep=False)
        return {"class": f"{type(estimator).__module__}."
                         f"{type(estimator).__qualname__}",
                "params": {k: _plain(v) for k, v in sorted(params.items())}}
    return {"callable": _plain(estimator)}


def _digest(obj):
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()
    return hashlib.sha256(blob).hexdigest()


def _atomic_write_text(path, text):
    _io.atomic_write(path, lambda f: f.write(text), text=True, fsync=True)


# -- per-image results on disk -----------------------------------------------
class ResultStore:
    """The per-image results of one evaluation run, in a folder.

    Parameters
    ----------
    out : str or path-like
        Output folder, created if needed.
    run : dict
        JSON-ready description of the run (dataset, split, protocol,
        segmenter). If the folder already holds a run, it must be the same.
    n_classes : int

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from dsolo_sk.evaluation import ResultStore
    >>> store = ResultStore(tempfile.mkdtemp(), {"dataset": "toy"}, 2)
    >>> store.save("img_1", 0, np.array([[3, 1], [0, 4]]))
    >>> store.load("img_1")
    array([[3, 1],
           [0, 4]])
    >>> print(store.load("img_2"))
    None
    """

    def __init__(self, out, run, n_classes):
        self.out = _io.check_output_folder(out, "out")
        self.n_classes = int(check_scalar(n_classes, "n_classes",
                                          target_type=Integral, min_val=1))
        # Through JSON once, so that it compares equal to its reloaded self.
        self.run = json.loads(json.dumps({"format": RUN_FORMAT, **run},
                                         sort_keys=True))
        self.run_id = _digest(self.run)[:16]
        self.folder = os.path.join(self.out, "per_image")
        os.makedirs(self.folder, exist_ok=True)
        run_path = os.path.join(self.out, "run.json")
        previous = None
        if os.path.lexists(run_path):
            try:
                previous = _io.read_json(run_path, "a run description")
            except _io.UnreadableFileError as exc:
                if os.path.isdir(run_path):
                    raise
                warnings.warn(f"{exc} Writing it again.", UserWarning,
                              stacklevel=2)
                previous = None
            if previous is not None and previous != self.run:
                diff = sorted(k for k in set(previous) | set(self.run)
                              if previous.get(k) != self.run.get(k))
                raise ValueError(
                    f"{self.out!r} holds results of another run (differing "
                    f"in {diff}); pass a new output folder, or delete "
                    f"{run_path!r} and {self.folder!r} to start over."
                )
        if previous is None:
            _atomic_write_text(run_path, json.dumps(self.run, indent=2,
                                                    sort_keys=True))

    def path(self, sample_id):
        """File of the result of `sample_id`."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_"
                       for c in sample_id.replace("/", "__"))
        return os.path.join(self.folder, safe + ".json")

    def save(self, sample_id, index, cm, seconds=None):
        """Write one image's confusion matrix, atomically."""
        cm = np.asarray(cm, dtype=np.int64)
        if cm.shape != (self.n_classes, self.n_classes):
            raise ValueError(f"confusion matrix of shape {cm.shape}, "
                             f"expected {(self.n_classes,) * 2}.")
        flat = np.flatnonzero(cm)
        body = {"format": RECORD_FORMAT, "run": self.run_id,
                "id": sample_id, "index": int(index),
                "n_classes": self.n_classes,
                "cm_index": flat.tolist(), "cm_count": cm.ravel()[flat].tolist(),
                "seconds": None if seconds is None else round(float(seconds),
                                                              6)}
        body["checksum"] = _digest(body)
        _atomic_write_text(self.path(sample_id),
                           json.dumps(body, sort_keys=True))

    def _check(self, body, sample_id):
        if not isinstance(body, dict):
            return "not a JSON object"
        checksum = body.pop("checksum", None)
        if checksum != _digest(body):
            return "checksum mismatch"
        if body.get("format") != RECORD_FORMAT:
            return f"unknown format {body.get('format')!r}"
        if body.get("run") != self.run_id:
            return "written by another run"
        if body.get("id") != sample_id or body.get("n_classes") != \
                self.n_classes:
            return "belongs to another image or class list"
        idx, cnt = body.get("cm_index"), body.get("cm_count")
        if not (isinstance(idx, list) and isinstance(cnt, list)
                and len(idx) == len(cnt)):
            return "malformed confusion matrix"
        return None

    def load(self, sample_id):
        """The stored confusion matrix of `sample_id`, or None.

        A corrupt, truncated or foreign file is reported with a
        :class:`UserWarning`, deleted, and None is returned, so the image is
        recomputed.
        """
        path = self.path(sample_id)
        if not os.path.lexists(path):
            return None
        if os.path.isdir(path):
            raise _io.UnreadableFileError(
                path, "a result record", "it is a folder",
                hint="remove it; the image is then evaluated again")
        try:
            body = _io.read_json(path, "a result record")
            reason = self._check(body, sample_id)
        except (FileNotFoundError, _io.UnreadableFileError) as exc:
            reason = f"unreadable ({exc.reason if hasattr(exc, 'reason') else exc})"
        if reason is None:
            try:
                cm = np.zeros(self.n_classes ** 2, np.int64)
                cm[np.asarray(body["cm_index"], np.int64)] = np.asarray(
                    body["cm_count"], np.int64)
                return cm.reshape(self.n_classes, self.n_classes)
            except (ValueError, IndexError, TypeError) as exc:
                reason = f"malformed confusion matrix ({exc})"
        warnings.warn(f"result file {path!r} is corrupt ({reason}); "
                      "recomputing it.", UserWarning, stacklevel=2)
        try:
            os.unlink(path)
        except OSError:
            pass
        return None

    def clean_temporary(self):
        """Remove temporary files left by killed runs."""
        for name in os.listdir(self.folder):
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(self.folder, name))
                except OSError:
                    pass


# -- the result -------------------------------------------------------------
@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate`.

    Attributes
    ----------
    confusion_matrix : ndarray of shape (n_classes, n_classes), int64
        ``[t, p]`` counts the pixels of true class ``t`` predicted ``p``.
    iou : xarray.DataArray of dims ("class",)
        Per-class IoU, NaN for classes absent from both.
    miou : float
        ``nanmean`` of `iou`.
    protocol : Protocol
    ids : list of str
        The evaluated samples, in order.
    n_computed : int
        How many of them this call computed (the others were resumed).
    seconds : float
        Wall time of this call.
    info : dict
        Dataset, split, segmenter description and the like.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from dsolo_sk.datasets import load_dataset, write_fake_dataset
    >>> from dsolo_sk.evaluation import evaluate
    >>> ds = load_dataset("voc20", write_fake_dataset("voc20", tempfile.mkdtemp()))
    >>> def first_class(image):
    ...     return np.eye(20)[0][:, None, None] * np.ones(image.shape[:2])
    >>> res = evaluate(first_class, ds, progress=False)
    >>> type(res).__name__, res.confusion_matrix.shape, res.iou.dims
    ('EvaluationResult', (20, 20), ('class',))
    >>> res.to_dict()["n_images"] == len(res.ids)
    True
    >>> out = tempfile.mkdtemp()
    >>> res.write(out)
    >>> sorted(os.listdir(out))
    ['per_class_iou.csv', 'results.json']
    """

    confusion_matrix: np.ndarray
    iou: xr.DataArray
    miou: float
    protocol: Protocol
    ids: list
    n_computed: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def to_dict(self):
        """The JSON-ready summary written to ``results.json``."""
        iou = {str(c): (None if np.isnan(v) else float(v))
               for c, v in zip(self.iou["class"].values, self.iou.values)}
        return {
            "format": "dsolo_sk.results/1",
            "dsolo_sk_version": __version__,
            **self.info,
            "n_images": len(self.ids),
            "n_computed": self.n_computed,
            "seconds": round(self.seconds, 3),
            "miou": None if np.isnan(self.miou) else float(self.miou),
            "per_class_iou": iou,
            "protocol": self.protocol.to_dict(),
            "protocol_fingerprint": self.protocol.fingerprint(),
            "confusion_matrix": self.confusion_matrix.tolist(),
        }

    def write(self, out):
        """Write ``results.json`` and ``per_class_iou.csv`` into `out`."""
        out = _io.check_output_folder(out, "out")
        os.makedirs(out, exist_ok=True)
        _atomic_write_text(os.path.join(out, "results.json"),
                           json.dumps(self.to_dict(), indent=2))
        cm = self.confusion_matrix
        lines = []

        class _Sink:
            def write(self, s):
                lines.append(s)

        w = csv.writer(_Sink(), lineterminator="\n")
        w.writerow(["class_index", "class", "iou", "gt_pixels",
                    "predicted_pixels"])
        for k, (c, v) in enumerate(zip(self.iou["class"].values,
                                       self.iou.values)):
            w.writerow([k, c, "" if np.isnan(v) else f"{v:.6f}",
                        int(cm[k].sum()), int(cm[:, k].sum())])
        w.writerow(["", "mIoU", "" if np.isnan(self.miou)
                    else f"{self.miou:.6f}", int(cm.sum()), int(cm.sum())])
        _atomic_write_text(os.path.join(out, "per_class_iou.csv"),
                           "".join(lines))


# -- the harness --------------------------------------------------------------
def _resolve_protocol(protocol, dataset):
    if protocol is None:
        protocol = "paper"
    if isinstance(protocol, str):
        if protocol not in SETTINGS:
            raise ValueError(
                f"protocol must be None, one of {list(SETTINGS)} or a "
                f"Protocol, got {protocol!r}.")
        protocol = get_protocol(dataset.name, protocol)
    if isinstance(protocol, dict):
        protocol = Protocol.from_dict(protocol)
    if not isinstance(protocol, Protocol):
        raise TypeError("protocol must be None, a setting name ('paper', "
                        "'sclip', 'naclip', ...) or a Protocol, got "
                        f"{type(protocol).__name__}.")
    if protocol.n_classes != dataset.n_classes:
        raise ValueError(
            f"the protocol is for {protocol.n_classes} classes "
            f"({protocol.dataset}) but the dataset {dataset.name} has "
            f"{dataset.n_classes}.")
    return protocol


def _extractor_geometry(protocol):
    window = protocol.slide_crop if protocol.inference == "slide" else None
    stride = protocol.slide_stride if protocol.inference == "slide" else None
    return {"short_side": protocol.short_side,
            "max_long_side": protocol.long_side_max,
            "window": window, "stride": stride}


def prepare_estimator(estimator, classes, protocol=None):
    """A copy of `estimator` set up for a dataset and its protocol.

    Returns
    -------
    estimator : object
        scikit-learn estimators with a ``classes`` parameter are cloned (no
        weights are copied: models live in the process-level cache) and
        given the dataset's classes. When the estimator has an
        ``extractor`` parameter whose extractor takes ``short_side``,
        ``max_long_side``, ``window`` and ``stride`` (as
        :class:`~dsolo_sk.features.CLIPFeatures` does; ``None`` stands for
        the default ``CLIPFeatures()``), those are set from `protocol`
        (and ``resampling`` and ``pos_interpolation`` when the extractor
        has them), so that the segmenter resizes, slides its windows over
        the logits and upsamples its scores to the original image by its
        own means.
        Anything else is returned unchanged.
    geometry : {"estimator", "harness"}
        Who applies the protocol's resizing and windows (see
        :func:`predict_image`).
    """
    if not hasattr(estimator, "get_params"):
        return estimator, "harness"
    params = estimator.get_params(deep=False)
    if "classes" not in params:
        return estimator, "harness"
    from sklearn.base import clone

    est = clone(estimator).set_params(classes=list(classes))
    geometry = "harness"
    if protocol is not None and "extractor" in params:
        extractor = params["extractor"]
        if extractor is None:
            from .features import CLIPFeatures

            extractor = CLIPFeatures()
        wanted = _extractor_geometry(protocol)
        own = (extractor.get_params(deep=False)
               if hasattr(extractor, "get_params") else {})
        if set(wanted) <= set(own):
            wanted.update({k: getattr(protocol, k) for k in
                           ("resampling", "pos_interpolation") if k in own})
            est.set_params(extractor=clone(extractor).set_params(**wanted))
            geometry = "estimator"
    return est, geometry


def evaluate_sample(estimator, dataset, index, protocol, *, scores="auto",
                    geometry="harness"):
    """Confusion matrix of sample `index`: the unit of work of a run.

    Returns
    -------
    sample_id : str
    cm : ndarray of shape (n_classes, n_classes), int64
    seconds : float
        Time spent predicting.
    """
    sample = dataset[index]
    start = time.perf_counter()
    pred = predict_image(estimator, sample.image, protocol, scores=scores,
                         geometry=geometry)
    seconds = time.perf_counter() - start
    cm = confusion_matrix([sample.mask], [pred], protocol.n_classes,
                          ignore_index=protocol.ignore_index)
    return sample.id, cm, seconds


def _run_info(estimator, dataset, protocol, scores, geometry):
    rule = None
    if protocol.prob_threshold is not None or \
            protocol.area_threshold is not None:
        rule = _background_rule(estimator, protocol, geometry)[0]
    return {"dataset": dataset.name, "split": getattr(dataset, "split", None),
            "classes": list(dataset.classes),
            "protocol": protocol.to_dict(),
            "segmenter": describe_estimator(estimator), "scores": scores,
            "geometry": geometry, "background_rule": rule}


def _finish(cm, dataset, protocol, ids, n_computed, start, info, out):
    names = getattr(dataset, "class_names", None) or list(dataset.classes)
    iou = xr.DataArray(iou_from_confusion(cm), dims=("class",),
                       coords={"class": list(names)}, name="iou")
    valid = ~np.isnan(iou.values)
    miou = float(np.mean(iou.values[valid])) if valid.any() else float("nan")
    if cm.sum() == 0:
        from sklearn.exceptions import UndefinedMetricWarning

        warnings.warn(
            f"no pixel of the {len(ids)} evaluated masks was scored (every "
            f"ground-truth pixel is {protocol.ignore_index}, the ignore "
            "index): the IoU of every class and the mIoU are NaN.",
            UndefinedMetricWarning, stacklevel=3)
    result = EvaluationResult(cm, iou, miou, protocol, list(ids), n_computed,
                              time.perf_counter() - start, info)
    if out is not None:
        result.write(out)
    return result


def evaluate(estimator, dataset, *, protocol=None, out=None, limit=None,
             scores="auto", progress=True):
    """Evaluate a segmenter on a benchmark, resumably.

    Parameters
    ----------
    estimator : estimator or callable
        A segmenter of this package (its ``classes`` are set to the
        dataset's, on a clone), any object with ``decision_function`` or
        ``predict_proba`` returning (n_classes, H, W) scores for a list of
        one image, or a callable ``image -> scores``.
    dataset : SegmentationDataset
        For example ``dsolo_sk.datasets.load_dataset("voc21", root)``.
    protocol : str or Protocol, default="paper"
        The dataset's protocol in a named setting (one of
        :data:`dsolo_sk.protocols.SETTINGS`: ``"paper"`` or a peer's,
        ``"sclip"``, ``"naclip"``, ...), or an explicit
        :class:`~dsolo_sk.protocols.Protocol`.
    out : str or path-like, optional
        Output folder. Per-image results are written there as they are
        computed and read back by a later call with the same arguments,
        which computes only what is missing; ``results.json`` and
        ``per_class_iou.csv`` are written at the end. Without it nothing is
        written and nothing resumes. It is checked for writability before
        any image is computed.
    limit : int, optional
        Evaluate only the first `limit` samples.
    scores : {"auto", "decision_function", "predict_proba"}, default="auto"
        See :func:`predict_image`.
    progress : bool, default=True
        Show a tqdm progress bar.

    Returns
    -------
    EvaluationResult
        When no pixel is scored (every mask pixel is the ignore index), the
        IoU of every class and the mIoU are NaN and an
        :class:`sklearn.exceptions.UndefinedMetricWarning` says so.

    Raises
    ------
    TypeError
        If `dataset` is not a benchmark reader (a list of images, say).
    ValueError
        If the estimator returns scores of the wrong shape or NaN or
        infinite scores (an argmax over NaN would silently predict class
        0), or the dataset lists a sample twice.
    dsolo_sk.exceptions.UnwritableFolderError
        If `out` cannot be written, before any image is computed.
    dsolo_sk.exceptions.UnreadableFileError
        If an image or mask of the dataset cannot be read; the message
        names the file.

    See Also
    --------
    dsolo_sk.distributed.evaluate_distributed : The same on a Dask cluster.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from dsolo_sk.datasets import load_dataset, write_fake_dataset
    >>> from dsolo_sk.evaluation import evaluate
    >>> ds = load_dataset("voc21", write_fake_dataset("voc21", tempfile.mkdtemp()))
    >>> def everything_is_background(image):
    ...     scores = np.zeros((21,) + image.shape[:2])
    ...     scores[0] = 1
    ...     return scores
    >>> res = evaluate(everything_is_background, ds, out=tempfile.mkdtemp(),
    ...                progress=False)
    >>> int(res.confusion_matrix[:, 1:].sum()), len(res.ids)
    (0, 2)
    """
    run = start_run(estimator, dataset, protocol=protocol, out=out,
                    limit=limit, scores=scores)
    bar = _progress(progress, run.n, run.n - len(run.todo), dataset.name)
    try:
        for i in run.todo:
            run.add(i, *evaluate_sample(run.estimator, dataset, i,
                                        run.protocol, scores=scores,
                                        geometry=run.geometry))
            bar.update(1)
    finally:
        bar.close()
    return run.finish()


def _validate_params(estimator):
    """Run the estimator's own parameter checks (the package's estimators
    define ``_validate_params``) before any image, so that a bad parameter
    is named before anything is computed or written."""
    from sklearn.base import BaseEstimator

    validate = getattr(type(estimator), "_validate_params", None)
    if callable(validate) and validate is not getattr(
            BaseEstimator, "_validate_params", None):
        estimator._validate_params()


_DATASET_ATTRS = ("name", "classes", "n_classes", "ids", "__getitem__",
                  "__len__")


def _check_dataset(dataset):
    """A benchmark reader (or an object that looks like one)."""
    missing = [a for a in _DATASET_ATTRS if not hasattr(dataset, a)]
    if missing:
        raise TypeError(
            "dataset must be a benchmark reader such as "
            "dsolo_sk.datasets.load_dataset('voc21', root) (a "
            f"SegmentationDataset), got {type(dataset).__name__}, which has "
            f"no {missing}. To score lists of images and masks, use "
            "segmenter.score(images, masks) or dsolo_sk.metrics.mean_iou."
        )
    ids = list(dataset.ids)
    if len(set(ids)) != len(ids):
        dups = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(
            f"dataset {dataset.name!r} lists the samples {dups} more than "
            "once; each image must be evaluated once."
        )
    check_scalar(dataset.n_classes, "dataset.n_classes",
                 target_type=Integral, min_val=2)


class _Run:
    """Book-keeping of one evaluation: what is left, the running matrix."""

    def __init__(self, estimator, dataset, protocol, out, limit, scores):
        self.start = time.perf_counter()
        _check_dataset(dataset)
        if out is not None:
            out = _io.check_output_folder(out, "out")
        self.dataset = dataset
        self.protocol = _resolve_protocol(protocol, dataset)
        check_option(scores, "scores", ("auto", "decision_function",
                                        "predict_proba"))
        check_classes(dataset.classes, name="dataset.classes")
        n = len(dataset)
        if limit is not None:
            check_scalar(limit, "limit", target_type=Integral, min_val=1)
            n = min(n, int(limit))
        self.n = n
        self.out = out
        self.estimator, self.geometry = prepare_estimator(
            estimator, dataset.classes, self.protocol)
        _validate_params(self.estimator)
        self.method = _score_method(self.estimator, scores)
        self.info = _run_info(self.estimator, dataset, self.protocol,
                              self.method, self.geometry)
        nc = self.protocol.n_classes
        self.store = None if out is None else ResultStore(out, self.info, nc)
        self.cm = np.zeros((nc, nc), np.int64)
        self.todo = []
        for i in range(n):
            stored = None if self.store is None else self.store.load(
                dataset.ids[i])
            if stored is None:
                self.todo.append(i)
            else:
                self.cm += stored
        self.n_computed = 0

    def add(self, index, sample_id, cm, seconds):
        """Record the result of sample `index` (on disk first)."""
        if self.store is not None:
            self.store.save(sample_id, index, cm, seconds)
        self.cm += cm
        self.n_computed += 1

    def finish(self):
        """The result; writes ``results.json`` and the CSV."""
        if self.store is not None:
            self.store.clean_temporary()
        return _finish(self.cm, self.dataset, self.protocol,
                       self.dataset.ids[:self.n], self.n_computed,
                       self.start, self.info, self.out)


def start_run(estimator, dataset, *, protocol=None, out=None, limit=None,
              scores="auto"):
    """Set up an evaluation: protocol, estimator, stored results.

    Used by :func:`evaluate` and by the Dask runner; ``run.todo`` lists the
    samples still to compute, ``run.add`` records one, ``run.finish``
    returns the :class:`EvaluationResult`.
    """
    return _Run(estimator, dataset, protocol, out, limit, scores)


def _progress(progress, total, initial, name):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not progress,
                desc=f"evaluate {name}", unit="img", dynamic_ncols=True)
