"""Property-based tests of the public contract (hypothesis).

Every public entry point, given anything a user might pass, either returns
a finite, well-shaped result or raises one of the documented errors --
:class:`ValueError`, :class:`TypeError`, :class:`FileNotFoundError`,
:class:`~dsolo_sk.exceptions.UnreadableFileError`,
:class:`~dsolo_sk.exceptions.UnwritableFolderError` -- whose message names
the argument or the file at fault. Any other exception (an
``OverflowError``, a decoder's ``SyntaxError``, a ``KeyError`` from deep
inside a library), a NaN in a result, or a message that names nothing
fails the test.

The examples are bounded (sizes of a few dozen pixels, a few dozen
examples per property, fixed seeds) so that the module runs in well under
a minute; ``derandomize=True`` makes every run try the same examples.
"""

import json
import os
import tempfile
import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning

from dsolo_sk import DirectSegmenter
from dsolo_sk._validation import check_classes
from dsolo_sk.datasets import load_class_names, make_scenes, read_image
from dsolo_sk.evaluation import ResultStore, evaluate
from dsolo_sk.exceptions import UnreadableFileError, UnwritableFolderError
from dsolo_sk.features import ColorPositionAffinity, from_arrays
from dsolo_sk.metrics import mean_iou
from dsolo_sk.protocols import Protocol

DOCUMENTED = (ValueError, TypeError, FileNotFoundError, UnreadableFileError,
              UnwritableFolderError)

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


def contract(call, *names):
    """``call()``'s result, or None after a documented error naming one of
    `names` (an argument or a file)."""
    try:
        out = call()
    except DOCUMENTED as exc:
        event(f"raised {type(exc).__name__}")
        message = str(exc)
        assert any(str(n) in message for n in names), (
            f"{type(exc).__name__} names none of {names}: {message}")
        return None
    event("returned")
    return out


# -- strategies ---------------------------------------------------------------
#: what a user may pass where a float is meant
ANY_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.sampled_from([0, 1, -1, 64, 255, 1e-300, 1e300]),
    st.integers(-10, 10 ** 6),
    st.sampled_from([None, "0.1", True, [0.1], np.float32(np.nan),
                     np.int64(3)]),
)
#: what a user may pass where a count or a size is meant
ANY_COUNT = st.one_of(
    st.integers(-3, 70), st.sampled_from([0, 10 ** 6, 2 ** 63 - 1]),
    st.sampled_from([2.0, 2.5, float("nan"), "4", None, np.int64(8),
                     np.uint8(16)]),
)
IMAGE = np.random.default_rng(0).integers(0, 256, (24, 36, 3), np.uint8)


def _finite(array):
    return bool(np.isfinite(np.asarray(array, dtype=np.float64)).all())


@st.composite
def one_fault(draw, valid, wild):
    """Valid values for every parameter except at most one, `bad`, drawn
    from `wild[bad]`: (bad or None, kwargs)."""
    bad = draw(st.sampled_from([None] + list(valid)))
    kwargs = {k: draw(wild.get(k, ANY_NUMBER) if k == bad else v)
              for k, v in valid.items()}
    return bad, kwargs


def names_of(bad, kwargs, *others, related=None):
    """Who a refusal may name: the faulty parameter (or one bound to it,
    listed in `related`), or any when none is faulty (a combination of
    valid values can still be refused)."""
    if bad:
        return (bad,) + tuple((related or {}).get(bad, ()))
    return tuple(kwargs) + others


# -- parameters ---------------------------------------------------------------
SIGMA = st.floats(1e-3, 10)


@FUZZ
@given(case=one_fault({"sigma_color": SIGMA,
                       "sigma_position": st.one_of(SIGMA, st.just(
                           float("inf")))}, {}),
       grid=st.tuples(st.integers(-1, 6), st.integers(-1, 6)))
def test_affinity_parameters(case, grid):
    bad, kwargs = case
    est = ColorPositionAffinity(**kwargs)
    names = names_of(bad, kwargs) + ("grid_shape",)
    a = contract(lambda: est.compute_affinity(IMAGE, grid), *names)
    if a is not None:
        p = grid[0] * grid[1]
        assert a.shape == (p, p) and _finite(a)
        np.testing.assert_allclose(a.sum(1), 1, rtol=1e-4)


@FUZZ
@given(case=one_fault(
    {"n_classes": st.integers(2, 300), "short_side": st.integers(1, 1000),
     "long_side_max": st.integers(1000, 8192),
     "slide_crop": st.integers(16, 512), "slide_stride": st.integers(1, 16),
     "logit_scale": st.floats(1e-3, 1000),
     "prob_threshold": st.one_of(st.none(), st.floats(0, 1))},
    {k: ANY_COUNT for k in ("n_classes", "short_side", "long_side_max",
                            "slide_crop", "slide_stride")}),
       shape=st.tuples(st.integers(1, 3000), st.integers(1, 3000)))
