"""Upsampling of per-class score maps from the patch grid to the image.

Joint bilateral upsampling (Kopf, Cohen, Lischinski and Uyttendaele,
"Joint Bilateral Upsampling", SIGGRAPH 2007) weighs the low-resolution
neighbours of every output pixel by their distance on the grid and by the
colour difference between the output pixel and the neighbour in the
guidance image, so that score edges snap to image edges.

.. rubric:: Examples

The accepted values of the ``method`` and ``kernel`` options of
:func:`upsample_scores`:

>>> from dsolo_sk.upsample import JBU_KERNELS, UPSAMPLINGS
>>> UPSAMPLINGS, JBU_KERNELS
(('jbu', 'bilinear', 'nearest'), ('gaussian', 'tent'))
"""

import math
from numbers import Integral

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from ._jbu_weights import JBUWeights
from ._validation import check_grid_shape, check_option, check_scalar

__all__ = ["JointBilateralUpsampler", "InterpolationUpsampler",
           "jbu_operator", "joint_bilateral_upsample", "upsample_scores",
           "UPSAMPLINGS", "JBU_KERNELS", "INTERPOLATIONS",
           "JBU_MEMORY_BUDGET", "JBU_MAX_RADIUS", "JBU_MIN_SIGMA_RANGE"]

#: The values of `method` of :func:`upsample_scores`.
UPSAMPLINGS = ("jbu", "bilinear", "nearest")
#: The values of `kernel` of :func:`upsample_scores` (the spatial kernel of
#: joint bilateral upsampling).
JBU_KERNELS = ("gaussian", "tent")
#: The values of `method` of :class:`InterpolationUpsampler`.
INTERPOLATIONS = ("bilinear", "nearest")
#: Working memory, in bytes, that the joint bilateral upsampling spends on
#: its weights at a time: the output pixels are processed in tiles (whole
#: rows, or parts of a row) whose weights stay within it, so that a wide
#: kernel on a large image never needs ``H * W * (2 * radius) ** 2`` taps at
#: once. :func:`jbu_operator`, which returns all the weights, refuses a
#: matrix larger than its `max_bytes` (this budget by default).
JBU_MEMORY_BUDGET = 512 * 1024 ** 2
#: Largest `radius` of the joint bilateral upsampling, in grid cells
#: (``(2 * radius) ** 2`` taps per output pixel): a Gaussian
#: `sigma_spatial` of at most 32 cells, a tent of at most 64.
JBU_MAX_RADIUS = 64
#: Smallest `sigma_range` of the joint bilateral upsampling, on colours in
#: [0, 1]: one 8-bit step (1/255) already weighs ``exp(-7.7)`` there, and
#: much smaller values overflow the colour weights.
JBU_MIN_SIGMA_RANGE = 1e-3


def _as_tensor(scores):
    if isinstance(scores, torch.Tensor):
        return scores, True
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scores)), False


