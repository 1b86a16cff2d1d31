"""Does MatpacForPreTraining learn? A tiny model trained on CPU on synthetic structured log-mel spectrograms.

Each clip is a normalised (frames, 80) log-mel spectrogram with the structure real audio has and masked prediction can
exploit: a background with a random spectral tilt, one or two harmonic tones (a fundamental and its harmonics as
horizontal lines between an onset and an offset, the amplitude falling with the harmonic number) and broadband noise
bursts (vertical stripes). A masked patch is predictable from its visible neighbours (a harmonic line continues, a
burst spans all bands), so the prediction loss falls well below its value at initialisation, while the target std
(of the L2-normalised teacher outputs) and the teacher perplexity must stay away from collapse (std -> 0,
perplexity -> 1).

The loop is the official one (see `MatpacForPreTraining.update_teachers`): forward(step) -> backward ->
update_teachers(step) -> clip -> AdamW step. The EMA decays are shortened for a few hundred steps (the official
0.99995 would leave the teacher at its random init for the whole run).

    .venv/bin/python benchmarks/bench_pretraining_learns.py --steps 400

Prints the curve every 25 steps. tests/test_pretraining_learns.py runs a shorter version of `train`.
"""

import argparse
import math
import time

import torch

from matpac_hf import MatpacConfig, MatpacForPreTraining


def tiny_pretraining_config(total_steps: int, **overrides) -> MatpacConfig:
    values = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        decoder_hidden_size=64,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=128,
        head_hidden_size=128,
        head_bottleneck_size=32,
        head_num_prototypes=64,
        max_frames=128,  # 5 x 8 = 40 patches: 12 visible, 28 masked
        total_steps=total_steps,
        teacher_temperature_warmup_steps=max(1, total_steps // 3),
        ema_decay_start=0.99,
        ema_decay_end=0.999,
        head_ema_decay_start=0.99,
        head_ema_decay_end=1.0,
    )
    values.update(overrides)
    return MatpacConfig(**values)


def synthetic_log_mel(batch_size: int, num_frames: int, generator: torch.Generator) -> torch.Tensor:
    """`(batch, num_frames, 80)` structured log-mel spectrograms (the model's layout), roughly zero-mean and
    unit-variance; each is drawn as an `(80, num_frames)` image, then transposed."""
    num_mel_bins = 80
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    mel = torch.arange(num_mel_bins, dtype=torch.float32)[:, None]  # (80, 1)
    frame = torch.arange(num_frames, dtype=torch.float32)[None, :]  # (1, T)
    clips = []
    for _ in range(batch_size):
        tilt = -2.0 * rand(1) * mel / num_mel_bins  # spectral slope of the background
        image = -1.0 + tilt + 0.3 * torch.randn(num_mel_bins, num_frames, generator=generator)
        for _ in range(1 + int(rand(1) < 0.5)):  # one or two harmonic tones
            f0 = 3.0 + 9.0 * rand(1)
            onset = float(rand(1)) * num_frames * 0.5
            offset = onset + num_frames * (0.3 + 0.7 * float(rand(1)))
            active = ((frame >= onset) & (frame < offset)).float()
            for harmonic in range(1, 12):
                centre = harmonic * f0
                if centre >= num_mel_bins:
                    break
                line = torch.exp(-0.5 * ((mel - centre) / 0.8) ** 2)  # (80, 1)
                image = image + (3.0 / math.sqrt(harmonic)) * line * active
        for _ in range(int(rand(1) * 3)):  # 0-2 broadband bursts
            start = float(rand(1)) * num_frames
            width = 2.0 + 6.0 * float(rand(1))
            low = float(rand(1)) * 30
            burst = ((frame >= start) & (frame < start + width)).float() * (mel >= low).float()
            image = image + 2.0 * burst
        clips.append(image)
    values = torch.stack(clips).transpose(1, 2).contiguous()  # (batch, num_frames, 80)
    return (values - values.mean()) / values.std()


def zero_pad_after_random_lengths(values: torch.Tensor, min_frames: int, generator: torch.Generator):
    """Every clip of `values` `(batch, frames, mel)` keeps a uniformly random number of frames (`min_frames` to all)
    and is zero-padded after them, as crops of short clips are; returns the clips and their frame mask `(batch,
    frames)` (1 on the kept frames)."""
    batch_size, num_frames = values.shape[:2]
    lengths = torch.randint(min_frames, num_frames + 1, (batch_size,), generator=generator)
    valid_frames = (torch.arange(num_frames)[None, :] < lengths[:, None]).long()
    return values.masked_fill(valid_frames[:, :, None] == 0, 0.0), valid_frames


