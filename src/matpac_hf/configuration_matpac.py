# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""MATPAC model configuration: the single source of every hyper-parameter of the method."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig


# The audio front end (docs/method.md, section 1). This is the one home of these numbers: `MatpacConfig` and
# `MatpacFeatureExtractor` take their defaults from here, and `num_frames_for_samples` is the one frame-count formula.
SAMPLING_RATE = 16000
N_FFT = 400  # 25 ms periodic Hann window
WIN_LENGTH = 400
HOP_LENGTH = 160  # 10 ms
NUM_MEL_BINS = 80
F_MIN = 50.0
F_MAX = 8000.0
LOG_OFFSET = 1.1920928955078125e-07  # float32 machine epsilon
SPECTROGRAM_MEAN = -7.056  # AudioSet log-mel statistics
SPECTROGRAM_STD = 4.193


def num_frames_for_samples(num_samples: int, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> int:
    """Log-mel frames of a clip of `num_samples` samples: `1 + (num_samples - n_fft) // hop_length` (STFT without
    centre padding); 0 for a clip shorter than one window."""
    if num_samples < n_fft:
        return 0
    return 1 + (num_samples - n_fft) // hop_length


def num_samples_for_frames(num_frames: int, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> int:
    """Fewest samples that give `num_frames` log-mel frames: `n_fft + (num_frames - 1) * hop_length` (608 frames:
    97 520 samples)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    return n_fft + (num_frames - 1) * hop_length


# The Auto class of every MATPAC class, as `config.auto_map` references (`"<file>.<class>"`) into the code files that
# `save_pretrained` copies next to the weights (`import matpac_hf` registers every class with
# `register_for_auto_class`). Every config carries all of them, so a folder saved from any one class (the encoder
# alone, say) also loads with the other Auto classes through remote code. The feature extractor's entry lives in
# `preprocessor_config.json`.
AUTO_MAP = {
    "AutoConfig": "configuration_matpac.MatpacConfig",
    "AutoModel": "modeling_matpac.MatpacModel",
    "AutoModelForPreTraining": "modeling_matpac.MatpacForPreTraining",
    "AutoModelForAudioClassification": "modeling_matpac.MatpacForAudioClassification",
    "AutoModelForAudioFrameClassification": "modeling_matpac.MatpacForAudioFrameClassification",
}

_TEACHER_INITS = ("independent", "copy_student")
_CENTER_UPDATES = ("probabilities", "logits")
_CLASSIFIER_POOLINGS = ("concat", "mean")


@strict
class MatpacConfig(PreTrainedConfig):
    r"""
    Configuration of a MATPAC / MATPAC++ model (Quelennec et al., ICASSP 2025). Defaults reproduce the official
    ViT-Base run behind the released checkpoints (AudioSet, 300 epochs at batch 2048).

    Audio front end (also stored in `preprocessor_config.json` by [`MatpacFeatureExtractor`]):
        sampling_rate (`int`, defaults to 16000): expected input sampling rate in Hz.
        n_fft (`int`, defaults to 400), win_length (`int`, defaults to 400), hop_length (`int`, defaults to 160):
            STFT parameters in samples (25 ms periodic Hann window, 10 ms hop, no centre padding).
        num_mel_bins (`int`, defaults to 80), f_min (`float`, 50.0), f_max (`float`, 8000.0): Slaney mel filterbank.
        log_offset (`float`, defaults to float32 machine epsilon): added to the mel power before the natural log.
        spectrogram_mean (`float`, -7.056), spectrogram_std (`float`, 4.193): AudioSet log-mel statistics used to
            normalise the spectrogram, `(log_mel - mean) / std`.

    Patching and positions:
        patch_size (`int`, defaults to 16): square patch size on the (mel, frame) plane.
        max_frames (`int`, defaults to 608): frames per encoder call (the pretraining crop, 6.08 s). Longer inputs are
            cut into consecutive chunks of this many frames ("precise" inference). The fixed 2-D sin-cos position table
            covers `num_mel_bins // patch_size` x `max_frames // patch_size` patches. The AudioSet-fine-tuned release
            uses 992.
        num_channels (`int`, defaults to 1): input channels of the patch embedding.

    Student encoder (ViT) and the EMA teacher encoder (same shape):
        hidden_size (768), num_hidden_layers (12), num_attention_heads (12), intermediate_size (3072), hidden_act
        ("gelu"), qkv_bias (True), layer_norm_eps (1e-6), hidden_dropout_prob (0.0), attention_probs_dropout_prob
        (0.0), initializer_range (0.02, std of the CLS and mask tokens).

    Predictor (the M2D "decoder"):
        decoder_hidden_size (512), decoder_num_hidden_layers (8), decoder_num_attention_heads (16),
        decoder_intermediate_size (2048).

    Classification heads (DINO-style, student and EMA teacher):
        head_hidden_size (2048): width of the MLP's hidden layers.
        head_bottleneck_size (256): output of the MLP, L2-normalised before the prototype layer.
        head_num_prototypes (2048): output of the weight-normalised prototype layer (number of pseudo-classes).
        head_num_layers (3): linear layers in the MLP.
        head_freeze_weight_norm_gain (False): freeze the prototype layer's weight-norm gain at 1 (DINO's default). The
            official MATPAC code keeps it trainable.

    Pretraining objective:
        mask_ratio (0.7): fraction of patches the student does not see (unstructured random masking).
        prediction_loss_weight (0.5), classification_loss_weight (0.5): weights of the two losses.
        student_temperature (0.1): temperature of the student head's softmax.
        teacher_temperature_start (0.04), teacher_temperature_end (0.07), teacher_temperature_warmup_steps (9827):
            the teacher temperature rises linearly from start to end over the warm-up steps, then stays.
        center_momentum (0.9): `center <- m * center + (1 - m) * batch_mean`.
        center_update (`"probabilities"`): what the center averages. `"probabilities"` (official MATPAC code: the
            teacher softmax output) or `"logits"` (original DINO: the raw teacher head output).
        ema_decay_start (0.99995), ema_decay_end (0.99999): teacher-encoder EMA decay, annealed linearly.
        head_ema_decay_start (0.998), head_ema_decay_end (1.0): teacher-head EMA decay, annealed linearly.
        total_steps (294816): length of the run in optimiser steps (the EMA decays are annealed over it).
        teacher_init (`"independent"`): how the teachers start. `"independent"` reproduces the official code (the
            teacher encoder is an independent random draw; the teacher head's MLP is a trunc-normal(0.02) draw of its
            own, its prototype layer starts equal to the student's). Default: "independent" (official).
            `"copy_student"` copies the student encoder and head into the teachers at step 0 (DINO, data2vec).

    MATPAC++ (multiple-choice learning prediction heads):
        use_mcl (False): replace the predictor's output projection by `mcl_num_heads` parallel heads.
        mcl_num_heads (5), mcl_temperature_start (0.1), mcl_temperature_decay (0.99997), mcl_temperature_min (1e-4):
            soft winner-takes-all weights `softmax(-loss_k / T)` with `T = start * decay**step`; below `min` the hard
            minimum is used.

    Audio classification ([`MatpacForAudioClassification`]):
        classifier_pooling (`"concat"`): `"concat"` = linear layer on the 3840-d clip embedding (official downstream
            probes); `"mean"` = mean of the 768-d tokens over frequency and time, BatchNorm1d without affine
            parameters, then linear (official AudioSet-fine-tuned head).
        classifier_dropout (0.0): dropout before the classifier's linear layer.
        freeze_encoder (False): keep the encoder frozen (linear probe) when fine-tuning: the heads apply it when built
            and again after `from_pretrained` (see `MatpacForAudioClassification.freeze_base_model`).
        use_weighted_layer_sum (False): feed the heads ([`MatpacForAudioClassification`],
            [`MatpacForAudioFrameClassification`]) a learned softmax-weighted sum of the encoder's `num_hidden_layers
            + 1` hidden states (SUPERB style, as `Wav2Vec2ForSequenceClassification`) instead of the last layer.

    Example:

    ```python
    >>> from matpac_hf import MatpacConfig, MatpacModel
    >>> model = MatpacModel(MatpacConfig())  # official ViT-B sizes, random weights
    ```
    """

    model_type = "matpac"

    # audio front end
    sampling_rate: int = SAMPLING_RATE
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop_length: int = HOP_LENGTH
    num_mel_bins: int = NUM_MEL_BINS
    f_min: float = F_MIN
    f_max: float = F_MAX
    log_offset: float = LOG_OFFSET
    spectrogram_mean: float = SPECTROGRAM_MEAN
    spectrogram_std: float = SPECTROGRAM_STD

    # patching
    patch_size: int = 16
    max_frames: int = 608
    num_channels: int = 1

    # student / teacher encoder
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02

    # predictor
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048

    # classification heads
    head_hidden_size: int = 2048
    head_bottleneck_size: int = 256
    head_num_prototypes: int = 2048
    head_num_layers: int = 3
    head_freeze_weight_norm_gain: bool = False

    # pretraining objective
    mask_ratio: float = 0.7
    prediction_loss_weight: float = 0.5
    classification_loss_weight: float = 0.5
    student_temperature: float = 0.1
    teacher_temperature_start: float = 0.04
    teacher_temperature_end: float = 0.07
    teacher_temperature_warmup_steps: int = 9827
    center_momentum: float = 0.9
    center_update: str = "probabilities"
    ema_decay_start: float = 0.99995
    ema_decay_end: float = 0.99999
    head_ema_decay_start: float = 0.998
    head_ema_decay_end: float = 1.0
    total_steps: int = 294816
    teacher_init: str = "independent"

    # MATPAC++
    use_mcl: bool = False
    mcl_num_heads: int = 5
    mcl_temperature_start: float = 0.1
    mcl_temperature_decay: float = 0.99997
    mcl_temperature_min: float = 1e-4

    # audio classification
    classifier_pooling: str = "concat"
    classifier_dropout: float | int = 0.0
    freeze_encoder: bool = False
    use_weighted_layer_sum: bool = False

    def __post_init__(self, **kwargs):
        # Every MATPAC Auto class (see `AUTO_MAP`); entries of a loaded config (e.g. with a Hub repository prefix) win.
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        super().__post_init__(**kwargs)

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_frequency_patches(self) -> int:
        """Patch rows along frequency (5 for 80 mel bins and 16-pixel patches)."""
        return self.num_mel_bins // self.patch_size

    @property
    def max_time_patches(self) -> int:
        """Patch columns along time in one chunk of `max_frames` frames (38 for 608 frames)."""
        return self.max_frames // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches in one full chunk (190 = 5 x 38 by default)."""
        return self.num_frequency_patches * self.max_time_patches

    @property
    def num_visible_patches(self) -> int:
        """Patches the student sees during pretraining: `int(num_patches * (1 - mask_ratio))` (57 of 190)."""
        return int(self.num_patches * (1 - self.mask_ratio))

    @property
    def frame_embedding_size(self) -> int:
        """Size of one frame (time-column) embedding: the frequency tokens concatenated (3840 = 5 x 768)."""
        return self.num_frequency_patches * self.hidden_size

    @property
    def min_num_samples(self) -> int:
        """Shortest waveform that yields one STFT frame (one window, `n_fft` = 400 samples)."""
        return self.n_fft

    # ------------------------------------------------------------------ validation (@strict calls validate_*)
    def validate_architecture(self):
        """Checks the sizes fit together; every message names the fix."""
        if self.num_mel_bins % self.patch_size != 0:
            raise ValueError(
                f"num_mel_bins ({self.num_mel_bins}) must be divisible by patch_size ({self.patch_size}): "
                "patches tile the mel axis exactly. Choose e.g. num_mel_bins=80 with patch_size=16."
            )
        if self.max_frames % self.patch_size != 0 or self.max_frames <= 0:
            raise ValueError(
                f"max_frames ({self.max_frames}) must be a positive multiple of patch_size ({self.patch_size})."
            )
        for width, heads, name in (
            (self.hidden_size, self.num_attention_heads, ""),
            (self.decoder_hidden_size, self.decoder_num_attention_heads, "decoder_"),
        ):
            if width % heads != 0:
                raise ValueError(
                    f"{name}hidden_size ({width}) must be divisible by {name}num_attention_heads ({heads})."
                )
        for width, name in ((self.hidden_size, "hidden_size"), (self.decoder_hidden_size, "decoder_hidden_size")):
            if width % 4 != 0:
                raise ValueError(f"{name} ({width}) must be divisible by 4 for the 2-D sin-cos position table.")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}.")
        if self.num_visible_patches < 1 or self.num_visible_patches >= self.num_patches:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} on {self.num_patches} patches leaves {self.num_visible_patches} "
                "visible patches; at least one patch must be visible and at least one masked."
            )
        if self.teacher_init not in _TEACHER_INITS:
            raise ValueError(f"teacher_init must be one of {_TEACHER_INITS}, got {self.teacher_init!r}.")
        if self.center_update not in _CENTER_UPDATES:
            raise ValueError(f"center_update must be one of {_CENTER_UPDATES}, got {self.center_update!r}.")
        if self.classifier_pooling not in _CLASSIFIER_POOLINGS:
            raise ValueError(
                f"classifier_pooling must be one of {_CLASSIFIER_POOLINGS}, got {self.classifier_pooling!r}."
            )
        if self.head_num_layers < 1:
            raise ValueError(f"head_num_layers must be at least 1, got {self.head_num_layers}.")
        if self.use_mcl and self.mcl_num_heads < 1:
            raise ValueError(f"mcl_num_heads must be at least 1 with use_mcl=True, got {self.mcl_num_heads}.")
        if self.f_max > self.sampling_rate / 2 or self.f_min < 0 or self.f_min >= self.f_max:
            raise ValueError(
                f"Mel range [{self.f_min}, {self.f_max}] Hz must satisfy 0 <= f_min < f_max <= sampling_rate / 2 "
                f"({self.sampling_rate / 2})."
            )
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft}).")
        if self.spectrogram_std <= 0:
            raise ValueError(f"spectrogram_std must be positive, got {self.spectrogram_std}.")
        for name in ("total_steps", "teacher_temperature_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


__all__ = ["MatpacConfig", "num_frames_for_samples", "num_samples_for_frames"]
