"""How often each background rule fires, per mode, on generated scenes.

Run ``python benchmarks/background_rule.py``. For each mode of
:class:`~dsolo_sk.DirectSegmenter` and each vocabulary size it segments
generated scenes (:func:`dsolo_sk.datasets.make_scenes`, whose logits are
on CLIP's cosine scale, one query per class) and applies the probability
threshold of the peers' protocols (0.1 at softmax scale 40) with the
probabilities each ``background_rule`` reads (see :ref:`protocol`):

``scores``
    ``softmax(40 * score)`` of the segmenter's own scores;
``clip``
    CLIP's probabilities (:func:`dsolo_sk.evaluation.class_probabilities`
    of the bilinearly upsampled logits), read at their maximum;
``clip_label``
    the same, read at the label the segmenter predicts.

It prints the fraction of pixels each rule sends to class 0, the fraction
of pixels whose label differs from CLIP's argmax (what the mode changes),
how many of those changed labels are right, and how many of them
``clip_label`` sends to class 0. 56 classes is the number of text queries
of VOC21 (26 background names, 20 classes, 10 more synonyms); the
generated class 0 is no background, so only the rates are meaningful, not
an mIoU.
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from dsolo_sk import DirectSegmenter
from dsolo_sk.datasets import make_scenes
from dsolo_sk.evaluation import class_probabilities

MODES = ("raw", "kl", "path", "velocity")


def measure(n_classes, n_scenes, image_size, threshold=0.1, scale=40.0,
            seed=0):
    """{mode: {rule: fraction fired, ...}} on one set of scenes."""
    X, y = make_scenes(n_scenes=n_scenes, n_classes=n_classes,
                       image_size=image_size, random_state=seed)
    out = {}
    for mode in MODES:
        seg = DirectSegmenter(mode=mode, progress=False)
        fired = {"scores": 0, "clip": 0, "clip_label": 0}
        changed = right = undone = total = 0
        for ds, mask in zip(X, y):
            scores = seg.decision_function([ds])[0].values
            labels = scores.argmax(0)
            own = np.exp(scale * (scores - scores.max(0)))
            own /= own.sum(0)
            logits = F.interpolate(
                torch.from_numpy(ds["logits"].values)[None], size=mask.shape,
                mode="bilinear", align_corners=False)[0].numpy()
            clip = class_probabilities(logits, np.arange(n_classes), scale)
            at_label = np.take_along_axis(clip, labels[None], 0)[0]
            fired["scores"] += int((own.max(0) < threshold).sum())
            fired["clip"] += int((clip.max(0) < threshold).sum())
            fired["clip_label"] += int((at_label < threshold).sum())
            diff = labels != clip.argmax(0)
            changed += int(diff.sum())
            right += int((diff & (labels == mask)).sum())
            undone += int((diff & (at_label < threshold)).sum())
            total += mask.size
        out[mode] = {**{k: v / total for k, v in fired.items()},
                     "changed": changed / total,
                     "changed_right": right / max(changed, 1),
                     "changed_undone_by_clip_label": undone / max(changed, 1)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[15, 56])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    print("classes mode      fired: scores   clip  clip_label | changed "
          "right undone")
    for n in args.classes:
        for mode, r in measure(n, args.scenes, args.size).items():
            print(f"{n:>7} {mode:<9} {r['scores']:>13.3f} {r['clip']:>6.3f} "
                  f"{r['clip_label']:>11.3f} | {r['changed']:>7.3f} "
                  f"{r['changed_right']:>5.2f} "
                  f"{r['changed_undone_by_clip_label']:>6.2f}")


if __name__ == "__main__":
    main()
