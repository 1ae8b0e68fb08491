"""Segmenters: label maps from class logits and an affinity, without training.

The pipeline of :class:`DirectSegmenter` for one image:

1. logits ``L`` (N classes x P patches), from a feature Dataset or from
   raw images through the feature extractors;
2. optional non-maximum suppression over classes and normalisation of each
   class into a distribution ``q_c`` over patches
   (:mod:`dsolo_sk.normalization`);
3. a discrepancy of ``q_c`` to the uniform distribution
   (:mod:`dsolo_sk.discrepancy`), which gives per-class score maps;
4. upsampling of the score maps to the image (:mod:`dsolo_sk.upsample`);
5. argmax over classes.
"""

from numbers import Integral

import numpy as np
import xarray as xr
from ot.backend import get_backend
from sklearn.base import BaseEstimator, clone
from tqdm.auto import tqdm

from .base import FitFreeMixin, validate_own_params
from ._arrays import (below, check_normalizer_output, check_part_output,
                      float32_scores)
from ._validation import (check_classes, check_masks, check_sample_list,
                          check_scalar)
from .discrepancy import KLDiscrepancy, TransportPath, TransportVelocity
from .features._contract import check_features
from .metrics import mean_iou
from .normalization import LogitNormalizer
from .upsample import JointBilateralUpsampler

__all__ = ["DirectSegmenter", "TransportPathSegmenter",
           "TransportVelocitySegmenter"]

#: The values of `mode` of :class:`DirectSegmenter`.
MODES = ("raw", "kl", "path", "velocity")
#: The values of `backend` of :class:`DirectSegmenter`.
BACKENDS = ("numpy", "torch")

_BUILTIN = {"kl": KLDiscrepancy, "path": TransportPath,
            "velocity": TransportVelocity}


def _default_parts(kind):
    """The normaliser, discrepancy and upsampler a method uses by default.

    ``kind`` is a mode name, or ``"custom"`` for a user's discrepancy.
    """
    if kind == "raw":
        return ("passthrough", "passthrough",
                JointBilateralUpsampler(kernel="gaussian"))
    if kind == "kl":
        return (LogitNormalizer(presence="centred", min_share=0.01,
                                baseline="mean", baseline_weight=0.15),
                KLDiscrepancy(), JointBilateralUpsampler(kernel="gaussian"))
    if kind == "path":
        return (LogitNormalizer(nms=False, baseline="off",
                                presence="centred-diffused", min_share=0.01),
                TransportPath(), JointBilateralUpsampler(kernel="gaussian"))
    if kind == "velocity":
        # a scale-free softmax of the logits less 93 % of each class's
        # mean, two Markov steps (method page, "Both worlds")
        return (LogitNormalizer(nms=False, method="softmax", temperature=4.0,
                                temperature_unit="spread", min_share=0.01,
                                presence="centred", baseline="mean",
                                baseline_weight=0.93),
                TransportVelocity(score="steps", n_steps=2, min_share=0.01),
                JointBilateralUpsampler(kernel="tent"))
    return LogitNormalizer(), None, JointBilateralUpsampler(kernel="tent")


def _is_tensor(x):
    return hasattr(x, "detach") and hasattr(x, "device")


def _feature(feat, name):
    """The array `name` (``"logits"``, ``"affinity"``, ``"image"`` or
    ``"class"``) of one image's features: a variable of a feature Dataset,
    or an entry of the dicts of plain arrays (torch tensors on the device)
    of the torch path for raw images
    (:meth:`~dsolo_sk.features.FeatureExtractor._iter_arrays`)."""
    if isinstance(feat, xr.Dataset):
        return feat[name].values
    return feat["classes" if name == "class" else name]


