"""Reading files and checking output folders, with one kind of error.

Every file the package reads goes through this module: images and masks,
class and split files, model configs and checkpoints, cached features and
evaluation records. Whatever goes wrong (a missing file, a folder where a
file was expected, no permission, a truncated or corrupt file, another
format, a binary file where text was expected, invalid JSON, an image
too large to be genuine) comes out as

- :class:`FileNotFoundError` when the file does not exist, or
- :class:`~dsolo_sk.exceptions.UnreadableFileError` otherwise,

with a message naming the file and saying what was expected. The readers
decode nothing with pickle.

Output folders are checked with :func:`check_output_folder` before any
work starts (:class:`~dsolo_sk.exceptions.UnwritableFolderError`), output
files with :func:`check_output_file`
(:class:`~dsolo_sk.exceptions.UnwritableFileError`).
"""

import contextlib
import json
import os
import pickle
import stat
import tempfile
import warnings

from .exceptions import (UnreadableFileError, UnwritableFileError,
                         UnwritableFolderError)

__all__ = ["UnreadableFileError", "UnwritableFolderError", "as_path",
           "check_file", "reading", "read_bytes", "read_text", "read_json",
           "open_image", "image_header_size", "check_checkpoint",
           "safetensors_extent", "file_digest",
           "read_npz", "write_npz",
           "check_output_folder", "check_output_file", "MAX_TEXT_BYTES",
           "SAFE_WEIGHTS_FORMATS"]

