"""Hyperparameter search over segmenters without re-running the models.

A grid search over ``discrepancy__tau``, ``discrepancy__epsilon``, the
discrepancy object itself or ``mode`` changes only the cheap
post-processing of a :class:`~dsolo_sk.DirectSegmenter`; the expensive part
is the feature extraction (CLIP and Stable Diffusion forwards). Two tools
keep it to one forward per image for the whole search:

- precomputed feature Datasets: ``GridSearchCV(DirectSegmenter(), ...)``
  ``.fit(features, masks)``, or
- a :class:`~sklearn.pipeline.Pipeline` whose first step is a
  :class:`FeatureCache` around the extractor, from raw images
  (:func:`make_segmentation_pipeline` builds it).

Why not only ``Pipeline(memory=...)``: scikit-learn's Pipeline caches the
``fit_transform`` of its transformers during ``fit``, but not the
``transform`` that ``predict`` and ``score`` run on the validation fold,
so every candidate of a search would extract the validation images again.
:class:`FeatureCache` memoises the transform itself, one entry per image,
so folds, candidates, clones and the final refit all share it.

:func:`cv_results_to_dataset` turns the ``cv_results_`` of a grid search
into an :class:`xarray.Dataset` with one dimension per searched parameter.
"""

import hashlib
import json
import os
import threading
import warnings
from collections import OrderedDict

import joblib
import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags

from . import _io
from ._validation import check_sample_list
from .base import FitFreeMixin

__all__ = ["FeatureCache", "make_segmentation_pipeline",
           "cv_results_to_dataset", "clear_feature_cache",
           "feature_cache_info"]

#: Default bound of the in-process store of :class:`FeatureCache`.
DEFAULT_MAX_BYTES = 2 * 1024 ** 3

_LOCK = threading.RLock()
_STORE = OrderedDict()  # key -> (value, nbytes)
_STATS = {"hits": 0, "misses": 0, "bytes": 0}
_SUBDIR = "dsolo_sk_features"
_ENTRY_FORMAT = "dsolo_sk.feature_cache/1"
_ENTRY_SUFFIX = ".npz"
_CHECKED_FOLDERS = set()  # memory folders found writable in this process
_WARNED_TYPES = set()  # output types that cannot be stored on disk


def clear_feature_cache():
    """Empty the in-process store of :class:`FeatureCache` and its counters.

    Folders given as ``memory=`` are left alone; delete them to clear them.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import FeatureExtractor
    >>> from dsolo_sk.model_selection import (FeatureCache,
    ...     clear_feature_cache, feature_cache_info)
    >>> class Flat:  # stands in for CLIP
    ...     def compute_logits(self, image, classes):
    ...         return np.zeros((len(classes), 4, 4), np.float32)
    >>> cache = FeatureCache(FeatureExtractor(
    ...     logits=Flat(), affinity=False, classes=["a", "b"], progress=False))
    >>> _ = cache.transform([np.zeros((32, 32, 3), np.uint8)])
    >>> feature_cache_info()["entries"] > 0
    True
    >>> clear_feature_cache()
    >>> feature_cache_info()
    {'hits': 0, 'misses': 0, 'entries': 0, 'bytes': 0}
    """
    with _LOCK:
        _STORE.clear()
        _STATS.update(hits=0, misses=0, bytes=0)


def feature_cache_info():
    """Counters of :class:`FeatureCache` in this process.

    Returns
    -------
    info : dict
        ``hits`` and ``misses`` (samples served from a cache, in memory or
        on disk, and samples computed) since the last
        :func:`clear_feature_cache`, ``entries`` and ``bytes`` of the
        in-process store.

    Examples
    --------
    >>> from dsolo_sk.model_selection import (clear_feature_cache,
    ...                                       feature_cache_info)
    >>> clear_feature_cache()
    >>> feature_cache_info()
    {'hits': 0, 'misses': 0, 'entries': 0, 'bytes': 0}
    """
    with _LOCK:
        return {"hits": _STATS["hits"], "misses": _STATS["misses"],
                "entries": len(_STORE), "bytes": _STATS["bytes"]}


