"""
Writing your own discrepancy
============================

A :class:`~dsolo_sk.DirectSegmenter` composes three parts: a normaliser,
a discrepancy and an upsampler. Any object with
``compute(q, affinity, mass=None) -> (N, P) scores`` can be the
discrepancy (see :ref:`custom-discrepancy`). This example writes one, a
fixed number of steps of a random walk over the affinity, runs it next to
the built-in discrepancies on generated scenes, and lets a grid search
choose between all of them, each with its own parameter.
"""

# %%
# A discrepancy in a dozen lines
# ------------------------------
#
# The class ratio to the uniform distribution, :math:`f_c = P m_c q_c`,
# diffused for ``n_steps`` steps of the row-stochastic walk
# :math:`W = \mathrm{diag}(A \mathbf 1)^{-1} A`: :math:`f_c W^{n}`.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, KFold

from dsolo_sk import (DirectSegmenter, TransportPath, TransportVelocity)
from dsolo_sk.datasets import make_scenes


class RandomWalk(BaseEstimator):
    """Ratio to uniform after `n_steps` steps of a random walk."""

    def __init__(self, n_steps=3):
        self.n_steps = n_steps

    def compute(self, q, affinity, mass=None):
        walk = affinity / affinity.sum(1, keepdims=True)
        f = q * q.shape[1] * (1.0 if mass is None else mass[:, None])
        for _ in range(self.n_steps):
            f = f @ walk.T
        return f


X, y = make_scenes(n_scenes=6, n_classes=10, image_size=192, random_state=0)

# %%
# Side by side with the built-in discrepancies
# --------------------------------------------

segmenters = {
    "raw logits": DirectSegmenter(mode="raw", progress=False),
    "random walk (ours)": DirectSegmenter(discrepancy=RandomWalk(5),
                                          progress=False),
    "TransportPath": DirectSegmenter(discrepancy=TransportPath(),
                                     progress=False),
    "TransportVelocity": DirectSegmenter(discrepancy=TransportVelocity(),
                                         progress=False),
}
scores = {name: 100 * seg.score(X, y) for name, seg in segmenters.items()}
for name, value in scores.items():
    print(f"{name:<20s} mIoU {value:5.1f} %")

# %%
# A search over discrepancies
# ---------------------------
#
# The discrepancy is a parameter like any other: a list of sub-grids lets
# the search choose the object and each object's own parameter.

grid = [{"discrepancy": [RandomWalk()], "discrepancy__n_steps": [1, 5, 20]},
        {"discrepancy": [TransportVelocity()],
         "discrepancy__tau": [0.1, 0.3]},
        {"discrepancy": [TransportPath()],
         "discrepancy__epsilon": [0.05, 0.1]}]
search = GridSearchCV(DirectSegmenter(progress=False), grid, cv=KFold(2),
                      error_score="raise").fit(X, y)
for params, score in zip(search.cv_results_["params"],
                         search.cv_results_["mean_test_score"]):
    name = type(params["discrepancy"]).__name__
    value = [v for k, v in params.items() if "__" in k][0]
    print(f"{name:<18s} {value!s:>5s}  mIoU {100 * score:5.1f} %")
print("chosen:", search.best_estimator_.discrepancy)

# %%
# The score maps of one class under each discrepancy.

present = np.unique(y[0])
c = int(present[0])
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
axes[0].imshow(X[0]["image"].values)
axes[0].contour(y[0] == c, levels=[0.5], colors="w")
axes[0].set_title(f"scene 0, {X[0]['class'].values[c]} outlined")
for ax, name in zip(axes[1:], ["random walk (ours)", "TransportPath",
                               "TransportVelocity"]):
    maps = segmenters[name].decision_function(X[:1])[0]
    ax.imshow(maps.values[c], cmap="magma")
    ax.set_title(f"{name}: {scores[name]:.1f} mIoU")
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
plt.show()
