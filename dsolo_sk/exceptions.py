"""The errors of dsolo_sk about files and folders.

Every file the package reads (images, masks, class and split files, model
configs and checkpoints, cached features, evaluation records) goes through
one reader that turns any failure into one of two errors, whose message
names the file and says what was expected:

- :class:`FileNotFoundError` (the built-in one) when the file does not
  exist;
- :class:`UnreadableFileError` when it exists but cannot be read as what
  was expected (corrupt, truncated, another format, a folder, too large).

Output folders (``evaluate(out=...)``, ``dsolo-sk --out``,
``FeatureCache(memory=...)``) are checked before any work starts and give
:class:`UnwritableFolderError`; output files (``save_overlay(path)``)
give :class:`UnwritableFileError`.

All three classes derive from :class:`ValueError` (the value passed, a path,
is wrong) and from :class:`OSError` (the problem lies on the disk), so
either ``except`` clause catches them. Bad parameters are
:class:`ValueError` or :class:`TypeError` naming the parameter; models
whose weights cannot be found are
:class:`~dsolo_sk.features.WeightsUnavailableError`, an :class:`OSError`.

This module imports nothing heavy.
"""

__all__ = ["UnreadableFileError", "UnwritableFolderError",
           "UnwritableFileError"]


class UnreadableFileError(ValueError, OSError):
    """A file exists but cannot be read as what was expected.

    Parameters
    ----------
    path : str
        The file.
    expected : str
        What the file should have been, for example ``"an image"`` or
        ``"a UTF-8 text file with one class per line"``.
    reason : str
        What went wrong, for example the decoder's message.
    hint : str, optional
        How to fix it; a default advice is used when omitted.

    Attributes
    ----------
    path, expected, reason : str
    hint : str or None

    Examples
    --------
    >>> import os, tempfile
    >>> from dsolo_sk.datasets import read_image
    >>> from dsolo_sk.exceptions import UnreadableFileError
    >>> path = os.path.join(tempfile.mkdtemp(), "photo.jpg")
    >>> with open(path, "w") as f:
    ...     _ = f.write("not a photo")
    >>> try:
    ...     read_image(path)
    ... except UnreadableFileError as exc:
    ...     print(os.path.basename(exc.path), "|", exc.expected)
    photo.jpg | an image
    >>> issubclass(UnreadableFileError, ValueError), issubclass(
    ...     UnreadableFileError, OSError)
    (True, True)
    """

    def __init__(self, path, expected, reason, hint=None):
        self.path = str(path)
        self.expected = expected
        self.reason = str(reason).rstrip(". ")
        self.hint = hint
        if hint is None:
            hint = ("check the file, or restore it from its original source "
                    "(it may be truncated or corrupt)")
        super().__init__(
            f"cannot read {self.path!r} as {expected}: {self.reason}. Fix: "
            f"{hint}."
        )

    def __reduce__(self):
        # picklable: Dask sends errors between processes
        return type(self), (self.path, self.expected, self.reason, self.hint)


class _OutputPathError(ValueError, OSError):
    """An output path that cannot be used: its `path`, the argument `name`
    that gave it and the `reason`, kept as attributes (and through
    pickling, so that an error raised in a worker process arrives whole);
    subclasses word the message (``_message``)."""

    _message = "{name}={path!r}: {reason}."

    def __init__(self, path, name, reason):
        self.path = str(path)
        self.name = name
        self.reason = reason
        super().__init__(self._message.format(name=name, path=self.path,
                                              reason=reason))

    def __reduce__(self):
        return type(self), (self.path, self.name, self.reason)


class UnwritableFolderError(_OutputPathError):
    """An output folder cannot be created or written to.

    Raised before any work starts, so that nothing is computed for results
    that could not be saved.

    Parameters
    ----------
    path : str
        The folder.
    name : str
        The argument that named it (``"out"``, ``"memory"``, ``"--out"``).
    reason : str
        What is wrong: a file in the way, no permission, a read-only disk.

    Examples
    --------
    >>> import os, tempfile
    >>> from dsolo_sk.exceptions import UnwritableFolderError
    >>> from dsolo_sk.datasets import load_dataset, write_fake_dataset
    >>> from dsolo_sk.evaluation import evaluate
    >>> tmp = tempfile.mkdtemp()
    >>> ds = load_dataset("voc20", write_fake_dataset("voc20", tmp))
    >>> a_file = os.path.join(tmp, "results.txt")
    >>> open(a_file, "w").close()
    >>> try:
    ...     evaluate(lambda image: None, ds, out=a_file, progress=False)
    ... except UnwritableFolderError as exc:
    ...     print(exc.name, "|", exc.reason)
    out | it is a file, not a folder
    """

    _message = ("{name}={path!r} cannot be used as an output folder: "
                "{reason}. Pass a folder you can write to (it is created if "
                "missing).")


class UnwritableFileError(_OutputPathError):
    """An output file cannot be written where its path says.

    Raised before anything is drawn or computed: the path is a folder (a
    file would otherwise be written beside it), lies below a file or in a
    folder that cannot be written, or has an extension that says no
    supported format.

    Parameters
    ----------
    path : str
        The file.
    name : str
        The argument that named it (``"path"``).
    reason : str
        What is wrong.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from dsolo_sk.exceptions import UnwritableFileError
    >>> from dsolo_sk.plot import save_overlay
    >>> folder = tempfile.mkdtemp()
    >>> try:
    ...     save_overlay(folder, np.zeros((8, 8, 3), np.uint8),
    ...                  np.zeros((8, 8), int))
    ... except UnwritableFileError as exc:
    ...     print(exc.name, "|", exc.reason.split(";")[0])
    path | it is a folder
    """

    _message = "{name}={path!r} cannot be written: {reason}."
