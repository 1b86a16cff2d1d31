# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The resumable pretraining stream: an audio corpus loaded with `datasets` -> batches of random waveform crops.

The pipeline (docs/method.md, sections 1 and 5):

1. `load_audio_stream` loads the corpus with `datasets.load_dataset(..., streaming=True)` (a Hub dataset id, a local
   `audiofolder` directory, parquet shards or webdataset tars) and keeps the audio column *undecoded*.
2. `MatpacCropStream` decodes each clip with `audio_io.decode_random_crop` (mono, 16 kHz, only the samples under the
   crop) and takes a uniformly random crop of `crop_frames` log-mel frames (608 = 97 520 samples = 6.1 s by default).
   Clips shorter than the crop are dropped (official) or zero-padded at the end, each crop then carrying
   `num_valid_samples` so that the model can leave the padded patches out. An unreadable clip is skipped and counted
   (`bad_audio="skip"`) or stops the run with its name (`"error"`).
3. `PretrainingDataLoop` batches the crops with torchdata's `StatefulDataLoader` and loops over epochs (`set_epoch`),
   with a `state_dict` that resumes the stream exactly (see its docstring for when "exactly" holds). The counters of
   every stream (the training process's or each DataLoader worker's) live in shared memory, so the training process
   sees them even when a worker yields nothing (e.g. every clip dropped as too short).

The crop position of a clip is a pure function of `(seed, epoch, clip identity)`, never of a running random generator,
so resumed runs draw the same crops as uninterrupted ones and every process, worker or shuffle order draws the same
crop for the same clip in the same epoch. The log-mel is *not* computed here: the training step computes it on the
training device with `MatpacFeatureExtractor.extract_log_mel`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef

from .audio_io import (
    AUDIO_FILE_EXTENSIONS,
    AudioDecodeError,
    BadAudioPolicy,
    check_bad_audio_policy,
    check_min_clip_policy,
    clip_key,
    crop_decoded,
    decode_audio,
    decode_random_crop,
    keep_audio_undecoded,
    pcm_to_float32,
)
from .configuration_matpac import HOP_LENGTH, N_FFT, SAMPLING_RATE, num_frames_for_samples, num_samples_for_frames
from .prepare_corpus import AUDIO_COLUMN as PREPARED_AUDIO_COLUMN
from .prepare_corpus import KEY_COLUMN as PREPARED_KEY_COLUMN
from .prepare_corpus import is_prepared, pcm_samples, read_provenance, shard_files


logger = logging.getLogger(__name__)

CROP_FRAMES = 608  # the official pretraining crop: 608 frames = 97 520 samples = 6.1 s at 16 kHz
# Shared-memory batch buffers of each DataLoader worker (`WorkerBatchBuffers`): the batches a worker may have sent and
# the training process not yet dropped (the DataLoader's prefetch_factor 2, the batch in hand, the one being made).
BATCH_BUFFERS_PER_WORKER = 6
# After this many clips read by one stream, warn once if most of them were dropped or unreadable.
EARLY_DROP_WARNING_CLIPS = 100


# ----------------------------------------------------------------------------------------------------------------
# Loading the corpus with `datasets`
# ----------------------------------------------------------------------------------------------------------------


def _builder_for_files(data_files: list[str]) -> str:
    """Which `datasets` packaged builder reads these files (from their extension)."""
    extensions = {os.path.splitext(path.split("::")[0])[1].lower() for path in data_files}
    if extensions <= {".parquet"}:
        return "parquet"
    if extensions <= {".tar"}:
        return "webdataset"
    if extensions <= set(AUDIO_FILE_EXTENSIONS) | {".csv", ".jsonl"}:
        return "audiofolder"
    raise ValueError(
        f"Cannot tell how to read data files with extensions {sorted(extensions)}: give only parquet shards "
        f"(.parquet), webdataset tars (.tar) or audio files ({', '.join(AUDIO_FILE_EXTENSIONS)}), or pass a Hub "
        "dataset id / a directory instead."
    )


