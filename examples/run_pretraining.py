# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Pretrain a MATPAC / MATPAC++ audio encoder on a streamed `datasets` corpus with 🤗 Accelerate.

    # the embedded demo: builds a small synthetic corpus, pretrains the tiny preset on CPU, then linear-probes
    python examples/run_pretraining.py --preset tiny --output_dir demo_output

    # your corpus (Hub dataset, audiofolder directory, parquet shards or webdataset tars), any number of GPUs
    accelerate launch examples/run_pretraining.py --dataset_name user/my_audio --audio_column audio \
        --preset base --per_device_batch_size 256 --num_epochs 300 --warmup_epochs 20 \
        --teacher_temperature_warmup_epochs 10 --corpus_size 2012615 --mixed_precision fp16 --output_dir matpac_run

    # a corpus of short clips: 3 s crops, shorter clips zero-padded (the padded patches are left out of the losses)
    python examples/run_pretraining.py --dataset_dir clips/ --crop_frames 304 --min_clip_policy pad ...

One optimiser step (method spec, sections 4 and 5): random waveform crops of `--crop_frames` log-mel frames (608 =
6.08 s; decoded, down-mixed and resampled by `matpac_hf.pretraining_data` in DataLoader workers) -> normalised log-mel
on the training device (`extract_log_mel`) -> `MatpacForPreTraining(input_values, attention_mask, step=step)` ->
backward -> `update_teachers(step)` (EMA) -> clip the gradient norm at 3.0 -> AdamW step -> cosine schedule step.

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
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration, gather_object, is_tensorboard_available, set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacForPreTraining
from matpac_hf.audio_io import BAD_AUDIO_POLICIES, MIN_CLIP_POLICIES
from matpac_hf.model_card import pretraining_objective, render_model_card
from matpac_hf.pretraining_data import (
    CROP_FRAMES,
    PretrainingDataLoop,
    build_crop_stream,
    frame_attention_mask,
    load_audio_stream,
)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling examples below, also when imported
import real_audio_corpus  # noqa: E402
import run_linear_probe  # noqa: E402
from demo_corpus import DemoCorpus, build_demo_corpus  # noqa: E402


logger = get_logger(__name__)