def jbu_operator(grid_shape, guide, sigma_spatial=1.0, sigma_range=0.1,
                 radius=None, kernel="gaussian", dtype=np.float32, *,
                 max_bytes=None):
    """The joint bilateral upsampling as a sparse linear operator.

    Returns the matrix ``U`` of shape (H * W, h * w) such that the
    upsampled maps are ``scores.reshape(N, h * w) @ U.T`` (see
    :func:`joint_bilateral_upsample` for the weights). Each row holds the
    normalised weights of one output pixel, at most ``(2 * radius) ** 2``
    of them, so applying ``U`` costs O(N H W radius^2) and the weights are
    computed once for all classes. The matrix is built tile by tile
    (:data:`JBU_MEMORY_BUDGET`), but returned whole: it is refused when it
    would be larger than `max_bytes`.

    Parameters
    ----------
    grid_shape : tuple of int
        ``(h, w)``, the patch grid.
    guide : ndarray of shape (H, W, 3), uint8
        The image.
    sigma_spatial, sigma_range, radius, kernel
        As in :func:`joint_bilateral_upsample`.
    dtype : numpy dtype, default=np.float32
    max_bytes : int, optional
        Largest size of the matrix in bytes (its weights and column
        indices); default :data:`JBU_MEMORY_BUDGET`.

    Returns
    -------
    U : scipy.sparse.csr_array of shape (H * W, h * w)

    Raises
    ------
    ValueError
        If a parameter is out of range, or the matrix would be larger than
        `max_bytes`.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.upsample import jbu_operator
    >>> U = jbu_operator((2, 2), np.zeros((4, 4, 3), np.uint8))
    >>> U.shape, bool(np.allclose(U.sum(1), 1))
    ((16, 4), True)
    """
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    ndt = np.float64 if tdt == torch.float64 else np.float32
    jw = _jbu_weights(grid_shape, guide, sigma_spatial, sigma_range, radius,
                     kernel, tdt)
    limit = JBU_MEMORY_BUDGET if max_bytes is None else int(check_scalar(
        max_bytes, "max_bytes", target_type=Integral, min_val=1,
        unit="bytes"))
    H, W, k = jw.H, jw.W, jw.n_taps
    itype = np.int64 if jw.big else np.int32
    size = H * W * k * (np.dtype(ndt).itemsize + np.dtype(itype).itemsize)
    if size > limit:
        raise ValueError(
            f"the upsampling operator of a {H} x {W} image with {k} taps per "
            f"pixel (kernel={kernel!r}, sigma_spatial={sigma_spatial!r}, "
            f"radius={jw.radius}) takes {size} bytes, more than "
            f"max_bytes={limit}: pass a larger max_bytes, a smaller "
            "sigma_spatial or radius, or call joint_bilateral_upsample, "
            "which applies the weights tile by tile."
        )
    data = np.empty(H * W * k, ndt)
    indices = np.empty(H * W * k, itype)
    for y0, y1, x0, x1 in jw.tiles(JBU_MEMORY_BUDGET):
        weights, index = jw.tile(y0, y1, x0, x1)
        start = (y0 * W + x0) * k
        data[start:start + weights.numel()] = weights.numpy().ravel()
        indices[start:start + index.numel()] = index.numpy().ravel()
    return sp.csr_array((data, indices, np.arange(0, H * W * k + 1, k,
                                                  dtype=itype)),
                        shape=(H * W, jw.h * jw.w))


def _csr_rows(weights, index, n_cols):
    """The (n, k) weights and indices of a tile as a CSR matrix."""
    n, k = weights.shape
    itype = np.int64 if index.dtype == torch.int64 else np.int32
    return sp.csr_array((weights.numpy().ravel(), index.numpy().ravel(),
                         np.arange(0, n * k + 1, k, dtype=itype)),
                        shape=(n, n_cols))


def _check_jbu(sigma_spatial, sigma_range, radius, kernel):
    """Check the parameters of the joint bilateral upsampling before any
    work; return the radius (its default when `radius` is None)."""
    check_option(kernel, "kernel", JBU_KERNELS)
    check_scalar(sigma_spatial, "sigma_spatial", min_val=0, include_min=False,
                 unit="grid cells")
    check_scalar(sigma_range, "sigma_range", min_val=JBU_MIN_SIGMA_RANGE,
                 unit="(colours in [0, 1])")
    if radius is not None:
        return int(check_scalar(radius, "radius", target_type=Integral,
                                min_val=1, max_val=JBU_MAX_RADIUS,
                                unit="grid cells"))
    reach = sigma_spatial if kernel == "tent" else 2 * sigma_spatial
    if reach > JBU_MAX_RADIUS:
        raise ValueError(
            f"sigma_spatial={sigma_spatial!r} with kernel={kernel!r} reaches "
            f"{reach:g} grid cells from each pixel, but the neighbourhood's "
            f"radius is at most {JBU_MAX_RADIUS} grid cells "
            "(JBU_MAX_RADIUS): pass a sigma_spatial of at most "
            f"{JBU_MAX_RADIUS if kernel == 'tent' else JBU_MAX_RADIUS // 2}."
        )
    return max(1, math.ceil(reach))


def _jbu_weights(grid_shape, guide, sigma_spatial, sigma_range, radius,
                 kernel, tdt, device=None):
    """The weights of the checked parameters, computed one tile at a time
    (:class:`~dsolo_sk._jbu_weights.JBUWeights`)."""
    grid_shape = check_grid_shape(grid_shape)
    radius = _check_jbu(sigma_spatial, sigma_range, radius, kernel)
    return JBUWeights(grid_shape, guide, sigma_spatial, sigma_range, radius,
                      kernel, tdt, device)


