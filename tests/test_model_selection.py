"""GridSearchCV over precomputed features, the mean-IoU scorer, labelled
search results and the DataTree batch helpers."""

import numpy as np
import pytest
import xarray as xr
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.model_selection import (GridSearchCV, KFold, check_cv,
                                     cross_val_score)

from dsolo_sk import (DirectSegmenter, InterpolationUpsampler,
                      TransportPath, TransportPathSegmenter,
                      TransportVelocity, TransportVelocitySegmenter)
from dsolo_sk.datasets import make_scenes
from dsolo_sk.datatree import gather_datatree, scatter_datatree
from dsolo_sk.metrics import mean_iou, mean_iou_scorer
from dsolo_sk.model_selection import cv_results_to_dataset


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(n_scenes=4, n_classes=5, image_size=64,
                       random_state=0)


def _fold_scores(est, X, y, cv):
    return [clone(est).fit([X[i] for i in train], [y[i] for i in train])
            .score([X[i] for i in test], [y[i] for i in test])
            for train, test in cv.split(X)]


def test_grid_search_velocity_tau_on_features(scenes):
    X, y = scenes
    cv = KFold(2)
    search = GridSearchCV(DirectSegmenter(discrepancy=TransportVelocity()),
                          {"discrepancy__tau": [0.05, 0.3, 2.0]}, cv=cv,
                          error_score="raise").fit(X, y)
    assert search.best_params_["discrepancy__tau"] in (0.05, 0.3, 2.0)
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores >= 0) & (scores <= 1))
    # tau matters: the candidates do not all score the same
    assert np.ptp(scores) > 0
    # best_score_ is the mean over the same folds of the refit candidate's
    # own score
    best = search.best_estimator_
    assert best.get_params()["discrepancy__tau"] == \
        search.best_params_["discrepancy__tau"]
    assert search.best_score_ == pytest.approx(
        np.mean(_fold_scores(best, X, y, cv)), abs=1e-12)
    # every candidate's per-split scores are reproduced too
    for k, params in enumerate(search.cv_results_["params"]):
        est = DirectSegmenter(discrepancy=TransportVelocity(
            tau=params["discrepancy__tau"]))
        got = [search.cv_results_[f"split{i}_test_score"][k]
               for i in range(2)]
        assert got == pytest.approx(_fold_scores(est, X, y, cv), abs=1e-12)
    # the refit estimator predicts like a fresh one
    np.testing.assert_array_equal(
        best.predict(X[:1])[0],
        DirectSegmenter(discrepancy=TransportVelocity(
            tau=best.discrepancy.tau)).predict(X[:1])[0])


def test_grid_search_chooses_between_discrepancies(scenes):
    X, y = scenes
    grid = [{"discrepancy": [TransportPath()],
             "discrepancy__epsilon": [0.05, 0.1]},
            {"discrepancy": [TransportVelocity()],
             "discrepancy__tau": [0.1, 0.3]}]
    base = DirectSegmenter(discrepancy=TransportVelocity())
    search = GridSearchCV(base, grid, cv=KFold(2),
                          error_score="raise").fit(X, y)
    params = search.cv_results_["params"]
    assert len(params) == 4
    kinds = [type(p["discrepancy"]).__name__ for p in params]
    assert kinds == ["TransportPath"] * 2 + ["TransportVelocity"] * 2
    # each candidate ran with its own discrepancy's parameter: the scores
    # equal those of segmenters built by hand
    for k, p in enumerate(params):
        disc = clone(p["discrepancy"]).set_params(**{
            n.split("__")[1]: v for n, v in p.items() if "__" in n})
        mean = np.mean(_fold_scores(DirectSegmenter(discrepancy=disc), X, y,
                                    KFold(2)))
        assert search.cv_results_["mean_test_score"][k] == pytest.approx(
            mean, abs=1e-12)
    # the search's base estimator is left as it was
    assert base.discrepancy.get_params() == TransportVelocity().get_params()


def test_grid_search_over_mode_and_epsilon(scenes):
    X, y = scenes
    grid = [{"discrepancy": [TransportPath()],
             "discrepancy__epsilon": [0.05, 0.5]},
            {"discrepancy": [None], "mode": ["kl", "raw"]}]
    search = GridSearchCV(
        DirectSegmenter(upsampler=InterpolationUpsampler("nearest")), grid,
                          cv=KFold(2), error_score="raise").fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert not np.any(np.isnan(search.cv_results_["mean_test_score"]))


@pytest.mark.parametrize("est, grid", [
    (TransportPathSegmenter(discrepancy=TransportPath(),
                            upsampler=InterpolationUpsampler("nearest")),
     {"discrepancy__epsilon": [0.05, 0.2]}),
    (TransportVelocitySegmenter(discrepancy=TransportVelocity(),
                                upsampler=InterpolationUpsampler("nearest")),
     {"discrepancy__tau": [0.1, 0.5]}),
])
def test_grid_search_fixed_mode_segmenters(scenes, est, grid):
    X, y = scenes
    search = GridSearchCV(est, grid, cv=KFold(2), error_score="raise")
    search.fit(X, y)
    assert isinstance(search.best_estimator_, type(est))


