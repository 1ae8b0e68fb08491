"""A model-free affinity between patches, from colour, texture and position."""


import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from .._validation import check_scalar

__all__ = ["ColorPositionAffinity"]


#: Largest patch grid (rows * cols) of the affinity; it costs O(P^2)
#: memory: about 1 GiB of float32 at this size.
MAX_PATCHES = 16384


def _grid_shape(grid_shape):
    try:
        h, w = (int(v) for v in grid_shape)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(
            f"grid_shape must be a pair (rows, cols), got {grid_shape!r}."
        ) from None
    if h < 1 or w < 1:
        raise ValueError(f"grid_shape must be positive, got {(h, w)}.")
    if h * w > MAX_PATCHES:
        raise ValueError(
            f"grid_shape {(h, w)} has {h * w} patches, more than "
            f"{MAX_PATCHES}: the (P, P) affinity would not fit in memory. "
            "grid_shape counts patches, not pixels."
        )
    return h, w


class ColorPositionAffinity(BaseEstimator):
    """Attention-like affinity from patch colour, texture and position.

    Each patch of the grid is described by its mean colour :math:`m_i`
    (RGB in [0, 1]), its texture :math:`t_i` (the standard deviation of the
    grey level inside the patch) and its centre :math:`x_i` (in units of the
    grid's longer side). The affinity is a row-wise softmax, like an
    attention map:

    .. math::

        A_{ij} \\propto \\exp\\Big(-\\frac{\\|m_i - m_j\\|^2 + (t_i - t_j)^2}
        {2\\sigma_c^2} - \\frac{\\|x_i - x_j\\|^2}{2\\sigma_p^2}\\Big),
        \\qquad \\sum_j A_{ij} = 1.

    It needs no model, costs O(P^2), and is meant for CPU use, tests, and
    users without the memory for Stable Diffusion.

    Parameters
    ----------
    sigma_color : float in [0.001, 10], default=0.1
        Bandwidth of the colour and texture term, on the scale of RGB in
        [0, 1] (not 0-255: colour distances are at most about 1.8).
    sigma_position : float in [0.001, 10] or inf, default=0.5
        Bandwidth of the position term, as a fraction of the grid's longer
        side (not in patches or pixels); ``inf`` ignores position. Above
        10 the term would vanish anyway, so such values are refused as a
        unit mistake.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import ColorPositionAffinity
    >>> image = np.zeros((32, 32, 3), np.uint8); image[:, 16:] = 255
    >>> A = ColorPositionAffinity().compute_affinity(image, (2, 2))
    >>> A.shape, bool(np.allclose(A.sum(1), 1)), bool(A[0, 2] > A[0, 1])
    ((4, 4), True, True)
    """

    def __init__(self, sigma_color=0.1, sigma_position=0.5):
        self.sigma_color = sigma_color
        self.sigma_position = sigma_position

    def _validate_params(self):
        check_scalar(self.sigma_color, "sigma_color", min_val=1e-3,
                     max_val=10, unit="(RGB scaled to [0, 1])")
        if self.sigma_position != float("inf"):
            check_scalar(self.sigma_position, "sigma_position", min_val=1e-3,
                         max_val=10,
                         unit="(a fraction of the grid's longer side; inf "
                              "ignores position)")

    def compute_affinity(self, image, grid_shape):
        """Affinity of shape (P, P) between the patches of `image`.

        Parameters
        ----------
        image : ndarray of shape (H, W, 3), uint8
            RGB image.
        grid_shape : tuple of int
            ``(rows, cols)`` of the patch grid, P = rows * cols.

        Returns
        -------
        affinity : ndarray of shape (P, P), float32
            Rows sum to one.
        """
        self._validate_params()
        h, w = _grid_shape(grid_shape)
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                "image must be an (H, W, 3) uint8 RGB array, got shape "
                f"{image.shape} and dtype {image.dtype}."
            )
        img = torch.tensor(image, dtype=torch.float32) / 255.0
        img = img.permute(2, 0, 1)[None]
        mean = F.adaptive_avg_pool2d(img, (h, w))[0]  # (3, h, w)
        grey = img.mean(1, keepdim=True)
        var = F.adaptive_avg_pool2d(grey ** 2, (h, w))[0, 0] - \
            F.adaptive_avg_pool2d(grey, (h, w))[0, 0] ** 2
        tex = var.clamp_min(0).sqrt()
        feat = torch.cat([mean.reshape(3, -1), tex.reshape(1, -1)]).T
        d_col = torch.cdist(feat, feat) ** 2
        logits = -d_col / (2 * float(self.sigma_color) ** 2)
        if np.isfinite(self.sigma_position):
            yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                    torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            pos = torch.stack([yy.ravel(), xx.ravel()], 1) / max(h, w)
            logits = logits - torch.cdist(pos, pos) ** 2 / (
                2 * float(self.sigma_position) ** 2)
        return torch.softmax(logits, dim=1).numpy()


