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


# ----------------------------------------------------------------------------------------------------------------------
# Containers only FFmpeg reads, and reporting each unreadable file once
# ----------------------------------------------------------------------------------------------------------------------


def without_torchcodec(monkeypatch):
    """Makes `matpac_hf.audio_io` see torchcodec as not installed, whether or not it is here."""
    from matpac_hf import audio_io

    monkeypatch.setattr(audio_io, "torchcodec_error", lambda: "torchcodec is not installed (No module named X)")


def test_ffmpeg_only_containers_are_listed_counted_and_explained_without_torchcodec(tmp_path, monkeypatch, caplog):
    from matpac_hf.audio_io import FFMPEG_AUDIO_EXTENSIONS, BadAudioPolicy

    without_torchcodec(monkeypatch)
    sf.write(tmp_path / "a.flac", tone(0.5, 16000), 16000)
    for extension in FFMPEG_AUDIO_EXTENSIONS:  # contents do not matter: soundfile refuses them all
        (tmp_path / f"clip{extension}").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))
    (tmp_path / "broken.flac").write_bytes(CORRUPTED)
    with caplog.at_level("WARNING"):
        files = list_audio_files(tmp_path)
    assert [path.name for path in files] == sorted(
        ["a.flac", "broken.flac", "clip.aac", "clip.m4a", "clip.mp4", "clip.webm"]
    )
    assert "4 of the 6 audio files" in caplog.text and "clip.m4a" in caplog.text
    assert "pip install torchcodec" in caplog.text and "libavcodec" in caplog.text
    with pytest.raises(AudioDecodeError, match=r"clip\.m4a: soundfile cannot read it .*torchcodec is not installed"):
        decode_audio(tmp_path / "clip.m4a")
    with pytest.raises(AudioDecodeError, match="pip install torchcodec"):
        decode_random_crop(str(tmp_path / "clip.aac"), CROP_SAMPLES)
    with pytest.raises(AudioDecodeError) as corrupted:  # a broken .flac keeps soundfile's own message
        decode_audio(tmp_path / "broken.flac")
    assert "torchcodec" not in str(corrupted.value)

    # --bad_audio error reports every bad file before stopping
    policy = BadAudioPolicy("error", collect=True)
    for path in files:
        try:
            decode_audio(path)
        except AudioDecodeError as error:
            policy.handle(error)
    with pytest.raises(AudioDecodeError, match=r"Cannot decode 5 clip\(s\)") as refused:
        policy.raise_collected()
    assert all(name in str(refused.value) for name in ("clip.m4a", "clip.aac", "clip.mp4", "clip.webm", "broken"))


def test_bad_audio_error_lists_the_first_files_and_the_count():
    from matpac_hf.audio_io import BadAudioPolicy

    policy = BadAudioPolicy("error", collect=True)
    for index in range(25):
        policy.handle(AudioDecodeError(f"bad_{index:02d}.wav: unreadable"))
    with pytest.raises(AudioDecodeError, match=r"Cannot decode 25 clip\(s\)") as refused:
        policy.raise_collected()
    assert "bad_19.wav" in str(refused.value) and "bad_20.wav" not in str(refused.value)
    assert "and 5 more" in str(refused.value)
    with pytest.raises(AudioDecodeError, match=r"bad_00\.wav.*--bad_audio skip"):  # streams stop at the first
        BadAudioPolicy("error").handle(AudioDecodeError("bad_00.wav: unreadable"))


def test_an_unreadable_file_is_logged_once_and_counted_every_time(caplog):
    from matpac_hf.audio_io import BadAudioPolicy

    policy = BadAudioPolicy("skip")
    with caplog.at_level("WARNING"):
        for _ in range(3):  # three epochs over the same two bad files
            policy.handle(AudioDecodeError("x.flac: unreadable"))
            policy.handle(AudioDecodeError("y.flac: unreadable"))
    assert caplog.text.count("Skipping unreadable clip") == 2
    assert policy.num_skipped == 6 and policy.num_files == 2
    assert policy.summary() == "2 unreadable clip(s) skipped (6 skips in all): x.flac, y.flac"


def test_the_crop_stream_logs_an_unreadable_file_in_its_first_epoch_only(tmp_path, caplog):
    from matpac_hf.pretraining_data import PretrainingDataLoop, build_crop_stream, load_audio_stream

    sf.write(tmp_path / "a.flac", tone(6.5, 16000), 16000)
    (tmp_path / "a_corrupted.flac").write_bytes(CORRUPTED)
    dataset, column = load_audio_stream(dataset_dir=str(tmp_path))
    loop = PretrainingDataLoop(build_crop_stream(dataset, column, seed=0), batch_size=1)
    iterator = iter(loop)
    with caplog.at_level("WARNING"):
        for _ in range(4):  # 4 epochs of one readable clip
            next(iterator)
    assert loop.stats.totals()["num_corrupted"] >= 3  # counted in every epoch
    assert caplog.text.count("Skipping unreadable clip") == 1  # logged once


def ffmpeg_encoded(tmp_path, extension, waveform, sampling_rate):
    import torch
    from torchcodec.encoders import AudioEncoder

    path = tmp_path / f"clip{extension}"
    AudioEncoder(torch.from_numpy(waveform)[None], sample_rate=sampling_rate).to_file(str(path))
    return path


@pytest.mark.parametrize("extension", [".m4a", ".aac", ".mp4", ".webm"])
def test_ffmpeg_only_containers_decode_through_torchcodec(tmp_path, extension):
    from matpac_hf.audio_io import torchcodec_error

    if torchcodec_error() is not None:
        pytest.skip(f"FFmpeg decoding needs torchcodec and FFmpeg's shared libraries: {torchcodec_error()}")
    waveform = tone(2.0, 24000, 1000)  # a rate every encoder here takes (opus: 8 to 48 kHz)
    path = ffmpeg_encoded(tmp_path, extension, waveform, 24000)
    with pytest.raises(sf.LibsndfileError):
        sf.read(path)
    assert list_audio_files(tmp_path) == [path]
    decoded = decode_audio(path)  # 16 kHz mono
    assert abs(decoded.shape[0] - 32000) < 0.05 * 32000  # lossy codecs add a few ms of padding
    spectrum = np.abs(np.fft.rfft(decoded))
    assert np.fft.rfftfreq(decoded.shape[0], 1 / 16000)[spectrum.argmax()] == pytest.approx(1000, abs=5)
    assert 0.3 < np.sqrt(np.mean(decoded[4000:-4000] ** 2)) < 0.45  # 0.5 sine plus noise: rms ~0.36
    np.testing.assert_allclose(decode_audio(path.read_bytes()), decoded, atol=1e-6)  # bytes too
    crop, num_valid = decode_random_crop(str(path), 16000, seed=1)
    assert crop.shape == (16000,) and num_valid == 16000
