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

torch's AdamW divides by `sqrt(v) / sqrt(1 - b2**t) + eps` instead, i.e. fairseq's rule is AdamW's with
`eps / sqrt(1 - b2**t)` in place of `eps`: early in training (`t` small) fairseq's effective epsilon is larger (x4.5
at step 1 for `b2 = 0.95`), which damps the first updates; the two converge after ~100 steps. [`FairseqAdam`] is
therefore torch's AdamW (its fused kernel where the device has one) with that epsilon set before each step.
"""

import math

import torch


class FairseqAdam(torch.optim.AdamW):
    """fairseq's `Adam` (decoupled weight decay, `denom = sqrt(v) + eps`, both bias corrections folded into the step
    size), computed by torch's AdamW with the epsilon `eps / sqrt(1 - beta2**t)` at step `t`: the same update up to
    float rounding, in one fused kernel per step (where torch has one for the device) instead of a loop over tensors.

    The step `t` is counted per parameter group (`group["fairseq_step"]`, saved in the optimiser's state dict, so a
    resumed run continues it): every parameter of a group must get a gradient at every step, as in MATPAC
    pretraining. Parameters must be float32 or float64: fairseq's Adam, too, updates float32 values (its fp16
    training keeps float32 master weights); train in mixed precision with autocast, which keeps them so.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (scheduled from outside, e.g. by a `LambdaLR`).
        betas: `(beta1, beta2)`; official `(0.9, 0.95)`.
        eps: added to `sqrt(v)`; official `1e-6`.
        weight_decay: decoupled weight decay (`p -= weight_decay * lr * p`); official `0.05`.
        fused: torch AdamW's `fused` (default: fused when every parameter is on a CPU or CUDA device).
    """

    def __init__(
        self, params, lr: float = 3e-4, betas=(0.9, 0.95), eps: float = 1e-6, weight_decay: float = 0.0, fused=None
    ):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}.")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}.")
        params = list(params)
        tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
        low_precision = sorted({str(p.dtype) for p in tensors if p.dtype not in (torch.float32, torch.float64)})
        if low_precision:
            raise ValueError(
                f"FairseqAdam updates float32 / float64 parameters; got {', '.join(low_precision)}. Keep the model in "
                "float32 and train in mixed precision with autocast (accelerate's --mixed_precision)."
            )
        if fused is None:
            fused = bool(tensors) and all(p.device.type in ("cpu", "cuda") for p in tensors)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)

    def add_param_group(self, param_group: dict):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("fairseq_eps", group["eps"])
        group.setdefault("fairseq_step", 0)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group["fairseq_step"] += 1
            group["eps"] = group["fairseq_eps"] / math.sqrt(1 - group["betas"][1] ** group["fairseq_step"])
        return super().step(closure)