def _nbytes(value):
    n = getattr(value, "nbytes", None)
    return int(n) if n is not None else 0


def _sample_token(sample):
    """What identifies one input sample: its pixels, or a file's identity."""
    if isinstance(sample, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(sample))
        try:
            st = os.stat(path)
        except OSError:
            # let the transformer raise its own message about the path
            return ("path", path)
        return ("path", path, st.st_mtime_ns, st.st_size)
    if type(sample).__module__.startswith("PIL"):
        return ("pil", sample.mode, np.asarray(sample))
    if isinstance(sample, (xr.Dataset, xr.DataArray)):
        # joblib.hash of xarray objects varies with their internal caches
        if isinstance(sample, xr.DataArray):
            sample = sample.to_dataset(name=sample.name or "__data__")
        return ("xarray", sorted(sample.attrs.items()), [
            (str(k), v.dims, v.values, sorted(v.attrs.items()))
            for k, v in sorted(sample.variables.items(), key=lambda kv:
                               str(kv[0]))])
    return sample


def _param_token(value, skip=()):
    """A hashable description of a parameter value, estimators by params.

    Values that cannot be pickled (classes defined in a function, for
    example) are described by their type and attributes.
    """
    kind = (type(value).__module__, type(value).__qualname__)
    if isinstance(value, BaseEstimator):
        return ("estimator", kind, tuple(
            (k, _param_token(v)) for k, v in sorted(
                value.get_params(deep=False).items()) if k not in skip))
    try:
        return ("value", joblib.hash(value))
    except Exception:  # noqa: BLE001 - unpicklable values
        attrs = getattr(value, "__dict__", None)
        if attrs is None:
            return ("object", kind, repr(value))
        return ("object", kind, tuple(
            (k, _param_token(v)) for k, v in sorted(attrs.items())))


def _memory_dir(memory):
    """The entry folder of `memory`, checked writable (once per process)."""
    if memory is None:
        return None
    if isinstance(memory, joblib.Memory):
        location = memory.location
        if location is None:
            return None
        memory = location
    if not isinstance(memory, (str, os.PathLike)):
        raise TypeError(
            "memory must be None (an in-process store), a folder path or a "
            f"joblib.Memory, got {memory!r} of type {type(memory).__name__}."
        )
    folder = os.path.join(_io.as_path(memory, "memory"), _SUBDIR)
    if folder not in _CHECKED_FOLDERS:
        _io.check_output_folder(folder, "memory")
        _CHECKED_FOLDERS.add(folder)
    return folder


# -- entries on disk: .npz without pickle, keyed and checksummed -------------
def _plain_array(values):
    """`values` as an array .npz stores without pickle, or None."""
    arr = np.asarray(values)
    if arr.dtype.hasobject:
        flat = arr.ravel()
        if not all(isinstance(v, str) for v in flat):
            return None, False
        return arr.astype(str), True
    if arr.dtype.kind not in "biufcUSmM":
        return None, False
    return arr, False


def _jsonable(obj):
    try:
        return json.loads(json.dumps(obj, allow_nan=False)) == obj
    except (TypeError, ValueError):
        return False


