"""
Tuning τ and ε with a grid search on cached features
=====================================================

The segmenters learn nothing: their parameters, such as the convergence
threshold :math:`\\tau` of the velocity mode and the entropic
regularisation :math:`\\varepsilon` of the path mode, only change the
post-processing of the features. So they are tuned like any scikit-learn
hyperparameter, with :class:`~sklearn.model_selection.GridSearchCV` and
cross-validation on images with ground truth, and the expensive part, the
model forwards that produce the features, must run once per image for the
whole search.

This example runs offline on generated scenes
(:func:`dsolo_sk.datasets.make_scenes`): first on precomputed feature
Datasets, then from raw images through a Pipeline whose features step is a
:class:`~dsolo_sk.model_selection.FeatureCache`. Searches use
``error_score="raise"``: scikit-learn's default (NaN) would hide a failing
candidate.
"""

# %%
# Generated scenes and their features
# -----------------------------------
#
# Each scene comes as a feature Dataset (CLIP-like logits, the
# colour-position affinity between patches and the image) and a
# ground-truth mask.

import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

from dsolo_sk import DirectSegmenter, TransportPath, TransportVelocity
from dsolo_sk.datasets import make_scenes
from dsolo_sk.datatree import gather_datatree
from dsolo_sk.features import FeatureExtractor
from dsolo_sk.metrics import mean_iou_scorer, per_class_iou
from dsolo_sk.model_selection import (FeatureCache, clear_feature_cache,
                                      cv_results_to_dataset,
                                      feature_cache_info)

X, y = make_scenes(n_scenes=12, n_classes=10, image_size=192,
                   random_state=0)
classes = [str(c) for c in X[0]["class"].values]
print(X[0])

# %%
# A grid search on precomputed features
# -------------------------------------
#
# The grid is a list of two sub-grids, one per discrepancy: the search
# chooses the discrepancy object itself, each with its own parameter
# (:math:`\tau` of :class:`~dsolo_sk.TransportVelocity`,
# :math:`\varepsilon` of :class:`~dsolo_sk.TransportPath`), tuned as
# ``discrepancy__tau`` and ``discrepancy__epsilon``. The scorer is the mean
# IoU of the field (equal to the segmenters' ``score``).

param_grid = [
    {"discrepancy": [TransportVelocity()],
     "discrepancy__tau": [0.03, 0.1, 0.3, 1.0, 3.0]},
    {"discrepancy": [TransportPath()],
     "discrepancy__epsilon": [0.02, 0.05, 0.1, 0.3, 1.0]},
]
search = GridSearchCV(DirectSegmenter(progress=False), param_grid,
                      cv=KFold(3), scoring=mean_iou_scorer,
                      error_score="raise")
start = time.perf_counter()
search.fit(X, y)
print(f"{len(search.cv_results_['params'])} candidates x 3 folds in "
      f"{time.perf_counter() - start:.1f} s")
print("best:", search.best_params_, f"mIoU {search.best_score_:.3f}")

# %%
# :func:`~dsolo_sk.model_selection.cv_results_to_dataset` lays the results
# out with one dimension per searched parameter, one sub-grid at a time.

velocity = cv_results_to_dataset(search, ["discrepancy__tau"])
path = cv_results_to_dataset(search, ["discrepancy__epsilon"])
print(velocity[["mean_test_score", "std_test_score"]])

# %%
# The best estimator, refit (there is nothing to fit) on all scenes, gives
# labelled score maps; :func:`~dsolo_sk.datatree.gather_datatree` keeps a
# batch of them, with the masks and predictions, in one tree, one node per
# image.

best = search.best_estimator_
tree = gather_datatree(scores=best.decision_function(X[:3]),
                       labels=best.predict(X[:3]), masks=y[:3])
print(tree["image_000"])
iou = per_class_iou(y, best.predict(X), classes)
print(iou.round(3).to_series().to_string())

# %%
# From raw images, with cached features
# -------------------------------------
#
# With raw images the features step runs the models. A
# :class:`~dsolo_sk.model_selection.FeatureCache` around the
# :class:`~dsolo_sk.features.FeatureExtractor` keeps each image's
# features, so that every candidate and fold after the first reuses them
# (scikit-learn's ``Pipeline(memory=...)`` caches only the fits, not the
# features of the validation images). Here a stand-in for CLIP hands back
# the generated logits and affinity of each scene; with weights it would
# be ``CLIPFeatures()`` and ``DiffusionAttention()``.


class GeneratedScenes:
    """Stand-in extractor: the generated features of known images."""

    def __init__(self, scenes):
        self.table = {ds["image"].values.tobytes(): (
            ds["logits"].values, ds["affinity"].values) for ds in scenes}

    def compute_logits(self, image, classes):
        return self.table[image.tobytes()][0]

    def compute_affinity(self, image, grid_shape):
        return self.table[image.tobytes()][1]


stand_in = GeneratedScenes(X)
images = [ds["image"].values for ds in X]
pipe = Pipeline([
    ("features", FeatureCache(FeatureExtractor(
        logits=stand_in, affinity=stand_in, classes=classes,
        progress=False))),
    ("segment", DirectSegmenter(discrepancy=TransportVelocity(),
                                progress=False)),
])
clear_feature_cache()
raw_search = GridSearchCV(
    pipe, {"segment__discrepancy__tau": [0.1, 0.3, 1.0],
           "segment__discrepancy__max_steps": [20, 50, 100]},
    cv=KFold(3), error_score="raise").fit(images, y)
info = feature_cache_info()
print(f"9 candidates x 3 folds + refit: features computed "
      f"{info['misses']} times for {len(images)} images, reused "
      f"{info['hits']} times")
print("best:", raw_search.best_params_,
      f"mIoU {raw_search.best_score_:.3f}")

# %%
# The figure: the cross-validated mIoU along each parameter (mean and
# standard deviation over the folds), and the best estimator's prediction
# for one scene.

fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
for ax, res, dim, label in ((axes[0], velocity, "discrepancy.tau",
                             r"$\tau$ (velocity)"),
                            (axes[1], path, "discrepancy.epsilon",
                             r"$\varepsilon$ (path)")):
    ax.errorbar(res[dim], res["mean_test_score"], res["std_test_score"],
                marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("mIoU (3-fold)")
    ax.grid(alpha=0.3)
low = min(float((r["mean_test_score"] - r["std_test_score"]).min())
          for r in (velocity, path))
high = max(float((r["mean_test_score"] + r["std_test_score"]).max())
           for r in (velocity, path))
for ax in axes[:2]:
    ax.set_ylim(low - 0.02, high + 0.02)
node = tree["image_000"]
axes[2].imshow(X[0]["image"].values)
axes[2].set_title("scene 0")
axes[3].imshow(node["labels"], cmap="tab10", vmin=0, vmax=9,
               interpolation="nearest")
axes[3].contour(node["masks"], levels=np.arange(10) + 0.5, colors="w",
                linewidths=0.6)
axes[3].set_title(f"best: {type(best.discrepancy).__name__} "
                  "(lines: ground truth)")
for ax in axes[2:]:
    ax.set_axis_off()
fig.tight_layout()
plt.show()
