"""pipeline("audio-feature-extraction") registered by `import matpac_hf`."""

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import pipeline

import matpac_hf  # noqa: F401  (registers the task)
from matpac_hf.pipelines import AudioFeatureExtractionPipeline


@pytest.fixture(scope="module")
def extractor(tiny_matpac_folder):
    return pipeline("audio-feature-extraction", model=str(tiny_matpac_folder))


@pytest.fixture(scope="module")
def audio():
    return np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)  # 1 s -> 98 frames -> 7 columns


def _reference(extractor, waveform):
    features = extractor.feature_extractor(waveform, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return extractor.model(**features)


def test_array_input(extractor, audio):
    assert isinstance(extractor, AudioFeatureExtractionPipeline)
    out = extractor(audio)
    reference = _reference(extractor, audio)
    assert out["clip_embedding"].shape == (160,) and out["clip_embedding"].dtype == np.float32
    assert out["frame_embeddings"].shape == (7, 160)
    np.testing.assert_allclose(out["timestamps_ms"], 87.5 + 160 * np.arange(7))  # column centres, regular (hear.py)
    np.testing.assert_allclose(out["clip_embedding"], reference.pooler_output[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["frame_embeddings"], reference.last_hidden_state[0].numpy(), atol=1e-5)
    tensors = extractor(torch.from_numpy(audio), return_tensors=True)
    assert isinstance(tensors["clip_embedding"], torch.Tensor)
    torch.testing.assert_close(tensors["clip_embedding"].numpy(), out["clip_embedding"])


def test_dict_input_and_resampling(extractor, audio):
    same = extractor({"raw": audio, "sampling_rate": 16000})
    np.testing.assert_array_equal(same["clip_embedding"], extractor(audio)["clip_embedding"])
    # "array" key (datasets layout) at 8 kHz: resampled to 16 kHz, so 0.5 s of 8 kHz audio gives 0.5 s of frames
    resampled = extractor({"array": audio[:4000], "sampling_rate": 8000})
    assert resampled["frame_embeddings"].shape == (3, 160)  # 8000 samples at 16 kHz -> 48 frames -> 3 columns
    np.testing.assert_allclose(resampled["timestamps_ms"], [87.5, 247.5, 407.5])
    with pytest.raises(ValueError, match="sampling_rate"):
        extractor({"raw": audio})


def test_multi_channel_array_is_refused(extractor, audio):
    """A 2-D array is one clip's channels, not a batch: the feature extractor would embed its rows as clips and the
    pipeline return the first row's embedding only."""
    for stereo, axis in ((np.stack([audio, audio]), 0), (np.stack([audio, audio], axis=1), 1)):
        with pytest.raises(ValueError, match=rf"audio\.mean\(axis={axis}\)"):
            extractor(stereo)
        with pytest.raises(ValueError, match=rf"audio\.mean\(axis={axis}\)"):
            extractor({"array": stereo, "sampling_rate": 8000})
    assert extractor(audio[None])["frame_embeddings"].shape == (7, 160)  # one clip of one channel, as before


def test_wav_path_is_decoded_mixed_and_resampled(extractor, audio, tmp_path):
    """File paths go through matpac_hf.audio_io.decode_audio: the down-mix is the channel mean, (L + R) / 2 (ffmpeg's
    `-ac 1`, which transformers' own audio pipelines use for paths, gives (L + R) / sqrt(2), 3 dB louder)."""
    stereo = np.stack([audio, np.zeros_like(audio)], axis=1)  # left only
    sf.write(tmp_path / "clip.wav", stereo, 16000, subtype="FLOAT")
    from_file = extractor(str(tmp_path / "clip.wav"))
    np.testing.assert_allclose(from_file["clip_embedding"], extractor(audio / 2)["clip_embedding"], atol=1e-5)
    louder = extractor(audio / np.sqrt(2))["clip_embedding"]
    assert np.abs(from_file["clip_embedding"] - louder).max() > 100 * 1e-5
    sf.write(tmp_path / "clip_44k.wav", np.zeros(44100, dtype=np.float32), 44100)
    assert extractor(str(tmp_path / "clip_44k.wav"))["frame_embeddings"].shape == (7, 160)  # 1 s at 16 kHz
    with pytest.raises(ValueError, match="does not exist"):
        extractor(str(tmp_path / "missing.wav"))


def test_batch_of_mixed_inputs_matches_one_by_one(extractor, audio, tmp_path):
    sf.write(tmp_path / "clip.wav", audio, 16000, subtype="FLOAT")
    inputs = [audio, audio[:8000], str(tmp_path / "clip.wav"), {"array": audio[:5000], "sampling_rate": 16000}]
    batched = extractor(inputs, batch_size=3)
    single = [extractor(x) for x in inputs]
    assert [b["frame_embeddings"].shape[0] for b in batched] == [7, 3, 7, 2]
    for b, s in zip(batched, single):
        np.testing.assert_allclose(b["frame_embeddings"], s["frame_embeddings"], atol=1e-5)
        np.testing.assert_allclose(b["clip_embedding"], s["clip_embedding"], atol=1e-5)
        np.testing.assert_array_equal(b["timestamps_ms"], s["timestamps_ms"])


def test_unknown_argument_raises(extractor, audio):
    with pytest.raises(ValueError, match="top_k"):
        extractor(audio, top_k=3)


def test_model_without_frame_mask_batched_equals_one_by_one(tmp_path):
    """wav2vec2 gives no frame_mask and its group norm sees padding: clips of different lengths must not share a
    padded forward pass (a 0.5 s clip batched with 1 s clips would get 798 frames instead of 398)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    extractor = pipeline("audio-feature-extraction", model=str(tmp_path))

    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, samples).astype(np.float32) for samples in (16000, 8000, 16000, 12000)]
    batched = extractor(clips, batch_size=3)
    single = [extractor(clip) for clip in clips]
    # conv front end: (n - 10) // 5 + 1 frames, then (m - 8) // 4 + 1
    assert [b["frame_embeddings"].shape for b in batched] == [(798, 16), (398, 16), (798, 16), (598, 16)]
    for b, s in zip(batched, single):
        np.testing.assert_allclose(b["frame_embeddings"], s["frame_embeddings"], atol=1e-5)
        np.testing.assert_allclose(b["clip_embedding"], s["clip_embedding"], atol=1e-5)
        np.testing.assert_allclose(b["clip_embedding"], s["frame_embeddings"].mean(0), atol=1e-5)
        assert b["timestamps_ms"] is None


# ----------------------------------------------------------------------------------------------------------------------
# pipeline("audio-classification") on a MATPAC classifier
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_classifier(tmp_path_factory):
    from conftest import tiny_config

    from matpac_hf import MatpacFeatureExtractor, MatpacForAudioClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_classifier")
    MatpacForAudioClassification(tiny_config(num_labels=3)).save_pretrained(folder)
    MatpacFeatureExtractor().save_pretrained(folder)
    return pipeline("audio-classification", model=str(folder)), folder


def scores(result) -> dict:
    return {item["label"]: item["score"] for item in result}


def test_audio_classification_pipeline_resamples_with_soxr_and_decodes_files(audio_classifier, tmp_path):
    from transformers import AudioClassificationPipeline

    from matpac_hf.audio_io import resample
    from matpac_hf.pipelines import MatpacAudioClassificationPipeline

    classifier, _ = audio_classifier
    assert isinstance(classifier, MatpacAudioClassificationPipeline)
    assert isinstance(classifier, AudioClassificationPipeline)  # transformers' scores, top_k, function_to_apply
    t = np.arange(44100) / 44100
    audio_44k = (0.5 * np.sin(2 * np.pi * 3000 * t) + 0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    expected = scores(classifier(resample(audio_44k, 44100, 16000)))
    as_16k = scores(classifier(audio_44k))  # taken as 16 kHz: a different clip
    assert max(abs(as_16k[label] - expected[label]) for label in expected) > 1e-3
    for result in (
        classifier(audio_44k, sampling_rate=44100),
        classifier({"raw": audio_44k, "sampling_rate": 44100}),
        classifier({"array": torch.from_numpy(audio_44k), "sampling_rate": 44100}),
    ):
        assert scores(result) == pytest.approx(expected, abs=1e-6)
    # a file path and file bytes, decoded by soundfile (no ffmpeg binary): a 16-bit wav, so a quantisation apart
    sf.write(tmp_path / "clip.wav", audio_44k, 44100)
    assert scores(classifier(str(tmp_path / "clip.wav"))) == pytest.approx(expected, abs=1e-3)
    assert scores(classifier((tmp_path / "clip.wav").read_bytes())) == pytest.approx(expected, abs=1e-3)
    batched = classifier([audio_44k, audio_44k[:20000]], sampling_rate=44100, batch_size=2, top_k=2)
    assert scores(batched[0]) == pytest.approx({k: expected[k] for k in scores(batched[0])}, abs=1e-5)
    assert len(batched[1]) == 2


def test_audio_classification_pipeline_refuses_multichannel_arrays(audio_classifier):
    classifier, _ = audio_classifier
    with pytest.raises(ValueError, match=r"mean\(axis=1\)"):
        classifier(np.zeros((16000, 2), dtype=np.float32))