def joint_bilateral_upsample(scores, guide, sigma_spatial=1.0,
                             sigma_range=0.1, radius=None, kernel="gaussian"):
    """Joint bilateral upsampling of score maps guided by an RGB image.

    For an output pixel ``p`` at grid position :math:`p_\\downarrow` and
    colour :math:`I_p`:

    .. math::

        \\tilde S_c(p) = \\frac{1}{k_p} \\sum_{q \\in \\Omega(p)}
        S_c(q)\\, \\exp\\Big(-\\frac{\\|q - p_\\downarrow\\|^2}
        {2\\sigma_s^2}\\Big)\\, \\exp\\Big(-\\frac{\\|I_p -
        I_\\downarrow(q)\\|^2}{2\\sigma_r^2}\\Big),

    where :math:`\\Omega(p)` holds the ``(2 r)^2`` grid cells nearest to
    :math:`p_\\downarrow` (``r`` = `radius`), :math:`I_\\downarrow` is the
    guide averaged over each grid cell, colours lie in [0, 1], and
    :math:`k_p` is the sum of the weights. A pixel none of whose taps
    has a positive weight (a tent narrower than half a cell leaves such
    pixels between the patch centres) takes the score of its nearest patch,
    so no score is NaN. The weights are computed and applied tile by tile,
    within :data:`JBU_MEMORY_BUDGET` bytes. With ``kernel="tent"`` the
    spatial factor is the separable tent
    :math:`\\prod_{a} \\max(0, 1 - |q_a - p_{\\downarrow a}| / \\sigma_s)`
    instead of the Gaussian: with :math:`\\sigma_s = 1` and a large
    :math:`\\sigma_r` it is exactly bilinear interpolation
    (``align_corners=False``). The weights are shared by all
    classes: they form a sparse matrix (:func:`jbu_operator`) applied to
    all maps in one product.

    Parameters
    ----------
    scores : array of shape (N, h, w)
        Score maps on the grid (numpy or torch).
    guide : ndarray of shape (H, W, 3), uint8
        The image; the output has its height and width.
    sigma_spatial : float, default=1.0
        Spatial standard deviation, in grid cells, > 0; the default
        `radius` must stay within :data:`JBU_MAX_RADIUS` (at most 32 for
        the Gaussian, 64 for the tent).
    sigma_range : float, default=0.1
        Colour standard deviation, on colours scaled to [0, 1], at least
        :data:`JBU_MIN_SIGMA_RANGE`.
    radius : int, optional
        Half-width of the neighbourhood in grid cells, 1 to
        :data:`JBU_MAX_RADIUS`; default
        ``max(1, ceil(2 * sigma_spatial))`` for the Gaussian,
        ``max(1, ceil(sigma_spatial))`` for the tent.
    kernel : {"gaussian", "tent"}, default="gaussian"
        Spatial kernel: Kopf et al.'s Gaussian, or the tent of bilinear
        interpolation (4 neighbours instead of 16 at the defaults).

    Returns
    -------
    upsampled : array of shape (N, H, W)
        Same type (numpy or torch) as `scores`, float32 or float64.

    Raises
    ------
    ValueError
        If a parameter is out of its range (named in the message).

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.upsample import joint_bilateral_upsample
    >>> guide = np.zeros((8, 8, 3), np.uint8); guide[:, 4:] = 255
    >>> s = np.array([[[0., 1.], [0., 1.]]])
    >>> out = joint_bilateral_upsample(s, guide, sigma_range=0.05)
    >>> out.shape, bool(out[0, :, :4].max() < 0.01), bool(out[0, :, 4:].min() > 0.99)
    ((1, 8, 8), True, True)
    """
    guide = np.asarray(guide)
    if isinstance(scores, torch.Tensor):
        return _jbu_torch(scores, guide, sigma_spatial, sigma_range, radius,
                          kernel)
    arr = np.asarray(scores)
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    arr = arr.astype(dtype, copy=False)
    n, h, w = arr.shape
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    jw = _jbu_weights((h, w), guide, sigma_spatial, sigma_range, radius,
                     kernel, tdt)
    H, W = jw.H, jw.W
    flat = arr.reshape(n, h * w).T
    # (H W, N) is computed contiguously and returned as an (N, H, W) view,
    # so the largest array of the pipeline is never copied; the weights
    # exist one tile at a time (JBU_MEMORY_BUDGET)
    out = np.empty((H * W, n), dtype)
    for y0, y1, x0, x1 in jw.tiles(JBU_MEMORY_BUDGET):
        weights, index = jw.tile(y0, y1, x0, x1)
        start = y0 * W + x0
        out[start:start + len(weights)] = _csr_rows(weights, index,
                                                    h * w) @ flat
    return out.reshape(H, W, n).transpose(2, 0, 1)