def train(
    steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log_every: int = 25,
    use_mcl: bool = False,
    short_clips: str | None = None,
):
    """Trains a tiny model for `steps` steps; returns the list of logged rows (dicts) and prints them.

    `use_mcl=True` trains MATPAC++ (5 prediction heads; the temperature decay is shortened so that the soft
    winner-takes-all temperature falls from 0.1 to the 1e-4 hard-minimum switch at 3/4 of the run).

    `short_clips`: every clip keeps a uniformly random number of frames (16 to all) and is zero-padded after them, as
    crops of short clips are. `"masked"` passes the `attention_mask` (padded patches out of the objective);
    `"unmasked"` does not (padded patches are predicted too, the behaviour before the attention mask existed)."""
    if short_clips not in (None, "masked", "unmasked"):
        raise ValueError(f"short_clips must be None, 'masked' or 'unmasked', got {short_clips!r}.")
    torch.manual_seed(seed)
    mcl = dict(use_mcl=True, mcl_temperature_decay=1e-3 ** (1 / (0.75 * steps))) if use_mcl else {}
    config = tiny_pretraining_config(steps, **mcl)
    model = MatpacForPreTraining(config).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.05)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    data_generator = torch.Generator().manual_seed(seed + 1)
    mask_generator = torch.Generator().manual_seed(seed + 2)
    length_generator = torch.Generator().manual_seed(seed + 3)

    rows, window, start = [], [], time.perf_counter()
    header = (
        f"{'step':>5} {'loss':>7} {'pred':>7} {'cls':>7} {'tgt_std':>8} {'pred_std':>8} {'perplex':>8} "
        f"{'classes':>7} {'agree':>6} {'tau_t':>6}"
    )
    print(header)
    for step in range(steps):
        values = synthetic_log_mel(batch_size, config.max_frames, data_generator)
        attention_mask = None
        if short_clips is not None:
            values, valid_frames = zero_pad_after_random_lengths(values, config.patch_size, length_generator)
            attention_mask = valid_frames if short_clips == "masked" else None
        outputs = model(values, attention_mask=attention_mask, step=step, generator=mask_generator)
        outputs.loss.backward()
        model.update_teachers(step)
        torch.nn.utils.clip_grad_norm_(parameters, 3.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

        window.append(
            {
                "loss": outputs.loss.item(),
                "prediction_loss": outputs.prediction_loss.item(),
                "classification_loss": outputs.classification_loss.item(),
                "target_std": outputs.target_std.item(),
                "prediction_std": outputs.prediction_std.item(),
                "teacher_perplexity": outputs.teacher_perplexity.item(),
                "num_teacher_classes": outputs.num_teacher_classes.item(),
                "student_teacher_agreement": outputs.student_teacher_agreement.item(),
                "teacher_temperature": outputs.teacher_temperature.item(),
            }
        )
        if step == 0 or (step + 1) % log_every == 0 or step == steps - 1:
            row = {"step": step + 1, **{k: sum(r[k] for r in window) / len(window) for k in window[0]}}
            rows.append(row)
            window = []
            print(
                f"{row['step']:>5} {row['loss']:7.4f} {row['prediction_loss']:7.4f} "
                f"{row['classification_loss']:7.4f} {row['target_std']:8.4f} {row['prediction_std']:8.4f} "
                f"{row['teacher_perplexity']:8.2f} {row['num_teacher_classes']:7.1f} "
                f"{row['student_teacher_agreement']:6.3f} {row['teacher_temperature']:6.4f}",
                flush=True,
            )
    print(f"{steps} steps of batch {batch_size} in {time.perf_counter() - start:.1f} s (averages since last row)")
    if short_clips is not None:  # the same held-out padded clips, scored on their valid patches only
        model.eval()
        heldout_data, heldout_masks = (
            torch.Generator().manual_seed(seed + 10),
            torch.Generator().manual_seed(seed + 11),
        )
        losses = []
        with torch.no_grad():
            for _ in range(4):
                values = synthetic_log_mel(batch_size, config.max_frames, heldout_data)
                values, attention_mask = zero_pad_after_random_lengths(values, config.patch_size, heldout_masks)
                outputs = model(values, attention_mask=attention_mask, step=steps, generator=heldout_masks)
                losses.append(outputs.prediction_loss.item())
        rows[-1]["heldout_valid_prediction_loss"] = sum(losses) / len(losses)
        print(f"held-out prediction loss on the valid patches of padded clips: {sum(losses) / len(losses):.4f}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps")
    parser.add_argument("--batch_size", type=int, default=32, help="clips per step")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--use_mcl", action="store_true", help="MATPAC++: 5 prediction heads, soft winner-takes-all")
    parser.add_argument(
        "--short_clips",
        choices=["masked", "unmasked"],
        default=None,
        help="zero-pad every clip after a random length; 'masked' passes the attention_mask, 'unmasked' does not",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the init, the data and the masks")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this tiny model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(
        args.steps, args.batch_size, args.learning_rate, args.seed, use_mcl=args.use_mcl, short_clips=args.short_clips
    )


if __name__ == "__main__":
    main()
