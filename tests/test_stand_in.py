"""ColorPrototypeLogits: the documented model-free stand-in for CLIP."""

import numpy as np
import pytest

from dsolo_sk import DirectSegmenter
from dsolo_sk.features import ColorPositionAffinity, ColorPrototypeLogits

PROTOTYPES = {"red": (220, 30, 30), "blue": (30, 30, 220),
              "green": (30, 200, 30)}


def _halves(h=40, w=70):
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = PROTOTYPES["red"]
    image[:, w // 2:] = PROTOTYPES["blue"]
    return image


def test_logits_have_clip_scale_and_cover_every_pixel():
    stand_in = ColorPrototypeLogits(PROTOTYPES)
    logits = stand_in.compute_logits(_halves(), ["red", "blue", "green"])
    # ceil(40 / 16) x ceil(70 / 16) patches: the edges are partial patches
    assert logits.shape == (3, 3, 5) and logits.dtype == np.float32
    assert 0.1 < logits.mean() < 0.3 and logits.std() < 0.1
    labels = logits.argmax(0)
    assert (labels[:, :2] == 0).all() and (labels[:, 3:] == 1).all()
    # the same seed gives the same logits
    np.testing.assert_array_equal(
        logits, stand_in.compute_logits(_halves(), ["red", "blue", "green"]))


def test_synonyms_and_missing_prototypes():
    stand_in = ColorPrototypeLogits(PROTOTYPES, noise=0)
    a = stand_in.compute_logits(_halves(), ["crimson, red", "blue"])
    b = stand_in.compute_logits(_halves(), ["red", "blue"])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="'sky' has no colour"):
        stand_in.compute_logits(_halves(), ["red", "sky"])


@pytest.mark.parametrize("params, exc, match", [
    ({"prototypes": None}, TypeError, "prototypes is required"),
    ({"prototypes": {}}, TypeError, "prototypes"),
    ({"prototypes": {"a": (0, 0)}}, ValueError, r"prototypes\['a'\]"),
    ({"prototypes": {"a": (0, 0, 300)}}, ValueError, "0-255"),
    ({"patch_size": 0}, ValueError, "patch_size"),
    ({"noise": float("nan")}, ValueError, "noise"),
    ({"scale": -1.0}, ValueError, "scale"),
])
def test_bad_parameters(params, exc, match):
    stand_in = ColorPrototypeLogits(**{"prototypes": PROTOTYPES, **params})
    with pytest.raises(exc, match=match):
        stand_in.compute_logits(_halves(), ["red", "blue"])


def test_the_segmenter_runs_on_it_in_every_mode(photos):
    coffee = photos[1]
    stand_in = ColorPrototypeLogits({"cup": (245, 235, 220),
                                     "saucer": (160, 35, 12),
                                     "table": (200, 120, 70)})
    for mode in ("raw", "kl", "path", "velocity"):
        seg = DirectSegmenter(mode=mode, extractor=stand_in,
                              affinity=ColorPositionAffinity(), progress=False)
        [labels] = seg.predict([coffee], ["cup", "saucer", "table"])
        assert labels.shape == coffee.shape[:2]
        assert set(np.unique(labels)) == {0, 1, 2}