def test_protocol_fields(case, shape):
    bad, kwargs = case
    related = {"short_side": ("long_side_max",),
               "slide_crop": ("slide_stride",)}
    p = contract(lambda: Protocol(dataset="toy", inference="slide",
                                  has_background=True, **kwargs),
                 *names_of(bad, kwargs, related=related))
    if p is not None:
        h, w = p.resized_shape(shape)
        assert 1 <= min(h, w) and max(h, w) <= p.long_side_max
        for y0, y1, x0, x1 in p.windows((h, w)):
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert len(p.fingerprint()) == 16
        json.dumps(p.to_dict())


SCALE = st.floats(0, 0.2)


@FUZZ
@given(case=one_fault(
    {"n_classes": st.integers(2, 8),
     "n_present": st.one_of(st.integers(1, 2),
                            st.tuples(st.just(1), st.integers(1, 2))),
     "image_size": st.sampled_from([16, 32, 48]),
     "patch_size": st.sampled_from([8, 16]),
     "margin": SCALE, "bias": SCALE, "leakage": SCALE, "noise": SCALE,
     "noise_correlation": st.floats(0, 3), "warp": st.floats(0, 0.2)},
    {"n_classes": ANY_COUNT,
     "n_present": st.one_of(ANY_COUNT, st.tuples(ANY_COUNT, ANY_COUNT)),
     "image_size": st.one_of(ANY_COUNT, st.sampled_from([33, 10 ** 6])),
     "patch_size": st.one_of(ANY_COUNT, st.sampled_from([5, "8"]))}))
def test_scene_generator(case):
    bad, kwargs = case
    related = {"n_classes": ("n_present",),
               "image_size": ("patch_size", "number of patches")}
    out = contract(lambda: make_scenes(n_scenes=1, affinity=False,
                                       random_state=0, **kwargs),
                   *names_of(bad, kwargs, "number of patches",
                             related=related))
    if out is not None:
        [ds], [mask] = out
        assert _finite(ds["logits"].values)
        size = kwargs["image_size"]
        assert mask.shape == (size, size)
        assert 0 <= mask.min() and mask.max() < kwargs["n_classes"]


# -- class lists --------------------------------------------------------------
NAMES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["cat", "Cat", " cat ", "ca t", "cat, kitten", ",",
                     "CAT,kitten", "&amp;", "&", "\t", "é", "e\u0301"]),
    st.sampled_from([None, 3, b"cat", ["cat"]]),
)


WORDS = st.text(alphabet="abcdefghij ", min_size=1, max_size=8)


CLOSE_NAMES = st.lists(st.sampled_from(["cat", "Cat", " cat", "dog",
                                       "DOG ", "sky", "s  ky", "sky,"]),
                       min_size=2, max_size=4, unique=True)


def _distinct_for_clip(names):
    keys = {", ".join(p for p in (" ".join(part.lower().split())
                                  for part in c.split(",")) if p)
            for c in names}
    return len(keys) == len(names) and all(keys)


@FUZZ
@given(classes=st.one_of(
    st.lists(WORDS, min_size=2, max_size=6),
    CLOSE_NAMES,
    st.lists(NAMES, max_size=6),
    st.frozensets(st.text(max_size=4), max_size=4),
    st.sampled_from([None, "cat", 3, b"cat,dog"])))
def test_class_lists(classes):
    out = contract(lambda: check_classes(classes), "classes")
    if out is not None:
        assert len(out) >= 2 and all(isinstance(c, str) for c in out)
        assert not isinstance(classes, (set, frozenset)), "unordered"
        assert _distinct_for_clip(out), out


# -- segmenters on feature Datasets -------------------------------------------
MODES = ("raw", "kl", "path", "velocity")