def load_audio_stream(
    dataset_name: str | None = None,
    dataset_dir: str | None = None,
    data_files: str | list[str] | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    audio_column: str | None = None,
    **load_kwargs,
):
    """Loads an audio corpus as a streaming `datasets.IterableDataset` whose audio column stays undecoded.

    Exactly one of `dataset_name` (a Hub dataset id, or any path `load_dataset` understands), `dataset_dir` (a local
    `audiofolder` directory, metadata and labels not loaded; or a corpus prepared by `matpac_hf.prepare_corpus`) or
    `data_files` (a glob or list of parquet shards, webdataset tars or audio files) must be given.

    A prepared corpus (from any of the three: its `clip_key` and `num_samples` columns say so) keeps those two columns
    beside its `audio` column, and `MatpacCropStream` crops it by slicing.

    Args:
        audio_column: name of the audio column. `None` picks `"audio"` if present, else the only `Audio` column
            (webdataset names columns after the file extension, e.g. `"flac"`); it is an error when that is ambiguous.

    Returns:
        `(dataset, audio_column)`: the `IterableDataset` and the resolved audio column name.
    """
    from datasets import Audio, load_dataset
    from pyarrow.dataset import ParquetFragmentScanOptions

    given = [
        name
        for name, value in (("dataset_name", dataset_name), ("dataset_dir", dataset_dir), ("data_files", data_files))
        if value
    ]
    if len(given) != 1:
        raise ValueError(
            f"Give exactly one corpus source among dataset_name, dataset_dir and data_files (got {given or 'none'})."
        )
    if dataset_dir is not None and read_provenance(dataset_dir) is not None:  # a prepared corpus: its parquet shards
        # Local shards read column chunk by column chunk: pre-buffering whole row groups costs a copy per clip.
        load_kwargs.setdefault("fragment_scan_options", ParquetFragmentScanOptions(pre_buffer=False))
        dataset = load_dataset(
            "parquet", data_files={split: shard_files(dataset_dir)}, split=split, streaming=True, **load_kwargs
        )
    elif dataset_dir is not None:
        if not os.path.isdir(dataset_dir):
            raise ValueError(f"dataset_dir {dataset_dir!r} is not a directory.")
        dataset = load_dataset(
            "audiofolder",
            data_dir=dataset_dir,
            split=split,
            streaming=True,
            drop_metadata=True,
            drop_labels=True,
            **load_kwargs,
        )
    elif data_files is not None:
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        builder = _builder_for_files(files)
        extra = {"drop_metadata": True, "drop_labels": True} if builder == "audiofolder" else {}
        dataset = load_dataset(builder, data_files={split: files}, split=split, streaming=True, **extra, **load_kwargs)
    else:
        dataset = load_dataset(dataset_name, dataset_config, split=split, streaming=True, **load_kwargs)

    features = dataset.features or {}
    if is_prepared(features) and audio_column in (None, PREPARED_AUDIO_COLUMN):
        dataset = dataset.select_columns([PREPARED_AUDIO_COLUMN, PREPARED_KEY_COLUMN, "num_samples"])
        return keep_audio_undecoded(dataset, PREPARED_AUDIO_COLUMN), PREPARED_AUDIO_COLUMN
    if audio_column is None:
        audio_columns = [name for name, feature in features.items() if isinstance(feature, Audio)]
        if "audio" in features:
            audio_column = "audio"
        elif len(audio_columns) == 1:
            audio_column = audio_columns[0]
            logger.info("Using audio column %r (the only Audio column of the corpus)", audio_column)
        else:
            raise ValueError(
                f"Cannot tell which column holds the audio among {list(features)}; pass it with audio_column "
                "(--audio_column in the scripts)."
            )
    elif features and audio_column not in features:
        raise ValueError(
            f"Audio column {audio_column!r} is not in the corpus, whose columns are {list(features)}; pass the right "
            "one with audio_column (--audio_column in the scripts)."
        )
    dataset = dataset.select_columns([audio_column]) if features else dataset
    return keep_audio_undecoded(dataset, audio_column), audio_column


