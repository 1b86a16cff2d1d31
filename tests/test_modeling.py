"""MatpacConfig and MatpacModel (student encoder): positions, chunking, padding, hidden states, errors."""

import math

import pytest
import torch

from matpac_hf import MatpacConfig, MatpacModel
from matpac_hf.modeling_matpac import build_2d_sincos_position_table, crop_position_table


def tiny_config(**overrides) -> MatpacConfig:
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    values.update(overrides)
    return MatpacConfig(**values)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MatpacModel(tiny_config()).eval()


# ---------------------------------------------------------------------------------------------------------- config


def test_default_config_is_the_official_run():
    config = MatpacConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.decoder_hidden_size, config.decoder_num_hidden_layers, config.decoder_num_attention_heads) == (
        512,
        8,
        16,
    )
    assert config.num_patches == 190 and config.num_visible_patches == 57
    assert config.frame_embedding_size == 3840
    assert config.layer_norm_eps == 1e-6
    assert config.log_offset == torch.finfo(torch.float32).eps
    assert (config.spectrogram_mean, config.spectrogram_std) == (-7.056, 4.193)
    assert config.teacher_init == "independent" and config.center_update == "probabilities"
    assert (config.total_steps, config.teacher_temperature_warmup_steps) == (294816, 9827)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_mel_bins=81), "num_mel_bins \\(81\\) must be divisible by patch_size"),
        (dict(max_frames=600), "max_frames \\(600\\) must be a positive multiple"),
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size \\(30\\) must be divisible"),
        (dict(mask_ratio=1.0), "mask_ratio must be in"),
        (dict(teacher_init="copy"), "teacher_init must be one of"),
        (dict(center_update="mean"), "center_update must be one of"),
        (dict(f_max=9000.0), "Mel range"),
    ],
)
def test_config_validation_names_the_problem(overrides, message):
    with pytest.raises(Exception, match=message):
        MatpacConfig(**overrides)


# ------------------------------------------------------------------------------------------------------- positions


def test_position_table_follows_the_spec_formula():
    dim = 16
    table = build_2d_sincos_position_table(5, 38, dim)
    assert table.shape == (191, dim)
    assert torch.all(table[0] == 0), "CLS slot must be zero"
    half, quarter = dim // 2, dim // 4
    for row, col in [(0, 0), (2, 7), (4, 37)]:
        token = table[1 + row * 38 + col]
        for i in range(quarter):
            w = 10000 ** (-2 * i / half)
            # first half embeds the time column, second half the frequency row
            assert token[i].item() == pytest.approx(math.sin(col * w), abs=1e-6)
            assert token[quarter + i].item() == pytest.approx(math.cos(col * w), abs=1e-6)
            assert token[half + i].item() == pytest.approx(math.sin(row * w), abs=1e-6)
            assert token[half + quarter + i].item() == pytest.approx(math.cos(row * w), abs=1e-6)


def test_position_table_is_cut_per_frequency_row():
    table = build_2d_sincos_position_table(5, 38, 16)
    cls_position, patch_positions = crop_position_table(table, 5, 3)
    assert patch_positions.shape == (15, 16)
    for row in range(5):
        for col in range(3):
            assert torch.equal(patch_positions[row * 3 + col], table[1 + row * 38 + col])
    assert torch.equal(cls_position, table[0])


def test_position_table_survives_save_and_load(tmp_path, model):
    model.save_pretrained(tmp_path)
    reloaded = MatpacModel.from_pretrained(tmp_path)
    expected = build_2d_sincos_position_table(5, 38, 32)
    assert torch.equal(reloaded.embeddings.position_embeddings, expected)
    assert "embeddings.position_embeddings" not in reloaded.state_dict()  # fixed, never saved


# -------------------------------------------------------------------------------------------------------- forward


def test_output_shapes_and_frame_count(model):
    frames = 1368  # 13.7 s
    out = model(torch.randn(2, frames, 80))
    assert out.last_hidden_state.shape == (2, math.ceil(frames / 16), 5 * 32)
    assert out.pooler_output.shape == (2, 160)
    assert out.frame_mask.shape == (2, 86) and out.frame_mask.sum().item() == 2 * 86
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(1))


def test_frame_embedding_concatenates_frequency_tokens_of_a_column(model):
    """Rebuild the frame embeddings by hand from the encoder on one chunk."""
    x = torch.randn(1, 64, 80)
    with torch.no_grad():
        tokens = model.encoder(model.embeddings(x)).last_hidden_state  # (1, 1 + 5 * 4, 32)
        out = model(x).last_hidden_state  # (1, 4, 160)
    grid = tokens[0, 1:].reshape(5, 4, 32)
    for col in range(4):
        torch.testing.assert_close(out[0, col], torch.cat([grid[f, col] for f in range(5)]))


