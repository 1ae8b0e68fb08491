"""Generated scenes with ground truth and CLIP-like logits.

The scenes measure the algorithm where no pretrained model or benchmark
dataset is at hand. The logits imitate the failure modes known of CLIP's
dense predictions, and the affinity is computed from the generated image
alone, never from the ground truth.
"""

import numpy as np
from scipy import ndimage
from sklearn.utils import check_random_state

from .._validation import check_scalar
from ..features._contract import from_arrays
from ..features.affinity import ColorPositionAffinity

__all__ = ["make_scenes", "MAX_SCENES"]

#: Most scenes one call generates: they are all held in memory (an image,
#: logits and a (P, P) affinity each), and scored one by one.
MAX_SCENES = 1000


def _check_n_scenes(n_scenes, name="n_scenes"):
    """The checked number of scenes of a generator (1 to MAX_SCENES);
    `name` is the argument named in the error."""
    return check_scalar(n_scenes, name, target_type=(int, np.integer),
                        min_val=1, max_val=MAX_SCENES, unit="scenes")


def _class_appearance(n_classes, rng):
    """A mean colour, a stripe texture and a grain per class."""
    colour = rng.uniform(0.15, 0.85, size=(n_classes, 3))
    angle = rng.uniform(0, np.pi, size=n_classes)
    freq = rng.uniform(0.05, 0.35, size=n_classes)
    amp = rng.uniform(0.0, 0.12, size=n_classes)
    grain = rng.uniform(0.02, 0.08, size=n_classes)
    return colour, angle, freq, amp, grain


