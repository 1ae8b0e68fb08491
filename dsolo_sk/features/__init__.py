"""Feature extraction and the precomputed-feature contract.

.. autosummary::

   from_arrays
   check_features
   ColorPositionAffinity
   ProjectedAttentionAffinity
   DegradedAffinity
   ColorPrototypeLogits
   CLIPFeatures
   DiffusionAttention
   FeatureExtractor

The extractors (and torch, open_clip and diffusers behind them) are
imported on first use, so that ``import dsolo_sk`` stays light for work on
precomputed features.
"""

import importlib

from ._contract import check_features, from_arrays

# name -> submodule; imported on first access (PEP 562)
_LAZY = {
    "ColorPositionAffinity": ".affinity",
    "ProjectedAttentionAffinity": ".affinity",
    "DegradedAffinity": ".affinity",
    "ColorPrototypeLogits": ".prototypes",
    "CLIPFeatures": ".clip",
    "WeightsUnavailableError": "._cache",
    "clear_model_cache": "._cache",
    "DiffusionAttention": ".diffusion",
    "FeatureExtractor": ".extractor",
}

__all__ = ["from_arrays", "check_features", "ColorPositionAffinity",
           "ProjectedAttentionAffinity", "DegradedAffinity",
           "ColorPrototypeLogits",
           "CLIPFeatures", "WeightsUnavailableError", "clear_model_cache",
           "DiffusionAttention", "FeatureExtractor"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
