# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The HEAR 2021 common API (https://hearbenchmark.com/hear-api.html) for MATPAC checkpoints.

```python
>>> import torch
>>> from matpac_hf import hear
>>> model = hear.load_model("path/or/hub-id")                  # any saved MatpacModel folder or Hub repository
>>> audio = torch.zeros(2, 32000)                               # (n_sounds, n_samples), 16 kHz mono in [-1, 1]
>>> scene = hear.get_scene_embeddings(audio, model)            # (2, 3840)
>>> frames, timestamps = hear.get_timestamp_embeddings(audio, model)  # (2, 48, 3840), (2, 48) in ms, every 40 ms
```

The HEAR validator (`hear-validator matpac_hf.hear -m <folder>`) passes; see `tests/test_hear.py`.

Timestamps. The log-mel has one frame per hop of 160 samples (10 ms), computed without centre padding: frame `k`
covers samples `[160 k, 160 k + 400)`. The encoder gives one frame embedding per 16-frame patch column (160 ms), which
covers 2800 samples (175 ms) and is centred 1400 samples (87.5 ms) after its first sample. HEAR recommends timestamps
at most 50 ms apart, so by default (`timestamp_hop_ms=40`) the clip is encoded 4 times, starting at frames 0, 4, 8 and
12 (time-shifted copies: the log-mel is computed once and sliced, which is exactly the log-mel of the audio shifted by
640 samples), and the four column sequences are interleaved. Embedding `i` then covers frames `4 i .. 4 i + 15`, i.e.
samples `[640 i, 640 i + 2800)`, and its timestamp is their centre:

    t_i = 40 i + 87.5 ms,   for every i with t_i <= the clip's duration

In general, with `h = timestamp_hop_ms / 10` frames (`h` must divide the patch size 16: 10, 20, 40, 80 or 160 ms),
embedding `i` covers frames `h i .. h i + 15`, `t_i = 10 h i + 87.5` ms, and encoding costs `16 / h` forward passes;
`timestamp_hop_ms=160` is the model's native grid (one pass, `t_j = 160 j + 87.5`). Timestamps are regular and never
past the end of the clip (the final HEAR validator refuses that): the windows whose centre lies beyond the last sample
are dropped, so the last timestamp is within one hop of the end. The first is at 87.5 ms, the centre of the first
window (HEAR 2021.0.6's validator warns when the first timestamp is later than one hop; nothing is computed before
the clip starts). A clip shorter than 87.5 ms (1400 samples) gets one embedding, timestamped at the centre of its
frames.

Scene embeddings are the model's clip embedding (`pooler_output`): the mean over the native 160 ms columns of one
pass, whatever `timestamp_hop_ms` is.
"""

import math

import torch
from transformers import AutoFeatureExtractor, AutoModel

from .configuration_matpac import num_frames_for_samples


DEFAULT_BATCH_SIZE = 16
# HEAR recommends at most 50 ms between timestamps (onset tolerance of its music transcription tasks).
DEFAULT_TIMESTAMP_HOP_MS = 40.0


def timestamp_hops_ms(config) -> list[float]:
    """The timestamp hops `load_model` accepts for `config`: every whole number of log-mel frames that divides the
    patch size, in ms (`[10.0, 20.0, 40.0, 80.0, 160.0]` for the official front end)."""
    frame_ms = 1000.0 * config.hop_length / config.sampling_rate
    return [frames * frame_ms for frames in range(1, config.patch_size + 1) if config.patch_size % frames == 0]


def _hop_frames(timestamp_hop_ms: float, config) -> int:
    """`timestamp_hop_ms` as a number of log-mel frames that divides the patch size, or a ValueError."""
    if not isinstance(timestamp_hop_ms, (int, float)) or isinstance(timestamp_hop_ms, bool):
        raise ValueError(f"timestamp_hop_ms must be a number of milliseconds, got {timestamp_hop_ms!r}.")
    allowed = timestamp_hops_ms(config)
    frames = timestamp_hop_ms * config.sampling_rate / (1000.0 * config.hop_length)
    if abs(frames - round(frames)) > 1e-9 or round(frames) < 1 or config.patch_size % round(frames) != 0:
        raise ValueError(
            f"timestamp_hop_ms={timestamp_hop_ms:g} is not a whole number of log-mel frames that divides the "
            f"{config.patch_size}-frame patch column; use one of {[f'{ms:g}' for ms in allowed]} "
            f"({allowed[-1]:g} = one embedding per patch column, the native grid)."
        )
    return round(frames)


def load_model(
    model_file_path: str = "",
    device: str | torch.device | None = None,
    timestamp_hop_ms: float = DEFAULT_TIMESTAMP_HOP_MS,
    **from_pretrained_kwargs,
):
    """Loads a MATPAC encoder and its feature extractor for the HEAR API.

    Args:
        model_file_path (`str`): a local folder written by `save_pretrained` or a Hugging Face Hub repository id,
            holding `config.json`, the weights and `preprocessor_config.json`.
        device (`str` or `torch.device`, *optional*): where to put the model (default: CPU).
        timestamp_hop_ms (`float`, defaults to 40): spacing of the timestamp embeddings, one of
            [`timestamp_hops_ms`] (10, 20, 40, 80, 160). Below 160 ms (one patch column) the clip is encoded
            `160 / timestamp_hop_ms` times, time-shifted, and the results interleaved (see the module docstring).
            HEAR recommends at most 50 ms; 160 is the native grid and the cheapest.
        from_pretrained_kwargs: passed to both `from_pretrained` calls (e.g. `revision`, `trust_remote_code`).

    Returns:
        The model in eval mode, with the HEAR attributes `sample_rate` (16000), `scene_embedding_size` and
        `timestamp_embedding_size` (`config.frame_embedding_size`, 3840 for ViT-B), plus `timestamp_hop_ms` and its
        `feature_extractor`.
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
    _hop_frames(timestamp_hop_ms, model.config)  # refuse a bad hop before any audio is seen
    if device is not None:
        model = model.to(device)
    model.eval()
    model.feature_extractor = feature_extractor
    model.sample_rate = feature_extractor.sampling_rate
    model.scene_embedding_size = model.config.frame_embedding_size
    model.timestamp_embedding_size = model.config.frame_embedding_size
    model.timestamp_hop_ms = float(timestamp_hop_ms)
    return model


