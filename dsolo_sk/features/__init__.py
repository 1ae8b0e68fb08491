"""Feature extraction and the precomputed-feature contract.

.. autosummary::

   from_arrays
   check_features
"""

from ._contract import check_features, from_arrays
from .affinity import ColorPositionAffinity

__all__ = ["from_arrays", "check_features", "ColorPositionAffinity"]
from ._cache import WeightsUnavailableError, clear_model_cache
from .clip import CLIPFeatures

__all__ += ["CLIPFeatures", "WeightsUnavailableError", "clear_model_cache"]
from .diffusion import DiffusionAttention
from .extractor import FeatureExtractor

__all__ += ["DiffusionAttention", "FeatureExtractor"]
