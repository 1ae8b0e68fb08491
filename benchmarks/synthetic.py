"""The method's ablation and the choice between readings, on generated scenes.

Run ``python benchmarks/synthetic.py [--scenes N] [--quick] [--out FILE]``.
It generates scenes with ground truth and CLIP-like logits
(:func:`dsolo_sk.datasets.make_scenes`: 10-20 classes of which 2-5 are
present, per-class bias, area-proportional leakage, correlated noise, low
margins; the affinity comes from the image alone), then prints

1. the paper's ablation: raw logits, +KL, +NMS, +JBU, path, velocity, and
   the plain Markov baseline;
2. one table per ambiguous step, each reading against the defaults;
3. the time of each stage per image.

Every number is an mIoU in percent over all scenes of one run.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dsolo_sk import DirectSegmenter
from dsolo_sk.datasets import make_scenes
from dsolo_sk.metrics import mean_iou

ABLATION = [
    ("I   raw logits (bilinear)", dict(mode="raw", upsample="bilinear")),
    ("II  + KL (no NMS, bilinear)", dict(mode="kl", nms=False,
                                         upsample="bilinear")),
    ("III + NMS", dict(mode="kl", upsample="bilinear")),
    ("IV  + JBU", dict(mode="kl")),
    ("V   + optimal transport path", dict(mode="path")),
    ("VI  + maximum transport velocity", dict(mode="velocity")),
    ("    plain Markov baseline (5 steps)", dict(mode="velocity",
                                                 velocity_score="steps")),
]

READINGS = {
    "normalisation (velocity | path)": [
        (f"{norm}, over {over}", dict(normalization=norm, normalize_over=over))
        for over in ("image", "class")
        for norm in ("l1", "softmax", "zscore")
    ],
    "NMS (velocity | path)": [
        ("nms, fill zero", dict(nms=True, nms_fill="zero")),
        ("nms, fill min", dict(nms=True, nms_fill="min")),
        ("no nms", dict(nms=False)),
    ],
    "softmax temperature (velocity | path)": [
        (f"softmax T={t}", dict(normalization="softmax", temperature=t))
        for t in (0.01, 0.03, 0.1)
    ],
}
PATH_READINGS = [
    (f"score {s}, cost {c}", dict(path_score=s, path_cost=c))
    for c in ("linear", "neglog") for s in ("potential", "transport", "cost")
]
SINKHORN_ITERS = [
    (f"{n} iterations, nms fill {fill}", dict(sinkhorn_iter=n, nms_fill=fill))
    for fill in ("min", "zero") for n in (25, 50, 100, 200, 1000)
]
EPSILONS = [(f"epsilon {e}", dict(epsilon=e)) for e in (0.03, 0.1, 0.3, 1.0)]
VELOCITY_READINGS = [
    (f"score {s}", dict(velocity_score=s))
    for s in ("state", "weighted", "accumulated", "steps")
] + [("score steps, 1 step", dict(velocity_score="steps", markov_steps=1)),
     ("score steps, 20 steps", dict(velocity_score="steps", markov_steps=20))]
TAUS = [(f"tau {t}", dict(tau=t)) for t in (0.03, 0.1, 0.3, 1.0, 3.0)]
KL_READINGS = [
    (f"{d}, over {o}", dict(kl_direction=d, normalize_over=o))
    for d in ("reverse", "forward") for o in ("image", "class")
]
UPSAMPLING = [
    ("bilinear", dict(upsample="bilinear")),
    ("nearest", dict(upsample="nearest")),
    ("jbu gaussian sigma_s 1, sigma_r 0.1", dict(jbu_kernel="gaussian")),
    ("jbu gaussian sigma_s 0.5, sigma_r 0.1", dict(jbu_kernel="gaussian",
                                                   sigma_spatial=0.5)),
    ("jbu gaussian sigma_s 1, sigma_r 0.05", dict(jbu_kernel="gaussian",
                                                  sigma_range=0.05)),
    ("jbu gaussian sigma_s 1, sigma_r 0.2", dict(jbu_kernel="gaussian",
                                                 sigma_range=0.2)),
    ("jbu tent sigma_s 1, sigma_r 0.1", dict(jbu_kernel="tent")),
    ("jbu tent sigma_s 1, sigma_r 0.05", dict(jbu_kernel="tent",
                                              sigma_range=0.05)),
    ("jbu tent sigma_s 2, sigma_r 0.1", dict(jbu_kernel="tent",
                                             sigma_spatial=2.0)),
]


class Bench:
    """Scores configurations on one set of scenes, caching nothing."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        self.n_classes = X[0].sizes["class"]

    def miou(self, **params):
        seg = DirectSegmenter(**params)
        pred = seg.predict(self.X)
        return 100 * mean_iou(self.y, pred, self.n_classes)

    def stage_times(self, **params):
        """Mean seconds per image of each stage of one configuration."""
        seg = DirectSegmenter(**params).fit()
        t_scores, t_up = [], []
        for ds in self.X:
            t0 = time.perf_counter()
            patch = seg._patch_scores(ds)
            t1 = time.perf_counter()
            seg._upsample(patch, ds)
            t2 = time.perf_counter()
            t_scores.append(t1 - t0)
            t_up.append(t2 - t1)
        return float(np.mean(t_scores)), float(np.mean(t_up))


