# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Inference at scale: clip embeddings of hours of audio in bounded memory, native-bf16 detection, and the opt-in
int8 CPU path.

* [`embed_long_audio`] streams a long waveform through the feature extractor and [`MatpacModel`] window by window
  (each window a whole number of `max_frames` chunks, so every chunk is exactly the chunk of the one-call path) and
  accumulates the clip embedding: peak memory is one window's, whatever the length of the file.
* [`native_bf16_support`] says whether bf16 matrix products run natively (CPU flags `amx_bf16` / `avx512_bf16`, or a
  CUDA device that supports bf16); [`default_autocast_dtype`] gives `torch.bfloat16` only there. On other CPUs bf16
  autocast is emulated and several times *slower* than fp32.
* [`quantize_linear_layers_int8`] is the opt-in fast CPU path: dynamic int8 quantisation of the linear layers.
"""

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .configuration_matpac import HOP_LENGTH, N_FFT, num_frames_for_samples, num_samples_for_frames
from .feature_extraction_matpac import MatpacFeatureExtractor
from .modeling_matpac import MatpacModel


# ----------------------------------------------------------------------------------------------------------------------
# bf16: native or emulated
# ----------------------------------------------------------------------------------------------------------------------

# CPU flags (as /proc/cpuinfo names them) that give native bf16 matrix products: Intel AMX and AVX512-BF16 (also AMD
# Zen 4+). Without them, oneDNN emulates bf16 through fp32 conversions.
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty set where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags") or line.startswith("Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16_support(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether bf16 matrix products run natively on `device`, and why.

    CPU: native when /proc/cpuinfo lists `amx_bf16` or `avx512_bf16` (where /proc/cpuinfo is missing, torch's own
    CPU probe is asked). CUDA: `torch.cuda.is_bf16_supported()` (Ampere and newer). Other devices: not claimed.

    Returns:
        `(native, reason)`, e.g. `(True, "CPU flags amx_bf16 avx512_bf16")`.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return native, f"{torch.cuda.get_device_name(device)}: bf16 {'native' if native else 'emulated'}"
    if device.type != "cpu":
        return False, f"no bf16 check for device type {device.type!r}"
    flags = cpu_flags()
    if flags:
        found = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags]
        return bool(found), f"CPU flags {' '.join(found)}" if found else "CPU lacks amx_bf16 and avx512_bf16"
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    native = bool(probe()) if probe is not None else False
    return native, "torch CPU probe: avx512_bf16 " + ("present" if native else "absent")


def default_autocast_dtype(device: str | torch.device = "cpu") -> torch.dtype | None:
    """`torch.bfloat16` where bf16 is native on `device` (see [`native_bf16_support`]), else `None` (stay in fp32).

    Scripts use this as the default of their `--bf16` switch, so bf16 autocast is never turned on by default where it
    is emulated."""
    return torch.bfloat16 if native_bf16_support(device)[0] else None


# ----------------------------------------------------------------------------------------------------------------------
# The opt-in fast CPU path: dynamic int8 linear layers
# ----------------------------------------------------------------------------------------------------------------------


def quantize_linear_layers_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Dynamic int8 quantisation of every `nn.Linear` of `model` (weights int8 per tensor, activations quantised on the
    fly per batch), for CPU inference: the linear layers hold ~95 % of MATPAC's FLOPs. Patch embedding, LayerNorm,
    attention products and GELU stay fp32.

    Uses `torch.ao.quantization.quantize_dynamic` (fbgemm / x86 kernels: AVX2 and AVX512-VNNI CPUs). The model must
    be in eval mode and on the CPU; the result is inference-only (no gradients, no `save_pretrained` of int8 weights:
    quantise after loading). Returns a quantised copy unless `inplace`.
    """
    if model.training:
        raise ValueError("quantize_linear_layers_int8 is for inference: call model.eval() first.")
    if any(parameter.device.type != "cpu" for parameter in model.parameters()):
        raise ValueError("int8 dynamic quantisation runs on the CPU only: move the model with model.to('cpu') first.")
    with warnings.catch_warnings():  # torch.ao's deprecation notice (the API still works in torch 2.x)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=inplace)


# ----------------------------------------------------------------------------------------------------------------------
# Long audio: streaming clip embeddings
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class LongAudioEmbedding:
    """Result of [`embed_long_audio`].

    Attributes:
        clip_embedding (`(frame_embedding_size,)` float32): mean of all frame embeddings of the file (the
            `pooler_output` of the one-call path).
        num_frames (`int`): frame embeddings (160 ms columns) averaged.
        layer_means (`(num_hidden_layers + 1, frame_embedding_size)` or `None`): per-layer means of the frame
            embeddings (index 0 the embedded patches, last the final block before the norm), with
            `output_hidden_states=True`.
    """

    clip_embedding: torch.Tensor
    num_frames: int
    layer_means: torch.Tensor | None = None