def _encode_entry(value, key):
    """(manifest, arrays) describing `value`, or None if it cannot be
    stored without pickle (only xarray objects and plain arrays can)."""
    if isinstance(value, xr.DataArray):
        kind, name = "dataarray", value.name
        if name is not None and not isinstance(name, str):
            return None
        ds = value.to_dataset(name="__dataarray__")
    elif isinstance(value, xr.Dataset):
        kind, name, ds = "dataset", None, value
    elif isinstance(value, np.ndarray):
        arr, obj = _plain_array(value)
        if arr is None:
            return None
        return ({"format": _ENTRY_FORMAT, "key": key, "kind": "ndarray",
                 "object": obj}, {"a0": arr})
    else:
        return None
    if not _jsonable(ds.attrs):
        return None
    variables, arrays = [], {}
    for i, (vname, var) in enumerate(ds.variables.items()):
        if not isinstance(vname, str) or not all(
                isinstance(d, str) for d in var.dims) or not _jsonable(
                    var.attrs):
            return None
        arr, obj = _plain_array(var.values)
        if arr is None:
            return None
        arrays[f"a{i}"] = arr
        variables.append({"name": vname, "dims": list(var.dims),
                          "coord": vname in ds.coords, "object": obj,
                          "attrs": var.attrs, "array": f"a{i}"})
    return ({"format": _ENTRY_FORMAT, "key": key, "kind": kind,
             "name": name, "attrs": ds.attrs, "variables": variables},
            arrays)


def _entry_checksum(manifest, arrays):
    h = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _decode_entry(manifest, arrays):
    def array(spec):
        arr = arrays[spec["array"]]
        return arr.astype(object) if spec["object"] else arr

    if manifest["kind"] == "ndarray":
        arr = arrays["a0"]
        return arr.astype(object) if manifest["object"] else arr
    coords, data_vars = {}, {}
    for spec in manifest["variables"]:
        var = xr.Variable(tuple(spec["dims"]), array(spec), spec["attrs"])
        (coords if spec["coord"] else data_vars)[spec["name"]] = var
    ds = xr.Dataset(data_vars, coords=coords, attrs=manifest["attrs"])
    if manifest["kind"] == "dataarray":
        da = ds["__dataarray__"]
        da.name = manifest["name"]
        return da
    return ds


def _read_entry(path, key):
    """The value stored in the entry file `path`; any defect raises
    UnreadableFileError (never executes anything: no pickle)."""
    expected = "a FeatureCache entry (.npz)"
    arrays = _io.read_npz(path, expected)
    with _io.reading(path, expected, hint="it is computed again"):
        blob = arrays.pop("__manifest__", None)
        if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
            raise ValueError("no manifest")
        manifest = json.loads(blob.tobytes().decode("utf-8"))
        if not isinstance(manifest, dict) or manifest.get(
                "format") != _ENTRY_FORMAT:
            raise ValueError("unknown format")
        checksum = manifest.pop("checksum", None)
        if checksum != _entry_checksum(manifest, arrays):
            raise ValueError("checksum mismatch")
        if manifest.get("key") != key:
            raise ValueError("the entry belongs to another key")
        return _decode_entry(manifest, arrays)


def _write_entry(path, key, value):
    """Store `value`; return False if its type cannot be stored safely."""
    encoded = _encode_entry(value, key)
    if encoded is None:
        return False
    manifest, arrays = encoded
    manifest["checksum"] = _entry_checksum(manifest, arrays)
    arrays["__manifest__"] = np.frombuffer(
        json.dumps(manifest, sort_keys=True).encode("utf-8"), np.uint8)
    _io.write_npz(path, arrays)
    return True


