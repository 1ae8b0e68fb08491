"""The ``dsolo-sk`` command line.

``dsolo-sk evaluate``
    Evaluate a segmenter on a benchmark under its protocol, resumably::

        dsolo-sk evaluate --dataset voc21 --root ~/data --out runs/voc21

    Per-image results go to ``OUT/per_image/`` as they are computed; run
    the same command again after a crash (or Ctrl-C) to finish the run.
    ``OUT/results.json`` and ``OUT/per_class_iou.csv`` hold the per-class
    IoU, the mIoU and the exact protocol. ``--dask`` runs the images on a
    local Dask cluster, ``--scheduler ADDRESS`` on an existing one.

``dsolo-sk segment``
    Segment images into any classes::

        dsolo-sk segment cat.jpg street.png --classes "cat,dog,sky" --out seg

    writes ``<name>_labels.png`` (a palette PNG whose pixel values are class
    indices; a 16-bit greyscale PNG past 256 classes),
    ``<name>_overlay.png`` (the image, the labels in colour and a legend)
    and, with ``--netcdf``, ``<name>_scores.nc`` (the per-class
    score maps as an xarray DataArray; NetCDF4 through h5netcdf when h5py
    is installed, NetCDF3 through scipy otherwise; read it back with
    ``xarray.open_dataarray``). ``--batch-size N`` passes N images at a
    time, those of one size going through CLIP and the UNet together.

``dsolo-sk protocols``
    Print the protocol of every benchmark in every named setting (the
    paper's and each peer's); ``--setting`` and ``--dataset`` select rows,
    ``--sources`` says where each setting comes from.

``dsolo-sk demo``
    The whole method without any weights: a photo segmented in every mode
    with a model-free colour stand-in for CLIP, overlay PNGs, and the
    ablation on generated scenes::

        dsolo-sk demo --out dsolo-sk-demo

``dsolo-sk weights``
    The pretrained weights in the Hugging Face cache::

        dsolo-sk weights download [--clip MODEL:TAG] [--sd REPO@REV] [--cache DIR]
        dsolo-sk weights check    # offline, in about a second
        dsolo-sk weights path     # the cache folder to copy offline

    ``download`` fetches exactly the files the extractors read (both
    defaults when neither ``--clip`` nor ``--sd`` is given), with progress
    bars and sizes; ``check`` says for each model whether the cache holds
    it complete, where, at which revision (exit status 1 when one is
    missing or incomplete); ``path`` prints the folder.

Run ``dsolo-sk COMMAND --help`` for the options. Nothing heavy (torch,
POT, open_clip, diffusers) is imported until a command runs, so ``--help``
and ``--version`` answer at once. When ``OMP_NUM_THREADS`` is not set, the
commands give torch as many threads as the machine has idle CPUs.
"""

import argparse
import contextlib
import os
import shutil
import signal
import sys

__all__ = ["main", "build_parser"]

MODES = ("velocity", "path", "kl", "raw")


def _model_options(p):
    g = p.add_argument_group("models")
    g.add_argument("--mode", choices=MODES, default="velocity",
                   help="discrepancy of the segmenter (default: velocity)")
    g.add_argument("--tau", type=float, default=None,
                   help="convergence threshold of the velocity mode, "
                        "TransportVelocity(tau=TAU) (default: 0.3)")
    g.add_argument("--epsilon", type=float, default=None,
                   help="entropic regularisation of the path mode, "
                        "TransportPath(epsilon=EPSILON) (default: 0.1)")
    g.add_argument("--model", default="ViT-B-16",
                   help="open_clip architecture, model-config JSON or "
                        "local-dir folder (default: ViT-B-16)")
    g.add_argument("--pretrained", default="openai",
                   help="open_clip weights tag or checkpoint path; 'none' "
                        "for random weights (tests only)")
    g.add_argument("--templates", default="imagenet",
                   help="'imagenet' (the 80 OpenAI templates) or a text file "
                        "with one template holding '{}' per line")
    g.add_argument("--affinity", choices=("diffusion", "color"),
                   default="diffusion",
                   help="patch affinity of the path and velocity modes: "
                        "Stable Diffusion self-attention (the paper's) or "
                        "the model-free colour-position affinity")
    g.add_argument("--sd-model", default=None,
                   help="Stable Diffusion 2 weights (hub id or folder) for "
                        "--affinity diffusion")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA, then MPS, then the CPU), cpu, cuda, "
                        "cuda:N or mps")
    g.add_argument("--dtype", default="auto",
                   help="auto (float16 on GPU), float32, float16, bfloat16")