def test_error_score_raise_surfaces_bad_candidates(scenes):
    X, y = scenes
    search = GridSearchCV(DirectSegmenter(discrepancy=TransportVelocity()),
                          {"discrepancy__tau": [0.3, -1.0]},
                          cv=KFold(2), error_score="raise")
    with pytest.raises(ValueError, match="tau"):
        search.fit(X, y)


def test_bare_image_array_refused_in_search(scenes):
    _, y = scenes
    image = np.zeros((64, 64, 3), np.uint8)
    search = GridSearchCV(DirectSegmenter(classes=["a", "b"]),
                          {"mode": ["kl"]}, cv=KFold(2), error_score="raise")
    with pytest.raises(TypeError, match="list"):
        search.fit(image, y[0])


def test_mask_of_wrong_shape_refused(scenes):
    X, y = scenes
    bad = [m[:-1] for m in y]
    with pytest.raises(ValueError, match="shape"):
        GridSearchCV(DirectSegmenter(
            upsampler=InterpolationUpsampler("nearest")), {"mode": ["kl"]},
            cv=KFold(2), error_score="raise").fit(X, bad)


def test_not_a_classifier_so_folds_are_not_stratified(scenes):
    _, y = scenes
    est = DirectSegmenter()
    assert not is_classifier(est)
    assert type(check_cv(2, y, classifier=is_classifier(est))) is KFold


def test_mean_iou_scorer_equals_score(scenes):
    X, y = scenes
    seg = DirectSegmenter(upsampler=InterpolationUpsampler("nearest"))
    assert mean_iou_scorer(seg, X, y) == seg.score(X, y)
    # on a single image with absent classes too
    assert mean_iou_scorer(seg, X[:1], y[:1]) == seg.score(X[:1], y[:1])
    a = cross_val_score(seg, X, y, cv=KFold(2), error_score="raise")
    b = cross_val_score(seg, X, y, cv=KFold(2), scoring=mean_iou_scorer,
                        error_score="raise")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_mean_iou_scorer_ignores_255_and_infers_classes():
    class Fixed(BaseEstimator):
        def __init__(self, pred=None):
            self.pred = pred

        def predict(self, X):
            return self.pred

    t = [np.array([[0, 1], [1, 255]]), np.array([[3, 3], [0, 0]])]
    p = [np.array([[0, 1], [0, 1]]), np.array([[3, 0], [0, 0]])]
    # class 2 is absent from both: same as n_classes = 4 or 10
    expected = mean_iou(t, p, 4)
    assert expected == mean_iou(t, p, 10)
    assert mean_iou_scorer(Fixed(p), [None, None], t) == expected
    # a perfect prediction scores 1 whatever the ignored pixel predicts
    perfect = [np.where(t[0] == 255, 2, t[0]), t[1]]
    assert mean_iou_scorer(Fixed(perfect), [None, None], t) == 1.0
    assert expected < 1.0


def test_cv_results_to_dataset(scenes):
    X, y = scenes
    search = GridSearchCV(
        DirectSegmenter(discrepancy=TransportPath(),
                        upsampler=InterpolationUpsampler("nearest")),
        {"discrepancy__epsilon": [0.05, 0.1, 0.5],
         "discrepancy__n_iter": [5, 20]},
        cv=KFold(2), error_score="raise").fit(X, y)
    res = cv_results_to_dataset(search)
    assert res["mean_test_score"].dims == ("discrepancy.epsilon",
                                           "discrepancy.n_iter")
    np.testing.assert_array_equal(res["discrepancy.epsilon"],
                                  [0.05, 0.1, 0.5])
    np.testing.assert_array_equal(res["discrepancy.n_iter"], [5, 20])
    for k, params in enumerate(search.cv_results_["params"]):
        cell = res.sel({n.replace("__", "."): v for n, v in params.items()})
        for name in ("mean_test_score", "split1_test_score",
                     "rank_test_score", "mean_fit_time"):
            assert float(cell[name]) == search.cv_results_[name][k]
    # the best cell is where the search says
    best = res["mean_test_score"].where(
        res["rank_test_score"] == 1, drop=True)
    assert float(best.max()) == search.best_score_
    # transposed layout, and errors
    assert cv_results_to_dataset(
        search, ["discrepancy__n_iter", "discrepancy__epsilon"])[
        "mean_test_score"].dims == ("discrepancy.n_iter",
                                    "discrepancy.epsilon")
    with pytest.raises(ValueError, match="share the values"):
        cv_results_to_dataset(search, ["discrepancy__epsilon"])
    with pytest.raises(ValueError, match="not searched"):
        cv_results_to_dataset(search, ["discrepancy__tau"])
    with pytest.raises(TypeError, match="fitted search"):
        cv_results_to_dataset(DirectSegmenter())