def _jbu_torch(scores, guide, sigma_spatial, sigma_range, radius, kernel):
    """:func:`joint_bilateral_upsample` of a torch tensor, on its device.

    The same weights as :func:`jbu_operator` (computed by the same code on
    the tensor's device, tile by tile), applied tap by tap: memory
    O(N H W) plus one tile's weights, no sparse matrix, no copy to the
    host. The sums run in another order than the
    sparse product's, so scores agree with the numpy path to rounding.
    """
    tdt = torch.float64 if scores.dtype == torch.float64 else torch.float32
    scores = scores.detach().to(tdt)
    n, h, w = scores.shape
    jw = _jbu_weights((h, w), guide, sigma_spatial, sigma_range, radius,
                     kernel, tdt, device=scores.device)
    W = jw.W
    # (h w, N) rows are gathered whole, and the (H W, N) result is
    # returned as an (N, H, W) view, as on the numpy path
    flat = scores.reshape(n, h * w).T.contiguous()
    out = flat.new_empty((jw.H * W, n))
    for y0, y1, x0, x1 in jw.tiles(JBU_MEMORY_BUDGET):
        weights, index = jw.tile(y0, y1, x0, x1)
        index = index.T.long().contiguous()  # (k, n): one tap per row
        weights = weights.T.contiguous()[:, :, None]
        # products rounded before the sums (no fused multiply-add), in the
        # order of the sparse product's: the numpy path's numbers exactly
        acc = flat.index_select(0, index[0]).mul_(weights[0])
        for t in range(1, index.shape[0]):
            acc.add_(flat.index_select(0, index[t]).mul_(weights[t]))
        start = y0 * W + x0
        out[start:start + acc.shape[0]].copy_(acc)
    return out.reshape(*guide.shape[:2], n).permute(2, 0, 1)


def upsample_scores(scores, guide, method="jbu", sigma_spatial=1.0,
                    sigma_range=0.1, kernel="gaussian"):
    """Upsample score maps to the guide image's size.

    Parameters
    ----------
    scores : array of shape (N, h, w)
        Score maps on the patch grid.
    guide : ndarray of shape (H, W, 3), uint8
        The image.
    method : {"jbu", "bilinear", "nearest"}, default="jbu"
        Joint bilateral (:func:`joint_bilateral_upsample`), bilinear
        (``align_corners=False``) or nearest-neighbour interpolation.
    sigma_spatial, sigma_range : float
        Parameters of the joint bilateral upsampling.
    kernel : {"gaussian", "tent"}, default="gaussian"
        Its spatial kernel.

    Returns
    -------
    upsampled : array of shape (N, H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.upsample import upsample_scores
    >>> s = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    >>> upsample_scores(s, np.zeros((4, 4, 3), np.uint8), "nearest")[0]
    array([[0., 0., 1., 1.],
           [0., 0., 1., 1.],
           [2., 2., 3., 3.],
           [2., 2., 3., 3.]], dtype=float32)
    """
    check_option(method, "upsample", UPSAMPLINGS)
    if method == "jbu":
        return joint_bilateral_upsample(scores, guide, sigma_spatial,
                                        sigma_range, kernel=kernel)
    s, is_torch = _as_tensor(scores)
    size = tuple(np.asarray(guide).shape[:2])
    kw = {"align_corners": False} if method == "bilinear" else {}
    out = F.interpolate(s[None], size=size, mode=method, **kw)[0]
    return out if is_torch else out.numpy()


def _check_maps(scores, image):
    """Validate the (N, h, w) score maps and the (H, W, 3) guide image."""
    if getattr(scores, "ndim", None) != 3:
        raise ValueError(
            "scores must be score maps of shape (n_classes, rows, cols), "
            f"got shape {getattr(scores, 'shape', None)}."
        )
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must have shape (H, W, 3), got {image.shape}."
        )
    return image


