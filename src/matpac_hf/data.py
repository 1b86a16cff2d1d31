# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Streaming pretraining data: an audio corpus loaded with `datasets` -> batches of random 6.08 s waveform crops.

The pipeline (method spec, sections 1 and 5):

1. `load_audio_stream` always loads the corpus with `datasets.load_dataset(..., streaming=True)` (a Hub dataset id, a
   local `audiofolder` directory, parquet shards or webdataset tars) and keeps the audio column *undecoded*
   (`Audio(decode=False)`, or the raw path / bytes when `torchcodec` is absent).
2. `MatpacCropStream` decodes each clip with soundfile in a guarded step (an unreadable clip is skipped and counted,
   never kills the iterator), down-mixes to mono (mean of the channels), resamples to 16 kHz with soxr and takes a
   uniformly random crop of `CROP_SAMPLES` = 97 520 samples (608 log-mel frames). Clips shorter than the crop are
   dropped (official) or zero-padded at the end. Only the samples of the crop (plus a small margin for the resampling
   filter) are decoded and resampled.
3. `PretrainingDataLoop` batches the crops with a (stateful) DataLoader and loops over epochs (`set_epoch`), with a
   `state_dict` that resumes the stream exactly (see its docstring for when "exactly" holds).

The crop position of a clip is a pure function of `(seed, epoch, clip identity)`, never of a running random generator,
so resumed runs draw the same crops as uninterrupted ones and every process, worker or shuffle order draws the same
crop for the same clip in the same epoch. The log-mel is *not* computed here: the training step computes it on the
training device with `MatpacFeatureExtractor.extract_log_mel`.

`build_demo_corpus` writes a small synthetic corpus (an unlabelled `audiofolder` for pretraining and a labelled one
for a linear probe) so that the example script and the tests run without any download.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch


logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000
WIN_LENGTH = 400
HOP_LENGTH = 160
CROP_FRAMES = 608


def num_samples_for_frames(num_frames: int, win_length: int = WIN_LENGTH, hop_length: int = HOP_LENGTH) -> int:
    """Samples needed for `num_frames` STFT frames without centre padding: `win_length + (num_frames - 1) * hop`."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    return win_length + (num_frames - 1) * hop_length


CROP_SAMPLES = num_samples_for_frames(CROP_FRAMES)  # 97 520 samples = 608 frames = 6.095 s at 16 kHz

MIN_CLIP_POLICIES = ("drop", "pad")
AUDIO_FILE_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3", ".opus", ".aiff", ".aif")


class AudioDecodeError(RuntimeError):
    """A clip could not be read or holds no usable audio (raised inside the guarded decode step, then counted)."""


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


def _keep_audio_undecoded(dataset, audio_column: str):
    """Casts `audio_column` so that iteration yields the raw `{"bytes", "path"}` (or path / bytes), never decoded
    audio.

    `Audio(decode=False)` is the documented way. In `datasets` >= 4, however, *encoding* an `Audio` value (which the
    python-generator builders such as `audiofolder` and `webdataset` do for every example) imports `torchcodec`; when
    it is not installed, those builders' raw values (a path string, bytes or a dict) are passed through untouched by
    declaring the column as `Value("binary")` instead. Arrow-backed builders (parquet, Hub datasets converted to
    parquet) never encode, so `Audio(decode=False)` works for them.
    """
    from datasets import Audio, Value

    undecoded = dataset.cast_column(audio_column, Audio(decode=False))
    try:
        import datasets.config

        if datasets.config.TORCHCODEC_AVAILABLE:
            return undecoded
    except (ImportError, AttributeError):
        pass
    try:
        next(iter(undecoded.take(1)))
        return undecoded
    except StopIteration:
        return undecoded
    except ImportError as error:
        if "torchcodec" not in str(error):
            raise
        logger.info("torchcodec is not installed: streaming column %r as raw path/bytes", audio_column)
        return dataset.cast_column(audio_column, Value("binary"))


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
    `audiofolder` directory; metadata and labels are not loaded) or `data_files` (a glob or list of parquet shards,
    webdataset tars or audio files) must be given.

    Args:
        audio_column: name of the audio column. `None` picks `"audio"` if present, else the only `Audio` column
            (webdataset names columns after the file extension, e.g. `"flac"`); it is an error when that is ambiguous.

    Returns:
        `(dataset, audio_column)`: the `IterableDataset` and the resolved audio column name.
    """
    from datasets import Audio, load_dataset

    given = [
        name
        for name, value in (("dataset_name", dataset_name), ("dataset_dir", dataset_dir), ("data_files", data_files))
        if value
    ]
    if len(given) != 1:
        raise ValueError(
            f"Give exactly one corpus source among dataset_name, dataset_dir and data_files (got {given or 'none'})."
        )
    if dataset_dir is not None:
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
    return _keep_audio_undecoded(dataset, audio_column), audio_column


