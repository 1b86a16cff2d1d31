"""HEAR 2021 API: the official validator (hearvalidator, with a tensorflow stub), timestamps, the 40 ms interleaved
grid, scene = mean of the native frames, loading from a saved folder."""

import contextlib
import functools
import importlib
import importlib.machinery
import re
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from matpac_hf import MatpacConfig, hear


@pytest.fixture(scope="module")
def model(tiny_matpac_folder):
    return hear.load_model(str(tiny_matpac_folder))  # default: timestamps every 40 ms


@pytest.fixture(scope="module")
def native_model(tiny_matpac_folder):
    return hear.load_model(str(tiny_matpac_folder), timestamp_hop_ms=160)


def _audio(n_sounds, n_samples, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-0.5, 0.5, (n_sounds, n_samples)).astype(np.float32))


@pytest.fixture
def tensorflow_stub(monkeypatch):
    """hearvalidator imports tensorflow at module level and only uses it for tensorflow models (`tf.Module`,
    `tf.device`): a stand-in module lets it validate a torch model without installing tensorflow."""
    stub = types.ModuleType("tensorflow")
    stub.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)  # torch._dynamo's find_spec needs one
    stub.Module = type("Module", (), {"__doc__": "tf.Module stand-in: no torch model is an instance of it."})
    stub.device = lambda name: contextlib.nullcontext()
    monkeypatch.setitem(sys.modules, "tensorflow", stub)
    monkeypatch.delitem(sys.modules, "hearvalidator.validate", raising=False)  # re-import against the stub
    return stub


@pytest.fixture
def hear_validator(tensorflow_stub):
    """`hearvalidator.validate`, imported against the tensorflow stub: 2021.0.2 (the last release installable on
    Python >= 3.9) or 2021.0.6 (the final one, stricter: three clip lengths, no timestamp past the end; it declares
    Python < 3.9 but runs here: `pip install --no-deps --ignore-requires-python hearvalidator==2021.0.6`)."""
    try:
        validate = importlib.import_module("hearvalidator.validate")
    except ModuleNotFoundError as error:
        pytest.fail(
            f"{error}: install the HEAR validator without its tensorflow requirement: "
            "pip install --no-deps --ignore-requires-python hearvalidator==2021.0.6"
        )
    assert validate.tf is tensorflow_stub
    return validate


