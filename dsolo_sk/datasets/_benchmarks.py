"""Readers for the standard semantic-segmentation benchmarks, in their layouts.

Each reader indexes a split once (file names only) and reads an image and
its mask from disk when asked: no dataset is held in memory. Masks come out
in the evaluation label space: class indices ``0 .. n_classes - 1`` and
255 for pixels to ignore, after ``reduce_zero_label`` where the protocol
asks for it (label 0 becomes 255, the others move down by one).
"""

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .. import _io
from .._validation import IGNORE_INDEX
from ._classnames import display_name, load_class_names

__all__ = ["Sample", "SegmentationDataset", "VOC21", "VOC20", "Context60",
           "Context59", "COCOStuff", "COCOObject", "Cityscapes", "ADE20K",
           "DATASETS", "load_dataset"]


class Sample(NamedTuple):
    """One benchmark sample.

    Attributes
    ----------
    id : str
        The sample's name in its split (for Cityscapes ``"city/name"``).
    image : ndarray of shape (H, W, 3), uint8
        RGB image.
    mask : ndarray of shape (H, W), uint8
        Class indices, 255 where the pixel is ignored.

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import load_dataset, write_fake_dataset
    >>> ds = load_dataset("voc21", write_fake_dataset("voc21", tempfile.mkdtemp()))
    >>> sample = ds[0]
    >>> type(sample).__name__, sample.id == ds.ids[0]
    ('Sample', True)
    >>> sample_id, image, mask = sample
    >>> image.shape[:2] == mask.shape, image.dtype, mask.dtype
    (True, dtype('uint8'), dtype('uint8'))
    """

    id: str
    image: np.ndarray
    mask: np.ndarray


_MASK_MODES = {"P", "L", "I", "I;16", "I;16L", "I;16B", "1"}


def read_image(path):
    """Read an image file as an (H, W, 3) uint8 RGB array, as displayed.

    The EXIF orientation tag is applied (a photo taken with the camera
    turned comes out upright, as OpenCV's ``imread`` gives it to the
    field's evaluation code); other PIL modes are converted as described
    in :mod:`dsolo_sk.features` (16-bit grayscale scaled to 8 bits, alpha
    dropped, palettes expanded).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    dsolo_sk.exceptions.UnreadableFileError
        If the file cannot be decoded (corrupt, truncated, not an image, or
        more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``, a possible
        decompression bomb); the message names the file. It is a
        :class:`ValueError`.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from dsolo_sk.datasets import read_image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.fromarray(np.zeros((4, 6), np.uint8)).save(path)
    >>> read_image(path).shape
    (4, 6, 3)
    """
    from ..features._images import to_rgb_uint8

    return to_rgb_uint8(_io.as_path(path), name="image")


def read_label_map(path):
    """Read a single-channel label map (palette or grayscale PNG).

    Palette images give their palette indices, which is how Pascal VOC
    stores class labels. The pixels are read as stored: the EXIF
    orientation of a mask is not applied (the field's evaluation code
    reads annotations unchanged).

    Returns
    -------
    ndarray of shape (H, W), integer

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    dsolo_sk.exceptions.UnreadableFileError
        If it cannot be decoded or holds colours instead of labels (a
        :class:`ValueError`); the message names the file.

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import (load_dataset, read_label_map,
    ...                                write_fake_dataset)
    >>> ds = load_dataset("voc21", write_fake_dataset("voc21", tempfile.mkdtemp()))
    >>> labels = read_label_map(ds.mask_path(0))
    >>> labels.ndim, labels.dtype
    (2, dtype('uint8'))
    """
    path = _io.as_path(path)
    expected = "a mask (a single-channel label map)"
    im = _io.open_image(path, expected, exif_transpose=False)
    mode = im.mode
    with _io.reading(path, expected):
        arr = np.asarray(im.convert("L") if mode == "1" else im)
    if mode not in _MASK_MODES or arr.ndim != 2:
        raise _io.UnreadableFileError(
            path, expected, f"it is a {mode} image of shape {arr.shape}, "
            "not a single-channel label map of class indices",
            hint="save the class indices as a palette or grayscale PNG; a "
            "colour-coded mask must be converted to class indices first")
    if mode == "1":
        arr = (arr > 0).astype(np.uint8)
    return arr


