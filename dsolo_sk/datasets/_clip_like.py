"""Scene families whose logits behave like vanilla CLIP's dense logits.

The families of :mod:`dsolo_sk.datasets._families` give every patch a
small margin for its own class. The dense logits of an off-the-shelf CLIP
(last layer, no attention surgery) look different, and published work says
how; this module builds scenes from those facts (the project's
``CLIP-LOGIT-FACTS``), one family per benchmark type (VOC-like, with a
background made of many stuff names; COCO-Stuff-like; Cityscapes-like;
ADE20K-like), each with the colour and position affinity and with an
attention whose sinks are the high-norm tokens of the logits:

- **global class scores** (F2): in the last layer every patch attends to
  nearly the same patches, so every patch carries the image's global score
  of each class. Present classes score high everywhere, by their share of
  the image; similar absent classes share some of it;
- **per-class text bias** (F7): each class name scores higher or lower
  against any image, a constant of the vocabulary;
- **background lift and class-common noise** (F4): raw similarity maps
  prefer background and low-information patches, for every class alike;
- **high-norm tokens** (F6): a few low-information background patches
  hold global information: their logits are the global scores, not their
  own content; in the ``*_sink`` families the same patches are the
  attention's sinks;
- **a weak local signal** (F3): the patch's own content, blurred over its
  neighbourhood and partly confused with similar classes, under spatially
  correlated noise;
- **low cosines** (F8): the cosines lie in about 0.1-0.35, and the logits
  are those cosines times a scale and plus an offset drawn per scene.

The constants are calibrated so that the raw argmax and the argmax with
each class's own constant removed come near the published figures of
vanilla CLIP and of MaskCLIP (``benchmarks/calibrate_clip_like.py``
prints them next to their targets, on seeds that choose no default).

Written with numpy and scipy, like the other families: a few array
operations per scene.
"""

import json

import numpy as np
from scipy import ndimage
from sklearn.utils import check_random_state

from ..features._contract import from_arrays
from ..features.affinity import ProjectedAttentionAffinity
from ._classnames import load_class_names, split_synonyms
from ._families import (_GENERATORS, _STREET_LOOK, _Appearances,
                        _build_affinity, _draw_layout, _render,
                        _smooth_noise, make_scene_family)

# make_scene_family is re-exported: importing it from here registers
# the CLIP-like generator
__all__ = ["CLIP_TARGETS", "CLIP_RANGES", "make_scene_family"]

#: The published figures the families are calibrated to, mIoU in percent
#: per benchmark type: ``"raw"``, vanilla CLIP ViT-B/16's raw argmax
#: (SCLIP's table and the paper's row I); ``"local"``, the argmax with each
#: class's own constant removed, which stands for the local content
#: MaskCLIP reaches (SCLIP's table); ``"raw_no_background"``, VOC20's raw
#: argmax (the background class left out, its pixels ignored).
CLIP_TARGETS = {
    "voc": {"raw": 18.7, "local": 41.0, "raw_no_background": 49.4},
    "stuff": {"raw": 6.5, "local": 16.7},
    "city": {"raw": 6.6, "local": 24.9},
    "ade": {"raw": 3.2, "local": 11.9},
}

