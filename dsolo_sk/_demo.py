"""``dsolo-sk demo``: the whole method on a real photo, without any weights.

Two parts, both through :class:`~dsolo_sk.DirectSegmenter` ``(mode=...)``
only:

1. scikit-image's coffee photo segmented into "cup", "saucer" and "table"
   in each mode, the logits coming from the model-free stand-in
   :class:`~dsolo_sk.features.ColorPrototypeLogits` (one colour per class,
   CLIP's scale and margins) and the affinity from
   :class:`~dsolo_sk.features.ColorPositionAffinity`; one overlay PNG per
   mode;
2. the ablation on generated scenes with ground truth
   (:func:`~dsolo_sk.datasets.make_scenes`): the mIoU of the raw logits and
   of each of the paper's modes.
"""

import os
import time

__all__ = ["run_demo", "DEMO_MODES"]

#: The modes compared, baseline first.
DEMO_MODES = ("raw", "kl", "path", "velocity")

#: The demo photo's classes and the stand-in's colour for each (RGB).
COFFEE_CLASSES = {"cup": (245, 235, 220), "saucer": (160, 35, 12),
                  "table": (200, 120, 70)}


def run_demo(out, *, n_scenes=8, echo=print):
    """Run the demo, write the overlays into `out`, return the numbers.

    Parameters
    ----------
    out : str or path-like
        Output folder, created when the first picture is written; checked
        before anything runs.
    n_scenes : int, default=8
        Generated scenes of the ablation, 1 to 1000.
    echo : callable, default=print
        Receives each line of the report.

    Returns
    -------
    dict
        ``"overlays"``: the PNG paths; ``"miou"``: mode -> mIoU on the
        generated scenes; ``"pixels"``: mode -> share of the photo's pixels
        per class.
    """
    import numpy as np
    from skimage import data

    from . import _io
    from .datasets import make_scenes
    from .datasets._synthetic import _check_n_scenes

    _check_n_scenes(n_scenes)
    out = _io.check_output_folder(out, "out")
    from .features import ColorPositionAffinity, ColorPrototypeLogits
    from .plot import save_overlay
    from .segmenters import DirectSegmenter

    image = data.coffee()
    classes = list(COFFEE_CLASSES)
    stand_in = ColorPrototypeLogits(COFFEE_CLASSES)
    affinity = ColorPositionAffinity()
    echo(f"1. scikit-image's coffee photo ({image.shape[1]} x "
         f"{image.shape[0]} px) into {classes}; logits from the colour "
         "stand-in ColorPrototypeLogits (no weights), affinity "
         "ColorPositionAffinity")
    result = {"overlays": [], "miou": {}, "pixels": {}}
    for mode in DEMO_MODES:
        t0 = time.perf_counter()
        seg = DirectSegmenter(mode=mode, extractor=stand_in,
                              affinity=affinity, progress=False)
        [labels] = seg.predict([image], classes)
        seconds = time.perf_counter() - t0
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"coffee_{mode}.png")
        save_overlay(path, image, labels, classes)
        share = np.bincount(labels.ravel(), minlength=len(classes)) / labels.size
        result["overlays"].append(path)
        result["pixels"][mode] = dict(zip(classes, share.tolist()))
        echo(f"   mode={mode!r:<11} {seconds:5.2f} s  "
             + "  ".join(f"{c} {100 * s:4.1f} %" for c, s in zip(classes, share))
             + f"  -> {path}")

    X, y = make_scenes(n_scenes=n_scenes, random_state=0)
    echo(f"2. ablation on {n_scenes} generated scenes with ground truth "
         "(dsolo_sk.datasets.make_scenes), mIoU in %:")
    for mode in DEMO_MODES:
        miou = DirectSegmenter(mode=mode, progress=False).score(X, y)
        result["miou"][mode] = float(miou)
        echo(f"   mode={mode!r:<11} {100 * miou:5.1f}")
    return result
