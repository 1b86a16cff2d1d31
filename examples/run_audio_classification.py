#!/usr/bin/env python
# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Fine-tune (or linearly probe) a MATPAC encoder for audio classification with the 🤗 Trainer.

Single-label (accuracy) or multi-label (mAP and ROC-AUC) data, from any source `datasets` reads:

* a Hub dataset (--dataset_name ashraq/esc50) or a local audio folder (--dataset_name path/to/folder, laid out as
  <folder>/[train|validation|test/]<label>/<clip>.wav or with a metadata.csv holding a file_name column);
* CSV / JSON-lines files: --train_file train.csv [--validation_file valid.csv], a column of audio paths (relative to
  the file's folder, or absolute) and a label column; multi-label as "dog;bark" (--label_separator ";") or JSON lists.

Audio is decoded by `matpac_hf.audio_io` (mono, resampled to 16 kHz), never by `datasets` (which needs torchcodec).
Every clip is decoded once before training: `--bad_audio error` (default) refuses a bad clip with its name,
`--bad_audio skip` drops and counts them. Training clips longer than --max_length_seconds are randomly cropped and
optionally augmented with audiomentations (--aug_* flags); evaluation uses whole clips, unaugmented.

Example (linear probe of a pretrained MATPAC on a local folder, CPU):

    python examples/run_audio_classification.py \
        --model_name_or_path path/to/matpac --dataset_name path/to/esc50_folder --freeze_encoder \
        --output_dir runs/esc50_probe --num_train_epochs 20 --learning_rate 1e-3 --per_device_train_batch_size 32 \
        --aug_gain 0.5 --aug_noise 0.3 --use_cpu
"""

import contextlib
import functools
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

from matpac_hf import METRICS_DIR, MatpacConfig, MatpacFeatureExtractor, MatpacForAudioClassification
from matpac_hf.audio_io import BAD_AUDIO_POLICIES, decode_audio
from matpac_hf.classification_data import (
    ClassLabels,
    drop_or_refuse_bad_audio,
    hold_out_split,
    load_audio_dataset,
    load_audio_files,
    set_config_labels,
)
from matpac_hf.model_card import render_model_card
from matpac_hf.modeling_matpac import MatpacModelOutput


logger = logging.getLogger(__name__)

# command-line head options copied into the config when given (None: keep the checkpoint's setting)
HEAD_OPTIONS = ("classifier_pooling", "classifier_dropout", "freeze_encoder", "use_weighted_layer_sum")


def arg(default, help_text: str, **argparse_kwargs):
    """A dataclass field for HfArgumentParser: its default, its --help text and any other argparse keyword."""
    return field(default=default, metadata={"help": help_text, **argparse_kwargs})


def optional_flag(help_text: str):
    """A tri-state boolean: absent (None: the checkpoint's setting), `--flag` (True) or `--flag False`."""
    return arg(None, help_text + " Default: the checkpoint's setting.", nargs="?", const=True)


@dataclass
class DataArguments:
    dataset_name: str | None = arg(None, "Hub dataset id, local audio folder, save_to_disk or parquet/CSV folder.")
    dataset_config_name: str | None = arg(None, "Configuration name of the dataset.")
    train_file: str | None = arg(None, "CSV / JSON-lines file of training clips (audio path and label columns).")
    validation_file: str | None = arg(None, "CSV / JSON-lines file of validation clips; needs --train_file.")
    audio_column_name: str = arg("audio", "Column holding the audio (or its path).")
    label_column_name: str = arg("label", "Column holding a class name / index, or a list of them (multi-label).")
    label_separator: str | None = arg(None, "Split string labels on this separator (e.g. ';'): multi-label.")
    train_split_name: str = arg("train", "Name of the training split.")
    eval_split_name: str = arg("validation", "Evaluation split; when the dataset has none, one is held out.")
    train_val_split: float = arg(0.15, "Held out of training when there is no evaluation split (stratified).")
    max_length_seconds: float = arg(10.0, "Training clips longer than this are randomly cropped to it.")
    max_train_samples: int | None = arg(None, "Keep only this many training clips.")
    max_eval_samples: int | None = arg(None, "Keep only this many evaluation clips.")
    bad_audio: str = arg(
        "error",
        "A clip that cannot be decoded or is shorter than one STFT window: 'error' stops with its name, 'skip' "
        "drops and counts it.",
        choices=BAD_AUDIO_POLICIES,
    )
    preprocessing_num_workers: int | None = arg(None, "Processes that check the audio before training.")
    aug_noise: float = arg(0.0, "Probability of adding Gaussian noise (0 = off).")
    aug_noise_snr_db: str = arg("10,40", "SNR range in dB of --aug_noise, 'min,max'.")
    aug_gain: float = arg(0.0, "Probability of a random gain (0 = off).")
    aug_gain_db: float = arg(6.0, "--aug_gain draws a gain in [-x, +x] dB.")
    aug_time_shift: float = arg(0.0, "Probability of a circular shift of up to half the clip (0 = off).")
    aug_pitch_shift: float = arg(0.0, "Probability of a pitch shift (0 = off).")
    aug_pitch_semitones: float = arg(2.0, "--aug_pitch_shift range, [-x, +x] semitones.")
    aug_background_dir: str | None = arg(None, "Folder of background-noise audio files mixed into training clips.")
    aug_background_p: float = arg(0.5, "Probability of mixing a background noise (with --aug_background_dir).")
    aug_background_snr_db: str = arg("3,30", "SNR range in dB of the background mix, 'min,max'.")

    def __post_init__(self):
        if self.train_file is None and self.dataset_name is None:
            raise ValueError(
                "Give the data with --dataset_name (Hub id or local folder) or --train_file (CSV / JSON)."
            )
        if self.train_file is not None and self.dataset_name is not None:
            raise ValueError(
                f"Give the data either with --dataset_name ({self.dataset_name}) or with --train_file "
                f"({self.train_file}), not both."
            )
        if self.validation_file is not None and self.train_file is None:
            raise ValueError(
                f"--validation_file ({self.validation_file}) needs --train_file: give the training clips as a CSV / "
                "JSON-lines file too (with --dataset_name, the evaluation split is chosen with --eval_split_name)."
            )
        if self.max_length_seconds <= 0:
            raise ValueError(f"--max_length_seconds must be positive, got {self.max_length_seconds}.")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = arg(
        None,
        "MATPAC checkpoint (MatpacModel, or MatpacForAudioClassification to fine-tune further): Hub id or folder. "
        "Without it a random MatpacConfig() (plus --config_overrides) is trained from scratch.",
    )
    config_overrides: str | None = arg(None, "Config fields to override, e.g. 'hidden_size=32,num_hidden_layers=1'.")
    feature_extractor_name: str | None = arg(None, "Feature extractor (default: the checkpoint's, else the config's).")
    classifier_pooling: str | None = arg(
        None,
        "'concat': linear layer on the clip embedding (official probes); 'mean': token mean + BatchNorm + linear "
        "(official AudioSet fine-tuning). Default: the checkpoint's.",
        choices=["concat", "mean"],
    )
    classifier_dropout: float | None = arg(None, "Dropout before the linear classifier.")
    freeze_encoder: bool | None = optional_flag(
        "Train only the classifier (linear probe); --freeze_encoder False fine-tunes the whole model."
    )
    use_weighted_layer_sum: bool | None = optional_flag(
        "Classify a learned softmax-weighted sum of the encoder's layer outputs (SUPERB style), not the last layer."
    )
    ignore_mismatched_sizes: bool = arg(False, "Re-initialise a classifier checkpoint's head sized for other classes.")
    early_stopping_patience: int = arg(5, "Stop after this many evaluations without improvement (0 = never).")
    model_card_template: str = arg("audio_classification", "Model card template: a shipped name or a Jinja2 file.")
    license: str = arg(
        "other",
        "License written into the model card. Default 'other': a fine-tuned model inherits the terms of the weights it "
        "starts from (the official MATPAC weights are not MIT); give the licence you know applies.",
    )
    cache_dir: str | None = arg(None, "Where downloaded models and datasets are cached.")
    model_revision: str = arg("main", "Model version (branch, tag or commit).")
    token: str | None = arg(None, "Hub token for private models or datasets.")


@dataclass
class AudioClassificationTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults that suit this script (every one can still be set on the command line)."""

    eval_strategy: str = arg("epoch", "When to evaluate: 'no', 'steps' or 'epoch'.")
    save_strategy: str = arg("epoch", "When to save: 'no', 'steps', 'epoch' or 'best'.")
    load_best_model_at_end: bool = arg(True, "Reload the best checkpoint at the end.")
    metric_for_best_model: str | None = arg("auto", "'auto': accuracy, or mean_average_precision (multi-label).")
    save_total_limit: int | None = arg(2, "Checkpoints kept (the best is always kept).")
    remove_unused_columns: bool = arg(False, "Must stay False: the audio column is decoded by this script.")


def load_feature_extractor(model_args: ModelArguments, config: MatpacConfig):
    """--feature_extractor_name (must load), else the checkpoint's, else one built from the config's front end."""
    name = model_args.feature_extractor_name or model_args.model_name_or_path
    try:
        if name is not None:
            return AutoFeatureExtractor.from_pretrained(name, cache_dir=model_args.cache_dir, token=model_args.token)
    except (OSError, TypeError, ValueError) as error:
        if model_args.feature_extractor_name is not None:
            raise ValueError(
                f"--feature_extractor_name {name!r} could not be loaded ({error}). Give a folder or Hub id holding a "
                "preprocessor_config.json, or leave the flag out to use the checkpoint's."
            ) from error
    logger.info("No preprocessor_config.json: building the feature extractor from the model config's front end.")
    return MatpacFeatureExtractor.from_model_config(config)


def load_splits(data_args: DataArguments, model_args: ModelArguments, seed: int) -> tuple[datasets.DatasetDict, str]:
    """The training split and an evaluation split (the dataset's, or one held out of training), audio undecoded;
    also says where the evaluation clips come from (for the log and the model card)."""
    if data_args.train_file is not None:
        data_files = {data_args.train_split_name: data_args.train_file}
        if data_args.validation_file is not None:
            data_files[data_args.eval_split_name] = data_args.validation_file
        raw = load_audio_files(data_files, data_args.audio_column_name, model_args.cache_dir)
    else:  # DataArguments made sure one source is given
        raw = load_audio_dataset(
            data_args.dataset_name, data_args.dataset_config_name, model_args.cache_dir, model_args.token
        )
    if data_args.train_split_name not in raw:
        raise ValueError(
            f"The dataset has no split {data_args.train_split_name!r} (splits: {list(raw)}); set --train_split_name."
        )
    train = raw[data_args.train_split_name]
    for column, flag in ((data_args.audio_column_name, "audio"), (data_args.label_column_name, "label")):
        if column not in train.column_names:
            raise ValueError(
                f"The dataset has no column {column!r} (columns: {train.column_names}); set --{flag}_column_name."
            )
    if data_args.eval_split_name in raw:
        where = f"the {data_args.eval_split_name!r} split"
        return datasets.DatasetDict(train=train, eval=raw[data_args.eval_split_name]), where
    train, held_out = hold_out_split(
        train, data_args.train_val_split, data_args.label_column_name, seed, stratify=data_args.label_separator is None
    )
    logger.info(f"No {data_args.eval_split_name!r} split: {len(held_out)} training clips held out for evaluation.")
    where = f"{data_args.train_val_split:.0%} of the {data_args.train_split_name!r} split, held out"
    return datasets.DatasetDict(train=train, eval=held_out), where


def build_augmentation(args: DataArguments):
    """The audiomentations chain of the --aug_* flags (None when all are off) and the settings in effect."""
    import audiomentations as A

    def snr(flag: str) -> dict:
        try:
            low, high = (float(part) for part in getattr(args, flag).split(","))
        except ValueError:
            raise ValueError(f"--{flag} must be 'min,max' (two numbers), got {getattr(args, flag)!r}.") from None
        if low > high:
            raise ValueError(f"--{flag} must be 'min,max' with min <= max, got {getattr(args, flag)!r}.")
        return {"min_snr_db": low, "max_snr_db": high}

    semitones, gain = args.aug_pitch_semitones, args.aug_gain_db
    chain = [  # (probability flag, the flags it uses, transform of probability p), in the order applied
        ("aug_time_shift", (), lambda p: A.Shift(min_shift=-0.5, max_shift=0.5, p=p)),
        ("aug_pitch_shift", ("aug_pitch_semitones",), lambda p: A.PitchShift(-semitones, semitones, p=p)),
        (
            "aug_background_p",
            ("aug_background_dir", "aug_background_snr_db"),
            lambda p: A.AddBackgroundNoise(args.aug_background_dir, **snr("aug_background_snr_db"), p=p),
        ),
        ("aug_noise", ("aug_noise_snr_db",), lambda p: A.AddGaussianSNR(**snr("aug_noise_snr_db"), p=p)),
        ("aug_gain", ("aug_gain_db",), lambda p: A.Gain(min_gain_db=-gain, max_gain_db=gain, p=p)),
    ]
    transforms, settings = [], {}
    for flag, uses, make in chain:
        p = getattr(args, flag)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"--{flag} is a probability and must lie in [0, 1], got {p}.")
        if p == 0 or (flag == "aug_background_p" and args.aug_background_dir is None):
            continue
        if flag == "aug_background_p" and not Path(args.aug_background_dir).is_dir():
            raise ValueError(f"--aug_background_dir {args.aug_background_dir} is not a folder.")
        transforms.append(make(p))
        settings.update({name: getattr(args, name) for name in (flag, *uses)})
    if "aug_background_dir" in settings:  # the model card names the folder, never a local path
        settings["aug_background_dir"] = Path(settings["aug_background_dir"]).name
    if not transforms:
        return None, {"augmentation": "none"}
    logger.info("Training augmentation: " + ", ".join(type(transform).__name__ for transform in transforms))
    return A.Compose(transforms), settings


def configure_for_dataset(config: MatpacConfig, model_args: ModelArguments, class_names: list[str], multi_label: bool):
    """The dataset's classes and problem type (checked against a classifier checkpoint's) and the command line's head
    options, set on `config` in place."""
    set_config_labels(config, class_names, multi_label, model_args.ignore_mismatched_sizes)
    for option in HEAD_OPTIONS:
        if getattr(model_args, option) is not None:
            setattr(config, option, getattr(model_args, option))
    config.validate()


def write_model_card(model_args, data_args, training_args, config, labels, eval_split, metrics, augment):
    """README.md (YAML metadata + description) with matpac_hf's model card renderer; Hub ids only, no local paths."""
    hub_id = lambda name: None if name is None or Path(name).exists() else name  # noqa: E731
    skip = ("runtime", "per_second")
    scores = {k[5:]: v for k, v in metrics.items() if k.startswith("eval_") and not k.endswith(skip)}
    dataset_id = hub_id(data_args.dataset_name)
    dataset = {
        "dataset_type": dataset_id or "local",
        "dataset_name": dataset_id or "local",
        "dataset_split": eval_split,
    }
    eval_results = [  # the card's model-index
        {"task_type": "audio-classification", **dataset, "metric_type": name, "metric_value": value}
        for name, value in scores.items()
        if name != "loss"
    ]
    classifier = f"a linear layer on the {config.frame_embedding_size}-d clip embedding"
    if config.classifier_pooling == "mean":
        classifier = (
            f"mean of the {config.hidden_size}-d tokens over frequency and time, BatchNorm1d without affine "
            "parameters, then a linear layer"
        )
    trained_with = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs")
    hyperparameters = {name: getattr(training_args, name) for name in (*trained_with, "weight_decay", "seed")}
    hyperparameters.update(epochs_trained=metrics.get("epoch"), max_length_seconds=data_args.max_length_seconds)
    hyperparameters.update({option: getattr(config, option, None) for option in HEAD_OPTIONS}, **augment)
    text = render_model_card(
        model_args.model_card_template,
        license=model_args.license,
        base_model=hub_id(model_args.model_name_or_path),
        datasets=[dataset_id] if dataset_id else None,
        metrics=["mean_average_precision", "roc_auc"] if labels.multi_label else ["accuracy"],
        model_name=training_args.hub_model_id or Path(training_args.output_dir).name,
        tags=["audio-classification"],
        repo_id=training_args.hub_model_id,
        classifier=classifier + (" (encoder frozen: linear probe)" if config.freeze_encoder else ""),
        problem_type=f"{'multi' if labels.multi_label else 'single'}-label classification",
        num_labels=len(labels.names),
        labels=labels.names,
        dataset_description=dataset_id or "a local dataset",
        training_summary=(
            f"Fine-tuned from {hub_id(model_args.model_name_or_path) or 'a local or random MATPAC encoder'} with "
            "matpac-hf's `examples/run_audio_classification.py` (transformers Trainer)."
        ),
        training_hyperparameters=hyperparameters,
        eval_results=eval_results,
        evaluation_results=f"On {eval_split}:\n\n| metric | value |\n| --- | --- |\n"
        + "\n".join(f"| {name} | {value:.4f} |" for name, value in scores.items()),
    )
    Path(training_args.output_dir, "README.md").write_text(text, encoding="utf-8")


def decode_batch(batch, *, data_args, labels, sampling_rate, max_samples, augment, train: bool) -> dict:
    """The on-the-fly transform of a split: decoded mono waveforms (training: a random crop of at most `max_samples`,
    then `augment`) and the label targets."""
    waveforms = []
    for value in batch[data_args.audio_column_name]:
        audio = decode_audio(value, sampling_rate)
        if train and len(audio) > max_samples:
            start = random.randint(0, len(audio) - max_samples)
            audio = audio[start : start + max_samples]
        if train and augment is not None:
            audio = augment(samples=audio, sample_rate=sampling_rate).astype(np.float32)
        waveforms.append(audio)
    return {"waveform": waveforms, "labels": [labels(value) for value in batch[data_args.label_column_name]]}


def collate_batch(examples: list[dict], *, feature_extractor, sampling_rate: int) -> dict:
    """Log-mels of the whole batch, padded (attention_mask marks the valid frames), and the targets."""
    waveforms = [example["waveform"] for example in examples]
    batch = feature_extractor(waveforms, sampling_rate=sampling_rate, return_attention_mask=True, return_tensors="pt")
    batch["labels"] = torch.tensor(np.stack([example["labels"] for example in examples]))
    return batch


def compute_classification_metrics(prediction, *, metric_modules, labels) -> dict:
    """Accuracy of the argmax (single-label), or every module's figures on the sigmoid scores (multi-label)."""
    logits, references = prediction.predictions, prediction.label_ids
    if not labels.multi_label:
        return metric_modules[0].compute(predictions=logits.argmax(-1), references=references)
    scores, references = 1.0 / (1.0 + np.exp(-logits)), references.astype(np.int64)
    return {k: v for m in metric_modules for k, v in m.compute(predictions=scores, references=references).items()}


# ----------------------------------------------------------------------------------------------------------------------
# Frozen encoder: the encoder's outputs computed once, the head trained on them
# ----------------------------------------------------------------------------------------------------------------------


def why_the_encoder_runs_every_epoch(config: MatpacConfig, augment, training_args) -> str | None:
    """None when nothing upstream of the classifier trains and every epoch would feed the encoder the same input
    (then `encode_clips` runs it once); otherwise why the encoder must run on every batch."""
    if not config.freeze_encoder:
        return "the encoder trains (--freeze_encoder False)"
    if config.use_weighted_layer_sum:
        return "--use_weighted_layer_sum trains a weighting of every layer's output"
    if augment is not None:
        return "augmentation (--aug_*) changes the clips every epoch"
    if config.hidden_dropout_prob or config.attention_probs_dropout_prob:
        return "the encoder applies dropout in training"
    if training_args.world_size > 1:
        return "the run is distributed"
    return None


def encode_clips(model, split, *, data_args, labels, feature_extractor, max_samples: int, batch_size: int, device):
    """The frozen encoder's clip embedding (`pooler_output`, the mean of the frame embeddings) of every clip of
    `split`, one no-grad pass, as the items of a dataset whose batches `collate_encoded` makes. Returns None (and
    encodes nothing more) as soon as a clip is longer than `max_samples`: training would crop it at random each epoch,
    so its encoder input changes from epoch to epoch."""
    encoder = model.matpac
    was_training = encoder.training
    encoder.eval()
    items = []
    try:
        for start in range(0, len(split), batch_size):
            rows = split[start : start + batch_size]
            audio = rows[data_args.audio_column_name]
            waveforms = [decode_audio(value, feature_extractor.sampling_rate) for value in audio]
            if max_samples is not None and any(len(waveform) > max_samples for waveform in waveforms):
                return None
            inputs = feature_extractor(
                waveforms,
                sampling_rate=feature_extractor.sampling_rate,
                return_attention_mask=True,
                return_tensors="pt",
            ).to(device)
            with torch.no_grad():
                clip_embeddings = encoder(**inputs).pooler_output.float().cpu()  # (batch, frame_embedding_size)
            for embedding, value in zip(clip_embeddings, rows[data_args.label_column_name]):
                items.append({"clip_embedding": embedding, "labels": labels(value)})
    finally:
        encoder.train(was_training)
    return items


def collate_encoded(items: list[dict]) -> dict:
    """Clip embeddings as one-frame "encoder outputs" `(batch, 1, frame_embedding_size)`, a one-frame mask and the
    targets: what `encoder_outputs_as_inputs` hands to the classification head."""
    clip_embeddings = torch.stack([item["clip_embedding"] for item in items])
    return {
        "input_values": clip_embeddings[:, None],
        "attention_mask": torch.ones(len(items), 1, dtype=torch.long),
        "labels": torch.tensor(np.stack([item["labels"] for item in items])),
    }


@contextlib.contextmanager
def encoder_outputs_as_inputs(model: MatpacForAudioClassification):
    """While active, `model.matpac` hands its input back as its output: the batches of `collate_encoded` already hold
    what the frozen encoder gives, so the head's own pooling (either `classifier_pooling`: the mean of one frame is
    that frame), dropout, classifier and loss run unchanged, and the model saved is the whole model."""

    def forward(input_values, attention_mask=None, **kwargs):
        return MatpacModelOutput(
            last_hidden_state=input_values, pooler_output=input_values[:, 0], frame_mask=attention_mask
        )

    model.matpac.forward = forward
    try:
        yield
    finally:
        del model.matpac.forward


class AudioClassificationTrainer(Trainer):
    """Trainer whose `push_to_hub` writes this project's model card (`create_model_card` is its hook)."""

    def __init__(self, *args, model_card_writer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_card_writer = model_card_writer

    def create_model_card(self, *args, **kwargs):
        if self.model_card_writer is not None and self.is_world_process_zero():
            self.model_card_writer()


def main(argv: list[str] | None = None):
    # 1. Arguments and logging.
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((ModelArguments, DataArguments, AudioClassificationTrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(logging.INFO if training_args.should_log else log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    if training_args.remove_unused_columns:
        raise ValueError("--remove_unused_columns must be False: the Trainer would drop the audio column.")
    if training_args.push_to_hub:
        import jinja2  # noqa: F401 - the model card is rendered with Jinja2; fail now rather than after training
    set_seed(training_args.seed)

    # 2. Model configuration and feature extractor (its sampling rate is the one the audio is decoded at).
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token}
    if model_args.model_name_or_path is not None:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub)
        if not isinstance(config, MatpacConfig):
            raise ValueError(
                f"{model_args.model_name_or_path} is a {type(config).__name__} checkpoint; this script fine-tunes "
                "MATPAC models (model_type 'matpac')."
            )
    else:
        logger.warning("No --model_name_or_path: training a randomly initialised MATPAC encoder from scratch.")
        config = MatpacConfig()
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
        config.validate()
    feature_extractor = load_feature_extractor(model_args, config)
    sampling_rate = feature_extractor.sampling_rate

    # 3. Data: the two splits, every clip checked once, the classes.
    with training_args.main_process_first(desc="loading and checking the dataset"):
        splits, eval_split = load_splits(data_args, model_args, training_args.seed)
        if data_args.max_train_samples is not None:
            count = min(data_args.max_train_samples, len(splits["train"]))
            splits["train"] = splits["train"].shuffle(seed=training_args.seed).select(range(count))
        if data_args.max_eval_samples is not None:
            splits["eval"] = splits["eval"].select(range(min(data_args.max_eval_samples, len(splits["eval"]))))
        # a bad file found mid-epoch would stop the run: decode each clip now (at least one STFT window long)
        check = (data_args.audio_column_name, sampling_rate, feature_extractor.n_fft, data_args.bad_audio)
        for name, split in splits.items():
            splits[name] = drop_or_refuse_bad_audio(split, *check, data_args.preprocessing_num_workers, f"{name} clip")
    labels = ClassLabels.from_dataset(splits, data_args.label_column_name, data_args.label_separator)
    logger.info(
        f"{len(splits['train'])} training and {len(splits['eval'])} evaluation clips ({eval_split}), "
        f"{len(labels.names)} classes ({'multi' if labels.multi_label else 'single'}-label): {labels.names[:20]}"
    )

    # 4. Decoding on the fly: random crops and augmentation for training, whole clips for evaluation.
    augment, augment_settings = build_augmentation(data_args)
    max_samples = int(round(data_args.max_length_seconds * sampling_rate))

    decode = functools.partial(
        decode_batch, data_args=data_args, labels=labels, sampling_rate=sampling_rate, max_samples=max_samples
    )
    splits["train"].set_transform(functools.partial(decode, augment=augment, train=True))
    splits["eval"].set_transform(functools.partial(decode, augment=None, train=False))
    collate = functools.partial(collate_batch, feature_extractor=feature_extractor, sampling_rate=sampling_rate)

    # 5. Metrics: the evaluate modules shipped with matpac_hf (no Hub access needed).
    if labels.multi_label:
        metric_modules = [evaluate.load(str(METRICS_DIR / name)) for name in ("mean_average_precision", "roc_auc")]
    else:
        metric_modules = [evaluate.load(str(METRICS_DIR / "accuracy"))]

    compute_metrics = functools.partial(compute_classification_metrics, metric_modules=metric_modules, labels=labels)

    if training_args.metric_for_best_model == "auto":
        training_args.metric_for_best_model = "mean_average_precision" if labels.multi_label else "accuracy"
        training_args.greater_is_better = True

    # 6. Model: the pretrained encoder plus a classifier sized for this dataset (config.freeze_encoder freezes it).
    configure_for_dataset(config, model_args, labels.names, labels.multi_label)
    if model_args.model_name_or_path is not None:
        model = MatpacForAudioClassification.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **hub,
        )
    else:
        model = MatpacForAudioClassification(config)
    options = ", ".join(f"{option}={getattr(config, option, None)!r}" for option in HEAD_OPTIONS)
    logger.info(
        f"{options}: {model.num_parameters(only_trainable=True):,} of {model.num_parameters():,} parameters train."
    )
    total_train_batch = training_args.per_device_train_batch_size * max(training_args.world_size, 1)
    if config.classifier_pooling == "mean" and not training_args.dataloader_drop_last:
        if len(splits["train"]) % total_train_batch == 1:
            raise ValueError(
                f"With classifier_pooling='mean' (BatchNorm) the last training batch would hold a single clip "
                f"({len(splits['train'])} clips, batch {total_train_batch}); change --per_device_train_batch_size, "
                "--max_train_samples or pass --dataloader_drop_last."
            )

    # 7. A frozen encoder's outputs, computed once (they are the same every epoch) instead of on every batch.
    splits_to_train, collate_to_train, frozen_run = splits, collate, contextlib.nullcontext()
    reason = why_the_encoder_runs_every_epoch(config, augment, training_args)
    if reason is None:
        encode = functools.partial(
            encode_clips,
            model,
            data_args=data_args,
            labels=labels,
            feature_extractor=feature_extractor,
            batch_size=training_args.per_device_eval_batch_size,
            device=training_args.device,
        )
        raw = {name: split.with_format(None) for name, split in splits.items()}  # undecoded: no transform
        encoded_train = encode(raw["train"], max_samples=max_samples)
        if encoded_train is None:
            reason = f"some training clips are longer than --max_length_seconds ({data_args.max_length_seconds} s)"
        else:
            splits_to_train = {"train": encoded_train, "eval": encode(raw["eval"], max_samples=None)}
            collate_to_train, frozen_run = collate_encoded, encoder_outputs_as_inputs(model)
            logger.info(
                "Frozen encoder: its clip embeddings were computed once for the "
                f"{len(encoded_train)} training and {len(splits_to_train['eval'])} evaluation clips; the head trains "
                "on them."
            )
    if reason is not None and config.freeze_encoder:
        logger.info(f"Frozen encoder run on every batch: {reason}.")
    if training_args.dataloader_pin_memory and training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False  # no pinned memory without an accelerator (torch warns per epoch)

    # 8. Train, evaluate, write the model card, push.
    final_metrics: dict = {}
    card_inputs = (model_args, data_args, training_args, config, labels, eval_split, final_metrics, augment_settings)
    model_card_writer = functools.partial(write_model_card, *card_inputs)  # also run by push_to_hub

    callbacks = []
    if model_args.early_stopping_patience > 0 and training_args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = AudioClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=splits_to_train["train"],
        eval_dataset=splits_to_train["eval"],
        data_collator=collate_to_train,
        processing_class=feature_extractor,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        model_card_writer=model_card_writer,
    )
    with frozen_run:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        final_metrics.update(trainer.evaluate())
    trainer.log_metrics("eval", final_metrics)
    trainer.save_metrics("eval", final_metrics)
    if trainer.is_world_process_zero():
        try:
            model_card_writer()
        except ImportError as error:  # Jinja2 missing: only the card is skipped
            logger.warning(f"Model card not written ({error}).")
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    return final_metrics


if __name__ == "__main__":
    main()
