"""The opt-in ONNX / onnxruntime path (matpac_hf.onnx_inference) on the tiny config: the fp32 export equals
MatpacModel, int8 stays close, the cache is reused and refreshed, and missing dependencies name the extra."""

import shutil
import sys

import pytest
import torch
from matpac_testing import tiny_config


pytest.importorskip("onnxruntime", reason='the ONNX path needs pip install "matpac-hf[onnx]"')
pytest.importorskip("onnxscript", reason='the ONNX export needs pip install "matpac-hf[onnx]"')

from matpac_hf import MatpacFeatureExtractor, MatpacModel  # noqa: E402
from matpac_hf.inference import embed_long_audio  # noqa: E402
from matpac_hf.onnx_inference import (  # noqa: E402
    FP32_FILE_NAME,
    INSTALL_HINT,
    INT8_FILE_NAME,
    ONNX_SUBFOLDER,
    OnnxMatpacModel,
    create_session,
    encoder_fingerprint,
    read_fingerprint,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_matpac_folder):
    """A copy of the tiny saved folder, exported once through `OnnxMatpacModel.from_pretrained` (int8, into
    `<folder>/onnx/`), the torch model loaded from it, and the fp32 runner on the same cache."""
    folder = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_matpac_folder, folder)
    int8_runner = OnnxMatpacModel.from_pretrained(folder)
    model = MatpacModel.from_pretrained(folder).eval()
    fp32_runner = OnnxMatpacModel.from_model(model, int8=False)  # default onnx_dir: <folder>/onnx, already there
    return folder, model, fp32_runner, int8_runner


def mixed_batch(config):
    """Three clips of 200, 70 and 130 frames (max_frames 64: 4 chunks with a last one of 8 frames, then 64 + 6,
    then 64 + 64 + 2), zero-padded, with their attention mask."""
    torch.manual_seed(1)
    lengths = [200, 70, 130]
    input_values = torch.randn(len(lengths), max(lengths), config.num_mel_bins)
    attention_mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return input_values * attention_mask[:, :, None], attention_mask


def test_export_is_cached_next_to_the_folder(exported):
    folder, model, fp32_runner, int8_runner = exported
    onnx_dir = folder / ONNX_SUBFOLDER
    assert sorted(path.name for path in onnx_dir.iterdir()) == [FP32_FILE_NAME, INT8_FILE_NAME]  # no temporaries
    assert int8_runner.onnx_path == onnx_dir / INT8_FILE_NAME and fp32_runner.onnx_path == onnx_dir / FP32_FILE_NAME
    fingerprint = encoder_fingerprint(model)
    assert read_fingerprint(onnx_dir / FP32_FILE_NAME) == read_fingerprint(onnx_dir / INT8_FILE_NAME) == fingerprint
    metadata = int8_runner.session.get_modelmeta().custom_metadata_map
    assert metadata["matpac_hf.precision"] == "int8" and metadata["matpac_hf.max_frames"] == "64"
    assert metadata["matpac_hf.fingerprint"] == fingerprint  # read_fingerprint reads what onnxruntime reads
    # A second runner reuses both files as they are.
    mtimes = {path.name: path.stat().st_mtime_ns for path in onnx_dir.iterdir()}
    again = OnnxMatpacModel.from_model(model, int8=True)
    assert {path.name: path.stat().st_mtime_ns for path in onnx_dir.iterdir()} == mtimes
    # The runner shares the torch modules (no copy) and uses torch's thread count unless told otherwise.
    assert again.encoder is model.encoder and again.embeddings is model.embeddings
    assert again.num_threads == torch.get_num_threads()
    options = OnnxMatpacModel.from_model(model, num_threads=2).session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1


@pytest.mark.parametrize("chunk_batch_size", [None, 2])
def test_fp32_onnx_equals_matpac_model(exported, chunk_batch_size):
    _, model, fp32_runner, _ = exported
    input_values, attention_mask = mixed_batch(model.config)
    with torch.no_grad():
        expected = model(input_values, attention_mask=attention_mask, chunk_batch_size=chunk_batch_size)
        actual = fp32_runner(input_values, attention_mask=attention_mask, chunk_batch_size=chunk_batch_size)
    assert (
        actual.last_hidden_state.shape
        == expected.last_hidden_state.shape
        == (3, 13, model.config.frame_embedding_size)
    )
    assert torch.equal(actual.frame_mask, expected.frame_mask)
    assert (actual.last_hidden_state - expected.last_hidden_state).abs().max().item() <= 1e-4  # seen: 8e-7
    assert (actual.pooler_output - expected.pooler_output).abs().max().item() <= 1e-4
    assert not actual.last_hidden_state[~actual.frame_mask.bool()].any()  # zeros past each clip's end, as torch
    # Without a mask (one clip of 200 frames, every chunk length of the plan) and with return_dict=False.
    with torch.no_grad():
        expected_tuple = model(input_values[:1], return_dict=False)
        actual_tuple = fp32_runner(input_values[:1], return_dict=False)
    assert (actual_tuple[1] - expected_tuple[1]).abs().max().item() <= 1e-4