def test_long_input_equals_consecutive_chunks_encoded_alone(model):
    torch.manual_seed(1)
    x = torch.randn(1, 608 * 2 + 100, 80)
    with torch.no_grad():
        full = model(x).last_hidden_state
        pieces = [model(x[:, :608]), model(x[:, 608:1216]), model(x[:, 1216:])]
    expected = torch.cat([p.last_hidden_state for p in pieces], dim=1)
    assert full.shape[1] == 38 + 38 + 7
    torch.testing.assert_close(full, expected, atol=1e-5, rtol=1e-5)


def test_last_partial_column_is_zero_padded_in_the_normalised_domain(model):
    x = torch.randn(1, 15, 80)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 1))  # the official code pads with 0 after normalisation
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, model(padded).last_hidden_state)


def test_padded_batch_of_mixed_lengths_equals_one_by_one(model):
    torch.manual_seed(2)
    lengths = [1, 15, 98, 606, 1368, 700]
    x = torch.randn(len(lengths), max(lengths), 80) * 3
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        x[i, n:] = float("nan")  # whatever sits in the padding must not reach the outputs
    with torch.no_grad():
        batched = model(x, attention_mask=mask, output_hidden_states=True)
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n], output_hidden_states=True)
            cols = math.ceil(n / 16)
            assert batched.frame_mask[i].sum().item() == cols
            torch.testing.assert_close(
                batched.last_hidden_state[i, :cols], alone.last_hidden_state[0], atol=2e-5, rtol=0
            )
            torch.testing.assert_close(batched.pooler_output[i], alone.pooler_output[0], atol=2e-5, rtol=0)
            assert torch.all(batched.last_hidden_state[i, cols:] == 0)
            for layer in (0, 1, 2):
                torch.testing.assert_close(
                    batched.hidden_states[layer][i, :cols], alone.hidden_states[layer][0], atol=2e-5, rtol=0
                )


def test_hidden_states_mapping(model):
    x = torch.randn(2, 100, 80)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        chunk = model.embeddings(torch.nn.functional.pad(x, (0, 0, 0, 12)))
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    # index 0: embedded patches with positions, same frame layout
    grid = chunk[:, 1:].reshape(2, 5, 7, 32).permute(0, 2, 1, 3).reshape(2, 7, 160)
    torch.testing.assert_close(out.hidden_states[0], grid)
    # the last one is before the final norm; last_hidden_state is after it
    last = out.hidden_states[-1].reshape(2, 7, 5, 32)
    normed = model.encoder.layernorm(last).reshape(2, 7, 160)
    torch.testing.assert_close(out.last_hidden_state, normed, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.hidden_states[-1], out.last_hidden_state)


def test_sdpa_and_eager_agree_on_padded_batches():
    torch.manual_seed(3)
    config = tiny_config()
    sdpa = MatpacModel(config).eval()
    eager = MatpacModel.from_pretrained(None, config=config, state_dict=sdpa.state_dict(), attn_implementation="eager")
    eager.eval()
    x = torch.randn(2, 700, 80)
    mask = torch.ones(2, 700, dtype=torch.long)
    mask[1, 300:] = 0
    with torch.no_grad():
        torch.testing.assert_close(
            sdpa(x, attention_mask=mask).last_hidden_state,
            eager(x, attention_mask=mask).last_hidden_state,
            atol=1e-5,
            rtol=1e-5,
        )


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(4)
    model = MatpacModel(tiny_config()).train()
    x = torch.randn(2, 640, 80)

    def grads():
        model.zero_grad()
        model(x).pooler_output.square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    reference = grads()
    model.activation_checkpointing_enable()  # transformers v5 name of gradient_checkpointing_enable
    assert all(layer.gradient_checkpointing for layer in model.encoder.layers)
    checkpointed = grads()
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


def test_bf16_autocast_stays_close_to_fp32(model):
    x = torch.randn(2, 608, 80)
    with torch.no_grad():
        fp32 = model(x).pooler_output
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).pooler_output.float()
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min() > 0.99


# --------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda: torch.randn(100, 80), "needs a batch dimension"),
        (lambda: torch.randn(2, 80, 100), "looks like \\(batch, 80, num_frames\\)"),
        (lambda: torch.randn(2, 16000), "Raw waveforms go through MatpacFeatureExtractor"),
        (lambda: torch.randn(2, 0, 80), "is empty"),
        (lambda: [[0.0] * 10], "must be a torch.Tensor"),
    ],
)
def test_bad_inputs_get_clear_errors(model, make_input, message):
    with pytest.raises(ValueError, match=message):
        model(make_input())


def test_bad_attention_masks_get_clear_errors(model):
    x = torch.randn(2, 50, 80)
    with pytest.raises(ValueError, match="`attention_mask` must have shape"):
        model(x, attention_mask=torch.ones(2, 49))
    mask = torch.ones(2, 50)
    mask[1] = 0
    with pytest.raises(ValueError, match="marks no valid frame for batch rows \\[1\\]"):
        model(x, attention_mask=mask)
    left_padded = torch.ones(2, 50)
    left_padded[0, :10] = 0
    with pytest.raises(ValueError, match="rows \\[0\\] are not right-padded"):
        model(x, attention_mask=left_padded)
