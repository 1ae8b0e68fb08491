"""The evaluation protocol of each benchmark, as data.

The training-free CLIP segmenters of the field (SCLIP, NACLIP, ClearCLIP,
ProxyCLIP, ...) all evaluate the same way, with per-dataset differences that
change the numbers. A :class:`Protocol` writes every such choice down, so
that a result file says exactly how it was obtained:

=========== ===== ======= ======== ========= ==========
dataset     short classes prob_thd zero lbl  val images
=========== ===== ======= ======== ========= ==========
voc21       336   21      0.1      no        1449
voc20       336   20      --       reduced   1449
context60   336   60      0.1      no        5105
context59   336   59      --       reduced   5105
coco_object 336   81      0.1      no        5000
coco_stuff  448   171     --       no        5000
cityscapes  560   19      --       no        500
ade20k      336   150     --       reduced   2000
=========== ===== ======= ======== ========= ==========

Every dataset has two settings. ``"paper"``: the whole image at once (the
setting of "Direct Segmentation without Logits Optimization"). ``"peers"``:
sliding 224-pixel windows with a stride of 112 whose scores are averaged
(the setting of SCLIP, NACLIP and the others). Both resize the image so that
its short side is ``short_side`` (the long side capped at 2048), score at
that size, upsample the scores bilinearly to the original resolution and
compare with the original ground truth. ``logit_scale`` (40) and
``prob_threshold`` define the background rule of the peers: pixels whose
top ``softmax(logit_scale * score)`` is below ``prob_threshold`` become
class 0, on datasets with a background class only.

.. rubric:: Examples

>>> from dsolo_sk.protocols import PROTOCOLS, SETTINGS
>>> SETTINGS
('paper', 'peers')
>>> len(PROTOCOLS), PROTOCOLS["voc21", "peers"].inference
(16, 'slide')
"""

import dataclasses
import hashlib
import json
from numbers import Integral, Real

from ._validation import IGNORE_INDEX, check_option, check_scalar

__all__ = ["Protocol", "PROTOCOLS", "SETTINGS", "get_protocol"]

#: Largest image side (in pixels) a protocol may resize to; the models'
#: cost grows with the square of the side (CLIP at 8192 pixels has
#: 262144 patches).
MAX_SIDE = 8192

#: The two settings of every dataset: whole image (``"paper"``) or sliding
#: windows (``"peers"``).
SETTINGS = ("paper", "peers")
_INFERENCE = ("whole", "slide")


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
        The image is resized so that its short side has this length (in
        pixels) ...
    long_side_max : int in [short_side, 8192], default=2048
        ... unless its long side would exceed this (aspect ratio kept).
    inference : {"whole", "slide"}, default="whole"
        Score the whole resized image at once, or average the scores of
        sliding windows.
    slide_crop, slide_stride : int, default=224, 112
        Window size and stride of ``inference="slide"``.
    logit_scale : float in (0, 1000], default=40.0
        Inverse temperature of the softmax that the probability threshold
        reads (on cosine scores).
    prob_threshold : float in [0, 1] or None, default=None
        Pixels whose top probability is below it become class 0 (datasets
        with a background class only); None disables the rule.
    reduce_zero_label : bool, default=False
        Whether raw label 0 is ignored and the others moved down by one.
    ignore_index : int, default=255
    has_background : bool, default=False
        Whether class 0 is background.
    split : str, default="val"
    n_images : int or None
        Size of the standard split, for reference.
    setting : {"paper", "peers", "custom"}, default="paper"

    Examples
    --------
    >>> from dsolo_sk.protocols import get_protocol
    >>> p = get_protocol("voc21")
    >>> p.short_side, p.inference, p.prob_threshold
    (336, 'whole', 0.1)
    >>> p.resized_shape((375, 500))
    (336, 448)
    >>> get_protocol("voc21", "peers").windows((336, 448))[:2]
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
    reduce_zero_label: bool = False
    ignore_index: int = IGNORE_INDEX
    has_background: bool = False
    split: str = "val"
    n_images: int | None = None
    setting: str = "paper"

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
        if self.prob_threshold is not None:
            check_scalar(self.prob_threshold, "prob_threshold",
                         target_type=Real, min_val=0, max_val=1)
            if not self.has_background:
                raise ValueError(
                    f"prob_threshold is set for {self.dataset}, which has no "
                    "background class; the rule sends uncertain pixels to "
                    "class 0, so it only applies with has_background=True."
                )
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
        ``short_side`` and the long side at most ``long_side_max``; sizes
        are rounded to the nearest integer.
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


def _base(dataset, n_classes, short_side, n_images, *, prob_threshold=None,
          reduce_zero_label=False, has_background=False):
    return Protocol(dataset=dataset, n_classes=n_classes,
                    short_side=short_side, prob_threshold=prob_threshold,
                    reduce_zero_label=reduce_zero_label,
                    has_background=has_background, n_images=n_images)


_BASE = {p.dataset: p for p in (
    _base("voc21", 21, 336, 1449, prob_threshold=0.1, has_background=True),
    _base("voc20", 20, 336, 1449, reduce_zero_label=True),
    _base("context60", 60, 336, 5105, prob_threshold=0.1,
          has_background=True),
    _base("context59", 59, 336, 5105, reduce_zero_label=True),
    _base("coco_object", 81, 336, 5000, prob_threshold=0.1,
          has_background=True),
    _base("coco_stuff", 171, 448, 5000),
    _base("cityscapes", 19, 560, 500),
    _base("ade20k", 150, 336, 2000, reduce_zero_label=True),
)}

#: (dataset, setting) -> Protocol, for every benchmark and both settings.
PROTOCOLS = {}
for _name, _p in _BASE.items():
    PROTOCOLS[_name, "paper"] = _p
    PROTOCOLS[_name, "peers"] = dataclasses.replace(_p, inference="slide",
                                                    setting="peers")
del _name, _p


def get_protocol(dataset, setting="paper", **overrides):
    """The protocol of a benchmark, optionally with changed fields.

    Parameters
    ----------
    dataset : str
        Dataset key, one of :data:`dsolo_sk.datasets.DATASETS`.
    setting : {"paper", "peers"}, default="paper"
        Whole-image inference (the paper's) or sliding windows (the peers').
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
    >>> p = get_protocol("ade20k", short_side=448)
    >>> p.short_side, p.setting
    (448, 'custom')
    """
    check_option(setting, "setting", SETTINGS)
    if (dataset, setting) not in PROTOCOLS:
        raise ValueError(
            f"no protocol for dataset {dataset!r}; choose one of "
            f"{sorted(_BASE)}.")
    p = PROTOCOLS[dataset, setting]
    if overrides:
        names = {f.name for f in dataclasses.fields(Protocol)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown protocol fields {unknown}; known: "
                            f"{sorted(names)}.")
        p = dataclasses.replace(p, **overrides, setting="custom")
    return p