def _read_split_file(path):
    """The sample ids of a split file, one per line; duplicates refused."""
    expected = "a split file (one image id per line)"
    text = _io.read_text(path, expected)
    ids, first = [], {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        sid = line.strip()
        if not sid:
            continue
        if sid in first:
            raise _io.UnreadableFileError(
                path, expected, f"it lists the image {sid!r} twice (lines "
                f"{first[sid]} and {lineno}), which would count it twice",
                hint="remove the repeated line")
        first[sid] = lineno
        ids.append(sid)
    return ids


class SegmentationDataset(Sequence):
    """Base class of the benchmark readers: a lazy sequence of samples.

    Subclasses set the layout as class attributes. ``dataset[i]`` reads
    sample ``i`` from disk and returns a :class:`Sample`.

    Parameters
    ----------
    root : str or path-like
        The dataset folder, or a folder above it in the usual layout (for
        example the folder holding ``VOCdevkit``).
    split : str, default="val"
        Which split to read.

    Attributes
    ----------
    root : str
        The resolved dataset folder.
    ids : list of str
        Sample names in order.
    classes : list of str
        The class names handed to a segmenter, one per class, synonyms
        joined by ``", "``.
    class_names : list of str
        Short names for tables (first synonym, ``"background"`` for a
        background line of stuff names).

    Examples
    --------
    The readers of :data:`DATASETS` are its subclasses:

    >>> import tempfile
    >>> from dsolo_sk.datasets import (ADE20K, SegmentationDataset,
    ...                                write_fake_dataset)
    >>> ds = ADE20K(write_fake_dataset("ade20k", tempfile.mkdtemp(), n_images=3))
    >>> isinstance(ds, SegmentationDataset), len(ds), ds.n_classes
    (True, 3, 150)
    >>> [sample.image.shape[2] for sample in ds]
    [3, 3, 3]
    """

    #: Key of the dataset (and of its protocol and class file).
    name = None
    #: Number of evaluated classes.
    n_classes = None
    #: Whether raw label 0 is dropped (0 -> 255, k -> k - 1).
    reduce_zero_label = False
    #: Whether the first class stands for background.
    has_background = False
    #: Whether the first class line lists stuff names standing for
    #: background (VOC21, COCO-Object).
    background_line = False
    #: Candidate sub-folders of ``root`` that may hold the dataset.
    root_candidates = ("",)
    #: Folder (relative to the dataset folder) of the images, ``{split}``
    #: replaced by the split's folder name.
    image_dir = None
    mask_dir = None
    image_suffix = ".jpg"
    mask_suffix = ".png"
    #: Split list file (relative), or None to list the image folder.
    split_file = None
    #: split name -> folder name used in ``image_dir`` / ``mask_dir``.
    split_dirs = {}
    #: Whether images lie one folder deeper (Cityscapes cities).
    nested = False
    #: Expected layout, shown in error messages.
    layout = ""
    #: How to create missing masks, shown in error messages.
    mask_hint = ""
    #: Number of images of the standard validation split.
    n_val_images = None

    def __init__(self, root, split="val"):
        if not isinstance(split, str):
            raise TypeError(f"split must be a str, got {split!r}.")
        self.split = split
        self.root = self._resolve_root(root)
        self.ids = self._index()
        if not self.ids:
            raise ValueError(
                f"{self.name}: the {split!r} split of {self.root!r} holds no "
                f"images; expected layout:\n{self.layout}"
            )
        self.classes = load_class_names(self.name)
        if len(self.classes) != self.n_classes:  # pragma: no cover
            raise RuntimeError(
                f"the class file of {self.name} has {len(self.classes)} "
                f"classes, expected {self.n_classes}."
            )
        self.class_names = [
            display_name(c, background=self.background_line and k == 0)
            for k, c in enumerate(self.classes)]

    # -- layout -----------------------------------------------------------
    def _split_dir(self):
        return self.split_dirs.get(self.split, self.split)

    def _dir(self, template):
        return os.path.join(self.root, template.format(split=self._split_dir()))

    def _resolve_root(self, root):
        root = os.path.abspath(_io.as_path(root, "root"))
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"{self.name}: dataset folder {root!r} does not exist; pass "
                "the folder holding the dataset, laid out as\n"
                f"{self.layout}"
            )
        marker = self.image_dir.split("/")[0]
        tried = []
        for sub in self.root_candidates:
            cand = os.path.join(root, sub) if sub else root
            tried.append(os.path.join(cand, marker))
            if os.path.isdir(os.path.join(cand, marker)):
                return cand
        raise FileNotFoundError(
            f"{self.name}: {root!r} does not hold the dataset: none of "
            f"{tried} exists. Expected layout:\n{self.layout}"
        )

    def _index(self):
        image_dir, mask_dir = self._dir(self.image_dir), self._dir(
            self.mask_dir)
        for d, what in ((image_dir, "image"), (mask_dir, "annotation")):
            if not os.path.isdir(d):
                raise FileNotFoundError(
                    f"{self.name}: {what} folder {d!r} does not exist "
                    f"(split {self.split!r}). Expected layout:\n{self.layout}"
                    + (f"\n{self.mask_hint}" if what == "annotation"
                       and self.mask_hint else "")
                )
        if self.split_file is not None:
            split_path = self._dir(self.split_file.format(split=self.split))
            if not os.path.isfile(split_path):
                folder = os.path.dirname(split_path)
                have = (sorted(f[:-4] for f in os.listdir(folder)
                               if f.endswith(".txt"))
                        if os.path.isdir(folder) else [])
                raise FileNotFoundError(
                    f"{self.name}: split file {split_path!r} does not exist; "
                    f"splits found: {have}. Expected layout:\n{self.layout}"
                )
            ids = _read_split_file(split_path)
            images = set(os.listdir(image_dir))
            missing = [i for i in ids if i + self.image_suffix not in images]
            if missing:
                raise FileNotFoundError(
                    f"{self.name}: {len(missing)} image(s) listed in "
                    f"{split_path!r} are missing, for example "
                    f"{os.path.join(image_dir, missing[0] + self.image_suffix)!r}."
                )
        else:
            ids = self._list_ids(image_dir, self.image_suffix)
        masks = set(self._list_ids(mask_dir, self.mask_suffix))
        missing = [i for i in ids if i not in masks]
        if missing:
            raise FileNotFoundError(
                f"{self.name}: {len(missing)} of {len(ids)} images have no "
                "mask, for example "
                f"{os.path.join(mask_dir, missing[0] + self.mask_suffix)!r}."
                + (f"\n{self.mask_hint}" if self.mask_hint else "")
            )
        return ids

    def _list_ids(self, folder, suffix):
        ids = []
        if self.nested:
            for sub in sorted(os.listdir(folder)):
                d = os.path.join(folder, sub)
                if os.path.isdir(d):
                    ids += [f"{sub}/{f[:-len(suffix)]}"
                            for f in sorted(os.listdir(d))
                            if f.endswith(suffix)]
        else:
            ids = [f[:-len(suffix)] for f in sorted(os.listdir(folder))
                   if f.endswith(suffix)]
        return ids

    # -- access -----------------------------------------------------------
    def __len__(self):
        return len(self.ids)

    def _check_index(self, index):
        if isinstance(index, (bool, np.bool_)) or not isinstance(
                index, (int, np.integer)):
            raise TypeError(
                f"dataset indices must be integers, got {index!r}.")
        n = len(self.ids)
        if not -n <= index < n:
            raise IndexError(
                f"index {index} out of range for {n} samples.")
        return int(index) % n

    def image_path(self, index):
        """Path of the image of sample `index`."""
        i = self._check_index(index)
        return os.path.join(self._dir(self.image_dir),
                            self.ids[i] + self.image_suffix)

    def mask_path(self, index):
        """Path of the mask of sample `index`."""
        i = self._check_index(index)
        return os.path.join(self._dir(self.mask_dir),
                            self.ids[i] + self.mask_suffix)

    def load_image(self, index):
        """Read the (H, W, 3) uint8 RGB image of sample `index`."""
        return read_image(self.image_path(index))

    def load_mask(self, index):
        """Read the mask of sample `index` in the evaluation label space.

        Returns
        -------
        ndarray of shape (H, W), uint8
            Class indices in ``[0, n_classes)``, 255 for ignored pixels.

        Raises
        ------
        ValueError
            If the mask holds labels outside the dataset's range; the
            message names the file and the labels.
        """
        path = self.mask_path(index)
        raw = read_label_map(path)
        n_raw = self.n_classes + int(self.reduce_zero_label)
        bad = (raw != IGNORE_INDEX) & ((raw < 0) | (raw >= n_raw))
        if bad.any():
            vals = np.unique(raw[bad])[:10].tolist()
            raise ValueError(
                f"mask {path!r} holds labels {vals} that {self.name} does not "
                f"use (valid: 0..{n_raw - 1} and {IGNORE_INDEX} for ignored "
                "pixels). Is it the right annotation file"
                + (f"? {self.mask_hint}" if self.mask_hint else "?")
            )
        mask = raw.astype(np.int64)
        if self.reduce_zero_label:
            ignored = (mask == 0) | (mask == IGNORE_INDEX)
            mask = mask - 1
            mask[ignored] = IGNORE_INDEX
        return mask.astype(np.uint8)

    def __getitem__(self, index):
        i = self._check_index(index)
        image, mask = self.load_image(i), self.load_mask(i)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"mask {self.mask_path(i)!r} has shape {mask.shape} but its "
                f"image {self.image_path(i)!r} is {image.shape[:2]}; masks "
                "must have the image's height and width."
            )
        return Sample(self.ids[i], image, mask)

    def __repr__(self):
        return (f"{type(self).__name__}(root={self.root!r}, "
                f"split={self.split!r}) with {len(self)} images, "
                f"{self.n_classes} classes")

    def load(self, indices=None):
        """Read samples into lists, the input form of the estimators.

        Parameters
        ----------
        indices : sequence of int, optional
            Which samples; all by default (mind the memory).

        Returns
        -------
        images : list of ndarray of shape (H, W, 3)
        masks : list of ndarray of shape (H, W)
        """
        indices = range(len(self)) if indices is None else indices
        samples = [self[i] for i in indices]
        return [s.image for s in samples], [s.mask for s in samples]


