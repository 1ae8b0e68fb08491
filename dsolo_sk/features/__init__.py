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
   check_weights
   require_weights
   download_weights
   weights_folder

The extractors (and torch, open_clip and diffusers behind them) are
imported on first use, so that ``import dsolo_sk`` stays light for work on
precomputed features, and :func:`check_weights` answers without torch.
"""

import lazy_loader

# name -> submodule, imported on first access (PEP 562, through
# lazy_loader, as scikit-image does)
__getattr__, _lazy_dir, _ = lazy_loader.attach(
    __name__, submod_attrs={
        "_contract": ["check_features", "from_arrays"],
        "affinity": ["ColorPositionAffinity", "ProjectedAttentionAffinity",
                     "DegradedAffinity"],
        "prototypes": ["ColorPrototypeLogits"],
        "clip": ["CLIPFeatures"],
        "_cache": ["WeightsUnavailableError", "WeightsNotFoundError",
                   "WeightsGatedError", "HubUnreachableError",
                   "WeightsNotCachedError", "MissingPackageError",
                   "clear_model_cache"],
        "weights": ["check_weights", "download_weights", "weights_folder",
                    "require_weights", "WeightsStatus"],
        "diffusion": ["DiffusionAttention"],
        "extractor": ["FeatureExtractor"]})

__all__ = ["from_arrays", "check_features", "ColorPositionAffinity",
           "ProjectedAttentionAffinity", "DegradedAffinity",
           "ColorPrototypeLogits",
           "CLIPFeatures", "WeightsUnavailableError", "WeightsNotFoundError",
           "WeightsGatedError", "HubUnreachableError", "WeightsNotCachedError",
           "MissingPackageError", "clear_model_cache", "check_weights",
           "download_weights", "weights_folder", "require_weights",
           "WeightsStatus",
           "DiffusionAttention", "FeatureExtractor"]


def __dir__():
    return sorted(set(globals()) | set(_lazy_dir()))
