"""Families of generated scenes, for judging a method beyond one generator.

:func:`make_scenes` draws every scene from one set of statistics; defaults
tuned on it need not carry over to other images. The families here vary the
three things a segmenter of this kind depends on, independently:

- the *layout*: Voronoi cells, one dominant background class with a few
  objects, many classes in many small regions, street-like bands with thin
  and small objects, classes that share their mean colour and differ only
  by texture;
- the *affinity*, computed from the rendered image alone: a colour and
  position kernel, a transformer-like attention with or without attention
  sinks, a blurred and noisy kernel;
- the *logit statistics*, drawn per scene over ranges: margin, class bias,
  leakage, confusion between similar classes, noise level and correlation,
  and the overall scale and offset of the logits.

Rendering, layouts and logits are written here with numpy and scipy: they
are a few array operations each, and no drawing library is a dependency of
the package.
"""

import json

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from sklearn.utils import check_random_state

from .._validation import check_scalar
from ._classnames import load_class_names
from ._synthetic import _check_n_scenes
from ..features._contract import from_arrays
from ..features.affinity import (ColorPositionAffinity, DegradedAffinity,
                                 ProjectedAttentionAffinity)

__all__ = ["make_scene_family", "SCENE_FAMILIES", "SYNTHETIC_FAMILIES",
           "CLIP_FAMILIES", "AFFINITY_KINDS", "LOGIT_RANGES"]

#: Names of the families of the synthetic world: every patch has a small
#: margin for its own class (statistics of :data:`LOGIT_RANGES`).
SYNTHETIC_FAMILIES = ("voronoi", "background", "many_class", "street",
                      "texture", "voronoi_attention", "voronoi_sink",
                      "voronoi_noisy")
#: Names of the families of the CLIP-like world: logits built from what is
#: published about vanilla CLIP's dense logits (global class scores, text
#: bias, background lift, high-norm tokens, a weak local signal), one per
#: benchmark type, with the colour and position affinity and (``_sink``)
#: with an attention whose sinks are the high-norm tokens.
CLIP_FAMILIES = ("clip_voc", "clip_voc_sink", "clip_stuff",
                 "clip_stuff_sink", "clip_city", "clip_city_sink",
                 "clip_ade", "clip_ade_sink")
#: Names of all the scene families of :func:`make_scene_family`: both
#: worlds.
SCENE_FAMILIES = SYNTHETIC_FAMILIES + CLIP_FAMILIES

# generators of the other worlds, registered by their modules
_GENERATORS = {}

#: Kinds of affinity :func:`make_scene_family` can compute from the image.
AFFINITY_KINDS = ("color_position", "attention", "sink", "noisy")

#: Ranges over which the logit statistics of each scene are drawn
#: (uniformly; ``logit_scale`` log-uniformly). ``margin``, ``cosine_level``
#: and ``logit_offset`` are in cosine units; ``noise``, ``common_noise``,
#: ``bias`` and ``leakage`` in units of the scene's margin;
#: ``noise_correlation`` and ``context`` in patches; ``confusion`` is a
#: fraction.
LOGIT_RANGES = {
    "margin": (0.01, 0.05),
    "noise": (0.5, 1.3),
    "noise_correlation": (0.5, 2.5),
    "common_noise": (0.5, 2.0),
    "bias": (0.2, 1.0),
    "leakage": (0.2, 1.5),
    "leakage_power": (0.3, 1.0),
    "confusion": (0.0, 0.4),
    "context": (0.3, 1.2),
    "cosine_level": (0.15, 0.3),
    "logit_offset": (-0.3, 0.1),
}

# family -> (layout, number of classes, default affinity kind)
_FAMILIES = {
    "voronoi": ("voronoi", 12, "color_position"),
    "background": ("background", 21, "attention"),
    "many_class": ("many_class", 150, "noisy"),
    "street": ("street", 19, "sink"),
    "texture": ("texture", 10, "attention"),
    "voronoi_attention": ("voronoi", 12, "attention"),
    "voronoi_sink": ("voronoi", 12, "sink"),
    "voronoi_noisy": ("voronoi", 12, "noisy"),
}

# The street classes, in the order of the Cityscapes class file.
(_ROAD, _SIDEWALK, _BUILDING, _WALL, _FENCE, _POLE, _LIGHT, _SIGN, _VEG,
 _TERRAIN, _SKY, _PERSON, _RIDER, _CAR, _TRUCK, _BUS, _TRAIN, _MOTO,
 _BIKE) = range(19)

_TEXTURES = ("flat", "stripes", "checker", "blotch", "grain")


