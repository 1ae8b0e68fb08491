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

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from ._validation import check_option, check_scalar

__all__ = ["JointBilateralUpsampler", "InterpolationUpsampler",
           "jbu_operator", "joint_bilateral_upsample", "upsample_scores",
           "UPSAMPLINGS", "JBU_KERNELS", "INTERPOLATIONS"]

#: The values of `method` of :func:`upsample_scores`.
UPSAMPLINGS = ("jbu", "bilinear", "nearest")
#: The values of `kernel` of :func:`upsample_scores` (the spatial kernel of
#: joint bilateral upsampling).
JBU_KERNELS = ("gaussian", "tent")
#: The values of `method` of :class:`InterpolationUpsampler`.
INTERPOLATIONS = ("bilinear", "nearest")


def _centres(n_out, n_in, dtype):
    """Position of each output pixel's centre in input-grid coordinates."""
    return ((np.arange(n_out, dtype=dtype) + dtype(0.5))
            * dtype(n_in / n_out) - dtype(0.5))


def _as_tensor(scores):
    if isinstance(scores, torch.Tensor):
        return scores, True
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scores)), False


def _log_spatial(d, sigma, kernel):
    """Log of the separable spatial weight of a distance `d` on one axis."""
    if kernel == "tent":
        return torch.log((1.0 - d.abs() / sigma).clamp_min(0.0))
    return -0.5 * (d / sigma) ** 2


def _axis_tap(q, size, centre, sigma, kernel):
    """Cell indices `q` on one axis, clamped to the grid, and their log
    spatial weights, ``-inf`` for cells outside the grid."""
    inside = (q >= 0) & (q < size)
    q = q.clamp(0, size - 1)
    return q, _log_spatial(q - centre, sigma, kernel).masked_fill(
        ~inside, -math.inf)


def jbu_operator(grid_shape, guide, sigma_spatial=1.0, sigma_range=0.1,
                 radius=None, kernel="gaussian", dtype=np.float32):
    """The joint bilateral upsampling as a sparse linear operator.

    Returns the matrix ``U`` of shape (H * W, h * w) such that the
    upsampled maps are ``scores.reshape(N, h * w) @ U.T`` (see
    :func:`joint_bilateral_upsample` for the weights). Each row holds the
    normalised weights of one output pixel, at most ``(2 * radius) ** 2``
    of them, so applying ``U`` costs O(N H W radius^2) and the weights are
    computed once for all classes.

    Parameters
    ----------
    grid_shape : tuple of int
        ``(h, w)``, the patch grid.
    guide : ndarray of shape (H, W, 3), uint8
        The image.
    sigma_spatial, sigma_range, radius, kernel
        As in :func:`joint_bilateral_upsample`.
    dtype : numpy dtype, default=np.float32

    Returns
    -------
    U : scipy.sparse.csr_array of shape (H * W, h * w)

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.upsample import jbu_operator
    >>> U = jbu_operator((2, 2), np.zeros((4, 4, 3), np.uint8))
    >>> U.shape, bool(np.allclose(U.sum(1), 1))
    ((16, 4), True)
    """
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    weights, index = _jbu_weights(grid_shape, guide, sigma_spatial,
                                  sigma_range, radius, kernel, tdt)
    H, W = np.asarray(guide).shape[:2]
    h, w = (int(v) for v in grid_shape)
    k = weights.shape[1]
    big = index.dtype == torch.int64
    return sp.csr_array((weights.numpy().ravel(), index.numpy().ravel(),
                         np.arange(0, H * W * k + 1, k,
                                   dtype=np.int64 if big else np.int32)),
                        shape=(H * W, h * w))


