# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Pretrain a MATPAC / MATPAC++ audio encoder on a streamed `datasets` corpus with 🤗 Accelerate.

    # the embedded demo: builds a small synthetic corpus, pretrains the tiny preset on CPU, then linear-probes
    python examples/run_pretraining.py --preset tiny --output_dir demo_output

    # your corpus (Hub dataset, audiofolder directory, parquet shards or webdataset tars), any number of GPUs
    accelerate launch examples/run_pretraining.py --dataset_name user/my_audio --audio_column audio \
        --preset base --per_device_batch_size 256 --num_epochs 300 --warmup_epochs 20 \
        --teacher_temperature_warmup_epochs 10 --corpus_size 2012615 --mixed_precision fp16 --output_dir matpac_run

One optimiser step (method spec, sections 4 and 5): random 6.08 s waveform crops (decoded, down-mixed and resampled by
`matpac_hf.pretraining_data` in DataLoader workers) -> normalised log-mel on the training device (`extract_log_mel`) ->
`MatpacForPreTraining(input_values, step=step)` -> backward -> `update_teachers(step)` (EMA) -> clip the gradient norm
at 3.0 -> AdamW step -> cosine schedule step. Checkpoints (`accelerator.save_state` plus the stream position, the step
counters and every process's random state) are written atomically; `--resume_from_checkpoint latest` continues a run.

Outputs in `--output_dir`:
    pretraining_model/    MatpacForPreTraining (student, predictor, heads, teachers, center): continue training from it
    encoder/              MatpacModel + MatpacFeatureExtractor + README.md: `AutoModel.from_pretrained("encoder")`
    checkpoint-<step>/    resumable training states
    logs/metrics.jsonl    one JSON line per logged step (losses, collapse monitors, learning rate, data counters)
    training_curves.png   losses and monitors (needs matplotlib)
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import time

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration, gather_object, is_tensorboard_available, set_seed
from tqdm.auto import tqdm
from transformers import AutoModel, get_cosine_schedule_with_warmup

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacForPreTraining, MatpacModel
from matpac_hf.configuration_matpac import num_samples_for_frames
from matpac_hf.pretraining_data import CROP_FRAMES, PretrainingDataLoop, build_crop_stream, load_audio_stream


CROP_SAMPLES = num_samples_for_frames(CROP_FRAMES)
from demo_corpus import DemoCorpus, build_demo_corpus, load_labelled_folder  # noqa: E402  (examples/demo_corpus.py)
from matpac_hf.model_card import pretraining_objective, render_model_card


logger = get_logger(__name__)

# `--preset tiny`: small enough to pretrain on a laptop CPU; keeps 80 mels, 608-frame crops and 16 x 16 patches. Its
# EMA decays suit runs of hundreds to a few thousand steps: the official 0.99995 moves the teacher by 0.005 % a step,
# so a 200-step run would learn to predict the randomly initialised teacher (measured on the demo: probe accuracy 0.80
# with the official decays, as for a random encoder, vs 0.88 with these).
PRESETS = {
    "base": {},  # the official ViT-Base configuration: MatpacConfig() defaults
    "tiny": dict(
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=768,
        decoder_hidden_size=128,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=512,
        head_hidden_size=256,
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
DEMO_NUM_EPOCHS = 30  # default length of the embedded demo (a few minutes of the tiny preset on a laptop CPU)
DEMO_PROBE_CLIPS_PER_CLASS = 40  # labelled 3 s clips per class of the demo's linear probe
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
        "--min_clip_policy",
        choices=("drop", "pad"),
        default="drop",
        help="clips shorter than the 6.1 s crop: drop them (official) or zero-pad them at the end",
    )
    data.add_argument(
        "--num_workers",
        type=int,
        default=1,
        help="DataLoader worker processes decoding audio per training process (0: decode in-process)",
    )
    data.add_argument(
        "--demo_num_clips",
        type=int,
        default=240,
        help="clips of the synthetic demo corpus built when no corpus is given",
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
    output.add_argument(
        "--simulate_crash",
        choices=("after_step", "during_checkpoint"),
        help="testing aid: SIGKILL this process right after step --simulate_crash_at_step, or while "
        "writing the checkpoint of that step (before it is complete)",
    )
    output.add_argument("--simulate_crash_at_step", type=int, help="step of --simulate_crash")

    args = parser.parse_args(argv)
    sources = [name for name in ("dataset_name", "dataset_dir", "data_files") if getattr(args, name)]
    if len(sources) > 1:
        parser.error(f"give at most one corpus source, got {', '.join('--' + s for s in sources)}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. 'me/matpac-vitb')")
    for name in ("per_device_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.simulate_crash and args.simulate_crash_at_step is None:
        parser.error("--simulate_crash needs --simulate_crash_at_step")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Small helpers (logging, schedule, optimiser, checkpoints)
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

    def finish(self):
        self.file.close()


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

    def steps(step_value, epoch_value, default):
        if step_value is not None:
            return step_value
        if epoch_value is not None:
            return int(round(epoch_value * steps_per_epoch))
        return default

    max_steps = steps(args.max_steps, args.num_epochs, None)
    if max_steps is None:
        raise ValueError("Give the run length: --max_steps, or --num_epochs with --corpus_size.")
    if max_steps < 1:
        raise ValueError(f"The run must have at least one optimiser step, got {max_steps}.")
    warmup = steps(args.warmup_steps, args.warmup_epochs, int(round(max_steps * OFFICIAL_WARMUP_FRACTION)))
    teacher_warmup = steps(
        args.teacher_temperature_warmup_steps,
        args.teacher_temperature_warmup_epochs,
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


def build_optimizer(model: MatpacForPreTraining, args) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only (the EMA teachers have requires_grad=False)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if args.no_decay_bias_norm:

        def no_decay(name, parameter):
            return parameter.ndim <= 1 or name.endswith("token") or "norm" in name or "weight_norm_gain" in name

        groups = [
            {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": args.weight_decay},
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": [p for _, p in named], "weight_decay": args.weight_decay}]
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


def mask_generator(seed: int, rank: int, step: int, micro_step: int) -> torch.Generator:
    """The masking randomness of one micro-batch, a pure function of (seed, rank, step, micro-step): resumed runs
    draw the same masks as uninterrupted ones."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + step) * 1_009 + micro_step)


CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "checkpoint_complete.json"


def find_latest_checkpoint(output_dir: str) -> str | None:
    """The newest *complete* checkpoint (`checkpoint-<step>` with its completion marker), or None."""
    if not os.path.isdir(output_dir):
        return None
    candidates = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit():
            if os.path.isfile(os.path.join(path, CHECKPOINT_MARKER)):
                candidates.append((int(name[len(CHECKPOINT_PREFIX) :]), path))
    return max(candidates)[1] if candidates else None


def save_checkpoint(accelerator, output_dir, step, data_loop, args, save_models_fn=None):
    """Writes `checkpoint-<step>` atomically: everything goes to a temporary folder first (accelerate state, this
    process's stream position and counters), the main process adds the completion marker and renames the folder. A
    crash before the rename leaves only a `.tmp-...` folder that `find_latest_checkpoint` ignores."""
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
    if save_models_fn is not None:
        save_models_fn(temporary)
    accelerator.wait_for_everyone()
    if args.simulate_crash == "during_checkpoint" and step == args.simulate_crash_at_step:
        logger.warning(f"--simulate_crash: killing the process while checkpoint {step} is incomplete")
        os.kill(os.getpid(), signal.SIGKILL)
    if accelerator.is_main_process:
        with open(os.path.join(temporary, CHECKPOINT_MARKER), "w") as handle:
            json.dump({"global_step": step, "num_processes": accelerator.num_processes}, handle)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(temporary, final)
        if args.checkpoints_total_limit > 0:
            steps = sorted(
                int(n[len(CHECKPOINT_PREFIX) :])
                for n in os.listdir(output_dir)
                if n.startswith(CHECKPOINT_PREFIX) and n[len(CHECKPOINT_PREFIX) :].isdigit()
            )
            for old in steps[: -args.checkpoints_total_limit]:
                shutil.rmtree(os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{old}"), ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_models(model: MatpacForPreTraining, feature_extractor, folder: str, card_fields: dict):
    """`pretraining_model/` (continue training) and `encoder/` (AutoModel-ready, with a model card) in `folder`."""
    model.save_pretrained(os.path.join(folder, "pretraining_model"))
    feature_extractor.save_pretrained(os.path.join(folder, "pretraining_model"))
    encoder_dir = os.path.join(folder, "encoder")
    model.matpac.save_pretrained(encoder_dir)
    feature_extractor.save_pretrained(encoder_dir)
    with open(os.path.join(encoder_dir, "README.md"), "w") as handle:
        handle.write(render_model_card("pretrained_encoder", **card_fields))
    return encoder_dir


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


# ----------------------------------------------------------------------------------------------------------------
# The demo's linear probe (clip embeddings of a labelled synthetic task)
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def clip_embeddings(model, feature_extractor, waveforms, batch_size: int = 16) -> torch.Tensor:
    model.eval()
    embeddings = []
    for start in range(0, len(waveforms), batch_size):
        inputs = feature_extractor(waveforms[start : start + batch_size], sampling_rate=16000, return_tensors="pt")
        embeddings.append(model(**inputs).pooler_output.float())
    return torch.cat(embeddings)  # (clips, frame_embedding_size)


def read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


def _ridge_predict(features, targets, num_classes, train, test, penalty):
    """Standardise with the training part, fit ridge regression onto centred one-hot labels (dual form: clips <<
    dimensions), return the predicted classes of the test part."""
    x_train, x_test = features[train], features[test]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    one_hot = torch.nn.functional.one_hot(targets[train], num_classes).double()
    gram = x_train @ x_train.T + penalty * torch.eye(len(train), dtype=torch.float64)
    weights = x_train.T @ torch.linalg.solve(gram, one_hot - one_hot.mean(0))
    return (x_test @ weights).argmax(1)


def ridge_probe_accuracy(features, labels, num_folds: int = 5) -> float:
    """Linear probe accuracy by stratified `num_folds`-fold cross-validation, so that every clip is tested once: per
    fold, standardised features and closed-form ridge regression onto one-hot labels, its penalty chosen by a 4-fold
    cross-validation inside the training part."""
    classes = sorted(set(labels))
    targets = torch.tensor([classes.index(label) for label in labels])
    fold_of = torch.empty(len(labels), dtype=torch.long)
    for c in range(len(classes)):
        members = (targets == c).nonzero().flatten()
        fold_of[members] = torch.arange(len(members)) % num_folds
    features = features.double()
    penalties = [10.0**k for k in range(-1, 5)]
    correct = 0
    for fold in range(num_folds):
        train, test = (fold_of != fold).nonzero().flatten(), (fold_of == fold).nonzero().flatten()
        inner = [train[i::4] for i in range(4)]
        scores = [
            sum(
                (
                    _ridge_predict(features, targets, len(classes), train[~torch.isin(train, part)], part, penalty)
                    == targets[part]
                )
                .sum()
                .item()
                for part in inner
            )
            for penalty in penalties
        ]
        best = penalties[max(range(len(penalties)), key=lambda i: scores[i])]
        correct += (_ridge_predict(features, targets, len(classes), train, test, best) == targets[test]).sum().item()
    return correct / len(labels)


def run_demo_probe(encoder_dir: str, probe_dir: str, config: MatpacConfig, seed: int) -> dict:
    waveforms, labels = load_labelled_folder(probe_dir)
    feature_extractor = MatpacFeatureExtractor.from_pretrained(encoder_dir)
    pretrained = AutoModel.from_pretrained(encoder_dir)
    torch.manual_seed(seed + 12345)
    random_encoder = MatpacModel(config)
    return {
        "probe_accuracy_pretrained": ridge_probe_accuracy(
            clip_embeddings(pretrained, feature_extractor, waveforms), labels
        ),
        "probe_accuracy_random_init": ridge_probe_accuracy(
            clip_embeddings(random_encoder, feature_extractor, waveforms), labels
        ),
        "probe_num_clips": len(labels),
        "probe_num_classes": len(set(labels)),
    }


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    output_dir = os.path.abspath(args.output_dir)
    logging_dir = os.path.join(output_dir, "logs")

    # 1. Accelerator and trackers (JSONL always; tensorboard when installed, or what --report_to names).
    trackers = [JsonlTracker("matpac_pretraining", logging_dir)]
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
    set_seed(args.seed)  # the same initial weights on every process
    rank, world_size = accelerator.process_index, accelerator.num_processes

    # 2. The corpus: given, or the embedded synthetic demo corpus.
    demo = None
    corpus_size = args.corpus_size
    if not (args.dataset_name or args.dataset_dir or args.data_files):
        demo_dir = os.path.join(output_dir, "demo_corpus")
        marker = os.path.join(demo_dir, "corpus.json")
        wanted = {
            "num_clips": args.demo_num_clips,
            "seed": args.seed,
            "num_probe_clips_per_class": DEMO_PROBE_CLIPS_PER_CLASS,
        }
        if accelerator.is_main_process and not (os.path.isfile(marker) and read_json(marker) == wanted):
            build_demo_corpus(
                demo_dir,
                num_clips=args.demo_num_clips,
                seed=args.seed,
                num_probe_clips_per_class=DEMO_PROBE_CLIPS_PER_CLASS,
            )
            with open(marker, "w") as handle:
                json.dump(wanted, handle)
        accelerator.wait_for_everyone()
        demo = DemoCorpus(os.path.join(demo_dir, "pretrain"), os.path.join(demo_dir, "probe"), args.demo_num_clips)
        args.dataset_dir = demo.pretrain_dir
        corpus_size = corpus_size or demo.num_clips
        if args.max_steps is None and args.num_epochs is None:
            args.num_epochs = DEMO_NUM_EPOCHS
            logger.info(f"Demo: no run length given, using --num_epochs {DEMO_NUM_EPOCHS}")
        logger.info(
            f"No corpus given: built the synthetic demo corpus in {demo_dir} ({demo.num_clips} clips + 1 "
            "corrupted file, and a labelled probe set)"
        )
    dataset, audio_column = load_audio_stream(
        dataset_name=args.dataset_name,
        dataset_dir=args.dataset_dir,
        data_files=args.data_files,
        dataset_config=args.dataset_config,
        split=args.split,
        audio_column=args.audio_column,
    )
    if corpus_size is None:
        splits = getattr(dataset.info, "splits", None) or {}
        if args.split in splits and splits[args.split].num_examples:
            corpus_size = splits[args.split].num_examples
            logger.info(f"Corpus size from the dataset info: {corpus_size} clips")
    stream = build_crop_stream(
        dataset,
        audio_column,
        seed=args.seed,
        shuffle_buffer_size=args.shuffle_buffer_size,
        rank=rank,
        world_size=world_size,
        min_clip_policy=args.min_clip_policy,
    )
    data_loop = PretrainingDataLoop(
        stream,
        batch_size=args.per_device_batch_size,
        num_workers=args.num_workers,
        pin_memory=accelerator.device.type == "cuda",
    )
    if not data_loop.exact_resume:
        logger.warning(
            "DataLoader workers without torchdata: a resumed run restarts the interrupted epoch. Install "
            "torchdata (StatefulDataLoader) or use --num_workers 0 for an exact resume."
        )

    # 3. Schedule lengths, written into the model config so its own schedules (teacher temperature, EMA) follow them.
    schedule = resolve_schedule(args, corpus_size, world_size)
    logger.info(
        f"Schedule: {schedule['max_steps']} optimiser steps of {schedule['clips_per_step']} clips "
        f"({args.per_device_batch_size} per process x {world_size} processes x {args.gradient_accumulation_steps} "
        f"accumulation); steps per epoch: {schedule['steps_per_epoch']} (corpus of {corpus_size} clips); "
        f"learning-rate warm-up {schedule['warmup_steps']} steps; teacher-temperature warm-up "
        f"{schedule['teacher_temperature_warmup_steps']} steps"
    )

    # 4. Model, feature extractor, optimiser, learning-rate schedule.
    if args.model_name_or_path:
        model = MatpacForPreTraining.from_pretrained(
            args.model_name_or_path,
            total_steps=schedule["max_steps"],
            teacher_temperature_warmup_steps=schedule["teacher_temperature_warmup_steps"],
        )
        config = model.config
    else:
        config_kwargs = {**PRESETS[args.preset], **parse_config_overrides(args.config_overrides)}
        if args.use_mcl:
            config_kwargs["use_mcl"] = True
        config = MatpacConfig(
            total_steps=schedule["max_steps"],
            teacher_temperature_warmup_steps=schedule["teacher_temperature_warmup_steps"],
            **config_kwargs,
        )
        model = MatpacForPreTraining(config)
    crop_frames = 1 + (CROP_SAMPLES - config.win_length) // config.hop_length
    if crop_frames != config.max_frames:
        raise ValueError(
            f"The data pipeline makes {crop_frames}-frame crops but the model config has max_frames="
            f"{config.max_frames}; keep max_frames=608 for pretraining."
        )
    feature_extractor = MatpacFeatureExtractor.from_model_config(config)
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model_name = args.model_name_or_path or f"{args.preset} preset"
    logger.info(
        f"Model: {'MATPAC++' if config.use_mcl else 'MATPAC'} from {model_name}, "
        f"{num_trainable / 1e6:.2f} M trainable parameters (teachers excluded)"
    )
    optimizer = build_optimizer(model, args)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, schedule["warmup_steps"], schedule["max_steps"])
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler counts optimiser steps itself (not handed to `prepare`, which would step it once per process);
    # it is registered so that save_state / load_state include it.
    accelerator.register_for_checkpointing(lr_scheduler)

    # 5. Resume.
    global_step = 0
    checkpoint = args.resume_from_checkpoint
    if checkpoint == "latest":
        checkpoint = find_latest_checkpoint(output_dir)
        if checkpoint is None:
            logger.info("--resume_from_checkpoint latest: no complete checkpoint yet, starting from scratch")
    elif checkpoint and not os.path.isfile(os.path.join(checkpoint, CHECKPOINT_MARKER)):
        raise ValueError(f"{checkpoint!r} is not a complete checkpoint folder (no {CHECKPOINT_MARKER}).")
    if checkpoint:
        accelerator.load_state(checkpoint)
        state_path = os.path.join(checkpoint, f"training_state_rank{rank}.pt")
        if not os.path.isfile(state_path):
            raise ValueError(
                f"{checkpoint} has no stream state for process {rank}: it was written by a run with "
                "fewer processes; resume with the same number of processes."
            )
        training_state = torch.load(state_path, weights_only=False)
        global_step = training_state["global_step"]
        data_loop.load_state_dict(training_state["data"])
        logger.info(f"Resumed from {checkpoint} at step {global_step} (epoch {data_loop.epoch})")

    hyperparameters = {
        "preset": args.preset,
        "use_mcl": config.use_mcl,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "betas": f"({args.adam_beta1}, {args.adam_beta2})",
        "adam_epsilon": args.adam_epsilon,
        "decay_bias_norm": not args.no_decay_bias_norm,
        "max_grad_norm": args.max_grad_norm,
        "per_device_batch_size": args.per_device_batch_size,
        "num_processes": world_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "total_batch_size": schedule["clips_per_step"],
        "total_steps": schedule["max_steps"],
        "warmup_steps": schedule["warmup_steps"],
        "teacher_temperature_warmup_steps": schedule["teacher_temperature_warmup_steps"],
        "mixed_precision": accelerator.mixed_precision,
        "seed": args.seed,
        "shuffle_buffer_size": args.shuffle_buffer_size,
        "min_clip_policy": args.min_clip_policy,
        "crop": "608 frames (97520 samples, 6.1 s)",
    }
    accelerator.init_trackers("matpac_pretraining", config=hyperparameters)
    ids_file = None
    if args.log_example_ids:
        os.makedirs(logging_dir, exist_ok=True)
        ids_file = open(os.path.join(logging_dir, f"example_ids_rank{rank}.jsonl"), "a")

    def card_fields(final_monitors: dict | None = None) -> dict:
        corpus = args.dataset_name or (["synthetic demo corpus"] if demo else args.dataset_dir or args.data_files)
        summary = (
            f"Pretrained with `examples/run_pretraining.py` of matpac-hf for {global_step} optimiser steps of "
            f"{schedule['clips_per_step']} random 6.08 s crops on {corpus}."
        )
        if final_monitors:
            summary += " Final monitors: " + ", ".join(f"{k} {v:.4g}" for k, v in final_monitors.items()) + "."
        fields = {
            "license": args.license,
            "training_summary": summary,
            "training_hyperparameters": hyperparameters,
            "objective": pretraining_objective(config),
            "tags": ["matpac++"] if config.use_mcl else None,
            "architecture": f"{config.num_hidden_layers} blocks, width {config.hidden_size}, "
            f"{config.num_attention_heads} heads",
            "embedding_size": config.frame_embedding_size,
            "model_summary": f"A self-supervised audio encoder pretrained with "
            f"{'MATPAC++' if config.use_mcl else 'MATPAC'} (Masked latent Prediction And "
            f"Classification, ICASSP 2025): a ViT that turns 16 kHz audio into one "
            f"{config.frame_embedding_size}-d frame embedding per 160 ms and a "
            f"{config.frame_embedding_size}-d clip embedding.",
        }
        if args.dataset_name:
            fields["datasets"] = [args.dataset_name]
        if args.model_name_or_path:
            fields["base_model"] = args.model_name_or_path
        if args.hub_model_id:
            fields["repo_id"] = args.hub_model_id
        return {k: v for k, v in fields.items() if v is not None}

    # 6. The training loop.
    model.train()
    unwrapped = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    progress = tqdm(
        total=schedule["max_steps"],
        initial=global_step,
        desc="pretraining",
        disable=not accelerator.is_local_main_process,
    )
    sums, micro_step, last_logged = {}, 0, {}
    start_time, start_step = time.perf_counter(), global_step
    batches = iter(data_loop)
    while global_step < schedule["max_steps"]:
        batch = next(batches)
        with accelerator.accumulate(model):
            waveforms = batch["input_values"].to(accelerator.device, non_blocking=True)  # (batch, 97520)
            input_values = feature_extractor.extract_log_mel(waveforms)  # (batch, 608, 80), float32
            outputs = model(
                input_values, step=global_step, generator=mask_generator(args.seed, rank, global_step, micro_step)
            )
            accelerator.backward(outputs.loss)
            if accelerator.sync_gradients:
                unwrapped.update_teachers(global_step)  # after backward, before the optimiser step (docstring)
                grad_norm = accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients:
                lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        micro_step += 1
        for key in ("loss", "prediction_loss", "classification_loss", *MONITORS):
            value = getattr(outputs, key, None)
            if value is not None:
                sums[key] = sums.get(key, 0.0) + value.detach().float()
        if ids_file is not None:
            ids_file.write(
                json.dumps(
                    {
                        "step": global_step,
                        "micro_step": micro_step - 1,
                        "epoch": data_loop.epoch,
                        "ids": batch["example_ids"],
                    }
                )
                + "\n"
            )
            ids_file.flush()
        if not accelerator.sync_gradients:
            continue

        # one optimiser step done
        global_step += 1
        progress.update(1)
        if global_step % args.logging_steps == 0 or global_step == schedule["max_steps"]:
            means = {k: accelerator.reduce(v / micro_step, reduction="mean").item() for k, v in sums.items()}
            means["learning_rate"] = lr_scheduler.get_last_lr()[0]
            means["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
            means["epoch"] = data_loop.epoch
            means.update({f"data/{k}": v for k, v in data_loop.stats.totals().items()})
            elapsed = time.perf_counter() - start_time
            means["steps_per_second"] = (global_step - start_step) / max(elapsed, 1e-9)
            accelerator.log(means, step=global_step)
            last_logged = means
            progress.set_postfix(loss=f"{means['loss']:.4f}", ppl=f"{means.get('teacher_perplexity', 0):.1f}")
            logger.info(
                f"step {global_step}/{schedule['max_steps']} loss {means['loss']:.4f} (prediction "
                f"{means['prediction_loss']:.4f}, classification {means['classification_loss']:.4f}) lr "
                f"{means['learning_rate']:.2e} | std pred/target {means.get('prediction_std', 0):.3f}/"
                f"{means.get('target_std', 0):.3f} | teacher perplexity {means.get('teacher_perplexity', 0):.1f}, "
                f"classes {means.get('num_teacher_classes', 0):.0f}, agreement "
                f"{means.get('student_teacher_agreement', 0):.3f} | tau_t {means.get('teacher_temperature', 0):.4f} "
                f"| skipped clips {means['data/num_corrupted']:.0f}"
            )
        sums, micro_step = {}, 0
        if args.simulate_crash == "after_step" and global_step == args.simulate_crash_at_step:
            logger.warning(f"--simulate_crash: killing the process after step {global_step}")
            os.kill(os.getpid(), signal.SIGKILL)
        if global_step % args.checkpointing_steps == 0 and global_step < schedule["max_steps"]:

            def models_fn(folder):
                if accelerator.is_main_process:
                    save_models(unwrapped, feature_extractor, folder, card_fields())

            path = save_checkpoint(
                accelerator,
                output_dir,
                global_step,
                data_loop,
                args,
                models_fn if args.save_models_at_checkpoints else None,
            )
            logger.info(f"Saved checkpoint {path}")
    progress.close()
    if ids_file is not None:
        ids_file.close()

    # 7. Final outputs: pretraining model, encoder with model card, curves.
    accelerator.wait_for_everyone()
    if world_size > 1:  # sanity check: every replica ends with the same weights (students, teachers, center)
        digest = hashlib.sha256()
        for tensor in unwrapped.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        checksums = gather_object([digest.hexdigest()])
        if accelerator.is_main_process:
            with open(os.path.join(logging_dir, "replica_checksums.json"), "w") as handle:
                json.dump(checksums, handle)
            in_sync = len(set(checksums)) == 1
            (logger.info if in_sync else logger.warning)(
                f"Model replicas identical across the {world_size} processes: {in_sync}"
            )
    monitors = {
        k: last_logged[k]
        for k in (
            "loss",
            "prediction_loss",
            "classification_loss",
            "prediction_std",
            "target_std",
            "teacher_perplexity",
        )
        if k in last_logged
    }
    encoder_dir = os.path.join(output_dir, "encoder")
    if accelerator.is_main_process:
        save_models(unwrapped, feature_extractor, output_dir, card_fields(monitors))
        logger.info(
            f"Saved {output_dir}/pretraining_model (continue training) and {encoder_dir} (AutoModel.from_pretrained)"
        )
        logger.info(f"Data: {data_loop.stats.totals()} (this process)")
    accelerator.wait_for_everyone()
    # Free the DDP wrapper while every process is still here: its gradient reducer holds the process group, and
    # destroying that group after a peer has exited can block forever in gloo's destructor (seen at exit).
    model = optimizer = batches = None
    accelerator.free_memory()
    accelerator.end_training()
    if accelerator.is_main_process:
        png = os.path.join(output_dir, "training_curves.png")
        if os.path.isfile(trackers[0].path) and plot_curves(trackers[0].path, png):
            logger.info(f"Saved {png}")

        # 8. The embedded demo: linear probe of the pretrained vs a random encoder on the labelled demo task.
        if demo is not None and not args.skip_demo_probe:
            results = run_demo_probe(encoder_dir, demo.probe_dir, config, args.seed)
            with open(os.path.join(output_dir, "demo_probe.json"), "w") as handle:
                json.dump(results, handle, indent=2)
            print(
                f"\nDemo linear probe ({results['probe_num_classes']} synthetic sound classes, "
                f"{results['probe_num_clips']} clips, 5-fold cross-validation, ridge on the "
                f"{config.frame_embedding_size}-d clip embedding):\n"
                f"  pretrained encoder   : {results['probe_accuracy_pretrained']:.3f}\n"
                f"  random-init encoder  : {results['probe_accuracy_random_init']:.3f}"
            )

        if args.push_to_hub:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True)
            api.upload_folder(
                repo_id=args.hub_model_id,
                folder_path=encoder_dir,
                commit_message=f"MATPAC encoder after {global_step} pretraining steps",
            )
            logger.info(f"Pushed {encoder_dir} to the Hub as {args.hub_model_id}")


if __name__ == "__main__":
    main()
