r"""Dense CLIP logits from open_clip: patch embeddings against class texts.

The image tower of an open_clip ViT runs unchanged (no attention surgery);
every output token of its last layer, not only the class token, goes
through the final layer norm and the projection into the joint space. For
patch :math:`i` with embedding :math:`v_i` and class :math:`c` with text
embedding :math:`t_c`,

.. math::

    L_{c,i} = \frac{\langle v_i, t_c\rangle}{\lVert v_i\rVert\,\lVert t_c\rVert}
    \in [-1, 1].

Text embeddings are prompt ensembles: each template embedding is
L2-normalised, the embeddings are averaged over the templates and the mean
is renormalised. A class name holding synonyms separated by commas
(``"person, man, woman"``) scores the maximum over its synonyms.

.. rubric:: Examples

The default prompt ensemble, ``templates="imagenet"``:

>>> from dsolo_sk.features.clip import IMAGENET_TEMPLATES
>>> len(IMAGENET_TEMPLATES), IMAGENET_TEMPLATES[0].format("cat")
(80, 'a bad photo of a cat.')
"""

import difflib
import hashlib
import logging
import os
import pickle
import threading
import warnings
from collections import OrderedDict
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator

from .. import _io
from .._validation import check_classes, check_option
from . import _cache
from ._contract import max_per_class
from ._images import (rescaled_shape, resize_image, to_rgb_uint8,
                      to_rgb_uint8_list)

__all__ = ["CLIPFeatures", "split_synonyms", "check_template",
           "IMAGENET_TEMPLATES"]

#: Mean and standard deviation of the OpenAI CLIP preprocessing on 0-255 RGB.
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)

_CKPT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
#: Largest image side (pixels) after resizing, as in dsolo_sk.protocols.
_MAX_SIDE = 8192

# The per-query cosines of the last images (see compute_query_logits), as
# float32 tensors on the model's device with their numpy query -> class
# index; the numpy methods copy them to the host, as_tensor=True does not.
_RECENT = OrderedDict()
_RECENT_SIZE = 2
_RECENT_LOCK = threading.Lock()

# open_clip's default file names on the Hub, and the preprocessing keys a
# pretrained tag may set (the fields of open_clip.transform.PreprocessCfg)
_OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
_OPEN_CLIP_SAFE_WEIGHTS = "open_clip_model.safetensors"
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode",
                    "fill_color", "mode")


def _imagenet_templates():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


#: The 80 OpenAI ImageNet prompt templates (tuple of str, one ``"{}"`` for
#: the class name each) used by ``CLIPFeatures(templates="imagenet")``;
#: read from open_clip on first access.
IMAGENET_TEMPLATES: tuple  # annotation only: the value comes from __getattr__


def __getattr__(name):
    # IMAGENET_TEMPLATES is built from open_clip's metadata on first access,
    # so that importing this module does not import torch.
    if name == "IMAGENET_TEMPLATES":
        return _imagenet_templates()
    raise AttributeError(name)


def check_template(template, *, name="template"):
    """Check that a prompt template has exactly one ``{}`` for the name.

    The fields are read as :meth:`str.format` reads them, so an escaped
    ``{{}}`` (a literal pair of braces, which would leave every class with
    the same prompt), a named or numbered field, a format spec and a lone
    brace are refused.

    Examples
    --------
    >>> from dsolo_sk.features.clip import check_template
    >>> check_template("a photo of a {}.")
    'a photo of a {}.'
    >>> check_template("a photo of a {{}}.")
    Traceback (most recent call last):
    ...
    ValueError: template 'a photo of a {{}}.' must hold exactly one '{}' ...
    """
    import string

    if not isinstance(template, str):
        raise TypeError(
            f"{name} must be a string with one '{{}}' for the class name, got "
            f"{template!r} of type {type(template).__name__}."
        )
    try:
        fields = [(f, spec, conv) for _, f, spec, conv
                  in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        fields = exc
    if not isinstance(fields, list) or len(fields) != 1 \
            or fields[0] != ("", "", None):
        raise ValueError(
            f"{name} {template!r} must hold exactly one '{{}}' where the "
            "class name goes, and no other braces (write a literal brace "
            "as '{{' or '}}'), for example 'a photo of a {}.'."
        )
    return template


def split_synonyms(name):
    """Split a class name into its synonyms.

    Parameters
    ----------
    name : str
        One class name; synonyms are separated by commas.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> from dsolo_sk.features.clip import split_synonyms
    >>> split_synonyms("person, man, woman")
    ('person', 'man', 'woman')
    >>> split_synonyms("tv monitor")
    ('tv monitor',)
    """
    parts = tuple(p.strip() for p in name.split(","))
    parts = tuple(dict.fromkeys(p for p in parts if p))
    if not parts:
        raise ValueError(f"class name {name!r} holds no name between its commas.")
    return parts


_CKPT_EXPECTED = ("an open_clip checkpoint (a state dict saved with "
                  "safetensors or torch.save)")
_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


def _check_model_config(path):
    """An open_clip model-config JSON: an object with the model's keys."""
    expected = (f"an open_clip model config (a JSON object with "
                f"{list(_CONFIG_KEYS)})")
    cfg = _io.read_json(path, expected)
    missing = [k for k in _CONFIG_KEYS if not isinstance(cfg, dict)
               or k not in cfg]
    if missing:
        raise _io.UnreadableFileError(
            path, expected, f"it lacks {missing}", hint="pass a config "
            "written by open_clip (open_clip/model_configs/*.json)")
    return cfg


def _check_local_dir(path):
    """open_clip's local-dir layout: a valid config and readable weights."""
    config = os.path.join(path, "open_clip_config.json")
    expected = "an open_clip_config.json (a JSON object with 'model_cfg')"
    cfg = _io.read_json(config, expected)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"),
                                                   dict):
        raise _io.UnreadableFileError(
            config, expected, "it has no 'model_cfg' object",
            hint="write it as open_clip's push_to_hf_hub does")
    for weights in ("open_clip_model.safetensors",
                    "open_clip_pytorch_model.bin"):
        if os.path.lexists(os.path.join(path, weights)):
            _io.check_checkpoint(os.path.join(path, weights), _CKPT_EXPECTED)
            break


def _resized_shape(h, w, short_side, max_long_side, multiple):
    """Scale (h, w) so the short side is `short_side` (long side capped),
    each side rounded to the nearest positive multiple of `multiple`."""
    scale = short_side / min(h, w)
    if max_long_side is not None and max(h, w) * scale > max_long_side:
        scale = max_long_side / max(h, w)
    return tuple(max(multiple, int(round(s * scale / multiple)) * multiple)
                 for s in (h, w))


