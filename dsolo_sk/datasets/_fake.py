"""Tiny fake benchmarks written in the real layouts, for tests and examples."""

import os

import numpy as np
from PIL import Image

from .. import _io
from .._validation import IGNORE_INDEX, check_scalar

__all__ = ["write_fake_dataset"]


def _voc_palette():
    """The Pascal VOC colour map (bit-interleaved label colours)."""
    pal = np.zeros((256, 3), np.uint8)
    for k in range(256):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[k] = (r, g, b)
    return pal


def _scene(rng, shape, n_raw, ignore_zero):
    """A mask of a few rectangles and an image whose colours follow it."""
    h, w = shape
    lo = 1 if ignore_zero else 0
    labels = rng.choice(np.arange(lo, n_raw), size=min(3, n_raw - lo),
                        replace=False)
    mask = np.full((h, w), labels[0], np.uint8)
    for lab in labels[1:]:
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        mask[y0:y0 + h // 2, x0:x0 + w // 2] = lab
    mask[0, :] = IGNORE_INDEX  # a row of ignored pixels, as on VOC borders
    if ignore_zero:
        mask[-1, :] = 0  # raw label 0, dropped by reduce_zero_label
    colours = np.random.default_rng(7).integers(0, 256, (256, 3))
    image = colours[mask] + rng.integers(-12, 13, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_fake_dataset(name, root, *, n_images=2, size=(24, 32), seed=0,
                       split="val"):
    """Write a tiny fake benchmark in the real layout of dataset `name`.

    The masks are a few rectangles of random labels (in the raw label space
    of the dataset, with a row of ignored pixels) and the images follow
    them in colour, with noise. Image sizes vary by a few pixels.

    Parameters
    ----------
    name : str
        A dataset key of :data:`dsolo_sk.datasets.DATASETS`.
    root : str or path-like
        Folder to write into; the dataset goes where a user would keep it
        (``root/VOCdevkit/VOC2012``, ``root/ADEChallengeData2016``, ...).
    n_images : int in [1, 10000], default=2
    size : (int, int), default=(24, 32)
        Height and width of the first image, in pixels (4 to 4096).
    seed : int, default=0
    split : str, default="val"

    Returns
    -------
    root : str
        The folder to pass to the reader.

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import load_dataset, write_fake_dataset
    >>> root = write_fake_dataset("cityscapes", tempfile.mkdtemp(), n_images=3)
    >>> len(load_dataset("cityscapes", root))
    3
    """
    from ._benchmarks import DATASETS

    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    ints = (int, np.integer)
    check_scalar(n_images, "n_images", target_type=ints, min_val=1,
                 max_val=10000)
    try:
        height, width = size
    except (TypeError, ValueError):
        raise TypeError(
            f"size must be a pair (height, width), got {size!r}.") from None
    check_scalar(height, "size[0]", target_type=ints, min_val=4,
                 max_val=4096, unit="pixels")
    check_scalar(width, "size[1]", target_type=ints, min_val=4,
                 max_val=4096, unit="pixels")
    if not isinstance(split, str) or not split or os.sep in split \
            or split in (".", ".."):
        raise ValueError(
            f"split must be a folder name such as 'val', got {split!r}.")
    _io.check_output_folder(root, "root")
    cls = DATASETS[name]
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"seed must be a non-negative integer, got {seed!r} ({exc})."
        ) from None
    root = os.path.abspath(os.fspath(root))
    sub = cls.root_candidates[1] if len(cls.root_candidates) > 1 else ""
    base = os.path.join(root, sub)
    split_dir = cls.split_dirs.get(split, split)
    image_dir = os.path.join(base, cls.image_dir.format(split=split_dir))
    mask_dir = os.path.join(base, cls.mask_dir.format(split=split_dir))
    n_raw = cls.n_classes + int(cls.reduce_zero_label)
    ids = []
    for k in range(n_images):
        if cls.nested:
            city = ("frankfurt", "lindau", "munster")[k % 3]
            sid = f"{city}/{city}_{k:06d}_000019"
        else:
            sid = f"{2008 + k}_{k:06d}"
        ids.append(sid)
        shape = (int(height) + 2 * (k % 3), int(width) - 2 * (k % 2))
        image, mask = _scene(rng, shape, n_raw, cls.reduce_zero_label)
        for folder, suffix, arr in ((image_dir, cls.image_suffix, image),
                                    (mask_dir, cls.mask_suffix, mask)):
            path = os.path.join(folder, sid + suffix)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if arr.ndim == 2 and cls.split_file == \
                    "ImageSets/Segmentation/{split}.txt":
                im = Image.fromarray(arr)
                im.putpalette(_voc_palette().ravel().tolist())  # L -> P
            else:
                im = Image.fromarray(arr)
            im.save(path, quality=95) if suffix.endswith(".jpg") \
                else im.save(path)
    if cls.split_file is not None:
        split_path = os.path.join(base, cls.split_file.format(split=split))
        os.makedirs(os.path.dirname(split_path), exist_ok=True)
        with open(split_path, "w", encoding="utf-8") as f:
            f.write("\n".join(ids) + "\n")
    return root