# -- appearance ----------------------------------------------------------------
def _smooth_field(size, sigma, rng):
    """A smooth Gaussian random field of unit spread.

    `sigma` is the correlation length as a fraction of `size`. The field is
    drawn on a coarse grid and interpolated: a wide Gaussian filter at full
    resolution would dominate the generation time.
    """
    n = int(min(size, max(16, np.ceil(4 / sigma))))
    field = ndimage.gaussian_filter(rng.normal(size=(n, n)), sigma * n,
                                    mode="wrap")
    field = ndimage.zoom(field, size / n, order=1, mode="nearest",
                         grid_mode=True)[:size, :size]
    return field / (field.std() + 1e-12)


def _random_appearance(rng, colour=None, kinds=_TEXTURES, amp=(0.03, 0.15)):
    """One appearance: mean colour, texture kind and parameters, grain."""
    return {
        "colour": (rng.uniform(0.1, 0.9, 3) if colour is None
                   else np.asarray(colour, float)),
        "kind": kinds[rng.randint(len(kinds))],
        "angle": rng.uniform(0, np.pi),
        "freq": rng.uniform(0.04, 0.25),   # cycles per pixel at 448 px
        "amp": rng.uniform(*amp),
        "grain": rng.uniform(0.01, 0.05),
    }


class _Appearances:
    """Per-class appearances of a family: a main and a secondary tone."""

    def __init__(self, n_classes, rng, look=None, shared_colour=False):
        self.main = [_random_appearance(rng) for _ in range(n_classes)]
        self.second = [_random_appearance(rng) for _ in range(n_classes)]
        for c, (colour, kind, amp) in (look or {}).items():
            if colour is not None:
                self.main[c]["colour"] = np.asarray(colour, float)
            self.main[c].update(kind=kind, amp=amp)
        self.shared_colour = shared_colour
        if shared_colour:
            # Texture-only: zero-mean textures of similar contrast.
            kinds = ("stripes", "checker", "grain")
            for c in range(n_classes):
                self.main[c] = _random_appearance(rng, colour=np.zeros(3),
                                                  kinds=kinds,
                                                  amp=(0.10, 0.18))
                self.main[c]["kind"] = kinds[c % len(kinds)]
                if self.main[c]["kind"] == "grain":
                    self.main[c]["amp"] = 0.0
                    self.main[c]["grain"] = rng.uniform(0.08, 0.14)

    def sample(self, cls, rng, tone=0, jitter=0.05, colour=None):
        """The appearance of one instance of `cls`, with colour jitter."""
        app = dict((self.second if tone else self.main)[cls])
        if colour is not None:
            app["colour"] = np.asarray(colour, float)
        if not self.shared_colour:
            app["colour"] = np.clip(app["colour"]
                                    + rng.normal(scale=jitter, size=3), 0, 1)
        app["phase"] = rng.uniform(0, 2 * np.pi)
        return app


class _Canvas:
    """A label map and a region map painted shape by shape."""

    def __init__(self, size, cls, app):
        self.size = size
        self.mask = np.full((size, size), cls, np.int64)
        self.region = np.zeros((size, size), np.int64)
        self.apps = [app]

    def paint(self, where, cls, app):
        where = np.asarray(where, bool)
        self.mask[where] = cls
        self.region[where] = len(self.apps)
        self.apps.append(app)