# ----------------------------------------------------------------------------------------------------------------
# Guarded decoding and random cropping
# ----------------------------------------------------------------------------------------------------------------


def _audio_source(audio: Any) -> tuple[Any, str]:
    """What soundfile should open for one raw audio value, and a readable name for it (for logs and ids)."""
    if isinstance(audio, dict):
        data, path = audio.get("bytes"), audio.get("path")
        if data:
            return io.BytesIO(data), path or "<bytes>"
        audio = path
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(audio)), "<bytes>"
    if isinstance(audio, str) and audio:
        if os.path.exists(audio) or "://" not in audio:
            return audio, audio
        from datasets.utils.file_utils import xopen  # remote path (hf://, https://, ...) in a streaming dataset

        return xopen(audio, "rb"), audio
    raise AudioDecodeError(f"no audio bytes nor path in value of type {type(audio).__name__}")


def clip_key(audio: Any) -> str:
    """A stable identity of a clip: its path, plus a digest of its bytes when it carries bytes."""
    data = audio.get("bytes") if isinstance(audio, dict) else audio if isinstance(audio, (bytes, bytearray)) else None
    path = audio.get("path") if isinstance(audio, dict) else audio if isinstance(audio, str) else None
    if data:
        digest = hashlib.blake2b(bytes(data[:65536]) + len(data).to_bytes(8, "little"), digest_size=8).hexdigest()
        return f"{os.path.basename(path)}#{digest}" if path else digest
    return str(path)


def crop_offset(num_samples: int, crop_samples: int, seed: int, epoch: int, key: str) -> int:
    """Start of the random crop for one clip: uniform over `[0, num_samples - crop_samples]`, a pure function of
    `(seed, epoch, key)` (so resuming, re-sharding or re-ordering never changes which crop a clip gets)."""
    num_positions = num_samples - crop_samples + 1
    if num_positions <= 1:
        return 0
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_positions


def resampled_length(num_samples: int, orig_sr: int, target_sr: int = SAMPLING_RATE) -> int:
    """Length soxr gives when resampling `num_samples` samples from `orig_sr` to `target_sr` (rounded)."""
    if orig_sr == target_sr:
        return num_samples
    return int(math.floor(num_samples * target_sr / orig_sr + 0.5))


def _to_mono(frames: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (samples,) float32, mean of the channels.

    Computed as a matrix-vector product: numpy's `mean(axis=1)` over 2 channels is ~30x slower (it reduces along the
    short, strided axis), which made the down-mix cost more than the resampling."""
    if frames.shape[1] == 1:
        return np.ascontiguousarray(frames[:, 0], dtype=np.float32)
    weights = np.full(frames.shape[1], 1.0 / frames.shape[1], dtype=np.float32)
    return np.ascontiguousarray(frames.astype(np.float32, copy=False) @ weights)


def decode_audio(audio: Any, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Decodes a whole clip to a mono float32 waveform at `sampling_rate` (raises `AudioDecodeError` on failure)."""
    source, name = _audio_source(audio)
    try:
        waveform, orig_sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile raises several types; all mean "unreadable"
        raise AudioDecodeError(f"{name}: {type(error).__name__}: {error}") from error
    if waveform.shape[0] == 0:
        raise AudioDecodeError(f"{name}: the file holds no samples")
    mono = _to_mono(waveform)
    if orig_sr != sampling_rate:
        mono = soxr.resample(mono, orig_sr, sampling_rate, quality="HQ").astype(np.float32, copy=False)
    return mono


# Source samples decoded on each side of a crop before resampling, so that the resampling filter's edge effects fall
# outside the crop (soxr "HQ" has a support of a few dozen samples at these rates).
_RESAMPLE_MARGIN_SECONDS = 0.01