#: Largest text or JSON file read whole (class, split, config and record
#: files are far smaller; anything larger is not what was expected).
MAX_TEXT_BYTES = 64 * 1024 ** 2

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def _short(exc, limit=300):
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def as_path(path, name="path"):
    """`path` as a str, refusing what is not a usable path."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a path (str or os.PathLike), got "
            f"{type(path).__name__}."
        )
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise ValueError(f"{name} is an empty path; pass a file or folder.")
    if "\x00" in path:
        raise ValueError(f"{name} {path!r} holds a NUL character.")
    return path


def check_file(path, expected, *, name="path"):
    """Return `path` (str) if it is an existing, readable regular file.

    Raises
    ------
    TypeError
        If `path` is not a str or path-like.
    FileNotFoundError
        If nothing exists at `path`.
    UnreadableFileError
        If it is a folder, a pipe or device, or cannot be read.
    """
    path = as_path(path, name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path!r} does not exist (expected {expected}); check the path."
        ) from None
    except OSError as exc:
        raise UnreadableFileError(path, expected, _short(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableFileError(path, expected, "it is a folder, not a file",
                                  hint="pass the path of a file")
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFileError(
            path, expected, "it is not a regular file (a pipe, socket or "
            "device)", hint="pass the path of a regular file")
    if not os.access(path, os.R_OK):
        raise UnreadableFileError(path, expected, "permission denied",
                                  hint="make the file readable")
    return path


#: The weights formats read without running any code, named when a
#: checkpoint holding other pickled objects is refused.
SAFE_WEIGHTS_FORMATS = ("a safetensors file, or a torch.save file holding "
                        "only tensors (what torch.load(weights_only=True) "
                        "reads)")


@contextlib.contextmanager
def reading(path, expected, *, hint=None, errors=Exception):
    """Turn any error raised in the block into an UnreadableFileError.

    Errors that already name the file (:class:`UnreadableFileError`,
    :class:`FileNotFoundError`) and :class:`MemoryError` go through
    unchanged, and so do those that are not instances of `errors`. A
    :class:`pickle.UnpicklingError` (torch's ``weights_only`` loader
    refusing a checkpoint that holds other objects than tensors, which
    could run code) is reported as such, with the formats read safely
    (:data:`SAFE_WEIGHTS_FORMATS`) rather than the loader's advice.

    Examples
    --------
    >>> from dsolo_sk._io import reading
    >>> with reading("config.json", "a JSON object"):
    ...     raise KeyError("model_cfg")
    Traceback (most recent call last):
    ...
    dsolo_sk.exceptions.UnreadableFileError: cannot read 'config.json' as a
    JSON object: KeyError: 'model_cfg'. Fix: ...
    """
    try:
        yield
    except (UnreadableFileError, FileNotFoundError, MemoryError):
        raise
    except errors as exc:  # noqa: BLE001 - the point of the helper
        if isinstance(exc, pickle.UnpicklingError):
            raise UnreadableFileError(
                path, expected, "it holds pickled Python objects other than "
                "tensors, which could run code when loaded, so "
                "torch.load(weights_only=True) refused it", hint="save the "
                f"weights as {SAFE_WEIGHTS_FORMATS}, and never load a file "
                "of unknown origin with weights_only=False") from exc
        raise UnreadableFileError(path, expected, _short(exc), hint) from exc


def read_bytes(path, expected, *, max_bytes=MAX_TEXT_BYTES, name="path"):
    """The content of a file, at most `max_bytes` long."""
    path = check_file(path, expected, name=name)
    with reading(path, expected):
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnreadableFileError(
            path, expected, f"it is larger than {max_bytes} bytes, far more "
            f"than {expected} holds", hint="check that it is the right file")
    return data


def read_text(path, expected, *, max_bytes=MAX_TEXT_BYTES, name="path"):
    """The content of a UTF-8 text file (a leading BOM is dropped).

    Binary files (holding NUL bytes) and invalid UTF-8 are refused with the
    line of the first bad byte.
    """
    data = read_bytes(path, expected, max_bytes=max_bytes, name=name)
    path = as_path(path, name)
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data[:nul].count(b"\n") + 1
        raise UnreadableFileError(
            path, expected, f"it is a binary file (byte {nul}, on line "
            f"{line}, is NUL)", hint="pass a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UnreadableFileError(
            path, expected, f"byte {exc.start} (line {line}) is not valid "
            "UTF-8", hint="save the file as UTF-8 text") from None


def read_json(path, expected, *, max_bytes=MAX_TEXT_BYTES, name="path"):
    """The parsed content of a JSON file (NaN and Infinity refused)."""
    text = read_text(path, expected, max_bytes=max_bytes, name=name)
    path = as_path(path, name)

    def no_constants(token):
        raise ValueError(f"{token} is not valid JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise UnreadableFileError(
            path, expected, f"invalid JSON at line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg}", hint="fix or restore the file"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise UnreadableFileError(path, expected, _short(exc),
                                  hint="fix or restore the file") from None


# -- images -------------------------------------------------------------------
def _bomb_error(path, expected, size):
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return UnreadableFileError(
        path, expected, f"it declares {size[0]} x {size[1]} pixels, more than "
        f"PIL.Image.MAX_IMAGE_PIXELS ({limit}): it may be a decompression "
        "bomb", hint="if the image is genuine, downscale it, or raise the "
        "limit with PIL.Image.MAX_IMAGE_PIXELS = <pixels>")


def _too_large(size):
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and size[0] * size[1] > limit


@contextlib.contextmanager
def _pil_open(path, expected):
    """``PIL.Image.open`` with every failure named, the bomb limit an
    error (PIL only warns below twice its limit)."""
    from PIL import Image

    path = check_file(path, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombWarning,
                Image.DecompressionBombError) as exc:
            raise UnreadableFileError(
                path, expected, f"{exc}", hint="if the image is genuine, "
                "downscale it, or raise the limit with "
                "PIL.Image.MAX_IMAGE_PIXELS = <pixels>") from None
        except Exception as exc:  # noqa: BLE001
            raise UnreadableFileError(
                path, expected, _short(exc), hint="pass an image file PIL can "
                "read (PNG, JPEG, TIFF, ...); the file may be corrupt or "
                "truncated") from None
    with img:
        if _too_large(img.size):
            raise _bomb_error(path, expected, img.size)
        yield path, img


def open_image(path, expected="an image", *, exif_transpose=True):
    """Decode an image file; return a loaded :class:`PIL.Image.Image`.

    The file is closed on return. With `exif_transpose`, the EXIF
    orientation tag is applied (:func:`PIL.ImageOps.exif_transpose`), so
    the pixels are as a viewer displays them, as OpenCV's ``imread`` gives
    them. Multi-frame files give their first frame.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    UnreadableFileError
        If it is not an image PIL can decode, is truncated or corrupt, or
        has more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    from PIL import Image, ImageOps

    with _pil_open(path, expected) as (path, img):
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with reading(path, expected, hint="the file is corrupt or "
                         "truncated; restore it from its original source"):
                img.load()
                if exif_transpose:
                    try:
                        out = ImageOps.exif_transpose(img)
                    except Exception:  # noqa: BLE001 - broken EXIF block:
                        out = None  # the pixels as stored, as OpenCV does
                    if out is not None:
                        return out
                return img.copy()