def table(title, rows, bench, base, out):
    print(f"\n{title}")
    print("-" * len(title))
    for name, params in rows:
        t0 = time.perf_counter()
        score = bench.miou(**{**base, **params})
        dt = (time.perf_counter() - t0) / len(bench.X)
        print(f"  {name:<40s} {score:6.1f}   ({dt:5.2f} s/image)")
        out.append({"table": title, "row": name, "params": {**base, **params},
                    "miou": round(score, 2), "seconds_per_image": dt})
        sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--classes", type=int, nargs=2, default=(10, 20),
                        help="range of vocabulary sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="only the ablation")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the rows as JSON")
    args = parser.parse_args(argv)

    # scenes in groups of vocabulary sizes between 10 and 20 classes, so
    # the table averages over vocabularies; mIoU is over each group's
    # classes, then averaged
    rng = np.random.default_rng(args.seed)
    sizes = rng.integers(args.classes[0], args.classes[1] + 1, size=4)
    groups = []
    t0 = time.perf_counter()
    for k, n in enumerate(sizes):
        X, y = make_scenes(n_scenes=args.scenes // 4, n_classes=int(n),
                           n_present=(2, 5), random_state=args.seed + k)
        groups.append(Bench(X, y))
    print(f"{args.scenes} scenes of 448 x 448 pixels, 28 x 28 patches, "
          f"vocabularies of {sorted(int(n) for n in sizes)} classes, 2-5 "
          f"present; generated in {time.perf_counter() - t0:.1f} s")

    class Multi:
        X = [x for g in groups for x in g.X]

        def miou(self, **params):
            return float(np.mean([g.miou(**params) for g in groups]))

    bench = Multi()
    rows = []
    table("Ablation (mIoU %)", ABLATION, bench, {}, rows)
    if not args.quick:
        for title, rset in READINGS.items():
            for mode in ("velocity", "path"):
                table(f"{title} -- {mode}", rset, bench, {"mode": mode}, rows)
        table("path: score and cost", PATH_READINGS, bench, {"mode": "path"},
              rows)
        table("path: epsilon", EPSILONS, bench, {"mode": "path"}, rows)
        table("path: Sinkhorn iterations", SINKHORN_ITERS, bench,
              {"mode": "path"}, rows)
        table("velocity: score", VELOCITY_READINGS, bench,
              {"mode": "velocity"}, rows)
        table("velocity: tau", TAUS, bench, {"mode": "velocity"}, rows)
        table("kl + nms + jbu: direction and scope", KL_READINGS, bench,
              {"mode": "kl"}, rows)
        for mode in ("velocity", "path", "kl"):
            table(f"upsampling -- {mode}", UPSAMPLING, bench,
                  {"mode": mode}, rows)

    print("\nTime per image and stage (s, mean over scenes)")
    print("----------------------------------------------")
    print(f"  {'mode':<10s} {'nms+norm+discrepancy':>22s} {'upsampling':>12s}")
    for mode in ("raw", "kl", "path", "velocity"):
        times = [g.stage_times(mode=mode) for g in groups]
        t_sc = float(np.mean([t[0] for t in times]))
        t_up = float(np.mean([t[1] for t in times]))
        print(f"  {mode:<10s} {t_sc:22.4f} {t_up:12.4f}")
        rows.append({"table": "time", "row": mode, "discrepancy_s": t_sc,
                     "upsampling_s": t_up})
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