def decode_random_crop(
    audio: Any,
    crop_samples: int = CROP_SAMPLES,
    *,
    seed: int = 0,
    epoch: int = 0,
    key: str | None = None,
    min_clip_policy: str = "drop",
    sampling_rate: int = SAMPLING_RATE,
    timings: dict | None = None,
) -> tuple[np.ndarray | None, bool]:
    """Decodes one random `crop_samples` crop of a clip, as mono float32 at `sampling_rate`.

    Only the samples under the crop (plus a small margin for the resampling filter) are decoded and resampled; the
    result equals cropping the fully decoded and resampled clip up to the filter's rounding (well below 1e-3).

    Returns:
        `(crop, padded)`: `crop` is `None` when the clip is shorter than the crop and `min_clip_policy="drop"`;
        `padded` tells that the clip was shorter and was zero-padded at the end (`min_clip_policy="pad"`).

    Raises:
        AudioDecodeError: the clip cannot be read, is empty or holds non-finite samples.
    """
    import time

    key = clip_key(audio) if key is None else key
    source, name = _audio_source(audio)
    clock = time.perf_counter
    start = clock()
    try:
        with sf.SoundFile(source) as sound_file:
            orig_sr, num_frames = sound_file.samplerate, sound_file.frames
            num_samples = resampled_length(num_frames, orig_sr, sampling_rate)
            if num_frames <= 0:
                raise AudioDecodeError(f"{name}: the file holds no samples")
            if num_samples < crop_samples:
                if min_clip_policy == "drop":
                    return None, False
                segment = sound_file.read(dtype="float32", always_2d=True)
                offset, first_output_sample, segment_start = 0, 0, 0
            elif orig_sr == sampling_rate:
                offset = crop_offset(num_samples, crop_samples, seed, epoch, key)
                sound_file.seek(offset)
                segment = sound_file.read(crop_samples, dtype="float32", always_2d=True)
                first_output_sample = offset
            else:
                offset = crop_offset(num_samples, crop_samples, seed, epoch, key)
                # Align the segment start on a sample shared by both rates so the crop lands on the same output grid
                # as a resampling of the whole clip (44.1 kHz -> 16 kHz: every 441 input = 160 output samples).
                step = orig_sr // math.gcd(orig_sr, sampling_rate)
                margin = int(_RESAMPLE_MARGIN_SECONDS * orig_sr)
                segment_start = max(0, int(offset * orig_sr / sampling_rate) - margin) // step * step
                segment_stop = int(math.ceil((offset + crop_samples) * orig_sr / sampling_rate)) + margin
                segment_stop = min(num_frames, segment_stop)
                sound_file.seek(segment_start)
                segment = sound_file.read(segment_stop - segment_start, dtype="float32", always_2d=True)
                first_output_sample = segment_start * sampling_rate // orig_sr
    except AudioDecodeError:
        raise
    except Exception as error:  # libsndfile raises several types; all mean "unreadable"
        raise AudioDecodeError(f"{name}: {type(error).__name__}: {error}") from error
    decoded = clock()
    if segment.shape[0] == 0:
        raise AudioDecodeError(f"{name}: the file holds no samples")
    mono = _to_mono(segment)
    downmixed = clock()
    if orig_sr != sampling_rate:
        mono = soxr.resample(mono, orig_sr, sampling_rate, quality="HQ")
    resampled = clock()
    local = offset - first_output_sample
    crop = mono[local : local + crop_samples]
    padded = crop.shape[0] < crop_samples
    if padded:
        if num_samples >= crop_samples and crop_samples - crop.shape[0] > 2:
            raise AudioDecodeError(
                f"{name}: the file declares {num_frames} frames but only {segment.shape[0]} could be read (truncated?)"
            )
        crop = np.pad(crop, (0, crop_samples - crop.shape[0]))
    crop = np.ascontiguousarray(crop, dtype=np.float32)
    if not np.isfinite(crop).all():
        raise AudioDecodeError(f"{name}: non-finite samples (NaN or inf)")
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + decoded - start
        timings["down-mix"] = timings.get("down-mix", 0.0) + downmixed - decoded
        timings["resample"] = timings.get("resample", 0.0) + resampled - downmixed
        timings["crop"] = timings.get("crop", 0.0) + clock() - resampled
    return crop, padded and num_samples < crop_samples


