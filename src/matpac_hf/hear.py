# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The HEAR 2021 common API (https://hearbenchmark.com/hear-api.html) for MATPAC checkpoints.

```python
>>> import torch
>>> from matpac_hf import hear
>>> model = hear.load_model("path/or/hub-id")                  # any saved MatpacModel folder or Hub repository
>>> audio = torch.zeros(2, 32000)                               # (n_sounds, n_samples), 16 kHz mono in [-1, 1]
>>> scene = hear.get_scene_embeddings(audio, model)            # (2, 3840)
>>> frames, timestamps = hear.get_timestamp_embeddings(audio, model)  # (2, 13, 3840), (2, 13) in ms
```

Timestamps. The log-mel has one frame per hop of 160 samples, computed without centre padding: frame `k` covers
samples `[160 k, 160 k + 400)` and is centred at `(160 k + 200) / 16000` s, i.e. `10 k + 12.5` ms. One frame embedding
(one 16-frame patch column) covers frames `16 j .. 16 j + 15` (chunks of `max_frames` = 608 frames are multiples of
16, so this holds across chunk boundaries too). Its timestamp is the mean centre of the frames it covers:

    t_j = 10 * (first_j + last_j) / 2 + 12.5 ms,   first_j = 16 j,   last_j = min(16 j + 15, num_frames - 1)

