#!/usr/bin/env python
# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Fine-tune (or linearly probe) a MATPAC encoder for audio classification with the 🤗 Trainer.

Works with any audio dataset `datasets` can read, single-label (accuracy) or multi-label (mAP and ROC-AUC):

* a Hub dataset:            --dataset_name ashraq/esc50
* a local "audiofolder":    --dataset_name path/to/folder   (path/to/folder/[train|validation|test/]<label>/<clip>.wav)
* CSV / JSON-lines files:   --train_file train.csv [--validation_file valid.csv]   (a column of audio paths, relative
                            to the file's folder or absolute, and a label column; multi-label as "dog;bark" with
                            --label_separator ";" or as JSON lists)

Audio is decoded here with soundfile (mono by averaging channels, resampled to 16 kHz with soxr), never by `datasets`.
Training clips longer than --max_length_seconds are randomly cropped and optionally augmented with audiomentations
(--aug_* flags); evaluation uses whole clips, unaugmented.

Example (linear probe of a pretrained MATPAC on a local folder, CPU):

    python examples/run_audio_classification.py \
        --model_name_or_path path/to/matpac --dataset_name path/to/esc50_folder --freeze_encoder \
        --output_dir runs/esc50_probe --num_train_epochs 20 --learning_rate 1e-3 --per_device_train_batch_size 32 \
        --aug_gain 0.5 --aug_noise 0.3 --use_cpu

