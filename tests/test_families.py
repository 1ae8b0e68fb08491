"""Scene families of the synthetic benchmark and the model-free attention."""

import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import kurtosis

from dsolo_sk.datasets import (AFFINITY_KINDS, LOGIT_RANGES, SCENE_FAMILIES,
                               load_class_names, make_scene_family)
from dsolo_sk.features import (ColorPositionAffinity, DegradedAffinity,
                               ProjectedAttentionAffinity, check_features)

SIZE = 96  # 6 x 6 patches of 16 pixels


@pytest.fixture(scope="module")
def scenes():
    """Four scenes of every family, generated once."""
    return {f: make_scene_family(f, n_scenes=4, image_size=SIZE,
                                 random_state=3)
            for f in SCENE_FAMILIES}


def _rebuild(spec):
    """The affinity extractor a scene's attrs describe, from public classes."""
    classes = {"ColorPositionAffinity": ColorPositionAffinity,
               "ProjectedAttentionAffinity": ProjectedAttentionAffinity,
               "DegradedAffinity": DegradedAffinity}
    params = dict(spec["params"])
    if "affinity" in spec:
        params["affinity"] = _rebuild(spec["affinity"])
    return classes[spec["class"]](**params)


# -- every family --------------------------------------------------------------
@pytest.mark.parametrize("family", SCENE_FAMILIES)
def test_shapes_and_contract(scenes, family):
    X, y = scenes[family]
    n_classes = {"background": 21, "many_class": 150, "street": 19,
                 "texture": 10, "clip_voc": 21, "clip_stuff": 171,
                 "clip_city": 19, "clip_ade": 150}.get(
                     family.removesuffix("_sink"), 12)
    assert len(X) == len(y) == 4
    for ds, mask in zip(X, y):
        check_features(ds, require_affinity=True)
        assert ds["logits"].shape == (n_classes, 6, 6)
        assert ds["affinity"].shape == (36, 36)
        assert ds["image"].shape == (SIZE, SIZE, 3)
        assert ds["image"].dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.int64
        assert 0 <= mask.min() and mask.max() < n_classes
        assert len(np.unique(mask)) >= 2
        np.testing.assert_allclose(ds["affinity"].sum("patch_"), 1,
                                   rtol=1e-5)
        assert ds.attrs["family"] == family
        assert ds.attrs["affinity_kind"] in AFFINITY_KINDS


@pytest.mark.parametrize("family", SCENE_FAMILIES)
def test_the_affinity_is_a_function_of_the_image_alone(scenes, family):
    """Recomputed from the rendered image by the extractor the attrs
    describe, the affinity is the stored one: the mask is never read."""
    X, _ = scenes[family]
    for ds in X:
        extractor = _rebuild(json.loads(ds.attrs["affinity"]))
        again = extractor.compute_affinity(ds["image"].values, (6, 6))
        np.testing.assert_array_equal(again, ds["affinity"].values)


def test_deterministic_and_prefix_stable():
    X1, y1 = make_scene_family("many_class", n_scenes=3, image_size=64,
                               random_state=7)
    X2, y2 = make_scene_family("many_class", n_scenes=2, image_size=64,
                               random_state=np.random.RandomState(7))
    for a, b, ma, mb in zip(X1, X2, y1, y2):
        np.testing.assert_array_equal(ma, mb)
        for var in ("logits", "affinity", "image"):
            np.testing.assert_array_equal(a[var].values, b[var].values)
        assert a.attrs == b.attrs
    X3, y3 = make_scene_family("many_class", n_scenes=2, image_size=64,
                               random_state=8)
    assert not np.array_equal(y1[0], y3[0])
    assert not np.allclose(X1[0]["logits"], X3[0]["logits"])


def test_voronoi_variants_differ_by_their_affinity_only(scenes):
    X, y = scenes["voronoi"]
    kinds = {"voronoi": "color_position", "voronoi_attention": "attention",
             "voronoi_sink": "sink", "voronoi_noisy": "noisy"}
    for family, kind in kinds.items():
        Xv, yv = scenes[family]
        assert Xv[0].attrs["affinity_kind"] == kind
        for a, b, ma, mb in zip(X, Xv, y, yv):
            np.testing.assert_array_equal(ma, mb)
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["logits"], b["logits"])
            if family != "voronoi":
                assert not np.allclose(a["affinity"], b["affinity"])


