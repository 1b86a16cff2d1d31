# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""A pretraining corpus decoded once: 16 kHz mono PCM in parquet shards that `datasets` reads, streams, shards and
publishes natively, and that the pretraining stream crops by slicing (no decoding, no resampling).

```
python -m matpac_hf.prepare_corpus --dataset_dir /data/audioset_flac --output_dir /data/audioset_16k --num_proc 16
python examples/run_pretraining.py --dataset_dir /data/audioset_16k ...   # or accelerate launch ...
```

Layout of `output_dir` (the Hub's parquet layout, so `load_dataset(output_dir)`, `load_dataset("parquet", ...)` and
`DatasetDict.push_to_hub` / `huggingface_hub.upload_folder` all work on it):

* `data/train-00000-of-00064.parquet`, ...: one row per clip, columns `audio` (an `Audio(sampling_rate=16000)` value:
  `{"bytes": a mono WAV file, "path": the source file's name}`), `clip_key` (the source clip's identity: the crop
  positions are a function of it, so a prepared corpus gives the crops of its source), `num_samples` and `duration`
  (seconds; the short-clip policy of the training run applies to them as to the source);
* `prepared_corpus.json`: the provenance (source, settings, clip counts, audio hours, bytes, skipped files, time);
* `README.md`: a dataset card whose YAML `configs` point `datasets` at the shards;
* `.prepare/`: per-shard counts and the settings, kept so that an interrupted run resumes.

Stored form: 16-bit PCM by default (`--sample_format int16`: 115.2 MB per audio hour; a 16-bit 16 kHz mono source is
stored exactly), or 32-bit float (`float32`: exact for any source decoded at 16 kHz mono, twice the bytes). The WAV
header is the canonical 44 bytes written here, so that `pcm_samples` takes the samples as a view of the bytes.

Work is split by output shard: shard `i` holds the `i`-th contiguous block of the source's own shards (files, tars,
parquet row groups) when there are at least as many of those, else every `num_shards`-th clip. Shards run in
`num_proc` processes and each is written to a temporary file renamed when complete, so a killed run started again
with the same command skips the finished shards. Unreadable clips follow `bad_audio` (`audio_io.BadAudioPolicy`:
`"skip"` logs each file and counts it, `"error"` stops with its name).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import struct
import sys
import time
from pathlib import Path

import numpy as np

from .audio_io import AudioDecodeError, BadAudioPolicy, check_bad_audio_policy, clip_key, decode_audio
from .configuration_matpac import SAMPLING_RATE


logger = logging.getLogger(__name__)

PROVENANCE_FILE = "prepared_corpus.json"
STATE_FOLDER = ".prepare"
DATA_FOLDER = "data"
KEY_COLUMN = "clip_key"
AUDIO_COLUMN = "audio"
SAMPLE_FORMATS = {"int16": (1, 16, np.dtype("<i2")), "float32": (3, 32, np.dtype("<f4"))}  # WAV format tag, bits
FORMAT_VERSION = 1
WAV_HEADER_BYTES = 44


# ----------------------------------------------------------------------------------------------------------------
# The stored clip: a canonical mono WAV (44-byte header), read back as a view of its bytes
# ----------------------------------------------------------------------------------------------------------------


def check_sample_format(sample_format: str) -> str:
    if sample_format not in SAMPLE_FORMATS:
        raise ValueError(f"sample_format must be one of {sorted(SAMPLE_FORMATS)}, got {sample_format!r}.")
    return sample_format


