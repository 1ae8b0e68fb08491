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

import lazy_loader

from ._contract import check_features, from_arrays

# name -> submodule, imported on first access (PEP 562, through
# lazy_loader, as scikit-image does)
__getattr__, _lazy_dir, _ = lazy_loader.attach(
    __name__, submod_attrs={
        "affinity": ["ColorPositionAffinity", "ProjectedAttentionAffinity",
                     "DegradedAffinity"],
        "prototypes": ["ColorPrototypeLogits"],
        "clip": ["CLIPFeatures"],
        "_cache": ["WeightsUnavailableError", "clear_model_cache"],
        "diffusion": ["DiffusionAttention"],
        "extractor": ["FeatureExtractor"]})

__all__ = ["from_arrays", "check_features", "ColorPositionAffinity",
           "ProjectedAttentionAffinity", "DegradedAffinity",
           "ColorPrototypeLogits",
           "CLIPFeatures", "WeightsUnavailableError", "clear_model_cache",
           "DiffusionAttention", "FeatureExtractor"]


def __dir__():
    return sorted(set(globals()) | set(_lazy_dir()))
