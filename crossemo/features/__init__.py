"""openSMILE functionals per utterance.

Three jobs, one module each:

* :mod:`crossemo.features.sets`: choosing a feature set (a built-in name or
  a config location) and naming it for the cache;
* :mod:`crossemo.features.smileconfig`: adapting a ``SMILExtract`` config to
  openSMILE's Python API;
* :mod:`crossemo.features.extractor`: the streaming extractor, one vector of
  functionals per mono signal, with bounded memory.
"""

from crossemo.features.extractor import FeatureExtractor
from crossemo.features.sets import DEFAULT_FEATURE_SET, FEATURE_SETS, FeatureSetSpec, resolve_feature_set
from crossemo.features.smileconfig import CONFIG_ROOT, PYTHON_API_HOOKS, AdaptedConfig, FeatureError, adapt_config

__all__ = [
    "CONFIG_ROOT", "DEFAULT_FEATURE_SET", "FEATURE_SETS", "PYTHON_API_HOOKS", "AdaptedConfig", "FeatureError",
    "FeatureExtractor", "FeatureSetSpec", "adapt_config", "resolve_feature_set",
]