#: Ranges over which the logit statistics of each CLIP-like scene are drawn
#: (uniformly; ``logit_scale`` log-uniformly), per benchmark type, in
#: cosine units unless stated: ``level`` the cosine of an unrelated pair;
#: ``local`` the amplitude of a patch's own content; ``noise`` the
#: per-class noise and ``noise_correlation`` its length in patches;
#: ``bias`` the spread of the text bias; ``global`` the global score of the
#: largest present class and ``global_power`` how it falls with a class's
#: share; ``background`` the lift of background and low-information patches
#: and ``common_noise`` the class-common noise; ``confusion`` the fraction
#: of a class's signal that goes to similar classes; ``context`` the blur
#: of the local content in patches; ``high_norm`` the share of the patches
#: that are high-norm tokens; ``logit_offset`` an offset added before the
#: scale.
CLIP_RANGES = {
    "voc": {"local": (0.024, 0.05), "bias": (0.0114, 0.0236),
            "global": (0.0325, 0.0675), "stuff_bias": (0.0, 0.035)},
    "stuff": {"local": (0.0195, 0.0405), "bias": (0.0208, 0.0432),
              "global": (0.026, 0.054)},
    "city": {"local": (0.0234, 0.0486), "bias": (0.0292, 0.0607),
             "global": (0.026, 0.054)},
    "ade": {"local": (0.0179, 0.0371), "bias": (0.0325, 0.0675),
            "global": (0.026, 0.054)},
}
_SHARED_RANGES = {
    "level": (0.15, 0.25),
    "noise": (0.008, 0.016),
    "noise_correlation": (0.5, 2.0),
    "global_power": (0.3, 1.0),
    "background": (0.005, 0.02),
    "common_noise": (0.003, 0.01),
    "confusion": (0.0, 0.3),
    "context": (0.3, 1.0),
    "high_norm": (0.01, 0.05),
    "logit_offset": (-0.3, 0.1),
    "stuff_bias": (0.0, 0.0),
}
for _ranges in CLIP_RANGES.values():
    for _key, _val in _SHARED_RANGES.items():
        _ranges.setdefault(_key, _val)

# benchmark type -> (layout, class file)
_TYPES = {"voc": ("objects", "voc21"), "stuff": ("many_class",
                                                     "coco_stuff"),
          "city": ("street", "cityscapes"), "ade": ("many_class", "ade20k")}

# The stuff classes of each type: raw similarity maps prefer them (F4).
_STUFF_NAMES = {
    "city": {"road", "sidewalk", "building", "wall", "fence", "vegetation",
             "terrain", "sky"},
    "ade": {"wall", "building", "sky", "floor", "tree", "ceiling", "road",
            "grass", "sidewalk", "earth", "mountain", "water", "sea",
            "field", "sand", "river", "hill", "land", "path", "dirt track",
            "snow", "rock", "plant", "house"},
}
_N_COCO_THINGS = 80  # the first 80 COCO-Stuff classes are things


def _family_type(family):
    return family.split("_")[1]


def _stuff_classes(kind, classes):
    if kind == "voc":
        return np.asarray([0])
    if kind == "stuff":
        return np.arange(_N_COCO_THINGS, len(classes))
    return np.asarray([k for k, c in enumerate(classes)
                       if split_synonyms(c)[0] in _STUFF_NAMES[kind]])


def _draw(rng, ranges, logit_scale):
    stats = {k: float(rng.uniform(*v)) for k, v in ranges.items()}
    lo, hi = logit_scale
    draw = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    stats["logit_scale"] = float(lo) if lo == hi else draw
    return stats


def _coverage(mask, grid, n):
    size = mask.shape[0]
    patch = size // grid
    onehot = mask[None] == np.arange(n)[:, None, None]
    return onehot.reshape(n, grid, patch, grid, patch).mean(axis=(2, 4))


def _low_information(image, grid):
    """Per patch, in [0, 1]: 1 where the patch holds the least detail (the
    local contrast of the image, ranked over the patches)."""
    gray = image.astype(np.float64).mean(2) / 255.0
    size = gray.shape[0]
    patch = size // grid
    detail = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
    energy = detail.reshape(grid, patch, grid, patch).mean(axis=(1, 3))
    rank = energy.ravel().argsort().argsort().reshape(grid, grid)
    return 1.0 - rank / max(rank.size - 1, 1)


def _queries(kind, canvas, classes, rng, stuff_names):
    """The query-level ground truth: one coverage map per text query.

    For VOC-like scenes the background class is many stuff names; each
    stuff region of the scene is one of them, and the class's logit is the
    maximum over its names. Elsewhere one query per class.
    Returns the query label map and the query -> class index.
    """
    mask = canvas.mask
    if kind != "voc":
        return mask, np.arange(len(classes))
    n_stuff = len(stuff_names)
    qmask = np.where(mask > 0, mask + n_stuff - 1, 0)
    kinds = rng.choice(n_stuff, n_stuff, replace=False)
    for k, region in enumerate(np.unique(canvas.region[mask == 0])):
        qmask[(canvas.region == region) & (mask == 0)] = kinds[k % n_stuff]
    query_class = np.concatenate([np.zeros(n_stuff, np.int64),
                                  np.arange(1, len(classes))])
    return qmask, query_class


