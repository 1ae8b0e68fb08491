"""Time each stage of the pipeline on full-size, randomly initialised models.

Stages: CLIP ViT-B/16 dense forward at a 448-pixel short side, Stable
Diffusion 2 (base) VAE encoding at 512 pixels, the UNet up to the last
needed attention layer and, for comparison, the full UNet, the
hierarchical resampling of the attention maps, and the segmenter's
post-processing (velocity and path modes), split into its own stages
(normalisation, discrepancy, upsampling, argmax and the copy of the labels
to the host) for both backends of :class:`dsolo_sk.DirectSegmenter`:
``"numpy"`` (on the host) and ``"torch"`` (tensors on the device). Text
embeddings are timed separately: they are computed once per class list.
Images per second are given end to end and per stage, with the share of
the post-processing, and against a CLIP-only pipeline (the same CLIP, no
UNet, bilinear upsampling and raw argmax) as the reference.

The models are built from their configurations with random weights (no
download), so the timings are those of the real architectures. CPU in
float32, or the GPU in float16 when one is visible (``--device``).

Run::

    python benchmarks/stages.py            # about 4 minutes on 2 idle CPU cores
    python benchmarks/stages.py --repeats 5 --device cuda
    python benchmarks/stages.py --quick    # post-processing only, no models
    python benchmarks/stages.py --save     # and write it into results/

Nothing is written without ``--save`` (into ``benchmarks/results/``, the
committed record) or ``--out FILE``. Without ``OMP_NUM_THREADS``, torch
gets as many threads as the machine has idle CPUs.
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

#: stabilityai/stable-diffusion-2-base, unet/config.json
SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0,
)
#: stabilityai/stable-diffusion-2-base, vae/config.json
SD2_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    scaling_factor=0.18215,
)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _once(fn, device):
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def timeit(fn, device, repeats, warmup=1):
    """Best wall time of `fn()` over `repeats` runs after `warmup` runs.

    The minimum, not the mean: on a shared machine, other processes only
    ever add time.
    """
    for _ in range(warmup):
        fn()
    return min(_once(fn, device) for _ in range(repeats))


def timeit_pair(fn_a, fn_b, device, repeats):
    """Best times of two functions run alternately (fair under load)."""
    fn_a(), fn_b()
    a, b = [], []
    for _ in range(repeats):
        a.append(_once(fn_a, device))
        b.append(_once(fn_b, device))
    return min(a), min(b)


def build_clip(device, dtype, short_side=448):
    import open_clip

    from dsolo_sk.features.clip import CLIPFeatures, _CLIPBundle

    precision = {"float32": "fp32", "float16": "fp16"}[dtype]
    logging.getLogger().setLevel(logging.ERROR)  # "randomly initialised"
    model = open_clip.create_model("ViT-B-16", precision=precision, device=device)
    model.eval().requires_grad_(False)
    est = CLIPFeatures("ViT-B-16", None, short_side=short_side,
                       device=device, dtype=dtype)
    key = ("benchmark", "ViT-B-16", device, dtype)
    return est, _CLIPBundle(key, model, open_clip.get_tokenizer("ViT-B-16"),
                            "ViT-B-16")


def build_sd(device, dtype, resolution=512):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    from dsolo_sk.features.diffusion import DiffusionAttention, _SDBundle

    tdtype = getattr(torch, dtype)
    unet = UNet2DConditionModel(**SD2_BASE_UNET).to(device, tdtype).eval()
    vae = AutoencoderKL(**SD2_BASE_VAE).to(device, tdtype).eval()
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    empty = torch.zeros(1, 77, 1024, device=device, dtype=tdtype)
    est = DiffusionAttention(resolution=resolution, device=device, dtype=dtype)
    return est, _SDBundle(unet, vae, empty, "zeros")


def post_stages(ds, mode, backend, device, repeats):
    """Best seconds of each post-processing stage of one image.

    The stages are the segmenter's own steps, called as the segmenter
    calls them: normalisation (non-maximum suppression included), the
    discrepancy, the upsampling, and the argmax with the copy of the labels
    to the host; ``"total"`` is :meth:`DirectSegmenter.predict` itself.
    """
    from dsolo_sk.segmenters import DirectSegmenter

    seg = DirectSegmenter(mode=mode, backend=backend,
                          device=None if backend == "numpy" else device)
    norm, disc, up = parts = seg._parts()
    flat = seg._device_array(ds["logits"].values)
    flat = flat.reshape(flat.shape[0], -1)
    args = (flat,)
    if getattr(norm, "requires_affinity", False):
        args = (flat, seg._device_array(ds["affinity"].values))
    patch = seg._patch_scores(ds, parts)
    maps = seg._upsample(patch, ds, parts)
    out = {
        "normalize": timeit(lambda: norm.normalize(*args), device, repeats),
        # the discrepancy with the normalisation it needs, less the latter
        "discrepancy": timeit(lambda: seg._patch_scores(ds, parts), device,
                              repeats),
        "upsample": timeit(lambda: seg._upsample(patch, ds, parts), device,
                           repeats),
        "argmax_to_host": timeit(lambda: seg._labels(maps), device, repeats),
        "total": timeit(lambda: seg.predict([ds]), device, repeats),
    }
    out["discrepancy"] = max(out["discrepancy"] - out["normalize"], 0.0)
    return out


def clip_only(ds, device, repeats):
    """Seconds of the reference's post-processing: bilinear upsampling of
    the raw logits and argmax (the CLIP-only pipeline)."""
    from dsolo_sk import DirectSegmenter, InterpolationUpsampler

    seg = DirectSegmenter(mode="raw", upsampler=InterpolationUpsampler(),
                          backend="torch", device=device)
    return timeit(lambda: seg.predict([ds]), device, repeats)


def print_post_table(ds, device, repeats, models=None):
    """Per-stage table of the post-processing, both backends and modes.

    `models` is the seconds per image of the model stages (None: not
    timed, the shares are of the post-processing alone).
    """
    p = int(np.prod(ds["logits"].shape[1:]))
    n = ds.sizes["class"]
    print(f"\npost-processing on {device}: {n} classes, {p} patches, image "
          f"{tuple(ds['image'].shape[:2])}, best of {repeats}")
    stages = ("normalize", "discrepancy", "upsample", "argmax_to_host")
    head = "".join(f"{s:>16}" for s in stages)
    print(f"{'mode/backend':<18}{head}{'total s':>10}{'img/s':>9}"
          + (f"{'post share':>12}" if models else ""))
    res = {}
    for mode in ("velocity", "path"):
        for backend in ("numpy", "torch"):
            t = post_stages(ds, mode, backend, device, repeats)
            res[mode, backend] = t
            cells = "".join(f"{t[s]:>9.4f}s {t[s] / t['total']:>5.0%}"
                            for s in stages)
            line = (f"{mode + '/' + backend:<18}{cells}{t['total']:>10.4f}"
                    f"{1 / t['total']:>9.1f}")
            if models:
                share = t["total"] / (models + t["total"])
                line += f"{share:>12.1%}"
            print(line)
    for mode in ("velocity", "path"):
        ratio = res[mode, "numpy"]["total"] / res[mode, "torch"]["total"]
        print(f"{mode}: torch path {ratio:.2f}x the images/s of the numpy "
              f"path (post-processing alone)")
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=21,
                        help="number of classes (VOC21 has 21)")
    parser.add_argument("--text-classes", type=int, default=2,
                        help="classes whose 80-template text embedding is "
                             "timed (a one-time cost per class, cached)")
    parser.add_argument("--quick", action="store_true",
                        help="post-processing only, on generated features "
                             "of the same shapes (no model is built)")
    parser.add_argument("--save", action="store_true",
                        help="write the JSON into benchmarks/results/ "
                        "(stages.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the JSON to this file")
    args = parser.parse_args(argv)
    if args.save and args.out is None:
        args.out = Path(__file__).parent / "results" / "stages.json"
    if args.quick:
        return quick(args)

    from skimage import data

    from dsolo_sk._threads import configure_torch_threads
    from dsolo_sk.features._cache import check_device_dtype

    configure_torch_threads()
    device, dtype = check_device_dtype(args.device, "auto",
                                       names=("--device", "--dtype"))
    torch.manual_seed(0)
    image = data.astronaut()  # 512 x 512 RGB
    clip_side, sd_side = 448, 512
    if args.quick:
        image, clip_side, sd_side = image[::2, ::2], 224, 256
        args.repeats, args.text_classes = 1, 1
    classes = [f"class {i}" for i in range(args.classes)]
    print(f"device={device} dtype={dtype} threads={torch.get_num_threads()} "
          f"image={image.shape[:2]} classes={len(classes)} "
          f"repeats={args.repeats}")
    t = {}

    t0 = time.perf_counter()
    clip, cb = build_clip(device, dtype, clip_side)
    print(f"built ViT-B-16 in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    clip._text_embeddings(cb, tuple(f"text {i}" for i in range(args.text_classes)))
    text = (time.perf_counter() - t0) / args.text_classes
    # the per-image stages do not depend on the templates: one is enough
    clip.set_params(templates=["a photo of a {}."])
    clip._text_embeddings(cb, tuple(classes))
    grid = clip._grid(cb, image.shape[:2])
    from dsolo_sk.features._contract import max_per_class

    def clip_logits():
        queries, owner = clip._compute_query_logits(cb, image, classes)
        return max_per_class(queries.cpu().numpy(), owner, len(classes))

    t["clip_forward"] = timeit(clip_logits, device, args.repeats)
    logits = clip_logits()

    t0 = time.perf_counter()
    sd, sb = build_sd(device, dtype, sd_side)
    print(f"built SD2-base UNet + VAE in {time.perf_counter() - t0:.1f}s")
    blocks = sd._block_indices(sb)
    t["vae_encode"] = timeit(lambda: sd._encode(sb, image), device, args.repeats)
    latent = sd._encode(sb, image)
    early = sd
    full = sd.__class__(**{**sd.get_params(), "early_exit": False})
    t["unet_early_exit"], unet_full = timeit_pair(
        lambda: early._unet_maps(sb, latent, blocks),
        lambda: full._unet_maps(sb, latent, blocks), device, args.repeats)
    maps = sd._unet_maps(sb, latent, blocks)
    t["attention_resample"] = timeit(lambda: sd._affinity(maps, grid), device,
                                     args.repeats)
    affinity = sd._affinity(maps, grid)

    from dsolo_sk.features import from_arrays

    ds = from_arrays(logits, affinity, image, classes)
    models = sum(t.values())
    table = print_post_table(ds, device, args.repeats, models)
    post = {mode: table[mode, "numpy"]["total"]
            for mode in ("velocity", "path")}
    t["post_velocity"] = post["velocity"]
    reference = t["clip_forward"] + clip_only(ds, device, args.repeats)
    for backend in ("numpy", "torch"):
        e2e = models + table["velocity", backend]["total"]
        print(f"end to end, velocity/{backend}: {1 / e2e:.2f} images/s; "
              f"CLIP-only reference {1 / reference:.2f} images/s "
              f"(ratio {reference / e2e:.2f})")

    total = sum(t.values())
    print(f"\npatch grid {grid}, attention grids {[g for g, _ in maps]}; "
          f"text embedding, 80 templates: {text:.2f}s per class, once "
          f"(cached; {text * len(classes):.1f}s for {len(classes)} classes)\n")
    print(f"{'stage':<22}{'seconds':>10}{'share':>9}")
    for name, sec in t.items():
        print(f"{name:<22}{sec:>10.3f}{sec / total:>9.1%}")
    print(f"{'total per image':<22}{total:>10.3f}{1:>9.0%}")
    if "path" in post:
        print(f"{'(post_path)':<22}{post['path']:>10.3f}"
              f"{post['path'] / (total - post['velocity'] + post['path']):>9.1%}"
              "  of a path-mode image")
    saving = 1 - t["unet_early_exit"] / unet_full
    print(f"\nUNet full step {unet_full:.3f}s vs early exit "
          f"{t['unet_early_exit']:.3f}s: early exit saves {saving:.1%} of the "
          f"UNet time ({unet_full / t['unet_early_exit']:.2f}x faster), "
          f"{(unet_full - t['unet_early_exit']) / (total - t['unet_early_exit'] + unet_full):.1%} "
          "of the whole image.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "setting": {"device": device, "dtype": dtype,
                        "threads": torch.get_num_threads(),
                        "image": list(image.shape[:2]),
                        "classes": len(classes), "repeats": args.repeats,
                        "patch_grid": list(grid)},
            "seconds": t, "unet_full_s": unet_full,
            "text_embedding_per_class_s": text, "post_s": post}, indent=1))
        print(f"written to {args.out}")
    return t, unet_full, post


def quick(args):
    """The post-processing table on generated features of the protocol's
    shapes: a 448 x 448 image, a 28 x 28 patch grid (ViT-B/16), an affinity
    between patches and ``--classes`` classes."""
    from dsolo_sk.datasets import make_scene_family

    device = "cpu" if args.device == "auto" else args.device
    X, _ = make_scene_family("street", n_scenes=1, image_size=448,
                             random_state=0)
    ds = X[0]
    n = ds.sizes["class"]
    if n < args.classes:  # more (absent) classes: their logits lose
        rng = np.random.default_rng(0)
        extra = args.classes - n
        low = float(ds["logits"].min())
        shape = (extra,) + ds["logits"].shape[1:]
        logits = np.concatenate([ds["logits"].values,
                                 low + 0.01 * rng.random(shape)])
        from dsolo_sk.features import from_arrays

        ds = from_arrays(logits.astype(np.float32), ds["affinity"].values,
                         ds["image"].values,
                         [f"class {i}" for i in range(args.classes)])
    print(f"device={device} threads={torch.get_num_threads()} "
          f"repeats={args.repeats} (quick: no models)")
    return print_post_table(ds, device, args.repeats)


if __name__ == "__main__":
    main()
