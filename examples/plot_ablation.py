"""
The method's ablation on generated scenes
=========================================

The paper builds its segmenter in steps and measures each on Pascal VOC
(its Table of ablations): (I) the argmax of the raw CLIP logits, (II) the
pointwise KL discrepancy to the uniform distribution, (III) non-maximum
suppression before it, (IV) joint bilateral upsampling, then the two
refined discrepancies, (V) the optimal transport path and (VI) the maximum
transport velocity.

Without pretrained weights we run the same steps on generated scenes
(:func:`dsolo_sk.datasets.make_scenes`): warped Voronoi cells of 2-5
classes out of a vocabulary, logits with the failure modes of CLIP's dense
predictions (per-class bias, leakage of the large classes into every patch,
spatially correlated noise, low margins) and an affinity computed from the
image alone (:class:`~dsolo_sk.features.ColorPositionAffinity`). Every row
below is one :class:`~dsolo_sk.DirectSegmenter` configuration; the numbers
are computed while the documentation is built. The project's full benchmark
(``benchmarks/synthetic.py``, more scenes and every reading of each step)
is discussed on the :ref:`method page <method>`.
"""

# %%
# Generate scenes
# ---------------
# Each scene is a feature :class:`xarray.Dataset` (logits on the 28 x 28
# patch grid, the affinity between patches and the image) and a
# ground-truth mask. Segmenters take such Datasets directly.

import time

import matplotlib.pyplot as plt

from dsolo_sk import DirectSegmenter, InterpolationUpsampler, LogitNormalizer
from dsolo_sk.datasets import make_scenes
from dsolo_sk.metrics import mean_iou

X, y = make_scenes(n_scenes=10, n_classes=15, image_size=448, random_state=0)
n_classes = X[0].sizes["class"]
print(X[0])

# %%
# Score every step
# ----------------
# ``score`` would give the mIoU directly; here we keep the predictions to
# plot them.

steps = [
    ("I raw logits", dict(mode="raw", upsampler=InterpolationUpsampler())),
    ("II + KL", dict(mode="kl",
                     normalizer=LogitNormalizer(nms=False, min_share=0.0),
                     upsampler=InterpolationUpsampler())),
    ("III + NMS", dict(mode="kl", upsampler=InterpolationUpsampler())),
    ("IV + JBU", dict(mode="kl")),
    ("V path", dict(mode="path")),
    ("VI velocity", dict(mode="velocity")),
]

results = {}
for name, params in steps:
    t0 = time.perf_counter()
    pred = DirectSegmenter(**params, progress=False).predict(X)
    seconds = (time.perf_counter() - t0) / len(X)
    results[name] = (100 * mean_iou(y, pred, n_classes), seconds, pred)
    print(f"{name:<14s} mIoU {results[name][0]:5.1f} %   "
          f"{seconds:.2f} s/image")

# %%
# The ablation as a bar chart.

fig, ax = plt.subplots(figsize=(7, 3.2))
names = list(results)
ax.barh(names[::-1], [results[n][0] for n in names[::-1]], color="C0")
for k, n in enumerate(names[::-1]):
    ax.text(results[n][0] + 0.5, k, f"{results[n][0]:.1f}", va="center")
ax.set_xlabel("mIoU (%) on generated scenes")
ax.set_xlim(0, 100)
fig.tight_layout()
plt.show()

# %%
# What each step does to one scene
# ---------------------------------
# The raw argmax is noisy and biased towards the classes that leak into
# every patch; the discrepancies measured along the image's own structure
# (path and velocity) follow the regions.

k = 0
fig, axes = plt.subplots(2, 4, figsize=(12, 6.2))
axes = axes.ravel()
axes[0].imshow(X[k]["image"].values)
axes[0].set_title("image")
axes[1].imshow(y[k], cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
axes[1].set_title("ground truth")
for ax, name in zip(axes[2:], names):
    ax.imshow(results[name][2][k], cmap="tab20", vmin=0, vmax=19,
              interpolation="nearest")
    ax.set_title(name)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# The same ranking on a second set of scenes, through the estimator's
# ``score`` (mIoU in [0, 1]); the generator's `random_state` fixes the
# vocabulary's appearance and biases, so a new seed is a new vocabulary.

X2, y2 = make_scenes(n_scenes=4, n_classes=15, image_size=448,
                     random_state=1)
for mode in ("raw", "kl", "path", "velocity"):
    print(f"{mode:<9s}", round(100 * DirectSegmenter(mode=mode, progress=False)
                              .score(X2, y2), 1))
