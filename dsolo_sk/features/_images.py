"""Image loading and conversion to the (H, W, 3) uint8 RGB of the contract.

Accepted inputs, per image:

- a numpy array (or anything with ``__array__``) of shape (H, W),
  (H, W, 1), (H, W, 3) or (H, W, 4);
- a :class:`PIL.Image.Image` of any mode;
- a path (``str`` or :class:`os.PathLike`) to a file PIL can read.

Conversions, documented once here and referred to by the estimators:

- image files are read as they are displayed: the EXIF orientation tag is
  applied (:func:`PIL.ImageOps.exif_transpose`), as OpenCV's ``imread``
  does for the field's evaluation code; multi-frame files give their first
  frame; a file that cannot be decoded, is truncated, or declares more
  pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a possible decompression
  bomb) raises :class:`~dsolo_sk.exceptions.UnreadableFileError` naming
  the file, a missing one :class:`FileNotFoundError`;
- PIL images of any mode are converted to RGB by PIL (palette, CMYK,
  YCbCr, LAB, HSV, bilevel, with or without alpha), except 16-bit
  grayscale, scaled by 255 / 65535 like ``uint16`` arrays, and 32-bit
  integer or float grayscale (modes ``I`` and ``F``), which follow the
  array rules below;
- grayscale (H, W) and (H, W, 1) are repeated to three channels;
- RGBA drops its alpha channel (colours are kept as stored, not composited
  on a background);
- ``uint8`` is kept; ``uint16`` is scaled by 255 / 65535 and rounded;
  other integer types must hold values in [0, 255];
- floating point images must lie in [0, 1] (the convention of
  scikit-image) and are scaled by 255 and rounded; a float image with
  values above 1 is refused, since it is probably 0-255 data stored as
  float;
- bool, complex and object arrays, NaN or infinite values, empty images
  and channel counts other than 1, 3 and 4 are refused with a message
  saying how to fix the call.
"""

import os

import numpy as np

__all__ = ["to_rgb_uint8", "check_images", "image_size"]


def _is_path(x):
    return isinstance(x, (str, os.PathLike))


def _is_pil(x):
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL ships with scikit-image
        return False
    return isinstance(x, Image.Image)


_PIL_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _pil_to_rgb(img, name="image"):
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in _PIL_16BIT:
        return _array_to_rgb(np.asarray(img).astype(np.uint16), name)
    if mode in ("I", "F"):
        # 32-bit grayscale: the array rules (range checks) apply
        return _array_to_rgb(np.asarray(img), name)
    # "La" converts through "LA"; palettes with transparency through RGBA
    # (PIL warns otherwise); other modes directly
    chains = {"La": ("LA", "RGB"), "P": ("RGBA", "RGB"),
              "PA": ("RGBA", "RGB")}
    try:
        out = img
        for target in chains.get(mode, ("RGB",)):
            out = out.convert(target)
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"{name} has the PIL mode {mode!r}, which PIL cannot convert to "
            f"RGB ({exc}); convert it to RGB first."
        ) from None
    return np.asarray(out, dtype=np.uint8)


def _check_array_header(a, name):
    """Checks that need only dtype and shape (no pixel values)."""
    dt = a.dtype
    if dt == object or np.issubdtype(dt, np.complexfloating) or dt.kind in "USV":
        raise TypeError(
            f"{name} has dtype {dt}; pass a real-valued uint8 RGB array "
            "(or float in [0, 1]), for example np.asarray(img, dtype=np.uint8)."
        )
    if dt == bool:
        raise TypeError(
            f"{name} is a boolean array, which looks like a mask, not an "
            "image; convert it with img.astype(np.uint8) * 255 if it really "
            "is a black and white image."
        )
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"{name} has {a.shape[2]} channels (shape {a.shape}); images must "
            "have 1 (grayscale), 3 (RGB) or 4 (RGBA) channels in the last "
            "axis. A channels-first array needs np.moveaxis(img, 0, -1)."
        )
    if a.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or "
            f"(H, W, 4), got {a.ndim} dimensions (shape {a.shape}). To pass "
            "several images, pass a list of arrays."
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {a.shape}); every image needs at least "
            "one pixel."
        )


def _array_to_rgb(a, name):
    _check_array_header(a, name)
    dt = a.dtype
    if dt == np.uint8:
        out = a
    elif np.issubdtype(dt, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds NaN or infinite values.")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise ValueError(
                f"{name} is a float image with values in [{lo:g}, {hi:g}]; "
                "float images must lie in [0, 1]. For 0-255 data pass "
                "img.astype(np.uint8); otherwise rescale it to [0, 1]."
            )
        out = np.round(a * 255).astype(np.uint8)
    elif dt == np.uint16:
        out = np.round(a.astype(np.float64) * (255 / 65535)).astype(np.uint8)
    elif np.issubdtype(dt, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{name} has integer values in [{lo}, {hi}], outside "
                "[0, 255]; rescale it and pass a uint8 array."
            )
        out = a.astype(np.uint8)
    else:  # pragma: no cover - exotic numpy dtypes
        raise TypeError(f"{name} has unsupported dtype {dt}.")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    elif out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def _read_file(path, name):
    """An image file as (H, W, 3) uint8, EXIF orientation applied."""
    from .. import _io

    path = _io.as_path(path, name)
    img = _io.open_image(path, "an image")
    with _io.reading(path, "an image"):
        return _pil_to_rgb(img, f"{name} ({path!r})")