def build_parser():
    """The argument parser of ``dsolo-sk``.

    Returns
    -------
    argparse.ArgumentParser
        With the sub-commands ``evaluate``, ``segment``, ``protocols``,
        ``demo`` and ``weights``.

    Examples
    --------
    >>> from dsolo_sk.cli import build_parser
    >>> args = build_parser().parse_args(
    ...     ["evaluate", "--dataset", "voc21", "--root", "data",
    ...      "--out", "runs/voc21", "--limit", "10"])
    >>> args.command, args.dataset, args.setting, args.limit
    ('evaluate', 'voc21', 'paper', 10)
    """
    from . import __version__
    from .datasets import DATASETS
    from .protocols import SETTING_ALIASES, SETTINGS

    settings = SETTINGS + tuple(SETTING_ALIASES)
    parser = argparse.ArgumentParser(
        prog="dsolo-sk",
        description="Training-free open-vocabulary semantic segmentation "
                    "(Direct Segmentation without Logits Optimization).")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "evaluate", help="evaluate on a benchmark (resumable)",
        description="Evaluate on a benchmark under its protocol. Results "
                    "are written per image as they come; rerun the same "
                    "command to resume an interrupted run.")
    ev.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ev.add_argument("--root", required=True,
                    help="dataset folder, or the folder above it")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--split", default="val")
    ev.add_argument("--setting", choices=settings, default="paper",
                    help="the paper's setting (whole image) or a peer's "
                         "(see 'dsolo-sk protocols'); 'peers' is an alias "
                         "of 'sclip'")
    ev.add_argument("--short-side", type=int, default=None,
                    help="override the protocol's short side")
    ev.add_argument("--limit", type=int, default=None,
                    help="evaluate the first N images only")
    g = ev.add_argument_group("Dask")
    g.add_argument("--dask", action="store_true",
                   help="run on a local Dask cluster")
    g.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler")
    g.add_argument("--workers", type=int, default=2,
                   help="worker processes of the local cluster, 1 to 256 "
                        "(default: 2)")
    ev.add_argument("--no-progress", action="store_true")
    _model_options(ev)

    sg = sub.add_parser(
        "segment", help="segment images into the given classes",
        description="Segment images; writes a palette PNG label map and an "
                    "overlay PNG per image, optionally NetCDF score maps.")
    sg.add_argument("images", nargs="+", metavar="IMAGE")
    cls = sg.add_mutually_exclusive_group(required=True)
    cls.add_argument("--classes",
                     help="comma-separated class names, e.g. 'cat,dog,sky'")
    cls.add_argument("--classes-file",
                     help="class file: one class per line, synonyms "
                          "separated by ', '")
    sg.add_argument("--out", required=True, help="output folder")
    sg.add_argument("--short-side", type=int, default=336)
    sg.add_argument("--netcdf", action="store_true",
                    help="also write the score maps as NetCDF")
    sg.add_argument("--batch-size", type=int, default=1, metavar="N",
                    help="images of the same size that go through CLIP "
                         "and the UNet together, 1 to 4096; memory grows "
                         "linearly with it (default: 1)")
    sg.add_argument("--no-progress", action="store_true")
    _model_options(sg)

    pr = sub.add_parser("protocols", help="print the benchmark protocols",
                        description="Print the protocol of every benchmark "
                                    "in every named setting.")
    pr.add_argument("--setting", choices=settings, default=None,
                    help="only this setting")
    pr.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                    help="only this dataset")
    pr.add_argument("--sources", action="store_true",
                    help="also say where each setting comes from")

    dm = sub.add_parser(
        "demo", help="the whole method without weights, on a photo",
        description="Segment scikit-image's coffee photo in every mode with "
                    "a model-free colour stand-in for CLIP (no weights, no "
                    "network), write one overlay PNG per mode, and print "
                    "the ablation (raw logits, kl, path, velocity) on "
                    "generated scenes with ground truth.")
    dm.add_argument("--out", default="dsolo-sk-demo",
                    help="output folder (default: dsolo-sk-demo)")
    dm.add_argument("--scenes", type=int, default=8,
                    help="generated scenes of the ablation, 1 to 1000 "
                         "(default: 8)")
    _weights_parser(sub)
    return parser