def test_cv_results_to_dataset_ragged_grid_and_nested_names():
    results = {
        "params": [{"segment__mode": "kl"},
                   {"segment__mode": "velocity", "segment__tau": 0.1},
                   {"segment__mode": "velocity", "segment__tau": 0.3}],
        "param_segment__mode": np.ma.masked_array(
            ["kl", "velocity", "velocity"], dtype=object),
        "param_segment__tau": np.ma.masked_array(
            [0, 0.1, 0.3], mask=[True, False, False], dtype=object),
        "mean_test_score": np.array([0.2, 0.4, 0.5]),
    }
    res = cv_results_to_dataset(results)
    score = res["mean_test_score"]
    assert score.dims == ("segment.mode", "segment.tau")
    assert float(score.sel({"segment.mode": "velocity",
                            "segment.tau": 0.3})) == 0.5
    # kl was not tried with a tau: NaN there
    assert np.isnan(score.sel({"segment.mode": "kl"})).all()


# -- DataTree gathering ------------------------------------------------------

def test_gather_datatree_differently_sized_batch():
    small, y_small = make_scenes(n_scenes=1, n_classes=5, image_size=32,
                                 random_state=0)
    big, y_big = make_scenes(n_scenes=1, n_classes=5, image_size=64,
                             random_state=1)
    X, y = small + big, y_small + y_big
    seg = DirectSegmenter(upsampler=InterpolationUpsampler("nearest"))
    scores = seg.decision_function(X)
    labels = seg.predict(X)
    tree = gather_datatree(
        names=["small", "big"], attrs={"mode": "velocity"}, scores=scores,
        labels=labels, masks=y, images=[ds["image"].values for ds in X])
    assert isinstance(tree, xr.DataTree)
    assert list(tree.children) == ["small", "big"]
    assert tree.attrs == {"mode": "velocity"}
    for name, size, k in (("small", 32, 0), ("big", 64, 1)):
        ds = tree[name].to_dataset()
        assert ds["scores"].dims == ("class", "y", "x")
        assert ds["images"].dims == ("y", "x", "channel")
        assert ds["labels"].dims == ds["masks"].dims == ("y", "x")
        assert ds.sizes["y"] == ds.sizes["x"] == size
        assert list(ds["class"].values) == list(X[k]["class"].values)
        np.testing.assert_array_equal(ds["labels"], labels[k])
    # argmax over the labelled class dimension gives predict, tree-wide
    argmax = tree.map_over_datasets(
        lambda ds: ds["scores"].argmax("class").to_dataset(name="argmax")
        if "scores" in ds else ds)
    for got, want in zip(scatter_datatree(argmax, "argmax"), labels):
        np.testing.assert_array_equal(got, want)
    # scatter gives the lists back
    back = scatter_datatree(tree, "masks")
    for got, want in zip(back, y):
        np.testing.assert_array_equal(got.values, want)
    assert [type(d) for d in scatter_datatree(tree)] == [xr.Dataset] * 2


def test_gather_datatree_feature_datasets_and_default_names():
    X, y = make_scenes(n_scenes=3, n_classes=5, image_size=32,
                       random_state=0)
    tree = gather_datatree(features=X, masks=y)
    assert list(tree.children) == ["image_000", "image_001", "image_002"]
    node = tree["image_001"].to_dataset()
    assert {"logits", "affinity", "image", "masks"} <= set(node.data_vars)
    xr.testing.assert_identical(node["logits"], X[1]["logits"])


def test_gather_datatree_errors():
    m = [np.zeros((4, 5), int), np.zeros((6, 7), int)]
    imgs = [np.zeros((4, 5, 3), np.uint8), np.zeros((6, 8, 3), np.uint8)]
    with pytest.raises(ValueError, match="image 1"):
        gather_datatree(masks=m, images=imgs)
    with pytest.raises(ValueError, match="numbers of images"):
        gather_datatree(masks=m, images=imgs[:1])
    with pytest.raises(TypeError, match="bare array"):
        gather_datatree(images=np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="DataArray"):
        gather_datatree(scores=[np.zeros((7, 4, 5))])
    with pytest.raises(ValueError, match="duplicates"):
        gather_datatree(names=["a", "a"], masks=m)
    with pytest.raises(ValueError, match="'/'"):
        gather_datatree(names=["a/b", "c"], masks=m)
    with pytest.raises(TypeError, match="at least one variable"):
        gather_datatree()
    with pytest.raises(KeyError, match="no variable"):
        scatter_datatree(gather_datatree(masks=m), "scores")
    with pytest.raises(TypeError, match="DataTree"):
        scatter_datatree(m)
