"""The metrics against an independent computation of mmseg's definition.

mmseg (``IoUMetric`` / ``intersect_and_union``): per image, optionally
reduce the zero label (0 -> 255, k -> k - 1, 255 stays 255), drop pixels
whose label is the ignore index, then count per class the intersection
(pixels where prediction == label == c), the predicted area and the label
area; sum those over the dataset; IoU = intersection / union with
union = predicted + label - intersection; mIoU = nanmean over classes (a
class absent from both predictions and labels has 0 / 0 = NaN and does not
count).
"""

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from dsolo_sk.metrics import (confusion_matrix, iou_from_confusion,
                              mean_iou, per_class_iou)


def mmseg_reference(y_true, y_pred, n_classes, ignore_index=255,
                    reduce_zero_label=False):
    """Per-class IoU and mIoU, written straight from mmseg's definition."""
    inter = np.zeros(n_classes)
    area_pred = np.zeros(n_classes)
    area_label = np.zeros(n_classes)
    for label, pred in zip(y_true, y_pred):
        label = np.array(label, dtype=np.int64)
        if reduce_zero_label:
            label[label == 0] = 255
            label = label - 1
            label[label == 254] = 255
        keep = label != ignore_index
        label, pred = label[keep], np.asarray(pred)[keep]
        for c in range(n_classes):
            inter[c] += np.sum((pred == c) & (label == c))
            area_pred[c] += np.sum(pred == c)
            area_label[c] += np.sum(label == c)
    union = area_pred + area_label - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return iou, np.nanmean(iou)


def _random_maps(rng, n_images, n_used, n_classes, *, raw_zero=False):
    """Masks and predictions of varying sizes using only `n_used` classes."""
    t, p = [], []
    for _ in range(n_images):
        shape = tuple(rng.integers(5, 30, size=2))
        hi = n_used + int(raw_zero)
        label = rng.integers(0, hi, size=shape)
        label[rng.random(shape) < 0.15] = 255
        # Predictions agree with the label most of the time.
        pred = np.where(rng.random(shape) < 0.6,
                        np.clip(label - int(raw_zero), 0, n_used - 1),
                        rng.integers(0, n_used, size=shape))
        t.append(label.astype(np.uint8))
        p.append(pred.astype(np.int64))
    return t, p


@pytest.mark.parametrize("seed", range(5))
def test_mean_iou_matches_mmseg_with_absent_classes(seed):
    rng = np.random.default_rng(seed)
    n_classes, n_used = 9, 6  # classes 6, 7, 8 absent from both
    t, p = _random_maps(rng, 4, n_used, n_classes)
    # A class that is only ever predicted (IoU 0, counted).
    t[0][0, 0], p[0][0, 0] = 0, 7
    iou_ref, miou_ref = mmseg_reference(t, p, n_classes)
    iou = iou_from_confusion(confusion_matrix(t, p, n_classes))
    np.testing.assert_allclose(iou, iou_ref, equal_nan=True)
    assert np.isnan(iou[[6, 8]]).all() and iou[7] == 0
    assert mean_iou(t, p, n_classes) == pytest.approx(miou_ref, rel=1e-12)
    # The mean runs over the 7 present classes, not over 9.
    assert mean_iou(t, p, n_classes) == pytest.approx(
        np.sum(iou_ref[~np.isnan(iou_ref)]) / 7)


@pytest.mark.parametrize("seed", range(3))
def test_mean_iou_matches_mmseg_with_reduce_zero_label(seed):
    rng = np.random.default_rng(100 + seed)
    n_classes = 5
    t, p = _random_maps(rng, 3, 4, n_classes, raw_zero=True)
    iou_ref, miou_ref = mmseg_reference(t, p, n_classes,
                                        reduce_zero_label=True)
    kw = dict(reduce_zero_label=True)
    np.testing.assert_allclose(
        iou_from_confusion(confusion_matrix(t, p, n_classes, **kw)), iou_ref,
        equal_nan=True)
    assert mean_iou(t, p, n_classes, **kw) == pytest.approx(miou_ref)
    # Raw label 0 is ignored: changing predictions there changes nothing.
    p2 = [np.where(tt == 0, 4, pp) for tt, pp in zip(t, p)]
    assert mean_iou(t, p2, n_classes, **kw) == mean_iou(t, p, n_classes, **kw)


def test_confusion_matrix_matches_sklearn_on_kept_pixels():
    rng = np.random.default_rng(3)
    t, p = _random_maps(rng, 3, 4, 4)
    cm = confusion_matrix(t, p, 4)
    tt = np.concatenate([x.ravel() for x in t]).astype(int)
    pp = np.concatenate([x.ravel() for x in p])
    keep = tt != 255
    np.testing.assert_array_equal(
        cm, sk_confusion_matrix(tt[keep], pp[keep], labels=range(4)))
    assert cm.sum() == keep.sum()
    # Summed over images, not averaged per image.
    parts = sum(confusion_matrix([a], [b], 4) for a, b in zip(t, p))
    np.testing.assert_array_equal(cm, parts)


def test_custom_ignore_index_and_edge_cases():
    t = np.array([[0, 1], [2, 2]])
    p = np.array([[0, 1], [1, 2]])
    iou_ref, miou_ref = mmseg_reference([t], [p], 3, ignore_index=2)
    assert mean_iou([t], [p], 3, ignore_index=2) == pytest.approx(miou_ref)
    np.testing.assert_allclose(
        iou_from_confusion(confusion_matrix([t], [p], 3, ignore_index=2)),
        iou_ref, equal_nan=True)
    # Everything ignored: no class present, mIoU is NaN, with a warning.
    with pytest.warns(UndefinedMetricWarning, match="no pixel was scored"):
        assert np.isnan(mean_iou([np.full((2, 2), 255)], [p], 3))
    # A single 2-D pair is accepted as one image.
    assert mean_iou(t, t, 3) == 1.0
    da = per_class_iou([t], [p], ["a", "b", "c"])
    assert list(da["class"].values) == ["a", "b", "c"]
    np.testing.assert_allclose(da.values, mmseg_reference([t], [p], 3)[0])


def test_metric_input_errors():
    t = np.zeros((2, 2), int)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix([t], [np.zeros((2, 3), int)], 2)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix([t], [np.zeros((2, 2))], 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([t], [np.full((2, 2), 5)], 2)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix([t, t], [t], 2)
