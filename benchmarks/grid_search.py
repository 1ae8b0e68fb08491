"""Cost of a grid search over a cached-feature Pipeline, against one predict.

A grid search over the segmenter's parts must not re-run the models: with
the features step wrapped in a
:class:`~dsolo_sk.model_selection.FeatureCache`, a search that chooses the
discrepancy and its parameter (:class:`~dsolo_sk.TransportVelocity` with
``tau`` in {0.1, 0.3, 1.0}, :class:`~dsolo_sk.TransportPath` with
``epsilon`` in {0.05, 0.1, 0.5}: 6 candidates) with 2-fold
cross-validation (12 fits and scores, plus the refit) should cost at most
1.5 times one ``predict`` pass over the same images.

What runs: generated scenes (:func:`dsolo_sk.datasets.make_scenes`, their
images and masks only), a full-size randomly initialised open_clip
ViT-B/16 (``pretrained=None``: no download, the architecture's real cost)
at a 448-pixel short side, and the model-free colour-position affinity.
Stable Diffusion attention, the paper's affinity, would make the features
far costlier still, so caching would only gain more; it is left out to
keep the run short on a CPU.

Timed, each from an empty feature cache, after the model and the text
embeddings are loaded:

- ``predict``: one ``predict`` over all images through the plain Pipeline
  (extractor, then the segmenter of ``--mode``; no cache), the reference;
- ``grid``: ``GridSearchCV(..., cv=KFold(2), error_score="raise").fit``
  over the Pipeline whose features step is a ``FeatureCache`` writing to a
  folder (``memory=``);
- with ``--plain-memory``, the same grid over the plain Pipeline with
  scikit-learn's ``Pipeline(memory=folder)`` alone, which caches fits but
  not the validation transforms.

Run::

    python benchmarks/grid_search.py          # about 2 min on 2 CPU cores
    python benchmarks/grid_search.py --quick  # about 20 s: 2 images, ViT-S-16
    python benchmarks/grid_search.py --images 4 --plain-memory
    python benchmarks/grid_search.py --save   # and write it into results/

It prints wall and CPU times and the ratios; it writes them as JSON only
with ``--save`` (into ``benchmarks/results/``, the committed record) or
``--out FILE``. The CPU time of the process is the steadier measure on a
machine shared with other jobs; with ``OMP_NUM_THREADS=1`` it is one
thread's time, comparable to the wall time of an idle machine (without
it, torch gets as many threads as the machine has idle CPUs).

The run fails (exit status 1) when the grid search computed the features
of an image more than once: the claim checked is that the models are not
re-run, which the feature cache's counters show exactly. The time ratio
is reported, not checked: on a machine shared with other jobs it measures
the neighbours too.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

from dsolo_sk import DirectSegmenter, TransportPath, TransportVelocity
from dsolo_sk._threads import configure_torch_threads
from dsolo_sk.datasets import make_scenes
from dsolo_sk.features import (CLIPFeatures, ColorPositionAffinity,
                               FeatureExtractor)
from dsolo_sk.model_selection import (FeatureCache, clear_feature_cache,
                                      feature_cache_info)

#: The discrepancy and its parameter, one sub-grid per discrepancy.
GRID = [{"segment__discrepancy": [TransportVelocity()],
         "segment__discrepancy__tau": [0.1, 0.3, 1.0]},
        {"segment__discrepancy": [TransportPath()],
         "segment__discrepancy__epsilon": [0.05, 0.1, 0.5]}]


def _plain(value):
    """A JSON-ready value: numbers as they are, estimators by their repr."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return repr(value)


