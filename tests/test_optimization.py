# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""FairseqAdam (the official run's optimiser) against steps computed by hand from fairseq's Adam update rule."""

import math

import pytest
import torch

from matpac_hf.optimization import FairseqAdam


LR, BETAS, EPS, WEIGHT_DECAY = 3e-4, (0.9, 0.95), 1e-6, 0.05


def fairseq_steps_by_hand(values, gradients, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY):
    """fairseq's Adam written out in Python floats for one scalar parameter: the value after each gradient."""
    beta1, beta2 = betas
    p, m, v, history = values, 0.0, 0.0, []
    for t, g in enumerate(gradients, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        p = p - weight_decay * lr * p
        p = p - step_size * m / (math.sqrt(v) + eps)
        history.append(p)
    return history


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_hand_computed_fairseq_steps(dtype):
    # gradients of a few orders of magnitude: the tiny ones are where eps (and so the rule) matters
    gradients = [[0.5, -2e-6, 3e-7], [0.25, 1e-6, -4e-7], [-0.75, 5e-6, 2e-7], [0.1, -1e-6, 1e-7]]
    start = [1.0, -0.5, 2.0]
    parameter = torch.nn.Parameter(torch.tensor(start, dtype=dtype))
    optimizer = FairseqAdam([parameter], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    got = []
    for step_gradients in gradients:
        parameter.grad = torch.tensor(step_gradients, dtype=dtype)
        optimizer.step()
        got.append(parameter.detach().clone())
    for i, value in enumerate(start):
        expected = fairseq_steps_by_hand(value, [g[i] for g in gradients])
        tolerance = 5e-7 if dtype == torch.float32 else 1e-14  # a few float32 ulps of 1.0
        assert [float(step[i]) for step in got] == pytest.approx(expected, rel=0, abs=tolerance)
    assert optimizer.state[parameter]["step"] == 4


def test_is_adamw_with_a_step_dependent_epsilon_not_torch_adamw():
    # fairseq's rule = torch AdamW with eps / sqrt(1 - beta2**t) at step t: equal to that, not to AdamW's fixed eps
    torch.manual_seed(0)
    start = torch.randn(64, dtype=torch.float64)
    gradients = [torch.randn(64, dtype=torch.float64) * 1e-6 for _ in range(3)]  # |g| ~ eps: the rules part
    ours, rescaled, plain = (torch.nn.Parameter(start.clone()) for _ in range(3))
    fairseq = FairseqAdam([ours], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    stepped = torch.optim.AdamW([rescaled], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    adamw = torch.optim.AdamW([plain], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    for t, gradient in enumerate(gradients, start=1):
        for parameter in (ours, rescaled, plain):
            parameter.grad = gradient.clone()
        stepped.param_groups[0]["eps"] = EPS / math.sqrt(1 - BETAS[1] ** t)
        for optimizer in (fairseq, stepped, adamw):
            optimizer.step()
    torch.testing.assert_close(ours.detach(), rescaled.detach(), rtol=0, atol=1e-12)
    assert (ours - plain).abs().max() > 1e-5  # a fixed eps gives visibly different steps here
    assert 1 / math.sqrt(1 - BETAS[1]) == pytest.approx(4.47, abs=0.01)  # fairseq's effective eps at step 1: x4.5


def test_refuses_low_precision_parameters_and_names_the_fix():
    parameter = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="torch.bfloat16.*autocast"):
        FairseqAdam([parameter], lr=0.1)


def test_resumed_optimizer_continues_the_fairseq_step():
    # the step count behind the epsilon lives in the state dict: 2 steps + save/load + 2 steps == 4 steps
    torch.manual_seed(0)
    gradients = [torch.randn(8) * 1e-6 for _ in range(4)]
    straight, resumed = torch.nn.Parameter(torch.ones(8)), torch.nn.Parameter(torch.ones(8))
    optimizer = FairseqAdam([straight], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    for gradient in gradients:
        straight.grad = gradient.clone()
        optimizer.step()
    first = FairseqAdam([resumed], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    for gradient in gradients[:2]:
        resumed.grad = gradient.clone()
        first.step()
    second = FairseqAdam([resumed], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    second.load_state_dict(first.state_dict())
    for gradient in gradients[2:]:
        resumed.grad = gradient.clone()
        second.step()
    assert second.param_groups[0]["fairseq_step"] == 4
    torch.testing.assert_close(resumed.detach(), straight.detach(), rtol=0, atol=0)


def test_refuses_bad_hyperparameters():
    parameter = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="betas"):
        FairseqAdam([parameter], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr, eps and weight_decay"):
        FairseqAdam([parameter], lr=-1.0)
