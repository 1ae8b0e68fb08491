"""Training-free open-vocabulary semantic segmentation by distributional discrepancy.

dsolo_sk turns CLIP logits and an affinity between patches into a label map
without any training, following "Direct Segmentation without Logits
Optimization" (CVPR 2026): non-maximum suppression and normalisation of the
logits, a discrepancy to the uniform distribution measured along an optimal
transport path or as a Markov transport velocity, joint bilateral upsampling
and an argmax.

The public names are imported on first use (PEP 562), so that
``import dsolo_sk`` and the ``dsolo-sk`` command line start without
importing torch or POT; ``from dsolo_sk import DirectSegmenter`` works as
usual.
"""

import lazy_loader

__version__ = "0.1.0.dev0"

# name -> submodule, imported on first access (PEP 562, through
# lazy_loader, as scikit-image does)
__getattr__, _lazy_dir, _ = lazy_loader.attach(
    __name__, submod_attrs={
        "segmenters": ["DirectSegmenter", "TransportPathSegmenter",
                       "TransportVelocitySegmenter"],
        "discrepancy": ["KLDiscrepancy", "TransportPath", "TransportVelocity"],
        "normalization": ["LogitNormalizer"],
        "upsample": ["JointBilateralUpsampler", "InterpolationUpsampler"]})

__all__ = ["DirectSegmenter", "TransportPathSegmenter",
           "TransportVelocitySegmenter", "KLDiscrepancy", "TransportPath",
           "TransportVelocity", "LogitNormalizer", "JointBilateralUpsampler",
           "InterpolationUpsampler", "__version__"]


def __dir__():
    return sorted(set(globals()) | set(_lazy_dir()))
