# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""MATPAC audio front end: raw 16 kHz mono waveform -> normalised log-mel spectrogram (docs/method.md, section 1).

This file is shipped as remote code next to the model (with `configuration_matpac.py`, whose front-end constants and
frame-count formula it uses), so it only imports the standard library, numpy, torch, transformers and that file.
"""

import copy
import math
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, logging

from .configuration_matpac import (
    F_MAX,
    F_MIN,
    HOP_LENGTH,
    LOG_OFFSET,
    N_FFT,
    NUM_MEL_BINS,
    SAMPLING_RATE,
    SPECTROGRAM_MEAN,
    SPECTROGRAM_STD,
    WIN_LENGTH,
    num_frames_for_samples,
)


logger = logging.get_logger(__name__)

# Attributes derived from the constructor arguments; rebuilt on load, never written to preprocessor_config.json.
_DERIVED_ATTRIBUTES = ("mel_filters", "window", "_torch_constants")


def _slaney_hz_to_mel(frequency: float) -> float:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), in Python float arithmetic."""
    linear_step, knee_hz = 200.0 / 3, 1000.0
    if frequency < knee_hz:
        return frequency / linear_step
    return knee_hz / linear_step + math.log(frequency / knee_hz) / (math.log(6.4) / 27.0)


def slaney_mel_filters_float32(
    num_frequency_bins: int, num_mel_bins: int, f_min: float, f_max: float, sampling_rate: int
) -> torch.Tensor:
    """`(num_frequency_bins, num_mel_bins)` Slaney-scale, Slaney-area-normalised triangular mel filters, built in
    float32 torch with the operation order of the official front end (torchaudio's `melscale_fbanks(norm="slaney",
    mel_scale="slaney")`): bin frequencies and mel points from float32 `linspace`, mel -> Hz in float32, slopes,
    `max(0, min(down, up))`, then `2 / bandwidth`.

    They equal `librosa.filters.mel(..., htk=False, norm="slaney")` to ~1e-7. Building them in float64 and rounding
    (as librosa / `transformers.audio_utils.mel_filter_bank` do) moves single weights by ~1e-7, which is enough to
    shift quiet mel bands next to a loud low tone by up to 3e-4 in log-mel: the official numbers need this order.
    """
    float32 = torch.float32
    bin_frequencies = torch.linspace(0, sampling_rate // 2, num_frequency_bins, dtype=float32)  # (bins,)
    mel_points = torch.linspace(
        _slaney_hz_to_mel(f_min), _slaney_hz_to_mel(f_max), num_mel_bins + 2, dtype=float32
    )  # (mels + 2,)
    linear_step, knee_hz = 200.0 / 3, 1000.0
    knee_mel, log_step = knee_hz / linear_step, math.log(6.4) / 27.0
    hz_points = linear_step * mel_points  # (mels + 2,), float32
    above_knee = mel_points >= knee_mel
    hz_points[above_knee] = knee_hz * torch.exp(log_step * (mel_points[above_knee] - knee_mel))
    widths = hz_points[1:] - hz_points[:-1]  # (mels + 1,)
    offsets = hz_points[None, :] - bin_frequencies[:, None]  # (bins, mels + 2)
    rising = (-1.0 * offsets[:, :-2]) / widths[:-1]  # (bins, mels)
    falling = offsets[:, 2:] / widths[1:]  # (bins, mels)
    filters = torch.max(torch.zeros(1, dtype=float32), torch.min(rising, falling))
    return filters * (2.0 / (hz_points[2:] - hz_points[:-2]))[None, :]


class MatpacFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns raw 16 kHz mono audio into the normalised log-mel spectrogram MATPAC was trained on.

    Per clip of `n` samples:

    1. STFT with a periodic Hann window of `win_length` samples, `n_fft`-point FFT, hop `hop_length`, no centre
       padding, so the clip gives `1 + (n - n_fft) // hop_length` frames (`num_frames_for_samples` of
       `configuration_matpac`; 6.08 s = 97 280 samples -> 606 frames).
    2. Power spectrum (magnitude squared), projected on `num_mel_bins` Slaney-scale, Slaney-area-normalised mel
       filters between `f_min` and `f_max` (the filters of `librosa.filters.mel(..., htk=False, norm="slaney")`).
    3. `log(mel + log_offset)` (natural log), then `(log_mel - spectrogram_mean) / spectrogram_std`.

    The result has layout `(frames, num_mel_bins)`: time first, frequency second (AST's layout, which transformers'
    collators and pipelines pad along time). All the maths runs in float32 with torch, batched over clips of equal
    length (never a Python loop over frames), on CPU or on any torch device (`device="cuda"`). Clips of different
    lengths are each computed alone and then padded in the *frame* domain with `padding_value`; `attention_mask` marks
    the valid frames (the model masks the padding out, so a padded clip gets exactly what it gets alone).

    Padding and truncation follow `Wav2Vec2FeatureExtractor` / `WhisperFeatureExtractor` for raw audio: `max_length`
    and `truncation` count *samples* of the input audio, `padding` is `True` / `"longest"` (the default: pad to the
    longest clip of the call), `"max_length"` (pad to the frames of `max_length` samples) or `False` (no padding: a
    list of `(frames_i, num_mel_bins)` arrays). `pad_to_multiple_of` rounds the padded number of *frames* up (16, the
    patch size, avoids a partial last patch column). Long audio is never truncated unless `truncation=True` is asked
    for: the model splits it into chunks itself. [`~SequenceFeatureExtractor.pad`] pads this extractor's own outputs
    (lists of `(frames, num_mel_bins)` features, e.g. rows of a `datasets` dataset) along time, which is what
    `DataCollatorWithPadding(feature_extractor)` and `Trainer(processing_class=feature_extractor)` call; there
    `max_length` and `pad_to_multiple_of` count frames (the axis it pads), as for every already-featurised input.

    Accepted input:

    - one clip: a 1-D numpy array, 1-D torch tensor or a list of numbers;
    - a batch: a list of 1-D arrays / tensors (any lengths), or a 2-D numpy array / torch tensor of shape
      `(batch, samples)`. A 2-D array shaped like `(samples, channels)` (what `soundfile.read` gives for a stereo
      file) is refused with the down-mix to apply.

    Floating-point audio is expected in [-1, 1] and is converted to float32 (float64 included). Integer PCM is scaled
    to [-1, 1) by the range of its dtype: signed `intN` is divided by `2 ** (N - 1)` (int16 / 32768, int32 / 2**31,
    int8 / 128), unsigned `uintN` becomes `(x - 2 ** (N - 1)) / 2 ** (N - 1)` (uint8: `(x - 128) / 128`). Boolean,
    complex and object arrays are refused. The audio must be mono at 16 kHz, at least `n_fft` (400) samples long and
    finite; anything else raises a `ValueError` saying how to fix it.

    Args:
        sampling_rate (`int`, *optional*, defaults to 16000): sampling rate the audio must have, in Hz.
        n_fft (`int`, *optional*, defaults to 400): FFT size in samples (25 ms).
        win_length (`int`, *optional*, defaults to 400): periodic Hann window length in samples (<= `n_fft`).
        hop_length (`int`, *optional*, defaults to 160): hop between frames in samples (10 ms).
        num_mel_bins (`int`, *optional*, defaults to 80): number of mel bands; also exposed as `feature_size`.
        f_min (`float`, *optional*, defaults to 50.0): lowest mel filter edge in Hz.
        f_max (`float`, *optional*, defaults to 8000.0): highest mel filter edge in Hz.
        log_offset (`float`, *optional*, defaults to float32 machine epsilon): added to the mel power before the log.
        spectrogram_mean (`float`, *optional*, defaults to -7.056): AudioSet mean of the log-mel, subtracted.
        spectrogram_std (`float`, *optional*, defaults to 4.193): AudioSet standard deviation of the log-mel, divided.
        padding_value (`float`, *optional*, defaults to 0.0): value of padded frames in `input_values`.
        return_attention_mask (`bool`, *optional*, defaults to `True`): default for the call argument of the same
            name: `attention_mask` is returned with every call, whatever the lengths (`None`, the value older saved
            configs hold, means `True`).

    Example:

    ```python
    >>> import numpy as np
    >>> import torch
    >>> from matpac_hf.feature_extraction_matpac import MatpacFeatureExtractor

    >>> feature_extractor = MatpacFeatureExtractor()
    >>> audio = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)  # 1 s at 16 kHz
    >>> features = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    >>> features["input_values"].shape  # (batch, frames, num_mel_bins)
    torch.Size([1, 98, 80])

    >>> batch = [audio, audio[:8000]]  # different lengths -> padded, with a mask
    >>> features = feature_extractor(batch, sampling_rate=16000, return_tensors="pt")
    >>> features["input_values"].shape, features["attention_mask"].sum(-1).tolist()
    (torch.Size([2, 98, 80]), [98, 48])

    >>> # the HF audio-classification recipe: cut to 1 s (in samples), pad later in the data collator
    >>> features = feature_extractor(batch, sampling_rate=16000, max_length=16000, truncation=True, padding=False)
    >>> [values.shape for values in features["input_values"]]
    [(98, 80), (48, 80)]
    >>> feature_extractor.pad(
    ...     [{"input_values": values} for values in features["input_values"]], return_tensors="pt"
    ... )["attention_mask"].sum(-1).tolist()
    [98, 48]

    >>> # GPU front end for a training loop: (batch, samples) tensor in, (batch, frames, 80) tensor out
    >>> log_mel = feature_extractor.extract_log_mel(torch.from_numpy(audio)[None])  # same device as the input
    ```
    """

    model_input_names = ["input_values", "attention_mask"]

    # Frames per STFT call in `extract_log_mel`: longer audio is transformed block by block (each frame reads only its
    # own `n_fft` samples, so the numbers are the same), keeping the complex spectrum of one block (~26 MB per clip)
    # instead of the whole file's (580 MB for an hour).
    stft_block_frames = 16384

    # Front-end fields shared with MatpacConfig (the model config repeats them so that it alone describes the model).
    FRONT_END_FIELDS = (
        "sampling_rate",
        "n_fft",
        "win_length",
        "hop_length",
        "num_mel_bins",
        "f_min",
        "f_max",
        "log_offset",
        "spectrogram_mean",
        "spectrogram_std",
    )

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "MatpacFeatureExtractor":
        """The feature extractor matching a `MatpacConfig`'s audio front end (sampling rate, STFT, mel, log,
        normalisation); `kwargs` set the other arguments (e.g. `return_attention_mask`)."""
        return cls(**{name: getattr(config, name) for name in cls.FRONT_END_FIELDS}, **kwargs)

    def __init__(
        self,
        sampling_rate: int = SAMPLING_RATE,
        n_fft: int = N_FFT,
        win_length: int = WIN_LENGTH,
        hop_length: int = HOP_LENGTH,
        num_mel_bins: int = NUM_MEL_BINS,
        f_min: float = F_MIN,
        f_max: float = F_MAX,
        log_offset: float = LOG_OFFSET,
        spectrogram_mean: float = SPECTROGRAM_MEAN,
        spectrogram_std: float = SPECTROGRAM_STD,
        padding_value: float = 0.0,
        return_attention_mask: bool | None = True,
        **kwargs,
    ):
        feature_size = kwargs.pop("feature_size", num_mel_bins)
        if feature_size != num_mel_bins:
            raise ValueError(
                f"feature_size ({feature_size}) and num_mel_bins ({num_mel_bins}) name the same number (mel bands); "
                "give only num_mel_bins."
            )
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft}).")
        if hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {hop_length}.")
        if not 0 <= f_min < f_max <= sampling_rate / 2:
            raise ValueError(
                f"Mel range [{f_min}, {f_max}] Hz must satisfy 0 <= f_min < f_max <= sampling_rate / 2 "
                f"({sampling_rate / 2})."
            )
        if spectrogram_std <= 0:
            raise ValueError(f"spectrogram_std must be positive, got {spectrogram_std}.")
        super().__init__(
            feature_size=num_mel_bins,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=True if return_attention_mask is None else bool(return_attention_mask),
            **kwargs,
        )
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}.")
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.num_mel_bins = num_mel_bins
        self.f_min = f_min
        self.f_max = f_max
        self.log_offset = log_offset
        self.spectrogram_mean = spectrogram_mean
        self.spectrogram_std = spectrogram_std

        # (n_fft // 2 + 1, num_mel_bins) filters and the (win_length,) periodic Hann window, both float32 and built as
        # the official front end builds them (torchaudio's MelSpectrogram: torch.hann_window, float32 filters)
        self.mel_filters = slaney_mel_filters_float32(
            n_fft // 2 + 1, num_mel_bins, f_min, f_max, sampling_rate
        ).numpy()
        self.window = torch.hann_window(win_length, periodic=True, dtype=torch.float32).numpy()
        # device string -> (mel filters (n_fft // 2 + 1, num_mel_bins), window (win_length,)) as float32 tensors
        self._torch_constants: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Serialisable constructor arguments (the mel filters, window and tensor cache are rebuilt on load)."""
        output = {key: copy.deepcopy(value) for key, value in self.__dict__.items() if key not in _DERIVED_ATTRIBUTES}
        output["feature_extractor_type"] = self.__class__.__name__
        return output

    def num_frames(self, num_samples: int) -> int:
        """Number of log-mel frames of a clip of `num_samples` samples (no centre padding; 0 below `n_fft`)."""
        return num_frames_for_samples(num_samples, self.n_fft, self.hop_length)

    def _constants_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._torch_constants:
            mel_filters = torch.from_numpy(self.mel_filters).to(device)
            window = torch.from_numpy(self.window).to(device)
            self._torch_constants[key] = (mel_filters, window)
        return self._torch_constants[key]

    def extract_log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """
        Batched torch front end: normalised log-mel of equal-length clips, on the device of `waveforms`.

        Computed in float32 even inside `torch.autocast` (autocast is switched off here). No input checks beyond
        shape (no NaN scan, which would force a device sync): use `__call__` for untrusted audio.

        Args:
            waveforms (`torch.Tensor` of shape `(batch, samples)`): 16 kHz mono audio in [-1, 1], floating point.

        Returns:
            `torch.Tensor` of shape `(batch, frames, num_mel_bins)`, float32, with
            `frames = 1 + (samples - n_fft) // hop_length`.
        """
        if not isinstance(waveforms, torch.Tensor):
            raise ValueError(
                f"extract_log_mel expects a torch.Tensor of shape (batch, samples), got {type(waveforms).__name__}; "
                "wrap it with torch.as_tensor(...) or call the feature extractor itself."
            )
        if waveforms.ndim != 2:
            raise ValueError(
                f"extract_log_mel expects a (batch, samples) tensor, got shape {tuple(waveforms.shape)}; "
                "use waveform[None] for a single clip."
            )
        if not (waveforms.is_floating_point()):
            raise ValueError(
                f"extract_log_mel expects floating-point audio in [-1, 1], got dtype {waveforms.dtype}; "
                "call the feature extractor itself to scale integer PCM."
            )
        if waveforms.shape[-1] < self.n_fft:
            raise ValueError(
                f"Audio is {waveforms.shape[-1]} samples long; the minimum is {self.n_fft} samples "
                f"({1000 * self.n_fft / self.sampling_rate:g} ms, one STFT window)."
            )
        mel_filters, window = self._constants_on(waveforms.device)
        num_frames = self.num_frames(waveforms.shape[-1])
        if num_frames > self.stft_block_frames:  # long audio: the STFT block by block, one output allocation
            output = torch.empty(
                (waveforms.shape[0], num_frames, self.num_mel_bins), dtype=torch.float32, device=waveforms.device
            )
            for first in range(0, num_frames, self.stft_block_frames):
                last = min(first + self.stft_block_frames, num_frames)  # frames [first, last) read these samples:
                block = waveforms[:, first * self.hop_length : (last - 1) * self.hop_length + self.n_fft]
                output[:, first:last] = self._log_mel_block(block, mel_filters, window)
            return output
        return self._log_mel_block(waveforms, mel_filters, window)

    def _log_mel_block(self, waveforms: torch.Tensor, mel_filters: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """`(batch, samples)` -> `(batch, frames, num_mel_bins)` normalised log-mel in float32 (one STFT call)."""
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            waveforms = waveforms.float()
            spectrum = torch.stft(
                waveforms,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=window,
                center=False,
                return_complex=True,
            )  # (batch, n_fft // 2 + 1, frames)
            power = spectrum.abs().pow(2.0)  # (batch, n_fft // 2 + 1, frames)
            # (batch, frames, bins) @ (bins, num_mel_bins): the official (torchaudio) product order
            mel_power = torch.matmul(power.transpose(-1, -2), mel_filters)  # (batch, frames, num_mel_bins)
            log_mel = torch.log(mel_power + self.log_offset)
            return (log_mel - self.spectrogram_mean) / self.spectrogram_std

    def _to_float32_clip(self, clip: Any, position: str) -> np.ndarray:
        """One clip -> checked 1-D float32 numpy array."""
        if isinstance(clip, torch.Tensor):
            clip = clip.detach()
            if clip.dtype == torch.bfloat16 or clip.dtype == torch.float16:
                clip = clip.float()
            clip = clip.cpu().numpy()
        else:
            clip = np.asarray(clip)
        if clip.ndim == 2:
            if clip.shape[1] < clip.shape[0]:
                layout, axis = "(samples, channels), as `soundfile.read` returns a multi-channel file", 1
            else:
                layout, axis = "(channels, samples)", 0
            raise ValueError(
                f"{position} is 2-D with shape {clip.shape}, which looks like {layout}: MATPAC takes mono audio. "
                f"Down-mix it with `audio.mean(axis={axis})` before calling the feature extractor (or decode files "
                "with `matpac_hf.audio_io.decode_audio(path)`, which down-mixes and resamples)."
            )
        if clip.ndim != 1:
            raise ValueError(f"{position} has shape {clip.shape}; each clip must be a 1-D array of mono samples.")
        kind = clip.dtype.kind
        if kind in "iu":
            bits = 8 * clip.dtype.itemsize
            half_range = float(2 ** (bits - 1))
            offset = half_range if kind == "u" else 0.0
            clip = ((clip.astype(np.float64) - offset) / half_range).astype(np.float32)
        elif kind == "f":
            clip = clip.astype(np.float32, copy=False)
        else:
            raise ValueError(
                f"{position} has dtype {clip.dtype}; audio must be real floating-point samples in [-1, 1] or "
                "integer PCM (e.g. int16). Convert it, e.g. `audio.astype(np.float32)`."
            )
        if clip.size == 0:
            raise ValueError(f"{position} is empty (0 samples); give at least {self.n_fft} samples of audio.")
        if clip.shape[0] < self.n_fft:
            raise ValueError(
                f"{position} has {clip.shape[0]} samples; the minimum is {self.n_fft} samples "
                f"({1000 * self.n_fft / self.sampling_rate:g} ms at {self.sampling_rate} Hz, one STFT window). "
                "Pad it (e.g. `np.pad(audio, (0, 400 - len(audio)))`) or drop it."
            )
        if not np.isfinite(clip).all():
            raise ValueError(
                f"{position} contains NaN or Inf samples; clean the audio first (e.g. `np.nan_to_num(audio)`)."
            )
        return clip

    def _split_clips(self, raw_speech: Any) -> list[np.ndarray]:
        """Any accepted input -> list of checked 1-D float32 clips."""
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
            if raw_speech.ndim == 1:
                return [self._to_float32_clip(raw_speech, "The audio")]
            if raw_speech.ndim == 2:
                if raw_speech.shape[0] == 0:
                    raise ValueError("The batch is empty (shape (0, samples)); give at least one clip.")
                num_rows, num_columns = raw_speech.shape
                if num_columns < self.n_fft <= num_rows:  # rows would be clips too short to featurise
                    raise ValueError(
                        f"Audio has shape {tuple(raw_speech.shape)}, which looks like (samples, channels): "
                        f"{num_rows} samples of {num_columns}-channel audio (what `soundfile.read` returns for a "
                        "multi-channel file), not a batch of clips. MATPAC takes mono audio: down-mix first with "
                        "`audio.mean(axis=1)` (or decode with `matpac_hf.audio_io.decode_audio(path)`, which "
                        "down-mixes and resamples)."
                    )
                return [self._to_float32_clip(row, f"Clip {i}") for i, row in enumerate(raw_speech)]
            raise ValueError(
                f"Audio has shape {tuple(raw_speech.shape)} ({raw_speech.ndim}-D); expected a 1-D clip (samples,) or "
                "a 2-D batch (batch, samples) of mono audio. Down-mix channels with `.mean(axis=...)` and give a "
                "list of clips."
            )
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("The audio is empty (an empty list); give at least one clip of 400+ samples.")
            if all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in raw_speech):
                return [self._to_float32_clip(np.asarray(raw_speech, dtype=np.float32), "The audio")]
            return [self._to_float32_clip(clip, f"Clip {i}") for i, clip in enumerate(raw_speech)]
        raise ValueError(
            f"Audio of type {type(raw_speech).__name__} is not supported; give a 1-D numpy array / torch tensor, "
            "a list of them, or a 2-D (batch, samples) array / tensor."
        )

    def __call__(
        self,
        raw_speech: np.ndarray | torch.Tensor | list[float] | list[np.ndarray] | list[torch.Tensor],
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        device: str | torch.device | None = None,
    ) -> BatchFeature:
        """
        Featurise one clip or a batch of clips.

        Args:
            raw_speech: a 1-D clip, a list of 1-D clips, or a 2-D `(batch, samples)` array / tensor of 16 kHz mono
                audio (see the class docstring for dtypes).
            sampling_rate (`int`, *optional*): sampling rate of `raw_speech`. Strongly recommended: a mismatch
                raises an error instead of silently producing wrong features.
            padding (`bool`, `str` or [`~utils.PaddingStrategy`], *optional*, defaults to `True`): how clips of
                different lengths are padded (in frames, with `padding_value`, after the log-mel):
                - `True` or `"longest"`: to the longest clip of the call;
                - `"max_length"`: to the frames of `max_length` samples (`num_frames(max_length)`); a longer clip
                  raises an error unless `truncation=True`;
                - `False` or `"do_not_pad"`: no padding; `input_values` is then a list of `(frames_i, num_mel_bins)`
                  arrays (pad them later with [`~SequenceFeatureExtractor.pad`] or a data collator).
            max_length (`int`, *optional*): a length in **samples** of the input audio (as for
                `Wav2Vec2FeatureExtractor` / `WhisperFeatureExtractor`), used by `padding="max_length"` and
                `truncation=True`.
            truncation (`bool`, *optional*, defaults to `False`): cut every clip to its first `max_length` samples
                before the log-mel. Nothing is ever truncated otherwise.
            pad_to_multiple_of (`int`, *optional*): round the padded number of frames up to a multiple of this
                (e.g. 16, the patch size). Ignored with `padding=False`.
            return_attention_mask (`bool`, *optional*): return `attention_mask` `(batch, frames)`, 1 on valid
                frames. Defaults to the constructor value (`True`: always, whatever the lengths).
            return_tensors (`str` or [`~utils.TensorType`], *optional*): `"pt"` for torch tensors (left on
                `device`), `"np"` for numpy arrays, `None` for numpy arrays too (a list of arrays with
                `padding=False`).
            device (`str` or `torch.device`, *optional*, defaults to CPU): torch device the log-mel is computed on.

        Returns:
            [`BatchFeature`] with `input_values` of shape `(batch, frames, num_mel_bins)` (float32) and, unless
            `return_attention_mask=False`, `attention_mask` of shape `(batch, frames)` (int32).
        """
        if sampling_rate is None:
            logger.warning_once(
                f"No sampling_rate was passed to {self.__class__.__name__}; assuming {self.sampling_rate} Hz. "
                "Pass `sampling_rate=...` so that audio at another rate raises an error instead of giving wrong "
                "features."
            )
        elif sampling_rate != self.sampling_rate:
            raise ValueError(
                f"Audio sampled at {sampling_rate} Hz was given, but MATPAC expects {self.sampling_rate} Hz. "
                f"Resample first, e.g. `soxr.resample(audio, {sampling_rate}, {self.sampling_rate})` or "
                f"`librosa.resample(audio, orig_sr={sampling_rate}, target_sr={self.sampling_rate})`."
            )
        if return_tensors is not None:
            return_tensors = TensorType(return_tensors)  # unknown names raise a ValueError listing the valid ones
            if return_tensors not in (TensorType.PYTORCH, TensorType.NUMPY):
                raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors.value!r}.")
        padding_strategy = self._get_padding_strategies(padding=padding, max_length=max_length)
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))):
            raise ValueError(f"max_length must be a number of samples (an int), got {max_length!r}.")
        if max_length is not None and max_length < self.n_fft:
            raise ValueError(
                f"max_length={max_length} samples is shorter than one STFT window ({self.n_fft} samples): "
                "max_length counts samples of the input audio (16000 = 1 s at 16 kHz), not frames."
            )
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length (in samples), e.g. max_length=16000 for 1 s.")
        if max_length is not None and not truncation and padding_strategy != PaddingStrategy.MAX_LENGTH:
            logger.warning_once(
                f"max_length={max_length} has no effect with padding={padding!r} and truncation=False; pass "
                "truncation=True to cut the audio, or padding='max_length' to pad to it."
            )
        if pad_to_multiple_of is not None and (isinstance(pad_to_multiple_of, bool) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive number of frames, got {pad_to_multiple_of!r}.")

        clips = self._split_clips(raw_speech)
        if truncation:
            clips = [clip[:max_length] for clip in clips]
        elif padding_strategy == PaddingStrategy.MAX_LENGTH:
            too_long = [i for i, clip in enumerate(clips) if clip.shape[0] > max_length]
            if too_long:
                raise ValueError(
                    f"Clip(s) {too_long} are longer than max_length={max_length} samples "
                    f"({[clips[i].shape[0] for i in too_long]} samples) and padding='max_length' cannot shorten "
                    "them. Pass truncation=True to cut them to max_length, or padding='longest'."
                )
        device = torch.device("cpu") if device is None else torch.device(device)

        lengths = [clip.shape[0] for clip in clips]
        frames = [self.num_frames(n) for n in lengths]
        if padding_strategy == PaddingStrategy.MAX_LENGTH:
            padded_frames = self.num_frames(max_length)
        else:
            padded_frames = max(frames)
        if pad_to_multiple_of is not None and padding_strategy != PaddingStrategy.DO_NOT_PAD:
            padded_frames = -(-padded_frames // pad_to_multiple_of) * pad_to_multiple_of
        # (batch, padded_frames, num_mel_bins), filled clip-length group by clip-length group
        input_values = None  # allocated below unless one group fills it as is (no copy of a long clip's log-mel)
        attention_mask = torch.zeros((len(clips), padded_frames), dtype=torch.int32, device=device)
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            group = np.stack([clips[i] for i in rows]) if len(rows) > 1 else clips[rows[0]][None]  # one: no copy
            if not group.flags.writeable:  # e.g. from datasets' numpy format: torch warns on read-only arrays
                group = group.copy()
            waveforms = torch.from_numpy(group).to(device)  # (group, samples)
            log_mel = self.extract_log_mel(waveforms)  # (group, num_frames, num_mel_bins)
            num_frames = log_mel.shape[1]
            if len(rows) == len(clips) and num_frames == padded_frames:  # every clip, no padding
                input_values = log_mel
                attention_mask.fill_(1)
                continue
            if input_values is None:
                input_values = torch.full(
                    (len(clips), padded_frames, self.num_mel_bins),
                    float(self.padding_value),
                    dtype=torch.float32,
                    device=device,
                )
            start = 0 if self.padding_side == "right" else padded_frames - num_frames
            index = torch.tensor(rows, device=device)
            input_values[index, start : start + num_frames] = log_mel
            attention_mask[index, start : start + num_frames] = 1

        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask is not False
        data = {"input_values": input_values}
        if return_attention_mask:
            data["attention_mask"] = attention_mask

        if padding_strategy == PaddingStrategy.DO_NOT_PAD and len(set(frames)) > 1:
            if return_tensors is not None:
                raise ValueError(
                    f"padding=False with clips of different lengths ({sorted(set(frames))} frames) cannot make one "
                    f"{return_tensors.value!r} tensor. Use padding=True (the default) or return_tensors=None (a list "
                    "of arrays, to pad later with feature_extractor.pad or a data collator)."
                )
            # one (frames_i, num_mel_bins) array per clip, as Wav2Vec2FeatureExtractor gives without padding
            start_of = (lambda n: 0) if self.padding_side == "right" else (lambda n: padded_frames - n)
            data = {
                key: [value[i, start_of(n) : start_of(n) + n].cpu().numpy() for i, n in enumerate(frames)]
                for key, value in data.items()
            }
            return BatchFeature(data=data)
        if return_tensors != TensorType.PYTORCH:
            data = {key: value.cpu().numpy() for key, value in data.items()}
        return BatchFeature(data=data)
