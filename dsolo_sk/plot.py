"""Pictures of label maps: a palette in which every class shows, overlays.

Label maps index the classes from 0. The usual segmentation palette, PASCAL
VOC's, draws class 0 (the background there) in black, which on an overlay
reads as "unlabelled"; with open-vocabulary classes, class 0 is as much a
class as any other. :func:`label_palette` gives every class, 0 included, a
visible colour; :func:`overlay_labels` paints a label map over its image
(with :func:`skimage.color.label2rgb`) and :func:`plot_overlay` draws it
with a legend on a matplotlib axes.

.. rubric:: Examples

>>> import numpy as np
>>> from dsolo_sk.plot import label_palette, overlay_labels
>>> image = np.full((4, 6, 3), 128, np.uint8)
>>> labels = np.repeat([[0, 0, 1, 1, 2, 2]], 4, axis=0)
>>> overlay = overlay_labels(image, labels)
>>> overlay.shape, overlay.dtype
((4, 6, 3), dtype('uint8'))
>>> bool(np.all(overlay[:, 0] != image[:, 0]))  # class 0 is painted too
True
"""

import colorsys
import functools

import numpy as np

__all__ = ["label_palette", "overlay_labels", "plot_overlay", "save_overlay",
           "DISTINCT_COLOURS", "MAX_LEGEND"]

#: Classes of :func:`label_palette` that all get different colours; class
#: ``k`` beyond them gets the colour of class ``k % DISTINCT_COLOURS``.
DISTINCT_COLOURS = 4096
#: Default `max_legend` of :func:`plot_overlay`: the legend lists at most
#: this many classes (the largest by area), then says how many are left.
MAX_LEGEND = 20
_MAX_PALETTE = 2 ** 24


def label_palette(n_classes):
    """A colour for every class, each of them visible (none black).

    The first 20 classes get Tableau's colours (matplotlib's ``tab10``,
    then the light ``tab20`` variants); the next ones hues spaced by the
    golden angle, at alternating saturation and brightness. Up to
    :data:`DISTINCT_COLOURS` (4096) classes all colours differ; past
    them the colours cycle. The palette of ``n`` classes is the first
    ``n`` rows of any larger one, so class ``k`` keeps its colour.

    Parameters
    ----------
    n_classes : int
        Number of classes, 1 to 2 ** 24.

    Returns
    -------
    ndarray of shape (n_classes, 3), uint8
        RGB colour of class ``k`` in row ``k``.

    Examples
    --------
    >>> from dsolo_sk.plot import label_palette
    >>> label_palette(3)
    array([[ 31, 119, 180],
           [255, 127,  14],
           [ 44, 160,  44]], dtype=uint8)
    >>> pal = label_palette(500)
    >>> len({tuple(c) for c in pal}), int(pal.max(1).min()) > 100
    (500, True)
    """
    from numbers import Integral

    from ._validation import check_scalar

    check_scalar(n_classes, "n_classes", target_type=Integral, min_val=1,
                 max_val=_MAX_PALETTE)
    n_classes = int(n_classes)
    if n_classes <= DISTINCT_COLOURS:
        return _distinct_colours(n_classes).copy()
    return np.resize(_distinct_colours(DISTINCT_COLOURS), (n_classes, 3))


@functools.lru_cache(maxsize=8)
def _distinct_colours(n):
    """The first `n` (at most :data:`DISTINCT_COLOURS`) distinct colours."""
    from matplotlib import colormaps

    tab20 = np.round(255 * np.asarray(colormaps["tab20"].colors)).astype(int)
    # tab10 is tab20's even entries; their light variants follow
    tableau = [tuple(int(v) for v in c)
               for c in np.concatenate([tab20[0::2], tab20[1::2]])]
    colours = tableau[:n]
    seen = set(colours)
    k = 0
    while len(colours) < n:
        hue = (0.13 + 0.381966 * k) % 1.0  # golden-angle steps
        sat = (0.85, 0.55, 0.7)[k % 3]
        val = (0.95, 0.8, 0.65)[(k // 3) % 3]
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        if rgb not in seen:
            colours.append(rgb)
            seen.add(rgb)
        k += 1
    return np.asarray(colours, dtype=np.uint8)


def _check_pair(image, labels):
    from .features._images import to_rgb_uint8

    image = to_rgb_uint8(image, name="image")
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 2-D integer label map, got an array of shape "
            f"{labels.shape} and dtype {labels.dtype}."
        )
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"labels has shape {labels.shape} but the image is "
            f"{image.shape[:2]}; pass the label map predicted for this "
            "image."
        )
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be class indices >= 0.")
    return image, labels


