# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""A prepared corpus (src/matpac_hf/prepare_corpus.py) and training from it: the crops of the source (bitwise for 16 kHz
mono sources), the short-clip policies on the kept durations, bad files skipped and counted, `datasets` reading,
streaming and splitting it, an interrupted preparation finished by the same command, exact resume of the stream,
`run_pretraining.py` on it (the losses of the source corpus), publishing with `push_to_hub`, and a 2-process launch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from matpac_hf import prepare_corpus as prep
from matpac_hf.audio_io import AudioDecodeError, pcm_to_float32
from matpac_hf.configuration_matpac import num_samples_for_frames
from matpac_hf.pretraining_data import PretrainingDataLoop, build_crop_stream, load_audio_stream, waveforms_on_device


REPO = Path(__file__).resolve().parents[1]
CROP_FRAMES = 304  # 4.86 s: keeps the clips small
CROP_SAMPLES = num_samples_for_frames(CROP_FRAMES)

# torchdata's StatefulDataLoader calls a deprecated torch API on every loader; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


def _clip(rng, seconds, sampling_rate, stereo=False):
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 900) * t) + 0.05 * rng.standard_normal(t.shape[0])
    return np.stack([wave, 0.5 * wave], axis=1) if stereo else wave


def write_corpus(folder: Path, num_clips: int = 10, hifi_every: int = 4, seed: int = 0) -> Path:
    """`num_clips` FLAC clips of 5-7 s (16 kHz mono; every `hifi_every`-th one 44.1 kHz stereo; 0: none), one of
    3 s (shorter than the crop), one broken file."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(num_clips):
        hifi = hifi_every and i % hifi_every == 1
        rate = 44_100 if hifi else 16_000
        sf.write(folder / f"clip_{i:02d}.flac", _clip(rng, rng.uniform(5.0, 7.0), rate, hifi).astype(np.float32), rate)
    sf.write(folder / "short.flac", _clip(rng, 3.0, 16_000).astype(np.float32), 16_000)
    (folder / "clip_05_broken.flac").write_bytes(b"fLaC" + bytes(2000))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("source") / "corpus")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("prepared") / "corpus_16k"
    prep.prepare_corpus(str(out), dataset_dir=str(corpus), num_shards=3)
    return out


def crops(epoch: int, min_clip_policy: str = "drop", **source) -> dict:
    dataset, column = load_audio_stream(**source)
    stream = build_crop_stream(dataset, column, seed=5, crop_frames=CROP_FRAMES, min_clip_policy=min_clip_policy)
    stream.set_epoch(epoch)
    return {item["example_id"]: (pcm_to_float32(item["input_values"]), item["num_valid_samples"]) for item in stream}


@pytest.mark.parametrize("min_clip_policy", ["drop", "pad"])
def test_prepared_corpus_gives_the_crops_of_its_source(corpus, prepared, min_clip_policy):
    for epoch in (0, 1):
        original = crops(epoch, min_clip_policy, dataset_dir=str(corpus))
        from_prepared = crops(epoch, min_clip_policy, dataset_dir=str(prepared))
        assert sorted(from_prepared) == sorted(original) and len(original) == 10 + (min_clip_policy == "pad")
        for key, (crop, num_valid) in original.items():
            got, got_valid = from_prepared[key]
            assert got.dtype == np.float32 and got.shape == (CROP_SAMPLES,) and got_valid == num_valid
            if Path(key).name in ("clip_01.flac", "clip_05.flac", "clip_09.flac"):  # 44.1 kHz stereo: int16 rounding
                assert 0 < np.abs(got - crop).max() < 4e-5, key
            else:  # 16 kHz mono 16-bit FLAC: bitwise
                assert np.array_equal(got, crop), key
    if min_clip_policy == "pad":
        assert original[str(corpus / "short.flac")][1] == 3 * 16_000


def test_provenance_counts_and_dataset_card(corpus, prepared):
    provenance = prep.read_provenance(prepared)
    assert provenance["clips_read"] == 12 and provenance["clips_written"] == 11 and provenance["clips_skipped"] == 1
    assert provenance["skipped_files"] == [str(corpus / "clip_05_broken.flac")]
    seconds = sum(sf.info(str(p)).duration for p in corpus.glob("*.flac") if "broken" not in p.name)
    assert provenance["audio_hours"] * 3600 == pytest.approx(seconds, abs=1e-3)
    assert provenance["settings"]["num_shards"] == 3 and len(prep.shard_files(prepared)) == 3
    assert 114e6 < provenance["bytes_per_audio_hour"] < 118e6  # int16: 115.2 MB of samples per hour, + headers
    assert "path: data/train-*" in (prepared / "README.md").read_text()


def test_datasets_reads_streams_and_splits_it_natively(corpus, prepared, tmp_path):
    from datasets import load_dataset
    from datasets.distributed import split_dataset_by_node

    table = load_dataset(str(prepared), split="train", cache_dir=str(tmp_path))  # a fresh cache: the folder is new
    assert table.num_rows == 11 and set(table.column_names) == {"audio", "clip_key", "num_samples", "duration"}
    assert table.features["audio"].sampling_rate == 16_000
    row = table.cast_column("audio", table.features["audio"].__class__(decode=False))[0]
    samples, _ = sf.read(_bytes_io(row["audio"]["bytes"]))
    assert samples.shape == (row["num_samples"],) and row["duration"] == row["num_samples"] / 16_000
    stream = load_dataset(str(prepared), split="train", streaming=True)
    assert stream.num_shards == 3
    keys = [
        {row["clip_key"] for row in split_dataset_by_node(stream, rank=rank, world_size=3).select_columns("clip_key")}
        for rank in range(3)
    ]
    assert sum(map(len, keys)) == 11 and set.union(*keys) == set(table.to_dict()["clip_key"])


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


def test_interrupted_preparation_is_finished_by_the_same_command(tmp_path, corpus, prepared, monkeypatch):
    out = tmp_path / "prepared"
    real_prepare_shard, written = prep.prepare_shard, []

    def killed_at_shard_2(source, settings, index, output_dir):
        if index == 2:
            raise KeyboardInterrupt  # as a kill during the third shard
        written.append(index)
        return real_prepare_shard(source, settings, index, output_dir)

    monkeypatch.setattr(prep, "prepare_shard", killed_at_shard_2)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare_corpus(str(out), dataset_dir=str(corpus), num_shards=3)
    assert [Path(f).name for f in prep.shard_files(out)] == [
        "train-00000-of-00003.parquet",
        "train-00001-of-00003.parquet",
    ]
    assert prep.read_provenance(out) is None
    with pytest.raises(ValueError, match="other arguments .*sample_format"):
        prep.prepare_corpus(str(out), dataset_dir=str(corpus), num_shards=3, sample_format="float32")

    calls, real_decode = [], prep.decode_audio
    monkeypatch.setattr(prep, "decode_audio", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    monkeypatch.setattr(prep, "prepare_shard", real_prepare_shard)
    provenance = prep.prepare_corpus(str(out), dataset_dir=str(corpus))  # the shard count of the first run
    expected = prep.read_provenance(prepared)
    for key in ("clips_read", "clips_written", "clips_skipped", "samples", "skipped_files", "bytes_on_disk"):
        assert provenance[key] == expected[key], key
    for name in ("train-00000-of-00003.parquet", "train-00002-of-00003.parquet"):
        assert (out / "data" / name).read_bytes() == (prepared / "data" / name).read_bytes()
    third = expected["shards"][2]
    assert len(calls) == third["clips_written"] + third["clips_skipped"] > 0  # only the third shard was decoded
    with pytest.raises(ValueError, match="not an interrupted preparation"):
        prep.prepare_corpus(str(corpus), dataset_dir=str(corpus))


def test_bad_audio_error_stops_at_the_broken_file(tmp_path, corpus):
    with pytest.raises(AudioDecodeError, match="clip_05_broken.flac.*--bad_audio skip"):
        prep.prepare_corpus(str(tmp_path / "out"), dataset_dir=str(corpus), num_shards=1, bad_audio="error")


def test_stored_clip_round_trip_and_damaged_rows():
    waveform = np.array([0.0, 0.5, -1.0, 0.99999, -0.25], dtype=np.float32)
    for sample_format, dtype in (("int16", np.int16), ("float32", np.float32)):
        data = prep.wav_bytes(prep.to_stored_samples(waveform, sample_format))
        samples = prep.pcm_samples(data)
        decoded, rate = sf.read(_bytes_io(data), dtype="float32")  # a WAV any reader takes
        assert samples.dtype == dtype and rate == 16_000
        assert np.array_equal(decoded, samples.astype(np.float32) * (2.0**-15 if dtype == np.int16 else 1.0))
    assert prep.to_stored_samples(np.array([1.0, -1.0, 2.0]), "int16").tolist() == [32767, -32768, 32767]
    with pytest.raises(AudioDecodeError, match="canonical 44-byte header"):
        prep.pcm_samples(b"RIFF" + bytes(60))
    stereo = bytearray(prep.wav_bytes(np.zeros(4, np.int16)))
    stereo[22] = 2
    with pytest.raises(AudioDecodeError, match="2 channel"):
        prep.pcm_samples(bytes(stereo), "x.wav")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_of_the_prepared_stream_is_exact(prepared, num_workers):
    def loop():
        dataset, column = load_audio_stream(dataset_dir=str(prepared))
        stream = build_crop_stream(dataset, column, seed=1, crop_frames=CROP_FRAMES, min_clip_policy="pad")
        return PretrainingDataLoop(stream, batch_size=2, num_workers=num_workers)

    uninterrupted = iter(loop())
    expected = [next(uninterrupted) for _ in range(9)]  # 5 batches per epoch: crosses into epoch 1
    batch = expected[0]["input_values"]  # int16 PCM to the device (half the bytes), converted there exactly
    assert batch.dtype == torch.int16 and batch.shape == (2, CROP_SAMPLES)
    on_device = waveforms_on_device(expected[0], "cpu")
    assert on_device.dtype == torch.float32 and np.array_equal(on_device.numpy(), pcm_to_float32(batch.numpy()))
    first = loop()
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    state = first.state_dict()
    resumed = loop()
    resumed.load_state_dict(state)
    iterator = iter(resumed)
    for batch in expected[3:]:
        got = next(iterator)
        assert got["example_ids"] == batch["example_ids"]
        assert np.array_equal(got["input_values"].numpy(), batch["input_values"].numpy())


def test_worker_batch_buffers_are_reused_only_once_released(prepared):
    def loop(num_workers):
        dataset, column = load_audio_stream(dataset_dir=str(prepared))
        stream = build_crop_stream(dataset, column, seed=3, crop_frames=CROP_FRAMES, min_clip_policy="pad")
        return PretrainingDataLoop(stream, batch_size=2, num_workers=num_workers)

    in_process = iter(loop(0))
    expected = [next(in_process) for _ in range(12)]  # 5 batches per epoch: a new loader (and buffers) each epoch
    worker_loop = loop(1)
    iterator = iter(worker_loop)
    held = next(iterator)  # kept: its buffer must not be written again
    held_values = held["input_values"].clone()
    reused = 0
    for want in expected[1:]:
        got = next(iterator)  # dropped at the next step: its buffer is then reused
        assert "worker_buffer" not in got and got["example_ids"] == want["example_ids"]
        assert np.array_equal(got["input_values"].numpy(), want["input_values"].numpy())
        reused += len(worker_loop._loader.collate_fn._handed_out)
    assert reused > 0
    assert held["example_ids"] == expected[0]["example_ids"] and torch.equal(held["input_values"], held_values)


def test_damaged_rows_of_a_prepared_shard_are_skipped_and_counted(tmp_path, prepared):
    import pyarrow as pa
    import pyarrow.parquet as pq

    damaged = tmp_path / "damaged"
    shutil.copytree(prepared, damaged)
    shard = prep.shard_files(str(damaged))[0]
    table = pq.read_table(shard)
    audio = table.column("audio").combine_chunks()
    data = audio.field("bytes").to_pylist()
    data[0], data[1] = data[0][:40], None  # a truncated header and a missing clip
    audio = pa.StructArray.from_arrays([pa.array(data, pa.binary()), audio.field("path")], fields=list(audio.type))
    pq.write_table(table.set_column(0, "audio", audio), shard)
    keys = table.column("clip_key").to_pylist()
    expected = crops(0, dataset_dir=str(prepared))
    got = crops(0, dataset_dir=str(damaged))
    assert sorted(got) == sorted(set(expected) - set(keys[:2]))
    for key, (crop, num_valid) in got.items():
        assert num_valid == expected[key][1] and np.array_equal(crop, expected[key][0])
    dataset, column = load_audio_stream(dataset_dir=str(damaged))
    stream = build_crop_stream(dataset, column, crop_frames=CROP_FRAMES, bad_audio="error")
    with pytest.raises(AudioDecodeError, match=keys[0]):
        list(stream)


def test_run_pretraining_on_the_prepared_corpus_gives_the_losses_of_the_source(tmp_path):
    import run_pretraining as script
    from accelerate.state import AcceleratorState
    from test_run_pretraining import COMMON, metrics

    source = write_corpus(tmp_path / "mono", num_clips=6, hifi_every=0)
    prepared = tmp_path / "mono_16k"
    prep.prepare_corpus(str(prepared), dataset_dir=str(source), num_shards=1)  # the source order
    args = ["--per_device_batch_size", 2, "--max_steps", 4, "--shuffle_buffer_size", 0, "--num_workers", 0]
    args += ["--crop_frames", CROP_FRAMES, "--min_clip_policy", "pad", "--log_example_ids"]
    runs = {}
    for name, folder in (("source", source), ("prepared", prepared)):
        out = tmp_path / f"run_{name}"
        try:
            assert script.main(COMMON + [str(a) for a in [*args, "--dataset_dir", folder, "--output_dir", out]]) == 0
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
        runs[name] = metrics(out)
        ids = (out / "logs" / "example_ids_rank0.jsonl").read_text()
        runs[name + "_ids"] = [json.loads(line)["ids"] for line in ids.splitlines()]
    assert runs["prepared_ids"] == runs["source_ids"]
    for step in runs["source"]:
        for key in ("loss", "prediction_loss", "classification_loss"):
            assert runs["prepared"][step][key] == runs["source"][step][key], (step, key)


def test_the_folder_publishes_as_a_hub_dataset_repo(prepared, hub_stub):
    """The folder is in the Hub's parquet layout (dataset card with `configs`, `data/train-*.parquet`): uploading it
    as it is publishes the dataset (`Dataset.push_to_hub` of the loaded dataset works too, on the real Hub)."""
    code = (
        "import sys; from huggingface_hub import HfApi; api = HfApi(); "
        "api.create_repo('stub-user/prepared', repo_type='dataset'); "
        "api.upload_folder(repo_id='stub-user/prepared', repo_type='dataset', folder_path=sys.argv[1], "
        "ignore_patterns=['.prepare/*'])"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(prepared)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:] + str(hub_stub.unhandled)
    files = set(hub_stub.files("stub-user/prepared", repo_type="dataset")) - {".gitattributes"}
    assert files == {
        "README.md",
        "prepared_corpus.json",
        *(f"data/{Path(f).name}" for f in prep.shard_files(prepared)),
    }


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_train_from_a_prepared_corpus(tmp_path, prepared):
    """A real 2-process launch (gloo) on the prepared corpus: its shards are dealt between the processes (disjoint
    clips), the replicas stay identical."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29523"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore")
    from test_run_pretraining import COMMON

    out = tmp_path / "ddp"
    args = ["--dataset_dir", prepared, "--per_device_batch_size", 1, "--max_steps", 3, "--num_workers", 0]
    args += ["--crop_frames", CROP_FRAMES, "--shuffle_buffer_size", 0, "--log_example_ids", "--output_dir", out]
    command = launch + [str(REPO / "examples" / "run_pretraining.py")] + COMMON + [str(a) for a in args]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    seen = []
    for rank in range(2):
        rows = [json.loads(line) for line in (out / "logs" / f"example_ids_rank{rank}.jsonl").read_text().splitlines()]
        seen.append({clip for row in rows if row["epoch"] == 0 for clip in row["ids"]})
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    checksums = json.loads((out / "logs" / "replica_checksums.json").read_text())
    assert len(checksums) == 2 and checksums[0] == checksums[1]


