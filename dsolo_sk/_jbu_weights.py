"""The weights of the joint bilateral upsampling, tile by tile.

The machinery behind :mod:`dsolo_sk.upsample` (which checks the
parameters and documents the method): the taps of every output pixel,
their log-weights, the normalised weights and the fallback to the nearest
patch, computed in torch for a tile of output pixels at a time.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["JBUWeights", "bytes_per_tap", "plan_tiles"]


def _centres(n_out, n_in, dtype):
    """Position of each output pixel's centre in input-grid coordinates."""
    return ((np.arange(n_out, dtype=dtype) + dtype(0.5))
            * dtype(n_in / n_out) - dtype(0.5))


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


def bytes_per_tap(tdt):
    """Peak bytes per tap while the weights are built and applied: the
    log-weights and the indices, each as a list of taps and stacked, then
    the copies the product reads (the torch path's 64-bit indices)."""
    return 2 * (8 if tdt == torch.float64 else 4) + 16


def plan_tiles(H, W, n_taps, tap_bytes, budget):
    """Tiles ``(y0, y1, x0, x1)`` of the output pixels, in row-major order,
    whose ``n_taps`` weights of `tap_bytes` bytes each take at most
    `budget` bytes: bands of whole rows, or pieces of one row when a row
    alone is larger."""
    per_pixel = n_taps * tap_bytes
    if W * per_pixel <= budget:
        rows = max(1, budget // (W * per_pixel))
        return [(y, min(H, y + rows), 0, W) for y in range(0, H, rows)]
    cols = max(1, budget // per_pixel)
    return [(y, y + 1, x, min(W, x + cols))
            for y in range(H) for x in range(0, W, cols)]


class JBUWeights:
    """The rows of :func:`~dsolo_sk.upsample.jbu_operator`, tile by tile,
    as torch tensors.

    The parameters are checked by the caller
    (:func:`dsolo_sk.upsample._jbu_weights`); ``tile(y0, y1, x0, x1)``
    returns ``(weights, index)``, both of shape (n, k) for the n pixels of
    the tile in row-major order: output pixel ``p`` is
    ``sum_t weights[p, t] * scores[index[p, t]]``. Computed in torch on
    `device` (the guide's values are copied there), so the torch path of
    :func:`~dsolo_sk.upsample.joint_bilateral_upsample` never leaves the device.

    A pixel with no tap inside the kernel's support (a tent narrower than
    half a cell, or weights that all underflow) takes the score of its
    nearest patch, which is always one of its taps: no score is NaN.
    """

    def __init__(self, grid_shape, guide, sigma_spatial, sigma_range, radius,
                 kernel, tdt, device=None):
        self.radius = int(radius)  # checked by the caller
        self.sigma_spatial, self.kernel, self.tdt = sigma_spatial, kernel, tdt
        self.h, self.w = (int(v) for v in grid_shape)
        dtype = np.float64 if tdt == torch.float64 else np.float32
        # torch for the weights: its element-wise kernels use every core
        self.img = torch.tensor(np.asarray(guide), dtype=tdt,
                                device=device) / 255.0
        self.H, self.W = self.img.shape[:2]
        # the guide averaged over each grid cell (adaptive average pooling)
        low = F.adaptive_avg_pool2d(self.img.permute(2, 0, 1)[None],
                                    (self.h, self.w))[0]
        self.low = low.permute(1, 2, 0)  # (h, w, 3)
        self.cy = torch.from_numpy(_centres(self.H, self.h, dtype)).to(
            self.img.device)
        self.cx = torch.from_numpy(_centres(self.W, self.w, dtype)).to(
            self.img.device)
        self.inv_r = -0.5 / sigma_range ** 2
        # offsets from floor(centre) within the radius, that reach a cell
        # of the grid for some pixel (floor(centre) lies in [-1, size - 1])
        r = self.radius
        self.offsets = [range(max(1 - r, 1 - size), min(r, size) + 1)
                        for size in (self.h, self.w)]
        self.n_taps = len(self.offsets[0]) * len(self.offsets[1])
        # 32-bit sparse indices when they fit
        self.big = self.H * self.W * self.n_taps >= 2 ** 31

    def tiles(self, budget):
        """The tiles of :func:`plan_tiles` for this image and kernel."""
        return plan_tiles(self.H, self.W, self.n_taps,
                          bytes_per_tap(self.tdt), budget)

    def tile(self, y0, y1, x0, x1):
        h, w = self.h, self.w
        off_y, off_x = self.offsets
        cy, cx = self.cy[y0:y1], self.cx[x0:x1]
        img = self.img[y0:y1, x0:x1]
        by, bx = torch.floor(cy).long(), torch.floor(cx).long()
        itype = torch.int64 if self.big else torch.int32
        taps_y = [_axis_tap(by + d, h, cy, self.sigma_spatial, self.kernel)
                  for d in off_y]
        taps_x = [_axis_tap(bx + d, w, cx, self.sigma_spatial, self.kernel)
                  for d in off_x]
        log_w, index = [], []
        for qy, ly in taps_y:
            low_y = self.low.index_select(0, qy)  # (rows, w, 3)
            for qx, lx in taps_x:
                diff = low_y.index_select(1, qx) - img
                log_w.append(ly[:, None] + lx[None, :]
                             + self.inv_r * (diff * diff).sum(-1))
                index.append((qy[:, None] * w + qx[None, :]).to(itype))
        n = (y1 - y0) * (x1 - x0)
        log_w = torch.stack(log_w, -1).reshape(n, -1)
        index = torch.stack(index, -1).reshape(n, -1)
        # weights relative to each pixel's best tap, so that no pixel loses
        # all its weights to underflow, however far its colour lies from
        # its neighbours'
        best = log_w.max(1, keepdim=True).values
        none = ~torch.isfinite(best)  # (n, 1): no tap inside the support
        weights = log_w.sub_(best).exp_()
        weights /= weights.sum(1, keepdim=True)
        # those pixels take their nearest patch, one of their taps: offset
        # 0 or 1 from floor(centre) on each axis (clamped to the grid)
        ny = torch.floor(cy + 0.5).clamp(0, h - 1).long() - by - off_y[0]
        nx = torch.floor(cx + 0.5).clamp(0, w - 1).long() - bx - off_x[0]
        nearest = (ny[:, None] * len(off_x) + nx[None, :]).reshape(n, 1)
        weights.masked_fill_(none, 0.0)
        weights.scatter_add_(1, nearest, none.to(weights.dtype))
        return weights, index
