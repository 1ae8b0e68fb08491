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

import importlib

__version__ = "0.1.0.dev0"

# name -> submodule holding it; imported on first access
_LAZY = {
    "DirectSegmenter": ".segmenters",
    "TransportPathSegmenter": ".segmenters",
    "TransportVelocitySegmenter": ".segmenters",
    "KLDiscrepancy": ".discrepancy",
    "TransportPath": ".discrepancy",
    "TransportVelocity": ".discrepancy",
    "LogitNormalizer": ".normalization",
    "JointBilateralUpsampler": ".upsample",
    "InterpolationUpsampler": ".upsample",
}

__all__ = ["DirectSegmenter", "TransportPathSegmenter",
           "TransportVelocitySegmenter", "KLDiscrepancy", "TransportPath",
           "TransportVelocity", "LogitNormalizer", "JointBilateralUpsampler",
           "InterpolationUpsampler", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
