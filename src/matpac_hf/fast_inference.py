# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The no-grad fast path of the MATPAC encoder: the same blocks, computed with fewer memory passes.

The model code reaches this module through two calls, both behind [`fast_path_applies`]:

* [`fast_encode`]: [`MatpacEncoder`]'s forward when no gradient, hidden states or attentions are asked for
  (inference, and the teacher's forward in pretraining);
* [`fast_encode_micro_batches`]: [`MatpacModel`]'s forward, which then packs micro-batches of several chunk lengths
  into one encoder call.

What it does differently from the plain forward, never what it computes:

* the blocks update one copy of the tokens in place: each residual branch is added by its output projection's GEMM
  (`x.add_(bias).addmm_(a, W.T)`), and the query/key/value and MLP activations go into buffers reused by every block
  of the call (`out=`), instead of a fresh tensor per layer;
* on CPUs, sequences of at least `PER_CHUNK_ATTENTION_MIN_TOKENS` tokens without a mask take [`attend_per_chunk`]
  (eager attention's math, one sequence at a time) instead of sdpa's kernel;
* sequences of several lengths share one call (`sequence_groups`): every token-wise step runs on all of them at once,
  attention on each sequence alone.

Only the order of the bias and residual additions differs from the plain forward (float rounding, ~1e-7). The
thresholds are rules measured by `benchmarks/bench_inference.py` (see `benchmarks/RESULTS.md`).

The modules are taken as arguments (duck-typed), so this file imports nothing from the model file. A forward hook
on the encoder or a block (torch's, accelerate's device hooks) switches the fast path off, since it does not call
those modules.
"""

from collections.abc import Iterator

import torch
from torch import nn


# Sequences at least this long, without an attention mask, take `attend_per_chunk` on CPUs; shorter ones sdpa's kernel
# (whose fixed-size query blocks make the two products small GEMMs on long sequences). Measured by
# `benchmarks/bench_inference.py --breakdown`.
PER_CHUNK_ATTENTION_MIN_TOKENS = 96


def is_hooked(module: nn.Module) -> bool:
    """Whether a forward hook (torch's, or an accelerate device / offload hook) is attached to `module`. The fast path
    runs the encoder's and the blocks' math without calling those modules, so their hooks would not run: it stands
    aside for them."""
    return bool(module._forward_hooks or module._forward_pre_hooks) or hasattr(module, "_hf_hook")


def layer_applies(layer: nn.Module) -> bool:
    """Whether [`forward_layer_in_place`] computes what `layer.forward` does: no gradient, no active dropout, plain
    float `nn.Linear`s (not quantised or wrapped), no autocast, no hook on the block, and not traced / compiled /
    exported (the graph then gets the plain ops)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing() or is_hooked(layer):
        return False
    if layer.training and (layer.dropout.p > 0 or layer.mlp.dropout.p > 0 or layer.attention.attention_dropout > 0):
        return False
    linears = (layer.attention.qkv, layer.attention.proj, layer.mlp.fc1, layer.mlp.fc2)
    if any(type(linear) is not nn.Linear or not linear.weight.is_floating_point() for linear in linears):
        return False
    device_type = layer.attention.qkv.weight.device.type
    return not torch.is_autocast_enabled(device_type) if device_type in ("cpu", "cuda") else False


def fast_path_applies(encoder: nn.Module) -> bool:
    """Whether the fast path computes what `encoder`'s plain forward does: no hook on the encoder, and every block
    qualifies (see [`layer_applies`])."""
    return not is_hooked(encoder) and all(layer_applies(layer) for layer in encoder.layers)


def attend_per_chunk(
    attention: nn.Module, qkv: torch.Tensor, workspace: dict, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact softmax attention without a mask, one sequence at a time: `(batch, seq, 3 * hidden)` fused
    query/key/value projections of `attention` -> `(batch, seq, heads, head_dim)` (written into `out` when given).

    Per sequence one batched GEMM over the heads for the scores (into a reused `(heads, seq, seq)` buffer, small enough
    to stay in a core's L2 cache), softmax in place, one batched GEMM with the values written straight into the output
    layout. The same math as eager attention (float32 softmax)."""
    batch_size, seq_len, _ = qkv.shape
    num_heads, head_dim = attention.num_attention_heads, attention.head_dim
    qkv = qkv.view(batch_size, seq_len, 3, num_heads, head_dim)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim), strided
    num_scores = num_heads * seq_len * seq_len
    scores = workspace.get("scores")  # flat: sequences of several lengths share it
    if scores is None or scores.numel() < num_scores or scores.dtype != qkv.dtype:
        scores = workspace["scores"] = qkv.new_empty(num_scores)
    scores = scores[:num_scores].view(num_heads, seq_len, seq_len)
    if out is None:
        out = qkv.new_empty(batch_size, seq_len, num_heads, head_dim)
    for sequence in range(batch_size):
        torch.baddbmm(
            scores, query[sequence], key[sequence].transpose(1, 2), beta=0, alpha=attention.scaling, out=scores
        )
        torch.softmax(scores, dim=-1, out=scores)
        torch.bmm(scores, value[sequence], out=out[sequence].transpose(0, 1))
    return out


def forward_layer_in_place(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    workspace: dict,
    sequence_groups: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """One pre-norm block (`MatpacLayer`) on `hidden_states`, updated in place and returned.

    `hidden_states` (contiguous, owned by the caller) is the residual stream. `workspace` holds the activation buffers
    shared by the blocks of one call. `sequence_groups` `[(count, seq_len), ...]`: `hidden_states` `(1, tokens, width)`
    packs `count` sequences of `seq_len` tokens per group, one after the other (no mask); None: the `(batch, seq,
    width)` sequences of `hidden_states`. `attention_mask`: as the plain forward gets it (already expanded).
    """
    batch_size, seq_len, width = hidden_states.shape
    attention, mlp = layer.attention, layer.mlp
    residual = hidden_states.view(-1, width)  # (tokens, width)

    def linear_into(linear: nn.Linear, inputs: torch.Tensor, name: str) -> torch.Tensor:
        shape = (inputs.shape[0], linear.out_features)
        buffer = workspace.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != inputs.dtype:
            buffer = workspace[name] = inputs.new_empty(shape)
        if linear.bias is None:
            return torch.mm(inputs, linear.weight.t(), out=buffer)
        return torch.addmm(linear.bias, inputs, linear.weight.t(), out=buffer)

    def add_projection_(linear: nn.Linear, inputs: torch.Tensor):
        if linear.bias is not None:
            residual.add_(linear.bias)
        residual.addmm_(inputs, linear.weight.t())

    qkv = linear_into(attention.qkv, layer.layernorm_before(residual), "qkv")
    groups = sequence_groups or [(batch_size, seq_len)]
    attn_output = qkv.new_empty(residual.shape) if len(groups) > 1 else None
    start = 0
    for count, length in groups:
        group_qkv = qkv[start : start + count * length].view(count, length, -1)
        group_out = None if attn_output is None else attn_output[start : start + count * length]
        if (
            attention_mask is None
            and length >= PER_CHUNK_ATTENTION_MIN_TOKENS
            and attention.config._attn_implementation in ("sdpa", "eager")
            and group_qkv.device.type == "cpu"  # on GPUs sdpa's fused kernels stay
        ):
            out = None if group_out is None else group_out.view(count, length, attention.num_attention_heads, -1)
            group_result = attend_per_chunk(attention, group_qkv, workspace, out=out)
        else:
            group_result, _ = attention.attend(group_qkv, attention_mask)
            if group_out is not None:
                group_out.copy_(group_result.reshape(-1, width))
        if attn_output is None:
            attn_output = group_result
        start += count * length
    add_projection_(attention.proj, attn_output.reshape(-1, width))
    intermediate = linear_into(mlp.fc1, layer.layernorm_after(residual), "intermediate")
    if mlp.exact_gelu:
        torch.ops.aten.gelu_(intermediate)
    else:
        intermediate = mlp.activation_fn(intermediate)
    add_projection_(mlp.fc2, intermediate)
    return hidden_states


def fast_encode(
    encoder: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    sequence_groups: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """`encoder`'s blocks and final LayerNorm on `(batch, seq, hidden)` tokens -> its `last_hidden_state`, on a copy of
    the tokens (the caller's are left alone). `attention_mask` as the blocks get it (already expanded).
    `sequence_groups`: see [`forward_layer_in_place`]. Only where [`fast_path_applies`]."""
    if not fast_path_applies(encoder):
        raise ValueError(
            "fast_encode needs the no-grad path (see fast_inference.fast_path_applies): call it under "
            "torch.no_grad() on a model in eval mode, or call the encoder itself."
        )
    hidden_states, workspace = hidden_states.contiguous().clone(), {}
    for layer in encoder.layers:
        forward_layer_in_place(layer, hidden_states, attention_mask, workspace, sequence_groups)
    return encoder.layernorm(hidden_states)


def pack_micro_batches(
    micro_batches: list[list[tuple[int, int, int]]], num_frequency_patches: int, token_budget: int
) -> list[list[list[tuple[int, int, int]]]]:
    """Consecutive micro-batches (each of one chunk length; chunks `(clip, position, time_patches)`) grouped into
    encoder calls of at most `token_budget` tokens (a micro-batch larger than that gets a call of its own). The blocks
    are token-wise except attention, which a packed call runs on each chunk alone, so the outputs are those of one call
    per micro-batch; the matrix products get more rows."""
    calls, tokens = [], token_budget + 1
    for chunks in micro_batches:
        chunk_tokens = len(chunks) * (1 + num_frequency_patches * chunks[0][2])
        if tokens + chunk_tokens > token_budget:
            calls.append([])
            tokens = 0
        calls[-1].append(chunks)
        tokens += chunk_tokens
    return calls


def fast_encode_micro_batches(
    model: nn.Module,
    input_values: torch.Tensor,
    frame_lengths: list[int],
    micro_batches: list[list[tuple[int, int, int]]],
    chunk_batch_size: int | None,
) -> Iterator[torch.Tensor]:
    """`MatpacModel`'s encoder core on its micro-batches, packed into calls of at most the tokens of one micro-batch of
    full chunks (`chunk_batch_size`, default `model.default_chunk_batch_size()`): yields each micro-batch's `(n, 1 + F
    * T, hidden)` `last_hidden_state`, in order, as `model._encode_chunks` gives it."""
    config = model.config
    full_seq_len = 1 + config.num_frequency_patches * config.max_time_patches
    token_budget = (chunk_batch_size or model.default_chunk_batch_size()) * full_seq_len
    for call in pack_micro_batches(micro_batches, config.num_frequency_patches, token_budget):
        embedded = [model.embeddings(model._gather_chunks(input_values, frame_lengths, chunks)) for chunks in call]
        if len(call) == 1:  # one chunk length: no packing
            yield fast_encode(model.encoder, embedded[0])
            continue
        groups = [(tokens.shape[0], tokens.shape[1]) for tokens in embedded]
        packed = torch.cat([tokens.reshape(-1, tokens.shape[-1]) for tokens in embedded])[None]
        packed = fast_encode(model.encoder, packed, sequence_groups=groups)[0]
        for part, (count, length) in zip(packed.split([count * length for count, length in groups]), groups):
            yield part.view(count, length, -1)