@pytest.mark.parametrize("kind", AFFINITY_KINDS)
def test_affinity_kind_overrides_the_family_default(kind):
    X, _ = make_scene_family("street", n_scenes=1, image_size=64,
                             affinity_kind=kind, random_state=0)
    assert X[0].attrs["affinity_kind"] == kind
    assert json.loads(X[0].attrs["affinity"])["class"] == {
        "color_position": "ColorPositionAffinity",
        "noisy": "DegradedAffinity"}.get(kind, "ProjectedAttentionAffinity")


# -- each family's defining property ------------------------------------------
def test_background_dominates(scenes):
    X, y = scenes["background"]
    assert str(X[0]["class"][0].values) == "background"
    for mask in y:
        assert (mask == 0).mean() >= 0.6
        assert 2 <= len(np.unique(mask)) <= 4  # 1-3 objects
    # Objects are not tiny specks everywhere: the mean is well below 1.
    assert np.mean([(m == 0).mean() for m in y]) < 0.97


def test_many_classes_in_many_small_regions(scenes):
    X, y = scenes["many_class"]
    assert X[0].sizes["class"] == 150
    for mask in y:
        present = np.unique(mask)
        assert 5 <= len(present) <= 12
        n_regions = sum(ndimage.label(mask == c)[1] for c in present)
        assert n_regions > len(present)


def test_street_layout(scenes):
    X, y = scenes["street"]
    names = [str(c) for c in X[0]["class"].values]
    assert names == load_class_names("cityscapes")
    sky, road, pole = (names.index(n) for n in ("sky", "road", "pole"))
    for mask in y:
        assert (mask[0] == sky).mean() > 0.2           # sky on top
        assert (mask[-1] == road).mean() > 0.2         # road at the bottom
        assert not (mask[-SIZE // 4:] == sky).any()    # and never below
        assert (mask == pole).any()
        # Poles are thin: no run of pole pixels in a row is wider than
        # 2 % of the image (plus the one-pixel rounding of each side).
        for row in mask:
            runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row == pole, 0])))
            assert runs[::2].max(initial=0) <= 0.012 * SIZE + 2
    assert {13, 11} & set(np.unique(np.concatenate([m.ravel() for m in y])))