def _jbu_weights(grid_shape, guide, sigma_spatial, sigma_range, radius,
                 kernel, tdt, device=None):
    """The rows of :func:`jbu_operator` as dense torch tensors.

    Returns ``(weights, index)``, both of shape (H * W, k): output pixel
    ``p`` is ``sum_t weights[p, t] * scores[index[p, t]]``. Computed in
    torch on `device` (the guide's values are copied there), so the torch
    path of :func:`joint_bilateral_upsample` never leaves the device.
    """
    check_scalar(sigma_spatial, "sigma_spatial", min_val=0, include_min=False)
    check_scalar(sigma_range, "sigma_range", min_val=0, include_min=False)
    check_option(kernel, "kernel", JBU_KERNELS)
    if radius is None:
        reach = sigma_spatial if kernel == "tent" else 2 * sigma_spatial
        radius = max(1, math.ceil(reach))
    h, w = (int(v) for v in grid_shape)
    dtype = np.float64 if tdt == torch.float64 else np.float32
    # torch for the weights: its element-wise kernels use every core
    img = torch.tensor(np.asarray(guide), dtype=tdt, device=device) / 255.0
    H, W = img.shape[:2]
    # the guide averaged over each grid cell (adaptive average pooling)
    low = F.adaptive_avg_pool2d(img.permute(2, 0, 1)[None], (h, w))[0]
    low = low.permute(1, 2, 0)  # (h, w, 3)
    cy = torch.from_numpy(_centres(H, h, dtype)).to(img.device)
    cx = torch.from_numpy(_centres(W, w, dtype)).to(img.device)
    by, bx = torch.floor(cy).long(), torch.floor(cx).long()
    inv_r = -0.5 / sigma_range ** 2
    log_w, index = [], []
    n_taps = (2 * radius) ** 2
    big = H * W * n_taps >= 2 ** 31  # 32-bit sparse indices when they fit
    itype = torch.int64 if big else torch.int32
    offsets = range(-radius + 1, radius + 1)
    taps_y = [_axis_tap(by + d, h, cy, sigma_spatial, kernel) for d in offsets]
    taps_x = [_axis_tap(bx + d, w, cx, sigma_spatial, kernel) for d in offsets]
    for qy, ly in taps_y:
        low_y = low.index_select(0, qy)  # (H, w, 3)
        for qx, lx in taps_x:
            diff = low_y.index_select(1, qx) - img
            log_w.append(ly[:, None] + lx[None, :]
                         + inv_r * (diff * diff).sum(-1))
            index.append((qy[:, None] * w + qx[None, :]).to(itype))
    log_w = torch.stack(log_w, -1).reshape(H * W, -1)
    index = torch.stack(index, -1).reshape(H * W, -1)
    # weights relative to each pixel's best neighbour: the nearest cell
    # always has a finite log-weight, so no pixel loses all its weights
    # to underflow, however far its colour lies from its neighbours'
    weights = torch.exp(log_w - log_w.max(1, keepdim=True).values)
    weights /= weights.sum(1, keepdim=True)
    return weights, index


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
    :math:`k_p` is the sum of the weights. With ``kernel="tent"`` the
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
        Spatial standard deviation, in grid cells.
    sigma_range : float, default=0.1
        Colour standard deviation, on colours scaled to [0, 1].
    radius : int, optional
        Half-width of the neighbourhood in grid cells; default
        ``max(1, ceil(2 * sigma_spatial))`` for the Gaussian,
        ``max(1, ceil(sigma_spatial))`` for the tent.
    kernel : {"gaussian", "tent"}, default="gaussian"
        Spatial kernel: Kopf et al.'s Gaussian, or the tent of bilinear
        interpolation (4 neighbours instead of 16 at the defaults).

    Returns
    -------
    upsampled : array of shape (N, H, W)
        Same type (numpy or torch) as `scores`, float32 or float64.

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
    U = jbu_operator((h, w), guide, sigma_spatial, sigma_range, radius,
                     kernel, dtype)
    # (H W, N) is computed contiguously and returned as an (N, H, W) view,
    # so the largest array of the pipeline is never copied
    out = np.asarray(U @ arr.reshape(n, h * w).T).reshape(
        *guide.shape[:2], n).transpose(2, 0, 1)
    return out


def _jbu_torch(scores, guide, sigma_spatial, sigma_range, radius, kernel):
    """:func:`joint_bilateral_upsample` of a torch tensor, on its device.

    The same weights as :func:`jbu_operator` (computed by the same code on
    the tensor's device), applied tap by tap: memory O(N H W), no sparse
    matrix, no copy to the host. The sums run in another order than the
    sparse product's, so scores agree with the numpy path to rounding.
    """
    tdt = torch.float64 if scores.dtype == torch.float64 else torch.float32
    scores = scores.detach().to(tdt)
    n, h, w = scores.shape
    weights, index = _jbu_weights((h, w), guide, sigma_spatial, sigma_range,
                                  radius, kernel, tdt, device=scores.device)
    # (h w, N) rows are gathered whole, and the (H W, N) result is
    # returned as an (N, H, W) view, as on the numpy path
    flat = scores.reshape(n, h * w).T.contiguous()
    index = index.T.long().contiguous()  # (k, H W): one tap per row
    weights = weights.T.contiguous()[:, :, None]
    # products rounded before the sums (no fused multiply-add), in the
    # order of the sparse product's: the numpy path's numbers exactly
    out = flat.index_select(0, index[0]).mul_(weights[0])
    for t in range(1, index.shape[0]):
        out.add_(flat.index_select(0, index[t]).mul_(weights[t]))
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
        Spatial bandwidth, in patches (grid cells), at most 16.
    sigma_range : float, default=0.1
        Colour bandwidth, on colours scaled to [0, 1].

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
        check_scalar(self.sigma_range, "sigma_range", min_val=0,
                     include_min=False, max_val=1e3,
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