def _weights_parser(sub):
    from .features.weights import DEFAULT_CLIP, DEFAULT_SD

    wt = sub.add_parser(
        "weights", help="download, check and locate the model weights",
        description="The pretrained weights the extractors read, in the "
                    "Hugging Face cache: download them, check a cache "
                    "offline, print the folder to copy to a machine "
                    "without network access.")
    wsub = wt.add_subparsers(dest="weights_command", required=True,
                             metavar="{download,check,path}")

    def models(p, verb):
        p.add_argument("--clip", metavar="MODEL:TAG", default=None,
                       help=f"open_clip model and pretrained tag to {verb}, "
                            f"or hf-hub:org/name (default: {DEFAULT_CLIP})")
        p.add_argument("--sd", metavar="REPO@REV", default=None,
                       help=f"Stable Diffusion repository to {verb}, with "
                            f"an optional @revision (default: {DEFAULT_SD} "
                            "at its pinned commit)")
        p.add_argument("--variant", default=None,
                       help="diffusers weights variant, e.g. fp16")
        p.add_argument("--cache", metavar="DIR", default=None,
                       help="Hugging Face cache folder (default: "
                            "HF_HUB_CACHE, ~/.cache/huggingface/hub)")

    dl = wsub.add_parser(
        "download", help="download the weights the extractors read",
        description="Download exactly the files the extractors read into "
                    "the Hugging Face cache (both defaults unless --clip "
                    "or --sd names one); files already there are kept.")
    models(dl, "download")
    dl.add_argument("--no-progress", action="store_true")
    ck = wsub.add_parser(
        "check", help="say offline whether the cache holds the weights",
        description="Read the cache only (no network, no torch): for each "
                    "model, present / incomplete / missing, the snapshot "
                    "folder, the revision, the files' sizes. Exit status "
                    "1 when a model is missing or incomplete.")
    models(ck, "check")
    ck.add_argument("--checksums", action="store_true",
                    help="also hash every file (about a second per GB)")
    ph = wsub.add_parser(
        "path", help="print the cache folder to copy to an offline machine",
        description="Print the Hugging Face cache folder the weights are "
                    "read from.")
    ph.add_argument("--cache", metavar="DIR", default=None,
                    help="Hugging Face cache folder (default: HF_HUB_CACHE)")


def _templates(arg):
    from . import _io

    if arg == "imagenet":
        return "imagenet"
    if not os.path.lexists(arg):
        raise FileNotFoundError(
            f"--templates {arg!r} is neither 'imagenet' nor a file.")
    text = _io.read_text(arg, "a template file (UTF-8 text, one template "
                         "holding '{}' per line)")
    return [line for line in text.splitlines() if line.strip()]


def _discrepancy(args):
    """The discrepancy of ``--tau`` or ``--epsilon``, checked; else None."""
    from .discrepancy import TransportPath, TransportVelocity

    options = (("--tau", "tau", "velocity", TransportVelocity),
               ("--epsilon", "epsilon", "path", TransportPath))
    disc = None
    for option, name, mode, cls in options:
        value = getattr(args, name, None)
        if value is None:
            continue
        if args.mode != mode:
            raise ValueError(
                f"{option} sets {cls.__name__}({name}=...), the discrepancy "
                f"of --mode {mode}; got --mode {args.mode}: pass "
                f"--mode {mode} or leave {option} out."
            )
        disc = cls(**{name: value})
        try:
            disc._validate_params()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{option}: {exc}") from None
    return disc


def _batch_size(args):
    """``--batch-size`` (1 when the command has none), checked as
    :class:`~dsolo_sk.DirectSegmenter` checks `batch_size`."""
    from numbers import Integral

    from ._validation import check_scalar

    return check_scalar(getattr(args, "batch_size", 1), "--batch-size",
                        target_type=Integral, min_val=1, max_val=4096,
                        unit="images")


