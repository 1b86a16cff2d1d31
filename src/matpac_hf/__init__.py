"""matpac-hf: MATPAC / MATPAC++ audio representations for Hugging Face Transformers.

Importing the package registers the MATPAC classes with the transformers Auto classes.
"""

from pathlib import Path

import transformers
from transformers import AutoConfig, AutoFeatureExtractor, AutoProcessor

from . import modeling_matpac as _modeling
from .configuration_matpac import MatpacConfig
from .feature_extraction_matpac import MatpacFeatureExtractor
from .modeling_matpac import (
    MatpacForAudioClassification,
    MatpacForAudioFrameClassification,
    MatpacForPreTraining,
    MatpacModel,
    MatpacPreTrainedModel,
)
from .pipelines import AudioFeatureExtractionPipeline, register_pipelines


__version__ = "0.1.0"

# The offline `evaluate` metric modules shipped with the package: `evaluate.load(str(METRICS_DIR / "accuracy"))`
# (also "mean_average_precision", "roc_auc"); nothing is fetched from the Hub.
METRICS_DIR = Path(__file__).parent / "metrics"

AutoConfig.register(MatpacConfig.model_type, MatpacConfig, exist_ok=True)
AutoFeatureExtractor.register(MatpacConfig, MatpacFeatureExtractor, exist_ok=True)
# MATPAC's processor is its feature extractor (as for AST): without this, AutoProcessor tries AutoImageProcessor on
# the folder first, which asks whether to trust the folder's remote code.
AutoProcessor.register(MatpacConfig, MatpacFeatureExtractor, exist_ok=True)
register_pipelines()  # pipeline("audio-feature-extraction", model=...)

# Every model class with its Auto class (AutoModel, AutoModelForAudioClassification, AutoModelForAudioFrameClassification,
# AutoModelForPreTraining: `modeling_matpac.AUTO_CLASS_OF_MODEL_CLASS`). Remote code: with `register_for_auto_class`
# `save_pretrained` copies the code files (configuration_matpac.py, modeling_matpac.py, feature_extraction_matpac.py,
# and pipelines.py with the files it imports) into the folder and writes `auto_map` (config.json: AutoConfig and every
# model Auto class, see `modeling_matpac.matpac_auto_map`; preprocessor_config.json: AutoFeatureExtractor) and
# `custom_pipelines`, so the folder also loads with `trust_remote_code=True` where matpac_hf is not installed.
MatpacConfig.register_for_auto_class("AutoConfig")
MatpacFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
for _class_name, _auto_class_name in _modeling.AUTO_CLASS_OF_MODEL_CLASS.items():
    getattr(transformers, _auto_class_name).register(MatpacConfig, getattr(_modeling, _class_name), exist_ok=True)
    getattr(_modeling, _class_name).register_for_auto_class(_auto_class_name)
del _class_name, _auto_class_name

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
