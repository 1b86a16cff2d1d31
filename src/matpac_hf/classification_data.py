# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Labelled audio datasets for the downstream scripts (`examples/run_audio_classification.py`,
`examples/run_linear_probe.py`): loading with the audio left undecoded, class labels, a held-out evaluation split.

The audio column holds file paths (or `{"bytes", "path"}` dicts) until `matpac_hf.audio_io` decodes it: `datasets`
encodes and decodes audio only through torchcodec, which a CPU install often cannot load.

```python
>>> splits = load_audio_dataset("path/to/folder")  # <folder>/[<split>/]<label>/<clip>, or a metadata.csv
>>> labels = ClassLabels.from_dataset(splits, "label")
>>> train, held_out = hold_out_split(splits["train"], 0.15, "label", seed=0)
```
"""

import logging
import re
from pathlib import Path

import numpy as np
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Value, load_dataset, load_from_disk
from datasets.data_files import DataFilesDict, get_data_patterns

from .audio_io import (
    AUDIO_FILE_EXTENSIONS,
    FFMPEG_AUDIO_EXTENSIONS,
    FFMPEG_INSTALL_HINT,
    AudioDecodeError,
    BadAudioPolicy,
    audio_name,
    decode_audio,
    torchcodec_error,
)


logger = logging.getLogger(__name__)

METADATA_FILE_NAMES = ("metadata.csv", "metadata.jsonl")


def load_audio_files(data_files: dict[str, str], audio_column: str, cache_dir: str | None = None) -> DatasetDict:
    """CSV or JSON-lines listings (one per split: `{"train": "train.csv", ...}`) -> DatasetDict. Relative audio paths
    are resolved against the folder of the listing that names them."""
    suffixes = {Path(path).suffix.lower() for path in data_files.values()}
    if len(suffixes) != 1 or not suffixes <= {".csv", ".json", ".jsonl"}:
        raise ValueError(f"Audio listings must all be .csv or all .json / .jsonl files, got {data_files}.")
    builder = "csv" if suffixes == {".csv"} else "json"
    splits = load_dataset(builder, data_files=data_files, cache_dir=cache_dir)
    for split, listing in data_files.items():
        if audio_column not in splits[split].column_names:
            raise ValueError(
                f"{listing} has no column {audio_column!r} (columns: {splits[split].column_names}); name the column "
                "of audio paths (--audio_column_name / --audio_column)."
            )
        folder = Path(listing).resolve().parent
        splits[split] = splits[split].map(
            lambda paths, folder=folder: {audio_column: [str(folder / path) for path in paths]},
            input_columns=audio_column,
            batched=True,
            desc=f"Resolving {split} audio paths",
        )
    return splits


def load_audio_folder(folder: str | Path, cache_dir: str | None = None) -> DatasetDict:
    """`datasets`' audiofolder layouts with the audio kept as file paths (column "audio"): class folders
    (`<folder>/[<split>/]<label>/<clip>`, labels in column "label") or a `metadata.csv` / `metadata.jsonl` with a
    `file_name` column (one at the root, or one per split folder)."""
    folder = Path(folder)
    metadata = sorted(path for path in folder.rglob("*") if path.name in METADATA_FILE_NAMES)
    if metadata:
        data_files = {"train" if path.parent == folder else path.parent.name: str(path) for path in metadata}
        return load_audio_files(data_files, "file_name", cache_dir).rename_column("file_name", "audio")
    # datasets' own split-folder rules (train/, validation/, test/, ...); the class is the folder holding the clip.
    # (datasets' "audiofolder" builder is not used: it skips the containers only FFmpeg reads, .m4a and .aac.)
    patterns = get_data_patterns(str(folder))
    split_folders = set(patterns) != {"train"} or patterns["train"] != ["**"]
    data_files = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    splits = {}
    for name, paths in data_files.items():
        clips = sorted(path for path in paths if Path(path).suffix.lower() in AUDIO_FILE_EXTENSIONS)
        outside = [path for path in clips if len(Path(path).relative_to(folder).parts) < 2 + split_folders]
        if outside:
            raise ValueError(
                f"The audio files of {folder} ({name} split) are not inside class folders ({outside[0]}, "
                f"{len(outside)} file(s)). Use the layout <folder>/[<split>/]<label>/<clip>, or list the clips in a "
                "metadata.csv (file_name,label,...)."
            )
        if clips:
            labels = [Path(path).parent.name for path in clips]
            splits[str(name)] = Dataset.from_dict({"audio": clips, "label": labels})
    needs_ffmpeg = [path for dataset in splits.values() for path in dataset["audio"]]
    needs_ffmpeg = [path for path in needs_ffmpeg if Path(path).suffix.lower() in FFMPEG_AUDIO_EXTENSIONS]
    if needs_ffmpeg and torchcodec_error() is not None:
        logger.warning(
            f"{len(needs_ffmpeg)} clip(s) of {folder} are containers soundfile cannot read ("
            f"{', '.join(Path(path).name for path in needs_ffmpeg[:10])}{' ...' if len(needs_ffmpeg) > 10 else ''}) "
            f"and {torchcodec_error()}: they count as unreadable. To decode them: {FFMPEG_INSTALL_HINT}."
        )
    return DatasetDict(splits)


def load_audio_dataset(
    name_or_folder: str, config_name: str | None = None, cache_dir: str | None = None, token: str | None = None
) -> DatasetDict:
    """A Hub dataset id, a `save_to_disk` folder, an audio folder (`load_audio_folder`) or any other local folder
    `datasets.load_dataset` reads (parquet, CSV) -> DatasetDict whose `Audio` columns are undecoded
    (`Audio(decode=False)`: `{"bytes", "path"}` values)."""
    local = Path(name_or_folder)
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
        loaded = load_from_disk(str(local))
        splits = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    elif local.is_dir() and any(
        path.suffix.lower() in AUDIO_FILE_EXTENSIONS or path.name in METADATA_FILE_NAMES for path in local.rglob("*")
    ):
        return load_audio_folder(local, cache_dir)
    else:
        splits = load_dataset(name_or_folder, config_name, cache_dir=cache_dir, token=token)
    for name, split in splits.items():
        for column, feature in split.features.items():
            if isinstance(feature, Audio):
                splits[name] = splits[name].cast_column(column, Audio(decode=False))
    return splits


class ClassLabels:
    """A label column -> class indices (single-label) or multi-hot float vectors (multi-label).

    `from_dataset` reads the classes: a `ClassLabel` feature's names; else the sorted label values, integers in
    numeric order (0, 1, 2, 10 rather than 0, 1, 10, 2) so integer labels keep their values. Multi-label when the
    column holds lists or `separator` splits its strings ("dog;bark")."""

    def __init__(self, names: list[str], multi_label: bool, separator: str | None = None, indexed: bool = False):
        self.names, self.multi_label, self.separator = list(names), multi_label, separator
        self.index_of = None if indexed else {name: index for index, name in enumerate(self.names)}

    @classmethod
    def from_dataset(cls, splits: DatasetDict | dict, column: str, separator: str | None = None) -> "ClassLabels":
        first = next(iter(splits.values()))
        feature = first.features[column]
        inner = getattr(feature, "feature", None)  # List / Sequence features hold their item feature here
        multi_label = inner is not None or separator is not None
        for candidate in (feature, inner):
            if isinstance(candidate, ClassLabel):
                return cls(candidate.names, multi_label, separator, indexed=True)
        if isinstance(feature, Value) and feature.dtype.startswith("float") and separator is None:
            raise ValueError(
                f"Column {column!r} holds floats: classification needs class names, indices or lists of them (this "
                "is not regression)."
            )
        encoder = cls([], multi_label, separator)
        names = {str(item) for split in splits.values() for value in split[column] for item in encoder.items(value)}
        integers = all(re.fullmatch(r"-?\d+", name) for name in names)
        labels = cls(
            sorted(names, key=lambda name: (int(name), name) if integers else (0, name)), multi_label, separator
        )
        if len(labels.names) < 2 and not multi_label:
            raise ValueError(f"Column {column!r} holds {len(labels.names)} class; classification needs at least 2.")
        shown = ", ".join(f"{name!r} -> {index}" for index, name in enumerate(labels.names[:20]))
        logger.info(f"Label values -> class indices: {shown}{' ...' if len(labels.names) > 20 else ''}")
        return labels

    def items(self, value) -> list:
        """One example's label value -> its labels (a list, also for a single label)."""
        if self.separator is not None and isinstance(value, str):
            return [item.strip() for item in value.split(self.separator) if item.strip()]
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def index(self, item) -> int:
        return int(item) if self.index_of is None else self.index_of[str(item)]

    def __call__(self, value):
        if not self.multi_label:
            return self.index(value)
        target = np.zeros(len(self.names), dtype=np.float32)
        target[[self.index(item) for item in self.items(value)]] = 1.0
        return target


