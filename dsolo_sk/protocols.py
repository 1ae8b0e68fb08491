"""The evaluation protocol of each benchmark, as data.

The training-free CLIP segmenters of the field (SCLIP, NACLIP, CASS,
SC-CLIP, ClearCLIP, ProxyCLIP, CorrCLIP, Trident) all evaluate in the same
way, with per-dataset differences that change the numbers: the short side
the image is resized to, whole-image or sliding-window inference, the
temperature of the softmax and the probability below which a pixel falls
to background. A :class:`Protocol` writes every such choice down, so that
a result file says exactly how it was obtained, and :data:`PROTOCOLS` holds
one per dataset and named setting (:data:`SETTINGS`):

``"paper"``
    The closest available evidence of the paper's own setting: the whole
    image at once (as the paper states), short side 336 (560 on
    Cityscapes), softmax scale 40 and a probability threshold of 0.1 on
    the datasets with a background class, as in the first author's earlier
    public code (RF-CLIP); the image is resized and the position
    embedding interpolated the way that code base (and every peer) does.
``"sclip"``, ``"naclip"``, ``"cass"``, ``"sc-clip"``, ``"clearclip"``, ``"proxyclip"``, ``"corrclip"``, ``"trident"``
    Each peer's own public configuration (:data:`SOURCES` says where it
    comes from and what it does not cover). ``"peers"`` is accepted as an
    alias of ``"sclip"``, the setting the others derive from.

Every setting resizes the image so that its short side is ``short_side``
(the long side capped at 2048), scores it whole or in sliding windows,
upsamples the scores bilinearly to the original resolution and compares
with the original ground truth. On the datasets with a background class,
pixels whose top probability, ``softmax(logit_scale * cosine)`` over every
text query then the maximum over each class's queries, is below
``prob_threshold`` become class 0 (see :func:`dsolo_sk.evaluation.predict_image`
for where the probabilities come from in the paper's modes).

.. rubric:: Examples

>>> from dsolo_sk.protocols import PROTOCOLS, SETTINGS
>>> SETTINGS[:4]
('paper', 'sclip', 'naclip', 'cass')
>>> len(PROTOCOLS), PROTOCOLS["voc21", "naclip"].inference
(72, 'whole')
"""

import dataclasses
import hashlib
import json
from numbers import Integral, Real

from ._validation import IGNORE_INDEX, check_option, check_scalar

__all__ = ["Protocol", "PROTOCOLS", "SETTINGS", "SETTING_ALIASES", "SOURCES",
           "BACKGROUND_RULES", "RESAMPLINGS", "POS_INTERPOLATIONS",
           "get_protocol"]

#: The named settings: the paper's and one per peer.
SETTINGS = ("paper", "sclip", "naclip", "cass", "sc-clip", "clearclip",
            "proxyclip", "corrclip", "trident")
#: Other names :func:`get_protocol` accepts for a setting.
SETTING_ALIASES = {"peers": "sclip"}
#: Where the probabilities of the background rule come from (see
#: :func:`dsolo_sk.evaluation.predict_image`).
BACKGROUND_RULES = ("auto", "clip", "clip_label", "scores")
#: How the image is resized to the protocol's short side.
RESAMPLINGS = ("opencv", "antialias")
#: How CLIP's position embedding is interpolated to another patch grid
#: (see :class:`dsolo_sk.features.CLIPFeatures`).
POS_INTERPOLATIONS = ("scale_factor", "open_clip")
#: Largest image side (in pixels) a protocol may resize to; the models'
#: cost grows with the square of the side (CLIP at 8192 pixels has
#: 262144 patches).
MAX_SIDE = 8192
_INFERENCE = ("whole", "slide")
_DATASETS = ("voc21", "voc20", "context60", "context59", "coco_object",
             "coco_stuff", "cityscapes", "ade20k")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a benchmark is evaluated.

    Parameters
    ----------
    dataset : str
        Dataset key (``"voc21"``, ...), also the key of its class file.
    n_classes : int
        Number of evaluated classes.
    short_side : int in [1, 8192]
        The image is resized so that its short side has this length ...
    long_side_max : int in [short_side, 8192], default=2048
        ... unless its long side would exceed this (aspect ratio kept). The
        scale is ``min(long_side_max / long, short_side / short)`` and each
        side becomes ``int(side * scale + 0.5)``, as in mmcv's
        ``imrescale``.
    inference : {"whole", "slide"}, default="whole"
        Score the whole resized image at once, or average the scores of
        sliding windows.
    slide_crop, slide_stride : int, default=224, 112
        Window size and stride of ``inference="slide"``, in pixels of the
        resized image.
    logit_scale : float in (0, 1000], default=40.0
        Temperature of the softmax that the probability threshold reads:
        probabilities are ``softmax(logit_scale * cosine)``.
    prob_threshold : float in [0, 1] or None, default=None
        Pixels whose top probability is below it become class 0 (datasets
        with a background class only); None disables the rule.
    area_threshold : float or None, default=None
        SCLIP's area rule (datasets with a background class only): after
        the argmax, every class other than 0 whose predicted area is at
        most ``area_threshold`` times the area of all classes other than 0
        is removed (its probability set to 0, its pixels given to the next
        best class) before the probability threshold.
    background_rule : {"auto", "clip", "clip_label", "scores"}, \
