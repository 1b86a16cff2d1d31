"""MatpacConfig and MatpacModel (student encoder): positions, chunking, padding, hidden states, attentions, errors;
the heads' shared conventions (freezing, weighted layer sum) and MatpacForAudioFrameClassification.

The tiny config (tests/matpac_testing.py) encodes chunks of `max_frames=64` frames (4 patch columns), so clips over 0.64 s
exercise the chunking."""

import math
from unittest import mock

import pytest
import torch
from matpac_testing import tiny_config
from transformers import AutoModelForAudioFrameClassification
from transformers.utils import logging as transformers_logging

from matpac_hf import (
    MatpacConfig,
    MatpacForAudioClassification,
    MatpacForAudioFrameClassification,
    MatpacModel,
    fast_inference,
    modeling_matpac,
)
from matpac_hf.modeling_matpac import build_2d_sincos_position_table, crop_position_table


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
    expected = build_2d_sincos_position_table(5, 4, 32)
    assert torch.equal(reloaded.embeddings.position_embeddings, expected)
    assert "embeddings.position_embeddings" not in reloaded.state_dict()  # fixed, never saved


def test_encoder_loading_skips_the_other_parts_of_a_folder_and_reports_unknown_keys(tmp_path):
    """`MatpacModel.from_pretrained` on a pretraining folder skips the predictor, heads, teachers and loss quietly; a
    key it does not know, such as the top-level `center` of pre-release pretraining folders, is reported."""
    from matpac_hf import MatpacForPreTraining

    torch.manual_seed(0)
    pretraining = MatpacForPreTraining(tiny_config())
    state = pretraining.state_dict()
    state["center"] = state.pop("classification_loss.center")
    pretraining.save_pretrained(tmp_path, state_dict=state)
    encoder, info = MatpacModel.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["unexpected_keys"]) == {"center"} and not info["missing_keys"]
    torch.testing.assert_close(encoder.state_dict(), pretraining.matpac.state_dict())


def test_patch_embedding_init_is_xavier_of_the_flattened_kernel_and_spares_loaded_weights(tmp_path):
    """The official init of the kernel: xavier-uniform of its `(hidden, patch_size**2)` view. `from_pretrained` keeps
    the loaded kernel (the init goes through `transformers.initialization`, which skips loaded tensors)."""
    torch.manual_seed(0)
    projection = MatpacModel(tiny_config()).embeddings.patch_embeddings.projection
    bound = math.sqrt(6 / (32 + 16 * 16))  # fan_out = hidden, fan_in = 1 channel x 16 x 16
    assert projection.weight.abs().max() <= bound and projection.weight.abs().max() > 0.9 * bound
    saved = MatpacModel(tiny_config())
    with torch.no_grad():
        saved.embeddings.patch_embeddings.projection.weight.fill_(0.5)
    saved.save_pretrained(tmp_path)
    reloaded = MatpacModel.from_pretrained(tmp_path).embeddings.patch_embeddings.projection
    assert torch.equal(reloaded.weight, torch.full_like(reloaded.weight, 0.5))


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
    x = torch.randn(1, 64 * 2 + 100, 80)
    with torch.no_grad():
        full = model(x).last_hidden_state
        pieces = [model(x[:, :64]), model(x[:, 64:128]), model(x[:, 128:])]
    expected = torch.cat([p.last_hidden_state for p in pieces], dim=1)
    assert full.shape[1] == 4 + 4 + 7
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
    x = torch.randn(2, 60, 80)  # one chunk, 4 columns
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        chunk = model.embeddings(torch.nn.functional.pad(x, (0, 0, 0, 4)))
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    # index 0: embedded patches with positions, same frame layout
    grid = chunk[:, 1:].reshape(2, 5, 4, 32).permute(0, 2, 1, 3).reshape(2, 4, 160)
    torch.testing.assert_close(out.hidden_states[0], grid)
    # the last one is before the final norm; last_hidden_state is after it
    last = out.hidden_states[-1].reshape(2, 4, 5, 32)
    normed = model.encoder.layernorm(last).reshape(2, 4, 160)
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


# ----------------------------------------------------------------------------------------------------- attentions


