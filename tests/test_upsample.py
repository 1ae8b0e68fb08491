"""Joint bilateral upsampling."""

import numpy as np
import pytest
import torch
from skimage import data

from dsolo_sk.upsample import (jbu_operator, joint_bilateral_upsample,
                               upsample_scores)


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
