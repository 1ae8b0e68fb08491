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
use. This gallery is built offline, so here two small stand-ins take their
places, through the segmenter's ``extractor`` and ``affinity`` parameters:

* a toy "CLIP" that knows one colour per class name and scores each
  16 x 16 patch by its colour distance to it, with CLIP's low margins and
  some noise;
* the model-free :class:`~dsolo_sk.features.ColorPositionAffinity`, which
  relates patches of similar colour, texture and position.

Anything with ``compute_logits(image, classes)`` (respectively
``compute_affinity(image, grid_shape)``) can take these places.
"""

# %%
# A stand-in for CLIP
# -------------------
# The logits extractor returns an array of shape ``(n_classes, rows,
# cols)``: the cosine similarity of every patch with every class on the
# patch grid. CLIP's are all close to 0.2 with differences of a few
# hundredths between classes; the toy below imitates that scale.

import matplotlib.pyplot as plt
import numpy as np
from skimage import color, data
from sklearn.base import BaseEstimator

from dsolo_sk import DirectSegmenter
from dsolo_sk.features import ColorPositionAffinity


class ColourNames(BaseEstimator):
    """Toy logits: closeness of each patch's mean colour to a named colour."""

    colours = {"cup": (245, 235, 220), "saucer": (160, 35, 12),
               "table": (200, 120, 70)}

    def __init__(self, patch_size=16, noise=0.01, random_state=0):
        self.patch_size = patch_size
        self.noise = noise
        self.random_state = random_state

    def compute_logits(self, image, classes):
        p = self.patch_size
        rows, cols = image.shape[0] // p, image.shape[1] // p
        lab = color.rgb2lab(image[:rows * p, :cols * p])
        lab = lab.reshape(rows, p, cols, p, 3).mean(axis=(1, 3))
        names = np.array([[self.colours[c] for c in classes]], np.uint8)
        ref = color.rgb2lab(names)[0]
        dist = np.linalg.norm(lab[None] - ref[:, None, None], axis=-1)
        rng = np.random.default_rng(self.random_state)
        logits = (0.25 - 0.001 * dist
                  + self.noise * rng.normal(size=dist.shape))
        return logits.astype(np.float32)


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
    seg = DirectSegmenter(mode=mode, extractor=ColourNames(),
                          affinity=ColorPositionAffinity(), progress=False)
    labels[mode] = seg.predict([image], classes)[0]

print(labels["velocity"].shape, labels["velocity"].dtype)

# %%
# ``decision_function`` gives the per-class score maps behind the argmax,
# as labelled :class:`xarray.DataArray` objects with dims
# ``("class", "y", "x")``.

seg = DirectSegmenter(mode="velocity", extractor=ColourNames(),
                      affinity=ColorPositionAffinity(), progress=False)
scores = seg.decision_function([image], classes)[0]
print(scores.dims, list(scores["class"].values))

# %%
# Plot the photo, the raw argmax and the velocity segmentation.

cmap = plt.get_cmap("tab10", len(classes))
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
axes[0].imshow(image)
axes[0].set_title("image")
for ax, mode in zip(axes[1:], ("raw", "velocity")):
    im = ax.imshow(labels[mode], cmap=cmap, vmin=-0.5,
                   vmax=len(classes) - 0.5, interpolation="nearest")
    ax.set_title(f'mode="{mode}"')
for ax in axes:
    ax.set_axis_off()
cbar = fig.colorbar(im, ax=axes, ticks=range(len(classes)), shrink=0.8)
cbar.ax.set_yticklabels(classes)
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