@pytest.fixture(scope="module")
def eager_model(model):
    eager = MatpacModel.from_pretrained(
        None, config=model.config, state_dict=model.state_dict(), attn_implementation="eager"
    )
    return eager.eval()


def test_attentions_are_per_clip_and_chunk(eager_model):
    """`attentions[layer]` is `(batch, num_chunks, heads, seq, seq)`: clip 0 (150 frames) has chunks of 4, 4 and 2
    columns, clip 1 (40 frames) one chunk of 3 columns. Each valid block is that chunk's attention encoded alone;
    padded tokens and missing chunks are exactly 0."""
    torch.manual_seed(5)
    x = torch.randn(2, 150, 80)
    mask = torch.ones(2, 150, dtype=torch.long)
    mask[1, 40:] = 0
    with torch.no_grad():
        attentions = eager_model(x, attention_mask=mask, output_attentions=True).attentions
    assert len(attentions) == 2
    assert attentions[0].shape == (2, 3, 2, 21, 21)  # seq = CLS + 5 frequency rows x 4 columns

    def token_index(num_columns):  # positions of a chunk's tokens in the 21-token layout (rows of 4 columns)
        return torch.tensor([0] + [1 + row * 4 + col for row in range(5) for col in range(num_columns)])

    for clip, chunk, start, frames in [(0, 0, 0, 64), (0, 1, 64, 64), (0, 2, 128, 22), (1, 0, 0, 40)]:
        piece = x[clip : clip + 1, start : start + frames]
        columns = math.ceil(frames / 16)
        piece = torch.nn.functional.pad(piece, (0, 0, 0, columns * 16 - frames))
        with torch.no_grad():
            alone = eager_model.encoder(eager_model.embeddings(piece), output_attentions=True).attentions
        index = token_index(columns)
        for layer in range(2):
            block = attentions[layer][clip, chunk]
            torch.testing.assert_close(block[:, index][:, :, index], alone[layer][0], atol=1e-5, rtol=1e-5)
            outside = torch.ones(21, 21, dtype=torch.bool)
            outside[index[:, None], index[None, :]] = False
            assert torch.all(block[:, outside] == 0)
            torch.testing.assert_close(block[:, index].sum(-1), torch.ones(2, len(index)))  # rows are distributions
    assert torch.all(attentions[1][1, 1:] == 0)  # clip 1 has no second or third chunk


