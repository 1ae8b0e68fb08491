"""Process-level cache of loaded models, shared by every estimator.

scikit-learn's :func:`~sklearn.base.clone` deep-copies parameters and
rebuilds estimators from them, and :class:`~sklearn.model_selection.GridSearchCV`
clones once per candidate and fold. Weights therefore never live on an
estimator: extractors hold names and paths only, and ask this module for the
loaded model under a key ``(kind, model, weights, device, dtype, ...)``. The
first request loads it; every later request, from any clone, gets the same
object. :func:`load_count` tells how many times a key was loaded, which is
how the tests check that clones share weights.

Small derived results (text embeddings of class names) are kept in a bounded
memo, :func:`memo`, keyed the same way.
"""

import threading
from collections import Counter, OrderedDict

__all__ = [
    "get_model",
    "load_count",
    "clear_model_cache",
    "memo",
    "resolve_device",
    "resolve_dtype",
    "WeightsUnavailableError",
    "WeightsNotFoundError",
    "WeightsGatedError",
    "HubUnreachableError",
    "WeightsNotCachedError",
    "MissingPackageError",
]

_LOCK = threading.RLock()
_MODELS = {}
_LOAD_COUNTS = Counter()
_MEMO = OrderedDict()
_MEMO_MAXSIZE = 20_000


class WeightsUnavailableError(OSError):
    """Pretrained weights could be neither downloaded nor found locally.

    The message names the weights and says how to pass a local copy.

    Examples
    --------
    It is an :class:`OSError`, so one ``except OSError`` also catches a
    missing local file:

    >>> from dsolo_sk.features import WeightsUnavailableError
    >>> try:
    ...     raise WeightsUnavailableError("no weights for 'ViT-B-16'")
    ... except OSError as exc:
    ...     print(type(exc).__name__, exc)
    WeightsUnavailableError no weights for 'ViT-B-16'

    Four subclasses say why, each message naming its own fix:
    :class:`WeightsNotFoundError` (the repository, revision or file is not
    on the Hub), :class:`WeightsGatedError` (the Hub needs a token),
    :class:`HubUnreachableError` (no network) and
    :class:`WeightsNotCachedError` (``HF_HUB_OFFLINE`` is set and the
    weights are not in the cache).
    """


class WeightsNotFoundError(WeightsUnavailableError):
    """The repository, revision or file is not on the Hub.

    Raised for huggingface_hub's ``RepositoryNotFoundError``,
    ``RevisionNotFoundError`` and ``EntryNotFoundError``: a repository
    withdrawn (as Stability AI's Stable Diffusion 2 repositories were, in
    November 2025), renamed or mistyped, a revision that is not one of its
    commits, branches or tags, or a repository without the weights file.
    The message names the mirror where one is known, and the local-folder
    fix.

    Examples
    --------
    >>> from dsolo_sk.features import (WeightsNotFoundError,
    ...                                WeightsUnavailableError)
    >>> issubclass(WeightsNotFoundError, WeightsUnavailableError)
    True
    """


class WeightsGatedError(WeightsUnavailableError):
    """The repository is gated or private: the Hub needs a token.

    Raised for huggingface_hub's ``GatedRepoError`` and for HTTP 401 / 403
    answers. The fix: accept the model's conditions on its Hub page, then
    set ``HF_TOKEN`` (or run ``hf auth login``).

    Examples
    --------
    >>> from dsolo_sk.features import WeightsGatedError
    >>> issubclass(WeightsGatedError, OSError)
    True
    """


class HubUnreachableError(WeightsUnavailableError):
    """The weights are not cached and the Hub cannot be reached.

    Raised when the connection fails (refused, timed out, no DNS, a proxy
    error, the Hub answering 5xx). The fix: fill a cache on a machine with
    network access (``dsolo-sk weights download``), copy it here and run
    with ``HF_HUB_CACHE`` pointing at it and ``HF_HUB_OFFLINE=1``.

    Examples
    --------
    >>> from dsolo_sk.features import HubUnreachableError
    >>> issubclass(HubUnreachableError, OSError)
    True
    """


class WeightsNotCachedError(WeightsUnavailableError):
    """``HF_HUB_OFFLINE`` is set and the weights are not in the cache.

    Nothing is downloaded in offline mode; the message names the cache
    folder searched and the files missing from it. The fix: a local folder
    (or checkpoint) holding the weights, or a filled cache copied here
    (``dsolo-sk weights check`` says what a cache holds).

    Examples
    --------
    >>> from dsolo_sk.features import WeightsNotCachedError
    >>> issubclass(WeightsNotCachedError, OSError)
    True
    """


class MissingPackageError(ModuleNotFoundError):
    """A Python package that loading a model imports is not installed.

    Raised by :func:`~dsolo_sk.features.require_weights` (and so by a
    segmenter about to run its extractors) before any model is loaded:
    the message lists every package missing, with the ``pip install``
    command, and every weights file missing as well, so that one error
    says all there is to fix. A :class:`ModuleNotFoundError`, so
    ``except ImportError`` catches it; ``name`` is the first package
    missing.

    Examples
    --------
    >>> from dsolo_sk.features import MissingPackageError
    >>> err = MissingPackageError("transformers is not installed",
    ...                           name="transformers")
    >>> isinstance(err, ImportError), err.name
    (True, 'transformers')
    """


def get_model(key, loader):
    """Return the model cached under `key`, calling ``loader()`` once.

    Parameters
    ----------
    key : tuple
        Hashable description of the weights: kind, model, weights, device
        and dtype.
    loader : callable
        Called with no argument when `key` is not cached yet; its return
        value is cached. An exception leaves the cache unchanged.

    Returns
    -------
    object
        The cached value.

    Examples
    --------
    >>> from dsolo_sk.features._cache import get_model, load_count
    >>> key = ("doctest", "toy")
    >>> get_model(key, lambda: [1, 2]) is get_model(key, lambda: [3])
    True
    >>> load_count(key)
    1
    """
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = loader()
            _LOAD_COUNTS[key] += 1
        return _MODELS[key]


