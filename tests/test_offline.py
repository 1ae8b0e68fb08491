"""Weights that are not there: a fast, exact error, and a cache read offline.

The Hub is made unreachable for real: a subprocess runs with
``HF_ENDPOINT`` pointing at a closed port on localhost and without
``HF_HUB_OFFLINE`` (which the other tests set), so that huggingface_hub's
own retrying client is what the extractors face, as on a machine without
network access. The same subprocess also loads a tiny Stable Diffusion
written into a Hugging Face cache folder, in the hub's own layout, under
the default repository id at its pinned revision.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsolo_sk.features import (CLIPFeatures, DiffusionAttention,
                               WeightsUnavailableError)
from dsolo_sk.features import _cache, _hub

from conftest import write_hub_cache

ROOT = Path(__file__).resolve().parents[1]
SD_REPO = _hub.DEFAULT_SD

CHILD = r"""
import contextlib, io, json, sys, time
import numpy as np
from PIL import Image
from dsolo_sk import DirectSegmenter
from dsolo_sk.cli import main
from dsolo_sk.features import DiffusionAttention, WeightsUnavailableError

cache, empty_cache, work = sys.argv[1:4]
image = np.zeros((48, 64, 3), np.uint8)
out = {}
t0 = time.perf_counter()
# 1. SD weights in the cache, the Hub unreachable: read from the cache
sd = DiffusionAttention(resolution=32, cache_dir=cache, device="cpu")
out["cached_affinity_shape"] = list(sd.compute_affinity(image, (3, 4)).shape)
# 2. the README's first line with no weights anywhere
try:
    DirectSegmenter(mode="velocity").predict([image], ["cat", "dog"])
except WeightsUnavailableError as exc:
    out["clip_message"] = str(exc)
# 3. the default Stable Diffusion, not cached (text_embedding: not the
# model loaded in step 1, which the process-level model cache would reuse)
try:
    DiffusionAttention(cache_dir=empty_cache, text_embedding="zeros",
                       device="cpu").compute_affinity(image, (3, 4))
except WeightsUnavailableError as exc:
    out["sd_message"] = str(exc)
out["seconds"] = time.perf_counter() - t0
# 4. the command line
Image.fromarray(image).save(f"{work}/photo.png")
err = io.StringIO()
with contextlib.redirect_stderr(err):
    out["cli_status"] = main(["segment", f"{work}/photo.png", "--classes",
                              "cat,dog", "--out", f"{work}/seg",
                              "--affinity", "color", "--no-progress"])
out["cli_stderr"] = err.getvalue()
print(json.dumps(out))
"""


def _closed_port():
    """A localhost port with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def unreachable_hub_run(tiny_sd_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    cache = str(tmp / "cache")
    write_hub_cache(cache, SD_REPO, tiny_sd_dir, commit=_hub.PINNED[SD_REPO],
                    pipeline=True)
    (tmp / "empty").mkdir()
    (tmp / "work").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
               HF_HOME=str(tmp / "hf_home"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, cache, str(tmp / "empty"),
         str(tmp / "work")], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr"] = proc.stderr
    result["work"] = tmp / "work"
    return result


def test_missing_weights_fail_within_seconds_with_the_hub_unreachable(
        unreachable_hub_run):
    run = unreachable_hub_run
    assert run["cached_affinity_shape"] == [12, 12]
    # The only timing assertion of the suite, and a generous one: it
    # guards against huggingface_hub's retry loop (5 retries with back-off
    # per file: about 52 s for the missing CLIP weights and close to three
    # minutes for the cached Stable Diffusion before this fix), not against
    # a slow machine. The three steps take about a second on an idle one.
    assert run["seconds"] < 20, run
    assert "Retrying" not in run["stderr"]


def test_the_headline_error_names_both_models_and_each_fix(
        unreachable_hub_run):
    """One report for both models (issue 27), each with its local-copy
    fix, and the one command that fetches both."""
    msg = unreachable_hub_run["clip_message"]
    assert "'openai'" in msg and "cannot be reached" in msg
    assert f"Stable Diffusion {SD_REPO!r}" in msg
    # local OpenAI weights need the QuickGELU architecture (offline guide)
    assert ("CLIPFeatures('ViT-B-16-quickgelu', "
            "pretrained='/path/to/open_clip_model.safetensors')") in msg
    assert ("--model ViT-B-16-quickgelu --pretrained "
            "/path/to/open_clip_model.safetensors") in msg
    assert "hf download timm/vit_base_patch16_clip_224.openai" in msg
    assert "DiffusionAttention(model='/path/to/stable-diffusion-2-base')" in msg
    assert "dsolo-sk weights download`" in msg  # both defaults, no flags
    assert "HF_HUB_OFFLINE=1" in msg  # the no-network fix: a copied cache
    assert "huggingface-cli" not in msg


def test_the_diffusion_error_gives_the_python_and_the_command_line_fix(
        unreachable_hub_run):
    msg = unreachable_hub_run["sd_message"]
    assert SD_REPO in msg and "cannot be reached" in msg
    assert f"hf download {SD_REPO} --revision {_hub.PINNED[SD_REPO]}" in msg
    assert f"dsolo-sk weights download --sd {SD_REPO}" in msg
    assert "DiffusionAttention(model='/path/to/stable-diffusion-2-base')" in msg
    assert "--sd-model /path/to/stable-diffusion-2-base" in msg
    assert "huggingface-cli" not in msg


def test_the_command_line_error_names_its_flags_and_leaves_no_folder(
        unreachable_hub_run):
    run = unreachable_hub_run
    assert run["cli_status"] == 1
    err = run["cli_stderr"]
    assert err.startswith("dsolo-sk: error:")
    assert "--model ViT-B-16-quickgelu --pretrained" in err
    # --affinity color: CLIP only, so the fetch command names it alone
    assert "dsolo-sk weights download --clip ViT-B-16:openai`" in err
    assert "Stable Diffusion" not in err
    assert not (run["work"] / "seg").exists()


@pytest.mark.parametrize("make", [
    lambda cache: CLIPFeatures("ViT-B-16", "openai", cache_dir=cache,
                               device="cpu"),
    lambda cache: CLIPFeatures("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
                               cache_dir=cache, device="cpu"),
    lambda cache: DiffusionAttention(SD_REPO, cache_dir=cache, device="cpu"),
], ids=["clip-tag", "clip-hf-hub", "diffusion"])
def test_offline_mode_fails_before_loading(make, tmp_path):
    """HF_HUB_OFFLINE=1 (set for the whole suite) and an empty cache: the
    error says so, and no model load starts."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    loads = _cache.load_count()
    with pytest.raises(WeightsUnavailableError,
                       match="HF_HUB_OFFLINE is set") as info:
        est = make(str(tmp_path))
        if isinstance(est, CLIPFeatures):
            est.compute_logits(np.zeros((32, 32, 3), np.uint8), ["a", "b"])
        else:
            est.compute_affinity(np.zeros((32, 32, 3), np.uint8), (2, 2))
    assert _cache.load_count() == loads
    msg = str(info.value)
    assert str(tmp_path) in msg  # the cache folder that was searched
    assert "Python: " in msg and "command line: --" in msg
