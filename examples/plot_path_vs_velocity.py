"""
Optimal transport path against transport velocity
=================================================

The two refined discrepancies of the method read how each class's
distribution over patches degenerates towards the uniform distribution
along the image's own structure (an affinity between patches):

* ``mode="path"`` (:class:`~dsolo_sk.TransportPath`): the entropic optimal
  transport plan from the class distribution to uniform, solved by
  Sinkhorn with regularisation :math:`\\varepsilon`; the per-patch score is
  the centred dual potential of the uniform side;
* ``mode="velocity"`` (:class:`~dsolo_sk.TransportVelocity`): a Markov
  chain whose doubly stochastic transition matrix comes from the affinity;
  each patch's score is its state when it converges, the first step whose
  change is at most :math:`\\tau`.

This example looks at the score maps of both modes on one generated scene,
then at how the mIoU depends on :math:`\\varepsilon` and :math:`\\tau`,
and at the time each mode takes. See the :ref:`method page <method>` for
the math.
"""

# %%
# One scene, two discrepancies
# ----------------------------

import time

import matplotlib.pyplot as plt
import numpy as np

from dsolo_sk import (TransportPath, TransportPathSegmenter, TransportVelocity,
                      TransportVelocitySegmenter)
from dsolo_sk.datasets import make_scenes

X, y = make_scenes(n_scenes=8, n_classes=12, image_size=256, random_state=3)
scene = X[0]
present = np.unique(y[0])
print("classes present in the first scene:",
      [str(scene["class"].values[c]) for c in present])

path = TransportPathSegmenter(progress=False)
velocity = TransportVelocitySegmenter(progress=False)
s_path = path.decision_function([scene])[0]
s_vel = velocity.decision_function([scene])[0]

# %%
# The score maps of the classes present (rows: path, velocity). Both are
# on the image's resolution after joint bilateral upsampling; the label
# map is their argmax over all classes of the vocabulary.

fig, axes = plt.subplots(2, len(present) + 1,
                         figsize=(2.6 * (len(present) + 1), 5.4))
for row, (name, s) in enumerate((("path", s_path), ("velocity", s_vel))):
    for ax, c in zip(axes[row], present):
        ax.imshow(s[c], cmap="magma")
        ax.set_title(f"{name}: {s['class'].values[c]}", fontsize=9)
    axes[row, -1].imshow(np.argmax(s.values, axis=0), cmap="tab20",
                         vmin=0, vmax=19, interpolation="nearest")
    axes[row, -1].set_title(f"{name}: labels", fontsize=9)
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# Sensitivity to epsilon and tau
# ------------------------------
# The paper sets :math:`\varepsilon = 0.1` and :math:`\tau = 0.3` (on the
# scale of the ratio of a class's distribution to the uniform one). Each
# point below is the mIoU of one setting on the eight scenes.

epsilons = [0.03, 0.1, 0.3, 1.0]
taus = [0.03, 0.1, 0.3, 1.0, 3.0]
miou_eps = [100 * path.set_params(discrepancy=TransportPath(epsilon=e))
            .score(X, y) for e in epsilons]
miou_tau = [100 * velocity.set_params(discrepancy=TransportVelocity(tau=t))
            .score(X, y) for t in taus]

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
axes[0].semilogx(epsilons, miou_eps, "o-")
axes[0].set_xlabel(r"$\varepsilon$ (path)")
axes[0].set_ylabel("mIoU (%)")
axes[1].semilogx(taus, miou_tau, "o-", color="C1")
axes[1].set_xlabel(r"$\tau$ (velocity)")
for ax, best in ((axes[0], 0.1), (axes[1], 0.3)):
    ax.axvline(best, color="grey", ls=":", lw=1)
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# Time per image
# --------------
# Both modes share the cost of one (P x P) affinity per image: Sinkhorn
# runs ``n_iter`` log-domain iterations (``discrepancy__n_iter``), the
# Markov chain at most ``max_steps`` steps, each a product of the
# (classes x P) state with the affinity. With ``affinity_topk``
# :class:`~dsolo_sk.TransportVelocity` keeps only the largest entries of
# each affinity row (a sparse matrix).

for name, est in (("path", TransportPathSegmenter(progress=False)),
                  ("velocity", TransportVelocitySegmenter(progress=False)),
                  ("velocity, top-32 affinity",
                   TransportVelocitySegmenter(
                       discrepancy=TransportVelocity(affinity_topk=32),
                       progress=False))):
    t0 = time.perf_counter()
    miou = 100 * est.score(X, y)
    dt = (time.perf_counter() - t0) / len(X)
    print(f"{name:<26s} mIoU {miou:5.1f} %   {dt:.3f} s/image")
