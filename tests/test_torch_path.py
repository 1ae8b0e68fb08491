"""The torch inference path: the same labels as numpy, no step leaves torch.

``DirectSegmenter(backend="torch")`` runs the normalisation, the
discrepancy and the upsampling as torch tensors on the device (here the
CPU) through the same backend-agnostic code as the numpy path.
"""

import contextlib
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator

from dsolo_sk import (DirectSegmenter, InterpolationUpsampler,
                      JointBilateralUpsampler, KLDiscrepancy, LogitNormalizer,
                      TransportPath, TransportVelocity)
from dsolo_sk.datasets import SCENE_FAMILIES, make_scene_family, make_scenes
from dsolo_sk.normalization import (class_contrast, logit_spread,
                                    normalize_logits, suppress_non_maximum)
from dsolo_sk.upsample import joint_bilateral_upsample

MODES = ("raw", "kl", "path", "velocity")


@pytest.fixture(scope="module")
def benchmark_scenes():
    """The synthetic benchmark: generated scenes and one scene of every
    family (street, many-class, sink-token attention, ...)."""
    X, _ = make_scenes(n_scenes=2, n_classes=6, image_size=96,
                       random_state=0)
    for family in SCENE_FAMILIES:
        Xf, _ = make_scene_family(family, n_scenes=1, image_size=128,
                                  random_state=1)
        X = X + Xf
    return X