which is `160 j + 87.5` ms for a full column; the last column of a clip may hold fewer than 16 real frames (the rest is
padding), and its timestamp is the centre of its real frames only.
"""

import math

import torch
from transformers import AutoFeatureExtractor, AutoModel


DEFAULT_BATCH_SIZE = 16


def load_model(model_file_path: str = "", device: str | torch.device | None = None, **from_pretrained_kwargs):
    """Loads a MATPAC encoder and its feature extractor for the HEAR API.

    Args:
        model_file_path (`str`): a local folder written by `save_pretrained` or a Hugging Face Hub repository id,
            holding `config.json`, the weights and `preprocessor_config.json`.
        device (`str` or `torch.device`, *optional*): where to put the model (default: CPU).
        from_pretrained_kwargs: passed to both `from_pretrained` calls (e.g. `revision`, `trust_remote_code`).

    Returns:
        The model in eval mode, with the HEAR attributes `sample_rate` (16000), `scene_embedding_size` and
        `timestamp_embedding_size` (`config.frame_embedding_size`, 3840 for ViT-B), and its `feature_extractor`.
    """
    if not model_file_path:
        raise ValueError(
            "load_model needs `model_file_path`: a folder written by `save_pretrained` (with config.json, the weights "
            "and preprocessor_config.json) or a Hugging Face Hub repository id."
        )
    import matpac_hf  # noqa: F401  (registers MATPAC with the Auto classes)

    model = AutoModel.from_pretrained(model_file_path, **from_pretrained_kwargs)
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_file_path, **from_pretrained_kwargs)
    if not hasattr(model.config, "frame_embedding_size"):
        raise ValueError(
            f"{model_file_path!r} holds a {type(model).__name__} (model_type {model.config.model_type!r}), not a "
            "MATPAC encoder; the HEAR API here needs a MatpacModel checkpoint."
        )
    if device is not None:
        model = model.to(device)
    model.eval()
    model.feature_extractor = feature_extractor
    model.sample_rate = feature_extractor.sampling_rate
    model.scene_embedding_size = model.config.frame_embedding_size
    model.timestamp_embedding_size = model.config.frame_embedding_size
    return model


def frame_timestamps_ms(num_samples: int, config) -> torch.Tensor:
    """Centre time in milliseconds of each frame embedding of a clip of `num_samples` samples, `(n_timestamps,)`
    float64 (see the module docstring for the formula)."""
    num_frames = 1 + (num_samples - config.win_length) // config.hop_length
    num_columns = math.ceil(num_frames / config.patch_size)
    first = torch.arange(num_columns, dtype=torch.float64) * config.patch_size
    last = torch.clamp(first + config.patch_size - 1, max=num_frames - 1)
    # frame k is centred at (k * hop + win / 2) samples
    centre_samples = (first + last) / 2 * config.hop_length + config.win_length / 2
    return centre_samples * 1000.0 / config.sampling_rate


def _check_audio(audio: torch.Tensor, model) -> None:
    if not isinstance(audio, torch.Tensor):
        raise ValueError(
            f"audio must be a torch.Tensor of shape (n_sounds, n_samples), got {type(audio).__name__}; "
            "use torch.as_tensor(audio)."
        )
    if audio.ndim != 2:
        raise ValueError(
            f"audio must have shape (n_sounds, n_samples), got {tuple(audio.shape)}; use audio[None] for one sound "
            "and down-mix channels to mono first."
        )
    if not audio.is_floating_point():
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}.")
    if audio.shape[0] == 0:
        raise ValueError("audio holds no sound (shape (0, n_samples)).")
    min_samples = model.config.win_length
    if audio.shape[1] < min_samples:
        raise ValueError(
            f"Sounds are {audio.shape[1]} samples long; MATPAC needs at least {min_samples} samples "
            f"({1000 * min_samples / model.sample_rate:g} ms at {model.sample_rate} Hz). Pad them with zeros."
        )
    if not hasattr(model, "feature_extractor"):
        raise ValueError("model must come from matpac_hf.hear.load_model (it carries the feature extractor).")


@torch.no_grad()
def _embed(audio: torch.Tensor, model, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns frame embeddings `(n_sounds, n_timestamps, size)` and clip embeddings `(n_sounds, size)` in float32
    on the audio's device."""
    _check_audio(audio, model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    model_device = next(model.parameters()).device
    frame_embeddings, clip_embeddings = [], []
    for start in range(0, audio.shape[0], batch_size):
        waveforms = audio[start : start + batch_size].to(model_device)  # (batch, n_samples)
        input_values = model.feature_extractor.extract_log_mel(waveforms)  # (batch, num_mel_bins, frames)
        outputs = model(input_values=input_values)  # equal lengths: every frame is valid, no mask needed
        frame_embeddings.append(outputs.last_hidden_state.float().to(audio.device))  # (batch, T', size)
        clip_embeddings.append(outputs.pooler_output.float().to(audio.device))  # (batch, size)
    return torch.cat(frame_embeddings), torch.cat(clip_embeddings)


def get_timestamp_embeddings(
    audio: torch.Tensor, model, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR timestamp embeddings: one 3840-d vector per 160 ms (one 16-frame patch column).

    Args:
        audio (`torch.Tensor` of shape `(n_sounds, n_samples)`): 16 kHz mono audio in [-1, 1], at least 400 samples.
        model: returned by [`load_model`].
        batch_size (`int`, defaults to 16): sounds encoded per forward pass (bounds memory).

    Returns:
        embeddings (`torch.Tensor` of shape `(n_sounds, n_timestamps, timestamp_embedding_size)`, float32) and
        timestamps (`torch.Tensor` of shape `(n_sounds, n_timestamps)`, float32, milliseconds at the centre of each
        column's frames: `160 j + 87.5` for full columns, see the module docstring), both on the audio's device.
    """
    frame_embeddings, _ = _embed(audio, model, batch_size)
    timestamps = frame_timestamps_ms(audio.shape[1], model.config).to(torch.float32).to(audio.device)
    timestamps = timestamps[None, :].expand(audio.shape[0], -1).contiguous()  # (n_sounds, n_timestamps)
    return frame_embeddings, timestamps


def get_scene_embeddings(audio: torch.Tensor, model, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """HEAR scene embeddings: the mean of the frame embeddings over time.

    Args:
        audio (`torch.Tensor` of shape `(n_sounds, n_samples)`): 16 kHz mono audio in [-1, 1], at least 400 samples.
        model: returned by [`load_model`].
        batch_size (`int`, defaults to 16): sounds encoded per forward pass.

    Returns:
        `torch.Tensor` of shape `(n_sounds, scene_embedding_size)`, float32, on the audio's device.
    """
    _, clip_embeddings = _embed(audio, model, batch_size)
    return clip_embeddings


__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "frame_timestamps_ms"]