_VOC_LAYOUT = """\
    {root}/VOCdevkit/VOC2012/      (or {root} itself)
        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png          palette PNG, 0 = background,
                                            1..20 = objects, 255 = ignore
        ImageSets/Segmentation/val.txt      one <id> per line"""

_CONTEXT_LAYOUT = """\
    {root}/VOCdevkit/VOC2010/      (or {root} itself)
        JPEGImages/<id>.jpg
        SegmentationClassContext/<id>.png   0 = background, 1..59 = classes
        ImageSets/SegmentationContext/val.txt"""

_COCO_LAYOUT = """\
    {root}/coco_stuff164k/         (or {root} itself)
        images/val2017/<id>.jpg
        annotations/val2017/<id>%s"""

_CITYSCAPES_LAYOUT = """\
    {root}/cityscapes/             (or {root} itself)
        leftImg8bit/val/<city>/<id>_leftImg8bit.png
        gtFine/val/<city>/<id>_gtFine_labelTrainIds.png   0..18, 255 = ignore"""

_ADE_LAYOUT = """\
    {root}/ADEChallengeData2016/   (or {root} itself)
        images/validation/<id>.jpg
        annotations/validation/<id>.png     0 = other (ignored), 1..150"""


class _VOCBase(SegmentationDataset):
    root_candidates = ("", "VOCdevkit/VOC2012", "VOC2012")
    image_dir = "JPEGImages"
    mask_dir = "SegmentationClass"
    split_file = "ImageSets/Segmentation/{split}.txt"
    layout = _VOC_LAYOUT
    n_val_images = 1449


