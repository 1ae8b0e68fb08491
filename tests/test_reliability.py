"""No silent wrong answers: parameters, class lists, templates, evaluation.

Every float parameter refuses NaN (and infinity where a finite value is
meant) and values outside its meaningful range, with a message naming the
parameter and its unit; class lists that CLIP cannot tell apart or whose
order is not fixed are refused; the evaluation refuses NaN scores and says
when a result is undefined.
"""

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning

from dsolo_sk._validation import check_classes
from dsolo_sk.datasets import load_dataset, make_scenes, write_fake_dataset
from dsolo_sk.evaluation import ResultStore, evaluate
from dsolo_sk.features import (CLIPFeatures, ColorPositionAffinity,
                               DiffusionAttention, FeatureExtractor)
from dsolo_sk.features._cache import load_count
from dsolo_sk.metrics import confusion_matrix, mean_iou
from dsolo_sk.protocols import Protocol, get_protocol

NAN, INF = float("nan"), float("inf")
IMAGE = np.random.default_rng(0).integers(0, 256, (32, 48, 3), np.uint8)


# -- float parameters ------------------------------------------------------------
AFFINITY_CASES = [
    ({"sigma_color": 1e-300}, r"sigma_color must be >= 0\.001 \(RGB"),
    ({"sigma_color": 25.0}, r"sigma_color must be <= 10 \(RGB scaled"),
    ({"sigma_color": INF}, "sigma_color must be a finite number"),
    ({"sigma_color": NAN}, "sigma_color must be a finite number"),
    ({"sigma_position": 64}, r"sigma_position must be <= 10 \(a fraction "
                             "of the grid's longer side"),
    ({"sigma_position": 1e-300}, "sigma_position must be >= 0.001"),
    ({"sigma_position": NAN}, "sigma_position must be a finite number"),
    ({"sigma_position": -INF}, "sigma_position must be a finite number"),
]


def test_affinity_bandwidths():
    for params, match in AFFINITY_CASES:
        with pytest.raises(ValueError, match=match):
            ColorPositionAffinity(**params).compute_affinity(IMAGE, (2, 3))


def test_affinity_infinite_position_bandwidth_and_huge_grids():
    a = ColorPositionAffinity(sigma_position=INF).compute_affinity(IMAGE,
                                                                   (2, 3))
    assert np.isfinite(a).all() and np.allclose(a.sum(1), 1)
    with pytest.raises(ValueError, match="grid_shape counts patches"):
        ColorPositionAffinity().compute_affinity(IMAGE, (448, 448))


GRID_CASES = [
    ("44", TypeError, "grid_shape must be a pair of integers .*string '44'"),
    (b"44", TypeError, "grid_shape must be a pair of integers"),
    ((2.5, 3), TypeError, r"grid_shape\[0\] \(rows\) must be an integer"),
    ((2, 3.0), TypeError, r"grid_shape\[1\] \(cols\) must be an integer"),
    ((2, True), TypeError, r"grid_shape\[1\] \(cols\) must be an integer"),
    ((2, NAN), TypeError, r"grid_shape\[1\] \(cols\) must be an integer"),
    ((4,), ValueError, "grid_shape must hold two integers .*got 1"),
    ((2, 3, 1), ValueError, "grid_shape must hold two integers .*got 3"),
    ((0, 3), ValueError, r"grid_shape\[0\] \(rows\) must be >= 1"),
    ((2, -3), ValueError, r"grid_shape\[1\] \(cols\) must be >= 1"),
    ({2, 3}, TypeError, "set"),
    (None, TypeError, "grid_shape must be a pair of integers"),
    (6, TypeError, "grid_shape must be a pair of integers"),
]


@pytest.mark.parametrize("grid,err,match", GRID_CASES)
def test_affinity_grid_shapes(grid, err, match):
    from dsolo_sk.features import DegradedAffinity, ProjectedAttentionAffinity

    for affinity in (ColorPositionAffinity(), ProjectedAttentionAffinity(),
                     DegradedAffinity(ColorPositionAffinity())):
        with pytest.raises(err, match=match):
            affinity.compute_affinity(IMAGE, grid)


