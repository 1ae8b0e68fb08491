"""Speed and memory of the post-processing, measured in one run.

Run ``python benchmarks/performance.py``. It prints

1. the time of one CLIP ViT-B/16 forward at 448 x 448 pixels (a randomly
   initialised open_clip model: the weights do not change the cost) and of
   the post-processing of one image with P = 784 patches and N = 21 classes
   in each mode (NMS, normalisation, discrepancy, upsampling to 448 x 448,
   argmax), as a share of the forward;
2. the batched log-domain Sinkhorn of :class:`dsolo_sk.TransportPath` on
   the path mode's own problem (the segmenter's default normaliser, and
   the default discrepancy's cost, balance, epsilon and iterations, read
   from the code) against a per-class loop of :func:`ot.sinkhorn` with the
   same iterations and cost, with POT's log-domain solver and with its plain
   solver, for numpy float64, numpy float32 and torch float32: the speed
   ratios and the L1 distances between plans; what batching can gain at
   all on the machine (N kernel-vector products against one kernel-matrix
   product); for each cost, epsilon in {0.1, 0.03, 0.01} and float type,
   the classes whose plain or batched plan is not finite or lies more than
   1e-4 (L1) from the float64 log-domain plan; and how far the plan of
   the default iterations (50) lies from the converged one;
3. the peak memory (resident set size) of segmenting one image with
   P = 4096 patches and N = 171 classes at 1024 x 1024 pixels, in a fresh
   process, next to the same process's size after its imports.

Timings are medians of repeated runs on this machine; compare the ratios,
not the seconds, across machines.

Run::

    python benchmarks/performance.py          # about 5 min on 2 CPU cores
    python benchmarks/performance.py --quick  # about 1 min, a check that it runs
    python benchmarks/performance.py --save   # and write it into results/

``--quick`` takes 3 repeats instead of 15, the transport problem of a
224-pixel scene (P = 196) and no memory section.

Nothing is written without ``--save`` (into ``benchmarks/results/``, the
committed record) or ``--out FILE``. Without ``OMP_NUM_THREADS``, torch
gets as many threads as the machine has idle CPUs.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPEATS = 15


def median_time(fn, repeats=None):
    repeats = REPEATS if repeats is None else repeats
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def clip_forward_seconds(size=448):
    import open_clip
    import torch

    model = open_clip.create_model("ViT-B-16", pretrained=None,
                                   force_image_size=size).eval()
    x = torch.randn(1, 3, size, size)

    def run():
        with torch.inference_mode():
            model.encode_image(x)

    return median_time(run)


def postprocessing_seconds():
    from dsolo_sk import (DirectSegmenter, JointBilateralUpsampler,
                          KLDiscrepancy, TransportPath, TransportVelocity)
    from dsolo_sk.datasets import make_scenes

    X, _ = make_scenes(n_scenes=1, n_classes=21, image_size=448,
                       random_state=0)
    gaussian = JointBilateralUpsampler(kernel="gaussian")
    out = {}
    for name, params in (("velocity (defaults)", dict(
                             discrepancy=TransportVelocity())),
                         ("path (defaults)", dict(
                             discrepancy=TransportPath())),
                         ("kl (defaults)", dict(discrepancy=KLDiscrepancy())),
                         ("velocity, Gaussian JBU", dict(
                             discrepancy=TransportVelocity(),
                             upsampler=gaussian)),
                         ("path, Gaussian JBU", dict(
                             discrepancy=TransportPath(),
                             upsampler=gaussian))):
        seg = DirectSegmenter(**params)
        out[name] = median_time(lambda: seg.predict(X))
    return out


def _path_problem(image_size=448):
    """The transport problem of path mode on one synthetic scene.

    The class distributions, masses and affinity exactly as
    :class:`dsolo_sk.DirectSegmenter` (``mode="path"``, defaults) builds
    them: the path mode's default normaliser on the float32 logits, classes
    with mass only. Returns them (float64) with the default discrepancy,
    whose cost, balance, epsilon and iterations the comparison uses, so
    that the benchmark times what users run whatever the defaults become.
    """
    from dsolo_sk.datasets import make_scenes
    from dsolo_sk.segmenters import _default_parts

    normalizer, path, _ = _default_parts("path")
    X, _ = make_scenes(n_scenes=1, n_classes=21, image_size=image_size,
                       random_state=1)
    ds = X[0]
    n = ds.sizes["class"]
    logits = ds["logits"].values.reshape(n, -1).astype(np.float32)
    affinity = ds["affinity"].values.astype(np.float64)
    if getattr(normalizer, "requires_affinity", False):
        q, mass = normalizer.normalize(logits, affinity)
    else:
        q, mass = normalizer.normalize(logits)
    # the segmenter's rule: a mass that underflows float32 is no mass
    keep = np.asarray(mass) >= np.finfo(np.float32).tiny
    return (np.asarray(q, dtype=np.float64)[keep],
            np.asarray(mass, dtype=np.float64)[keep],
            affinity, path)


def _plans(log_u, log_v, cost, reg):
    return [np.exp(log_u[c][:, None] - cost / reg + log_v[c][None, :])
            for c in range(log_u.shape[0])]


def _plan_gap(ours, ref):
    """Largest over classes of the L1 distance between two plans, and the
    largest entry-wise difference (plans of one class sum to one)."""
    l1 = max(float(np.abs(o - r).sum()) for o, r in zip(ours, ref))
    mx = max(float(np.abs(o - r).max()) for o, r in zip(ours, ref))
    return l1, mx


def sinkhorn_comparison(image_size=448):
    """Batched path mode against a per-class loop of ``ot.sinkhorn``, on
    the problem, cost and parameters of the default path mode."""
    import ot
    import torch

    from dsolo_sk.discrepancy import cost_from_affinity
    from dsolo_sk.transport import sinkhorn_log_batched

    q64, mass64, aff64, path = _path_problem(image_size)
    n_iter, reg = path.n_iter, path.epsilon
    n, p = q64.shape
    cost64 = cost_from_affinity(aff64, path.cost, path.balance)
    out = {"classes": int(n), "patches": int(p), "iterations": n_iter,
           "epsilon": reg, "cost": path.cost, "balance": path.balance,
           "rows": []}

    backends = {
        "numpy float64": lambda a: np.asarray(a, dtype=np.float64),
        "numpy float32": lambda a: np.asarray(a, dtype=np.float32),
        "torch float32": lambda a: torch.as_tensor(
            np.asarray(a, dtype=np.float32)),
    }
    for name, conv in backends.items():
        q, mass, aff, cost = (conv(x) for x in (q64, mass64, aff64, cost64))
        b = conv(np.full(p, 1.0 / p))

        def batched():
            return path.compute(q, aff, mass)

        def loop(method):
            with np.errstate(divide="ignore"):  # zero weights: plain solver
                return [ot.sinkhorn(q[c], b, cost, reg, method=method,
                                    numItermax=n_iter, stopThr=0, warn=False)
                        for c in range(n)]

        row = {"backend": name,
               "batched_s": median_time(batched, min(5, REPEATS))}
        log_u, log_v = sinkhorn_log_batched(q, b, cost, reg, n_iter)
        ours = _plans(*(np.asarray(x, dtype=np.float64)
                        for x in (log_u, log_v, cost)), reg)
        for method in ("sinkhorn_log", "sinkhorn"):
            repeats = 1 if method == "sinkhorn_log" else min(5, REPEATS)
            row[f"loop_{method}_s"] = median_time(lambda: loop(method),
                                                  repeats)
            ref = [np.asarray(x, dtype=np.float64) for x in loop(method)]
            row[f"l1_{method}"], row[f"max_{method}"] = _plan_gap(ours, ref)
        out["rows"].append(row)

    # what batching can gain at all: N products of the kernel with one
    # vector against one product with the N vectors stacked
    for dt in (np.float64, np.float32):
        k = np.exp(-cost64 / reg).astype(dt)
        w = q64.astype(dt)
        t_mv = median_time(lambda: [k.T @ w[c] for c in range(n)])
        t_mm = median_time(lambda: w @ k)
        out[f"gemv_over_gemm_{np.dtype(dt).name}"] = t_mv / t_mm

    # where POT's plain solver stands in for the log-domain one: classes
    # whose plain plan is not finite or lies more than 1e-4 (L1) from the
    # log-domain plan of the same iterations, computed in float64 by
    # ot.sinkhorn(method="sinkhorn_log")
    b64 = np.full(p, 1.0 / p)
    out["validity"] = []
    for kind in ("linear", "neglog"):
        c64 = cost_from_affinity(aff64, kind, path.balance)
        for eps in (0.1, 0.03, 0.01):
            with np.errstate(divide="ignore"):  # log of zero weights
                ref = [ot.sinkhorn(q64[c], b64, c64, eps,
                                   method="sinkhorn_log", numItermax=n_iter,
                                   stopThr=0, warn=False)
                       for c in range(n)]
            for dt in (np.float64, np.float32):
                args = [x.astype(dt) for x in (q64, b64, c64)]
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    plain = [np.asarray(ot.sinkhorn(
                        args[0][c], args[1], args[2], eps, numItermax=n_iter,
                        stopThr=0, warn=False), dtype=np.float64)
                        for c in range(n)]
                lu, lv = sinkhorn_log_batched(*args, eps, n_iter)
                ours = _plans(lu.astype(np.float64), lv.astype(np.float64),
                              c64, eps)

                def wrong(plans):
                    return int(sum(
                        not np.isfinite(x).all() or np.abs(x - r).sum() > 1e-4
                        for x, r in zip(plans, ref)))

                out["validity"].append({
                    "cost": kind, "epsilon": eps,
                    "dtype": np.dtype(dt).name,
                    "plain_wrong": wrong(plain), "batched_wrong": wrong(ours),
                })

    # how far the default iterations (the paper's 50) are from the optimal
    # plan (POT's plain solver run to convergence; finite for this cost
    # and epsilon)
    lu, lv = sinkhorn_log_batched(q64, b64, cost64, reg, n_iter)
    ours = _plans(lu, lv, cost64, reg)
    conv, iters = [], []
    with np.errstate(all="ignore"):
        for c in range(n):
            plan, log = ot.sinkhorn(q64[c], b64, cost64, reg,
                                    numItermax=20000, stopThr=1e-10,
                                    log=True, warn=False)
            conv.append(plan)
            iters.append(log["niter"])
    out["l1_to_converged"], _ = _plan_gap(ours, conv)
    out["iterations_to_converge"] = [int(min(iters)), int(max(iters))]
    return out


MEMORY_CHILD = r"""
import sys, time
import numpy as np
from dsolo_sk import DirectSegmenter
from dsolo_sk.features import from_arrays
def hwm():
    # the peak resident set of this address space (ru_maxrss would carry
    # the parent's peak over the exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = hwm()