class VOC21(_VOCBase):
    """Pascal VOC 2012, 20 objects and background (21 classes).

    Background is class 0; the segmenter sees it as the stuff names of the
    first class line (sky, wall, tree, ...), the max over them scoring it.

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import VOC21, write_fake_dataset
    >>> root = write_fake_dataset("voc21", tempfile.mkdtemp(), n_images=2)
    >>> ds = VOC21(root)
    >>> len(ds), ds.class_names[:2]
    (2, ['background', 'aeroplane'])
    >>> sample = ds[0]
    >>> sample.image.shape[2], sample.mask.dtype
    (3, dtype('uint8'))
    """

    name = "voc21"
    n_classes = 21
    has_background = True
    background_line = True


class VOC20(_VOCBase):
    """Pascal VOC 2012 without background (20 classes, zero label reduced).

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import VOC20, write_fake_dataset
    >>> ds = VOC20(write_fake_dataset("voc20", tempfile.mkdtemp()))
    >>> ds.n_classes, ds.reduce_zero_label
    (20, True)
    """

    name = "voc20"
    n_classes = 20
    reduce_zero_label = True


class _ContextBase(SegmentationDataset):
    root_candidates = ("", "VOCdevkit/VOC2010", "VOC2010")
    image_dir = "JPEGImages"
    mask_dir = "SegmentationClassContext"
    split_file = "ImageSets/SegmentationContext/{split}.txt"
    layout = _CONTEXT_LAYOUT
    mask_hint = ("Create SegmentationClassContext/ from the Pascal Context "
                 "annotations (trainval_merged.json) with mmsegmentation's "
                 "tools/dataset_converters/pascal_context.py.")
    n_val_images = 5105