class FeatureCache(FitFreeMixin, TransformerMixin, BaseEstimator):
    """Memoise a fit-free transformer's output, one entry per sample.

    Wraps a feature extractor such as
    :class:`~dsolo_sk.features.FeatureExtractor` so that a sample seen
    before (same pixels, or same file with the same modification time, and
    the same transformer parameters) is not computed again. As the first
    step of a :class:`~sklearn.pipeline.Pipeline`, it lets
    :class:`~sklearn.model_selection.GridSearchCV` try any number of
    segmenter parameters for the cost of one extraction per image: the
    cache lives outside the estimator (in this process or in a folder), so
    the clones that the search makes share it.

    Parameters
    ----------
    transformer : estimator, default=None
        A fit-free transformer mapping a list of samples to a list of
        outputs, one per sample (its ``requires_fit`` tag must be False).
        ``None`` means :class:`~dsolo_sk.features.FeatureExtractor` ``()``.
    memory : None, str, path or joblib.Memory, default=None
        Where the outputs are kept besides this process. Every output is
        kept in an in-process store shared by every ``FeatureCache`` and
        bounded by `max_bytes` (least recently used entries go first).
        With a folder (or a :class:`joblib.Memory` with a location), they
        are also written as files in its ``dsolo_sk_features/`` subfolder,
        shared by processes and kept across sessions: use it with
        ``GridSearchCV(n_jobs=...)``. The folder is checked for
        writability before anything is computed.
    max_bytes : int, default=2 GiB
        Bound of the in-process store.

    Notes
    -----
    The key of a sample hashes the transformer's type and parameters
    (except ``progress``) with :func:`joblib.hash`, and the sample itself:
    an array's or PIL image's pixels, or a path with the file's size and
    modification time. Outputs from the in-process store are shallow copies
    of the stored Datasets: treat their arrays as read-only.

    Files on disk cannot carry code: each entry is an uncompressed
    ``<key>.npz`` of plain arrays (read with ``allow_pickle=False``, its
    headers checked against its size) and a JSON manifest holding the key,
    the layout of the Dataset and a SHA-256 checksum of the content. An
    entry that cannot be read, fails its checksum or belongs to another
    key is reported with a :class:`UserWarning` and computed again; files
    of other kinds in the folder (the pickled ``.pkl`` entries of earlier
    versions included) are never opened. Only xarray objects and numeric
    or string arrays are written to disk; other outputs stay in the
    in-process store, with a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import FeatureExtractor
    >>> from dsolo_sk.model_selection import (FeatureCache,
    ...     clear_feature_cache, feature_cache_info)
    >>> class Halves:  # stands in for CLIP
    ...     def compute_logits(self, image, classes):
    ...         x = np.linspace(-1, 1, 4, dtype=np.float32)
    ...         return np.stack([np.tile(x, (4, 1)), np.tile(-x, (4, 1))])
    >>> cache = FeatureCache(FeatureExtractor(
    ...     logits=Halves(), affinity=False, classes=["left", "right"],
    ...     progress=False))
    >>> images = [np.zeros((32, 32, 3), np.uint8),
    ...           np.full((32, 48, 3), 255, np.uint8)]
    >>> clear_feature_cache()
    >>> first = cache.transform(images)
    >>> again = cache.transform(images[::-1])
    >>> feature_cache_info()["hits"], feature_cache_info()["misses"]
    (2, 2)
    >>> again[0]["image"].shape
    (32, 48, 3)
    """

    def __init__(self, transformer=None, memory=None,
                 max_bytes=DEFAULT_MAX_BYTES):
        self.transformer = transformer
        self.memory = memory
        self.max_bytes = max_bytes

    def _transformer(self):
        est = self.transformer
        if est is None:
            from .features import FeatureExtractor

            est = FeatureExtractor()
        if not callable(getattr(est, "transform", None)):
            raise TypeError(
                "transformer must be an estimator with a transform() method "
                "(for example dsolo_sk.features.FeatureExtractor(...)), got "
                f"{est!r}."
            )
        if get_tags(est).requires_fit:
            raise TypeError(
                f"FeatureCache memoises fit-free transformers, and "
                f"{type(est).__name__} requires fitting (its requires_fit "
                "tag is True); cache it with Pipeline(memory=...) instead."
            )
        return est

    def _check_params(self):
        _memory_dir(self.memory)
        if (isinstance(self.max_bytes, bool)
                or not isinstance(self.max_bytes, (int, np.integer))
                or self.max_bytes < 0):
            raise ValueError(
                f"max_bytes must be a non-negative integer, got "
                f"{self.max_bytes!r}."
            )

    def fit(self, X=None, y=None):
        """Validate the parameters; there is nothing to learn.

        Parameters
        ----------
        X : list of samples, optional
            Checked to be a list when given.
        y : ignored

        Returns
        -------
        self : FeatureCache
        """
        self._check_params()
        est = self._transformer()
        if X is not None:
            X = check_sample_list(X)
        if callable(getattr(est, "fit", None)):
            # fit-free transformers validate their parameters (and X) in fit
            clone(est).fit(X)
        return self

    def _keys(self, est, X):
        prefix = joblib.hash(_param_token(est, skip=("progress",)))
        return [joblib.hash((prefix, _sample_token(x))) for x in X]

    def _lookup(self, key, folder):
        with _LOCK:
            if key in _STORE:
                _STORE.move_to_end(key)
                return True, _STORE[key][0]
        if folder is None:
            return False, None
        path = os.path.join(folder, key + _ENTRY_SUFFIX)
        if not os.path.lexists(path):
            return False, None
        try:
            value = _read_entry(path, key)
        except (FileNotFoundError, _io.UnreadableFileError) as exc:
            warnings.warn(
                f"FeatureCache: ignoring the unusable entry {path!r} "
                f"({getattr(exc, 'reason', exc)}); computing it again.",
                UserWarning, stacklevel=4)
            return False, None
        self._remember(key, value)
        return True, value

    def _remember(self, key, value):
        """Keep `value` in the bounded in-process store."""
        size = _nbytes(value)
        with _LOCK:
            if key in _STORE:
                _STATS["bytes"] -= _STORE.pop(key)[1]
            _STORE[key] = (value, size)
            _STATS["bytes"] += size
            while _STATS["bytes"] > self.max_bytes and _STORE:
                _STATS["bytes"] -= _STORE.popitem(last=False)[1][1]

    def _store(self, key, value, folder):
        self._remember(key, value)
        if folder is None:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, key + _ENTRY_SUFFIX)
        try:
            # written then renamed: parallel workers never read a partial
            # file
            stored = _write_entry(path, key, value)
        except OSError as exc:
            warnings.warn(
                f"FeatureCache: could not write {path!r} ({exc}); the "
                "features are kept in this process only.", UserWarning,
                stacklevel=4)
            return
        kind = type(value).__qualname__
        if not stored and kind not in _WARNED_TYPES:
            _WARNED_TYPES.add(kind)
            warnings.warn(
                f"FeatureCache: outputs of type {kind} cannot be stored on "
                "disk without pickle (only xarray objects and numeric or "
                "string arrays can); they are kept in this process only.",
                UserWarning, stacklevel=4)

    def transform(self, X):
        """The transformer's output for every sample, from the cache if seen.

        Samples not in the cache go through the transformer in one call
        (in their order), then are stored.

        Parameters
        ----------
        X : list of samples
            Whatever the transformer takes, as a list (images for
            :class:`~dsolo_sk.features.FeatureExtractor`).

        Returns
        -------
        list
            One output per sample, in the order of `X`.
        """
        X = check_sample_list(X)
        self._check_params()
        est = self._transformer()
        folder = _memory_dir(self.memory)
        keys = self._keys(est, X)
        out = [None] * len(X)
        todo = {}  # key -> positions; a sample repeated in X is computed once
        for i, key in enumerate(keys):
            found, value = self._lookup(key, folder)
            if found:
                out[i] = value
            else:
                todo.setdefault(key, []).append(i)
        n_hits = len(X) - sum(len(v) for v in todo.values())
        if todo:
            first = [pos[0] for pos in todo.values()]
            values = est.transform([X[i] for i in first])
            if len(values) != len(first):
                raise ValueError(
                    f"{type(est).__name__}.transform returned {len(values)} "
                    f"outputs for {len(first)} samples; FeatureCache needs "
                    "one output per sample."
                )
            for (key, pos), value in zip(todo.items(), values):
                self._store(key, value, folder)
                for i in pos:
                    out[i] = value
        with _LOCK:
            _STATS["hits"] += n_hits
            _STATS["misses"] += len(todo)
        return [v.copy(deep=False) if hasattr(v, "copy") and isinstance(
            v, (xr.Dataset, xr.DataArray)) else v for v in out]




