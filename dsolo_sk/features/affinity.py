"""Model-free affinities between patches, from colour, texture and position.

:class:`ColorPositionAffinity` is a symmetric colour and position kernel;
:class:`ProjectedAttentionAffinity` imitates the statistics of a real
network's self-attention (asymmetry, heavy tails, attention sinks);
:class:`DegradedAffinity` blurs and adds noise to any affinity. They need no
model: they serve CPU use, tests and the generated benchmark scenes.
"""


import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from .._validation import check_grid_shape, check_scalar

__all__ = ["ColorPositionAffinity", "ProjectedAttentionAffinity",
           "DegradedAffinity"]


#: Largest patch grid (rows * cols) of the affinity; it costs O(P^2)
#: memory: about 1 GiB of float32 at this size.
MAX_PATCHES = 16384


def _grid_shape(grid_shape):
    h, w = check_grid_shape(grid_shape)
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




def _check_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "image must be an (H, W, 3) uint8 RGB array, got shape "
            f"{image.shape} and dtype {image.dtype}."
        )
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(
            f"image must be at least 2 x 2 pixels, got {image.shape[:2]}."
        )
    return image


def _patch_descriptors(image, grid_shape, n_frequencies):
    """Colour, texture and position descriptors of the patches of `image`.

    Returns the three groups as float64 tensors of shape (P, k) and the
    low-information score of each patch (its mean gradient energy).
    """
    h, w = grid_shape
    img = torch.tensor(image, dtype=torch.float64).permute(2, 0, 1)[None]
    img = img / 255.0
    colour = F.adaptive_avg_pool2d(img, (h, w))[0].reshape(3, -1).T
    grey = img.mean(1, keepdim=True)
    # Central differences (replicate padding): the local gradient field.
    pad = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2]) / 2
    gy = (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1]) / 2
    # Structure tensor averaged over the patch: orientation and energy.
    jxx = F.adaptive_avg_pool2d(gx * gx, (h, w)).reshape(-1)
    jyy = F.adaptive_avg_pool2d(gy * gy, (h, w)).reshape(-1)
    jxy = F.adaptive_avg_pool2d(gx * gy, (h, w)).reshape(-1)
    energy = jxx + jyy
    mean = F.adaptive_avg_pool2d(grey, (h, w)).reshape(-1)
    var = (F.adaptive_avg_pool2d(grey ** 2, (h, w)).reshape(-1)
           - mean ** 2).clamp_min(0)
    eps = 1e-5
    texture = torch.stack([
        torch.log(energy + eps),
        (jxx - jyy) / (energy + eps),   # orientation, cos 2θ
        2 * jxy / (energy + eps),       # orientation, sin 2θ
        torch.log(var + eps),
        torch.log(energy + eps) - torch.log(var + eps),  # frequency
    ], 1)
    yy, xx = torch.meshgrid((torch.arange(h, dtype=torch.float64) + 0.5) / h,
                            (torch.arange(w, dtype=torch.float64) + 0.5) / w,
                            indexing="ij")
    pos = []
    for k in range(n_frequencies):
        f = np.pi * 2 ** k
        for t in (yy.reshape(-1), xx.reshape(-1)):
            pos += [torch.sin(f * t), torch.cos(f * t)]
    position = (torch.stack(pos, 1) if pos
                else torch.zeros(h * w, 0, dtype=torch.float64))
    return colour, texture, position, energy


def _standardise(x, floor):
    """Centre each column over the patches; divide by its spread, floored."""
    x = x - x.mean(0, keepdim=True)
    return x / x.std(0, keepdim=True).clamp_min(floor)


