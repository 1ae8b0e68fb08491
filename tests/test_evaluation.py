"""The evaluation harness: protocol scoring, resumable runs, corrupt files."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from dsolo_sk.datasets import (load_class_names, load_dataset,
                               split_synonyms, write_fake_dataset)
from dsolo_sk.evaluation import (ResultStore, class_probabilities, evaluate,
                                 predict_image, prepare_estimator)
from dsolo_sk.features._contract import max_per_class
from dsolo_sk.metrics import confusion_matrix, iou_from_confusion
from dsolo_sk.protocols import Protocol, get_protocol

# A deterministic stand-in segmenter: scores each class by the closeness of
# a pixel's colour to the colour the fake datasets paint that class with.
ESTIMATOR_SOURCE = '''
import time
import numpy as np
from sklearn.base import BaseEstimator

COLOURS = np.random.default_rng(7).integers(0, 256, (256, 3)).astype(float)


class ColourSegmenter(BaseEstimator):
    def __init__(self, classes=None, sleep=0.0, offset=0):
        self.classes = classes
        self.sleep = sleep
        self.offset = offset

    def decision_function(self, X):
        assert self.classes is not None
        time.sleep(self.sleep)
        n = len(self.classes)
        out = []
        for image in X:
            cols = COLOURS[self.offset:self.offset + n]
            d = ((image[None].astype(float) - cols[:, None, None]) ** 2).sum(-1)
            out.append(-np.sqrt(d) / 64.0)
        return out
'''
_ns = {}
exec(compile(ESTIMATOR_SOURCE, "colour_segmenter", "exec"), _ns)
ColourSegmenter = _ns["ColourSegmenter"]


@pytest.fixture
def voc(tmp_path):
    root = write_fake_dataset("voc21", tmp_path / "data", n_images=6, seed=3)
    return load_dataset("voc21", root)


SMALL = dict(short_side=32)  # keeps the resized images tiny


def test_evaluate_scores_the_protocol_and_writes_results(voc, tmp_path):
    protocol = get_protocol("voc21", **SMALL)
    out = tmp_path / "out"
    res = evaluate(ColourSegmenter(), voc, protocol=protocol, out=out,
                   progress=False)
    # The harness's confusion matrix is the metric of its own predictions.
    est, geometry = prepare_estimator(ColourSegmenter(), voc.classes,
                                      protocol)
    assert geometry == "harness" and est.classes == voc.classes
    preds = [predict_image(est, voc[i].image, protocol) for i in range(6)]
    masks = [voc[i].mask for i in range(6)]
    cm = confusion_matrix(masks, preds, 21)
    np.testing.assert_array_equal(res.confusion_matrix, cm)
    assert res.miou > 0.5  # colours give the classes away
    assert res.n_computed == 6 and res.ids == voc.ids
    data = json.loads((out / "results.json").read_text())
    assert data["protocol"] == protocol.to_dict()
    assert data["dataset"] == "voc21" and data["n_images"] == 6
    assert data["miou"] == pytest.approx(res.miou)
    assert np.array_equal(data["confusion_matrix"], cm)
    assert list(data["per_class_iou"])[0] == "background"
    iou = iou_from_confusion(cm)
    assert data["per_class_iou"]["aeroplane"] == (
        None if np.isnan(iou[1]) else pytest.approx(iou[1]))
    assert data["segmenter"]["class"].endswith("ColourSegmenter")
    lines = (out / "per_class_iou.csv").read_text().splitlines()
    assert lines[0] == "class_index,class,iou,gt_pixels,predicted_pixels"
    assert len(lines) == 1 + 21 + 1 and lines[-1].startswith(",mIoU,")
    assert len(os.listdir(out / "per_image")) == 6
    # A second call computes nothing and gives the same matrix.
    again = evaluate(ColourSegmenter(), voc, protocol=protocol, out=out,
                     progress=False)
    assert again.n_computed == 0
    np.testing.assert_array_equal(again.confusion_matrix, cm)


def test_limit_and_resume_with_a_larger_limit(voc, tmp_path):
    p = get_protocol("voc21", **SMALL)
    full = evaluate(ColourSegmenter(), voc, protocol=p, progress=False)
    part = evaluate(ColourSegmenter(), voc, protocol=p, out=tmp_path,
                    limit=2, progress=False)
    assert part.ids == voc.ids[:2] and part.n_computed == 2
    rest = evaluate(ColourSegmenter(), voc, protocol=p, out=tmp_path,
                    progress=False)
    assert rest.n_computed == 4
    np.testing.assert_array_equal(rest.confusion_matrix,
                                  full.confusion_matrix)


def test_prob_threshold_sends_uncertain_pixels_to_background():
    image = np.zeros((8, 10, 3), np.uint8)

    def flat(img):  # three classes, nearly tied: top probability ~1/3
        s = np.zeros((3,) + img.shape[:2])
        s[2] += 0.01
        return s

    p = Protocol(dataset="toy", n_classes=3, short_side=8,
                 prob_threshold=0.5, has_background=True)
    assert (predict_image(flat, image, p) == 0).all()
    q = Protocol(dataset="toy", n_classes=3, short_side=8)
    assert (predict_image(flat, image, q) == 2).all()
    # A large logit scale makes the same scores confident.
    r = Protocol(dataset="toy", n_classes=3, short_side=8,
                 prob_threshold=0.5, has_background=True, logit_scale=1000)
    assert (predict_image(flat, image, r) == 2).all()


def test_sliding_windows_average_the_window_scores():
    calls = []

    def position(img):  # class 1 wins right of x = 20 in every window
        calls.append(img.shape[:2])
        s = np.zeros((2,) + img.shape[:2])
        s[1] = 1.0
        return s

    p = Protocol(dataset="toy", n_classes=2, short_side=48, inference="slide",
                 slide_crop=32, slide_stride=16)
    labels = predict_image(position, np.zeros((48, 96, 3), np.uint8), p)
    assert calls == [(32, 32)] * (2 * 5) and (labels == 1).all()
    # Scores at a coarser size are upsampled to the window.
    coarse = predict_image(lambda im: np.stack([np.zeros((4, 4)),
                                                np.ones((4, 4))]),
                           np.zeros((10, 12, 3), np.uint8),
                           Protocol(dataset="toy", n_classes=2, short_side=9))
    assert coarse.shape == (10, 12) and (coarse == 1).all()


def test_predict_proba_is_read_as_probabilities(voc):
    class Proba:
        def predict_proba(self, X):
            p = np.full((21,) + X[0].shape[:2], 0.3 / 20)
            p[4] = 0.7
            return [p]

    p = get_protocol("voc21", **SMALL)  # threshold 0.1 < 0.7
    assert (predict_image(Proba(), voc[0].image, p) == 4).all()
    with pytest.raises(TypeError, match="decision_function"):
        predict_image(Proba(), voc[0].image, p, scores="decision_function")


def test_estimator_errors(voc):
    p = get_protocol("voc21", **SMALL)
    with pytest.raises(ValueError, match=r"expected \(21, H, W\)"):
        predict_image(lambda im: np.zeros((3, 4, 4)), voc[0].image, p)
    with pytest.raises(TypeError, match="per-class score maps"):
        evaluate(object(), voc, protocol=p, progress=False)
    with pytest.raises(ValueError, match="60 classes"):
        evaluate(ColourSegmenter(), voc, protocol=get_protocol("context60"),
                 progress=False)
    with pytest.raises(ValueError, match="uint8"):
        predict_image(ColourSegmenter(classes=["a", "b"]),
                      np.zeros((4, 4)), p)


def test_corrupt_result_files_are_recomputed_never_counted(voc, tmp_path):
    p = get_protocol("voc21", **SMALL)
    out = tmp_path / "out"
    ref = evaluate(ColourSegmenter(), voc, protocol=p, out=out,
                   progress=False)
    store_dir = out / "per_image"
    files = sorted(store_dir.iterdir())
    # 1. half-written (truncated) file
    text = files[0].read_text()
    files[0].write_text(text[:len(text) // 2])
    # 2. a count changed, checksum left alone
    body = json.loads(files[1].read_text())
    body["cm_count"][0] += 1000
    files[1].write_text(json.dumps(body))
    # 3. garbage bytes
    files[2].write_bytes(b"\x00\xff garbage")
    # 4. a valid record of another image copied over this one
    files[3].write_text(files[4].read_text())
    # 5. a leftover temporary file of a killed writer
    (store_dir / ".x.json.abc.tmp").write_text("{")
    with pytest.warns(UserWarning, match="corrupt") as rec:
        res = evaluate(ColourSegmenter(), voc, protocol=p, out=out,
                       progress=False)
    warned = " ".join(str(w.message) for w in rec)
    for f in files[:4]:
        assert f.name in warned
    assert res.n_computed == 4
    np.testing.assert_array_equal(res.confusion_matrix, ref.confusion_matrix)
    assert not (store_dir / ".x.json.abc.tmp").exists()
    assert len(list(store_dir.iterdir())) == 6


def test_an_output_folder_of_another_run_is_refused(voc, tmp_path):
    p = get_protocol("voc21", **SMALL)
    evaluate(ColourSegmenter(), voc, protocol=p, out=tmp_path, limit=1,
             progress=False)
    with pytest.raises(ValueError, match=r"another run.*protocol"):
        evaluate(ColourSegmenter(), voc, protocol=get_protocol("voc21"),
                 out=tmp_path, limit=1, progress=False)
    with pytest.raises(ValueError, match=r"another run.*segmenter"):
        evaluate(ColourSegmenter(offset=1), voc, protocol=p, out=tmp_path,
                 limit=1, progress=False)


def test_result_store_round_trip(tmp_path):
    store = ResultStore(tmp_path, {"dataset": "toy"}, 3)
    cm = np.arange(9).reshape(3, 3)
    store.save("city/img 1", 0, cm, 0.5)
    assert os.path.basename(store.path("city/img 1")) == "city__img_1.json"
    np.testing.assert_array_equal(store.load("city/img 1"), cm)
    with pytest.raises(ValueError, match="shape"):
        store.save("x", 1, np.zeros((2, 2)))
    # Records of one run are foreign to another.
    other = ResultStore(tmp_path / "o", {"dataset": "other"}, 3)
    os.makedirs(os.path.dirname(other.path("a")), exist_ok=True)
    with open(store.path("city/img 1")) as f, open(other.path("city/img 1"),
                                                   "w") as g:
        g.write(f.read())
    with pytest.warns(UserWarning, match="another run"):
        assert other.load("city/img 1") is None


RUNNER = '''
import sys
from dsolo_sk.datasets import load_dataset
from dsolo_sk.evaluation import evaluate
from dsolo_sk.protocols import get_protocol
exec(open(sys.argv[3]).read())
ds = load_dataset("voc21", sys.argv[1])
evaluate(ColourSegmenter(sleep=0.03), ds,
         protocol=get_protocol("voc21", short_side=32), out=sys.argv[2],
         progress=False)
'''


def _n_results(out):
    try:
        return sum(n.endswith(".json") for n in os.listdir(out / "per_image"))
    except FileNotFoundError:
        return 0


def test_killed_runs_resume_to_the_identical_matrix(tmp_path):
    n_images = 36
    root = write_fake_dataset("voc21", tmp_path / "data", n_images=n_images,
                              size=(20, 28), seed=5)
    ds = load_dataset("voc21", root)
    p = get_protocol("voc21", short_side=32)
    ref = evaluate(ColourSegmenter(), ds, protocol=p, progress=False)
    src = tmp_path / "est.py"
    src.write_text(ESTIMATOR_SOURCE)
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(RUNNER))
    out = tmp_path / "out"
    rng = random.Random(0)
    # Kill two runs at random points: after a random number of results,
    # plus a random delay that lands anywhere in the next image (writes
    # included).
    for sig, upto in ((signal.SIGTERM, 12), (signal.SIGKILL, 26)):
        before = _n_results(out)
        target = rng.randint(before + 1, upto)
        proc = subprocess.Popen([sys.executable, str(runner), root, str(out),
                                 str(src)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _n_results(out) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "the run makes no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(sig)
        proc.wait()
        assert proc.returncode == -sig
        assert before < _n_results(out) < n_images
    # The same command, uninterrupted, finishes the run.
    proc = subprocess.run([sys.executable, str(runner), root, str(out),
                           str(src)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    with open(out / "results.json") as f:
        data = json.load(f)
    assert data["confusion_matrix"] == ref.confusion_matrix.tolist()
    assert 0 < data["n_computed"] < n_images - 2
    assert data["n_images"] == n_images


# -- end to end: the real segmenter on every layout ---------------------------
E2E_MODE = os.environ.get("DSOLO_SK_TEST_MODE", "velocity")


@pytest.fixture(scope="module")
def direct_segmenter(tiny_clip_files):
    from dsolo_sk.features import CLIPFeatures, ColorPositionAffinity
    from dsolo_sk.segmenters import DirectSegmenter
    clip = CLIPFeatures(tiny_clip_files["config"],
                        tiny_clip_files["checkpoint"], device="cpu",
                        templates=["a photo of a {}."])
    return DirectSegmenter(mode=E2E_MODE, extractor=clip,
                           affinity=ColorPositionAffinity(), progress=False)


@pytest.mark.parametrize("key", ["voc21", "voc20", "context60", "context59",
                                 "coco_stuff", "coco_object", "cityscapes",
                                 "ade20k"])
def test_end_to_end_on_every_layout(key, direct_segmenter, tmp_path):
    root = write_fake_dataset(key, tmp_path / "data", n_images=2,
                              size=(20, 30))
    ds = load_dataset(key, root)
    for setting in ("paper", "sclip"):
        protocol = get_protocol(key, setting, short_side=32, slide_crop=16,
                                slide_stride=8)
        res = evaluate(direct_segmenter, ds, protocol=protocol,
                       out=tmp_path / setting, progress=False)
        assert res.info["geometry"] == "estimator"
        clip = res.info["segmenter"]["params"]["extractor"]["params"]
        assert clip["short_side"] == 32
        assert clip["window"] == (16 if setting == "sclip" else None)
        masks = [ds[i].mask for i in range(2)]
        assert res.confusion_matrix.sum() == sum(
            int((m != 255).sum()) for m in masks)
        assert res.confusion_matrix.shape == (ds.n_classes,) * 2
        assert 0 <= res.miou <= 1


# -- the background rule, the area rule and the resampling ------------------
class ConstantQueries(BaseEstimator):
    """A logits extractor whose per-query cosines are the same on every
    patch of a 2 x 3 grid: `stuff` for the queries of class 0, `winner`
    for the first query of class 1, `other` for every other query. It has
    the geometry parameters of CLIPFeatures (which it ignores), so the
    harness hands it the protocol like it hands CLIPFeatures."""

    def __init__(self, stuff=0.20, winner=0.23, other=0.18, short_side=336,
                 max_long_side=2048, window=None, stride=None):
        self.stuff = stuff
        self.winner = winner
        self.other = other
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.window = window
        self.stride = stride

    def compute_query_logits(self, image, classes):
        owner = np.array([k for k, name in enumerate(classes)
                          for _ in split_synonyms(name)])
        cos = np.where(owner == 0, self.stuff, self.other)
        cos[np.flatnonzero(owner == 1)[0]] = self.winner
        return (np.broadcast_to(cos[:, None, None], (len(cos), 2, 3))
                .astype(np.float32), owner)

    def compute_logits(self, image, classes):
        q, owner = self.compute_query_logits(image, classes)
        return max_per_class(q, owner, len(classes))


VOC21_CLASSES = load_class_names("voc21")


def test_class_probabilities_reproduce_the_worked_example():
    # The VOC21 layout at scale 40: 26 stuff names at 0.20, aeroplane at
    # 0.23, the 29 other queries at 0.18.
    q, owner = ConstantQueries().compute_query_logits(None, VOC21_CLASSES)
    assert q.shape[0] == 56 and (owner == 0).sum() == 26
    p = class_probabilities(q, owner, 40)
    assert p.shape == (21, 2, 3) and (p.argmax(0) == 1).all()
    np.testing.assert_allclose(p.max(0), 0.0784, atol=5e-5)  # < 0.1
    # The other order (max over synonyms, then softmax over classes)
    # would give 0.258: the pixel would stay aeroplane.
    logits = max_per_class(q, owner, 21)
    other_order = np.exp(40 * logits) / np.exp(40 * logits).sum(0)
    np.testing.assert_allclose(other_order.max(0), 0.2582, atol=5e-5)
    with pytest.raises(ValueError, match="query_class"):
        class_probabilities(q, owner[:-1], 40)
    with pytest.raises(ValueError, match="outside"):
        class_probabilities(q, owner, 40, n_classes=20)
    with pytest.raises(ValueError, match="logit_scale"):
        class_probabilities(q, owner, float("nan"))


@pytest.mark.parametrize("mode", ["raw", "kl", "path", "velocity"])
def test_the_peers_background_rule_in_every_mode(mode):
    from dsolo_sk.features import ColorPositionAffinity
    from dsolo_sk.segmenters import DirectSegmenter

    seg = DirectSegmenter(mode=mode, extractor=ConstantQueries(),
                          affinity=ColorPositionAffinity(), progress=False)
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), np.uint8)
    p = get_protocol("voc21", short_side=16)  # the paper's: prob_thd 0.1
    est, geometry = prepare_estimator(seg, VOC21_CLASSES, p)
    assert geometry == "estimator" and p.background_rule == "auto"
    # Every mode predicts aeroplane; CLIP's probability computed as the
    # peers do is 0.078 < 0.1: the worked example's pixels are background.
    scores = est.decision_function([image])[0].values
    assert (scores.argmax(0) == 1).all()
    assert (predict_image(est, image, p, geometry=geometry) == 0).all()
    clip = dataclasses.replace(p, background_rule="clip")
    assert (predict_image(est, image, clip, geometry=geometry) == 0).all()
    # The segmenter's own scores read as cosines never fire in the
    # discrepancy modes, and in the raw mode they give the other order's
    # 0.258: nothing falls to background.
    own = dataclasses.replace(p, background_rule="scores")
    assert (predict_image(est, image, own, geometry=geometry) == 1).all()


class QuerySegmenter(BaseEstimator):
    """Scores one class everywhere, whatever its CLIP extractor says."""

    def __init__(self, classes=None, extractor=None, label=2):
        self.classes = classes
        self.extractor = extractor
        self.label = label

    def decision_function(self, X):
        s = np.zeros((len(self.classes),) + X[0].shape[:2])
        s[self.label] = 1.0
        return [s]


def test_the_clip_label_rule_reads_the_predicted_class():
    classes = ["sky", "cat", "dog"]
    seg = QuerySegmenter(extractor=ConstantQueries(stuff=0.1, winner=0.2,
                                                   other=0.1))
    p = Protocol(dataset="toy", n_classes=3, short_side=8, has_background=True,
                 prob_threshold=0.5)
    est, geometry = prepare_estimator(seg, classes, p)
    image = np.zeros((8, 12, 3), np.uint8)
    # CLIP: cat with p = e^8 / (e^8 + 2 e^4) = 0.965; dog (predicted) 0.018.
    for rule, expected in (("auto", 2), ("clip", 2), ("clip_label", 0),
                           ("scores", 2)):
        q = dataclasses.replace(p, background_rule=rule)
        assert (predict_image(est, image, q, geometry=geometry)
                == expected).all(), rule
    # Without the segmenter's geometry there are no CLIP cosines to read.
    with pytest.raises(ValueError, match="compute_query_logits"):
        predict_image(est, image, dataclasses.replace(
            p, background_rule="clip"), geometry="harness")
    with pytest.raises(ValueError, match="background_rule='scores'"):
        predict_image(lambda im: np.zeros((3,) + im.shape[:2]), image,
                      dataclasses.replace(p, background_rule="clip_label"))


def test_sclip_area_rule_gives_small_classes_to_the_next_best():
    image = np.zeros((10, 10, 3), np.uint8)

    def scores(img):
        s = np.zeros((4,) + img.shape[:2])
        s[0] = 0.1            # background, second best everywhere
        s[1, :9] = 1.0        # 90 pixels
        s[2, 9, :] = 1.0      # 10 pixels: 10 % of the non-background area
        s[3, 0, 0] = 2.0      # 1 pixel
        return s

    def proto(**kw):
        return Protocol(dataset="toy", n_classes=4, short_side=10,
                        has_background=True, **kw)

    plain = predict_image(scores, image, proto())
    assert (plain[9] == 2).all() and plain[0, 0] == 3
    # SCLIP keeps a class whose area is above area_thd times the
    # non-background area (89 + 10 + 1 = 100 pixels): 10 is not above 10.
    area = predict_image(scores, image, proto(area_threshold=0.1))
    assert (area[9] == 0).all() and area[0, 0] == 1
    assert (area[1:9] == 1).all()
    assert (predict_image(scores, image, proto(area_threshold=0.09))[9]
            == 2).all()


@pytest.mark.parametrize("resampling", ["opencv", "antialias"])
def test_the_protocol_resamples_like_the_peers(resampling):
    seen = []

    def record(img):
        seen.append(img.copy())
        return np.zeros((2,) + img.shape[:2])

    # Columns 0, 255, 255, 255, 0, 255, 255, 255, shrunk 4 times to 2
    # columns: OpenCV's bilinear resize samples x = 1.5 and 5.5, between
    # two white columns, and does not widen its filter; an antialiased
    # resize averages the black columns in.
    image = np.full((4, 8, 3), 255, np.uint8)
    image[:, [0, 4]] = 0
    p = Protocol(dataset="toy", n_classes=2, short_side=1,
                 resampling=resampling)
    predict_image(record, image, p)
    assert seen[0].shape == (1, 2, 3)
    if resampling == "opencv":
        assert (seen[0] == 255).all()
    else:
        assert (seen[0] < 250).all()


def test_evaluate_records_the_background_rule(voc, tiny_clip_files, tmp_path):
    from dsolo_sk.features import CLIPFeatures
    from dsolo_sk.segmenters import DirectSegmenter

    clip = CLIPFeatures(tiny_clip_files["config"],
                        tiny_clip_files["checkpoint"], device="cpu",
                        templates=["a photo of a {}."])
    seg = DirectSegmenter(mode="kl", extractor=clip, progress=False)
    p = get_protocol("voc21", short_side=32)
    est, geometry = prepare_estimator(seg, voc.classes, p)
    image = voc[0].image
    # The harness reads the per-query cosines of the segmenter's own
    # extractor, set up with the protocol's geometry.
    ext = est.get_params()["extractor"]
    assert (ext.short_side, ext.resampling, ext.pos_interpolation) == (
        32, "opencv", "scale_factor")
    q, owner = ext.compute_query_logits(image, voc.classes)
    assert q.shape[0] == 56
    up = F.interpolate(torch.from_numpy(q)[None], size=image.shape[:2],
                       mode="bilinear", align_corners=False)[0].numpy()
    top = class_probabilities(up, owner, 40).max(0)
    logits = max_per_class(up, owner, 21)
    class_order = 1 / np.exp(40 * (logits - logits.max(0))).sum(0)
    # a threshold between the two orders' top probabilities
    thd = float(np.median(top + (class_order - top) / 2))
    q_p = dataclasses.replace(p, prob_threshold=thd)
    visual = ext._load().model.visual
    calls = []
    hook = visual.conv1.register_forward_hook(lambda *a: calls.append(1))
    try:
        other = voc[1].image
        labels_other = predict_image(est, other, q_p, geometry=geometry)
    finally:
        hook.remove()
    # one CLIP forward for the segmenter and the rule together
    assert len(calls) == 1 and labels_other.shape == other.shape[:2]
    labels = predict_image(est, image, q_p, geometry=geometry)
    scores = est.decision_function([image])[0].values
    expected = np.where(top < thd, 0, scores.argmax(0))
    np.testing.assert_array_equal(labels, expected)
    assert ((top < thd) != (class_order < thd)).any()
    res = evaluate(seg, voc, protocol=q_p, out=tmp_path, limit=1,
                   progress=False)
    assert res.info["background_rule"] == "clip"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["background_rule"] == "clip"
    assert data["protocol"]["background_rule"] == "auto"