@contextlib.contextmanager
def no_host_copy(monkeypatch):
    """Every way a tensor becomes a numpy array raises inside the block."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("a torch tensor was converted to numpy")

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "numpy", refuse)
        m.setattr(torch.Tensor, "__array__", refuse)
        m.setattr(torch.Tensor, "tolist", refuse)
        yield


# -- (a) the same labels ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_torch_and_numpy_paths_give_identical_labels(benchmark_scenes, mode):
    X = benchmark_scenes
    ref = DirectSegmenter(mode=mode).predict(X)
    got = DirectSegmenter(mode=mode, backend="torch").predict(X)
    for a, b in zip(ref, got):
        assert type(b) is np.ndarray and b.dtype == np.int64
        np.testing.assert_array_equal(a, b)
    s_ref = DirectSegmenter(mode=mode).decision_function(X[:3])
    s_got = DirectSegmenter(mode=mode, backend="torch").decision_function(
        X[:3])
    for a, b in zip(s_ref, s_got):
        assert type(b.values) is np.ndarray
        scale = float(np.abs(a.values).max())
        np.testing.assert_allclose(b.values, a.values, rtol=0,
                                   atol=1e-5 * scale)


def test_torch_path_score_equals_numpy_path():
    X, y = make_scenes(n_scenes=2, n_classes=5, image_size=64,
                       random_state=3)
    assert (DirectSegmenter(backend="torch").score(X, y)
            == DirectSegmenter().score(X, y))


@pytest.mark.parametrize("normalizer", [
    LogitNormalizer(),
    LogitNormalizer(nms=False, method="softmax", over="class"),
    LogitNormalizer(method="zscore", nms_fill="min"),
    LogitNormalizer(method="contrast", temperature_unit="spread"),
    LogitNormalizer(nms=False, baseline="off", presence="diffused",
                    min_share=0.15),
])
def test_normalizer_runs_on_tensors_with_the_same_numbers(normalizer):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 40)).astype(np.float32)
    affinity = rng.random((40, 40)).astype(np.float32) ** 4
    args = (affinity,) if normalizer.requires_affinity else ()
    targs = tuple(torch.from_numpy(a) for a in args)
    q, mass = normalizer.normalize(logits, *args)
    tq, tmass = normalizer.normalize(torch.from_numpy(logits), *targs)
    if normalizer.requires_affinity:  # the presence test drops a class
        assert 0 < (mass == 0).sum() < 4
        assert (mass == 0).sum() > (LogitNormalizer(
            min_share=0.15, nms=False).normalize(logits)[1] == 0).sum()
    assert isinstance(tq, torch.Tensor) and isinstance(tmass, torch.Tensor)
    assert tq.dtype == torch.float64
    np.testing.assert_allclose(tq.numpy(), q, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tmass.numpy(), mass, rtol=1e-12, atol=1e-15)


def test_normalization_functions_keep_tensors():
    L = torch.tensor([[0.3, 0.1, 0.2], [0.2, 0.4, 0.2]])
    sup = suppress_non_maximum(L)
    assert isinstance(sup, torch.Tensor)
    # a tie goes to the first class, as with numpy's argmax
    np.testing.assert_array_equal(sup.numpy(),
                                  suppress_non_maximum(L.numpy()))
    assert isinstance(class_contrast(L, 0.1), torch.Tensor)
    assert isinstance(normalize_logits(sup)[0], torch.Tensor)
    assert logit_spread(L) == pytest.approx(logit_spread(L.numpy()))


# -- (b) no step converts to numpy --------------------------------------------


class Recorder:
    """Delegates to a real part and records the types it sees and returns."""

    def __init__(self, part, method, log):
        self.part, self.method, self.log = part, method, log
        self.requires_affinity = getattr(part, "requires_affinity", True)

    def __getattr__(self, name):
        if name != self.method:
            raise AttributeError(name)

        def call(*args, **kwargs):
            out = getattr(self.part, name)(*args, **kwargs)
            arrays = [a for a in args if hasattr(a, "shape")]
            outs = out if isinstance(out, tuple) else (out,)
            self.log.append((name, [type(a) for a in arrays],
                             [type(o) for o in outs],
                             [getattr(o, "dtype", None) for o in outs]))
            return out
        return call


@pytest.mark.parametrize("disc", [TransportVelocity(), TransportPath(),
                                  KLDiscrepancy()], ids=repr)
@pytest.mark.parametrize("up", [JointBilateralUpsampler(),
                                InterpolationUpsampler()], ids=repr)
def test_no_step_of_the_torch_path_converts_to_numpy(monkeypatch, disc, up):
    X, _ = make_scenes(n_scenes=1, n_classes=5, image_size=64,
                       random_state=2)
    log = []
    seg = DirectSegmenter(
        normalizer=Recorder(LogitNormalizer(), "normalize", log),
        discrepancy=Recorder(disc, "compute", log),
        upsampler=Recorder(up, "upsample", log), backend="torch")
    ds = X[0]
    with no_host_copy(monkeypatch):
        maps = seg._score_maps(ds)
    assert isinstance(maps, torch.Tensor) and maps.dtype == torch.float32
    assert [entry[0] for entry in log] == ["normalize", "compute",
                                           "upsample"]
    for name, inputs, outputs, _ in log:
        # the image guiding the upsampling is the only numpy input
        tensors = inputs[:1] if name == "upsample" else inputs
        assert all(t is torch.Tensor for t in tensors), (name, inputs)
        assert all(t is torch.Tensor for t in outputs), (name, outputs)
    # the discrepancy computes in float32 (Sinkhorn, IPF)
    assert log[1][3] == [torch.float32]
    # and the labels come back as numpy at the very end only
    labels = seg.predict([ds])[0]
    assert type(labels) is np.ndarray


def test_jbu_runs_on_the_meta_device():
    """The upsampling never reads a value: it runs on tensors without
    storage, so it cannot copy anything to the host."""
    guide = np.zeros((16, 24, 3), np.uint8)
    scores = torch.empty((3, 4, 6), device="meta")
    for kernel in ("tent", "gaussian"):
        out = joint_bilateral_upsample(scores, guide, kernel=kernel)
        assert out.device.type == "meta" and out.shape == (3, 16, 24)


def test_jbu_torch_matches_the_sparse_operator(monkeypatch):
    rng = np.random.default_rng(0)
    guide = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    scores = rng.normal(size=(4, 5, 7)).astype(np.float32)
    for kernel in ("tent", "gaussian"):
        ref = joint_bilateral_upsample(scores, guide, kernel=kernel)
        with no_host_copy(monkeypatch):
            got = joint_bilateral_upsample(torch.from_numpy(scores), guide,
                                           kernel=kernel)
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)


# -- half-precision features, float32 numerics ---------------------------


@pytest.mark.parametrize("mode", ("path", "velocity"))
def test_float16_features_are_widened_before_the_numerics(mode):
    """Features of a float16 model: both paths widen them to float32 before
    the normalisation, Sinkhorn and IPF, and agree on the labels."""
    X, _ = make_scenes(n_scenes=2, n_classes=5, image_size=64,
                       random_state=4)
    half = [ds.assign(logits=ds["logits"].astype(np.float16),
                      affinity=ds["affinity"].astype(np.float16))
            for ds in X]
    ref = DirectSegmenter(mode=mode).predict(half)
    got = DirectSegmenter(mode=mode, backend="torch").predict(half)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("disc", [TransportPath(), TransportVelocity()],
                         ids=repr)
@pytest.mark.parametrize("as_torch", [False, True])
def test_half_precision_q_is_computed_in_float32(disc, as_torch):
    rng = np.random.default_rng(6)
    # rows of k / 1024: distributions that float16 holds exactly
    counts = rng.multinomial(1024, rng.dirichlet(np.full(64, 0.3), 3)[0],
                             size=3)
    q = (counts / 1024).astype(np.float32)
    q16 = q.astype(np.float16)
    assert np.array_equal(q16.astype(np.float32), q)
    aff = (rng.random((64, 64)) ** 4).astype(np.float32)
    m = np.array([0.5, 0.3, 0.2], np.float32)
    ref = disc.compute(q, aff, m)
    if as_torch:
        got = disc.compute(torch.from_numpy(q16), torch.from_numpy(aff),
                           torch.from_numpy(m))
        assert got.dtype == torch.float32
        got = got.numpy()
    else:
        got = disc.compute(q16, aff, m)
        assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_torch_features_given_as_tensors_stay_on_their_device():
    X, _ = make_scenes(n_scenes=1, n_classes=6, image_size=48,
                       random_state=5)
    seg = DirectSegmenter(backend="torch")
    arr = seg._device_array(torch.ones(2, 3, dtype=torch.float16))
    assert isinstance(arr, torch.Tensor) and arr.dtype == torch.float32
    assert arr.device.type == "cpu"
    assert seg._device_array(X[0]["logits"].values).device.type == "cpu"


def test_backend_is_validated():
    X, _ = make_scenes(n_scenes=1, n_classes=6, image_size=32,
                       random_state=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        DirectSegmenter(backend="jax").predict(X)
    with pytest.raises(ValueError, match="backend must be one of"):
        DirectSegmenter(backend=None).fit()


# -- the benchmark -----------------------------------------------------------


def test_stages_benchmark_prints_the_post_processing_table(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "stages.py"
    spec = importlib.util.spec_from_file_location("_stages", path)
    stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stages)
    X, _ = make_scenes(n_scenes=1, n_classes=6, image_size=64,
                       random_state=0)
    res = stages.print_post_table(X[0], "cpu", repeats=1, models=0.5)
    out = capsys.readouterr().out
    for mode in ("velocity", "path"):
        for backend in ("numpy", "torch"):
            assert f"{mode}/{backend}" in out
            t = res[mode, backend]
            assert set(t) == {"normalize", "discrepancy", "upsample",
                              "argmax_to_host", "total"}
            assert all(v >= 0 for v in t.values())
        assert f"{mode}: torch path" in out
    assert "post share" in out


#: tiny diffusers configurations with two attention-bearing up blocks
TINY_UNET = dict(
    block_out_channels=(8, 16, 16), norm_num_groups=4, layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2,
    cross_attention_dim=16, attention_head_dim=2,
)
TINY_VAE = dict(block_out_channels=(8,), norm_num_groups=4)


def test_stages_benchmark_counts_the_same_flops_on_meta_and_cpu(
        tiny_clip_files, photos, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "stages.py"
    spec = importlib.util.spec_from_file_location("_stages_flops", path)
    stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stages)
    kw = dict(clip_side=32, sd_side=32, n_classes=3, image=photos[0][::8, ::8],
              clip_model="dsolo-tiny-vit", unet_config=TINY_UNET,
              vae_config=TINY_VAE)
    meta = stages.count_flops("meta", "float16", **kw)
    cpu = stages.count_flops("cpu", "float32", **kw)
    # the CPU's fused attention kernels are counted as the meta products
    setting = {k: v for k, v in meta["setting"].items()
               if k not in ("device", "dtype")}
    assert {**meta, "setting": setting} == {**cpu, "setting": {
        k: v for k, v in cpu["setting"].items() if k in setting}}
    st = meta["gflops"]
    assert list(st) == ["clip_image", "vae_encode", "unet_early_exit",
                        "attention_resample", "post_velocity"]
    assert min(st.values()) >= 0 and min(list(st.values())[:4]) > 0
    assert meta["unet_full_gflops"] > st["unet_early_exit"]
    assert meta["text_per_class_gflops"] > 0 and meta["text_templates"] == 80
    assert meta["end_to_end_gflops"] == pytest.approx(sum(st.values()))
    assert 0 < meta["ratio"] < 1
    assert meta["ratio"] == pytest.approx(meta["clip_only_gflops"]
                                          / meta["end_to_end_gflops"])
    stages.print_flops_table(meta)
    out = capsys.readouterr().out
    assert "not a timing" in out and "CLIP-only / end-to-end FLOPs" in out


# -- raw images: the extractors' outputs stay on the device ------------------

CLASSES = ["sky, cloud", "cat", "road"]


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    from dsolo_sk.features import DiffusionAttention

    return DiffusionAttention(tiny_sd_dir, resolution=32, up_blocks=(0, 1),
                              device="cpu")


@pytest.fixture(scope="module")
def raw_images(photos):
    """Photos of three sizes and two random images of one size."""
    rng = np.random.default_rng(0)
    return [photos[0][::4, ::4], rng.integers(0, 256, (48, 64, 3), np.uint8),
            rng.integers(0, 256, (48, 64, 3), np.uint8),
            photos[1][::4, ::4], photos[2][::3, ::3]]


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        yield


def _same_labels_but_ties(labels, scores, atol):
    """The labels are the argmax of the numpy path's `scores`, except at
    pixels where the two classes' scores tie within `atol` (float32
    rounding of the two backends may order an exact tie either way)."""
    ref = scores.argmax(0)
    diff = labels != ref
    assert diff.mean() <= 1e-3, diff.mean()
    rows, cols = np.nonzero(diff)
    gap = scores[ref[rows, cols], rows, cols] - scores[labels[rows, cols],
                                                       rows, cols]
    assert np.all(gap <= atol), gap.max()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_size", [1, 2])
def test_raw_images_torch_path_equals_numpy_path(tiny_clip, sd, raw_images,
                                                 mode, batch_size):
    """The tiny random CLIP and Stable Diffusion: the torch path (features
    as tensors, no Dataset) gives the labels and scores of the numpy path
    (features copied to numpy Datasets)."""
    params = dict(mode=mode, classes=CLASSES, extractor=tiny_clip,
                  affinity=sd, batch_size=batch_size, progress=False)
    with _quiet():
        ref = DirectSegmenter(**params).decision_function(raw_images)
        got = DirectSegmenter(backend="torch",
                              **params).decision_function(raw_images)
        labels = DirectSegmenter(backend="torch",
                                 **params).predict(raw_images)
    for a, b, lab in zip(ref, got, labels):
        assert type(b.values) is np.ndarray and b.dims == a.dims
        assert list(b["class"].values) == list(a["class"].values)
        scale = float(np.abs(a.values).max())
        np.testing.assert_allclose(b.values, a.values, rtol=0,
                                   atol=1e-5 * scale)
        _same_labels_but_ties(lab, a.values, 1e-5 * scale)


def test_raw_images_torch_path_score_equals_numpy_path(tiny_clip, sd,
                                                       raw_images):
    rng = np.random.default_rng(1)
    masks = [rng.integers(0, 3, im.shape[:2]) for im in raw_images]
    params = dict(mode="path", classes=CLASSES, extractor=tiny_clip,
                  affinity=sd, batch_size=2, progress=False)
    with _quiet():
        ref = DirectSegmenter(**params).score(raw_images, masks)
        got = DirectSegmenter(backend="torch", **params).score(raw_images,
                                                              masks)
    # equal but for a pixel whose two best scores tie to float32 rounding
    assert got == pytest.approx(ref, abs=1e-3)
    # a mask of the wrong size is refused before any model runs
    bad = masks[:-1] + [np.zeros((3, 3), int)]
    seg = DirectSegmenter(backend="torch", **params)
    with pytest.raises(ValueError, match=r"y\[4\] has shape \(3, 3\)"):
        seg.score(raw_images, bad)


def test_no_step_from_the_models_to_the_argmax_converts_to_numpy(
        monkeypatch, tiny_clip, sd, raw_images):
    """CLIP's logits and the UNet's affinity stay torch tensors on their
    device through the normalisation, the discrepancy and the upsampling:
    every conversion of a tensor to numpy raises while the models run and
    the scores are computed (the label map's copy to the host, after the
    argmax, is the only one)."""
    from dsolo_sk.features import FeatureExtractor

    seg = DirectSegmenter(mode="path", classes=CLASSES, extractor=tiny_clip,
                          affinity=sd, batch_size=2, backend="torch",
                          progress=False)
    with _quiet():
        # the text embeddings are computed once per class list and cached
        # (their prompt check hashes the tokens on the host): warm them up
        # on another image, so the block below runs the image tower and
        # the UNet on new images
        seg.predict([np.full((40, 40, 3), 7, np.uint8)])
        images = [255 - im for im in raw_images]  # not in CLIP's last results
        feats = seg._features(images, stream=True)
        assert not isinstance(feats, list)  # computed as they are used
        maps, seen, forwards = [], [], {"clip": [], "unet": []}
        hooks = [tiny_clip._load().model.visual.transformer
                 .register_forward_hook(lambda m, a, o: forwards["clip"]
                                        .append(a[0].shape[0])),
                 sd._load().unet.conv_in.register_forward_hook(
                     lambda m, a, o: forwards["unet"].append(a[0].shape[0]))]
        try:
            with no_host_copy(monkeypatch):
                for feat in feats:
                    seen.append({k: type(feat[k]) for k in ("logits",
                                                            "affinity")})
                    maps.append(seg._score_maps(feat))
        finally:
            for h in hooks:
                h.remove()
        # the control: the numpy path copies the features to the host, and
        # the same block catches it
        numpy_fe = FeatureExtractor(logits=tiny_clip, affinity=sd,
                                    classes=CLASSES, progress=False)
        with no_host_copy(monkeypatch), pytest.raises(
                AssertionError, match="converted to numpy"):
            numpy_fe.transform([np.full((40, 48, 3), 9, np.uint8)])
    # the models ran inside the block, a chunk of same-size images at once
    assert forwards == {"clip": [1, 2, 1, 1], "unet": [1, 2, 1, 1]}
    assert seen == [{"logits": torch.Tensor, "affinity": torch.Tensor}] * 5
    assert all(isinstance(m, torch.Tensor) and m.dtype == torch.float32
               for m in maps)
    assert [tuple(m.shape[1:]) for m in maps] == [im.shape[:2]
                                                 for im in images]


def test_extractors_keep_their_outputs_as_tensors(tiny_clip, sd, raw_images):
    images = raw_images[1:3]
    with _quiet():
        logits = tiny_clip.compute_logits_batch(images, CLASSES,
                                                as_tensor=True)
        ref = tiny_clip.compute_logits_batch(images, CLASSES)
        grid = tuple(ref[0].shape[1:])
        aff = sd.compute_affinity_batch(images, grid, as_tensor=True)
        aff_ref = sd.compute_affinity_batch(images, grid)
    for t, a in zip(logits + aff, ref + aff_ref):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        assert type(a) is np.ndarray
        np.testing.assert_array_equal(t.numpy(), a)
    # the numpy results are the caller's: writing to them changes nothing
    ref[0][:] = 0
    again = tiny_clip.compute_logits_batch(images, CLASSES, as_tensor=True)
    np.testing.assert_array_equal(again[0].numpy(), logits[0].numpy())


def test_max_per_class_on_tensors_equals_numpy():
    from dsolo_sk.features._contract import max_per_class

    rng = np.random.default_rng(2)
    q = rng.normal(size=(6, 3, 4)).astype(np.float32)
    owner = np.array([0, 0, 1, 2, 2, 2])
    owner.flags.writeable = False
    got = max_per_class(torch.from_numpy(q), owner, 3)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), max_per_class(q, owner, 3))


class _TensorLogits(BaseEstimator):
    """A user's logits extractor whose batch method can give tensors."""

    def __init__(self, values=None):
        self.values = values

    def compute_logits(self, image, classes):
        return self.values.numpy()

    def compute_logits_batch(self, images, classes, as_tensor=False):
        out = [self.values.clone() for _ in images]
        return out if as_tensor else [o.numpy() for o in out]


