"""The method's ablation and the choice between readings, on scene families.

Run ``python benchmarks/synthetic.py [--scenes N] [--seeds S ...]
[--size PX] [--quick] [--tables WORD ...] [--families F ...] [--save]``. For every scene family of
:func:`dsolo_sk.datasets.make_scene_family` (Voronoi, background-dominant,
many-class, street, texture-only; colour-position, transformer-like,
sink-token and noisy affinities; logit scale, offset, bias, leakage, noise
and confusion drawn per scene over a range) and for the original generator
:func:`dsolo_sk.datasets.make_scenes` (family ``generated``), it generates
``N`` scenes per seed (the scenes of several seeds are pooled) and prints

1. the paper's ablation, one column per family: raw logits, +KL, +NMS,
   +JBU, path, velocity, and the plain Markov diffusion yardstick, then
   each row's gain over raw on the worst family and on average;
2. (without ``--quick``) one table per ambiguous step, each reading of it
   against the default (marked ``*``), with the same worst-family and mean
   gains: the defaults are chosen by the worst family's gain, ties broken
   by the mean;
3. the time of each stage per image.

Every number is an mIoU in percent over one family's scenes. With the
defaults (4 scenes per family at 448 x 448 pixels) the ablation alone
(``--quick``) takes about 3 minutes on one core, the whole run about 25.
``--save`` writes the rows to ``benchmarks/results/synthetic.json`` and the
printed tables to ``benchmarks/results/synthetic.txt``; without it nothing
is written.
"""

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone

from dsolo_sk import (DirectSegmenter, InterpolationUpsampler,
                      JointBilateralUpsampler, KLDiscrepancy, LogitNormalizer,
                      TransportPath, TransportVelocity)
from dsolo_sk.datasets import SCENE_FAMILIES, make_scene_family, make_scenes
from dsolo_sk.metrics import mean_iou

RESULTS = Path(__file__).resolve().parent / "results"
BILINEAR = InterpolationUpsampler("bilinear")
CONTRAST = LogitNormalizer(nms=False, method="contrast", temperature=1.0,
                           temperature_unit="spread")


def seg(mode="velocity", **parts):
    """A segmenter factory: a fresh estimator for every evaluation."""
    return lambda: DirectSegmenter(mode=mode, progress=False, **parts)


ABLATION = [
    ("I   raw logits (bilinear)", seg("raw", upsampler=BILINEAR)),
    ("II  + KL (no suppression, bilinear)",
     seg("kl", normalizer=LogitNormalizer(nms=False, min_share=0.0),
         upsampler=BILINEAR)),
    ("III + NMS (class and patch, bilinear)", seg("kl", upsampler=BILINEAR)),
    ("IV  + JBU", seg("kl")),
    ("V   + optimal transport path", seg("path")),
    ("VI  + maximum transport velocity", seg("velocity")),
    ("    plain Markov diffusion (5 steps)",
     seg(discrepancy=TransportVelocity(score="steps"))),
    ("    plain ref. softmax(L/.05)/class, 5 st",
     seg(discrepancy=TransportVelocity(score="steps"),
         normalizer=LogitNormalizer(nms=False, method="softmax",
                                    temperature=0.05, over="class",
                                    min_share=0.0))),
    ("    velocity, tau rule (score state)",
     seg(discrepancy=TransportVelocity(min_share=0.01))),
    ("    velocity with patch NMS",
     seg(normalizer=LogitNormalizer(baseline="off"))),
    ("    plain Markov diffusion (1 step)",
     seg(discrepancy=TransportVelocity(score="steps", n_steps=1))),
    ("    plain diffusion of class contrast (5 st.)",
     seg(discrepancy=TransportVelocity(score="steps"), normalizer=CONTRAST)),
    ("    path with patch NMS, argmax presence",
     seg("path", normalizer=LogitNormalizer())),
]


def _normalizers(mode):
    """Readings of the normalisation, one parameter at a time from `mode`'s
    default normaliser: class-level suppression, per-class baseline,
    patch-level suppression and its fill, the weights and their scope."""
    from dsolo_sk.segmenters import _default_parts

    base = _default_parts(mode)[0]

    def var(**params):
        return clone(base).set_params(**params)

    out = [(f"class share {v}", var(min_share=v))
           for v in (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)]
    out += [(f"class presence {v}", var(presence=v))
            for v in ("argmax", "centred", "diffused", "centred-diffused")]
    out += [(f"baseline {v}", var(baseline=v))
            for v in (None, 0.1, 0.25, 0.5, "off", "outside", "mean")]
    out += [("patch NMS off", var(nms=False)),
            ("patch NMS, fill zero", var(nms=True, nms_fill="zero")),
            ("patch NMS, fill min", var(nms=True, nms_fill="min"))]
    for over in ("image", "class"):
        out.append((f"l1, over {over}", var(method="l1", over=over)))
        out.append((f"zscore, over {over}", var(method="zscore", over=over)))
        for t in (0.5, 1.0, 2.0):
            out.append((f"softmax T={t} spread, over {over}", var(
                method="softmax", temperature=t, temperature_unit="spread",
                over=over)))
    for t in (0.5, 1.0, 2.0):
        out.append((f"contrast T={t} spread", var(
            method="contrast", temperature=t, temperature_unit="spread")))
    out.append(("softmax T=0.01 logit, over image",
                var(method="softmax", temperature=0.01)))
    out.append(("no suppression at all (paper's row II)",
                var(nms=False, min_share=0.0, baseline=None)))
    return out