def _window_starts(size, window, stride):
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _host(tensor):
    """A tensor's values as a new, writable numpy array."""
    return tensor.detach().cpu().numpy().copy()


def _query_owner(classes):
    """The class index of every query (synonym), read-only int64."""
    owner = np.array([k for k, name in enumerate(classes)
                      for _ in split_synonyms(name)], dtype=np.int64)
    owner.flags.writeable = False
    return owner


def _prompt_digest(bundle, synonym, templates):
    """Digest of the token ids of every prompt of `synonym` (memoised)."""
    import hashlib

    def compute():
        tokens = bundle.tokenizer([t.format(synonym) for t in templates])
        return hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()

    return _cache.memo(("clip-prompt-digest", bundle.key, templates, synonym),
                       compute)


def _check_distinct_prompts(bundle, classes, synonyms, templates):
    """Refuse two classes whose prompts the tokenizer makes identical.

    The tokenizer lower-cases, cleans the text and truncates every prompt
    at its context length (77 tokens for CLIP): two long names that differ
    only after that point, or only in what the tokenizer drops, get the
    same embedding, and the second could never be predicted.
    """
    seen = {}
    for c, syn in zip(classes, synonyms):
        key = frozenset(_prompt_digest(bundle, s, templates) for s in syn)
        if key in seen:
            def show(name):
                return repr(name if len(name) <= 60 else name[:57] + "...")

            raise ValueError(
                f"classes {show(seen[key])} and {show(c)} give the same "
                "prompts once "
                "CLIP's tokenizer has seen them (it lower-cases, cleans "
                "the text and truncates each prompt at "
                f"{getattr(bundle.tokenizer, 'context_length', 77)} "
                "tokens), so the second could never be predicted; shorten "
                "or rename one of them."
            )
        seen[key] = c


class _CLIPBundle:
    """What the cache holds for one CLIP: model, tokenizer and metadata."""

    def __init__(self, key, model, tokenizer, name):
        visual = model.visual
        self.key = key
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.patch_size = tuple(int(p) for p in visual.patch_size)
        self.grid_size = tuple(int(g) for g in visual.grid_size)
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(255 * m for m in cfg.get("mean", np.divide(CLIP_MEAN, 255)))
        self.std = tuple(255 * s for s in cfg.get("std", np.divide(CLIP_STD, 255)))
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device


def interpolate_pos_embed(pos_embed, old_grid, new_grid, method="open_clip"):
    r"""Resize a ViT position embedding (class token first) to another grid.

    The patch part is reshaped to ``old_grid`` and resized bicubically; the
    class token's embedding is kept.

    Parameters
    ----------
    pos_embed : torch.Tensor of shape (1 + gh * gw, width)
    old_grid, new_grid : tuple of int
        (rows, cols) of the patch grid before and after.
    method : {"open_clip", "scale_factor"}, default="open_clip"
        ``"open_clip"``: resize to the size `new_grid` with antialiasing,
        as open_clip does when it loads a checkpoint into another image
        size; output row :math:`i` samples the old grid at
        :math:`(i + \tfrac12)\,g_0 / g - \tfrac12`.
        ``"scale_factor"``: the peers' interpolation (SCLIP, NACLIP and the
        others, after DINO): bicubic by the scale factor
        :math:`(g + 0.1) / g_0` without antialiasing, so that row :math:`i`
        samples :math:`(i + \tfrac12)\,g_0 / (g + 0.1) - \tfrac12`; the
        embedding is interpolated even along a side that keeps its size.

    Returns
    -------
    torch.Tensor of shape (1 + new_grid[0] * new_grid[1], width)

    Examples
    --------
    >>> import torch
    >>> from dsolo_sk.features.clip import interpolate_pos_embed
    >>> pos = torch.randn(1 + 14 * 14, 8)
    >>> interpolate_pos_embed(pos, (14, 14), (21, 28)).shape
    torch.Size([589, 8])
    >>> a = interpolate_pos_embed(pos, (14, 14), (21, 28))
    >>> b = interpolate_pos_embed(pos, (14, 14), (21, 28), "scale_factor")
    >>> bool(torch.allclose(a, b))
    False
    """
    import torch
    import torch.nn.functional as F

    if method not in ("open_clip", "scale_factor"):
        raise ValueError(f"method must be 'open_clip' or 'scale_factor', "
                         f"got {method!r}.")
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos_embed
    cls, grid = pos_embed[:1], pos_embed[1:]
    width = grid.shape[-1]
    grid = grid.float().reshape(1, *old_grid, width).permute(0, 3, 1, 2)
    if method == "open_clip":
        grid = F.interpolate(grid, size=new_grid, mode="bicubic",
                             antialias=True, align_corners=False)
    else:
        grid = F.interpolate(grid, scale_factor=tuple(
            (g + 0.1) / g0 for g, g0 in zip(new_grid, old_grid)),
            mode="bicubic", align_corners=False)
        if tuple(grid.shape[-2:]) != new_grid:  # pragma: no cover
            raise RuntimeError(f"interpolated to {tuple(grid.shape[-2:])}, "
                               f"expected {new_grid}.")
    grid = grid.permute(0, 2, 3, 1).reshape(-1, width).to(pos_embed.dtype)
    return torch.cat([cls, grid], dim=0)


def dense_tokens(visual, x, pos_interpolation="open_clip"):
    """All output tokens of an open_clip ViT, projected into the joint space.

    Runs the image tower exactly as its ``forward`` does, except that the
    position embedding is interpolated to the input's patch grid and that
    ``ln_post`` and ``proj`` are applied to every token instead of the
    pooled one.

    Parameters
    ----------
    visual : open_clip.transformer.VisionTransformer
    x : torch.Tensor of shape (B, 3, H, W)
        Normalised images; H and W multiples of the patch size.
    pos_interpolation : {"open_clip", "scale_factor"}, default="open_clip"
        How the position embedding reaches the input's patch grid (see
        :func:`interpolate_pos_embed`).

    Returns
    -------
    torch.Tensor of shape (B, 1 + H/p * W/p, embed_dim)
        Token 0 is the class token (equal to ``visual(x)`` when the model
        pools with its class token), the others are the patches in
        row-major order.
    """
    import torch

    b = x.shape[0]
    t = visual.conv1(x)
    grid = tuple(t.shape[-2:])
    t = t.reshape(b, t.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(t.dtype).reshape(1, 1, -1).expand(b, 1, -1)
    t = torch.cat([cls, t], dim=1)
    pos = interpolate_pos_embed(visual.positional_embedding, visual.grid_size,
                                grid, pos_interpolation)
    t = t + pos.to(t.dtype)
    t = visual.patch_dropout(t)
    t = visual.ln_pre(t)
    t = visual.transformer(t)
    t = visual.ln_post(t)
    if visual.proj is not None:
        t = t @ visual.proj
    return t


def encode_text(model, tokens):
    """``model.encode_text(tokens)``, computed on the prompts' length only.

    The CLIP text tower is causal and pools at the end-of-text token (the
    largest id), so the tokens after the longest prompt's end (padding, up
    to the context length of 77) cannot change the result: dropping them
    gives the same embeddings several times faster (prompts are about ten
    tokens long). Other text towers go through ``model.encode_text``.

    Parameters
    ----------
    model : open_clip.CLIP
    tokens : torch.Tensor of shape (B, context_length), int

    Returns
    -------
    torch.Tensor of shape (B, embed_dim)
        Not normalised.
    """
    import open_clip.model as ocm
    import torch

    mask = getattr(model, "attn_mask", None)
    if (type(model) is not ocm.CLIP or mask is None
            or getattr(model, "text_pool_type", None) != "argmax"):
        return model.encode_text(tokens)
    eot = tokens.argmax(dim=-1)
    n = int(eot.max()) + 1
    if n >= tokens.shape[1]:
        return model.encode_text(tokens)
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :n]).to(cast)
    x = x + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=mask[:n, :n])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