class Context60(_ContextBase):
    """Pascal Context with background (60 classes).

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import Context60, write_fake_dataset
    >>> Context60(write_fake_dataset("context60", tempfile.mkdtemp())).n_classes
    60
    """

    name = "context60"
    n_classes = 60
    has_background = True


class Context59(_ContextBase):
    """Pascal Context without background (59 classes, zero label reduced).

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import Context59, write_fake_dataset
    >>> Context59(write_fake_dataset("context59", tempfile.mkdtemp())).n_classes
    59
    """

    name = "context59"
    n_classes = 59
    reduce_zero_label = True


class _COCOBase(SegmentationDataset):
    root_candidates = ("", "coco_stuff164k", "coco")
    image_dir = "images/{split}"
    mask_dir = "annotations/{split}"
    split_dirs = {"val": "val2017", "train": "train2017"}
    n_val_images = 5000


class COCOStuff(_COCOBase):
    """COCO-Stuff 164k, 171 classes (``*_labelTrainIds.png`` masks).

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import COCOStuff, write_fake_dataset
    >>> COCOStuff(write_fake_dataset("coco_stuff", tempfile.mkdtemp())).n_classes
    171
    """

    name = "coco_stuff"
    n_classes = 171
    mask_suffix = "_labelTrainIds.png"
    layout = _COCO_LAYOUT % "_labelTrainIds.png     0..170, 255 = ignore"
    mask_hint = ("Create the *_labelTrainIds.png masks from the COCO-Stuff "
                 "stuffthingmaps with mmsegmentation's "
                 "tools/dataset_converters/coco_stuff164k.py.")