def make_segmentation_pipeline(segmenter=None, *, logits=None, affinity=None,
                               classes=None, memory=None, cache=True,
                               batch_size=1, progress=None):
    """A Pipeline from raw images: cached feature extraction, then a segmenter.

    Parameters
    ----------
    segmenter : estimator, default=None
        The final step; ``None`` means :class:`~dsolo_sk.DirectSegmenter`
        ``()``.
    logits, affinity : object, optional
        The extractors of :class:`~dsolo_sk.features.FeatureExtractor`
        (``None``: CLIP and Stable Diffusion attention).
    classes : sequence of str
        Class names (synonyms separated by ", ").
    memory : None, str, path or joblib.Memory, default=None
        Where :class:`FeatureCache` keeps the features (``None``: in this
        process).
    cache : bool, default=True
        Wrap the extractor in a :class:`FeatureCache`. ``False`` gives the
        bare extractor (and ``memory`` goes to the Pipeline, which caches
        only its fits).
    batch_size : int, default=1
        Images of the same size that the extractor runs together (see
        :class:`~dsolo_sk.features.FeatureExtractor`).
    progress : bool or None, default=None
        Progress bar of the extractor.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Steps ``"features"`` and ``"segment"``; search parameters are
        ``segment__discrepancy__tau``,
        ``features__transformer__logits__short_side``...

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk import DirectSegmenter, InterpolationUpsampler
    >>> from dsolo_sk.model_selection import make_segmentation_pipeline
    >>> class Halves:  # stands in for CLIP
    ...     def compute_logits(self, image, classes):
    ...         x = np.linspace(-1, 1, 4, dtype=np.float32)
    ...         return np.stack([np.tile(x, (4, 1)), np.tile(-x, (4, 1))])
    >>> pipe = make_segmentation_pipeline(
    ...     DirectSegmenter(mode="kl",
    ...                     upsampler=InterpolationUpsampler("nearest")),
    ...     logits=Halves(), affinity=False, classes=["left", "right"],
    ...     progress=False)
    >>> [name for name, _ in pipe.steps]
    ['features', 'segment']
    >>> labels = pipe.predict([np.zeros((32, 32, 3), np.uint8)])
    >>> labels[0][0, 0], labels[0][0, -1]
    (np.int64(1), np.int64(0))
    """
    from .features import FeatureExtractor
    from .segmenters import DirectSegmenter

    if segmenter is None:
        segmenter = DirectSegmenter()
    fe = FeatureExtractor(logits=logits, affinity=affinity, classes=classes,
                          batch_size=batch_size, progress=progress)
    if cache:
        return Pipeline([("features", FeatureCache(fe, memory=memory)),
                         ("segment", segmenter)])
    return Pipeline([("features", fe), ("segment", segmenter)],
                    memory=memory)


