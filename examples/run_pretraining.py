# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Pretrain a MATPAC / MATPAC++ audio encoder on a streamed `datasets` corpus with 🤗 Accelerate.

    # your corpus (Hub dataset, audiofolder directory, parquet shards or webdataset tars), any number of GPUs
    accelerate launch examples/run_pretraining.py --dataset_name user/my_audio --audio_column audio \
        --preset base --per_device_batch_size 256 --num_epochs 300 --warmup_epochs 20 \
        --teacher_temperature_warmup_epochs 10 --corpus_size 2012615 --mixed_precision fp16 --output_dir matpac_run

    # a corpus of short clips: 3 s crops, shorter clips zero-padded (the padded patches are left out of the losses)
    python examples/run_pretraining.py --dataset_dir clips/ --crop_frames 304 --min_clip_policy pad ...

    # the demo (a small corpus built on the spot, the tiny preset on CPU, then a linear probe): `make demo`
    python examples/run_pretraining_demo.py --output_dir demo_output

One optimiser step (docs/method.md, sections 4 and 5): random waveform crops of `--crop_frames` log-mel frames (608 =
6.08 s; decoded, down-mixed and resampled by `matpac_hf.pretraining_data` in DataLoader workers) -> normalised log-mel
on the training device (`extract_log_mel`) -> `MatpacForPreTraining(input_values, attention_mask, step=step)` ->
backward -> `update_teachers(step)` (EMA) -> clip the gradient norm at 3.0 -> optimiser step (fairseq's Adam rule, as the
official run; `--optimizer adamw` for torch's AdamW) -> cosine schedule step.

Continued pretraining: `--model_name_or_path` takes a saved MatpacForPreTraining, a matpac-hf encoder folder, a
converted release or an authors' Hub repository (teachers absent from the folder start as copies of the student);
`--config_overrides` then changes what does not change loaded weights (schedules, temperatures, EMA decays, masking,
loss weights, the sizes of new parts) and refuses the rest. A converted fairseq training checkpoint (its
`training_progress.json`) continues its schedules from its `num_updates` (`--restart_schedules` starts them at 0).

Checkpoints (`accelerator.save_state` plus the stream position, the step counters and every process's random state)
are written atomically; `--resume_from_checkpoint latest` continues a run exactly. Ctrl-C (SIGINT) or SIGTERM (what
preemptible clusters send) finishes the current step, writes a checkpoint and exits with status 130 / 143; a second
Ctrl-C stops at once.

Outputs in `--output_dir`:
    pretraining_model/    MatpacForPreTraining (student, predictor, heads, teachers, center): continue training from it
    encoder/              MatpacModel + MatpacFeatureExtractor + README.md: `AutoModel.from_pretrained("encoder")`
    checkpoint-<step>/    resumable training states
    logs/metrics.jsonl    one JSON line per logged step (losses, collapse monitors, learning rate, data counters)
    training_curves.png   losses and monitors (needs matplotlib)
"""

import argparse
import functools
import json
import logging
import os
import signal
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacForPreTraining
from matpac_hf.audio_io import BAD_AUDIO_POLICIES, MIN_CLIP_POLICIES
from matpac_hf.augmentation import AUGMENTATION_FAMILIES, AugmentationConfig, PretrainingAugmentation, parse_families
from matpac_hf.convert_original_checkpoint import read_training_progress
from matpac_hf.model_card import pretrained_encoder_fields, render_model_card
from matpac_hf.optimization import FairseqAdam
from matpac_hf.prepare_corpus import read_provenance
from matpac_hf.pretraining_data import (
    CROP_FRAMES,
    PretrainingDataLoop,
    build_crop_stream,
    frame_attention_mask,
    load_audio_stream,
    waveforms_on_device,
)
from matpac_hf.training_utils import (
    JsonlTracker,
    StopRequest,
    apply_config_overrides,
    check_replicas_in_sync,
    choose_num_threads,
    init_decoding_worker,
    load_checkpoint,
    parse_config_overrides,
    plot_jsonl_metrics,
    resolve_checkpoint,
    save_checkpoint,
    truncate_jsonl,
)


logger = get_logger(__name__)

# `--preset tiny`: pretrains on a laptop CPU in minutes; keeps 80 mels and 16 x 16 patches. Width 64 learned best in
# the tiny-regime width sweep of benchmarks/bench_pretraining_real_audio.py (benchmarks/RESULTS.md). Its EMA decays
# suit runs of hundreds to a few thousand steps: the official 0.99995 moves the teacher by 0.005 % a step, so a short
# run would learn to predict the randomly initialised teacher.
PRESETS = {
    "base": {},  # the official ViT-Base configuration: MatpacConfig() defaults
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=256,
        decoder_hidden_size=64,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=256,
        head_hidden_size=128,
        head_bottleneck_size=64,
        head_num_prototypes=256,
        ema_decay_start=0.99,
        ema_decay_end=0.999,
        head_ema_decay_start=0.99,
    ),
}
# Official schedule proportions (in epochs: 20 of warm-up, 10 of teacher-temperature warm-up, 300 in all), used when
# only the total length is given.
OFFICIAL_WARMUP_FRACTION = 20 / 300
OFFICIAL_TEACHER_TEMPERATURE_WARMUP_FRACTION = 10 / 300
CURVES = [  # the panels of training_curves.png
    ("losses", ("loss", "prediction_loss", "classification_loss")),
    ("std of normalised vectors", ("prediction_std", "target_std")),
    ("teacher perplexity", ("teacher_perplexity",)),
    ("distinct teacher classes", ("num_teacher_classes",)),
    ("student/teacher agreement", ("student_teacher_agreement",)),
    ("learning rate", ("learning_rate",)),
]
OPTIMIZERS = ("fairseq_adam", "adamw")
# the final values the model card reports
MONITORS = ("loss", "prediction_loss", "classification_loss", "prediction_std", "target_std", "teacher_perplexity")


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("corpus (give one of --dataset_name, --dataset_dir, --data_files)")
    data.add_argument("--dataset_name", help="Hub dataset id (or anything `datasets.load_dataset` takes), streamed")
    data.add_argument("--dataset_config", help="configuration name of --dataset_name")
    data.add_argument(
        "--dataset_dir",
        help="local audiofolder directory of audio files (labels/metadata ignored), or a prepared corpus "
        "(python -m matpac_hf.prepare_corpus), read by slicing",
    )
    data.add_argument("--data_files", nargs="+", help="parquet or webdataset .tar shards, or audio files (globs ok)")
    data.add_argument("--split", default="train", help="split to stream")
    data.add_argument("--audio_column", help="audio column; default: 'audio', or the only Audio column")
    data.add_argument("--corpus_size", type=int, help="clips in the corpus (per epoch), to turn epochs into steps")
    data.add_argument("--corpus_name", help="the corpus in the model card (default: dataset id or folder/file names)")
    data.add_argument(
        "--shuffle_buffer_size",
        type=int,
        default=10_000,
        help="clips in the streaming shuffle buffer (0 disables it; needed for an exact resume)",
    )
    data.add_argument(
        "--crop_frames",
        type=int,
        default=CROP_FRAMES,
        help="crop length in log-mel frames of 10 ms, a multiple of the 16-frame patch, at most the model's "
        "max_frames: 608 (6.1 s) officially; shorter crops keep the clips of a corpus of short clips",
    )
    data.add_argument(
        "--min_clip_policy",
        choices=MIN_CLIP_POLICIES,
        default="drop",
        help="clips shorter than the crop: drop them (official) or zero-pad them (padding left out of the losses)",
    )
    data.add_argument(
        "--bad_audio",
        choices=BAD_AUDIO_POLICIES,
        default="skip",
        help="unreadable clips: skip and count them, or stop with the file name",
    )
    data.add_argument(
        "--num_workers", type=int, default=1, help="DataLoader workers decoding audio per process (0: in-process)"
    )
    data.add_argument(
        "--audio_cache_mb",
        type=float,
        default=0,
        help="keep up to this many MB of decoded clips in memory for later epochs (small corpora; needs "
        "--num_workers 0; 0: off)",
    )
    data.add_argument(
        "--num_threads",
        type=int,
        help="torch threads per training process (default: OMP_NUM_THREADS, else this process's share of the "
        "cores minus one per decoding worker)",
    )
    data.add_argument(
        "--augment",
        help="waveform augmentation of each crop before the log-mel (docs/pretraining.md): comma-separated families "
        f"among {', '.join(AUGMENTATION_FAMILIES)}, or 'all' (default: none, as the official run)",
    )
    data.add_argument("--augment_probability", type=float, default=0.5, help="probability of each --augment family")
    data.add_argument(
        "--augment_teacher_view",
        action="store_true",
        help="not MATPAC: the teacher encodes its own draw of the --augment families that keep the time-frequency "
        "layout (mix, filter, gain, noise), the student predicts it from its view",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS), default="base", help="'base' (official ViT-B) or 'tiny'")
    model.add_argument("--use_mcl", action="store_true", help="MATPAC++: multiple-choice-learning prediction heads")
    model.add_argument(
        "--config_overrides",
        help="MatpacConfig fields over the preset, e.g. 'hidden_size=64,num_hidden_layers=2'; with "
        "--model_name_or_path, over the loaded config: only what does not change loaded weights (schedules, "
        "temperatures, EMA decays, masking, loss weights, sizes of parts the folder lacks); the rest is refused",
    )
    model.add_argument(
        "--model_name_or_path",
        help="start from a saved model: a MatpacForPreTraining folder (a run's pretraining_model/), an encoder "
        "folder (encoder/, a converted release) or an authors' Hub repository (teachers absent from it start as "
        "copies of the student); --preset is then not used",
    )
    model.add_argument(
        "--restart_schedules",
        action="store_true",
        help="with a converted fairseq training checkpoint (training_progress.json): start the learning-rate, "
        "teacher-temperature and EMA schedules at step 0 instead of its num_updates",
    )

    optim = parser.add_argument_group("optimisation (official values by default)")
    optim.add_argument("--per_device_batch_size", type=int, default=32, help="crops per process per micro-batch")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimiser step")
    optim.add_argument("--learning_rate", type=float, default=3e-4, help="peak learning rate (official at batch 2048)")
    optim.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="fairseq_adam",
        help="fairseq_adam: the official run's update rule (matpac_hf.optimization.FairseqAdam: epsilon added to "
        "sqrt(v), bias corrections in the step size); adamw: torch's fused AdamW (epsilon added to the bias-corrected "
        "sqrt(v): a smaller effective epsilon over the first ~100 steps)",
    )
    optim.add_argument("--weight_decay", type=float, default=0.05, help="decoupled weight decay")
    optim.add_argument("--adam_beta1", type=float, default=0.9, help="Adam beta1")
    optim.add_argument("--adam_beta2", type=float, default=0.95, help="Adam beta2")
    optim.add_argument("--adam_epsilon", type=float, default=1e-6, help="Adam epsilon")
    optim.add_argument(
        "--no_decay_bias_norm",
        action="store_true",
        help="no weight decay on biases, norms, tokens and the prototype gain (official: decay on every parameter)",
    )
    optim.add_argument("--max_grad_norm", type=float, default=3.0, help="gradient clipping norm")
    optim.add_argument(
        "--mixed_precision", choices=("no", "fp16", "bf16"), help="default: accelerate's configuration, else 'no'"
    )
    optim.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling, crops and masks")

    schedule = parser.add_argument_group("schedule: in optimiser steps, or in epochs with --corpus_size")
    schedule.add_argument("--max_steps", type=int, help="optimiser steps in all")
    schedule.add_argument("--warmup_steps", type=int, help="linear learning-rate warm-up steps")
    schedule.add_argument("--teacher_temperature_warmup_steps", type=int, help="teacher temperature 0.04 -> 0.07")
    schedule.add_argument("--num_epochs", type=float, help="epochs in all (official: 300)")
    schedule.add_argument("--warmup_epochs", type=float, help="warm-up epochs (official: 20)")
    schedule.add_argument("--teacher_temperature_warmup_epochs", type=float, help="official: 10")

    output = parser.add_argument_group("outputs, checkpoints and logging")
    output.add_argument("--output_dir", required=True, help="where checkpoints, logs and the final models go")
    output.add_argument("--checkpointing_steps", type=int, default=1000, help="save a checkpoint every N steps")
    output.add_argument("--checkpoints_total_limit", type=int, default=3, help="checkpoints kept (0: all)")
    output.add_argument("--resume_from_checkpoint", help="'latest' (newest complete one, if any) or a checkpoint")
    output.add_argument(
        "--save_models_at_checkpoints", action="store_true", help="write pretraining_model/, encoder/ in checkpoints"
    )
    output.add_argument("--logging_steps", type=int, default=10, help="log losses and monitors every N steps")
    output.add_argument(
        "--report_to",
        default="auto",
        help="'auto' (JSONL, plus tensorboard when installed), 'jsonl', or accelerate trackers to add to JSONL "
        "(comma-separated: tensorboard, wandb, ...)",
    )
    output.add_argument(
        "--log_example_ids", action="store_true", help="ids of the clips read, in logs/example_ids_rank<i>.jsonl"
    )
    output.add_argument("--push_to_hub", action="store_true", help="upload the encoder folder to the Hub at the end")
    output.add_argument("--hub_model_id", help="Hub repo id for --push_to_hub, e.g. 'me/matpac-vitb'")
    output.add_argument("--hub_private_repo", action="store_true", help="create the Hub repo as private")
    output.add_argument("--license", default="mit", help="license written in the model card")
    return parser


def parse_args(argv=None, parser: argparse.ArgumentParser | None = None, require_corpus: bool = True):
    """The options of `build_parser()` (or of `parser`, which extends it), parsed and checked."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    sources = [name for name in ("dataset_name", "dataset_dir", "data_files") if getattr(args, name)]
    if len(sources) > 1:
        parser.error(f"give at most one corpus source, got {', '.join('--' + s for s in sources)}")
    if require_corpus and not sources:
        parser.error(
            "give a corpus: --dataset_name, --dataset_dir or --data_files (examples/run_pretraining_demo.py "
            "builds a small one and runs the demo)"
        )
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. 'me/matpac-vitb')")
    for name in ("per_device_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.crop_frames < 1:
        parser.error(f"--crop_frames must be >= 1, got {args.crop_frames}")
    if args.num_threads is not None and args.num_threads < 1:
        parser.error(f"--num_threads must be >= 1, got {args.num_threads}")
    if args.audio_cache_mb < 0:
        parser.error(f"--audio_cache_mb must be >= 0 (0: no cache), got {args.audio_cache_mb}")
    return args


def setup_logging():
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("datasets", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_accelerator(args, output_dir: str) -> tuple[Accelerator, JsonlTracker]:
    """The Accelerator with its trackers: JSONL always; tensorboard when installed, or what --report_to names."""
    logging_dir = os.path.join(output_dir, "logs")
    jsonl = JsonlTracker("matpac_pretraining", logging_dir)
    trackers = [jsonl]
    if args.report_to == "auto":
        trackers += ["tensorboard"] if is_tensorboard_available() else []
    elif args.report_to != "jsonl":
        trackers += [name.strip() for name in args.report_to.split(",") if name.strip() and name.strip() != "jsonl"]
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=logging_dir),
    )
    setup_logging()
    logger.info(accelerator.state, main_process_only=False)
    return accelerator, jsonl


def _steps(step_value: int | None, epoch_value: float | None, steps_per_epoch: int | None, default: int | None):
    """A length given in steps, else in epochs, else `default`."""
    if step_value is not None:
        return step_value
    if epoch_value is not None:
        return int(round(epoch_value * steps_per_epoch))
    return default


def resolve_schedule(args, corpus_size: int | None, num_processes: int) -> dict:
    """Optimiser steps for the run, the warm-up and the teacher-temperature warm-up (steps win over epochs)."""
    clips_per_step = args.per_device_batch_size * num_processes * args.gradient_accumulation_steps
    steps_per_epoch = corpus_size // clips_per_step if corpus_size else None
    uses_epochs = any(
        v is not None for v in (args.num_epochs, args.warmup_epochs, args.teacher_temperature_warmup_epochs)
    )
    if uses_epochs and not steps_per_epoch:
        raise ValueError(
            "Epoch-based lengths (--num_epochs / --warmup_epochs / --teacher_temperature_warmup_epochs) need "
            f"--corpus_size (clips in the corpus) of at least one step's worth of clips ({clips_per_step}), got "
            f"{corpus_size}; or give the lengths in steps."
        )
    max_steps = _steps(args.max_steps, args.num_epochs, steps_per_epoch, None)
    if max_steps is None:
        raise ValueError("Give the run length: --max_steps, or --num_epochs with --corpus_size.")
    if max_steps < 1:
        raise ValueError(f"The run must have at least one optimiser step, got {max_steps}.")
    official_warmup = int(round(max_steps * OFFICIAL_WARMUP_FRACTION))
    warmup = _steps(args.warmup_steps, args.warmup_epochs, steps_per_epoch, official_warmup)
    teacher_warmup = _steps(
        args.teacher_temperature_warmup_steps,
        args.teacher_temperature_warmup_epochs,
        steps_per_epoch,
        int(round(max_steps * OFFICIAL_TEACHER_TEMPERATURE_WARMUP_FRACTION)),
    )
    if not 0 <= warmup <= max_steps or not 0 <= teacher_warmup <= max_steps:
        raise ValueError(f"Warm-ups ({warmup}, {teacher_warmup} steps) must lie within the run ({max_steps} steps).")
    return {
        "max_steps": max_steps,
        "warmup_steps": warmup,
        "teacher_temperature_warmup_steps": teacher_warmup,
        "steps_per_epoch": steps_per_epoch,
        "clips_per_step": clips_per_step,
        "corpus_size": corpus_size,
    }


def describe_epochs(schedule: dict) -> str:
    """The schedule's epoch length for the log: steps per epoch, or why it is unknown."""
    if schedule["corpus_size"] is None:
        return "epoch length unknown (the corpus size is not known ahead of streaming it; --corpus_size gives it)"
    return f"steps per epoch: {schedule['steps_per_epoch']} (corpus of {schedule['corpus_size']} clips)"


def build_model(args, schedule: dict) -> MatpacForPreTraining:
    """A saved MatpacForPreTraining (--model_name_or_path) or a new one from the preset and overrides, with the run's
    schedule lengths in its config (its own schedules, teacher temperature and EMA, follow them)."""
    lengths = {
        "total_steps": schedule["max_steps"],
        "teacher_temperature_warmup_steps": schedule["teacher_temperature_warmup_steps"],
    }
    if args.model_name_or_path:
        model, loading_info = MatpacForPreTraining.from_pretrained(
            args.model_name_or_path, output_loading_info=True, **lengths
        )
        overrides = parse_config_overrides(args.config_overrides)
        if args.use_mcl:
            overrides["use_mcl"] = True
        if overrides:
            model = apply_config_overrides(model, overrides, loading_info["missing_keys"], args.model_name_or_path)
    else:
        config_kwargs = {**PRESETS[args.preset], **parse_config_overrides(args.config_overrides)}
        if args.use_mcl:
            config_kwargs["use_mcl"] = True
        model = MatpacForPreTraining(MatpacConfig(**lengths, **config_kwargs))
    config = model.config
    if args.crop_frames % config.patch_size or args.crop_frames > config.max_frames:
        raise ValueError(
            f"--crop_frames {args.crop_frames} must be a multiple of the patch size {config.patch_size} and at most "
            f"the model's max_frames {config.max_frames} (its position table), e.g. "
            f"{max(config.patch_size, min(args.crop_frames, config.max_frames) // config.patch_size * config.patch_size)}."
        )
    return model


def continued_step(args) -> int:
    """The optimiser step a converted fairseq training checkpoint reached (its `training_progress.json`), from which
    the schedules continue; 0 otherwise or with --restart_schedules."""
    if not args.model_name_or_path or args.restart_schedules:
        return 0
    try:
        progress = read_training_progress(args.model_name_or_path)
    except OSError:
        return 0
    return int(progress.get("num_updates", 0))


def is_no_decay_parameter(name: str, parameter: torch.nn.Parameter) -> bool:
    return parameter.ndim <= 1 or name.endswith("token") or "norm" in name or "weight_norm_gain" in name


def build_optimizer(model: MatpacForPreTraining, args) -> torch.optim.Optimizer:
    """The optimiser over the trainable parameters only (the EMA teachers have requires_grad=False): fairseq's Adam
    rule (official) or torch's AdamW (`--optimizer adamw`)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if args.no_decay_bias_norm:
        groups = [
            {"params": [p for n, p in named if not is_no_decay_parameter(n, p)], "weight_decay": args.weight_decay},
            {"params": [p for n, p in named if is_no_decay_parameter(n, p)], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": [p for _, p in named], "weight_decay": args.weight_decay}]
    betas = (args.adam_beta1, args.adam_beta2)
    if args.optimizer == "fairseq_adam":  # torch's fused AdamW kernel with fairseq's step-dependent epsilon
        return FairseqAdam(groups, lr=args.learning_rate, betas=betas, eps=args.adam_epsilon)
    fused = all(p.device.type in ("cpu", "cuda") for _, p in named)  # one kernel per step (benchmarks/RESULTS.md)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=betas, eps=args.adam_epsilon, fused=fused)


def mask_generator(seed: int, rank: int, step: int, micro_step: int) -> torch.Generator:
    """The masking randomness of one micro-batch, a pure function of (seed, rank, step, micro-step): resumed runs
    draw the same masks as uninterrupted ones."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + step) * 1_009 + micro_step)


def run_hyperparameters(args, config: MatpacConfig, schedule: dict, accelerator: Accelerator) -> dict:
    """What the trackers and the model card record about the run."""
    return {
        "preset": args.preset,
        "use_mcl": config.use_mcl,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "betas": f"({args.adam_beta1}, {args.adam_beta2})",
        "adam_epsilon": args.adam_epsilon,
        "decay_bias_norm": not args.no_decay_bias_norm,
        "max_grad_norm": args.max_grad_norm,
        "per_device_batch_size": args.per_device_batch_size,
        "num_processes": accelerator.num_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "total_batch_size": schedule["clips_per_step"],
        "total_steps": schedule["max_steps"],
        "warmup_steps": schedule["warmup_steps"],
        "teacher_temperature_warmup_steps": schedule["teacher_temperature_warmup_steps"],
        "mixed_precision": accelerator.mixed_precision,
        "seed": args.seed,
        "shuffle_buffer_size": args.shuffle_buffer_size,
        "min_clip_policy": args.min_clip_policy,
        "crop": f"{args.crop_frames} frames ({args.crop_frames * config.hop_length / config.sampling_rate:.2f} s)",
        "augmentation": ",".join(parse_families(args.augment)) or "none",
        "augmentation_teacher_view": args.augment_teacher_view,
    }


def build_augmentation(args) -> PretrainingAugmentation | None:
    """The `--augment*` flags' augmentation, or None when off."""
    families = parse_families(args.augment)
    if not families:
        if args.augment_teacher_view:
            raise ValueError("--augment_teacher_view needs --augment families (e.g. --augment all).")
        return None
    config = AugmentationConfig(
        families=families, probability=args.augment_probability, teacher_view=args.augment_teacher_view
    )
    logger.info(f"Pretraining augmentation: {config.to_dict()}")
    return PretrainingAugmentation(config, seed=args.seed)


def build_data_loop(args, accelerator: Accelerator) -> tuple[PretrainingDataLoop, int | None]:
    """The corpus stream, shuffled and split over the processes, as endless resumable crop batches; and the corpus
    size (given, or from the dataset info)."""
    if args.audio_cache_mb > 0 and args.num_workers > 0:
        raise ValueError(
            f"--audio_cache_mb {args.audio_cache_mb:g} with --num_workers {args.num_workers}: the cache lives in the "
            "process that decodes, and DataLoader workers start again (empty) every epoch. Use --num_workers 0 "
            "with the cache, or drop --audio_cache_mb."
        )
    dataset, audio_column = load_audio_stream(
        dataset_name=args.dataset_name,
        dataset_dir=args.dataset_dir,
        data_files=args.data_files,
        dataset_config=args.dataset_config,
        split=args.split,
        audio_column=args.audio_column,
    )
    corpus_size = args.corpus_size
    splits = getattr(dataset.info, "splits", None) or {}
    if corpus_size is None and args.split in splits and splits[args.split].num_examples:
        corpus_size = splits[args.split].num_examples
        logger.info(f"Corpus size from the dataset info: {corpus_size} clips")
    provenance = read_provenance(args.dataset_dir) if args.dataset_dir else None  # a corpus from prepare_corpus
    if corpus_size is None and provenance is not None:
        corpus_size = provenance["clips_written"]
        logger.info(f"Corpus size from {args.dataset_dir}/prepared_corpus.json: {corpus_size} clips")
    stream = build_crop_stream(
        dataset,
        audio_column,
        seed=args.seed,
        shuffle_buffer_size=args.shuffle_buffer_size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        crop_frames=args.crop_frames,
        min_clip_policy=args.min_clip_policy,
        bad_audio=args.bad_audio,
        cache_bytes=int(args.audio_cache_mb * 2**20),
        augmentation=build_augmentation(args),
    )
    data_loop = PretrainingDataLoop(
        stream,
        batch_size=args.per_device_batch_size,
        num_workers=args.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        worker_init_fn=init_decoding_worker,  # 1 thread each; SIGINT / SIGTERM left to the training process
    )
    if not data_loop.exact_resume:
        logger.warning(
            "DataLoader workers without torchdata: a resumed run restarts the interrupted epoch. Install "
            "torchdata (StatefulDataLoader) or use --num_workers 0 for an exact resume."
        )
    return data_loop, corpus_size


def describe_corpus(args) -> str:
    """The corpus as the model card names it: --corpus_name, the Hub dataset, or folder / file names (never local
    paths)."""
    if args.corpus_name:
        return args.corpus_name
    if args.dataset_name:
        return args.dataset_name
    if args.dataset_dir:
        return f"the audio folder `{os.path.basename(os.path.normpath(args.dataset_dir))}`"
    return ", ".join(f"`{os.path.basename(path)}`" for path in args.data_files)


def card_fields(args, config, hyperparameters: dict, corpus: str, global_step: int, monitors=None) -> dict:
    """The fields of the encoder's model card."""
    fields = pretrained_encoder_fields(config, hyperparameters, corpus, global_step, args.crop_frames, monitors)
    fields.update(license=args.license, datasets=[args.dataset_name] if args.dataset_name else None)
    fields.update(base_model=args.model_name_or_path, repo_id=args.hub_model_id)
    return {k: v for k, v in fields.items() if v is not None}


def save_models(model: MatpacForPreTraining, feature_extractor, card: dict, folder: str) -> str:
    """`pretraining_model/` (continue training) and `encoder/` (AutoModel-ready, with a model card) in `folder`."""
    model.save_pretrained(os.path.join(folder, "pretraining_model"))
    feature_extractor.save_pretrained(os.path.join(folder, "pretraining_model"))
    encoder_dir = os.path.join(folder, "encoder")
    model.matpac.save_pretrained(encoder_dir)
    feature_extractor.save_pretrained(encoder_dir)
    with open(os.path.join(encoder_dir, "README.md"), "w") as handle:
        handle.write(render_model_card("pretrained_encoder", **card))
    return encoder_dir


def log_metrics(accelerator, sums: dict, num_micro_steps: int, extra: dict, step: int, max_steps: int) -> dict:
    """Means over the micro-steps and processes of the losses and monitors, plus `extra`; to the trackers and the
    log."""
    means = {k: accelerator.reduce(v / num_micro_steps, reduction="mean").item() for k, v in sums.items()}
    means.update(extra)
    accelerator.log(means, step=step)
    logger.info(
        f"step {step}/{max_steps} loss {means['loss']:.4f} (prediction {means['prediction_loss']:.4f}, "
        f"classification {means['classification_loss']:.4f}) lr {means['learning_rate']:.2e} | std pred/target "
        f"{means.get('prediction_std', 0):.3f}/{means.get('target_std', 0):.3f} | teacher perplexity "
        f"{means.get('teacher_perplexity', 0):.1f}, classes {means.get('num_teacher_classes', 0):.0f}, agreement "
        f"{means.get('student_teacher_agreement', 0):.3f} | tau_t {means.get('teacher_temperature', 0):.4f} | clips "
        f"skipped {means['data/num_corrupted']:.0f}, too short {means['data/num_too_short']:.0f}, padded "
        f"{means['data/num_padded']:.0f}"
    )
    return means


def train(args, accelerator, model, optimizer, lr_scheduler, feature_extractor, data_loop, schedule, start_step, card):
    """The optimiser steps from `start_step` to the end of the schedule, or until SIGINT / SIGTERM. Returns
    `(global_step, last logged metrics, the stopping signal's number or None)`."""
    output_dir = os.path.abspath(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    rank, global_step, max_steps = accelerator.process_index, start_step, schedule["max_steps"]
    ids_file = None
    if args.log_example_ids:
        ids_file = open(os.path.join(output_dir, "logs", f"example_ids_rank{rank}.jsonl"), "a")
    progress = tqdm(
        total=max_steps, initial=global_step, desc="pretraining", disable=not accelerator.is_local_main_process
    )
    sums, micro_step, last_logged, grad_norm, stopped_by = {}, 0, {}, None, None
    start_time = time.perf_counter()
    batches = iter(data_loop)
    model.train()
    with StopRequest() as stop:
        while global_step < max_steps:
            batch = next(batches)
            with accelerator.accumulate(model):
                waveforms = waveforms_on_device(batch, accelerator.device)  # (batch, samples) float32
                input_values = feature_extractor.extract_log_mel(waveforms)  # (batch, crop_frames, 80), float32
                inputs = {"step": global_step, "generator": mask_generator(args.seed, rank, global_step, micro_step)}
                if bool((batch["num_valid_samples"] < waveforms.shape[1]).any()):  # zero-padded short clips
                    mask = frame_attention_mask(batch["num_valid_samples"], input_values.shape[1])
                    inputs["attention_mask"] = mask.to(accelerator.device)
                if "teacher_input_values" in batch:  # --augment_teacher_view
                    teacher_waveforms = waveforms_on_device(batch, accelerator.device, "teacher_input_values")
                    inputs["teacher_input_values"] = feature_extractor.extract_log_mel(teacher_waveforms)
                outputs = model(input_values, **inputs)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients:
                    unwrapped.update_teachers(global_step)  # after backward, before the optimiser step (docstring)
                    grad_norm = accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for key, value in outputs.items():  # every scalar: the losses and the collapse monitors
                if value.ndim == 0:
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
            if ids_file is not None:
                ids = {
                    "step": global_step,
                    "micro_step": micro_step,
                    "epoch": data_loop.epoch,
                    "ids": batch["example_ids"],
                }
                ids_file.write(json.dumps(ids) + "\n")
                ids_file.flush()
            micro_step += 1
            if not accelerator.sync_gradients:
                continue

            # one optimiser step done
            global_step += 1
            progress.update(1)
            if global_step % args.logging_steps == 0 or global_step == max_steps:
                extra = {
                    "learning_rate": lr_scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    "epoch": data_loop.epoch,
                    **{f"data/{k}": v for k, v in data_loop.stats.totals().items()},
                    "steps_per_second": (global_step - start_step) / max(time.perf_counter() - start_time, 1e-9),
                }
                last_logged = log_metrics(accelerator, sums, micro_step, extra, global_step, max_steps)
                progress.set_postfix(loss=f"{last_logged['loss']:.4f}")
            sums, micro_step = {}, 0
            stopping = stop.requested(accelerator, global_step)
            if (global_step % args.checkpointing_steps == 0 and global_step < max_steps) or stopping:
                write_models = None
                if args.save_models_at_checkpoints:
                    write_models = functools.partial(save_models, unwrapped, feature_extractor, card(global_step))
                training_state = {"global_step": global_step, "data": data_loop.state_dict()}
                path = save_checkpoint(
                    accelerator, output_dir, global_step, training_state, args.checkpoints_total_limit, write_models
                )
                logger.info(f"Saved checkpoint {path}")
            if stopping:
                stopped_by = stop.signal_number or signal.SIGTERM  # SIGTERM: a signal seen by another process
                logger.warning(
                    f"Stopped by {signal.Signals(stopped_by).name} after step {global_step}, checkpoint written: "
                    "continue with --resume_from_checkpoint latest"
                )
                break
    progress.close()
    if ids_file is not None:
        ids_file.close()
    return global_step, last_logged, stopped_by


def save_final_outputs(args, model, feature_extractor, card: dict, jsonl):
    """Main process: `pretraining_model/`, `encoder/` with its card, the training curves and the Hub upload."""
    output_dir = os.path.abspath(args.output_dir)
    encoder_dir = save_models(model, feature_extractor, card, folder=output_dir)
    logger.info(
        f"Saved {output_dir}/pretraining_model (continue training) and {encoder_dir} (AutoModel.from_pretrained)"
    )
    png = os.path.join(output_dir, "training_curves.png")
    if os.path.isfile(jsonl.path) and plot_jsonl_metrics(jsonl.path, png, CURVES):
        logger.info(f"Saved {png}")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True)
        api.upload_folder(
            repo_id=args.hub_model_id,
            folder_path=encoder_dir,
            commit_message=f"MATPAC encoder after {card['training_hyperparameters']['total_steps']} pretraining steps",
        )
        logger.info(f"Pushed {encoder_dir} to the Hub as {args.hub_model_id}")


def main(argv=None) -> int:
    return pretrain(parse_args(argv))


def pretrain(args) -> int:
    """Steps 1-7 below for the parsed options; the exit status: 0, or 128 + the signal number after a stop."""
    output_dir = os.path.abspath(args.output_dir)
    logging_dir = os.path.join(output_dir, "logs")

    # 1. Accelerator and trackers; threads; the same initial weights on every process.
    accelerator, jsonl = build_accelerator(args, output_dir)
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    num_threads, reason = choose_num_threads(args.num_threads, args.num_workers, processes_here)
    torch.set_num_threads(num_threads)
    logger.info(
        f"Threads: {num_threads} torch intra-op thread(s) per training process ({reason}), 1 per decoding worker "
        f"({args.num_workers} per process); change with --num_threads"
    )
    set_seed(args.seed)

    # 2. The corpus as endless resumable crop batches.
    data_loop, corpus_size = build_data_loop(args, accelerator)

    # 3. Schedule lengths (written into the model config, whose own schedules follow them).
    schedule = resolve_schedule(args, corpus_size, accelerator.num_processes)
    logger.info(
        f"Schedule: {schedule['max_steps']} optimiser steps of {schedule['clips_per_step']} crops of "
        f"{args.crop_frames} frames ({args.per_device_batch_size} per process x {accelerator.num_processes} processes "
        f"x {args.gradient_accumulation_steps} accumulation); {describe_epochs(schedule)}; learning-rate warm-up "
        f"{schedule['warmup_steps']} steps; teacher-temperature warm-up {schedule['teacher_temperature_warmup_steps']} "
        "steps"
    )

    # 4. Model, feature extractor, optimiser, learning-rate schedule.
    model = build_model(args, schedule)
    config = model.config
    feature_extractor = MatpacFeatureExtractor.from_model_config(config)
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        f"Model: {'MATPAC++' if config.use_mcl else 'MATPAC'} from {args.model_name_or_path or args.preset + ' preset'}"
        f", {num_trainable / 1e6:.2f} M trainable parameters (teachers excluded)"
    )
    optimizer = build_optimizer(model, args)
    first_step = continued_step(args)
    if first_step:
        if first_step >= schedule["max_steps"]:
            raise ValueError(
                f"{args.model_name_or_path} continues from step {first_step} (its training_progress.json), but the run "
                f"has {schedule['max_steps']} steps in all: give a longer --max_steps, or --restart_schedules."
            )
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        logger.info(
            f"Continuing the schedules of {args.model_name_or_path} from step {first_step} (its num_updates); the "
            "optimiser moments start at zero (the official fp16 run's flattened Adam state is not converted)"
        )
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, schedule["warmup_steps"], schedule["max_steps"], last_epoch=first_step - 1
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler counts optimiser steps itself (not handed to `prepare`, which would step it once per process);
    # it is registered so that save_state / load_state include it.
    accelerator.register_for_checkpointing(lr_scheduler)

    # 5. Resume; the logs forget the steps after the checkpoint (they are computed again).
    start_step, checkpoint = (
        first_step,
        resolve_checkpoint(args.resume_from_checkpoint, output_dir),
    )  # 'latest' / folder
    if checkpoint is not None:
        training_state = load_checkpoint(accelerator, checkpoint)
        data_loop.load_state_dict(training_state["data"])
        start_step = training_state["global_step"]
        logger.info(f"Resumed from {checkpoint} at step {start_step} (epoch {data_loop.epoch})")
    if start_step and accelerator.is_main_process:
        jsonl.truncate_after(start_step)
    if start_step and args.log_example_ids:
        ids_path = os.path.join(logging_dir, f"example_ids_rank{accelerator.process_index}.jsonl")
        truncate_jsonl(ids_path, lambda row: row["step"] < start_step)
    hyperparameters = run_hyperparameters(args, config, schedule, accelerator)
    accelerator.init_trackers("matpac_pretraining", config=hyperparameters)
    card = functools.partial(card_fields, args, config, hyperparameters, describe_corpus(args))

    # 6. The training loop (stops early, with a checkpoint, on SIGINT / SIGTERM).
    global_step, last_logged, stopped_by = train(
        args, accelerator, model, optimizer, lr_scheduler, feature_extractor, data_loop, schedule, start_step, card
    )

    # 7. Final outputs: pretraining model, encoder with its model card, curves, Hub upload.
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if stopped_by is None:
        if accelerator.num_processes > 1:
            check_replicas_in_sync(accelerator, unwrapped, os.path.join(logging_dir, "replica_checksums.json"))
        logger.info(f"Data: {data_loop.stats.totals()} (this process)")
        if accelerator.is_main_process:
            monitors = {k: last_logged[k] for k in MONITORS if k in last_logged}
            save_final_outputs(args, unwrapped, feature_extractor, card(global_step, monitors), jsonl)
    accelerator.wait_for_everyone()
    # Free the DDP wrapper while every process is still here: its gradient reducer holds the process group, and
    # destroying that group after a peer has exited can block forever in gloo's destructor (seen at exit).
    model = optimizer = unwrapped = None
    accelerator.free_memory()
    accelerator.end_training()
    return 0 if stopped_by is None else 128 + int(stopped_by)


if __name__ == "__main__":
    sys.exit(main())