def to_rgb_uint8(image, *, name="image"):
    """Convert one image to a contiguous (H, W, 3) uint8 RGB array.

    Parameters
    ----------
    image : array-like, PIL.Image.Image or path
        See the module docstring for the accepted forms and conversions.
    name : str, default="image"
        Used in error messages.

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.features._images import to_rgb_uint8
    >>> to_rgb_uint8(np.full((2, 3), 0.5)).shape
    (2, 3, 3)
    >>> int(to_rgb_uint8(np.full((2, 3), 0.5))[0, 0, 0])
    128
    >>> to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))
    Traceback (most recent call last):
    ...
    ValueError: image has 2 channels (shape (4, 4, 2)); ...
    """
    if _is_path(image):
        return _read_file(image, name)
    if _is_pil(image):
        if image.size[0] == 0 or image.size[1] == 0:
            raise ValueError(f"{name} is an empty PIL image (size {image.size}).")
        return _pil_to_rgb(image, name)
    if isinstance(image, (bytes, bytearray)):
        raise TypeError(
            f"{name} is raw bytes; decode it first, for example with "
            "PIL.Image.open(io.BytesIO(data))."
        )
    try:
        a = np.asarray(image)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    return _array_to_rgb(a, name)


def image_size(image, *, name="image"):
    """Validate one image cheaply and return its (H, W).

    Arrays are checked fully (dtype, shape, value range); files and PIL
    images only by header, without decoding pixels, so that a long list of
    paths is validated without loading it into memory. The size of a file
    is the displayed one (EXIF orientation applied).
    """
    if _is_path(image):
        from .. import _io

        return _io.image_header_size(_io.as_path(image, name), "an image")
    if _is_pil(image):
        w, h = image.size
        if w == 0 or h == 0:
            raise ValueError(f"{name} is an empty PIL image (size {image.size}).")
        return h, w
    return to_rgb_uint8(image, name=name).shape[:2]


def to_rgb_uint8_list(images, *, name="images"):
    """Convert every image of a list with :func:`to_rgb_uint8`.

    The batch methods of the extractors take any iterable of images; each
    is converted and named ``images[k]`` in error messages.
    """
    try:
        images = list(images)
    except TypeError:
        raise TypeError(
            f"{name} must be a list of images, got {images!r}.") from None
    return [to_rgb_uint8(img, name=f"{name}[{k}]")
            for k, img in enumerate(images)]


def check_images(images, *, name="images"):
    """Validate a list of images before any model is loaded.

    Parameters
    ----------
    images : list
        Arrays, PIL images or paths; see the module docstring.
    name : str, default="images"
        Used in error messages.

    Returns
    -------
    list
        The same images in a list (not converted, so paths stay paths).

    Raises
    ------
    TypeError
        For a bare array or string instead of a list, or a bad dtype.
    ValueError
        For an empty list, an empty image or a bad channel count.
    """
    from .._validation import check_sample_list

    if _is_pil(images):
        raise TypeError(
            f"{name} must be a list of images, got a single PIL image; wrap "
            f"it in a list: [{name}]."
        )
    images = check_sample_list(images, name=name)
    for k, img in enumerate(images):
        image_size(img, name=f"{name}[{k}]")
    return images


def rescaled_shape(hw, short_side, max_long_side=None, *, minimum=1):
    """The (height, width) of mmcv's ``imrescale``: the peers' resize.

    The scale is ``short_side / short``, lowered to ``max_long_side /
    long`` when the long side would exceed it; each side becomes
    ``int(side * scale + 0.5)``, at least `minimum`.
    """
    h, w = int(hw[0]), int(hw[1])
    scale = short_side / min(h, w)
    if max_long_side is not None:
        scale = min(scale, max_long_side / max(h, w))
    return (max(minimum, int(h * scale + 0.5)),
            max(minimum, int(w * scale + 0.5)))


def resize_image(image, shape, resampling):
    """Resize an (H, W, 3) uint8 image to `shape` = (height, width).

    ``resampling="opencv"`` is OpenCV's bilinear ``cv2.resize`` on uint8
    (fixed-point weights, no antialiasing), as the peers' evaluation
    resizes through mmcv; ``"antialias"`` is Pillow's bilinear resize,
    which widens its filter when it shrinks an image.
    """
    shape = (int(shape[0]), int(shape[1]))
    if tuple(image.shape[:2]) == shape:
        return image
    if resampling == "opencv":
        try:
            import cv2
        except ImportError:  # pragma: no cover - a declared dependency
            raise ImportError(
                "resampling='opencv' needs OpenCV: pip install "
                "opencv-python-headless, or use resampling='antialias'."
            ) from None
        return cv2.resize(np.ascontiguousarray(image), (shape[1], shape[0]),
                          interpolation=cv2.INTER_LINEAR)
    if resampling != "antialias":
        raise ValueError(f"resampling must be 'opencv' or 'antialias', got "
                         f"{resampling!r}.")
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]),
                                                    Image.BILINEAR))