class JointBilateralUpsampler(BaseEstimator):
    """Joint bilateral upsampling of score maps, guided by the image.

    The last step of :class:`~dsolo_sk.DirectSegmenter` before the argmax
    (Kopf et al. 2007). The score of class ``c`` at pixel ``p`` is the
    average of the grid scores around it, weighted by distance on the grid
    and by colour similarity to ``p``:

    .. math::

        \\tilde S_c(p) = \\frac{1}{k_p} \\sum_{q \\in \\Omega(p)}
        S_c(q)\\, w_s(q - p_\\downarrow)\\,
        \\exp\\Big(-\\frac{\\|I_p - I_\\downarrow(q)\\|^2}
        {2\\sigma_r^2}\\Big),

    with the spatial weight :math:`w_s` a Gaussian of standard deviation
    :math:`\\sigma_s` or the separable tent
    :math:`\\prod_a \\max(0, 1 - |d_a|/\\sigma_s)` (see
    :func:`joint_bilateral_upsample` for the details).

    Parameters
    ----------
    kernel : {"tent", "gaussian"}, default="tent"
        Spatial kernel: the tent of bilinear interpolation (4 neighbours at
        the default `sigma_spatial`) or Kopf et al.'s Gaussian (16).
    sigma_spatial : float, default=1.0
        Spatial bandwidth, in patches (grid cells), > 0 and at most 16. A
        pixel with no tap inside the kernel's support (a tent narrower
        than half a patch) takes the score of its nearest patch.
    sigma_range : float, default=0.1
        Colour bandwidth, on colours scaled to [0, 1], from
        :data:`~dsolo_sk.upsample.JBU_MIN_SIGMA_RANGE` (0.001) to 1000.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk import JointBilateralUpsampler
    >>> image = np.zeros((8, 8, 3), np.uint8); image[:, 4:] = 255
    >>> s = np.array([[[0., 1.], [0., 1.]]])
    >>> up = JointBilateralUpsampler(sigma_range=0.05).upsample(s, image)
    >>> up.shape, bool(up[0, :, :4].max() < 0.01)
    ((1, 8, 8), True)
    """

    def __init__(self, kernel="tent", sigma_spatial=1.0, sigma_range=0.1):
        self.kernel = kernel
        self.sigma_spatial = sigma_spatial
        self.sigma_range = sigma_range

    def _validate_params(self):
        check_option(self.kernel, "kernel", JBU_KERNELS)
        check_scalar(self.sigma_spatial, "sigma_spatial", min_val=0,
                     include_min=False, max_val=16, unit="patches")
        check_scalar(self.sigma_range, "sigma_range",
                     min_val=JBU_MIN_SIGMA_RANGE, max_val=1e3,
                     unit="(colours in [0, 1])")

    def upsample(self, scores, image):
        """Upsample score maps to the image's height and width.

        Parameters
        ----------
        scores : array of shape (N, h, w)
            Score maps on the patch grid (numpy or torch).
        image : ndarray of shape (H, W, 3), uint8
            The guide image.

        Returns
        -------
        upsampled : array of shape (N, H, W)
            Same type (numpy or torch) as `scores`.
        """
        self._validate_params()
        image = _check_maps(scores, image)
        return joint_bilateral_upsample(scores, image, self.sigma_spatial,
                                        self.sigma_range, kernel=self.kernel)


class InterpolationUpsampler(BaseEstimator):
    """Upsampling of score maps by plain interpolation, ignoring the image.

    Bilinear (``align_corners=False``, each patch's score at its centre)
    or nearest-neighbour interpolation of the grid scores to the image's
    height and width: the baseline of :class:`JointBilateralUpsampler`.

    Parameters
    ----------
    method : {"bilinear", "nearest"}, default="bilinear"
        The interpolation.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk import InterpolationUpsampler
    >>> s = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    >>> InterpolationUpsampler("nearest").upsample(
    ...     s, np.zeros((4, 4, 3), np.uint8))[0]
    array([[0., 0., 1., 1.],
           [0., 0., 1., 1.],
           [2., 2., 3., 3.],
           [2., 2., 3., 3.]], dtype=float32)
    """

    def __init__(self, method="bilinear"):
        self.method = method

    def _validate_params(self):
        check_option(self.method, "method", INTERPOLATIONS)

    def upsample(self, scores, image):
        """Upsample score maps to the image's height and width.

        Parameters
        ----------
        scores : array of shape (N, h, w)
            Score maps on the patch grid (numpy or torch).
        image : ndarray of shape (H, W, 3)
            The image; only its height and width are read.

        Returns
        -------
        upsampled : array of shape (N, H, W)
            Same type (numpy or torch) as `scores`.
        """
        self._validate_params()
        image = _check_maps(scores, image)
        return upsample_scores(scores, image, self.method)
