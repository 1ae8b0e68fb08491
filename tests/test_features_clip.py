"""CLIPFeatures: loading through open_clip, dense logits, text ensembles."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone

from dsolo_sk.features import CLIPFeatures, WeightsUnavailableError
from dsolo_sk.features import _cache
from dsolo_sk.features.clip import (
    _resized_shape,
    dense_tokens,
    encode_text,
    interpolate_pos_embed,
    split_synonyms,
)

from conftest import TINY_TEMPLATES

CLASSES = ["cat", "dog, puppy", "sky"]


def _bundle(clip):
    return clip._load()


def test_logits_from_config_and_checkpoint(tiny_clip, photos):
    image = photos[1]  # coffee, 400 x 600
    logits = tiny_clip.compute_logits(image, CLASSES)
    assert logits.dtype == np.float32
    # short side 64 -> 64 x 96 pixels -> 8 x 12 patches of 8
    assert logits.shape == (3, 8, 12)
    assert tiny_clip.grid_shape(image.shape) == (8, 12)
    assert np.all(np.abs(logits) <= 1 + 1e-5)
    # not constant: different patches see different content
    assert logits.std(axis=(1, 2)).min() > 1e-4
    np.testing.assert_array_equal(logits, tiny_clip.compute_logits(image, CLASSES))


def test_local_dir_layout_gives_the_same_logits(tiny_clip, tiny_clip_files, photos):
    other = clone(tiny_clip).set_params(model=tiny_clip_files["local_dir"],
                                        pretrained=None)
    a = tiny_clip.compute_logits(photos[2], CLASSES)
    b = other.compute_logits(photos[2], CLASSES)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_checkpoint_weights_are_loaded(tiny_clip, tiny_clip_files, photos):
    # the same architecture with random weights gives other logits
    with pytest.warns(UserWarning, match="random initialisation"):
        rand = clone(tiny_clip).set_params(pretrained=None)
        torch.manual_seed(123)
        b = rand.compute_logits(photos[0], CLASSES)
    a = tiny_clip.compute_logits(photos[0], CLASSES)
    assert np.abs(a - b).max() > 1e-3


def test_class_token_matches_encode_image(tiny_clip):
    # At the native input size, token 0 of the dense path is the model's
    # own image embedding: ln_post + proj and the embeddings are wired as
    # open_clip wires them.
    model = _bundle(tiny_clip).model
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        tokens = dense_tokens(model.visual, x)
        ref = model.encode_image(x)
    assert tokens.shape == (2, 1 + 16, 16)
    torch.testing.assert_close(tokens[:, 0], ref, atol=1e-5, rtol=1e-5)


def test_truncated_text_encoding_is_exact(tiny_clip):
    model = _bundle(tiny_clip).model
    tokens = _bundle(tiny_clip).tokenizer(
        ["a", "a photo of a very small dog on a sofa.", "sky"])
    assert tokens.shape == (3, 77)
    with torch.inference_mode():
        torch.testing.assert_close(encode_text(model, tokens),
                                   model.encode_text(tokens),
                                   atol=1e-5, rtol=1e-5)


def test_pos_embed_interpolation():
    pos = torch.randn(1 + 4 * 4, 8)
    assert interpolate_pos_embed(pos, (4, 4), (4, 4)) is pos
    new = interpolate_pos_embed(pos, (4, 4), (6, 10))
    assert new.shape == (1 + 60, 8)
    torch.testing.assert_close(new[0], pos[0])
    # a constant grid stays constant
    const = torch.cat([pos[:1], torch.ones(16, 8)])
    torch.testing.assert_close(interpolate_pos_embed(const, (4, 4), (7, 3))[1:],
                               torch.ones(21, 8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw, expected", [
    ((400, 600), (336, 512)),    # 504 -> nearest multiple of 16
    ((600, 400), (512, 336)),
    ((100, 5000), (48, 2048)),   # long side capped at 2048
    ((10, 10), (336, 336)),
])
def test_resized_shape(hw, expected):
    assert _resized_shape(*hw, 336, 2048, 16) == expected


def test_text_embeddings_are_template_ensembles(tiny_clip):
    bundle = _bundle(tiny_clip)
    emb, owner = tiny_clip.text_embeddings(["cat", "dog, puppy"])
    assert emb.shape == (3, 16) and owner.tolist() == [0, 1, 1]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    tokens = bundle.tokenizer([t.format("puppy") for t in TINY_TEMPLATES])
    with torch.inference_mode():
        e = F.normalize(bundle.model.encode_text(tokens), dim=-1).mean(0)
    np.testing.assert_allclose(emb[2], F.normalize(e, dim=0).numpy(), atol=1e-5)


def test_synonyms_take_the_max(tiny_clip, photos):
    both = tiny_clip.compute_logits(photos[0], ["dog, puppy", "sky"])[0]
    dog = tiny_clip.compute_logits(photos[0], ["dog", "sky"])[0]
    puppy = tiny_clip.compute_logits(photos[0], ["puppy", "sky"])[0]
    np.testing.assert_allclose(both, np.maximum(dog, puppy), atol=1e-6)
    assert (dog != puppy).any()


def test_split_synonyms():
    assert split_synonyms(" person,man , woman,man") == ("person", "man", "woman")
    with pytest.raises(ValueError, match="no name"):
        split_synonyms(", ,")


def test_text_embeddings_are_cached(tiny_clip, photos):
    key = ("clip-text-prompts-encoded",)
    tiny_clip.compute_logits(photos[0], ["zebra", "giraffe"])
    before = _cache.memo_get(key, 0)
    tiny_clip.compute_logits(photos[1], ["giraffe", "zebra"])
    assert _cache.memo_get(key, 0) == before
    tiny_clip.compute_logits(photos[1], ["giraffe", "okapi"])
    assert _cache.memo_get(key, 0) == before + len(TINY_TEMPLATES)


def test_clones_share_weights_and_stay_light(tiny_clip, photos):
    tiny_clip.compute_logits(photos[0], CLASSES)
    loads = _cache.load_count()
    c = clone(tiny_clip)
    d = copy.deepcopy(tiny_clip)
    for est in (c, d, pickle.loads(pickle.dumps(tiny_clip))):
        est.compute_logits(photos[0], CLASSES)
        assert est._load() is tiny_clip._load()
    assert _cache.load_count() == loads
    # no tensor travels with the estimator
    assert len(pickle.dumps(tiny_clip)) < 2000


def test_sliding_window(tiny_clip, photos):
    image = photos[2]  # 300 x 451 -> 64 x 96
    whole = tiny_clip.compute_logits(image, CLASSES)
    # one window covering everything is the whole-image computation
    big = clone(tiny_clip).set_params(window=96, stride=96)
    np.testing.assert_allclose(big.compute_logits(image, CLASSES), whole,
                               atol=1e-5)
    small = clone(tiny_clip).set_params(window=32, stride=16, batch_size=3)
    out = small.compute_logits(image, CLASSES)
    assert out.shape == whole.shape and np.isfinite(out).all()
    assert not np.allclose(out, whole, atol=1e-3)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        clone(tiny_clip).set_params(window=30).compute_logits(image, CLASSES)


def test_image_forms(tiny_clip, photos, tmp_path):
    from PIL import Image

    img = photos[2]
    ref = tiny_clip.compute_logits(img, CLASSES)
    path = tmp_path / "chelsea.png"
    Image.fromarray(img).save(path)
    np.testing.assert_array_equal(tiny_clip.compute_logits(str(path), CLASSES), ref)
    np.testing.assert_array_equal(
        tiny_clip.compute_logits(Image.fromarray(img), CLASSES), ref)
    np.testing.assert_array_equal(tiny_clip.compute_logits(img / 255.0, CLASSES), ref)


@pytest.mark.parametrize("params, exc, match", [
    ({"model": "ViT-B-61"}, ValueError, "unknown open_clip model"),
    ({"model": "/no/such/config.json"}, ValueError, "no such file"),
    ({"model": "/no/such/folder/"}, ValueError, "no such file|does not exist"),
    ({"pretrained": "/no/such/weights.safetensors"}, ValueError,
     "no such file"),
    ({"pretrained": "not-a-tag"}, ValueError, "unknown pretrained tag"),
    ({"short_side": 0}, ValueError, "short_side"),
    ({"short_side": 2.5}, TypeError, "short_side"),
    ({"stride": 8}, ValueError, "window"),
    ({"window": 16, "stride": 32}, ValueError, "exceed"),
    ({"templates": ["no placeholder"]}, ValueError, "template"),
    ({"templates": "coco"}, ValueError, "templates"),
    ({"dtype": "float64"}, ValueError, "dtype"),
    ({"device": "tpu"}, ValueError, "device"),
])
def test_bad_params_refused_before_loading(params, exc, match):
    loads = _cache.load_count()
    with pytest.raises(exc, match=match):
        CLIPFeatures(**params)._validate_params()
    assert _cache.load_count() == loads


def test_bad_classes(tiny_clip, photos):
    with pytest.raises(TypeError, match="bare string"):
        tiny_clip.compute_logits(photos[0], "cat")
    with pytest.raises(ValueError, match="at least two"):
        tiny_clip.compute_logits(photos[0], [])


@pytest.mark.filterwarnings("ignore:The .local_dir_use_symlinks. argument")
def test_weights_unavailable_names_them(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    clip = CLIPFeatures("ViT-B-16", "openai", device="cpu")
    with pytest.raises(WeightsUnavailableError) as info:
        clip._load()
    msg = str(info.value)
    assert "'openai'" in msg and "ViT-B-16" in msg and "pretrained='/path" in msg


@pytest.mark.filterwarnings("ignore:The .local_dir_use_symlinks. argument")
def test_hub_model_unavailable_names_it(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    clip = CLIPFeatures("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
                        device="cpu")
    with pytest.raises(WeightsUnavailableError, match="laion/CLIP-ViT-B-16"):
        clip._load()


def test_quick_gelu_follows_the_openai_tag():
    spec = CLIPFeatures("ViT-B-16", "openai")._resolve_model()
    assert spec["force_quick_gelu"]
    spec = CLIPFeatures("ViT-B-16", "laion2b_s34b_b88k")._resolve_model()
    assert not spec["force_quick_gelu"]


def test_text_embedding_does_not_depend_on_the_other_names(tiny_clip_files):
    """A name's embedding is bit-identical whether it is encoded alone or
    with other names (the cache state must not change any result)."""
    from dsolo_sk.features import CLIPFeatures, clear_model_cache

    clip = CLIPFeatures(model=tiny_clip_files["config"],
                        pretrained=tiny_clip_files["checkpoint"],
                        templates=["a photo of a {}.", "{}",
                                   "a big photograph of the small {} here."])
    clear_model_cache()
    alone, _ = clip.text_embeddings(["dog", "x"])
    clear_model_cache()
    together, _ = clip.text_embeddings(
        ["an extraordinarily long class name with many words", "dog", "x"])
    assert alone[0].tobytes() == together[1].tobytes()


# -- the peers' preprocessing and per-query cosines --------------------------
def _cubic_ramp(x, a=-0.75):
    """Keys' cubic convolution (parameter `a`) of the ramp f(k) = k,
    sampled at x, away from the borders."""
    k = np.floor(x)[:, None] + np.arange(-1, 3)
    t = np.abs(x[:, None] - k)
    w = np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                 a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a)
    return (w * k).sum(1)


def test_pos_embed_interpolation_by_scale_factor():
    # A ramp along the rows (value = row index) shows where each output
    # row samples the old grid: the peers' scale factor (g + 0.1) / g0
    # puts row i at (i + 0.5) g0 / (g + 0.1) - 0.5, interpolated with
    # torch's bicubic kernel (a = -0.75); the size-based, antialiased
    # resize at (i + 0.5) g0 / g - 0.5, where its kernel (a = -0.5) gives
    # the ramp back exactly.
    g0, g = 14, 21
    rows = torch.arange(g0, dtype=torch.float32)
    grid = rows[:, None, None].expand(g0, g0, 4).reshape(-1, 4)
    pos = torch.cat([torch.full((1, 4), 7.0), grid])
    peers = interpolate_pos_embed(pos, (g0, g0), (g, 30), "scale_factor")
    size = interpolate_pos_embed(pos, (g0, g0), (g, 30))
    assert peers.shape == size.shape == (1 + g * 30, 4)
    torch.testing.assert_close(peers[0], pos[0])
    peers = peers[1:, 0].reshape(g, 30)[:, 5].numpy()
    size = size[1:, 0].reshape(g, 30)[:, 5].numpy()
    i = np.arange(3, g - 3)
    np.testing.assert_allclose(
        peers[i], _cubic_ramp((i + 0.5) * g0 / (g + 0.1) - 0.5), atol=1e-4)
    np.testing.assert_allclose(size[i], (i + 0.5) * g0 / g - 0.5, atol=1e-4)
    # The peers interpolate a side that keeps its size too.
    same = interpolate_pos_embed(pos, (g0, g0), (g0, 20), "scale_factor")
    assert not torch.allclose(same[1:, 0].reshape(g0, 20)[:, 0], rows)
    with pytest.raises(ValueError, match="method"):
        interpolate_pos_embed(pos, (g0, g0), (g, g), "nearest")


def test_pos_interpolation_reaches_the_model(tiny_clip, photos):
    peers = clone(tiny_clip).set_params(pos_interpolation="scale_factor")
    # at the native 4 x 4 grid there is nothing to interpolate ...
    native = clone(tiny_clip).set_params(short_side=32)
    square = photos[0][:400, :400]
    np.testing.assert_array_equal(
        native.compute_logits(square, CLASSES),
        clone(peers).set_params(short_side=32).compute_logits(square,
                                                              CLASSES))
    # ... elsewhere the two interpolations give other logits
    a = tiny_clip.compute_logits(photos[1], CLASSES)
    b = peers.compute_logits(photos[1], CLASSES)
    assert a.shape == b.shape and np.abs(a - b).max() > 1e-4


def test_opencv_resampling_resizes_like_the_peers(tiny_clip):
    import cv2

    rng = np.random.default_rng(0)
    peers = clone(tiny_clip).set_params(resampling="opencv", short_side=32)
    smooth = clone(tiny_clip).set_params(short_side=32)
    # 32 x 54 keeps its size: the peers' patch grid is the 6 whole
    # patches of 8 columns (the last 6 columns are not seen); the
    # antialiased resize goes to the nearest multiple, 56, 7 patches.
    image = rng.integers(0, 256, (32, 54, 3), np.uint8)
    assert peers.grid_shape(image.shape) == (4, 6)
    assert smooth.grid_shape(image.shape) == (4, 7)
    np.testing.assert_array_equal(peers.compute_logits(image, CLASSES),
                                  peers.compute_logits(image[:, :48],
                                                       CLASSES))
    # A resize goes through cv2.resize to int(side * scale + 0.5) pixels:
    # 40 x 67 -> 32 x int(53.6 + 0.5) = 54.
    big = rng.integers(0, 256, (40, 67, 3), np.uint8)
    resized = cv2.resize(big, (54, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(peers.compute_logits(big, CLASSES),
                                  peers.compute_logits(resized, CLASSES))
    assert not np.allclose(smooth.compute_logits(big, CLASSES)[:, :, :6],
                           peers.compute_logits(big, CLASSES), atol=1e-4)
    with pytest.raises(ValueError, match="resampling"):
        clone(tiny_clip).set_params(resampling="cubic")._validate_params()
    with pytest.raises(ValueError, match="pos_interpolation"):
        clone(tiny_clip).set_params(
            pos_interpolation="bilinear")._validate_params()


def test_query_logits_one_map_per_synonym(tiny_clip, photos):
    q, owner = tiny_clip.compute_query_logits(photos[0], CLASSES)
    assert q.shape == (4, 8, 8) and q.dtype == np.float32
    assert owner.tolist() == [0, 1, 1, 2]
    dog = tiny_clip.compute_logits(photos[0], ["dog", "sky"])[0]
    puppy = tiny_clip.compute_logits(photos[0], ["puppy", "sky"])[0]
    np.testing.assert_allclose(q[1], dog, atol=1e-6)
    np.testing.assert_allclose(q[2], puppy, atol=1e-6)
    logits = tiny_clip.compute_logits(photos[0], CLASSES)
    np.testing.assert_array_equal(logits[1], np.maximum(q[1], q[2]))
    # Sliding windows are averaged per query, the maximum taken after.
    slide = clone(tiny_clip).set_params(window=32, stride=16)
    qs, _ = slide.compute_query_logits(photos[2], CLASSES)
    np.testing.assert_array_equal(
        slide.compute_logits(photos[2], CLASSES)[1], np.maximum(qs[1], qs[2]))


def test_the_last_images_cost_no_second_forward(tiny_clip, photos):
    visual = tiny_clip._load().model.visual
    calls = []
    hook = visual.conv1.register_forward_hook(lambda *a: calls.append(1))
    try:
        image = photos[2][:200, :300].copy()
        logits = tiny_clip.compute_logits(image, CLASSES)
        assert len(calls) == 1
        q, owner = tiny_clip.compute_query_logits(image, CLASSES)
        assert len(calls) == 1  # the same image: no forward pass
        np.testing.assert_array_equal(logits[1], np.maximum(q[1], q[2]))
        q[:] = 0  # the caller's copy; the memo is untouched
        assert tiny_clip.compute_query_logits(image, CLASSES)[0].any()
        image[0, 0] += 1  # other pixels: computed again
        tiny_clip.compute_query_logits(image, CLASSES)
        assert len(calls) == 2
        clone(tiny_clip).set_params(pos_interpolation="scale_factor") \
            .compute_query_logits(image, CLASSES)
        assert len(calls) == 3
    finally:
        hook.remove()