def _readings():
    """(title, [(label, factory)]) of every ambiguous step."""
    tables = []
    for mode in ("velocity", "path", "kl"):
        tables.append((f"{mode}: normalisation and suppression", [
            (label, seg(mode, normalizer=norm))
            for label, norm in _normalizers(mode)]))
    tables.append(("path: score, cost and balance", [
        (f"score {s}, cost {c}, balance {b}",
         seg(discrepancy=TransportPath(score=s, cost=c, balance=b)))
        for b in ("row", "ipf") for c in ("linear", "neglog")
        for s in ("potential", "transport", "cost")]))
    tables.append(("path: epsilon and iterations", [
        (f"epsilon {e}, {n} iterations",
         seg(discrepancy=TransportPath(epsilon=e, n_iter=n)))
        for e in (0.03, 0.1, 0.3, 1.0) for n in (50,)] + [
        (f"epsilon 0.1, {n} iterations",
         seg(discrepancy=TransportPath(n_iter=n))) for n in (25, 200)]))
    tables.append(("velocity: score", [
        (f"score {s}", seg(discrepancy=TransportVelocity(score=s)))
        for s in ("state", "weighted", "accumulated")] + [
        (f"plain diffusion, {n} steps",
         seg(discrepancy=TransportVelocity(score="steps", n_steps=n)))
        for n in (1, 2, 3, 5, 10, 20)] + [
        (f"plain diffusion of contrast T=1, {n} steps",
         seg(discrepancy=TransportVelocity(score="steps", n_steps=n),
             normalizer=CONTRAST)) for n in (3, 5, 10)] + [
        ("tau rule on contrast T=1",
         seg(discrepancy=TransportVelocity(), normalizer=CONTRAST))]))
    tables.append(("velocity: tau", [
        (f"tau {t}", seg(discrepancy=TransportVelocity(tau=t)))
        for t in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)]))
    tables.append(("kl: direction and scope", [
        (f"{d}, over {o}", seg(discrepancy=KLDiscrepancy(d),
                               normalizer=LogitNormalizer(over=o)))
        for d in ("reverse", "forward") for o in ("image", "class")] + [
        (f"reverse, softmax T={t} spread, over class",
         seg(discrepancy=KLDiscrepancy(), normalizer=LogitNormalizer(
             method="softmax", temperature=t, temperature_unit="spread",
             over="class", nms=False)))
        for t in (0.25, 0.5, 1.0)]))
    for mode in ("velocity", "path", "kl"):
        tables.append((f"{mode}: upsampling", [
            ("bilinear", seg(mode, upsampler=BILINEAR)),
            ("nearest", seg(mode, upsampler=InterpolationUpsampler(
                "nearest"))),
            ("jbu tent", seg(mode, upsampler=JointBilateralUpsampler())),
            ("jbu gaussian", seg(mode, upsampler=JointBilateralUpsampler(
                "gaussian"))),
            ("jbu tent sigma_r 0.05", seg(mode, upsampler=(
                JointBilateralUpsampler(sigma_range=0.05)))),
            ("jbu tent sigma_r 0.2", seg(mode, upsampler=(
                JointBilateralUpsampler(sigma_range=0.2)))),
        ]))
    return tables


