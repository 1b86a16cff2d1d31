# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The resumable pretraining stream (src/matpac_hf/pretraining_data.py): decode guard, crops, short clips (drop, pad
and the valid-frame mask), counters seen from the training process, split by process, exact resume; the demo corpus."""

import io
import json
import logging
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from demo_corpus import build_demo_corpus
from test_audio_io import CORRUPTED, tone

from matpac_hf import MatpacFeatureExtractor, pretraining_data
from matpac_hf.audio_io import AudioDecodeError, decode_audio
from matpac_hf.configuration_matpac import num_samples_for_frames
from matpac_hf.pretraining_data import (
    CROP_FRAMES,
    PretrainingDataLoop,
    build_crop_stream,
    frame_attention_mask,
    load_audio_stream,
    stateful_dataloader_class,
)


CROP_SAMPLES = num_samples_for_frames(CROP_FRAMES)


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


def _iterate(stream):
    return [(item["example_id"], item["input_values"]) for item in stream]


@pytest.mark.parametrize("crop_frames", [CROP_FRAMES, 304])
def test_crops_give_crop_frames_log_mel_frames(tmp_path, crop_frames):
    folder = _write_folder(tmp_path / "corpus", [("a.flac", tone(6.5, 16000), 16000)])
    dataset, column = load_audio_stream(dataset_dir=str(folder))
    (item,) = list(build_crop_stream(dataset, column, crop_frames=crop_frames))
    log_mel = MatpacFeatureExtractor().extract_log_mel(torch.from_numpy(item["input_values"])[None])
    assert log_mel.shape == (1, crop_frames, 80) and item["num_valid_samples"] == item["input_values"].shape[0]


def test_decode_guard_skips_and_counts_a_corrupted_file(tmp_path):
    folder = _write_folder(
        tmp_path / "corpus",
        [
            ("a.flac", tone(6.5, 16000, 220), 16000),
            ("b_corrupted.flac", CORRUPTED, None),
            ("c.flac", tone(7.0, 16000, 330), 16000),
            ("d.flac", tone(8.0, 16000, 440), 16000),
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
        {"bytes": _flac_bytes(tone(6.5, 16000), 16000), "path": "good1.flac"},
        {"bytes": CORRUPTED, "path": "bad.flac"},
        {"bytes": _flac_bytes(tone(7.0, 16000, 550), 16000), "path": "good2.flac"},
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


def test_short_clips_are_dropped_or_padded(tmp_path):
    folder = _write_folder(
        tmp_path / "corpus",
        [
            ("long.flac", tone(6.2, 16000), 16000),
            ("short.flac", tone(5.0, 16000, 300), 16000),
            ("short44.flac", tone(2.0, 44100, 300), 44100),
        ],
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))
    dropping = build_crop_stream(dataset, column, min_clip_policy="drop")
    assert [os.path.basename(key) for key, _ in _iterate(dropping)] == ["long.flac"]
    assert dropping.counters.num_too_short == 2
    padding = build_crop_stream(dataset, column, min_clip_policy="pad")
    items = {item["example_id"]: item for item in padding}
    assert padding.counters.num_padded == 2 and padding.counters.num_yielded == 3
    short = items[str(folder / "short.flac")]
    assert short["input_values"].shape == (CROP_SAMPLES,) and short["num_valid_samples"] == 80000
    np.testing.assert_allclose(short["input_values"][:80000], decode_audio(str(folder / "short.flac")), atol=1e-4)
    assert np.all(short["input_values"][80000:] == 0.0)
    assert items[str(folder / "short44.flac")]["num_valid_samples"] == 32000
    assert items[str(folder / "long.flac")]["num_valid_samples"] == CROP_SAMPLES
    with pytest.raises(ValueError, match="min_clip_policy"):
        build_crop_stream(dataset, column, min_clip_policy="loop")

    # The batch's valid-frame mask marks exactly the frames computed from real samples: on them the padded crop's
    # log-mel equals the log-mel of the clip alone (the feature extractor's own attention mask of the clip).
    batch = pretraining_data.collate_crops([items[str(folder / "short.flac")], items[str(folder / "long.flac")]])
    mask = frame_attention_mask(batch["num_valid_samples"], CROP_FRAMES)
    feature_extractor = MatpacFeatureExtractor()
    alone = feature_extractor(
        decode_audio(str(folder / "short.flac")), return_tensors="pt", return_attention_mask=True
    )
    assert mask.dtype == torch.int32 and mask[0].sum() == alone["attention_mask"].sum() == 498
    assert mask[1].sum() == CROP_FRAMES and bool(mask[0, :498].all()) and not mask[0, 498:].any()
    padded_log_mel = feature_extractor.extract_log_mel(batch["input_values"])
    torch.testing.assert_close(padded_log_mel[0, :498], alone["input_values"][0], atol=1e-5, rtol=0)
    assert not torch.allclose(padded_log_mel[0, 498:500], padded_log_mel[0, 496:498])  # the padding differs


def test_dropped_clips_are_counted_in_the_training_process_with_a_worker_and_explained(tmp_path):
    """Every clip shorter than the crop: the error names the real counts, also when a DataLoader worker did the
    decoding (its counters live in shared memory), and the fix."""
    folder = _write_folder(
        tmp_path / "corpus", [(f"s{i}.flac", tone(1.0, 16000, 200 + 50 * i), 16000) for i in range(5)]
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))
    for num_workers in (0, 1):
        loop = PretrainingDataLoop(build_crop_stream(dataset, column), batch_size=2, num_workers=num_workers)
        with pytest.raises(ValueError, match=r"of 5 clips read, 5 were shorter than the 608-frame crop") as error:
            next(iter(loop))
        assert "--min_clip_policy pad" in str(error.value) and "--crop_frames" in str(error.value)
        assert loop.stats.totals()["num_too_short"] == 5
    # with padding the same corpus trains, and a shorter crop keeps all clips without padding
    loop = PretrainingDataLoop(build_crop_stream(dataset, column, min_clip_policy="pad"), batch_size=2, num_workers=1)
    batch = next(iter(loop))
    assert batch["num_valid_samples"].tolist() == [16000, 16000] and loop.stats.totals()["num_padded"] >= 2
    loop = PretrainingDataLoop(build_crop_stream(dataset, column, crop_frames=96), batch_size=5)
    assert next(iter(loop))["input_values"].shape == (5, num_samples_for_frames(96))


def test_early_warning_when_most_clips_are_dropped(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(pretraining_data, "EARLY_DROP_WARNING_CLIPS", 4)
    clips = [(f"s{i}.flac", tone(1.0, 16000), 16000) for i in range(3)] + [("long.flac", tone(6.2, 16000), 16000)]
    dataset, column = load_audio_stream(dataset_dir=str(_write_folder(tmp_path / "corpus", clips)))
    with caplog.at_level(logging.WARNING, logger="matpac_hf.pretraining_data"):
        assert len(list(build_crop_stream(dataset, column))) == 1
    (warning,) = [r.getMessage() for r in caplog.records if "of the first" in r.getMessage()]
    assert warning.startswith("3 of the first 4 clips were dropped: 3 shorter than the 608-frame crop (6.09 s)")
    assert "--min_clip_policy pad" in warning and "--crop_frames" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="matpac_hf.pretraining_data"):
        list(build_crop_stream(dataset, column, min_clip_policy="pad"))
    assert not [r for r in caplog.records if "of the first" in r.getMessage()]


def test_bad_audio_error_stops_the_stream_with_the_file_name(tmp_path):
    folder = _write_folder(tmp_path / "corpus", [("a.flac", tone(6.5, 16000), 16000), ("b.flac", CORRUPTED, None)])
    dataset, column = load_audio_stream(dataset_dir=str(folder))
    with pytest.raises(AudioDecodeError, match=r"b\.flac.*--bad_audio skip"):
        list(build_crop_stream(dataset, column, bad_audio="error"))


def test_two_ranks_see_disjoint_examples(tmp_path):
    folder = _write_folder(
        tmp_path / "corpus", [(f"c{i:02d}.flac", tone(6.2, 16000, 200 + 40 * i), 16000) for i in range(9)]
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
        [(f"c{i:02d}.flac", tone(6.5 + 0.3 * i, rates[i], 150 + 50 * i), rates[i]) for i in range(7)],
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
                data = _flac_bytes(tone(6.3, 16000, 100 * (shard * 4 + i + 1)), 16000)
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
        tmp_path / "corpus", [(f"c{i:02d}.flac", tone(6.2, 16000, 100 + 40 * i), 16000) for i in range(16)]
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


def test_decoded_clip_cache_gives_the_crops_of_the_files(tmp_path):
    """With the in-memory cache, every epoch yields the crops read from the files (bitwise for 16 kHz clips, within
    the resampling filter's rounding for a 44.1 kHz one), short clips are padded the same way, unreadable clips are
    skipped and counted every epoch, and a cache too small for the corpus falls back to reading crops."""
    folder = _write_folder(
        tmp_path / "corpus",
        [
            ("a.flac", tone(6.5, 16000, 220), 16000),
            ("b_corrupted.flac", CORRUPTED, None),
            ("c.wav", tone(9.0, 16000, 330), 16000),
            ("d.flac", tone(8.0, 44100, 440), 44100),
            ("e_short.flac", tone(2.0, 16000, 550), 16000),
        ],
    )
    dataset, column = load_audio_stream(dataset_dir=str(folder))

    def epochs(**kwargs):
        stream = build_crop_stream(dataset, column, seed=3, min_clip_policy="pad", **kwargs)
        items = []
        for epoch in range(3):
            stream.set_epoch(epoch)
            items.append({item["example_id"]: item for item in stream})
            assert stream.counters.num_corrupted == 1 and stream.counters.num_padded == 1
        return stream, items

    _, read = epochs()
    cached_stream, cached = epochs(cache_bytes=2**24)
    assert len(cached_stream.cache) == 4 and not cached_stream.cache.full  # the corrupted file is never cached
    assert cached_stream.cache.num_bytes == 4 * (6.5 + 9.0 + 8.0 + 2.0) * 16000
    for from_files, from_cache in zip(read, cached):
        assert sorted(from_files) == sorted(from_cache) and len(from_files) == 4
        for key, item in from_files.items():
            assert from_cache[key]["num_valid_samples"] == item["num_valid_samples"]
            if key.endswith("d.flac"):
                np.testing.assert_allclose(from_cache[key]["input_values"], item["input_values"], atol=1e-3)
            else:
                np.testing.assert_array_equal(from_cache[key]["input_values"], item["input_values"])
    assert not np.array_equal(
        read[0][str(folder / "a.flac")]["input_values"], read[1][str(folder / "a.flac")]["input_values"]
    )
    assert cached[0][str(folder / "e_short.flac")]["num_valid_samples"] == 32000

    small_stream, small = epochs(cache_bytes=7 * 16000 * 4)  # room for a.flac only
    assert len(small_stream.cache) == 1 and small_stream.cache.full
    for from_files, from_small in zip(read, small):
        for key, item in from_files.items():
            np.testing.assert_allclose(from_small[key]["input_values"], item["input_values"], atol=1e-3)
    with pytest.raises(ValueError, match="positive size"):
        pretraining_data.DecodedClipCache(0)