def test_affinity_grid_shapes_of_numpy_and_torch_integers():
    import torch

    ref = ColorPositionAffinity().compute_affinity(IMAGE, (2, 3))
    for grid in (np.array([2, 3]), (np.int64(2), np.int32(3)),
                 torch.Size([2, 3]), [2, 3]):
        np.testing.assert_array_equal(
            ColorPositionAffinity().compute_affinity(IMAGE, grid), ref)


PROTOCOL_CASES = [
    ("logit_scale", 1e6, r"logit_scale must be <= 1000 \(inverse "
                         "temperature"),
    ("logit_scale", INF, "logit_scale must be a finite number"),
    ("short_side", 100000, "short_side must be <= 8192 pixels"),
    ("long_side_max", 10 ** 6, "long_side_max must be <= 8192 pixels"),
    ("slide_crop", 10 ** 6, "slide_crop must be <= 8192 pixels"),
    ("n_images", -1, "n_images must be >= 0"),
    ("split", "", "split must be a non-empty str"),
]


def test_protocol_fields():
    for field, value, match in PROTOCOL_CASES:
        with pytest.raises((ValueError, TypeError), match=match):
            get_protocol("voc21", **{field: value})


def test_protocol_accepts_numpy_numbers_and_serialises():
    p = Protocol(dataset="toy", n_classes=np.int64(3),
                 short_side=np.int64(64), logit_scale=np.float32(50))
    assert type(p.n_classes) is int and type(p.logit_scale) is float
    assert len(p.fingerprint()) == 16
    assert Protocol.from_dict(p.to_dict()) == p


SCENE_CASES = [
    ({"noise": NAN}, "noise must be a finite number"),
    ({"margin": INF}, "margin must be a finite number"),
    ({"leakage": -0.1}, r"leakage must be >= 0 \(cosine units\)"),
    ({"noise_correlation": 1e9}, "noise_correlation must be <= 100 patches"),
    ({"warp": 3.0}, r"warp must be <= 1 \(a fraction of the image size\)"),
    ({"image_size": 100000}, "image_size must be <= 2048 pixels"),
    ({"n_present": 2.5}, "n_present must be an integer or a pair"),
    ({"n_present": (3, 2)}, "low <= high"),
    ({"affinity": "colour"}, "compute_affinity"),
]


def test_scene_generator_parameters():
    for params, match in SCENE_CASES:
        kwargs = dict(n_scenes=1, n_classes=6, image_size=32,
                      random_state=0) | params
        with pytest.raises((ValueError, TypeError), match=match):
            make_scenes(**kwargs)
    X, y = make_scenes(n_scenes=np.int64(1), n_classes=np.int32(6),
                       n_present=np.int64(2), image_size=np.int64(32),
                       random_state=0)
    assert len(X) == 1 and y[0].shape == (32, 32)


def test_fake_dataset_parameters(tmp_path):
    root = write_fake_dataset("voc20", tmp_path, n_images=np.int64(1),
                              size=(np.int64(8), 12))
    assert len(load_dataset("voc20", root)) == 1
    with pytest.raises(ValueError, match="size\\[0\\] must be >= 4 pixels"):
        write_fake_dataset("voc20", tmp_path, size=(1, 12))
    with pytest.raises(TypeError, match="seed must be"):
        write_fake_dataset("voc20", tmp_path, seed="abc")


def test_extractor_sizes_are_bounded_before_loading():
    loads = load_count()
    for params, match in (({"short_side": 100000},
                           "short_side must be <= 8192 pixels"),
                          ({"window": 10 ** 6},
                           "window must be <= 8192 pixels")):
        fe = FeatureExtractor(logits=CLIPFeatures(pretrained=None, **params),
                              affinity=False, classes=["a", "b"])
        with pytest.raises(ValueError, match=match):
            fe.fit()
    fe = FeatureExtractor(logits=CLIPFeatures(pretrained=None),
                          affinity=DiffusionAttention(resolution=100000),
                          classes=["a", "b"])
    with pytest.raises(ValueError, match="resolution must be <= 8192"):
        fe.fit()
    assert load_count() == loads


