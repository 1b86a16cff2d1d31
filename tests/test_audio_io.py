# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""src/matpac_hf/audio_io.py: one decoder for every input form, down-mix, resampling, crops, the bad-file policy."""

import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from matpac_hf.audio_io import (
    AUDIO_FILE_EXTENSIONS,
    AudioDecodeError,
    crop_offset,
    decode_audio,
    decode_audio_column,
    decode_random_crop,
    list_audio_files,
)
from matpac_hf.configuration_matpac import num_samples_for_frames


CORRUPTED = b"fLaC" + bytes(range(256)) * 8
CROP_SAMPLES = num_samples_for_frames(608)


def tone(seconds, sampling_rate, frequency=440.0, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    mono = 0.5 * np.sin(2 * np.pi * frequency * t) + 0.05 * rng.standard_normal(t.shape[0])
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono, 0.3 * mono[::-1]], axis=1).astype(np.float32)


def test_stereo_44k_becomes_mono_16k_from_every_input_form(tmp_path):
    stereo = tone(3.0, 44100, 1000, channels=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    mono = decode_audio(str(path))
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert mono.shape[0] == round(stereo.shape[0] * 16000 / 44100) == 48000
    expected = soxr.resample(stereo.mean(axis=1), 44100, 16000, quality="HQ")
    np.testing.assert_allclose(mono, expected, atol=1e-5)
    spectrum = np.abs(np.fft.rfft(mono))  # the 1 kHz tone survives at 16 kHz
    assert abs(np.argmax(spectrum) * 16000 / mono.shape[0] - 1000) < 2
    data = path.read_bytes()
    for same in (path, data, {"bytes": data, "path": "x.wav"}, {"bytes": None, "path": str(path)}):
        np.testing.assert_array_equal(decode_audio(same), mono)
    # datasets' decoded form, (samples, channels) or (channels, samples)
    for array in (stereo, stereo.T):
        np.testing.assert_allclose(decode_audio({"array": array, "sampling_rate": 44100}), mono, atol=1e-6)


def test_decode_errors_name_the_file(tmp_path):
    (tmp_path / "bad.flac").write_bytes(CORRUPTED)
    with pytest.raises(AudioDecodeError, match="bad.flac"):
        decode_audio(str(tmp_path / "bad.flac"))
    with pytest.raises(AudioDecodeError, match="does not exist"):
        decode_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioDecodeError, match="URL"):
        decode_audio("https://example.com/clip.wav")
    with pytest.raises(AudioDecodeError, match="non-finite"):
        decode_audio({"array": np.array([0.0, np.nan] * 100), "sampling_rate": 16000})
    assert issubclass(AudioDecodeError, ValueError)


def test_integer_pcm_arrays_are_scaled_as_the_feature_extractor_scales_them():
    """An integer `{"array"}` is PCM: int16 / 32768 and uint8 (x - 128) / 128, not the raw integers as floats."""
    pcm = (tone(1.0, 16000) * 32767).astype(np.int16)
    np.testing.assert_array_equal(decode_audio({"array": pcm, "sampling_rate": 16000}), pcm / np.float32(32768))
    unsigned = np.array([0, 64, 128, 255] * 200, dtype=np.uint8)
    expected = (unsigned.astype(np.float32) - 128) / 128
    np.testing.assert_array_equal(decode_audio({"array": unsigned, "sampling_rate": 16000}), expected)


def test_list_audio_files_uses_the_one_extension_list(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.WAV", "a/b/y.flac", "z.mp3", "notes.txt", "a/meta.csv"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_audio_files(tmp_path)] == [
        "a/b/y.flac",
        "a/x.WAV",
        "z.mp3",
    ]
    assert ".opus" in AUDIO_FILE_EXTENSIONS and ".au" in AUDIO_FILE_EXTENSIONS
    with pytest.raises(ValueError, match="not a directory"):
        list_audio_files(tmp_path / "z.mp3")


