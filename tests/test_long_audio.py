"""Long audio in bounded memory, native-bf16 detection and the int8 CPU path.

The bounded-memory paths are pinned to the one-call numbers: micro-batched chunks (`chunk_batch_size`), the
streaming clip embedding of [`embed_long_audio`], and the block-by-block STFT of the feature extractor.
"""

import numpy as np
import pytest
import torch
from matpac_testing import tiny_config

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacModel, inference
from matpac_hf.inference import (
    default_autocast_dtype,
    embed_long_audio,
    native_bf16_support,
    quantize_linear_layers_int8,
)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MatpacModel(tiny_config()).eval()  # max_frames=64: 4 columns per chunk


@pytest.fixture(scope="module")
def feature_extractor():
    return MatpacFeatureExtractor()


def record_encoder_batches(model):
    """Records the number of chunks of every encoder call."""
    sizes = []
    handle = model.encoder.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes, handle


def test_micro_batched_chunks_equal_one_call(tiny_model):
    """Every chunk_batch_size gives the embeddings of the one-call path (all chunks of a length in one encoder
    call), for a padded batch of clips of 1 column up to 11 chunks, and no encoder call holds more chunks than
    asked."""
    lengths = [700, 17, 130, 64, 1, 65]
    inputs = torch.randn(len(lengths), max(lengths), 80)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    num_chunks = sum(-(-n // 64) for n in lengths)  # 11 + 1 + 3 + 1 + 1 + 2 = 19
    with torch.no_grad():
        sizes, handle = record_encoder_batches(tiny_model)
        reference = tiny_model(inputs, attention_mask=mask, output_hidden_states=True, chunk_batch_size=num_chunks)
        assert sizes == [15, 1, 3]  # one call per chunk length: 15 of 4 columns (60+ frames), 1 of 2, 3 of 1
        for chunk_batch_size in (1, 2, 5):
            sizes.clear()
            outputs = tiny_model(
                inputs, attention_mask=mask, output_hidden_states=True, chunk_batch_size=chunk_batch_size
            )
            assert max(sizes) <= chunk_batch_size and sum(sizes) == num_chunks
            assert (outputs.last_hidden_state - reference.last_hidden_state).abs().max() <= 1e-5
            assert (outputs.pooler_output - reference.pooler_output).abs().max() <= 1e-5
            for ours, theirs in zip(outputs.hidden_states, reference.hidden_states, strict=True):
                assert (ours - theirs).abs().max() <= 1e-5
            assert torch.equal(outputs.frame_mask, reference.frame_mask)
        handle.remove()
    # and each clip alone (no padding, no other clip in its micro-batches) gets the same frames
    with torch.no_grad():
        for row, length in enumerate(lengths):
            alone = tiny_model(inputs[row : row + 1, :length], chunk_batch_size=2)
            columns = -(-length // 16)
            diff = (alone.last_hidden_state[0] - reference.last_hidden_state[row, :columns]).abs().max()
            assert diff <= 1e-5
            assert not reference.last_hidden_state[row, columns:].any()  # rows past the clip are zero


def test_equal_length_chunks_run_without_padding(tiny_model):
    """Chunks are grouped by length: a batch of equal clips of 2.5 chunks runs full chunks together and the short
    last chunks together, so no micro-batch is padded (the attention mask is never built), also with a mask."""
    masks = []
    handle = tiny_model.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    try:
        with torch.no_grad():
            tiny_model(torch.randn(3, 160, 80), chunk_batch_size=4)  # chunks of 64, 64, 32 frames per clip
            tiny_model(torch.randn(2, 160, 80), attention_mask=torch.ones(2, 160).long(), chunk_batch_size=4)
    finally:
        handle.remove()
    assert len(masks) == 3 + 2 and all(mask is None for mask in masks)  # [4 full], [2 full], [3 half]; [4], [2]


def test_default_chunk_batch_size_follows_the_memory_budget():
    model = MatpacModel(tiny_config())
    assert MatpacModel.chunk_memory_budget_bytes == 64 * 2**20
    vit_b = type("ViTB", (), {"config": MatpacConfig(), "chunk_memory_budget_bytes": 64 * 2**20})()
    vit_b.attention_scores_of_every_chunk = False  # the no-grad path: one chunk's attention scores at a time
    assert MatpacModel.default_chunk_batch_size(vit_b) == 11  # chunks of 191 tokens: 5.9 MB of activations each
    assert MatpacModel.default_chunk_batch_size(vit_b, 13) == 32  # 2-s clips: 66 tokens, larger micro-batches
    vit_b.attention_scores_of_every_chunk = True  # eager attention, the ONNX graph: plus 1.75 MB of scores a chunk
    assert MatpacModel.default_chunk_batch_size(vit_b) == 8
    assert MatpacModel.default_chunk_batch_size(vit_b, 13) == 30
    vit_b.attention_scores_of_every_chunk = False
    vit_b.config._attn_implementation = "eager"
    assert MatpacModel.default_chunk_batch_size(vit_b) == 8
    assert model.default_chunk_batch_size() > 100  # the tiny encoder's chunks are small
    model.config.chunk_batch_size = 3
    assert model.default_chunk_batch_size() == 3


@pytest.mark.parametrize("num_samples", [16000 * 7 + 301, 16000 * 3])
def test_embed_long_audio_equals_one_call(tiny_model, feature_extractor, num_samples):
    """The streaming clip embedding (windows of 2 chunks = 1.28 s here) equals the one-call pooler output, the
    frames handed to the callback rebuild the one-call frame embeddings, and the layer means match."""
    audio = (0.1 * np.random.default_rng(num_samples).standard_normal(num_samples)).astype(np.float32)
    with torch.no_grad():
        features = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
        reference = tiny_model(features["input_values"], output_hidden_states=True)
    pieces = {}
    result = embed_long_audio(
        tiny_model,
        feature_extractor,
        audio,
        sampling_rate=16000,
        window_seconds=1.3,
        output_hidden_states=True,
        frame_callback=lambda first, frames: pieces.__setitem__(first, frames.clone()),
    )
    assert len(pieces) == -(-reference.last_hidden_state.shape[1] // 8)  # windows of 2 chunks = 8 columns
    rebuilt = torch.cat([pieces[first] for first in sorted(pieces)])
    assert result.num_frames == reference.last_hidden_state.shape[1] == rebuilt.shape[0]
    assert (rebuilt - reference.last_hidden_state[0]).abs().max() <= 1e-5
    assert (result.clip_embedding - reference.pooler_output[0]).abs().max() <= 1e-5
    layer_means = torch.stack([h[0].mean(0) for h in reference.hidden_states])
    assert (result.layer_means - layer_means).abs().max() <= 1e-5


def test_embed_long_audio_refuses_multichannel(tiny_model, feature_extractor):
    with pytest.raises(ValueError, match="mono"):
        embed_long_audio(tiny_model, feature_extractor, np.zeros((2, 16000), dtype=np.float32))


def test_block_stft_is_bit_identical(feature_extractor):
    """Above `stft_block_frames` the front end runs block by block with the same numbers."""
    audio = (0.1 * np.random.default_rng(1).standard_normal(16000 * 5 + 77)).astype(np.float32)
    whole = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")["input_values"]
    blocked = MatpacFeatureExtractor()
    blocked.stft_block_frames = 37  # 499 frames in 14 blocks, the last one shorter
    assert torch.equal(blocked(audio, sampling_rate=16000, return_tensors="pt")["input_values"], whole)


@pytest.mark.parametrize(
    "flags, native",
    [({"avx2", "fma"}, False), ({"avx2", "avx512f", "avx512_bf16"}, True), ({"avx512f", "amx_bf16"}, True)],
)
def test_native_bf16_from_cpu_flags(monkeypatch, flags, native):
    monkeypatch.setattr(inference, "cpu_flags", lambda: flags)
    assert native_bf16_support("cpu")[0] is native
    assert default_autocast_dtype("cpu") == (torch.bfloat16 if native else None)


def test_native_bf16_matches_this_machine():
    flags = inference.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this machine")
    native, reason = native_bf16_support("cpu")
    assert native == bool({"amx_bf16", "avx512_bf16"} & flags), reason


def test_int8_linear_layers_stay_close_to_fp32(tiny_model):
    quantized = quantize_linear_layers_int8(tiny_model)
    assert not any(isinstance(module, torch.nn.Linear) for module in quantized.encoder.modules())
    assert any(isinstance(module, torch.nn.Linear) for module in tiny_model.encoder.modules())  # a copy
    inputs = torch.randn(4, 200, 80)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(
            quantized(inputs).pooler_output, tiny_model(inputs).pooler_output, dim=-1
        )
    assert cosine.min() > 0.99
    with pytest.raises(ValueError, match="eval"):
        quantize_linear_layers_int8(MatpacModel(tiny_config()).train())


def test_fixed_shape_forward_has_no_graph_break(tiny_model):
    """Without an attention mask the chunk plan follows from the input's shape: torch.compile traces the whole
    forward as one graph (formerly it broke at `int(chunk_time_patches.max())`)."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(tiny_model)(torch.randn(2, 150, 80))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
