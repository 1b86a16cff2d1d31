# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The authors' Hub repositories (auriankelen/matpac_*) load into our classes, exactly, and nothing MATPAC-looking
loads with a random encoder.

The real repositories cannot be reached from here: stand-ins are built from the official inference code's module
tree (tests/official_reference.py: the inference layout under a wrapper prefix, the log-mel front end's buffers, a
Wav2Vec2FeatureExtractor preprocessor config, an `auto_map` to code files that raise if they ever run), and compared
with the official "precise" forward of the same weights.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from official_reference import (
    OfficialMatpac,
    randomize_,
    reference_log_mel,
    write_hub_standin,
)
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForAudioClassification

from matpac_hf import (
    MatpacFeatureExtractor,
    MatpacForAudioClassification,
    MatpacForAudioFrameClassification,
    MatpacForPreTraining,
    MatpacModel,
)
from matpac_hf.convert_original_checkpoint import convert_checkpoint
from matpac_hf.official_checkpoints import CheckpointError, find_official_layout


SMALL = dict(embed_dim=64, depth=2, num_heads=4)
# ViT-B's width (12 heads implied), one block: the real repositories' case for the head count, at a test's cost
VIT_B_WIDTH = dict(embed_dim=768, depth=1, num_heads=12)
# The deliverable's bound; measured differences are ~1e-6 (small) and ~3e-6 (width 768)
TOLERANCE = 1e-4
LABELS = [f"class {i}" for i in range(7)]


