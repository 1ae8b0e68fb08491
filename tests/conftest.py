"""Shared fixtures: tiny random models saved in the real on-disk formats.

No machine running these tests can download weights, so the loading code
is exercised on tiny random-initialised models written the way the real
ones are distributed (an open_clip model config plus a safetensors
checkpoint, open_clip's ``local-dir`` layout, and diffusers
``save_pretrained`` folders) and loaded back through the public code path.
All are session-scoped: each is built once per test run.
"""

import os

# No test may reach the network: fail fast (instead of retrying for a
# minute) if one tries. Set before huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32,
                   "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                 "heads": 2, "layers": 1},
}
#: Few templates keep the tiny text tower fast; the ensembling logic is the
#: same as with the 80 ImageNet templates.
TINY_TEMPLATES = ("a photo of a {}.", "a picture of the {}.", "{}")


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory):
    """A tiny open_clip ViT saved as (config JSON, safetensors checkpoint)
    and as an open_clip ``local-dir`` folder holding the same weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tiny_clip")
    config = root / "dsolo-tiny-vit.json"
    config.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    model = open_clip.create_model("dsolo-tiny-vit")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    checkpoint = root / "tiny_clip.safetensors"
    save_file(state, str(checkpoint))
    local_dir = root / "local_dir"
    local_dir.mkdir()
    (local_dir / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_CLIP_CFG,
         "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                            "std": list(open_clip.OPENAI_DATASET_STD)}}))
    save_file(state, str(local_dir / "open_clip_model.safetensors"))
    return {"config": str(config), "checkpoint": str(checkpoint),
            "local_dir": str(local_dir), "name": "dsolo-tiny-vit"}


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_files):
    """A CLIPFeatures on the tiny checkpoint, small enough for fast tests."""
    from dsolo_sk.features import CLIPFeatures

    return CLIPFeatures(tiny_clip_files["config"], tiny_clip_files["checkpoint"],
                        short_side=64, templates=TINY_TEMPLATES, device="cpu")


def _tiny_tokenizer(folder):
    """A CLIPTokenizer with a minimal vocabulary, saved in its real format."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    letters = "abcdefghijklmnopqrstuvwxyz"
    for ch in letters:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                        pad_token="!", model_max_length=16)
    tok.save_pretrained(str(folder))
    return len(vocab)


def build_tiny_sd(folder, *, text_encoder=True, seed=0):
    """Write a tiny SD2-like pipeline folder: unet/, vae/ and optionally
    text_encoder/ and tokenizer/, each with ``save_pretrained``.

    The UNet mirrors SD2's layout: four levels, a plain first up block then
    three cross-attention up blocks (so the "first two attention-bearing up
    blocks" are ``up_blocks[1]`` and ``up_blocks[2]``), linear projections
    in the transformers. The VAE downsamples by 2, so images are processed
    at multiples of 2 * 8 = 16 pixels.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16, 16, 16), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16, attention_head_dim=(2, 4, 4, 4),
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    )
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    if text_encoder:
        from transformers import CLIPTextConfig, CLIPTextModel

        vocab_size = _tiny_tokenizer(folder / "tokenizer")
        enc = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
            num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
            pad_token_id=2))
        enc.save_pretrained(str(folder / "text_encoder"))
    return folder


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """Folder of a tiny SD2-like pipeline with its text encoder."""
    return str(build_tiny_sd(tmp_path_factory.mktemp("tiny_sd")))


@pytest.fixture(scope="session")
def tiny_sd_dir_no_text(tmp_path_factory):
    """The same pipeline folder without text_encoder/ and tokenizer/."""
    return str(build_tiny_sd(tmp_path_factory.mktemp("tiny_sd_no_text"),
                             text_encoder=False))


@pytest.fixture(scope="session")
def photos():
    """Real photos bundled with scikit-image: astronaut, coffee, chelsea."""
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea()]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def write_hub_cache(cache, repo, source, *, commit, ref="main", tree=False,
                    pipeline=False):
    """Write `source` (a folder) into the Hugging Face cache folder `cache`
    as `repo`'s snapshot `commit`, in the layout huggingface_hub writes:
    ``models--org--name/blobs/<etag>`` (the SHA-256 of the content for
    weights, git's blob SHA-1 for the other files, as the Hub's etags),
    ``snapshots/<commit>/<path>`` relative symlinks to the blobs,
    ``refs/<ref>`` holding the commit, and with `tree` the Hub's file list
    ``trees/<commit>.json``. With `pipeline`, a ``model_index.json`` and
    ``scheduler/scheduler_config.json`` are added, as a diffusers pipeline
    on the Hub has them. Returns the snapshot folder.
    """
    import hashlib
    from pathlib import Path

    source, repo_dir = Path(source), Path(cache) / (
        "models--" + repo.replace("/", "--"))
    files = {p.relative_to(source).as_posix(): p.read_bytes()
             for p in sorted(source.rglob("*")) if p.is_file()}
    if pipeline:
        files.setdefault("model_index.json", json.dumps(
            {"_class_name": "StableDiffusionPipeline"}).encode())
        files.setdefault("scheduler/scheduler_config.json", json.dumps(
            {"_class_name": "DDIMScheduler"}).encode())
    snapshot = repo_dir / "snapshots" / commit
    entries = {}
    for name, data in files.items():
        lfs = name.endswith((".safetensors", ".bin"))
        if lfs:
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()
        blob = repo_dir / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        entries[name] = {"size": len(data), "blob_id": etag}
        if lfs:
            entries[name].update(lfs_sha256=etag, lfs_size=len(data))
    if ref is not None:
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    if tree:
        (repo_dir / "trees").mkdir(exist_ok=True)
        (repo_dir / "trees" / f"{commit}.json").write_text(json.dumps(
            {"format_version": 1, "files": entries}))
    return snapshot