def _like(x, ref, dtype=None):
    """`x` as an array of `ref`'s kind: a torch tensor on `ref`'s device
    when `ref` is one (a tensor already there is not copied), else numpy.
    `dtype` is a numpy float type name ("float32") or None (keep)."""
    if _is_tensor(ref):
        import torch

        tdt = None if dtype is None else getattr(torch, dtype)
        if _is_tensor(x):
            return x.detach().to(device=ref.device, dtype=tdt)
        return torch.as_tensor(np.asarray(x), dtype=tdt, device=ref.device)
    if _is_tensor(x):  # a part's tensor on the numpy path
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _clone_part(est):
    """A clone of an extractor with scikit-learn's parameters
    (``get_params``); a plain object with the method alone (documented as
    enough) is used as it is: it has no parameters to copy."""
    if hasattr(est, "get_params") and not isinstance(est, type):
        return clone(est)
    return est


def _check_part(part, name, method, example, passthrough=True):
    """Check a part: ``None``, ``"passthrough"`` or an object with `method`;
    its own ``_validate_params()`` runs (:func:`~dsolo_sk.base.validate_own_params`)."""
    if part is None or (passthrough and isinstance(part, str)
                        and part == "passthrough"):
        return part
    if not callable(getattr(part, method, None)):
        allowed = "None, 'passthrough' or " if passthrough else "None or "
        raise TypeError(
            f"{name} must be {allowed}an object with a {method}() method "
            f"(for example {example}), got {part!r}."
        )
    return validate_own_params(part)


