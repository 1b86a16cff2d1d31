"""Does pretraining beat a random encoder on real audio? Tiny MATPAC pretrained on CPU, then linear-probed.

1. Builds (cached) the real-audio corpus of `examples/real_audio_corpus.py` from Debian packages (espeak-ng / flite
   voices, fluidsynth with the installed GM soundfonts): ~2400 unlabelled clips of 1-6 s, and three labelled tasks
   whose test folds hold out whole conditions: digits (unseen voices), instrument families (unseen GM programs),
   drum sounds (unseen drum kits).
2. Computes the normalised log-mel of every pretraining clip once (MatpacFeatureExtractor.extract_log_mel) and
   pretrains `MatpacForPreTraining` on random `--crop_frames` crops of it, with the loop of
   examples/run_pretraining.py: forward(step) -> backward -> update_teachers(step) -> clip 3.0 -> AdamW (betas 0.9,
   0.95, eps 1e-6) -> linear warm-up + cosine. Crops are cut in the log-mel domain (the script cuts waveforms; the same
   thing up to the 160-sample frame grid). A clip shorter than the crop is zero-padded and its padded frames are
   given to the model as `attention_mask` (never targets or visible context).
3. At each `--eval_steps` (and at step 0) the student encoder is frozen and linear-probed
   (`examples/run_linear_probe.py`'s Adam probe with early stopping on a held-out 10 %): cross-validation over the
   condition folds, each fold's test accuracy a mean over `--probe_seeds`; a task's figure is the mean over folds
   with its 95 % t confidence interval. The random-init baseline is the same run's encoder at step 0 (same config,
   same seed, never trained). The gain's CI is the paired CI over folds.
4. `--augment pitch,gain,...` (or `all`; `matpac_hf.augmentation`): the crops are then cut from the waveforms at the
   same draws of clip and frame position, augmented (`PretrainingAugmentation`, epoch = step, key = clip index) and
   their log-mel computed per step; `--teacher_view` gives the teacher its own draw (not MATPAC). The results file
   then also holds the CPU seconds of the cropping + augmentation + log-mel. Runs: benchmarks/RESULTS.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pretraining_real_audio.py --steps 3000 --eval_steps 1000 2000

Prints the schedule, monitors every `--log_every` steps (losses, target/prediction std, teacher perplexity, distinct
teacher classes: collapse shows as std -> 0 and perplexity -> 1), a table per evaluation, and appends one JSON line
per evaluation to `--results_file`.

Results, with the machine and date of each run: benchmarks/RESULTS.md.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch


HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "matpac_hf")
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import real_audio_corpus  # noqa: E402
import run_linear_probe  # noqa: E402
import run_pretraining  # noqa: E402

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacForPreTraining  # noqa: E402
from matpac_hf.augmentation import AUGMENTATION_FAMILIES, AugmentationConfig, PretrainingAugmentation  # noqa: E402
from matpac_hf.configuration_matpac import num_frames_for_samples, num_samples_for_frames  # noqa: E402
from matpac_hf.pretraining_data import frame_attention_mask  # noqa: E402


TASKS = ("digits", "instruments", "drums")
MONITOR_KEYS = (
    "loss",
    "prediction_loss",
    "classification_loss",
    "target_std",
    "prediction_std",
    "teacher_perplexity",
    "num_teacher_classes",
    "student_teacher_agreement",
)


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=x' -> typed after MatpacConfig's defaults."""
    if not text:
        return {}
    defaults, out = MatpacConfig(), {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if not hasattr(defaults, key):
            raise ValueError(f"--config item {item!r}: {key!r} is not a MatpacConfig field")
        kind = type(getattr(defaults, key))
        out[key] = (value.lower() in ("1", "true")) if kind is bool else kind(value)
    return out


# ------------------------------------------------------------------------------------------------ data


def pretraining_log_mels(corpus_dir: str, feature_extractor) -> list[torch.Tensor]:
    """Normalised log-mel `(frames, 80)` float16 of every pretraining clip, cached next to the corpus."""
    cache = os.path.join(corpus_dir, "pretrain_log_mel.pt")
    if os.path.isfile(cache):
        return torch.load(cache)
    paths = sorted(
        os.path.join(root, name)
        for root, _, files in os.walk(os.path.join(corpus_dir, "pretrain"))
        for name in files
        if name.endswith(".wav")
    )
    mels = []
    for path in paths:
        waveform = torch.from_numpy(real_audio_corpus.load_16k(path))[None]
        mel = feature_extractor.extract_log_mel(waveform)[0]
        mels.append(mel.to(torch.float16).contiguous())
    torch.save(mels, cache)
    return mels


def random_crops(mels, batch_size: int, crop_frames: int, generator: torch.Generator):
    """A batch of random `crop_frames` crops `(batch, crop_frames, 80)` and its frame mask `(batch, crop_frames)`
    (0 on the zero padding of clips shorter than the crop)."""
    picks = torch.randint(len(mels), (batch_size,), generator=generator).tolist()
    batch = torch.zeros(batch_size, crop_frames, mels[0].shape[-1])
    mask = torch.zeros(batch_size, crop_frames, dtype=torch.long)
    for row, index in enumerate(picks):
        mel = mels[index]
        frames = mel.shape[0]
        if frames > crop_frames:
            start = int(torch.randint(frames - crop_frames + 1, (1,), generator=generator))
            mel = mel[start : start + crop_frames]
        batch[row, : mel.shape[0]] = mel.float()
        mask[row, : mel.shape[0]] = 1
    return batch, mask


def pretraining_waveforms(corpus_dir: str) -> list[np.ndarray]:
    """The pretraining clips as float32 16 kHz waveforms, in the order of `pretraining_log_mels`."""
    paths = sorted(
        os.path.join(root, name)
        for root, _, files in os.walk(os.path.join(corpus_dir, "pretrain"))
        for name in files
        if name.endswith(".wav")
    )
    return [real_audio_corpus.load_16k(path) for path in paths]


def augmented_crops(waveforms, batch_size, crop_frames, generator, augmentation, step, feature_extractor):
    """`random_crops` cut from the waveforms (same draws of clips and frame positions), augmented
    (`PretrainingAugmentation`, epoch = step, key = clip index), then log-mel: `(values, frame_mask, teacher_values)`
    (`teacher_values` None without the teacher's own view)."""
    crop_samples = num_samples_for_frames(crop_frames)
    picks = torch.randint(len(waveforms), (batch_size,), generator=generator).tolist()
    crops = np.zeros((batch_size, crop_samples), dtype=np.float32)
    num_valid = []
    for row, index in enumerate(picks):
        wave = waveforms[index]
        frames = num_frames_for_samples(len(wave))
        if frames > crop_frames:
            start = 160 * int(torch.randint(frames - crop_frames + 1, (1,), generator=generator))
            wave = wave[start : start + crop_samples]
        crops[row, : len(wave)] = wave
        num_valid.append(len(wave))
    views = augmentation.augment_batch(crops, num_valid, [str(index) for index in picks], step)
    student, teacher = views if augmentation.config.teacher_view else (views, None)
    values = feature_extractor.extract_log_mel(torch.from_numpy(student))
    frame_mask = frame_attention_mask(torch.tensor(num_valid), values.shape[1]).long()
    teacher_values = None if teacher is None else feature_extractor.extract_log_mel(torch.from_numpy(teacher))
    return values, frame_mask, teacher_values


def augmentation_cost(waveforms, crop_frames: int, seed: int, num_crops: int = 256, rounds: int = 3) -> list[dict]:
    """CPU milliseconds (this process, `time.process_time`) per crop of each family at probability 1, of all of them
    at 1 and at 0.5, and of all at 0.5 with the teacher's own view, on `num_crops` random crops of the corpus; the
    median of `rounds` rounds, the variants alternating within a round."""
    generator = torch.Generator().manual_seed(seed)
    crop_samples = num_samples_for_frames(crop_frames)
    crops = np.zeros((num_crops, crop_samples), dtype=np.float32)
    num_valid = []
    for row, index in enumerate(torch.randint(len(waveforms), (num_crops,), generator=generator).tolist()):
        wave = waveforms[index][:crop_samples]
        crops[row, : len(wave)] = wave
        num_valid.append(len(wave))
    keys = [str(row) for row in range(num_crops)]
    variants = [((family,), 1.0, False) for family in AUGMENTATION_FAMILIES]
    variants += [
        (AUGMENTATION_FAMILIES, 1.0, False),
        (AUGMENTATION_FAMILIES, 0.5, False),
        (AUGMENTATION_FAMILIES, 0.5, True),
    ]
    times = {variant: [] for variant in variants}
    for round_index in range(rounds):
        for variant in variants:
            families, probability, teacher_view = variant
            augmentation = PretrainingAugmentation(
                AugmentationConfig(families=families, probability=probability, teacher_view=teacher_view), seed=seed
            )
            tic = time.process_time()
            augmentation.augment_batch(crops, num_valid, keys, round_index)
            times[variant].append(1000 * (time.process_time() - tic) / num_crops)
    return [
        {
            "families": ",".join(families) if len(families) < len(AUGMENTATION_FAMILIES) else "all",
            "probability": probability,
            "teacher_view": teacher_view,
            "cpu_ms_per_crop": float(np.median(times[(families, probability, teacher_view)])),
        }
        for families, probability, teacher_view in variants
    ]


def load_task(corpus_dir: str, task: str) -> dict:
    folder = os.path.join(corpus_dir, "tasks", task)
    with open(os.path.join(folder, "metadata.csv")) as handle:
        rows = [line.rstrip("\n").split(",") for line in handle][1:]
    return {
        "waveforms": [real_audio_corpus.load_16k(os.path.join(folder, name)) for name, _, _ in rows],
        "labels": [[label] for _, label, _ in rows],
        "folds": [fold for _, _, fold in rows],
    }


# ------------------------------------------------------------------------------------------------ probe


@torch.no_grad()
def embed(encoder, feature_extractor, waveforms, batch_size: int = 32) -> np.ndarray:
    """Clip embeddings (pooler_output) of waveforms, batched by similar length with the FE's attention mask."""
    encoder.eval()
    order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
    out = [None] * len(waveforms)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        inputs = feature_extractor([waveforms[i] for i in chunk], sampling_rate=16000, return_tensors="pt")
        pooled = encoder(**inputs).pooler_output.float().numpy()
        for row, index in enumerate(chunk):
            out[index] = pooled[row]
    return np.stack(out)


def grouped_probe(embeddings: np.ndarray, task: dict, seeds) -> list[float]:
    """Cross-validation over the condition folds (`run_linear_probe.cross_validate`): one test accuracy per fold, the
    mean over `seeds` (a seed sets the classifier init, the shuffling and the 10 % validation hold-out)."""
    class_names = sorted({label[0] for label in task["labels"]})
    _, per_fold = run_linear_probe.cross_validate(
        embeddings, task["labels"], task["folds"], class_names, seeds, validation_fraction=0.1
    )
    return per_fold


def evaluate(encoder, feature_extractor, tasks: dict, seeds) -> dict:
    return {
        name: grouped_probe(embed(encoder, feature_extractor, task["waveforms"]), task, seeds)
        for name, task in tasks.items()
    }


def ci95(values) -> tuple[float, float]:
    summary = run_linear_probe.summarise(list(values))
    return summary["mean"], summary["ci95"] or float("nan")


def report(step: int, pretrained: dict, random_init: dict) -> dict:
    rows, gains = {}, []
    print(f"\nlinear probe at step {step} (accuracy %, mean over folds +- 95 % CI; gain: paired over folds)")
    print(f"{'task':<12} {'folds':>5} {'pretrained':>15} {'random init':>15} {'gain':>15}")
    for task in pretrained:
        p, r = np.array(pretrained[task]), np.array(random_init[task])
        (pm, pc), (rm, rc), (gm, gc) = ci95(p), ci95(r), ci95(p - r)
        gains.append(gm)
        rows[task] = {
            "pretrained": pm,
            "pretrained_ci95": pc,
            "random_init": rm,
            "random_init_ci95": rc,
            "gain": gm,
            "gain_ci95": gc,
            "pretrained_folds": p.tolist(),
            "random_init_folds": r.tolist(),
        }
        print(
            f"{task:<12} {len(p):>5} {100 * pm:7.1f} +- {100 * pc:4.1f} {100 * rm:7.1f} +- {100 * rc:4.1f} "
            f"{100 * gm:+7.1f} +- {100 * gc:4.1f}"
        )
    mean_gain = float(np.mean(gains))
    print(f"{'mean gain':<12} {'':>5} {'':>15} {'':>15} {100 * mean_gain:+7.1f}", flush=True)
    return {"tasks": rows, "mean_gain": mean_gain}


# ------------------------------------------------------------------------------------------------ pretraining


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """The cosine decay of transformers' get_cosine_schedule_with_warmup (the script's schedule), with the warm-up one
    step ahead: the first step runs at learning_rate / warmup, not 0."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus_dir", default=os.path.join(CACHE, "real_audio_corpus"), help="built once, reused")
    parser.add_argument("--num_pretraining_clips", type=int, default=2400)
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    parser.add_argument("--eval_steps", type=int, nargs="*", default=[], help="also probe at these steps")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--crop_frames", type=int, default=96, help="crop length in frames (multiple of 16)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, help="default: 1/15 of the run (the official proportion)")
    parser.add_argument("--teacher_temperature_warmup_steps", type=int, help="default: 1/30 of the run")
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument("--config", help="MatpacConfig overrides over the tiny preset, e.g. 'mask_ratio=0.6'")
    parser.add_argument("--no_preset", action="store_true", help="start from MatpacConfig defaults, not tiny")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward pass")
    parser.add_argument("--masking", choices=("random", "time_columns"), default="random")
    parser.add_argument(
        "--augment",
        help=f"waveform augmentation families, comma-separated, or 'all' ({', '.join(AUGMENTATION_FAMILIES)}); "
        "crops are then cut from the waveforms, augmented, and their log-mel computed per step",
    )
    parser.add_argument("--augment_probability", type=float, default=0.5, help="probability of each family")
    parser.add_argument(
        "--teacher_view", action="store_true", help="the teacher's own draw of mix/filter/gain/noise (not MATPAC)"
    )
    parser.add_argument(
        "--augmentation_cost",
        action="store_true",
        help="only measure the augmentation's CPU ms per crop (each family, all, the teacher's view) and exit",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe_seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--threads", type=int, help="torch threads (default: OMP_NUM_THREADS or 1)")
    parser.add_argument("--log_every", type=int, default=100)
    parser.add_argument(
        "--results_file", default=os.path.join(CACHE, "bench_pretraining_real_audio.jsonl"), help="JSON lines appended"
    )
    parser.add_argument("--name", default="", help="label of this run in the results file")
    parser.add_argument("--save_dir", help="save the pretrained encoder (and the step-0 one) here at each evaluation")
    args = parser.parse_args(argv)

    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    built = real_audio_corpus.build_real_audio_corpus(args.corpus_dir, args.num_pretraining_clips)
    print(
        f"corpus {args.corpus_dir}: {built['pretraining_clips']} pretraining clips ({built['pretraining_hours']} h), "
        f"task clips {built['task_clips']} ({time.perf_counter() - start:.0f} s)"
    )
    warmup = args.warmup_steps if args.warmup_steps is not None else round(args.steps / 15)
    teacher_warmup = (
        args.teacher_temperature_warmup_steps
        if args.teacher_temperature_warmup_steps is not None
        else round(args.steps / 30)
    )
    config_kwargs = {} if args.no_preset else dict(run_pretraining.PRESETS["tiny"])
    config_kwargs.update(parse_overrides(args.config))
    config = MatpacConfig(total_steps=args.steps, teacher_temperature_warmup_steps=teacher_warmup, **config_kwargs)
    feature_extractor = MatpacFeatureExtractor.from_model_config(config)
    mels = pretraining_log_mels(args.corpus_dir, feature_extractor)
    augmentation = None
    if args.augment:
        augmentation = PretrainingAugmentation(
            AugmentationConfig(
                families=tuple(AUGMENTATION_FAMILIES if args.augment == "all" else args.augment.split(",")),
                probability=args.augment_probability,
                teacher_view=args.teacher_view,
            ),
            seed=args.seed,
        )
        waveforms = pretraining_waveforms(args.corpus_dir)
    short = sum(m.shape[0] < args.crop_frames for m in mels)
    print(f"{len(mels)} clips; {short} shorter than the {args.crop_frames}-frame crop (padded, masked)")
    if args.augmentation_cost:
        print(f"augmentation cost, {args.crop_frames}-frame crops, {threads} thread(s), CPU time of this process:")
        for row in augmentation_cost(pretraining_waveforms(args.corpus_dir), args.crop_frames, args.seed):
            print(
                f"  {row['families']:<8} p={row['probability']:.1f}{' teacher view' if row['teacher_view'] else '':<13}"
                f" {row['cpu_ms_per_crop']:6.2f} ms/crop"
            )
        return
    tasks = {name: load_task(args.corpus_dir, name) for name in args.tasks}

    torch.manual_seed(args.seed)
    model = MatpacForPreTraining(config).train()
    random_encoder = MatpacForPreTraining(config).matpac  # placeholder of the right shape, loaded from step 0 below
    random_encoder.load_state_dict(model.matpac.state_dict())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer_args = run_pretraining.build_parser().parse_args(
        ["--output_dir", "unused"]
    )  # the script's optimiser defaults
    optimizer_args.learning_rate, optimizer_args.weight_decay = args.learning_rate, args.weight_decay
    optimizer = run_pretraining.build_optimizer(model, optimizer_args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, warmup, args.steps))
    settings = {
        "name": args.name,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "crop_frames": args.crop_frames,
        "learning_rate": args.learning_rate,
        "warmup_steps": warmup,
        "teacher_temperature_warmup_steps": teacher_warmup,
        "weight_decay": args.weight_decay,
        "config_overrides": parse_overrides(args.config),
        "preset": None if args.no_preset else "tiny",
        "bf16": args.bf16,
        "masking": args.masking,
        "threads": threads,
        "seed": args.seed,
        "probe_seeds": args.probe_seeds,
        "parameters_M": round(sum(p.numel() for p in trainable) / 1e6, 3),
        "augmentation": augmentation.config.to_dict() if augmentation else None,
    }
    print("settings:", json.dumps(settings))

    probe_start = time.perf_counter()
    random_scores = evaluate(random_encoder, feature_extractor, tasks, args.probe_seeds)
    print(f"random-init probe: {time.perf_counter() - probe_start:.0f} s")
    data_generator = torch.Generator().manual_seed(args.seed + 1)
    mask_generator = torch.Generator().manual_seed(args.seed + 2)
    eval_steps = sorted(set(args.eval_steps) | {args.steps})
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    window, monitors, train_seconds, train_cpu_seconds, augment_cpu_seconds = [], {}, 0.0, 0.0, 0.0
    os.makedirs(os.path.dirname(os.path.abspath(args.results_file)), exist_ok=True)
    for step in range(args.steps):
        tic, cpu_tic = time.perf_counter(), time.process_time()
        teacher_values = None
        if augmentation is None:
            values, frame_mask = random_crops(mels, args.batch_size, args.crop_frames, data_generator)
        else:
            values, frame_mask, teacher_values = augmented_crops(
                waveforms, args.batch_size, args.crop_frames, data_generator, augmentation, step, feature_extractor
            )
            augment_cpu_seconds += time.process_time() - cpu_tic
        padded = bool((frame_mask == 0).any())
        noise = None
        if args.masking == "time_columns":
            columns = args.crop_frames // config.patch_size
            noise = (
                torch.rand(args.batch_size, 1, columns, generator=mask_generator)
                .expand(-1, config.num_frequency_patches, -1)
                .reshape(args.batch_size, -1)
            )
            noise = noise + 1e-3 * torch.rand(noise.shape, generator=mask_generator)
        with autocast:
            outputs = model(
                values,
                attention_mask=frame_mask if padded else None,
                step=step,
                generator=mask_generator,
                noise=noise,
                teacher_input_values=teacher_values,
            )
        outputs.loss.backward()
        model.update_teachers(step)
        torch.nn.utils.clip_grad_norm_(trainable, optimizer_args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_seconds += time.perf_counter() - tic
        train_cpu_seconds += time.process_time() - cpu_tic
        window.append({k: float(getattr(outputs, k).detach()) for k in MONITOR_KEYS})
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            monitors = {k: sum(r[k] for r in window) / len(window) for k in MONITOR_KEYS}
            window = []
            print(
                f"step {step + 1:>5} {train_seconds:6.0f} s | loss {monitors['loss']:.3f} (pred "
                f"{monitors['prediction_loss']:.3f}, cls {monitors['classification_loss']:.3f}) | std tgt/pred "
                f"{monitors['target_std']:.3f}/{monitors['prediction_std']:.3f} | perplexity "
                f"{monitors['teacher_perplexity']:.1f}, classes {monitors['num_teacher_classes']:.0f}, agree "
                f"{monitors['student_teacher_agreement']:.2f} | lr {scheduler.get_last_lr()[0]:.2e}",
                flush=True,
            )
        if step + 1 in eval_steps:
            model.eval()
            if args.save_dir:
                model.matpac.save_pretrained(os.path.join(args.save_dir, f"encoder-{step + 1}"))
                if not os.path.isdir(os.path.join(args.save_dir, "encoder-0")):
                    random_encoder.save_pretrained(os.path.join(args.save_dir, "encoder-0"))
                feature_extractor.save_pretrained(os.path.join(args.save_dir, f"encoder-{step + 1}"))
            pretrained_scores = evaluate(model.matpac, feature_extractor, tasks, args.probe_seeds)
            model.train()
            summary = report(step + 1, pretrained_scores, random_scores)
            record = {
                **settings,
                "at_step": step + 1,
                "train_seconds": round(train_seconds, 1),
                "seconds_per_step": round(train_seconds / (step + 1), 4),
                "train_cpu_seconds": round(train_cpu_seconds, 1),
                "augment_cpu_seconds": round(augment_cpu_seconds, 1),
                "monitors": monitors,
                **summary,
            }
            with open(args.results_file, "a") as handle:
                handle.write(json.dumps(record) + "\n")
    print(
        f"total wall time {time.perf_counter() - start:.0f} s (pretraining {train_seconds:.0f} s wall, "
        f"{train_cpu_seconds:.0f} s CPU of which {augment_cpu_seconds:.0f} s cropping + augmenting + log-mel, "
        f"{threads} threads)"
    )


if __name__ == "__main__":
    main()
