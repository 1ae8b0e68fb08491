"""The segmenter trusts no part: every output is checked at its boundary.

A normaliser, a discrepancy or an upsampler written by the user returns
an array of the documented container, real floating type, shape (against
N, P and the image) and finite values, or the segmenter refuses it with a
message naming the part and what was expected, before it can fail deep
inside (a numpy IndexError) or become wrong labels.
"""

import numpy as np
import pytest
import torch

from dsolo_sk import (DirectSegmenter, JointBilateralUpsampler,
                      LogitNormalizer, TransportVelocity)
from dsolo_sk.datasets import make_scenes


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(n_scenes=1, n_classes=5, image_size=64,
                       random_state=1)


class Disc:
    """A user's discrepancy: ``f(q, mass)``, no affinity."""

    requires_affinity = False

    def __init__(self, f):
        self.f = f

    def compute(self, q, affinity=None, mass=None):
        return self.f(q, mass)

    def __repr__(self):
        return "MyDiscrepancy()"


class Norm:
    """A user's normaliser: ``f(logits)``."""

    def __init__(self, f):
        self.f = f

    def normalize(self, logits):
        return self.f(logits)

    def __repr__(self):
        return "MyNormalizer()"


class Up:
    """A user's upsampler: ``f(scores, image)``."""

    def __init__(self, f):
        self.f = f

    def upsample(self, scores, image):
        return self.f(scores, image)

    def __repr__(self):
        return "MyUpsampler()"


def _ratio(q, mass):
    return q * (q.shape[1] * mass)[:, None]


def _jbu(s, image):
    return JointBilateralUpsampler().upsample(s, image)


BAD_SCORES = {
    "complex": (lambda q, m: _ratio(q, m) * (1 + 1j), TypeError, "complex"),
    "tuple": (lambda q, m: (_ratio(q, m),), TypeError, "tuple"),
    "list": (lambda q, m: _ratio(q, m).tolist(), TypeError, "list"),
    "string": (lambda q, m: "abc", TypeError, "string"),
    "None": (lambda q, m: None, TypeError, "None"),
    "object": (lambda q, m: _ratio(q, m).astype(object), TypeError,
               "object"),
    "bool": (lambda q, m: _ratio(q, m) > 1, TypeError, "boolean"),
    "int": (lambda q, m: (_ratio(q, m) * 10).astype(np.int64), TypeError,
            "integer"),
    "masked": (lambda q, m: np.ma.masked_less(_ratio(q, m), 1), TypeError,
               "MaskedArray"),
    "one row too few": (lambda q, m: _ratio(q, m)[1:], ValueError,
                        "shape"),
    "transposed": (lambda q, m: _ratio(q, m).T, ValueError, "shape"),
    "flat": (lambda q, m: _ratio(q, m).ravel(), ValueError, "shape"),
    "NaN": (lambda q, m: _ratio(q, m) * np.nan, ValueError, "NaN"),
    "inf": (lambda q, m: _ratio(q, m) + np.inf, ValueError, "infinite"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCORES))
def test_bad_discrepancy_outputs_are_refused_naming_the_part(scenes, case):
    X, _ = scenes
    f, err, words = BAD_SCORES[case]
    with pytest.raises(err) as info:
        DirectSegmenter(discrepancy=Disc(f)).predict(X)
    message = str(info.value)
    assert "MyDiscrepancy()" in message and "compute()" in message
    assert words in message or "shape" in message


def test_scores_offset_by_1e8_keep_their_labels(scenes):
    """float32 cannot resolve a margin of 1 at 1e8: the offset goes first
    (the classes without mass stayed predicted at 77 % of the pixels)."""
    X, _ = scenes
    ref = DirectSegmenter(discrepancy=Disc(_ratio)).predict(X)[0]
    got = DirectSegmenter(discrepancy=Disc(
        lambda q, m: _ratio(q, m) + 1e8)).predict(X)[0]
    np.testing.assert_array_equal(got, ref)
    # the float64 scores far from zero but spread: the same
    got = DirectSegmenter(discrepancy=Disc(
        lambda q, m: _ratio(q, m) * 1e3 - 1e12)).predict(X)[0]
    np.testing.assert_array_equal(got, ref)


def test_classes_without_mass_stay_below_large_float32_scores(scenes):
    """The score of a class without mass lies below the others by a margin
    float32 keeps (``min - 1`` is ``min`` above 2**24, so the class took
    every pixel where the others tie)."""
    X, _ = scenes

    def drop_first(logits):
        q, mass = _normalized(logits)
        mass = mass.copy()
        mass[0] = 0.0
        return q, mass

    seg = DirectSegmenter(normalizer=Norm(drop_first), discrepancy=Disc(
        lambda q, m: np.full(q.shape, 1e9, np.float32)))
    labels = seg.predict(X)[0]
    assert not (labels == 0).any()