class COCOObject(_COCOBase):
    """COCO-Object, background and the 80 things (``*_instanceTrainIds.png``).

    Background is class 0; the segmenter sees it as the stuff names of the
    first class line.

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import COCOObject, write_fake_dataset
    >>> ds = COCOObject(write_fake_dataset("coco_object", tempfile.mkdtemp()))
    >>> ds.n_classes, ds.class_names[:2]
    (81, ['background', 'person'])
    """

    name = "coco_object"
    n_classes = 81
    has_background = True
    background_line = True
    mask_suffix = "_instanceTrainIds.png"
    layout = _COCO_LAYOUT % ("_instanceTrainIds.png  0 = background, "
                             "1..80 = things, 255 = ignore")
    mask_hint = ("Create the *_instanceTrainIds.png masks from the COCO "
                 "instance annotations with the cvt_coco_object.py script "
                 "of SCLIP/NACLIP (background 0, things 1..80).")


class Cityscapes(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes (``gtFine_labelTrainIds``).

    Sample ids are ``"<city>/<name>"``.

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import Cityscapes, write_fake_dataset
    >>> ds = Cityscapes(write_fake_dataset("cityscapes", tempfile.mkdtemp()))
    >>> ds.ids[0].split("/")[0]
    'frankfurt'
    """

    name = "cityscapes"
    n_classes = 19
    root_candidates = ("", "cityscapes")
    image_dir = "leftImg8bit/{split}"
    mask_dir = "gtFine/{split}"
    image_suffix = "_leftImg8bit.png"
    mask_suffix = "_gtFine_labelTrainIds.png"
    nested = True
    layout = _CITYSCAPES_LAYOUT
    mask_hint = ("Create the *_gtFine_labelTrainIds.png masks from the "
                 "polygons with cityscapesscripts' createTrainIdLabelImgs "
                 "(or mmsegmentation's tools/dataset_converters/"
                 "cityscapes.py).")
    n_val_images = 500


class ADE20K(SegmentationDataset):
    """ADE20K (SceneParsing, ``ADEChallengeData2016``), 150 classes.

    Label 0 ("other") is ignored and the others move down by one.

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import ADE20K, write_fake_dataset
    >>> ds = ADE20K(write_fake_dataset("ade20k", tempfile.mkdtemp()))
    >>> ds.n_classes, ds.reduce_zero_label, ds.class_names[0]
    (150, True, 'wall')
    """

    name = "ade20k"
    n_classes = 150
    reduce_zero_label = True
    root_candidates = ("", "ADEChallengeData2016", "ade/ADEChallengeData2016")
    image_dir = "images/{split}"
    mask_dir = "annotations/{split}"
    split_dirs = {"val": "validation", "train": "training"}
    layout = _ADE_LAYOUT
    n_val_images = 2000


#: Dataset key -> reader class.
DATASETS = {cls.name: cls for cls in (VOC21, VOC20, Context60, Context59,
                                      COCOStuff, COCOObject, Cityscapes,
                                      ADE20K)}


def load_dataset(name, root, split="val"):
    """Open a benchmark by its key.

    Parameters
    ----------
    name : str
        One of ``"voc21"``, ``"voc20"``, ``"context60"``, ``"context59"``,
        ``"coco_stuff"``, ``"coco_object"``, ``"cityscapes"``, ``"ade20k"``.
    root : str or path-like
        The dataset folder or a folder above it.
    split : str, default="val"

    Returns
    -------
    SegmentationDataset

    Examples
    --------
    >>> import tempfile
    >>> from dsolo_sk.datasets import load_dataset, write_fake_dataset
    >>> root = write_fake_dataset("ade20k", tempfile.mkdtemp(), n_images=3)
    >>> len(load_dataset("ade20k", root))
    3
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    return DATASETS[name](root, split=split)
