"""Speed and memory of the post-processing, measured in one run.

Run ``python benchmarks/performance.py``. It prints

1. the time of one CLIP ViT-B/16 forward at 448 x 448 pixels (a randomly
   initialised open_clip model: the weights do not change the cost) and of
   the post-processing of one image with P = 784 patches and N = 21 classes
   in each mode (NMS, normalisation, discrepancy, upsampling to 448 x 448,
   argmax), as a share of the forward;
2. the batched log-domain Sinkhorn of :class:`dsolo_sk.TransportPath`
   against a per-class loop of :func:`ot.sinkhorn` (same 50 iterations,
   same cost), with POT's log-domain solver (the like-for-like one, which
   stays finite for small epsilon) and with its plain solver (which
   underflows there): the speed ratios and the largest differences
   between plans;
3. the peak memory (resident set size) of segmenting one image with
   P = 4096 patches and N = 171 classes at 1024 x 1024 pixels, in a fresh
   process, next to the same process's size after its imports.

Timings are medians of repeated runs on this machine; compare the ratios,
not the seconds, across machines.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPEATS = 15


def median_time(fn, repeats=REPEATS):
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
    from dsolo_sk import DirectSegmenter
    from dsolo_sk.datasets import make_scenes

    X, _ = make_scenes(n_scenes=1, n_classes=21, image_size=448,
                       random_state=0)
    out = {}
    for name, params in (("velocity (defaults)", dict(mode="velocity")),
                         ("path (defaults)", dict(mode="path")),
                         ("kl (defaults)", dict(mode="kl")),
                         ("velocity, Gaussian JBU", dict(
                             mode="velocity", jbu_kernel="gaussian")),
                         ("path, Gaussian JBU", dict(
                             mode="path", jbu_kernel="gaussian"))):
        seg = DirectSegmenter(**params)
        out[name] = median_time(lambda: seg.predict(X))
    return out


def sinkhorn_comparison():
    import ot

    from dsolo_sk import TransportPath
    from dsolo_sk.datasets import make_scenes
    from dsolo_sk.discrepancy import cost_from_affinity
    from dsolo_sk.normalization import normalize_logits, suppress_non_maximum
    from dsolo_sk.transport import sinkhorn_log_batched

    X, _ = make_scenes(n_scenes=1, n_classes=21, image_size=448,
                       random_state=1)
    ds = X[0]
    logits = ds["logits"].values.reshape(21, -1).astype(np.float64)
    q, mass = normalize_logits(suppress_non_maximum(logits))
    q = q[mass > 0]
    affinity = ds["affinity"].values.astype(np.float64)
    p = q.shape[1]
    b = np.full(p, 1.0 / p)
    reg, n_iter = 0.1, 50
    cost = cost_from_affinity(affinity, "linear")

    def batched():
        return TransportPath(epsilon=reg, n_iter=n_iter).compute(q, affinity)

    def loop(method):
        return [ot.sinkhorn(q[c], b, cost, reg, method=method,
                            numItermax=n_iter, stopThr=0, warn=False)
                for c in range(q.shape[0])]

    t_batched = median_time(batched, 3)
    t_log = median_time(lambda: loop("sinkhorn_log"), 3)
    t_plain = median_time(lambda: loop("sinkhorn"), 3)
    log_u, log_v = sinkhorn_log_batched(q, b, cost, reg, n_iter)
    ours = [np.exp(log_u[c][:, None] - cost / reg + log_v[c][None, :])
            for c in range(q.shape[0])]
    diffs = {m: max(np.abs(o - r).max() for o, r in zip(ours, loop(m)))
             for m in ("sinkhorn_log", "sinkhorn")}
    return {"classes": int(q.shape[0]), "patches": p,
            "batched_s": t_batched, "loop_log_s": t_log,
            "loop_plain_s": t_plain,
            "speedup_vs_log": t_log / t_batched,
            "speedup_vs_plain": t_plain / t_batched,
            "max_plan_difference_log": float(diffs["sinkhorn_log"]),
            "max_plan_difference_plain": float(diffs["sinkhorn"])}


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
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
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

    sk = sinkhorn_comparison()
    res["sinkhorn"] = sk
    print(f"\n2. Path mode, all {sk['classes']} classes batched (log domain) "
          f"vs a per-class loop of ot.sinkhorn (P = {sk['patches']}, 50 "
          "iterations, float64)")
    print(f"   batched:                         {sk['batched_s']:.4f} s")
    print(f"   loop, method='sinkhorn_log':     {sk['loop_log_s']:.4f} s = "
          f"{sk['speedup_vs_log']:.1f} x the batched time; largest plan "
          f"difference {sk['max_plan_difference_log']:.1e}")
    print(f"   loop, method='sinkhorn' (plain): {sk['loop_plain_s']:.4f} s = "
          f"{sk['speedup_vs_plain']:.1f} x; largest plan difference "
          f"{sk['max_plan_difference_plain']:.1e}")

    print("\n3. Peak memory, P = 4096 patches, N = 171 classes, "
          "1024 x 1024 pixels (fresh process)")
    for mode in ("velocity", "path"):
        m = peak_memory(mode)
        res[f"memory_{mode}"] = m
        print(f"   {mode:<9s} peak {m['peak_mb']:7.0f} MB (after imports "
              f"{m['after_imports_mb']:.0f} MB, with inputs "
              f"{m['with_inputs_mb']:.0f} MB); {m['seconds']:.1f} s")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
