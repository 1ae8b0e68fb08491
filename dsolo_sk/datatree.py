"""Batches of differently sized images as one :class:`xarray.DataTree`.

Images, score maps and label maps of a batch rarely share a size, so they
cannot be stacked into one array. :func:`gather_datatree` puts each image's
arrays in its own node of a tree (one :class:`xarray.Dataset` per image,
with labelled dimensions ``y``, ``x``, ``channel`` and ``class``);
:func:`scatter_datatree` gives the per-image lists back. Operations that
work image by image then apply to the whole batch, for example
``tree.map_over_datasets(...)``, and the batch can be written to one
netCDF or Zarr store with ``tree.to_netcdf(...)``.
"""

import numbers

import numpy as np
import xarray as xr

from ._validation import check_sample_list

__all__ = ["gather_datatree", "scatter_datatree"]


def _as_variable(item, name, key, k):
    """One item of a batch as a DataArray (or a Dataset, kept as is)."""
    if isinstance(item, (xr.DataArray, xr.Dataset)):
        return item
    arr = np.asarray(item)
    if arr.ndim == 2:
        dims = ("y", "x")
    elif arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        dims = ("y", "x", "channel")
    else:
        raise ValueError(
            f"{key}[{k}] has shape {arr.shape}; a plain array must be a "
            "(H, W) map or an (H, W, C) image with 1, 3 or 4 channels. Wrap "
            "other arrays in an xarray.DataArray with named dimensions, for "
            "example xr.DataArray(scores, dims=('class', 'y', 'x'))."
        )
    return xr.DataArray(arr, dims=dims, name=name)


def _node_names(names, n):
    if names is None:
        width = max(3, len(str(n - 1)))
        return [f"image_{k:0{width}d}" for k in range(n)]
    names = check_sample_list(names, name="names")
    if len(names) != n:
        raise ValueError(
            f"names holds {len(names)} names for {n} images; pass one name "
            "per image."
        )
    out = []
    for k, name in enumerate(names):
        if isinstance(name, numbers.Integral) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(
                f"names[{k}] = {name!r} cannot name a tree node: use a "
                "non-empty string without '/'."
            )
        out.append(name)
    dups = sorted({n for n in out if out.count(n) > 1})
    if dups:
        raise ValueError(f"names holds duplicates {dups}; names must differ.")
    return out


def gather_datatree(names=None, attrs=None, **variables):
    """Gather per-image arrays of different sizes into one DataTree.

    Parameters
    ----------
    names : list of str, optional
        Node name of each image (file stems, say); default ``"image_000"``,
        ``"image_001"``, ...
    attrs : dict, optional
        Attributes of the root node (the class list, the run's settings).
    **variables : list
        Each keyword is a variable, its value the list of that variable
        for every image (all lists of one length): an
        :class:`xarray.DataArray` keeps its dimensions and coordinates
        (the score maps of :meth:`~dsolo_sk.DirectSegmenter.decision_function`,
        dims ``("class", "y", "x")``), a plain (H, W) array becomes dims
        ``("y", "x")`` (label maps, masks) and an (H, W, C) array dims
        ``("y", "x", "channel")`` (images). An :class:`xarray.Dataset`
        (a feature Dataset) adds all its variables under their own names.

    Returns
    -------
    tree : xarray.DataTree
        One child node per image, in order; each holds a Dataset with the
        image's variables.

    Raises
    ------
    ValueError
        If the lists differ in length, or the arrays of one image disagree
        on a dimension's size (a mask not of its image's size).

    See Also
    --------
    scatter_datatree : the per-image lists back.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk import DirectSegmenter, InterpolationUpsampler
    >>> from dsolo_sk.datasets import make_scenes
    >>> from dsolo_sk.datatree import gather_datatree
    >>> X, y = make_scenes(n_scenes=1, n_classes=5, image_size=64,
    ...                    random_state=0)
    >>> X2, y2 = make_scenes(n_scenes=1, n_classes=5, image_size=96,
    ...                      random_state=1)
    >>> seg = DirectSegmenter(upsampler=InterpolationUpsampler("nearest"))
    >>> tree = gather_datatree(
    ...     scores=seg.decision_function(X + X2),
    ...     labels=seg.predict(X + X2), masks=y + y2,
    ...     images=[ds["image"].values for ds in X + X2])
    >>> list(tree.children)
    ['image_000', 'image_001']
    >>> dict(tree["image_001"].dataset.sizes)
    {'class': 5, 'y': 96, 'x': 96, 'channel': 3}
    >>> tree["image_000"]["scores"].dims
    ('class', 'y', 'x')
    """
    if not variables:
        raise TypeError(
            "gather_datatree needs at least one variable, for example "
            "gather_datatree(scores=seg.decision_function(X), masks=y)."
        )
    lists = {key: check_sample_list(val, name=key)
             for key, val in variables.items()}
    lengths = {key: len(val) for key, val in lists.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"the variables hold different numbers of images {lengths}; "
            "pass one entry per image in each."
        )
    n = next(iter(lengths.values()))
    node_names = _node_names(names, n)
    children = {}
    for k, node in enumerate(node_names):
        parts = [_as_variable(lists[key][k], key, key, k) for key in lists]
        arrays = {}
        datasets = []
        for key, part in zip(lists, parts):
            if isinstance(part, xr.Dataset):
                datasets.append(part)
            else:
                arrays[key] = part.rename(key)
        try:
            ds = xr.merge([xr.Dataset(arrays), *datasets],
                          compat="no_conflicts", join="exact",
                          combine_attrs="drop_conflicts")
        except ValueError as exc:
            sizes = {key: dict(p.sizes) for key, p in zip(lists, parts)}
            raise ValueError(
                f"the arrays of image {k} ({node!r}) disagree on their "
                f"sizes or coordinates: {sizes} ({exc})"
            ) from None
        children[node] = xr.DataTree(ds)
    return xr.DataTree(dataset=xr.Dataset(attrs=dict(attrs or {})),
                       children=children)


def scatter_datatree(tree, variable=None):
    """The per-image Datasets (or one variable) of a gathered DataTree.

    Parameters
    ----------
    tree : xarray.DataTree
        As made by :func:`gather_datatree`: one child node per image.
    variable : str, optional
        Return this variable of every image instead of whole Datasets.

    Returns
    -------
    list of xarray.Dataset or xarray.DataArray
        In the order of the tree's children.

    Examples
    --------
    >>> import numpy as np
    >>> from dsolo_sk.datatree import gather_datatree, scatter_datatree
    >>> masks = [np.zeros((2, 3), int), np.ones((4, 5), int)]
    >>> [m.shape for m in scatter_datatree(gather_datatree(masks=masks),
    ...                                     "masks")]
    [(2, 3), (4, 5)]
    """
    if not isinstance(tree, xr.DataTree):
        raise TypeError(
            f"tree must be an xarray.DataTree, got {type(tree).__name__}."
        )
    out = []
    for name, child in tree.children.items():
        ds = child.to_dataset()
        if variable is None:
            out.append(ds)
        elif variable not in ds:
            raise KeyError(
                f"node {name!r} has no variable {variable!r}; it has "
                f"{sorted(ds.data_vars)}."
            )
        else:
            out.append(ds[variable])
    return out
