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
"""

import contextlib
import logging
import os
import threading
import time

__all__ = ["offline", "cached_file", "unreachable_reason", "cache_folder",
           "quiet_hub_logs"]

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
