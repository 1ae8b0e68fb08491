"""A model-free stand-in for CLIP: class logits from one colour per class.

:class:`ColorPrototypeLogits` lets the whole method run where no CLIP
weights are available (the ``dsolo-sk demo`` command, the gallery, tests):
it knows one colour per class name and scores every patch by how close its
mean colour is to it, on CLIP's scale. It understands nothing but colour;
it is a stand-in, not a model.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from .._validation import check_classes, check_scalar
from ._images import to_rgb_uint8

__all__ = ["ColorPrototypeLogits"]


class ColorPrototypeLogits(BaseEstimator):
    r"""Stand-in for CLIP logits: closeness of each patch to a class colour.

    **A stand-in, not a model**: every class name is given one RGB colour
    (its prototype), and a patch scores high for a class when its mean
    colour is close to the prototype. It lets the method run end to end
    without weights (``dsolo-sk demo``, the gallery, tests) on real photos
    whose classes differ by colour; for real classes use
    :class:`~dsolo_sk.features.CLIPFeatures`.

    For patch :math:`i` with mean CIELAB colour :math:`\ell_i` and class
    :math:`c` with prototype :math:`p_c` (in CIELAB),

    .. math::

        L_{c,i} = \text{offset} - \text{scale}\,\lVert \ell_i - p_c\rVert_2
                  + \text{noise}\cdot z_{c,i},
        \qquad z_{c,i} \sim \mathcal{N}(0, 1),

    which with the defaults imitates CLIP's cosine similarities: values
    near 0.25 whose differences between classes are a few hundredths.

    Parameters
    ----------
    prototypes : dict of str to (int, int, int)
        Required: the colour of each class name, RGB in 0-255. A class name holding
        synonyms (``"cup, mug"``) without a prototype of its own uses that
        of its first synonym that has one.
    patch_size : int, default=16
        Side of the square patches, in pixels (CLIP ViT-B/16's). Patches on
        the right and bottom edges may be smaller.
    scale : float, default=0.001
        Logit lost per unit of CIELAB distance (0 to about 100 between
        black and white).
    offset : float, default=0.25
        Logit of a patch exactly of the prototype's colour, before noise.
    noise : float, default=0.01
        Standard deviation of the Gaussian noise added to every logit.
    random_state : int, RandomState instance or None, default=0
        Seed of the noise; the same seed gives the same logits for the
        same image.

    See Also
    --------
    dsolo_sk.features.CLIPFeatures : The real logits extractor.
    dsolo_sk.features.ColorPositionAffinity : The model-free affinity that
        goes with this stand-in.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import ColorPrototypeLogits
    >>> image = np.zeros((32, 48, 3), np.uint8)
    >>> image[:, 24:] = (250, 250, 250)  # black left half, white right half
    >>> stand_in = ColorPrototypeLogits({"coal": (0, 0, 0), "snow": (255, 255, 255)},
    ...                                 noise=0)
    >>> logits = stand_in.compute_logits(image, ["coal", "snow"])
    >>> logits.shape, logits.dtype
    ((2, 2, 3), dtype('float32'))
    >>> logits.argmax(0)
    array([[0, 0, 1],
           [0, 0, 1]])

    With :class:`~dsolo_sk.DirectSegmenter` on a photo, no weights needed:

    >>> from skimage import data
    >>> from dsolo_sk import DirectSegmenter
    >>> from dsolo_sk.features import ColorPositionAffinity
    >>> stand_in = ColorPrototypeLogits({"cup": (245, 235, 220),
    ...                                  "saucer": (160, 35, 12),
    ...                                  "table": (200, 120, 70)})
    >>> segmenter = DirectSegmenter(mode="velocity", extractor=stand_in,
    ...                             affinity=ColorPositionAffinity(),
    ...                             progress=False)
    >>> [labels] = segmenter.predict([data.coffee()], ["cup", "saucer", "table"])
    >>> labels.shape
    (400, 600)
    """

    def __init__(self, prototypes=None, *, patch_size=16, scale=0.001,
                 offset=0.25, noise=0.01, random_state=0):
        self.prototypes = prototypes
        self.patch_size = patch_size
        self.scale = scale
        self.offset = offset
        self.noise = noise
        self.random_state = random_state

    def _validate_params(self):
        """Check every parameter; returns {name: (r, g, b) float array}."""
        check_scalar(self.patch_size, "patch_size", target_type=Integral,
                     min_val=1, unit="pixels")
        check_scalar(self.scale, "scale", target_type=Real, min_val=0)
        check_scalar(self.offset, "offset", target_type=Real)
        check_scalar(self.noise, "noise", target_type=Real, min_val=0)
        check_random_state(self.random_state)
        if not isinstance(self.prototypes, dict) or not self.prototypes:
            raise TypeError(
                "prototypes is required: a non-empty dict from class name "
                "to an RGB colour, e.g. ColorPrototypeLogits({'sky': (90, "
                f"150, 230), 'grass': (60, 140, 40)}}), got {self.prototypes!r}."
            )
        out = {}
        for name, rgb in self.prototypes.items():
            arr = np.asarray(rgb, dtype=float)
            if not isinstance(name, str) or arr.shape != (3,) or not (
                    np.all(np.isfinite(arr)) and arr.min() >= 0
                    and arr.max() <= 255):
                raise ValueError(
                    f"prototypes[{name!r}] must be an RGB triple in 0-255, "
                    f"got {rgb!r}."
                )
            out[name] = arr
        return out

    def _prototype(self, prototypes, name):
        from .clip import split_synonyms

        if name in prototypes:
            return prototypes[name]
        for synonym in split_synonyms(name):
            if synonym in prototypes:
                return prototypes[synonym]
        raise ValueError(
            f"class {name!r} has no colour in prototypes (known: "
            f"{sorted(prototypes)}); add one, e.g. "
            f"prototypes={{..., {split_synonyms(name)[0]!r}: (r, g, b)}}."
        )

    def compute_logits(self, image, classes):
        """Score every patch against every class's colour.

        Parameters
        ----------
        image : array-like of shape (H, W[, C]), PIL image or path
            Converted to RGB uint8 as the other extractors do.
        classes : sequence of str
            Class names, each with a prototype (or a synonym with one).

        Returns
        -------
        logits : ndarray of shape (n_classes, ceil(H / p), ceil(W / p)), float32
            With ``p = patch_size``.
        """
        from skimage.color import rgb2lab

        prototypes = self._validate_params()
        classes = check_classes(classes)
        ref = np.stack([self._prototype(prototypes, c) for c in classes])
        image = to_rgb_uint8(image)
        h, w = image.shape[:2]
        p = self.patch_size
        starts_y, starts_x = np.arange(0, h, p), np.arange(0, w, p)
        lab = rgb2lab(image)
        sums = np.add.reduceat(np.add.reduceat(lab, starts_y, axis=0),
                               starts_x, axis=1)
        counts = np.outer(np.diff(np.append(starts_y, h)),
                          np.diff(np.append(starts_x, w)))
        patches = sums / counts[..., None]
        ref_lab = rgb2lab((ref / 255.0)[None])[0]
        dist = np.linalg.norm(patches[None] - ref_lab[:, None, None], axis=-1)
        rng = check_random_state(self.random_state)
        logits = (self.offset - self.scale * dist
                  + self.noise * rng.standard_normal(dist.shape))
        return logits.astype(np.float32)
