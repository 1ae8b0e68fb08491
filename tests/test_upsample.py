"""Joint bilateral upsampling."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage import data

import dsolo_sk.upsample as upsample
from dsolo_sk import JointBilateralUpsampler
from dsolo_sk.upsample import (JBU_KERNELS, jbu_operator,
                               joint_bilateral_upsample, upsample_scores)


@pytest.fixture(scope="module")
def guide():
    return data.astronaut()[::4, ::4].copy()  # 128 x 128


@pytest.mark.parametrize("kernel", ["gaussian", "tent"])
def test_constant_maps_stay_constant(guide, kernel):
    s = np.stack([np.full((8, 8), 3.25), np.full((8, 8), -1.5)])
    out = joint_bilateral_upsample(s.astype(np.float32), guide,
                                   kernel=kernel, sigma_range=0.05)
    assert out.shape == (2, 128, 128)
    np.testing.assert_allclose(out[0], 3.25, rtol=1e-6)
    np.testing.assert_allclose(out[1], -1.5, rtol=1e-6)


def test_tends_to_bilinear_as_range_sigma_grows(guide):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 8, 8)).astype(np.float32)
    bil = upsample_scores(s, guide, "bilinear")
    errs = [np.abs(joint_bilateral_upsample(s, guide, sigma_range=r,
                                            kernel="tent") - bil).max()
            for r in (0.05, 0.2, 1.0, 1e4)]
    assert errs[-1] < 1e-5
    assert all(a >= b for a, b in zip(errs, errs[1:]))
    assert errs[0] > 0.1


def test_gaussian_kernel_is_a_normalised_gaussian_filter_at_large_sigma(guide):
    # without the range term the weights depend on the grid geometry only
    U = jbu_operator((8, 8), guide, sigma_range=1e6)
    U2 = jbu_operator((8, 8), np.zeros_like(guide), sigma_range=0.01)
    np.testing.assert_allclose(U.toarray(), U2.toarray(), atol=1e-6)
    np.testing.assert_allclose(U.sum(1), 1, rtol=1e-6)


def test_edges_follow_the_guide():
    guide = np.zeros((64, 64, 3), np.uint8)
    guide[:, 37:] = 255  # an edge inside a patch column
    s = np.zeros((1, 4, 4), np.float32)
    s[0, :, 2:] = 1.0
    jbu = joint_bilateral_upsample(s, guide, sigma_range=0.05)[0]
    bil = upsample_scores(s, guide, "bilinear")[0]
    truth = (np.arange(64) >= 37).astype(float)
    assert np.abs(jbu - truth).mean() < 0.5 * np.abs(bil - truth).mean()


def test_torch_input_gives_torch_output(guide):
    s = torch.rand(2, 8, 8)
    out = joint_bilateral_upsample(s, guide)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 128, 128)
    np.testing.assert_allclose(out.numpy(),
                               joint_bilateral_upsample(s.numpy(), guide),
                               rtol=1e-6)


def test_non_square_and_non_integer_scale():
    rng = np.random.default_rng(1)
    guide = rng.integers(0, 255, (50, 77, 3), dtype=np.uint8)
    s = rng.random((4, 3, 5)).astype(np.float32)
    for method in ("jbu", "bilinear", "nearest"):
        out = upsample_scores(s, guide, method)
        assert out.shape == (4, 50, 77) and np.isfinite(out).all()
        assert out.min() >= s.min() - 1e-6 and out.max() <= s.max() + 1e-6


@pytest.mark.parametrize("kw,err", [(dict(sigma_spatial=0), ValueError),
                                    (dict(sigma_range=-1), ValueError),
                                    (dict(kernel="box"), ValueError)])
def test_bad_parameters(kw, err, guide):
    with pytest.raises(err):
        joint_bilateral_upsample(np.zeros((1, 4, 4)), guide, **kw)


# -- no NaN scores, bounded memory (issue 25) ------------------------------------
@pytest.mark.parametrize("kw", [dict(kernel="tent", sigma_spatial=0.3),
                                dict(kernel="tent", sigma_spatial=0.49),
                                dict(kernel="tent", sigma_spatial=0.01),
                                dict(kernel="gaussian", sigma_spatial=1e-30)])
def test_pixels_without_a_tap_take_their_nearest_patch(kw, guide):
    # a tent narrower than half a cell has at most one tap per pixel, the
    # nearest patch, and none between the patch centres; a Gaussian that
    # underflows has none: every pixel takes its nearest patch, none NaN
    rng = np.random.default_rng(2)
    s = rng.normal(size=(3, 8, 8)).astype(np.float32)
    out = JointBilateralUpsampler(**kw).upsample(s, guide)
    np.testing.assert_array_equal(out, upsample_scores(s, guide, "nearest"))
    torch_out = joint_bilateral_upsample(torch.from_numpy(s), guide, **kw)
    np.testing.assert_array_equal(torch_out.numpy(), out)
    op = jbu_operator((8, 8), guide, **kw)
    assert np.isfinite(op.data).all()
    np.testing.assert_allclose(op.sum(1), 1, rtol=1e-6)


def test_segmenter_with_a_narrow_tent_labels_every_pixel():
    from dsolo_sk import DirectSegmenter
    from dsolo_sk.datasets import make_scenes

    X, y = make_scenes(n_scenes=1, n_classes=5, image_size=64,
                       random_state=0)
    seg = DirectSegmenter(mode="raw", upsampler=JointBilateralUpsampler(
        kernel="tent", sigma_spatial=0.3), progress=False)
    scores = seg.decision_function(X)[0]
    assert np.isfinite(scores.values).all()


@pytest.mark.parametrize("kw,match", [
    (dict(sigma_range=1e-30), r"sigma_range must be >= 0\.001"),
    (dict(radius=0), "radius must be >= 1"),
    (dict(radius=2.5), "radius must be an integer"),
    (dict(sigma_spatial=1e3),
     r"sigma_spatial=1000\.0 .*at most 64 grid cells"),
    (dict(radius=100), r"radius must be <= 64"),
])
def test_parameters_that_cannot_work_are_refused(kw, match, guide):
    with pytest.raises((ValueError, TypeError), match=match):
        joint_bilateral_upsample(np.zeros((1, 4, 4)), guide, **kw)


def test_upsampler_refuses_a_tiny_colour_bandwidth(guide):
    with pytest.raises(ValueError, match=r"sigma_range must be >= 0\.001"):
        JointBilateralUpsampler(sigma_range=1e-30).upsample(
            np.zeros((1, 4, 4)), guide)


def test_tiles_give_the_numbers_of_one_pass(guide, monkeypatch):
    rng = np.random.default_rng(4)
    s = rng.normal(size=(3, 8, 8)).astype(np.float32)
    whole = {k: joint_bilateral_upsample(s, guide, kernel=k)
             for k in JBU_KERNELS}
    op = jbu_operator((8, 8), guide, kernel="gaussian")
    # a budget of a few rows, then of part of a row: many tiles
    for budget in (200_000, 20_000):
        monkeypatch.setattr(upsample, "JBU_MEMORY_BUDGET", budget)
        for k in JBU_KERNELS:
            np.testing.assert_array_equal(
                joint_bilateral_upsample(s, guide, kernel=k), whole[k])
            np.testing.assert_allclose(
                joint_bilateral_upsample(torch.from_numpy(s), guide,
                                         kernel=k).numpy(), whole[k],
                rtol=1e-5, atol=1e-6)
        tiled = jbu_operator((8, 8), guide, kernel="gaussian",
                             max_bytes=10 ** 9)
        assert (abs(tiled - op) > 0).nnz == 0


def test_the_operator_refuses_a_matrix_past_its_budget(guide):
    with pytest.raises(ValueError, match=r"max_bytes.*sigma_spatial"):
        jbu_operator((8, 8), guide, kernel="gaussian", sigma_spatial=16,
                     max_bytes=10 ** 6)


PEAK_CHILD = """
import resource, sys
import numpy as np
from dsolo_sk import JointBilateralUpsampler
import dsolo_sk.upsample as upsample
upsample.JBU_MEMORY_BUDGET = 64 * 2 ** 20
image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
scores = np.random.default_rng(1).normal(size=(2, 32, 32)).astype(np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = JointBilateralUpsampler("gaussian", sigma_spatial=16).upsample(
    scores, image)
assert np.isfinite(out).all()
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown // 1024)  # MiB (ru_maxrss is in KiB on Linux)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="ru_maxrss in KiB is Linux's")
def test_wide_kernels_stay_within_the_memory_budget():
    # sigma_spatial=16 on a 32 x 32 grid gives 4096 taps per pixel: 67 M
    # taps on this image, 1.3 GiB more memory in one pass; tiles of 64 MiB
    # keep the growth within a few budgets
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", PEAK_CHILD],
                          capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 4 * 64