Two CPU processes: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1
--mixed_precision no --dynamo_backend no examples/run_audio_classification.py ...`.
"""

import io
import logging
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
import soundfile as sf
import soxr
import torch
import transformers
from datasets import Audio, ClassLabel, DatasetDict, load_dataset, load_from_disk
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
from matpac_hf.model_card import render_model_card


logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}
SPLIT_FOLDER_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hub dataset id, a local audiofolder (<root>/[split/]<label>/<clip>), a folder written by "
            "`save_to_disk`, or a local folder of parquet/CSV files. Alternative: --train_file."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration name of the dataset."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "CSV or JSON-lines file listing training clips (audio path column + label column). Alternative "
            "to --dataset_name."
        },
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "CSV or JSON-lines file listing validation clips (same columns); needs --train_file."},
    )
    audio_column_name: str = field(default="audio", metadata={"help": "Column holding the audio (or its path)."})
    label_column_name: str = field(
        default="label",
        metadata={
            "help": "Column holding the label: a class name / index (single-label) or a list of them (multi-label)."
        },
    )
    label_separator: str | None = field(
        default=None,
        metadata={"help": "Split string labels on this separator (e.g. ';') and train a multi-label classifier."},
    )
    train_split_name: str = field(default="train", metadata={"help": "Name of the training split."})
    eval_split_name: str = field(
        default="validation",
        metadata={"help": "Name of the evaluation split. When the dataset has none, one is carved from training."},
    )
    train_val_split: float = field(
        default=0.15,
        metadata={
            "help": "Fraction of the training split held out for evaluation when the dataset has no evaluation "
            "split (stratified by class for single-label data when every class has enough clips, else random with "
            "a warning). Ignored when the evaluation split exists."
        },
    )
    max_length_seconds: float = field(
        default=10.0,
        metadata={"help": "Training clips longer than this are randomly cropped to it. Evaluation uses whole clips."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training clips."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many evaluation clips."})
    skip_bad_audio: bool = field(
        default=False,
        metadata={
            "help": "Drop clips that cannot be read or are shorter than 25 ms (with a warning listing them) instead "
            "of stopping with an error."
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes used to check the audio files before training."}
    )
    aug_noise: float = field(default=0.0, metadata={"help": "Probability of adding Gaussian noise (0 = off)."})
    aug_noise_snr_db: str = field(default="10,40", metadata={"help": "SNR range in dB of --aug_noise, 'min,max'."})
    aug_gain: float = field(default=0.0, metadata={"help": "Probability of a random gain (0 = off)."})
    aug_gain_db: float = field(default=6.0, metadata={"help": "--aug_gain draws a gain in [-x, +x] dB."})
    aug_time_shift: float = field(
        default=0.0, metadata={"help": "Probability of a circular time shift of up to half the clip (0 = off)."}
    )
    aug_pitch_shift: float = field(default=0.0, metadata={"help": "Probability of a pitch shift (0 = off)."})
    aug_pitch_semitones: float = field(default=2.0, metadata={"help": "--aug_pitch_shift range, [-x, +x] semitones."})
    aug_background_dir: str | None = field(
        default=None, metadata={"help": "Folder of background-noise audio files mixed into training clips."}
    )
    aug_background_p: float = field(default=0.5, metadata={"help": "Probability of mixing a background noise."})
    aug_background_snr_db: str = field(default="3,30", metadata={"help": "SNR range in dB of the background mix."})

    def __post_init__(self):
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


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained MATPAC checkpoint (a MatpacModel, or a MatpacForAudioClassification to fine-tune "
            "further): Hub id or local folder. Without it a randomly initialised MatpacConfig() (plus "
            "--config_overrides) is trained from scratch."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Config fields to override, e.g. 'hidden_size=32,num_hidden_layers=1,num_attention_heads=2'."
        },
    )
    feature_extractor_name: str | None = field(
        default=None,
        metadata={
            "help": "Feature extractor to use: a folder or Hub id with a preprocessor_config.json (defaults to the "
            "checkpoint's, or, when it has none, one built from the config's audio front-end fields)."
        },
    )
    classifier_pooling: str | None = field(
        default=None,
        metadata={
            "help": "'concat' = linear layer on the clip embedding (3840-d for ViT-B; official probes); 'mean' = "
            "mean of the tokens (768-d for ViT-B) + BatchNorm + linear (official AudioSet fine-tuning). Defaults to "
            "the checkpoint's."
        },
    )
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before the linear classifier."})
    freeze_encoder: bool | None = field(
        default=None,
        metadata={
            "help": "Train only the classifier (linear probe): --freeze_encoder (or True). --freeze_encoder False "
            "fine-tunes the whole model, also from a checkpoint saved frozen. Not given: the checkpoint's setting "
            "(whole model for an encoder checkpoint).",
            "nargs": "?",  # a bare --freeze_encoder means True; HfArgumentParser only adds this for a non-None default
            "const": True,
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Re-initialise the classifier of a classifier checkpoint whose number of classes differs from "
            "the dataset's."
        },
    )
    early_stopping_patience: int = field(
        default=5, metadata={"help": "Stop after this many evaluations without improvement (0 = never stop early)."}
    )
    model_card_template: str = field(
        default="audio_classification",
        metadata={"help": "Model card template: a name shipped in matpac_hf/model_cards or a Jinja2 file path."},
    )
    license: str = field(default="mit", metadata={"help": "License written into the model card."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are cached."})
    model_revision: str = field(default="main", metadata={"help": "Model version (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models or datasets."})


@dataclass
class AudioClassificationTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults that suit this script (every one can still be set on the command line)."""

    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: 'no', 'steps' or 'epoch'."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save: 'no', 'steps', 'epoch' or 'best'."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Reload the best checkpoint at the end."})
    metric_for_best_model: str | None = field(
        default="auto",
        metadata={
            "help": "Metric selecting the best checkpoint; 'auto' = accuracy (single-label) or mean_average_precision "
            "(multi-label)."
        },
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is always kept)."})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must stay False: the audio column is decoded on the fly by this script's transforms."},
    )


def load_feature_extractor(model_args: ModelArguments, config: MatpacConfig):
    """--feature_extractor_name (must load), else the checkpoint's, else one built from the config's front end."""
    kwargs = {"cache_dir": model_args.cache_dir, "token": model_args.token}
    if model_args.feature_extractor_name is not None:
        try:
            return AutoFeatureExtractor.from_pretrained(model_args.feature_extractor_name, **kwargs)
        except (OSError, TypeError, ValueError) as error:
            raise ValueError(
                f"--feature_extractor_name {model_args.feature_extractor_name!r} could not be loaded ({error}). Give "
                "a folder or Hub id holding a preprocessor_config.json, or leave the flag out to use the checkpoint's "
                "feature extractor."
            ) from error
    if model_args.model_name_or_path is not None:
        try:
            return AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path, **kwargs)
        except OSError:  # the checkpoint has no preprocessor_config.json
            pass
    logger.info("No preprocessor_config.json: building the feature extractor from the model config's front end.")
    return MatpacFeatureExtractor.from_model_config(config)


# ----------------------------------------------------------------------------------------------------------------------
# Loading the data (audio stays undecoded until a batch needs it)
# ----------------------------------------------------------------------------------------------------------------------


def scan_audio_folder(root: Path, audio_column: str, label_column: str) -> DatasetDict:
    """An audiofolder-style tree -> DatasetDict of (path, class name). `datasets`' own audiofolder builder needs
    torchcodec to encode audio; this scan keeps plain paths and lets our decode step read them."""
    for metadata_name in ("metadata.csv", "metadata.jsonl"):
        found = sorted(root.rglob(metadata_name))
        if found:
            raise ValueError(
                f"{found[0]} describes the clips with a metadata file; pass it as --train_file {found[0]} "
                "(with --audio_column_name file_name and your label column) instead of --dataset_name."
            )
    files = sorted(path for path in root.rglob("*") if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file())
    splits: dict[str, dict[str, list[str]]] = {}
    for path in files:
        parts = path.relative_to(root).parts
        split = SPLIT_FOLDER_NAMES.get(parts[0].lower(), "train") if len(parts) > 2 else "train"
        class_parts = parts[1:] if parts[0].lower() in SPLIT_FOLDER_NAMES and len(parts) > 2 else parts
        if len(class_parts) < 2:
            raise ValueError(
                f"{path} is not inside a class folder. An audio folder must look like <root>/<label>/<clip> or "
                "<root>/<split>/<label>/<clip>; for other layouts list the clips in a CSV and use --train_file."
            )
        split_columns = splits.setdefault(split, {audio_column: [], label_column: []})
        split_columns[audio_column].append(str(path))
        split_columns[label_column].append(path.parent.name)
    if not splits:
        raise ValueError(f"No audio file ({', '.join(sorted(AUDIO_EXTENSIONS))}) found under {root}.")
    class_names = sorted({name for columns in splits.values() for name in columns[label_column]})
    features = datasets.Features({audio_column: datasets.Value("string"), label_column: ClassLabel(names=class_names)})
    return DatasetDict(
        {name: datasets.Dataset.from_dict(columns, features=features) for name, columns in splits.items()}
    )


def load_listing_files(data_args: DataArguments, cache_dir: str | None) -> DatasetDict:
    """CSV / JSON-lines files -> DatasetDict; relative audio paths are resolved against each file's folder."""
    data_files = {data_args.train_split_name: data_args.train_file}
    if data_args.validation_file is not None:
        data_files[data_args.eval_split_name] = data_args.validation_file
    extensions = {Path(path).suffix.lower().lstrip(".") for path in data_files.values()}
    if len(extensions) != 1 or not extensions <= {"csv", "json", "jsonl"}:
        raise ValueError(f"--train_file / --validation_file must both be .csv or .json(l) files, got {data_files}.")
    builder = "csv" if extensions == {"csv"} else "json"
    raw_datasets = load_dataset(builder, data_files=data_files, cache_dir=cache_dir)
    for split, listing in data_files.items():
        column = data_args.audio_column_name
        if column not in raw_datasets[split].column_names:
            raise ValueError(
                f"{listing} has no column {column!r} (columns: {raw_datasets[split].column_names}); name the column "
                "of audio paths with --audio_column_name."
            )
        base_dir = Path(listing).resolve().parent
        raw_datasets[split] = raw_datasets[split].map(
            lambda batch, column=column, base_dir=base_dir: {column: [str(base_dir / p) for p in batch[column]]},
            batched=True,
        )
    return raw_datasets


def load_raw_datasets(data_args: DataArguments, model_args: ModelArguments) -> DatasetDict:
    if data_args.train_file is not None:  # DataArguments refuses --train_file together with --dataset_name
        return load_listing_files(data_args, model_args.cache_dir)
    if data_args.dataset_name is None:
        raise ValueError("Give the data with --dataset_name (Hub id or local folder) or --train_file (CSV / JSON).")
    local = Path(data_args.dataset_name)
    if local.is_dir():
        if (local / "dataset_dict.json").exists() or (local / "state.json").exists():
            loaded = load_from_disk(str(local))
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({data_args.train_split_name: loaded})
        if any(path.suffix.lower() in AUDIO_EXTENSIONS for path in local.rglob("*")):
            return scan_audio_folder(local, data_args.audio_column_name, data_args.label_column_name)
    return load_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        cache_dir=model_args.cache_dir,
        token=model_args.token,
    )


def select_splits(raw_datasets: DatasetDict, data_args: DataArguments, seed: int) -> DatasetDict:
    """Keep the training split and an evaluation split (the dataset's, or one carved out of training)."""
    if data_args.train_split_name not in raw_datasets:
        raise ValueError(
            f"The dataset has no split {data_args.train_split_name!r} (splits: {list(raw_datasets)}); choose one with "
            "--train_split_name."
        )
    train = raw_datasets[data_args.train_split_name]
    for column in (data_args.audio_column_name, data_args.label_column_name):
        if column not in train.column_names:
            flag = "--audio_column_name" if column == data_args.audio_column_name else "--label_column_name"
            raise ValueError(f"The dataset has no column {column!r} (columns: {train.column_names}); set {flag}.")
    if data_args.eval_split_name in raw_datasets:
        logger.info(f"Evaluating on the dataset's {data_args.eval_split_name!r} split.")
        return DatasetDict({"train": train, "eval": raw_datasets[data_args.eval_split_name]})
    if not 0.0 < data_args.train_val_split < 1.0:
        raise ValueError(
            f"The dataset has no {data_args.eval_split_name!r} split (splits: {list(raw_datasets)}) and "
            f"--train_val_split={data_args.train_val_split} carves none; set --eval_split_name to an existing split "
            "or --train_val_split to a fraction in (0, 1)."
        )
    label_feature = train.features[data_args.label_column_name]
    stratify = None  # multi-label data (lists, or --label_separator) is held out at random
    if data_args.label_separator is None and isinstance(label_feature, ClassLabel):
        stratify = data_args.label_column_name
    elif (
        data_args.label_separator is None
        and isinstance(label_feature, datasets.Value)
        and not label_feature.dtype.startswith("float")  # float targets are refused by LabelEncoder
    ):
        # class names / integer labels: stratify on a temporary ClassLabel copy (the label column stays as given)
        stratify = "__stratify_class__"
        labels = [str(value) for value in train[data_args.label_column_name]]
        train = train.add_column(stratify, labels).class_encode_column(stratify)
    try:
        carved = train.train_test_split(test_size=data_args.train_val_split, seed=seed, stratify_by_column=stratify)
    except ValueError as error:  # e.g. a class with a single clip, or fewer held-out clips than classes
        logger.warning(
            f"Cannot hold out a class-stratified evaluation split ({error}); holding out a random "
            f"{data_args.train_val_split:.0%} of the training clips instead, so some classes may be missing from "
            "evaluation. Give an evaluation split (--eval_split_name / --validation_file) to avoid this."
        )
        carved = train.train_test_split(test_size=data_args.train_val_split, seed=seed)
    if stratify == "__stratify_class__":
        carved = carved.remove_columns(stratify)
    logger.info(
        f"No {data_args.eval_split_name!r} split: holding out {len(carved['test'])} of {len(train)} training clips "
        f"(--train_val_split={data_args.train_val_split}) for evaluation."
    )
    return DatasetDict({"train": carved["train"], "eval": carved["test"]})


# ----------------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------------


class LabelEncoder:
    """Maps a dataset's label values to class indices (single-label) or multi-hot vectors (multi-label)."""

    def __init__(self, splits: DatasetDict, column: str, separator: str | None):
        feature = splits["train"].features[column]
        inner = getattr(feature, "feature", None)  # List / Sequence features hold their item feature here
        self.separator = separator
        self.multi_label = inner is not None or separator is not None
        if isinstance(feature, ClassLabel):
            self.class_names = list(feature.names)
            self.index_of = None  # the values are already indices
        elif isinstance(inner, ClassLabel):
            self.class_names = list(inner.names)
            self.index_of = None
        else:
            if isinstance(feature, datasets.Value) and feature.dtype.startswith("float") and separator is None:
                raise ValueError(
                    f"Column {column!r} holds floats: this script trains classifiers (class names, indices or lists "
                    "of them), not regression."
                )
            values = set()
            for split in splits.values():
                for value in split[column]:
                    values.update(self._items(value))
            names = {str(value) for value in values}
            if all(re.fullmatch(r"-?\d+", name) for name in names):  # integer labels: 0..N-1 keep their values
                self.class_names = sorted(names, key=lambda name: (int(name), name))
            else:
                self.class_names = sorted(names)
            self.index_of = {name: index for index, name in enumerate(self.class_names)}
            shown = ", ".join(f"{name!r} -> {index}" for index, name in enumerate(self.class_names[:20]))
            logger.info(f"Label values -> class indices: {shown}{' ...' if len(self.class_names) > 20 else ''}")
        if len(self.class_names) < 2 and not self.multi_label:
            raise ValueError(f"Column {column!r} holds {len(self.class_names)} class; classification needs >= 2.")

    def _items(self, value) -> list:
        if self.separator is not None and isinstance(value, str):
            return [item.strip() for item in value.split(self.separator) if item.strip()]
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def _index(self, item) -> int:
        return int(item) if self.index_of is None else self.index_of[str(item)]

    def __call__(self, value):
        if not self.multi_label:
            return self._index(value)
        target = np.zeros(len(self.class_names), dtype=np.float32)
        target[[self._index(item) for item in self._items(value)]] = 1.0
        return target


# ----------------------------------------------------------------------------------------------------------------------
# Audio: guarded decoding, cropping, augmentation
# ----------------------------------------------------------------------------------------------------------------------


def audio_source(value):
    """A dataset's audio value (path string, or {"bytes", "path"} dict from Audio(decode=False)) -> (source, name)."""
    if isinstance(value, str):
        return value, value
    if isinstance(value, dict):
        name = value.get("path") or "<in-memory audio>"
        if value.get("bytes"):
            return io.BytesIO(value["bytes"]), name
        if value.get("path"):
            return value["path"], name
    raise ValueError(f"Unsupported audio value {str(value)[:100]!r}: expected a path or a {{'bytes', 'path'}} dict.")


def check_audio(value, min_seconds: float) -> str:
    """'' when the clip can be read and is long enough, else what is wrong with it."""
    try:
        source, name = audio_source(value)
        info = sf.info(source)
    except Exception as error:  # noqa: BLE001 - any reader failure is reported with the file name
        return f"{str(value)[:200]}: unreadable ({error})"
    if info.frames / info.samplerate < min_seconds:
        return f"{name}: {info.frames / info.samplerate * 1000:.1f} ms long, shorter than {min_seconds * 1000:g} ms"
    return ""


def load_audio(value, sampling_rate: int) -> np.ndarray:
    """Decode one clip to mono float32 at `sampling_rate` (channels averaged, resampled with soxr)."""
    source, name = audio_source(value)
    try:
        audio, file_rate = sf.read(source, dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            f"Could not decode {name}: {error}. Fix or remove the file (or use --skip_bad_audio)."
        ) from error
    audio = audio.mean(axis=1)
    if file_rate != sampling_rate:
        audio = soxr.resample(audio, file_rate, sampling_rate).astype(np.float32)
    return audio


def drop_or_refuse_bad_audio(splits: DatasetDict, data_args: DataArguments, min_seconds: float) -> DatasetDict:
    """Read every file's header once, before training: a bad file found mid-epoch would stop the run."""
    column = data_args.audio_column_name
    for name, split in splits.items():
        problems = split.map(
            lambda batch: {"problem": [check_audio(value, min_seconds) for value in batch[column]]},
            batched=True,
            remove_columns=split.column_names,
            num_proc=data_args.preprocessing_num_workers,
            desc=f"Checking {name} audio",
        )["problem"]
        bad = [index for index, problem in enumerate(problems) if problem]
        if not bad:
            continue
        listing = "\n  ".join(problems[index] for index in bad[:10]) + ("\n  ..." if len(bad) > 10 else "")
        if not data_args.skip_bad_audio:
            raise ValueError(
                f"{len(bad)} of {len(split)} {name} clips cannot be used:\n  {listing}\n"
                "Fix or remove them, or pass --skip_bad_audio to drop them."
            )
        logger.warning(f"Dropping {len(bad)} of {len(split)} {name} clips (--skip_bad_audio):\n  {listing}")
        bad_set = set(bad)
        splits[name] = split.select([index for index in range(len(split)) if index not in bad_set])
    return splits


def parse_range(text: str, flag: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be 'min,max' (two numbers), got {text!r}.") from None
    if low > high:
        raise ValueError(f"{flag} must be 'min,max' with min <= max, got {text!r}.")
    return low, high


def build_augmentation(data_args: DataArguments):
    """The audiomentations chain of the --aug_* flags, or None when every flag is off."""
    for flag in ("aug_noise", "aug_gain", "aug_time_shift", "aug_pitch_shift", "aug_background_p"):
        if not 0.0 <= getattr(data_args, flag) <= 1.0:
            raise ValueError(f"--{flag} is a probability and must lie in [0, 1], got {getattr(data_args, flag)}.")
    import audiomentations

    transforms = []
    if data_args.aug_time_shift > 0:
        transforms.append(audiomentations.Shift(min_shift=-0.5, max_shift=0.5, p=data_args.aug_time_shift))
    if data_args.aug_pitch_shift > 0:
        semitones = data_args.aug_pitch_semitones
        transforms.append(
            audiomentations.PitchShift(min_semitones=-semitones, max_semitones=semitones, p=data_args.aug_pitch_shift)
        )
    if data_args.aug_background_dir is not None:
        if not Path(data_args.aug_background_dir).is_dir():
            raise ValueError(f"--aug_background_dir {data_args.aug_background_dir} is not a folder.")
        low, high = parse_range(data_args.aug_background_snr_db, "--aug_background_snr_db")
        transforms.append(
            audiomentations.AddBackgroundNoise(
                sounds_path=data_args.aug_background_dir, min_snr_db=low, max_snr_db=high, p=data_args.aug_background_p
            )
        )
    if data_args.aug_noise > 0:
        low, high = parse_range(data_args.aug_noise_snr_db, "--aug_noise_snr_db")
        transforms.append(audiomentations.AddGaussianSNR(min_snr_db=low, max_snr_db=high, p=data_args.aug_noise))
    if data_args.aug_gain > 0:
        gain = data_args.aug_gain_db
        transforms.append(audiomentations.Gain(min_gain_db=-gain, max_gain_db=gain, p=data_args.aug_gain))
    if not transforms:
        return None
    logger.info("Training augmentation: " + ", ".join(type(transform).__name__ for transform in transforms))
    return audiomentations.Compose(transforms)


def augmentation_settings(data_args: DataArguments) -> dict:
    """The --aug_* settings in effect (for the model card), or {"augmentation": "none"}."""
    settings = {}
    if data_args.aug_noise > 0:
        settings.update(aug_noise=data_args.aug_noise, aug_noise_snr_db=data_args.aug_noise_snr_db)
    if data_args.aug_gain > 0:
        settings.update(aug_gain=data_args.aug_gain, aug_gain_db=data_args.aug_gain_db)
    if data_args.aug_time_shift > 0:
        settings.update(aug_time_shift=data_args.aug_time_shift)
    if data_args.aug_pitch_shift > 0:
        settings.update(aug_pitch_shift=data_args.aug_pitch_shift, aug_pitch_semitones=data_args.aug_pitch_semitones)
    if data_args.aug_background_dir is not None:
        settings.update(
            aug_background_dir=data_args.aug_background_dir,
            aug_background_p=data_args.aug_background_p,
            aug_background_snr_db=data_args.aug_background_snr_db,
        )
    return settings or {"augmentation": "none"}


@dataclass
class AudioBatchCollator:
    """A list of {"waveform", "labels"} -> model inputs: the feature extractor computes the log-mels of the whole
    batch and pads them (attention_mask marks the valid frames)."""

    feature_extractor: MatpacFeatureExtractor

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.feature_extractor(
            [example["waveform"] for example in examples],
            sampling_rate=self.feature_extractor.sampling_rate,
            return_attention_mask=True,
            return_tensors="pt",
        )
        labels = [example["labels"] for example in examples]
        batch["labels"] = torch.tensor(np.stack(labels)) if isinstance(labels[0], np.ndarray) else torch.tensor(labels)
        return batch


# ----------------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------------


def write_model_card(
    output_dir: str,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    config: MatpacConfig,
    class_names: list[str],
    multi_label: bool,
    eval_split: str,
    eval_metrics: dict,
):
    """Write README.md (YAML metadata + description) with matpac_hf's model card renderer."""
    base_model = model_args.model_name_or_path
    if base_model is not None and Path(base_model).exists():
        base_model = None  # a local folder is no Hub id
    dataset_id = data_args.dataset_name
    if dataset_id is not None and Path(dataset_id).exists():
        dataset_id = None  # a local folder is no Hub id
    metric_names = ["mean_average_precision", "roc_auc"] if multi_label else ["accuracy"]
    results = [
        f"| {key[len('eval_') :]} | {value:.4f} |"
        for key, value in eval_metrics.items()
        if key.startswith("eval_") and not key.endswith(("runtime", "per_second"))
    ]
    classifier = (
        f"mean of the {config.hidden_size}-d tokens over frequency and time, BatchNorm1d without affine parameters, "
        "then a linear layer"
        if config.classifier_pooling == "mean"
        else f"a linear layer on the {config.frame_embedding_size}-d clip embedding"
    )
    text = render_model_card(
        model_args.model_card_template,
        license=model_args.license,
        base_model=base_model,
        datasets=[dataset_id] if dataset_id else None,
        metrics=metric_names,
        model_name=training_args.hub_model_id or Path(training_args.output_dir).name,
        tags=["audio-classification"],
        repo_id=training_args.hub_model_id,
        classifier=classifier + (" (encoder frozen: linear probe)" if config.freeze_encoder else ""),
        problem_type="multi-label classification" if multi_label else "single-label classification",
        num_labels=len(class_names),
        labels=class_names,
        dataset_description=dataset_id or data_args.dataset_name or data_args.train_file,
        training_summary=(
            f"Fine-tuned from {model_args.model_name_or_path or 'a random initialisation'} with matpac-hf's "
            "`examples/run_audio_classification.py` (transformers Trainer)."
        ),
        training_hyperparameters={
            "learning_rate": training_args.learning_rate,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "num_train_epochs": training_args.num_train_epochs,
            "weight_decay": training_args.weight_decay,
            "max_length_seconds": data_args.max_length_seconds,
            "seed": training_args.seed,
            "classifier_pooling": config.classifier_pooling,
            "classifier_dropout": config.classifier_dropout,
            "freeze_encoder": config.freeze_encoder,
            **augmentation_settings(data_args),
        },
        evaluation_results=f"On {eval_split}:\n\n| metric | value |\n| --- | --- |\n" + "\n".join(results),
    )
    Path(output_dir, "README.md").write_text(text, encoding="utf-8")


def configure_for_dataset(config: MatpacConfig, model_args: ModelArguments, class_names: list[str], multi_label: bool):
    """Sets the dataset's labels and problem type and the command line's head options on `config` (in place)."""
    if any(name.endswith("ForAudioClassification") for name in config.architectures or []):
        check_checkpoint_labels(config, class_names, model_args.ignore_mismatched_sizes)
    config.id2label = dict(enumerate(class_names))
    config.label2id = {name: index for index, name in enumerate(class_names)}
    config.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    if model_args.classifier_pooling is not None:
        config.classifier_pooling = model_args.classifier_pooling
    if model_args.classifier_dropout is not None:
        config.classifier_dropout = model_args.classifier_dropout
    if model_args.freeze_encoder is not None:  # None: keep the checkpoint's setting
        config.freeze_encoder = model_args.freeze_encoder
    config.validate()


def check_checkpoint_labels(config: MatpacConfig, class_names: list[str], ignore_mismatched_sizes: bool):
    """A classifier checkpoint's head is reused for the dataset's classes: refuse a size mismatch unless
    --ignore_mismatched_sizes, and warn when its outputs are re-labelled."""
    trained = [config.id2label[index] for index in sorted(config.id2label)]
    if trained == list(class_names):
        return
    if len(trained) != len(class_names):
        if not ignore_mismatched_sizes:
            raise ValueError(
                f"The checkpoint's classifier has {len(trained)} classes, the dataset {len(class_names)}. Pass "
                "--ignore_mismatched_sizes to train a new classifier on the checkpoint's encoder."
            )
        logger.warning(
            f"The checkpoint's classifier ({len(trained)} classes) is re-initialised for the dataset's "
            f"{len(class_names)} classes (--ignore_mismatched_sizes)."
        )
        return
    changed = [f"{i}: {old!r} -> {new!r}" for i, (old, new) in enumerate(zip(trained, class_names)) if old != new]
    logger.warning(
        f"The checkpoint's classifier was trained on other labels: {len(changed)} of its {len(trained)} outputs are "
        f"re-labelled with the dataset's classes and fine-tuned from its weights ({', '.join(changed[:10])}"
        f"{', ...' if len(changed) > 10 else ''})."
    )


class AudioClassificationTrainer(Trainer):
    """Trainer whose `push_to_hub` writes this project's model card (`create_model_card` is its hook)."""

    def __init__(self, *args, model_card_writer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_card_writer = model_card_writer

    def create_model_card(self, *args, **kwargs):
        if self.model_card_writer is not None and self.is_world_process_zero():
            self.model_card_writer()


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def main():
    parser = HfArgumentParser((ModelArguments, DataArguments, AudioClassificationTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(logging.INFO if training_args.should_log else log_level)  # this script's own steps, main process
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(f"Training arguments: {training_args}")
    if training_args.remove_unused_columns:
        raise ValueError(
            "--remove_unused_columns must be False: the Trainer would drop the audio column before it is decoded."
        )
    if model_args.classifier_pooling not in (None, "concat", "mean"):
        raise ValueError(f"--classifier_pooling must be 'concat' or 'mean', got {model_args.classifier_pooling!r}.")
    if data_args.max_length_seconds <= 0:
        raise ValueError(f"--max_length_seconds must be positive, got {data_args.max_length_seconds}.")
    if training_args.push_to_hub:
        import jinja2  # noqa: F401 - the model card is rendered with Jinja2; fail now rather than after training
    set_seed(training_args.seed)

    # 1. Model configuration and feature extractor (the front end fixes the sampling rate of the audio step).
    if model_args.model_name_or_path is not None:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=model_args.token,
        )
        if not isinstance(config, MatpacConfig):
            raise ValueError(
                f"{model_args.model_name_or_path} is a {type(config).__name__} checkpoint; this script fine-tunes "
                "MATPAC models (model_type 'matpac')."
            )
    else:
        logger.warning("No --model_name_or_path: training a randomly initialised MATPAC encoder from scratch.")
        config = MatpacConfig()
    if model_args.config_overrides:
        logger.info(f"Overriding config: {model_args.config_overrides}")
        config.update_from_string(model_args.config_overrides)
        config.validate()

    feature_extractor = load_feature_extractor(model_args, config)
    sampling_rate = feature_extractor.sampling_rate

    # 2. Data: load, pick the splits, check every file once, encode labels.
    with training_args.main_process_first(desc="loading and checking the dataset"):
        raw_datasets = load_raw_datasets(data_args, model_args)
        splits = select_splits(raw_datasets, data_args, training_args.seed)
        eval_split = (
            f"the {data_args.eval_split_name!r} split"
            if data_args.eval_split_name in raw_datasets
            else f"{data_args.train_val_split:.0%} of the {data_args.train_split_name!r} split, held out"
        )
        for name, split in splits.items():
            if isinstance(split.features[data_args.audio_column_name], Audio):
                # decoded by us with soundfile: `datasets` decodes audio only through torchcodec
                splits[name] = split.cast_column(data_args.audio_column_name, Audio(decode=False))
        if data_args.max_train_samples is not None:
            splits["train"] = (
                splits["train"]
                .shuffle(seed=training_args.seed)
                .select(range(min(data_args.max_train_samples, len(splits["train"]))))
            )
        if data_args.max_eval_samples is not None:
            splits["eval"] = splits["eval"].select(range(min(data_args.max_eval_samples, len(splits["eval"]))))
        min_seconds = feature_extractor.n_fft / sampling_rate
        splits = drop_or_refuse_bad_audio(splits, data_args, min_seconds)
    label_encoder = LabelEncoder(splits, data_args.label_column_name, data_args.label_separator)
    class_names = label_encoder.class_names
    multi_label = label_encoder.multi_label
    logger.info(
        f"{len(splits['train'])} training and {len(splits['eval'])} evaluation clips, {len(class_names)} classes "
        f"({'multi' if multi_label else 'single'}-label): {class_names[:20]}{' ...' if len(class_names) > 20 else ''}"
    )

    augment = build_augmentation(data_args)
    max_train_samples_per_clip = int(round(data_args.max_length_seconds * sampling_rate))

    def train_transform(batch):
        waveforms = []
        for value in batch[data_args.audio_column_name]:
            audio = load_audio(value, sampling_rate)
            if len(audio) > max_train_samples_per_clip:  # random crop of long clips
                start = random.randint(0, len(audio) - max_train_samples_per_clip)
                audio = audio[start : start + max_train_samples_per_clip]
            if augment is not None:
                audio = augment(samples=audio, sample_rate=sampling_rate).astype(np.float32)
            waveforms.append(audio)
        return {"waveform": waveforms, "labels": [label_encoder(v) for v in batch[data_args.label_column_name]]}

    def eval_transform(batch):  # whole clips, no augmentation
        waveforms = [load_audio(value, sampling_rate) for value in batch[data_args.audio_column_name]]
        return {"waveform": waveforms, "labels": [label_encoder(v) for v in batch[data_args.label_column_name]]}

    splits["train"].set_transform(train_transform)
    splits["eval"].set_transform(eval_transform)

    # 3. Metrics: local evaluate modules shipped with matpac_hf (no Hub access needed).
    if multi_label:
        map_metric = evaluate.load(str(METRICS_DIR / "mean_average_precision"))
        auc_metric = evaluate.load(str(METRICS_DIR / "roc_auc"))
    else:
        accuracy_metric = evaluate.load(str(METRICS_DIR / "accuracy"))

    def compute_metrics(eval_prediction):
        logits, references = eval_prediction.predictions, eval_prediction.label_ids
        if multi_label:
            scores = 1.0 / (1.0 + np.exp(-logits))
            references = references.astype(np.int64)
            return {
                **map_metric.compute(predictions=scores, references=references),
                **auc_metric.compute(predictions=scores, references=references),
            }
        return accuracy_metric.compute(predictions=logits.argmax(-1), references=references)

    if training_args.metric_for_best_model == "auto":
        training_args.metric_for_best_model = "mean_average_precision" if multi_label else "accuracy"
        training_args.greater_is_better = True

    # 4. Model: the pretrained encoder plus a classifier sized for this dataset.
    configure_for_dataset(config, model_args, class_names, multi_label)
    if model_args.model_name_or_path is not None:
        model = MatpacForAudioClassification.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=model_args.token,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        )
    else:
        model = MatpacForAudioClassification(config)
    if config.freeze_encoder:
        model.freeze_encoder()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        f"classifier_pooling={config.classifier_pooling!r}, freeze_encoder={config.freeze_encoder}: "
        f"{trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters train."
    )
    total_train_batch = training_args.per_device_train_batch_size * max(training_args.world_size, 1)
    if config.classifier_pooling == "mean" and not training_args.dataloader_drop_last:
        if len(splits["train"]) % total_train_batch == 1:
            raise ValueError(
                f"With classifier_pooling='mean' (BatchNorm) the last training batch would hold a single clip "
                f"({len(splits['train'])} clips, batch {total_train_batch}); change --per_device_train_batch_size "
                "or --max_train_samples."
            )
    if training_args.dataloader_drop_last:
        total_eval_batch = training_args.per_device_eval_batch_size * max(training_args.world_size, 1)
        dropped = len(splits["eval"]) % total_eval_batch
        if dropped == len(splits["eval"]):
            raise ValueError(
                f"--dataloader_drop_last also applies to evaluation: all {dropped} evaluation clips would be dropped "
                f"(eval batch {total_eval_batch}). Lower --per_device_eval_batch_size or leave drop_last off."
            )
        if dropped:
            logger.warning(f"--dataloader_drop_last: the last {dropped} evaluation clips are never evaluated.")

    # 5. Train and evaluate.
    def model_card_writer():
        write_model_card(
            training_args.output_dir,
            model_args,
            data_args,
            training_args,
            config,
            class_names,
            multi_label,
            eval_split,
            final_metrics,
        )

    final_metrics: dict = {}
    callbacks = []
    if model_args.early_stopping_patience > 0 and training_args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = AudioClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["eval"],
        data_collator=AudioBatchCollator(feature_extractor),
        processing_class=feature_extractor,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        model_card_writer=model_card_writer,
    )

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


if __name__ == "__main__":
    main()