def _param_values(candidates, name):
    """Distinct values of parameter `name`, in order of first appearance."""
    values = []
    for cand in candidates:
        if name in cand and not any(_same(cand[name], u) for u in values):
            values.append(cand[name])
    return values


def _same(a, b):
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # arrays and the like
        return a is b


def cv_results_to_dataset(search, params=None):
    """The ``cv_results_`` of a grid search as a labelled Dataset.

    Parameters
    ----------
    search : fitted search estimator or dict
        A fitted :class:`~sklearn.model_selection.GridSearchCV` (or any
        search with ``cv_results_``), or its ``cv_results_`` dict.
    params : list of str, optional
        The parameters that become dimensions, in order; default: every
        ``param_*`` column in the order of the results.

    Returns
    -------
    results : xarray.Dataset
        One dimension per parameter, with the searched values as
        coordinates (the ``__`` of nested names become ``.``). Variables:
        every numeric column of the results (``mean_test_score``,
        ``std_test_score``, ``rank_test_score``, ``mean_fit_time``,
        ``split0_test_score``...). Combinations that were not tried are
        NaN; candidates that lack one of `params` are left out, so a grid
        given as a list of dicts (one per mode, say) gives one Dataset per
        sub-grid: ``cv_results_to_dataset(search, ["discrepancy__tau"])``.

    Raises
    ------
    ValueError
        If two candidates share the same values of `params`, for example
        when a searched parameter is left out of `params`.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV, KFold
    >>> from dsolo_sk import TransportVelocity, DirectSegmenter
    >>> from dsolo_sk.datasets import make_scenes
    >>> from dsolo_sk.model_selection import cv_results_to_dataset
    >>> X, y = make_scenes(n_scenes=4, n_classes=5, image_size=64,
    ...                    random_state=0)
    >>> search = GridSearchCV(
    ...     DirectSegmenter(discrepancy=TransportVelocity()),
    ...     {"discrepancy__tau": [0.1, 0.3, 1.0],
    ...      "discrepancy__score": ["state", "steps"]},
    ...     cv=KFold(2), error_score="raise").fit(X, y)
    >>> res = cv_results_to_dataset(search)
    >>> dict(res["mean_test_score"].sizes)
    {'discrepancy.score': 2, 'discrepancy.tau': 3}
    >>> res["discrepancy.tau"].values
    array([0.1, 0.3, 1. ])
    """
    results = getattr(search, "cv_results_", search)
    if not isinstance(results, dict) or "params" not in results:
        raise TypeError(
            "search must be a fitted search estimator (GridSearchCV...) or "
            f"its cv_results_ dict, got {type(search).__name__}."
        )
    all_params = [k[len("param_"):] for k in results if k.startswith(
        "param_")]
    if params is None:
        params = all_params
    else:
        params = list(params)
        unknown = [p for p in params if p not in all_params]
        if unknown:
            raise ValueError(
                f"params {unknown} were not searched; searched parameters: "
                f"{all_params}."
            )
    if not params:
        raise ValueError("the search has no parameter to lay out.")
    axes = [_param_values(results["params"], p) for p in params]
    shape = tuple(len(a) for a in axes)
    n = len(results["params"])
    index = {}
    for i, cand in enumerate(results["params"]):
        pos = []
        for p, values in zip(params, axes):
            if p not in cand:
                pos = None
                break
            pos.append(next(k for k, u in enumerate(values)
                            if _same(cand[p], u)))
        if pos is None:
            continue
        pos = tuple(pos)
        if pos in index:
            raise ValueError(
                f"candidates {index[pos]} and {i} share the values "
                f"{dict(zip(params, (cand[p] for p in params)))}; lay out "
                f"every searched parameter (searched: {all_params})."
            )
        index[pos] = i
    dims = [p.replace("__", ".") for p in params]
    data_vars = {}
    for name, col in results.items():
        if name == "params" or name.startswith("param_"):
            continue
        arr = np.ma.getdata(np.asarray(col))
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.number):
            continue
        grid = np.full(shape, np.nan)
        for pos, i in index.items():
            grid[pos] = arr[i]
        data_vars[name] = (dims, grid)
    coords = {}
    for dim, values in zip(dims, axes):
        try:
            coords[dim] = np.asarray(values)
            if coords[dim].ndim != 1:
                raise ValueError
        except (ValueError, TypeError):
            coords[dim] = np.array([repr(v) for v in values], dtype=object)
    if any(len(v) == 0 for v in axes):  # pragma: no cover - empty search
        raise ValueError("a searched parameter has no value.")
    return xr.Dataset(data_vars, coords=coords)