def build_segmenter(args, *, short_side=336):
    """The segmenter described by the parsed model options."""
    from .features import CLIPFeatures
    from .features._cache import check_device_dtype
    from .segmenters import DirectSegmenter

    # a wrong --device fails here, naming the option, before any model loads
    check_device_dtype(args.device, args.dtype, names=("--device", "--dtype"))
    discrepancy = _discrepancy(args)
    batch_size = _batch_size(args)

    pretrained = None if args.pretrained.lower() == "none" else \
        args.pretrained
    clip = CLIPFeatures(args.model, pretrained, short_side=short_side,
                        templates=_templates(args.templates),
                        device=args.device, dtype=args.dtype)
    affinity = None
    if args.mode in ("path", "velocity"):
        if args.affinity == "color":
            from .features import ColorPositionAffinity

            affinity = ColorPositionAffinity()
        else:
            from .features import DiffusionAttention

            kw = {} if args.sd_model is None else {"model": args.sd_model}
            affinity = DiffusionAttention(device=args.device,
                                          dtype=args.dtype, **kw)
    # everything the models need, reported at once before any loads
    from .features.weights import require_weights

    require_weights(clip, affinity)
    return DirectSegmenter(mode=args.mode, extractor=clip, affinity=affinity,
                           discrepancy=discrepancy, batch_size=batch_size,
                           progress=False)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _evaluate(args):
    from . import _io
    from .datasets import load_dataset
    from .evaluation import evaluate
    from .protocols import get_protocol

    _io.check_output_folder(args.out, "--out")
    if args.dask and not args.scheduler:
        from .distributed import _check_workers

        _check_workers(args.workers, "--workers")
    dataset = load_dataset(args.dataset, args.root, split=args.split)
    overrides = {} if args.short_side is None else {
        "short_side": args.short_side}
    protocol = get_protocol(args.dataset, args.setting, **overrides)
    segmenter = build_segmenter(args, short_side=protocol.short_side)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.dask or args.scheduler:
            from .distributed import evaluate_distributed

            result = evaluate_distributed(
                segmenter, dataset, protocol=protocol, out=args.out,
                limit=args.limit, progress=not args.no_progress,
                address=args.scheduler, n_workers=args.workers)
        else:
            result = evaluate(segmenter, dataset, protocol=protocol,
                              out=args.out, limit=args.limit,
                              progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{args.dataset} ({args.setting}, {len(result.ids)} images): "
          f"mIoU {100 * result.miou:.2f}")
    print(f"results: {os.path.join(args.out, 'results.json')}")
    return 0


def _stems(paths):
    seen, out = {}, []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        out.append(stem if k == 0 else f"{stem}_{k}")
    return out


def save_label_png(path, labels, n_classes):
    """Write a label map as a PNG whose pixel values are the class indices.

    A palette PNG (the classes in :func:`~dsolo_sk.plot.label_palette`'s
    colours) for up to 256 classes, what a palette holds; a 16-bit
    greyscale PNG for more (up to 65536).
    """
    import numpy as np
    from PIL import Image

    from .plot import label_palette

    if n_classes > 2 ** 16:
        raise ValueError(
            f"a PNG label map holds at most {2 ** 16} classes, got "
            f"{n_classes}."
        )
    if n_classes > 256:
        Image.fromarray(np.asarray(labels).astype(np.uint16)).save(path)
        return
    im = Image.fromarray(np.asarray(labels).astype(np.uint8))
    im.putpalette(label_palette(n_classes).ravel().tolist())
    im.save(path)


def save_overlay_png(path, image, labels, class_names, *, alpha=0.45):
    """Write the image with the labels in colour and a legend: every
    class, class 0 included, in a visible colour (:mod:`dsolo_sk.plot`)."""
    from .plot import save_overlay

    save_overlay(path, image, labels, class_names, alpha=alpha)


def _netcdf_engine():
    """NetCDF4 through h5netcdf when h5py is there, else NetCDF3 (scipy)."""
    import importlib.util

    if importlib.util.find_spec("h5py") and importlib.util.find_spec(
            "h5netcdf"):
        return "h5netcdf"
    return "scipy"