def test_a_tensor_that_requires_grad_is_detached(scenes):
    X, _ = scenes
    ref = DirectSegmenter(discrepancy=Disc(_ratio)).predict(X)[0]
    grad = Disc(lambda q, m: torch.tensor(_ratio(q, m), requires_grad=True)
                * 1.0)
    np.testing.assert_array_equal(
        DirectSegmenter(discrepancy=grad).predict(X)[0], ref)


def _normalized(logits):
    return LogitNormalizer().normalize(logits)


BAD_NORMALIZERS = {
    "q of N-1 rows": (lambda L: (_normalized(L)[0][:-1], _normalized(L)[1]),
                      ValueError, "shape"),
    "mass of N+1": (lambda L: (_normalized(L)[0],
                               np.r_[_normalized(L)[1], 0.1]),
                    ValueError, "shape"),
    "q alone": (lambda L: _normalized(L)[0], TypeError, "pair"),
    "three items": (lambda L: _normalized(L) + (None,), TypeError, "pair"),
    "NaN q": (lambda L: (_normalized(L)[0] * np.nan, _normalized(L)[1]),
              ValueError, "NaN"),
    "negative mass": (lambda L: (_normalized(L)[0], -_normalized(L)[1]),
                      ValueError, "negative"),
    "complex q": (lambda L: (_normalized(L)[0] + 0j, _normalized(L)[1]),
                  TypeError, "complex"),
    "rows not summing to one": (lambda L: (_normalized(L)[0] * 2,
                                           _normalized(L)[1]),
                                ValueError, "sum to one"),
}


@pytest.mark.parametrize("case", sorted(BAD_NORMALIZERS))
def test_bad_normalizer_outputs_are_refused_naming_the_part(scenes, case):
    X, _ = scenes
    f, err, words = BAD_NORMALIZERS[case]
    with pytest.raises(err, match=words) as info:
        DirectSegmenter(normalizer=Norm(f)).predict(X)
    assert "MyNormalizer()" in str(info.value)


BAD_UPSAMPLERS = {
    "one class map too few": (lambda s, im: _jbu(s, im)[:-1], ValueError,
                              "shape"),
    "one row too tall": (lambda s, im: np.concatenate(
        [_jbu(s, im), _jbu(s, im)[:, :1]], 1), ValueError, "shape"),
    "NaN maps": (lambda s, im: _jbu(s, im) * np.nan, ValueError, "NaN"),
    "grid scores not upsampled": (lambda s, im: s, ValueError, "shape"),
    "HWN layout": (lambda s, im: _jbu(s, im).transpose(1, 2, 0), ValueError,
                   "shape"),
    "a list": (lambda s, im: list(_jbu(s, im)), TypeError, "list"),
    "integers": (lambda s, im: _jbu(s, im).astype(np.int32), TypeError,
                 "integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPSAMPLERS))
def test_bad_upsampler_outputs_are_refused_naming_the_part(scenes, case):
    X, _ = scenes
    f, err, words = BAD_UPSAMPLERS[case]
    for method in ("predict", "decision_function"):
        with pytest.raises(err, match=words) as info:
            getattr(DirectSegmenter(upsampler=Up(f)), method)(X)
        assert "MyUpsampler()" in str(info.value)
        assert "(5, 64, 64)" in str(info.value) or err is TypeError


def test_good_user_parts_in_float64_and_torch_pass(scenes):
    X, _ = scenes
    ref = DirectSegmenter(discrepancy=TransportVelocity()).predict(X)[0]
    seg = DirectSegmenter(
        discrepancy=TransportVelocity(),
        normalizer=Norm(lambda L: tuple(torch.as_tensor(a) for a in
                                        _normalized(L))),
        upsampler=Up(lambda s, im: _jbu(s, im).astype(np.float64)))
    got = seg.predict(X)[0]
    assert got.shape == ref.shape
    # the same distributions, as tensors: the same labels
    np.testing.assert_array_equal(
        got, DirectSegmenter(discrepancy=TransportVelocity(),
                             normalizer=LogitNormalizer()).predict(X)[0])


def test_a_plain_extractor_object_is_enough():
    """An object with compute_logits only (documented as enough) is not
    cloned the scikit-learn way (it has no get_params)."""
    class Plain:
        def compute_logits(self, image, classes):
            rng = np.random.default_rng(0)
            return rng.random((len(classes), 4, 4)).astype(np.float32)

    image = np.zeros((32, 32, 3), np.uint8)
    [labels] = DirectSegmenter(mode="kl", extractor=Plain()).predict(
        [image], ["a", "b"])
    assert labels.shape == (32, 32)