# ----------------------------------------------------------------------------------------------------------------
# The crop stream (a torch IterableDataset around the datasets stream)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class StreamCounters:
    """What one stream (one process or one DataLoader worker, in one epoch) did with the clips it read."""

    num_read: int = 0  # raw examples read from the corpus
    num_yielded: int = 0  # crops produced
    num_corrupted: int = 0  # unreadable / empty / non-finite clips, skipped (bad_audio="skip")
    num_too_short: int = 0  # clips shorter than the crop, dropped (min_clip_policy="drop")
    num_padded: int = 0  # clips shorter than the crop, zero-padded (min_clip_policy="pad")


COUNTER_FIELDS = tuple(f.name for f in fields(StreamCounters))


class DecodedClipCache:
    """Whole clips decoded once (mono float32 at the target rate) and kept in memory up to `max_bytes`, so that a small
    corpus read for many epochs is decoded once instead of every epoch (for short steps, as the demo's, decoding is a
    large share of the step). Clips are added until the budget is full, never evicted; the crops taken from
    them are those of the file (`audio_io.crop_decoded`). It lives in the process that iterates the stream, so it only
    helps with `num_workers=0` (DataLoader workers are started again, with an empty cache, every epoch)."""

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"The decoded-clip cache needs a positive size in bytes, got {max_bytes}.")
        self.max_bytes = int(max_bytes)
        self.num_bytes = 0
        self.full = False  # a clip did not fit: later clips are not decoded whole any more
        self._clips: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._clips)

    def get(self, key: str) -> np.ndarray | None:
        return self._clips.get(key)

    def put(self, key: str, waveform: np.ndarray):
        if self.num_bytes + waveform.nbytes > self.max_bytes:
            self.full = True
            logger.info(
                "Decoded-clip cache full at %d clips (%.0f MB): later clips are decoded crop by crop",
                len(self._clips),
                self.num_bytes / 2**20,
            )
            return
        self._clips[key] = waveform
        self.num_bytes += waveform.nbytes


def _row_bytes(table, audio_column: str) -> memoryview:
    """The audio bytes of a one-row Arrow table (an `Audio` column stored undecoded), as a view of Arrow's buffer (no
    copy; empty for a null row)."""
    import pyarrow as pa

    binary = table.column(audio_column).chunk(0).flatten()[0]  # the struct's `bytes` field, the row's offset kept
    if binary.null_count:
        return memoryview(b"")
    _, offsets, data = binary.buffers()
    offset_type = np.int64 if pa.types.is_large_binary(binary.type) else np.int32
    start, end = np.frombuffer(offsets, offset_type, 2, binary.offset * np.dtype(offset_type).itemsize)
    return memoryview(data)[start:end]