def test_counts_accept_numpy_integers(tmp_path):
    store = ResultStore(tmp_path, {"dataset": "toy"}, np.int64(2))
    store.save("a", np.int64(0), np.eye(2, dtype=np.int64))
    np.testing.assert_array_equal(store.load("a"), np.eye(2))
    assert confusion_matrix([np.zeros((2, 2), int)], [np.zeros((2, 2), int)],
                            np.int64(2))[0, 0] == 4
    with pytest.raises(TypeError, match="n_classes must be an integer"):
        ResultStore(tmp_path, {"dataset": "toy"}, 2.0)


# -- class lists and templates ---------------------------------------------------
CLASS_CASES = [
    ({"cat", "dog"}, TypeError, "classes is a set, whose order"),
    (frozenset({"cat", "dog"}), TypeError, "whose order"),
    (["Cat", "cat"], ValueError, "cannot tell apart.*'Cat' and 'cat'"),
    (["traffic  light", "Traffic Light "], ValueError, "cannot tell apart"),
    (["sky, Cloud", "sky,cloud"], ValueError, "cannot tell apart"),
    (["fish &amp; chips", "fish & chips"], ValueError, "cannot tell apart"),
    (["cat", None], TypeError, r"classes\[1\] must be a string, got None"),
    (["cat", " , "], ValueError, r"classes\[1\] = ' , ' holds no name"),
    (["cat", "cat"], ValueError, "name 'cat' twice"),
    (None, ValueError, "classes is required"),
]


def test_class_lists_the_text_tower_cannot_tell_apart():
    for classes, exc, match in CLASS_CASES:
        with pytest.raises(exc, match=match):
            check_classes(classes)
        # and where users pass them, before any model loads
        fe = FeatureExtractor(logits=CLIPFeatures(pretrained=None),
                              affinity=False, classes=classes)
        with pytest.raises(exc, match=match):
            fe.fit()
    # ordered lists are kept as given
    assert check_classes(("Cat ", "dog")) == ("Cat ", "dog")
    assert check_classes({"cat": 0, "dog": 1}.keys()) == ("cat", "dog")


def test_templates_must_have_one_plain_field():
    """An escaped '{{}}' passes a naive count of '{}' but leaves every class
    with the same prompt; other fields make str.format fail."""
    loads = load_count()
    for template in ["a photo of a {{}}.", "a {} of {x}.", "a {} }",
                     "a {0}.", "a {name}.", "{} and {}", "a {:>9}",
                     "a {!r}", "a photo of {", "no name", 3]:
        clip = CLIPFeatures(pretrained=None,
                            templates=["a photo of a {}.", template])
        fe = FeatureExtractor(logits=clip, affinity=False,
                              classes=["a", "b"])
        with pytest.raises((ValueError, TypeError),
                           match="template .*one '{}'"):
            fe.fit()
    assert load_count() == loads


def test_names_that_collide_after_truncation_at_77_tokens(tiny_clip):
    long = "very " * 80
    with pytest.raises(ValueError, match="truncates each prompt at 77"):
        tiny_clip.compute_logits(IMAGE, [long + "cat", long + "dog"])
    # synonyms shared by two classes are allowed (COCO-Object's class file
    # lists "bed" on its background line too), identical sets are not
    assert tiny_clip.compute_logits(
        IMAGE, ["sky, bed", "bed"]).shape[0] == 2
    # the same synonyms in another order and case: the same class
    with pytest.raises(ValueError, match="same prompts"):
        tiny_clip.compute_logits(IMAGE, ["bed, sky", "cat", "Sky, BED"])


# -- evaluation -------------------------------------------------------------------
@pytest.fixture
def voc20(tmp_path):
    return load_dataset("voc20", write_fake_dataset("voc20", tmp_path / "d"))


def _scores(value):
    def segmenter(image):
        s = np.zeros((20,) + image.shape[:2], np.float32)
        s[3] = value
        return s
    return segmenter


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_evaluate_refuses_non_finite_scores(voc20, value):
    with pytest.raises(ValueError, match="scores must be finite"):
        evaluate(_scores(value), voc20, progress=False)