default="auto"
        Which probabilities the two thresholds read.
        ``"clip"``: CLIP's own, computed as the peers do (a softmax over
        every text query, synonyms and background names included, then the
        maximum over each class's queries), whatever the method's scores
        are; the test reads the top probability. ``"clip_label"``: the
        same probabilities, read at the label the method predicts.
        ``"scores"``: ``softmax(logit_scale * score)`` of the estimator's
        own scores (or its ``predict_proba`` output as is), which is the
        peers' rule when the scores are cosines, one query per class.
        ``"auto"``: ``"clip"`` when the estimator computes CLIP logits
        itself (the segmenters of this package), ``"scores"`` otherwise.
        See :ref:`protocol` for the choice.
    resampling : {"opencv", "antialias"}, default="opencv"
        How the image is resized: ``"opencv"`` is OpenCV's bilinear
        ``cv2.resize`` on uint8 without antialiasing, as every peer does
        (through mmcv); ``"antialias"`` is a bilinear resize with
        antialiasing (Pillow, or torch's ``antialias=True``).
    pos_interpolation : {"scale_factor", "open_clip"}, \
default="scale_factor"
        How the CLIP extractor interpolates its position embedding to the
        patch grid (see :class:`~dsolo_sk.features.CLIPFeatures`); used
        when the estimator's extractor has this parameter.
    reduce_zero_label : bool, default=False
        Whether raw label 0 is ignored and the others moved down by one.
    ignore_index : int, default=255
    has_background : bool, default=False
        Whether class 0 is background.
    split : str, default="val"
    n_images : int or None
        Size of the standard split, for reference.
    setting : str, default="custom"
        One of :data:`SETTINGS` for the stored protocols, ``"custom"``
        otherwise.

    Examples
    --------
    >>> from dsolo_sk.protocols import get_protocol
    >>> p = get_protocol("voc21")
    >>> p.short_side, p.inference, p.prob_threshold
    (336, 'whole', 0.1)
    >>> p.resized_shape((375, 500))
    (336, 448)
    >>> get_protocol("voc21", "sclip").windows((336, 448))[:2]
    [(0, 224, 0, 224), (0, 224, 112, 336)]
    """

    dataset: str
    n_classes: int
    short_side: int
    long_side_max: int = 2048
    inference: str = "whole"
    slide_crop: int = 224
    slide_stride: int = 112
    logit_scale: float = 40.0
    prob_threshold: float | None = None
    area_threshold: float | None = None
    background_rule: str = "auto"
    resampling: str = "opencv"
    pos_interpolation: str = "scale_factor"
    reduce_zero_label: bool = False
    ignore_index: int = IGNORE_INDEX
    has_background: bool = False
    split: str = "val"
    n_images: int | None = None
    setting: str = "custom"

    def __post_init__(self):
        if not isinstance(self.dataset, str) or not self.dataset:
            raise TypeError(f"dataset must be a non-empty str, got "
                            f"{self.dataset!r}.")
        check_scalar(self.n_classes, "n_classes", target_type=Integral,
                     min_val=2)
        check_scalar(self.short_side, "short_side", target_type=Integral,
                     min_val=1, max_val=MAX_SIDE, unit="pixels")
        check_scalar(self.long_side_max, "long_side_max",
                     target_type=Integral, min_val=self.short_side,
                     max_val=MAX_SIDE, unit="pixels")
        check_option(self.inference, "inference", _INFERENCE)
        check_scalar(self.slide_crop, "slide_crop", target_type=Integral,
                     min_val=1, max_val=MAX_SIDE, unit="pixels")
        check_scalar(self.slide_stride, "slide_stride", target_type=Integral,
                     min_val=1, max_val=self.slide_crop, unit="pixels")
        check_scalar(self.logit_scale, "logit_scale", target_type=Real,
                     min_val=0, include_min=False, max_val=1000,
                     unit="(inverse temperature on cosine scores; CLIP's "
                          "is 100)")
        for name in ("prob_threshold", "area_threshold"):
            value = getattr(self, name)
            if value is None:
                continue
            check_scalar(value, name, target_type=Real, min_val=0, max_val=1)
            if not self.has_background:
                raise ValueError(
                    f"{name} is set for {self.dataset}, which has no "
                    "background class; the rule sends pixels to class 0, so "
                    "it only applies with has_background=True."
                )
        check_option(self.background_rule, "background_rule",
                     BACKGROUND_RULES)
        check_option(self.resampling, "resampling", RESAMPLINGS)
        check_option(self.pos_interpolation, "pos_interpolation",
                     POS_INTERPOLATIONS)
        check_scalar(self.ignore_index, "ignore_index", target_type=Integral)
        for name in ("reduce_zero_label", "has_background"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got "
                                f"{getattr(self, name)!r}.")
        check_option(self.setting, "setting", (*SETTINGS, "custom"))
        if not isinstance(self.split, str) or not self.split:
            raise TypeError(f"split must be a non-empty str, got "
                            f"{self.split!r}.")
        if self.n_images is not None:
            check_scalar(self.n_images, "n_images", target_type=Integral,
                         min_val=0)
        # numpy scalars pass the checks; store Python numbers so that the
        # protocol serialises to JSON
        for name in ("n_classes", "short_side", "long_side_max",
                     "slide_crop", "slide_stride", "ignore_index",
                     "n_images"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))
        object.__setattr__(self, "logit_scale", float(self.logit_scale))
        if self.prob_threshold is not None:
            object.__setattr__(self, "prob_threshold",
                               float(self.prob_threshold))

    # -- geometry ----------------------------------------------------------
    def resized_shape(self, shape):
        """The (height, width) an image of `shape` is resized to.

        The scale is the largest that keeps the short side at most
        ``short_side`` and the long side at most ``long_side_max``; each
        side is ``int(side * scale + 0.5)`` (mmcv's rounding), at least 1.
        """
        h, w = int(shape[0]), int(shape[1])
        if h < 1 or w < 1:
            raise ValueError(f"cannot resize an empty image of shape {shape}.")
        scale = min(self.long_side_max / max(h, w),
                    self.short_side / min(h, w))
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))

    def windows(self, shape):
        """The windows ``(y0, y1, x0, x1)`` scored on an image of `shape`.

        ``inference="whole"`` gives the whole image. ``"slide"`` tiles it
        with ``slide_crop`` windows every ``slide_stride`` pixels, the last
        row and column moved back to end at the border; an image smaller
        than a window is one window.
        """
        h, w = int(shape[0]), int(shape[1])
        if self.inference == "whole":
            return [(0, h, 0, w)]
        crop, stride = self.slide_crop, self.slide_stride
        rows = max(h - crop + stride - 1, 0) // stride + 1
        cols = max(w - crop + stride - 1, 0) // stride + 1
        out = []
        for r in range(rows):
            for c in range(cols):
                y1, x1 = min(r * stride + crop, h), min(c * stride + crop, w)
                out.append((max(y1 - crop, 0), y1, max(x1 - crop, 0), x1))
        return out

    # -- serialisation -----------------------------------------------------
    def to_dict(self):
        """The protocol as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        """Build a protocol from :meth:`to_dict`'s output (validated)."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a dict, got {type(data).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown protocol fields {unknown}; known: "
                             f"{sorted(names)}.")
        return cls(**data)

    def fingerprint(self):
        """A short hash of the protocol, stored with every result.

        Examples
        --------
        >>> from dsolo_sk.protocols import get_protocol
        >>> len(get_protocol("ade20k").fingerprint())
        16
        """
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# -- the data -----------------------------------------------------------------
#: dataset -> (n_classes, n_images, reduce_zero_label, has_background)
_DATASET_FACTS = {
    "voc21": (21, 1449, False, True),
    "voc20": (20, 1449, True, False),
    "context60": (60, 5105, False, True),
    "context59": (59, 5105, True, False),
    "coco_object": (81, 5000, False, True),
    "coco_stuff": (171, 5000, False, False),
    "cityscapes": (19, 500, False, False),
    "ade20k": (150, 2000, True, False),
}


def _per_dataset(values):
    """Expand a tuple of one value per dataset (in the order of
    ``_DATASETS``), a dict of exceptions over a ``"default"``, or a single
    value, to {dataset: value}."""
    if isinstance(values, tuple) and len(values) == len(_DATASETS):
        return dict(zip(_DATASETS, values))
    if isinstance(values, dict):
        return {d: values.get(d, values.get("default")) for d in _DATASETS}
    return dict.fromkeys(_DATASETS, values)


_SLIDE_224 = ("slide", 224, 112)
_WHOLE = ("whole", 224, 112)
_NACLIP_SIZES = (336, 336, 336, 336, 336, 336, 560, 336)
_PROXY_SIZES = (336, 336, 336, 336, 336, 336, 448, 448)
_THD_01 = {"voc21": 0.1, "context60": 0.1, "coco_object": 0.1}
_THD_PROXY = {"voc21": 0.2, "context60": 0.15, "coco_object": 0.25}

#: setting -> its per-dataset values: short side, (inference, crop,
#: stride), logit scale, prob_threshold, area_threshold. Read from the
#: peers' public configs (configs/cfg_*.py and their segmentor defaults).
_TABLE = {
    "paper": dict(short=(336, 336, 336, 336, 336, 336, 560, 336),
                  inference=_WHOLE, scale=40.0, prob=_THD_01, area={}),
    "sclip": dict(short=(336, 336, 336, 336, 336, 448, 560, 336),
                  inference=_SLIDE_224,
                  scale={"voc21": 65.0, "context60": 50.0,
                         "coco_object": 50.0, "default": 40.0},
                  prob=_THD_01, area={"voc21": 0.1}),
    "naclip": dict(short=_NACLIP_SIZES,
                   inference={"voc21": _WHOLE, "voc20": _WHOLE,
                              "default": _SLIDE_224},
                   scale=40.0, prob=_THD_01, area={}),
    "cass": dict(short=_NACLIP_SIZES,
                 inference={"voc21": _WHOLE, "default": _SLIDE_224},
                 scale=40.0, prob=_THD_01, area={}),
    "sc-clip": dict(short=_NACLIP_SIZES, inference=_SLIDE_224,
                    scale={"voc21": 50.0, "coco_object": 55.0,
                           "default": 40.0},
                    prob={"voc21": 0.15, "context60": 0.15,
                          "coco_object": 0.35},
                    area={"voc21": 0.1}),
    "clearclip": dict(short=448,
                      inference={"cityscapes": ("slide", 224, 224),
                                 "default": ("slide", 448, 224)},
                      scale=50.0,
                      prob={"voc21": 0.5, "context60": 0.15,
                            "coco_object": 0.4},
                      area={}),
    "proxyclip": dict(short=_PROXY_SIZES,
                      inference={"cityscapes": ("slide", 224, 112),
                                 "default": ("slide", 336, 112)},
                      scale=40.0, prob=_THD_PROXY, area={}),
    "corrclip": dict(short=_PROXY_SIZES,
                     inference={"cityscapes": ("slide", 224, 112),
                                "default": ("slide", 336, 112)},
                     scale=40.0, prob=_THD_PROXY, area={}),
    "trident": dict(short=(448, 336, 576, 576, 448, 448, 688, 576),
                    inference={"voc20": ("slide", 336, 112),
                               "default": ("slide", 336, 224)},
                    scale=40.0, prob=_THD_PROXY, area={}),
}

#: setting -> (method, where its values come from, what the protocol does
#: not reproduce of it).
SOURCES = {
    "paper": (
        "Direct Segmentation without Logits Optimization (CVPR 2026)",
        "the paper (whole image, no sliding window) and its first author's "
        "earlier public code, RF-CLIP (github.com/liblacklucy/RF-CLIP): "
        "short side 336 (Cityscapes 560), scale 40, prob_thd 0.1",
        "the paper's own code is not public: the closest available evidence"),
    "sclip": (
        "SCLIP",
        "github.com/wangf3014/SCLIP, configs/cfg_*.py and clip_segmentor.py",
        "SCLIP's attention and class files are its own; dsolo_sk's class "
        "files equal SCLIP's"),
    "naclip": (
        "NACLIP",
        "github.com/sinahmr/NACLIP, configs/cfg_*.py and naclip.py",
        "PAMR refinement (10 steps, on by default) is part of NACLIP's "
        "method and is not applied by the protocol"),
    "cass": (
        "CASS",
        "CASS's public code (arXiv 2411.17150), configs/cfg_*.py",
        "PAMR off, as in its evaluation script"),
    "sc-clip": (
        "SC-CLIP",
        "github.com/SuleBai/SC-CLIP, configs/cfg_*.py",
        ""),
    "clearclip": (
        "ClearCLIP",
        "github.com/mc-lan/ClearCLIP, configs/cfg_*.py",
        "ClearCLIP's class files write a literal 'background'; dsolo_sk "
        "uses its own (SCLIP's) class files"),
    "proxyclip": (
        "ProxyCLIP",
        "github.com/mc-lan/ProxyCLIP, configs/cfg_*.py",
        "ProxyCLIP's class files drop the person/tv synonyms and use a "
        "shorter COCO-Object stuff list; dsolo_sk uses its own"),
    "corrclip": (
        "CorrCLIP",
        "github.com/zdk258/CorrCLIP, configs/cfg_*.py",
        "its v2 configs resize Cityscapes to 784; its class files write "
        "'people'; dsolo_sk uses its own"),
    "trident": (
        "Trident",
        "github.com/YuHengsss/Trident, configs/cfg_*.py",
        "its class files drop the person/tv synonyms and use a shorter "
        "COCO-Object stuff list; dsolo_sk uses its own"),
}


def _build():
    out = {}
    for setting, row in _TABLE.items():
        short = _per_dataset(row["short"])
        inference = _per_dataset(row["inference"])
        scale = _per_dataset(row["scale"])
        prob = {d: row["prob"].get(d) for d in _DATASETS}
        area = {d: row["area"].get(d) for d in _DATASETS}
        for d in _DATASETS:
            n, n_images, rzl, bg = _DATASET_FACTS[d]
            mode, crop, stride = inference[d]
            out[d, setting] = Protocol(
                dataset=d, n_classes=n, short_side=short[d], inference=mode,
                slide_crop=crop, slide_stride=stride, logit_scale=scale[d],
                prob_threshold=prob[d], area_threshold=area[d],
                reduce_zero_label=rzl, has_background=bg,
                n_images=n_images, setting=setting)
    return out


#: (dataset, setting) -> Protocol, for every benchmark and named setting.
PROTOCOLS = _build()


def get_protocol(dataset, setting="paper", **overrides):
    """The protocol of a benchmark, optionally with changed fields.

    Parameters
    ----------
    dataset : str
        Dataset key, one of :data:`dsolo_sk.datasets.DATASETS`.
    setting : str, default="paper"
        One of :data:`SETTINGS`: the paper's setting or a peer's
        (``"sclip"``, ``"naclip"``, ...); ``"peers"`` is an alias of
        ``"sclip"`` (:data:`SETTING_ALIASES`).
    **overrides
        Fields of :class:`Protocol` to change; the result then says
        ``setting="custom"``.

    Returns
    -------
    Protocol

    Examples
    --------
    >>> from dsolo_sk.protocols import get_protocol
    >>> get_protocol("cityscapes").short_side
    560
    >>> get_protocol("voc21", "naclip").inference
    'whole'
    >>> get_protocol("voc21", "sclip").logit_scale
    65.0
    >>> get_protocol("voc21", "proxyclip").slide_crop
    336
    >>> p = get_protocol("ade20k", short_side=448)
    >>> p.short_side, p.setting
    (448, 'custom')
    """
    if isinstance(setting, str):
        setting = SETTING_ALIASES.get(setting, setting)
    check_option(setting, "setting", SETTINGS + tuple(SETTING_ALIASES))
    if (dataset, setting) not in PROTOCOLS:
        raise ValueError(
            f"no protocol for dataset {dataset!r}; choose one of "
            f"{sorted(_DATASET_FACTS)}.")
    p = PROTOCOLS[dataset, setting]
    if overrides:
        names = {f.name for f in dataclasses.fields(Protocol)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown protocol fields {unknown}; known: "
                            f"{sorted(names)}.")
        p = dataclasses.replace(p, **overrides, setting="custom")
    return p