class ProjectedAttentionAffinity(BaseEstimator):
    r"""Transformer-like self-attention from random projections of patch descriptors.

    A model-free stand-in for the self-attention of a real network (Stable
    Diffusion's UNet, a ViT): asymmetric, heavy-tailed, and optionally with
    *attention sinks*, a few patches that every query attends to strongly,
    as real ViT and UNet attention maps have. It is computed from the image
    alone; use it to test a method against attention statistics that a
    colour kernel such as :class:`ColorPositionAffinity` lacks.

    Each patch :math:`i` is described by a vector :math:`\phi_i`, the
    concatenation of three groups, each column centred over the patches of
    the image and divided by its spread (floored, so that a constant
    column stays small):

    - colour: the mean RGB of the patch;
    - texture: the log gradient energy, the dominant orientation
      (:math:`\cos 2\theta`, :math:`\sin 2\theta` from the structure
      tensor), the log grey-level variance and their difference (a
      frequency);
    - position: sines and cosines of the patch centre at `n_frequencies`
      octaves.

    The groups are weighted by `color_weight`, `texture_weight` and
    `position_weight`. Queries and keys are random projections to
    `n_components` dimensions, :math:`q_i = W_q^\top\phi_i`,
    :math:`k_j = W_k^\top\phi_j` with :math:`W_q` standard Gaussian
    (scaled by :math:`1/\sqrt{d}`) and :math:`W_k = (W_q + \alpha G) /
    \sqrt{1 + \alpha^2}`, :math:`G` an independent Gaussian and
    :math:`\alpha` the `asymmetry`. Then

    .. math::

        A_{ij} = \frac{\exp(s_{ij})}{\sum_l \exp(s_{il})}, \qquad
        s_{ij} = \frac{q_i^\top k_j}{T\,m} + \beta_i\,[j \in S],

    with :math:`m` the length of :math:`\phi`, :math:`T` the
    `temperature`. For :math:`\alpha = 0` the score is a dot product of the
    descriptors (similar patches attend to each other); :math:`\alpha > 0`
    makes :math:`A` asymmetric even before the row normalisation, and
    patches with extreme descriptors become hubs, giving heavy-tailed
    columns. :math:`S` is the set of `n_sinks` sink patches: the patches of
    least gradient energy (the redundant, low-information patches where
    real networks place their sinks), chosen greedily at least two patches
    apart. The bias :math:`\beta_i` of each row is the one that gives the
    sinks the fraction `sink_mass` of the row, shared among them by the
    row's own scores.

    Parameters
    ----------
    n_components : int, default=32
        Dimension :math:`d` of queries and keys, 1 to 4096.
    temperature : float, default=0.1
        Softmax temperature :math:`T`, relative to the descriptor length;
        smaller is sharper and more heavy-tailed.
    asymmetry : float, default=0.5
        :math:`\alpha`, how far the key projection is from the query
        projection; ``0`` gives a symmetric score matrix.
    color_weight, texture_weight, position_weight : float, default=1.0
        Weights of the descriptor groups; ``0`` drops a group.
    n_frequencies : int, default=3
        Octaves of the position encoding, 0 to 16 (the 16th is finer than
        any patch grid).
    n_sinks : int, default=0
        Number of sink patches, 0 (none) to 16384 (``MAX_PATCHES``); a grid
        with fewer patches has as many sinks as fit.
    sink_mass : float, default=0.5
        Fraction of each row's attention that the sinks receive, in
        (0, 1). Ignored when `n_sinks` is 0.
    random_state : int, RandomState instance or None, default=0
        Seed of the projections; the projections play the part of a
        network's weights, so keep it fixed across images.

    See Also
    --------
    ColorPositionAffinity : A symmetric colour and position kernel.
    DegradedAffinity : A blurred, noisy version of any affinity.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import ProjectedAttentionAffinity
    >>> rng = np.random.RandomState(0)
    >>> image = rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)
    >>> A = ProjectedAttentionAffinity().compute_affinity(image, (4, 4))
    >>> A.shape, bool(np.allclose(A.sum(1), 1)), bool(np.allclose(A, A.T))
    ((16, 16), True, False)

    With two sinks, every row gives them about half of its attention:

    >>> att = ProjectedAttentionAffinity(n_sinks=2, sink_mass=0.5)
    >>> A = att.compute_affinity(image, (4, 4))
    >>> sinks = att.sink_patches(image, (4, 4))
    >>> np.round(A[:, sinks].sum(1), 3)[:4]
    array([0.5, 0.5, 0.5, 0.5], dtype=float32)
    """

    def __init__(self, n_components=32, temperature=0.1, asymmetry=0.5,
                 color_weight=1.0, texture_weight=1.0, position_weight=1.0,
                 n_frequencies=3, n_sinks=0, sink_mass=0.5, random_state=0):
        self.n_components = n_components
        self.temperature = temperature
        self.asymmetry = asymmetry
        self.color_weight = color_weight
        self.texture_weight = texture_weight
        self.position_weight = position_weight
        self.n_frequencies = n_frequencies
        self.n_sinks = n_sinks
        self.sink_mass = sink_mass
        self.random_state = random_state

    def _validate_params(self):
        check_scalar(self.n_components, "n_components",
                     target_type=(int, np.integer), min_val=1, max_val=4096)
        check_scalar(self.temperature, "temperature", min_val=0,
                     include_min=False)
        check_scalar(self.asymmetry, "asymmetry", min_val=0)
        for name in ("color_weight", "texture_weight", "position_weight"):
            check_scalar(getattr(self, name), name, min_val=0)
        check_scalar(self.n_frequencies, "n_frequencies",
                     target_type=(int, np.integer), min_val=0, max_val=16)
        check_scalar(self.n_sinks, "n_sinks", target_type=(int, np.integer),
                     min_val=0, max_val=MAX_PATCHES)
        check_scalar(self.sink_mass, "sink_mass", min_val=0, max_val=1,
                     include_min=False, include_max=False)
        if (self.color_weight == self.texture_weight == self.position_weight
                == 0):
            raise ValueError(
                "color_weight, texture_weight and position_weight are all 0: "
                "give at least one descriptor group a positive weight."
            )

    def sink_patches(self, image, grid_shape):
        """Indices of the sink patches of `image`, in order of choice.

        Parameters
        ----------
        image : ndarray of shape (H, W, 3), uint8
            RGB image.
        grid_shape : tuple of int
            ``(rows, cols)`` of the patch grid.

        Returns
        -------
        sinks : ndarray of shape (n_sinks,), int64
            Row-major patch indices (fewer if the grid is too small to keep
            them two patches apart).

        Examples
        --------
        >>> import numpy as np
        >>> from dsolo_sk.features import ProjectedAttentionAffinity
        >>> image = np.random.RandomState(0).randint(0, 256, (32, 32, 3))
        >>> image = image.astype(np.uint8); image[:8, :8] = 90  # flat corner
        >>> ProjectedAttentionAffinity(n_sinks=1).sink_patches(image, (4, 4))
        array([0])
        """
        self._validate_params()
        h, w = _grid_shape(grid_shape)
        image = _check_image(image)
        *_, energy = _patch_descriptors(image, (h, w), 0)
        return self._sinks(energy.numpy(), (h, w))

    def _sinks(self, energy, grid_shape):
        h, w = grid_shape
        rows, cols = np.divmod(np.arange(h * w), w)
        free = np.ones(h * w, bool)
        sinks = []
        for i in np.argsort(energy, kind="stable"):
            if len(sinks) == self.n_sinks:
                break
            if free[i]:
                sinks.append(i)
                free &= np.maximum(abs(rows - rows[i]),
                                   abs(cols - cols[i])) >= 2
        return np.asarray(sinks, dtype=np.int64)

    def compute_affinity(self, image, grid_shape):
        """Attention of shape (P, P) between the patches of `image`.

        Parameters
        ----------
        image : ndarray of shape (H, W, 3), uint8
            RGB image.
        grid_shape : tuple of int
            ``(rows, cols)`` of the patch grid, P = rows * cols.

        Returns
        -------
        affinity : ndarray of shape (P, P), float32
            Rows (queries) sum to one.
        """
        self._validate_params()
        h, w = _grid_shape(grid_shape)
        image = _check_image(image)
        colour, texture, position, energy = _patch_descriptors(
            image, (h, w), self.n_frequencies)
        phi = torch.cat([
            self.color_weight * _standardise(colour, 0.05),
            self.texture_weight * _standardise(texture, 0.5),
            self.position_weight * position,
        ], 1)
        k = phi.shape[1]
        rng = check_random_state(self.random_state)
        d = int(self.n_components)
        wq = rng.normal(size=(k, d)) / np.sqrt(d)
        wk = (wq + self.asymmetry * rng.normal(size=(k, d)) / np.sqrt(d)) / \
            np.sqrt(1 + self.asymmetry ** 2)
        q = phi @ torch.from_numpy(wq)
        key = phi @ torch.from_numpy(wk)
        scores = q @ key.T / (self.temperature * k)
        if self.n_sinks:
            sinks = torch.from_numpy(self._sinks(energy.numpy(), (h, w)))
            scores = self._add_sink_bias(scores, sinks)
        return torch.softmax(scores, dim=1).float().numpy()

    def _add_sink_bias(self, scores, sinks):
        """Add to each row the bias that gives its sinks `sink_mass`."""
        is_sink = torch.zeros(scores.shape[1], dtype=torch.bool)
        is_sink[sinks] = True
        if is_sink.all():
            return scores
        lse_sink = torch.logsumexp(scores[:, is_sink], 1, keepdim=True)
        lse_rest = torch.logsumexp(scores[:, ~is_sink], 1, keepdim=True)
        m = self.sink_mass
        beta = lse_rest - lse_sink + np.log(m / (1 - m))
        return scores + beta * is_sink


