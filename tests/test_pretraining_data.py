# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Streaming pretraining data pipeline (src/matpac_hf/data.py): decode guard, mono/resample, crop, split, resume."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from matpac_hf.data import (
    CROP_FRAMES,
    CROP_SAMPLES,
    PretrainingDataLoop,
    build_crop_stream,
    build_demo_corpus,
    crop_offset,
    decode_audio,
    decode_random_crop,
    load_audio_stream,
    num_samples_for_frames,
    stateful_dataloader_class,
)


def _tone(seconds, sampling_rate, frequency=440.0, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    mono = 0.5 * np.sin(2 * np.pi * frequency * t) + 0.05 * rng.standard_normal(t.shape[0])
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono, 0.3 * mono[::-1]], axis=1).astype(np.float32)


def _write_folder(folder, clips):
    """clips: list of (file_name, waveform or raw bytes, sampling_rate)."""
    os.makedirs(folder, exist_ok=True)
    for name, audio, sampling_rate in clips:
        path = os.path.join(folder, name)
        if isinstance(audio, bytes):
            with open(path, "wb") as handle:
                handle.write(audio)
        else:
            sf.write(path, audio, sampling_rate)
    return folder


def _flac_bytes(waveform, sampling_rate):
    buffer = io.BytesIO()
    sf.write(buffer, waveform, sampling_rate, format="FLAC")
    return buffer.getvalue()


# torchdata's StatefulDataLoader calls a deprecated torch API on every loader; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")

CORRUPTED = b"fLaC" + bytes(range(256)) * 8


def _iterate(stream):
    return [(item["example_id"], item["input_values"]) for item in stream]


def test_crop_length_is_608_frames():
    assert CROP_SAMPLES == num_samples_for_frames(CROP_FRAMES) == 97_520
    assert 1 + (CROP_SAMPLES - 400) // 160 == 608
    assert 1 + (97_280 - 400) // 160 == 606 and num_samples_for_frames(606) == 97_200  # 6.08 s -> 606 frames


def test_decode_guard_skips_and_counts_a_corrupted_file(tmp_path):
    folder = _write_folder(
        tmp_path / "corpus",
        [
            ("a.flac", _tone(6.5, 16000, 220), 16000),
            ("b_corrupted.flac", CORRUPTED, None),
            ("c.flac", _tone(7.0, 16000, 330), 16000),
            ("d.flac", _tone(8.0, 16000, 440), 16000),
        ],
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))
    stream = build_crop_stream(dataset, column, seed=0)
    items = _iterate(stream)
    assert [os.path.basename(key) for key, _ in items] == ["a.flac", "c.flac", "d.flac"]
    assert stream.counters.num_corrupted == 1
    assert stream.counters.num_read == 4 and stream.counters.num_yielded == 3
    # the batch loop sees the skipped clip in its totals, and keeps going over epochs
    loop = PretrainingDataLoop(build_crop_stream(dataset, column, seed=0), batch_size=3)
    iterator = iter(loop)
    next(iterator), next(iterator)
    assert loop.epoch == 1 and loop.stats.totals()["num_corrupted"] == 2  # once per epoch
    assert loop.stats.totals()["num_yielded"] == 6


