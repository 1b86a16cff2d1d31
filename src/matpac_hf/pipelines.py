# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""`pipeline("audio-feature-extraction")`: audio in, clip and frame embeddings out.

transformers' own `"feature-extraction"` pipeline is text-only; `import matpac_hf` registers this audio one:

```python
>>> import matpac_hf
>>> from transformers import pipeline
>>> extractor = pipeline("audio-feature-extraction", model="path/or/hub-id")
>>> out = extractor("clip.wav")                                   # or an array, or {"raw": array, "sampling_rate": sr}
>>> out["clip_embedding"].shape, out["frame_embeddings"].shape, out["timestamps_ms"][:2]
((3840,), (63, 3840), array([ 87.5, 247.5]))
>>> outs = extractor([audio_1, audio_2, "clip.wav"], batch_size=8)  # a list in, a list of dicts out
```
"""

import inspect
import os

import numpy as np
import torch
from transformers import AutoModel, AutoModelForAudioClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.audio_classification import AudioClassificationPipeline
from transformers.utils import logging as transformers_logging

from .audio_io import decode_audio, resample
from .hear import column_timestamps_ms


TASK_NAME = "audio-feature-extraction"


class AudioFeatureExtractionPipeline(Pipeline):
    """Embeds audio with a MATPAC encoder (or any `AutoModel` audio encoder and its feature extractor).

    Inputs (one, or a list of them):
        - a 1-D numpy array / torch tensor of mono samples at the feature extractor's rate (16 kHz for MATPAC), or at
          `sampling_rate=...` given to the call (then resampled with soxr);
        - a dict `{"raw": array, "sampling_rate": int}` (or `"array"` instead of `"raw"`, as `datasets` gives);
        - a local file path or the bytes of a file, decoded with soundfile (channels averaged, resampled with soxr).

    Output per input, a dict of float32 numpy arrays (torch tensors with `return_tensors=True`):
        - `clip_embedding`: `(hidden,)`, the model's `pooler_output` (mean of the frame embeddings for MATPAC), or the
          mean of `last_hidden_state` over time for a model without a pooler;
        - `frame_embeddings`: `(num_frames, hidden)`, one row per 160 ms for MATPAC (padding of a batch removed);
        - `timestamps_ms`: `(num_frames,)` centre of each frame embedding in milliseconds (MATPAC: see
          `matpac_hf.hear`), `None` for models whose frame rate is unknown here.

    With `batch_size > 1`, MATPAC pads the clips of a batch and masks the padding out; any other model runs the clips
    of a batch that differ in length in separate forward passes, so a batched clip gets what it gets alone.
    """

    # What transformers' `pipeline()` loads for this class: the feature extractor only.
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def _sanitize_parameters(self, sampling_rate=None, return_tensors=None, **kwargs):
        if kwargs:
            raise ValueError(
                f"Unknown argument(s) {sorted(kwargs)} for the {TASK_NAME} pipeline; it accepts `sampling_rate` "
                "(of raw array inputs), `return_tensors`, `batch_size` and `num_workers`."
            )
        preprocess_params = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        postprocess_params = {} if return_tensors is None else {"return_tensors": return_tensors}
        return preprocess_params, {}, postprocess_params

    # -- preprocess ---------------------------------------------------------------------------------------------------
    def _to_waveform(self, inputs, sampling_rate: int | None) -> np.ndarray:
        return audio_input_to_waveform(inputs, sampling_rate, self.feature_extractor.sampling_rate)

    def preprocess(self, inputs, sampling_rate: int | None = None):
        waveform = self._to_waveform(inputs, sampling_rate)
        extractor_kwargs = {"sampling_rate": self.feature_extractor.sampling_rate, "return_tensors": "pt"}
        # the mask lets clips of different lengths share a batch; a model without the argument must not get one
        extractor_kwargs["return_attention_mask"] = (
            "attention_mask" in inspect.signature(self.model.forward).parameters
        )
        model_inputs = self.feature_extractor(waveform, **extractor_kwargs)
        if self.dtype is not None:
            model_inputs = model_inputs.to(dtype=self.dtype)
        model_inputs = dict(model_inputs)
        model_inputs["num_samples"] = torch.tensor([waveform.shape[-1]])
        if not self._masks_padding:
            # Kept out of the batch's padding: transformers' collate function pads tensors and passes anything else
            # on as a list, so `_forward` gets these clips as they are and runs equal lengths together.
            return {"unpadded_clip": model_inputs}
        return model_inputs

    @property
    def _masks_padding(self) -> bool:
        """MATPAC masks padded frames out of every output (its `frame_mask`); other models may let padding change
        their outputs (e.g. wav2vec2's group norm and unmasked frames), so their clips are never padded."""
        return getattr(self.model.config, "model_type", None) == "matpac"

    # -- forward ------------------------------------------------------------------------------------------------------
    def _forward(self, model_inputs):
        if "unpadded_clip" in model_inputs:  # one clip (batch_size 1) or the list of a batch's clips
            clips = model_inputs["unpadded_clip"]
            return self._forward_by_length(clips if isinstance(clips, list) else [clips])
        num_samples = model_inputs.pop("num_samples")  # (batch,)
        outputs = self.model(**model_inputs)
        frame_embeddings = outputs.last_hidden_state  # (batch, frames, hidden)
        clip_embedding = getattr(outputs, "pooler_output", None)
        frame_mask = getattr(outputs, "frame_mask", None)
        if frame_mask is None:
            frame_mask = torch.ones(frame_embeddings.shape[:2], dtype=torch.long, device=frame_embeddings.device)
        if clip_embedding is None:
            clip_embedding = frame_embeddings.mean(1)
        return {
            "frame_embeddings": frame_embeddings,
            "clip_embedding": clip_embedding,  # (batch, hidden)
            "frame_mask": frame_mask,  # (batch, frames)
            "num_samples": num_samples,
        }

    def _forward_by_length(self, items: list[dict]) -> dict:
        """One forward pass per group of equal-length clips, so that no clip sees padding; the outputs are then padded
        to a batch, with `frame_mask` marking each clip's own frames."""
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(tuple(tuple(tensor.shape) for tensor in item.values()), []).append(index)
        per_clip = [None] * len(items)
        for indices in groups.values():
            outputs = self._forward({key: torch.cat([items[i][key] for i in indices]) for key in items[indices[0]]})
            for position, index in enumerate(indices):
                per_clip[index] = {key: value[position] for key, value in outputs.items()}
        num_frames = max(clip["frame_embeddings"].shape[0] for clip in per_clip)

        def pad_frames(tensor):  # (frames, ...) -> (num_frames, ...)
            return torch.nn.functional.pad(tensor, (0, 0) * (tensor.dim() - 1) + (0, num_frames - tensor.shape[0]))

        return {
            "frame_embeddings": torch.stack([pad_frames(clip["frame_embeddings"]) for clip in per_clip]),
            "clip_embedding": torch.stack([clip["clip_embedding"] for clip in per_clip]),
            "frame_mask": torch.stack([pad_frames(clip["frame_mask"]) for clip in per_clip]),
            "num_samples": torch.stack([clip["num_samples"] for clip in per_clip]),
        }

    # -- postprocess --------------------------------------------------------------------------------------------------
    def postprocess(self, model_outputs, return_tensors: bool = False):
        num_frames = int(model_outputs["frame_mask"][0].sum())
        frame_embeddings = model_outputs["frame_embeddings"][0, :num_frames].float()  # (frames, hidden)
        clip_embedding = model_outputs["clip_embedding"][0].float()  # (hidden,)
        timestamps = None
        if getattr(self.model.config, "model_type", None) == "matpac":
            timestamps = column_timestamps_ms(int(model_outputs["num_samples"].reshape(-1)[0]), self.model.config)
            timestamps = timestamps.float()
        if not return_tensors:
            frame_embeddings, clip_embedding = frame_embeddings.numpy(), clip_embedding.numpy()
            timestamps = None if timestamps is None else timestamps.numpy()
        return {"clip_embedding": clip_embedding, "frame_embeddings": frame_embeddings, "timestamps_ms": timestamps}


def audio_input_to_waveform(inputs, sampling_rate: int | None, target_rate: int) -> np.ndarray:
    """One pipeline input -> a mono waveform at `target_rate`: a file path or the bytes of a file (decoded by
    `matpac_hf.audio_io.decode_audio`: soundfile, or FFmpeg through torchcodec for the containers soundfile cannot
    read), a torchcodec `AudioDecoder`, a dict `{"raw" (or "array"): array, "sampling_rate": int}`, or a 1-D array /
    tensor at `sampling_rate` (default: `target_rate`). Other rates are resampled with soxr."""
    if isinstance(inputs, (str, os.PathLike, bytes)) or hasattr(inputs, "get_all_samples"):
        return decode_audio(inputs, target_rate)
    if isinstance(inputs, dict):
        if "sampling_rate" not in inputs or not ("raw" in inputs or "array" in inputs):
            raise ValueError(
                'A dict input needs the audio under "raw" (or "array") and its rate under "sampling_rate", got '
                f"keys {sorted(inputs)}."
            )
        sampling_rate = inputs["sampling_rate"]
        inputs = inputs["raw"] if "raw" in inputs else inputs["array"]
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().float().cpu().numpy()
    if not isinstance(inputs, np.ndarray):
        raise ValueError(
            f"Unsupported input of type {type(inputs).__name__}: give a 1-D numpy array / torch tensor, a dict "
            '{"raw": array, "sampling_rate": int}, a file path or the bytes of an audio file.'
        )
    if inputs.ndim > 1 and inputs.shape[0] != 1:  # the feature extractor would take its rows as a batch
        axis = 1 if inputs.ndim == 2 and inputs.shape[1] < inputs.shape[0] else 0  # channels: the shorter axis
        raise ValueError(
            f"Each input is one mono clip, got an array of shape {inputs.shape}: down-mix the channels with "
            f"`audio.mean(axis={axis})`, or pass a list of 1-D clips."
        )
    if sampling_rate is not None and sampling_rate != target_rate:
        inputs = resample(inputs.reshape(-1), sampling_rate, target_rate)
    return inputs


class MatpacAudioClassificationPipeline(AudioClassificationPipeline):
    """transformers' `"audio-classification"` pipeline with this package's audio input handling (registered for the
    task by `import matpac_hf`; the scores, `top_k` and `function_to_apply` are transformers'):

    - `sampling_rate=` of a call gives the rate of array inputs, resampled with soxr (transformers' own pipeline
      ignores the argument and takes the array to be at the model's rate);
    - `{"raw" / "array": array, "sampling_rate": sr}` is resampled with soxr (no torchaudio needed);
    - a file path or file bytes are decoded by `matpac_hf.audio_io.decode_audio` (soundfile; FFmpeg through
      torchcodec for .m4a / .aac / .mp4 / .webm), so no `ffmpeg` binary is needed. URLs are fetched as transformers
      does.
    """

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, sampling_rate=None, **kwargs):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(
            top_k=top_k, function_to_apply=function_to_apply, **kwargs
        )
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, inputs, sampling_rate: int | None = None):
        if isinstance(inputs, str) and inputs.startswith(("http://", "https://")):
            return super().preprocess(inputs)
        return super().preprocess(audio_input_to_waveform(inputs, sampling_rate, self.feature_extractor.sampling_rate))