# `--preset tiny`: small enough to pretrain on a laptop CPU in minutes; keeps 80 mels and 16 x 16 patches. Width 64
# (4 blocks of 2 heads, predictor 2 blocks of width 64): the width that learned best in the tiny-regime sweep of
# benchmarks/bench_pretraining_real_audio.py (real audio, 8000 steps: +3.2 points over a random encoder of the same
# config at width 64, +2.6 at 32, -0.7 at 192, where a random projection of the patches is already as good as the
# trained one); 3x faster per step than width 192. Its EMA decays suit runs of hundreds to a few thousand steps: the
# official 0.99995 moves the teacher by 0.005 % a step, so a short run would learn to predict the randomly initialised
# teacher.
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
# The embedded demo (no corpus given): its length, probe size and the settings it gets when they are left at their
# defaults. 96-frame crops run ~10x faster per step than 608-frame ones, so the tiny preset gets thousands of steps in a
# few minutes; learning rate 1e-3 for a run that short (the official 3e-4 is for batch 2048 over 300 epochs); no
# decoding worker: an epoch of the demo corpus is a few steps and the DataLoader starts its workers again every epoch
# (measured: 9.5 steps/s in the training process vs 6.0 with one worker); the corpus decoded once and kept in memory
# (92 MB for its 240 clips; decoding FLAC crops every epoch was 40 % of a step).
DEMO_MAX_STEPS = 3000
DEMO_PROBE_CLIPS = 80  # labelled 3 s clips per class of the demo's linear probe (5 folds of 80 clips)
DEMO_PROBE_SEEDS = 3  # probe seeds averaged per fold (the early-stopping split of 32 clips makes one seed noisy)
DEMO_SETTINGS = {"crop_frames": 96, "learning_rate": 1e-3, "num_workers": 0, "audio_cache_mb": 512}
# `--demo_corpus real` (examples/real_audio_corpus.py: speech, notes and drums of 1-6 s): its pretraining clips, and
# the settings it gets (its clips are shorter than a crop: padded crops, padding masked)
REAL_DEMO_NUM_CLIPS = 600
REAL_DEMO_SETTINGS = {**DEMO_SETTINGS, "min_clip_policy": "pad"}
MONITORS = (
    "prediction_std",
    "target_std",
    "teacher_perplexity",
    "num_teacher_classes",
    "student_teacher_agreement",
    "teacher_temperature",
    "ema_decay",
    "head_ema_decay",
    "mcl_temperature",
)
FINAL_MONITORS = (
    "loss",
    "prediction_loss",
    "classification_loss",
    "prediction_std",
    "target_std",
    "teacher_perplexity",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("corpus (give at most one of --dataset_name, --dataset_dir, --data_files)")
    data.add_argument("--dataset_name", help="Hub dataset id (or anything `datasets.load_dataset` takes), streamed")
    data.add_argument("--dataset_config", help="configuration name of --dataset_name")
    data.add_argument("--dataset_dir", help="local audiofolder directory of audio files (labels/metadata ignored)")
    data.add_argument(
        "--data_files", nargs="+", help="parquet shards, webdataset .tar shards or audio files (globs ok)"
    )
    data.add_argument("--split", default="train", help="split to stream")
    data.add_argument("--audio_column", help="audio column; default: 'audio', or the only Audio column")
    data.add_argument(
        "--corpus_size",
        type=int,
        help="number of clips in the corpus (per epoch), to convert epochs into steps; the demo corpus sets it itself",
    )
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
        help="crop length in log-mel frames (10 ms each; a multiple of the 16-frame patch, at most the model's "
        "max_frames): 608 (6.1 s) officially; shorter crops keep the clips of a corpus of short clips",
    )
    data.add_argument(
        "--min_clip_policy",
        choices=MIN_CLIP_POLICIES,
        default="drop",
        help="clips shorter than the crop: drop them (official) or zero-pad them at the end (the padded patches are "
        "never visible nor targets and are left out of the losses)",
    )
    data.add_argument(
        "--bad_audio",
        choices=BAD_AUDIO_POLICIES,
        default="skip",
        help="unreadable clips: skip and count them (reported in the logs), or stop with the file name",
    )
    data.add_argument(
        "--num_workers",
        type=int,
        default=1,
        help="DataLoader worker processes decoding audio per training process (0: decode in-process)",
    )
    data.add_argument(
        "--audio_cache_mb",
        type=float,
        default=0,
        help="keep up to this many MB of decoded clips in memory and crop them from there in later epochs, for a "
        "small corpus read for many epochs (needs --num_workers 0: workers start again every epoch; 0: off)",
    )
    data.add_argument(
        "--num_threads",
        type=int,
        help="torch intra-op threads of each training process (default: OMP_NUM_THREADS if set, else this "
        "process's share of the CPU cores minus one per decoding worker; the workers use 1 thread each)",
    )
    data.add_argument(
        "--demo_num_clips",
        type=int,
        default=240,
        help="clips of the synthetic demo corpus built when no corpus is given",
    )
    data.add_argument(
        "--demo_corpus",
        choices=("synthetic", "real", "auto"),
        default="synthetic",
        help="the demo corpus built when no corpus is given: synthesized sounds, real audio rendered from Debian "
        "packages (examples/real_audio_corpus.py: espeak-ng voices, fluidsynth soundfonts), or real when those "
        "packages are installed",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="base",
        help="'base': official ViT-Base (MatpacConfig defaults); 'tiny': runs on a laptop CPU",
    )
    model.add_argument("--use_mcl", action="store_true", help="MATPAC++: multiple-choice-learning prediction heads")
    model.add_argument(
        "--config_overrides",
        help="comma-separated MatpacConfig fields applied over the preset, e.g. 'hidden_size=64,num_hidden_layers=2'",
    )
    model.add_argument(
        "--model_name_or_path",
        help="start from a saved MatpacForPreTraining folder (e.g. a previous run's "
        "pretraining_model/) instead of a random initialisation; --preset and --config_overrides "
        "are then ignored",
    )

    optim = parser.add_argument_group("optimisation (official values by default, spec section 5)")
    optim.add_argument("--per_device_batch_size", type=int, default=32, help="crops per process per micro-batch")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimiser step")
    optim.add_argument(
        "--learning_rate",
        type=float,
        default=3e-4,
        help="peak learning rate, used as given (official: 3e-4 at a total batch of 2048)",
    )
    optim.add_argument("--weight_decay", type=float, default=0.05, help="AdamW weight decay")
    optim.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW beta1")
    optim.add_argument("--adam_beta2", type=float, default=0.95, help="AdamW beta2")
    optim.add_argument("--adam_epsilon", type=float, default=1e-6, help="AdamW epsilon")
    optim.add_argument(
        "--no_decay_bias_norm",
        action="store_true",
        help="exclude biases, norms, tokens and the prototype gain from weight decay "
        "(default: decay every parameter, as the official run)",
    )
    optim.add_argument("--max_grad_norm", type=float, default=3.0, help="gradient clipping norm")
    optim.add_argument(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        help="mixed precision (default: accelerate's configuration, else 'no')",
    )
    optim.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling, crops and masks")

    schedule = parser.add_argument_group("schedule: in optimiser steps, or in epochs with --corpus_size")
    schedule.add_argument("--max_steps", type=int, help="optimiser steps in all")
    schedule.add_argument("--warmup_steps", type=int, help="linear learning-rate warm-up steps")
    schedule.add_argument(
        "--teacher_temperature_warmup_steps",
        type=int,
        help="steps over which the teacher temperature rises 0.04 -> 0.07",
    )
    schedule.add_argument("--num_epochs", type=float, help="epochs in all (official: 300)")
    schedule.add_argument("--warmup_epochs", type=float, help="warm-up epochs (official: 20)")
    schedule.add_argument(
        "--teacher_temperature_warmup_epochs", type=float, help="teacher-temperature warm-up epochs (official: 10)"
    )

    output = parser.add_argument_group("outputs, checkpoints and logging")
    output.add_argument("--output_dir", required=True, help="where checkpoints, logs and the final models go")
    output.add_argument("--checkpointing_steps", type=int, default=1000, help="save a checkpoint every N steps")
    output.add_argument(
        "--checkpoints_total_limit",
        type=int,
        default=3,
        help="keep at most this many checkpoints (oldest deleted first; 0 keeps all)",
    )
    output.add_argument(
        "--resume_from_checkpoint",
        help="'latest' (the newest complete checkpoint in --output_dir, if any) or a checkpoint path",
    )
    output.add_argument(
        "--save_models_at_checkpoints",
        action="store_true",
        help="also write pretraining_model/ and encoder/ at every checkpoint",
    )
    output.add_argument("--logging_steps", type=int, default=10, help="log losses and monitors every N steps")
    output.add_argument(
        "--report_to",
        default="auto",
        help="'auto' (JSONL, plus tensorboard when installed), 'jsonl', or a comma-separated list of "
        "accelerate trackers (tensorboard, wandb, ...) to use besides JSONL",
    )
    output.add_argument(
        "--log_example_ids",
        action="store_true",
        help="write the ids of the clips each process consumed to logs/example_ids_rank<i>.jsonl",
    )
    output.add_argument("--push_to_hub", action="store_true", help="upload the encoder folder to the Hub at the end")
    output.add_argument("--hub_model_id", help="Hub repo id for --push_to_hub, e.g. 'me/matpac-vitb'")
    output.add_argument("--hub_private_repo", action="store_true", help="create the Hub repo as private")
    output.add_argument("--license", default="mit", help="license written in the model card")
    output.add_argument(
        "--skip_demo_probe",
        action="store_true",
        help="on the demo corpus, skip the final linear probe of pretrained vs random encoder",
    )

    args = parser.parse_args(argv)
    # The options given on the command line (argparse fills a namespace's missing attributes with the defaults, so
    # a namespace pre-filled with a marker keeps the marker exactly where nothing was given); the demo settings
    # replace only the others, even where a given value equals the default.
    unset = object()
    given = parser.parse_args(argv, argparse.Namespace(**{a.dest: unset for a in parser._actions}))
    args.given_options = {name for name, value in vars(given).items() if value is not unset}
    sources = [name for name in ("dataset_name", "dataset_dir", "data_files") if getattr(args, name)]
    if len(sources) > 1:
        parser.error(f"give at most one corpus source, got {', '.join('--' + s for s in sources)}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. 'me/matpac-vitb')")
    for name in (
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "logging_steps",
        "crop_frames",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_threads is not None and args.num_threads < 1:
        parser.error(f"--num_threads must be >= 1, got {args.num_threads}")
    if args.audio_cache_mb < 0:
        parser.error(f"--audio_cache_mb must be >= 0 (0: no cache), got {args.audio_cache_mb}")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Logging, threads, schedule, model, optimiser
# ----------------------------------------------------------------------------------------------------------------


class JsonlTracker(GeneralTracker):
    """An accelerate tracker writing one JSON line per `log` call to `<logging_dir>/metrics.jsonl` (appending, so a
    resumed run continues the same file) and the run configuration to `<logging_dir>/run_config.json`."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str):
        super().__init__()
        self.run_name = run_name
        os.makedirs(logging_dir, exist_ok=True)
        self.logging_dir = logging_dir
        self.path = os.path.join(logging_dir, "metrics.jsonl")
        self.file = open(self.path, "a")

    @property
    def tracker(self):
        return self.file

    def store_init_configuration(self, values: dict):
        with open(os.path.join(self.logging_dir, "run_config.json"), "w") as handle:
            json.dump(values, handle, indent=2, sort_keys=True)

    def log(self, values: dict, step: int | None = None, **kwargs):
        self.file.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self.file.flush()

    def truncate_after(self, step: int):
        """Drops the rows of steps after `step` (logged before a crash, recomputed after the resume from `step`)."""
        self.file.close()
        truncate_jsonl(self.path, lambda row: row.get("step") is None or row["step"] <= step)
        self.file = open(self.path, "a")

    def finish(self):
        self.file.close()


def truncate_jsonl(path: str, keep) -> None:
    """Rewrites a JSON-lines file with only the rows for which `keep(row)` is true (atomically)."""
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        rows = [line for line in handle if line.strip() and keep(json.loads(line))]
    with open(path + ".tmp", "w") as handle:
        handle.writelines(rows)
    os.replace(path + ".tmp", path)


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
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("datasets", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logger.info(accelerator.state, main_process_only=False)
    return accelerator, jsonl


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_num_threads(requested: int | None, num_workers: int, processes_on_this_machine: int) -> tuple[int, str]:
    """Intra-op threads of a training process, and why. Oversubscription is what hurts on small machines (a 2-core
    run with torch's default threads plus a decoding worker was 3x slower per step when other work ran): by default a
    process takes its share of the cores minus one core per decoding worker (each worker runs 1 thread)."""
    if requested is not None:
        return requested, "--num_threads"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    share = max(1, available_cores() // max(1, processes_on_this_machine))
    return max(1, share - num_workers), f"{share} core(s) for this process - {num_workers} decoding worker(s)"


def init_decoding_worker(worker_id: int):
    """DataLoader worker setup: 1 torch thread (decoding is single-threaded; more threads only compete with the
    training process), and SIGINT / SIGTERM left to the training process, which stops the workers itself after
    writing its checkpoint (a worker killed by the signal would abort the run first)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def parse_config_overrides(text: str | None) -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} with values typed after MatpacConfig's defaults."""
    if not text:
        return {}
    defaults = MatpacConfig()
    overrides = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not hasattr(defaults, key):
            raise ValueError(f"--config_overrides item {item!r} is not 'field=value' with a MatpacConfig field.")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            overrides[key] = value.strip().lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            overrides[key] = int(value)
        elif isinstance(default, float):
            overrides[key] = float(value)
        else:
            overrides[key] = value.strip()
    return overrides


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


def build_model(args, schedule: dict) -> MatpacForPreTraining:
    """A saved MatpacForPreTraining (--model_name_or_path) or a new one from the preset and overrides, with the run's
    schedule lengths in its config (its own schedules, teacher temperature and EMA, follow them)."""
    lengths = {
        "total_steps": schedule["max_steps"],
        "teacher_temperature_warmup_steps": schedule["teacher_temperature_warmup_steps"],
    }
    if args.model_name_or_path:
        model = MatpacForPreTraining.from_pretrained(args.model_name_or_path, **lengths)
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


def is_no_decay_parameter(name: str, parameter: torch.nn.Parameter) -> bool:
    return parameter.ndim <= 1 or name.endswith("token") or "norm" in name or "weight_norm_gain" in name


def build_optimizer(model: MatpacForPreTraining, args) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only (the EMA teachers have requires_grad=False)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if args.no_decay_bias_norm:
        groups = [
            {"params": [p for n, p in named if not is_no_decay_parameter(n, p)], "weight_decay": args.weight_decay},
            {"params": [p for n, p in named if is_no_decay_parameter(n, p)], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": [p for _, p in named], "weight_decay": args.weight_decay}]
    # torch's fused AdamW (CPU and CUDA): the same update as the default per-parameter loop in one kernel per step;
    # measured on CPU for base (118 M parameters, one thread): 0.33 s per step instead of 1.04 s
    fused = all(p.device.type in ("cpu", "cuda") for _, p in named)
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, fused=fused
    )


def mask_generator(seed: int, rank: int, step: int, micro_step: int) -> torch.Generator:
    """The masking randomness of one micro-batch, a pure function of (seed, rank, step, micro-step): resumed runs
    draw the same masks as uninterrupted ones."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + step) * 1_009 + micro_step)


def run_hyperparameters(args, config: MatpacConfig, schedule: dict, accelerator: Accelerator) -> dict:
    """What the trackers and the model card record about the run."""
    return {
        "preset": args.preset,
        "use_mcl": config.use_mcl,
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
    }


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def is_demo(args) -> bool:
    """No corpus given: the run pretrains on the embedded demo corpus."""
    return not (args.dataset_name or args.dataset_dir or args.data_files)


def use_real_demo_corpus(args) -> bool:
    return args.demo_corpus == "real" or (args.demo_corpus == "auto" and real_audio_corpus.is_available())


def apply_demo_settings(args):
    """The demo's settings (`DEMO_SETTINGS`, `REAL_DEMO_SETTINGS`) for the options not given on the command line, and
    its length."""
    kind = "real audio" if use_real_demo_corpus(args) else "synthetic"
    for name, value in (REAL_DEMO_SETTINGS if kind == "real audio" else DEMO_SETTINGS).items():
        if name not in args.given_options:
            setattr(args, name, value)
            logger.info(f"Demo on {kind}: --{name} {value}")
    if args.max_steps is None and args.num_epochs is None:
        args.max_steps = DEMO_MAX_STEPS
        logger.info(f"Demo: no run length given, using --max_steps {DEMO_MAX_STEPS}")


def prepare_demo_corpus(args, accelerator: Accelerator, output_dir: str) -> DemoCorpus:
    """Builds (once) the demo corpus in `<output_dir>/demo_corpus` (synthetic, or real audio with --demo_corpus) and
    points the run at it."""
    demo_dir = os.path.join(output_dir, "demo_corpus")
    if use_real_demo_corpus(args):
        if accelerator.is_main_process:
            real_audio_corpus.build_real_audio_corpus(demo_dir, REAL_DEMO_NUM_CLIPS, seed=args.seed)
        accelerator.wait_for_everyone()
        built = read_json(os.path.join(demo_dir, "corpus.json"))
        tasks = {name: os.path.join(demo_dir, "tasks", name) for name in sorted(built["task_clips"])}
        demo = DemoCorpus(
            os.path.join(demo_dir, "pretrain"), "", built["pretraining_clips"], probe_tasks=tasks, kind="real audio"
        )
    else:
        marker = os.path.join(demo_dir, "corpus.json")
        wanted = {"num_clips": args.demo_num_clips, "seed": args.seed, "num_probe_clips_per_class": DEMO_PROBE_CLIPS}
        if accelerator.is_main_process and not (os.path.isfile(marker) and read_json(marker) == wanted):
            # no clips of another corpus built here (more clips, or the real-audio one) may stay in pretrain/
            shutil.rmtree(demo_dir, ignore_errors=True)
            build_demo_corpus(
                demo_dir, num_clips=args.demo_num_clips, seed=args.seed, num_probe_clips_per_class=DEMO_PROBE_CLIPS
            )
            with open(marker, "w") as handle:
                json.dump(wanted, handle)
        accelerator.wait_for_everyone()
        probe_dir = os.path.join(demo_dir, "probe")
        demo = DemoCorpus(
            os.path.join(demo_dir, "pretrain"),
            probe_dir,
            args.demo_num_clips,
            probe_tasks={"synthetic sounds": probe_dir},
        )
    args.dataset_dir = demo.pretrain_dir
    args.corpus_size = args.corpus_size or demo.num_clips
    logger.info(
        f"No corpus given: the {demo.kind} demo corpus in {demo_dir} ({demo.num_clips} pretraining clips; probe "
        f"tasks: {', '.join(demo.probe_tasks)})"
    )
    return demo


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
    )
    data_loop = PretrainingDataLoop(
        stream,
        batch_size=args.per_device_batch_size,
        num_workers=args.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        worker_init_fn=init_decoding_worker,
    )
    if not data_loop.exact_resume:
        logger.warning(
            "DataLoader workers without torchdata: a resumed run restarts the interrupted epoch. Install "
            "torchdata (StatefulDataLoader) or use --num_workers 0 for an exact resume."
        )
    return data_loop, corpus_size


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and outputs
# ----------------------------------------------------------------------------------------------------------------

# Rotation is done here, not by `ProjectConfiguration(total_limit=...)`: accelerate deletes the oldest checkpoint
# *before* writing the new one into its final folder (no temporary folder, no completion marker), and `load_state()`
# then picks the newest folder even when it is incomplete. A kill during a save could leave no usable checkpoint.
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "checkpoint_complete.json"


def checkpoint_steps(output_dir: str, complete_only: bool = True) -> list[int]:
    """Steps of the `checkpoint-<step>` folders in `output_dir` (with their completion marker), sorted."""
    if not os.path.isdir(output_dir):
        return []
    steps = []
    for name in os.listdir(output_dir):
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit():
            if not complete_only or os.path.isfile(os.path.join(output_dir, name, CHECKPOINT_MARKER)):
                steps.append(int(name[len(CHECKPOINT_PREFIX) :]))
    return sorted(steps)


def find_latest_checkpoint(output_dir: str) -> str | None:
    """The newest *complete* checkpoint (`checkpoint-<step>` with its completion marker), or None."""
    steps = checkpoint_steps(output_dir)
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{steps[-1]}") if steps else None


def mark_checkpoint_complete(folder: str, step: int, num_processes: int):
    with open(os.path.join(folder, CHECKPOINT_MARKER), "w") as handle:
        json.dump({"global_step": step, "num_processes": num_processes}, handle)


def save_checkpoint(accelerator, output_dir: str, step: int, data_loop, total_limit: int, models=None) -> str:
    """Writes `checkpoint-<step>` atomically: everything goes to a temporary folder first (accelerate state, this
    process's stream position and counters, and `save_models(*models)` when given), the main process adds the
    completion marker and renames the folder, then deletes the oldest checkpoints beyond `total_limit` (0 keeps
    all). A crash before the rename leaves only a `.tmp-...` folder that `find_latest_checkpoint` ignores."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f".tmp-{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process and os.path.exists(temporary):
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)  # model, optimizer, registered scheduler, every process's RNG states
    torch.save(
        {"global_step": step, "data": data_loop.state_dict()},
        os.path.join(temporary, f"training_state_rank{accelerator.process_index}.pt"),
    )
    if models is not None and accelerator.is_main_process:
        save_models(*models, folder=temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        mark_checkpoint_complete(temporary, step, accelerator.num_processes)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(temporary, final)
        if total_limit > 0:
            for old in checkpoint_steps(output_dir, complete_only=False)[:-total_limit]:
                shutil.rmtree(os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{old}"), ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume(args, accelerator: Accelerator, output_dir: str, data_loop: PretrainingDataLoop) -> int:
    """Loads `--resume_from_checkpoint` ('latest' or a folder) into the prepared objects and the data loop; returns
    the optimiser steps already done (0 without a checkpoint)."""
    checkpoint = args.resume_from_checkpoint
    if checkpoint == "latest":
        checkpoint = find_latest_checkpoint(output_dir)
        if checkpoint is None:
            logger.info("--resume_from_checkpoint latest: no complete checkpoint yet, starting from scratch")
            return 0
    if not checkpoint:
        return 0
    if not os.path.isfile(os.path.join(checkpoint, CHECKPOINT_MARKER)):
        raise ValueError(f"{checkpoint!r} is not a complete checkpoint folder (no {CHECKPOINT_MARKER}).")
    accelerator.load_state(checkpoint)
    state_path = os.path.join(checkpoint, f"training_state_rank{accelerator.process_index}.pt")
    if not os.path.isfile(state_path):
        raise ValueError(
            f"{checkpoint} has no stream state for process {accelerator.process_index}: it was written by a run "
            "with fewer processes; resume with the same number of processes."
        )
    training_state = torch.load(state_path, weights_only=False)
    data_loop.load_state_dict(training_state["data"])
    logger.info(f"Resumed from {checkpoint} at step {training_state['global_step']} (epoch {data_loop.epoch})")
    return training_state["global_step"]


def describe_corpus(args, demo: DemoCorpus | None) -> str:
    """The corpus as the model card names it: the Hub dataset, the demo corpus, or folder / file names (never local
    paths)."""
    if demo is not None:
        return f"the {demo.kind} demo corpus of examples/run_pretraining.py"
    if args.dataset_name:
        return args.dataset_name
    if args.dataset_dir:
        return f"the audio folder `{os.path.basename(os.path.normpath(args.dataset_dir))}`"
    return ", ".join(f"`{os.path.basename(path)}`" for path in args.data_files)


def card_fields(
    args, config, hyperparameters: dict, corpus: str, global_step: int, monitors: dict | None = None
) -> dict:
    """The fields of the encoder's model card."""
    crop_seconds = args.crop_frames * config.hop_length / config.sampling_rate
    summary = (
        f"Pretrained with `examples/run_pretraining.py` of matpac-hf for {global_step} optimiser steps of "
        f"{hyperparameters['total_batch_size']} random {crop_seconds:.2f} s crops on {corpus}."
    )
    if monitors:
        summary += " Final monitors: " + ", ".join(f"{k} {v:.4g}" for k, v in monitors.items()) + "."
    model_name = "MATPAC++" if config.use_mcl else "MATPAC"
    fields = {
        "license": args.license,
        "training_summary": summary,
        "training_hyperparameters": hyperparameters,
        "objective": pretraining_objective(config, crop_frames=args.crop_frames),
        "tags": ["matpac++"] if config.use_mcl else None,
        "architecture": f"{config.num_hidden_layers} blocks, width {config.hidden_size}, "
        f"{config.num_attention_heads} heads",
        "embedding_size": config.frame_embedding_size,
        "model_summary": f"A self-supervised audio encoder pretrained with {model_name} (Masked latent Prediction "
        f"And Classification, ICASSP 2025): a ViT that turns 16 kHz audio into one {config.frame_embedding_size}-d "
        f"frame embedding per 160 ms and a {config.frame_embedding_size}-d clip embedding.",
        "datasets": [args.dataset_name] if args.dataset_name else None,
        "base_model": args.model_name_or_path,
        "repo_id": args.hub_model_id,
    }
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


def check_replicas_in_sync(accelerator: Accelerator, model: MatpacForPreTraining, logging_dir: str):
    """Every replica must end with the same weights (students, teachers, center): a checksum per process."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    checksums = gather_object([digest.hexdigest()])
    if accelerator.is_main_process:
        with open(os.path.join(logging_dir, "replica_checksums.json"), "w") as handle:
            json.dump(checksums, handle)
        in_sync = len(set(checksums)) == 1
        (logger.info if in_sync else logger.warning)(
            f"Model replicas identical across the {accelerator.num_processes} processes: {in_sync}"
        )


def plot_curves(metrics_path: str, png_path: str) -> bool:
    """Losses and collapse monitors against the step, from the JSONL log (the last line wins for a step)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no training_curves.png (pip install matplotlib)")
        return False
    rows = {}
    with open(metrics_path) as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("step") is not None and "loss" in row:
                rows[row["step"]] = row
    steps = sorted(rows)
    panels = [
        ("losses", ("loss", "prediction_loss", "classification_loss")),
        ("std of normalised vectors", ("prediction_std", "target_std")),
        ("teacher perplexity", ("teacher_perplexity",)),
        ("distinct teacher classes", ("num_teacher_classes",)),
        ("student/teacher agreement", ("student_teacher_agreement",)),
        ("learning rate", ("learning_rate",)),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(14, 7))
    for axis, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            values = [rows[s].get(key) for s in steps]
            if any(v is not None for v in values):
                axis.plot(steps, values, label=key)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(png_path, dpi=90)
    plt.close(figure)
    return True


def read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


# ----------------------------------------------------------------------------------------------------------------
# The demo's linear probe: run_linear_probe's protocol on the pretrained vs a same-config random encoder
# ----------------------------------------------------------------------------------------------------------------


def run_demo_probe(encoder_dir: str, demo: DemoCorpus, output_dir: str, seed: int) -> dict:
    """`run_linear_probe.py`'s cross-validation over each task's folds, for the pretrained encoder and for a randomly
    initialised encoder of the same config (`--random_init`): test accuracy, mean and 95 % CI over the folds. Each
    fold's accuracy is the mean over `DEMO_PROBE_SEEDS` probe seeds (classifier init and early-stopping split)."""
    results = {"corpus": demo.kind, "tasks": {}}
    seeds = [str(seed + offset) for offset in range(DEMO_PROBE_SEEDS)]
    for task, folder in demo.probe_tasks.items():
        results["tasks"][task] = {}
        for name, extra in (("pretrained", []), ("random_init", ["--random_init", "--init_seed", str(seed)])):
            probe_dir = os.path.join(output_dir, "demo_probe", f"{task.replace(' ', '_')}_{name}")
            probe = run_linear_probe.main(
                ["--model_name_or_path", encoder_dir, "--dataset_dir", folder, "--fold_column", "fold"]
                + ["--seeds", *seeds, "--output_dir", probe_dir, *extra]
            )
            results["tasks"][task][name] = {key: probe[key] for key in ("mean", "ci95", "n", "num_classes")}
            results["tasks"][task][name]["folds"] = probe["summarised"]  # per fold, the mean over the seeds
        # the gain over the same folds (both encoders are tested on the same clips): mean and 95 % CI over the folds
        pretrained, random_init = (results["tasks"][task][name]["folds"] for name in ("pretrained", "random_init"))
        gain = run_linear_probe.summarise([100 * (p - r) for p, r in zip(pretrained, random_init)])
        results["tasks"][task]["gain_points"] = {key: gain[key] for key in ("mean", "ci95")}
    gains = [result["gain_points"]["mean"] for result in results["tasks"].values()]
    results["mean_gain_points"] = sum(gains) / len(gains)
    return results


def print_demo_probe(results: dict):
    lines = [f"\nDemo linear probe on {results['corpus']} (accuracy, mean +- 95 % CI over the folds):"]
    for task, result in results["tasks"].items():
        pretrained, random_init = result["pretrained"], result["random_init"]
        lines.append(
            f"  {task} ({pretrained['num_classes']} classes, {pretrained['n']} folds): pretrained "
            f"{pretrained['mean']:.3f} +- {pretrained['ci95'] or 0:.3f}, random-init encoder {random_init['mean']:.3f} "
            f"+- {random_init['ci95'] or 0:.3f}; gain {result['gain_points']['mean']:+.1f} +- "
            f"{result['gain_points']['ci95'] or 0:.1f} points (paired over the folds)"
        )
    lines.append(f"  gain of pretraining: {results['mean_gain_points']:+.1f} points (mean over the tasks)")
    print("\n".join(lines))


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM set a flag; the training loop checks it after every optimiser step, writes a
    checkpoint and stops. A second Ctrl-C raises KeyboardInterrupt at once. `requested()` agrees over all processes
    (a signal seen by one of them stops them all at the same step)."""

    def __init__(self):
        self.signal_number = None
        self._previous = {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.signal_number is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = number

    def requested(self, accelerator: Accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self.signal_number is not None
        flag = torch.tensor(float(self.signal_number is not None), device=accelerator.device)
        return accelerator.reduce(flag, reduction="sum").item() > 0


def log_example_ids(handle, step: int, micro_step: int, epoch: int, batch: dict):
    handle.write(json.dumps({"step": step, "micro_step": micro_step, "epoch": epoch, "ids": batch["example_ids"]}))
    handle.write("\n")
    handle.flush()


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
                waveforms = batch["input_values"].to(accelerator.device, non_blocking=True)  # (batch, samples)
                input_values = feature_extractor.extract_log_mel(waveforms)  # (batch, crop_frames, 80), float32
                inputs = {"step": global_step, "generator": mask_generator(args.seed, rank, global_step, micro_step)}
                if bool((batch["num_valid_samples"] < waveforms.shape[1]).any()):  # zero-padded short clips
                    mask = frame_attention_mask(batch["num_valid_samples"], input_values.shape[1])
                    inputs["attention_mask"] = mask.to(accelerator.device)
                outputs = model(input_values, **inputs)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients:
                    unwrapped.update_teachers(global_step)  # after backward, before the optimiser step (docstring)
                    grad_norm = accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for key in ("loss", "prediction_loss", "classification_loss", *MONITORS):
                value = getattr(outputs, key, None)
                if value is not None:
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
            if ids_file is not None:
                log_example_ids(ids_file, global_step, micro_step, data_loop.epoch, batch)
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
            stopping = stop.requested(accelerator)
            if (global_step % args.checkpointing_steps == 0 and global_step < max_steps) or stopping:
                models = (unwrapped, feature_extractor, card(global_step)) if args.save_models_at_checkpoints else None
                path = save_checkpoint(
                    accelerator, output_dir, global_step, data_loop, args.checkpoints_total_limit, models
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


def save_final_outputs(args, model, feature_extractor, card: dict, demo: DemoCorpus | None, jsonl):
    """Main process: `pretraining_model/`, `encoder/` with its card, the training curves, the demo probe and the Hub
    upload."""
    output_dir = os.path.abspath(args.output_dir)
    encoder_dir = save_models(model, feature_extractor, card, folder=output_dir)
    logger.info(
        f"Saved {output_dir}/pretraining_model (continue training) and {encoder_dir} (AutoModel.from_pretrained)"
    )
    png = os.path.join(output_dir, "training_curves.png")
    if os.path.isfile(jsonl.path) and plot_curves(jsonl.path, png):
        logger.info(f"Saved {png}")
    if demo is not None and not args.skip_demo_probe:
        results = run_demo_probe(encoder_dir, demo, output_dir, args.seed)
        with open(os.path.join(output_dir, "demo_probe.json"), "w") as handle:
            json.dump(results, handle, indent=2)
        print_demo_probe(results)
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
    args = parse_args(argv)
    output_dir = os.path.abspath(args.output_dir)
    logging_dir = os.path.join(output_dir, "logs")

    # 1. Accelerator and trackers; threads; the same initial weights on every process.
    accelerator, jsonl = build_accelerator(args, output_dir)
    if is_demo(args):
        apply_demo_settings(args)
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    num_threads, reason = choose_num_threads(args.num_threads, args.num_workers, processes_here)
    torch.set_num_threads(num_threads)
    logger.info(
        f"Threads: {num_threads} torch intra-op thread(s) per training process ({reason}), 1 per decoding worker "
        f"({args.num_workers} per process); change with --num_threads"
    )
    set_seed(args.seed)

    # 2. The corpus (given, or the embedded synthetic demo corpus) as endless resumable crop batches.
    demo = prepare_demo_corpus(args, accelerator, output_dir) if is_demo(args) else None
    data_loop, corpus_size = build_data_loop(args, accelerator)

    # 3. Schedule lengths (written into the model config, whose own schedules follow them).
    schedule = resolve_schedule(args, corpus_size, accelerator.num_processes)
    logger.info(
        f"Schedule: {schedule['max_steps']} optimiser steps of {schedule['clips_per_step']} crops of "
        f"{args.crop_frames} frames ({args.per_device_batch_size} per process x {accelerator.num_processes} processes "
        f"x {args.gradient_accumulation_steps} accumulation); steps per epoch: {schedule['steps_per_epoch']} (corpus "
        f"of {corpus_size} clips); learning-rate warm-up {schedule['warmup_steps']} steps; teacher-temperature "
        f"warm-up {schedule['teacher_temperature_warmup_steps']} steps"
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
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, schedule["warmup_steps"], schedule["max_steps"])
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler counts optimiser steps itself (not handed to `prepare`, which would step it once per process);
    # it is registered so that save_state / load_state include it.
    accelerator.register_for_checkpointing(lr_scheduler)

    # 5. Resume; the logs forget the steps after the checkpoint (they are computed again).
    start_step = resume(args, accelerator, output_dir, data_loop)
    if start_step and accelerator.is_main_process:
        jsonl.truncate_after(start_step)
    if start_step and args.log_example_ids:
        ids_path = os.path.join(logging_dir, f"example_ids_rank{accelerator.process_index}.jsonl")
        truncate_jsonl(ids_path, lambda row: row["step"] < start_step)
    hyperparameters = run_hyperparameters(args, config, schedule, accelerator)
    accelerator.init_trackers("matpac_pretraining", config=hyperparameters)
    card = functools.partial(card_fields, args, config, hyperparameters, describe_corpus(args, demo))

    # 6. The training loop (stops early, with a checkpoint, on SIGINT / SIGTERM).
    global_step, last_logged, stopped_by = train(
        args, accelerator, model, optimizer, lr_scheduler, feature_extractor, data_loop, schedule, start_step, card
    )

    # 7. Final outputs: pretraining model, encoder with its model card, curves, demo probe, Hub upload.
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if stopped_by is None:
        if accelerator.num_processes > 1:
            check_replicas_in_sync(accelerator, unwrapped, logging_dir)
        logger.info(f"Data: {data_loop.stats.totals()} (this process)")
        if accelerator.is_main_process:
            monitors = {k: last_logged[k] for k in FINAL_MONITORS if k in last_logged}
            save_final_outputs(args, unwrapped, feature_extractor, card(global_step, monitors), demo, jsonl)
    accelerator.wait_for_everyone()
    # Free the DDP wrapper while every process is still here: its gradient reducer holds the process group, and
    # destroying that group after a peer has exited can block forever in gloo's destructor (seen at exit).
    model = optimizer = unwrapped = None
    accelerator.free_memory()
    accelerator.end_training()
    return 0 if stopped_by is None else 128 + int(stopped_by)


if __name__ == "__main__":
    sys.exit(main())