def image_header_size(path, expected="an image"):
    """(height, width) of an image file as displayed, from its header only.

    The EXIF orientation is taken into account (a 90-degree rotation swaps
    the sides); no pixel is decoded.
    """
    with _pil_open(path, expected) as (path, img):
        with reading(path, expected):
            w, h = img.size
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION)
            except Exception:  # noqa: BLE001 - a broken EXIF block
                orientation = None
    if w == 0 or h == 0:
        raise UnreadableFileError(path, expected, "it holds no pixel")
    if orientation in _SWAPS_AXES:
        h, w = w, h
    return h, w


# -- model files --------------------------------------------------------------
def check_checkpoint(path, expected="a model checkpoint (safetensors or a "
                     "torch state dict)"):
    """Check that a checkpoint file is complete, without loading its tensors.

    safetensors files (recognised by their header, whatever the suffix) are
    opened with :func:`safetensors.safe_open`, which checks the header and
    that the file holds every tensor it lists; torch files must be a
    complete zip archive (:func:`torch.save`'s format) or start like a
    legacy torch pickle. Nothing is unpickled here.

    Returns
    -------
    path : str
    """
    path = check_file(path, expected)
    st = os.stat(path)
    memo = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if memo in _GOOD_CHECKPOINTS:
        return path
    _check_checkpoint(path, expected, st.st_size)
    _GOOD_CHECKPOINTS.add(memo)
    return path


_GOOD_CHECKPOINTS = set()  # (path, mtime, size) of checkpoints found good


def _check_checkpoint(path, expected, size):
    with reading(path, expected):
        with open(path, "rb") as f:
            head = f.read(9)
    hint = ("the file is truncated, corrupt or of another kind; download or "
            "save the weights again")
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(
            head[:8], "little") < size:
        from safetensors import safe_open

        with reading(path, expected, hint=hint):
            with safe_open(path, framework="pt") as f:
                n = len(list(f.keys()))
        if n == 0:
            raise UnreadableFileError(path, expected, "it holds no tensor",
                                      hint=hint)
        return path
    if len(head) >= 9 and head[8:9] == b"{":
        raise UnreadableFileError(path, expected, "its safetensors header "
                                  "runs past the end of the file (the file "
                                  "is truncated)", hint=hint)
    if path.endswith(".safetensors"):
        raise UnreadableFileError(path, expected, "it does not start with a "
                                  "safetensors header", hint=hint)
    import zipfile

    if head[:2] == b"PK":
        with reading(path, expected, hint=hint):
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
            if not infos:
                raise ValueError("the zip archive is empty")
            for info in infos:
                if info.header_offset + info.compress_size > size:
                    raise ValueError(f"member {info.filename!r} ends past "
                                     "the end of the file")
        return path
    if head[:1] == b"\x80":  # a pickle protocol opcode: legacy torch.save
        return path
    raise UnreadableFileError(path, expected, "it is neither a safetensors "
                              "file nor a torch checkpoint", hint=hint)


#: Largest safetensors header read (the format's own limit is 100 MB).
_MAX_SAFETENSORS_HEADER = 100 * 1024 ** 2