def _timed(fn):
    """(wall seconds, CPU seconds of this process, result) of ``fn()``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--model", default="ViT-B-16",
                        help="open_clip architecture (random weights)")
    parser.add_argument("--short-side", type=int, default=448)
    parser.add_argument("--mode", default="velocity",
                        choices=["velocity", "path"],
                        help="method of the reference predict pass")
    parser.add_argument("--plain-memory", action="store_true",
                        help="also time the grid with Pipeline(memory=) "
                        "alone (about 10x slower)")
    parser.add_argument("--quick", action="store_true",
                        help="2 images of 224 px, ViT-S-16 at 224 px: a "
                        "check that it runs, not a measurement")
    parser.add_argument("--save", action="store_true",
                        help="write the JSON into benchmarks/results/ "
                        "(grid_search.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.image_size = 2, 224
        args.model, args.short_side = "ViT-S-16", 224
    if args.save and args.out is None:
        args.out = Path(__file__).parent / "results" / "grid_search.json"
    threads = configure_torch_threads()

    X, masks = make_scenes(n_scenes=args.images + 1, n_classes=args.classes,
                           image_size=args.image_size, affinity=False,
                           random_state=0)
    images = [ds["image"].values for ds in X]
    warmup, images, masks = images[0], images[1:], masks[1:]
    classes = [f"class {k}" for k in range(args.classes)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights
        clip = CLIPFeatures(args.model, None, short_side=args.short_side,
                            device="cpu")
        extractor = FeatureExtractor(logits=clip, affinity=ColorPositionAffinity(),
                                     classes=classes, progress=False)
        t_load, _, _ = _timed(lambda: extractor.transform([warmup]))
    method = {"velocity": TransportVelocity, "path": TransportPath}[args.mode]
    segmenter = DirectSegmenter(discrepancy=method(), progress=False)
    plain = Pipeline([("features", extractor), ("segment", segmenter)])

    t_extract, c_extract, feats = _timed(lambda: extractor.transform(images))
    t_segment, c_segment, _ = _timed(lambda: segmenter.predict(feats))
    t_predict, c_predict, _ = _timed(lambda: plain.predict(images))
    grid = [dict(sub) for sub in GRID]
    n_candidates = sum(int(np.prod([len(v) for v in sub.values()]))
                       for sub in grid)

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        clear_feature_cache()
        cached = Pipeline([
            ("features", FeatureCache(extractor,
                                      memory=os.path.join(tmp, "cache"))),
            ("segment", segmenter)])
        search = GridSearchCV(cached, grid, cv=KFold(2), error_score="raise")
        t_grid, c_grid, _ = _timed(lambda: search.fit(images, masks))
        info = feature_cache_info()
        rows["FeatureCache(memory=folder)"] = {
            "seconds": t_grid, "ratio": t_grid / t_predict,
            "cpu_seconds": c_grid, "cpu_ratio": c_grid / c_predict,
            "feature_misses": info["misses"], "feature_hits": info["hits"],
            "best_params": _plain(search.best_params_),
            "best_score": float(search.best_score_)}
        if args.plain_memory:
            mem = Pipeline([("features", extractor), ("segment", segmenter)],
                           memory=os.path.join(tmp, "pipeline"))
            search = GridSearchCV(mem, grid, cv=KFold(2),
                                  error_score="raise")
            t_plain, c_plain, _ = _timed(lambda: search.fit(images, masks))
            rows["Pipeline(memory=folder) alone"] = {
                "seconds": t_plain, "ratio": t_plain / t_predict,
                "cpu_seconds": c_plain, "cpu_ratio": c_plain / c_predict,
                "best_score": float(search.best_score_)}

    result = {
        "setting": {"images": args.images, "image_size": args.image_size,
                    "classes": args.classes, "model": args.model,
                    "weights": "random", "short_side": args.short_side,
                    "grid": _plain(grid), "cv": "KFold(2)", "candidates":
                    n_candidates, "mode": args.mode, "affinity":
                    "ColorPositionAffinity", "threads":
                    os.environ.get("OMP_NUM_THREADS", "default")
                    if threads is None else threads},
        "seconds": {"model_and_text_load": t_load, "extract": t_extract,
                    "segment": t_segment, "predict": t_predict},
        "cpu_seconds": {"extract": c_extract, "segment": c_segment,
                        "predict": c_predict},
        "grid": rows,
    }
    print(f"{args.images} images of {args.image_size} px, {args.model} "
          f"(random weights) at short side {args.short_side}, "
          f"{args.classes} classes, mode={args.mode}")
    print(f"{'':44s}{'wall s':>9s}{'ratio':>7s}{'CPU s':>9s}{'ratio':>7s}")
    print(f"{'features (model forwards)':44s}{t_extract:9.2f}{'':7s}"
          f"{c_extract:9.2f}")
    print(f"{'segmentation (one pass)':44s}{t_segment:9.2f}{'':7s}"
          f"{c_segment:9.2f}")
    print(f"{'one predict pass (reference)':44s}{t_predict:9.2f}{1:7.2f}"
          f"{c_predict:9.2f}{1:7.2f}")
    for name, row in rows.items():
        label = f"{n_candidates}-candidate grid, {name}"
        print(f"{label:44s}{row['seconds']:9.2f}{row['ratio']:7.2f}"
              f"{row['cpu_seconds']:9.2f}{row['cpu_ratio']:7.2f}")
    lower = (c_extract + n_candidates * c_segment) / c_predict
    print(f"(features once + {n_candidates} segmentation passes: CPU ratio "
          f"{lower:.2f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"written to {args.out}")
    # the check: each image's features computed once in the whole search
    # (counted, not timed: timings on a shared machine measure the
    # neighbours too)
    misses = rows["FeatureCache(memory=folder)"]["feature_misses"]
    if misses != len(images):
        print(f"FAIL: the grid search computed features {misses} times for "
              f"{len(images)} images")
        return 1
    print(f"OK: features computed once per image ({misses} for "
          f"{len(images)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