@st.composite
def feature_sets(draw):
    n = draw(st.integers(2, 4))
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["random", "constant", "huge", "tiny",
                                 "nan", "one-hot"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    logits = rng.uniform(-1, 1, (n, rows, cols)).astype(np.float32)
    if kind == "constant":
        logits[:] = 0.25
    elif kind == "huge":
        logits *= np.float32(1e30)
    elif kind == "tiny":
        logits *= np.float32(1e-30)
    elif kind == "nan":
        logits[0, 0, 0] = np.nan
    elif kind == "one-hot":
        logits = (logits == logits.max(0)).astype(np.float32)
    p = rows * cols
    aff_kind = draw(st.sampled_from(["random", "zeros", "identity",
                                     "zero-row", "huge", "negative",
                                     "none"]))
    affinity = rng.random((p, p)).astype(np.float32)
    if aff_kind == "zeros":
        affinity[:] = 0
    elif aff_kind == "identity":
        affinity = np.eye(p, dtype=np.float32)
    elif aff_kind == "zero-row":
        affinity[0] = 0
    elif aff_kind == "huge":
        affinity *= np.float32(1e30)
    elif aff_kind == "negative":
        affinity[0, 0] = -1
    elif aff_kind == "none":
        affinity = None
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    classes = [f"class {k}" for k in range(n)]
    if draw(st.booleans()):  # names CLIP may not tell apart
        k = draw(st.integers(1, n - 1))
        classes[k] = draw(st.sampled_from([
            "Class 0", " class 0", "class  0", "class 0,", "CLASS 0"]))
    return logits, affinity, image, classes


@settings(FUZZ, max_examples=60)
@given(data=feature_sets(), mode=st.sampled_from(MODES))
def test_segmenters_on_feature_datasets(data, mode):
    logits, affinity, image, classes = data
    ds = contract(lambda: from_arrays(logits, affinity, image, classes),
                  "logits", "affinity", "image", "classes")
    if ds is None:
        return
    assert _distinct_for_clip(classes)
    seg = DirectSegmenter(mode=mode, progress=False)
    with warnings.catch_warnings():
        # degenerate features may warn (non-convergence, say): allowed
        warnings.simplefilter("ignore")
        labels = contract(lambda: seg.predict([ds]), "affinity", "mode",
                          "features", "X[0]")
        scores = contract(lambda: seg.decision_function([ds]), "affinity",
                          "mode", "features", "X[0]")
    if labels is not None:
        [lab] = labels
        assert lab.shape == image.shape[:2]
        assert 0 <= lab.min() and lab.max() < len(classes)
    if scores is not None:
        [sc] = scores
        assert sc.shape == (len(classes),) + image.shape[:2]
        assert _finite(sc.values), (mode, "non-finite scores")


# -- metrics ------------------------------------------------------------------
VALID_MAPS = st.lists(st.sampled_from([0, 1, 2, 255]), min_size=12,
                      max_size=12).map(lambda v: np.array(v).reshape(3, 4))
LABEL_MAPS = st.one_of(
    VALID_MAPS,
    st.just(np.full((3, 4), 255)),
    st.lists(st.sampled_from([0, 1, 2, 255, -1, 7]), min_size=12,
             max_size=12).map(lambda v: np.array(v).reshape(3, 4)),
    st.sampled_from([np.zeros((4, 3), int), np.zeros((3, 4), float),
                     np.zeros((3, 4), bool), None, "mask"]),
)


@st.composite
def mask_pairs(draw):
    n = draw(st.integers(0, 3))
    maps = st.one_of(VALID_MAPS, VALID_MAPS, LABEL_MAPS)
    y_true = [draw(maps) for _ in range(n)]
    y_pred = [draw(maps) for _ in range(n + draw(st.sampled_from(
        [0, 0, 0, 1, -1])) if n else 0)]
    return y_true, y_pred


@FUZZ
@given(pair=mask_pairs(),
       n_classes=st.one_of(st.integers(3, 9), st.integers(-1, 9), ANY_COUNT))
def test_mean_iou(pair, n_classes):
    y_true, y_pred = pair
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        miou = contract(lambda: mean_iou(y_true, y_pred, n_classes),
                        "mask", "prediction", "ground truth", "n_classes",
                        "y_true", "y_pred")
    if miou is not None:
        if np.isnan(miou):  # the documented NaN comes with its warning
            assert any(issubclass(w.category, UndefinedMetricWarning)
                       for w in caught)
        else:
            assert 0 <= miou <= 1


# -- files --------------------------------------------------------------------
def _png_bytes():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(IMAGE).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


@st.composite
def mangled_files(draw, good):
    how = draw(st.sampled_from(["prefix", "flip", "random", "header",
                                "append", "good"]))
    data = bytearray(good)
    if how == "prefix":
        data = data[:draw(st.integers(0, len(good)))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "random":
        data = bytearray(draw(st.binary(max_size=300)))
    elif how == "header":
        data = data[:draw(st.integers(8, 40))] + draw(st.binary(max_size=40))
    elif how == "append":
        data += draw(st.binary(min_size=1, max_size=50))
    return bytes(data)


class _Flat:
    """A stand-in for CLIP (the files, not the model, are under test)."""

    def compute_logits(self, image, classes):
        return np.ones((len(classes), 2, 3), np.float32)


def _extractor():
    from dsolo_sk.features import FeatureExtractor

    return FeatureExtractor(logits=_Flat(), affinity=False,
                            classes=["a", "b"], progress=False)


@FUZZ
@given(content=mangled_files(PNG))
def test_image_files(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "photo.png")
        with open(path, "wb") as f:
            f.write(content)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing leaks from PIL
            image = contract(lambda: read_image(path), "photo.png")
            feats = contract(lambda: _extractor().transform([path]),
                             "photo.png")
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3
        assert image.shape[2] == 3 and min(image.shape[:2]) >= 1
    if feats is not None:
        np.testing.assert_array_equal(feats[0]["image"].values, image)


@FUZZ
@given(content=st.one_of(
    st.text(max_size=60).map(lambda t: t.encode("utf-8")),
    st.binary(max_size=60),
    st.lists(st.sampled_from(["cat", "Cat", "dog, puppy", "", " ", ",",
                              "sky"]), max_size=5).map(
        lambda lines: "\n".join(lines).encode("utf-8")),
    st.lists(WORDS, min_size=2, max_size=5).map(
        lambda lines: "\r\n".join(lines).encode("utf-8"))))
def test_class_files(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "classes.txt")
        with open(path, "wb") as f:
            f.write(content)
        names = contract(lambda: load_class_names(path), "classes.txt")
    if names is not None:
        assert check_classes(names) == tuple(names)


@settings(FUZZ, max_examples=25)
@given(content=st.one_of(st.binary(max_size=200),
                         mangled_files(b"PK\x03\x04" + bytes(100))))
def test_feature_cache_entries(content, tmp_path_factory):
    from dsolo_sk.model_selection import FeatureCache, clear_feature_cache

    store = tmp_path_factory.mktemp("store")
    cache = FeatureCache(_extractor(), memory=str(store))
    clear_feature_cache()
    [first] = cache.transform([IMAGE])
    folder = store / "dsolo_sk_features"
    [entry] = os.listdir(folder)
    (folder / entry).write_bytes(content)
    clear_feature_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [again] = cache.transform([IMAGE])
    xr.testing.assert_identical(first, again)
    assert any("unusable entry" in str(w.message) for w in caught)


@FUZZ
@given(body=st.one_of(
    st.binary(max_size=100),
    st.just("a folder"),
    st.dictionaries(st.sampled_from(["format", "run", "id", "n_classes",
                                     "cm_index", "cm_count", "checksum"]),
                    st.one_of(st.integers(-5, 5), st.text(max_size=5),
                              st.lists(st.integers(-5, 10), max_size=4),
                              st.none())).map(
        lambda d: json.dumps(d).encode())))
def test_result_records(body, tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("run"), {"dataset": "toy"},
                        2)
    if body == "a folder":
        os.makedirs(store.path("img"))
    else:
        with open(store.path("img"), "wb") as f:
            f.write(body)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        cm = contract(lambda: store.load("img"), "img.json")
    assert cm is None  # never counted without its checksum
    assert body == "a folder" or not os.path.exists(store.path("img"))


# -- evaluation ---------------------------------------------------------------
@pytest.fixture(scope="module")
def voc20(tmp_path_factory):
    from dsolo_sk.datasets import load_dataset, write_fake_dataset

    root = write_fake_dataset("voc20", tmp_path_factory.mktemp("voc20"),
                              size=(12, 16))
    return load_dataset("voc20", root)


@settings(FUZZ, max_examples=30)
@given(kind=st.sampled_from(["finite", "nan", "inf", "shape", "classes",
                             "list", "none", "strings"]),
       limit=st.one_of(st.none(), ANY_COUNT))
def test_evaluate_with_any_segmenter_output(voc20, kind, limit):
    def segmenter(image):
        s = np.random.default_rng(0).random((20,) + image.shape[:2])
        if kind == "nan":
            s[1, 0, 0] = np.nan
        elif kind == "inf":
            s[2] = np.inf
        elif kind == "shape":
            s = s[:, :-1]
        elif kind == "classes":
            s = s[:5]
        elif kind == "list":
            s = s.tolist()
        elif kind == "none":
            s = None
        elif kind == "strings":
            s = np.full(s.shape, "x")
        return s

    res = contract(lambda: evaluate(segmenter, voc20, limit=limit,
                                    progress=False),
                   "scores", "limit", "segmenter")
    if res is not None:
        assert res.confusion_matrix.shape == (20, 20)
        assert res.confusion_matrix.min() >= 0
        assert 0 <= res.miou <= 1


@FUZZ
@given(out=st.sampled_from(["file", "below-file", "new", "nested-new",
                            "empty", "nul"]))
def test_evaluate_output_folders(voc20, out, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("out")
    (tmp / "file").write_text("x")
    path = {"file": str(tmp / "file"), "below-file": str(tmp / "file" / "x"),
            "new": str(tmp / "new"), "nested-new": str(tmp / "a" / "b"),
            "empty": "", "nul": str(tmp / "a\x00b")}[out]
    calls = []

    def segmenter(image):
        calls.append(1)
        return np.ones((20,) + image.shape[:2])

    res = contract(lambda: evaluate(segmenter, voc20, out=path,
                                    progress=False), "out")
    if res is None:
        assert calls == []  # refused before any image was computed
    else:
        assert os.path.isfile(os.path.join(path, "results.json"))
