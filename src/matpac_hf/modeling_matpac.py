# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""PyTorch MATPAC model (Masked latent Prediction And Classification, Quelennec et al., ICASSP 2025).

Layout follows transformers' ViTMAE / AST modeling files. Tensor-shape vocabulary used in comments:

* `num_mel_bins` (80) x `num_frames`: a normalised log-mel spectrogram, frequency first.
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
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

from .configuration_matpac import MatpacConfig


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
        attentions (`tuple(torch.FloatTensor)`, returned when `output_attentions=True` with eager attention):
            Per layer, the attention probabilities of every chunk: `(num_chunks, num_heads, seq_len, seq_len)`, where
            chunks of all clips are stacked in clip order.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    frame_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Positions
# ----------------------------------------------------------------------------------------------------------------------


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
    """`(batch, num_mel_bins, num_frames)` log-mel -> `(batch, F * T, hidden_size)` patch tokens, frequency-major."""

    def __init__(self, config: MatpacConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if input_values.dim() == 3:
            input_values = input_values.unsqueeze(1)  # (batch, 1, num_mel_bins, num_frames)
        patches = self.projection(input_values.to(self.projection.weight.dtype))  # (batch, hidden, F, T)
        return patches.flatten(2).transpose(1, 2)  # (batch, F * T, hidden)


class MatpacEmbeddings(nn.Module):
    """Patch embedding, learned CLS token and the fixed 2-D sin-cos position table (shared by student and teacher)."""

    def __init__(self, config: MatpacConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = MatpacPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        # Fixed, not learned: filled in `_init_weights`, never saved (it is a pure function of the config).
        self.register_buffer(
            "position_embeddings", torch.zeros(1 + config.num_patches, config.hidden_size), persistent=False
        )

    def embed_patches(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(batch, num_mel_bins, num_frames)` -> patch tokens plus positions, `(batch, F * T, hidden)`, no CLS.

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
        """`(batch, num_mel_bins, num_frames)` -> `(batch, 1 + F * T, hidden)`: CLS + positioned patch tokens."""
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

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        batch_size, seq_len, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_len, 3, self.num_attention_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
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
        attn_output = attn_output.reshape(batch_size, seq_len, -1)
        return self.proj(attn_output), attn_weights


class MatpacMLP(nn.Module):
    def __init__(self, config: MatpacConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation_fn(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class MatpacLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: MatpacConfig, hidden_size: int, num_attention_heads: int, intermediate_size: int):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = MatpacSelfAttention(config, hidden_size, num_attention_heads)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = MatpacMLP(config, hidden_size, intermediate_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.mlp(self.layernorm_after(hidden_states))
        return hidden_states, attn_weights


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
        if attention_mask is not None:
            attention_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
            )
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_mask)
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
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        """Official initialisation: xavier-uniform linears with zero bias, LayerNorm (1, 0), patch embedding
        xavier-uniform on its flattened `(hidden, patch_size**2)` view, CLS / mask tokens normal(0.02)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MatpacPatchEmbeddings):
            weight = module.projection.weight
            init.xavier_uniform_(weight.view(weight.shape[0], -1))
            init.zeros_(module.projection.bias)
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
    chunk is encoded on its own, and the chunks are concatenated along time. All chunks of all clips go through the
    encoder in one batched call; shorter chunks are padded to the longest chunk of the batch and the padded tokens are
    masked out of attention, so each clip gets exactly what it gets alone.
    """

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
                f"(batch, {num_mel_bins}, num_frames); got {type(input_values).__name__}. "
                "Use MatpacFeatureExtractor(..., return_tensors='pt') to turn raw audio into `input_values`."
            )
        if input_values.dim() == 2 and input_values.shape[0] == num_mel_bins:
            raise ValueError(
                f"`input_values` has shape {tuple(input_values.shape)}: a single spectrogram needs a batch dimension, "
                f"use `input_values[None]` (shape (1, {num_mel_bins}, num_frames))."
            )
        if input_values.dim() != 3 or input_values.shape[1] != num_mel_bins:
            raise ValueError(
                f"`input_values` must have shape (batch, {num_mel_bins}, num_frames) (log-mel, frequency first), got "
                f"{tuple(input_values.shape)}. Raw waveforms go through MatpacFeatureExtractor first; a spectrogram "
                "laid out (batch, num_frames, mel) must be transposed with `.transpose(1, 2)`."
            )
        batch_size, _, num_frames = input_values.shape
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
        return frame_lengths

    # -- chunking -----------------------------------------------------------------------------------------------------
    def _split_into_chunks(self, input_values: torch.Tensor, frame_lengths: torch.Tensor):
        """Cut every clip into consecutive `max_frames` chunks and stack the chunks of all clips.

        Returns:
            chunk_values: `(num_chunks, num_mel_bins, chunk_frames)`, frames past a clip's end set to 0.
            chunk_time_patches: `(num_chunks,)` valid time columns per chunk (ceil(valid frames / patch_size)).
            chunk_clip_index: `(num_chunks,)` which clip each chunk belongs to.
            chunk_position: `(num_chunks,)` index of the chunk within its clip.
        """
        patch_size, max_frames = self.config.patch_size, self.config.max_frames
        batch_size, num_mel_bins, num_frames = input_values.shape
        device = input_values.device
        max_chunks = math.ceil(num_frames / max_frames)

        # Zero every frame past a clip's end (the official code pads with zeros in the normalised domain).
        frame_index = torch.arange(num_frames, device=device)
        valid_frames = frame_index[None, :] < frame_lengths[:, None]  # (batch, num_frames)
        values = input_values * valid_frames[:, None, :].to(input_values.dtype)
        values = nn.functional.pad(values, (0, max_chunks * max_frames - num_frames))
        values = values.view(batch_size, num_mel_bins, max_chunks, max_frames).permute(0, 2, 1, 3)

        chunk_start = torch.arange(max_chunks, device=device) * max_frames  # (max_chunks,)
        chunk_frames = (frame_lengths[:, None] - chunk_start[None, :]).clamp(0, max_frames)  # (batch, max_chunks)
        chunk_exists = chunk_frames > 0
        chunk_time_patches = torch.div(chunk_frames + patch_size - 1, patch_size, rounding_mode="floor")

        chunk_values = values[chunk_exists]  # (num_chunks, num_mel_bins, max_frames)
        chunk_time_patches = chunk_time_patches[chunk_exists]
        clip_index, chunk_position = torch.nonzero(chunk_exists, as_tuple=True)

        # Trim to the longest chunk: a batch of short clips runs on short sequences, like each clip alone.
        max_time_patches = int(chunk_time_patches.max())
        chunk_values = chunk_values[..., : max_time_patches * patch_size]
        return chunk_values, chunk_time_patches, clip_index, chunk_position

    def _chunks_to_frames(
        self,
        chunk_tokens: torch.Tensor,
        chunk_time_patches: torch.Tensor,
        clip_index: torch.Tensor,
        chunk_position: torch.Tensor,
        batch_size: int,
        num_output_frames: int,
    ) -> torch.Tensor:
        """`(num_chunks, 1 + F * T, hidden)` encoder tokens -> `(batch, num_output_frames, F * hidden)` frame
        embeddings: drop CLS, concatenate the frequency tokens of each time column, and place the chunks of each clip
        one after the other along time."""
        num_chunks, _, hidden_size = chunk_tokens.shape
        num_frequency_patches = self.config.num_frequency_patches
        patch_tokens = chunk_tokens[:, 1:].reshape(num_chunks, num_frequency_patches, -1, hidden_size)
        num_time_patches = patch_tokens.shape[2]
        frames = patch_tokens.permute(0, 2, 1, 3).reshape(num_chunks, num_time_patches, -1)  # (chunks, T, F * hidden)

        column = torch.arange(num_time_patches, device=frames.device)
        column_valid = column[None, :] < chunk_time_patches[:, None]  # (chunks, T)
        output_time = chunk_position[:, None] * self.config.max_time_patches + column[None, :]  # (chunks, T)
        output_clip = clip_index[:, None].expand(-1, num_time_patches)

        output = frames.new_zeros(batch_size, num_output_frames, frames.shape[-1])
        output[output_clip[column_valid], output_time[column_valid]] = frames[column_valid]
        return output

    # -- forward ------------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MatpacModelOutput | tuple:
        r"""
        input_values (`torch.FloatTensor` of shape `(batch_size, num_mel_bins, num_frames)`):
            Normalised log-mel spectrograms from [`MatpacFeatureExtractor`]. Any number of frames >= 1.
        attention_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
            1 for valid frames, 0 for padding (as returned by the feature extractor for clips of different lengths).
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        frame_lengths = self._check_inputs(input_values, attention_mask)
        batch_size = input_values.shape[0]
        patch_size = self.config.patch_size

        chunk_values, chunk_time_patches, clip_index, chunk_position = self._split_into_chunks(
            input_values, frame_lengths
        )
        chunk_tokens = self.embeddings(chunk_values)  # (num_chunks, 1 + F * T, hidden)

        # Mask out padded time columns of shorter chunks (only when chunk lengths differ).
        token_mask = None
        num_time_patches = chunk_values.shape[-1] // patch_size
        if bool((chunk_time_patches < num_time_patches).any()):
            column_valid = torch.arange(num_time_patches, device=input_values.device)[None, :] < chunk_time_patches[
                :, None
            ]  # (chunks, T)
            patch_valid = column_valid[:, None, :].expand(-1, self.config.num_frequency_patches, -1).flatten(1)
            token_mask = torch.cat([torch.ones_like(patch_valid[:, :1]), patch_valid], dim=1).long()

        encoder_outputs = self.encoder(
            chunk_tokens,
            attention_mask=token_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )

        clip_time_patches = torch.div(frame_lengths + patch_size - 1, patch_size, rounding_mode="floor")  # (batch,)
        num_output_frames = int(clip_time_patches.max())
        to_frames = lambda tokens: self._chunks_to_frames(  # noqa: E731
            tokens, chunk_time_patches, clip_index, chunk_position, batch_size, num_output_frames
        )
        last_hidden_state = to_frames(encoder_outputs.last_hidden_state)
        frame_mask = (
            torch.arange(num_output_frames, device=input_values.device)[None, :] < clip_time_patches[:, None]
        ).long()
        pooler_output = last_hidden_state.sum(1) / clip_time_patches[:, None].to(last_hidden_state.dtype)
        hidden_states = (
            tuple(to_frames(h) for h in encoder_outputs.hidden_states) if output_hidden_states else None
        )

        output = MatpacModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooler_output,
            frame_mask=frame_mask,
            hidden_states=hidden_states,
            attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


__all__ = ["MatpacPreTrainedModel", "MatpacModel"]
