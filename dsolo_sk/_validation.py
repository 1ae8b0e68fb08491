"""Validation helpers shared by the public entry points.

Every check raises a ``ValueError`` or ``TypeError`` whose message says how
to fix the call.
"""

from collections.abc import KeysView
from collections.abc import Set as AbstractSet
from numbers import Integral, Real

import numpy as np

IGNORE_INDEX = 255


def normalize_class_name(name):
    """The form in which CLIP's tokenizer sees a class name.

    open_clip's tokenizer unescapes HTML entities, collapses whitespace,
    strips and lower-cases its input, so names that differ only in these
    ways get the same text embedding. Synonyms (separated by commas) are
    normalised one by one; empty synonyms are dropped.

    Examples
    --------
    >>> from dsolo_sk._validation import normalize_class_name
    >>> normalize_class_name("  Traffic   Light ,signal")
    'traffic light, signal'
    """
    import html

    parts = []
    for part in name.split(","):
        part = " ".join(html.unescape(html.unescape(part)).split()).lower()
        if part:
            parts.append(part)
    return ", ".join(parts)


def check_string_list(values, *, name, what="a sequence of strings"):
    """`values` as a list of str, in the order given, or a clear error.

    A bare string (a sequence of characters), a set (whose order changes
    between processes, and with it the meaning of each label) and entries
    that are not strings are refused, each naming `name`.

    Parameters
    ----------
    values : sequence of str
        The strings.
    name : str
        Name of the argument, used in error messages.
    what : str, default="a sequence of strings"
        What `values` must be, in the messages.

    Returns
    -------
    list of str

    Examples
    --------
    >>> from dsolo_sk._validation import check_string_list
    >>> check_string_list(("sky", "road"), name="class_names")
    ['sky', 'road']
    >>> check_string_list("sky", name="class_names")
    Traceback (most recent call last):
    ...
    TypeError: class_names must be a sequence of strings, got the bare string 'sky'; pass a list such as ['sky'] or ['sky'].
    """
    if isinstance(values, (str, bytes)):
        raise TypeError(
            f"{name} must be {what}, got the bare string "
            f"{values!r}; pass a list such as {[values]!r} or "
            f"{values.split(',') if isinstance(values, str) else '...'!r}."
        )
    if isinstance(values, (set, frozenset)) or (
            isinstance(values, AbstractSet)
            and not isinstance(values, KeysView)):
        raise TypeError(
            f"{name} is a {type(values).__name__}, whose order (and so the "
            "meaning of each label) changes between runs; pass a "
            f"list, for example sorted({name})."
        )
    try:
        out = list(values)
    except TypeError:
        raise TypeError(
            f"{name} must be {what}, got {type(values).__name__}."
        ) from None
    for k, v in enumerate(out):
        if not isinstance(v, str):
            raise TypeError(
                f"{name}[{k}] must be a string, got {v!r} of type "
                f"{type(v).__name__}."
            )
    return out


def check_classes(classes, *, name="classes"):
    """Validate a list of class names and return it as a tuple of str.

    Names are compared the way CLIP's tokenizer sees them
    (:func:`normalize_class_name`: case, surrounding and repeated
    whitespace, HTML entities): two names that collide there would get
    the same score everywhere, so one of them could never be predicted.

    Parameters
    ----------
    classes : sequence of str
        At least two distinct, non-empty names, in a fixed order (a list or
        tuple): label ``k`` of a prediction means ``classes[k]``.
    name : str, default="classes"
        Name of the argument, used in error messages.

    Returns
    -------
    tuple of str
        The names as given.

    Raises
    ------
    TypeError
        If `classes` is a bare string, a set (whose order, hence the meaning
        of each label, changes between processes) or holds something else
        than strings (``None`` included).
    ValueError
        If `classes` is None, there are fewer than two names, an empty name
        or two names that collide.

    Examples
    --------
    >>> from dsolo_sk._validation import check_classes
    >>> check_classes(["cat", "dog, puppy"])
    ('cat', 'dog, puppy')
    >>> check_classes(["Cat", "cat "])
    Traceback (most recent call last):
    ...
    ValueError: classes holds names that CLIP's tokenizer cannot tell apart
    (it lower-cases, strips and collapses whitespace): 'Cat' and 'cat '; ...
    """
    if classes is None:
        raise ValueError(
            f"{name} is required: pass a list of at least two class names."
        )
    classes = check_string_list(classes, name=name, what="a list of class "
                                "names")
    for k, c in enumerate(classes):
        if not normalize_class_name(c):
            raise ValueError(
                f"{name}[{k}] = {c!r} holds no name; remove it or write a "
                "name (synonyms separated by ', ')."
            )
    if len(classes) < 2:
        raise ValueError(
            f"{name} must hold at least two class names, got {len(classes)}: "
            "an argmax over a single class is always that class. Add a "
            "background or 'other' class."
        )
    seen = {}
    for c in classes:
        key = normalize_class_name(c)
        if key in seen:
            first = seen[key]
            if first == c:
                raise ValueError(
                    f"{name} holds the name {c!r} twice (a duplicate); each "
                    "class must appear once (put synonyms on one name, "
                    "separated by ', ')."
                )
            raise ValueError(
                f"{name} holds names that CLIP's tokenizer cannot tell apart "
                "(it lower-cases, strips and collapses whitespace): "
                f"{first!r} and {c!r}; the second could never be predicted. "
                "Merge them or rename one."
            )
        seen[key] = c
    return tuple(classes)