class MatpacCropStream(torch.utils.data.IterableDataset):
    """Turns a streaming corpus (undecoded audio column) into random fixed-length waveform crops.

    Each item is `{"input_values": float32 array (crop_samples,), "num_valid_samples": int, "example_id": str}`;
    `num_valid_samples < crop_samples` only for a zero-padded short clip (`min_clip_policy="pad"`). From an int16
    prepared corpus `input_values` is the int16 PCM of the crop (half the bytes through the DataLoader and to the
    device): `waveforms_on_device` converts batches exactly (`audio_io.pcm_to_float32`).

    Works as the dataset of a `DataLoader` with workers: `datasets` gives each worker its own shards, and
    `state_dict()` / `load_state_dict()` (the `datasets` stream position plus the counters) make it usable with
    `torchdata`'s `StatefulDataLoader`. When `shared_counters` (a shared-memory int64 tensor, one row per stream) is
    set, each stream also writes its counters into its row after every clip, where the training process reads them.

    Args:
        dataset: a `datasets.IterableDataset` (already shuffled / split by node as wanted) from `load_audio_stream`.
        audio_column: name of its audio column.
        crop_frames: crop length in log-mel frames (608 = 97 520 samples at 16 kHz).
        min_clip_policy: `"drop"` (official) skips clips shorter than the crop; `"pad"` zero-pads them at the end.
        seed: seed of the crop positions (each crop is a function of `(seed, epoch, clip identity)`).
        bad_audio: `"skip"` (skip and count unreadable clips, the default for pretraining corpora) or `"error"`.
        cache_bytes: when > 0, keep up to this many bytes of decoded clips in memory (`DecodedClipCache`; for
            corpora read for many epochs with `num_workers=0`). A cached clip is checked for non-finite samples as a
            whole, an uncached crop only under the crop.
        augmentation: an `augmentation.PretrainingAugmentation` (off when None, the official run): `PretrainingDataLoop`
            then collates with its `collate`, which augments each batch in the DataLoader workers; the items carry
            their `epoch` for it.
    """

    def __init__(
        self,
        dataset,
        audio_column: str = "audio",
        crop_frames: int = CROP_FRAMES,
        min_clip_policy: str = "drop",
        seed: int = 0,
        bad_audio: str = "skip",
        sampling_rate: int = SAMPLING_RATE,
        cache_bytes: int = 0,
        augmentation=None,
    ):
        super().__init__()
        if crop_frames < 1:
            raise ValueError(f"crop_frames must be >= 1, got {crop_frames}.")
        self.prepared = is_prepared(getattr(dataset, "features", None))  # crops by slicing the stored samples
        # A prepared corpus is read as one-row Arrow tables: each clip's samples stay in Arrow's buffers (sliced in
        # place) instead of being copied into a Python bytes object per row.
        self.dataset = dataset.with_format("arrow") if self.prepared else dataset
        self.audio_column = audio_column
        self.crop_frames = crop_frames
        self.crop_samples = num_samples_for_frames(crop_frames)
        self.min_clip_policy = check_min_clip_policy(min_clip_policy)
        self.seed = seed
        self.bad_audio = check_bad_audio_policy(bad_audio)
        self.sampling_rate = sampling_rate
        self.cache = DecodedClipCache(cache_bytes) if cache_bytes > 0 else None
        self.augmentation = augmentation
        self.counters = StreamCounters()
        self.shared_counters: torch.Tensor | None = None  # (num_streams, len(COUNTER_FIELDS)), set by the loop
        self.first_epoch: int | None = None  # unreadable clips are logged in this epoch only, counted in every one

    @property
    def epoch(self) -> int:
        return int(self.dataset.epoch)

    def set_epoch(self, epoch: int):
        """Sets the epoch (shuffle order of `datasets` and crop positions) and resets the per-epoch counters."""
        self.dataset.set_epoch(epoch)
        self.first_epoch = epoch if self.first_epoch is None else self.first_epoch
        self.counters = StreamCounters()
        if self.shared_counters is not None:
            self.shared_counters.zero_()

    def state_dict(self) -> dict:
        return {"dataset": self.dataset.state_dict(), "counters": asdict(self.counters)}

    def load_state_dict(self, state_dict: dict):
        self.dataset.load_state_dict(state_dict["dataset"])
        self.counters = StreamCounters(**state_dict["counters"])

    def _publish(self, row: int):
        if self.shared_counters is not None:  # a numpy view and getattr: torch.tensor or astuple per clip cost more
            counters = self.counters
            self.shared_counters.numpy()[row] = [getattr(counters, name) for name in COUNTER_FIELDS]

    def _warn_if_most_clips_are_dropped(self):
        counters = self.counters
        lost = counters.num_too_short + counters.num_corrupted
        if lost * 2 > counters.num_read:
            crop_seconds = self.crop_samples / self.sampling_rate
            logger.warning(
                "%d of the first %d clips were dropped: %d shorter than the %d-frame crop (%.2f s) and %d unreadable. "
                "For a corpus of short clips use --min_clip_policy pad (zero-pads them; the padded patches are left "
                "out of the losses) and/or a shorter --crop_frames (a multiple of 16).",
                lost,
                counters.num_read,
                counters.num_too_short,
                self.crop_frames,
                crop_seconds,
                counters.num_corrupted,
            )

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        row = worker.id if worker is not None else 0
        epoch = self.epoch
        where = f", worker {row}" if worker is not None else ""
        policy = BadAudioPolicy(  # counts restart each epoch; each file is logged once per run (its first epoch)
            self.bad_audio, scope=f"so far in epoch {epoch}{where}", log=self.first_epoch in (None, epoch)
        )
        for example in self.dataset:
            self.counters.num_read += 1
            item = self._crop(example, epoch, policy)
            self._publish(row)
            if self.counters.num_read == EARLY_DROP_WARNING_CLIPS and epoch == 0:
                self._warn_if_most_clips_are_dropped()
            if item is not None:
                yield item

    def _crop(self, example, epoch: int, policy: BadAudioPolicy) -> dict | None:
        """The item of one clip (a dict, or a one-row Arrow table from a prepared corpus), or None (dropped as too
        short, or unreadable and skipped); updates the counters."""
        counters = self.counters
        try:
            if self.prepared:  # a one-row Arrow table: the stored samples of the clip, a view of Arrow's buffer
                key = example.column(PREPARED_KEY_COLUMN)[0].as_py()
                waveform = pcm_samples(_row_bytes(example, self.audio_column), key, self.sampling_rate)
            else:
                audio = example[self.audio_column]
                key = clip_key(audio)
                waveform = None  # the whole decoded clip, when the cache has it or room for it
                if self.cache is not None:
                    waveform = self.cache.get(key)
                    if waveform is None and not self.cache.full:
                        waveform = decode_audio(audio, self.sampling_rate)
                        self.cache.put(key, waveform)
            crop_kwargs = {"seed": self.seed, "epoch": epoch, "key": key, "min_clip_policy": self.min_clip_policy}
            if waveform is not None:  # a prepared int16 clip stays int16 to the training device (half the bytes)
                crop, num_valid = crop_decoded(waveform, self.crop_samples, keep_int16=self.prepared, **crop_kwargs)
            else:
                crop, num_valid = decode_random_crop(
                    audio, self.crop_samples, sampling_rate=self.sampling_rate, **crop_kwargs
                )
        except AudioDecodeError as error:
            counters.num_corrupted += 1
            policy.handle(error)  # raises with bad_audio="error"
            return None
        if crop is None:
            counters.num_too_short += 1
            return None
        counters.num_padded += int(num_valid < self.crop_samples)
        counters.num_yielded += 1
        item = {"input_values": crop, "num_valid_samples": num_valid, "example_id": key}
        if self.augmentation is not None:
            item["epoch"] = epoch
        return item