def _segment(args):
    from . import _io
    from .datasets import load_class_names, read_image, split_synonyms

    _io.check_output_folder(args.out, "--out")
    if args.classes_file:
        classes = load_class_names(args.classes_file)
    else:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    names = [split_synonyms(c)[0] for c in classes]
    images = [read_image(p) for p in args.images]  # fail early, name file
    segmenter = build_segmenter(args, short_side=args.short_side)
    from tqdm.auto import tqdm

    items = list(zip(args.images, _stems(args.images), images))
    step = segmenter.batch_size
    with tqdm(total=len(items), desc="segment", unit="image",
              disable=True if args.no_progress else None) as bar:
        for start in range(0, len(items), step):
            # one call per chunk: the images of one size in it go through
            # the models together (DirectSegmenter(batch_size=...))
            chunk = items[start:start + step]
            all_scores = segmenter.decision_function(
                [im for _, _, im in chunk], classes=classes)
            for (path, stem, image), scores in zip(chunk, all_scores):
                _write_segmentation(args, path, stem, image, scores,
                                    classes, names)
            bar.update(len(chunk))
    return 0


def _write_segmentation(args, path, stem, image, scores, classes, names):
    """The outputs of ``segment`` for one image, and its line."""
    labels = scores.values.argmax(0)
    os.makedirs(args.out, exist_ok=True)
    save_label_png(os.path.join(args.out, f"{stem}_labels.png"), labels,
                   len(classes))
    save_overlay_png(os.path.join(args.out, f"{stem}_overlay.png"),
                     image, labels, names)
    if args.netcdf:
        da = scores.assign_coords({"class": list(classes)})
        da.attrs.update(source=os.path.abspath(path),
                        mode=args.mode, model=str(args.model))
        da.to_netcdf(os.path.join(args.out, f"{stem}_scores.nc"),
                     engine=_netcdf_engine())
    print(f"{path}: {', '.join(names[k] for k in sorted(set(labels.ravel().tolist())))}")


def _print_table(header, rows, right=()):
    """Print rows of strings in columns as wide as their longest cell;
    the columns whose index is in `right` are right-aligned."""
    widths = [max(len(str(r[k])) for r in [header, *rows])
              for k in range(len(header))]
    for r in [header, *rows]:
        print(" ".join(str(c).rjust(w) if k in right else str(c).ljust(w)
                       for k, (c, w) in enumerate(zip(r, widths))).rstrip())


def _protocols(args):
    from .protocols import PROTOCOLS, SETTING_ALIASES, SETTINGS, SOURCES

    def fmt(value):
        return "-" if value is None else f"{value:g}"

    wanted = SETTING_ALIASES.get(args.setting, args.setting)
    rows = []
    for name in sorted({d for d, _ in PROTOCOLS}):
        if args.dataset not in (None, name):
            continue
        for setting in SETTINGS:
            if wanted not in (None, setting):
                continue
            p = PROTOCOLS[name, setting]
            inf = p.inference if p.inference == "whole" else \
                f"slide {p.slide_crop}/{p.slide_stride}"
            rows.append((name, setting, p.short_side, p.n_classes, inf,
                         fmt(p.logit_scale), fmt(p.prob_threshold),
                         fmt(p.area_threshold), p.reduce_zero_label))
    _print_table(("dataset", "setting", "short", "classes", "inference",
                  "scale", "prob_thd", "area_thd", "reduce0"), rows,
                 right=(2, 3, 5, 6, 7, 8))
    if args.sources:
        for setting in SETTINGS:
            if wanted not in (None, setting):
                continue
            method, source, note = SOURCES[setting]
            print(f"\n{setting}: {method}\n  source: {source}"
                  + (f"\n  note: {note}" if note else ""))
    return 0


def _demo(args):
    from . import _io
    from ._demo import run_demo
    from .datasets._synthetic import _check_n_scenes

    _check_n_scenes(args.scenes, "--scenes")
    _io.check_output_folder(args.out, "--out")
    result = run_demo(args.out, n_scenes=args.scenes)
    print(f"{len(result['overlays'])} overlays in {args.out}")
    return 0


