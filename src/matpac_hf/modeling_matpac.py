# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""PyTorch MATPAC model (Masked latent Prediction And Classification, Quelennec et al., ICASSP 2025).

Layout follows transformers' ViTMAE / AST modeling files. Tensor-shape vocabulary used in comments:

* `num_frames` x `num_mel_bins` (80): a normalised log-mel spectrogram, time first (`input_values` is
  `(batch, num_frames, num_mel_bins)`, AST's layout); the patch embedding transposes it to the (mel, frame) image.
* `num_frequency_patches` (5) x `num_time_patches` (38 for a 608-frame chunk): the patch grid. Tokens are ordered
  frequency-major (all time columns of the lowest band first), as `Conv2d` output flattened over (freq, time) gives.
* a "chunk" is one encoder call of at most `max_frames` (608) frames; long clips are cut into consecutive chunks.
* a "frame embedding" is one 16-frame time column: the `num_frequency_patches` tokens of that column concatenated
  (5 x 768 = 3840 wide), one vector per 160 ms.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging

from .configuration_matpac import MatpacConfig, num_samples_for_frames
from .fast_inference import fast_encode, fast_encode_micro_batches, fast_path_applies
from .official_checkpoints import CheckpointError, check_encoder_loaded, describe_keys, loading_plan


logger = logging.get_logger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# Output dataclasses
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class MatpacModelOutput(ModelOutput):
    """
    Output of [`MatpacModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_time_patches, frame_embedding_size)`):
            Frame embeddings after the final LayerNorm: for each 16-frame time column, the
            `num_frequency_patches` tokens concatenated (3840-d for ViT-B), one vector per 160 ms. Long inputs are
            encoded in consecutive `max_frames` chunks and concatenated along time ("precise" inference). Rows past a
            clip's length (see `frame_mask`) are zero.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, frame_embedding_size)`):
            Clip (scene) embedding: the mean of each clip's valid frame embeddings.
        frame_mask (`torch.LongTensor` of shape `(batch_size, num_time_patches)`):
            1 for frame embeddings that belong to the clip, 0 for padding of a shorter clip in the batch.
        hidden_states (`tuple(torch.FloatTensor)`, returned when `output_hidden_states=True`):
            `num_hidden_layers + 1` tensors of shape `(batch_size, num_time_patches, frame_embedding_size)`, same
            layout as `last_hidden_state`: index 0 the embedded patches (with positions), index i the output of block
            i (the last one before the final LayerNorm).
        attentions (`tuple(torch.FloatTensor)`, returned when `output_attentions=True`):
            `num_hidden_layers` tensors of shape `(batch_size, num_chunks, num_heads, seq_len, seq_len)`: the attention
            probabilities of each clip, per `max_frames` chunk (each chunk is encoded on its own, so attention never
            crosses chunks). `num_chunks = ceil(num_frames / max_frames)` (1 for clips up to 6.08 s:
            `attentions[layer][:, 0]` is the usual `(batch, heads, seq, seq)`); `seq_len = 1 + F * T`, the CLS token
            then the patches in frequency-major order, `T` the time columns of the longest chunk in the batch. Rows and
            columns of padded patches, and chunks that a shorter clip does not have, are 0. Computed with eager
            attention (under sdpa / flash / flex the forward falls back to eager when they are asked for).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    frame_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MatpacEncoderOutput(ModelOutput):
    """Output of [`MatpacEncoder`] on a token sequence (CLS first).

    Args:
        last_hidden_state (`(batch, seq, hidden)`): after the final LayerNorm.
        hidden_states (tuple of `(batch, seq, hidden)`): the input, then each block's output (before the final norm).
        attentions (tuple of `(batch, heads, seq, seq)`): attention probabilities (eager attention only).
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MatpacForPreTrainingOutput(ModelOutput):
    """
    Output of [`MatpacForPreTraining`]. With `B` = batch, `L` = patches per clip of the input (190), `M` = masked patches
    per clip (133; with padded clips, the most of any clip of the batch, see `valid_predictions`).

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `prediction_loss_weight * prediction_loss + classification_loss_weight * classification_loss`.
        prediction_loss (`torch.FloatTensor` of shape `()`):
            Mean over the masked tokens of `2 - 2 cos(prediction, teacher target)` (MATPAC++: the soft
            winner-takes-all combination of the candidates' losses).
        classification_loss (`torch.FloatTensor` of shape `()`):
            Mean over the masked tokens of the cross-entropy between the centred, sharpened teacher probabilities and
            the student head's log-probabilities.
        mask (`torch.BoolTensor` of shape `(B, L)`):
            True for masked patches (seen by the teacher, predicted by the student), False for the visible ones (and
            padded ones, see `valid_patches`), in frequency-major patch order.
        predictions (`torch.FloatTensor` of shape `(B, M, hidden_size)`):
            The predictor's outputs for the masked patches, in the order of the random permutation (MATPAC++: the best
            candidate of each token, the one fed to the student head).
        candidate_predictions (`torch.FloatTensor` of shape `(B, M, mcl_num_heads, hidden_size)`, MATPAC++ only):
            Every head's candidate.
        prediction_std, target_std (`torch.FloatTensor` of shape `()`):
            Mean over channels of the per-channel std (over this process's masked tokens) of the L2-normalised
            predictions and teacher targets; collapse shows as std -> 0.
        teacher_perplexity (`torch.FloatTensor` of shape `()`):
            `exp(entropy)` of the batch-mean teacher probabilities; collapse shows as perplexity -> 1.
        num_teacher_classes (`torch.LongTensor` of shape `()`):
            Number of distinct teacher argmax classes in the batch.
        student_teacher_agreement (`torch.FloatTensor` of shape `()`):
            Fraction of masked tokens whose student and teacher argmax classes agree.
        teacher_temperature, ema_decay, head_ema_decay (`torch.FloatTensor` of shape `()`):
            Schedule values at this `step` (the two decays are the ones [`~MatpacForPreTraining.update_teachers`]
            applies at this step).
        mcl_temperature (`torch.FloatTensor` of shape `()`, MATPAC++ only):
            Soft winner-takes-all temperature at this step (`mcl_temperature_min` once the hard minimum is used).
        valid_patches (`torch.BoolTensor` of shape `(B, L)`):
            True for patches that hold audio (a time column with at least one valid frame of `attention_mask`; all
            True without it). Padded patches are neither visible nor masked.
        valid_predictions (`torch.BoolTensor` of shape `(B, M)`):
            True for the rows of `predictions` (and `candidate_predictions`) that belong to a masked patch of the
            clip; all True unless clips of the batch have different numbers of valid patches.
    """

    loss: torch.FloatTensor | None = None
    prediction_loss: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None
    predictions: torch.FloatTensor | None = None
    candidate_predictions: torch.FloatTensor | None = None
    prediction_std: torch.FloatTensor | None = None
    target_std: torch.FloatTensor | None = None
    teacher_perplexity: torch.FloatTensor | None = None
    num_teacher_classes: torch.LongTensor | None = None
    student_teacher_agreement: torch.FloatTensor | None = None
    teacher_temperature: torch.FloatTensor | None = None
    ema_decay: torch.FloatTensor | None = None
    head_ema_decay: torch.FloatTensor | None = None
    mcl_temperature: torch.FloatTensor | None = None
    valid_patches: torch.BoolTensor | None = None
    valid_predictions: torch.BoolTensor | None = None


@dataclass
class MatpacFrameClassifierOutput(ModelOutput):
    """
    Output of [`MatpacForAudioFrameClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            Mean over the valid frames (see `frame_mask`) of the cross-entropy (single-label) or of the per-class
            BCE-with-logits (multi-label).
        logits (`torch.FloatTensor` of shape `(batch_size, num_time_patches, num_labels)`):
            One row per 160 ms frame embedding (`patch_size * hop_length` samples), aligned with [`MatpacModel`]'s
            `last_hidden_state`; frame `i` is centred at `matpac_hf.hear.frame_timestamps_ms`'s `i`-th time.
        frame_mask (`torch.LongTensor` of shape `(batch_size, num_time_patches)`):
            1 for frames inside the clip, 0 for padding of a shorter clip (their logits mean nothing).
        hidden_states, attentions: as in [`MatpacModelOutput`], when asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    frame_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Positions
# ----------------------------------------------------------------------------------------------------------------------


def ceil_div(numerator: int, denominator: int) -> int:
    """`ceil(numerator / denominator)` of positive integers in integer arithmetic: under `torch.compile` with a
    dynamic clip length it stays a floor division that the compiler can bound (a true division rounded up is not)."""
    return (numerator + denominator - 1) // denominator


def sincos_1d_position_embedding(positions: torch.Tensor, embed_dim: int) -> torch.Tensor:
    """1-D sin-cos embedding of `positions` (any shape) -> `(*positions.shape, embed_dim)`, as in MAE:
    `[sin(p * w_0..w_{d/2-1}), cos(p * w_0..w_{d/2-1})]` with `w_i = 10000^(-2i/d)`. Computed in float64."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (embed_dim / 2,)
    angles = positions.to(torch.float64).unsqueeze(-1) * omega  # (..., embed_dim / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def build_2d_sincos_position_table(num_frequency_patches: int, num_time_patches: int, embed_dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table for a (frequency, time) patch grid, with a zero row for the CLS token (MAE / M2D).

    Returns `(1 + num_frequency_patches * num_time_patches, embed_dim)` in float32, rows in frequency-major order.
    For the token at frequency row r and time column c, the first half of the channels embeds c, the second half r.
    """
    rows = torch.arange(num_frequency_patches).repeat_interleave(num_time_patches)  # (F * T,)
    cols = torch.arange(num_time_patches).repeat(num_frequency_patches)  # (F * T,)
    half = embed_dim // 2
    table = torch.cat(
        [sincos_1d_position_embedding(cols, half), sincos_1d_position_embedding(rows, half)], dim=-1
    )  # (F * T, embed_dim)
    table = torch.cat([torch.zeros(1, embed_dim, dtype=table.dtype), table], dim=0)
    return table.float()


def crop_position_table(position_table: torch.Tensor, num_frequency_patches: int, num_time_patches: int):
    """Cut a `(1 + F * T_max, D)` table to the first `num_time_patches` columns of every frequency row.

    Returns `(cls_position (D,), patch_positions (F * num_time_patches, D))`. The cut is per frequency row, not a flat
    truncation of the sequence (which would mix rows).
    """
    dim = position_table.shape[-1]
    patch_positions = position_table[1:].reshape(num_frequency_patches, -1, dim)[:, :num_time_patches]
    return position_table[0], patch_positions.reshape(-1, dim)


# ----------------------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------------------


class MatpacPatchEmbeddings(nn.Module):
    """`(batch, num_frames, num_mel_bins)` log-mel -> `(batch, F * T, hidden_size)` patch tokens, frequency-major.

    The spectrogram is transposed to the `(num_mel_bins, num_frames)` image the official model patches (frequency
    rows, time columns), so the tokens and their order are those of the official code. A 4-D input is taken to be
    that image already, `(batch, num_channels, num_mel_bins, num_frames)`."""

    def __init__(self, config: MatpacConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if input_values.dim() == 3:
            input_values = input_values.transpose(1, 2).unsqueeze(1)  # (batch, 1, num_mel_bins, num_frames)
            if torch.compiler.is_compiling():
                # A dense copy: inductor cannot order the strides of this view when the frame count is dynamic
                # (training with clips of changing lengths failed with "cannot determine truth value of Relational").
                input_values = input_values.contiguous()
        patches = self.projection(input_values.to(self.projection.weight.dtype))  # (batch, hidden, F, T)
        return patches.flatten(2).transpose(1, 2)  # (batch, F * T, hidden)


class MatpacEmbeddings(nn.Module):
    """Patch embedding, learned CLS token and the fixed 2-D sin-cos position table (shared by student and teacher)."""

    def __init__(self, config: MatpacConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = MatpacPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        # Fixed, not learned, never saved: a pure function of the config, built here and rebuilt by `_init_weights`
        # (which fills it after a meta-device init, e.g. in `from_pretrained`).
        self.register_buffer(
            "position_embeddings",
            build_2d_sincos_position_table(config.num_frequency_patches, config.max_time_patches, config.hidden_size),
            persistent=False,
        )

    def embed_patches(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(batch, num_frames, num_mel_bins)` -> patch tokens plus positions, `(batch, F * T, hidden)`, no CLS.

        `num_frames` must be a multiple of `patch_size` and at most `max_frames`.
        """
        patch_tokens = self.patch_embeddings(input_values)
        num_frequency_patches = self.config.num_frequency_patches
        num_time_patches = patch_tokens.shape[1] // num_frequency_patches
        _, patch_positions = crop_position_table(self.position_embeddings, num_frequency_patches, num_time_patches)
        return patch_tokens + patch_positions.to(patch_tokens.dtype)

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(batch, seq, hidden)` -> `(batch, 1 + seq, hidden)` with the CLS token (plus its zero position) first."""
        cls_token = (self.cls_token + self.position_embeddings[0].to(self.cls_token.dtype)).to(tokens.dtype)
        return torch.cat([cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(batch, num_frames, num_mel_bins)` -> `(batch, 1 + F * T, hidden)`: CLS + positioned patch tokens."""
        return self.prepend_cls(self.embed_patches(input_values))


# ----------------------------------------------------------------------------------------------------------------------
# Transformer blocks (pre-norm ViT)
# ----------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (batch, heads, seq, seq)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (batch, seq, heads, head_dim)
    return attn_output, attn_weights


class MatpacSelfAttention(nn.Module):
    """Multi-head self-attention with a fused query/key/value projection (as the official `attn.qkv`)."""

    def __init__(self, config: MatpacConfig, hidden_size: int, num_attention_heads: int):
        super().__init__()
        self.config = config
        self.num_attention_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ):
        batch_size, seq_len, _ = hidden_states.shape
        attn_output, attn_weights = self.attend(self.qkv(hidden_states), attention_mask, output_attentions, **kwargs)
        attn_output = attn_output.reshape(batch_size, seq_len, -1)
        return self.proj(attn_output), attn_weights

    def attend(
        self,
        qkv: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(batch, seq, 3 * hidden)` fused query/key/value projections -> `(attn_output (batch, seq, heads,
        head_dim), attention probabilities or None)`: the attention itself, between the two projections."""
        batch_size, seq_len, _ = qkv.shape
        qkv = qkv.view(batch_size, seq_len, 3, self.num_attention_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)

        attention_interface: Callable = eager_attention_forward
        if self.config._attn_implementation != "eager":
            if output_attentions:
                # sdpa / flash / flex kernels never form the attention probabilities. Rather than return `None`s
                # (transformers' sdpa path only warns), this call falls back to eager attention, same numbers.
                logger.warning_once(
                    f"output_attentions=True with attn_implementation={self.config._attn_implementation!r}: these "
                    "kernels do not return attention probabilities, so this forward falls back to eager attention "
                    "(same outputs, slower). Load the model with attn_implementation='eager' to silence this warning."
                )
            else:
                attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                    self.config._attn_implementation, eager_attention_forward
                )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        return attn_output, attn_weights


