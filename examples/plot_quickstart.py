"""
Quick start: segment a photo into any classes
=============================================

:class:`~dsolo_sk.DirectSegmenter` takes a list of images and a list of
class names and returns one label map per image, without any training::

    from dsolo_sk import DirectSegmenter

    labels = DirectSegmenter(mode="velocity").predict(images, ["cup", "saucer", "table"])

With the defaults, the logits come from CLIP ViT-B/16
(:class:`~dsolo_sk.features.CLIPFeatures`) and the affinity between
patches from Stable Diffusion 2 self-attention
(:class:`~dsolo_sk.features.DiffusionAttention`), both downloaded on first
use. This gallery is built offline, so here two model-free stand-ins take
their places, through the segmenter's ``extractor`` and ``affinity``
parameters (``dsolo-sk demo`` runs the same on the command line):

* :class:`~dsolo_sk.features.ColorPrototypeLogits`, a stand-in for CLIP
  that knows one colour per class name and scores each 16 x 16 patch by
  its colour distance to it, with CLIP's low margins and some noise;
* :class:`~dsolo_sk.features.ColorPositionAffinity`, which relates
  patches of similar colour, texture and position.

Anything with ``compute_logits(image, classes)`` (respectively
``compute_affinity(image, grid_shape)``) can take these places.
"""

# %%
# A stand-in for CLIP
# -------------------
# The logits extractor returns an array of shape ``(n_classes, rows,
# cols)``: the cosine similarity of every patch with every class on the
# patch grid. CLIP's are all close to 0.2 with differences of a few
# hundredths between classes; the stand-in imitates that scale, from one
# colour per class name.

import matplotlib.pyplot as plt
from skimage import data

from dsolo_sk import DirectSegmenter
from dsolo_sk.features import ColorPositionAffinity, ColorPrototypeLogits
from dsolo_sk.plot import plot_overlay

stand_in = ColorPrototypeLogits({"cup": (245, 235, 220),
                                 "saucer": (160, 35, 12),
                                 "table": (200, 120, 70)})
print(stand_in.compute_logits(data.coffee(), ["cup", "saucer", "table"]).shape)


# %%
# Segment
# -------
# ``predict`` returns one ``(H, W)`` array of class indices per image, at
# the image's resolution. ``mode="velocity"`` is the paper's best variant
# (maximum transport velocity); ``mode="raw"`` is the argmax of the
# upsampled logits, the baseline the method improves on.

image = data.coffee()
classes = ["cup", "saucer", "table"]

labels = {}
for mode in ("raw", "velocity"):
    seg = DirectSegmenter(mode=mode, extractor=stand_in,
                          affinity=ColorPositionAffinity(), progress=False)
    labels[mode] = seg.predict([image], classes)[0]

print(labels["velocity"].shape, labels["velocity"].dtype)

# %%
# ``decision_function`` gives the per-class score maps behind the argmax,
# as labelled :class:`xarray.DataArray` objects with dims
# ``("class", "y", "x")``.

seg = DirectSegmenter(mode="velocity", extractor=stand_in,
                      affinity=ColorPositionAffinity(), progress=False)
scores = seg.decision_function([image], classes)[0]
print(scores.dims, list(scores["class"].values))

# %%
# Plot the photo, the raw argmax and the velocity segmentation, with
# :func:`dsolo_sk.plot.plot_overlay`: the labels over the photo (in grey),
# one colour per class and a legend.

fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
axes[0].imshow(image)
axes[0].set_title("image")
axes[0].set_axis_off()
for ax, mode in zip(axes[1:], ("raw", "velocity")):
    plot_overlay(image, labels[mode], classes, ax=ax, legend=mode == "velocity")
    ax.set_title(f'mode="{mode}"')
plt.show()

# %%
# Per-class score maps of the velocity mode: each is the state of that
# class's Markov chain at the step where the patch converged.

fig, axes = plt.subplots(1, len(classes), figsize=(12, 3))
for ax, name in zip(axes, classes):
    ax.imshow(scores.sel({"class": name}), cmap="magma")
    ax.set_title(name)
    ax.set_axis_off()
plt.show()