def _render(canvas, rng, shading, sensor_noise, shared_colour=None):
    """Render a canvas: colour, texture, grain, shading, optics, sensor."""
    size = canvas.size
    apps = canvas.apps
    reg = canvas.region
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # Frequencies are given at 448 px: scale them with the image, below the
    # Nyquist frequency.
    zoom = 448.0 / size

    def per_region(key):
        return np.asarray([a[key] for a in apps])[reg]

    colour = np.asarray([a["colour"] for a in apps])[reg]
    if shared_colour is not None:
        colour = colour + shared_colour
    angle = per_region("angle")
    freq = np.minimum(per_region("freq") * zoom, 0.4)
    phase, amp = per_region("phase"), per_region("amp")
    kind = np.asarray([_TEXTURES.index(a["kind"]) for a in apps])[reg]
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    stripes = np.sin(2 * np.pi * freq * u + phase)
    checker = np.sign(np.sin(2 * np.pi * freq * u + phase)
                      * np.sin(2 * np.pi * freq * v + phase))
    blotch = _smooth_field(size, 1 / 40, rng)
    texture = np.select([kind == 1, kind == 2, kind == 3],
                        [stripes, checker, blotch], 0.0)
    img = colour + (amp * texture)[..., None]
    img += rng.normal(size=img.shape) * per_region("grain")[..., None]
    if shading > 0:
        field = _smooth_field(size, 1 / 4, rng)
        img *= (1 + shading * field)[..., None]
    img = ndimage.gaussian_filter(img, (0.7, 0.7, 0), truncate=3.0)  # optics
    img += rng.normal(scale=sensor_noise, size=img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


# -- layouts -------------------------------------------------------------------
def _warped_voronoi(size, labels, rng, warp):
    """Region index of each pixel for seeds on a smoothly warped plane."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    disp = [_smooth_field(size, 1 / 8, rng) * warp * size for _ in range(2)]
    seeds = rng.uniform(0, size, size=(len(labels), 2))
    pts = np.stack([(yy + disp[0]).ravel(), (xx + disp[1]).ravel()], 1)
    _, idx = cKDTree(seeds).query(pts)
    return idx.reshape(size, size)


def _blob(size, rng, centre, radius, aspect=(0.5, 2.0)):
    """A warped, rotated ellipse: an object's silhouette."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    a = rng.uniform(*aspect)
    rot = rng.uniform(0, np.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (np.cos(rot) * dx + np.sin(rot) * dy) / np.sqrt(a)
    v = (-np.sin(rot) * dx + np.cos(rot) * dy) * np.sqrt(a)
    theta = np.arctan2(v, u)
    r = radius * (1 + sum(rng.uniform(0, 0.08) * np.cos(k * theta
                                                        + rng.uniform(0, 7))
                          for k in (2, 3, 4)))
    return u ** 2 + v ** 2 <= r ** 2


def _layout_voronoi(size, present, rng, app, n_seeds):
    labels = np.concatenate([present,
                             rng.choice(present, n_seeds - len(present))])
    cells = _warped_voronoi(size, labels, rng, rng.uniform(0.04, 0.12))
    canvas = _Canvas(size, labels[0], app.sample(labels[0], rng))
    for k in range(1, len(labels)):
        canvas.paint(cells == k, labels[k], app.sample(labels[k], rng))
    return canvas


def _voronoi(size, n_classes, rng, app):
    present = rng.choice(n_classes, rng.randint(2, 6), replace=False)
    return _layout_voronoi(size, present, rng, app,
                           rng.randint(len(present), 2 * len(present) + 1))


def _texture(size, n_classes, rng, app):
    return _voronoi(size, n_classes, rng, app)


def _many_class(size, n_classes, rng, app):
    present = rng.choice(n_classes, rng.randint(5, 13), replace=False)
    canvas = _layout_voronoi(size, present, rng, app,
                             rng.randint(len(present), 3 * len(present) + 1))
    for _ in range(rng.randint(2, 9)):  # small things on top of the cells
        cls = rng.choice(present)
        blob = _blob(size, rng, rng.uniform(0, size, 2),
                     rng.uniform(0.03, 0.08) * size)
        canvas.paint(blob, cls, app.sample(cls, rng))
    return canvas


def _background(size, n_classes, rng, app, radius=(0.06, 0.25)):
    """Class 0 covers most pixels (several stuff regions); 1-3 objects of
    `radius` (a range, in image sides)."""
    n_stuff = rng.randint(2, 6)
    cells = _warped_voronoi(size, np.zeros(n_stuff), rng, 0.1)
    canvas = _Canvas(size, 0, _random_appearance(rng) | {"phase": 0.0})
    for k in range(1, n_stuff):
        canvas.paint(cells == k, 0,
                     _random_appearance(rng) | {"phase": rng.uniform(0, 7)})
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.randint(1, 4)):
        cls = rng.randint(1, n_classes)
        centre = rng.uniform(0.1, 0.9, 2) * size
        blob = _blob(size, rng, centre, rng.uniform(*radius) * size)
        canvas.paint(blob, cls, app.sample(cls, rng))
        # A second tone on part of the object (clothes, windows, a head).
        t = rng.uniform(0, 2 * np.pi)
        side = (np.cos(t) * (xx - centre[1]) + np.sin(t) * (yy - centre[0])
                > rng.uniform(0.1, 0.5) * np.sqrt(blob.sum() / np.pi))
        canvas.paint(blob & side, cls, app.sample(cls, rng, tone=1))
    return canvas


def _street(size, n_classes, rng, app):
    """Sky, a skyline of buildings, a road in perspective, small things."""
    S = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    hz = rng.uniform(0.38, 0.55) * S             # horizon
    vx = rng.uniform(0.3, 0.7) * S               # vanishing point
    canvas = _Canvas(size, _SKY, app.sample(_SKY, rng, jitter=0.03))
    # Skyline: facades of random widths and heights, a few trees.
    x0 = -rng.uniform(0, 0.1) * S
    while x0 < S:
        width = rng.uniform(0.08, 0.3) * S
        if rng.uniform() < 0.85:
            top = rng.uniform(0.02 * S, hz - 0.08 * S)
            canvas.paint((xx >= x0) & (xx < x0 + width) & (yy >= top)
                         & (yy < hz + 0.05 * S), _BUILDING,
                         app.sample(_BUILDING, rng, jitter=0.08))
        x0 += width
    for _ in range(rng.randint(0, 4)):
        canvas.paint(_blob(size, rng, (hz - rng.uniform(0.05, 0.2) * S,
                                       rng.uniform(0, S)),
                           rng.uniform(0.04, 0.12) * S, aspect=(0.6, 1.5)),
                     _VEG, app.sample(_VEG, rng))
    # Ground: road between two lines through the vanishing point, then
    # sidewalks, then terrain or vegetation on the sides.
    ground = yy >= hz
    depth = np.clip((yy - hz) / (S - hz), 0, 1)   # 0 at horizon, 1 at bottom
    xl, xr = rng.uniform(-0.3, 0.2) * S, rng.uniform(0.8, 1.3) * S
    left, right = vx + (xl - vx) * depth, vx + (xr - vx) * depth
    walk_bottom = rng.uniform(0.1, 0.25) * S
    walk = walk_bottom * depth
    side_cls = [_TERRAIN, _VEG][rng.randint(2)]
    canvas.paint(ground, side_cls, app.sample(side_cls, rng))
    canvas.paint(ground & (xx >= left - walk) & (xx < right + walk),
                 _SIDEWALK, app.sample(_SIDEWALK, rng, jitter=0.03))
    canvas.paint(ground & (xx >= left) & (xx < right), _ROAD,
                 app.sample(_ROAD, rng, jitter=0.03))
    if rng.uniform() < 0.6:  # a wall or fence along one side
        cls = [_WALL, _FENCE][rng.randint(2)]
        xa = rng.uniform(0, 0.6) * S
        canvas.paint((xx >= xa) & (xx < xa + rng.uniform(0.15, 0.4) * S)
                     & (yy >= hz - rng.uniform(0.03, 0.08) * S)
                     & (yy < hz + 0.02 * S), cls, app.sample(cls, rng))

    def edges(y):
        """Depth and the road's edges at row `y`."""
        d = (y - hz) / (S - hz)
        return d, vx + (xl - vx) * d, vx + (xr - vx) * d

    def on_road(y):
        d, lo, hi = edges(y)
        return rng.uniform(lo, hi), d

    def on_walk(y):
        d, lo, hi = edges(y)
        w = walk_bottom * d
        return (rng.uniform(lo - w, lo) if rng.uniform() < 0.5
                else rng.uniform(hi, hi + w)), d

    things = []  # (bottom y, painter), drawn far to near
    vehicles = [_CAR] * 6 + [_TRUCK, _BUS, _MOTO, _BIKE] + [_TRAIN] * (
        rng.uniform() < 0.1)
    for _ in range(rng.randint(1, 6)):
        things.append((rng.uniform(hz + 0.03 * S, S), "vehicle",
                       vehicles[rng.randint(len(vehicles))]))
    for _ in range(rng.randint(0, 5)):
        things.append((rng.uniform(hz + 0.03 * S, S), "person",
                       [_PERSON, _PERSON, _RIDER][rng.randint(3)]))
    for _ in range(rng.randint(1, 5)):
        things.append((rng.uniform(hz + 0.02 * S, S), "pole", _POLE))
    for yb, what, cls in sorted(things, key=lambda t: t[0]):
        if what == "vehicle":
            xc, d = on_road(yb)
            scale = {_CAR: 1.0, _TRUCK: 1.4, _BUS: 1.6, _TRAIN: 2.0,
                     _MOTO: 0.35, _BIKE: 0.3}[cls]
            w = 0.3 * S * max(d, 0.05) * scale * rng.uniform(0.8, 1.2)
            h = w * (0.6 if cls in (_CAR, _MOTO, _BIKE) else 0.8)
            if cls in (_MOTO, _BIKE):
                h = w * 1.2
            body = ((xx >= xc - w / 2) & (xx < xc + w / 2)
                    & (yy >= yb - h) & (yy < yb))
            vivid = (rng.uniform(0, 1, 3) if cls in (_CAR, _TRUCK, _BUS)
                     else None)
            canvas.paint(body, cls, app.sample(cls, rng, colour=vivid))
            if cls in (_CAR, _TRUCK, _BUS, _TRAIN):  # windows
                canvas.paint(body & (yy < yb - h * rng.uniform(0.45, 0.7))
                             & (abs(xx - xc) < w * 0.42), cls,
                             app.sample(cls, rng, tone=1))
            if cls in (_MOTO, _BIKE) and rng.uniform() < 0.7:
                # A rider on it.
                ph = h * 1.5
                canvas.paint(_blob(size, rng, (yb - h - ph * 0.3, xc),
                                   max(ph * 0.25, 1.0), aspect=(0.2, 0.3)),
                             _RIDER, app.sample(_RIDER, rng))
        elif what == "person":
            xc, d = on_walk(yb) if rng.uniform() < 0.7 else on_road(yb)
            h = 0.35 * S * max(d, 0.05) * rng.uniform(0.85, 1.15)
            body = (((xx - xc) / (0.17 * h)) ** 2
                    + ((yy - (yb - 0.42 * h)) / (0.42 * h)) ** 2 <= 1)
            head = ((xx - xc) ** 2 + (yy - (yb - 0.9 * h)) ** 2
                    <= (0.09 * h) ** 2)
            canvas.paint(body, cls, app.sample(cls, rng, colour=rng.uniform(
                0, 1, 3)))
            canvas.paint(head, cls, app.sample(cls, rng, tone=1))
        else:
            xc, d = on_walk(yb)
            height = rng.uniform(0.3, 0.6) * S * (0.4 + d)
            width = max(rng.uniform(0.005, 0.012) * S, 1.5)
            canvas.paint((abs(xx - xc) < width / 2) & (yy >= yb - height)
                         & (yy < yb), _POLE, app.sample(_POLE, rng))
            top = yb - height
            if rng.uniform() < 0.6:  # a sign or a light on top
                cls = [_SIGN, _LIGHT][rng.randint(2)]
                r = rng.uniform(0.015, 0.035) * S * (0.5 + d)
                hgt = r * (2.5 if cls == _LIGHT else 1.0)
                canvas.paint((abs(xx - xc) < r) & (yy >= top - hgt)
                             & (yy < top + hgt * 0.3), cls,
                             app.sample(cls, rng))
    return canvas


# Street classes: (mean colour or None for random, texture, amplitude).
_STREET_LOOK = {
    _ROAD: ((0.33, 0.33, 0.35), "grain", 0.0),
    _SIDEWALK: ((0.6, 0.57, 0.54), "checker", 0.03),
    _BUILDING: (None, "checker", 0.08),
    _WALL: ((0.55, 0.5, 0.44), "blotch", 0.04),
    _FENCE: ((0.45, 0.38, 0.28), "stripes", 0.1),
    _POLE: ((0.3, 0.3, 0.3), "flat", 0.0),
    _LIGHT: ((0.12, 0.12, 0.1), "flat", 0.0),
    _SIGN: ((0.85, 0.7, 0.1), "flat", 0.0),
    _VEG: ((0.25, 0.45, 0.18), "blotch", 0.1),
    _TERRAIN: ((0.52, 0.5, 0.3), "blotch", 0.05),
    _SKY: ((0.6, 0.75, 0.95), "blotch", 0.03),
    _TRAIN: ((0.7, 0.7, 0.72), "flat", 0.0),
    _MOTO: ((0.15, 0.15, 0.17), "flat", 0.0),
    _BIKE: ((0.2, 0.2, 0.22), "flat", 0.0),
}

def _objects(size, n_classes, rng, app):
    """The background layout with larger objects (VOC-like)."""
    return _background(size, n_classes, rng, app, radius=(0.1, 0.3))


_LAYOUTS = {"voronoi": _voronoi, "background": _background,
            "objects": _objects,
            "many_class": _many_class, "street": _street,
            "texture": _texture}


def _class_names(family, n_classes):
    layout = _FAMILIES[family][0]
    if layout == "street":
        return load_class_names("cityscapes")
    if layout == "background":
        return ["background"] + [f"object_{k:02d}" for k in range(1,
                                                                  n_classes)]
    if layout == "texture":
        return [f"texture_{k:02d}" for k in range(n_classes)]
    width = len(str(n_classes - 1))
    return [f"class_{k:0{width}d}" for k in range(n_classes)]


# -- logits --------------------------------------------------------------------
def _smooth_noise(shape, corr, rng):
    noise = ndimage.gaussian_filter(rng.normal(size=shape),
                                    (0,) * (len(shape) - 2) + (corr, corr))
    axes = (-2, -1)
    return noise / (noise.std(axis=axes, keepdims=True) + 1e-12)


def _draw_stats(rng, logit_scale):
    def u(key):
        return float(rng.uniform(*LOGIT_RANGES[key]))

    stats = {"margin": u("margin")}
    for key in ("noise", "common_noise", "bias", "leakage"):
        stats[key] = u(key) * stats["margin"]
    for key in ("leakage_power", "noise_correlation", "confusion", "context",
                "cosine_level", "logit_offset"):
        stats[key] = u(key)
    lo, hi = logit_scale
    draw = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    stats["logit_scale"] = float(lo) if lo == hi else draw
    return stats


def _logits(mask, grid, n_classes, stats, class_bias, similarity, rng):
    size = mask.shape[0]
    patch = size // grid
    # The class bias: mostly the family's, partly the scene's own.
    bias = np.sqrt(0.7) * class_bias + np.sqrt(0.3) * rng.normal(
        size=n_classes)
    onehot = mask[None] == np.arange(n_classes)[:, None, None]
    cover = onehot.reshape(n_classes, grid, patch, grid,
                           patch).mean(axis=(2, 4))
    area = cover.mean(axis=(1, 2))
    signal = ndimage.gaussian_filter(cover, (0, stats["context"],
                                             stats["context"]))
    kappa = stats["confusion"]
    signal = (1 - kappa) * signal + kappa * np.tensordot(similarity, signal,
                                                         axes=1)
    cos = (stats["cosine_level"] + stats["margin"] * signal
           + stats["bias"] * bias[:, None, None]
           + stats["leakage"] * ((area / area.max()) ** stats[
               "leakage_power"])[:, None, None]
           + stats["noise"] * _smooth_noise(cover.shape,
                                            stats["noise_correlation"], rng)
           + stats["common_noise"] * _smooth_noise(
               (1, grid, grid), stats["noise_correlation"], rng))
    return stats["logit_scale"] * (cos + stats["logit_offset"])


# -- affinities ----------------------------------------------------------------
def _affinity_spec(kind, family_attention, rng):
    """A JSON-able description of a scene's affinity extractor."""
    if kind == "color_position":
        return {"class": "ColorPositionAffinity", "params": {}}
    if kind == "noisy":
        return {"class": "DegradedAffinity",
                "params": {"resolution": float(rng.uniform(0.4, 0.7)),
                           "noise": float(rng.uniform(0.3, 0.8)),
                           "random_state": int(rng.randint(2 ** 31 - 1))},
                "affinity": {"class": "ColorPositionAffinity", "params": {}}}
    params = dict(family_attention)
    if kind == "sink":
        params.update(n_sinks=int(rng.randint(1, 5)),
                      sink_mass=float(rng.uniform(0.3, 0.7)))
    return {"class": "ProjectedAttentionAffinity", "params": params}


_AFFINITY_CLASSES = {c.__name__: c for c in (
    ColorPositionAffinity, DegradedAffinity, ProjectedAttentionAffinity)}


def _build_affinity(spec):
    params = dict(spec["params"])
    if "affinity" in spec:
        params["affinity"] = _build_affinity(spec["affinity"])
    return _AFFINITY_CLASSES[spec["class"]](**params)


def make_scene_family(family, n_scenes=8, *, image_size=448, patch_size=16,
                      affinity_kind=None, logit_scale=(1.0, 100.0),
                      random_state=None):
    r"""Generate scenes of one family, with ground truth, logits and affinity.

    A family fixes a layout, a vocabulary and a kind of affinity; the logit
    statistics are drawn anew for every scene over the ranges of
    :data:`LOGIT_RANGES`, so that a method must work across them, whatever
    the scale of the logits. The families of :data:`SCENE_FAMILIES`:

    ================= ===================================== ======= ===============
    family            layout                                classes affinity
    ================= ===================================== ======= ===============
    ``voronoi``       warped Voronoi cells, 2-5 classes     12      color_position
                      present
    ``background``    class 0 (several stuff regions)       21      attention
                      covers at least 60 % of the image;
                      1-3 two-tone objects
    ``many_class``    5-12 classes present in many          150     noisy
                      Voronoi cells and small blobs
    ``street``        sky, skyline of buildings, road and   19      sink
                      sidewalks in perspective, thin poles
                      with signs and lights, small cars
                      and people (the Cityscapes classes)
    ``texture``       Voronoi cells whose classes share     10      attention
                      one mean colour and differ only by
                      texture
    ``voronoi_*``     the ``voronoi`` scenes with the       12      attention,
                      affinity of the suffix                        sink, noisy
    ================= ===================================== ======= ===============

    For a given `random_state`, the ``voronoi`` family and its
    ``voronoi_*`` variants have the same images, masks and logits, so that
    they compare the affinities alone.

    **The CLIP-like world** (:data:`CLIP_FAMILIES`): ``clip_voc`` (VOC's
    21 classes, the background a class of many stuff names), ``clip_stuff``
    (COCO-Stuff's 171), ``clip_city`` (Cityscapes' 19) and ``clip_ade``
    (ADE20K's 150), each with the colour and position affinity, and each
    ``*_sink`` with sink attention at the high-norm tokens. Their logits
    follow what is published about vanilla CLIP ViT-B/16's dense logits
    rather than the formula below: every patch carries the image's global
    class scores, each class name a text bias, the stuff classes a common
    lift, a few high-norm tokens the global content only, and the patch's
    own content is a weak signal. Their statistics are drawn per scene
    over :data:`CLIP_RANGES`, calibrated to :data:`CLIP_TARGETS` on seeds
    that no default is chosen on (``benchmarks/calibrate_clip_like.py``
    prints the calibration next to its targets).

    **Images.** Each region is painted with its class's appearance (a mean
    colour, one of a flat, striped, checkered, blotchy or grainy texture,
    and a grain), with a colour jitter per instance; objects have a second
    tone on a part; cars, trucks, buses and people take a colour of their
    own. A smooth shading field (except in the texture family), a
    Gaussian blur of 0.7 pixels and sensor noise follow.

    **Logits.** With :math:`a_{ci}` the fraction of patch :math:`i` covered
    by class :math:`c`, the cosine-like score is

    .. math::

        L_{ci} = \ell + m\,\big[(1-\kappa)\,\bar a_{ci}
        + \kappa \textstyle\sum_k S_{ck}\,\bar a_{ki}\big]
        + b\,z_c + \lambda\,\frac{A_c}{\max_k A_k}
        + \sigma\,\eta_{ci} + \gamma\,\zeta_i,

    and the logits are :math:`s\,(L_{ci} + o)`. Here :math:`\bar a` is
    :math:`a` blurred by a Gaussian of `context` patches (a patch token
    sees its neighbours); :math:`S` a fixed similarity between the classes
    of the family (rows summing to one, zero diagonal) through which
    :math:`\kappa` (`confusion`) of a class's signal goes to similar
    classes; :math:`z_c` a fixed standard normal class bias; :math:`A_c`
    the area of class :math:`c` (leakage of the image's global content
    into every patch); :math:`\eta` unit Gaussian noise per class and
    :math:`\zeta` a common-mode noise shared by all classes at a patch,
    both smoothed over `noise_correlation` patches. The margin :math:`m`,
    the level :math:`\ell`, :math:`b`, :math:`\lambda`, :math:`\sigma`,
    :math:`\gamma`, :math:`\kappa`, the correlation and context lengths,
    the offset :math:`o` and the scale :math:`s` (log-uniform over
    `logit_scale`) are drawn per scene.

    **Affinities**, computed from the rendered image only, never from the
    mask: ``"color_position"`` is
    :class:`~dsolo_sk.features.ColorPositionAffinity()`; ``"attention"``
    a :class:`~dsolo_sk.features.ProjectedAttentionAffinity` whose
    projections, temperature (0.05-0.2), asymmetry (0.3-0.8) and position
    weight (0.5-1.5) are drawn once per family, like a network's weights;
    ``"sink"`` the same with 1-4 sink patches taking 30-70 % of every
    row, drawn per scene; ``"noisy"`` a
    :class:`~dsolo_sk.features.DegradedAffinity` of the colour and
    position kernel at 40-70 % of the grid's resolution with log-normal
    noise of 0.3-0.8, drawn per scene.

    Parameters
    ----------
    family : str
        One of :data:`SCENE_FAMILIES`: a synthetic family
        (:data:`SYNTHETIC_FAMILIES`) or a CLIP-like one
        (:data:`CLIP_FAMILIES`).
    n_scenes : int, default=8
        Number of scenes, 1 to 1000.
    image_size : int, default=448
        Side of the square image in pixels; a multiple of `patch_size`.
        Textures scale with the image (up to 0.4 cycles per pixel);
        64-128 pixels suit tests.
    patch_size : int, default=16
        Side of a patch; the grid is ``image_size // patch_size`` square.
    affinity_kind : str, optional
        One of :data:`AFFINITY_KINDS`, in place of the family's own.
    logit_scale : float or (float, float), default=(1.0, 100.0)
        The scale :math:`s` of the logits, or the range over which it is
        drawn log-uniformly (CLIP's cosines have scale 1, its logits 100).
    random_state : int, RandomState instance or None, default=None
        Seed of everything: class appearances, biases, similarities and
        attention weights of the family, and the scenes. The first ``k``
        scenes do not depend on `n_scenes`.

    Returns
    -------
    features : list of xarray.Dataset
        One feature set per scene, as :func:`dsolo_sk.features.from_arrays`
        builds. Its ``attrs`` record the family, the affinity kind, the
        affinity extractor (``"affinity"``, a JSON description of the
        extractor and its parameters) and the drawn logit statistics
        (``"margin"``, ``"noise"``, ``"logit_scale"``, ...).
    masks : list of ndarray of shape (image_size, image_size), int64
        Ground-truth label maps indexing the classes.

    See Also
    --------
    make_scenes : The single-generator scenes.

    Examples
    --------
    >>> from dsolo_sk.datasets import SCENE_FAMILIES, make_scene_family
    >>> X, y = make_scene_family("street", n_scenes=2, image_size=64,
    ...                          random_state=0)
    >>> X[0]["logits"].shape, X[0]["affinity"].shape, y[0].shape
    ((19, 4, 4), (16, 16), (64, 64))
    >>> str(X[0]["class"][10].values), X[0].attrs["affinity_kind"]
    ('sky', 'sink')

    The logit scale differs from scene to scene:

    >>> X, y = make_scene_family("voronoi", n_scenes=4, image_size=64,
    ...                          random_state=1)
    >>> [round(ds.attrs["logit_scale"], 1) for ds in X]
    [9.8, 3.3, 22.2, 73.6]
    """
    if family not in SCENE_FAMILIES:
        raise ValueError(
            f"family must be one of {SCENE_FAMILIES}, got {family!r}."
        )
    if affinity_kind is not None and affinity_kind not in AFFINITY_KINDS:
        raise ValueError(
            f"affinity_kind must be None or one of {AFFINITY_KINDS}, got "
            f"{affinity_kind!r}."
        )
    _check_n_scenes(n_scenes)
    for name, val in (("image_size", image_size), ("patch_size", patch_size)):
        check_scalar(val, name, target_type=(int, np.integer), min_val=1)
    if image_size % patch_size:
        raise ValueError(
            f"image_size ({image_size}) must be a multiple of patch_size "
            f"({patch_size}); 448 and 16 give a 28 x 28 grid."
        )
    if image_size < 32:
        raise ValueError(
            f"image_size must be at least 32 pixels, got {image_size}."
        )
    if np.isscalar(logit_scale):
        logit_scale = (logit_scale, logit_scale)
    try:
        lo, hi = logit_scale
    except (TypeError, ValueError):
        raise TypeError(
            "logit_scale must be a number or a pair (low, high), got "
            f"{logit_scale!r}."
        ) from None
    check_scalar(lo, "logit_scale[0]", min_val=0, include_min=False)
    check_scalar(hi, "logit_scale[1]", min_val=lo)
    if family in CLIP_FAMILIES:
        # the CLIP-like generator registers itself here when
        # dsolo_sk.datasets imports it (it reuses this module's drawing)
        return _GENERATORS["clip"](
            family, n_scenes, image_size=image_size, patch_size=patch_size,
            affinity_kind=affinity_kind, logit_scale=(lo, hi),
            random_state=random_state)

    layout, n_classes, default_kind = _FAMILIES[family]
    kind = affinity_kind or default_kind
    rng = check_random_state(random_state)
    # Family-level draws: the "world" the scenes share.
    if layout == "street":
        app = _Appearances(n_classes, rng, look=_STREET_LOOK)
    else:
        app = _Appearances(n_classes, rng, shared_colour=layout == "texture")
    class_bias = rng.normal(size=n_classes)
    emb = rng.normal(size=(n_classes, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    similarity = np.clip(emb @ emb.T, 0, None) ** 2
    np.fill_diagonal(similarity, 0)
    similarity /= similarity.sum(1, keepdims=True) + 1e-12
    family_attention = {
        "temperature": float(rng.uniform(0.05, 0.2)),
        "asymmetry": float(rng.uniform(0.3, 0.8)),
        "position_weight": float(rng.uniform(0.5, 1.5)),
        "random_state": int(rng.randint(2 ** 31 - 1)),
    }
    classes = _class_names(family, n_classes)
    grid = image_size // patch_size
    X, y = [], []
    for _ in range(n_scenes):
        seed = int(rng.randint(2 ** 31 - 1))
        scene_rng, aff_rng = (np.random.RandomState(s) for s in
                              np.random.SeedSequence(seed).generate_state(2))
        canvas = _draw_layout(layout, image_size, n_classes, scene_rng, app)
        shared = (scene_rng.uniform(0.35, 0.65, 3) if layout == "texture"
                  else None)
        image = _render(canvas, scene_rng,
                        0.0 if layout == "texture"
                        else scene_rng.uniform(0.0, 0.15),
                        scene_rng.uniform(0.005, 0.02), shared)
        stats = _draw_stats(scene_rng, (lo, hi))
        logits = _logits(canvas.mask, grid, n_classes, stats, class_bias,
                         similarity, scene_rng)
        spec = _affinity_spec(kind, family_attention, aff_rng)
        affinity = _build_affinity(spec).compute_affinity(image,
                                                          (grid, grid))
        ds = from_arrays(logits.astype(np.float32), affinity, image, classes)
        ds.attrs.update(family=family, affinity_kind=kind,
                        affinity=json.dumps(spec), **stats)
        X.append(ds)
        y.append(canvas.mask)
    return X, y


def _draw_layout(layout, size, n_classes, rng, app):
    """Draw a layout; redraw the rare one that breaks its family's rule."""
    for _ in range(20):
        canvas = _LAYOUTS[layout](size, n_classes, rng, app)
        present = np.unique(canvas.mask)
        if layout == "background":
            if (canvas.mask == 0).mean() >= 0.6 and len(present) > 1:
                return canvas
        elif layout == "objects":
            if (canvas.mask == 0).mean() >= 0.4 and len(present) > 1:
                return canvas
        elif layout == "many_class":
            if 5 <= len(present) <= 12:
                return canvas
        elif len(present) >= 2:
            return canvas
    return canvas