class MatpacMLP(nn.Module):
    def __init__(self, config: MatpacConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.exact_gelu = config.hidden_act == "gelu"  # ACT2FN's "gelu": the exact (erf) GELU
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        if self.exact_gelu and not (torch.is_grad_enabled() and hidden_states.requires_grad):
            # Without autograd the exact GELU runs in place: one activation fewer to allocate, the same outputs.
            hidden_states = torch.ops.aten.gelu_(hidden_states)
        else:
            hidden_states = self.activation_fn(hidden_states)
        return self.dropout(self.fc2(self.dropout(hidden_states)))


class MatpacLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: MatpacConfig, hidden_size: int, num_attention_heads: int, intermediate_size: int):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = MatpacSelfAttention(config, hidden_size, num_attention_heads)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = MatpacMLP(config, hidden_size, intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ):
        attn_output, attn_weights = self.attention(
            self.layernorm_before(hidden_states), attention_mask, output_attentions=output_attentions, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.mlp(self.layernorm_after(hidden_states))
        return hidden_states, attn_weights


class MatpacEncoder(nn.Module):
    """A stack of pre-norm blocks and the final LayerNorm: the student encoder, and (same class) the teacher encoder.

    Works on token sequences; patch embedding, CLS token and positions live in [`MatpacEmbeddings`] and are shared.
    """

    def __init__(self, config: MatpacConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            [
                MatpacLayer(config, config.hidden_size, config.num_attention_heads, config.intermediate_size)
                for _ in range(config.num_hidden_layers)
            ]
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> MatpacEncoderOutput:
        """`hidden_states`: `(batch, seq, hidden)` tokens. `attention_mask`: `(batch, seq)`, 1 for tokens to attend."""
        if attention_mask is not None and output_attentions and self.config._attn_implementation != "eager":
            # The eager fallback of MatpacSelfAttention (see there) takes eager's additive float mask.
            key_is_padding = 1.0 - attention_mask[:, None, None, :].to(hidden_states.dtype)  # (batch, 1, 1, seq)
            attention_mask = key_is_padding * torch.finfo(hidden_states.dtype).min
        elif attention_mask is not None:
            attention_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
            )
        if not (output_hidden_states or output_attentions) and fast_path_applies(self):
            # No gradient (inference, the teacher's forward): the same blocks with fewer memory passes.
            return MatpacEncoderOutput(last_hidden_state=fast_encode(self, hidden_states, attention_mask))
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_mask, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return MatpacEncoderOutput(
            last_hidden_state=self.layernorm(hidden_states),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ----------------------------------------------------------------------------------------------------------------------


class MatpacPreTrainedModel(PreTrainedModel):
    config: MatpacConfig
    config_class = MatpacConfig
    base_model_prefix = "matpac"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MatpacEmbeddings", "MatpacLayer"]
    # The attention implementations tested forward and backward (tests/test_modeling.py, on CPU): "sdpa" (the default;
    # PyTorch picks a flash / memory-efficient kernel on GPUs) and "eager". flex_attention has no backward on CPU and
    # flash_attention_* need CUDA plus a package; both are refused by `get_correct_attn_implementation`.
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    supported_attn_implementations = ("sdpa", "eager")
    # The losses are means over each batch (they do not use `num_items_in_batch`): the Trainer must scale them for
    # gradient accumulation itself, although `forward` takes `**kwargs`.
    accepts_loss_kwargs = False

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """transformers' choice of attention, refusing (with what works) any implementation but sdpa and eager."""
        if requested_attention is not None and requested_attention not in (
            *self.supported_attn_implementations,
            "paged|eager",
        ):
            raise ValueError(  # begins with transformers' own wording for an unsupported implementation
                f'Specified `attn_implementation="{requested_attention}"` is not supported by MATPAC models. Use '
                "attn_implementation='sdpa' (the default: torch's scaled_dot_product_attention, which runs flash / "
                "memory-efficient kernels on GPUs by itself) or 'eager' (needed for output_attentions=True), the two "
                "tested forward and backward."
            )
        return super().get_correct_attn_implementation(requested_attention, is_init_check)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """[`~PreTrainedModel.from_pretrained`] that also loads the authors' checkpoint layout, and never returns an
        encoder left at random.

        * A matpac-hf folder or repository loads as it is.
        * The official inference layout (a release's names, `patch_embed.proj.*` / `student_encoder.blocks.{i}.*`,
          under any wrapper prefix: the authors' Hub repositories `auriankelen/matpac_*`) is recognised from its
          weights and converted in memory, then loaded as a `state_dict`: sizes from the tensor shapes, our names
          (see [`~official_checkpoints.loading_plan`]), so the model saves again as a matpac-hf folder. The head
          count, invisible in the shapes, is `num_attention_heads=` if given, else the one their `config.json`
          states, else ViT-B's 12.
        * Any encoder tensor a folder or repository does not provide raises
          [`~official_checkpoints.CheckpointError`] naming what was found and the fix, instead of a randomly
          initialised encoder behind a load report (a `state_dict` given in memory, without a path, loads as
          transformers loads it).
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        encoder_prefix = "" if issubclass(cls, MatpacModel) else f"{cls.base_model_prefix}."
        if (
            pretrained_model_name_or_path is not None
            and kwargs.get("key_mapping") is None
            and not any(kwargs.get(name) for name in ("state_dict", "gguf_file", "variant"))
        ):
            plan = loading_plan(
                cls.__name__,
                pretrained_model_name_or_path,
                kwargs,
                encoder_prefix=encoder_prefix,
                loads_audioset_head=issubclass(cls, MatpacForAudioClassification),
            )
            if plan is not None:  # converted in memory: loads (and saves again) under our names
                kwargs.update(config=plan.config, state_dict=plan.state_dict)
                model, loading_info = super().from_pretrained(None, *model_args, output_loading_info=True, **kwargs)
                model.config.name_or_path = model.name_or_path = str(pretrained_model_name_or_path)
                check_encoder_loaded(model, loading_info, pretrained_model_name_or_path, encoder_prefix)
                return (model, loading_info) if output_loading_info else model
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        if pretrained_model_name_or_path is not None:  # (None: a state_dict given in memory, which may be partial)
            check_encoder_loaded(model, loading_info, pretrained_model_name_or_path, encoder_prefix)
        return (model, loading_info) if output_loading_info else model

    # -- frozen parameters: the one place -----------------------------------------------------------------------------
    def _frozen_parameters(self) -> list[nn.Module | nn.Parameter]:
        """Modules / parameters that must not train, given the config (none here; see the subclasses)."""
        return []

    def tie_weights(self, *args, **kwargs):
        """No tied weights. Applies `requires_grad=False` to [`_frozen_parameters`]: transformers calls this at the end
        of `__init__` (`post_init`) and of `from_pretrained`, whose loader re-creates every loaded tensor as a
        trainable `nn.Parameter`, so this is the one hook that keeps frozen parameters frozen."""
        super().tie_weights(*args, **kwargs)
        for frozen in self._frozen_parameters():
            frozen.requires_grad_(False)

    def _init_weights(self, module):
        """Official initialisation: xavier-uniform linears with zero bias, LayerNorm (1, 0), patch embedding
        xavier-uniform on its flattened `(hidden, patch_size**2)` view with Conv2d's default bias, CLS / mask tokens
        normal(0.02)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):  # the patch embedding's projection
            # Xavier-uniform of the flattened `(hidden, channels * patch_size**2)` view, drawn on the weight itself so
            # that `transformers.initialization` keeps a weight `from_pretrained` loaded. (Branch on the Conv2d:
            # transformers skips modules that own no tensor, as MatpacPatchEmbeddings, for custom-code models.)
            bound = math.sqrt(6.0 / (module.weight.shape[0] + module.weight[0].numel()))  # fan_out + fan_in
            init.uniform_(module.weight, -bound, bound)
            # The bias keeps Conv2d's own default, as officially: uniform(+-1 / sqrt(fan_in)), fan_in = C * p * p
            bias_bound = 1.0 / math.sqrt(module.weight[0].numel())
            init.uniform_(module.bias, -bias_bound, bias_bound)
        elif isinstance(module, MatpacEmbeddings):
            init.normal_(module.cls_token, std=std)
            init.copy_(
                module.position_embeddings,
                build_2d_sincos_position_table(
                    self.config.num_frequency_patches, self.config.max_time_patches, self.config.hidden_size
                ),
            )


# ----------------------------------------------------------------------------------------------------------------------
# MatpacModel: the student encoder for downstream use
# ----------------------------------------------------------------------------------------------------------------------


class MatpacModel(MatpacPreTrainedModel):
    """The MATPAC student encoder: raw log-mel in, frame and clip embeddings out.

    Inputs of any length are handled with the official "precise" semantics: each clip's valid frames are cut into
    consecutive `max_frames` chunks (the last one shorter, zero-padded only up to a multiple of `patch_size`), every
    chunk is encoded on its own, and the chunks are concatenated along time. The chunks of all clips go through the
    encoder in micro-batches of at most `chunk_batch_size` chunks of equal length (never padded, no attention mask),
    so each clip gets exactly what it gets alone and activation memory stays bounded for audio of any length.
    """

    # Loading the student from a MatpacForPreTraining or head (MatpacForAudio[Frame]Classification) folder: the other
    # parts of those models are expected there and are not part of the encoder.
    _keys_to_ignore_on_load_unexpected = [
        r"^(predictor|student_head|teacher_encoder|teacher_head|classification_loss|classifier|head_norm"
        r"|layer_weights)\b"
    ]

    def __init__(self, config: MatpacConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = MatpacEmbeddings(config)
        self.encoder = MatpacEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> MatpacPatchEmbeddings:
        return self.embeddings.patch_embeddings

    # -- input checks -------------------------------------------------------------------------------------------------
    def _check_inputs(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Validates shapes and returns the number of valid frames per clip, `(batch,)` long."""
        num_mel_bins = self.config.num_mel_bins
        if not isinstance(input_values, torch.Tensor):
            raise ValueError(
                "`input_values` must be a torch.Tensor of normalised log-mel spectrograms of shape "
                f"(batch, num_frames, {num_mel_bins}); got {type(input_values).__name__}. "
                "Use MatpacFeatureExtractor(..., return_tensors='pt') to turn raw audio into `input_values`."
            )
        if input_values.dim() == 2 and num_mel_bins in input_values.shape:
            # (num_mel_bins, num_frames) is a single spectrogram in the official code's frequency-first layout
            fix = "input_values[None]" if input_values.shape[-1] == num_mel_bins else "input_values.T[None]"
            raise ValueError(
                f"`input_values` has shape {tuple(input_values.shape)}: a single spectrogram needs a batch dimension, "
                f"use `{fix}` (shape (1, num_frames, {num_mel_bins}))."
            )
        if input_values.dim() != 3 or input_values.shape[-1] != num_mel_bins:
            hint = ""
            if input_values.dim() == 3 and input_values.shape[1] == num_mel_bins:
                hint = (
                    f" It looks like (batch, {num_mel_bins}, num_frames), frequency first (the official MATPAC "
                    "code's layout): transpose it with `.transpose(1, 2)`."
                )
            raise ValueError(
                f"`input_values` must have shape (batch, num_frames, {num_mel_bins}) (log-mel, time first, as "
                f"MatpacFeatureExtractor returns it), got {tuple(input_values.shape)}.{hint} Raw waveforms go through "
                "MatpacFeatureExtractor first."
            )
        batch_size, num_frames, _ = input_values.shape
        if batch_size == 0 or num_frames == 0:
            raise ValueError(
                f"`input_values` is empty (shape {tuple(input_values.shape)}): every clip needs at least one frame "
                f"({self.config.min_num_samples} samples at {self.config.sampling_rate} Hz)."
            )
        if attention_mask is None:
            return torch.full((batch_size,), num_frames, dtype=torch.long, device=input_values.device)
        if attention_mask.shape != (batch_size, num_frames):
            raise ValueError(
                f"`attention_mask` must have shape (batch, num_frames) = {(batch_size, num_frames)} to match "
                f"`input_values`, got {tuple(attention_mask.shape)}. It marks valid log-mel frames, as returned by "
                "MatpacFeatureExtractor."
            )
        frame_lengths = attention_mask.to(torch.long).sum(-1)
        if (frame_lengths == 0).any():
            empty = torch.nonzero(frame_lengths == 0).flatten().tolist()
            raise ValueError(f"`attention_mask` marks no valid frame for batch rows {empty}; every clip needs one.")
        right_padded = torch.arange(num_frames, device=attention_mask.device)[None, :] < frame_lengths[:, None]
        if not torch.equal(attention_mask.to(torch.bool), right_padded):
            rows = torch.nonzero((attention_mask.to(torch.bool) != right_padded).any(-1)).flatten().tolist()
            raise ValueError(
                f"`attention_mask` rows {rows} are not right-padded: MATPAC expects each clip's valid frames first, "
                "then padding. Use MatpacFeatureExtractor(padding_side='right') (the default)."
            )
        return frame_lengths

    # -- chunking -----------------------------------------------------------------------------------------------------
    # Activation memory one encoder call may use in inference (no grad): `forward` runs the chunks in micro-batches
    # of `chunk_batch_size` chunks, by default as many as fit this budget (11 full chunks for ViT-B), so peak memory
    # does not grow with the length of the audio beyond the output itself, and each call's activations are reused
    # from the allocator. The budget is measured by `benchmarks/bench_inference.py` (see `benchmarks/RESULTS.md`).
    chunk_memory_budget_bytes = 64 * 2**20
    # Whether an encoder call holds the attention scores of all its chunks at once (eager attention; the ONNX graph)
    # rather than one chunk's (the no-grad path's per-chunk attention, sdpa's flash kernels).
    attention_scores_of_every_chunk = False
    # Whether the no-grad forward may pack micro-batches of several chunk lengths into one call of the torch encoder
    # (`fast_encode_micro_batches`). False for a subclass whose `_encode_chunks` runs something else.
    packs_chunk_lengths = True

    def default_chunk_batch_size(self, time_patches: int | None = None) -> int:
        """Chunks of `time_patches` columns (default: full chunks) per encoder call: `config.chunk_batch_size` when
        set, else as many as fit `chunk_memory_budget_bytes` in float32: per chunk its qkv, MLP and residual
        activations, plus the attention scores of one layer, per chunk under eager attention (or
        `attention_scores_of_every_chunk`), else once. Short chunks run in larger micro-batches (32 clips of 2 s in
        one call for ViT-B): larger matrix products run closer to the GEMM rate."""
        configured = getattr(self.config, "chunk_batch_size", None)
        if configured:
            return int(configured)
        config = self.config
        seq_len = 1 + config.num_frequency_patches * (time_patches or config.max_time_patches)
        floats = seq_len * (config.intermediate_size + 6 * config.hidden_size)
        scores = config.num_attention_heads * seq_len * seq_len
        if self.attention_scores_of_every_chunk or config._attn_implementation == "eager":
            floats, scores = floats + scores, 0
        return max(1, (self.chunk_memory_budget_bytes // 4 - scores) // floats)

    def _plan_chunks(self, frame_lengths: list[int], chunk_batch_size: int | None) -> list[list[tuple[int, int, int]]]:
        """Cut every clip into consecutive `max_frames` chunks and group the chunks into micro-batches.

        Each chunk is `(clip, position, time_patches)`: its clip, its index within the clip, and its valid time
        columns (ceil(valid frames / patch_size)). A micro-batch holds at most `chunk_batch_size` chunks of the same
        length (longest first, clip order among equals; the chunks of one length split into the fewest micro-batches,
        of near-equal sizes): no chunk is ever padded and no attention mask is needed, so every chunk is encoded
        exactly as alone. (Per-call overhead is small next to one chunk's work: a ViT-B chunk of 191 tokens is already
        a full-size matrix product.)
        """
        patch_size, max_frames = self.config.patch_size, self.config.max_frames
        chunks = []
        for clip, length in enumerate(frame_lengths):
            num_chunks = ceil_div(length, max_frames)
            for position in range(num_chunks):
                # no min(): under torch.compile a dynamic length stays an expression the compiler can bound
                valid_frames = max_frames if position < num_chunks - 1 else length - position * max_frames
                chunks.append((clip, position, ceil_div(valid_frames, patch_size)))
        # The distinct chunk lengths, longest first, found by comparisons only: under torch.compile a set (hashing)
        # or sorted() of dynamic lengths would specialise on each value or break the graph.
        lengths = []
        for chunk in chunks:
            place = len(lengths)
            for index, length in enumerate(lengths):
                if chunk[2] == length:
                    place = None
                    break
                if chunk[2] > length:
                    place = index
                    break
            if place is not None:
                lengths.insert(place, chunk[2])
        micro_batches = []
        for time_patches in lengths:
            same_length = [chunk for chunk in chunks if chunk[2] == time_patches]
            size = chunk_batch_size or self.default_chunk_batch_size(time_patches)
            if size < 1:  # a negative size would plan no micro-batch at all
                raise ValueError(
                    f"chunk_batch_size must be a positive number of chunks per encoder call, got {size}: pass e.g. "
                    "chunk_batch_size=8, or leave it None (and config.chunk_batch_size unset) for the memory budget."
                )
            # The fewest micro-batches of at most `size` chunks, of near-equal sizes (34 chunks of size 32 run as 17 +
            # 17, not 32 + 2): no call is left with a few rows, whose matrix products run far below the GEMM rate.
            size = math.ceil(len(same_length) / math.ceil(len(same_length) / size))
            micro_batches += [same_length[i : i + size] for i in range(0, len(same_length), size)]
        return micro_batches

    def _gather_chunks(
        self, input_values: torch.Tensor, frame_lengths: list[int], chunks: list[tuple[int, int, int]]
    ) -> torch.Tensor:
        """`(micro_batch, time_patches * patch_size, num_mel_bins)` values of `chunks` (all of one length), zero past
        each clip's end (the official code pads the last chunk with zeros in the normalised domain up to a multiple of
        `patch_size`; this also clears NaN/inf in a padded batch's padding)."""
        patch_size, max_frames = self.config.patch_size, self.config.max_frames
        num_frames = input_values.shape[1]
        chunk_frames = max(time_patches for _, _, time_patches in chunks) * patch_size
        device = input_values.device
        clips = torch.tensor([clip for clip, _, _ in chunks], device=device)
        starts = torch.tensor([position * max_frames for _, position, _ in chunks], device=device)
        valid = torch.tensor(
            [frame_lengths[clip] - position * max_frames for clip, position, _ in chunks], device=device
        )
        offsets = torch.arange(chunk_frames, device=device)
        frame_index = (starts[:, None] + offsets[None, :]).clamp(max=num_frames - 1)  # (micro_batch, chunk_frames)
        values = input_values[clips[:, None], frame_index]  # (micro_batch, chunk_frames, num_mel_bins), a copy
        return values.masked_fill_((offsets[None, :] >= valid[:, None])[:, :, None], 0.0)

    def _place_frames(self, output: torch.Tensor, chunk_tokens: torch.Tensor, chunks: list[tuple[int, int, int]]):
        """Write `(micro_batch, 1 + F * T, hidden)` encoder tokens into `output` `(batch, frames, F * hidden)`: drop
        CLS, concatenate the frequency tokens of each time column, place each chunk at its clip's time offset."""
        num_chunks, _, hidden_size = chunk_tokens.shape
        num_frequency_patches = self.config.num_frequency_patches
        patch_tokens = chunk_tokens[:, 1:].reshape(num_chunks, num_frequency_patches, -1, hidden_size)
        max_time_patches = self.config.max_time_patches
        for row, (clip, position, time_patches) in enumerate(chunks):
            start = position * max_time_patches
            target = output[clip, start : start + time_patches].view(time_patches, num_frequency_patches, hidden_size)
            target.copy_(patch_tokens[row, :, :time_patches].transpose(0, 1))  # (T, F, hidden), one copy

    def _place_attentions(
        self, output: torch.Tensor, chunk_attentions: torch.Tensor, chunks: list[tuple[int, int, int]]
    ):
        """Write `(micro_batch, heads, seq, seq)` attention probabilities into `output` `(batch, max_chunks, heads,
        S, S)`, where `S = 1 + F * T_max` lays out the tokens of the batch's longest chunk; rows and columns of tokens
        a shorter chunk lacks (and chunks a shorter clip lacks) are 0."""
        device = chunk_attentions.device
        num_time_patches = (chunk_attentions.shape[-1] - 1) // self.config.num_frequency_patches
        max_time_patches = (output.shape[-1] - 1) // self.config.num_frequency_patches
        frequency = torch.arange(self.config.num_frequency_patches, device=device)[:, None]
        column = torch.arange(num_time_patches, device=device)[None, :]
        patch_token = (1 + frequency * max_time_patches + column).flatten()  # where each token sits in the S layout
        token = torch.cat([torch.zeros(1, dtype=torch.long, device=device), patch_token])
        clips = torch.tensor([clip for clip, _, _ in chunks], device=device)
        positions = torch.tensor([position for _, position, _ in chunks], device=device)
        heads = torch.arange(chunk_attentions.shape[1], device=device)
        output[
            clips[:, None, None, None],
            positions[:, None, None, None],
            heads[None, :, None, None],
            token[None, None, :, None],
            token[None, None, None, :],
        ] = chunk_attentions

    def _encode_chunks(
        self, chunk_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> MatpacEncoderOutput:
        """The encoder core on one micro-batch: `(micro_batch, frames, num_mel_bins)` chunks of one length (a multiple
        of `patch_size`, at most `max_frames`) -> [`MatpacEncoderOutput`] on their `(micro_batch, 1 + F * T, hidden)`
        tokens (patch embedding, CLS, positions, blocks, final LayerNorm). The one step `forward` delegates per
        micro-batch; `matpac_hf.onnx_inference.OnnxMatpacModel` runs it with onnxruntime instead."""
        return self.encoder(
            self.embeddings(chunk_values),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )

    # -- forward ------------------------------------------------------------------------------------------------------
    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        chunk_batch_size: int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MatpacModelOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_mel_bins)`):
            Normalised log-mel spectrograms from [`MatpacFeatureExtractor`]. Any number of frames >= 1.
        attention_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
            1 for valid frames, 0 for padding (as returned by the feature extractor for clips of different lengths).
        output_hidden_states (`bool`, *optional*):
            Return every layer's output in the frame layout of `last_hidden_state` (see [`MatpacModelOutput`]).
        output_attentions (`bool`, *optional*):
            Return every layer's attention probabilities per clip and chunk (see [`MatpacModelOutput`]). Under sdpa /
            flash / flex attention the forward then falls back to eager attention (with a one-time warning).
        chunk_batch_size (`int`, *optional*):
            Chunks per encoder call (default: [`~MatpacModel.default_chunk_batch_size`], 11 full chunks for ViT-B).
            The outputs do not depend on it; peak activation memory grows with it, not with the audio's length.
        return_dict (`bool`, *optional*):
            `False` returns a tuple (transformers' `can_return_tuple`).
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions

        frame_lengths = self._check_inputs(input_values, attention_mask)
        batch_size, num_frames, _ = input_values.shape
        patch_size = self.config.patch_size

        # The chunk plan lives on the host. Without a mask it follows from the shape alone: no device sync, and no
        # data-dependent shape for torch.compile.
        host_lengths = [num_frames] * batch_size if attention_mask is None else frame_lengths.tolist()
        micro_batches = self._plan_chunks(host_lengths, chunk_batch_size)
        clip_time_patches = [ceil_div(length, patch_size) for length in host_lengths]
        num_output_frames = max(clip_time_patches)
        max_chunks = ceil_div(max(host_lengths), self.config.max_frames)
        max_seq_len = 1 + self.config.num_frequency_patches * max(chunks[0][2] for chunks in micro_batches)

        if (
            not (output_hidden_states or output_attentions)
            and self.packs_chunk_lengths
            and fast_path_applies(self.encoder)
        ):  # no gradient: micro-batches of several chunk lengths share encoder calls, same outputs
            encoded = (
                MatpacEncoderOutput(last_hidden_state=tokens)
                for tokens in fast_encode_micro_batches(
                    self, input_values, host_lengths, micro_batches, chunk_batch_size
                )
            )
        else:
            encoded = (
                self._encode_chunks(  # chunks of one length: no padding, no attention mask
                    self._gather_chunks(input_values, host_lengths, chunks), output_hidden_states, output_attentions
                )
                for chunks in micro_batches
            )
        last_hidden_state, hidden_states, attentions = None, None, None
        for chunks, encoder_outputs in zip(micro_batches, encoded):
            layer_outputs = encoder_outputs.hidden_states if output_hidden_states else ()
            if last_hidden_state is None:  # allocated at the first micro-batch, in the dtype the encoder gives
                shape = (batch_size, num_output_frames, self.config.frame_embedding_size)
                last_hidden_state = encoder_outputs.last_hidden_state.new_zeros(shape)
                hidden_states = tuple(h.new_zeros(shape) for h in layer_outputs) if output_hidden_states else None
                if output_attentions:
                    attentions = tuple(
                        a.new_zeros(batch_size, max_chunks, a.shape[1], max_seq_len, max_seq_len)
                        for a in encoder_outputs.attentions
                    )
            self._place_frames(last_hidden_state, encoder_outputs.last_hidden_state, chunks)
            for output, tokens in zip(hidden_states or (), layer_outputs):
                self._place_frames(output, tokens, chunks)
            for output, chunk_attentions in zip(attentions or (), encoder_outputs.attentions or ()):
                self._place_attentions(output, chunk_attentions, chunks)

        clip_time_patches = torch.tensor(clip_time_patches, device=input_values.device)  # (batch,)
        frame_mask = (
            torch.arange(num_output_frames, device=input_values.device)[None, :] < clip_time_patches[:, None]
        ).long()
        pooler_output = last_hidden_state.sum(1) / clip_time_patches[:, None].to(last_hidden_state.dtype)

        return MatpacModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooler_output,
            frame_mask=frame_mask,
            hidden_states=hidden_states,
            attentions=attentions,
        )


# ----------------------------------------------------------------------------------------------------------------------
# MatpacForPreTraining: student, predictor, EMA teachers, classification heads and center (docs/method.md, sections 3-5)
# ----------------------------------------------------------------------------------------------------------------------


def linear_schedule(start: float, end: float, step: int, num_steps: int) -> float:
    """Linear ramp: `start` at step 0, `end` at step `num_steps` and after (the official `get_annealed_rate`)."""
    if num_steps <= 0 or step >= num_steps:
        return float(end)
    return float(start + (end - start) * step / num_steps)


def teacher_temperature_at(config: MatpacConfig, step: int) -> float:
    """Teacher softmax temperature tau_t at optimiser step `step`: linear from `teacher_temperature_start` to
    `teacher_temperature_end` over `teacher_temperature_warmup_steps`, then constant (0.04 -> 0.07 over 9827 steps)."""
    return linear_schedule(
        config.teacher_temperature_start,
        config.teacher_temperature_end,
        step,
        config.teacher_temperature_warmup_steps,
    )


def ema_decays_at(config: MatpacConfig, step: int) -> tuple[float, float]:
    """`(encoder_decay, head_decay)` of the EMA teachers at optimiser step `step`, both annealed linearly over
    `config.total_steps` (0.99995 -> 0.99999 for the teacher encoder, 0.998 -> 1.0 for the teacher head)."""
    encoder_decay = linear_schedule(config.ema_decay_start, config.ema_decay_end, step, config.total_steps)
    head_decay = linear_schedule(config.head_ema_decay_start, config.head_ema_decay_end, step, config.total_steps)
    return encoder_decay, head_decay


def mcl_temperature_at(config: MatpacConfig, step: int) -> float:
    """MATPAC++ soft winner-takes-all temperature `T = mcl_temperature_start * mcl_temperature_decay**step`. The loss
    switches to the hard minimum once `T <= mcl_temperature_min` (see [`MatpacForPreTraining`])."""
    return float(config.mcl_temperature_start * config.mcl_temperature_decay**step)


def _check_step(step) -> int:
    """`step` as a Python int (ints, NumPy integers and integer 0-d tensors are accepted); refuses anything else."""
    try:
        value = None if isinstance(step, bool) else step.__index__()
    except (AttributeError, TypeError, RuntimeError):
        value = None
    if value is None or value < 0:
        raise ValueError(
            f"`step` must be a non-negative integer (the number of optimiser updates done so far), got {step!r}."
        )
    return value


# ----------------------------------------------------------------------------------------------------------------------
# Masking (docs/method.md, section 4, step 2)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class PatchMasking:
    """Which patches the student sees and which it must predict: the output of [`random_masking`].

    `B` = batch, `L` = patches per clip, `V` / `M` = the most visible / masked patches of a clip in the batch. Without
    padding every clip has `V = int(L * (1 - mask_ratio))` visible and `M = L - V` masked patches (57 and 133 of 190).

    Attributes:
        ids_visible (`(B, V)`): the visible patches in permutation order (the student's input).
        ids_masked (`(B, M)`): the masked patches in permutation order (the teacher's input, the prediction targets).
        ids_restore (`(B, L)`): for every patch in patch order, its index in `cat([V student tokens, L - V mask
            tokens])`: un-shuffles the predictor's input, as ViTMAE's `ids_restore`.
        mask (`(B, L)` bool): True for the masked patches (targets), False for visible and padded ones.
        visible_token_mask (`(B, V)` bool or None): True where `ids_visible` holds one of the clip's visible patches
            (the rest of a clip with fewer than `V` is filler); None when no clip is padded.
        masked_token_mask (`(B, M)` bool or None): True where `ids_masked` holds one of the clip's masked patches.
    """

    ids_visible: torch.LongTensor
    ids_masked: torch.LongTensor
    ids_restore: torch.LongTensor
    mask: torch.BoolTensor
    visible_token_mask: torch.BoolTensor | None = None
    masked_token_mask: torch.BoolTensor | None = None


def random_masking(noise: torch.Tensor, mask_ratio: float, valid_patches: torch.Tensor | None = None) -> PatchMasking:
    """Per-clip unstructured random masking, as ViTMAE's `random_masking`: the patches sorted by `noise` (uniform
    noise gives a uniformly random permutation); of a clip's `n` valid patches the `int(n * (1 - mask_ratio))` first
    are visible (57 of 190), the other `n - int(n * (1 - mask_ratio))` are masked (133).

    Args:
        noise (`(B, L)`): one score per patch; the lowest scores are visible.
        mask_ratio (`float`): fraction of the patches the student does not see (0.7).
        valid_patches (`(B, L)` bool, *optional*): patches that hold audio (short clips). Padded patches are given the
            score +inf, so they sort after every valid patch and are neither visible nor masked; each clip's counts
            follow its own number of valid patches (`V` / `M` are then the largest counts of the batch, see
            [`PatchMasking`]). None: every patch is valid.
    """
    batch_size, num_patches = noise.shape
    if valid_patches is not None:
        noise = noise.masked_fill(~valid_patches, torch.inf)
    ids_shuffle = torch.argsort(noise, dim=1)  # (B, L)
    rank = torch.argsort(ids_shuffle, dim=1)  # (B, L): position of every patch in the permutation
    if valid_patches is None:
        num_visible = int(num_patches * (1 - mask_ratio))
        return PatchMasking(
            ids_visible=ids_shuffle[:, :num_visible],
            ids_masked=ids_shuffle[:, num_visible:],
            ids_restore=rank,
            mask=rank >= num_visible,
        )

    # Per clip: n valid patches, int(n * (1 - mask_ratio)) visible (the float64 product is Python's), the rest masked.
    num_valid = valid_patches.sum(1)  # (B,)
    num_visible = torch.floor(num_valid.double() * (1 - mask_ratio)).long()  # (B,)
    num_masked = num_valid - num_visible
    max_visible, max_masked = int(num_visible.max()), int(num_masked.max())
    arange = torch.arange(max(max_visible, max_masked), device=noise.device)
    # The masked patches of clip b sit at permutation positions [num_visible[b], num_valid[b]).
    masked_positions = (num_visible[:, None] + arange[None, :max_masked]).clamp(max=num_patches - 1)  # (B, M)
    # Visible patches -> their student token; masked (and padded) ones -> one of the L - V mask tokens (all equal).
    mask_token_index = max_visible + (rank - num_visible[:, None]).clamp(0, num_patches - max_visible - 1)
    return PatchMasking(
        ids_visible=ids_shuffle[:, :max_visible],
        ids_masked=torch.gather(ids_shuffle, 1, masked_positions),
        ids_restore=torch.where(rank < num_visible[:, None], rank, mask_token_index),
        mask=(rank >= num_visible[:, None]) & valid_patches,
        visible_token_mask=arange[None, :max_visible] < num_visible[:, None],
        masked_token_mask=arange[None, :max_masked] < num_masked[:, None],
    )


# ----------------------------------------------------------------------------------------------------------------------
# Prediction loss and MATPAC++ winner-takes-all (docs/method.md, section 4, steps 6 and 11)
# ----------------------------------------------------------------------------------------------------------------------


def cosine_prediction_losses(normalized_predictions: torch.Tensor, normalized_targets: torch.Tensor) -> torch.Tensor:
    """Per-token prediction loss `2 - 2 cos(prediction, target)` of L2-normalised vectors: `(..., hidden)` ->
    `(...)` (broadcasting, e.g. MATPAC++ candidates `(B, M, K, hidden)` against targets `(B, M, 1, hidden)`)."""
    return 2 - 2 * (normalized_predictions * normalized_targets).sum(-1)


def mcl_winner_takes_all(
    candidate_losses: torch.Tensor, temperature: float, min_temperature: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MATPAC++ winner-takes-all over the K candidates of every token.

    `candidate_losses` `(B, M, K)` -> `(losses (B, M), best_candidate (B, M), temperature used)`. Soft while
    `temperature > min_temperature`: `sum_k w_k l_k` with `w = softmax(-l / temperature)` (no gradient through the
    weights); after that the hard minimum (and the reported temperature is `min_temperature`). `best_candidate` (the
    lowest loss) is the candidate that feeds the classification head."""
    best_candidate = candidate_losses.argmin(dim=-1)
    if temperature > min_temperature:
        weights = torch.softmax(-candidate_losses.detach() / temperature, dim=-1)
        return (weights * candidate_losses).sum(-1), best_candidate, temperature
    return candidate_losses.min(dim=-1).values, best_candidate, min_temperature


def select_candidate(candidates: torch.Tensor, best_candidate: torch.Tensor) -> torch.Tensor:
    """`(B, M, K, D)` candidates, `(B, M)` indices -> `(B, M, D)`: each token's chosen candidate."""
    index = best_candidate[..., None, None].expand(-1, -1, 1, candidates.shape[-1])
    return torch.gather(candidates, 2, index).squeeze(2)


def _tokens(values: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """`(B, M, ...)` per-token values -> `(tokens, ...)`: all of them, or those where `token_mask` `(B, M)` is True."""
    return values.reshape(-1, *values.shape[2:]) if token_mask is None else values[token_mask]


def _with_cls(token_mask: torch.Tensor | None) -> torch.Tensor | None:
    """`(B, S)` bool mask of a token sequence -> `(B, 1 + S)` with the CLS token (always attended) first."""
    if token_mask is None:
        return None
    return torch.cat([token_mask.new_ones(token_mask.shape[0], 1), token_mask], dim=1)


class MatpacPredictor(nn.Module):
    """The M2D predictor ("decoder"): student tokens of the visible patches -> predictions for the masked patches.

    `decoder_embed` (hidden -> decoder width), a learned `mask_token` at every masked position, a fixed 2-D sin-cos
    table of the decoder width (with a CLS slot; non-persistent, filled in `_init_weights`), the
    `decoder_num_hidden_layers` pre-norm blocks, `decoder_norm`, then `decoder_pred` (decoder width -> hidden), or with
    `config.use_mcl` the MATPAC++ `mcl_heads`: `mcl_num_heads` parallel linear heads, each giving a candidate.
    """

    def __init__(self, config: MatpacConfig):
        super().__init__()
        self.config = config
        width = config.decoder_hidden_size
        self.decoder_embed = nn.Linear(config.hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("position_embeddings", torch.zeros(1 + config.num_patches, width), persistent=False)
        self.layers = nn.ModuleList(
            [
                MatpacLayer(config, width, config.decoder_num_attention_heads, config.decoder_intermediate_size)
                for _ in range(config.decoder_num_hidden_layers)
            ]
        )
        self.decoder_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        if config.use_mcl:
            self.mcl_heads = nn.ModuleList([nn.Linear(width, config.hidden_size) for _ in range(config.mcl_num_heads)])
        else:
            self.decoder_pred = nn.Linear(width, config.hidden_size)

    def forward(
        self,
        student_hidden_states: torch.Tensor,
        ids_restore: torch.Tensor,
        ids_masked: torch.Tensor,
        valid_patches: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            student_hidden_states: `(batch, 1 + num_visible, hidden)` student encoder output, CLS first, visible
                tokens in the order of the random permutation.
            ids_restore: `(batch, num_patches)` index of each patch in `cat([visible tokens, mask tokens])`
                (un-shuffles it; see [`PatchMasking`]).
            ids_masked: `(batch, num_masked)` indices of the masked patches, in permutation order.
            valid_patches: `(batch, num_patches)` bool, *optional*: padded patches (False) are left out of attention.

        Returns:
            `(batch, num_masked, hidden)` predictions, or `(batch, num_masked, mcl_num_heads, hidden)` candidates.
        """
        hidden_states = self.decoder_embed(student_hidden_states)  # (batch, 1 + num_visible, width)
        batch_size, num_patches = ids_restore.shape
        width = hidden_states.shape[-1]
        num_masked = num_patches - (hidden_states.shape[1] - 1)

        mask_tokens = self.mask_token.to(hidden_states.dtype).expand(batch_size, num_masked, -1)
        shuffled = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)  # (batch, num_patches, width), permuted
        patch_states = torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, width))  # original order

        num_frequency_patches = self.config.num_frequency_patches
        cls_position, patch_positions = crop_position_table(
            self.position_embeddings, num_frequency_patches, num_patches // num_frequency_patches
        )
        hidden_states = torch.cat(
            [
                hidden_states[:, :1] + cls_position.to(hidden_states.dtype),
                patch_states + patch_positions.to(hidden_states.dtype),
            ],
            dim=1,
        )  # (batch, 1 + num_patches, width)
        attention_mask = None
        if valid_patches is not None:
            attention_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=_with_cls(valid_patches)
            )
        for layer in self.layers:
            hidden_states, _ = layer(hidden_states, attention_mask)
        hidden_states = self.decoder_norm(hidden_states)

        masked_states = torch.gather(hidden_states[:, 1:], 1, ids_masked[..., None].expand(-1, -1, width))
        if self.config.use_mcl:
            return torch.stack([head(masked_states) for head in self.mcl_heads], dim=2)  # (batch, M, K, hidden)
        return self.decoder_pred(masked_states)  # (batch, num_masked, hidden)


class MatpacClassificationHead(nn.Module):
    """DINO-style classification head (student and teacher): MLP hidden -> 2048 -> GELU -> 2048 -> GELU -> 256,
    L2-normalise, then a weight-normalised linear 256 -> 2048 prototypes without bias.

    The prototype layer `last_layer` uses `torch.nn.utils.parametrizations.weight_norm`: its weights are stored as
    `last_layer.parametrizations.weight.original0` (the gain g, `(num_prototypes, 1)`) and `.original1` (the direction
    v), the names transformers itself maps the official `last_layer.weight_g` / `weight_v` to. The gain starts at 1
    and is trained unless `config.head_freeze_weight_norm_gain`.
    """

    def __init__(self, config: MatpacConfig):
        super().__init__()
        sizes = [config.hidden_size] + [config.head_hidden_size] * (config.head_num_layers - 1)
        sizes.append(config.head_bottleneck_size)
        layers = []
        for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if index > 0:
                layers.append(nn.GELU())
            layers.append(nn.Linear(size_in, size_out))
        self.mlp = nn.Sequential(*layers)  # linears at indices 0, 2, 4 as the official `mlp.{0,2,4}`
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(config.head_bottleneck_size, config.head_num_prototypes, bias=False)
        )

    @property
    def weight_norm_gain(self) -> nn.Parameter:
        """`(num_prototypes, 1)` gain g of the prototype layer."""
        return self.last_layer.parametrizations.weight.original0

    @property
    def weight_norm_direction(self) -> nn.Parameter:
        """`(num_prototypes, bottleneck)` direction v of the prototype layer."""
        return self.last_layer.parametrizations.weight.original1

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(..., hidden)` -> `(..., num_prototypes)` logits."""
        bottleneck = self.mlp(hidden_states)
        eps = 1e-6 if bottleneck.dtype == torch.float16 else 1e-12
        bottleneck = nn.functional.normalize(bottleneck, dim=-1, p=2, eps=eps)
        return self.last_layer(bottleneck)


class MatpacClassificationLoss(nn.Module):
    """The classification loss and its center (docs/method.md, section 4, steps 7 and 9), as DINO's `DINOLoss` (and the
    official `cls_head_loss`): the module owns the `center` buffer `(1, 1, num_prototypes)` (saved as
    `classification_loss.center`), the update rule and its distributed average.

    Per masked token: teacher probabilities `softmax((P - center) / tau_t)` (no gradient), student log-probabilities
    `log_softmax(P_hat / tau_s)`, loss `-sum_k teacher_prob_k * student_logprob_k`. In training mode the forward then
    updates the center (see [`~MatpacClassificationLoss.update_center`]), after the probabilities are computed.
    """

    def __init__(self, config: MatpacConfig):
        super().__init__()
        self.config = config
        self.register_buffer("center", torch.zeros(1, 1, config.head_num_prototypes))

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        teacher_temperature: float,
        token_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        """
        Args:
            student_logits, teacher_logits: `(B, M, num_prototypes)` head outputs for the masked tokens (float32).
            teacher_temperature: tau_t at this step.
            token_mask: `(B, M)` bool, *optional*: the tokens that count (padded clips); None: all of them.

        Returns:
            `(losses (B, M), teacher_probs (B, M, num_prototypes), share)`: `share` is the factor of
            [`~MatpacClassificationLoss.update_center`] (1.0 in eval mode, where the center is not updated).
        """
        with torch.no_grad():
            teacher_probs = torch.softmax((teacher_logits - self.center) / teacher_temperature, dim=-1)
        student_log_probs = torch.log_softmax(student_logits / self.config.student_temperature, dim=-1)
        losses = -(teacher_probs * student_log_probs).sum(-1)  # (B, M)
        share = 1.0
        if self.training:
            share = self.update_center(
                teacher_probs if self.config.center_update == "probabilities" else teacher_logits, token_mask
            )
        return losses, teacher_probs, share

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`center <- m * center + (1 - m) * mean(teacher_output)` over the (valid) tokens of all processes.

        One `all_reduce` of `num_prototypes + 1` floats per step (the sum and the token count together, the count
        made on the device: no host sync) when a process group is initialised. Every process must call it the same
        number of times, as under DDP.

        Returns the factor `world_size * local_tokens / global_tokens` that turns this process's token mean into its
        share of the mean over all processes' tokens (1.0 when the processes have equal numbers of tokens, or without
        a process group): DDP averages the gradients of the processes, so scaling each local mean by it makes the
        gradient that of the global token mean (docs/method.md, section 4, step 8), as fairseq's sum / total sample size does."""
        tokens = _tokens(teacher_output.float(), token_mask)  # (tokens, num_prototypes)
        num_local_tokens = tokens.shape[0]
        total = torch.cat([tokens.sum(0), tokens.new_full((1,), num_local_tokens)])  # (num_prototypes + 1,)
        world_size = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
            world_size = torch.distributed.get_world_size()
        num_global_tokens = total[-1]
        batch_mean = total[:-1] / num_global_tokens
        momentum = self.config.center_momentum
        self.center.copy_(self.center * momentum + batch_mean.view_as(self.center) * (1 - momentum))
        return world_size * num_local_tokens / num_global_tokens  # a 0-d tensor: no host sync on accelerators


class MatpacForPreTraining(MatpacPreTrainedModel):
    """MATPAC / MATPAC++ pretraining: masked latent prediction (M2D) plus DINO-style classification.

    Modules: `matpac` (the student [`MatpacModel`]: patch embedding, CLS, position table, encoder; so
    `MatpacModel.from_pretrained(folder)` on a saved pretraining folder gives the student), `predictor`,
    `student_head`, and the EMA teachers `teacher_encoder` (blocks + final norm; it shares the student's patch
    embedding, CLS token and positions, used under no-grad) and `teacher_head`, plus `classification_loss`
    ([`MatpacClassificationLoss`], which owns the `center` buffer `(1, 1, num_prototypes)`, also reachable as
    `model.center`). Teacher weights and the center are saved and restored with `save_pretrained` /
    `from_pretrained`; teacher parameters have `requires_grad=False` (also after loading), so
    `[p for p in model.parameters() if p.requires_grad]` is exactly what the optimiser must train.

    One training step (the official order; see [`~MatpacForPreTraining.update_teachers`] for the loop):

    1. `forward(input_values, step=step)` (plus `attention_mask=` for crops of short, padded clips): masking,
       student, predictor, teacher (no-grad), both losses. In training
       mode (`model.train()`) the forward also updates `center` with this batch's teacher output, averaged over all
       processes with `torch.distributed.all_reduce` when a process group is initialised (every process must run
       the forward the same number of times, as under DDP). In eval mode the center is left untouched. The losses
       are means over the masked tokens of all processes (docs/method.md, section 4, step 8): each process's mean is scaled by its
       share of the tokens, which is exactly 1 when the processes have equal numbers of (valid) masked tokens.
    2. backward of `outputs.loss`, then `update_teachers(step)` (EMA), then the optimiser step.

    Teacher initialisation (`config.teacher_init`): `"independent"` (default, the official code) gives the teacher
    encoder its own random draw (same distribution as the student), the teacher head's MLP a trunc-normal(0.02) draw
    with zero biases, and the teacher head's prototype layer the student's initial one (gain 1, the same direction,
    which keeps `nn.Linear`'s default init: the official xavier re-initialisation does not reach a weight-normed
    layer). `"copy_student"` copies the student encoder blocks + norm and the student head into the teachers
    (DINO, data2vec). Either way the init never overwrites teacher weights loaded by `from_pretrained`. Loading a
    folder that holds an encoder but no teachers (saved from [`MatpacModel`], a converted release, an authors' Hub
    repository) always starts the teachers as copies of the loaded student encoder and student head (see
    [`~MatpacForPreTraining.from_pretrained`]): continued pretraining from released weights.
    """

    def __init__(self, config: MatpacConfig):
        super().__init__(config)
        self.config = config
        self.matpac = MatpacModel(config)
        self.predictor = MatpacPredictor(config)
        self.student_head = MatpacClassificationHead(config)
        self.teacher_encoder = MatpacEncoder(config)
        self.teacher_head = MatpacClassificationHead(config)
        # Registered last: its `_init_weights` branch (center, then the teachers) must run after the students'.
        self.classification_loss = MatpacClassificationLoss(config)
        self.post_init()

    @property
    def center(self) -> torch.Tensor:
        """The center `(1, 1, num_prototypes)`, owned by `classification_loss` (the same tensor)."""
        return self.classification_loss.center

    def get_input_embeddings(self) -> MatpacPatchEmbeddings:
        return self.matpac.embeddings.patch_embeddings

    # -- frozen parameters --------------------------------------------------------------------------------------------
    def _frozen_parameters(self) -> list[nn.Module | nn.Parameter]:
        """Teachers never train (EMA only); the prototype gain is frozen with `head_freeze_weight_norm_gain`. Applied
        by [`MatpacPreTrainedModel.tie_weights`] after `__init__` and after `from_pretrained`."""
        frozen = [self.teacher_encoder, self.teacher_head]
        if self.config.head_freeze_weight_norm_gain:
            frozen.append(self.student_head.weight_norm_gain)
        return frozen

    # -- initialisation -----------------------------------------------------------------------------------------------
    def _init_weights(self, module):
        """Base initialisation plus the predictor, the heads, the center and the teachers (see the class docstring).

        Every write goes through `transformers.initialization`, which skips tensors `from_pretrained` has loaded. The
        teachers are initialised in the branch of `classification_loss`, the last child visited (children in
        registration order), so the teacher init sees the student's final weights. (That module owns the `center`
        buffer, so transformers skips it only when `from_pretrained` loaded the center, i.e. a full pretraining
        folder whose teachers were loaded too; the model itself owns no tensor, and transformers skips such modules
        for custom-code models.)"""
        std = self.config.initializer_range
        if isinstance(module, MatpacPredictor):
            init.normal_(module.mask_token, std=std)
            init.copy_(
                module.position_embeddings,
                build_2d_sincos_position_table(
                    self.config.num_frequency_patches, self.config.max_time_patches, self.config.decoder_hidden_size
                ),
            )
        elif isinstance(module, nn.utils.parametrize.ParametrizationList):
            # The weight-normalised prototype layer of a classification head (the only parametrised module; its MLP
            # linears are xavier / zero-bias in the base branch). It keeps nn.Linear's default init for the direction v
            # (kaiming-uniform, a=sqrt(5)) and gain g = 1, as officially. The branch is on the module that owns g and
            # v: transformers skips modules that own no tensor for custom-code models.
            init.kaiming_uniform_(module.original1, a=math.sqrt(5))
            init.ones_(module.original0)
        elif isinstance(module, nn.Linear) and nn.utils.parametrize.is_parametrized(module):
            pass  # the prototype layer itself: initialised through its parametrisation above
        elif isinstance(module, MatpacClassificationLoss):
            init.zeros_(module.center)
            self._init_teachers()
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """[`MatpacPreTrainedModel.from_pretrained`]; a folder that has an encoder but no teachers (a converted
        release, `run_pretraining.py`'s `encoder/`, an authors' Hub repository) gives teachers that start equal to the
        student: the teacher encoder a copy of the student encoder, the teacher head a copy of the student head,
        whatever `config.teacher_init` says (that setting is for a model built from scratch), and one log line says
        so. Continued pretraining then starts as the official run continues: teacher and student agree, and the EMA
        moves the teacher from there. A folder with only part of a teacher is refused."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        missing = set(loading_info.get("missing_keys", ()))
        copied = []
        for name, teacher in (("teacher_encoder", model.teacher_encoder), ("teacher_head", model.teacher_head)):
            names = [f"{name}.{key}" for key in teacher.state_dict()]
            absent = [key for key in names if key in missing]
            if not absent:
                continue
            if len(absent) < len(names):
                raise CheckpointError(
                    f"{pretrained_model_name_or_path} holds only part of the {name} ({len(names) - len(absent)} of "
                    f"{len(names)} tensors; missing e.g. {describe_keys(absent, limit=4)})."
                )
            copied.append(name)
        model.copy_student_to_teachers(copied)
        if copied:
            logger.warning(
                "%s has no %s: %s initialised as a copy of the loaded student (continued pretraining; "
                "teacher_init=%r applies to models built from scratch).",
                pretrained_model_name_or_path,
                " / ".join(copied),
                " and ".join(copied),
                model.config.teacher_init,
            )
        return (model, loading_info) if output_loading_info else model

    def copy_student_to_teachers(self, parts=("teacher_encoder", "teacher_head")):
        """Sets the teacher encoder to the student encoder (blocks and final norm) and the teacher head to the student
        head, for the `parts` named: the start of continued pretraining from a student."""
        pairs = {
            "teacher_encoder": (self.teacher_encoder, self.matpac.encoder),
            "teacher_head": (self.teacher_head, self.student_head),
        }
        with torch.no_grad():
            for part in parts:
                teacher, student = pairs[part]
                students = dict(student.named_parameters())  # matched by name, as the EMA and `_init_teachers` do
                for name, teacher_parameter in teacher.named_parameters():
                    teacher_parameter.copy_(students[name])

    def _init_teachers(self):
        student_encoder = dict(self.matpac.encoder.named_parameters())
        student_head = dict(self.student_head.named_parameters())
        if self.config.teacher_init == "copy_student":
            for name, teacher_parameter in self.teacher_encoder.named_parameters():
                init.copy_(teacher_parameter, student_encoder[name])
            for name, teacher_parameter in self.teacher_head.named_parameters():
                init.copy_(teacher_parameter, student_head[name])
            return
        # "independent": the teacher encoder keeps its own draw (base init). Teacher head: trunc-normal MLP weights
        # (official `Cls_Head` init, std = initializer_range = 0.02), zero biases, the student's initial prototypes.
        for layer in self.teacher_head.mlp:
            if isinstance(layer, nn.Linear):
                init.trunc_normal_(layer.weight, std=self.config.initializer_range)
                init.zeros_(layer.bias)
        init.copy_(self.teacher_head.weight_norm_gain, self.student_head.weight_norm_gain)
        init.copy_(self.teacher_head.weight_norm_direction, self.student_head.weight_norm_direction)

    # -- schedules (pure functions of the step) -----------------------------------------------------------------------
    def teacher_temperature(self, step: int) -> float:
        """Teacher softmax temperature at `step` (see [`teacher_temperature_at`])."""
        return teacher_temperature_at(self.config, _check_step(step))

    def ema_decays(self, step: int) -> tuple[float, float]:
        """`(encoder_decay, head_decay)` at `step` (see [`ema_decays_at`])."""
        return ema_decays_at(self.config, _check_step(step))

    def mcl_temperature(self, step: int) -> float:
        """MATPAC++ soft winner-takes-all temperature at `step` (see [`mcl_temperature_at`])."""
        return mcl_temperature_at(self.config, _check_step(step))

    # -- EMA teachers -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_teachers(self, step: int) -> tuple[float, float]:
        """EMA update of both teachers: `teacher <- d * teacher + (1 - d) * student`, for the teacher encoder (from
        the student encoder's blocks + final norm, decay `ema_decays(step)[0]`) and the teacher head (from the
        student head, decay `ema_decays(step)[1]`). A no-op at `step == 0`, and for a decay >= 1.

        When to call it: once per optimiser update, AFTER the forward (and backward) of update `step` and BEFORE
        `optimizer.step()`, with the same `step` that was passed to `forward` (`step` = number of optimiser updates
        completed so far: 0, 1, 2, ...). Call it on the unwrapped model (`accelerator.unwrap_model(model)`); with
        gradient accumulation, only on the micro-batch that steps the optimiser (`accelerator.sync_gradients`):

        ```python
        for step, batch in enumerate(train_dataloader):  # step = optimiser updates done so far
            outputs = model(batch["input_values"], step=step)
            accelerator.backward(outputs.loss)
            accelerator.unwrap_model(model).update_teachers(step)
            accelerator.clip_grad_norm_(model.parameters(), 3.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        ```

        This is the official order: the fairseq model runs its EMA step at the end of its forward with
        `num_updates` = updates completed so far (no-op at 0), i.e. with the student weights that forward used, and
        fairseq's trainer calls `set_num_updates(num_updates + 1)` only after `optimizer.step()`. (The teachers take
        no part in the backward, so calling it between forward and backward is equivalent.) Calling it after
        `optimizer.step()` instead would pull the teachers towards the already-updated student.

        Returns the `(encoder_decay, head_decay)` that were applied (`(1.0, 1.0)` at step 0).
        """
        step = _check_step(step)
        (teacher_encoder, student_encoder), (teacher_head, student_head) = self._ema_parameters()
        if step == 0:
            return 1.0, 1.0
        encoder_decay, head_decay = ema_decays_at(self.config, step)
        for teachers, students, decay in (
            (teacher_encoder, student_encoder, encoder_decay),
            (teacher_head, student_head, head_decay),
        ):
            if decay < 1.0:  # one multi-tensor `lerp_` per teacher: teacher += (1 - d) * (student - teacher)
                torch._foreach_lerp_(teachers, students, 1.0 - decay)
        return encoder_decay, head_decay

    def _ema_parameters(self) -> tuple[tuple[list[nn.Parameter], list[nn.Parameter]], ...]:
        """`((teacher encoder, student encoder), (teacher head, student head))` flat parameter lists, matched by name,
        built at every call (so `.to()` / `.half()` and replaced parameters are always seen). Refuses low-precision
        teachers."""
        low_precision = sorted(
            {str(p.dtype) for p in (*self.teacher_encoder.parameters(), *self.teacher_head.parameters())}
            - {"torch.float32", "torch.float64"}
        )
        if low_precision:
            raise ValueError(
                f"The teachers are in {', '.join(low_precision)}: an EMA step with decay ~0.99995 moves a weight "
                "by less than half a unit in the last place, so the teachers would silently stop learning. Keep "
                "the model in float32 and train under autocast (accelerate's --mixed_precision bf16/fp16) "
                "instead of casting it."
            )
        lists = []
        for teacher, student in ((self.teacher_encoder, self.matpac.encoder), (self.teacher_head, self.student_head)):
            students = dict(student.named_parameters())
            pairs = [(parameter, students[name]) for name, parameter in teacher.named_parameters()]
            if any(t.dtype != s.dtype or t.device != s.device for t, s in pairs):
                raise ValueError(
                    "The students and the EMA teachers must share dtype and device (float32; train under "
                    "autocast rather than casting a part of the model)."
                )
            lists.append(([t for t, _ in pairs], [s for _, s in pairs]))
        return tuple(lists)

    # -- masking ------------------------------------------------------------------------------------------------------
    def _check_pretraining_inputs(self, input_values) -> int:
        """Validates `(batch, num_frames, num_mel_bins)` and returns the number of time patches."""
        config = self.config
        expected = f"(batch, {config.max_frames}, {config.num_mel_bins})"
        if not isinstance(input_values, torch.Tensor) or input_values.dim() != 3:
            shape = tuple(input_values.shape) if isinstance(input_values, torch.Tensor) else type(input_values)
            raise ValueError(
                f"`input_values` must be a tensor of normalised log-mel spectrograms of shape {expected}, got "
                f"{shape}. Use MatpacFeatureExtractor(..., return_tensors='pt') on {config.max_frames}-frame crops."
            )
        batch_size, num_frames, num_mel_bins = input_values.shape
        if num_mel_bins != config.num_mel_bins:
            raise ValueError(
                f"`input_values` must have shape {expected} (log-mel, time first), got "
                f"{tuple(input_values.shape)}. A spectrogram laid out (batch, mel, frames) needs `.transpose(1, 2)`."
            )
        samples = num_samples_for_frames(config.max_frames, config.n_fft, config.hop_length)
        if num_frames > config.max_frames or num_frames % config.patch_size != 0 or batch_size == 0:
            raise ValueError(
                f"Pretraining needs crops of exactly max_frames={config.max_frames} frames ({samples} samples at "
                f"{config.sampling_rate} Hz), or of a shorter multiple of patch_size={config.patch_size} frames; "
                f"got `input_values` of shape {tuple(input_values.shape)}. Crop or pad the log-mel to "
                f"{config.max_frames} frames."
            )
        num_patches = config.num_frequency_patches * (num_frames // config.patch_size)
        num_visible = int(num_patches * (1 - config.mask_ratio))
        if num_visible < 1 or num_visible >= num_patches:
            raise ValueError(
                f"{num_frames} frames give {num_patches} patches, of which mask_ratio={config.mask_ratio} leaves "
                f"{num_visible} visible; pretraining needs at least one visible and one masked patch. Use longer "
                f"crops (up to {config.max_frames} frames)."
            )
        return num_frames // config.patch_size

    @staticmethod
    def _masking_noise(
        batch_size: int,
        num_patches: int,
        device: torch.device,
        generator: torch.Generator | None,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """`(batch, num_patches)` masking scores: uniform noise (its argsort is a uniformly random permutation, as in
        MAE / M2D), or the given `noise` once checked."""
        if noise is None:
            generator_device = generator.device if generator is not None else device
            noise = torch.rand((batch_size, num_patches), generator=generator, device=generator_device)
        elif not isinstance(noise, torch.Tensor) or noise.shape != (batch_size, num_patches):
            shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise)
            raise ValueError(
                f"`noise` must be a tensor of shape (batch, num_patches) = {(batch_size, num_patches)}: one score per "
                f"patch, the lowest scores are the visible patches. Got {shape}."
            )
        # Non-blocking: a blocking host -> accelerator copy synchronises the host with the device inside the step.
        return noise.to(device, non_blocking=True)

    def _drop_padding(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Short clips: keep the time columns that hold audio.

        A 16-frame time column is valid when it holds at least one valid frame of `attention_mask` (the rule of
        [`MatpacModel`]'s `frame_mask`, so pretraining sees the patches the encoder gets downstream); the padded frames
        of a partly valid column are set to 0 (the official padding value), so the padding's content never matters.
        Columns after the batch's longest clip are cut (a shorter crop, positions cut per frequency row).

        Returns `(input_values, noise, valid_patches)` cut to the kept columns; `valid_patches` `(batch, L)` bool is
        None when every clip fills them all (then the numbers are exactly those of the unpadded call on the cut crop).
        """
        config = self.config
        frame_lengths = self.matpac._check_inputs(input_values, attention_mask)  # (batch,), mask validated
        batch_size, num_frames, _ = input_values.shape
        patch_size, num_frequency_patches = config.patch_size, config.num_frequency_patches
        num_columns = torch.div(frame_lengths + patch_size - 1, patch_size, rounding_mode="floor")  # (batch,)
        kept_columns = int(num_columns.max())
        fewest_patches = num_frequency_patches * int(num_columns.min())
        fewest_visible = int(fewest_patches * (1 - config.mask_ratio))
        if fewest_visible < 1 or fewest_visible >= fewest_patches:
            short = torch.nonzero(num_columns == num_columns.min()).flatten().tolist()
            columns_needed = [  # fewest columns with a visible patch
                c
                for c in range(1, num_frames // patch_size + 1)
                if int(num_frequency_patches * c * (1 - config.mask_ratio))
            ]
            shortest = f"{(columns_needed[0] - 1) * patch_size + 1} frames" if columns_needed else "more frames"
            raise ValueError(
                f"Clips {short} of the batch have {fewest_patches} valid patches (attention_mask), of which "
                f"mask_ratio={config.mask_ratio} leaves {fewest_visible} visible; pretraining needs at least one "
                f"visible and one masked patch. Keep only clips of at least {shortest}, or lower mask_ratio."
            )
        valid_frames = torch.arange(num_frames, device=input_values.device)[None, :] < frame_lengths[:, None]
        input_values = input_values.masked_fill(~valid_frames[:, :, None], 0.0)[:, : kept_columns * patch_size]
        noise = noise.reshape(batch_size, num_frequency_patches, -1)[:, :, :kept_columns].reshape(batch_size, -1)
        if bool((num_columns == kept_columns).all()):
            return input_values, noise, None
        valid_columns = torch.arange(kept_columns, device=input_values.device)[None, :] < num_columns[:, None]
        valid_patches = valid_columns[:, None, :].expand(-1, num_frequency_patches, -1).reshape(batch_size, -1)
        return input_values, noise, valid_patches

    def _to_input_grid(self, patch_values: torch.Tensor, num_time_patches: int, fill) -> torch.Tensor:
        """`(batch, F * kept_columns)` per-patch values -> `(batch, F * num_time_patches)` of the input's grid, the cut
        columns set to `fill`."""
        batch_size = patch_values.shape[0]
        grid = patch_values.reshape(batch_size, self.config.num_frequency_patches, -1)
        if grid.shape[-1] == num_time_patches:
            return patch_values
        full = grid.new_full((batch_size, self.config.num_frequency_patches, num_time_patches), fill)
        full[:, :, : grid.shape[-1]] = grid
        return full.reshape(batch_size, -1)

    # -- forward ------------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        step: int = 0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        return_dict: bool | None = None,
        teacher_input_values: torch.Tensor | None = None,
    ) -> MatpacForPreTrainingOutput | tuple:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, max_frames, num_mel_bins)`):
            Normalised log-mel crops of `max_frames` (608) frames, i.e. 97 520 samples. Shorter crops whose frame count
            is a multiple of `patch_size` also work (the position tables are cut per frequency row).
        attention_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
            1 for valid frames, 0 for padding (right-padded, as [`MatpacFeatureExtractor`] returns it), for crops of
            clips shorter than the crop. A 16-frame time column is valid when it holds at least one valid frame (its
            padded frames are set to 0); the patches of the other columns are padding: never visible, never
            predicted, and left out of both losses, the center update and the monitors. Each clip of `n` valid
            patches gets `int(n * (1 - mask_ratio))` visible and the rest masked (see [`random_masking`]); the student,
            teacher and predictor run on the batch's largest counts with the rest masked out of attention, and
            `valid_predictions` marks the real rows of `predictions`. The losses are means over all valid masked
            tokens. Without padding (or with an all-ones mask) the numbers are exactly those of the call without it.
        step (`int`, defaults to 0):
            Optimiser updates completed so far; drives the teacher temperature, the MATPAC++ temperature and the
            reported EMA decays. Pass the same value to [`~MatpacForPreTraining.update_teachers`].
        generator (`torch.Generator`, *optional*):
            Random source of the masking (for reproducible masks).
        noise (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
            Explicit masking scores instead of random ones: per sample, the `int(num_patches * (1 - mask_ratio))`
            patches with the lowest scores are visible, the others masked (of the valid patches, with padding).
        teacher_input_values (`torch.FloatTensor` of the shape of `input_values`, *optional*):
            Two views, a departure from MATPAC (where the teacher encodes the masked patches of the student's crop): the
            teacher encodes the masked patches of this crop instead, e.g. a differently augmented copy of the same
            audio with the same time-frequency layout (`augmentation.PretrainingAugmentation` with `teacher_view`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        step = _check_step(step)
        num_time_patches = self._check_pretraining_inputs(input_values)
        batch_size, device = input_values.shape[0], input_values.device
        noise = self._masking_noise(
            batch_size, config.num_frequency_patches * num_time_patches, device, generator, noise
        )  # (B, L)
        valid_patches = None  # (B, L) bool with padded clips, else None: every patch counts
        if teacher_input_values is not None and teacher_input_values.shape != input_values.shape:
            raise ValueError(
                f"teacher_input_values has shape {tuple(teacher_input_values.shape)}, but it must be another view of "
                f"input_values, of shape {tuple(input_values.shape)}."
            )
        if attention_mask is not None:
            if teacher_input_values is not None:
                teacher_input_values = self._drop_padding(teacher_input_values, attention_mask, noise)[0]
            input_values, noise, valid_patches = self._drop_padding(input_values, attention_mask, noise)

        # 1. Embed the crops into patch tokens with positions (shared by student and teacher).
        embeddings = self.matpac.embeddings
        patch_tokens = embeddings.embed_patches(input_values)  # (B, L, hidden)

        # 2. Mask: per clip a random permutation, its first 30 % visible, the rest masked.
        masking = random_masking(noise, config.mask_ratio, valid_patches)
        visible_token_mask, masked_token_mask = masking.visible_token_mask, masking.masked_token_mask

        # 3. Student encoder on CLS + visible tokens.
        visible_tokens = _gather_tokens(patch_tokens, masking.ids_visible)  # (B, V, hidden)
        student_hidden_states = self.matpac.encoder(
            embeddings.prepend_cls(visible_tokens), attention_mask=_with_cls(visible_token_mask)
        ).last_hidden_state

        # 4. Predictor: mask tokens, un-shuffle, positions, blocks -> predictions for the masked patches.
        predictions = self.predictor(
            student_hidden_states, masking.ids_restore, masking.ids_masked, valid_patches
        )  # (B, M, [K,] hidden)

        # 5. Teacher encoder on CLS + masked tokens (the shared embedding, no gradient).
        with torch.no_grad():
            teacher_tokens = (
                patch_tokens if teacher_input_values is None else embeddings.embed_patches(teacher_input_values)
            )
            masked_tokens = _gather_tokens(teacher_tokens, masking.ids_masked)  # (B, M, hidden)
            targets = self.teacher_encoder(
                embeddings.prepend_cls(masked_tokens), attention_mask=_with_cls(masked_token_mask)
            ).last_hidden_state[:, 1:]
            normalized_targets = nn.functional.normalize(targets.float(), dim=-1)  # (B, M, hidden)

        # 6. Prediction loss per masked token, 2 - 2 cos (losses in float32); 11. MATPAC++: winner-takes-all over the
        # candidates, the best one feeds the classification head.
        normalized_predictions = nn.functional.normalize(predictions.float(), dim=-1)
        candidate_predictions, mcl_temperature = None, None
        if config.use_mcl:
            candidate_losses = cosine_prediction_losses(normalized_predictions, normalized_targets[:, :, None])
            prediction_losses, best_candidate, mcl_temperature = mcl_winner_takes_all(
                candidate_losses, mcl_temperature_at(config, step), config.mcl_temperature_min
            )  # (B, M)
            candidate_predictions = predictions  # (B, M, K, hidden)
            predictions = select_candidate(candidate_predictions, best_candidate)  # (B, M, hidden)
            normalized_predictions = select_candidate(normalized_predictions, best_candidate)
        else:
            prediction_losses = cosine_prediction_losses(normalized_predictions, normalized_targets)  # (B, M)

        # 7. Classification loss: centred, sharpened teacher probabilities vs student log-probabilities; 9. in
        # training mode the center is updated after the teacher probabilities are computed.
        teacher_temperature = teacher_temperature_at(config, step)
        student_logits = self.student_head(predictions).float()  # (B, M, num_prototypes)
        with torch.no_grad():
            teacher_logits = self.teacher_head(targets).float()  # (B, M, num_prototypes)
        classification_losses, teacher_probs, share_of_global_mean = self.classification_loss(
            student_logits, teacher_logits, teacher_temperature, masked_token_mask
        )

        # 8. Total loss: means over the masked tokens of all processes (the share is 1.0 for equal batches).
        prediction_loss = _tokens(prediction_losses, masked_token_mask).mean() * share_of_global_mean
        classification_loss = _tokens(classification_losses, masked_token_mask).mean() * share_of_global_mean
        loss = (
            config.prediction_loss_weight * prediction_loss + config.classification_loss_weight * classification_loss
        )
        # (10. The EMA teacher updates run in `update_teachers`, after the backward.)

        # Monitors (this process's valid masked tokens).
        with torch.no_grad():
            mean_teacher_probs = _tokens(teacher_probs, masked_token_mask).mean(0)  # (num_prototypes,)
            teacher_classes = _tokens(teacher_probs.argmax(-1), masked_token_mask)  # (tokens,)
            student_classes = _tokens(student_logits.argmax(-1), masked_token_mask)
            encoder_decay, head_decay = ema_decays_at(config, step)
            as_tensor = lambda value: torch.full((), value, dtype=torch.float32, device=device)  # noqa: E731
            monitors = dict(
                prediction_std=_mean_channel_std(_tokens(normalized_predictions, masked_token_mask)),
                target_std=_mean_channel_std(_tokens(normalized_targets, masked_token_mask)),
                teacher_perplexity=torch.exp(-(mean_teacher_probs * torch.log(mean_teacher_probs + 1e-7)).sum()),
                num_teacher_classes=_num_distinct(teacher_classes, teacher_probs.shape[-1]),
                student_teacher_agreement=(student_classes == teacher_classes).float().mean(),
                teacher_temperature=as_tensor(teacher_temperature),
                ema_decay=as_tensor(encoder_decay),
                head_ema_decay=as_tensor(head_decay),
                mcl_temperature=as_tensor(mcl_temperature) if mcl_temperature is not None else None,
            )

        all_patches = torch.ones_like(masking.mask) if valid_patches is None else valid_patches
        output = MatpacForPreTrainingOutput(
            loss=loss,
            prediction_loss=prediction_loss,
            classification_loss=classification_loss,
            mask=self._to_input_grid(masking.mask, num_time_patches, False),
            predictions=predictions,
            candidate_predictions=candidate_predictions,
            **monitors,
            valid_patches=self._to_input_grid(all_patches, num_time_patches, False),
            valid_predictions=(
                torch.ones(predictions.shape[:2], dtype=torch.bool, device=device)
                if masked_token_mask is None
                else masked_token_mask
            ),
        )
        return output if return_dict else output.to_tuple()


def _gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`(B, L, D)` tokens, `(B, N)` patch indices -> `(B, N, D)`."""
    return torch.gather(tokens, 1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def _num_distinct(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Number of distinct values in `classes` (in `[0, num_classes)`), as a 0-d long tensor, without a host sync."""
    seen = torch.zeros(num_classes, dtype=torch.bool, device=classes.device)
    return seen.index_fill_(0, classes.flatten(), True).sum()


def _mean_channel_std(vectors: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the per-channel std over tokens (official `compute_var`, without its x1000)."""
    vectors = vectors.reshape(-1, vectors.shape[-1]).float()
    if vectors.shape[0] < 2:
        return vectors.new_zeros(())
    return torch.sqrt(vectors.var(dim=0) + 1e-6).mean()


# ----------------------------------------------------------------------------------------------------------------------
# Heads: MatpacForAudioClassification (one vector per clip), MatpacForAudioFrameClassification (one per 160 ms)
# ----------------------------------------------------------------------------------------------------------------------

_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


class MatpacPreTrainedModelWithHead(MatpacPreTrainedModel):
    """What both downstream heads share: the student encoder `matpac`, the optional SUPERB-style `layer_weights`
    (`config.use_weighted_layer_sum`), and encoder freezing (`config.freeze_encoder`, [`freeze_base_model`])."""

    def __init__(self, config: MatpacConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.matpac = MatpacModel(config)
        if config.use_weighted_layer_sum:
            num_layers = config.num_hidden_layers + 1  # the embedded patches, then every block
            self.layer_weights = nn.Parameter(torch.full((num_layers,), 1.0 / num_layers))

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.BatchNorm1d):
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif module is self and self.config.use_weighted_layer_sum:
            init.constant_(self.layer_weights, 1.0 / self.layer_weights.numel())

    def _frozen_parameters(self) -> list[nn.Module | nn.Parameter]:
        return [self.matpac] if self.config.freeze_encoder else []

    def freeze_base_model(self):
        """Stop gradients into the encoder (patch embedding, CLS token, blocks, final norm): only the head (and
        `layer_weights`) trains, a linear probe. Sets `config.freeze_encoder = True`, so the choice is saved with the
        model and applied again by `from_pretrained` (through [`~MatpacPreTrainedModel.tie_weights`])."""
        self.config.freeze_encoder = True
        self.tie_weights()

    def freeze_feature_encoder(self):
        """Stop gradients into the front end that turns the log-mel spectrogram into tokens, the patch embedding
        (`matpac.embeddings.patch_embeddings`), as transformers' audio models freeze their convolutional feature
        encoder; the transformer blocks and the head still train. transformers'
        `examples/pytorch/audio-classification/run_audio_classification.py` calls it by default
        (`--freeze_feature_encoder`). Not saved with the model: call it again after `from_pretrained`."""
        self.matpac.embeddings.patch_embeddings.requires_grad_(False)

    def _encode(self, input_values, attention_mask, kwargs) -> tuple[MatpacModelOutput, torch.Tensor, bool]:
        """Runs the encoder; returns its outputs, the frame features the head reads (`(batch, T', F * hidden)`) and
        whether the caller asked for hidden states."""
        output_hidden_states = kwargs.pop("output_hidden_states", None)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        encoder_outputs = self.matpac(
            input_values,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states or self.config.use_weighted_layer_sum,
            return_dict=True,
            **kwargs,
        )
        if not self.config.use_weighted_layer_sum:
            return encoder_outputs, encoder_outputs.last_hidden_state, output_hidden_states
        # The last block's entry is replaced by `last_hidden_state` (the same block after the final LayerNorm): with all
        # the weight on the last layer the head sees exactly what it sees without the weighted sum.
        layers = [*encoder_outputs.hidden_states[:-1], encoder_outputs.last_hidden_state]
        layers = torch.stack(layers)  # (num_hidden_layers + 1, batch, T', F * hidden)
        weights = nn.functional.softmax(self.layer_weights, dim=-1).to(layers.dtype)
        frames = (weights[:, None, None, None] * layers).sum(0)  # (batch, T', F * hidden); padded rows stay 0
        return encoder_outputs, frames, output_hidden_states


class MatpacForAudioClassification(MatpacPreTrainedModelWithHead):
    """MATPAC encoder with a linear classification (or regression) head on a pooled clip embedding.

    Two heads, chosen by `config.classifier_pooling`:

    * `"concat"` (official downstream probes): `classifier` is a linear layer on the 3840-d clip embedding
      ([`MatpacModel`]'s `pooler_output`: mean over time of the frame embeddings).
    * `"mean"` (official AudioSet-fine-tuned head): mean over frequency and time of the 768-d tokens, `head_norm`
      (BatchNorm1d without affine parameters), then `classifier`, a linear layer 768 -> `num_labels`.

    With `config.use_weighted_layer_sum=True` the pooling reads a learned softmax-weighted sum of the encoder's hidden
    states (`layer_weights`, SUPERB style) instead of the last layer. `config.classifier_dropout` is applied just
    before `classifier`. With `config.freeze_encoder=True` (or after [`~MatpacForAudioClassification.freeze_base_model`])
    only the head trains: a linear probe.

    The loss follows transformers' sequence-classification convention, chosen by `config.problem_type` (set from the
    first labels seen when it is `None`): `"single_label_classification"` (cross-entropy on class indices),
    `"multi_label_classification"` (BCE-with-logits on multi-hot targets) or `"regression"` (mean squared error).
    """

    def __init__(self, config: MatpacConfig):
        super().__init__(config)
        if config.classifier_pooling == "mean":
            self.head_norm = nn.BatchNorm1d(config.hidden_size, affine=False)
            classifier_input_size = config.hidden_size
        else:
            classifier_input_size = config.frame_embedding_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(classifier_input_size, config.num_labels)
        self.post_init()

    def pool(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Clip vector fed to the classifier from `(batch, T', F * hidden)` frame features (zero on padding):
        `(batch, frame_embedding_size)` for `"concat"`, `(batch, hidden_size)` (after `head_norm`) for `"mean"`."""
        frame_mask = frame_mask.to(frames.dtype)  # (batch, T')
        num_valid = frame_mask.sum(1, keepdim=True)  # (batch, 1)
        if self.config.classifier_pooling == "concat":
            return frames.sum(1) / num_valid  # (batch, F * hidden), as MatpacModel's pooler_output

        batch_size, num_frames, _ = frames.shape
        tokens = frames.view(batch_size, num_frames, self.config.num_frequency_patches, self.config.hidden_size)
        column_means = tokens.mean(dim=2)  # (batch, T', hidden): mean over the frequency tokens of each column
        clip_means = (column_means * frame_mask[..., None]).sum(1) / num_valid  # (batch, hidden)
        if self.training and batch_size == 1:
            raise ValueError(
                "classifier_pooling='mean' normalises with BatchNorm1d, which needs at least 2 clips per batch in "
                "training mode. Use a batch size >= 2 (with the Trainer, also `dataloader_drop_last=True` when the "
                "last batch could hold a single clip), or call `model.eval()` for inference."
            )
        return self.head_norm(clip_means)

    def _check_labels(self, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Sets `config.problem_type` when it is `None` (transformers' rule) and checks the labels fit it. Returns the
        labels in the dtype the loss needs (float for BCE and MSE)."""
        if not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        problem_type = self.config.problem_type
        if problem_type not in _PROBLEM_TYPES:
            raise ValueError(f"config.problem_type must be one of {_PROBLEM_TYPES} or None, got {problem_type!r}.")

        if labels.shape[0] != batch_size:
            raise ValueError(f"`labels` holds {labels.shape[0]} rows for a batch of {batch_size} clips.")
        if problem_type == "single_label_classification":
            if labels.dim() != 1 or labels.is_floating_point():
                hint = (
                    " Multi-hot targets need config.problem_type='multi_label_classification'."
                    if labels.dim() == 2 and labels.shape[1] == self.num_labels
                    else ""
                )
                raise ValueError(
                    "single_label_classification expects integer class indices of shape (batch,), got "
                    f"{labels.dtype} labels of shape {tuple(labels.shape)}.{hint}"
                )
            _check_class_indices(labels, self.num_labels)
            return labels
        if problem_type == "multi_label_classification" and labels.shape[1:] != (self.num_labels,):
            raise ValueError(
                f"multi_label_classification expects multi-hot targets of shape (batch, {self.num_labels}), got "
                f"{tuple(labels.shape)}."
            )
        if problem_type == "regression" and labels.numel() != batch_size * self.num_labels:
            raise ValueError(
                f"regression expects targets of shape (batch, {self.num_labels}) (or (batch,) for one output), got "
                f"{tuple(labels.shape)}."
            )
        return labels.float()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_mel_bins)`):
            Normalised log-mel spectrograms from [`MatpacFeatureExtractor`]; clips of any length.
        attention_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
            1 for valid frames, 0 for padding.
        labels (`torch.Tensor`, *optional*):
            `(batch_size,)` class indices in `[0, num_labels - 1]` (single-label), `(batch_size, num_labels)` multi-hot
            targets (multi-label), or `(batch_size,)` / `(batch_size, num_labels)` real targets (regression).
        kwargs (`TransformersKwargs`):
            `output_hidden_states`, `output_attentions`, `return_dict` as for [`MatpacModel`].

        Returns:
            [`~modeling_outputs.SequenceClassifierOutput`]: `loss` (when `labels` are given), `logits` of shape
            `(batch_size, num_labels)`, and the encoder's frame-layout `hidden_states` / per-clip `attentions` when
            asked for.
        """
        encoder_outputs, frames, output_hidden_states = self._encode(input_values, attention_mask, kwargs)
        clip_embedding = self.pool(frames, encoder_outputs.frame_mask)  # (batch, classifier input size)
        logits = self.classifier(self.dropout(clip_embedding))  # (batch, num_labels)

        loss = None
        if labels is not None:
            labels = self._check_labels(labels, logits.shape[0])
            loss = self.loss_function(labels, logits, self.config)

        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoder_outputs.hidden_states if output_hidden_states else None,
            attentions=encoder_outputs.attentions,
        )


class MatpacForAudioFrameClassification(MatpacPreTrainedModelWithHead):
    """MATPAC encoder with a linear classifier on every frame embedding: frame tagging / sound event detection at the
    encoder's 160 ms resolution (the role of `Wav2Vec2ForAudioFrameClassification`).

    `classifier` is a linear layer on each 3840-d frame embedding (the `num_frequency_patches` tokens of a time column
    concatenated, [`MatpacModel`]'s `last_hidden_state`), or on the learned softmax-weighted sum of the hidden states
    with `config.use_weighted_layer_sum=True`. `config.classifier_dropout` is applied before it; `config.freeze_encoder`
    / [`~MatpacForAudioFrameClassification.freeze_base_model`] train the head alone. `config.classifier_pooling` does
    not apply (nothing is pooled).

    Labels, one row per frame (`labels.shape[1] == logits.shape[1]`, frames past a clip's end ignored):

    * `(batch, num_time_patches)` integer class indices (`-100` = ignore): `"single_label_classification"`,
      cross-entropy;
    * `(batch, num_time_patches, num_labels)` multi-hot floats: `"multi_label_classification"`, BCE-with-logits
      (sound event detection, where events overlap).

    `config.problem_type` is set from the first labels when it is `None`. (`Wav2Vec2ForAudioFrameClassification` takes
    one-hot rows and applies cross-entropy to their argmax; here float rows mean multi-label.)
    """

    _frame_problem_types = ("single_label_classification", "multi_label_classification")

    def __init__(self, config: MatpacConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.frame_embedding_size, config.num_labels)
        self.post_init()

    def _frame_loss(self, logits: torch.Tensor, labels: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=logits.device)
        if self.config.problem_type is None:
            is_index = labels.dim() == 2 and not labels.is_floating_point()
            self.config.problem_type = "single_label_classification" if is_index else "multi_label_classification"
        problem_type = self.config.problem_type
        if problem_type not in self._frame_problem_types:
            raise ValueError(
                f"MatpacForAudioFrameClassification supports config.problem_type in {self._frame_problem_types} (or "
                f"None), got {problem_type!r}."
            )
        batch_size, num_frames, num_labels = logits.shape
        expected = (batch_size, num_frames) + ((num_labels,) if problem_type == "multi_label_classification" else ())
        if tuple(labels.shape) != expected:
            kind = "class indices" if len(expected) == 2 else "multi-hot rows"
            raise ValueError(
                f"{problem_type} frame labels must have shape {expected} ({kind}, one row per 160 ms frame, as many as "
                f"`logits` has: ceil(num_frames / {self.config.patch_size}) for the longest clip), got "
                f"{tuple(labels.shape)}."
            )
        valid = frame_mask.bool()  # (batch, T')
        if problem_type == "single_label_classification":
            if labels.is_floating_point():
                raise ValueError(
                    f"single_label_classification frame labels must be integer class indices, got {labels.dtype}: "
                    "pass `labels.long()`, or set config.problem_type='multi_label_classification' for multi-hot rows."
                )
            labels = labels.masked_fill(~valid, -100)
            _check_class_indices(labels, num_labels)
            return nn.functional.cross_entropy(logits.float().reshape(-1, num_labels), labels.reshape(-1))
        losses = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
        return losses[valid].mean()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MatpacFrameClassifierOutput:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_mel_bins)`):
            Normalised log-mel spectrograms from [`MatpacFeatureExtractor`]; clips of any length.
        attention_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
            1 for valid frames, 0 for padding.
        labels (`torch.Tensor`, *optional*):
            `(batch_size, num_time_patches)` class indices or `(batch_size, num_time_patches, num_labels)` multi-hot
            targets (see the class docstring).
        kwargs (`TransformersKwargs`):
            `output_hidden_states`, `output_attentions`, `return_dict` as for [`MatpacModel`].
        """
        encoder_outputs, frames, output_hidden_states = self._encode(input_values, attention_mask, kwargs)
        logits = self.classifier(self.dropout(frames))  # (batch, T', num_labels)
        loss = None if labels is None else self._frame_loss(logits, labels, encoder_outputs.frame_mask)
        return MatpacFrameClassifierOutput(
            loss=loss,
            logits=logits,
            frame_mask=encoder_outputs.frame_mask,
            hidden_states=encoder_outputs.hidden_states if output_hidden_states else None,
            attentions=encoder_outputs.attentions,
        )


def _check_class_indices(labels: torch.Tensor, num_labels: int):
    valid = labels != -100  # the ignore index of the cross-entropy
    if ((labels[valid] < 0) | (labels[valid] >= num_labels)).any():
        raise ValueError(
            f"Class indices must lie in [0, {num_labels - 1}] (num_labels={num_labels}) or be -100 (ignored); got "
            f"values {sorted(set(labels[valid].tolist()))[:10]}. Set num_labels / id2label in the config to cover "
            "every class."
        )


__all__ = [
    "MatpacPreTrainedModel",
    "MatpacModel",
    "MatpacForPreTraining",
    "MatpacForAudioClassification",
    "MatpacForAudioFrameClassification",
]