def chirp(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (300 + 2000 * t) * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


def official_frames(reference: OfficialMatpac, audio: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return reference.forward_precise(torch.from_numpy(reference_log_mel(audio))[None])[0]


def our_frames(model, audio: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(**MatpacFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")).last_hidden_state


@pytest.fixture(scope="module")
def small_reference():
    return randomize_(OfficialMatpac(**SMALL), seed=3)


@pytest.fixture(scope="module")
def classifier_reference():
    return randomize_(OfficialMatpac(**SMALL, num_classes=len(LABELS)), seed=4)


@pytest.mark.parametrize("prefix", ["", "model.", "matpac_wrapper.inner."])
def test_standin_repository_gives_the_official_embeddings(tmp_path, small_reference, prefix, caplog):
    folder = write_hub_standin(tmp_path / "repo", small_reference, prefix=prefix, config_fields={"num_heads": 4})
    audio = chirp(8.0)  # two chunks of 608 frames
    expected = official_frames(small_reference, audio)
    with caplog.at_level(logging.INFO, logger="matpac_hf.official_checkpoints"):
        model = MatpacModel.from_pretrained(folder).eval()
    assert "the official MATPAC inference layout" in caplog.text and "log_mel.mel_spec.mel_scale.fb" in caplog.text
    assert (model.config.num_attention_heads, model.config.num_hidden_layers) == (4, 2)  # heads: its config.json
    assert (our_frames(model, audio) - expected).abs().max() <= TOLERANCE
    # AutoModel with matpac_hf imported and no trust_remote_code: our class (the stand-in's code raises if run)
    auto = AutoModel.from_pretrained(folder).eval()
    assert type(auto) is MatpacModel
    assert (our_frames(auto, audio) - expected).abs().max() <= TOLERANCE
    # saved again, it is a matpac-hf folder (our names), and loads to the same numbers
    auto.save_pretrained(tmp_path / "resaved")
    again = MatpacModel.from_pretrained(tmp_path / "resaved").eval()
    assert torch.equal(our_frames(again, audio), our_frames(auto, audio))


def test_vit_b_width_standin_needs_no_head_count(tmp_path):
    # The authors' repositories are ViT-B: 12 heads follow from the width 768, whatever their config.json holds.
    reference = randomize_(OfficialMatpac(**VIT_B_WIDTH), seed=5)
    folder = write_hub_standin(tmp_path / "repo", reference, prefix="model.")
    model = AutoModel.from_pretrained(folder).eval()
    assert (model.config.hidden_size, model.config.num_attention_heads) == (768, 12)
    audio = chirp(3.0)
    assert (our_frames(model, audio) - official_frames(reference, audio)).abs().max() <= TOLERANCE


def test_classifier_standin_loads_with_its_labels(tmp_path, classifier_reference):
    folder = write_hub_standin(tmp_path / "repo", classifier_reference, prefix="model.", labels=LABELS)
    audio = chirp(5.0)
    log_mel = torch.from_numpy(reference_log_mel(audio))[None]
    with torch.no_grad():
        expected = classifier_reference.audioset_logits(log_mel)
    for loader in (MatpacForAudioClassification, AutoModelForAudioClassification):
        model = loader.from_pretrained(folder, num_attention_heads=4).eval()
        assert type(model) is MatpacForAudioClassification
        assert model.config.classifier_pooling == "mean"
        assert model.config.problem_type == "multi_label_classification"
        assert [model.config.id2label[i] for i in range(len(LABELS))] == LABELS
        with torch.no_grad():
            logits = model(**MatpacFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")).logits
        assert (logits - expected).abs().max() <= TOLERANCE
    # the encoder alone from the classifier repository
    encoder = MatpacModel.from_pretrained(folder, num_attention_heads=4).eval()
    assert (our_frames(encoder, audio) - official_frames(classifier_reference, audio)).abs().max() <= TOLERANCE


def test_converter_takes_a_repository_folder(tmp_path, classifier_reference):
    folder = write_hub_standin(tmp_path / "repo", classifier_reference, prefix="model.", labels=LABELS)
    convert_checkpoint(folder, tmp_path / "converted", num_attention_heads=4)
    converted = AutoModelForAudioClassification.from_pretrained(tmp_path / "converted").eval()
    assert [converted.config.id2label[i] for i in range(len(LABELS))] == LABELS
    extractor = json.loads((tmp_path / "converted" / "preprocessor_config.json").read_text())
    assert extractor["feature_extractor_type"] == "MatpacFeatureExtractor"
    audio = chirp(2.0)
    log_mel = torch.from_numpy(reference_log_mel(audio))[None]
    with torch.no_grad():
        expected = classifier_reference.audioset_logits(log_mel)
        logits = converted(**MatpacFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")).logits
    assert (logits - expected).abs().max() <= TOLERANCE
    card = ModelCard.load(tmp_path / "converted" / "README.md")
    assert card.data.license == "apache-2.0"
    assert "a folder in the official inference layout" in card.text and "GitHub releases" not in card.text


def test_hub_repository_through_the_hub_api(in_process_hub, tmp_path, small_reference):
    # Uploaded to the Hub stub, then loaded by repository id: huggingface_hub downloads it (into an empty cache).
    repo_id = "auriankelen-standin/matpac_general_audio"
    folder = write_hub_standin(tmp_path / "repo", small_reference, prefix="model.", config_fields={"num_heads": 4})
    api = HfApi(endpoint=in_process_hub.endpoint, token=in_process_hub.token)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    cache = tmp_path / "cache"
    model = AutoModel.from_pretrained(repo_id, cache_dir=cache).eval()
    assert type(model) is MatpacModel and model.name_or_path == repo_id
    audio = chirp(2.0)
    assert (our_frames(model, audio) - official_frames(small_reference, audio)).abs().max() <= TOLERANCE
    downloads = [path for method, path in in_process_hub.requests if method == "GET" and "model.safetensors" in path]
    assert len(downloads) == 1  # read once for the layout, then found in the cache by the loader
    convert_checkpoint(repo_id, tmp_path / "converted")
    card = (tmp_path / "converted" / "README.md").read_text()
    assert repo_id in card


def test_sizes_come_from_the_weights(tmp_path, small_reference):
    folder = write_hub_standin(tmp_path / "repo", small_reference, prefix="model.")
    # the head count is not in the shapes: width 64 without a stated count is an error naming the argument
    with pytest.raises(CheckpointError, match="num_attention_heads"):
        MatpacModel.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"hidden_size=32 \(the weights say 64\)"):
        MatpacModel.from_pretrained(folder, num_attention_heads=4, hidden_size=32)
    model = MatpacModel.from_pretrained(folder, num_attention_heads=4, max_frames=320)
    assert (model.config.max_frames, model.config.intermediate_size, model.config.num_mel_bins) == (320, 256, 80)


def test_layout_is_found_under_any_prefix_and_only_once():
    keys = {"a.b.patch_embed.proj.weight", "a.b.student_encoder.blocks.0.attn.qkv.weight", "head.weight"}
    assert find_official_layout(keys).prefix == "a.b."
    assert find_official_layout({"patch_embed.proj.weight"}) is None  # one anchor is not the layout
    with pytest.raises(CheckpointError, match="several prefixes"):
        find_official_layout(keys | {"x.patch_embed.proj.weight", "x.student_encoder.blocks.0.attn.qkv.weight"})


# ---------------------------------------------------------------------------------------------------- never random


def _foreign_folder(folder: Path, state: dict, config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "matpac"}))
    return folder


@pytest.mark.parametrize(
    "model_class", [MatpacModel, MatpacForPreTraining, MatpacForAudioClassification, MatpacForAudioFrameClassification]
)
def test_foreign_checkpoint_is_refused_by_every_class(tmp_path, model_class):
    # A MATPAC-looking folder (model_type "matpac") with the weights of another ViT: no class returns a model with a
    # random encoder; the error names what was found and the fix.
    state = {
        "vit.embeddings.patch_embeddings.projection.weight": torch.randn(32, 1, 16, 16),
        "vit.encoder.layer.0.attention.attention.query.weight": torch.randn(32, 32),
    }
    folder = _foreign_folder(tmp_path / "foreign", state)
    with pytest.raises(CheckpointError) as error:
        model_class.from_pretrained(folder)
    message = str(error.value)
    assert "would stay randomly initialised" in message
    assert "vit.embeddings.patch_embeddings.projection.weight" in message  # what was found
    assert "convert_original_checkpoint" in message  # the fix
    if model_class is MatpacModel:
        with pytest.raises(CheckpointError):
            AutoModel.from_pretrained(folder)


def test_partial_official_checkpoint_is_refused(tmp_path, small_reference):
    # The official layout with a block missing: the recognised part would load, the rest would stay random.
    folder = write_hub_standin(tmp_path / "repo", small_reference, prefix="model.", config_fields={"num_heads": 4})
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    del state["model.student_encoder.blocks.1.mlp.fc2.weight"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="encoder.layers.1.mlp.fc2.weight"):
        MatpacModel.from_pretrained(folder)


def test_tensors_it_does_not_understand_are_named(tmp_path, small_reference, caplog):
    folder = write_hub_standin(tmp_path / "repo", small_reference, prefix="model.", config_fields={"num_heads": 4})
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    state["model.extra_head.weight"] = torch.zeros(3, 64)
    save_file(state, folder / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        MatpacModel.from_pretrained(folder)
        MatpacForAudioClassification.from_pretrained(folder)
    assert "tensors outside the official inference layout, not loaded: model.extra_head.weight" in caplog.text
    assert "pos_embed" not in caplog.text.split("not loaded:")[1].split("\n")[0]  # the fixed table is expected
    assert "has no official AudioSet head" in caplog.text and "MatpacForAudioClassification" in caplog.text
