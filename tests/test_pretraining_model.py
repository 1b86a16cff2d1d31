"""MatpacForPreTraining: masking, teachers, EMA, center, schedules, MATPAC++ heads, losses, saving, distributed."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matpac_testing import TINY_MATPAC_CONFIG, tiny_config  # max_frames=64: 5 x 4 = 20 patches, 6 visible, 14 masked
from transformers import AutoModelForPreTraining

from matpac_hf import MatpacConfig, MatpacForPreTraining, MatpacModel
from matpac_hf.modeling_matpac import ema_decays_at, mcl_temperature_at, teacher_temperature_at


# Predictor and head sizes of the tiny config (an encoder-only folder does not show them)
TINY_HEADS = {key: value for key, value in TINY_MATPAC_CONFIG.items() if key.startswith(("decoder_", "head_"))}


def tiny_model(seed: int = 0, **overrides) -> MatpacForPreTraining:
    torch.manual_seed(seed)
    return MatpacForPreTraining(tiny_config(**overrides))


def log_mel(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 80, generator=torch.Generator().manual_seed(seed))


def capture_inputs(module: torch.nn.Module, store: list):
    return module.register_forward_hook(lambda mod, args, output: store.append((args[0].detach(), output)))


# ------------------------------------------------------------------------------------------------------------- masking


def test_masking_default_grid_57_visible_133_masked_disjoint():
    config = tiny_config(max_frames=608)
    assert config.num_patches == 190 and config.num_visible_patches == 57
    model = MatpacForPreTraining(config).train()
    student_inputs, teacher_inputs = [], []
    capture_inputs(model.matpac.encoder, student_inputs)
    capture_inputs(model.teacher_encoder, teacher_inputs)

    values = log_mel(3, 608)
    noise = torch.rand(3, 190, generator=torch.Generator().manual_seed(5))
    outputs = model(values, noise=noise)

    assert outputs.mask.shape == (3, 190) and outputs.mask.dtype == torch.bool
    assert outputs.mask.sum(1).tolist() == [133, 133, 133]
    assert outputs.predictions.shape == (3, 133, 32)
    order = noise.argsort(1)
    patch_tokens = model.matpac.embeddings.embed_patches(values).detach()  # (3, 190, 32)
    student_tokens, teacher_tokens = student_inputs[0][0], teacher_inputs[0][0]
    assert student_tokens.shape == (3, 1 + 57, 32) and teacher_tokens.shape == (3, 1 + 133, 32)
    for b in range(3):
        visible, masked = order[b, :57], order[b, 57:]
        assert set(visible.tolist()).isdisjoint(masked.tolist())
        assert torch.equal(outputs.mask[b].nonzero().flatten().sort().values, masked.sort().values)
        # the student sees exactly the visible patches, the teacher exactly the masked ones (permutation order)
        torch.testing.assert_close(student_tokens[b, 1:], patch_tokens[b, visible])
        torch.testing.assert_close(teacher_tokens[b, 1:], patch_tokens[b, masked])
        cls = model.matpac.embeddings.cls_token[0, 0].detach()
        torch.testing.assert_close(student_tokens[b, 0], cls)
        torch.testing.assert_close(teacher_tokens[b, 0], cls)


def test_masking_is_random_per_sample_and_reproducible_with_a_generator():
    model = tiny_model().train()
    values = log_mel(4, 64)
    mask_a = model(values, generator=torch.Generator().manual_seed(3)).mask
    mask_b = model(values, generator=torch.Generator().manual_seed(3)).mask
    mask_c = model(values, generator=torch.Generator().manual_seed(4)).mask
    assert torch.equal(mask_a, mask_b) and not torch.equal(mask_a, mask_c)
    assert mask_a.sum(1).tolist() == [14] * 4
    assert len({tuple(row.tolist()) for row in mask_a}) == 4  # a different mask for every sample


def test_shorter_crop_multiple_of_patch_size_cuts_positions_per_row():
    model = tiny_model(max_frames=128).train()  # 5 x 8 = 40 patches; a 64-frame crop has 20
    outputs = model(log_mel(2, 64), generator=torch.Generator().manual_seed(0))
    assert outputs.mask.shape == (2, 20) and outputs.mask.sum(1).tolist() == [14, 14]


@pytest.mark.parametrize(
    "shape, message",
    [((2, 600, 80), "608"), ((2, 624, 80), "Crop or pad"), ((2, 608, 64), "transpose"), ((608, 80), "shape")],
)
def test_bad_inputs_are_refused_clearly(shape, message):
    model = MatpacForPreTraining(tiny_config(max_frames=608))
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))


def test_bad_noise_and_step_are_refused_clearly():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"`noise` must be a tensor of shape \(batch, num_patches\) = \(2, 20\)"):
        model(log_mel(2, 64), noise=torch.rand(2, 19))
    with pytest.raises(ValueError, match="non-negative integer"):
        model(log_mel(2, 64), step=-1)
    assert tiny_model(max_frames=128)(log_mel(1, 16)).mask.sum().item() == 4  # 5 patches: 1 visible, 4 masked
    with pytest.raises(ValueError, match="at least one visible"):  # masking 90 % of 5 patches leaves none visible
        tiny_model(max_frames=128, mask_ratio=0.9)(log_mel(1, 16))


# ------------------------------------------------------------------------------------------------------------ teachers


def test_teachers_get_no_gradient_and_are_not_trainable():
    model = tiny_model().train()
    outputs = model(log_mel(2, 64), step=3, generator=torch.Generator().manual_seed(0))
    outputs.loss.backward()
    teacher_names = {n for n, _ in model.named_parameters() if n.startswith(("teacher_encoder.", "teacher_head."))}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert teacher_names and trainable.isdisjoint(teacher_names)
    assert trainable == {n for n, _ in model.named_parameters()} - teacher_names
    for name, parameter in model.named_parameters():
        if name in teacher_names:
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_update_teachers_refuses_low_precision_teachers():
    model = tiny_model().to(torch.bfloat16)
    with pytest.raises(ValueError, match="torch.bfloat16.*Keep the model in float32"):
        model.update_teachers(5)


def test_update_teachers_sees_a_cast_after_earlier_updates():
    """The EMA parameter lists follow `.to()` made between updates: a cast to bf16 after a float32 update is refused,
    and a model moved back to float32 updates its current parameters."""
    model = tiny_model()
    model.update_teachers(5)
    model.to(torch.bfloat16)
    with pytest.raises(ValueError, match="torch.bfloat16"):
        model.update_teachers(6)
    model.float()
    teacher = model.teacher_encoder.layers[0].mlp.fc1.weight
    before = teacher.detach().clone()
    with torch.no_grad():
        model.matpac.encoder.layers[0].mlp.fc1.weight.add_(1.0)
    encoder_decay, _ = model.update_teachers(7)
    expected = before + (1 - encoder_decay) * (model.matpac.encoder.layers[0].mlp.fc1.weight - before)
    torch.testing.assert_close(model.teacher_encoder.layers[0].mlp.fc1.weight, expected)


def test_teacher_init_independent_and_copy_student():
    model = tiny_model(teacher_init="independent")
    student_fc1 = model.matpac.encoder.layers[0].mlp.fc1.weight
    assert not torch.equal(model.teacher_encoder.layers[0].mlp.fc1.weight, student_fc1)
    # same distribution (xavier) as the student: equal bound, different draw
    assert model.teacher_encoder.layers[0].mlp.fc1.weight.abs().max() <= math.sqrt(6 / (32 + 64)) + 1e-6
    # teacher head: trunc-normal(0.02) MLP with zero biases, prototypes shared with the student at init (gain 1)
    teacher_mlp = model.teacher_head.mlp[0].weight
    assert 0.015 < teacher_mlp.std().item() < 0.025 and teacher_mlp.abs().max() <= 2.0
    assert torch.all(model.teacher_head.mlp[0].bias == 0)
    assert model.student_head.mlp[0].weight.std().item() > 0.1  # the student MLP is xavier
    assert torch.equal(model.teacher_head.weight_norm_direction, model.student_head.weight_norm_direction)
    assert torch.all(model.student_head.weight_norm_gain == 1) and torch.all(model.teacher_head.weight_norm_gain == 1)
    assert model.student_head.weight_norm_direction.abs().max() <= 1 / math.sqrt(16)  # nn.Linear default bound

    copied = tiny_model(teacher_init="copy_student")
    for (name, teacher), (_, student) in zip(
        copied.teacher_encoder.state_dict().items(), copied.matpac.encoder.state_dict().items()
    ):
        assert torch.equal(teacher, student), name
    for (name, teacher), (_, student) in zip(
        copied.teacher_head.state_dict().items(), copied.student_head.state_dict().items()
    ):
        assert torch.equal(teacher, student), name


def test_frozen_weight_norm_gain_option():
    model = tiny_model(head_freeze_weight_norm_gain=True)
    assert not model.student_head.weight_norm_gain.requires_grad
    assert model.student_head.weight_norm_direction.requires_grad
    assert tiny_model().student_head.weight_norm_gain.requires_grad  # default (official): trainable


# ----------------------------------------------------------------------------------------------------------------- EMA


def test_update_teachers_matches_hand_computation_and_is_a_no_op_at_step_0():
    model = tiny_model(
        ema_decay_start=0.5, ema_decay_end=0.9, head_ema_decay_start=0.2, head_ema_decay_end=1.0, total_steps=10
    )
    with torch.no_grad():  # make the teachers different from the students
        for parameter in model.student_head.parameters():
            parameter.add_(0.3)
    teacher_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("teacher")}

    assert model.update_teachers(0) == (1.0, 1.0)
    for key, value in model.state_dict().items():
        if key.startswith("teacher"):
            assert torch.equal(value, teacher_before[key]), key

    encoder_decay, head_decay = model.update_teachers(5)
    assert encoder_decay == pytest.approx(0.5 + (0.9 - 0.5) * 5 / 10)  # 0.7
    assert head_decay == pytest.approx(0.2 + (1.0 - 0.2) * 5 / 10)  # 0.6
    state = model.state_dict()
    for key, teacher in teacher_before.items():
        if key.startswith("teacher_encoder."):
            student, decay = state["matpac.encoder." + key.removeprefix("teacher_encoder.")], 0.7
        else:
            student, decay = state["student_head." + key.removeprefix("teacher_head.")], 0.6
        torch.testing.assert_close(state[key], decay * teacher + (1 - decay) * student, rtol=0, atol=1e-6)

    # at the end of the anneal the head decay is 1.0: the teacher head no longer moves
    head_before = {k: v.clone() for k, v in model.teacher_head.state_dict().items()}
    assert model.update_teachers(12) == (0.9, 1.0)
    for key, value in model.teacher_head.state_dict().items():
        assert torch.equal(value, head_before[key])


# -------------------------------------------------------------------------------------------------------------- center


@pytest.mark.parametrize("center_update", ["probabilities", "logits"])
def test_center_update_matches_hand_computation(center_update):
    model = tiny_model(center_update=center_update, teacher_temperature_warmup_steps=10).train()
    teacher_logits = []
    model.teacher_head.register_forward_hook(lambda mod, args, output: teacher_logits.append(output.detach()))
    values = log_mel(3, 64)
    centers = [model.center.clone()]
    for step in (0, 4):
        model(values, step=step, generator=torch.Generator().manual_seed(step))
        centers.append(model.center.clone())
    assert centers[0].abs().sum() == 0 and centers[1].abs().sum() > 0

    expected = torch.zeros(1, 1, 40)
    for step, logits in zip((0, 4), teacher_logits):
        temperature = 0.04 + (0.07 - 0.04) * step / 10
        probs = torch.softmax((logits - expected) / temperature, dim=-1)  # uses the center before the update
        batch_output = probs if center_update == "probabilities" else logits
        expected = 0.9 * expected + 0.1 * batch_output.mean(dim=(0, 1), keepdim=True)
    torch.testing.assert_close(centers[-1], expected, rtol=1e-5, atol=1e-7)
    if center_update == "probabilities":
        assert centers[1].sum().item() == pytest.approx(0.1, abs=1e-5)  # 0.1 x a probability vector

    model.eval()  # no update in eval mode
    model(values, step=5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(model.center, centers[-1])


# ----------------------------------------------------------------------------------------------------------- schedules


def test_schedules_at_chosen_steps():
    config = MatpacConfig()  # official numbers: warm-up 9827 steps, 294816 steps in all
    assert teacher_temperature_at(config, 0) == pytest.approx(0.04)
    assert teacher_temperature_at(config, 9827 // 2) == pytest.approx(0.04 + 0.03 * (9827 // 2) / 9827)
    assert teacher_temperature_at(config, 9827) == pytest.approx(0.07)
    assert teacher_temperature_at(config, 50_000) == pytest.approx(0.07)
    assert ema_decays_at(config, 0) == pytest.approx((0.99995, 0.998))
    assert ema_decays_at(config, 294816 // 2) == pytest.approx((0.99997, 0.999), abs=1e-9)
    assert ema_decays_at(config, 294816) == pytest.approx((0.99999, 1.0))
    assert ema_decays_at(config, 10**6) == pytest.approx((0.99999, 1.0))
    assert mcl_temperature_at(config, 0) == pytest.approx(0.1)
    assert mcl_temperature_at(config, 10_000) == pytest.approx(0.1 * 0.99997**10_000)
    switch = math.ceil(math.log(1e-3) / math.log(0.99997))  # first step with T <= 1e-4: 230 255
    assert mcl_temperature_at(config, switch - 1) > 1e-4 >= mcl_temperature_at(config, switch)

    model = tiny_model(teacher_temperature_warmup_steps=100, total_steps=1000).train()
    outputs = model(log_mel(2, 64), step=50, generator=torch.Generator().manual_seed(0))
    assert outputs.teacher_temperature.item() == pytest.approx(0.055)
    assert outputs.ema_decay.item() == pytest.approx(0.99995 + 0.00004 * 0.05)
    assert outputs.head_ema_decay.item() == pytest.approx(0.998 + 0.002 * 0.05)
    assert outputs.mcl_temperature is None


# ------------------------------------------------------------------------------------------------------------ MATPAC++


def _mcl_hand_losses(model, values, step, noise):
    targets = []
    model.teacher_encoder.register_forward_hook(lambda mod, args, output: targets.append(output.last_hidden_state))
    outputs = model(values, step=step, noise=noise)
    target = torch.nn.functional.normalize(targets[-1][:, 1:].detach(), dim=-1)  # (B, M, hidden)
    candidates = outputs.candidate_predictions  # (B, M, K, hidden)
    losses = 2 - 2 * (torch.nn.functional.normalize(candidates, dim=-1) * target[:, :, None]).sum(-1)
    return outputs, losses


def test_mcl_soft_winner_takes_all_then_hard_minimum():
    model = tiny_model(use_mcl=True).train()
    assert len(model.predictor.mcl_heads) == 5 and not hasattr(model.predictor, "decoder_pred")
    values = log_mel(2, 64)
    noise = torch.rand(2, 20, generator=torch.Generator().manual_seed(1))

    step = 20_000
    temperature = 0.1 * 0.99997**step
    outputs, losses = _mcl_hand_losses(model, values, step, noise)
    assert outputs.candidate_predictions.shape == (2, 14, 5, 32)
    weights = torch.softmax(-losses.detach() / temperature, dim=-1)
    torch.testing.assert_close(outputs.prediction_loss, (weights * losses).sum(-1).mean())
    assert outputs.mcl_temperature.item() == pytest.approx(temperature)
    # the weights carry no gradient: d loss / d candidate = w_k * d l_k / d candidate / num_tokens
    grad_model = torch.autograd.grad(outputs.prediction_loss, outputs.candidate_predictions, retain_graph=True)[0]
    grad_hand = torch.autograd.grad((weights * losses).sum(-1).mean(), outputs.candidate_predictions)[0]
    torch.testing.assert_close(grad_model, grad_hand)
    # the best candidate (lowest loss) is the prediction fed to the classification head
    best = losses.argmin(-1)
    torch.testing.assert_close(
        outputs.predictions, outputs.candidate_predictions[torch.arange(2)[:, None], torch.arange(14)[None, :], best]
    )
    assert 0 < weights.max(-1).values.mean() < 1  # soft: not one-hot at this temperature
    # the classification loss reaches each token's best candidate only (not detached, as officially)
    grad_classification = torch.autograd.grad(outputs.classification_loss, outputs.candidate_predictions)[0]
    reached = grad_classification.abs().sum(-1) > 0  # (B, M, K)
    assert torch.equal(reached, torch.nn.functional.one_hot(best, 5).bool())

    outputs, losses = _mcl_hand_losses(model, values, 300_000, noise)  # T < 1e-4: hard minimum
    torch.testing.assert_close(outputs.prediction_loss, losses.min(-1).values.mean())
    assert outputs.mcl_temperature.item() == pytest.approx(1e-4)


# -------------------------------------------------------------------------------------------------------------- losses


def test_total_loss_equals_a_hand_computation():
    """Reference written per sample with explicit index lists (no batched gather / scatter)."""
    model = tiny_model(teacher_temperature_warmup_steps=10, center_momentum=0.8).train()
    with torch.no_grad():
        model.center.normal_(0, 0.1)
    center = model.center.clone()
    values = log_mel(2, 64)
    noise = torch.rand(2, 20, generator=torch.Generator().manual_seed(7))
    step = 3
    outputs = model(values, step=step, noise=noise)

    with torch.no_grad():
        embeddings, predictor = model.matpac.embeddings, model.predictor
        patch_tokens = embeddings.embed_patches(values)  # (2, 20, 32)
        cls = embeddings.cls_token[0]  # (1, 32)
        decoder_positions = predictor.position_embeddings  # (21, 32) for the 5 x 4 grid
        tau_t = 0.04 + 0.03 * step / 10
        pred_losses, cls_losses, probs_all = [], [], []
        for b in range(2):
            order = sorted(range(20), key=lambda p: noise[b, p].item())
            visible, masked = order[:6], order[6:]
            student = model.matpac.encoder(torch.cat([cls, patch_tokens[b, visible]])[None]).last_hidden_state[0]
            projected = predictor.decoder_embed(student)  # (7, 32)
            sequence = [projected[0] + decoder_positions[0]]
            for patch in range(20):
                token = projected[1 + visible.index(patch)] if patch in visible else predictor.mask_token[0, 0]
                sequence.append(token + decoder_positions[1 + patch])
            hidden = torch.stack(sequence)[None]
            for layer in predictor.layers:
                hidden = layer(hidden)[0]
            hidden = predictor.decoder_norm(hidden)[0]
            prediction = predictor.decoder_pred(hidden[[1 + p for p in masked]])  # (14, 32)
            target = model.teacher_encoder(torch.cat([cls, patch_tokens[b, masked]])[None]).last_hidden_state[0, 1:]
            cosine = torch.nn.functional.cosine_similarity(prediction, target, dim=-1)
            pred_losses.append(2 - 2 * cosine)
            teacher_probs = torch.softmax((model.teacher_head(target) - center[0]) / tau_t, dim=-1)
            student_log_probs = torch.log_softmax(model.student_head(prediction) / 0.1, dim=-1)
            cls_losses.append(-(teacher_probs * student_log_probs).sum(-1))
            probs_all.append(teacher_probs)
        prediction_loss = torch.cat(pred_losses).mean()
        classification_loss = torch.cat(cls_losses).mean()
        expected_center = 0.8 * center + 0.2 * torch.cat(probs_all).mean(0)

    torch.testing.assert_close(outputs.prediction_loss, prediction_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.classification_loss, classification_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.loss, 0.5 * prediction_loss + 0.5 * classification_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.center, expected_center, rtol=1e-5, atol=1e-6)
    assert 0 < prediction_loss < 4 and classification_loss > 0


def test_monitors_have_the_documented_meaning():
    model = tiny_model().train()
    outputs = model(log_mel(4, 64), step=1, generator=torch.Generator().manual_seed(0))
    assert 1 <= outputs.teacher_perplexity.item() <= 40
    assert 1 <= outputs.num_teacher_classes.item() <= min(40, 4 * 14)
    assert 0 <= outputs.student_teacher_agreement.item() <= 1
    assert 0 < outputs.prediction_std.item() < 1 and 0 < outputs.target_std.item() < 1
    model.eval()  # no center update: the same call gives the same loss, as a tuple too
    outputs = model(log_mel(4, 64), step=1, generator=torch.Generator().manual_seed(0))
    tuple_outputs = model(log_mel(4, 64), step=1, generator=torch.Generator().manual_seed(0), return_dict=False)
    torch.testing.assert_close(tuple_outputs[0], outputs.loss)
    assert tuple_outputs[3].shape == (4, 20) and tuple_outputs[3].dtype == torch.bool  # loss, losses, mask, ...


# ------------------------------------------------------------------------------------------- short clips (padding)


def _outputs_and_gradients(model, values, **kwargs):
    outputs = model(values, **kwargs)
    outputs.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return outputs, grads


@pytest.mark.parametrize("use_mcl", [False, True], ids=["matpac", "matpac++"])
def test_all_ones_attention_mask_gives_exactly_the_unmasked_numbers(use_mcl):
    values, noise = log_mel(3, 64), torch.rand(3, 20, generator=torch.Generator().manual_seed(4))
    runs = []
    for attention_mask in (None, torch.ones(3, 64, dtype=torch.long)):
        model = tiny_model(use_mcl=use_mcl).train()
        outputs, grads = _outputs_and_gradients(model, values, attention_mask=attention_mask, step=7, noise=noise)
        runs.append((outputs, grads, model.center.clone()))
    (plain, plain_grads, plain_center), (masked, masked_grads, masked_center) = runs
    for key, value in plain.items():
        assert torch.equal(value, masked[key]), key
    assert plain_grads.keys() == masked_grads.keys() and len(plain_grads) > 30
    for name, grad in plain_grads.items():
        assert torch.equal(grad, masked_grads[name]), name
    assert torch.equal(plain_center, masked_center) and plain_center.abs().sum() > 0
    assert plain.valid_patches.all() and plain.valid_predictions.all() and plain.valid_predictions.shape == (3, 14)


# 4 columns of 16 frames per 64-frame crop: clip lengths 64, 40 and 17 frames -> 4, 3 and 2 valid columns (a column
# with at least one valid frame counts), i.e. 20, 15 and 10 valid patches: 6 / 4 / 3 visible, 14 / 11 / 7 masked.
CLIP_FRAMES = [64, 40, 17]
CLIP_COLUMNS = [4, 3, 2]


def _padded_batch():
    values = log_mel(3, 64, seed=3)
    attention_mask = (torch.arange(64)[None, :] < torch.tensor(CLIP_FRAMES)[:, None]).long()
    noise = torch.rand(3, 20, generator=torch.Generator().manual_seed(6))
    return values, attention_mask, noise


def _clip_alone(values, noise, b):
    """Clip `b` of the padded batch on its own: cut to its valid columns, its padded frames zeroed (the model's rule)."""
    columns = CLIP_COLUMNS[b]
    clip = values[b : b + 1, : columns * 16].clone()
    clip[:, CLIP_FRAMES[b] :] = 0.0
    return clip, noise[b].view(5, 4)[:, :columns].reshape(1, -1)


def test_padded_patches_are_never_visible_nor_targets_and_their_values_do_not_matter():
    model = tiny_model().train()
    student_inputs, teacher_inputs = [], []
    capture_inputs(model.matpac.encoder, student_inputs)
    capture_inputs(model.teacher_encoder, teacher_inputs)
    values, attention_mask, noise = _padded_batch()
    outputs = model(values, attention_mask=attention_mask, step=2, noise=noise)

    column = torch.arange(20) % 4  # frequency-major patches: column of each patch
    valid = column[None, :] < torch.tensor(CLIP_COLUMNS)[:, None]  # (3, 20)
    assert torch.equal(outputs.valid_patches, valid)
    assert not (outputs.mask & ~valid).any()  # padded patches are never targets
    assert outputs.mask.sum(1).tolist() == [14, 11, 7]
    assert outputs.predictions.shape == (3, 14, 32) and outputs.valid_predictions.sum(1).tolist() == [14, 11, 7]
    # the student sees exactly each clip's visible patches (6, 4, 3 of them), the teacher exactly its masked ones
    patch_tokens = model.matpac.embeddings.embed_patches(values.masked_fill(~attention_mask.bool()[..., None], 0))
    student_tokens, teacher_tokens = student_inputs[0][0], teacher_inputs[0][0]
    assert student_tokens.shape == (3, 1 + 6, 32) and teacher_tokens.shape == (3, 1 + 14, 32)
    for b, (num_visible, num_masked) in enumerate([(6, 14), (4, 11), (3, 7)]):
        order = [p for p in noise[b].argsort().tolist() if valid[b, p]]
        visible, masked = order[:num_visible], order[num_visible:]
        assert set(visible) | set(masked) == set(valid[b].nonzero().flatten().tolist())
        assert outputs.mask[b].nonzero().flatten().tolist() == sorted(masked)
        torch.testing.assert_close(student_tokens[b, 1 : 1 + num_visible], patch_tokens.detach()[b, visible])
        torch.testing.assert_close(teacher_tokens[b, 1 : 1 + num_masked], patch_tokens.detach()[b, masked])

    # whatever the padding holds (even NaN), nothing changes: losses, center, gradients
    runs = []
    for fill in (0.0, float("nan"), 1e4):
        model = tiny_model().train()
        padded = values.masked_fill(~attention_mask.bool()[..., None], fill)
        result, grads = _outputs_and_gradients(model, padded, attention_mask=attention_mask, step=2, noise=noise)
        runs.append((result, grads, model.center.clone()))
    for result, grads, center in runs[1:]:
        assert torch.equal(result.loss, runs[0][0].loss) and torch.equal(center, runs[0][2])
        for name, grad in runs[0][1].items():
            assert torch.equal(grads[name], grad), name


@pytest.mark.parametrize("use_mcl", [False, True], ids=["matpac", "matpac++"])
def test_padded_batch_equals_its_clips_alone(use_mcl):
    """Losses, predictions, center update and monitors of a padded batch are those of its clips run one by one on
    their valid columns, pooled over the valid masked tokens (token-weighted means)."""
    model = tiny_model(use_mcl=use_mcl, teacher_temperature_warmup_steps=10).eval()
    teacher_logits = []
    model.teacher_head.register_forward_hook(lambda mod, args, output: teacher_logits.append(output.detach()))
    values, attention_mask, noise = _padded_batch()
    batch = model(values, attention_mask=attention_mask, step=3, noise=noise)
    batch_teacher_logits = teacher_logits.pop()

    alone = []
    for b in range(3):
        clip, clip_noise = _clip_alone(values, noise, b)
        alone.append(model(clip, noise=clip_noise, step=3))
    counts = [int(o.mask.sum()) for o in alone]
    assert counts == [14, 11, 7]
    for b, clip in enumerate(alone):
        torch.testing.assert_close(batch.predictions[b, : counts[b]], clip.predictions[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch_teacher_logits[b, : counts[b]], teacher_logits[b][0], rtol=1e-5, atol=1e-5)
        assert torch.equal(batch.mask[b].view(5, 4)[:, : CLIP_COLUMNS[b]].reshape(-1), clip.mask[0])
    for key in ("prediction_loss", "classification_loss", "loss"):
        pooled = sum(getattr(o, key) * n for o, n in zip(alone, counts)) / sum(counts)
        torch.testing.assert_close(getattr(batch, key), pooled, rtol=1e-5, atol=1e-6, msg=key)

    # monitors and the center over the 32 valid masked tokens only
    probs = torch.cat([torch.softmax(logits[0] / 0.049, dim=-1) for logits in teacher_logits])  # tau_t, step 3
    mean_probs = probs.mean(0)
    perplexity = torch.exp(-(mean_probs * torch.log(mean_probs + 1e-7)).sum())
    torch.testing.assert_close(batch.teacher_perplexity, perplexity, rtol=1e-4, atol=1e-5)
    assert batch.num_teacher_classes.item() == probs.argmax(-1).unique().numel()
    model.train()
    model(values, attention_mask=attention_mask, step=3, noise=noise)
    torch.testing.assert_close(model.center[0, 0], 0.1 * mean_probs, rtol=1e-4, atol=1e-7)


def test_bad_attention_masks_are_refused_clearly():
    model = tiny_model(mask_ratio=0.9)  # 5 patches (one column) leave no visible patch at this ratio
    values = log_mel(2, 64)
    short = (torch.arange(64)[None, :] < torch.tensor([[64], [10]])).long()
    with pytest.raises(ValueError, match=r"Clips \[1\] of the batch have 5 valid patches.*at least 33 frames"):
        model(values, attention_mask=short)
    not_right_padded = torch.ones(2, 64, dtype=torch.long)
    not_right_padded[0, :5] = 0
    with pytest.raises(ValueError, match="not right-padded"):
        tiny_model()(values, attention_mask=not_right_padded)
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape \(batch, num_frames\)"):
        tiny_model()(values, attention_mask=torch.ones(2, 60))


def test_gradient_checkpointing_gives_the_same_gradients():
    def gradients(checkpointing: bool):
        model = tiny_model(seed=3).train()
        if checkpointing:
            model.activation_checkpointing_enable()  # transformers v5 name of gradient_checkpointing_enable
            layers = [m for m in model.modules() if type(m).__name__ == "MatpacLayer"]
            assert len(layers) == 2 + 1 + 2 and all(layer.gradient_checkpointing for layer in layers)
        outputs = model(log_mel(2, 64), step=2, generator=torch.Generator().manual_seed(0))
        outputs.loss.backward()
        return outputs.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss_plain, grads_plain = gradients(False)
    loss_ckpt, grads_ckpt = gradients(True)
    torch.testing.assert_close(loss_ckpt, loss_plain)
    assert grads_plain.keys() == grads_ckpt.keys() and len(grads_plain) > 30
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-5, atol=1e-7, msg=name)


# -------------------------------------------------------------------------------------------------------------- saving


def _train_a_little(model, steps=3):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for step in range(steps):
        outputs = model(log_mel(2, 64, seed=step), step=step, generator=torch.Generator().manual_seed(step))
        outputs.loss.backward()
        model.update_teachers(step)
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_save_and_load_keep_teachers_and_center(tmp_path):
    model = _train_a_little(
        tiny_model(ema_decay_start=0.5, ema_decay_end=0.5, head_ema_decay_start=0.5, head_ema_decay_end=0.5)
    )
    assert model.center.abs().sum() > 0
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()

    for loaded in (MatpacForPreTraining.from_pretrained(tmp_path), AutoModelForPreTraining.from_pretrained(tmp_path)):
        assert type(loaded) is MatpacForPreTraining
        saved, restored = model.state_dict(), loaded.state_dict()
        assert saved.keys() == restored.keys()
        for key in saved:
            assert torch.equal(saved[key], restored[key]), key
        # non-persistent position tables are rebuilt, teachers are frozen again after loading
        assert torch.equal(loaded.predictor.position_embeddings, model.predictor.position_embeddings)
        assert torch.equal(loaded.matpac.embeddings.position_embeddings, model.matpac.embeddings.position_embeddings)
        assert not any(p.requires_grad for p in loaded.teacher_encoder.parameters())
        assert not any(p.requires_grad for p in loaded.teacher_head.parameters())
        assert all(p.requires_grad for n, p in loaded.named_parameters() if not n.startswith("teacher"))

    student = MatpacModel.from_pretrained(tmp_path)
    for key, value in student.state_dict().items():
        assert torch.equal(value, model.state_dict()["matpac." + key]), key


def test_frozen_gain_stays_frozen_after_loading(tmp_path):
    tiny_model(head_freeze_weight_norm_gain=True).save_pretrained(tmp_path)
    loaded = MatpacForPreTraining.from_pretrained(tmp_path)
    assert not loaded.student_head.weight_norm_gain.requires_grad


@pytest.mark.parametrize("teacher_init", ["independent", "copy_student"])
def test_encoder_only_folder_gives_teachers_equal_to_the_student(tmp_path, teacher_init, caplog):
    # Continued pretraining from released weights: whatever teacher_init says (the default "independent" is for a model
    # built from scratch), teachers absent from the folder start as copies of the loaded student, with one log line.
    torch.manual_seed(0)
    student = MatpacModel(tiny_config(teacher_init=teacher_init))
    student.save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        model = MatpacForPreTraining.from_pretrained(tmp_path)
    assert model.config.teacher_init == teacher_init
    for key, value in model.teacher_encoder.state_dict().items():
        assert torch.equal(value, student.encoder.state_dict()[key]), key
    for (key, teacher), (_, student_head) in zip(
        model.teacher_head.state_dict().items(), model.student_head.state_dict().items()
    ):
        assert torch.equal(teacher, student_head), key
    assert torch.equal(model.matpac.encoder.layers[0].mlp.fc1.weight, student.encoder.layers[0].mlp.fc1.weight)
    assert model.center.abs().sum() == 0
    lines = [record for record in caplog.records if "initialised as a copy of the loaded student" in record.message]
    assert len(lines) == 1 and "teacher_encoder and teacher_head" in lines[0].message
    # teacher and student give the same targets at step 0
    model.eval()
    tokens = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert torch.equal(
            model.teacher_encoder(tokens).last_hidden_state, model.matpac.encoder(tokens).last_hidden_state
        )
    # trained teachers in a pretraining folder are loaded, not replaced
    trained = tiny_model(seed=3)
    trained.save_pretrained(tmp_path / "full")
    reloaded = MatpacForPreTraining.from_pretrained(tmp_path / "full")
    assert torch.equal(
        reloaded.teacher_encoder.layers[0].mlp.fc1.weight, trained.teacher_encoder.layers[0].mlp.fc1.weight
    )
    assert not torch.equal(
        reloaded.teacher_encoder.layers[0].mlp.fc1.weight, reloaded.matpac.encoder.layers[0].mlp.fc1.weight
    )


def test_authors_repository_gives_teachers_equal_to_the_student(tmp_path):
    from official_reference import OfficialMatpac, randomize_, write_hub_standin

    reference = randomize_(OfficialMatpac(embed_dim=64, depth=2, num_heads=4), seed=2)
    folder = write_hub_standin(tmp_path / "repo", reference, prefix="model.", config_fields={"num_heads": 4})
    model = MatpacForPreTraining.from_pretrained(folder, **TINY_HEADS)
    assert torch.equal(
        model.matpac.encoder.layers[1].attention.qkv.weight, reference.student_encoder.blocks[1].attn.qkv.weight
    )
    for key, value in model.teacher_encoder.state_dict().items():
        assert torch.equal(value, model.matpac.encoder.state_dict()[key]), key
    assert torch.equal(model.teacher_head.mlp[0].weight, model.student_head.mlp[0].weight)


def test_partial_teacher_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from matpac_hf.official_checkpoints import CheckpointError

    tiny_model().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["teacher_encoder.layers.1.mlp.fc2.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="only part of the teacher_encoder"):
        MatpacForPreTraining.from_pretrained(tmp_path)


def test_patch_embedding_bias_has_conv2d_default_init():
    # Official: the patch embedding keeps Conv2d's default bias, uniform(+-1 / sqrt(fan_in)), fan_in = 1 * 16 * 16
    torch.manual_seed(0)
    bias = MatpacModel(
        tiny_config(hidden_size=768, num_attention_heads=12, num_hidden_layers=1)
    ).embeddings.patch_embeddings.projection.bias
    bound = 1 / 16
    assert bias.abs().max() <= bound and bias.abs().max() > 0.9 * bound
    assert bias.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)  # a uniform's standard deviation


# --------------------------------------------------------------------------------------------------------- 2 processes


DDP_VARIANTS = {
    # name: (config overrides, clips of the 4-clip batch given to rank 0 (rank 1 gets the rest), valid frames per clip
    # of the 64-frame crops or None for no attention_mask)
    "matpac-even": ({}, 2, None),
    # MATPAC++, DINO's logits center, and unequal batches (3 + 1): the loss must still be the mean over all tokens
    "matpac++-logits-uneven": ({"use_mcl": True, "mcl_num_heads": 3, "center_update": "logits"}, 3, None),
    # short clips: unequal numbers of valid masked tokens on the two processes (14 + 11 + 7 vs 14)
    "matpac-padded": ({}, 3, [64, 40, 17, 64]),
}


def ddp_reference_setup(variant: str = "matpac-even"):
    """Shared by the test and tests/pretraining_ddp_worker.py: a tiny model, 2 batches of 4 clips, their noise and
    attention masks (None without padding), and how many clips rank 0 takes."""
    overrides, rank0_clips, clip_frames = DDP_VARIANTS[variant]
    decays = dict(ema_decay_start=0.9, ema_decay_end=0.9, head_ema_decay_start=0.9, head_ema_decay_end=0.9)
    model = tiny_model(seed=0, **decays, **overrides)
    batches = [log_mel(4, 64, seed=10 + step) for step in range(2)]
    noises = [torch.rand(4, 20, generator=torch.Generator().manual_seed(20 + step)) for step in range(2)]
    attention_mask = None
    if clip_frames is not None:
        attention_mask = (torch.arange(64)[None, :] < torch.tensor(clip_frames)[:, None]).long()
    return model, batches, noises, [attention_mask] * 2, rank0_clips


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_records(tmp_path_factory):
    """One 2-process launch (CPU, gloo) for every variant: `{variant: [rank 0 record, rank 1 record]}`."""
    out_dir = tmp_path_factory.mktemp("ddp")
    worker = Path(__file__).with_name("pretraining_ddp_worker.py")
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(worker),
        str(out_dir),
        *sorted(DDP_VARIANTS),
    ]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        variant: [torch.load(out_dir / f"{variant}-rank{rank}.pt") for rank in range(2)] for variant in DDP_VARIANTS
    }


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("variant", sorted(DDP_VARIANTS))
def test_two_processes_match_one_process_on_the_concatenated_batch(ddp_records, variant):
    model, batches, noises, attention_masks, _ = ddp_reference_setup(variant)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    centers = []
    for step, (batch, noise, attention_mask) in enumerate(zip(batches, noises, attention_masks)):
        model(batch, attention_mask=attention_mask, step=step, noise=noise).loss.backward()
        model.update_teachers(step)
        if step == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
        centers.append(model.center.clone())

    for record in ddp_records[variant]:
        assert record["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(record["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
        for center_ddp, center in zip(record["centers"], centers):
            torch.testing.assert_close(center_ddp, center, rtol=1e-5, atol=1e-7)
        for key, value in record["teacher_state"].items():
            torch.testing.assert_close(value, model.state_dict()[key], rtol=1e-4, atol=1e-6, msg=key)
    assert centers[-1].abs().sum() > 0