def check_scalar(value, name, *, target_type=Real, min_val=None,
                 include_min=True, max_val=None, include_max=True,
                 allow_inf=False, unit=None):
    """Check a scalar parameter's type and range; return it unchanged.

    The one check of every numeric parameter of the package. Unlike
    :func:`sklearn.utils.check_scalar`, NaN is always refused (every
    comparison with NaN is false, so a range check alone lets it through),
    and so is an infinite value unless `allow_inf` is true.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The parameter's name, used in error messages.
    target_type : type or tuple of types, default=numbers.Real
        Accepted types; bools are refused. ``numbers.Integral`` accepts
        numpy integers too.
    min_val, max_val : float, optional
        Bounds of the allowed range.
    include_min, include_max : bool, default=True
        Whether each bound is allowed.
    allow_inf : bool, default=False
        Whether ``inf`` (or ``-inf``) is an accepted value.
    unit : str, optional
        The unit of the value (for example ``"patches"``), named in the
        error message.

    Returns
    -------
    value : object
        `value`, unchanged.

    Raises
    ------
    TypeError
        If `value` is not an instance of `target_type`.
    ValueError
        If `value` is NaN, infinite (unless allowed) or out of range.

    Examples
    --------
    >>> from dsolo_sk._validation import check_scalar
    >>> check_scalar(0.3, "tau", min_val=0, include_min=False)
    0.3
    >>> check_scalar(float("nan"), "tau", min_val=0)
    Traceback (most recent call last):
    ...
    ValueError: tau must be a finite number, got nan.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value,
                                                              target_type):
        types = (target_type if isinstance(target_type, tuple)
                 else (target_type,))
        kind = ("an integer" if all(
            isinstance(t, type) and issubclass(t, (Integral, np.integer))
            for t in types) else "a number")
        raise TypeError(
            f"{name} must be {kind}, got {value!r} of type "
            f"{type(value).__name__}."
        )
    in_unit = f" {unit}" if unit else ""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is not None:
        if number != number:
            raise ValueError(f"{name} must be a finite number, got nan.")
        if not allow_inf and number in (float("inf"), float("-inf")):
            raise ValueError(
                f"{name} must be a finite number{in_unit}, got {value!r}."
            )
    if min_val is not None:
        bad = value < min_val if include_min else value <= min_val
        if bad:
            op = ">=" if include_min else ">"
            raise ValueError(
                f"{name} must be {op} {min_val}{in_unit}, got {value!r}."
            )
    if max_val is not None:
        bad = value > max_val if include_max else value >= max_val
        if bad:
            op = "<=" if include_max else "<"
            raise ValueError(
                f"{name} must be {op} {max_val}{in_unit}, got {value!r}."
            )
    return value


def check_grid_shape(grid_shape, *, name="grid_shape"):
    """Check a patch grid ``(rows, cols)``; return it as a tuple of int.

    Parameters
    ----------
    grid_shape : sequence of two int
        A tuple, a list, a 1-D integer array or a ``torch.Size`` of two
        positive integers (Python, numpy or torch integers; bools refused).
    name : str, default="grid_shape"
        The argument's name, used in error messages.

    Returns
    -------
    tuple of int
        ``(rows, cols)``.

    Raises
    ------
    TypeError
        If `grid_shape` is a string, a set, a scalar or anything else than
        a sequence of integers (``2.5``, ``3.0``, ``True`` and NaN
        included).
    ValueError
        If it does not hold exactly two values, or one of them is < 1.

    Examples
    --------
    >>> from dsolo_sk._validation import check_grid_shape
    >>> check_grid_shape([4, 6])
    (4, 6)
    >>> check_grid_shape("44")
    Traceback (most recent call last):
    ...
    TypeError: grid_shape must be a pair of integers (rows, cols), got the
    string '44'; pass a tuple such as (4, 4).
    """
    what = f"{name} must be a pair of integers (rows, cols), got"
    if isinstance(grid_shape, (str, bytes)):
        raise TypeError(f"{what} the string {grid_shape!r}; pass a tuple "
                        "such as (4, 4).")
    if isinstance(grid_shape, AbstractSet) or isinstance(grid_shape, dict):
        raise TypeError(f"{what} a {type(grid_shape).__name__}, which has "
                        "no order; pass a tuple (rows, cols).")
    if getattr(grid_shape, "ndim", 1) != 1:
        raise TypeError(f"{what} an array of shape "
                        f"{tuple(grid_shape.shape)}; pass a tuple "
                        "(rows, cols).")
    try:
        values = tuple(grid_shape)
    except TypeError:
        raise TypeError(f"{what} {grid_shape!r} of type "
                        f"{type(grid_shape).__name__}.") from None
    if len(values) != 2:
        raise ValueError(f"{name} must hold two integers (rows, cols), got "
                         f"{len(values)}: {grid_shape!r}.")
    out = []
    for k, (axis, v) in enumerate(zip(("rows", "cols"), values)):
        label = f"{name}[{k}] ({axis})"
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0 and not \
                isinstance(v, np.generic):
            v = v.item()  # a 0-d torch tensor
        check_scalar(v, label, target_type=Integral)
        if v < 1:
            raise ValueError(f"{label} must be >= 1 (a positive count of "
                             f"patches), got {v!r}.")
        out.append(int(v))
    return tuple(out)


def check_option(value, name, options):
    """Check that `value` is one of `options`; return it unchanged."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(
            f"{name} must be one of {sorted(options)}, got {value!r}."
        )
    return value


