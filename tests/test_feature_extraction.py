# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""MatpacFeatureExtractor against an independent numpy + librosa reference of the front end (docs/method.md, section 1)."""

import json
import logging as std_logging

import librosa
import numpy as np
import pytest
import scipy.signal
import torch
from transformers import AutoFeatureExtractor
from transformers.audio_utils import mel_filter_bank
from transformers.testing_utils import CaptureLogger

from matpac_hf import MatpacConfig
from matpac_hf.feature_extraction_matpac import MatpacFeatureExtractor
from matpac_hf.feature_extraction_matpac import logger as extractor_logger


SAMPLING_RATE = 16000


def make_audio(num_samples: int, seed: int = 0) -> np.ndarray:
    """Chirp + tones + noise with a loud and a silent stretch, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SAMPLING_RATE
    audio = 0.3 * np.sin(2 * np.pi * (200 + 3000 * t) * t) + 0.2 * np.sin(2 * np.pi * 5000 * t)
    audio += 0.05 * rng.standard_normal(num_samples)
    audio *= 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)  # slow amplitude envelope
    audio[num_samples // 3 : num_samples // 3 + 2000] = 0.0  # digital silence: exercises the log offset
    return np.clip(audio, -1, 1).astype(np.float32)


def reference_log_mel(audio: np.ndarray) -> np.ndarray:
    """docs/method.md, section 1, written independently: manual framing, numpy rfft, librosa filters, float64. (frames, 80)."""
    n_fft, hop = 400, 160
    num_frames = 1 + (len(audio) - n_fft) // hop
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)  # periodic Hann
    starts = np.arange(num_frames)[:, None] * hop
    frames = audio.astype(np.float64)[starts + np.arange(n_fft)[None, :]]  # (frames, 400)
    power = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=-1)) ** 2  # (frames, 201)
    filters = librosa.filters.mel(
        sr=SAMPLING_RATE, n_fft=n_fft, n_mels=80, fmin=50, fmax=8000, htk=False, norm="slaney"
    )
    mel = filters.astype(np.float64) @ power.T  # (80, frames)
    log_mel = np.log(mel + np.finfo(np.float32).eps)
    return ((log_mel - (-7.056)) / 4.193).T  # (frames, 80), the feature extractor's layout


@pytest.fixture(scope="module")
def extractor():
    return MatpacFeatureExtractor()


def test_mel_filter_bank_matches_librosa(extractor):
    librosa_filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=50, fmax=8000, htk=False, norm="slaney")
    hf_filters = mel_filter_bank(201, 80, 50.0, 8000.0, 16000, norm="slaney", mel_scale="slaney", dtype=np.float32)
    assert hf_filters.shape == (201, 80)
    assert np.abs(hf_filters.T - librosa_filters).max() <= 1e-6
    assert np.abs(extractor.mel_filters.T - librosa_filters).max() <= 1e-6
    # Slaney area normalisation: the peak of each triangle is 2 / (bandwidth in Hz), so the peaks fall with frequency
    assert extractor.mel_filters.max(axis=0)[-1] < extractor.mel_filters.max(axis=0)[10] < 0.05


@pytest.mark.parametrize(
    "num_samples, expected_frames",
    [(400, 1), (2720, 15), (16000, 98), (97280, 606), (97520, 608), (219200, 1368)],
)
def test_log_mel_matches_reference(extractor, num_samples, expected_frames):
    audio = make_audio(num_samples, seed=num_samples)
    features = extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="np")
    input_values = features["input_values"]
    assert input_values.shape == (1, expected_frames, 80)
    assert input_values.dtype == np.float32
    assert extractor.num_frames(num_samples) == expected_frames
    reference = reference_log_mel(audio)
    assert reference.shape == (expected_frames, 80)
    assert np.abs(input_values[0] - reference).max() <= 1e-4
    np.testing.assert_array_equal(features["attention_mask"], np.ones((1, expected_frames), np.int32))


def test_torch_path_matches_reference(extractor):
    audio = np.stack([make_audio(16000, seed=1), make_audio(16000, seed=2)])  # (2, 16000)
    log_mel = extractor.extract_log_mel(torch.from_numpy(audio))
    assert log_mel.shape == (2, 98, 80) and log_mel.dtype == torch.float32
    for row in range(2):
        assert np.abs(log_mel[row].numpy() - reference_log_mel(audio[row])).max() <= 1e-4


def test_extract_log_mel_is_float32_under_bf16_autocast(extractor):
    waveforms = torch.from_numpy(np.stack([make_audio(9000, seed=3), make_audio(9000, seed=4)]))
    plain = extractor.extract_log_mel(waveforms)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        autocast = extractor.extract_log_mel(waveforms)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain, rtol=0, atol=0)


def test_extract_log_mel_rejects_bad_tensors(extractor):
    with pytest.raises(ValueError, match=r"\(batch, samples\) tensor.*waveform\[None\]"):
        extractor.extract_log_mel(torch.zeros(16000))
    with pytest.raises(ValueError, match="minimum is 400 samples"):
        extractor.extract_log_mel(torch.zeros(2, 300))
    with pytest.raises(ValueError, match="integer PCM"):
        extractor.extract_log_mel(torch.zeros(2, 1000, dtype=torch.int16))


def test_batch_of_mixed_lengths_is_padded_in_frames(extractor):
    lengths = [16000, 2720, 9000, 16000, 400]
    clips = [make_audio(n, seed=10 + i) for i, n in enumerate(lengths)]
    features = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    input_values, attention_mask = features["input_values"], features["attention_mask"]
    assert input_values.shape == (5, 98, 80)
    assert attention_mask.shape == (5, 98)
    expected_frames = [98, 15, 54, 98, 1]
    assert attention_mask.sum(-1).tolist() == expected_frames
    for row, (clip, num_frames) in enumerate(zip(clips, expected_frames)):
        alone = extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"][0]
        torch.testing.assert_close(input_values[row, :num_frames], alone, rtol=0, atol=1e-6)
        assert np.abs(input_values[row, :num_frames].numpy() - reference_log_mel(clip)).max() <= 1e-4
        assert attention_mask[row, :num_frames].eq(1).all() and attention_mask[row, num_frames:].eq(0).all()
        assert input_values[row, num_frames:].eq(0.0).all()


def test_input_layouts_give_the_same_features(extractor):
    clips = np.stack([make_audio(4000, seed=20), make_audio(4000, seed=21)])  # (2, 4000)
    from_numpy_batch = extractor(clips, sampling_rate=SAMPLING_RATE)["input_values"]
    from_torch_batch = extractor(torch.from_numpy(clips), sampling_rate=SAMPLING_RATE)["input_values"]
    from_list = extractor(list(clips), sampling_rate=SAMPLING_RATE)["input_values"]
    from_float64 = extractor(clips.astype(np.float64), sampling_rate=SAMPLING_RATE)["input_values"]
    from_python_list = extractor(clips[0].tolist(), sampling_rate=SAMPLING_RATE)["input_values"]
    assert from_numpy_batch.shape == (2, 23, 80) and isinstance(from_numpy_batch, np.ndarray)
    np.testing.assert_array_equal(from_torch_batch, from_numpy_batch)
    np.testing.assert_array_equal(from_list, from_numpy_batch)
    np.testing.assert_allclose(from_float64, from_numpy_batch, atol=1e-6, rtol=0)
    np.testing.assert_allclose(from_python_list[0], from_numpy_batch[0], atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------------------------------------
# The padding / truncation contract of transformers' audio feature extractors
# -------------------------------------------------------------------------------------------------------------


def test_attention_mask_is_returned_whenever_asked(extractor):
    """The mask comes with every call (it used to come only when the clips of one call differed in length, so a
    `datasets.map` over batches of equal-length clips stored it for some rows and not others)."""
    same = [make_audio(4000, seed=30), make_audio(4000, seed=31)]
    mixed = [make_audio(4000, seed=30), make_audio(2000, seed=31)]
    np.testing.assert_array_equal(extractor(same, sampling_rate=SAMPLING_RATE)["attention_mask"], np.ones((2, 23)))
    np.testing.assert_array_equal(extractor(same[0], sampling_rate=SAMPLING_RATE)["attention_mask"], np.ones((1, 23)))
    assert extractor(mixed, sampling_rate=SAMPLING_RATE)["attention_mask"].sum(-1).tolist() == [23, 11]
    assert "attention_mask" not in extractor(mixed, sampling_rate=SAMPLING_RATE, return_attention_mask=False)
    never = MatpacFeatureExtractor(return_attention_mask=False)
    assert "attention_mask" not in never(mixed, sampling_rate=SAMPLING_RATE)
    assert "attention_mask" in never(mixed, sampling_rate=SAMPLING_RATE, return_attention_mask=True)
    # a preprocessor_config.json saved before holds return_attention_mask=None: it now means "always"
    assert MatpacFeatureExtractor(return_attention_mask=None).return_attention_mask is True


def test_tutorial_arguments_truncate_in_samples(extractor):
    """`feature_extractor(arrays, sampling_rate=16000, max_length=16000, truncation=True)`, the first line of the HF
    audio-classification tutorial (a TypeError before): max_length counts samples, as for Wav2Vec2FeatureExtractor."""
    clips = [make_audio(40000, seed=32), make_audio(9000, seed=33)]
    features = extractor(clips, sampling_rate=SAMPLING_RATE, max_length=16000, truncation=True, return_tensors="pt")
    assert features["input_values"].shape == (2, 98, 80)  # 16000 samples -> 98 frames
    assert features["attention_mask"].sum(-1).tolist() == [98, 54]
    # exactly the features of the first 16000 samples: the cut is on the audio, before the STFT
    cut = extractor(clips[0][:16000], sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_values"][0]
    assert torch.equal(features["input_values"][0], cut)
    # padding=True / "longest" are the default; a max_length longer than every clip truncates nothing
    for padding in (True, "longest"):
        longest = extractor(clips, sampling_rate=SAMPLING_RATE, padding=padding, max_length=50000, truncation=True)
        assert longest["input_values"].shape == (2, 248, 80)


def test_nothing_is_truncated_without_truncation_true(extractor):
    clip = make_audio(40000, seed=34)
    assert extractor(clip, sampling_rate=SAMPLING_RATE, max_length=16000)["input_values"].shape == (1, 248, 80)
    with pytest.raises(ValueError, match=r"longer than max_length=16000 samples.*truncation=True"):
        extractor(clip, sampling_rate=SAMPLING_RATE, padding="max_length", max_length=16000)
    with pytest.raises(ValueError, match=r"truncation=True needs max_length \(in samples\)"):
        extractor(clip, sampling_rate=SAMPLING_RATE, truncation=True)
    with pytest.raises(ValueError, match="counts samples of the input audio"):
        extractor(clip, sampling_rate=SAMPLING_RATE, max_length=98, truncation=True)  # frames given as samples


def test_padding_max_length_and_pad_to_multiple_of(extractor):
    clips = [make_audio(9000, seed=35), make_audio(3000, seed=36)]
    features = extractor(clips, sampling_rate=SAMPLING_RATE, padding="max_length", max_length=16000)
    assert features["input_values"].shape == (2, extractor.num_frames(16000), 80) == (2, 98, 80)
    assert features["attention_mask"].sum(-1).tolist() == [54, 17]
    assert (features["input_values"][1, 17:] == extractor.padding_value).all()
    alone = extractor(clips[1], sampling_rate=SAMPLING_RATE)["input_values"][0]
    np.testing.assert_array_equal(features["input_values"][1, :17], alone)
    multiple = extractor(clips, sampling_rate=SAMPLING_RATE, pad_to_multiple_of=16, return_tensors="pt")
    assert multiple["input_values"].shape == (2, 64, 80) and multiple["attention_mask"].sum(-1).tolist() == [54, 17]
    with pytest.raises(ValueError, match="make sure that max_length is defined"):
        extractor(clips, sampling_rate=SAMPLING_RATE, padding="max_length")


def test_no_padding_gives_one_array_per_clip(extractor):
    clips = [make_audio(9000, seed=37), make_audio(3000, seed=38)]
    features = extractor(clips, sampling_rate=SAMPLING_RATE, padding=False)
    assert [values.shape for values in features["input_values"]] == [(54, 80), (17, 80)]
    assert [mask.tolist() for mask in features["attention_mask"]] == [[1] * 54, [1] * 17]
    padded = extractor(clips, sampling_rate=SAMPLING_RATE)
    np.testing.assert_array_equal(features["input_values"][1], padded["input_values"][1, :17])
    with pytest.raises(ValueError, match="padding=False with clips of different lengths"):
        extractor(clips, sampling_rate=SAMPLING_RATE, padding=False, return_tensors="pt")
    same = extractor([clips[0], clips[0]], sampling_rate=SAMPLING_RATE, padding=False, return_tensors="pt")
    assert same["input_values"].shape == (2, 54, 80)


def test_pad_batches_the_extractors_own_outputs(extractor):
    """`pad()` (what DataCollatorWithPadding calls) on rows featurised one by one, as a `datasets.map` stores them
    (nested Python lists), gives bit for bit what one padded call gives."""
    from transformers import DataCollatorWithPadding

    clips = [make_audio(n, seed=60 + i) for i, n in enumerate([16000, 2720, 9000])]
    expected = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    rows = []
    for label, clip in enumerate(clips):
        features = extractor(clip, sampling_rate=SAMPLING_RATE)
        rows.append({key: value[0].tolist() for key, value in features.items()} | {"label": label})
    batch = DataCollatorWithPadding(extractor)(rows)
    assert set(batch) == {"input_values", "attention_mask", "labels"}
    assert torch.equal(batch["input_values"], expected["input_values"])
    assert torch.equal(batch["attention_mask"].long(), expected["attention_mask"].long())
    assert batch["labels"].tolist() == [0, 1, 2]
    # rows of different map batches (each padded to its own longest clip, with its mask) pad again correctly
    first = extractor(clips[:2], sampling_rate=SAMPLING_RATE)
    second = extractor(clips[2:], sampling_rate=SAMPLING_RATE)
    rows = [
        {key: value[i] for key, value in part.items()}
        for part in (first, second)
        for i in range(len(part["input_values"]))
    ]
    repadded = extractor.pad(rows, return_tensors="pt", pad_to_multiple_of=16)
    assert repadded["input_values"].shape == (3, 112, 80)
    assert repadded["attention_mask"].sum(-1).tolist() == [98, 15, 54]
    assert torch.equal(repadded["input_values"][:, :98], expected["input_values"])


def test_integer_pcm_is_scaled_by_dtype_range(extractor):
    rng = np.random.default_rng(5)
    int16 = rng.integers(-32768, 32768, 8000, dtype=np.int16)
    expected = extractor(int16.astype(np.float32) / 32768, sampling_rate=SAMPLING_RATE)["input_values"]
    np.testing.assert_allclose(extractor(int16, sampling_rate=SAMPLING_RATE)["input_values"], expected, atol=1e-6)

    int32 = int16.astype(np.int32) * 65536  # same waveform at 32-bit
    np.testing.assert_allclose(extractor(int32, sampling_rate=SAMPLING_RATE)["input_values"], expected, atol=1e-6)

    uint8 = rng.integers(0, 256, 8000, dtype=np.uint8)
    expected_uint8 = extractor((uint8.astype(np.float32) - 128) / 128, sampling_rate=SAMPLING_RATE)["input_values"]
    from_uint8 = extractor(uint8, sampling_rate=SAMPLING_RATE)["input_values"]
    np.testing.assert_allclose(from_uint8, expected_uint8, atol=1e-6)

    int8 = (uint8.astype(np.int16) - 128).astype(np.int8)  # same waveform as signed 8-bit
    np.testing.assert_allclose(extractor(int8, sampling_rate=SAMPLING_RATE)["input_values"], expected_uint8, atol=1e-6)

    torch_int16 = extractor(torch.from_numpy(int16), sampling_rate=SAMPLING_RATE)["input_values"]
    np.testing.assert_allclose(torch_int16, expected, atol=1e-6)


@pytest.mark.parametrize(
    "audio, kwargs, message",
    [
        (np.zeros(16000, np.float32), {"sampling_rate": 44100}, r"44100 Hz.*expects 16000 Hz.*soxr\.resample"),
        (np.zeros(16000, np.float32), {"sampling_rate": 8000}, r"librosa\.resample"),
        (np.zeros(0, np.float32), {}, "empty"),
        ([], {}, "empty"),
        (np.zeros(399, np.float32), {}, r"399 samples; the minimum is 400 samples \(25 ms"),
        ([np.zeros(16000, np.float32), np.zeros(399, np.float32)], {}, r"Clip 1 has 399 samples"),
        (np.array([0.1] * 500 + [np.nan] * 10, np.float32), {}, "NaN or Inf"),
        (np.array([0.1] * 500 + [np.inf], np.float32), {}, "NaN or Inf"),
        ([np.zeros(16000, np.float32), np.zeros((2, 16000), np.float32)], {}, r"Clip 1 is 2-D.*mean\(axis=0\)"),
        ([np.zeros((16000, 2), np.float32)], {}, r"Clip 0 is 2-D.*\(samples, channels\).*mean\(axis=1\)"),
        (np.zeros((48000, 2), np.float32), {}, r"looks like \(samples, channels\).*soundfile.*audio\.mean\(axis=1\)"),
        (torch.zeros(16000, 6), {}, r"\(16000, 6\), which looks like \(samples, channels\)"),
        (np.zeros((2, 3, 16000), np.float32), {}, r"3-D"),
        (torch.zeros(1, 2, 16000), {}, r"3-D"),
        (np.ones(16000, dtype=bool), {}, "dtype bool"),
        (np.ones(16000, dtype=np.complex64), {}, "dtype complex64"),
        (np.array([object()] * 500), {}, "dtype object"),
        ("audio.wav", {}, "type str is not supported"),
    ],
)
def test_bad_input_raises_clear_error(extractor, audio, kwargs, message):
    kwargs.setdefault("sampling_rate", SAMPLING_RATE)
    with pytest.raises(ValueError, match=message):
        extractor(audio, **kwargs)


def test_bad_return_tensors_raises(extractor):
    with pytest.raises(ValueError, match="'pt' or 'np'"):
        extractor(make_audio(1000), sampling_rate=SAMPLING_RATE, return_tensors="mlx")


def test_missing_sampling_rate_warns_once(extractor):
    std_logging.Logger.warning_once.cache_clear()
    audio = make_audio(1000)
    with CaptureLogger(extractor_logger) as captured:
        extractor(audio)
        extractor(audio)
    assert captured.out.count("assuming 16000 Hz") == 1
    with CaptureLogger(extractor_logger) as captured:
        extractor(audio, sampling_rate=SAMPLING_RATE)
    assert captured.out == ""


def test_save_and_load_round_trip(extractor, tmp_path):
    custom = MatpacFeatureExtractor(spectrogram_mean=-5.0, spectrogram_std=3.0, f_min=30.0)
    custom.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    for name, value in {
        "sampling_rate": 16000,
        "n_fft": 400,
        "win_length": 400,
        "hop_length": 160,
        "num_mel_bins": 80,
        "feature_size": 80,
        "f_min": 30.0,
        "f_max": 8000.0,
        "log_offset": float(np.finfo(np.float32).eps),
        "spectrogram_mean": -5.0,
        "spectrogram_std": 3.0,
        "padding_value": 0.0,
    }.items():
        assert saved[name] == value, name
    assert "mel_filters" not in saved and "window" not in saved and "_torch_constants" not in saved

    audio = [make_audio(5000, seed=40), make_audio(3000, seed=41)]
    reloaded = MatpacFeatureExtractor.from_pretrained(tmp_path)
    MatpacConfig().save_pretrained(tmp_path)  # a model folder: AutoFeatureExtractor next to a MATPAC config.json
    auto_loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(auto_loaded) is MatpacFeatureExtractor
    expected = custom(audio, sampling_rate=SAMPLING_RATE)
    for loaded in (reloaded, auto_loaded):
        assert loaded.to_dict() == custom.to_dict()
        features = loaded(audio, sampling_rate=SAMPLING_RATE)
        np.testing.assert_array_equal(features["input_values"], expected["input_values"])
        np.testing.assert_array_equal(features["attention_mask"], expected["attention_mask"])
    # the custom statistics are really used
    default = extractor(audio, sampling_rate=SAMPLING_RATE)["input_values"]
    assert np.abs(default - expected["input_values"]).max() > 0.1


def test_inconsistent_feature_size_is_refused():
    with pytest.raises(ValueError, match="give only num_mel_bins"):
        MatpacFeatureExtractor(num_mel_bins=80, feature_size=128)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu(extractor):
    clips = [make_audio(16000, seed=50), make_audio(9000, seed=51)]
    cpu = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    cuda = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt", device="cuda")
    assert cuda["input_values"].device.type == "cuda"
    torch.testing.assert_close(cuda["input_values"].cpu(), cpu["input_values"], rtol=0, atol=1e-4)
    torch.testing.assert_close(cuda["attention_mask"].cpu(), cpu["attention_mask"])
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        log_mel = extractor.extract_log_mel(torch.from_numpy(clips[0])[None].cuda())
    assert log_mel.dtype == torch.float32
    torch.testing.assert_close(log_mel.cpu(), cpu["input_values"][:1], rtol=0, atol=1e-4)


def test_from_model_config_copies_the_front_end():
    config = MatpacConfig(num_mel_bins=64, f_min=20.0, spectrogram_mean=-5.0, spectrogram_std=3.0, hop_length=320)
    feature_extractor = MatpacFeatureExtractor.from_model_config(config, return_attention_mask=True)
    for name in MatpacFeatureExtractor.FRONT_END_FIELDS:
        assert getattr(feature_extractor, name) == getattr(config, name), name
    assert feature_extractor.return_attention_mask is True
    assert feature_extractor(np.zeros(16000, dtype=np.float32))["input_values"].shape == (
        1,
        1 + (16000 - 400) // 320,
        64,
    )
