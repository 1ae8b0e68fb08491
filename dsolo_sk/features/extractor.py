"""Turn raw images into feature Datasets: logits plus an affinity.

:class:`FeatureExtractor` is a fit-free scikit-learn transformer: it maps a
list of images to a list of :class:`xarray.Dataset` in the feature contract
(:mod:`dsolo_sk.features`), so it can be a (cached) step of a
:class:`~sklearn.pipeline.Pipeline` in front of a segmenter, and a
hyperparameter search over the segmenter never re-runs the models.
"""


import inspect
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._validation import check_classes, check_scalar
from ..base import FitFreeMixin, validate_own_params
from ._contract import check_arrays, from_arrays, max_per_class
from ._images import check_images, to_rgb_uint8

__all__ = ["FeatureExtractor"]

_NO_AFFINITY = (False, "none")


def _takes_as_tensor(est, method):
    """Whether `est` has `method` with an ``as_tensor`` keyword (its
    results can stay torch tensors on the model's device)."""
    fn = getattr(est, method, None)
    if not callable(fn):
        return False
    try:
        return "as_tensor" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def _check_part(est, method, name, example):
    if not callable(getattr(est, method, None)):
        raise TypeError(
            f"{name} must be an object with a {method}() method (for example "
            f"{example}), got {est!r}."
        )
    # bad parameters fail before any model loads
    return validate_own_params(est)