def _check_waveform(audio, feature_extractor: MatpacFeatureExtractor) -> np.ndarray | torch.Tensor:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
    elif not isinstance(audio, np.ndarray):
        audio = np.asarray(audio)
    if audio.ndim != 1:
        axis = 1 if audio.ndim == 2 and audio.shape[1] < audio.shape[0] else 0  # channels along the shorter axis
        raise ValueError(
            f"embed_long_audio takes one mono clip (a 1-D array of samples), got shape {tuple(audio.shape)}. "
            f"Down-mix channels with `.mean(axis={axis})` (or decode the file with "
            "`matpac_hf.audio_io.decode_audio(path)`) and call it once per file."
        )
    if audio.shape[0] < feature_extractor.n_fft:
        raise ValueError(
            f"The audio has {audio.shape[0]} samples; the minimum is {feature_extractor.n_fft} (one STFT window)."
        )
    return audio


def iter_long_audio_windows(
    audio, config, window_chunks: int = 16, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH
) -> Iterator[tuple[int, int, int]]:
    """`(first_frame, sample_start, sample_end)` of the consecutive windows [`embed_long_audio`] feeds the model: each
    window is `window_chunks` whole chunks of `config.max_frames` frames (the last one shorter), and its samples are
    exactly those the frames of the window read, so its log-mel frames are the whole file's frames."""
    num_samples = int(audio.shape[0])
    num_frames = num_frames_for_samples(num_samples, n_fft, hop_length)
    frames_per_window = window_chunks * config.max_frames
    for first_frame in range(0, num_frames, frames_per_window):
        last_frame = min(first_frame + frames_per_window, num_frames)
        yield first_frame, first_frame * hop_length, num_samples_for_frames(last_frame, n_fft, hop_length)


def embed_long_audio(
    model: MatpacModel,
    feature_extractor: MatpacFeatureExtractor,
    audio,
    sampling_rate: int | None = None,
    window_seconds: float = 97.28,
    chunk_batch_size: int | None = None,
    output_hidden_states: bool = False,
    frame_callback=None,
) -> LongAudioEmbedding:
    """Clip embedding of one long mono recording, computed window by window in bounded memory.

    The waveform is cut into windows of a whole number of `max_frames` chunks (`window_seconds` is rounded down to
    one, 97.28 s = 16 chunks by default); each window goes through the feature extractor and the model, and only the
    running sum of its frame embeddings is kept. Because MATPAC encodes every `max_frames` chunk on its own ("precise"
    inference) and every log-mel frame reads only its own 400 samples, the result equals
    `model(**feature_extractor(audio)).pooler_output` (to float32 summation order, ~1e-6), while memory holds only the
    waveform, the model and one window.

    Args:
        model ([`MatpacModel`]): the encoder, in eval mode.
        feature_extractor ([`MatpacFeatureExtractor`]): its front end.
        audio (1-D `np.ndarray` / `torch.Tensor`): 16 kHz mono samples (float in [-1, 1] or integer PCM).
        sampling_rate (`int`, *optional*): sampling rate of `audio`, checked against the feature extractor's.
        window_seconds (`float`): audio per model call; memory grows with it, speed barely.
        chunk_batch_size (`int`, *optional*): chunks per encoder call inside a window (see [`MatpacModel.forward`]).
        output_hidden_states (`bool`): also accumulate per-layer means (`layer_means`).
        frame_callback (callable, *optional*): called with `(first_column, frame_embeddings)` for every window:
            `first_column` is the file-wide index of the window's first frame embedding (160 ms column) and
            `frame_embeddings` has shape `(num_window_columns, frame_embedding_size)`, e.g. to write them to disk.

    Returns:
        [`LongAudioEmbedding`].
    """
    config = model.config
    audio = _check_waveform(audio, feature_extractor)
    frames_per_chunk = config.max_frames
    window_chunks = max(
        1,
        math.floor(window_seconds * feature_extractor.sampling_rate / feature_extractor.hop_length)
        // frames_per_chunk,
    )
    if sampling_rate is None:
        sampling_rate = feature_extractor.sampling_rate
    total, layer_totals, num_columns = None, None, 0
    parameter = next(model.parameters())
    with torch.no_grad():
        for first_frame, start, end in iter_long_audio_windows(
            audio, config, window_chunks, feature_extractor.n_fft, feature_extractor.hop_length
        ):
            features = feature_extractor(audio[start:end], sampling_rate=sampling_rate, return_tensors="pt")
            outputs = model(
                features["input_values"].to(parameter.device),
                output_hidden_states=output_hidden_states,
                chunk_batch_size=chunk_batch_size,
            )
            frames = outputs.last_hidden_state[0]  # (window columns, frame_embedding_size), all valid (one clip)
            window_sum = frames.sum(0, dtype=torch.float64)
            total = window_sum if total is None else total + window_sum
            if output_hidden_states:
                sums = torch.stack([h[0].sum(0, dtype=torch.float64) for h in outputs.hidden_states])
                layer_totals = sums if layer_totals is None else layer_totals + sums
            if frame_callback is not None:
                frame_callback(first_frame // config.patch_size, frames)
            num_columns += frames.shape[0]
    return LongAudioEmbedding(
        clip_embedding=(total / num_columns).float(),
        num_frames=num_columns,
        layer_means=None if layer_totals is None else (layer_totals / num_columns).float(),
    )