def register_pipelines() -> None:
    """Registers `"audio-feature-extraction"` with transformers' `pipeline()`, and
    `MatpacAudioClassificationPipeline` for `"audio-classification"`. Done when this module is imported (by
    `import matpac_hf`, and where it runs as a folder's remote code)."""
    PIPELINE_REGISTRY.register_pipeline(
        TASK_NAME, pipeline_class=AudioFeatureExtractionPipeline, pt_model=AutoModel, type="audio"
    )
    registry_logger = transformers_logging.get_logger("transformers.pipelines.base")
    level = registry_logger.level
    registry_logger.setLevel(transformers_logging.ERROR)  # "already registered. Overwriting ...": intended here
    try:
        PIPELINE_REGISTRY.register_pipeline(
            "audio-classification",
            pipeline_class=MatpacAudioClassificationPipeline,
            pt_model=AutoModelForAudioClassification,
            default=PIPELINE_REGISTRY.supported_tasks["audio-classification"].get("default"),
            type="audio",
        )
    finally:
        registry_logger.setLevel(level)


# Registered on import, also as remote code: the pipeline's `save_pretrained` / `push_to_hub` then write
# `custom_pipelines` and copy this file and the files it imports (transformers' custom-pipeline mechanism).
register_pipelines()


__all__ = [
    "AudioFeatureExtractionPipeline",
    "MatpacAudioClassificationPipeline",
    "audio_input_to_waveform",
    "register_pipelines",
    "TASK_NAME",
]