def test_corrupted_bytes_in_parquet_are_skipped(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [
        {"bytes": _flac_bytes(_tone(6.5, 16000), 16000), "path": "good1.flac"},
        {"bytes": CORRUPTED, "path": "bad.flac"},
        {"bytes": _flac_bytes(_tone(7.0, 16000, 550), 16000), "path": "good2.flac"},
    ]
    table = pa.table({"sound": rows, "label": [0, 1, 2]})
    metadata = {
        "huggingface": json.dumps(
            {"info": {"features": {"sound": {"_type": "Audio"}, "label": {"dtype": "int64", "_type": "Value"}}}}
        )
    }
    table = table.replace_schema_metadata(metadata)
    pq.write_table(table, tmp_path / "shard-00000.parquet")
    dataset, column = load_audio_stream(data_files=str(tmp_path / "shard-00000.parquet"))
    assert column == "sound"  # the only Audio column
    stream = build_crop_stream(dataset, column)
    ids = [key for key, _ in _iterate(stream)]
    assert len(ids) == 2 and ids[0].startswith("good1.flac#") and ids[1].startswith("good2.flac#")
    assert stream.counters.num_corrupted == 1
    with pytest.raises(ValueError, match="not in the corpus"):
        load_audio_stream(data_files=str(tmp_path / "shard-00000.parquet"), audio_column="audio")


def test_stereo_44k_becomes_mono_16k(tmp_path):
    stereo = _tone(3.0, 44100, 1000, channels=2)
    path = str(tmp_path / "stereo.wav")
    sf.write(path, stereo, 44100, subtype="FLOAT")
    mono = decode_audio(path)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert mono.shape[0] == round(stereo.shape[0] * 16000 / 44100) == 48000
    expected = soxr.resample(stereo.mean(axis=1), 44100, 16000, quality="HQ")
    np.testing.assert_allclose(mono, expected, atol=1e-5)
    # the 1 kHz tone survives at 16 kHz: spectral peak at 1000 Hz
    spectrum = np.abs(np.fft.rfft(mono))
    assert abs(np.argmax(spectrum) * 16000 / mono.shape[0] - 1000) < 2


@pytest.mark.parametrize("sampling_rate,channels", [(16000, 1), (44100, 2), (48000, 1)])
def test_segment_crop_equals_crop_of_full_decode(tmp_path, sampling_rate, channels):
    clip = _tone(9.3, sampling_rate, 700, channels=channels, seed=3)
    path = str(tmp_path / "clip.wav")
    sf.write(path, clip, sampling_rate, subtype="FLOAT")
    full = decode_audio(path)
    for epoch in range(3):
        crop, padded = decode_random_crop(path, seed=5, epoch=epoch, key="clip")
        assert crop.shape == (CROP_SAMPLES,) and crop.dtype == np.float32 and not padded
        offset = crop_offset(full.shape[0], CROP_SAMPLES, 5, epoch, "clip")
        np.testing.assert_allclose(crop, full[offset : offset + CROP_SAMPLES], atol=2e-3)
    offsets = {crop_offset(full.shape[0], CROP_SAMPLES, 5, epoch, "clip") for epoch in range(20)}
    assert len(offsets) > 15 and max(offsets) <= full.shape[0] - CROP_SAMPLES


def test_short_clips_are_dropped_or_padded(tmp_path):
    folder = _write_folder(
        tmp_path / "corpus",
        [
            ("long.flac", _tone(6.2, 16000), 16000),
            ("short.flac", _tone(5.0, 16000, 300), 16000),
            ("short44.flac", _tone(2.0, 44100, 300), 44100),
        ],
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))
    dropping = build_crop_stream(dataset, column, min_clip_policy="drop")
    assert [os.path.basename(key) for key, _ in _iterate(dropping)] == ["long.flac"]
    assert dropping.counters.num_too_short == 2
    padding = build_crop_stream(dataset, column, min_clip_policy="pad")
    items = dict(_iterate(padding))
    assert padding.counters.num_padded == 2 and padding.counters.num_yielded == 3
    short = items[str(folder / "short.flac")]
    assert short.shape == (CROP_SAMPLES,)
    np.testing.assert_allclose(short[:80000], decode_audio(str(folder / "short.flac")), atol=1e-4)
    assert np.all(short[80000:] == 0.0)
    assert np.count_nonzero(items[str(folder / "short44.flac")][32000:]) == 0
    with pytest.raises(ValueError, match="min_clip_policy"):
        build_crop_stream(dataset, column, min_clip_policy="loop")


def test_two_ranks_see_disjoint_examples(tmp_path):
    folder = _write_folder(
        tmp_path / "corpus", [(f"c{i:02d}.flac", _tone(6.2, 16000, 200 + 40 * i), 16000) for i in range(9)]
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))
    seen = []
    for rank in range(2):
        stream = build_crop_stream(dataset, column, rank=rank, world_size=2, shuffle_buffer_size=4, seed=3)
        seen.append({key for key, _ in _iterate(stream)})
    assert seen[0].isdisjoint(seen[1])
    assert len(seen[0] | seen[1]) == 9 and abs(len(seen[0]) - len(seen[1])) <= 1


def _batches(loop, count):
    iterator = iter(loop)
    return [next(iterator) for _ in range(count)]