rng = np.random.default_rng(0)
side, n = 64, 171
image = rng.integers(0, 256, (16 * side, 16 * side, 3), dtype=np.uint8)
logits = rng.normal(0.2, 0.02, (n, side, side)).astype(np.float32)
att = rng.random((side * side, side * side), dtype=np.float32) ** 8
att /= att.sum(1, keepdims=True)
ds = from_arrays(logits, att, image, [f"c{k}" for k in range(n)])
del att, logits
inputs = hwm()
t0 = time.perf_counter()
DirectSegmenter(mode=sys.argv[1]).predict([ds])
dt = time.perf_counter() - t0
peak = hwm()
print(base / 1024, inputs / 1024, peak / 1024, dt)
"""


def peak_memory(mode):
    res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, mode],
                         capture_output=True, text=True, check=True)
    base, inputs, peak, dt = map(float, res.stdout.split())
    return {"after_imports_mb": base, "with_inputs_mb": inputs,
            "peak_mb": peak, "seconds": dt}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats instead of 15, the transport "
                        "comparison on 196 patches, no memory section: a "
                        "check that it runs")
    parser.add_argument("--save", action="store_true",
                        help="write the JSON into benchmarks/results/ "
                        "(performance.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the JSON to this file")
    args = parser.parse_args(argv)
    if args.save and args.out is None:
        args.out = Path(__file__).parent / "results" / "performance.json"
    global REPEATS
    if args.quick:
        REPEATS = 3
    from dsolo_sk._threads import configure_torch_threads

    configure_torch_threads()
    res = {}

    t_clip = clip_forward_seconds()
    post = postprocessing_seconds()
    res["clip_forward_448_s"] = t_clip
    res["postprocessing_s"] = post
    print("1. CLIP ViT-B/16 forward at 448 px vs post-processing "
          "(P = 784, N = 21, output 448 x 448)")
    print(f"   CLIP forward: {t_clip:.3f} s")
    for name, t in post.items():
        print(f"   {name:<22s} {t:.4f} s = {100 * t / t_clip:5.1f} % of the "
              "forward")

    # --quick: the transport problem of a 224-pixel scene (P = 196)
    sk = sinkhorn_comparison(image_size=224 if args.quick else 448)
    res["sinkhorn"] = sk
    print(f"\n2. Path mode (P = {sk['patches']}, N = {sk['classes']} classes "
          f"with mass, {sk['iterations']} iterations, epsilon "
          f"{sk['epsilon']}, {sk['cost']} cost, {sk['balance']} balance) vs "
          "a per-class loop of ot.sinkhorn with the same iterations")
    print(f"   {'backend':<14s} {'batched':>9s} {'loop, sinkhorn_log':>27s} "
          f"{'loop, sinkhorn (plain)':>27s}   plan L1 gap (log | plain)")
    for r in sk["rows"]:
        log_x = r["loop_sinkhorn_log_s"] / r["batched_s"]
        plain_x = r["loop_sinkhorn_s"] / r["batched_s"]
        print(f"   {r['backend']:<14s} {r['batched_s']:8.4f}s "
              f"{r['loop_sinkhorn_log_s']:9.4f}s = {log_x:6.1f} x "
              f"{r['loop_sinkhorn_s']:9.4f}s = {plain_x:6.1f} x   "
              f"{r['l1_sinkhorn_log']:.1e} | {r['l1_sinkhorn']:.1e}")
    print("   largest entry-wise plan difference (numpy float64): "
          f"{sk['rows'][0]['max_sinkhorn_log']:.1e} (log) | "
          f"{sk['rows'][0]['max_sinkhorn']:.1e} (plain)")
    print("   ceiling of batching on this machine: N kernel-vector products "
          "take "
          f"{sk['gemv_over_gemm_float64']:.1f} x (float64) and "
          f"{sk['gemv_over_gemm_float32']:.1f} x (float32) the time of one "
          "kernel-matrix product")
    print("   classes (of {}) whose plan is not finite or lies > 1e-4 (L1) "
          "from ot.sinkhorn(method='sinkhorn_log') in float64:"
          .format(sk["classes"]))
    print(f"   {'cost':<7s} {'epsilon':>7s} {'dtype':>8s} {'plain loop':>11s} "
          f"{'batched':>8s}")
    for v in sk["validity"]:
        print(f"   {v['cost']:<7s} {v['epsilon']:7.2f} {v['dtype']:>8s} "
              f"{v['plain_wrong']:11d} {v['batched_wrong']:8d}")
    lo, hi = sk["iterations_to_converge"]
    print(f"   the {sk['iterations']}-iteration plan lies "
          f"{sk['l1_to_converged']:.1e} (L1, worst class) from the converged "
          f"plan, which takes {lo}-{hi} iterations (ot.sinkhorn, stopThr "
          "1e-10)")

    print("\n3. Peak memory, P = 4096 patches, N = 171 classes, "
          "1024 x 1024 pixels (fresh process)")
    for mode in () if args.quick else ("velocity", "path"):
        m = peak_memory(mode)
        res[f"memory_{mode}"] = m
        print(f"   {mode:<9s} peak {m['peak_mb']:7.0f} MB (after imports "
              f"{m['after_imports_mb']:.0f} MB, with inputs "
              f"{m['with_inputs_mb']:.0f} MB); {m['seconds']:.1f} s")
    if args.quick:
        print("   skipped (--quick)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