# ----------------------------------------------------------------------------------------------------------------
# The crop stream (a torch IterableDataset around the datasets stream)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class StreamCounters:
    """What one stream (one process or one DataLoader worker, in one epoch) did with the clips it read."""

    num_read: int = 0  # raw examples read from the corpus
    num_yielded: int = 0  # crops produced
    num_corrupted: int = 0  # unreadable / empty / non-finite clips, skipped
    num_too_short: int = 0  # clips shorter than the crop, dropped (min_clip_policy="drop")
    num_padded: int = 0  # clips shorter than the crop, zero-padded (min_clip_policy="pad")


class MatpacCropStream(torch.utils.data.IterableDataset):
    """Turns a streaming corpus (undecoded audio column) into random fixed-length waveform crops.

    Each item is `{"input_values": float32 array (crop_samples,), "example_id": str, "stream_counters": tuple}`.
    A clip that cannot be decoded is skipped, counted in `counters.num_corrupted` and logged; iteration goes on.

    Works as the dataset of a `DataLoader` with workers: `datasets` gives each worker its own shards, and
    `state_dict()` / `load_state_dict()` (the `datasets` stream position plus the counters) make it usable with
    `torchdata`'s `StatefulDataLoader`.

    Args:
        dataset: a `datasets.IterableDataset` (already shuffled / split by node as wanted) from `load_audio_stream`.
        audio_column: name of its audio column.
        crop_samples: crop length in samples at 16 kHz (97 520 = 608 frames).
        min_clip_policy: `"drop"` (official) skips clips shorter than the crop; `"pad"` zero-pads them at the end.
        seed: seed of the crop positions (each crop is a function of `(seed, epoch, clip identity)`).
    """

    _max_logged_errors = 20

    def __init__(
        self,
        dataset,
        audio_column: str = "audio",
        crop_samples: int = CROP_SAMPLES,
        min_clip_policy: str = "drop",
        seed: int = 0,
        sampling_rate: int = SAMPLING_RATE,
    ):
        super().__init__()
        if min_clip_policy not in MIN_CLIP_POLICIES:
            raise ValueError(f"min_clip_policy must be one of {MIN_CLIP_POLICIES}, got {min_clip_policy!r}.")
        if crop_samples < WIN_LENGTH:
            raise ValueError(f"crop_samples must be at least one STFT window ({WIN_LENGTH}), got {crop_samples}.")
        self.dataset = dataset
        self.audio_column = audio_column
        self.crop_samples = crop_samples
        self.min_clip_policy = min_clip_policy
        self.seed = seed
        self.sampling_rate = sampling_rate
        self.counters = StreamCounters()
        self.timings: dict | None = None  # set to {} to accumulate decode / resample / crop seconds (benchmarks)

    @property
    def epoch(self) -> int:
        return int(self.dataset.epoch)

    def set_epoch(self, epoch: int):
        """Sets the epoch (shuffle order of `datasets` and crop positions) and resets the per-epoch counters."""
        self.dataset.set_epoch(epoch)
        self.counters = StreamCounters()

    def state_dict(self) -> dict:
        return {"dataset": self.dataset.state_dict(), "counters": asdict(self.counters)}

    def load_state_dict(self, state_dict: dict):
        self.dataset.load_state_dict(state_dict["dataset"])
        self.counters = StreamCounters(**state_dict["counters"])

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else -1
        epoch = self.epoch
        counters = self.counters
        for example in self.dataset:
            counters.num_read += 1
            audio = example[self.audio_column]
            try:
                key = clip_key(audio)
                crop, padded = decode_random_crop(
                    audio,
                    self.crop_samples,
                    seed=self.seed,
                    epoch=epoch,
                    key=key,
                    min_clip_policy=self.min_clip_policy,
                    sampling_rate=self.sampling_rate,
                    timings=self.timings,
                )
            except AudioDecodeError as error:
                counters.num_corrupted += 1
                if counters.num_corrupted <= self._max_logged_errors or counters.num_corrupted % 1000 == 0:
                    logger.warning(
                        "Skipping unreadable clip (%d so far in this stream): %s", counters.num_corrupted, error
                    )
                continue
            if crop is None:
                counters.num_too_short += 1
                continue
            counters.num_padded += int(padded)
            counters.num_yielded += 1
            yield {
                "input_values": crop,
                "example_id": key,
                "stream_counters": (epoch, worker_id, *astuple_counters(counters)),
            }