def test_resume_gives_the_same_crops_as_an_uninterrupted_stream(tmp_path):
    rates = [16000 if i % 3 else 44100 for i in range(7)]
    folder = _write_folder(
        tmp_path / "corpus",
        [(f"c{i:02d}.flac", _tone(6.5 + 0.3 * i, rates[i], 150 + 50 * i), rates[i]) for i in range(7)],
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))

    def make_loop():
        return PretrainingDataLoop(build_crop_stream(dataset, column, seed=11), batch_size=2, num_workers=0)

    reference = _batches(make_loop(), 8)  # 3 batches per epoch: crosses two epoch boundaries
    interrupted = make_loop()
    _batches(interrupted, 4)
    state = json.loads(json.dumps(interrupted.state_dict()))  # a checkpoint must be plain JSON-able data
    resumed = make_loop()
    resumed.load_state_dict(state)
    continued = _batches(resumed, 4)
    for expected, got in zip(reference[4:], continued):
        assert expected["example_ids"] == got["example_ids"]
        assert torch.equal(expected["input_values"], got["input_values"])
    assert resumed.epoch == 2
    # crops differ between epochs (positions depend on the epoch)
    assert reference[0]["example_ids"] == reference[3]["example_ids"]
    assert not torch.equal(reference[0]["input_values"], reference[3]["input_values"])


@pytest.mark.skipif(stateful_dataloader_class() is None, reason="torchdata (StatefulDataLoader) is not installed")
def test_resume_with_workers_over_webdataset_shards(tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard}.tar", "w") as tar:
            for i in range(4):
                data = _flac_bytes(_tone(6.3, 16000, 100 * (shard * 4 + i + 1)), 16000)
                info = tarfile.TarInfo(f"s{shard}_{i}.flac")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    dataset, column = load_audio_stream(data_files=[str(tmp_path / "shard-0.tar"), str(tmp_path / "shard-1.tar")])
    assert column == "flac" and dataset.num_shards == 2

    def make_loop():
        return PretrainingDataLoop(build_crop_stream(dataset, column, seed=2), batch_size=2, num_workers=2)

    reference = _batches(make_loop(), 5)  # 4 batches per epoch
    interrupted = make_loop()
    _batches(interrupted, 3)
    state = interrupted.state_dict()
    resumed = make_loop()
    resumed.load_state_dict(state)
    continued = _batches(resumed, 2)
    assert [batch["example_ids"] for batch in continued] == [batch["example_ids"] for batch in reference[3:]]
    assert all(torch.equal(a["input_values"], b["input_values"]) for a, b in zip(reference[3:], continued))
    # both workers contributed: the first epoch covers all 8 clips
    assert len({key for batch in reference[:4] for key in batch["example_ids"]}) == 8


def test_demo_corpus(tmp_path):
    corpus = build_demo_corpus(str(tmp_path / "demo"), num_clips=12, seed=0, num_probe_clips_per_class=2)
    infos = [
        sf.info(os.path.join(corpus.pretrain_dir, name))
        for name in sorted(os.listdir(corpus.pretrain_dir))
        if "corrupted" not in name
    ]
    assert len(infos) == 12 and all(6.5 <= info.duration <= 10.0 for info in infos)
    dataset, column = load_audio_stream(dataset_dir=corpus.pretrain_dir)
    stream = build_crop_stream(dataset, column)
    crops = [crop for _, crop in _iterate(stream)]
    assert len(crops) == 12 and stream.counters.num_corrupted == 1
    assert all(np.abs(crop).max() > 0.05 for crop in crops)
    with open(os.path.join(corpus.probe_dir, "metadata.csv")) as handle:
        assert len(handle.readlines()) == 1 + 2 * len(corpus.class_names)


@pytest.mark.parametrize("buffer_size", [2, 8])
def test_resume_with_a_shuffle_buffer_loses_at_most_the_buffer(tmp_path, buffer_size):
    """`datasets` does not save the shuffle buffer: after a resume, the clips that sat in it are not seen again in
    that epoch. Measured here (16 clips, 6 consumed before the checkpoint): 2 lost with a buffer of 2, 6 with 8.
    Never more than the buffer, and no clip is seen twice."""
    folder = _write_folder(
        tmp_path / "corpus", [(f"c{i:02d}.flac", _tone(6.2, 16000, 100 + 40 * i), 16000) for i in range(16)]
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))

    def make_loop():
        stream = build_crop_stream(dataset, column, seed=1, shuffle_buffer_size=buffer_size)
        return PretrainingDataLoop(stream, batch_size=2, num_workers=0)

    interrupted = make_loop()
    before = [key for batch in _batches(interrupted, 3) for key in batch["example_ids"]]
    resumed = make_loop()
    resumed.load_state_dict(json.loads(json.dumps(interrupted.state_dict())))
    after = []
    for batch in resumed:
        if resumed.epoch != 0:
            break
        after += batch["example_ids"]
    assert len(set(before)) == len(before) == 6 and set(before).isdisjoint(after) and len(set(after)) == len(after)
    lost = 16 - len(before) - len(after)
    assert 0 < lost <= buffer_size