class DegradedAffinity(BaseEstimator):
    r"""A blurred and noisy version of another affinity.

    Real attention maps come from a coarser grid than the logits and are
    noisy; this wrapper imitates both. The inner `affinity` is computed on
    a grid `resolution` times as fine (rounded up), moved to the requested
    grid by bilinear interpolation of queries and keys
    (:func:`~dsolo_sk.features.diffusion.resample_attention`), multiplied
    entrywise by log-normal noise and renormalised:

    .. math::

        \tilde A_{ij} \propto (K A K^\top)_{ij}\,
        \exp(\sigma\,\xi_{ij} - \sigma^2 / 2),\qquad
        \xi_{ij} \sim \mathcal N(0, 1),

    with :math:`K` the interpolation operator and :math:`\sigma` the
    `noise`.

    Parameters
    ----------
    affinity : object with ``compute_affinity(image, grid_shape)``, default=None
        The affinity to degrade; ``None`` means
        :class:`ColorPositionAffinity()`.
    resolution : float, default=0.5
        Grid resolution of the inner affinity relative to the requested
        one, in (0, 1]; ``1`` does no blurring.
    noise : float, default=0.5
        Standard deviation :math:`\sigma` of the log-normal noise; ``0``
        adds none.
    random_state : int, RandomState instance or None, default=None
        Seed of the noise.

    See Also
    --------
    ColorPositionAffinity, ProjectedAttentionAffinity

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features import DegradedAffinity
    >>> image = np.zeros((64, 64, 3), np.uint8); image[:, 32:] = 255
    >>> A = DegradedAffinity(random_state=0).compute_affinity(image, (4, 4))
    >>> A.shape, bool(np.allclose(A.sum(1), 1))
    ((16, 16), True)
    """

    def __init__(self, affinity=None, resolution=0.5, noise=0.5,
                 random_state=None):
        self.affinity = affinity
        self.resolution = resolution
        self.noise = noise
        self.random_state = random_state

    def compute_affinity(self, image, grid_shape):
        """Degraded affinity of shape (P, P) between the patches of `image`.

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
        from .diffusion import resample_attention

        check_scalar(self.resolution, "resolution", min_val=0, max_val=1,
                     include_min=False)
        check_scalar(self.noise, "noise", min_val=0)
        inner = (ColorPositionAffinity() if self.affinity is None
                 else self.affinity)
        if not callable(getattr(inner, "compute_affinity", None)):
            raise TypeError(
                "affinity must have a compute_affinity(image, grid_shape) "
                f"method, got {type(inner).__name__}."
            )
        h, w = _grid_shape(grid_shape)
        coarse = (max(1, int(np.ceil(h * self.resolution))),
                  max(1, int(np.ceil(w * self.resolution))))
        a = torch.as_tensor(np.asarray(inner.compute_affinity(image, coarse)),
                            dtype=torch.float64)
        a = resample_attention(a, coarse, (h, w)).double()
        if self.noise > 0:
            rng = check_random_state(self.random_state)
            xi = torch.from_numpy(rng.normal(size=(h * w, h * w)))
            a = a * torch.exp(self.noise * xi - self.noise ** 2 / 2)
        a = a / a.sum(1, keepdim=True)
        return a.float().numpy()