def test_output_attentions_under_sdpa_falls_back_to_eager_with_a_warning(model, eager_model, caplog):
    """The default sdpa kernel never forms attention probabilities; asked for them, the forward warns once and
    computes them with eager attention (transformers' sdpa path alone returns `None`s)."""
    assert model.config._attn_implementation == "sdpa"
    x = torch.randn(2, 100, 80)
    mask = torch.ones(2, 100, dtype=torch.long)
    mask[0, 70:] = 0
    transformers_logging.get_logger("matpac_hf.modeling_matpac").warning_once.cache_clear()
    with torch.no_grad():
        sdpa = model(x, attention_mask=mask, output_attentions=True)
        eager = eager_model(x, attention_mask=mask, output_attentions=True)
    assert "falls back to eager attention" in caplog.text
    assert all(a is not None for a in sdpa.attentions)
    for sdpa_layer, eager_layer in zip(sdpa.attentions, eager.attentions):
        torch.testing.assert_close(sdpa_layer, eager_layer, atol=1e-6, rtol=0)
    torch.testing.assert_close(sdpa.last_hidden_state, eager.last_hidden_state, atol=1e-5, rtol=1e-5)
    # return_dict=False (transformers' can_return_tuple): the same tensors, None entries dropped
    as_tuple = model(x, attention_mask=mask, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 3
    torch.testing.assert_close(as_tuple[0], sdpa.last_hidden_state, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------- heads: freezing, weighted sum

HEADS = [MatpacForAudioClassification, MatpacForAudioFrameClassification]


@pytest.mark.parametrize("head_class", HEADS)
def test_freeze_encoder_is_applied_after_init_and_after_loading(head_class, tmp_path):
    head = head_class(tiny_config(num_labels=3, freeze_encoder=True, use_weighted_layer_sum=True))
    trainable = {name for name, parameter in head.named_parameters() if parameter.requires_grad}
    assert trainable == {"layer_weights", "classifier.weight", "classifier.bias"}
    head.save_pretrained(tmp_path / "frozen")
    reloaded = head_class.from_pretrained(tmp_path / "frozen")  # the loader re-creates every parameter as trainable
    assert {name for name, parameter in reloaded.named_parameters() if parameter.requires_grad} == trainable

    unfrozen = head_class(tiny_config(num_labels=3))
    assert all(parameter.requires_grad for parameter in unfrozen.parameters())
    unfrozen.freeze_base_model()
    assert unfrozen.config.freeze_encoder and not any(p.requires_grad for p in unfrozen.matpac.parameters())
    unfrozen.save_pretrained(tmp_path / "frozen_later")
    reloaded = head_class.from_pretrained(tmp_path / "frozen_later")
    assert not any(p.requires_grad for p in reloaded.matpac.parameters())
    assert reloaded.classifier.weight.requires_grad


def _heads_with_shared_weights(head_class, **overrides):
    """The same random weights in a head with and one without the weighted layer sum."""
    torch.manual_seed(6)
    plain = head_class(tiny_config(num_labels=3, **overrides)).eval()
    weighted = head_class(tiny_config(num_labels=3, use_weighted_layer_sum=True, **overrides)).eval()
    missing, unexpected = weighted.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["layer_weights"] and unexpected == []
    return plain, weighted


@pytest.mark.parametrize(
    "head_class, overrides",
    [
        (MatpacForAudioClassification, {}),
        (MatpacForAudioClassification, {"classifier_pooling": "mean"}),
        (MatpacForAudioFrameClassification, {}),
    ],
)
def test_weighted_layer_sum_is_a_softmax_mix_of_the_hidden_states(head_class, overrides):
    plain, weighted = _heads_with_shared_weights(head_class, **overrides)
    torch.manual_seed(7)
    x = torch.randn(3, 100, 80)
    mask = torch.ones(3, 100, dtype=torch.long)
    mask[2, 30:] = 0
    with torch.no_grad():
        # All the weight on the last layer: exactly the head without the weighted sum.
        weighted.layer_weights.copy_(torch.tensor([-float("inf"), -float("inf"), 0.0]))
        torch.testing.assert_close(weighted(x, attention_mask=mask).logits, plain(x, attention_mask=mask).logits)
        assert weighted(x, attention_mask=mask).hidden_states is None  # used inside, returned only when asked

        # Weights (1, 2, 3) before the softmax: the head reads that mix of the embedded patches, block 1 and the
        # final-normed last block, computed here by hand from the encoder's outputs.
        weighted.layer_weights.copy_(torch.tensor([1.0, 2.0, 3.0]))
        encoder = plain.matpac(x, attention_mask=mask, output_hidden_states=True)
        mix = torch.softmax(torch.tensor([1.0, 2.0, 3.0]), 0)
        frames = (
            mix[0] * encoder.hidden_states[0] + mix[1] * encoder.hidden_states[1] + mix[2] * encoder.last_hidden_state
        )
        if head_class is MatpacForAudioFrameClassification:
            expected = plain.classifier(frames)
        elif overrides.get("classifier_pooling") == "mean":
            expected = plain.classifier(plain.pool(frames, encoder.frame_mask))
        else:
            expected = plain.classifier(frames.sum(1) / encoder.frame_mask.sum(1, keepdim=True))
        torch.testing.assert_close(weighted(x, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)


def test_layer_weights_train_with_a_frozen_encoder():
    head = MatpacForAudioClassification(tiny_config(num_labels=3, freeze_encoder=True, use_weighted_layer_sum=True))
    torch.testing.assert_close(head.layer_weights.detach(), torch.full((3,), 1 / 3))  # uniform at init
    head(torch.randn(2, 40, 80), labels=torch.tensor([0, 2])).loss.backward()
    assert head.layer_weights.grad is not None and head.layer_weights.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in head.matpac.parameters())


# ------------------------------------------------------------------------------- MatpacForAudioFrameClassification


@pytest.fixture(scope="module")
def frame_head():
    torch.manual_seed(8)
    return MatpacForAudioFrameClassification(tiny_config(num_labels=3)).eval()


def test_frame_head_is_the_auto_frame_classifier():
    assert type(AutoModelForAudioFrameClassification.from_config(tiny_config())) is MatpacForAudioFrameClassification


def test_frame_logits_are_a_linear_map_of_each_frame_embedding(frame_head):
    x = torch.randn(2, 150, 80)
    mask = torch.ones(2, 150, dtype=torch.long)
    mask[1, 33:] = 0
    with torch.no_grad():
        out = frame_head(x, attention_mask=mask)
        encoder = frame_head.matpac(x, attention_mask=mask)
    assert out.logits.shape == (2, 10, 3)  # one row per 16 frames (160 ms)
    assert out.frame_mask.tolist() == [[1] * 10, [1] * 3 + [0] * 7]
    torch.testing.assert_close(out.logits, frame_head.classifier(encoder.last_hidden_state))


def test_frame_losses_cover_only_the_frames_of_each_clip(frame_head):
    torch.manual_seed(9)
    x = torch.randn(2, 150, 80)
    mask = torch.ones(2, 150, dtype=torch.long)
    mask[1, 33:] = 0  # clip 1: 3 frames
    valid = torch.zeros(2, 10, dtype=torch.bool)
    valid[0], valid[1, :3] = True, True
    with torch.no_grad():
        logits = frame_head(x, attention_mask=mask).logits

    frame_head.config.problem_type = None
    classes = torch.randint(0, 3, (2, 10))
    loss = frame_head(x, attention_mask=mask, labels=classes).loss
    assert frame_head.config.problem_type == "single_label_classification"
    expected = -torch.log_softmax(logits[valid], -1).gather(1, classes[valid][:, None]).mean()
    torch.testing.assert_close(loss, expected)
    in_padding_changed = classes.clone()
    in_padding_changed[1, 3:] = (in_padding_changed[1, 3:] + 1) % 3
    torch.testing.assert_close(frame_head(x, attention_mask=mask, labels=in_padding_changed).loss, loss)

    frame_head.config.problem_type = None
    multi_hot = (torch.rand(2, 10, 3) > 0.5).float()
    loss = frame_head(x, attention_mask=mask, labels=multi_hot).loss
    assert frame_head.config.problem_type == "multi_label_classification"
    probabilities = torch.sigmoid(logits[valid])
    targets = multi_hot[valid]
    expected = -(targets * probabilities.log() + (1 - targets) * (1 - probabilities).log()).mean()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)

    with pytest.raises(ValueError, match=r"must have shape \(2, 10, 3\) .*got \(2, 9, 3\)"):
        frame_head(x, attention_mask=mask, labels=multi_hot[:, :9])
    frame_head.config.problem_type = None


def test_frame_head_learns_to_tag_frames():
    """A tone switched on and off every 160 ms frame, tagged per frame by the head on a frozen random encoder: the
    training accuracy goes from chance to > 95% in 60 Adam steps."""
    torch.manual_seed(10)
    head = MatpacForAudioFrameClassification(tiny_config(num_labels=2, freeze_encoder=True))
    on = torch.randint(0, 2, (16, 12))  # (clips, frames): is the tone on?
    x = 0.3 * torch.randn(16, 12 * 16, 80)
    x[:, :, 20:26] += 3.0 * on.repeat_interleave(16, dim=1)[:, :, None]  # a band of 6 mel bins, frame by frame
    optimizer = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=1e-2)
    accuracy = lambda: (head(x).logits.argmax(-1) == on).float().mean().item()  # noqa: E731
    with torch.no_grad():
        before = accuracy()
    for _ in range(60):
        optimizer.zero_grad()
        head(x, labels=on).loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = accuracy()
    assert before < 0.75 and after > 0.95, (before, after)


