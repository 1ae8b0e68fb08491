"""device and dtype: checked up front, "auto" prefers CUDA, then MPS."""

import numpy as np
import pytest
import torch

from dsolo_sk.features import CLIPFeatures, DiffusionAttention
from dsolo_sk.features import _cache
from dsolo_sk.features._cache import check_device_dtype, resolve_device

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()


@pytest.mark.parametrize("device", ["gpu", "tpu", "cuda:x", "", "meta"])
def test_unknown_devices_are_value_errors_naming_the_argument(device):
    with pytest.raises(ValueError, match=r"^device must be 'auto', 'cpu'"):
        resolve_device(device)
    with pytest.raises(ValueError, match=r"^--device must be"):
        check_device_dtype(device, "auto", names=("--device", "--dtype"))


def test_auto_is_the_best_device_here_and_others_are_checked_against_it():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert resolve_device("auto") == resolve_device(None) == expected
    assert check_device_dtype("auto", "auto", names=("--device", "--dtype")) \
        == (expected, "float16" if HAS_CUDA else "float32")
    assert resolve_device(torch.device("cpu")) == "cpu"
    n = torch.cuda.device_count() if HAS_CUDA else 0
    with pytest.raises(ValueError, match=r"device='cuda:%d'" % max(n, 0)):
        resolve_device(f"cuda:{n}")
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    if not HAS_MPS:
        with pytest.raises(ValueError, match="MPS is not available"):
            resolve_device("mps")
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(0)


@pytest.mark.parametrize("make", [
    lambda: CLIPFeatures(device="gpu"),
    lambda: DiffusionAttention(device="gpu"),
], ids=["clip", "diffusion"])
def test_extractors_refuse_a_bad_device_before_loading(make):
    loads = _cache.load_count()
    est = make()
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', "
                       r"'cuda', 'cuda:N' or 'mps', got 'gpu'\.$"):
        if isinstance(est, CLIPFeatures):
            est.compute_logits(np.zeros((32, 32, 3), np.uint8), ["a", "b"])
        else:
            est.compute_affinity(np.zeros((32, 32, 3), np.uint8), (2, 2))
    assert _cache.load_count() == loads