def _clip_cosines(qmask, grid, n_queries, stats, text_bias, similarity,
                  stuff_queries, low_info, high_norm, rng):
    """Cosines of every query at every patch, and their constant part.

    With :math:`a_{qi}` the fraction of patch :math:`i` covered by query
    :math:`q` and :math:`A_q` its share of the image:

    .. math::

        c_{qi} = \\ell + t_q + G_q + s\\,\\tilde a_{qi}
        + \\beta\\,(\\tfrac12 u_i + \\tfrac12 \\textstyle\\sum_{k \\in
        \\text{stuff}} \\bar a_{ki}) + \\gamma\\,\\zeta_i
        + \\sigma\\,\\eta_{qi},

    :math:`G_q = g\\,[(1-\\kappa) (A_q / \\max A)^p + \\kappa
    \\sum_k S_{qk} (A_k / \\max A)^p]` the global score, :math:`\\tilde a`
    the blurred coverage mixed with similar classes, :math:`u` the patch's
    low-information rank; at the high-norm tokens the local term is
    replaced by the global score again (they hold global information).
    """
    cover = _coverage(qmask, grid, n_queries)
    area = cover.mean(axis=(1, 2))
    share = (area / area.max()) ** stats["global_power"]
    kappa = stats["confusion"]
    glob = stats["global"] * ((1 - kappa) * share + kappa * similarity
                              @ share)
    local = ndimage.gaussian_filter(cover, (0, stats["context"],
                                            stats["context"]))
    local = (1 - kappa) * local + kappa * np.tensordot(similarity, local,
                                                       axes=1)
    lift = 0.5 * low_info + 0.5 * ndimage.gaussian_filter(
        cover[stuff_queries].sum(0), 1.0)
    constant = stats["level"] + text_bias + glob
    cos = (constant[:, None, None]
           + stats["local"] * local
           + stats["background"] * lift[None]
           + stats["common_noise"] * _smooth_noise(
               (1, grid, grid), stats["noise_correlation"], rng)
           + stats["noise"] * _smooth_noise(cover.shape,
                                            stats["noise_correlation"], rng))
    rows, cols = np.unravel_index(high_norm, (grid, grid))
    glob_rel = glob / max(stats["global"], 1e-12)
    cos[:, rows, cols] += (stats["local"] * glob_rel[:, None]
                           - stats["local"] * local[:, rows, cols])
    return cos, constant


def _affinity_spec(affinity_kind, attention, sink_params, rng):
    """The JSON-able affinity of a CLIP-like scene: the colour and position
    kernel, the attention with or without its sinks at the high-norm
    tokens, or the degraded kernel."""
    if affinity_kind == "color_position":
        return {"class": "ColorPositionAffinity", "params": {}}
    if affinity_kind == "sink":
        return {"class": "ProjectedAttentionAffinity", "params": sink_params}
    if affinity_kind == "attention":
        return {"class": "ProjectedAttentionAffinity", "params": attention}
    return {"class": "DegradedAffinity",
            "params": {"resolution": float(rng.uniform(0.4, 0.7)),
                       "noise": float(rng.uniform(0.3, 0.8)),
                       "random_state": int(rng.randint(2 ** 31 - 1))},
            "affinity": {"class": "ColorPositionAffinity", "params": {}}}