def test_decode_audio_column_skip_counts_and_error_refuses(tmp_path):
    from datasets import Audio, Dataset

    sf.write(tmp_path / "good.wav", tone(0.5, 8000), 8000)
    (tmp_path / "bad.flac").write_bytes(CORRUPTED)
    files = [str(tmp_path / "good.wav"), str(tmp_path / "bad.flac"), str(tmp_path / "good.wav")]
    dataset = Dataset.from_dict({"audio": files, "label": [0, 1, 2]})
    transform = decode_audio_column("audio", bad_audio="skip")
    decoded = dataset.map(transform, batched=True)
    assert decoded["label"] == [0, 2] and transform.policy.num_skipped == 1
    assert (
        transform.policy.skipped_names == [files[1]] and "1 unreadable clip(s) skipped" in transform.policy.summary()
    )
    row = decoded[0]["audio"]
    assert row["sampling_rate"] == 16000 and row["path"] == files[0] and len(row["array"]) == 8000
    np.testing.assert_allclose(row["array"], decode_audio(files[0]), atol=1e-7)
    with pytest.raises(AudioDecodeError, match=r"bad\.flac.*--bad_audio skip"):
        dataset.map(decode_audio_column("audio"), batched=True)
    with pytest.raises(ValueError, match="bad_audio must be one of"):
        decode_audio_column("audio", bad_audio="ignore")

    # An Audio(decode=False) column (no torchcodec needed): stored with `map` and the transform's features, or decoded
    # on access with `with_transform`, also through a later `map` that drops the column.
    undecoded = dataset.select([0, 2]).cast_column("audio", Audio(decode=False))
    decode = decode_audio_column("audio", sampling_rate=8000)
    stored = undecoded.map(decode, batched=True, features=decode.features(undecoded.features))
    assert len(stored[0]["audio"]["array"]) == 4000 and stored[1]["audio"]["path"] == files[2]
    on_access = undecoded.with_transform(decode)
    assert len(on_access[0]["audio"]["array"]) == 4000
    lengths = on_access.map(
        lambda b: {"n": [len(a["array"]) for a in b["audio"]]}, batched=True, remove_columns="audio"
    )
    assert lengths["n"] == [4000, 4000]


@pytest.mark.parametrize("sampling_rate,channels", [(16000, 1), (44100, 2), (48000, 1)])
def test_segment_crop_equals_crop_of_full_decode(tmp_path, sampling_rate, channels):
    clip = tone(9.3, sampling_rate, 700, channels=channels, seed=3)
    path = str(tmp_path / "clip.wav")
    sf.write(path, clip, sampling_rate, subtype="FLOAT")
    full = decode_audio(path)
    for epoch in range(3):
        crop, num_valid = decode_random_crop(path, CROP_SAMPLES, seed=5, epoch=epoch, key="clip")
        assert crop.shape == (CROP_SAMPLES,) and crop.dtype == np.float32 and num_valid == CROP_SAMPLES
        offset = crop_offset(full.shape[0], CROP_SAMPLES, 5, epoch, "clip")
        np.testing.assert_allclose(crop, full[offset : offset + CROP_SAMPLES], atol=2e-3)
    offsets = {crop_offset(full.shape[0], CROP_SAMPLES, 5, epoch, "clip") for epoch in range(20)}
    assert len(offsets) > 15 and max(offsets) <= full.shape[0] - CROP_SAMPLES


def test_short_clip_crop_is_dropped_or_padded_with_its_valid_length():
    buffer = io.BytesIO()
    sf.write(buffer, tone(2.0, 44100, 300), 44100, format="FLAC")
    audio = {"bytes": buffer.getvalue(), "path": "short.flac"}
    assert decode_random_crop(audio, CROP_SAMPLES, min_clip_policy="drop") == (None, 0)
    crop, num_valid = decode_random_crop(audio, CROP_SAMPLES, min_clip_policy="pad")
    assert crop.shape == (CROP_SAMPLES,) and num_valid == 32000
    np.testing.assert_allclose(crop[:32000], decode_audio(audio), atol=1e-4)
    assert np.count_nonzero(crop[32000:]) == 0
    with pytest.raises(ValueError, match="min_clip_policy"):
        decode_random_crop(audio, CROP_SAMPLES, min_clip_policy="loop")