def test_texture_classes_share_their_mean_colour(scenes):
    """Per scene, every class has the same mean colour, within a few grey
    levels, while the classes of the Voronoi family differ by far more."""
    def spread(X, y):
        out = []
        for ds, mask in zip(X, y):
            img = ds["image"].values.astype(float)
            means = np.array([img[mask == c].mean(0)
                              for c in np.unique(mask)])
            out.append(np.abs(means - means.mean(0)).max())
        return np.array(out)

    X, y = make_scene_family("texture", n_scenes=4, image_size=256,
                             random_state=0)
    assert spread(X, y).max() < 6
    assert spread(*scenes["voronoi"]).min() > 15
    # ... and differ by texture: the family's attention, which sees
    # orientation and frequency, groups the patches of a class better than
    # the colour kernel, which sees the mean colour and contrast only.
    def grouping(ds, mask, A):
        g = ds.sizes["row"]
        p = mask.shape[0] // g
        lab = mask[p // 2::p, p // 2::p].ravel()
        same = lab[:, None] == lab[None]
        return (A * same).sum(1).mean() - same.mean()

    att = np.mean([grouping(ds, m, ds["affinity"].values)
                   for ds, m in zip(X, y)])
    col = np.mean([grouping(ds, m, ColorPositionAffinity().compute_affinity(
        ds["image"].values, (16, 16))) for ds, m in zip(X, y)])
    assert X[0].attrs["affinity_kind"] == "attention"
    assert att > col + 0.1


def test_logit_statistics_are_drawn_per_scene():
    X, _ = make_scene_family("voronoi", n_scenes=8, image_size=64,
                             random_state=0)
    scale = np.array([ds.attrs["logit_scale"] for ds in X])
    assert scale.min() >= 1 and scale.max() <= 100
    assert scale.max() / scale.min() > 5
    spread = np.array([float(ds["logits"].std()) for ds in X])
    assert spread.max() / spread.min() > 5         # the logits follow
    for key in ("margin", "noise", "leakage", "confusion",
                "noise_correlation", "logit_offset"):
        values = [ds.attrs[key] for ds in X]
        assert len(set(values)) == len(X), key
    lo, hi = LOGIT_RANGES["margin"]
    assert all(lo <= ds.attrs["margin"] <= hi for ds in X)
    # Undoing scale and offset gives cosines of CLIP's level.
    for ds in X:
        cos = ds["logits"] / ds.attrs["logit_scale"] - ds.attrs[
            "logit_offset"]
        assert 0.05 < float(cos.mean()) < 0.45


def test_fixed_logit_scale():
    X, _ = make_scene_family("texture", n_scenes=3, image_size=64,
                             logit_scale=100.0, random_state=0)
    assert [ds.attrs["logit_scale"] for ds in X] == [100.0] * 3


def test_sink_scenes_have_sinks(scenes):
    X, _ = scenes["voronoi_sink"]
    for ds in X:
        spec = json.loads(ds.attrs["affinity"])
        params = spec["params"]
        att = ProjectedAttentionAffinity(**params)
        sinks = att.sink_patches(ds["image"].values, (6, 6))
        assert len(sinks) == params["n_sinks"] >= 1
        A = ds["affinity"].values
        # Every query gives the sinks 30-70 % of its attention, many times
        # their share of the patches.
        mass = A[:, sinks].sum(1)
        np.testing.assert_allclose(mass, params["sink_mass"], atol=1e-4)
        assert 0.3 <= params["sink_mass"] <= 0.7
        assert mass.min() > 2 * len(sinks) / 36


# -- the attention extractor ---------------------------------------------------
@pytest.fixture(scope="module")
def image():
    X, _ = make_scene_family("voronoi", n_scenes=1, image_size=128,
                             random_state=1)
    return X[0]["image"].values


def test_attention_is_row_stochastic_asymmetric_and_heavy_tailed(image):
    A = ProjectedAttentionAffinity().compute_affinity(image, (8, 8))
    assert A.dtype == np.float32 and (A > 0).all()
    np.testing.assert_allclose(A.sum(1), 1, rtol=1e-5)
    assert np.abs(A - A.T).max() > 0.1 * A.max()
    # Heavy tails, compared with the colour kernel: rows put their mass on
    # few keys (the excess kurtosis of a row), and a few keys collect many
    # times their share of attention.
    C = ColorPositionAffinity().compute_affinity(image, (8, 8))
    assert (np.mean([kurtosis(r) for r in A])
            > 2 * np.mean([kurtosis(r) for r in C]))
    col, ccol = A.sum(0), C.sum(0)
    assert col.max() > 2.5 * col.mean()
    assert col.max() / col.mean() > 2 * ccol.max() / ccol.mean()


def test_attention_scores_are_symmetric_without_asymmetry(image):
    """With W_k = W_q, A_ij / A_ji = Z_j / Z_i: log A - log A^T is a
    difference of potentials, M_ij + M_jk = M_ik; not so otherwise."""
    def defect(asymmetry):
        A = ProjectedAttentionAffinity(asymmetry=asymmetry).compute_affinity(
            image, (5, 5)).astype(np.float64)
        M = np.log(A) - np.log(A).T
        return np.abs(M[:, :, None] + M[None, :, :] - M[:, None, :]).max()

    assert defect(0.0) < 1e-3
    assert defect(0.5) > 1.0


def test_attention_groups_similar_patches(image):
    """Half the image dark and flat, half bright and striped: queries
    attend mostly to their own half, with or without position (a dot
    product, not a distance: some keys of the other half can still attract
    a query, as in real attention)."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = 40
    img[:, 32:] = 200 + (20 * np.sin(np.arange(64) / 2))[:, None, None]
    left = np.arange(16) % 4 < 2
    for w in (0.0, 1.0):
        A = ProjectedAttentionAffinity(
            position_weight=w, asymmetry=0.0).compute_affinity(img, (4, 4))
        own = np.where(left[:, None], A[:, left].sum(1, keepdims=True),
                       A[:, ~left].sum(1, keepdims=True))
        assert own.mean() > 0.9 and own.min() > 0.6


def test_sinks_are_low_information_patches_kept_apart():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (80, 80, 3)).astype(np.uint8)
    img[:32, :32] = 128           # a flat 2 x 2-patch corner
    att = ProjectedAttentionAffinity(n_sinks=2)
    sinks = att.sink_patches(img, (5, 5))
    rows, cols = np.divmod(sinks, 5)
    assert rows[0] < 2 and cols[0] < 2  # in the flat corner
    assert max(abs(rows[0] - rows[1]), abs(cols[0] - cols[1])) >= 2
    A = att.compute_affinity(img, (5, 5))
    np.testing.assert_allclose(A[:, sinks].sum(1), 0.5, atol=1e-4)


def test_attention_is_deterministic_in_its_seed(image):
    a = ProjectedAttentionAffinity(random_state=0).compute_affinity(
        image, (4, 4))
    b = ProjectedAttentionAffinity(random_state=0).compute_affinity(
        image, (4, 4))
    c = ProjectedAttentionAffinity(random_state=1).compute_affinity(
        image, (4, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_degraded_affinity(image):
    inner = ColorPositionAffinity()
    same = DegradedAffinity(inner, resolution=1.0, noise=0.0)
    np.testing.assert_allclose(same.compute_affinity(image, (6, 6)),
                               inner.compute_affinity(image, (6, 6)),
                               rtol=1e-5, atol=1e-7)
    noisy = DegradedAffinity(inner, resolution=0.5, noise=0.5,
                             random_state=0)
    A = noisy.compute_affinity(image, (6, 6))
    np.testing.assert_allclose(A.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(A, noisy.compute_affinity(image, (6, 6)))
    # Blurred: from a 3 x 3 grid, the 2 x 2 blocks of queries nearly agree.
    blur = DegradedAffinity(inner, resolution=0.5, noise=0.0)
    B = blur.compute_affinity(image, (6, 6))
    sharp = inner.compute_affinity(image, (6, 6))
    assert np.abs(B[0] - B[1]).sum() < np.abs(sharp[0] - sharp[1]).sum()


# -- validation ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    ({"family": "forest"}, ValueError, "family must be one of"),
    ({"family": "street", "affinity_kind": "sd2"}, ValueError,
     "affinity_kind must be"),
    ({"family": "street", "image_size": 100}, ValueError, "multiple of"),
    ({"family": "street", "image_size": 16}, ValueError, "at least 32"),
    ({"family": "street", "logit_scale": float("nan")}, ValueError,
     "logit_scale"),
    ({"family": "street", "logit_scale": (10.0, 1.0)}, ValueError,
     "logit_scale"),
    ({"family": "street", "logit_scale": "big"}, TypeError, "logit_scale"),
    ({"family": "street", "n_scenes": 0}, ValueError, "n_scenes"),
])
def test_make_scene_family_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_scene_family(**{"image_size": 64, **kwargs})


@pytest.mark.parametrize("params, match", [
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": 0.0}, "temperature"),
    ({"sink_mass": 1.0}, "sink_mass"),
    ({"n_sinks": -1}, "n_sinks"),
    ({"color_weight": 0.0, "texture_weight": 0.0, "position_weight": 0.0},
     "at least one"),
])
def test_attention_validates(image, params, match):
    with pytest.raises(ValueError, match=match):
        ProjectedAttentionAffinity(**params).compute_affinity(image, (4, 4))


def test_attention_refuses_a_bad_image():
    with pytest.raises(ValueError, match="uint8"):
        ProjectedAttentionAffinity().compute_affinity(
            np.zeros((8, 8, 3)), (2, 2))


def test_degraded_affinity_validates(image):
    with pytest.raises(ValueError, match="resolution"):
        DegradedAffinity(resolution=0.0).compute_affinity(image, (4, 4))
    with pytest.raises(ValueError, match="noise"):
        DegradedAffinity(noise=float("nan")).compute_affinity(image, (4, 4))
    with pytest.raises(TypeError, match="compute_affinity"):
        DegradedAffinity(affinity="sd2").compute_affinity(image, (4, 4))