def safetensors_extent(path, expected="a safetensors file"):
    """The size in bytes a safetensors file declares, from its header only.

    The 8-byte little-endian header length, the JSON header, then the
    tensor data up to the largest ``data_offsets`` end: a complete file is
    exactly that long, a truncated one shorter. Nothing else is read, and
    neither torch nor safetensors is imported.

    Raises
    ------
    FileNotFoundError, UnreadableFileError
        When the file is missing, or its header is not a safetensors
        header.

    Examples
    --------
    >>> import json, os, struct, tempfile
    >>> from dsolo_sk._io import safetensors_extent
    >>> header = json.dumps({"w": {"dtype": "F32", "shape": [2],
    ...                            "data_offsets": [0, 8]}}).encode()
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(struct.pack("<Q", len(header)) + header + bytes(8))
    >>> safetensors_extent(path) == os.path.getsize(path)
    True
    """
    path = check_file(path, expected)
    hint = ("the file is truncated, corrupt or of another kind; download "
            "it again")
    with reading(path, expected, hint=hint):
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("it is shorter than a safetensors header")
            n = int.from_bytes(head, "little")
            if n > _MAX_SAFETENSORS_HEADER:
                raise ValueError(f"it declares a {n}-byte header")
            raw = f.read(n)
        if len(raw) < n:
            raise ValueError("its header runs past the end of the file")
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        end = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            end = max(end, int(info["data_offsets"][1]))
    return 8 + n + end


def file_digest(path, expected, algorithm="sha256", *, git_blob=False,
                chunk=16 * 1024 ** 2):
    """The hex digest of a file's content, read in chunks.

    With `git_blob`, the digest of ``b"blob <size>\\0"`` followed by the
    content: git's object id (with ``algorithm="sha1"``), the name the
    Hugging Face cache gives the blobs of files kept in git rather than
    LFS.

    Examples
    --------
    >>> import os, tempfile
    >>> from dsolo_sk._io import file_digest
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"hello\\n")
    >>> file_digest(path, "a text file", "sha1", git_blob=True)
    'ce013625030ba8dba906f756967f9e9ca394464a'
    """
    import hashlib

    path = check_file(path, expected)
    h = hashlib.new(algorithm)
    with reading(path, expected):
        if git_blob:
            h.update(b"blob %d\x00" % os.path.getsize(path))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