def collate_crops(examples: list[dict], out: torch.Tensor | None = None) -> dict:
    """Stacks crops into `input_values` (batch, crop_samples) (float32, or int16 from an int16 prepared corpus),
    `num_valid_samples` (batch,) int64, and keeps the ids. `input_values` is `out` when given (of that shape and
    dtype), else a new tensor: in a DataLoader worker in shared memory (as torch's `default_collate` does), so that the
    batch is written there once instead of being stacked and then copied there to be sent."""
    crops = [example["input_values"] for example in examples]
    if out is None:
        empty = torch.from_numpy(np.empty(0, dtype=crops[0].dtype))
        if torch.utils.data.get_worker_info() is not None:
            out = empty.new(empty._typed_storage()._new_shared(len(crops) * crops[0].shape[0], device="cpu"))
        else:
            out = empty.new_empty(len(crops) * crops[0].shape[0])
        out = out.view(len(crops), crops[0].shape[0])
    np.stack(crops, out=out.numpy())  # numpy reads the (read-only) views of a prepared corpus's bytes
    return {
        "input_values": out,
        "num_valid_samples": torch.tensor([example["num_valid_samples"] for example in examples], dtype=torch.int64),
        "example_ids": [example["example_id"] for example in examples],
    }


class WorkerBatchBuffers:
    """The `collate_fn` of one DataLoader with workers: each worker collates its batches into shared-memory buffers
    that it makes once and reuses (up to `buffers_per_worker`), instead of a fresh shared-memory segment per batch
    (whose first writes, page faults of a new segment, cost several times the copy of the crops).

    A buffer is reused only once the training process holds no tensor on it any more: `hand_out`, called there on
    every batch, keeps a weak reference to each batch's storage and marks the buffers of the expired ones free (in
    shared memory, where the workers read it). When none of its buffers is free, a worker collates into a fresh
    segment as before. In the training process (`num_workers=0`) it is `collate_crops`."""

    def __init__(self, num_workers: int, buffers_per_worker: int):
        self.free = torch.ones(num_workers, buffers_per_worker, dtype=torch.bool).share_memory_()
        self._buffers: list[torch.Tensor | None] = [None] * buffers_per_worker  # a worker's own, made on first use
        self._handed_out: dict[tuple[int, int], StorageWeakRef] = {}  # training process: (worker, buffer) -> batch

    def __call__(self, examples: list[dict]) -> dict:
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            return collate_crops(examples)
        free = self.free.numpy()[worker.id]
        free_buffers = np.flatnonzero(free)
        if free_buffers.size == 0:  # the training process still holds a tensor on every buffer
            batch = collate_crops(examples)
        else:
            index = int(free_buffers[0])
            shape, dtype = (len(examples), examples[0]["input_values"].shape[0]), examples[0]["input_values"].dtype
            buffer = self._buffers[index]
            if buffer is None or tuple(buffer.shape) != shape or buffer.numpy().dtype != dtype:
                buffer = self._buffers[index] = torch.from_numpy(np.empty(shape, dtype=dtype)).share_memory_()
            free[index] = False
            batch = collate_crops(examples, out=buffer)
            batch["worker_buffer"] = (worker.id, index)
        # a few bytes, sent by value: a tensor would travel as one more shared-memory segment and file descriptor
        batch["num_valid_samples"] = batch["num_valid_samples"].numpy()
        return batch

    def hand_out(self, batch: dict, copied: bool = False) -> dict:
        """In the training process, for each batch of the DataLoader: frees the buffers of the batches handed out
        before and no longer referenced, and tracks this one's (freed at once when `copied`, e.g. by `pin_memory`)."""
        for where, storage in list(self._handed_out.items()):
            if storage.expired():
                del self._handed_out[where]
                self.free[where] = True
        batch["num_valid_samples"] = torch.from_numpy(batch["num_valid_samples"])
        where = batch.pop("worker_buffer", None)
        if where is not None:
            if copied:
                self.free[where] = True
            else:
                self._handed_out[where] = StorageWeakRef(batch["input_values"].untyped_storage())
        return batch