class CLIPFeatures(BaseEstimator):
    """Dense CLIP logits: cosine similarity of every patch with every class.

    Parameters
    ----------
    model : str, default="ViT-B-16"
        The open_clip architecture: a built-in name (``"ViT-B-16"``,
        ``"ViT-L-14"``, ...; see :func:`open_clip.list_models`), the path to
        a model-config JSON file (registered with
        :func:`open_clip.add_model_config`; its file name, without
        ``.json``, names the architecture), a folder holding
        ``open_clip_config.json`` and the weights (open_clip's
        ``local-dir:`` layout; `pretrained` is then ignored), or an
        ``"hf-hub:org/repo"`` id. Only the ViT image towers of open_clip are
        supported.
    pretrained : str or None, default="openai"
        The weights: an open_clip tag (``"openai"``, ``"laion2b_s34b_b88k"``,
        ...), downloaded once into the Hugging Face cache (``HF_HOME``;
        ``HF_HUB_OFFLINE=1`` is respected; cached weights are read without
        asking the Hub, and weights neither cached nor downloadable raise
        WeightsUnavailableError within seconds), or the path to a local
        checkpoint
        (a state dict saved with safetensors, or with :func:`torch.save`,
        read with ``weights_only=True``). OpenAI weights use QuickGELU; with
        the ``"openai"`` tag this is switched on automatically, for a local
        copy of OpenAI weights use the ``-quickgelu`` architecture name
        (``"ViT-B-16-quickgelu"``). ``None`` keeps the random
        initialisation: for tests and benchmarks only.
    short_side : int, default=336
        The image is resized (bilinear, antialiased by default; see
        `resampling`) so that its short side is `short_side`, the long side
        capped at `max_long_side`, and each side rounded to the nearest
        multiple of the patch size. 336 is the protocol of most benchmarks
        (448 to 688 for some; see :mod:`dsolo_sk.protocols`). Any size works: the position embedding is
        interpolated to the patch grid.
        The image is normalised with the model's own mean and standard
        deviation: for CLIP models, (122.771, 116.746, 104.094) and
        (68.501, 66.632, 70.323) on 0-255 RGB.
    max_long_side : int or None, default=2048
        Cap on the long side after resizing.
    window : int or None, default=None
        Sliding-window inference: square crops of `window` pixels (a
        multiple of the patch size) taken every `stride` pixels, the logits
        of overlapping crops averaged per patch. ``None`` runs the whole
        image at once, as in the paper.
    stride : int or None, default=None
        Step between windows, a multiple of the patch size; defaults to
        ``window // 2`` rounded down to the patch size.
    resampling : {"antialias", "opencv"}, default="antialias"
        How the image is resized. ``"antialias"``: bilinear with
        antialiasing, straight to the nearest multiple of the patch size
        (as described under `short_side`). ``"opencv"``: as the peers'
        evaluation does it (mmcv's ``imrescale``), OpenCV's bilinear
        ``cv2.resize`` on uint8 without antialiasing to
        ``int(side * scale + 0.5)`` pixels; the patch grid is then the
        whole patches inside the resized image (its last ``side % patch``
        rows and columns are not seen, as with the peers' patch
        embedding). The evaluation protocols set it (see
        :class:`dsolo_sk.protocols.Protocol`).
    pos_interpolation : {"open_clip", "scale_factor"}, default="open_clip"
        How the position embedding is interpolated to the patch grid:
        ``"open_clip"`` resizes it to the grid with antialiasing, as
        open_clip does; ``"scale_factor"`` is the peers' bicubic
        interpolation by the factor ``(g + 0.1) / g0`` without
        antialiasing (see
        :func:`~dsolo_sk.features.clip.interpolate_pos_embed`).
    templates : "imagenet" or sequence of str, default="imagenet"
        Prompt templates with one ``"{}"`` for the class name. ``"imagenet"``
        means the 80 OpenAI ImageNet templates.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available, then MPS, else the CPU;
        a device that does not exist (``"gpu"``) or that this machine
        lacks is a ValueError before any model loads.
    dtype : str, default="auto"
        ``"auto"`` means float16 on CUDA and float32 on the CPU; or
        ``"float32"``, ``"float16"``, ``"bfloat16"``.
    batch_size : int, default=8
        Windows per forward pass in sliding-window inference.
    text_batch_size : int, default=256
        Prompts per forward pass of the text tower.
    cache_dir : str or None, default=None
        Download folder for the weights (default: the Hugging Face cache).

    See Also
    --------
    dsolo_sk.features.FeatureExtractor : runs this and an affinity
        extractor over a list of images.

    Notes
    -----
    The model is loaded on first use (never in ``__init__``) into a
    process-level cache keyed by (model, weights, device, dtype), so that
    clones made by :func:`sklearn.base.clone` share it. Text embeddings are
    cached per synonym, template set and model.

    Examples
    --------
    Build a tiny random CLIP, save it as a config and a safetensors
    checkpoint, and load it back as a user's checkpoint would be loaded
    (with real weights: ``CLIPFeatures()`` or
    ``CLIPFeatures("ViT-L-14", "openai")``):

    >>> import json, os, tempfile
    >>> import numpy as np, open_clip
    >>> from safetensors.torch import save_file
    >>> from dsolo_sk.features import CLIPFeatures
    >>> cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8,
    ...        "width": 32, "layers": 1, "head_width": 16},
    ...        "text_cfg": {"context_length": 77, "vocab_size": 49408,
    ...        "width": 32, "heads": 2, "layers": 1}}
    >>> tmp = tempfile.mkdtemp()
    >>> config = os.path.join(tmp, "doctest-tiny-clip.json")
    >>> with open(config, "w") as f:
    ...     json.dump(cfg, f)
    >>> open_clip.add_model_config(config)
    >>> model = open_clip.create_model("doctest-tiny-clip")  # doctest: +ELLIPSIS
    >>> save_file(model.state_dict(), os.path.join(tmp, "w.safetensors"))
    >>> clip = CLIPFeatures(config, os.path.join(tmp, "w.safetensors"),
    ...                     short_side=48, templates=["a photo of a {}."])
    >>> image = np.zeros((60, 90, 3), np.uint8)
    >>> logits = clip.compute_logits(image, ["cat", "dog, puppy"])
    >>> logits.shape, logits.dtype
    ((2, 6, 9), dtype('float32'))
    >>> clip.grid_shape(image.shape)
    (6, 9)
    """

    def __init__(self, model="ViT-B-16", pretrained="openai", *, short_side=336,
                 max_long_side=2048, window=None, stride=None,
                 resampling="antialias", pos_interpolation="open_clip",
                 templates="imagenet", device="auto", dtype="auto",
                 batch_size=8, text_batch_size=256, cache_dir=None):
        self.model = model
        self.pretrained = pretrained
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.window = window
        self.stride = stride
        self.resampling = resampling
        self.pos_interpolation = pos_interpolation
        self.templates = templates
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size
        self.cache_dir = cache_dir

    # ------------------------------------------------------------------
    # validation (no model is loaded here)

    def _check_int(self, name, value, minimum=1, allow_none=False,
                   maximum=None):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}.")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")
        if maximum is not None and value > maximum:
            raise ValueError(
                f"{name} must be <= {maximum} pixels, got {value!r}; the "
                "cost grows with the square of the image side.")

    def _resolve_model(self):
        """Map (model, pretrained) to open_clip arguments; validates names
        and paths without loading anything. Returns a dict."""
        import open_clip

        model, pretrained = self.model, self.pretrained
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(
                f"model must be an open_clip model name or a path, got {model!r}."
            )
        model = os.fspath(model)
        out = {"force_quick_gelu": False, "pretrained": None}
        if model.startswith("hf-hub:"):
            out["name"] = model
            out["weights"] = model
            out["hub"] = model[len("hf-hub:"):]
            return out
        if model.startswith("local-dir:") or os.path.isdir(model):
            path = model[len("local-dir:"):] if model.startswith("local-dir:") else model
            if not os.path.isdir(path):
                raise ValueError(
                    f"model={self.model!r} names the local folder {path!r}, "
                    "which does not exist; pass a folder holding "
                    "open_clip_config.json and the weights."
                )
            if not os.path.isfile(os.path.join(path, "open_clip_config.json")):
                raise ValueError(
                    f"the folder {path!r} has no open_clip_config.json; a "
                    "local model folder needs it next to the weights (or "
                    "pass model='<config>.json' and pretrained='<weights>')."
                )
            _check_local_dir(path)
            path = os.path.abspath(path)
            out["name"] = "local-dir:" + path
            out["weights"] = out["name"]
            return out
        if model.endswith(".json") or os.sep in model or model.startswith("."):
            if not os.path.isfile(model):
                raise ValueError(
                    f"model={self.model!r} looks like a path to a model "
                    "config, but no such file exists; pass an existing "
                    "open_clip config JSON or a built-in name such as "
                    "'ViT-B-16'."
                )
            _check_model_config(model)
            name = os.path.splitext(os.path.basename(model))[0]
            if name not in open_clip.list_models():
                open_clip.add_model_config(os.path.abspath(model))
            model = name
        if model not in open_clip.list_models():
            close = difflib.get_close_matches(model, open_clip.list_models(), n=5)
            raise ValueError(
                f"unknown open_clip model {model!r}"
                + (f"; did you mean one of {close}?" if close else "")
                + " See open_clip.list_models() for the names, or pass the "
                "path to a model config JSON."
            )
        out["name"] = model
        if pretrained is None:
            out["weights"] = None
            return out
        if not isinstance(pretrained, (str, os.PathLike)):
            raise TypeError(
                f"pretrained must be an open_clip tag, a checkpoint path or "
                f"None, got {pretrained!r}."
            )
        pretrained = os.fspath(pretrained)
        tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
        if tag_cfg:
            cfg = open_clip.get_model_config(model) or {}
            out["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False)
                                           and not cfg.get("quick_gelu", False))
            out["pretrained"] = pretrained
            out["weights"] = pretrained
            out["hub"] = tag_cfg.get("hf_hub", "") or tag_cfg.get("url", "")
            out["tag_cfg"] = dict(tag_cfg)
            return out
        if os.path.isfile(pretrained):
            _io.check_checkpoint(pretrained, _CKPT_EXPECTED)
            out["pretrained"] = os.path.abspath(pretrained)
            out["weights"] = (out["pretrained"], os.path.getmtime(pretrained))
            return out
        if pretrained.endswith(_CKPT_SUFFIXES) or os.sep in pretrained:
            raise ValueError(
                f"pretrained={self.pretrained!r} looks like a checkpoint path "
                "but no such file exists; check the path (a safetensors or "
                "torch state dict)."
            )
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(
            f"unknown pretrained tag {pretrained!r} for {model!r}; known tags: "
            f"{tags}. Pass one of them, the path to a local checkpoint, or None "
            "for random weights."
        )

    def _validate_params(self):
        """Check every parameter; raises ValueError/TypeError, loads nothing."""
        self._check_int("short_side", self.short_side, 1, maximum=_MAX_SIDE)
        self._check_int("max_long_side", self.max_long_side, 1,
                        allow_none=True, maximum=_MAX_SIDE)
        self._check_int("window", self.window, 1, allow_none=True,
                        maximum=_MAX_SIDE)
        self._check_int("stride", self.stride, 1, allow_none=True,
                        maximum=_MAX_SIDE)
        if self.stride is not None and self.window is None:
            raise ValueError("stride is set but window is None; set window too.")
        if self.window is not None and self.stride is not None \
                and self.stride > self.window:
            raise ValueError(
                f"stride ({self.stride}) must not exceed window "
                f"({self.window}), or parts of the image would be skipped."
            )
        self._check_int("batch_size", self.batch_size, 1)
        self._check_int("text_batch_size", self.text_batch_size, 1)
        check_option(self.resampling, "resampling", ("antialias", "opencv"))
        check_option(self.pos_interpolation, "pos_interpolation",
                     ("open_clip", "scale_factor"))
        self._templates()
        _cache.check_device_dtype(self.device, self.dtype)
        return self._resolve_model()

    def _templates(self):
        if isinstance(self.templates, str):
            if self.templates != "imagenet":
                raise ValueError(
                    f"templates must be 'imagenet' or a list of strings with "
                    f"'{{}}', got {self.templates!r}."
                )
            return _imagenet_templates()
        try:
            templates = tuple(self.templates)
        except TypeError:
            raise TypeError(
                f"templates must be 'imagenet' or a list of strings, got "
                f"{self.templates!r}."
            ) from None
        if not templates:
            raise ValueError("templates is empty; pass at least one template.")
        for t in templates:
            check_template(t)
        return templates

    def _requirements(self):
        """What loading the model reads, for
        :func:`~dsolo_sk.features.require_weights`: the packages its load
        imports, and the Hub weights of a tag (``hf-hub:`` id) or the files
        of a local folder; found without importing open_clip for the OpenAI
        tags. Paths to checkpoints and configs are checked by
        :meth:`_validate_params`."""
        from . import weights

        model, pretrained = self.model, self.pretrained
        if not isinstance(model, (str, os.PathLike)) or not isinstance(
                pretrained, (str, os.PathLike, type(None))):
            return []  # _validate_params says what is wrong
        model = os.fspath(model)
        pretrained = None if pretrained is None else os.fspath(pretrained)
        packages = [("torch", "the model"),
                    ("open_clip", "the model and its tokenizer")]
        hub = local_dir = None
        if model.startswith("hf-hub:"):
            hub, pretrained = model, None
        elif model.startswith("local-dir:") or os.path.isdir(model):
            local_dir = model[len("local-dir:"):] if model.startswith(
                "local-dir:") else model
        elif (pretrained is not None and not model.endswith(".json")
              and os.sep not in model
              and not os.path.isfile(pretrained) and os.sep not in pretrained
              and not pretrained.endswith(_CKPT_SUFFIXES)):
            hub = model  # a tag of a built-in architecture
        weights_file = str(pretrained or "")
        if hub is not None or weights_file.endswith(".safetensors"):
            packages.append(("safetensors", "the weights file"))
        if hub is not None:
            packages.append(("huggingface_hub", "the Hugging Face cache"))
        return [weights._clip_need(hub, pretrained, cache_dir=self.cache_dir,
                                   local_dir=local_dir, packages=packages)]

    # ------------------------------------------------------------------
    # loading

    def _key(self, spec):
        device, dtype = _cache.check_device_dtype(self.device, self.dtype)
        return ("open_clip", spec["name"], spec["weights"],
                spec["force_quick_gelu"], device, dtype)

    def _load(self):
        spec = self._validate_params()
        key = self._key(spec)
        return _cache.get_model(key, lambda: self._load_uncached(spec, key))

    @staticmethod
    def _reading_weights(spec, pretrained):
        """A checkpoint torch refuses to unpickle (``weights_only``), named
        with the safe formats (:func:`dsolo_sk._io.reading`); the file is
        the local checkpoint, the local-dir folder's or the Hub cache's."""
        path = None
        if isinstance(pretrained, str) and os.path.isfile(pretrained):
            path = pretrained
        elif str(spec["name"]).startswith("local-dir:"):
            folder = spec["name"][len("local-dir:"):]
            for name in ("open_clip_model.safetensors",
                         "open_clip_pytorch_model.bin"):
                if os.path.lexists(os.path.join(folder, name)):
                    path = os.path.join(folder, name)
                    break
        if path is None:
            import contextlib

            return contextlib.nullcontext()
        return _io.reading(path, _CKPT_EXPECTED,
                           errors=(pickle.UnpicklingError,))

    def _hub_checkpoint(self, spec):
        """Where the Hub-hosted weights of `spec` are read from.

        For a tag whose open_clip config names a Hub file (``hf_hub``):
        its path in the local Hugging Face cache, read without any
        network access, or downloaded once by
        :func:`~dsolo_sk.features.weights.clip_checkpoint` (failing at
        once, with the kind's own message, offline, without network, for a
        repository gone or gated). For an ``hf-hub:`` model: None when its
        config is cached (open_clip reads it there), else the same fast
        failures before open_clip downloads it. None for a local file or a
        URL-only tag (open_clip's own download).
        """
        from . import _hub, weights

        tag_cfg = spec.get("tag_cfg") or {}
        fix = self._fixes(spec)
        what = self._what(spec)
        if tag_cfg.get("hf_hub"):
            return weights.clip_checkpoint(
                tag_cfg["hf_hub"], cache_dir=self.cache_dir, what=what,
                fix=fix, model=f"{spec['name']}:{spec['pretrained']}",
                progress=True)
        if not str(spec["name"]).startswith("hf-hub:"):
            return None  # a local file, or a URL-only tag: open_clip's own
        if _hub.cached_file(spec["hub"], "open_clip_config.json",
                            cache_dir=self.cache_dir) is not None:
            return None  # open_clip reads its config and weights there
        if _hub.offline():
            raise self._unavailable("not_cached", spec, missing=[
                "open_clip_config.json"])
        reason = _hub.unreachable_reason()
        if reason is not None:
            raise self._unavailable("unreachable", spec, reason=reason)
        return None

    @staticmethod
    def _what(spec):
        if spec.get("tag_cfg"):
            return (f"the open_clip weights {spec['pretrained']!r} of "
                    f"{spec['name']!r}")
        return f"the open_clip model {spec['name']!r}"

    @staticmethod
    def _fixes(spec):
        """(python, cli, local, fill): the fixes the errors name."""
        import open_clip

        name = spec["name"]
        tag_cfg = spec.get("tag_cfg") or {}
        if name.startswith("hf-hub:"):
            return ("CLIPFeatures('/path/to/folder')", "--model /path/to/folder",
                    "a local folder holding open_clip_config.json and the "
                    f"weights (`hf download {spec['hub']} --local-dir "
                    "/path/to/folder`)",
                    f"dsolo-sk weights download --clip {name}")
        # OpenAI weights need QuickGELU: a local copy needs the -quickgelu
        # architecture, or its activations silently differ
        local = name
        if spec.get("force_quick_gelu") and \
                f"{name}-quickgelu" in open_clip.list_models():
            local = f"{name}-quickgelu"
        ckpt = "/path/to/open_clip_model.safetensors"
        repo = os.path.split(tag_cfg.get("hf_hub", ""))[0]
        return (f"CLIPFeatures({local!r}, pretrained={ckpt!r}), a segmenter's "
                "extractor",
                f"--model {local} --pretrained {ckpt}",
                f"a local checkpoint (`hf download {repo} "
                "open_clip_model.safetensors --local-dir /path/to`; the tag "
                f"{spec['pretrained']!r} maps to that Hub repository)",
                f"dsolo-sk weights download --clip {name}:{spec['pretrained']}")

    def _unavailable(self, kind, spec, *, reason=None, missing=(), exc=None):
        """The error of `kind` (see :func:`dsolo_sk.features._hub.classify`)."""
        from . import _hub

        python, cli, local, fill = self._fixes(spec)
        tag_cfg = spec.get("tag_cfg") or {}
        repo = os.path.split(tag_cfg["hf_hub"])[0] if tag_cfg.get(
            "hf_hub") else spec.get("hub", spec["name"])
        return _hub.unavailable(
            kind, what=self._what(spec), repo=repo,
            cache_dir=_hub.cache_folder(self.cache_dir), reason=reason,
            missing=missing, fill=fill, python=python, cli=cli, local=local,
            exc=exc)

    def _load_uncached(self, spec, key):
        import open_clip

        from . import _hub

        device, dtype = key[-2], key[-1]
        precision = {"float32": "fp32", "float16": "fp16",
                     "bfloat16": "bf16"}[dtype]
        if spec["weights"] is None:
            warnings.warn(
                f"CLIPFeatures(pretrained=None): {spec['name']} keeps its "
                "random initialisation; its logits carry no meaning.",
                UserWarning, stacklevel=4,
            )
        pretrained, extra = spec["pretrained"], {}
        local = self._hub_checkpoint(spec)
        if local is not None:
            # the tag's cached file with the tag's preprocessing: what
            # open_clip would resolve, without asking the Hub first
            pretrained = local
            extra["force_preprocess_cfg"] = {
                k: v for k, v in spec["tag_cfg"].items()
                if k in _PREPROCESS_KEYS and v is not None}
        level = logging.getLogger().level
        try:
            # open_clip logs a warning for random weights and an error
            # before it raises; ours are clearer.
            logging.getLogger().setLevel(max(level, logging.CRITICAL))
            with _hub.quiet_hub_logs(), self._reading_weights(spec,
                                                              pretrained):
                model = open_clip.create_model(
                    spec["name"], pretrained=pretrained,
                    precision=precision, device=device,
                    force_quick_gelu=spec["force_quick_gelu"],
                    cache_dir=self.cache_dir, weights_only=True, **extra,
                )
        except (RuntimeError, OSError, ValueError) as exc:
            # open_clip's own downloads (hf-hub: models, URL-only tags)
            # wrap huggingface_hub's errors: find them in the chain
            kind = _hub.classify(exc) if spec.get("hub") else None
            if kind is None:
                raise
            raise self._unavailable(kind, spec, exc=exc) from exc
        finally:
            logging.getLogger().setLevel(level)
        visual = model.visual
        if type(visual).__name__ != "VisionTransformer" or not hasattr(
                visual, "conv1"):
            raise ValueError(
                f"{spec['name']!r} has a {type(visual).__name__} image tower; "
                "CLIPFeatures needs an open_clip VisionTransformer (a 'ViT-*' "
                "model) to read its patch tokens."
            )
        if getattr(visual, "attn_pool", None) is not None:
            raise ValueError(
                f"{spec['name']!r} pools with attention (CoCa-style); its "
                "patch tokens are not in the joint space. Use a CLIP ViT."
            )
        model.eval().requires_grad_(False)
        tokenizer = open_clip.get_tokenizer(spec["name"])
        return _CLIPBundle(key, model, tokenizer, spec["name"])

    # ------------------------------------------------------------------
    # public API

    def grid_shape(self, image_shape):
        """Patch grid (rows, cols) for an image of shape (H, W[, C]).

        Needs the patch size, so it loads the model (once per process).
        """
        bundle = self._load()
        return self._grid(bundle, image_shape[:2])

    def _grid(self, bundle, hw):
        ph, pw = bundle.patch_size
        if ph != pw:  # pragma: no cover - no such open_clip model
            raise ValueError("non-square patches are not supported.")
        h, w = self._resize_to(bundle, hw)
        return h // ph, w // pw

    def _resize_to(self, bundle, hw):
        """(height, width) in pixels that an image of size `hw` becomes."""
        p = bundle.patch_size[0]
        if self.resampling == "opencv":
            return rescaled_shape(hw, self.short_side, self.max_long_side,
                                  minimum=p)
        return _resized_shape(hw[0], hw[1], self.short_side,
                              self.max_long_side, p)

    def text_embeddings(self, classes):
        """Prompt-ensembled, L2-normalised text embeddings.

        Parameters
        ----------
        classes : sequence of str
            Class names; synonyms within a name are separated by commas.

        Returns
        -------
        embeddings : ndarray of shape (n_synonyms, embed_dim), float32
            One row per synonym, in the order of `classes` and of the
            synonyms in each name.
        owner : ndarray of shape (n_synonyms,), int
            Index of the class each row belongs to.
        """
        bundle = self._load()
        emb, owner = self._text_embeddings(bundle, check_classes(classes))
        return emb.float().cpu().numpy(), owner.cpu().numpy()

    def _text_embeddings(self, bundle, classes):
        import torch

        templates = self._templates()
        synonyms = [split_synonyms(c) for c in classes]
        _check_distinct_prompts(bundle, classes, synonyms, templates)
        flat = [s for syn in synonyms for s in syn]
        owner = torch.tensor([k for k, syn in enumerate(synonyms) for _ in syn])
        keys = [("clip-text", bundle.key, templates, s) for s in flat]
        missing = list(dict.fromkeys(
            s for s, k in zip(flat, keys) if _cache.memo_get(k) is None))
        if missing:
            for s, e in zip(missing, self._encode_texts(bundle, missing, templates)):
                _cache.memo_set(("clip-text", bundle.key, templates, s), e)
        emb = torch.stack([_cache.memo_get(k) for k in keys])
        return emb.to(bundle.device), owner.to(bundle.device)

    def _encode_texts(self, bundle, names, templates):
        """One ensembled embedding per name (float32, on CPU)."""
        import torch
        import torch.nn.functional as F

        prompts = [t.format(n) for n in names for t in templates]
        _cache.memo_set(("clip-text-prompts-encoded",),
                        _cache.memo_get(("clip-text-prompts-encoded",), 0)
                        + len(prompts))
        out = []
        # each name is encoded in batches of its own prompts only, so its
        # embedding is bit-identical whichever other names are encoded
        # with it (the batch shapes, hence the rounding, depend on the name
        # alone); a resumed evaluation then reproduces an uninterrupted one
        per = len(templates)
        with torch.inference_mode():
            for k in range(len(names)):
                mine = prompts[k * per:(k + 1) * per]
                for i in range(0, per, self.text_batch_size):
                    tokens = bundle.tokenizer(mine[i:i + self.text_batch_size])
                    e = encode_text(bundle.model, tokens.to(bundle.device))
                    out.append(F.normalize(e.float(), dim=-1).cpu())
        e = torch.cat(out).reshape(len(names), len(templates), -1).mean(1)
        return F.normalize(e, dim=-1)

    def _preprocess(self, bundle, image, rows, cols):
        import torch
        import torch.nn.functional as F

        p = bundle.patch_size[0]
        if self.resampling == "opencv":
            image = resize_image(image, self._resize_to(bundle, image.shape[:2]),
                                 "opencv")[:rows * p, :cols * p]
        x = torch.tensor(image, device=bundle.device)
        x = x.permute(2, 0, 1)[None].float()
        if tuple(x.shape[-2:]) != (rows * p, cols * p):
            x = F.interpolate(x, size=(rows * p, cols * p), mode="bilinear",
                              antialias=True, align_corners=False)
        mean = torch.tensor(bundle.mean, device=x.device).reshape(1, 3, 1, 1)
        std = torch.tensor(bundle.std, device=x.device).reshape(1, 3, 1, 1)
        return ((x - mean) / std).to(bundle.dtype)

    def compute_logits(self, image, classes):
        """Cosine similarities between patch and class embeddings.

        Parameters
        ----------
        image : array-like of shape (H, W[, C]), PIL image or path
            Converted as documented in :mod:`dsolo_sk.features._images`.
        classes : sequence of str
            Class names; ``"a, b"`` scores the max over synonyms a and b.

        Returns
        -------
        logits : ndarray of shape (n_classes, rows, cols), float32
            Values in [-1, 1]; (rows, cols) is :meth:`grid_shape`. The
            maximum, per class, of :meth:`compute_query_logits`.
        """
        classes = check_classes(classes)
        image = to_rgb_uint8(image)
        queries, owner = self._query_logits(self._load(), image, classes)
        return max_per_class(_host(queries), owner, len(classes))

    def compute_query_logits(self, image, classes):
        """Cosine similarities between the patches and every text query.

        Each synonym of a class name (``"person, man"``) is a query of its
        own, as in the peers' evaluation, whose background rule takes a
        softmax over all queries before the maximum over each class's
        queries (see :func:`dsolo_sk.evaluation.class_probabilities`). In
        sliding-window inference the windows are averaged per query, and
        :meth:`compute_logits` is the per-class maximum of the averages.

        The results of the last two calls (or of :meth:`compute_logits`)
        are kept, keyed by the image's pixels and every parameter that
        changes them, so that asking for the same image again (the
        evaluation's background rule after the segmenter's own call) costs
        no forward pass.

        Parameters
        ----------
        image : array-like of shape (H, W[, C]), PIL image or path
            Converted as documented in :mod:`dsolo_sk.features._images`.
        classes : sequence of str
            Class names; synonyms within a name are separated by commas.

        Returns
        -------
        query_logits : ndarray of shape (n_queries, rows, cols), float32
            One map per synonym, in the order of `classes` and of the
            synonyms in each name.
        query_class : ndarray of shape (n_queries,), int64
            Index of the class each query belongs to.

        Examples
        --------
        >>> import json, os, tempfile
        >>> import numpy as np, open_clip
        >>> from dsolo_sk.features import CLIPFeatures
        >>> cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32,
        ...        "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        ...        "text_cfg": {"context_length": 77, "vocab_size": 49408,
        ...        "width": 32, "heads": 2, "layers": 1}}
        >>> config = os.path.join(tempfile.mkdtemp(), "doctest-query-clip.json")
        >>> with open(config, "w") as f:
        ...     json.dump(cfg, f)
        >>> clip = CLIPFeatures(config, None, short_side=32,
        ...                     templates=["a photo of a {}."])
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights
        ...     q, owner = clip.compute_query_logits(
        ...         np.zeros((32, 48, 3), np.uint8), ["sky, cloud", "cat"])
        >>> q.shape, owner.tolist()
        ((3, 4, 6), [0, 0, 1])
        """
        classes = check_classes(classes)
        image = to_rgb_uint8(image)
        queries, owner = self._query_logits(self._load(), image, classes)
        return _host(queries), owner.copy()

    def compute_logits_batch(self, images, classes, *, as_tensor=False):
        """:meth:`compute_logits` of several images, batched by size.

        Images whose patch grids are equal (consecutive or not) go through
        the image tower in one forward pass; the results equal those of
        :meth:`compute_logits` image by image within float rounding.
        Memory grows linearly with the number of images: pass chunks (as
        :class:`~dsolo_sk.features.FeatureExtractor` does with its
        ``batch_size``). In sliding-window inference the images are
        processed one by one, their windows batched by `batch_size`.

        Parameters
        ----------
        images : list of images
            Each converted as documented in :mod:`dsolo_sk.features._images`.
        classes : sequence of str
            Class names; ``"a, b"`` scores the max over synonyms a and b.
        as_tensor : bool, default=False
            Return float32 torch tensors on the model's device instead of
            numpy arrays: nothing is copied to the host (the torch path of
            :class:`~dsolo_sk.DirectSegmenter`). The values are the same.

        Returns
        -------
        list of ndarray (or torch.Tensor) of shape (n_classes, rows, cols), float32
            One per image, in order.

        Examples
        --------
        >>> import json, os, tempfile, warnings
        >>> import numpy as np
        >>> from dsolo_sk.features import CLIPFeatures
        >>> cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32,
        ...        "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        ...        "text_cfg": {"context_length": 77, "vocab_size": 49408,
        ...        "width": 32, "heads": 2, "layers": 1}}
        >>> config = os.path.join(tempfile.mkdtemp(), "doctest-batch-clip.json")
        >>> with open(config, "w") as f:
        ...     json.dump(cfg, f)
        >>> clip = CLIPFeatures(config, None, short_side=32,
        ...                     templates=["a photo of a {}."])
        >>> images = [np.full((32, 48, 3), v, np.uint8) for v in (0, 90, 200)]
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights
        ...     batch = clip.compute_logits_batch(images, ["sky", "cat"])
        ...     one = clip.compute_logits(images[2], ["sky", "cat"])
        >>> [b.shape for b in batch]
        [(2, 4, 6), (2, 4, 6), (2, 4, 6)]
        >>> bool(np.allclose(batch[2], one, atol=1e-5))
        True
        >>> tensors = clip.compute_logits_batch(images, ["sky", "cat"],
        ...                                     as_tensor=True)
        >>> type(tensors[2]).__name__, str(tensors[2].device)
        ('Tensor', 'cpu')
        >>> bool((tensors[2].numpy() == batch[2]).all())
        True
        """
        classes = check_classes(classes)
        images = to_rgb_uint8_list(images)
        values = self._query_logits_batch(self._load(), images, classes)
        if as_tensor:
            return [max_per_class(q, owner, len(classes))
                    for q, owner in values]
        return [max_per_class(_host(q), owner, len(classes))
                for q, owner in values]

    def compute_query_logits_batch(self, images, classes):
        """:meth:`compute_query_logits` of several images, batched by size.

        Images whose patch grids are equal go through the image tower
        together (see :meth:`compute_logits_batch`); images already in the
        cache of the last results cost no forward pass.

        Parameters
        ----------
        images : list of images
            Each converted as documented in :mod:`dsolo_sk.features._images`.
        classes : sequence of str
            Class names; synonyms within a name are separated by commas.

        Returns
        -------
        list of (query_logits, query_class)
            One pair per image, as :meth:`compute_query_logits` returns.

        Examples
        --------
        >>> import json, os, tempfile, warnings
        >>> import numpy as np
        >>> from dsolo_sk.features import CLIPFeatures
        >>> cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32,
        ...        "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        ...        "text_cfg": {"context_length": 77, "vocab_size": 49408,
        ...        "width": 32, "heads": 2, "layers": 1}}
        >>> config = os.path.join(tempfile.mkdtemp(), "doctest-qbatch-clip.json")
        >>> with open(config, "w") as f:
        ...     json.dump(cfg, f)
        >>> clip = CLIPFeatures(config, None, short_side=32,
        ...                     templates=["a photo of a {}."])
        >>> images = [np.zeros((32, 48, 3), np.uint8),
        ...           np.zeros((64, 32, 3), np.uint8)]
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # random weights
        ...     out = clip.compute_query_logits_batch(images, ["sky, cloud", "cat"])
        >>> [(q.shape, owner.tolist()) for q, owner in out]
        [((3, 4, 6), [0, 0, 1]), ((3, 8, 4), [0, 0, 1])]
        """
        classes = check_classes(classes)
        images = to_rgb_uint8_list(images)
        values = self._query_logits_batch(self._load(), images, classes)
        return [(_host(q), owner.copy()) for q, owner in values]

    def _recent_key(self, bundle, image, classes):
        return (bundle.key, self._templates(), tuple(classes), self.short_side,
                self.max_long_side, self.window, self.stride, self.resampling,
                self.pos_interpolation, self.batch_size, self.text_batch_size,
                image.shape, hashlib.blake2b(image).hexdigest())

    def _query_logits(self, bundle, image, classes):
        return self._query_logits_batch(bundle, [image], classes)[0]

    def _query_logits_batch(self, bundle, images, classes):
        images = [np.ascontiguousarray(img) for img in images]
        keys = [self._recent_key(bundle, img, classes) for img in images]
        values = [None] * len(images)
        with _RECENT_LOCK:
            for k, key in enumerate(keys):
                if key in _RECENT:
                    _RECENT.move_to_end(key)
                    values[k] = _RECENT[key]
        todo = [k for k, v in enumerate(values) if v is None]
        if len(todo) == 1 or (todo and self.window is not None):
            for k in todo:
                values[k] = self._compute_query_logits(bundle, images[k],
                                                       classes)
        elif todo:
            groups = {}
            for k in todo:
                grid = self._grid(bundle, images[k].shape[:2])
                groups.setdefault(grid, []).append(k)
            for grid, ks in groups.items():
                out = self._compute_query_logits_grid(
                    bundle, [images[k] for k in ks], classes, grid)
                for k, v in zip(ks, out):
                    values[k] = v
        with _RECENT_LOCK:
            for k in todo:
                _RECENT[keys[k]] = values[k]
            while len(_RECENT) > _RECENT_SIZE:
                _RECENT.popitem(last=False)
        return values

    def _compute_query_logits_grid(self, bundle, images, classes, grid):
        """Whole-image logits of images sharing the patch grid `grid`, in
        one forward pass."""
        import torch
        import torch.nn.functional as F

        text, _ = self._text_embeddings(bundle, classes)
        rows, cols = grid
        x = torch.cat([self._preprocess(bundle, img, rows, cols)
                       for img in images])
        with torch.inference_mode():
            tok = dense_tokens(bundle.model.visual, x,
                               self.pos_interpolation)[:, 1:]
            tok = F.normalize(tok.float(), dim=-1)
            out = (tok @ text.T).transpose(1, 2)  # (B, n_queries, P)
        out = out.reshape(len(images), -1, rows, cols).float()
        owner = _query_owner(classes)
        # one tensor per image, not views that keep the batch alive
        return [(q.clone(), owner) for q in out]

    def _compute_query_logits(self, bundle, image, classes):
        import torch
        import torch.nn.functional as F

        text, _ = self._text_embeddings(bundle, classes)
        p = bundle.patch_size[0]
        rows, cols = self._grid(bundle, image.shape[:2])
        x = self._preprocess(bundle, image, rows, cols)
        n_queries = text.shape[0]

        def score(crops):
            tok = dense_tokens(bundle.model.visual, crops,
                               self.pos_interpolation)[:, 1:]
            tok = F.normalize(tok.float(), dim=-1)
            return tok @ text.T  # (B, P, n_queries)

        with torch.inference_mode():
            if self.window is None:
                out = score(x)[0].T.reshape(n_queries, rows, cols)
            else:
                out = self._sliding(x, score, rows, cols, p, n_queries)
        return out.float(), _query_owner(classes)

    def _sliding(self, x, score, rows, cols, p, n_cls):
        import torch

        if self.window % p:
            raise ValueError(
                f"window ({self.window}) must be a multiple of the patch size "
                f"({p})."
            )
        stride = self.stride if self.stride is not None else max(
            p, (self.window // 2) // p * p)
        if stride % p:
            raise ValueError(
                f"stride ({stride}) must be a multiple of the patch size ({p})."
            )
        H, W = x.shape[-2:]
        wh, ww = min(self.window, H), min(self.window, W)
        boxes = [(y, xx) for y in _window_starts(H, wh, stride)
                 for xx in _window_starts(W, ww, stride)]
        acc = torch.zeros(n_cls, rows, cols, device=x.device)
        cnt = torch.zeros(1, rows, cols, device=x.device)
        gh, gw = wh // p, ww // p
        for i in range(0, len(boxes), self.batch_size):
            chunk = boxes[i:i + self.batch_size]
            crops = torch.cat([x[..., y:y + wh, xx:xx + ww] for y, xx in chunk])
            s = score(crops)  # (B, gh*gw, n_cls)
            for (y, xx), sk in zip(chunk, s):
                r, c = y // p, xx // p
                acc[:, r:r + gh, c:c + gw] += sk.T.reshape(n_cls, gh, gw)
                cnt[:, r:r + gh, c:c + gw] += 1
        return acc / cnt