def set_config_labels(config, class_names: list[str], multi_label: bool, ignore_mismatched_sizes: bool = False):
    """Sets `id2label` / `label2id` / `problem_type` of a model config for a dataset's classes (in place).

    A classifier checkpoint's head is reused for the dataset's classes: a different number of classes is refused
    unless `ignore_mismatched_sizes` (then the head is re-initialised, with a warning); the same number under other
    names is warned about (its outputs are re-labelled and fine-tuned from their weights)."""
    trained = [config.id2label[index] for index in sorted(config.id2label)]
    is_classifier = any(name.endswith("ForAudioClassification") for name in config.architectures or [])
    if is_classifier and trained != list(class_names):
        if len(trained) != len(class_names) and not ignore_mismatched_sizes:
            raise ValueError(
                f"The checkpoint's classifier has {len(trained)} classes, the dataset {len(class_names)}. Pass "
                "--ignore_mismatched_sizes to train a new classifier on the checkpoint's encoder."
            )
        if len(trained) != len(class_names):
            logger.warning(
                f"The checkpoint's classifier ({len(trained)} classes) is re-initialised for the dataset's "
                f"{len(class_names)} classes (--ignore_mismatched_sizes)."
            )
        else:
            changed = [f"{i}: {a!r} -> {b!r}" for i, (a, b) in enumerate(zip(trained, class_names)) if a != b]
            logger.warning(
                f"The checkpoint's classifier was trained on other labels: {len(changed)} of its {len(trained)} "
                f"outputs are re-labelled with the dataset's classes and fine-tuned from its weights "
                f"({', '.join(changed[:10])}{', ...' if len(changed) > 10 else ''})."
            )
    config.id2label = dict(enumerate(class_names))
    config.label2id = {name: index for index, name in enumerate(class_names)}
    config.problem_type = "multi_label_classification" if multi_label else "single_label_classification"