def waveforms_on_device(batch: dict, device, key: str = "input_values") -> torch.Tensor:
    """`batch[key]` (the crops, or the teacher's view of them, `"teacher_input_values"`) on `device` (non-blocking) as
    float32 `(batch, samples)`; int16 PCM crops are converted there, exactly (`audio_io.pcm_to_float32`)."""
    return pcm_to_float32(batch[key].to(device, non_blocking=True))


def frame_attention_mask(
    num_valid_samples: torch.Tensor, num_frames: int, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH
) -> torch.Tensor:
    """`(batch, num_frames)` int32, 1 on the log-mel frames computed from real samples only (the feature extractor's
    rule: `num_frames_for_samples` of each crop's `num_valid_samples`), 0 on the frames of the zero padding."""
    lengths = torch.tensor(
        [min(num_frames, num_frames_for_samples(int(n), n_fft, hop_length)) for n in num_valid_samples.tolist()],
        device=num_valid_samples.device,
    )
    return (torch.arange(num_frames, device=num_valid_samples.device)[None, :] < lengths[:, None]).to(torch.int32)


class StreamStats:
    """Totals of the stream counters over all epochs and streams (the training process's or each DataLoader worker's),
    seen from the training process: the latest counters of every (epoch, stream) are kept, the totals are their sums.
    """

    fields = COUNTER_FIELDS

    def __init__(self):
        self.latest: dict[str, tuple[int, ...]] = {}

    def update(self, epoch: int, shared_counters: torch.Tensor):
        for row, values in enumerate(shared_counters.tolist()):
            if any(values):
                self.latest[f"{epoch}:{row}"] = tuple(values)

    def _sums(self, rows: list[tuple[int, ...]]) -> dict[str, int]:
        return dict(zip(self.fields, (sum(values[i] for values in rows) for i in range(len(self.fields)))))

    def totals(self) -> dict[str, int]:
        return self._sums(list(self.latest.values()))

    def epoch_totals(self, epoch: int) -> dict[str, int]:
        return self._sums([values for key, values in self.latest.items() if key.split(":")[0] == str(epoch)])

    def state_dict(self) -> dict:
        return {"latest": {key: list(values) for key, values in self.latest.items()}}

    def load_state_dict(self, state_dict: dict):
        self.latest = {key: tuple(values) for key, values in state_dict["latest"].items()}


