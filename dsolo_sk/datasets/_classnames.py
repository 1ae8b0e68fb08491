"""Class-name files: one class per line, synonyms separated by ``", "``.

The files shipped in ``dsolo_sk/datasets/classnames/`` hold the names the
field's training-free segmenters (SCLIP, NACLIP, ClearCLIP, ProxyCLIP, ...)
query CLIP with. A class is exposed to a segmenter as its whole line, the
synonyms joined by ``", "`` (for example ``"person, person in shirt, ..."``);
the CLIP feature extractor splits such a name with :func:`split_synonyms`
and keeps, per patch, the maximum over the synonyms. For VOC21 and
COCO-Object the first line lists stuff names (sky, wall, tree, ...) that
together stand for the background class 0.
"""

import os
from importlib import resources

from .. import _io
from .._validation import check_classes

__all__ = ["CLASS_FILES", "load_class_names", "split_synonyms",
           "display_name"]

SYNONYM_SEPARATOR = ", "

#: Dataset key -> shipped class file name.
CLASS_FILES = {
    "voc21": "voc21.txt",
    "voc20": "voc20.txt",
    "context60": "context60.txt",
    "context59": "context59.txt",
    "coco_stuff": "coco_stuff.txt",
    "coco_object": "coco_object.txt",
    "cityscapes": "cityscapes.txt",
    "ade20k": "ade20k.txt",
}


def split_synonyms(name):
    """Split a class name into its synonyms.

    Parameters
    ----------
    name : str
        One class, synonyms separated by ``","`` (spaces around the commas
        are dropped).

    Returns
    -------
    list of str
        The non-empty synonyms, in order.

    Examples
    --------
    >>> from dsolo_sk.datasets import split_synonyms
    >>> split_synonyms("tv monitor, monitor, screen")
    ['tv monitor', 'monitor', 'screen']
    >>> split_synonyms("cat")
    ['cat']
    """
    if not isinstance(name, str):
        raise TypeError(f"a class name must be a str, got {name!r}.")
    parts = [p.strip() for p in name.split(",")]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError(f"class name {name!r} holds no name.")
    return parts


def display_name(name, *, background=False):
    """A short name for tables: the first synonym, or ``"background"``.

    Examples
    --------
    >>> from dsolo_sk.datasets import display_name
    >>> display_name("person, person in shirt")
    'person'
    >>> display_name("sky, wall, tree", background=True)
    'background'
    """
    return "background" if background else split_synonyms(name)[0]


def _read_lines(text):
    """The classes of a class file's text; ValueError saying what is wrong
    (without naming the file: the caller does)."""
    classes = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            classes.append(SYNONYM_SEPARATOR.join(split_synonyms(line)))
        except ValueError:
            raise ValueError(
                f"line {lineno}, {line!r}, holds no class name") from None
    if len(classes) < 2:
        raise ValueError(
            f"it holds {len(classes)} class(es); a class file needs at "
            "least two lines, one class per line")
    check_classes(classes, name="it")
    return classes


def load_class_names(name_or_path):
    """Read a class-name file.

    Parameters
    ----------
    name_or_path : str or path-like
        A dataset key of :data:`CLASS_FILES` (``"voc21"``, ``"ade20k"``, ...)
        for the shipped files, or the path of a file with one class per
        line and synonyms separated by ``", "``. Empty lines are skipped.

    Returns
    -------
    list of str
        One entry per class, its synonyms joined by ``", "``. This is the
        form in which a dataset hands its classes to a segmenter.

    Raises
    ------
    FileNotFoundError
        If `name_or_path` is neither a dataset key nor an existing file.
    dsolo_sk.exceptions.UnreadableFileError
        If the file is not UTF-8 text, holds fewer than two classes, an
        empty line between commas, or two classes that CLIP's tokenizer
        cannot tell apart (see :func:`dsolo_sk._validation.check_classes`);
        the message names the file.

    Examples
    --------
    >>> from dsolo_sk.datasets import load_class_names
    >>> names = load_class_names("voc21")
    >>> len(names), names[1]
    (21, 'aeroplane')
    >>> names[0].split(", ")[:3]
    ['sky', 'wall', 'tree']
    """
    key = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) \
        else name_or_path
    if not isinstance(key, str):
        raise TypeError(
            "name_or_path must be a dataset key or a path, got "
            f"{type(name_or_path).__name__}."
        )
    if key in CLASS_FILES:
        ref = resources.files("dsolo_sk.datasets").joinpath(
            "classnames", CLASS_FILES[key])
        return _read_lines(ref.read_text(encoding="utf-8"))
    if not os.path.lexists(key):
        raise FileNotFoundError(
            f"no class file {key!r}: pass one of the dataset keys "
            f"{sorted(CLASS_FILES)} or the path of a text file with one "
            "class per line."
        )
    expected = "a class file (UTF-8 text, one class per line)"
    text = _io.read_text(key, expected)
    try:
        return _read_lines(text)
    except (TypeError, ValueError) as exc:
        raise _io.UnreadableFileError(
            key, expected, str(exc), hint="write one class per line, "
            "synonyms separated by ', '") from None