class Bench:
    """Scores segmenters on every family, each configuration once."""

    def __init__(self, families):
        self.families = families  # name -> (X, y)
        self._memo = {}
        self.rows = []

    def scores(self, make):
        est = make()
        key = repr(est)
        if key not in self._memo:
            out = {}
            for name, (X, y) in self.families.items():
                n = X[0].sizes["class"]
                out[name] = 100 * mean_iou(y, est.predict(X), n)
            self._memo[key] = out
        return self._memo[key], est

    def table(self, title, rows):
        names = list(self.families)
        head = f"  {'':<40s}" + "".join(f"{n[:9]:>10s}" for n in names)
        print(f"\n{title}\n{'-' * len(title)}")
        print(head + f"{'worst':>8s}{'mean':>7s}   (gain over raw)")
        raw, _ = self.scores(ABLATION[0][1])
        for label, make in rows:
            t0 = time.perf_counter()
            sc, est = self.scores(make)
            gains = [sc[n] - raw[n] for n in names]
            default = "*" if _is_default(est) else " "
            print(f"{default} {label:<40s}"
                  + "".join(f"{sc[n]:10.1f}" for n in names)
                  + f"{min(gains):8.1f}{np.mean(gains):7.1f}", flush=True)
            self.rows.append({
                "table": title, "row": label, "segmenter": repr(est),
                "default": default == "*", "miou": sc,
                "worst_gain": float(min(gains)),
                "mean_gain": float(np.mean(gains)),
                "seconds": time.perf_counter() - t0})


def _is_default(est):
    """Whether a segmenter is a mode with every part at its default."""
    from dsolo_sk.segmenters import _default_parts

    kind = est._kind
    if kind == "custom":
        return False
    defaults = _default_parts(kind)
    return all(repr(a) == repr(b)
               for a, b in zip(est._parts(), defaults))


def stage_times(bench):
    print("\nTime per image and stage (s, mean over all scenes)")
    print("--------------------------------------------------")
    print(f"  {'mode':<10s} {'nms+norm+discrepancy':>22s} {'upsampling':>12s}")
    X = [x for Xf, _ in bench.families.values() for x in Xf]
    for mode in ("raw", "kl", "path", "velocity"):
        est = DirectSegmenter(mode=mode).fit()
        parts = est._parts()
        t_sc, t_up = [], []
        for ds in X:
            t0 = time.perf_counter()
            patch = est._patch_scores(ds, parts)
            t1 = time.perf_counter()
            est._upsample(patch, ds, parts)
            t_sc.append(t1 - t0)
            t_up.append(time.perf_counter() - t1)
        print(f"  {mode:<10s} {np.mean(t_sc):22.4f} {np.mean(t_up):12.4f}")
        bench.rows.append({"table": "time", "row": mode,
                           "discrepancy_s": float(np.mean(t_sc)),
                           "upsampling_s": float(np.mean(t_up))})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4,
                        help="scenes per family (default 4)")
    parser.add_argument("--size", type=int, default=448,
                        help="image side in pixels, a multiple of 16")
    parser.add_argument("--seeds", type=int, nargs="+", default=(0,),
                        metavar="SEED",
                        help="seeds of the scenes; the scenes of all seeds "
                             "are pooled in each family (default 0)")
    parser.add_argument("--tables", nargs="+", default=None,
                        metavar="WORD",
                        help="only the reading tables whose title holds "
                             "one of these words (e.g. normalisation)")
    parser.add_argument("--families", nargs="+",
                        default=("generated",) + tuple(SCENE_FAMILIES),
                        choices=("generated",) + tuple(SCENE_FAMILIES),
                        metavar="FAMILY")
    parser.add_argument("--quick", action="store_true",
                        help="only the ablation and the stage times")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/synthetic.{json,txt}")
    args = parser.parse_args(argv)

    log = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, s):
            sys.__stdout__.write(s)
            log.write(s)
            return len(s)

        def flush(self):
            sys.__stdout__.flush()

    with contextlib.redirect_stdout(Tee()):
        t0 = time.perf_counter()
        families = {}
        for name in args.families:
            X, y = [], []
            for seed in args.seeds:
                if name == "generated":
                    Xs, ys = make_scenes(
                        n_scenes=args.scenes, n_classes=15,
                        image_size=args.size, random_state=seed)
                else:
                    Xs, ys = make_scene_family(
                        name, n_scenes=args.scenes, image_size=args.size,
                        random_state=seed)
                X += Xs
                y += ys
            families[name] = (X, y)
        seeds = " ".join(str(s) for s in args.seeds)
        print(f"{args.scenes} scenes per family and seed, {args.size} x "
              f"{args.size} pixels, {args.size // 16} x {args.size // 16} "
              f"patches, seeds {seeds}; generated in "
              f"{time.perf_counter() - t0:.1f} s. "
              "mIoU (%) per family; worst and mean: gain over raw logits; "
              "* marks the default.")
        bench = Bench(families)
        bench.table("Ablation", ABLATION)
        if not args.quick:
            for title, rows in _readings():
                if args.tables is None or any(w in title
                                              for w in args.tables):
                    bench.table(title, rows)
        stage_times(bench)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "synthetic.json").write_text(json.dumps(bench.rows,
                                                           indent=1))
        (RESULTS / "synthetic.txt").write_text(log.getvalue())
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