class FeatureExtractor(FitFreeMixin, TransformerMixin, BaseEstimator):
    """Compute the feature Dataset of each image: CLIP logits and an affinity.

    Parameters
    ----------
    logits : object, default=None
        Logits extractor: anything with
        ``compute_logits(image, classes) -> (n_classes, rows, cols)``.
        ``None`` means :class:`~dsolo_sk.features.CLIPFeatures` ``()``
        (ViT-B/16 with the OpenAI weights).
    affinity : object, False or "none", default=None
        Affinity extractor: anything with
        ``compute_affinity(image, grid_shape) -> (P, P)``, for example
        :class:`~dsolo_sk.features.DiffusionAttention` (the paper's Stable
        Diffusion 2 self-attention, the default when ``None``) or the
        model-free :class:`~dsolo_sk.features.ColorPositionAffinity`.
        ``False`` or ``"none"`` computes no affinity: enough for the
        segmenters' ``"raw"`` and ``"kl"`` modes.
    classes : sequence of str
        Class names, at least two; synonyms within a name separated by
        commas. Required by :meth:`transform`; a constructor parameter so
        that :func:`~sklearn.base.clone` and ``set_params`` carry it.
    progress : bool or None, default=None
        Progress bar over the images (tqdm): ``True`` always, ``False``
        never, ``None`` only when writing to a terminal.
    batch_size : int, default=1
        Most images per forward pass of the models, 1 to 4096. Consecutive
        images of the same size (hence the same size after each model's resize)
        are grouped into chunks of at most `batch_size` and passed together to
        the extractors' ``compute_query_logits_batch`` /
        ``compute_logits_batch`` and ``compute_affinity_batch`` methods when
        they have them (:class:`~dsolo_sk.features.CLIPFeatures` and
        :class:`~dsolo_sk.features.DiffusionAttention` do); extractors without
        them are called once per image. The features equal those of
        ``batch_size=1`` within float rounding. Memory grows linearly with
        `batch_size` (for Stable Diffusion, one P x P attention map per
        captured block and image), and at most `batch_size` images are decoded
        at a time.

    Notes
    -----
    Images (see :mod:`dsolo_sk.features._images` for the details) are a
    list of (H, W, 3) uint8 arrays, PIL images or file paths. Grayscale is
    repeated to RGB, RGBA loses its alpha channel, float images must lie in
    [0, 1]. Image files are read as displayed (EXIF orientation applied,
    see :func:`dsolo_sk.datasets.read_image`); one that cannot be decoded
    raises :class:`~dsolo_sk.exceptions.UnreadableFileError` naming it.
    Every image, the classes and the extractors' parameters are
    validated before any model is loaded, and everything the models need
    (their packages, their weights in the cache or a local folder) is
    checked first by :func:`~dsolo_sk.features.require_weights`, which
    lists all that is missing in one error. The Dataset's ``image`` is the
    image at its original resolution, so the label map predicted from it
    has the image's size.

    Examples
    --------
    With the paper's models (downloaded on first use)::

        from dsolo_sk.features import FeatureExtractor
        feats = FeatureExtractor(classes=["cat", "sky"]).transform(images)

    Any object with ``compute_logits`` can stand in for CLIP:

    >>> import numpy as np
    >>> from dsolo_sk.features import FeatureExtractor
    >>> class Stripes:
    ...     def compute_logits(self, image, classes):
    ...         cols = np.linspace(-1, 1, 4, dtype=np.float32)
    ...         return np.stack([np.tile(cols, (3, 1)), np.tile(-cols, (3, 1))])
    >>> fe = FeatureExtractor(logits=Stripes(), affinity=False,
    ...                       classes=["left", "right"], progress=False)
    >>> [ds] = fe.fit_transform([np.zeros((30, 40, 3), np.uint8)])
    >>> ds["logits"].shape, ds["image"].shape
    ((2, 3, 4), (30, 40, 3))
    """

    def __init__(self, logits=None, affinity=None, classes=None, *, progress=None,
                 batch_size=1):
        self.logits = logits
        self.affinity = affinity
        self.classes = classes
        self.progress = progress
        self.batch_size = batch_size

    def _parts(self, require=False):
        """The (logits, affinity-or-None) extractors, validated; with
        `require`, everything their models need is checked first
        (:func:`~dsolo_sk.features.require_weights`, which imports none of
        the packages that the validation of a CLIP tag imports, so that
        missing weights are reported within a second or two)."""
        if self.logits is None:
            from .clip import CLIPFeatures

            logits = CLIPFeatures()
        else:
            logits = self.logits
        aff = self.affinity
        if isinstance(aff, str) and aff not in _NO_AFFINITY:
            raise ValueError(
                f"affinity must be an extractor object, None (Stable Diffusion "
                f"attention), False or 'none', got {aff!r}."
            )
        if aff is False or aff == "none":
            aff = None
        elif aff is None:
            from .diffusion import DiffusionAttention

            aff = DiffusionAttention()
        if require:
            from .weights import require_weights

            require_weights(logits, aff)
        _check_part(logits, "compute_logits", "logits",
                    "dsolo_sk.features.CLIPFeatures()")
        if aff is not None:
            _check_part(aff, "compute_affinity", "affinity",
                        "dsolo_sk.features.ColorPositionAffinity()")
        return logits, aff

    def _check_classes(self):
        if self.classes is None:
            raise ValueError(
                "classes is required: FeatureExtractor(classes=['cat', 'dog', "
                "...]) or set_params(classes=[...])."
            )
        return check_classes(self.classes)

    def _check_progress(self):
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(
                f"progress must be True, False or None, got {self.progress!r}."
            )

    def _check_batch_size(self):
        return check_scalar(self.batch_size, "batch_size",
                            target_type=Integral, min_val=1, max_val=4096,
                            unit="images")

    def fit(self, X=None, y=None):
        """Validate the parameters (and `X` when given); learns nothing.

        Parameters
        ----------
        X : list of images, optional
            Validated when given.
        y : ignored

        Returns
        -------
        self : FeatureExtractor
        """
        self._check_progress()
        self._check_batch_size()
        self._check_classes()
        self._parts()
        if X is not None:
            check_images(X, name="X")
        return self

    def transform(self, X):
        """Compute the feature Dataset of every image.

        Parameters
        ----------
        X : list of images
            (H, W, 3) uint8 arrays, PIL images or paths (see Notes).

        Returns
        -------
        list of xarray.Dataset
            One Dataset per image, with ``logits``, ``image``, (unless
            ``affinity=False``) ``affinity`` and, when the logits extractor
            has a ``compute_query_logits`` method (as
            :class:`~dsolo_sk.features.CLIPFeatures` does),
            ``query_logits`` with its ``query_class`` coordinate.
        """
        from tqdm.auto import tqdm

        images = check_images(X, name="X")
        self._check_progress()
        batch_size = self._check_batch_size()
        classes = self._check_classes()
        logits_est, aff_est = self._parts(require=True)
        disable = None if self.progress is None else not self.progress
        out = []
        with tqdm(total=len(images), desc="features", unit="image",
                  disable=disable) as bar:
            for chunk in _chunks(images, batch_size):
                out.extend(self._chunk_features(chunk, classes, logits_est,
                                                aff_est))
                bar.update(len(chunk))
        return out

    def _iter_arrays(self, X, *, as_tensor=False):
        """The features of every image as plain arrays, chunk by chunk.

        Everything is validated first, as in :meth:`transform`; the
        returned iterator then computes one chunk of at most `batch_size`
        images at a time and yields, per image, a dict of the arguments of
        :func:`~dsolo_sk.features.from_arrays` (``logits``, ``affinity``,
        ``image``, ``classes`` and, unless `as_tensor`, ``query_logits``
        and ``query_class`` when the logits extractor gives them).

        With `as_tensor`, the extractors whose ``compute_logits_batch`` /
        ``compute_affinity_batch`` take ``as_tensor`` (as
        :class:`~dsolo_sk.features.CLIPFeatures` and
        :class:`~dsolo_sk.features.DiffusionAttention` do) are called that
        way, so their logits and affinity stay torch tensors on the
        models' device; they are checked there, with no Dataset built.
        Others give their numpy arrays, checked by ``from_arrays``'s rules.
        """
        images = check_images(X, name="X")
        self._check_progress()
        batch_size = self._check_batch_size()
        classes = self._check_classes()
        logits_est, aff_est = self._parts(require=True)

        def arrays():
            for chunk in _chunks(images, batch_size):
                yield from self._chunk_arrays(chunk, classes, logits_est,
                                              aff_est, as_tensor)
        return arrays()

    @staticmethod
    def _chunk_features(chunk, classes, logits_est, aff_est):
        """The Datasets of a chunk of images of the same size."""
        return [from_arrays(**d) for d in FeatureExtractor._chunk_arrays(
            chunk, classes, logits_est, aff_est)]

    @staticmethod
    def _chunk_arrays(chunk, classes, logits_est, aff_est, as_tensor=False):
        """Per image of a chunk of one size: the arguments of
        :func:`from_arrays` (see :meth:`_iter_arrays`)."""
        tensor_logits = as_tensor and _takes_as_tensor(
            logits_est, "compute_logits_batch")
        if tensor_logits:
            logits = list(logits_est.compute_logits_batch(chunk, classes,
                                                          as_tensor=True))
            queries = [{} for _ in chunk]
        elif callable(getattr(logits_est, "compute_query_logits", None)):
            batch = getattr(logits_est, "compute_query_logits_batch", None)
            if len(chunk) > 1 and callable(batch):
                results = batch(chunk, classes)
            else:
                results = [logits_est.compute_query_logits(img, classes)
                           for img in chunk]
            queries = [{"query_logits": q, "query_class": owner}
                       for q, owner in results]
            logits = [max_per_class(q, owner, len(classes))
                      for q, owner in results]
            if as_tensor:  # the segmenter reads the logits only
                queries = [{} for _ in chunk]
        else:
            batch = getattr(logits_est, "compute_logits_batch", None)
            if len(chunk) > 1 and callable(batch):
                logits = list(batch(chunk, classes))
            else:
                logits = [logits_est.compute_logits(img, classes)
                          for img in chunk]
            queries = [{} for _ in chunk]
        if len(logits) != len(chunk):
            raise ValueError(
                f"the logits extractor returned {len(logits)} results for "
                f"{len(chunk)} images; a *_batch method must return one per "
                "image."
            )
        affinities = [None] * len(chunk)
        if aff_est is not None:
            grids = {tuple(np.shape(lg)[1:]) for lg in logits}
            if (as_tensor and len(grids) == 1 and _takes_as_tensor(
                    aff_est, "compute_affinity_batch")):
                affinities = list(aff_est.compute_affinity_batch(
                    chunk, grids.pop(), as_tensor=True))
            else:
                batch = getattr(aff_est, "compute_affinity_batch", None)
                if len(chunk) > 1 and len(grids) == 1 and callable(batch):
                    affinities = list(batch(chunk, grids.pop()))
                else:
                    affinities = [aff_est.compute_affinity(
                        img, tuple(np.shape(lg)[1:]))
                        for img, lg in zip(chunk, logits)]
        if len(affinities) != len(chunk):
            raise ValueError(
                f"the affinity extractor returned {len(affinities)} results "
                f"for {len(chunk)} images; a *_batch method must return one "
                "per image."
            )
        out = [dict(logits=lg, affinity=a, image=img, classes=classes, **q)
               for lg, a, img, q in zip(logits, affinities, chunk, queries)]
        if as_tensor:
            for d in out:
                _check_tensor_arrays(d)
        return out


def _check_tensor_arrays(d):
    """On the torch path: the checks of :func:`from_arrays` on the logits
    and the affinity, tensors checked on their device (the results of an
    extractor without ``as_tensor`` as numpy arrays)."""
    for name in ("logits", "affinity"):
        if d[name] is not None and not hasattr(d[name], "detach"):
            d[name] = np.asarray(d[name])
    check_arrays(d["logits"], d["affinity"], d["classes"])


def _chunks(images, batch_size):
    """Decode `images` one by one and yield runs of consecutive images of
    the same shape, at most `batch_size` long (so at most `batch_size`
    decoded images are held at a time)."""
    chunk = []
    for k, img in enumerate(images):
        image = to_rgb_uint8(img, name=f"X[{k}]")
        if chunk and (len(chunk) == batch_size
                      or chunk[0].shape != image.shape):
            yield chunk
            chunk = []
        chunk.append(image)
    if chunk:
        yield chunk