def test_torch_path_checks_the_tensors_it_gets():
    values = torch.zeros((2, 3, 4))
    values[1, 2, 3] = float("nan")
    seg = DirectSegmenter(mode="kl", classes=["a", "b"], backend="torch",
                          extractor=_TensorLogits(values), progress=False)
    with pytest.raises(ValueError, match="logits holds 1 NaN"):
        seg.predict([np.zeros((24, 32, 3), np.uint8)])
    seg.set_params(extractor=_TensorLogits(torch.zeros((3, 3, 4))))
    with pytest.raises(ValueError, match="logits has 3 class maps but 2"):
        seg.predict([np.zeros((24, 32, 3), np.uint8)])


def test_extractors_without_as_tensor_on_the_torch_path(tiny_clip,
                                                        raw_images):
    """A model-free affinity gives numpy arrays: the torch path takes them
    as they come and gives the numpy path's labels."""
    from dsolo_sk.features import ColorPositionAffinity

    params = dict(mode="velocity", classes=CLASSES, extractor=tiny_clip,
                  affinity=ColorPositionAffinity(), batch_size=2,
                  progress=False)
    with _quiet():
        ref = DirectSegmenter(**params).predict(raw_images)
        got = DirectSegmenter(backend="torch", **params).predict(raw_images)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
