"""Training-free open-vocabulary semantic segmentation by distributional discrepancy.

dsolo_sk turns CLIP logits and an affinity between patches into a label map
without any training, following "Direct Segmentation without Logits
Optimization" (CVPR 2026): non-maximum suppression and normalisation of the
logits, a discrepancy to the uniform distribution measured along an optimal
transport path or as a Markov transport velocity, joint bilateral upsampling
and an argmax.
"""

from .discrepancy import KLDiscrepancy, TransportPath, TransportVelocity
from .normalization import LogitNormalizer
from .segmenters import (DirectSegmenter, TransportPathSegmenter,
                         TransportVelocitySegmenter)
from .upsample import InterpolationUpsampler, JointBilateralUpsampler

__version__ = "0.1.0.dev0"

__all__ = ["DirectSegmenter", "TransportPathSegmenter",
           "TransportVelocitySegmenter", "KLDiscrepancy", "TransportPath",
           "TransportVelocity", "LogitNormalizer", "JointBilateralUpsampler",
           "InterpolationUpsampler", "__version__"]