def test_int8_onnx_is_close_to_fp32(exported):
    _, model, _, int8_runner = exported
    input_values, attention_mask = mixed_batch(model.config)
    with torch.no_grad():
        expected = model(input_values, attention_mask=attention_mask)
        actual = int8_runner(input_values, attention_mask=attention_mask)
    assert torch.equal(actual.frame_mask, expected.frame_mask)
    cosine = torch.nn.functional.cosine_similarity(actual.pooler_output, expected.pooler_output, dim=-1)
    assert cosine.min().item() >= 0.99, cosine  # seen on the tiny random model: 0.99998
    assert (actual.pooler_output - expected.pooler_output).abs().max().item() > 0  # really the quantised graph


def test_embed_long_audio_runs_on_the_onnx_runner(exported, tiny_matpac_folder):
    _, model, fp32_runner, _ = exported
    feature_extractor = MatpacFeatureExtractor.from_pretrained(tiny_matpac_folder)
    audio = torch.randn(16000 * 3).numpy() * 0.1
    expected = embed_long_audio(model, feature_extractor, audio, window_seconds=1.28)
    actual = embed_long_audio(fp32_runner, feature_extractor, audio, window_seconds=1.28)
    assert actual.num_frames == expected.num_frames
    assert (actual.clip_embedding - expected.clip_embedding).abs().max().item() <= 1e-4


def test_read_fingerprint_without_metadata(exported, tmp_path):
    import onnx

    folder = exported[0]
    bare = onnx.load(str(folder / ONNX_SUBFOLDER / FP32_FILE_NAME))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert read_fingerprint(tmp_path / "bare.onnx") is None
    for garbage in (b"\xff" * 16, b"\x0f" * 16):  # a varint running off the end; protobuf wire type 7
        (tmp_path / "not_onnx.onnx").write_bytes(garbage)
        assert read_fingerprint(tmp_path / "not_onnx.onnx") is None


def test_stale_export_is_exported_again(exported, tmp_path):
    folder, model, _, _ = exported
    onnx_dir = tmp_path / "cache"
    shutil.copytree(folder / ONNX_SUBFOLDER, onnx_dir)
    changed = MatpacModel.from_pretrained(folder).eval()
    with torch.no_grad():
        changed.encoder.layernorm.bias.add_(0.5)
    runner = OnnxMatpacModel.from_model(changed, onnx_dir=onnx_dir, int8=False)
    assert read_fingerprint(onnx_dir / FP32_FILE_NAME) == encoder_fingerprint(changed) != encoder_fingerprint(model)
    input_values, attention_mask = mixed_batch(model.config)
    with torch.no_grad():
        difference = (
            runner(input_values, attention_mask=attention_mask).pooler_output
            - changed(input_values, attention_mask=attention_mask).pooler_output
        )
    assert difference.abs().max().item() <= 1e-4


def test_bad_use_names_the_fix(exported):
    folder, model, fp32_runner, _ = exported
    input_values, attention_mask = mixed_batch(model.config)
    with pytest.raises(ValueError, match="output_hidden_states"):
        fp32_runner(input_values, attention_mask=attention_mask, output_hidden_states=True)
    with pytest.raises(ValueError, match="output_hidden_states / output_attentions"):
        fp32_runner(input_values, output_attentions=True)
    in_memory = MatpacModel(tiny_config()).eval()  # not loaded from a folder: where would the export go?
    with pytest.raises(ValueError, match="pass onnx_dir="):
        OnnxMatpacModel.from_model(in_memory)
    with pytest.raises(ValueError, match="is not a local folder: pass onnx_dir="):
        OnnxMatpacModel.from_pretrained("someone/matpac-on-the-hub")  # checked before any download
    with pytest.raises(ValueError, match="call model.eval"):
        OnnxMatpacModel.from_model(MatpacModel(tiny_config()).train(), onnx_dir=folder / "unused")
    with pytest.raises(ValueError, match="model.float"):
        OnnxMatpacModel.from_model(MatpacModel(tiny_config()).eval().double(), onnx_dir=folder / "unused")
    with pytest.raises(ValueError, match="num_threads must be a positive"):
        OnnxMatpacModel.from_model(model, num_threads=0)
    with pytest.raises(NotImplementedError, match="MatpacModel.save_pretrained"):
        fp32_runner.save_pretrained(folder / "unused")
    assert not (folder / "unused").exists()


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_missing_dependency_names_the_extra(exported, monkeypatch, missing):
    _, model, fp32_runner, _ = exported
    monkeypatch.setitem(sys.modules, missing, None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match=f"needs `{missing}`.*{INSTALL_HINT.replace('[', '.').replace(']', '.')}"):
        OnnxMatpacModel.from_model(model, int8=False)
    if missing == "onnxruntime":
        with pytest.raises(ImportError, match="matpac-hf.onnx."):
            create_session(fp32_runner.onnx_path)


def test_sessions_do_not_spin_between_runs(exported):
    """onnxruntime's worker threads busy-wait for the next run by default, taking CPU from torch in the same process
    (benchmarks/bench_onnx_coexistence.py); the runner's sessions block instead."""
    runner = exported[3]  # the int8 runner
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    spinning = create_session(runner.onnx_path, allow_spinning=True).get_session_options()
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