# ----------------------------------------------------------------------------------------------------------------
# Endless, resumable batches over epochs
# ----------------------------------------------------------------------------------------------------------------


def stateful_dataloader_class():
    """`torchdata.stateful_dataloader.StatefulDataLoader` when torchdata is installed, else `None`."""
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError:
        return None
    return StatefulDataLoader


class PretrainingDataLoop:
    """Endless iterator of crop batches: loops over epochs (calling `set_epoch`), with a resumable `state_dict`.

    Resuming is exact (the batches after a resume equal the uninterrupted ones) when there is no shuffle buffer and
    either torchdata's `StatefulDataLoader` is installed (any `num_workers`: it gathers every worker's stream position)
    or `num_workers=0` (the stream position is read in the training process, and nothing is prefetched). With a shuffle
    buffer, `datasets` does not save the buffer's content: the resumed stream goes on from the saved position with a
    fresh buffer. With workers but without torchdata, a resume restarts the saved epoch from its beginning (a warning
    says so).

    Args:
        stream: the `MatpacCropStream`.
        batch_size: crops per batch (per process). Incomplete last batches of an epoch are dropped.
        num_workers: DataLoader worker processes decoding in parallel (each gets its own shards of the corpus; more
            workers than shards leaves the extra ones idle).
        worker_init_fn: passed to the DataLoader (e.g. to set the workers' thread counts).
    """

    def __init__(
        self,
        stream: MatpacCropStream,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        worker_init_fn=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
        self.stream = stream
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.worker_init_fn = worker_init_fn
        self.loader_class = stateful_dataloader_class()
        self.epoch = 0
        self.batches_in_epoch = 0
        self.stats = StreamStats()
        stream.shared_counters = torch.zeros(max(1, num_workers), len(COUNTER_FIELDS), dtype=torch.int64)
        stream.shared_counters.share_memory_()
        self._loader = None
        self._pending_position = None
        num_shards = getattr(stream.dataset, "num_shards", None)
        if num_workers > 1 and num_shards is not None and num_shards < num_workers:
            logger.warning(
                "The corpus stream has %d shard(s) but num_workers=%d: only %d worker(s) will decode. Store the "
                "corpus as several parquet/webdataset shards to decode in parallel.",
                num_shards,
                num_workers,
                num_shards,
            )

    @property
    def exact_resume(self) -> bool:
        """Whether `state_dict` captures the stream position exactly (see the class docstring)."""
        return self.loader_class is not None or self.num_workers == 0

    def _collate_fn(self):
        """Augmentation's collate (it augments the batch in the workers) when on; else workers collate into their
        reused shared-memory buffers, and the training process collates itself."""
        if self.stream.augmentation is not None:
            return self.stream.augmentation.collate
        return WorkerBatchBuffers(self.num_workers, BATCH_BUFFERS_PER_WORKER) if self.num_workers else collate_crops

    def _build_loader(self):
        loader_class = self.loader_class or torch.utils.data.DataLoader
        kwargs = {
            "num_workers": self.num_workers,
            "collate_fn": self._collate_fn(),
            "pin_memory": self.pin_memory,
            "drop_last": True,
            "batch_size": self.batch_size,
            "worker_init_fn": self.worker_init_fn,
        }
        if self.num_workers > 0:
            kwargs["persistent_workers"] = False
        with warnings.catch_warnings():  # torchdata 0.11 calls a torch API deprecated in recent torch, once per loader
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
            return loader_class(self.stream, **kwargs)

    def __iter__(self) -> Iterator[dict]:
        while True:
            self.stream.set_epoch(self.epoch)
            loader = self._build_loader()
            if self._pending_position is not None:
                if self.loader_class is not None:
                    loader.load_state_dict(self._pending_position)
                else:
                    self.stream.load_state_dict(self._pending_position)
                self._pending_position = None
            self._loader = loader
            produced = False
            collate = loader.collate_fn
            for batch in loader:
                if isinstance(collate, WorkerBatchBuffers):
                    batch = collate.hand_out(batch, copied=self.pin_memory)
                produced = True
                self.batches_in_epoch += 1
                self.stats.update(self.epoch, self.stream.shared_counters)
                yield batch
            self.stats.update(self.epoch, self.stream.shared_counters)  # clips read after the epoch's last batch
            if not produced and self.batches_in_epoch == 0:
                counts = self.stats.epoch_totals(self.epoch)
                raise ValueError(
                    f"Epoch {self.epoch} of the corpus gave no full batch of {self.batch_size} crops: of "
                    f"{counts['num_read']} clips read, {counts['num_too_short']} were shorter than the "
                    f"{self.stream.crop_frames}-frame crop ({self.stream.crop_samples / self.stream.sampling_rate:.2f}"
                    f" s) and dropped, {counts['num_corrupted']} unreadable, {counts['num_yielded']} cropped "
                    f"(counts of this process; all epochs: {self.stats.totals()}). Use --min_clip_policy pad for "
                    "short clips (or a shorter --crop_frames), a smaller batch, or more data."
                )
            self.epoch += 1
            self.batches_in_epoch = 0

    def state_dict(self) -> dict:
        """Epoch, batches delivered in it, the stream position (when exact) and the stream statistics."""
        if self.loader_class is not None:
            position = self._loader.state_dict() if self._loader is not None else None
        elif self.num_workers == 0:
            position = self.stream.state_dict()
        else:
            position = None
        return {
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "position": position,
            "position_kind": "stateful_dataloader" if self.loader_class is not None else "stream",
            "stats": self.stats.state_dict(),
        }

    def load_state_dict(self, state_dict: dict):
        """Restores the loop; iteration then continues from the saved position."""
        self.epoch = int(state_dict["epoch"])
        self.batches_in_epoch = int(state_dict["batches_in_epoch"])
        self.stats.load_state_dict(state_dict["stats"])
        position = state_dict.get("position")
        kind = state_dict.get("position_kind")
        expected_kind = "stateful_dataloader" if self.loader_class is not None else "stream"
        if position is not None and kind != expected_kind:
            logger.warning(
                "The checkpoint's stream position was saved with a %s but this run uses a %s; restarting epoch %d "
                "from its beginning.",
                kind,
                expected_kind,
                self.epoch,
            )
            position = None
        if position is None and self.batches_in_epoch > 0:
            logger.warning(
                "No exact stream position in the checkpoint (DataLoader workers without torchdata): epoch %d restarts "
                "from its beginning. Install torchdata or use num_workers=0 for an exact resume.",
                self.epoch,
            )
            self.batches_in_epoch = 0
        self._pending_position = position


def build_crop_stream(
    dataset,
    audio_column: str,
    *,
    seed: int = 0,
    shuffle_buffer_size: int = 0,
    rank: int = 0,
    world_size: int = 1,
    crop_frames: int = CROP_FRAMES,
    min_clip_policy: str = "drop",
    bad_audio: str = "skip",
    cache_bytes: int = 0,
    augmentation=None,
) -> MatpacCropStream:
    """Shuffles (seeded, same seed on every process), splits by process and wraps the corpus into crops.

    `shuffle_buffer_size=0` disables the buffer shuffle (`datasets` still visits the shards in a new order each
    epoch > 0).
    """
    from datasets.distributed import split_dataset_by_node

    if shuffle_buffer_size < 0:
        raise ValueError(f"shuffle_buffer_size must be >= 0 (0 disables shuffling), got {shuffle_buffer_size}.")
    if shuffle_buffer_size > 0:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return MatpacCropStream(
        dataset,
        audio_column,
        crop_frames=crop_frames,
        min_clip_policy=min_clip_policy,
        seed=seed,
        bad_audio=bad_audio,
        cache_bytes=cache_bytes,
        augmentation=augmentation,
    )


__all__ = [
    "CROP_FRAMES",
    "DecodedClipCache",
    "EARLY_DROP_WARNING_CLIPS",
    "MatpacCropStream",
    "PretrainingDataLoop",
    "StreamCounters",
    "StreamStats",
    "WorkerBatchBuffers",
    "build_crop_stream",
    "collate_crops",
    "frame_attention_mask",
    "load_audio_stream",
    "stateful_dataloader_class",
    "waveforms_on_device",
]