def astuple_counters(counters: StreamCounters) -> tuple[int, ...]:
    return (
        counters.num_read,
        counters.num_yielded,
        counters.num_corrupted,
        counters.num_too_short,
        counters.num_padded,
    )


def collate_crops(examples: list[dict]) -> dict:
    """Stacks crops into `input_values` (batch, crop_samples) float32 and keeps ids and the stream counters."""
    return {
        "input_values": torch.from_numpy(np.stack([example["input_values"] for example in examples])),
        "example_ids": [example["example_id"] for example in examples],
        "stream_counters": examples[-1]["stream_counters"],
    }


class StreamStats:
    """Totals of the stream counters over all epochs and DataLoader workers, seen from the training process.

    Each batch carries the cumulative counters of the (epoch, worker) stream that made it; the latest value per
    stream is kept, and the totals are their sums. Clips skipped after a worker's last batch of an epoch are counted
    only in that worker's log lines.
    """

    fields = ("num_read", "num_yielded", "num_corrupted", "num_too_short", "num_padded")

    def __init__(self):
        self.latest: dict[str, tuple[int, ...]] = {}

    def update(self, batch: dict):
        epoch, worker_id, *values = batch["stream_counters"]
        self.latest[f"{epoch}:{worker_id}"] = tuple(values)

    def totals(self) -> dict[str, int]:
        sums = [sum(values[i] for values in self.latest.values()) for i in range(len(self.fields))]
        return dict(zip(self.fields, sums))

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
    """

    def __init__(self, stream: MatpacCropStream, batch_size: int, num_workers: int = 0, pin_memory: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
        self.stream = stream
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.loader_class = stateful_dataloader_class()
        self.epoch = 0
        self.batches_in_epoch = 0
        self.stats = StreamStats()
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

    def _build_loader(self):
        loader_class = self.loader_class or torch.utils.data.DataLoader
        kwargs = {
            "num_workers": self.num_workers,
            "collate_fn": collate_crops,
            "pin_memory": self.pin_memory,
            "drop_last": True,
            "batch_size": self.batch_size,
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
            for batch in loader:
                produced = True
                self.batches_in_epoch += 1
                self.stats.update(batch)
                yield batch
            if self.num_workers == 0:  # clips skipped after the epoch's last batch are counted too
                self.stats.update({"stream_counters": (self.epoch, -1, *astuple_counters(self.stream.counters))})
            if not produced and self.batches_in_epoch == 0:
                raise ValueError(
                    f"Epoch {self.epoch} of the corpus gave no full batch of {self.batch_size} crops "
                    f"(stream totals: {self.stats.totals()}; this process's stream: {self.stream.counters}). The "
                    "corpus has too few usable clips for this batch size and number of processes, or every clip was "
                    "dropped as shorter than the crop or unreadable: use a smaller batch, more data, or "
                    "--min_clip_policy pad."
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
    crop_samples: int = CROP_SAMPLES,
    min_clip_policy: str = "drop",
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
        dataset, audio_column, crop_samples=crop_samples, min_clip_policy=min_clip_policy, seed=seed
    )


# ----------------------------------------------------------------------------------------------------------------
# Demo corpus: synthetic sounds of five kinds
# ----------------------------------------------------------------------------------------------------------------

DEMO_CLASSES = ("harmonic_tone", "chirps", "noise_bursts", "click_rhythm", "am_fm_texture")


def _envelope(num_samples: int, sampling_rate: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(num_samples)
    attack_n, release_n = max(1, int(attack * sampling_rate)), max(1, int(release * sampling_rate))
    env[:attack_n] = np.linspace(0.0, 1.0, min(attack_n, num_samples))[:num_samples]
    env[-release_n:] *= np.linspace(1.0, 0.0, min(release_n, num_samples))
    return env


def _band_filter(signal: np.ndarray, sampling_rate: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(signal.shape[0], 1.0 / sampling_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    return np.fft.irfft(spectrum, n=signal.shape[0])


def synthesize_sound(kind: str, duration: float, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One mono clip (float64 in about [-1, 1]) of the given kind with random parameters."""
    n = int(duration * sampling_rate)
    t = np.arange(n) / sampling_rate
    out = np.zeros(n)
    if kind == "harmonic_tone":  # notes of a harmonic tone with vibrato
        position = 0
        while position < n:
            note_n = min(n - position, int(rng.uniform(0.4, 1.5) * sampling_rate))
            f0 = 110.0 * 2 ** rng.uniform(0, 3)
            vibrato = 1 + rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(4, 7) * t[:note_n])
            phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sampling_rate
            slope = rng.uniform(0.7, 2.0)
            note = sum(np.sin(k * phase) / k**slope for k in range(1, int(rng.integers(3, 10))) if k * f0 < 7000)
            out[position : position + note_n] = note * _envelope(note_n, sampling_rate, 0.02, 0.1)
            position += note_n
    elif kind == "chirps":  # exponential sweeps up or down, with gaps
        position = int(rng.uniform(0, 0.3) * sampling_rate)
        while position < n:
            chirp_n = min(n - position, int(rng.uniform(0.2, 1.2) * sampling_rate))
            f_start, f_end = 200 * 2 ** rng.uniform(0, 5), 200 * 2 ** rng.uniform(0, 5)
            freq = f_start * (f_end / f_start) ** (np.arange(chirp_n) / chirp_n)
            chirp = np.sin(2 * np.pi * np.cumsum(freq) / sampling_rate)
            out[position : position + chirp_n] = chirp * _envelope(chirp_n, sampling_rate, 0.01, 0.05)
            position += chirp_n + int(rng.uniform(0.05, 0.4) * sampling_rate)
    elif kind == "noise_bursts":  # white noise bursts filtered in a random band
        for _ in range(int(rng.integers(4, 14))):
            burst_n = int(rng.uniform(0.05, 0.5) * sampling_rate)
            start = int(rng.integers(0, max(1, n - burst_n)))
            center = 300 * 2 ** rng.uniform(0, 4)
            width = 2 ** rng.uniform(0.3, 1.0)
            burst = _band_filter(rng.standard_normal(burst_n), sampling_rate, center / width, center * width)
            burst *= _envelope(burst_n, sampling_rate, 0.005, 0.05) / (np.abs(burst).max() + 1e-9)
            out[start : start + burst_n] += burst[: n - start]
    elif kind == "click_rhythm":  # click trains at a tempo, each click a decaying resonance
        period = 60.0 / rng.uniform(80, 240) / int(rng.choice([1, 2, 4]))
        resonance_hz, decay = rng.uniform(800, 5000), rng.uniform(60, 300)
        click_n = int(0.05 * sampling_rate)
        click = np.sin(2 * np.pi * resonance_hz * t[:click_n]) * np.exp(-decay * t[:click_n])
        accents = rng.uniform(0.3, 1.0, size=8)
        for i, start_time in enumerate(np.arange(rng.uniform(0, period), duration, period)):
            start = int(start_time * sampling_rate)
            stop = min(n, start + click_n)
            out[start:stop] += accents[i % 8] * click[: stop - start]
    elif kind == "am_fm_texture":  # a carrier with slow FM and faster AM, plus a detuned partial
        carrier = 300 * 2 ** rng.uniform(0, 3)
        fm = 1 + rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(0.3, 3) * t)
        am = 1 - rng.uniform(0.5, 1.0) * 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 20) * t))
        phase = 2 * np.pi * np.cumsum(carrier * fm) / sampling_rate
        out = am * (np.sin(phase) + 0.5 * np.sin(1.5 * phase + rng.uniform(0, np.pi)))
    else:
        raise ValueError(f"Unknown demo sound kind {kind!r}; expected one of {DEMO_CLASSES}.")
    out = out / (np.abs(out).max() + 1e-9) * rng.uniform(0.3, 0.8)
    noise_level = 10 ** (rng.uniform(-45, -28) / 20)
    return out + noise_level * rng.standard_normal(n)