def check_sample_list(X, *, name="X"):
    """Refuse a bare array or an empty collection; return a list.

    Images and feature sets differ in size, so a batch is a list. A bare
    (H, W, 3) array would be split along its rows by scikit-learn's
    cross-validation, so it is refused.
    """
    if isinstance(X, np.ndarray) or hasattr(X, "__array_interface__"):
        raise TypeError(
            f"{name} must be a list of images or feature sets, got a bare "
            f"array of shape {getattr(X, 'shape', '?')}; wrap a single "
            f"sample in a list: [{name}]."
        )
    if isinstance(X, (str, bytes)):
        raise TypeError(
            f"{name} must be a list, got the bare string {X!r}; wrap it in "
            "a list."
        )
    try:
        X = list(X)
    except TypeError:
        raise TypeError(
            f"{name} must be a list of images or feature sets, got "
            f"{type(X).__name__}."
        ) from None
    if not X:
        raise ValueError(f"{name} is empty: pass at least one sample.")
    return X


def check_masks(y, shapes, n_classes, *, name="y"):
    """Validate ground-truth masks against the images they belong to.

    Parameters
    ----------
    y : list of array-like of shape (H, W)
        Integer label maps; 255 marks pixels to ignore.
    shapes : list of tuple of int
        The (H, W) of each sample's image.
    n_classes : int
        Labels must lie in ``[0, n_classes)`` or equal 255.

    Returns
    -------
    list of ndarray of shape (H, W), dtype int64
    """
    y = check_sample_list(y, name=name)
    if len(y) != len(shapes):
        raise ValueError(
            f"{name} holds {len(y)} masks for {len(shapes)} samples; pass "
            "one mask per sample."
        )
    out = []
    for k, (mask, shape) in enumerate(zip(y, shapes)):
        mask = np.asarray(mask)
        if mask.dtype == bool or not np.issubdtype(mask.dtype, np.integer):
            raise TypeError(
                f"{name}[{k}] must be an integer label map, got dtype "
                f"{mask.dtype}; convert it with mask.astype(np.int64) after "
                "checking that it holds class indices."
            )
        if mask.shape != tuple(shape):
            raise ValueError(
                f"{name}[{k}] has shape {mask.shape} but its image is "
                f"{tuple(shape)}; masks must have the image's height and "
                "width."
            )
        bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= n_classes))
        if bad.any():
            vals = np.unique(mask[bad])[:10].tolist()
            raise ValueError(
                f"{name}[{k}] holds labels {vals} outside the {n_classes} "
                f"classes (valid: 0..{n_classes - 1}, or {IGNORE_INDEX} to "
                "ignore a pixel)."
            )
        out.append(mask.astype(np.int64, copy=False))
    return out
