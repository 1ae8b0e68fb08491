"""
Evaluating on a benchmark, resumably
====================================

:func:`dsolo_sk.evaluation.evaluate` runs a segmenter over a benchmark in
its standard layout, under the benchmark's protocol, and writes every
image's result as soon as it is computed, so that an interrupted run
resumes where it stopped.

No benchmark can be downloaded while this documentation is built, so
:func:`~dsolo_sk.datasets.write_fake_dataset` writes a tiny fake one in the
exact layout of Pascal VOC (``VOCdevkit/VOC2012/JPEGImages``,
``SegmentationClass`` palette PNGs, ``ImageSets/Segmentation/val.txt``):
rectangles of random classes, each class painted in its own colour with
noise, and a row of ignored pixels. With a real dataset, only ``root``
changes.
"""

# %%
# A fake Pascal VOC
# -----------------

import json
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from dsolo_sk import DirectSegmenter
from dsolo_sk.datasets import load_dataset, write_fake_dataset
from dsolo_sk.evaluation import evaluate
from dsolo_sk.features import ColorPositionAffinity, ColorPrototypeLogits
from dsolo_sk.plot import label_palette
from dsolo_sk.protocols import get_protocol

workdir = tempfile.mkdtemp()
root = write_fake_dataset("voc21", os.path.join(workdir, "data"),
                          n_images=6, size=(120, 160), seed=0)
dataset = load_dataset("voc21", root)
print(dataset.name, len(dataset), "images;", len(dataset.classes), "classes")
print("class 15:", dataset.classes[15])

# %%
# The mask holds class indices, and 255 for the pixels that are not
# scored: drawn here with one colour per class
# (:func:`dsolo_sk.plot.label_palette`) and the ignored pixels masked out,
# in white.

sample = dataset[0]
n_classes = len(dataset.classes)
cmap = ListedColormap(label_palette(n_classes) / 255.0)
cmap.set_bad("white")
present = [int(c) for c in np.unique(sample.mask) if c != 255]
print("classes in", sample.id, {c: dataset.classes[c].split(",")[0]
                                for c in present})
fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
axes[0].imshow(sample.image)
axes[0].set_title(sample.id)
axes[1].imshow(np.ma.masked_equal(sample.mask, 255), cmap=cmap, vmin=-0.5,
               vmax=n_classes - 0.5, interpolation="nearest")
axes[1].set_title("mask (white: 255, ignored)")
for ax in axes:
    ax.set_axis_off()
plt.show()

# %%
# A stand-in for CLIP
# -------------------
# The fake dataset's classes are colours, not objects, so CLIP would be no
# use on it. The model-free stand-in
# :class:`~dsolo_sk.features.ColorPrototypeLogits` scores each patch by
# its colour distance to a colour per class, here measured on the
# dataset's own annotations: an oracle that exists only to exercise the
# harness, with enough noise that the segmenter has something to clean up.

pixels = {}
for k in range(len(dataset)):
    s = dataset[k]
    for c in np.unique(s.mask[s.mask != 255]):
        pixels.setdefault(int(c), []).append(s.image[s.mask == c])
# classes absent from the fake images get a colour nobody has
palette = {name: (255, 0, 255) for name in dataset.classes}
palette.update({dataset.classes[c]: tuple(np.concatenate(p).mean(0).round())
                for c, p in pixels.items()})

segmenter = DirectSegmenter(mode="velocity",
                            extractor=ColorPrototypeLogits(palette),
                            affinity=ColorPositionAffinity(), progress=False)

# %%
# Evaluate
# --------
# The protocol of VOC21 resizes every image so its short side is 336
# pixels; the fake images are small, so a custom protocol with a short
# side of 160 keeps the example fast (the result then says
# ``setting="custom"``). ``evaluate`` sets the segmenter's classes to the
# dataset's on a clone.

protocol = get_protocol("voc21", short_side=160)
print(protocol)

out = os.path.join(workdir, "runs", "voc21")
result = evaluate(segmenter, dataset, protocol=protocol, out=out,
                  progress=False)
print(f"mIoU {100 * result.miou:.1f} % over {len(result.ids)} images, "
      f"{result.n_computed} computed")

# %%
# The output folder holds one checksummed file per image, the run's
# description and, at the end, the results.

for dirpath, dirnames, filenames in sorted(os.walk(out)):
    for name in sorted(filenames):
        print(os.path.relpath(os.path.join(dirpath, name), out))

with open(os.path.join(out, "results.json")) as f:
    summary = json.load(f)
print({k: summary[k] for k in ("dataset", "n_images", "miou",
                               "protocol_fingerprint") if k in summary})

# %%
# Resuming
# --------
# Delete two per-image results, as if the run had been killed, and run the
# same call again: only the missing images are computed, and the
# confusion matrix is the same.

per_image = os.path.join(out, "per_image")
for name in sorted(os.listdir(per_image))[:2]:
    os.remove(os.path.join(per_image, name))
again = evaluate(segmenter, dataset, protocol=protocol, out=out,
                 progress=False)
print("computed on resume:", again.n_computed)
print("same confusion matrix:",
      bool((again.confusion_matrix == result.confusion_matrix).all()))

# %%
# Per-class IoU
# -------------
# ``result.iou`` is an :class:`xarray.DataArray` over the classes; classes
# absent from both the ground truth and the predictions are NaN and left
# out of the mean.

iou = result.iou.dropna("class")
names = [c.split(",")[0] for c in iou["class"].values]
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.bar(range(len(names)), 100 * iou.values)
ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
ax.set_ylabel("IoU (%)")
ax.set_title(f"fake VOC21, mIoU {100 * result.miou:.1f} %")
fig.tight_layout()
plt.show()

# %%
# Named settings
# --------------
# ``"paper"`` scores the whole image at once; each peer's setting
# (``"sclip"``, ``"naclip"``, ``"proxyclip"``, ...) takes that method's own
# configuration: SCLIP averages sliding windows, softmax scale 65 and an
# area rule on VOC21. Without ``out`` nothing is written.

for setting in ("paper", "sclip"):
    p = get_protocol("voc21", setting, short_side=160, slide_crop=96,
                     slide_stride=48)
    r = evaluate(segmenter, dataset, protocol=p, progress=False)
    print(f"{setting:<6s} {p.inference:<6s} mIoU {100 * r.miou:.1f} %")