def to_stored_samples(waveform: np.ndarray, sample_format: str = "int16") -> np.ndarray:
    """Float32 mono samples in [-1, 1] -> the stored samples: int16 `rint(x * 32768)` clipped to the int16 range
    (exact for audio decoded from a 16-bit file), or float32 unchanged."""
    check_sample_format(sample_format)
    if sample_format == "float32":
        return np.ascontiguousarray(waveform, dtype="<f4")
    return np.clip(np.rint(np.asarray(waveform, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")


def wav_bytes(samples: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """A mono WAV file of int16 (PCM) or float32 (IEEE float) samples, with the canonical 44-byte header."""
    formats = {dtype: (tag, bits) for tag, bits, dtype in SAMPLE_FORMATS.values()}
    if samples.ndim != 1 or samples.dtype not in formats:
        raise ValueError(f"Expected 1-D little-endian int16 or float32 samples, got {samples.dtype} {samples.shape}.")
    tag, bits = formats[samples.dtype]
    data = samples.tobytes()
    block = bits // 8
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, tag, 1, sampling_rate, sampling_rate * block, block, bits)
    return header + b"data" + struct.pack("<I", len(data)) + data


def pcm_samples(data: bytes, name: str = "<bytes>", sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """The samples of a WAV written by `wav_bytes`, as a read-only int16 / float32 view of `data` (no copy).

    Raises:
        AudioDecodeError: `data` is not a mono `sampling_rate` WAV with the canonical header (a corpus prepared with
            other settings, or a damaged row).
    """
    if len(data) < WAV_HEADER_BYTES or data[:4] != b"RIFF" or data[8:16] != b"WAVEfmt " or data[36:40] != b"data":
        raise AudioDecodeError(f"{name}: not a WAV written by matpac_hf.prepare_corpus (canonical 44-byte header)")
    tag, channels, rate = struct.unpack_from("<HHI", data, 20)
    (bits,) = struct.unpack_from("<H", data, 34)
    (size,) = struct.unpack_from("<I", data, 40)
    dtypes = {(tag_, bits_): dtype for tag_, bits_, dtype in SAMPLE_FORMATS.values()}
    if channels != 1 or rate != sampling_rate or (tag, bits) not in dtypes or size != len(data) - WAV_HEADER_BYTES:
        raise AudioDecodeError(
            f"{name}: a prepared clip must be mono {sampling_rate} Hz 16-bit PCM or 32-bit float with all its data "
            f"bytes; got {channels} channel(s) at {rate} Hz, format {tag} / {bits} bits, {size} of "
            f"{len(data) - WAV_HEADER_BYTES} bytes. Prepare the corpus again with this version of matpac_hf."
        )
    return np.frombuffer(data, dtype=dtypes[(tag, bits)], offset=WAV_HEADER_BYTES)


def is_prepared(features) -> bool:
    """Whether a dataset's `features` are those of a prepared corpus (its `clip_key` and `num_samples` columns)."""
    return bool(features) and KEY_COLUMN in features and "num_samples" in features and AUDIO_COLUMN in features


def prepared_features():
    from datasets import Audio, Features, Value

    return Features(
        {
            AUDIO_COLUMN: Audio(sampling_rate=SAMPLING_RATE),
            KEY_COLUMN: Value("string"),
            "num_samples": Value("int64"),
            "duration": Value("float64"),
        }
    )


def read_provenance(folder: str | os.PathLike) -> dict | None:
    """The `prepared_corpus.json` of a prepared corpus folder, or None when `folder` is not one."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def shard_files(folder: str | os.PathLike) -> list[str]:
    """The parquet shards of a prepared corpus folder, sorted."""
    return sorted(str(p) for p in (Path(folder) / DATA_FOLDER).glob("train-*-of-*.parquet"))


# ----------------------------------------------------------------------------------------------------------------
# Preparing
# ----------------------------------------------------------------------------------------------------------------


def _shard_name(index: int, num_shards: int) -> str:
    return f"train-{index:05d}-of-{num_shards:05d}.parquet"


def _write_json_atomic(path: Path, value: dict):
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


def _source_slice(dataset, index: int, num_shards: int):
    """Output shard `index` of `num_shards`: a contiguous block of the source's shards when it has enough of them
    (parquet sources are first split into row groups), else every `num_shards`-th clip."""
    from datasets.distributed import split_dataset_by_node

    if num_shards == 1:
        return dataset
    if dataset.num_shards < num_shards and hasattr(dataset, "reshard"):
        try:
            dataset = dataset.reshard()
        except (NotImplementedError, ValueError, TypeError):
            pass
    if dataset.num_shards >= num_shards:
        return dataset.shard(num_shards=num_shards, index=index, contiguous=True)
    return split_dataset_by_node(dataset, rank=index, world_size=num_shards)


def prepare_shard(source: dict, settings: dict, index: int, output_dir: str) -> dict:
    """Decodes output shard `index` (see `_source_slice`) and writes it; returns its counts. Skips a finished shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .pretraining_data import load_audio_stream

    num_shards = settings["num_shards"]
    output = Path(output_dir)
    final = output / DATA_FOLDER / _shard_name(index, num_shards)
    state = output / STATE_FOLDER / f"shard-{index:05d}.json"
    if final.is_file() and state.is_file():
        return json.loads(state.read_text())
    start = time.perf_counter(), time.process_time()
    dataset, column = load_audio_stream(**source)
    policy = BadAudioPolicy(settings["bad_audio"], what="clip", scope=f"in shard {index}")
    policy.max_logged = sys.maxsize  # every unreadable file gets its log line and its name in the provenance
    features = prepared_features()
    schema = features.arrow_schema
    temporary = final.with_name(f".{final.name}.tmp")
    counts = {"shard": final.name, "clips_read": 0, "clips_written": 0, "samples": 0, "bytes_of_audio": 0}
    rows = {name: [] for name in features}

    def flush(writer):
        if rows[KEY_COLUMN]:
            writer.write_table(pa.Table.from_pydict(rows, schema=schema))
            for values in rows.values():
                values.clear()

    with pq.ParquetWriter(
        temporary,
        schema,
        compression=settings["compression"],
        use_dictionary=False,  # a dictionary page for the audio bytes doubles the read time and saves nothing
        write_statistics=False,
    ) as writer:
        for example in _source_slice(dataset, index, num_shards):
            counts["clips_read"] += 1
            audio = example[column]
            try:
                waveform = decode_audio(audio, SAMPLING_RATE)
            except AudioDecodeError as error:
                policy.handle(error)  # raises with bad_audio="error"
                continue
            samples = to_stored_samples(waveform, settings["sample_format"])
            path = audio.get("path") if isinstance(audio, dict) else audio if isinstance(audio, str) else None
            rows[AUDIO_COLUMN].append({"bytes": wav_bytes(samples), "path": os.path.basename(path) if path else None})
            rows[KEY_COLUMN].append(example.get(KEY_COLUMN) or clip_key(audio))  # a prepared source keeps its keys
            rows["num_samples"].append(samples.shape[0])
            rows["duration"].append(samples.shape[0] / SAMPLING_RATE)
            counts["clips_written"] += 1
            counts["samples"] += samples.shape[0]
            counts["bytes_of_audio"] += samples.nbytes
            if len(rows[KEY_COLUMN]) >= settings["row_group_size"]:
                flush(writer)
        flush(writer)
    counts.update(
        clips_skipped=policy.num_skipped,
        skipped_files=policy.skipped_names,
        wall_seconds=time.perf_counter() - start[0],
        cpu_seconds=time.process_time() - start[1],
    )
    _write_json_atomic(state, counts)  # before the rename: a finished shard always has its counts
    os.replace(temporary, final)
    logger.info(
        "Shard %s: %d clips written (%.2f h), %d skipped, %.1f s",
        final.name,
        counts["clips_written"],
        counts["samples"] / SAMPLING_RATE / 3600,
        counts["clips_skipped"],
        counts["wall_seconds"],
    )
    return counts


def _prepare_shard_in_worker(arguments) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return prepare_shard(*arguments)


DATASET_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# {name}

A pretraining corpus prepared with `python -m matpac_hf.prepare_corpus`: every readable clip of `{source}` decoded
once to {sampling_rate} Hz mono ({sample_format} WAV in the `audio` column), with the source clip's identity
(`clip_key`, which fixes the random crops) and its length (`num_samples`, `duration` in seconds).

{clips} clips, {hours:.2f} hours of audio; {skipped} unreadable clips skipped. Provenance: `prepared_corpus.json`.
"""


def prepare_corpus(
    output_dir: str,
    *,
    dataset_name: str | None = None,
    dataset_dir: str | None = None,
    data_files: str | list[str] | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    audio_column: str | None = None,
    num_shards: int | None = None,
    num_proc: int = 1,
    bad_audio: str = "skip",
    sample_format: str = "int16",
    compression: str = "none",
    row_group_size: int = 64,
) -> dict:
    """Decodes a corpus once into `output_dir` (see the module docstring) and returns its provenance.

    The source is given as to `pretraining_data.load_audio_stream` (a Hub id or `load_dataset` path, an audiofolder
    directory, or parquet / webdataset / audio files). `num_shards` defaults to the source's own shard count, at least
    `num_proc` and at most 1024. Running it again on the same `output_dir` with the same arguments finishes an
    interrupted preparation; other arguments are refused. With `num_proc > 1` the shards run in spawned processes, which
    import the calling script: call it under `if __name__ == "__main__":` (or use the command line).
    """
    from .pretraining_data import load_audio_stream

    check_bad_audio_policy(bad_audio)
    check_sample_format(sample_format)
    if num_proc < 1 or row_group_size < 1 or (num_shards is not None and num_shards < 1):
        raise ValueError(
            f"num_proc, row_group_size and num_shards must be >= 1, got {num_proc}, {row_group_size}, {num_shards}."
        )
    if isinstance(data_files, str):
        data_files = [data_files]
    source = {
        "dataset_name": dataset_name,
        "dataset_dir": os.path.abspath(dataset_dir) if dataset_dir else None,
        "data_files": [os.path.abspath(f) if os.path.exists(f) else f for f in data_files] if data_files else None,
        "dataset_config": dataset_config,
        "split": split,
        "audio_column": audio_column,
    }
    output = Path(output_dir)
    state_folder = output / STATE_FOLDER
    settings_path = state_folder / "settings.json"
    previous = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if previous is None and output.is_dir() and any(output.iterdir()):
        raise ValueError(
            f"{output_dir} exists and is not an interrupted preparation (no {STATE_FOLDER}/settings.json): give an "
            "empty or new --output_dir."
        )
    if num_shards is None and previous is not None:
        num_shards = previous["settings"]["num_shards"]
    if num_shards is None:
        dataset, _ = load_audio_stream(**source)
        num_shards = min(1024, max(num_proc, dataset.num_shards))
    settings = {
        "num_shards": num_shards,
        "sampling_rate": SAMPLING_RATE,
        "sample_format": sample_format,
        "compression": compression,
        "row_group_size": row_group_size,
        "bad_audio": bad_audio,
    }
    current = {"source": source, "settings": settings}
    if previous is not None and previous != current:
        changed = sorted(
            key
            for part in current
            for key in set(previous[part]) | set(current[part])
            if previous[part].get(key) != current[part].get(key)
        )
        raise ValueError(
            f"{output_dir} holds an interrupted preparation with other arguments ({', '.join(changed)} differ): run "
            "the same command again to finish it, or give a new --output_dir."
        )
    (output / DATA_FOLDER).mkdir(parents=True, exist_ok=True)
    state_folder.mkdir(exist_ok=True)
    _write_json_atomic(settings_path, current)

    start = time.perf_counter()
    tasks = [(source, settings, index, str(output)) for index in range(num_shards)]
    done = sum((output / DATA_FOLDER / _shard_name(i, num_shards)).is_file() for i in range(num_shards))
    logger.info("Preparing %d shards (%d already done) in %d process(es) into %s", num_shards, done, num_proc, output)
    if num_proc == 1:
        results = [prepare_shard(*task) for task in tasks]
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
            results = list(pool.imap_unordered(_prepare_shard_in_worker, tasks))
            pool.close()  # let the workers exit on their own (terminating them leaks their semaphores)
            pool.join()
    results.sort(key=lambda counts: counts["shard"])

    totals = {key: sum(r[key] for r in results) for key in ("clips_read", "clips_written", "clips_skipped", "samples")}
    files = shard_files(output)
    provenance = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "settings": settings,
        **totals,
        "audio_hours": totals["samples"] / SAMPLING_RATE / 3600,
        "bytes_on_disk": sum(os.path.getsize(f) for f in files),
        "skipped_files": [name for r in results for name in r["skipped_files"]],
        "cpu_seconds": sum(r["cpu_seconds"] for r in results),
        "wall_seconds_this_run": time.perf_counter() - start,
        "shards": [{k: r[k] for k in ("shard", "clips_written", "samples", "clips_skipped")} for r in results],
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    hours = provenance["audio_hours"]
    provenance["bytes_per_audio_hour"] = provenance["bytes_on_disk"] / hours if hours else None
    _write_json_atomic(output / PROVENANCE_FILE, provenance)
    source_name = dataset_name or dataset_dir or (", ".join(data_files[:3]) if data_files else "")
    (output / "README.md").write_text(
        DATASET_CARD.format(
            name=output.name,
            source=source_name,
            sampling_rate=SAMPLING_RATE,
            sample_format=sample_format,
            clips=totals["clips_written"],
            hours=hours,
            skipped=totals["clips_skipped"],
        )
    )
    logger.info(
        "Prepared %d clips (%.2f h of audio, %.1f MB, %d unreadable skipped) in %s",
        totals["clips_written"],
        hours,
        provenance["bytes_on_disk"] / 1e6,
        totals["clips_skipped"],
        output,
    )
    return provenance


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m matpac_hf.prepare_corpus",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_argument_group("source corpus (exactly one of --dataset_name, --dataset_dir, --data_files)")
    source.add_argument("--dataset_name", help="Hub dataset id (or anything `datasets.load_dataset` takes), streamed")
    source.add_argument("--dataset_config", help="configuration name of --dataset_name")
    source.add_argument("--dataset_dir", help="local audiofolder directory of audio files")
    source.add_argument("--data_files", nargs="+", help="parquet shards, webdataset .tar shards or audio files")
    source.add_argument("--split", default="train", help="split to read")
    source.add_argument("--audio_column", help="audio column; default: 'audio', or the only Audio column")
    parser.add_argument("--output_dir", required=True, help="folder of the prepared corpus (new, or interrupted)")
    parser.add_argument("--num_proc", type=int, default=1, help="processes decoding shards in parallel")
    parser.add_argument(
        "--num_shards", type=int, help="output shards (default: the source's shard count, >= num_proc, <= 1024)"
    )
    parser.add_argument("--bad_audio", choices=("skip", "error"), default="skip", help="unreadable clips")
    parser.add_argument("--sample_format", choices=sorted(SAMPLE_FORMATS), default="int16", help="stored samples")
    parser.add_argument("--compression", default="none", help="parquet compression (none, snappy, zstd, ...)")
    parser.add_argument("--row_group_size", type=int, default=64, help="clips per parquet row group")
    return parser.parse_args(argv)


__all__ = [
    "PROVENANCE_FILE",
    "is_prepared",
    "pcm_samples",
    "prepare_corpus",
    "prepare_shard",
    "read_provenance",
    "shard_files",
    "to_stored_samples",
    "wav_bytes",
]


def main(argv=None) -> int:
    args = vars(parse_args(argv))  # the options are prepare_corpus's arguments, by name
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    output_dir = args.pop("output_dir")
    provenance = prepare_corpus(output_dir, **args)
    print(
        f"{provenance['clips_written']} clips ({provenance['audio_hours']:.2f} h), {provenance['clips_skipped']} "
        f"skipped, {provenance['bytes_on_disk'] / 1e6:.1f} MB in {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
