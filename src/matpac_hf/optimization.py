# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The official MATPAC optimiser: fairseq's `Adam` update rule.

The official run uses fairseq's `adam` optimiser (its environment has no apex, so fairseq's own `Adam` class runs).
Its update differs from `torch.optim.AdamW` in where the bias correction of the second moment goes. Per parameter `p`
with gradient `g`, at step `t` (1-based), learning rate `lr`, betas `(b1, b2)`, epsilon `eps`, weight decay `wd`:

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g * g
    p <- p - wd * lr * p                                          (decoupled weight decay)
    p <- p - lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)

torch's AdamW divides by `sqrt(v) / sqrt(1 - b2**t) + eps` instead, i.e. it is this rule with
`eps / sqrt(1 - b2**t)` in place of `eps`: early in training (`t` small) fairseq's effective epsilon is larger (x4.5
at step 1 for `b2 = 0.95`), which damps the first updates; the two converge after ~100 steps.
"""

import math

import torch


class FairseqAdam(torch.optim.Optimizer):
    """fairseq's `Adam` (decoupled weight decay, `denom = sqrt(v) + eps`, both bias corrections folded into the step
    size). Half-precision parameters are updated through a float32 copy with float32 moments, as fairseq does.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (scheduled from outside, e.g. by a `LambdaLR`).
        betas: `(beta1, beta2)`; official `(0.9, 0.95)`.
        eps: added to `sqrt(v)`; official `1e-6`.
        weight_decay: decoupled weight decay (`p -= weight_decay * lr * p`); official `0.05`.
    """

    def __init__(self, params, lr: float = 3e-4, betas=(0.9, 0.95), eps: float = 1e-6, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}.")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}.")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                if parameter.grad.is_sparse:
                    raise RuntimeError("FairseqAdam does not support sparse gradients.")
                low_precision = parameter.dtype in (torch.float16, torch.bfloat16)
                dtype = torch.float32 if low_precision else parameter.dtype
                grad = parameter.grad.to(dtype)
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(parameter, dtype=dtype)
                    state["exp_avg_sq"] = torch.zeros_like(parameter, dtype=dtype)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(eps)
                step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                value = parameter.float() if low_precision else parameter
                if weight_decay != 0:
                    value.add_(value, alpha=-weight_decay * lr)
                value.addcdiv_(exp_avg, denom, value=-step_size)
                if value is not parameter:
                    parameter.copy_(value)
        return loss
