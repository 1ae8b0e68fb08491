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

import numbers

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, clone
from tqdm.auto import tqdm

from .base import FitFreeMixin
from ._validation import (check_classes, check_masks, check_option,
                          check_sample_list, check_scalar)
from .discrepancy import (KL_DIRECTIONS, PATH_COSTS, PATH_SCORES,
                          VELOCITY_SCORES, KLDiscrepancy, TransportPath,
                          TransportVelocity)
from .features._contract import check_features
from .metrics import mean_iou
from .normalization import (NMS_FILLS, NORMALIZATIONS, NORMALIZE_OVER,
                            normalize_logits, suppress_non_maximum)
from .transport import sparsify_topk
from .upsample import JBU_KERNELS, UPSAMPLINGS, upsample_scores

__all__ = ["DirectSegmenter", "TransportPathSegmenter",
           "TransportVelocitySegmenter"]

MODES = ("raw", "kl", "path", "velocity")


class DirectSegmenter(FitFreeMixin, BaseEstimator):
    """Training-free open-vocabulary segmentation by distributional discrepancy.

    Segments an image into the given classes by measuring, for every class,
    how its distribution of logits over the patches degenerates towards the
    uniform distribution, then taking the argmax of the upsampled scores
    ("Direct Segmentation without Logits Optimization", CVPR 2026).

    The estimator needs no fitting: :meth:`fit` only validates. It takes
    either feature Datasets (see :mod:`dsolo_sk.features`) or raw images,
    which it turns into features with `extractor` and `affinity`.

    Parameters
    ----------
    mode : {"velocity", "path", "kl", "raw"}, default="velocity"
        The discrepancy. ``"velocity"``: maximum transport velocity of a
        Markov chain over the affinity (:class:`~dsolo_sk.TransportVelocity`).
        ``"path"``: the entropic optimal transport path
        (:class:`~dsolo_sk.TransportPath`). ``"kl"``: the pointwise
        Kullback-Leibler term (:class:`~dsolo_sk.KLDiscrepancy`), no
        affinity needed. ``"raw"``: the upsampled logits themselves (the
        baseline; no suppression or normalisation).
    classes : sequence of str, optional
        Class names used with raw images; synonyms within one class are
        separated by ``", "``. Feature Datasets carry their own.
    extractor : object, optional
        Logits extractor for raw images; default
        :class:`~dsolo_sk.features.CLIPFeatures` ``()``.
    affinity : object, optional
        Affinity extractor for raw images; default
        :class:`~dsolo_sk.features.DiffusionAttention` ``()``. Not used by
        the ``"raw"`` and ``"kl"`` modes.
    tau : float, default=0.3
        Convergence threshold of the velocity mode, on the scale of the
        ratio ``P q`` to the uniform distribution.
    epsilon : float, default=0.1
        Entropic regularisation of the path mode.
    sinkhorn_iter : int, default=50
        Sinkhorn iterations of the path mode: a fixed count, as in the
        paper, not a tolerance. With the path mode's ``"min"`` NMS fill the
        plan is not yet optimal after 50 iterations; on the synthetic
        benchmark the converged plans score about 2 mIoU lower (see the
        method page).
    ipf_iter : int, default=15
        Proportional-fitting iterations of the velocity mode.
    max_steps : int, default=100
        Cap on the Markov steps of the velocity mode.
    nms : bool, default=True
        Non-maximum suppression over classes before normalisation.
    nms_fill : {"auto", "zero", "min"}, default="auto"
        What suppressed entries get (see
        :func:`~dsolo_sk.normalization.suppress_non_maximum`). ``"auto"``
        is ``"min"`` in the path mode and ``"zero"`` otherwise, the best
        reading of each mode on the synthetic benchmark.
    normalization : {"l1", "softmax", "zscore"}, default="l1"
        How each class becomes a distribution over patches (see
        :func:`~dsolo_sk.normalization.normalize_logits`).
    normalize_over : {"image", "class"}, default="image"
        Whether the weights form one distribution over all classes and
        patches, so that each class has a mass (its share), or one
        distribution per class (see
        :func:`~dsolo_sk.normalization.normalize_logits`).
    temperature : float, default=0.01
        Softmax temperature of ``normalization="softmax"``.
    kl_direction : {"reverse", "forward"}, default="reverse"
        Pointwise term of the kl mode.
    path_cost : {"linear", "neglog"}, default="linear"
        Cost built from the affinity in the path mode.
    path_score : {"potential", "transport", "cost"}, default="potential"
        Per-patch reading of the transport plan.
    velocity_score : {"state", "weighted", "accumulated", "steps"}, \
default="state"
        Per-patch reading of the Markov chain.
    markov_steps : int, default=5
        Steps of the ``velocity_score="steps"`` baseline.
    affinity_topk : int, optional
        Keep only the largest `affinity_topk` entries of each affinity row
        (a sparse matrix) in the velocity mode: each step then costs
        O(k P) instead of O(P^2).
    upsample : {"jbu", "bilinear", "nearest"}, default="jbu"
        Upsampling of the score maps to the image.
    sigma_spatial : float, default=1.0
        Spatial bandwidth of the joint bilateral upsampling, in patches.
    sigma_range : float, default=0.1
        Colour bandwidth of the joint bilateral upsampling (colours in
        [0, 1]).
    jbu_kernel : {"auto", "gaussian", "tent"}, default="auto"
        Spatial kernel of the joint bilateral upsampling (see
        :func:`~dsolo_sk.upsample.joint_bilateral_upsample`). ``"auto"`` is
        the tent (4 neighbours) in the path and velocity modes and the
        Gaussian (16 neighbours) otherwise: on the synthetic benchmark the
        Gaussian gains at most 0.6 mIoU in the transport modes at 3 to 4
        times the cost, which would take their post-processing past 10 %
        of a CLIP ViT-B/16 forward, and 2 mIoU in the kl mode, which has
        that budget to spare.
    device : str, optional
        Device of the extractors' models (for example ``"cuda"``); default:
        the extractors' own.
    dtype : str, optional
        Floating type of the extractors' models (``"float16"`` on GPU);
        default: the extractors' own.
    progress : bool or None, default=None
        Progress bar over images; ``None`` shows it on a terminal only.

    See Also
    --------
    TransportPathSegmenter : The path mode with its parameters only.
    TransportVelocitySegmenter : The velocity mode with its parameters only.

    Examples
    --------
    >>> from dsolo_sk import DirectSegmenter
    >>> from dsolo_sk.datasets import make_scenes
    >>> X, y = make_scenes(n_scenes=2, n_classes=6, image_size=128,
    ...                    random_state=0)
    >>> seg = DirectSegmenter(mode="velocity")
    >>> labels = seg.predict(X)
    >>> labels[0].shape, labels[0].dtype
    ((128, 128), dtype('int64'))
    >>> 0 <= seg.score(X, y) <= 1
    True
    """

    _required_mode = None

    def __init__(self, mode="velocity", classes=None, extractor=None, affinity=None,
                 tau=0.3, epsilon=0.1, sinkhorn_iter=50, ipf_iter=15,
                 max_steps=100, nms=True, nms_fill="auto",
                 normalization="l1", normalize_over="image",
                 temperature=0.01, kl_direction="reverse",
                 path_cost="linear", path_score="potential",
                 velocity_score="state", markov_steps=5, affinity_topk=None,
                 upsample="jbu", sigma_spatial=1.0, sigma_range=0.1,
                 jbu_kernel="auto", device=None, dtype=None,
                 progress=None):
        self.mode = mode
        self.classes = classes
        self.extractor = extractor
        self.affinity = affinity
        self.tau = tau
        self.epsilon = epsilon
        self.sinkhorn_iter = sinkhorn_iter
        self.ipf_iter = ipf_iter
        self.max_steps = max_steps
        self.nms = nms
        self.nms_fill = nms_fill
        self.normalization = normalization
        self.normalize_over = normalize_over
        self.temperature = temperature
        self.kl_direction = kl_direction
        self.path_cost = path_cost
        self.path_score = path_score
        self.velocity_score = velocity_score
        self.markov_steps = markov_steps
        self.affinity_topk = affinity_topk
        self.upsample = upsample
        self.sigma_spatial = sigma_spatial
        self.sigma_range = sigma_range
        self.jbu_kernel = jbu_kernel
        self.device = device
        self.dtype = dtype
        self.progress = progress

    # -- parameters --------------------------------------------------------

    def _get(self, name, default):
        """A parameter that a fixed-mode subclass may not expose."""
        return getattr(self, name, default)

    @property
    def _mode(self):
        return self._required_mode or self.mode

    def _validate_params(self):
        check_option(self._mode, "mode", MODES)
        check_option(self._get("upsample", "jbu"), "upsample", UPSAMPLINGS)
        check_option(self._get("jbu_kernel", "auto"), "jbu_kernel",
                     ("auto",) + JBU_KERNELS)
        check_option(self._get("nms_fill", "auto"), "nms_fill",
                     ("auto",) + NMS_FILLS)
        check_option(self._get("normalization", "l1"), "normalization",
                     NORMALIZATIONS)
        check_option(self._get("normalize_over", "image"), "normalize_over",
                     NORMALIZE_OVER)
        if not isinstance(self._get("nms", True), (bool, np.bool_)):
            raise TypeError(f"nms must be True or False, got {self.nms!r}.")
        for name in ("temperature", "sigma_spatial", "sigma_range"):
            check_scalar(self._get(name, 1.0), name, min_val=0,
                         include_min=False)
        if self.classes is not None:
            check_classes(self.classes)
        topk = self._get("affinity_topk", None)
        if topk is not None:
            check_scalar(topk, "affinity_topk", target_type=numbers.Integral,
                         min_val=1)
        # every parameter is checked, whether the mode reads it or not
        for name in ("tau", "epsilon"):
            if hasattr(self, name):
                check_scalar(getattr(self, name), name, min_val=0,
                             include_min=False)
        for name in ("sinkhorn_iter", "ipf_iter", "max_steps",
                     "markov_steps"):
            if hasattr(self, name):
                check_scalar(getattr(self, name), name,
                             target_type=numbers.Integral, min_val=1)
        for name, options in (("kl_direction", KL_DIRECTIONS),
                              ("path_cost", PATH_COSTS),
                              ("path_score", PATH_SCORES),
                              ("velocity_score", VELOCITY_SCORES)):
            if hasattr(self, name):
                check_option(getattr(self, name), name, options)
        if self.progress not in (None, True, False):
            raise TypeError(
                f"progress must be True, False or None, got {self.progress!r}."
            )

    def _discrepancy(self):
        mode = self._mode
        if mode == "kl":
            return KLDiscrepancy(direction=self._get("kl_direction",
                                                     "reverse"))
        if mode == "path":
            return TransportPath(epsilon=self.epsilon,
                                 n_iter=self.sinkhorn_iter,
                                 cost=self.path_cost, score=self.path_score)
        if mode == "velocity":
            return TransportVelocity(tau=self.tau, n_iter=self.ipf_iter,
                                     max_steps=self.max_steps,
                                     score=self.velocity_score,
                                     n_steps=self.markov_steps)
        return None

    @property
    def _needs_affinity(self):
        return self._mode in ("path", "velocity")

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

        params = {}
        for key in ("device", "dtype"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        logits = clone(self.extractor) if self.extractor is not None else None
        affinity = None
        if self._needs_affinity:
            affinity = (clone(self.affinity) if self.affinity is not None
                        else None)
        fe = FeatureExtractor(logits=logits, affinity=affinity,
                              classes=list(classes),
                              progress=self.progress)
        if not self._needs_affinity:
            fe.set_params(affinity=False)
        for part in ("logits", "affinity"):
            est = getattr(fe, part)
            if est is not None and est is not False:
                valid = est.get_params()
                est.set_params(**{k: v for k, v in params.items()
                                  if k in valid})
        return fe

    def _features(self, X, classes=None):
        """Turn the input into a list of validated feature Datasets."""
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
        return self._feature_extractor(classes).transform(X)

    # -- the method ------------------------------------------------------------

    def _patch_scores(self, ds):
        """Per-class scores on the patch grid, shape (N, rows, cols)."""
        logits = ds["logits"].values.astype(np.float32)
        n, rows, cols = logits.shape
        if self._mode == "raw":
            return logits
        flat = logits.reshape(n, rows * cols)
        if self._get("nms", True):
            fill = self._get("nms_fill", "auto")
            if fill == "auto":
                fill = "min" if self._mode == "path" else "zero"
            flat = suppress_non_maximum(flat, fill)
        q, mass = normalize_logits(flat, self._get("normalization", "l1"),
                                   self._get("temperature", 0.01),
                                   self._get("normalize_over", "image"))
        q = q.astype(np.float32)
        keep = mass > 0
        affinity = None
        if self._needs_affinity:
            affinity = ds["affinity"].values.astype(np.float32)
            topk = self._get("affinity_topk", None)
            if topk is not None and self._mode == "velocity":
                affinity = sparsify_topk(affinity, topk)
        scores = np.asarray(
            self._discrepancy().compute(q[keep], affinity, mass[keep]),
            dtype=np.float32)
        out = np.empty((n, rows * cols), dtype=np.float32)
        out[keep] = scores
        # a class that keeps no mass is never predicted: its score lies
        # below every other score, constant over the image
        out[~keep] = scores.min() - 1.0
        return out.reshape(n, rows, cols)

    def _upsample(self, patch, ds):
        kernel = self._get("jbu_kernel", "auto")
        if kernel == "auto":
            kernel = ("tent" if self._mode in ("path", "velocity")
                      else "gaussian")
        return upsample_scores(patch, ds["image"].values,
                               self._get("upsample", "jbu"),
                               self._get("sigma_spatial", 1.0),
                               self._get("sigma_range", 0.1), kernel)

    def _score_maps(self, ds):
        return self._upsample(self._patch_scores(ds), ds)

    def _iter(self, feats, desc):
        return tqdm(feats, desc=desc, disable=(None if self.progress is None
                                               else not self.progress),
                    leave=False)

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
        feats = self._features(X, classes)
        out = []
        for ds in self._iter(feats, "scores"):
            maps = self._score_maps(ds)
            out.append(xr.DataArray(
                maps, dims=("class", "y", "x"),
                coords={"class": ds["class"].values}, name="score",
                attrs={"mode": self._mode}))
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
        feats = self._features(X, classes)
        return [np.argmax(self._score_maps(ds), axis=0).astype(np.int64)
                for ds in self._iter(feats, "segment")]

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
        feats = self._features(X)
        classes = {tuple(str(c) for c in ds["class"].values) for ds in feats}
        if len(classes) != 1:
            raise ValueError(
                "score needs every sample to share one class list; got "
                f"{len(classes)} different lists."
            )
        n_classes = len(classes.pop())
        masks = check_masks(y, [(ds.sizes["y"], ds.sizes["x"])
                                for ds in feats], n_classes)
        pred = [np.argmax(self._score_maps(ds), axis=0)
                for ds in self._iter(feats, "score")]
        return mean_iou(masks, pred, n_classes)


class TransportPathSegmenter(DirectSegmenter):
    """:class:`DirectSegmenter` in the optimal transport path mode.

    The same estimator with ``mode="path"`` fixed and only the parameters
    that this mode reads; see :class:`DirectSegmenter` for their meaning
    and :class:`~dsolo_sk.TransportPath` for the math.

    Examples
    --------
    >>> from dsolo_sk import TransportPathSegmenter
    >>> from dsolo_sk.datasets import make_scenes
    >>> X, y = make_scenes(n_scenes=1, n_classes=5, image_size=96,
    ...                    random_state=0)
    >>> TransportPathSegmenter(epsilon=0.1).predict(X)[0].shape
    (96, 96)
    """

    _required_mode = "path"

    def __init__(self, classes=None, extractor=None, affinity=None, epsilon=0.1,
                 sinkhorn_iter=50, path_cost="linear",
                 path_score="potential", nms=True, nms_fill="auto",
                 normalization="l1", normalize_over="image",
                 temperature=0.01, upsample="jbu", sigma_spatial=1.0,
                 sigma_range=0.1, jbu_kernel="auto", device=None,
                 dtype=None, progress=None):
        self.classes = classes
        self.extractor = extractor
        self.affinity = affinity
        self.epsilon = epsilon
        self.sinkhorn_iter = sinkhorn_iter
        self.path_cost = path_cost
        self.path_score = path_score
        self.nms = nms
        self.nms_fill = nms_fill
        self.normalization = normalization
        self.normalize_over = normalize_over
        self.temperature = temperature
        self.upsample = upsample
        self.sigma_spatial = sigma_spatial
        self.sigma_range = sigma_range
        self.jbu_kernel = jbu_kernel
        self.device = device
        self.dtype = dtype
        self.progress = progress


class TransportVelocitySegmenter(DirectSegmenter):
    """:class:`DirectSegmenter` in the maximum transport velocity mode.

    The same estimator with ``mode="velocity"`` fixed and only the
    parameters that this mode reads; see :class:`DirectSegmenter` for their
    meaning and :class:`~dsolo_sk.TransportVelocity` for the math.

    Examples
    --------
    >>> from dsolo_sk import TransportVelocitySegmenter
    >>> from dsolo_sk.datasets import make_scenes
    >>> X, y = make_scenes(n_scenes=1, n_classes=5, image_size=96,
    ...                    random_state=0)
    >>> TransportVelocitySegmenter(tau=0.3).predict(X)[0].shape
    (96, 96)
    """

    _required_mode = "velocity"

    def __init__(self, classes=None, extractor=None, affinity=None, tau=0.3,
                 ipf_iter=15, max_steps=100, velocity_score="state",
                 markov_steps=5, affinity_topk=None, nms=True,
                 nms_fill="auto", normalization="l1",
                 normalize_over="image", temperature=0.01, upsample="jbu",
                 sigma_spatial=1.0, sigma_range=0.1, jbu_kernel="auto",
                 device=None, dtype=None, progress=None):
        self.classes = classes
        self.extractor = extractor
        self.affinity = affinity
        self.tau = tau
        self.ipf_iter = ipf_iter
        self.max_steps = max_steps
        self.velocity_score = velocity_score
        self.markov_steps = markov_steps
        self.affinity_topk = affinity_topk
        self.nms = nms
        self.nms_fill = nms_fill
        self.normalization = normalization
        self.normalize_over = normalize_over
        self.temperature = temperature
        self.upsample = upsample
        self.sigma_spatial = sigma_spatial
        self.sigma_range = sigma_range
        self.jbu_kernel = jbu_kernel
        self.device = device
        self.dtype = dtype
        self.progress = progress
