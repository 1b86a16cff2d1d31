"""matpac-hf: MATPAC / MATPAC++ audio representations for Hugging Face Transformers.

Importing the package registers the MATPAC classes with the transformers Auto classes.
"""

from pathlib import Path

import transformers
from transformers import AutoConfig, AutoFeatureExtractor, AutoProcessor

from . import modeling_matpac as _modeling
from .configuration_matpac import AUTO_MAP, MatpacConfig
from .feature_extraction_matpac import MatpacFeatureExtractor
from .modeling_matpac import (
    MatpacForAudioClassification,
    MatpacForAudioFrameClassification,
    MatpacForPreTraining,
    MatpacModel,
    MatpacPreTrainedModel,
)
from .pipelines import AudioFeatureExtractionPipeline  # registers pipeline("audio-feature-extraction", ...)


__version__ = "0.1.0"

# The offline `evaluate` metric modules shipped with the package: `evaluate.load(str(METRICS_DIR / "accuracy"))`
# (also "mean_average_precision", "roc_auc"); nothing is fetched from the Hub.
METRICS_DIR = Path(__file__).parent / "metrics"

AutoConfig.register(MatpacConfig.model_type, MatpacConfig, exist_ok=True)
AutoFeatureExtractor.register(MatpacConfig, MatpacFeatureExtractor, exist_ok=True)
# MATPAC's processor is its feature extractor (as for AST): without this, AutoProcessor tries AutoImageProcessor on
# the folder first, which asks whether to trust the folder's remote code.
AutoProcessor.register(MatpacConfig, MatpacFeatureExtractor, exist_ok=True)

# `register_for_auto_class` (transformers' custom-model mechanism) makes every `save_pretrained` copy the code files
# next to the weights, which `config.auto_map` (`AUTO_MAP`) points into: saved folders load with
# `trust_remote_code=True` where matpac_hf is not installed.
MatpacConfig.register_for_auto_class("AutoConfig")
MatpacFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
for _auto_class_name, _reference in AUTO_MAP.items():
    if _auto_class_name != "AutoConfig":
        _model_class = getattr(_modeling, _reference.split(".")[1])
        getattr(transformers, _auto_class_name).register(MatpacConfig, _model_class, exist_ok=True)
        _model_class.register_for_auto_class(_auto_class_name)
del _auto_class_name, _reference, _model_class

__all__ = [
    "METRICS_DIR",
    "AudioFeatureExtractionPipeline",
    "MatpacConfig",
    "MatpacFeatureExtractor",
    "MatpacForAudioClassification",
    "MatpacForAudioFrameClassification",
    "MatpacForPreTraining",
    "MatpacModel",
    "MatpacPreTrainedModel",
]