def _centre_of_frames(num_frames, config) -> float:
    """Sample offset of the centre of `num_frames` consecutive log-mel frames from their first sample:
    `(num_frames - 1) / 2 * hop_length + n_fft / 2` (1400 for one 16-frame column)."""
    return (num_frames - 1) / 2 * config.hop_length + config.n_fft / 2


def frame_timestamps_ms(num_samples: int, config, timestamp_hop_ms: float | None = None) -> torch.Tensor:
    """Centre time in milliseconds of each timestamp embedding of a clip of `num_samples` samples, `(n_timestamps,)`
    float64 (see the module docstring): window `i` starts at frame `h i` (`h` = `timestamp_hop_ms` in frames, default
    one patch column, 160 ms) and is centred `c = (patch_size - 1) / 2 * hop_length + n_fft / 2` samples (1400) after
    its first sample; the windows kept are those centred at or before the last sample, `h i hop_length + c <=
    num_samples`, at least one."""
    hop_frames = config.patch_size if timestamp_hop_ms is None else _hop_frames(timestamp_hop_ms, config)
    window_centre = _centre_of_frames(config.patch_size, config)  # samples
    step = hop_frames * config.hop_length  # samples between windows
    if num_samples >= window_centre:
        count = int((num_samples - window_centre) // step) + 1
        centre_samples = torch.arange(count, dtype=torch.float64) * step + window_centre
    else:  # shorter than half a window: one embedding, at the centre of the clip's frames
        num_frames = num_frames_for_samples(num_samples, config.n_fft, config.hop_length)
        centre_samples = torch.tensor([_centre_of_frames(num_frames, config)], dtype=torch.float64)
    return centre_samples * 1000.0 / config.sampling_rate


def column_timestamps_ms(num_samples: int, config) -> torch.Tensor:
    """Centre time in milliseconds of each frame embedding [`MatpacModel`] returns for a clip of `num_samples`
    samples (one per 16-frame patch column, the last one possibly partial), `(num_columns,)` float64: `160 j + 87.5`,
    the centre of column `j`'s full window, so regular; the last centre may lie past the end of the clip. The HEAR
    grid ([`frame_timestamps_ms`]) drops such columns."""
    num_frames = num_frames_for_samples(num_samples, config.n_fft, config.hop_length)
    window_centre = _centre_of_frames(config.patch_size, config)  # samples
    first_sample = torch.arange(math.ceil(num_frames / config.patch_size), dtype=torch.float64) * (
        config.patch_size * config.hop_length
    )
    return (first_sample + window_centre) * 1000.0 / config.sampling_rate


def _check_audio(audio: torch.Tensor, model) -> None:
    if not hasattr(model, "feature_extractor"):
        raise ValueError("model must come from matpac_hf.hear.load_model (it carries the feature extractor).")
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
    min_samples = model.config.min_num_samples
    if audio.shape[1] < min_samples:
        raise ValueError(
            f"Sounds are {audio.shape[1]} samples long; MATPAC needs at least {min_samples} samples "
            f"({1000 * min_samples / model.sample_rate:g} ms at {model.sample_rate} Hz). Pad them with zeros."
        )


def _batches(audio: torch.Tensor, model, batch_size: int):
    """Yields the normalised log-mel `(batch, num_frames, num_mel_bins)` of each batch of sounds, on the model's
    device."""
    _check_audio(audio, model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    model_device = next(model.parameters()).device
    for start in range(0, audio.shape[0], batch_size):
        yield model.feature_extractor.extract_log_mel(audio[start : start + batch_size].to(model_device))


@torch.no_grad()
def _interleaved_frame_embeddings(
    model, input_values: torch.Tensor, hop_frames: int, num_timestamps: int
) -> torch.Tensor:
    """`(batch, num_timestamps, size)`: embedding `i` is the patch column of frames `hop_frames * i ..
    + patch_size - 1`, column `i // shifts` of the pass that starts at frame `hop_frames * (i % shifts)`."""
    shifts = model.config.patch_size // hop_frames
    output = None
    for shift in range(min(shifts, num_timestamps)):
        # equal lengths: every frame is valid, no mask needed
        frames = model(input_values=input_values[:, shift * hop_frames :]).last_hidden_state  # (batch, columns, size)
        if output is None:
            output = frames.new_empty(input_values.shape[0], num_timestamps, frames.shape[-1])
        wanted = output[:, shift::shifts]
        wanted.copy_(frames[:, : wanted.shape[1]])  # the columns centred past the clip's end are dropped
    return output


def get_timestamp_embeddings(
    audio: torch.Tensor, model, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR timestamp embeddings: one 3840-d vector every `model.timestamp_hop_ms` (40 ms by default), each the
    embedding of a 160 ms patch column (see the module docstring).

    Args:
        audio (`torch.Tensor` of shape `(n_sounds, n_samples)`): 16 kHz mono audio in [-1, 1], at least 400 samples.
        model: returned by [`load_model`].
        batch_size (`int`, defaults to 16): sounds encoded per forward pass (bounds memory).

    Returns:
        embeddings (`torch.Tensor` of shape `(n_sounds, n_timestamps, timestamp_embedding_size)`, float32) and
        timestamps (`torch.Tensor` of shape `(n_sounds, n_timestamps)`, float32, milliseconds at the centre of each
        embedding's 16 frames: `timestamp_hop_ms * i + 87.5`), both on the audio's device.
    """
    _check_audio(audio, model)
    hop_ms = getattr(model, "timestamp_hop_ms", DEFAULT_TIMESTAMP_HOP_MS)
    hop_frames = _hop_frames(hop_ms, model.config)
    timestamps = frame_timestamps_ms(audio.shape[1], model.config, hop_ms).to(torch.float32).to(audio.device)
    embeddings = [
        _interleaved_frame_embeddings(model, input_values, hop_frames, len(timestamps)).float().to(audio.device)
        for input_values in _batches(audio, model, batch_size)
    ]
    timestamps = timestamps[None, :].expand(audio.shape[0], -1).contiguous()  # (n_sounds, n_timestamps)
    return torch.cat(embeddings), timestamps


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """HEAR scene embeddings: the model's clip embedding, the mean of its 160 ms frame embeddings over time.

    Args:
        audio (`torch.Tensor` of shape `(n_sounds, n_samples)`): 16 kHz mono audio in [-1, 1], at least 400 samples.
        model: returned by [`load_model`].
        batch_size (`int`, defaults to 16): sounds encoded per forward pass.

    Returns:
        `torch.Tensor` of shape `(n_sounds, scene_embedding_size)`, float32, on the audio's device.
    """
    clip_embeddings = [
        model(input_values=input_values).pooler_output.float().to(audio.device)
        for input_values in _batches(audio, model, batch_size)
    ]
    return torch.cat(clip_embeddings)


__all__ = [
    "load_model",
    "get_scene_embeddings",
    "get_timestamp_embeddings",
    "frame_timestamps_ms",
    "column_timestamps_ms",
    "timestamp_hops_ms",
    "DEFAULT_TIMESTAMP_HOP_MS",
]