@dataclass
class DemoCorpus:
    """Paths and facts of a corpus written by `build_demo_corpus`."""

    pretrain_dir: str  # unlabelled audiofolder for pretraining (one deliberately corrupted file included)
    probe_dir: str  # labelled audiofolder (metadata.csv: file_name,label) for the linear probe
    num_clips: int  # readable pretraining clips
    corrupted_files: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = DEMO_CLASSES


def build_demo_corpus(
    output_dir: str,
    num_clips: int = 200,
    seed: int = 0,
    num_probe_clips_per_class: int = 24,
    probe_duration: float = 3.0,
    min_duration: float = 6.5,
    max_duration: float = 10.0,
) -> DemoCorpus:
    """Writes a synthetic demo corpus of FLAC files (no download needed).

    - `output_dir/pretrain/`: `num_clips` clips of 6.5-10 s of the five `DEMO_CLASSES` kinds, mostly 16 kHz mono; about
      one in five is stereo and one in five is 44.1 kHz (exercising down-mix and resampling), plus one corrupted file
      (`clip_00000_corrupted.flac`, a FLAC header followed by garbage) that the stream must skip and count.
    - `output_dir/probe/`: `num_probe_clips_per_class` clips of `probe_duration` s per kind, 16 kHz mono, with
      `metadata.csv` (`file_name,label`): a small labelled task for a linear probe.

    The content depends only on `seed`. Existing files with the same names are overwritten.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}.")
    if not SAMPLING_RATE * min_duration >= CROP_SAMPLES:
        raise ValueError(f"min_duration must give at least one crop ({CROP_SAMPLES / SAMPLING_RATE:.3f} s).")
    rng = np.random.default_rng(seed)
    pretrain_dir, probe_dir = os.path.join(output_dir, "pretrain"), os.path.join(output_dir, "probe")
    os.makedirs(pretrain_dir, exist_ok=True)
    os.makedirs(probe_dir, exist_ok=True)
    for index in range(num_clips):
        kind = DEMO_CLASSES[index % len(DEMO_CLASSES)]
        sampling_rate = 44_100 if rng.random() < 0.2 else SAMPLING_RATE
        duration = rng.uniform(min_duration, max_duration)
        clip = synthesize_sound(kind, duration, sampling_rate, rng)
        if rng.random() < 0.2:  # stereo: the same sound with a different gain and a little decorrelated noise
            clip = np.stack([clip, 0.7 * clip + 0.01 * rng.standard_normal(clip.shape[0])], axis=1)
        sf.write(os.path.join(pretrain_dir, f"clip_{index:05d}.flac"), clip.astype(np.float32), sampling_rate)
    # Named to sort right after the first clip, so that it is read early in every epoch.
    corrupted = os.path.join(pretrain_dir, "clip_00000_corrupted.flac")
    with open(corrupted, "wb") as handle:
        handle.write(b"fLaC" + rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    with open(os.path.join(probe_dir, "metadata.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "label"])
        for index in range(num_probe_clips_per_class * len(DEMO_CLASSES)):
            kind = DEMO_CLASSES[index % len(DEMO_CLASSES)]
            clip = synthesize_sound(kind, probe_duration, SAMPLING_RATE, rng)
            file_name = f"probe_{index:05d}.flac"
            sf.write(os.path.join(probe_dir, file_name), clip.astype(np.float32), SAMPLING_RATE)
            writer.writerow([file_name, kind])
    return DemoCorpus(pretrain_dir=pretrain_dir, probe_dir=probe_dir, num_clips=num_clips, corrupted_files=[corrupted])


def load_labelled_folder(folder: str, sampling_rate: int = SAMPLING_RATE) -> tuple[list[np.ndarray], list[str]]:
    """Reads a labelled audiofolder (`metadata.csv` with `file_name,label`): mono waveforms at `sampling_rate` and
    their labels, in file order."""
    metadata = os.path.join(folder, "metadata.csv")
    if not os.path.isfile(metadata):
        raise ValueError(f"{folder!r} has no metadata.csv (columns file_name,label).")
    waveforms, labels = [], []
    with open(metadata, newline="") as handle:
        for row in csv.DictReader(handle):
            waveforms.append(decode_audio(os.path.join(folder, row["file_name"]), sampling_rate))
            labels.append(row["label"])
    return waveforms, labels


__all__ = [
    "AudioDecodeError",
    "CROP_FRAMES",
    "CROP_SAMPLES",
    "DEMO_CLASSES",
    "DemoCorpus",
    "MatpacCropStream",
    "PretrainingDataLoop",
    "SAMPLING_RATE",
    "StreamCounters",
    "StreamStats",
    "build_crop_stream",
    "build_demo_corpus",
    "clip_key",
    "collate_crops",
    "crop_offset",
    "decode_audio",
    "decode_random_crop",
    "load_audio_stream",
    "load_labelled_folder",
    "num_samples_for_frames",
    "stateful_dataloader_class",
    "synthesize_sound",
]
