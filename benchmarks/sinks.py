"""How much sink patches in the affinity move each mode's labels.

Run ``python benchmarks/sinks.py [--scenes N] [--sizes PX ...] [--save]``.
Real self-attention has *sink* patches: a few keys that every query
attends to. A reading that is captured by them would hand their region,
or the whole image, to one class. For every scene of
:func:`dsolo_sk.datasets.make_scenes` (8 classes) and of the ``voronoi``
family of :func:`dsolo_sk.datasets.make_scene_family` (``N`` each), at
each image size (the patch grid is a sixteenth of it: 448 pixels give the
28 x 28 grid of the default protocol, 192 pixels a 12 x 12 grid, where
each sink is a larger share of the patches), the script adds sink
patches to the affinity (every row sends a given share of its own mass to
each sink, the perturbation of ``tests/test_invariance.py``) in several
draws, and prints, per
segmenter, the share of the pixels whose label changes: the largest, the
95th percentile and the mean over all perturbations, and how many of them
change more than 5 % of the pixels.

The perturbations: 1, 3 and 5 sinks at shares 0.2 and 0.5 of a row's
mass, two draws of the sink patches each. ``--save`` writes the table to
``benchmarks/results/sinks.txt``; without it nothing is written.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from dsolo_sk import DirectSegmenter, LogitNormalizer
from dsolo_sk.datasets import make_scene_family, make_scenes
from dsolo_sk.features import from_arrays

RESULTS = Path(__file__).resolve().parent / "results"
PERTURBATIONS = [(n, share) for n in (1, 3, 5) for share in (0.2, 0.5)]
DRAWS = 2


def add_sinks(affinity, patches, share):
    """`affinity` where every row sends `share` of its mass to each of
    `patches`."""
    a = np.asarray(affinity, dtype=np.float64)
    out = a.copy()
    out[:, patches] += share * a.sum(1, keepdims=True)
    return out.astype(np.float32)


def segmenters():
    """(label, segmenter) of the defaults and of the readings they
    replaced."""
    return [
        ("velocity (default)", DirectSegmenter(mode="velocity",
                                               progress=False)),
        ("path (default)", DirectSegmenter(mode="path", progress=False)),
        ("path, argmax presence, no patch NMS",
         DirectSegmenter(mode="path", progress=False,
                         normalizer=LogitNormalizer(nms=False,
                                                    baseline="off"))),
        ("path, patch NMS (previous default)",
         DirectSegmenter(mode="path", progress=False,
                         normalizer=LogitNormalizer())),
    ]


def scenes(n, size):
    """Feature Datasets of `n` generated and `n` Voronoi scenes."""
    X, _ = make_scenes(n_scenes=n, n_classes=8, image_size=size,
                       random_state=0)
    V, _ = make_scene_family("voronoi", n_scenes=n, image_size=size,
                             random_state=0)
    return list(X) + list(V)


def with_affinity(ds, affinity):
    return from_arrays(ds["logits"].values, affinity, ds["image"].values,
                       [str(c) for c in ds["class"].values])


def run(n, size):
    """Print the table of one image size; returns its lines."""
    lines = []

    def say(line):
        print(line, flush=True)
        lines.append(line)

    rng = np.random.default_rng(0)
    data = scenes(n, size)
    perturbed = []
    for ds in data:
        aff = ds["affinity"].values
        for n_sinks, share in PERTURBATIONS:
            for _ in range(DRAWS):
                sinks = rng.choice(aff.shape[0], n_sinks, replace=False)
                perturbed.append((ds, with_affinity(
                    ds, add_sinks(aff, sinks, share))))
    say(f"{len(data)} scenes ({n} make_scenes, {n} voronoi), {size} x "
        f"{size} pixels; {len(perturbed)} perturbations (1, 3, 5 sinks x "
        f"shares 0.2, 0.5 x {DRAWS} draws). Share of the pixels whose "
        "label changes (%).")
    say(f"  {'segmenter':<40s} {'max':>6s} {'p95':>6s} {'mean':>6s} "
        f"{'> 5 %':>7s} {'s':>6s}")
    for label, seg in segmenters():
        t0 = time.perf_counter()
        base = {id(ds): seg.predict([ds])[0] for ds in data}
        changed = np.array([np.mean(base[id(ds)] != seg.predict([moved])[0])
                            for ds, moved in perturbed]) * 100
        say(f"  {label:<40s} {changed.max():6.1f} "
            f"{np.percentile(changed, 95):6.1f} {changed.mean():6.2f} "
            f"{np.mean(changed > 5) * 100:6.1f}% "
            f"{time.perf_counter() - t0:6.0f}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6,
                        help="scenes per generator and size (default 6)")
    parser.add_argument("--sizes", type=int, nargs="+", default=(192, 448),
                        metavar="PX",
                        help="image sides in pixels, multiples of 16 "
                             "(default 192 448)")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/sinks.txt")
    args = parser.parse_args(argv)
    lines = []
    for size in args.sizes:
        lines += run(args.scenes, size)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sinks.txt").write_text("\n".join(lines) + "\n")
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