def _layout(size, present, rng, warp):
    """A warped Voronoi partition whose cells take the present classes."""
    n_seeds = rng.randint(len(present), 2 * len(present) + 1)
    labels = np.concatenate([present,
                             rng.choice(present, n_seeds - len(present))])
    seeds = rng.uniform(0, size, size=(n_seeds, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    disp = [ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 8)
            for _ in range(2)]
    disp = [d / (d.std() + 1e-12) * warp * size for d in disp]
    py, px = yy + disp[0], xx + disp[1]
    # nearest seed, one seed at a time: O(size^2) memory for any seed count
    # (ties go to the first seed, as np.argmin over all seeds would)
    best = np.full((size, size), np.inf)
    owner = np.zeros((size, size), np.intp)
    for k, (sy, sx) in enumerate(seeds):
        d2 = (py - sy) ** 2 + (px - sx) ** 2
        closer = d2 < best
        best[closer] = d2[closer]
        owner[closer] = k
    return labels[owner]


def _render(mask, appearance, rng):
    colour, angle, freq, amp, grain = appearance
    size = mask.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = colour[mask].copy()
    phase = (np.cos(angle)[mask] * xx + np.sin(angle)[mask] * yy) * \
        freq[mask] * 2 * np.pi
    img += (amp[mask] * np.sin(phase))[..., None]
    img += rng.normal(size=img.shape) * grain[mask][..., None]
    img = ndimage.gaussian_filter(img, (0.7, 0.7, 0))  # optics
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _smooth_noise(shape, corr, rng):
    noise = ndimage.gaussian_filter(rng.normal(size=shape), (0, corr, corr))
    return noise / (noise.std(axis=(1, 2), keepdims=True) + 1e-12)


def make_scenes(n_scenes=20, n_classes=15, n_present=(2, 5), image_size=448,
                patch_size=16, margin=0.02, bias=0.01, leakage=0.03,
                noise=0.02, noise_correlation=1.5, warp=0.08,
                affinity=None, random_state=None):
    """Generate scenes with ground truth, CLIP-like logits and an affinity.

    Each scene partitions a square image into warped Voronoi cells, each
    cell taking one of the `n_present` classes drawn from `n_classes`.
    Every class has its own colour, stripe texture and grain, shared by all
    scenes. The logits of class ``c`` at patch ``i`` imitate CLIP's dense
    cosine similarities and their known failure modes:

    .. math::

        L_{ci} = 0.2 + \\text{margin}\\cdot a_{ci} + b_c
        + \\text{leakage}\\cdot \\frac{A_c}{\\max_k A_k}
        + \\text{noise}\\cdot \\eta_{ci},

    where :math:`a_{ci}` is the fraction of patch ``i`` covered by class
    ``c`` (a *low margin* of a few hundredths), :math:`b_c \\sim
    \\mathcal N(0, \\text{bias}^2)` a *per-class bias* shared by all scenes,
    the *leakage* term raises every present class in every patch of the
    image in proportion to its area :math:`A_c` (CLIP's patch tokens carry
    the global content of the image, dominated by its largest class), and
    :math:`\\eta` is *spatially correlated* unit Gaussian noise (a Gaussian
    filter of `noise_correlation` patches). The default scales put the
    noise at the margin's level, so that the argmax of the raw logits
    scores about 18 mIoU, the level of raw CLIP logits on Pascal VOC in the
    paper's ablation. The affinity is
    computed from the rendered image alone (by default with
    :class:`~dsolo_sk.features.ColorPositionAffinity`), never from the
    ground truth.

    Parameters
    ----------
    n_scenes : int, default=20
        Number of scenes, 1 to 1000 (``MAX_SCENES``).
    n_classes : int, default=15
        Size of the vocabulary.
    n_present : int or (int, int), default=(2, 5)
        Number of classes present per scene, or its inclusive range, within
        ``[1, n_classes]``.
    image_size : int in [1, 2048], default=448
        Side of the square image in pixels.
    patch_size : int, default=16
        Side of a patch in pixels; the grid is ``image_size // patch_size``
        square, at most 128 x 128 patches.
    margin, bias, leakage, noise : float in [0, 10]
        Scales of the logit terms above, in cosine units.
    noise_correlation : float in [0, 100], default=1.5
        Spatial correlation of the noise, in patches.
    warp : float in [0, 1], default=0.08
        Boundary warping, as a fraction of the image size.
    affinity : object with ``compute_affinity(image, grid_shape)``, optional
        Affinity extractor; default ``ColorPositionAffinity()``. ``False``
        omits the affinity.
    random_state : int, RandomState instance or None
        Seed of the generator (also fixes the class appearances and biases).

    Returns
    -------
    features : list of xarray.Dataset
        One feature set per scene, as :func:`dsolo_sk.features.from_arrays`
        builds; class names are ``"class_00"``, ``"class_01"``, ...
    masks : list of ndarray of shape (image_size, image_size), int64
        Ground-truth label maps indexing the classes.

    Examples
    --------
    >>> from dsolo_sk.datasets import make_scenes
    >>> X, y = make_scenes(n_scenes=2, n_classes=6, image_size=64,
    ...                    random_state=0)
    >>> len(X), X[0]["logits"].shape, y[0].shape
    (2, (6, 4, 4), (64, 64))
    """
    ints = (int, np.integer)
    _check_n_scenes(n_scenes)
    check_scalar(n_classes, "n_classes", target_type=ints, min_val=2,
                 max_val=1000)
    check_scalar(image_size, "image_size", target_type=ints, min_val=1,
                 max_val=2048, unit="pixels")
    check_scalar(patch_size, "patch_size", target_type=ints, min_val=1,
                 max_val=image_size, unit="pixels")
    if image_size % patch_size:
        raise ValueError(
            f"image_size ({image_size}) must be a multiple of patch_size "
            f"({patch_size}).")
    check_scalar((image_size // patch_size) ** 2, "the number of patches "
                 "(image_size // patch_size) ** 2", target_type=ints,
                 max_val=16384)
    if isinstance(n_present, (int, np.integer)) and not isinstance(
            n_present, (bool, np.bool_)):
        lo = hi = n_present
    else:
        try:
            lo, hi = n_present
        except (TypeError, ValueError):
            raise TypeError(
                "n_present must be an integer or a pair (low, high) of "
                f"integers, got {n_present!r}."
            ) from None
    for v in (lo, hi):
        check_scalar(v, "n_present", target_type=ints, min_val=1,
                     max_val=n_classes)
    if lo > hi:
        raise ValueError(
            f"n_present must be (low, high) with low <= high, got "
            f"{n_present!r}.")
    for name, val in (("margin", margin), ("bias", bias),
                      ("leakage", leakage), ("noise", noise)):
        check_scalar(val, name, min_val=0, max_val=10, unit="(cosine units)")
    check_scalar(noise_correlation, "noise_correlation", min_val=0,
                 max_val=100, unit="patches")
    check_scalar(warp, "warp", min_val=0, max_val=1,
                 unit="(a fraction of the image size)")
    if affinity is not None and affinity is not False and not callable(
            getattr(affinity, "compute_affinity", None)):
        raise TypeError(
            "affinity must be None, False or an object with a "
            "compute_affinity(image, grid_shape) method, got "
            f"{affinity!r}."
        )
    rng = check_random_state(random_state)
    appearance = _class_appearance(n_classes, rng)
    class_bias = rng.normal(scale=bias, size=n_classes)
    if affinity is None:
        affinity = ColorPositionAffinity()
    classes = [f"class_{k:02d}" for k in range(n_classes)]
    grid = image_size // patch_size
    X, y = [], []
    for _ in range(n_scenes):
        present = rng.choice(n_classes, rng.randint(lo, hi + 1),
                             replace=False)
        mask = _layout(image_size, present, rng, warp)
        image = _render(mask, appearance, rng)
        onehot = (mask[None] == np.arange(n_classes)[:, None, None])
        cover = onehot.reshape(n_classes, grid, patch_size, grid,
                               patch_size).mean(axis=(2, 4))
        area = cover.mean(axis=(1, 2))
        logits = (0.2 + margin * cover + class_bias[:, None, None]
                  + leakage * (area / area.max())[:, None, None]
                  + noise * _smooth_noise(cover.shape, noise_correlation,
                                          rng))
        aff = (affinity.compute_affinity(image, (grid, grid))
               if affinity is not False else None)
        X.append(from_arrays(logits.astype(np.float32), aff, image, classes))
        y.append(mask.astype(np.int64))
    return X, y