def test_evaluate_all_ignored_masks_warn_and_give_nan(voc20, tmp_path):
    from PIL import Image

    for i in range(len(voc20)):
        mask = np.asarray(Image.open(voc20.mask_path(i)))
        Image.fromarray(np.full_like(mask, 255)).save(voc20.mask_path(i))
    with pytest.warns(UndefinedMetricWarning, match="no pixel of the 2 "
                      "evaluated masks was scored"):
        res = evaluate(_scores(1.0), voc20, progress=False)
    assert np.isnan(res.miou) and np.isnan(res.iou.values).all()
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(mean_iou([np.full((2, 2), 255)],
                                 [np.zeros((2, 2), int)], 2))


def test_evaluate_refuses_lists_and_repeated_samples(voc20):
    images, masks = voc20.load()
    with pytest.raises(TypeError, match="dataset must be a benchmark reader"
                       ".*got list.*segmenter.score"):
        evaluate(_scores(1.0), list(zip(images, masks)), progress=False)
    voc20.ids = voc20.ids + voc20.ids[:1]
    with pytest.raises(ValueError, match="more than once"):
        evaluate(_scores(1.0), voc20, progress=False)


def test_evaluate_takes_numpy_limits(voc20):
    res = evaluate(_scores(1.0), voc20, limit=np.int64(1), progress=False)
    assert len(res.ids) == 1


def test_bad_arguments_are_named_before_anything_is_written(voc20, tmp_path):
    from dsolo_sk import DirectSegmenter
    from dsolo_sk.metrics import per_class_iou

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="mode"):
        evaluate(DirectSegmenter(mode="nope"), voc20, out=out,
                 progress=False)
    with pytest.raises(ValueError, match="protocol must be None, one of"):
        evaluate(_scores(1.0), voc20, protocol="paperz", out=out,
                 progress=False)
    assert not out.exists()
    with pytest.raises(TypeError, match="root must be a path"):
        load_dataset("voc20", None)
    with pytest.raises(TypeError, match="classes must be a list"):
        per_class_iou([np.zeros((2, 2), int)], [np.zeros((2, 2), int)], None)


# -- integer counts: a documented maximum, a clear error ------------------------
def test_scene_counts_have_a_maximum(tmp_path):
    from dsolo_sk._demo import run_demo
    from dsolo_sk.datasets import make_scene_family

    for call in (lambda n: make_scenes(n_scenes=n),
                 lambda n: make_scene_family("street", n_scenes=n),
                 lambda n: make_scene_family("clip_voc", n_scenes=n),
                 lambda n: run_demo(tmp_path / "demo", n_scenes=n)):
        with pytest.raises(ValueError, match="n_scenes must be <= 1000"):
            call(10 ** 9)
        with pytest.raises(TypeError, match="n_scenes must be an integer"):
            call(2.0)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("params,match", [
    ({"n_components": 10 ** 9}, "n_components must be <= 4096"),
    ({"n_frequencies": 2000}, "n_frequencies must be <= 16"),
    ({"n_sinks": 10 ** 9}, "n_sinks must be <= 16384"),
])
def test_attention_counts_have_a_maximum(params, match):
    from dsolo_sk.features import ProjectedAttentionAffinity

    with pytest.raises(ValueError, match=match):
        ProjectedAttentionAffinity(**params).compute_affinity(IMAGE, (2, 3))


def test_extractor_batch_size_has_the_segmenters_maximum():
    extractor = FeatureExtractor(logits=CLIPFeatures(), affinity=False,
                                 classes=["a", "b"], batch_size=10 ** 9)
    loads = load_count()
    with pytest.raises(ValueError, match="batch_size must be <= 4096"):
        extractor.transform([IMAGE])
    assert load_count() == loads


@pytest.mark.parametrize("kw,err,match", [
    ({"n_workers": 10 ** 6}, ValueError, "n_workers must be <= 256"),
    ({"n_workers": 0}, ValueError, "n_workers must be >= 1"),
    ({"n_workers": 1.5}, TypeError, "n_workers must be an integer"),
    ({"threads_per_worker": 10 ** 6}, ValueError,
     "threads_per_worker must be <= 256"),
])
def test_dask_counts_are_checked_before_any_work(kw, err, match, voc20,
                                                 tmp_path):
    from dsolo_sk.distributed import evaluate_distributed

    out = tmp_path / "run"
    with pytest.raises(err, match=match):
        evaluate_distributed(_scores(1.0), voc20, out=str(out),
                             progress=False, **kw)
    assert not out.exists()
