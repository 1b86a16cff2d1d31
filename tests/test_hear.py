"""HEAR 2021 API: shapes, dtypes, timestamps, scene = mean of frames, loading from a saved folder."""

import numpy as np
import pytest
import torch

from matpac_hf import hear


@pytest.fixture(scope="module")
def model(tiny_matpac_folder):
    return hear.load_model(str(tiny_matpac_folder))


def _audio(n_sounds, n_samples, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-0.5, 0.5, (n_sounds, n_samples)).astype(np.float32))


def test_load_model_attributes(model):
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == 5 * 32 == model.config.frame_embedding_size
    assert model.timestamp_embedding_size == model.scene_embedding_size
    assert not model.training


def test_timestamp_formula_values():
    from matpac_hf import MatpacConfig

    config = MatpacConfig()
    # 1 s = 16000 samples -> 98 frames -> 7 columns, the last with frames 96, 97 only
    timestamps = hear.frame_timestamps_ms(16000, config)
    assert timestamps.tolist() == [87.5, 247.5, 407.5, 567.5, 727.5, 887.5, 10 * (96 + 97) / 2 + 12.5]
    # exactly one window: one frame centred at 12.5 ms
    assert hear.frame_timestamps_ms(400, config).tolist() == [12.5]
    # 97 520 samples = 608 frames = 38 full columns: the last at 160 * 37 + 87.5 ms
    timestamps = hear.frame_timestamps_ms(97520, config)
    assert len(timestamps) == 38 and timestamps[-1].item() == 160 * 37 + 87.5


def test_timestamp_embeddings_shapes_dtypes_values(model):
    audio = _audio(3, 16000)  # 98 frames -> 7 columns, spans two 64-frame chunks of the tiny model
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model, batch_size=2)
    assert embeddings.shape == (3, 7, model.timestamp_embedding_size)
    assert embeddings.dtype == torch.float32 and timestamps.dtype == torch.float32
    assert timestamps.shape == (3, 7)
    expected = torch.tensor([87.5, 247.5, 407.5, 567.5, 727.5, 887.5, 977.5])
    for row in timestamps:
        torch.testing.assert_close(row, expected)
    assert torch.isfinite(embeddings).all() and embeddings.abs().sum() > 0


def test_scene_is_mean_of_timestamp_embeddings(model):
    audio = _audio(5, 12000, seed=1)
    scene = hear.get_scene_embeddings(audio, model, batch_size=2)
    embeddings, _ = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (5, model.scene_embedding_size) and scene.dtype == torch.float32
    torch.testing.assert_close(scene, embeddings.mean(1), atol=1e-5, rtol=1e-5)
    # sounds are independent: batching does not change a sound's embedding
    torch.testing.assert_close(hear.get_scene_embeddings(audio[3:4], model), scene[3:4], atol=1e-5, rtol=1e-5)


def test_matches_feature_extractor_and_model(model):
    audio = _audio(2, 8000, seed=2)
    features = model.feature_extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).last_hidden_state
    embeddings, _ = hear.get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="at least 400 samples"):
        hear.get_scene_embeddings(torch.zeros(1, 399), model)
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(ValueError, match="model_file_path"):
        hear.load_model()