def _validate(validate, folder, monkeypatch, capsys) -> tuple[str, list[str]]:
    """Runs `hear-validator matpac_hf.hear -m folder -d cpu` in-process; returns its output and warnings."""
    monkeypatch.setattr(sys, "argv", ["hear-validator", "matpac_hf.hear", "-m", str(folder), "-d", "cpu"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate.main()  # raises validate.ModelError on any failed check
    output = capsys.readouterr().out
    print(output)
    assert output.rstrip().endswith("Looks good!")
    assert "Received torch Module" in output
    return output, [str(w.message) for w in caught]


def test_hear_validator_passes(hear_validator, tiny_matpac_folder, monkeypatch, capsys):
    output, messages = _validate(hear_validator, tiny_matpac_folder, monkeypatch, capsys)
    # 2 s sounds (2021.0.2: 16 of them; 2021.0.6: 2, plus 1.07 s and 4 s): 87.5, 127.5, ..., 1967.5 ms
    assert re.search(r"Received timestamps of shape: (torch\.Size\(\[16, 48\]\)|\(2, 48\))", output)
    assert re.search(r"Received embedding of shape: (torch\.Size\(\[16, 48, 160\]\)|\(2, 48, 160\))", output)
    assert "nterval between timestamps is 40.0ms" in output
    assert not [m for m in messages if "50ms" in m], "the validator asks for timestamps <= 50 ms apart"
    assert not [m for m in messages if "timestamps end at" in m], "the last timestamp must be within a hop of the end"


def test_hear_validator_passes_on_the_native_grid(hear_validator, tiny_matpac_folder, monkeypatch, capsys):
    """timestamp_hop_ms=160 (one pass, the model's own columns) is regular too; the validator only warns that
    160 ms is coarser than its recommended 50 ms."""
    monkeypatch.setattr(hear, "load_model", functools.partial(hear.load_model, timestamp_hop_ms=160))
    output, messages = _validate(hear_validator, tiny_matpac_folder, monkeypatch, capsys)
    assert re.search(r"Received timestamps of shape: (torch\.Size\(\[16, 12\]\)|\(2, 12\))", output)
    assert "nterval between timestamps is 160.0ms" in output
    assert [m for m in messages if "50ms" in m]


def test_timestamp_values():
    config = MatpacConfig()
    assert hear.timestamp_hops_ms(config) == [10.0, 20.0, 40.0, 80.0, 160.0]
    # 2 s = 32000 samples = 198 frames; windows of 16 frames centred 87.5 ms after their start, kept while centred
    # at or before 2000 ms: the validator's clip, on which a 160 ms grid used to end at 1957.5 instead of 2007.5
    native = hear.frame_timestamps_ms(32000, config)
    assert native.tolist() == [160 * j + 87.5 for j in range(12)]  # 1847.5 kept, 2007.5 (past the end) dropped
    fine = hear.frame_timestamps_ms(32000, config, 40)
    assert fine.tolist() == [40 * i + 87.5 for i in range(48)] and fine[-1] == 1967.5
    assert hear.frame_timestamps_ms(32000, config, 10).tolist() == [10 * i + 87.5 for i in range(192)]
    # a window centred exactly on the last sample is kept; one sample less drops it
    assert hear.frame_timestamps_ms(1400 + 640 * 5, config, 40)[-1].item() == 40 * 5 + 87.5
    assert len(hear.frame_timestamps_ms(1400 + 640 * 5 - 1, config, 40)) == 5
    # shorter than half a window (1400 samples): one embedding, at the centre of the clip's frames
    assert hear.frame_timestamps_ms(400, config, 40).tolist() == [12.5]  # one frame: samples 0-400
    assert hear.frame_timestamps_ms(1399, config).tolist() == [10 * (7 - 1) / 2 + 12.5]  # 7 frames
    # 97 520 samples = 608 frames (one chunk): the native grid ends at 160 * 37 + 87.5 ms
    assert hear.frame_timestamps_ms(97520, config)[-1].item() == 160 * 37 + 87.5
    # float32 stays exact on long audio: one hour at 40 ms, no drift
    hour = hear.frame_timestamps_ms(3600 * 16000, config, 40).to(torch.float32)
    assert hour[-1].item() == 40 * (len(hour) - 1) + 87.5 and torch.diff(hour).unique().tolist() == [40.0]


def test_column_timestamps_match_the_model_columns(native_model):
    """One timestamp per frame embedding of MatpacModel (the feature-extraction pipeline's timestamps): 160 j + 87.5,
    the last (partial) column included."""
    config = MatpacConfig()
    assert hear.column_timestamps_ms(32000, config).tolist() == [160 * j + 87.5 for j in range(13)]  # 198 frames
    assert hear.column_timestamps_ms(400, config).tolist() == [87.5]
    audio = _audio(1, 16000)
    features = native_model.feature_extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        num_columns = native_model(**features).last_hidden_state.shape[1]
    assert len(hear.column_timestamps_ms(16000, config)) == num_columns == 7


def test_bad_timestamp_hop_is_refused(tiny_matpac_folder):
    with pytest.raises(
        ValueError, match=r"timestamp_hop_ms=50 is not .* use one of \['10', '20', '40', '80', '160'\]"
    ):
        hear.load_model(str(tiny_matpac_folder), timestamp_hop_ms=50)


def test_load_model_attributes(model, native_model):
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == 5 * 32 == model.config.frame_embedding_size
    assert model.timestamp_embedding_size == model.scene_embedding_size
    assert (model.timestamp_hop_ms, native_model.timestamp_hop_ms) == (40.0, 160.0)
    assert not model.training


def test_interleaved_embeddings_are_shifted_clips(model, native_model):
    """Embedding i of the 40 ms grid is column i // 4 of the clip encoded from sample 640 * (i % 4) on."""
    audio = _audio(2, 16000)  # 1 s: 98 frames, 23 timestamps; spans two 64-frame chunks of the tiny model
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model, batch_size=1)
    assert embeddings.shape == (2, 23, model.timestamp_embedding_size) and embeddings.dtype == torch.float32
    assert timestamps.shape == (2, 23) and timestamps.dtype == torch.float32
    assert timestamps[1].tolist() == [40 * i + 87.5 for i in range(23)]
    for shift in range(4):
        shifted, _ = hear.get_timestamp_embeddings(audio[:, 640 * shift :], native_model)
        expected = shifted[:, : len(range(shift, 23, 4))]
        torch.testing.assert_close(embeddings[:, shift::4], expected, atol=1e-5, rtol=1e-5)
    # the shifted passes really differ from the first one (the interleaving is not 4 copies of one column)
    assert (embeddings[:, 1] - embeddings[:, 0]).abs().max() > 1e-3


def test_native_grid_is_the_model_columns(native_model):
    audio = _audio(2, 16000, seed=2)  # 98 frames: 7 columns, the last (centred at 1047.5 ms) past the end
    features = native_model.feature_extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = native_model(**features).last_hidden_state
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, native_model)
    assert expected.shape[1] == 7 and embeddings.shape[1] == 6
    assert timestamps[0].tolist() == [87.5, 247.5, 407.5, 567.5, 727.5, 887.5]
    torch.testing.assert_close(embeddings, expected[:, :6], atol=1e-5, rtol=1e-5)


def test_scene_is_the_clip_embedding(model, native_model):
    audio = _audio(5, 12000, seed=1)  # 73 frames: 5 columns
    scene = hear.get_scene_embeddings(audio, model, batch_size=2)
    assert scene.shape == (5, model.scene_embedding_size) and scene.dtype == torch.float32
    features = model.feature_extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(scene, model(**features).pooler_output, atol=1e-5, rtol=1e-5)
    # the timestamp hop does not change scene embeddings; sounds are independent of their batch
    torch.testing.assert_close(hear.get_scene_embeddings(audio, native_model), scene, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hear.get_scene_embeddings(audio[3:4], model), scene[3:4], atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="at least 400 samples"):
        hear.get_scene_embeddings(torch.zeros(1, 399), model)
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_timestamp_embeddings(torch.zeros(16000), model)
    with pytest.raises(ValueError, match="model_file_path"):
        hear.load_model()
    with pytest.raises(ValueError, match="must come from matpac_hf.hear.load_model"):
        hear.get_scene_embeddings(torch.zeros(1, 16000), torch.nn.Linear(1, 1))