def make_clip_like_family(family, n_scenes=8, *, image_size=448,
                          patch_size=16, affinity_kind=None,
                          logit_scale=(1.0, 100.0), random_state=None,
                          _with_local=False):
    """The CLIP-like scenes of :func:`make_scene_family` (see there); the
    arguments are checked there."""
    kind = _family_type(family)
    layout, class_file = _TYPES[kind]
    ranges = CLIP_RANGES[kind]
    if affinity_kind is None:
        affinity_kind = "sink" if family.endswith("_sink") else (
            "color_position")
    lines = load_class_names(class_file)
    stuff_names = split_synonyms(lines[0]) if kind == "voc" else []
    classes = ["background"] + lines[1:] if kind == "voc" else list(lines)
    n_classes = len(classes)
    n_queries = n_classes + max(len(stuff_names) - 1, 0)
    rng = check_random_state(random_state)
    if layout == "street":
        app = _Appearances(n_classes, rng, look=_STREET_LOOK)
    else:
        app = _Appearances(n_classes, rng)
    # the vocabulary's own constants: text bias, and which queries are
    # alike (confusion of the global and the local scores)
    family_bias = rng.normal(size=n_queries)
    emb = rng.normal(size=(n_queries, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    similarity = np.clip(emb @ emb.T, 0, None) ** 2
    np.fill_diagonal(similarity, 0)
    similarity /= similarity.sum(1, keepdims=True) + 1e-12
    attention = {"temperature": float(rng.uniform(0.05, 0.2)),
                 "asymmetry": float(rng.uniform(0.3, 0.8)),
                 "position_weight": float(rng.uniform(0.5, 1.5)),
                 "random_state": int(rng.randint(2 ** 31 - 1))}
    grid = image_size // patch_size
    stuff = _stuff_classes(kind, classes)
    X, y, local_logits = [], [], []
    for _ in range(n_scenes):
        seed = int(rng.randint(2 ** 31 - 1))
        scene_rng, aff_rng = (np.random.RandomState(s) for s in
                              np.random.SeedSequence(seed).generate_state(2))
        canvas = _draw_layout(layout, image_size, n_classes, scene_rng, app)
        image = _render(canvas, scene_rng, scene_rng.uniform(0.0, 0.15),
                        scene_rng.uniform(0.005, 0.02))
        stats = _draw(scene_rng, ranges, logit_scale)
        qmask, query_class = _queries(kind, canvas, classes, scene_rng,
                                      stuff_names)
        stuff_queries = (np.arange(len(stuff_names)) if kind == "voc"
                         else stuff)
        n_high = max(1, int(round(stats["high_norm"] * grid * grid)))
        params = dict(attention, n_sinks=n_high,
                      sink_mass=float(aff_rng.uniform(0.3, 0.7)))
        high_norm = ProjectedAttentionAffinity(**params).sink_patches(
            image, (grid, grid))
        text_bias = stats["bias"] * (np.sqrt(0.8) * family_bias
                                     + np.sqrt(0.2) * scene_rng.normal(
                                         size=n_queries))
        text_bias[stuff_queries] += stats["stuff_bias"]
        cos, constant = _clip_cosines(
            qmask, grid, n_queries, stats, text_bias, similarity,
            stuff_queries, _low_information(image, grid), high_norm,
            scene_rng)
        scale, offset = stats["logit_scale"], stats["logit_offset"]
        qlogits = scale * (cos + offset)
        logits = np.stack([qlogits[query_class == c].max(0)
                           for c in range(n_classes)])
        if _with_local:
            free = cos - constant[:, None, None]
            local_logits.append(np.stack([free[query_class == c].max(0)
                                          for c in range(n_classes)]))
        spec = _affinity_spec(affinity_kind, attention, params, aff_rng)
        affinity = _build_affinity(spec).compute_affinity(image,
                                                          (grid, grid))
        extra = {}
        if kind == "voc":
            extra = {"query_logits": qlogits.astype(np.float32),
                     "query_class": query_class}
        ds = from_arrays(logits.astype(np.float32), affinity, image,
                         classes, **extra)
        ds.attrs.update(family=family, world="clip",
                        affinity_kind=affinity_kind,
                        affinity=json.dumps(spec),
                        high_norm_tokens=json.dumps(high_norm.tolist()),
                        **stats)
        X.append(ds)
        y.append(canvas.mask)
    if _with_local:
        return X, y, local_logits
    return X, y


_GENERATORS["clip"] = make_clip_like_family
