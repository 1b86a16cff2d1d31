"""matpac-hf: MATPAC / MATPAC++ audio representations for Hugging Face Transformers.

Importing the package registers the MATPAC classes with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from .configuration_matpac import MatpacConfig
from .feature_extraction_matpac import MatpacFeatureExtractor
from .modeling_matpac import MatpacModel, MatpacPreTrainedModel
from .pipelines import AudioFeatureExtractionPipeline, register_pipelines


__version__ = "0.1.0"

AutoConfig.register(MatpacConfig.model_type, MatpacConfig, exist_ok=True)
AutoModel.register(MatpacConfig, MatpacModel, exist_ok=True)
AutoFeatureExtractor.register(MatpacConfig, MatpacFeatureExtractor, exist_ok=True)
register_pipelines()  # pipeline("audio-feature-extraction", model=...)

__all__ = [
    "AudioFeatureExtractionPipeline",
    "MatpacConfig",
    "MatpacFeatureExtractor",
    "MatpacModel",
    "MatpacPreTrainedModel",
]