def hold_out_split(
    train: Dataset, fraction: float, label_column: str, seed: int, stratify: bool = True
) -> tuple[Dataset, Dataset]:
    """Holds out `fraction` of `train` for evaluation, stratified by class when `stratify` (single-label data) and
    every class has enough clips; otherwise at random, with a warning."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"The held-out fraction must lie in (0, 1), got {fraction}.")
    feature = train.features[label_column]
    stratify = stratify and (
        isinstance(feature, ClassLabel) or (isinstance(feature, Value) and "float" not in feature.dtype)
    )
    try:
        if not stratify:
            raise ValueError("multi-label data")
        # stratify on a ClassLabel copy of the labels (the label column itself stays as given)
        keyed = train.add_column("__class__", [str(value) for value in train[label_column]])
        carved = keyed.class_encode_column("__class__").train_test_split(
            test_size=fraction, seed=seed, stratify_by_column="__class__"
        )
        carved = carved.remove_columns("__class__")
    except ValueError as error:  # multi-label data, a class with a single clip, fewer held-out clips than classes
        if stratify:
            logger.warning(
                f"Cannot hold out a class-stratified evaluation split ({error}); holding out a random {fraction:.0%} "
                "of the training clips instead, so some classes may be missing from evaluation."
            )
        carved = train.train_test_split(test_size=fraction, seed=seed)
    return carved["train"], carved["test"]


def drop_or_refuse_bad_audio(
    dataset: Dataset,
    column: str,
    sampling_rate: int,
    min_samples: int = 1,
    bad_audio: str = "error",
    num_proc: int | None = None,
    what: str = "clip",
) -> Dataset:
    """Decodes every clip of `column` once and applies the `bad_audio` policy (`matpac_hf.audio_io.BadAudioPolicy`)
    to those that cannot be decoded or are shorter than `min_samples`: `"error"` tries every clip, then refuses them
    all in one error (the first 20 names and the count), `"skip"` drops them and logs how many."""
    policy = BadAudioPolicy(bad_audio, what=what, collect=True)

    def decode_errors(values: list) -> dict:
        errors = []
        for value in values:
            try:
                if len(decode_audio(value, sampling_rate)) < min_samples:
                    raise AudioDecodeError(f"{audio_name(value)}: shorter than {min_samples} samples")
                errors.append("")
            except AudioDecodeError as error:
                errors.append(str(error))
        return {"decode_error": errors}

    checked = dataset.map(
        decode_errors,
        input_columns=column,
        batched=True,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        desc=f"Checking {what}s",
    )
    errors = checked["decode_error"]
    for message in errors:
        if message:
            policy.handle(AudioDecodeError(message))
    policy.raise_collected()
    kept = dataset.select([index for index, message in enumerate(errors) if not message])
    if len(kept) < len(dataset):
        logger.warning(f"bad_audio='skip': dropped {len(dataset) - len(kept)} of {len(dataset)} {what}s.")
    return kept