def test_layer_weights_start_uniform_when_loaded_from_an_encoder_folder(tmp_path):
    """`from_pretrained(encoder_folder, use_weighted_layer_sum=True)`: the missing `layer_weights` are created on the
    meta device and filled by `_init_weights` (uniform, as a fresh head)."""
    MatpacModel(tiny_config()).save_pretrained(tmp_path)
    head = MatpacForAudioClassification.from_pretrained(tmp_path, use_weighted_layer_sum=True, num_labels=3)
    torch.testing.assert_close(head.layer_weights.detach(), torch.full((3,), 1 / 3))


def test_trainer_scales_the_batch_mean_losses_for_gradient_accumulation(tmp_path):
    """`forward` takes `**kwargs` (TransformersKwargs), which the Trainer reads as "the model normalises the loss by
    `num_items_in_batch` itself" and then skips its gradient-accumulation scaling. MATPAC's losses are batch means, so
    the models say `accepts_loss_kwargs = False`."""
    from transformers import Trainer, TrainingArguments

    for head_class in HEADS:
        args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, gradient_accumulation_steps=4)
        assert Trainer(model=head_class(tiny_config()), args=args).model_accepts_loss_kwargs is False


# ------------------------------------------------------------------------------------------- no-grad in-place path


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("num_frames", [48, 320])  # 16 tokens (sdpa kernel), 101 tokens (attention per chunk)
def test_no_grad_in_place_path_computes_what_the_autograd_path_does(attn_implementation, num_frames):
    """Under no-grad the blocks update the tokens in place, reuse activation buffers and (from
    `fast_inference.PER_CHUNK_ATTENTION_MIN_TOKENS` tokens, no mask) run attention chunk by chunk: the same math as the path with
    autograd, which keeps the plain modules."""
    torch.manual_seed(0)
    config = tiny_config(max_frames=320, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    model = MatpacModel.from_pretrained(
        None, config=config, state_dict=MatpacModel(config).state_dict(), attn_implementation=attn_implementation
    ).eval()
    with torch.no_grad():  # the official init zeroes every bias: give them values, the path adds them its own way
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(std=0.5)
    tokens = model.embeddings(torch.randn(3, num_frames, 80)).detach()
    mask = torch.ones(tokens.shape[:2], dtype=torch.long)
    mask[1, tokens.shape[1] // 2 :] = 0
    for attention_mask in (None, mask):
        with torch.enable_grad():
            expected = model.encoder(tokens.requires_grad_(), attention_mask=attention_mask).last_hidden_state
        tokens = tokens.detach()
        before = tokens.clone()
        with (
            torch.no_grad(),
            mock.patch.object(
                fast_inference, "attend_per_chunk", autospec=True, side_effect=fast_inference.attend_per_chunk
            ) as per_chunk,
        ):
            assert fast_inference.fast_path_applies(model.encoder)
            got = model.encoder(tokens, attention_mask=attention_mask).last_hidden_state
        assert per_chunk.called == (
            attention_mask is None and tokens.shape[1] >= fast_inference.PER_CHUNK_ATTENTION_MIN_TOKENS
        )
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
        assert torch.equal(tokens, before)  # the caller's tokens are left alone


def test_no_grad_in_place_path_is_skipped_where_it_would_differ():
    """Active dropout, autocast and quantised (non-`nn.Linear`) layers keep the plain forward."""
    torch.manual_seed(0)
    layer = MatpacModel(tiny_config(hidden_dropout_prob=0.1)).encoder.layers[0]
    with torch.no_grad():
        assert not fast_inference.layer_applies(layer.train())
        assert fast_inference.layer_applies(layer.eval())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fast_inference.layer_applies(layer)
        layer.mlp.fc1 = torch.nn.Identity()
        assert not fast_inference.layer_applies(layer)
    assert not fast_inference.fast_path_applies(MatpacModel(tiny_config()).eval().encoder)  # grad enabled


def test_chunks_of_several_lengths_packed_into_one_call_give_the_per_micro_batch_outputs():
    """On the no-grad path micro-batches of different chunk lengths share one encoder call (tokens packed, attention
    per chunk): the outputs are those of one call per micro-batch."""
    torch.manual_seed(0)
    model = MatpacModel(tiny_config(max_frames=320)).eval()  # full chunks of 101 tokens: attention per chunk
    x = torch.randn(3, 800, 80)  # per clip 320 + 320 + 160 frames (101, 101 and 51 tokens)
    mask = torch.ones(3, 800, dtype=torch.long)
    mask[1, 500:] = 0  # 320 + 180 frames (101, 61 tokens)
    chunks = model._plan_chunks([800, 500, 800], None)
    full_chunk_tokens = 1 + model.config.num_frequency_patches * model.config.max_time_patches
    token_budget = model.default_chunk_batch_size() * full_chunk_tokens
    assert len(chunks) == 3
    assert len(fast_inference.pack_micro_batches(chunks, model.config.num_frequency_patches, token_budget)) == 1
    with torch.no_grad():
        packed = model(x, attention_mask=mask)

        def one_call_each(micro_batches, num_frequency_patches, token_budget):
            return [[chunks] for chunks in micro_batches]

        with mock.patch.object(fast_inference, "pack_micro_batches", one_call_each):
            per_micro_batch = model(x, attention_mask=mask)
        # Hidden states need the plain blocks: no packing, and the same last_hidden_state.
        with mock.patch.object(modeling_matpac, "fast_encode_micro_batches", side_effect=AssertionError("packed")):
            plain = model(x, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(packed.last_hidden_state, per_micro_batch.last_hidden_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(packed.pooler_output, per_micro_batch.pooler_output, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(packed.last_hidden_state, plain.last_hidden_state, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="no-grad path"):
        fast_inference.fast_encode(model.encoder, torch.randn(1, 42, 32), sequence_groups=[(2, 21)])


def test_a_subclass_with_its_own_encoder_core_gets_one_chunk_length_per_call():
    """`packs_chunk_lengths = False` (OnnxMatpacModel): `_encode_chunks` sees every micro-batch on its own, in the
    plan's order, and the outputs are those of the packed forward."""
    torch.manual_seed(0)
    calls = []

    class OneLengthPerCall(MatpacModel):
        packs_chunk_lengths = False

        def _encode_chunks(self, chunk_values, output_hidden_states=False, output_attentions=False):
            calls.append(tuple(chunk_values.shape))
            return super()._encode_chunks(chunk_values, output_hidden_states, output_attentions)

    config = tiny_config(max_frames=320)
    model = MatpacModel(config).eval()
    one_length = OneLengthPerCall(config).eval()
    one_length.load_state_dict(model.state_dict())
    x = torch.randn(3, 800, 80)
    with torch.no_grad():
        expected, got = model(x), one_length(x)
    assert calls == [(3 * 2, 320, 80), (3, 160, 80)]
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-6, rtol=1e-6)


def test_no_grad_path_stands_aside_for_hooks_on_the_encoder_and_its_blocks():
    """The fast path runs the blocks' math without calling the modules: a forward hook on a block (or on the encoder)
    switches it off, so the hook runs and sees the block's own output."""
    torch.manual_seed(0)
    model = MatpacModel(tiny_config()).eval()
    x = torch.randn(2, 100, 80)
    with torch.no_grad():
        expected = model(x).last_hidden_state
    seen = []
    for module in (model.encoder.layers[1], model.encoder):
        handle = module.register_forward_hook(lambda module, args, output: seen.append(module))
        try:
            with torch.no_grad():
                assert not fast_inference.fast_path_applies(model.encoder)
                got = model(x).last_hidden_state
        finally:
            handle.remove()
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    # 2 micro-batches (full chunks, then the short last ones): the block, then the encoder, once per call
    assert seen == [model.encoder.layers[1]] * 2 + [model.encoder] * 2
    with torch.no_grad():
        assert fast_inference.fast_path_applies(model.encoder)


# ------------------------------------------------------------------------------------- attention implementations


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_declared_attention_implementations_train_on_cpu(attn_implementation):
    """The implementations the model declares run forward and backward and agree with eager attention."""
    torch.manual_seed(0)
    reference = MatpacForAudioClassification(tiny_config(num_labels=3)).train()
    model = MatpacForAudioClassification.from_pretrained(
        None, config=reference.config, state_dict=reference.state_dict(), attn_implementation=attn_implementation
    ).train()
    reference.config._attn_implementation = "eager"
    assert model.config._attn_implementation == attn_implementation
    inputs = torch.randn(2, 100, 80)
    mask = torch.ones(2, 100, dtype=torch.long)
    mask[1, 70:] = 0
    for candidate in (model, reference):
        candidate(inputs, attention_mask=mask, labels=torch.tensor([0, 2])).loss.backward()
    for (name, parameter), (_, expected) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(parameter.grad, expected.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attn_implementation", ["flex_attention", "flash_attention_2", "flash_attention_3"])
def test_undeclared_attention_implementations_are_refused_naming_what_works(attn_implementation):
    assert MatpacModel._supports_sdpa and not MatpacModel._supports_flex_attn and not MatpacModel._supports_flash_attn
    with pytest.raises(ValueError, match=r"attn_implementation=.*not supported by MATPAC models.*'sdpa'.*'eager'"):
        MatpacModel._from_config(tiny_config(), attn_implementation=attn_implementation)
    model = MatpacModel(tiny_config())
    with pytest.raises(ValueError, match=r"'sdpa'.*'eager'"):
        model.set_attn_implementation(attn_implementation)
    assert model.config._attn_implementation == "sdpa"


# ---------------------------------------------------------------------------------- freeze_feature_encoder


def test_freeze_feature_encoder_freezes_the_patch_embedding_only():
    """transformers' audio-classification example calls `freeze_feature_encoder()` by default: the front end that
    turns the input into tokens (the patch embedding) stops training, the blocks and the head still train."""
    torch.manual_seed(0)
    model = MatpacForAudioClassification(tiny_config(num_labels=2)).train()
    model.freeze_feature_encoder()
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    assert frozen == {
        "matpac.embeddings.patch_embeddings.projection.weight",
        "matpac.embeddings.patch_embeddings.projection.bias",
    }
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 40, 80), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    assert not changed & frozen and "classifier.weight" in changed and "matpac.embeddings.cls_token" in changed
    assert not model.config.freeze_encoder  # the whole-encoder switch is a different one


# ---------------------------------------------------------------------------------------------- torch.compile


def compiled_training_losses(model, batches):
    """Losses of one SGD step per batch with `model` (compiled or not), from the same start."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for inputs, mask, labels in batches:
        loss = model(inputs, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_training_under_torch_compile_with_changing_clip_lengths():
    """A compiled model trains on batches whose length changes (one chunk, then two, padded or not) and gives the
    losses of the eager model: the frame count becomes a dynamic shape at the second length."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = MatpacForAudioClassification(tiny_config(num_labels=2)).train()
    twin = MatpacForAudioClassification(tiny_config(num_labels=2)).train()
    twin.load_state_dict(eager.state_dict())
    generator = torch.Generator().manual_seed(0)
    batches = []
    for num_frames, valid in ((30, None), (44, None), (52, 40), (100, None)):
        mask = None
        if valid is not None:
            mask = torch.ones(2, num_frames, dtype=torch.long)
            mask[1, valid:] = 0
        batches.append((torch.randn(2, num_frames, 80, generator=generator), mask, torch.tensor([0, 1])))
    expected = compiled_training_losses(eager, batches)
    losses = compiled_training_losses(torch.compile(twin), batches)
    assert losses == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_trainer_torch_compile_with_changing_clip_lengths(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from matpac_hf import MatpacFeatureExtractor

    # TrainingArguments(torch_compile=True) exports ACCELERATE_DYNAMO_BACKEND=inductor to the process: every later
    # Accelerator would compile its model. monkeypatch restores the variable (absent) after the test.
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "no")
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MatpacForAudioClassification(tiny_config(num_labels=2))
    feature_extractor = MatpacFeatureExtractor()
    generator = torch.Generator().manual_seed(0)
    clips = [torch.randn(int(seconds * 16000), generator=generator).numpy() for seconds in (0.3, 0.5, 0.45, 0.9)]
    features = feature_extractor(clips, sampling_rate=16000)
    dataset = Dataset.from_dict({"input_values": features["input_values"], "labels": [0, 1, 1, 0]})
    args = TrainingArguments(
        output_dir=str(tmp_path), torch_compile=True, per_device_train_batch_size=1, max_steps=4, use_cpu=True,
        report_to="none", save_strategy="no", learning_rate=1e-3, dataloader_pin_memory=False,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=feature_extractor)
    try:
        history = trainer.train()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # its state would outlive the test too
    assert history.global_step == 4 and math.isfinite(history.training_loss)