def _palette_for(labels, palette):
    n = int(labels.max()) + 1 if labels.size else 1
    if palette is None:
        return label_palette(max(n, 1))
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) < n:
        raise ValueError(
            f"palette must be an (n_classes, 3) array of RGB colours with a "
            f"row for every label up to {n - 1}, got shape {palette.shape}."
        )
    return palette


def overlay_labels(image, labels, *, palette=None, alpha=0.45, saturation=0.0):
    """Paint a label map over its image.

    A thin layer over :func:`skimage.color.label2rgb` that keeps one colour
    per class index whichever classes are present (``label2rgb`` alone
    colours the labels by rank), with no background label.

    Parameters
    ----------
    image : array-like of shape (H, W[, 3]), PIL image or path
        The image, converted to RGB uint8 as the extractors do.
    labels : array-like of shape (H, W), int
        Class indices, from 0.
    palette : array-like of shape (n_classes, 3), optional
        RGB colours in 0-255, one row per class; default
        :func:`label_palette`.
    alpha : float, default=0.45
        Opacity of the colours over the image, in [0, 1].
    saturation : float, default=0.0
        Saturation kept from the image under the colours, in [0, 1]: 0
        shows it in grey, so the class colours read clearly; 1 keeps its
        colours.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.plot import overlay_labels
    >>> image = np.zeros((2, 2, 3), np.uint8)
    >>> overlay_labels(image, [[0, 1], [1, 1]], alpha=1)[:, :, 0]
    array([[ 31, 255],
           [255, 255]], dtype=uint8)
    """
    from skimage.color import label2rgb

    from ._validation import check_scalar

    check_scalar(alpha, "alpha", min_val=0, max_val=1)
    check_scalar(saturation, "saturation", min_val=0, max_val=1)
    image, labels = _check_pair(image, labels)
    pal = _palette_for(labels, palette)
    present = np.unique(labels)
    # label2rgb gives the k-th smallest present label the k-th colour
    colours = np.asarray(pal, dtype=float)[present] / 255.0
    out = label2rgb(labels, image=image, colors=list(colours), alpha=alpha,
                    bg_label=-1, saturation=saturation, kind="overlay")
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def plot_overlay(image, labels, class_names=None, *, ax=None, palette=None,
                 alpha=0.45, saturation=0.0, legend=True,
                 max_legend=MAX_LEGEND):
    """Draw a label map over its image, with a legend of its classes.

    Any number of classes can be drawn (:func:`label_palette`); the legend
    lists only the classes present in `labels`, at most `max_legend` of
    them (those on the most pixels, in class order), and then a last line
    ``"+ K more classes"`` saying how many it leaves out.

    Parameters
    ----------
    image : array-like of shape (H, W[, 3]), PIL image or path
    labels : array-like of shape (H, W), int
        Class indices, from 0.
    class_names : sequence of str, optional
        Name of each class index, for the legend (a list or tuple of
        strings, one per class: at least one more than the largest label);
        default ``"0"``, ``"1"``, ...
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure's (``plt.subplots()``).
    palette, alpha, saturation
        As in :func:`overlay_labels`; a `palette` needs a colour for every
        name of `class_names`.
    legend : bool, default=True
        Show a legend of the classes present in `labels`, to the right of
        the image.
    max_legend : int or None, default=20
        Most classes the legend lists (:data:`MAX_LEGEND`); None lists
        every class present.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on. Save the picture with
        ``ax.figure.savefig("overlay.png", bbox_inches="tight")`` (or draw
        and save in one call with :func:`save_overlay`), or show it with
        ``plt.show()`` (``import matplotlib.pyplot as plt``) when `ax` was
        left out and pyplot made the figure.

    Raises
    ------
    TypeError
        If `class_names` is a string, a set, or holds something else than
        strings; if `max_legend` is not an integer.
    ValueError
        If `class_names` has no name for a label, `palette` no colour for
        a name, or `max_legend` is < 1.

    Examples
    --------
    >>> import numpy as np
    >>> from matplotlib.figure import Figure
    >>> from dsolo_sk.plot import plot_overlay
    >>> image = np.full((20, 30, 3), 200, np.uint8)
    >>> labels = np.zeros((20, 30), int)
    >>> labels[:, 15:] = 2
    >>> ax = plot_overlay(image, labels, ["sky", "sea", "sand"],
    ...                   ax=Figure().add_subplot())
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['sky', 'sand']
    """
    from numbers import Integral

    from matplotlib.patches import Patch

    from ._validation import check_scalar

    image, labels = _check_pair(image, labels)
    if max_legend is not None:
        check_scalar(max_legend, "max_legend", target_type=Integral,
                     min_val=1, unit="classes")
    names = None if class_names is None else _check_names(class_names)
    pal = _palette_for(labels, palette)
    present, counts = np.unique(labels, return_counts=True)
    if names is None:
        names = [str(k) for k in range(len(pal))]
    if present.size and present[-1] >= len(names):
        raise ValueError(
            f"class_names has {len(names)} names but labels holds "
            f"class {int(present[-1])}; give a name to every class."
        )
    if palette is None and len(pal) < len(names):
        pal = label_palette(len(names))
    if len(pal) < len(names):
        raise ValueError(
            f"palette has {len(pal)} colours but class_names names "
            f"{len(names)} classes; give a colour to every class."
        )
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    ax.imshow(overlay_labels(image, labels, palette=pal, alpha=alpha,
                             saturation=saturation), interpolation="nearest")
    ax.set_axis_off()
    if legend and present.size:
        shown = present
        if max_legend is not None and len(present) > max_legend:
            # the largest classes (ties: the lower index), in class order
            order = np.lexsort((present, -counts))[:int(max_legend)]
            shown = np.sort(present[order])
        handles = [Patch(facecolor=np.asarray(pal[k]) / 255.0,
                         edgecolor="none", label=names[k]) for k in shown]
        if len(shown) < len(present):
            left = len(present) - len(shown)
            handles.append(Patch(facecolor="none", edgecolor="none",
                                 label=f"+ {left} more class"
                                 + ("es" if left > 1 else "")))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1),
                  borderaxespad=0, frameon=False, fontsize="small")
    return ax