# -- arrays -------------------------------------------------------------------
def atomic_write(path, write, *, text=False, fsync=False):
    """Write a file atomically: to a temporary file beside it, then renamed.

    Readers never see a partial file, and a failure (or an interrupt)
    leaves no temporary file behind.

    Parameters
    ----------
    path : str or path
        The final file.
    write : callable
        ``write(f)`` writes the content to the open file object ``f``.
    text : bool, default=False
        Open the file in text mode (UTF-8) rather than binary.
    fsync : bool, default=False
        Flush the content to the disk before the rename.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w" if text else "wb",
                       **({"encoding": "utf-8"} if text else {})) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_npz(path, arrays):
    """Write arrays to an uncompressed ``.npz`` file, atomically.

    The file is written next to its final name and renamed over it
    (:func:`atomic_write`), so readers never see a partial file. Object
    arrays are refused: nothing is pickled.
    """
    import numpy as np

    for name, arr in arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object, which .npz "
                            "can only store by pickling.")
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_npz(path, expected):
    """The arrays of an ``.npz`` file, read without pickle.

    Every member must be an uncompressed ``.npy`` array of a plain dtype
    whose header agrees with its size, so a forged file can neither run
    code (``allow_pickle=False``) nor make the reader allocate more memory
    than the file holds.

    Returns
    -------
    dict of str to ndarray
    """
    import zipfile

    from numpy.lib import format as npy

    path = check_file(path, expected)
    size = os.path.getsize(path)
    out = {}
    with reading(path, expected, hint="it is computed again; delete the "
                 "file if this repeats"):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not a "
                                     ".npy array")
                if info.compress_type != zipfile.ZIP_STORED or \
                        info.file_size != info.compress_size or \
                        info.file_size > size:
                    raise ValueError(f"member {info.filename!r} is "
                                     "compressed or larger than the file")
                with z.open(info) as f:
                    version = npy.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = npy.read_array_header_2_0(f)
                    n_items = 1
                    for d in shape:
                        n_items *= int(d)
                    if dtype.hasobject:
                        raise ValueError(f"member {info.filename!r} holds "
                                         "Python objects (pickled data)")
                    if f.tell() + n_items * dtype.itemsize != info.file_size:
                        raise ValueError(f"member {info.filename!r} does "
                                         "not hold the array its header "
                                         "declares")
                with z.open(info) as f:
                    arr = npy.read_array(f, allow_pickle=False)
                out[info.filename[:-len(".npy")]] = arr
    return out


# -- output folders -----------------------------------------------------------
def check_output_folder(path, name):
    """Check that `path` is, or can become, a folder we can write to.

    Nothing is created: the nearest existing folder on the path is tested
    by creating and deleting a temporary file in it.

    Returns
    -------
    path : str
        The absolute path.

    Raises
    ------
    TypeError
        If `path` is not a str or path-like.
    UnwritableFolderError
        If a file is in the way, or the folder cannot be written.

    Examples
    --------
    >>> import os, tempfile
    >>> from dsolo_sk._io import check_output_folder
    >>> root = tempfile.mkdtemp()
    >>> check_output_folder(os.path.join(root, "runs", "a"), "out") == \\
    ...     os.path.join(root, "runs", "a")
    True
    >>> os.listdir(root)  # nothing created
    []
    """
    path = os.path.abspath(as_path(path, name))
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        if probe == path:
            reason = ("it is a file, not a folder" if os.path.isfile(path)
                      else "it exists and is not a folder")
        else:
            reason = (f"{probe!r} is a file, so no folder can be created "
                      "below it")
        raise UnwritableFolderError(path, name, reason)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dsolo_sk_write_test_", dir=probe)
    except OSError as exc:
        where = "it" if probe == path else repr(probe)
        raise UnwritableFolderError(
            path, name, f"cannot write in {where} "
            f"({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.unlink(tmp)
    return path


def check_output_file(path, name, *, suffixes=None):
    """Check that a file can be written at `path`; return it absolute.

    Nothing is created. The path must not be a folder (or anything else
    than a regular file), its folder must be, or be able to become, a
    folder we can write to (:func:`check_output_folder`), and its
    extension must be one of `suffixes` when they are given.

    Parameters
    ----------
    path : str or path-like
    name : str
        The argument's name, used in error messages.
    suffixes : iterable of str, optional
        The accepted extensions, lower case, without the dot.

    Returns
    -------
    path : str

    Raises
    ------
    TypeError
        If `path` is not a str or path-like.
    UnwritableFileError
        If the path is a folder, lies below a file or in a folder that
        cannot be written, or has another extension.

    Examples
    --------
    >>> import os, tempfile
    >>> from dsolo_sk._io import check_output_file
    >>> root = tempfile.mkdtemp()
    >>> check_output_file(os.path.join(root, "a", "o.png"), "path",
    ...                   suffixes={"png"}) == os.path.join(root, "a", "o.png")
    True
    >>> check_output_file(root, "path")
    Traceback (most recent call last):
    ...
    dsolo_sk.exceptions.UnwritableFileError: path=... cannot be written: it
    is a folder; pass the path of a file inside it, such as ...
    """
    path = os.path.abspath(as_path(path, name))
    if os.path.isdir(path):
        example = os.path.join(path, "output" + (
            f".{sorted(suffixes)[0]}" if suffixes else ""))
        raise UnwritableFileError(path, name, "it is a folder; pass the path "
                                  f"of a file inside it, such as {example!r}")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise UnwritableFileError(path, name, "it exists and is not a "
                                  "regular file")
    if suffixes is not None:
        suffixes = sorted({s.lower().lstrip(".") for s in suffixes})
        ext = os.path.splitext(path)[1]
        known = ", ".join("." + s for s in suffixes)
        if not ext:
            raise UnwritableFileError(path, name, "it has no extension, "
                                      f"which names the format: add one of "
                                      f"{known}")
        if ext.lower().lstrip(".") not in suffixes:
            raise UnwritableFileError(path, name, f"its extension {ext!r} "
                                      f"is not one of {known}")
    folder = os.path.dirname(path)
    try:
        check_output_folder(folder, name)
    except UnwritableFolderError as exc:
        raise UnwritableFileError(path, name, f"its folder {folder!r} cannot "
                                  f"be written: {exc.reason}") from None
    return path