def load_count(key=None):
    """Number of loads of `key` since the process started (all keys if None).

    Clearing the cache does not reset the counts.
    """
    with _LOCK:
        if key is None:
            return sum(_LOAD_COUNTS.values())
        return _LOAD_COUNTS[key]


def clear_model_cache():
    """Drop every cached model and memoised result to free memory.

    The next use of a model loads it again (and counts as a new load).

    Examples
    --------
    >>> from dsolo_sk.features import clear_model_cache
    >>> from dsolo_sk.features._cache import get_model, load_count
    >>> key = ("doctest", "clear_model_cache")
    >>> before = load_count(key)
    >>> model = get_model(key, lambda: [1, 2])
    >>> get_model(key, lambda: [3]) is model
    True
    >>> clear_model_cache()
    >>> get_model(key, lambda: [3])
    [3]
    >>> load_count(key) - before
    2
    """
    with _LOCK:
        _MODELS.clear()
        _MEMO.clear()


def memo(key, compute):
    """Return ``compute()`` memoised under `key` in a bounded LRU store."""
    with _LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    value = compute()
    with _LOCK:
        _MEMO[key] = value
        while len(_MEMO) > _MEMO_MAXSIZE:
            _MEMO.popitem(last=False)
    return value


def memo_get(key, default=None):
    """Look up `key` in the memo without computing anything."""
    with _LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
        return default


def memo_set(key, value):
    """Store `value` under `key` in the memo."""
    with _LOCK:
        _MEMO[key] = value
        while len(_MEMO) > _MEMO_MAXSIZE:
            _MEMO.popitem(last=False)


_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device, *, name="device"):
    """Check a device and turn ``"auto"`` into the best one available.

    ``"auto"`` (or None) prefers CUDA, then Apple's MPS, then the CPU.
    Other values are checked against the machine, so that a wrong device
    fails here, before any model loads, instead of deep inside torch.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    name : str, default="device"
        How the caller calls the argument (``"--device"`` on the command
        line), for the error messages.

    Returns
    -------
    str
        The device as torch writes it: ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``.

    Raises
    ------
    ValueError
        For an unknown device (``"gpu"``), or one this machine does not
        have (``"cuda"`` without a visible GPU, ``"cuda:3"`` with three).
    TypeError
        For anything that is neither a string nor a :class:`torch.device`.

    Examples
    --------
    >>> from dsolo_sk.features._cache import resolve_device
    >>> resolve_device("cpu")
    'cpu'
    >>> resolve_device("auto") in ("cuda", "mps", "cpu")
    True
    >>> resolve_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'.
    """
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if has_mps else "cpu"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"{name} must be a string such as 'auto', 'cpu' or 'cuda', got "
            f"{device!r}."
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in _DEVICE_TYPES:
        raise ValueError(
            f"{name} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got "
            f"{str(device)!r}."
        )
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(
                f"{name}={str(device)!r} but CUDA is not available here (no "
                "visible GPU, or a CPU-only build of torch); use 'auto' or "
                "'cpu'."
            )
        if dev.index is not None and dev.index >= n:
            raise ValueError(
                f"{name}={str(device)!r} but this machine has {n} CUDA "
                f"device(s), 'cuda:0' to 'cuda:{n - 1}'."
            )
    if dev.type == "mps" and not has_mps:
        raise ValueError(
            f"{name}={str(device)!r} but Apple's MPS is not available here; "
            "use 'auto' or 'cpu'."
        )
    return str(dev)


_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16",
           "fp16": "float16", "half": "float16", "bfloat16": "bfloat16",
           "bf16": "bfloat16"}


def resolve_dtype(dtype, device, *, name="dtype"):
    """Turn ``"auto"`` into float16 on CUDA and float32 elsewhere.

    Returns the canonical name (``"float32"``, ``"float16"`` or
    ``"bfloat16"``); a :class:`torch.dtype` is accepted too.

    Examples
    --------
    >>> from dsolo_sk.features._cache import resolve_dtype
    >>> resolve_dtype("auto", "cuda"), resolve_dtype("auto", "cpu")
    ('float16', 'float32')
    >>> resolve_dtype("fp16", "cpu")
    'float16'
    """
    if dtype is None or dtype == "auto":
        return "float16" if str(device).startswith("cuda") else "float32"
    dname = str(dtype).replace("torch.", "")
    if dname not in _DTYPES:
        raise ValueError(
            f"{name} must be 'auto', 'float32', 'float16' or 'bfloat16', got "
            f"{dtype!r}."
        )
    return _DTYPES[dname]


def check_device_dtype(device, dtype, *, names=("device", "dtype")):
    """Validate and resolve a (device, dtype) pair of parameters.

    Used by the extractors' parameter validation and by the command line,
    before any model loads; see :func:`resolve_device` and
    :func:`resolve_dtype`. `names` are the arguments' names in the
    messages.

    Returns
    -------
    (str, str)
        The device (``"cpu"``, ``"cuda"``, ...) and the dtype name.

    Examples
    --------
    >>> from dsolo_sk.features._cache import check_device_dtype
    >>> check_device_dtype("cpu", "auto")
    ('cpu', 'float32')
    >>> check_device_dtype("gpu", "auto", names=("--device", "--dtype"))
    Traceback (most recent call last):
    ...
    ValueError: --device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'.
    """
    dev = resolve_device(device, name=names[0])
    return dev, resolve_dtype(dtype, dev, name=names[1])