def test_a_parquet_source_is_split_by_row_groups_in_parallel_processes(tmp_path, corpus):
    """One parquet file of 3 row groups becomes 3 output shards (its row groups), prepared by 2 processes; the crops
    are those of the source (clips identified by their bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(corpus.glob("clip_0[0-4].flac")) + [corpus / "clip_05_broken.flac"]
    rows = [{"bytes": path.read_bytes(), "path": path.name} for path in files]
    metadata = {"huggingface": json.dumps({"info": {"features": {"sound": {"_type": "Audio"}}}})}
    table = pa.table({"sound": rows}).replace_schema_metadata(metadata)
    pq.write_table(table, tmp_path / "source.parquet", row_group_size=2)
    out = tmp_path / "prepared"
    provenance = prep.prepare_corpus(str(out), data_files=str(tmp_path / "source.parquet"), num_shards=3, num_proc=2)
    assert [row["clips_written"] + row["clips_skipped"] for row in provenance["shards"]] == [2, 2, 2]
    assert provenance["clips_written"] == 5 and provenance["skipped_files"] == ["clip_05_broken.flac"]
    original = crops(1, data_files=str(tmp_path / "source.parquet"))
    from_prepared = crops(1, dataset_dir=str(out))
    assert sorted(original) == sorted(from_prepared) and len(original) == 5
    for key, (crop, _) in original.items():
        tolerance = 4e-5 if key.startswith(("clip_01.flac", "clip_05.flac")) else 0.0  # 44.1 kHz stereo: resampled
        assert np.abs(from_prepared[key][0] - crop).max() <= tolerance, key


def test_a_prepared_corpus_prepared_again_keeps_its_crops(tmp_path, prepared):
    """Re-sharding a prepared corpus (preparing it again) keeps each clip's key, hence its crops, bitwise."""
    again = tmp_path / "resharded"
    provenance = prep.prepare_corpus(str(again), dataset_dir=str(prepared), num_shards=1)
    assert provenance["clips_written"] == 11 and provenance["clips_skipped"] == 0
    before, after = crops(2, "pad", dataset_dir=str(prepared)), crops(2, "pad", dataset_dir=str(again))
    assert sorted(before) == sorted(after)
    assert all(np.array_equal(before[key][0], after[key][0]) for key in before)


def test_command_line_prepares_the_corpus_the_function_prepares(tmp_path, capsys):
    source = write_corpus(tmp_path / "source", num_clips=3, hifi_every=0)
    assert prep.main(["--dataset_dir", str(source), "--output_dir", str(tmp_path / "cli"), "--num_shards", "1"]) == 0
    printed = capsys.readouterr().out
    by_function = prep.prepare_corpus(str(tmp_path / "function"), dataset_dir=str(source), num_shards=1)
    by_command = prep.read_provenance(tmp_path / "cli")
    assert by_command["settings"] == by_function["settings"] and by_command["source"] == by_function["source"]
    assert by_command["clips_written"] == by_function["clips_written"] > 0
    assert printed.startswith(f"{by_function['clips_written']} clips") and "1 skipped" in printed  # the corrupt file
    cli_shards, function_shards = prep.shard_files(tmp_path / "cli"), prep.shard_files(tmp_path / "function")
    assert [open(f, "rb").read() for f in cli_shards] == [open(f, "rb").read() for f in function_shards]