def _weights_models(args):
    """(clip, sd) of --clip / --sd: both defaults when neither is given."""
    from .features.weights import DEFAULT_CLIP, DEFAULT_SD

    if args.clip is None and args.sd is None:
        return DEFAULT_CLIP, DEFAULT_SD
    return args.clip, args.sd


def _print_weights(records):
    from .features.weights import _size

    rows = []
    for r in records:
        revision = r.revision or "main"
        if r.commit and r.commit != revision:
            revision = f"{revision} ({r.commit[:10]})"
        rows.append((r.model, r.repo, r.status, revision, _size(r.size)))
    _print_table(("model", "repo", "status", "revision", "size"), rows,
                 right=(4,))
    for r in records:
        if r.path:
            print(f"{r.model}: {r.path}")
        if r.status == "missing":
            print(f"{r.model}: not in the cache")
            continue
        for name in r.missing:
            print(f"{r.model}: missing {name}")
        for line in r.damaged:
            print(f"{r.model}: damaged {line}")


def _weights(args):
    import time

    from .features import weights

    if args.weights_command == "path":
        print(weights.weights_folder(args.cache))
        return 0
    clip, sd = _weights_models(args)
    if args.weights_command == "download":
        if args.cache is not None:
            from . import _io

            _io.check_output_folder(args.cache, "--cache")
        records = weights.download_weights(
            clip, sd, cache_dir=args.cache, variant=args.variant,
            progress=not args.no_progress)
        _print_weights(records)
        print(f"in {weights.weights_folder(args.cache)}")
        return 0
    started = time.perf_counter()
    records = weights.check_weights(clip, sd, cache_dir=args.cache,
                                     variant=args.variant,
                                     checksums=args.checksums)
    seconds = time.perf_counter() - started
    _print_weights(records)
    bad = [r for r in records if not r.ok]
    print(f"checked offline in {seconds:.2f} s (cache "
          f"{weights.weights_folder(args.cache)}"
          + (", checksums" if args.checksums else "") + ")")
    if bad:
        print(f"{len(bad)} of {len(records)} not complete: run `dsolo-sk "
              "weights download` on a machine with network access, then "
              "copy the folder `dsolo-sk weights path` prints.")
        return 1
    return 0


def _has_files(folder):
    return any(files for _, _, files in os.walk(folder))


@contextlib.contextmanager
def _output_folder(path, results=""):
    """Remove the output folder `path` after a failure if this command
    created it and wrote no result under ``path/results`` (a rerun of an
    evaluation keeps a folder it did not create, and any results)."""
    existed = path is None or os.path.exists(path)
    try:
        yield
    except BaseException:
        if not existed and os.path.isdir(path) and not _has_files(
                os.path.join(path, results)):
            shutil.rmtree(path, ignore_errors=True)
        raise


def main(argv=None):
    """Entry point of ``dsolo-sk``; returns the exit status.

    Errors the user can fix (missing files, wrong layouts, bad values) are
    printed as one line, ``dsolo-sk: error: ...``, with exit status 1.

    Examples
    --------
    >>> from dsolo_sk.cli import main
    >>> main(["protocols", "--dataset", "voc21"])  # doctest: +ELLIPSIS
    dataset      setting   short classes inference       scale prob_thd area_thd reduce0
    voc21        paper       336      21 whole              40      0.1        -   False
    voc21        sclip       336      21 slide 224/112      65      0.1      0.1   False
    ...
    0
    """
    args = build_parser().parse_args(argv)
    from .features._cache import MissingPackageError, WeightsUnavailableError

    commands = {"evaluate": _evaluate, "segment": _segment,
                "protocols": _protocols, "demo": _demo, "weights": _weights}
    try:
        if args.command not in ("protocols", "weights"):
            from ._threads import configure_torch_threads

            configure_torch_threads()
        with _output_folder(getattr(args, "out", None),
                            "per_image" if args.command == "evaluate" else ""):
            return commands[args.command](args)
    except (FileNotFoundError, WeightsUnavailableError, MissingPackageError,
            ValueError, TypeError) as exc:
        print(f"dsolo-sk: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dsolo-sk: interrupted; rerun the same command to resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