class DirectSegmenter(FitFreeMixin, BaseEstimator):
    """Training-free open-vocabulary segmentation by distributional discrepancy.

    Segments an image into the given classes by measuring, for every class,
    how its distribution of logits over the patches degenerates towards the
    uniform distribution, then taking the argmax of the upsampled scores
    ("Direct Segmentation without Logits Optimization", CVPR 2026).

    The segmenter composes its steps the way scikit-learn's meta-estimators
    compose theirs: each step is an object passed as a parameter, with its
    own parameters and math, tuned as ``discrepancy__tau`` or
    ``upsampler__sigma_range``. For one image with logits ``L`` (N classes
    x P patches):

    1. `normalizer` turns ``L`` into class distributions over the patches
       ``q`` and class masses ``m``
       (:class:`~dsolo_sk.LogitNormalizer`: suppression of the classes
       that win too few patches, per-class baseline, non-maximum
       suppression, then normalisation);
    2. `discrepancy` scores every class at every patch,
       ``compute(q, affinity, mass) -> (N, P)``
       (:class:`~dsolo_sk.TransportVelocity`,
       :class:`~dsolo_sk.TransportPath`, :class:`~dsolo_sk.KLDiscrepancy`,
       or a user's own object);
    3. `upsampler` brings the score maps to the image's resolution
       (:class:`~dsolo_sk.JointBilateralUpsampler`);
    4. argmax over classes.

    The estimator needs no fitting: :meth:`fit` only validates. It takes
    either feature Datasets (see :mod:`dsolo_sk.features`) or raw images,
    which it turns into features with `extractor` and `affinity`.

    Parameters
    ----------
    mode : {"velocity", "path", "kl", "raw"}, default="velocity"
        The built-in method, with the defaults of its parts (table below);
        ignored when `discrepancy` is given, which then decides the
        method. ``"velocity"``: maximum transport velocity of a Markov
        chain over the affinity. ``"path"``: the entropic optimal transport
        path. ``"kl"``: the pointwise Kullback-Leibler term, no affinity
        needed. ``"raw"``: the upsampled logits themselves (the baseline;
        no suppression, normalisation or discrepancy).
    classes : sequence of str, optional
        Class names used with raw images; synonyms within one class are
        separated by ``", "``. Feature Datasets carry their own.
    extractor : object, optional
        Logits extractor for raw images, with
        ``compute_logits(image, classes)``; default
        :class:`~dsolo_sk.features.CLIPFeatures` ``()``.
    affinity : object, optional
        Affinity extractor for raw images, with
        ``compute_affinity(image, grid_shape)``; default
        :class:`~dsolo_sk.features.DiffusionAttention` ``()``. Not used by
        methods that read no affinity (``"raw"``, ``"kl"``).
    normalizer : object or "passthrough", optional
        Suppression and normalisation of the logits, with
        ``normalize(logits) -> (q, mass)``, or ``normalize(logits,
        affinity)`` when its ``requires_affinity`` attribute is true (then
        the affinity is computed whatever the discrepancy);
        ``"passthrough"`` hands the logits on unchanged. Default: the
        method's (table below).
    discrepancy : object or "passthrough", optional
        The discrepancy, with ``compute(q, affinity, mass=None) -> (N, P)``
        (see :ref:`custom-discrepancy`); it decides the method when given.
        An object whose ``requires_affinity`` attribute is false gets no
        affinity (``None``). ``"passthrough"`` scores each class by its
        normalised input: the ratio ``P m_c q_c`` after a normaliser, the
        logits without one. Default: the method's (table below).
    upsampler : object, optional
        Upsampling of the score maps, with
        ``upsample(scores, image) -> (N, H, W)``. Default: the method's
        (table below).
    device : str, optional
        Device of the extractors' models (for example ``"cuda"``), default
        extractors included, and of the steps after them with
        ``backend="torch"``; ``"auto"`` prefers CUDA, then MPS, then the
        CPU. An unknown device (``"gpu"``) or one the machine lacks is a
        ValueError before any model loads. Default: the extractors' own.
    dtype : str, optional
        Floating type of the extractors' models (``"float16"`` on GPU),
        default extractors included; default: the extractors' own. The
        post-processing never runs in it: the logits and the affinity are
        cast to float32 first, the normalisation runs in float64, and the
        log-domain Sinkhorn iterations and the IPF scaling in float32, so a
        float16 model changes the features, not the numerics after them.
    backend : {"numpy", "torch"}, default="numpy"
        Where the steps after the models run. ``"numpy"``: on the host.
        ``"torch"``: as torch tensors on `device`, resolved as the
        extractors resolve it (None or ``"auto"``: CUDA when a GPU is
        visible, else the CPU). The same code runs there (the parts are
        written once, through POT's backend
        :func:`ot.backend.get_backend`), and only the label maps (or the
        score maps of :meth:`decision_function`) are copied back. With raw
        images, the logits and the affinity of extractors that can keep
        them on the device (``as_tensor`` in their ``*_batch`` methods, as
        :class:`~dsolo_sk.features.CLIPFeatures` and
        :class:`~dsolo_sk.features.DiffusionAttention` have) stay torch
        tensors there from the models to the argmax, no feature Dataset is
        built, and the images are processed `batch_size` at a time (the
        features of one chunk at most in memory);
        :class:`~dsolo_sk.features.FeatureExtractor` builds the Datasets
        when you want the features themselves. Both backends give the same
        labels; the scores agree to float32 rounding. On the CPU numpy is
        faster (``benchmarks/stages.py``); a user's part must accept torch
        tensors to be used with ``"torch"``.
    batch_size : int, default=1
        Raw images of the same size that go through CLIP and the UNet
        together (:class:`~dsolo_sk.features.FeatureExtractor`); memory
        grows linearly with it. Unused with feature Datasets.
    progress : bool or None, default=None
        Progress bar over images; ``None`` shows it on a terminal only.

    Notes
    -----
    The parts left at ``None`` are resolved when the segmenter runs (the
    parameters are never changed):

    .. list-table::
       :header-rows: 1

       * - method
         - normalizer
         - discrepancy
         - upsampler
       * - ``velocity``
         - ``LogitNormalizer(nms=False, method="softmax",
           temperature=4.0, temperature_unit="spread", min_share=0.01,
           presence="centred", baseline="mean", baseline_weight=0.93)``
         - ``TransportVelocity(score="steps", n_steps=2,
           min_share=0.01)``
         - ``JointBilateralUpsampler("tent")``
       * - ``path``
         - ``LogitNormalizer(nms=False, baseline="off",
           presence="centred-diffused", min_share=0.01)``
         - ``TransportPath()``
         - ``JointBilateralUpsampler("gaussian")``
       * - ``kl``
         - ``LogitNormalizer(presence="centred", min_share=0.01,
           baseline="mean", baseline_weight=0.15)``
         - ``KLDiscrepancy()``
         - ``JointBilateralUpsampler("gaussian")``
       * - ``raw``
         - ``"passthrough"``
         - ``"passthrough"``
         - ``JointBilateralUpsampler("gaussian")``
       * - a user's object
         - ``LogitNormalizer()``
         - (given)
         - ``JointBilateralUpsampler("tent")``

    A given discrepancy of a built-in class selects that class's row; a
    ``"passthrough"`` discrepancy the ``raw`` row. The choice of each
    default, with the synthetic benchmark behind it, is on the method page
    of the documentation.

    See Also
    --------
    TransportPathSegmenter : The path mode, its discrepancy fixed.
    TransportVelocitySegmenter : The velocity mode, its discrepancy fixed.

    Examples
    --------
    >>> from dsolo_sk import DirectSegmenter, TransportVelocity
    >>> from dsolo_sk.datasets import make_scenes
    >>> X, y = make_scenes(n_scenes=2, n_classes=6, image_size=128,
    ...                    random_state=0)
    >>> seg = DirectSegmenter(discrepancy=TransportVelocity(tau=0.3))
    >>> labels = seg.predict(X)
    >>> labels[0].shape, labels[0].dtype
    ((128, 128), dtype('int64'))
    >>> 0 <= seg.score(X, y) <= 1
    True
    >>> sorted(seg.get_params(deep=True))[:4]
    ['affinity', 'backend', 'batch_size', 'classes']
    >>> torch_seg = DirectSegmenter(backend="torch")  # steps run in torch
    >>> all((a == b).all() for a, b in zip(torch_seg.predict(X),
    ...                                    DirectSegmenter().predict(X)))
    True
    >>> seg.set_params(discrepancy__tau=0.1).discrepancy
    TransportVelocity(tau=0.1)
    """

    def __init__(self, mode="velocity", *, classes=None, extractor=None,
                 affinity=None, normalizer=None, discrepancy=None,
                 upsampler=None, device=None, dtype=None, backend="numpy",
                 batch_size=1, progress=None):
        self.mode = mode
        self.classes = classes
        self.extractor = extractor
        self.affinity = affinity
        self.normalizer = normalizer
        self.discrepancy = discrepancy
        self.upsampler = upsampler
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.batch_size = batch_size
        self.progress = progress

    # -- parameters --------------------------------------------------------

    _PART_EXAMPLES = {"normalizer": "LogitNormalizer()",
                      "discrepancy": "TransportVelocity()",
                      "upsampler": "JointBilateralUpsampler()"}

    def set_params(self, **params):
        """Set the parameters of this segmenter and of its parts.

        Nested names (``discrepancy__tau``) reach a part that is given as
        an object; a part left at ``None`` (the method's default, resolved
        only when the segmenter runs) must be passed first, in the same
        call or before.

        Parameters
        ----------
        **params : dict
            Parameter names and values.

        Returns
        -------
        self : DirectSegmenter
        """
        for key in params:
            part, sep, _ = key.partition("__")
            if not sep or part not in self._PART_EXAMPLES or part in params:
                continue
            current = getattr(self, part, None)
            if current is None or isinstance(current, str):
                example = self._PART_EXAMPLES[part]
                raise ValueError(
                    f"cannot set {key}: {part} is {current!r}, so it has no "
                    f"parameters to tune. Pass the part itself, for example "
                    f"{type(self).__name__}({part}={example}), or set "
                    f"{part}={example} in the same set_params call."
                )
        return super().set_params(**params)

    @property
    def _kind(self):
        """The method: a mode name, or ``"custom"`` for a user's object."""
        disc = self.discrepancy
        if disc is None:
            return self.mode
        if isinstance(disc, str) and disc == "passthrough":
            return "raw"
        for kind, cls in _BUILTIN.items():
            if isinstance(disc, cls):
                return kind
        return "custom"

    def _validate_params(self):
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(
                f"mode must be one of {sorted(MODES)}, got {self.mode!r}."
            )
        _check_part(self.normalizer, "normalizer", "normalize",
                    "dsolo_sk.LogitNormalizer()")
        _check_part(self.discrepancy, "discrepancy", "compute",
                    "dsolo_sk.TransportVelocity()")
        _check_part(self.upsampler, "upsampler", "upsample",
                    "dsolo_sk.JointBilateralUpsampler()", passthrough=False)
        for name in ("extractor", "affinity"):
            est = getattr(self, name)
            method = ("compute_logits" if name == "extractor"
                      else "compute_affinity")
            if est is not None and not callable(getattr(est, method, None)):
                raise TypeError(
                    f"{name} must be None or an object with a {method}() "
                    f"method, got {est!r}."
                )
        for name in ("device", "dtype"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(
                    f"{name} must be None or a string, got {value!r}."
                )
        check_scalar(self.batch_size, "batch_size", target_type=Integral,
                     min_val=1, max_val=4096, unit="images")
        if self.device is not None or self.dtype is not None:
            # an unknown or absent device fails here, before any model loads
            from .features._cache import check_device_dtype

            check_device_dtype(self.device, self.dtype)
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise ValueError(
                f"backend must be one of {sorted(BACKENDS)}, got "
                f"{self.backend!r}."
            )
        if self.classes is not None:
            check_classes(self.classes)
        if self.progress not in (None, True, False):
            raise TypeError(
                f"progress must be True, False or None, got {self.progress!r}."
            )

    def _parts(self):
        """The (normalizer, discrepancy, upsampler) in use, ``None``s
        resolved to the method's defaults."""
        kind = self._kind
        norm, disc, up = _default_parts(kind)
        if self.normalizer is not None:
            norm = self.normalizer
        if self.discrepancy is not None:
            disc = self.discrepancy
        if self.upsampler is not None:
            up = self.upsampler
        return norm, disc, up

    @property
    def _needs_affinity(self):
        kind = self._kind
        norm = self._parts()[0]
        if bool(getattr(norm, "requires_affinity", False)):
            return True
        if kind == "custom":
            return bool(getattr(self.discrepancy, "requires_affinity", True))
        return kind in ("path", "velocity")

    # -- scikit-learn API --------------------------------------------------

    def fit(self, X=None, y=None):
        """Validate the parameters; there is nothing to learn.

        Parameters
        ----------
        X : list of xarray.Dataset or images, optional
            Ignored apart from validation of its type.
        y : list of ndarray, optional
            Ignored.

        Returns
        -------
        self : DirectSegmenter
        """
        self._validate_params()
        if X is not None:
            check_sample_list(X)
        return self

    # -- features ------------------------------------------------------------

    def _feature_extractor(self, classes):
        from .features import FeatureExtractor  # the models load lazily

        params = {k: getattr(self, k) for k in ("device", "dtype")
                  if getattr(self, k) is not None}
        if self.extractor is not None:
            logits = _clone_part(self.extractor)
        else:
            from .features.clip import CLIPFeatures

            logits = CLIPFeatures()
        affinity = False
        if self._needs_affinity:
            if self.affinity is not None:
                affinity = _clone_part(self.affinity)
            else:
                from .features.diffusion import DiffusionAttention

                affinity = DiffusionAttention()
        # device and dtype reach every extractor that takes them, the
        # default ones included
        for est in (logits, affinity):
            if est is not False and hasattr(est, "get_params"):
                valid = est.get_params(deep=False)
                est.set_params(**{k: v for k, v in params.items()
                                  if k in valid})
        return FeatureExtractor(logits=logits, affinity=affinity,
                                classes=list(classes),
                                batch_size=self.batch_size,
                                progress=self.progress)

    def _features(self, X, classes=None, *, stream=False):
        """Turn the input into validated features: a list of feature
        Datasets; or, with `stream` and raw images, an iterator computing
        them a chunk of images at a time as dicts of plain arrays (torch
        tensors on the models' device where the extractors give them,
        :meth:`~dsolo_sk.features.FeatureExtractor._iter_arrays`), after
        validating everything."""
        X = check_sample_list(X)
        is_ds = [isinstance(x, xr.Dataset) for x in X]
        if all(is_ds):
            feats = [check_features(x, require_affinity=self._needs_affinity,
                                    name=f"X[{k}]") for k, x in enumerate(X)]
            if classes is not None:
                classes = check_classes(classes)
                for k, ds in enumerate(feats):
                    have = tuple(str(c) for c in ds["class"].values)
                    if have != classes:
                        raise ValueError(
                            f"classes {list(classes)} differ from the "
                            f"classes of X[{k}] {list(have)}; feature "
                            "Datasets carry their own classes: leave "
                            "classes out or recompute the features."
                        )
            return feats
        if any(is_ds):
            raise TypeError(
                "X mixes feature Datasets and images; pass one kind only."
            )
        if classes is None:
            classes = self.classes
        if classes is None:
            raise ValueError(
                "classes are needed to segment raw images: pass "
                "predict(images, classes=[...]) or set "
                "DirectSegmenter(classes=[...])."
            )
        classes = check_classes(classes)
        extractor = self._feature_extractor(classes)
        if stream:
            return extractor._iter_arrays(X, as_tensor=True)
        return extractor.transform(X)

    @property
    def _stream(self):
        """Whether raw images skip the feature Datasets (the torch path)."""
        return self.backend == "torch"

    # -- the method ------------------------------------------------------------

    def _device_array(self, values):
        """A feature array in the backend of the post-processing, float32
        (float16 features are widened: the numerics after the models run
        in float32 or float64, never in half precision)."""
        if self.backend == "numpy" and not _is_tensor(values):
            return np.asarray(values).astype(np.float32)
        import torch

        from .features._cache import resolve_device

        if self.device is None and _is_tensor(values):
            device = values.device  # tensors stay where they are
        else:
            device = resolve_device(self.device)
        if _is_tensor(values):
            return values.detach().to(device=device, dtype=torch.float32)
        return torch.as_tensor(np.asarray(values), dtype=torch.float32,
                               device=device)

    def _patch_scores(self, ds, parts=None):
        """Per-class scores on the patch grid, shape (N, rows, cols), in
        the backend of :meth:`_device_array` (numpy or torch); `ds` is a
        feature Dataset or a dict of arrays (:func:`_feature`)."""
        norm, disc, _ = self._parts() if parts is None else parts
        logits = self._device_array(_feature(ds, "logits"))
        nx = get_backend(logits)
        n, rows, cols = logits.shape
        flat = logits.reshape(n, rows * cols)
        affinity = None
        if self._needs_affinity:
            affinity = self._device_array(_feature(ds, "affinity"))
        if isinstance(norm, str):  # "passthrough"
            q, mass = flat, nx.ones((n,), type_as=flat)
        else:
            if bool(getattr(norm, "requires_affinity", False)):
                out = norm.normalize(flat, affinity)
            else:
                out = norm.normalize(flat)
            # the user's object is trusted with nothing: a pair, shapes
            # against N and P, a real floating type, finite, distributions
            q, mass = check_normalizer_output(out, norm, n, rows * cols)
            q = _like(q, flat, "float32")
            mass = _like(mass, flat)
        if isinstance(disc, str):  # "passthrough"
            if isinstance(norm, str):
                return logits
            scores = q * _like((q.shape[1] * mass)[:, None], q, "float32")
            return _like(scores, q, "float32").reshape(n, rows, cols)
        # a class whose mass underflows the scores' float32 is empty: it
        # could only ever lose, and log(0) would poison its scores
        keep = mass >= np.finfo(np.float32).tiny
        if not bool(keep.any()):
            keep = mass == mass.max()
        if not bool(getattr(disc, "requires_affinity", True)):
            affinity = None
        expected = (int(keep.sum()), rows * cols)
        scores = check_part_output(
            disc.compute(q[keep], affinity, mass[keep]), role="discrepancy",
            part=disc, method="compute", shape=expected,
            what=f"scores of shape (N, P) = {expected}, one row per class "
                 "with mass")
        # float32 from here on, without losing the margins to an offset
        scores = _like(float32_scores(scores), q, "float32")
        out = nx.zeros((n, rows * cols), type_as=scores)
        out[keep] = scores
        # a class that keeps no mass is never predicted: its score lies
        # below every other score (by a margin float32 keeps), constant
        # over the image
        out[~keep] = below(scores)
        return out.reshape(n, rows, cols)

    def _upsample(self, patch, ds, parts=None):
        _, _, up = self._parts() if parts is None else parts
        image = _feature(ds, "image")
        expected = (int(patch.shape[0]),) + tuple(image.shape[:2])
        maps = check_part_output(
            up.upsample(patch, image), role="upsampler", part=up,
            method="upsample", shape=expected,
            what=f"score maps of shape (N, H, W) = {expected}, one per "
                 "class at the image's height and width")
        return _like(maps, patch)

    def _labels(self, maps):
        """The argmax over classes, as a numpy int64 label map: the one
        copy from the device on the torch path."""
        if _is_tensor(maps):
            return maps.argmax(0).to("cpu").numpy().astype(np.int64)
        return np.argmax(maps, axis=0).astype(np.int64)

    def _score_maps(self, ds, parts=None):
        parts = self._parts() if parts is None else parts
        return self._upsample(self._patch_scores(ds, parts), ds, parts)

    def _iter(self, feats, desc, total=None):
        return tqdm(feats, desc=desc, total=total,
                    disable=None if self.progress is None
                    else not self.progress, leave=False)

    def decision_function(self, X, classes=None):
        """Per-class score maps of every image.

        Parameters
        ----------
        X : list of xarray.Dataset or list of images
            Feature Datasets, or images (HxWx3 uint8 arrays, PIL images or
            paths) to run through the extractors.
        classes : sequence of str, optional
            Class names for raw images (overrides the `classes` parameter).

        Returns
        -------
        scores : list of xarray.DataArray of dims ("class", "y", "x")
            Higher is more likely; the argmax over ``class`` is
            :meth:`predict`.
        """
        self._validate_params()
        X = check_sample_list(X)
        feats = self._features(X, classes, stream=self._stream)
        out = []
        for ds in self._iter(feats, "scores", len(X)):
            maps = self._score_maps(ds)
            if _is_tensor(maps):
                maps = maps.to("cpu").numpy()
            out.append(xr.DataArray(
                maps, dims=("class", "y", "x"),
                coords={"class": list(_feature(ds, "class"))}, name="score",
                attrs={"method": self._kind}))
        return out

    def predict(self, X, classes=None):
        """Label maps of every image.

        Parameters
        ----------
        X : list of xarray.Dataset or list of images
            Feature Datasets, or images to run through the extractors.
        classes : sequence of str, optional
            Class names for raw images (overrides the `classes` parameter).

        Returns
        -------
        labels : list of ndarray of shape (H, W), int64
            Indices into the classes, at each image's resolution.
        """
        self._validate_params()
        X = check_sample_list(X)
        feats = self._features(X, classes, stream=self._stream)
        return [self._labels(self._score_maps(ds))
                for ds in self._iter(feats, "segment", len(X))]

    def score(self, X, y, sample_weight=None):
        """Mean intersection over union against ground-truth masks.

        Intersections and unions are summed over all images, then averaged
        over classes with ``nanmean`` (see :func:`dsolo_sk.metrics.mean_iou`);
        pixels labelled 255 are ignored.

        Parameters
        ----------
        X : list of xarray.Dataset or list of images
            As in :meth:`predict`; all must share one class list.
        y : list of ndarray of shape (H, W)
            Integer masks indexing the classes, 255 to ignore.
        sample_weight : None
            Not supported; must be None.

        Returns
        -------
        miou : float in [0, 1]
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by mean IoU.")
        self._validate_params()
        X = check_sample_list(X)
        feats = self._features(X, stream=self._stream)
        if isinstance(feats, list):  # feature Datasets
            classes = {tuple(str(c) for c in ds["class"].values)
                       for ds in feats}
            if len(classes) != 1:
                raise ValueError(
                    "score needs every sample to share one class list; got "
                    f"{len(classes)} different lists."
                )
            n_classes = len(classes.pop())
            shapes = [(ds.sizes["y"], ds.sizes["x"]) for ds in feats]
        else:  # raw images, computed as they are segmented
            from .features._images import image_size

            n_classes = len(check_classes(self.classes))
            shapes = [image_size(x, name=f"X[{k}]") for k, x in enumerate(X)]
        masks = check_masks(y, shapes, n_classes)
        pred = [self._labels(self._score_maps(ds))
                for ds in self._iter(feats, "score", len(X))]
        return mean_iou(masks, pred, n_classes)


class _FixedMethodMixin:
    """A :class:`DirectSegmenter` whose discrepancy class is fixed."""

    def _validate_params(self):
        super()._validate_params()
        cls = _BUILTIN[self.mode]
        if self.discrepancy is not None and not isinstance(self.discrepancy,
                                                           cls):
            raise TypeError(
                f"{type(self).__name__} takes a {cls.__name__} as "
                f"discrepancy (or None), got {self.discrepancy!r}; use "
                "DirectSegmenter for other discrepancies."
            )


class TransportPathSegmenter(_FixedMethodMixin, DirectSegmenter):
    """:class:`DirectSegmenter` in the optimal transport path mode.

    The same estimator with its method fixed: `discrepancy` is a
    :class:`~dsolo_sk.TransportPath` (default ``TransportPath()``) and
    there is no `mode`. See :class:`DirectSegmenter` for the parameters
    and :class:`~dsolo_sk.TransportPath` for the math.

    Examples
    --------
    >>> from dsolo_sk import TransportPath, TransportPathSegmenter
    >>> from dsolo_sk.datasets import make_scenes
    >>> X, y = make_scenes(n_scenes=1, n_classes=5, image_size=96,
    ...                    random_state=0)
    >>> seg = TransportPathSegmenter(discrepancy=TransportPath(epsilon=0.1))
    >>> seg.predict(X)[0].shape
    (96, 96)
    """

    mode = "path"

    def __init__(self, *, classes=None, extractor=None, affinity=None,
                 normalizer=None, discrepancy=None, upsampler=None,
                 device=None, dtype=None, backend="numpy", batch_size=1,
                 progress=None):
        self.classes = classes
        self.extractor = extractor
        self.affinity = affinity
        self.normalizer = normalizer
        self.discrepancy = discrepancy
        self.upsampler = upsampler
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.batch_size = batch_size
        self.progress = progress


class TransportVelocitySegmenter(_FixedMethodMixin, DirectSegmenter):
    """:class:`DirectSegmenter` in the maximum transport velocity mode.

    The same estimator with its method fixed: `discrepancy` is a
    :class:`~dsolo_sk.TransportVelocity` (default
    ``TransportVelocity(score="steps", n_steps=2, min_share=0.01)``, the
    velocity row of :class:`DirectSegmenter`'s table) and there is no
    `mode`. See
    :class:`DirectSegmenter` for the parameters and
    :class:`~dsolo_sk.TransportVelocity` for the math.

    Examples
    --------
    >>> from dsolo_sk import TransportVelocity, TransportVelocitySegmenter
    >>> from dsolo_sk.datasets import make_scenes
    >>> X, y = make_scenes(n_scenes=1, n_classes=5, image_size=96,
    ...                    random_state=0)
    >>> seg = TransportVelocitySegmenter(
    ...     discrepancy=TransportVelocity(tau=0.3))
    >>> seg.predict(X)[0].shape
    (96, 96)
    """

    mode = "velocity"

    def __init__(self, *, classes=None, extractor=None, affinity=None,
                 normalizer=None, discrepancy=None, upsampler=None,
                 device=None, dtype=None, backend="numpy", batch_size=1,
                 progress=None):
        self.classes = classes
        self.extractor = extractor
        self.affinity = affinity
        self.normalizer = normalizer
        self.discrepancy = discrepancy
        self.upsampler = upsampler
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.batch_size = batch_size
        self.progress = progress