def _check_names(class_names):
    """`class_names` as a list of str, or a clear error."""
    from ._validation import check_string_list

    if isinstance(class_names, dict):
        raise TypeError(
            "class_names is a dict, whose order does not say which name is "
            "which label; pass a list in label order."
        )
    return check_string_list(class_names, name="class_names")


def save_overlay(path, image, labels, class_names=None, *, dpi=100, **kwargs):
    """Write :func:`plot_overlay`'s picture to an image file.

    Draws on a figure of its own (no pyplot state, no display needed) sized
    so that the image keeps its resolution at `dpi`, with the legend beside
    it. The path is checked before anything is drawn; its folder is created
    when missing.

    Parameters
    ----------
    path : str or path-like
        Output file, not a folder; the format follows the extension
        (``.png``, ``.jpg``, ``.pdf``, ``.svg``, ... : what matplotlib's
        Agg canvas writes).
    image, labels, class_names
        As in :func:`plot_overlay`.
    dpi : int, default=100
        Pixels per inch of the figure, 1 to 2400.
    **kwargs
        Passed to :func:`plot_overlay` (``palette``, ``alpha``,
        ``saturation``, ``legend``, ``max_legend``).

    Raises
    ------
    dsolo_sk.exceptions.UnwritableFileError
        If `path` is a folder, lies below a file or in a folder that cannot
        be written, or has no extension matplotlib writes.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from dsolo_sk.plot import save_overlay
    >>> path = os.path.join(tempfile.mkdtemp(), "overlay.png")
    >>> save_overlay(path, np.zeros((20, 30, 3), np.uint8),
    ...              np.zeros((20, 30), int), ["sky"])
    >>> os.path.getsize(path) > 0
    True
    """
    import os
    from numbers import Real

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from . import _io
    from ._validation import check_scalar

    formats = FigureCanvasAgg.get_supported_filetypes()
    path = _io.check_output_file(path, "path", suffixes=formats)
    check_scalar(dpi, "dpi", target_type=Real, min_val=1, max_val=2400,
                 unit="pixels per inch")
    image, labels = _check_pair(image, labels)
    h, w = labels.shape
    fig = Figure(figsize=(max(w, 64) / dpi, max(h, 64) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    plot_overlay(image, labels, class_names, ax=ax, **kwargs)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.05,
                format=os.path.splitext(path)[1].lower().lstrip("."))
